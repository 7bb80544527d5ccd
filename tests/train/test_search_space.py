"""Search spaces of ``sea-pyg tune``: parsing (lists, choices, ranges, files), grids, Optuna
distributions, and every bad input a clear error that names the entry."""

from __future__ import annotations

import json

import pytest

from sea_pyg.models import MODELS
from sea_pyg.train.search_space import (
    TUNABLE_TRAINING,
    Param,
    SearchSpace,
    SearchSpaceError,
    read_space_file,
)

optuna = pytest.importorskip("optuna")

KNOWN = ["dropout", "reg_weight", "num_layers", "dims", "lr"]


def test_lists_choices_and_ranges():
    space = SearchSpace.parse(
        {
            "dropout": [0.8, 0.9],
            "reg_weight": {"low": 1e-5, "high": 1e-2, "log": True},
            "num_layers": {"low": 1, "high": 4},
            "lr": {"choices": [1e-3]},
        },
        KNOWN,
    )
    assert space.names() == ["dropout", "reg_weight", "num_layers", "lr"]
    d, r, n, lr = space
    assert d.choices == (0.8, 0.9) and d.is_choice
    assert (r.low, r.high, r.log, r.integer, r.step) == (1e-5, 1e-2, True, False, None)
    assert (n.low, n.high, n.integer) == (1, 4, True)  # integer bounds -> an int range
    assert lr.choices == (1e-3,)
    assert not space.is_grid  # the log range is continuous
    assert isinstance(r.distribution(), optuna.distributions.FloatDistribution)
    assert r.distribution().log
    assert isinstance(n.distribution(), optuna.distributions.IntDistribution)
    assert d.distribution() == optuna.distributions.CategoricalDistribution((0.8, 0.9))


def test_grid_of_choices_and_stepped_ranges():
    space = SearchSpace.parse(
        {
            "dropout": [0.8, 0.9],
            "num_layers": {"low": 1, "high": 5, "step": 2},
            "reg_weight": {"low": 0.0, "high": 0.3, "step": 0.1},
        },
        KNOWN,
    )
    assert space.is_grid
    assert space.params["num_layers"].values() == [1, 3, 5]
    assert space.params["reg_weight"].values() == [0.0, 0.1, 0.2, 0.3]
    assert space.grid_size() == 2 * 3 * 4
    points = space.grid_points()
    assert len(points) == 24 and points[0] == {"dropout": 0.8, "num_layers": 1, "reg_weight": 0.0}
    assert space.grid() == {
        "dropout": [0.8, 0.9],
        "num_layers": [1, 3, 5],
        "reg_weight": [0.0, 0.1, 0.2, 0.3],
    }


def test_non_scalar_choices_go_through_optuna_as_json():
    space = SearchSpace.parse({"dims": [[64, 64], [32]]}, KNOWN)
    p = space.params["dims"]
    assert p.encoded and space.grid() == {"dims": ["[64, 64]", "[32]"]}
    trial = optuna.trial.FixedTrial({"dims": "[32]"})
    assert space.suggest(trial) == {"dims": [32]}
    assert space.decode({"dims": "[64, 64]"}) == {"dims": [64, 64]}


