"""``sea-pyg tune`` end to end on the ``tiny`` preset: the report, the best configuration
through ``sea-pyg train --config``, MMRec's test selection only by name, errors before any
data is loaded, a study file with other settings, two worker processes, and the study
figures."""

from __future__ import annotations

import json
import os
import sys

import pytest
import yaml

from sea_pyg.cli import CommandError, main

optuna = pytest.importorskip("optuna")
pytestmark = pytest.mark.usefixtures("one_thread")

BASE = [
    "tune",
    "--model",
    "mf",
    "--synthetic",
    "tiny",
    "--epochs",
    "3",
    "--batch-size",
    "128",
    "--patience",
    "5",
    "--seed",
    "1",
    "--no-progress",
]


def _space(tmp_path, spec, name="space.yaml"):
    path = tmp_path / name
    yml = name.endswith(".yaml")
    path.write_text(yaml.safe_dump(spec, sort_keys=False) if yml else json.dumps(spec))
    return str(path)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    space = _space(root, {"lr": [0.01, 0.05], "embedding_dim": [8, 16]})
    n = __import__("torch").get_num_threads()
    code = main(
        [
            *BASE,
            "--space",
            space,
            "--study",
            str(root / "study"),
            "--mmrec-test-selection",
            "--quiet",
        ]
    )
    __import__("torch").set_num_threads(n)
    assert code == 0
    return root


