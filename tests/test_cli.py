import json

import pytest
import torch

from sea_pyg.cli import main
from sea_pyg.data import load_synthetic
from sea_pyg.models import build_model


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
    import sea_pyg.cli as cli

    # the quick start uses the built-in data; use the tiny preset here to stay fast
    monkeypatch.setattr(cli, "DEFAULT_SYNTHETIC", "tiny")
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


def test_explicit_data_uses_the_model_defaults(tmp_path, capsys):
    main(["synth", "tiny", str(tmp_path / "d")])
    args = ["train", "--model", "sea-b", "--data", str(tmp_path / "d"), "--epochs", "1",
            "--out", str(tmp_path / "r"), "--no-progress", "--compare", "mf"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "quick start" not in out and "== sea-b: lr 0.0001" in out
    assert "== mf: lr 0.001" in out