def test_suggest_uses_optuna_distributions():
    space = SearchSpace.parse(
        {"dropout": [0.8, 0.9], "reg_weight": {"low": 1e-4, "high": 1e-2, "log": True}}, KNOWN
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        v = space.suggest(trial)
        assert v["dropout"] in (0.8, 0.9) and 1e-4 <= v["reg_weight"] <= 1e-2
        assert trial.distributions["reg_weight"].log


@pytest.mark.parametrize(
    "spec, words",
    [
        (
            {"drop_out": [0.1]},
            ["unknown hyper-parameter 'drop_out'", "did you mean dropout", "the model takes"],
        ),
        ({"dropout": []}, ["dropout", "the list of choices is empty", "at least one value"]),
        ({"dropout": {"choices": []}}, ["dropout", "empty"]),
        (
            {"reg_weight": {"low": 0.0, "high": 1e-2, "log": True}},
            ["reg_weight", "log range needs low > 0"],
        ),
        ({"reg_weight": {"low": -1.0, "high": 1.0, "log": True}}, ["reg_weight", "low > 0"]),
        (
            {"reg_weight": {"low": 1.0, "high": 0.1}},
            ["reg_weight", "low (1.0) is above high (0.1)"],
        ),
        ({"reg_weight": {"low": 0.1}}, ["reg_weight", "needs both 'low' and 'high'"]),
        (
            {"reg_weight": {"low": 1e-3, "high": 1e-1, "log": True, "step": 1e-3}},
            ["reg_weight", "'step' and 'log: true' exclude each other"],
        ),
        ({"reg_weight": {"low": 0.0, "high": 1.0, "step": 0}}, ["reg_weight", "step must be > 0"]),
        ({"reg_weight": {"low": 0.0, "high": 1.0, "scale": "log"}}, ["reg_weight", "'scale'"]),
        ({"reg_weight": {"low": "a", "high": 1.0}}, ["reg_weight", "low must be a finite number"]),
        ({"num_layers": {"low": 1, "high": 2.5, "type": "int"}}, ["num_layers", "int range"]),
        ({"num_layers": {"low": 1, "high": 3, "type": "integer"}}, ["num_layers", "'int' or"]),
        ({"dropout": {"choices": [0.1], "low": 0}}, ["dropout", "not both"]),
        ({"dropout": [0.1, 0.1]}, ["dropout", "repeat 0.1"]),
        ({"dropout": 0.5}, ["dropout", "expected a list of values"]),
        ({}, ["the space is empty"]),
        ([1, 2], ["expected a mapping"]),
    ],
)
def test_bad_spaces_are_refused_naming_the_entry(spec, words):
    with pytest.raises(SearchSpaceError) as err:
        SearchSpace.parse(spec, KNOWN)
    for w in words:
        assert w in str(err.value), (w, str(err.value))


def test_a_continuous_range_has_no_grid():
    space = SearchSpace.parse({"reg_weight": {"low": 1e-5, "high": 1e-2, "log": True}}, KNOWN)
    with pytest.raises(SearchSpaceError, match="reg_weight is a continuous range.*--sampler"):
        space.grid()


def test_files_yaml_json_and_their_errors(tmp_path):
    y = tmp_path / "s.yaml"
    y.write_text("dropout: [0.8, 0.9]\nreg_weight: {low: 1.0e-5, high: 1.0e-2, log: true}\n")
    j = tmp_path / "s.json"
    j.write_text(json.dumps({"space": {"dropout": [0.8, 0.9]}}))
    assert read_space_file(y, KNOWN).names() == ["dropout", "reg_weight"]
    assert read_space_file(j, KNOWN).to_json() == {"dropout": {"choices": [0.8, 0.9]}}
    bad = tmp_path / "b.yaml"
    bad.write_text("dropout: [0.8\n")
    with pytest.raises(SearchSpaceError, match=r"--space .*b.yaml: not valid YAML"):
        read_space_file(bad, KNOWN)
    badj = tmp_path / "b.json"
    badj.write_text("{")
    with pytest.raises(SearchSpaceError, match="not valid JSON"):
        read_space_file(badj, KNOWN)
    with pytest.raises(SearchSpaceError, match="expected a .yaml, .yml or .json"):
        read_space_file(tmp_path / "s.txt", KNOWN)
    with pytest.raises(SearchSpaceError, match="does not exist"):
        read_space_file(tmp_path / "none.yaml", KNOWN)
    unknown = tmp_path / "u.yaml"
    unknown.write_text("dropuot: [0.1]\n")
    with pytest.raises(SearchSpaceError, match=r"u.yaml: unknown hyper-parameter 'dropuot'"):
        read_space_file(unknown, KNOWN)


def test_to_json_round_trips():
    spec = {
        "dropout": [0.8, 0.9],
        "reg_weight": {"low": 1e-5, "high": 1e-2, "log": True},
        "num_layers": {"low": 1, "high": 4, "step": 1},
    }
    space = SearchSpace.parse(spec, KNOWN)
    again = SearchSpace.parse(space.to_json(), KNOWN)
    assert again.to_json() == space.to_json()
    assert [p for p in again] == [p for p in space]
    assert Param.parse("x", [1]).to_json() == {"choices": [1]}


def test_every_registered_model_declares_a_usable_space():
    """The registry's grids (MMRec's) parse against each model's hyper-parameters and the
    tunable training settings, and form grids."""
    missing = sorted(n for n, s in MODELS.items() if not s.search_space)
    assert missing == []
    for name, spec in MODELS.items():
        space = SearchSpace.parse(
            {k: list(v) for k, v in spec.search_space.items()},
            [*spec.defaults, *TUNABLE_TRAINING],
            where=name,
        )
        assert space.is_grid and space.grid_size() >= 1
    assert dict(MODELS["freedom"].search_space) == {
        "dropout": (0.8, 0.9),
        "reg_weight": (0.0, 1e-5, 1e-4, 1e-3),
    }
    assert set(MODELS["sea"].search_space) == {"align_weight", "dist_weight", "temperature"}
