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


def test_recommend_cli_index(run, folder, capsys):
    pytest.importorskip("faiss")
    base = ["recommend", "--run", str(run), "--data", str(folder), "--users", "user1", "user2",
            "--k", "5", "--json"]  # fmt: skip
    outputs = []
    for index in ("exact", "mips"):
        assert main([*base, "--index", index]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    with pytest.raises(SystemExit, match="invalid choice: 'hnsw'"):
        main([*base, "--index", "hnsw"])


# ---- damaged checkpoints (item 9) ----------------------------------------------------------------
class _Payload:
    """Unpickling this would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _damaged(kind, path, good):
    import pickle

    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "junk":
        path.write_bytes(b"this is not a checkpoint\n" * 20)
    elif kind == "code":
        with open(path, "wb") as f:
            pickle.dump({"model": _Payload(path.parent / "ran"), "model_info": {}}, f)
    return path


@pytest.mark.parametrize("kind, says", [
    ("empty", "is empty (0 bytes)"),
    ("truncated", "is truncated or corrupt"),
    ("junk", "is truncated or corrupt"),
    ("code", "is not a sea_pyg checkpoint: it holds Python objects"),
])
def test_damaged_checkpoint_is_a_message_naming_the_file(run, folder, tmp_path, capsys, kind, says):
    from sea_pyg.train import CheckpointError

    good = (run / "best.pt").read_bytes()
    path = _damaged(kind, tmp_path / "best.pt", good)
    data = read_mmrec(folder)
    for call in (lambda: load_checkpoint(path), lambda: load_model(path, data),
                 lambda: load_model(tmp_path, data)):
        with pytest.raises(CheckpointError) as err:
            call()
        assert str(path) in str(err.value) and says in str(err.value)
        assert "weights_only" not in str(err.value)
    assert not (tmp_path / "ran").exists()  # the planted payload never ran
    message = f"sea-pyg recommend: error: .*{path.name}.*{says.split()[0]}"
    with pytest.raises(SystemExit, match=message):
        main(["recommend", "--run", str(tmp_path), "--data", str(folder), "--users", "user1"])


def test_damaged_last_pt_on_resume_names_it(folder, tmp_path):
    from sea_pyg.train import CheckpointError

    data = read_mmrec(folder)
    model, info, _ = build_model("mf", data)
    cfg = dict(batch_size=256, progress=False, verbose=False, output_dir=str(tmp_path))
    Trainer(model, data, TrainConfig(epochs=1, **cfg), model_info=info).fit()
    good = (tmp_path / "last.pt").read_bytes()
    (tmp_path / "last.pt").write_bytes(good[:-100])
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'last.pt'} .*truncated"):
        Trainer(model, data, TrainConfig(epochs=2, resume=True, **cfg), model_info=info).fit()


def test_disk_full_while_saving_keeps_the_run_and_says_so(folder, tmp_path, monkeypatch):
    import errno

    data = read_mmrec(folder)
    model, info, _ = build_model("mf", data)
    cfg = dict(batch_size=256, progress=False, verbose=False, output_dir=str(tmp_path))
    Trainer(model, data, TrainConfig(epochs=1, **cfg), model_info=info).fit()
    before = {n: (tmp_path / n).read_bytes() for n in ("best.pt", "last.pt")}

    def full(obj, f, *args, **kwargs):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"no space left on the device while saving the run in "
                       rf"{tmp_path} \((best.pt, per_user.csv, )?last.pt, results.json; \d+ "
                       r"MiB free\): its "
                       r"previous files are unchanged.*--resume"):
        Trainer(model, data, TrainConfig(epochs=3, resume=True, **cfg), model_info=info).fit()
    assert {n: (tmp_path / n).read_bytes() for n in before} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "best.pt", "last.pt",
                                                          "per_user.csv", "results.json"]


# ---- fingerprints of features and id maps (item 7) -----------------------------------------------
@pytest.mark.parametrize("change, says", [
    ("features x5", "item features 'image' (values or row order)"),
    ("rows permuted", "item features 'text' (values or row order)"),
    ("ids permuted", "item id map (i_id_mapping.csv)"),
])
def test_load_model_refuses_changed_features_or_id_maps(run, folder, change, says):
    from sea_pyg.train import CheckpointError

    data = read_mmrec(folder)
    if change == "features x5":
        data["item"].x_image = data["item"].x_image * 5
    elif change == "rows permuted":
        data["item"].x_text = data["item"].x_text.roll(1, dims=0)
    else:
        data["item"].raw_id = list(data["item"].raw_id)[1:] + list(data["item"].raw_id)[:1]
    with pytest.raises(CheckpointError, match="trained on dataset 'tiny' with a different") as e:
        load_model(run, data)
    assert says in str(e.value) and "check_data=False" in str(e.value)
    assert load_model(run, data, check_data=False).checkpoint["model_info"]["name"] == "lightgcn"


def test_weights_that_do_not_fit_are_a_message(run, folder):
    from sea_pyg.train import CheckpointError, load_weights

    data = read_mmrec(folder)
    other, _, _ = build_model("lightgcn", data, embedding_dim=8)
    with pytest.raises(CheckpointError, match=r"best.pt: the saved weights do not fit the model "
                       r"built now .*size mismatch"):
        load_weights(other, load_checkpoint(run))


# ---- what last.pt leaves out (item 8) ------------------------------------------------------------
def test_last_pt_leaves_out_frozen_tensors_and_resumes_exactly(tiny_data, tmp_path):
    """SEA's item-item graph (frozen buffers, rebuilt by the constructor) is not in last.pt;
    the batch-norm statistics (buffers that training changes) are; best.pt has everything;
    resume after 1 of 2 epochs matches the uninterrupted run exactly."""
    from sea_pyg.train import seed_everything

    def fit(out, epochs, resume=False):
        seed_everything(0)
        model, info, _ = build_model("sea", tiny_data, hidden_dim=16, embedding_dim=8,
                                     transform_dims=8, club_steps=2)
        cfg = TrainConfig(epochs=epochs, batch_size=128, lr=1e-2, patience=5, progress=False,
                          verbose=False, output_dir=str(out), resume=resume, topk=(5, 10),
                          valid_metric="recall@10")
        return Trainer(model, tiny_data, cfg, model_info=info).fit(), model

    with torch.random.fork_rng():
        torch.set_num_threads(1)
        full, model = fit(tmp_path / "full", 2)
        fit(tmp_path / "part", 1)
        part, _ = fit(tmp_path / "part", 2, resume=True)
    last = torch.load(tmp_path / "full" / "last.pt", weights_only=True)
    graph = {k for k in model.state_dict() if k.startswith("item_graph.")}
    assert graph and graph == set(last["rebuilt"]) and not graph & set(last["model"])
    assert any("running_mean" in k for k in last["model"])
    best = torch.load(tmp_path / "full" / "best.pt", weights_only=True)
    assert graph <= set(best["model"]) and best["rebuilt"] == {}
    a = torch.load(tmp_path / "part" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(last["model"][k], a[k]) for k in last["model"])
    assert [h["loss"] for h in part["history"]] == [h["loss"] for h in full["history"]]
    # the rebuilt graph is checked: other feature rows give another graph
    data = tiny_data.clone()
    data["item"].x_image = data["item"].x_image.roll(3, dims=0)
    seed_everything(0)
    model, info, _ = build_model("sea", data, hidden_dim=16, embedding_dim=8,
                                 transform_dims=8, club_steps=2)
    cfg = TrainConfig(epochs=3, batch_size=128, lr=1e-2, patience=5, progress=False,
                      verbose=False, output_dir=str(tmp_path / "part"), resume=True,
                      topk=(5, 10), valid_metric="recall@10")
    with pytest.raises(ValueError, match=r"data: item features 'image' .*tensors the model "
                       r"rebuilds from the data \(item_graph\."):
        Trainer(model, data, cfg, model_info=info).fit()
