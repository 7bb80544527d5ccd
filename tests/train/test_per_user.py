"""Per-user metrics: hand-computed values from evaluate_ranking_per_user, the file every run folder
holds (per_user.csv: exact round trip, committed with best.pt, removed by overwrite), and
load_per_user (averages equal the run's reported metrics; clear errors)."""

import json
import math

import numpy as np
import pytest
import torch

from sea_pyg.models import LightGCN
from sea_pyg.train import (
    RunFolderError,
    TrainConfig,
    Trainer,
    evaluate_ranking,
    evaluate_ranking_per_user,
    load_per_user,
    seed_everything,
)
from sea_pyg.train.per_user import data_fingerprint, parse_per_user_csv, per_user_csv

pytestmark = pytest.mark.usefixtures("one_thread")

L3, L5 = 1 / math.log2(3), 1 / math.log2(5)


def test_per_user_values_by_hand_and_their_mean_is_evaluate_ranking():
    # the case of test_metrics.py: user 2 has no held-out item and is not evaluated
    table = torch.tensor([[9.0, 8, 7, 6, 5, 4], [1.0, 2, 3, 4, 5, 6], [0.0] * 6])
    train = torch.tensor([[0, 1, 2], [0, 5, 1]])
    test = torch.tensor([[0, 0, 1], [1, 4, 0]])
    args = (lambda u: table[u].clone(), test, train, 3, 6)
    out = evaluate_ranking_per_user(*args, ks=(2, 4), chunk_size=1)
    assert out.users.tolist() == [0, 1]
    # u0 ranking 1, 2, 3, 4 -> hits 1,0,0,1 (|P| = 2); u1: no hit
    assert out.values["recall@2"].tolist() == [0.5, 0.0]
    assert out.values["recall@4"].tolist() == [1.0, 0.0]
    assert out.values["ndcg@4"].tolist() == pytest.approx([(1 + L5) / (1 + L3), 0.0])
    assert out.values["map@4"].tolist() == pytest.approx([(1 + 2 / 4) / 2, 0.0])
    assert out.values["precision@2"].tolist() == [0.5, 0.0]
    assert out.values["recall@2"].dtype == torch.float64
    assert out.means == evaluate_ranking(*args, ks=(2, 4), chunk_size=1)  # the same floats
    for name, v in out.values.items():
        assert float(v.mean()) == pytest.approx(out.means[name], abs=1e-15)


def test_csv_round_trip_is_exact_and_bad_files_are_named():
    users = np.array([0, 3, 17])
    values = {"recall@20": np.array([1 / 3, 0.0, 0.1 + 0.2]), "ndcg@20": np.array([L3, L5, 1.0])}
    text = per_user_csv({"valid": (users[:2], {k: v[:2] for k, v in values.items()}),
                         "test": (torch.tensor(users), values)})
    assert text.splitlines()[0] == "split,user,recall@20,ndcg@20"
    assert text.splitlines()[3] == f"test,0,{1 / 3!r},{L3!r}"
    back = parse_per_user_csv(text)
    assert back["test"][0].tolist() == [0, 3, 17]
    for name in values:  # bit for bit
        assert back["test"][1][name].tolist() == values[name].tolist()
    assert back["valid"][0].tolist() == [0, 3]
    with pytest.raises(ValueError, match="f.csv: not a per-user metrics file"):
        parse_per_user_csv("user,recall@20\n", "f.csv")
    with pytest.raises(ValueError, match="f.csv, line 3: expected 4 fields, got 3"):
        parse_per_user_csv("split,user,a,b\ntest,0,1,2\ntest,1,2\n", "f.csv")
    with pytest.raises(ValueError, match="line 2: not a user id and numbers"):
        parse_per_user_csv("split,user,a\ntest,x,1\n", "f.csv")
    with pytest.raises(ValueError, match="line 2: negative user id or non-finite"):
        parse_per_user_csv("split,user,a\ntest,0,nan\n", "f.csv")
    with pytest.raises(ValueError, match="users of split 'test' are not strictly ascending"):
        parse_per_user_csv("split,user,a\ntest,2,1\ntest,1,0\n", "f.csv")
    with pytest.raises(ValueError, match="split 'test' has metrics"):
        per_user_csv({"valid": ([0], {"a": [1.0]}), "test": ([0], {"b": [1.0]})})