def test_report_files_and_the_choice(study, capsys):
    folder = study / "study"
    for name in (
        "study.db",
        "trials.csv",
        "summary.json",
        "best.yaml",
        "best-mmrec-test-selection.yaml",
    ):
        assert (folder / name).is_file(), name
    summary = json.loads((folder / "summary.json").read_text())
    loaded = optuna.load_study(study_name="sea-pyg", storage=f"sqlite:///{folder / 'study.db'}")
    assert summary["chosen"]["number"] == loaded.best_trial.number == summary["optuna_best_trial"]
    assert summary["selection"] == "best validation recall@20"
    assert "SELECTED ON TEST" in summary["mmrec_test_selection"]["warning"]
    rows = (folder / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("number,state,lr,embedding_dim,valid:recall@20")
    assert len(rows) == 5
    # the test-selection file says so in its header; the validation one says the opposite
    assert "SELECTED ON TEST" in (folder / "best-mmrec-test-selection.yaml").read_text()
    best_text = (folder / "best.yaml").read_text()
    assert "the test set played no part in the choice" in best_text
    # rerunning the command on a complete study trains nothing and reports again
    assert (
        main(
            [
                *BASE,
                "--space",
                str(study / "space.yaml"),
                "--study",
                str(folder),
                "--mmrec-test-selection",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "!! SELECTED ON TEST" in out and "chosen trial" in out
    assert len(loaded.get_trials()) == 4


def test_best_configuration_trains_again_with_train_config(study, tmp_path):
    folder = study / "study"
    summary = json.loads((folder / "summary.json").read_text())
    best = yaml.safe_load((folder / "best.yaml").read_text())
    assert best["model"] == "mf" and best["synthetic"] == "tiny" and "out" not in best
    assert best["lr"] == summary["chosen"]["params"]["lr"]
    assert best["set"]["embedding_dim"] == summary["chosen"]["params"]["embedding_dim"]
    assert (
        main(
            [
                "train",
                "--config",
                str(folder / "best.yaml"),
                "--out",
                str(tmp_path / "r"),
                "--quiet",
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert results["best_valid"] == summary["chosen"]["valid"]
    assert results["test"] == summary["chosen"]["test"]


@pytest.mark.parametrize(
    "spec, extra, words",
    [
        ({"regweight": [0.1]}, [], ["unknown hyper-parameter 'regweight'", "did you mean"]),
        ({"reg_weight": []}, [], ["reg_weight", "empty"]),
        ({"reg_weight": {"low": 0, "high": 1, "log": True}}, [], ["reg_weight", "low > 0"]),
        (
            {"reg_weight": {"low": 1e-5, "high": 1e-1, "log": True}},
            ["--sampler", "grid"],
            ["reg_weight is a continuous range"],
        ),
        (
            {"reg_weight": {"low": 1e-5, "high": 1e-1, "log": True}},
            [],
            ["--sampler tpe needs --trials"],
        ),
        ({"reg_weight": [0.1]}, ["--set", "reg_weight=0.2"], ["reg_weight is both searched"]),
        ({"lr": [0.1]}, ["--lr", "0.2"], ["lr is both searched"]),
        ({"embedding_dim": [8.5]}, [], ["embedding_dim", "takes"]),
    ],
)
def test_errors_before_any_data(tmp_path, capsys, spec, extra, words):
    with pytest.raises(CommandError):
        main(
            [
                *BASE,
                "--space",
                _space(tmp_path, spec, "s.json"),
                "--study",
                str(tmp_path / "st"),
                *extra,
            ]
        )
    err = capsys.readouterr().err
    assert err.startswith("sea-pyg tune: error:")
    for w in words:
        assert w in err, (w, err)
    assert not (tmp_path / "st" / "study.db").exists()


def test_a_study_file_with_other_settings_or_data_is_refused(study, capsys):
    folder = str(study / "study")
    space = str(study / "space.yaml")
    with pytest.raises(CommandError):
        main([*BASE[:6], "4", *BASE[7:], "--space", space, "--study", folder])
    err = capsys.readouterr().err
    assert "holds a study made with other settings" in err and "train.epochs: 3 -> 4" in err
    assert "another --study folder" in err
    with pytest.raises(CommandError):
        main([*BASE, "--space", space, "--study", folder, "--sampler", "random", "--trials", "2"])
    assert 'sampler: "grid" -> "random"' in capsys.readouterr().err
    with pytest.raises(CommandError):
        main([*BASE, "--space", space, "--study", folder, "--data-seed", "3"])
    assert "data.data_seed: 0 -> 3" in capsys.readouterr().err


def test_study_figures(study, tmp_path, capsys):
    folder = str(study / "study")
    assert main(["plot", "trials", folder, "--out", str(tmp_path / "h.png")]) == 0
    assert main(["plot", "sensitivity", folder, "--out", str(tmp_path / "s.png")]) == 0
    assert (
        main(
            [
                "plot",
                "sensitivity",
                folder,
                "--param",
                "lr",
                "--split",
                "valid",
                "--out",
                str(tmp_path / "s2.png"),
            ]
        )
        == 0
    )
    for name in ("h.png", "s.png", "s2.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    capsys.readouterr()
    with pytest.raises(CommandError):
        main(
            ["plot", "sensitivity", folder, "--param", "dropout", "--out", str(tmp_path / "x.png")]
        )
    assert "searches lr, embedding_dim" in capsys.readouterr().err
    with pytest.raises(CommandError):
        main(["plot", "sensitivity", str(study), "--out", str(tmp_path / "x.png")])
    assert "--param NAME is needed" in capsys.readouterr().err
    with pytest.raises(CommandError):
        main(["plot", "trials", str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert "no study.db here" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="worker processes")
def test_two_worker_processes_share_the_study(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    space = _space(tmp_path, {"reg_weight": [1e-4, 1e-3, 1e-2, 1e-1]})
    folder = tmp_path / "study"
    assert main([*BASE, "--space", space, "--study", str(folder), "--workers", "2", "--quiet"]) == 0
    loaded = optuna.load_study(study_name="sea-pyg", storage=f"sqlite:///{folder / 'study.db'}")
    # Optuna's grid sampler may hand the last free point to both workers at once: the later
    # trial is then pruned as a duplicate (tuning.grid_point_owner), never trained twice
    dups = [t for t in loaded.get_trials() if "duplicate_of" in t.user_attrs]
    assert all(t.state.name == "PRUNED" for t in dups) and len(dups) <= 1
    trials = [t for t in loaded.get_trials() if "duplicate_of" not in t.user_attrs]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert sorted(t.params["reg_weight"] for t in trials) == [1e-4, 1e-3, 1e-2, 1e-1]
    pids = {t.user_attrs["worker"]["pid"] for t in trials}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
