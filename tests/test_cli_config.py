"""``sea-pyg train --config FILE`` (YAML or TOML) and the ``config.yaml`` every run writes: a
rerun from it gives the same run."""

import importlib.util
import json

import pytest
import yaml

from sea_pyg.cli import CommandError, main
from sea_pyg.cli.config import apply_config, config_keys
from sea_pyg.cli.parser import build_parser

pytestmark = pytest.mark.usefixtures("one_thread")

QUIET = ["--quiet", "--no-progress"]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))


def _results(folder):
    return json.loads((folder / "results.json").read_text())


def test_rerun_from_config_yaml_is_the_same_run(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    assert main(["train", "--model", "lightgcn", "--synthetic", "tiny", "--epochs", "2",
                 "--batch-size", "128", "--set", "num_layers=1", "--out", str(first),
                 *QUIET]) == 0
    config = yaml.safe_load((first / "config.yaml").read_text())
    assert config == {
        "model": "lightgcn", "synthetic": "tiny", "data_seed": 0, "epochs": 2, "lr": 0.001,
        "batch_size": 128, "weight_decay": 0.0, "patience": 20, "valid_metric": "recall@20",
        "eval_chunk_size": 4096, "seed": 999, "device": "cpu", "out": str(first.resolve()),
        "checkpoint_every": 1, "lr_schedule": [1.0, 50.0], "precision": "fp32",
        "set": {"embedding_dim": 64, "num_layers": 1, "reg_weight": 0.0001},
    }
    assert main(["train", "--config", str(first / "config.yaml"), "--out", str(second),
                 *QUIET]) == 0
    a, b = _results(first), _results(second)
    for key in ("model", "dataset", "epochs_run", "best_epoch", "best_valid", "test"):
        assert a[key] == b[key], key
    assert [h["losses"] for h in a["history"]] == [h["losses"] for h in b["history"]]
    assert {**a["config"], "output_dir": None} == {**b["config"], "output_dir": None}
    assert yaml.safe_load((second / "config.yaml").read_text()) == {
        **config, "out": str(second.resolve())}


def test_config_file_gives_the_flags_and_the_command_line_wins(tmp_path):
    cfg = tmp_path / "mf.yaml"
    cfg.write_text("model: mf\nsynthetic: tiny\nepochs: 5\nbatch-size: 128\nlr: 1e-2\n"
                   "set:\n  reg_weight: 0.01\n  embedding_dim: 16\nquiet: true\n")
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--epochs", "1", "--set", "embedding_dim=8",
                 "--out", str(out), "--no-progress"]) == 0
    res = _results(out)
    assert res["model"] == {"name": "mf", "hparams": {"embedding_dim": 8, "reg_weight": 0.01}}
    assert res["epochs_run"] == 1
    assert res["config"]["batch_size"] == 128 and res["config"]["lr"] == 0.01


@pytest.mark.skipif(
    importlib.util.find_spec("tomllib") is None and importlib.util.find_spec("tomli") is None,
    reason="no TOML reader (Python 3.10 without tomli)",
)
def test_toml_config(tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('model = "mf"\nsynthetic = "tiny"\nepochs = 1\nbatch_size = 128\n'
                   'compare = []\n\n[set]\nembedding_dim = 4\n')
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(out), *QUIET]) == 0
    assert _results(out)["model"]["hparams"]["embedding_dim"] == 4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("epoch: 3\n", "unknown key 'epoch' (did you mean 'epochs'"),
        ("model: mf\nlearning_rate: 0.1\n", "unknown key 'learning_rate'"),
        ("epochs: 0\n", ": epochs: must be >= 1, got 0"),
        ("lr: abc\n", ": lr: expected a number, got 'abc'"),
        ("batch_size: [1, 2]\n", ": batch_size: expected one value, got [1, 2]"),
        ("resume: yes please\n", ": resume: expected true or false, got \"yes please\""),
        ("lr_schedule: 0.96\n", ": lr_schedule: expected a list of 2 values, got 0.96"),
        ("lr_schedule: [0.96, x]\n", ": lr_schedule: expected a number, got 'x'"),
        ("set: 3\n", ": set: expected a mapping of hyper-parameters (key: value)"),
        ("- epochs\n", "expected a mapping of flags (key: value), got list"),
        ("epochs: [\n", "not valid YAML"),
        ("model: mf\nset:\n  layers: 2\n", "--set layers=2: model 'mf' has no hyper-parameter"),
        ("model: mf\nset:\n  embedding_dim: wide\n", "embedding_dim takes an integer"),
    ],
)
def test_bad_config_files_are_one_line_errors(tmp_path, text, message, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(CommandError) as exc:
        main(["train", "--config", str(cfg), "--synthetic", "tiny", *QUIET])
    line = str(exc.value)
    assert line.startswith("sea-pyg train: error: ") and message in line
    if "set" not in text:
        assert f"--config {cfg}" in line  # the file is named
    assert capsys.readouterr().err.count("\n") == 1


@pytest.mark.parametrize(("name", "message"), [
    ("missing.yaml", "does not exist"), ("conf.json", "expected a .yaml, .yml or .toml file"),
])
def test_config_file_itself(tmp_path, name, message):
    if name.endswith(".json"):
        (tmp_path / name).write_text("{}")
    with pytest.raises(CommandError, match=message):
        main(["train", "--config", str(tmp_path / name)])


def test_every_flag_is_a_key_and_later_flags_too(tmp_path):
    parser = build_parser()
    train = parser.parse_args(["train"])._parser
    keys = config_keys(train)
    for action in train._actions:
        for opt in action.option_strings:
            if opt.startswith("--") and opt not in ("--help", "--config"):
                assert keys[opt[2:]] is action and keys[opt[2:].replace("-", "_")] is action
    assert keys["import"].dest == "imports"
    # a flag added later is a key at once
    train.add_argument("--new-knob", type=int)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("new_knob: 7\ncompare: [mf, lightgcn]\nimport: [os]\n")
    values = apply_config(train, cfg)
    assert values == {"new_knob": 7, "compare": ["mf", "lightgcn"], "imports": ["os"]}
    args = parser.parse_args(["train", "--config", str(cfg), "--new-knob", "8"])
    assert args.new_knob == 8 and args.compare == ["mf", "lightgcn"]


def test_config_yaml_names_the_resolved_model_and_data(tmp_path):
    main(["synth", "tiny", str(tmp_path / "data")])
    out = tmp_path / "run"
    assert main(["train", "--model", "vbpr", "--sea", "--data", str(tmp_path / "data"),
                 "--epochs", "1", "--set", "club_steps=1", "--out", str(out), *QUIET]) == 0
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["model"] == "vbpr+sea" and "sea" not in config
    assert config["data"] == str((tmp_path / "data").resolve()) and "synthetic" not in config
    assert config["set"] == _results(out)["model"]["hparams"]
    assert config["set"]["reg_weight"] == 2.0 and config["set"]["club_steps"] == 1
