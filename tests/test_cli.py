import json
import sys

import pytest
import torch
import yaml

from sea_pyg.cli import main
from sea_pyg.data import load_synthetic
from sea_pyg.models import MODELS, build_model


def test_synth_info_train_resume(tmp_path, capsys):
    folder = tmp_path / "tiny"
    assert main(["synth", "tiny", str(folder)]) == 0
    assert (folder / "tiny.inter").is_file() and (folder / "image_feat.npy").is_file()
    assert main(["info", "--data", str(folder)]) == 0
    assert "60 users, 40 items" in capsys.readouterr().out

    out = tmp_path / "run"
    args = [
        "train",
        "--model",
        "mf",
        "--data",
        str(folder),
        "--epochs",
        "2",
        "--out",
        str(out),
        "--batch-size",
        "128",
        "--set",
        "reg_weight=0.01",
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mf test metrics at the best validation epoch" in printed
    assert "recall@20" in printed and "ndcg@10" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"name": "mf", "hparams": {"embedding_dim": 64, "reg_weight": 0.01}}
    assert res["epochs_run"] == 2 and res["dataset"] == "tiny"
    assert (out / "best.pt").is_file() and (out / "last.pt").is_file()
    # resume to 3 epochs continues at epoch 2
    assert main([*args[:6], "3", *args[7:], "--resume"]) == 0
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 3


def test_bad_dataset_is_a_clean_error(tmp_path):
    (tmp_path / "x.inter").write_text("userID\titemID\n0\t1\n")
    with pytest.raises(SystemExit, match=r"bad dataset: .*x\.inter: missing column"):
        main(["train", "--data", str(tmp_path)])


def test_bad_hyper_parameter_is_a_clean_error(tmp_path):
    main(["synth", "tiny", str(tmp_path)])
    with pytest.raises(SystemExit, match="has no hyper-parameter"):
        main(["train", "--data", str(tmp_path), "--set", "layers=3"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["train", "--data", str(tmp_path), "--set", "layers"])


def test_builtin_synthetic_is_cached_and_read_through_the_reader(tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path))
    data = load_synthetic("tiny", seed=3)
    folders = list((tmp_path / "synthetic").iterdir())
    assert [f.name for f in folders] == ["tiny-seed3-v1"]
    again = load_synthetic("tiny", seed=3)
    assert (
        again["user", "rates", "item"].edge_index == data["user", "rates", "item"].edge_index
    ).all()
    assert data.modalities == ["image", "text"]