def _lightgcn(data, seed=0):
    seed_everything(seed)
    return LightGCN(data["user"].num_nodes, data["item"].num_nodes,
                    data["user", "rates", "item"].edge_index, embedding_dim=16)


def _cfg(**kw):
    base = dict(epochs=4, batch_size=64, patience=5, progress=False, verbose=False, seed=1,
                topk=(5, 10), valid_metric="recall@10")
    return TrainConfig(**{**base, **kw})


def test_every_run_saves_its_per_user_metrics_at_the_best_epoch(tiny_data, tmp_path):
    trainer = Trainer(_lightgcn(tiny_data), tiny_data, _cfg(output_dir=str(tmp_path)))
    res = trainer.fit()
    results = json.loads((tmp_path / "results.json").read_text())
    test = load_per_user(tmp_path)
    valid = load_per_user(tmp_path / "results.json", split="valid")
    # averaged, they are the run's reported metrics (test at the best valid epoch)
    assert test.mean() == pytest.approx(results["test"], abs=1e-12)
    assert valid.mean() == pytest.approx(results["best_valid"], abs=1e-12)
    assert set(test.metrics) == set(results["test"])
    # the evaluated users: those with a held-out item in the split
    store = tiny_data["user", "rates", "item"]
    assert test.users.tolist() == torch.unique(store.test_edge_index[0]).tolist()
    assert valid.users.tolist() == torch.unique(store.val_edge_index[0]).tolist()
    assert (test.model, test.seed, test.best_epoch, test.status) == (
        "LightGCN", 1, res["best_epoch"], "finished")
    assert test.data == results["data_fingerprint"] == data_fingerprint(trainer.dataset_meta)
    assert test.data["test_sha1"] and "user_ids" in test.data
    assert results["threads"] == 1
    # in memory too, equal to the file
    assert trainer.best_per_user["test"].users.tolist() == test.users.tolist()
    in_memory = trainer.best_per_user["test"].values["ndcg@10"]
    assert in_memory.tolist() == test.metric("ndcg@10").tolist()
    with pytest.raises(KeyError, match=r"no metric 'ndcg@20'.*it has recall@5"):
        test.metric("ndcg@20")


def test_per_user_file_follows_best_pt_through_resume_and_overwrite(tiny_data, tmp_path):
    full = tmp_path / "full"
    Trainer(_lightgcn(tiny_data), tiny_data, _cfg(output_dir=str(full))).fit()
    part = tmp_path / "part"
    Trainer(_lightgcn(tiny_data), tiny_data, _cfg(epochs=2, output_dir=str(part),
                                                  checkpoint_every=3)).fit()
    Trainer(_lightgcn(tiny_data, seed=5), tiny_data,
            _cfg(output_dir=str(part), resume=True)).fit()
    assert (part / "per_user.csv").read_text() == (full / "per_user.csv").read_text()
    best = torch.load(part / "best.pt", weights_only=True)
    assert best["epoch"] == load_per_user(part).best_epoch
    # overwrite: the old run's per-user file is gone before the new run writes its own
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "per_user.csv").write_text("split,user,x\n")
    with pytest.raises(RunFolderError, match="already holds a training run"):
        Trainer(_lightgcn(tiny_data), tiny_data, _cfg(output_dir=str(tmp_path / "old")))
    Trainer(_lightgcn(tiny_data), tiny_data,
            _cfg(epochs=1, output_dir=str(tmp_path / "old"), overwrite=True)).fit()
    assert load_per_user(tmp_path / "old").users.size > 0


def test_load_per_user_errors(tiny_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        load_per_user(tmp_path / "nothing")
    with pytest.raises(RunFolderError, match="holds no training run"):
        load_per_user(tmp_path)
    Trainer(_lightgcn(tiny_data), tiny_data, _cfg(epochs=1, output_dir=str(tmp_path))).fit()
    with pytest.raises(ValueError, match="split must be one of"):
        load_per_user(tmp_path, split="train")
    (tmp_path / "per_user.csv").unlink()  # a run of an older sea_pyg
    with pytest.raises(RunFolderError, match=r"has no per_user.csv: the run was trained by a "
                       r"sea_pyg version that did not save per-user metrics.*--config"):
        load_per_user(tmp_path)
