"""Saving, loading and recommending with trained models."""

import pandas as pd
import pytest
import torch

from sea_pyg import load_model, recommend, save_model
from sea_pyg.cli import main
from sea_pyg.data import make_synthetic, read_mmrec
from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models import build_model
from sea_pyg.train import TrainConfig, Trainer, load_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """The 'tiny' synthetic folder with id maps (users 'user<i>', items 'item<i>')."""
    path = tmp_path_factory.mktemp("tiny_maps")
    synth = make_synthetic("tiny", seed=0)
    synth.to_mmrec(path, name="tiny")
    n_users, n_items = synth.num_users, synth.num_items
    pd.DataFrame(
        {"user_id": [f"user{i}" for i in range(n_users)], "userID": range(n_users)}
    ).to_csv(path / "u_id_mapping.csv", sep="\t", index=False)
    pd.DataFrame({"asin": [f"item{i}" for i in range(n_items)], "itemID": range(n_items)}).to_csv(
        path / "i_id_mapping.csv", sep="\t", index=False
    )
    return path


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    data = read_mmrec(folder)
    model, info, _ = build_model("lightgcn", data, num_layers=1)
    cfg = TrainConfig(epochs=2, batch_size=256, output_dir=str(out), progress=False, verbose=False)
    Trainer(model, data, cfg, model_info=info).fit()
    return out


def test_trainer_checkpoint_is_a_saved_model(run, folder):
    ckpt = torch.load(run / "best.pt", weights_only=True)
    assert ckpt["model_info"] == {
        "name": "lightgcn",
        "hparams": {"embedding_dim": 64, "num_layers": 1, "reg_weight": 1e-4},
    }
    meta = ckpt["dataset"]
    assert (meta["name"], meta["num_users"], meta["num_items"]) == ("tiny", 60, 40)
    assert meta["user_ids"][:2] == ["user0", "user1"] and meta["item_ids"][-1] == "item39"
    assert meta["feature_dims"] == {"image": 64, "text": 32}
    assert torch.load(run / "last.pt", weights_only=True)["dataset"] == meta


@pytest.mark.parametrize("name", ["mf", "lightgcn"])
def test_save_load_gives_identical_scores(folder, tmp_path, name):
    data = read_mmrec(folder)
    torch.manual_seed(0)
    model, info, _ = build_model(name, data)
    with torch.no_grad():  # make the weights non-default
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(tmp_path / "m.pt", model, data, info)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["model_info"]["name"] == name
    loaded = load_model(tmp_path / "m.pt", data)
    users = torch.arange(data["user"].num_nodes)
    model.eval()
    assert torch.equal(model.score(users), loaded.score(users))
    assert not loaded.training and loaded.checkpoint["model_info"] == info


def test_load_run_folder_and_wrong_data(run, folder, tmp_path):
    data = read_mmrec(folder)
    model = load_model(run, data)  # folder -> best.pt
    assert model.checkpoint["path"].endswith("best.pt")
    other = make_synthetic("tiny", seed=5)
    other.to_mmrec(tmp_path / "other", name="tiny")
    with pytest.raises(ValueError, match="trained on dataset .tiny. with a different"):
        load_model(run, read_mmrec(tmp_path / "other"))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path, data)
    assert load_checkpoint(run / "last.pt")["epoch"] == 2


def test_recommend_excludes_training_items(run, folder):
    data = read_mmrec(folder)
    model = load_model(run, data)
    train = data[EDGE_TYPE].edge_index
    users = ["user3", "user0", "user3"]
    recs = recommend(model, data, users, k=40)
    assert recs.user_ids == users and recs.users.tolist() == [3, 0, 3]
    for u, row, ids in zip(recs.users.tolist(), recs.items.tolist(), recs.item_ids, strict=True):
        seen = set(train[1, train[0] == u].tolist())
        kept = [i for i in row if i >= 0]
        assert len(kept) == 40 - len(seen) and not seen & set(kept)  # all others, padded with -1
        assert ids == [f"item{i}" for i in kept]
    scores = model.score(torch.tensor([3]))[0]
    top = recommend(model, data, torch.tensor([3]), k=5)
    seen = set(train[1, train[0] == 3].tolist())
    expected = [i for i in scores.argsort(descending=True).tolist() if i not in seen][:5]
    assert top.items[0].tolist() == expected
    assert torch.allclose(top.scores[0], scores[expected])
    everything = recommend(model, data, ["user3"], k=40, exclude="all")
    rated = {int(i) for key in ("edge_index", "val_edge_index", "test_edge_index")
             for i in data[EDGE_TYPE][key][1, data[EDGE_TYPE][key][0] == 3]}  # fmt: skip
    assert not rated & set(everything.items[0].tolist())


def test_bad_user_ids_are_clear_errors(run, folder):
    data = read_mmrec(folder)
    model = load_model(run, data)
    with pytest.raises(ValueError, match=r"unknown user id\(s\) \['nobody'\]"):
        recommend(model, data, ["user1", "nobody"])
    with pytest.raises(ValueError, match=r"unknown user id\(s\) \['60'\].*0\.\.59"):
        recommend(model, data, ["60"], internal_ids=True)
    assert recommend(model, data, ["7"], internal_ids=True).user_ids == ["user7"]


def test_recommend_cli(run, folder, capsys):
    args = ["recommend", "--run", str(run), "--data", str(folder), "--users", "user1", "user2",
            "--k", "3"]  # fmt: skip
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("top-3 items from lightgcn")
    assert [line.split("\t")[0] for line in lines[1:]] == ["user1", "user2"]
    assert all(len(line.split("\t")[1].split()) == 3 for line in lines[1:])
    with pytest.raises(SystemExit, match=r"unknown user id\(s\) \['zz'\]"):
        main([*args[:6], "zz"])
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["recommend", "--run", str(folder), "--data", str(folder), "--users", "user1"])