@pytest.mark.parametrize("model", ["vbpr", "freedom", "bm3"])
def test_train_multimodal_baselines_from_the_cli(model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    out = tmp_path / model
    args = ["train", "--model", model, "--synthetic", "tiny", "--epochs", "2"]
    assert main([*args, "--out", str(out), "--no-progress", "--batch-size", "128"]) == 0
    assert f"{model} test metrics at the best validation epoch" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["model"]["name"] == model and res["epochs_run"] == 2
    # the best checkpoint reloads into a freshly built model
    fresh, _, _ = build_model(model, load_synthetic("tiny"), **res["model"]["hparams"])
    fresh.load_state_dict(torch.load(out / "best.pt", weights_only=True)["model"])


def test_quick_start_trains_sea_beside_lightgcn(tmp_path, monkeypatch, capsys):
    from sea_pyg.cli import commands

    # the quick start uses the built-in data; use the tiny preset here to stay fast
    monkeypatch.setattr(commands, "DEFAULT_SYNTHETIC", "tiny")
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--epochs", "1", "--no-progress", "--set", "club_steps=2"]) == 0
    out = capsys.readouterr().out
    assert "quick start on the built-in data: sea at lr 0.001" in out
    assert "== sea: lr 0.001, at most 1 epochs" in out
    assert "== lightgcn: lr 0.001, at most 1 epochs" in out
    table = out.split("test metrics at the best validation epoch:")[1].splitlines()
    assert table[2].startswith("sea ") and table[3].startswith("lightgcn ")
    assert (tmp_path / "runs" / "sea-tiny-seed999" / "results.json").is_file()
    assert (tmp_path / "runs" / "lightgcn-tiny-seed999" / "results.json").is_file()
    res = json.loads((tmp_path / "runs" / "sea-tiny-seed999" / "results.json").read_text())
    assert res["model"]["name"] == "sea" and res["config"]["lr"] == 0.001
    # each run's config.yaml names the data and the quick start's settings explicitly
    config = yaml.safe_load((tmp_path / "runs" / "sea-tiny-seed999" / "config.yaml").read_text())
    assert (config["synthetic"], config["lr"], config["epochs"]) == ("tiny", 0.001, 1)
    assert "compare" not in config and config["set"]["club_steps"] == 2
    config = yaml.safe_load(
        (tmp_path / "runs" / "lightgcn-tiny-seed999" / "config.yaml").read_text())
    assert (config["model"], config["lr"], config["epochs"]) == ("lightgcn", 0.001, 1)


def test_explicit_data_uses_the_model_defaults(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the --compare run goes to ./runs/mf-tiny-seed999
    main(["synth", "tiny", str(tmp_path / "d")])
    args = ["train", "--model", "sea-b", "--data", str(tmp_path / "d"), "--epochs", "1",
            "--out", str(tmp_path / "r"), "--no-progress", "--compare", "mf"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "quick start" not in out and "== sea-b: lr 0.0001" in out
    assert "== mf: lr 0.001" in out


@pytest.fixture
def user_modules(tmp_path, monkeypatch):
    """Writes modules into a folder on ``sys.path``; forgets them (and any model they
    registered) afterwards."""
    folder = tmp_path / "user_modules"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    names = []

    def write(name, source):
        (folder / f"{name}.py").write_text(source)
        names.append(name)

    models = set(MODELS)
    yield write
    for name in names:
        sys.modules.pop(name, None)
    for name in set(MODELS) - models:
        del MODELS[name]


def test_import_runs_a_module_before_training(user_modules, tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("SEA_PYG_TEST_MARKER", str(marker))
    user_modules(
        "sea_pyg_test_marker",
        "import os, pathlib\n"
        "pathlib.Path(os.environ['SEA_PYG_TEST_MARKER']).write_text('imported')\n",
    )
    out = tmp_path / "run"
    assert main(["train", "--import", "sea_pyg_test_marker", "--model", "mf", "--synthetic",
                 "tiny", "--epochs", "1", "--out", str(out), "--quiet", "--no-progress"]) == 0
    assert marker.read_text() == "imported"
    assert json.loads((out / "results.json").read_text())["epochs_run"] == 1


def test_import_registers_a_model_for_train_and_recommend(user_modules, tmp_path, monkeypatch,
                                                          capsys):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    user_modules(
        "sea_pyg_test_models",
        "from sea_pyg.models import MFBPR, register_model\n"
        "@register_model('my-mf', 'a user model', presets={})\n"
        "class MyMF(MFBPR):\n"
        "    def __init__(self, num_users, num_items, embedding_dim=8):\n"
        "        super().__init__(num_users, num_items, embedding_dim, reg_weight=1e-4)\n",
    )
    user_modules("sea_pyg_test_empty", "")
    out = tmp_path / "run"
    args = ["train", "--model", "my-mf", "--synthetic", "tiny", "--epochs", "1", "--out",
            str(out), "--quiet", "--no-progress"]
    with pytest.raises(SystemExit, match="unknown model 'my-mf'"):
        main(args)
    assert main([*args, "--import", "sea_pyg_test_empty", "--import", "sea_pyg_test_models"]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["model"] == {"name": "my-mf", "hparams": {"embedding_dim": 8}}

    # a fresh process knows the model only through --import
    del MODELS["my-mf"], sys.modules["sea_pyg_test_models"]
    rec = ["recommend", "--run", str(out), "--synthetic", "tiny", "--users", "0", "--k", "3"]
    with pytest.raises(SystemExit, match="unknown model 'my-mf'"):
        main(rec)
    capsys.readouterr()
    assert main([*rec, "--import", "sea_pyg_test_models"]) == 0
    assert "top-3 items from my-mf" in capsys.readouterr().out


def test_import_searches_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sea_pyg_test_local.py").write_text("LOADED = True\n")
    path = list(sys.path)
    try:
        # the module is found and imported; then the (missing) data stops the run
        with pytest.raises(SystemExit, match="no-such-preset"):
            main(["train", "--import", "sea_pyg_test_local", "--synthetic", "no-such-preset"])
        assert sys.modules["sea_pyg_test_local"].LOADED
    finally:
        sys.modules.pop("sea_pyg_test_local", None)
    assert sys.path == path  # the current folder was searched only while importing


@pytest.mark.parametrize(
    ("source", "error"),
    [
        (None, "ModuleNotFoundError: No module named 'sea_pyg_no_such_module'"),
        ("raise RuntimeError('boom')\n", "RuntimeError: boom"),
        ("import sea_pyg_no_dep\n", "ModuleNotFoundError: No module named 'sea_pyg_no_dep'"),
    ],
)
def test_import_failure_is_a_clean_error(source, error, user_modules):
    name = "sea_pyg_no_such_module"
    if source is not None:
        name = "sea_pyg_test_bad"
        user_modules(name, source)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--import", name, "--model", "mf", "--synthetic", "tiny"])
    assert str(exc.value) == f"sea-pyg train: error: --import {name}: {error}"
    assert exc.value.code == 2
