"""Runs over several seeds (sea_pyg.train.repeat): mean and sample standard deviation by hand,
train_seeds (one run per seed, each the same as a single run at that seed), and the refusals."""

import json
import math

import pytest

from sea_pyg.models import build_model
from sea_pyg.train import MeanStd, RunFolderError, TrainConfig, Trainer, seed_summary, train_seeds
from sea_pyg.train import seed_everything as seed_all
from sea_pyg.train.repeat import check_seeds, format_seed_summary

pytestmark = pytest.mark.usefixtures("one_thread")


def _res(seed, recall, ndcg, best_epoch, valid=0.5):
    return {"config": {"seed": seed}, "best_valid": {"recall@20": valid, "ndcg@20": valid / 2},
            "test": {"recall@20": recall, "ndcg@20": ndcg}, "best_epoch": best_epoch,
            "epochs_run": best_epoch + 3, "train_seconds_per_epoch": 0.5}


def test_mean_and_sample_std_by_hand():
    runs = [_res(1, 0.10, 0.05, 4), _res(2, 0.12, 0.06, 6), _res(3, 0.14, 0.04, 8)]
    s = seed_summary(runs)
    # recall: mean 0.12, deviations -0.02, 0, 0.02 -> s = sqrt(0.0008 / 2) = 0.02
    assert s["test"]["recall@20"].mean == pytest.approx(0.12)
    assert s["test"]["recall@20"].std == pytest.approx(0.02)
    assert s["test"]["ndcg@20"].std == pytest.approx(0.01)
    assert s["test"]["recall@20"].values == (0.10, 0.12, 0.14)
    assert s["valid"]["recall@20"].std == 0.0 and s["valid"]["ndcg@20"].mean == 0.25
    assert s["run"]["best_epoch"].mean == 6 and s["run"]["best_epoch"].std == pytest.approx(2)
    assert s["run"]["epochs_run"].n == 3
    assert s["test"]["recall@20"].format() == "0.1200 ± 0.0200"
    assert s["test"]["recall@20"].as_dict() == {
        "mean": pytest.approx(0.12), "std": pytest.approx(0.02), "n": 3,
        "values": [0.10, 0.12, 0.14]}
    table = format_seed_summary(s)
    assert "recall@20" in table and "0.5000 ± 0.0000" in table and "6.0 ± 2.0" in table
    one = seed_summary(runs[:1])["test"]["recall@20"]
    assert math.isnan(one.std) and one.format() == "0.1000" and one.as_dict()["std"] is None


def test_summary_refusals():
    with pytest.raises(ValueError, match="no runs"):
        seed_summary([])
    bad = {**_res(2, 0.1, 0.1, 1), "test": {}}
    with pytest.raises(ValueError, match=r"run 2 \(seed 2\) has no test metrics: it never"):
        seed_summary([_res(1, 0.1, 0.1, 1), bad])
    other = {**_res(2, 0.1, 0.1, 1), "test": {"recall@10": 0.1}}
    other["config"]["output_dir"] = "runs/x-seed2"
    with pytest.raises(ValueError, match=r"different test metrics.*runs/x-seed2 has "
                       r"\['recall@10'\]; give them the same topk"):
        seed_summary([_res(1, 0.1, 0.1, 1), other])
    with pytest.raises(ValueError, match="seed 3 is given twice"):
        check_seeds([3, 1, 3])
    with pytest.raises(ValueError, match="integer >= 0, got -1"):
        check_seeds([-1])
    with pytest.raises(ValueError, match="at least one seed"):
        check_seeds([])
    with pytest.raises(ValueError, match="no values"):
        MeanStd.of([])


def _cfg(**kw):
    return TrainConfig(**{**dict(epochs=2, batch_size=128, progress=False, verbose=False), **kw})


def test_train_seeds_is_one_ordinary_run_per_seed(tiny_data, tmp_path):
    def build():
        return build_model("mf", tiny_data, embedding_dim=8)[:2]

    runs = train_seeds(build, tiny_data, _cfg(), [4, 2], output_dir=str(tmp_path / "mf-seed{seed}"))
    assert runs.seeds == (4, 2)
    assert runs.folders == (str(tmp_path / "mf-seed4"), str(tmp_path / "mf-seed2"))
    for seed, res in zip(runs.seeds, runs.results, strict=True):
        assert res["config"]["seed"] == seed
        saved = json.loads((tmp_path / f"mf-seed{seed}" / "results.json").read_text())
        assert saved["test"] == res["test"]
    # each the same as a single run at that seed
    seed_all(2)
    model, info = build()
    alone = Trainer(model, tiny_data, _cfg(seed=2), model_info=info).fit()
    assert alone["test"] == runs.results[1]["test"]
    assert runs.results[0]["history"][0]["loss"] != runs.results[1]["history"][0]["loss"]
    r4, r2 = (r["test"]["recall@20"] for r in runs.results)
    assert runs.summary["test"]["recall@20"].mean == pytest.approx((r4 + r2) / 2)
    assert runs.summary["test"]["recall@20"].std == pytest.approx(abs(r4 - r2) / math.sqrt(2))


def test_train_seeds_refuses_before_training(tiny_data, tmp_path):
    def build():
        raise AssertionError("nothing may be built")

    with pytest.raises(ValueError, match=r"must contain '\{seed\}'.*'.*-seed\{seed\}'"):
        train_seeds(build, tiny_data, _cfg(), [1, 2], output_dir=str(tmp_path / "run"))
    (tmp_path / "r2").mkdir()
    (tmp_path / "r2" / "results.json").write_text("{}")
    with pytest.raises(RunFolderError, match="r2 already holds a training run"):
        train_seeds(build, tiny_data, _cfg(), [1, 2], output_dir=str(tmp_path / "r{seed}"))
    assert not (tmp_path / "r1").exists()
    with pytest.raises(ValueError, match="seed 1 is given twice"):
        train_seeds(build, tiny_data, _cfg(), [1, 1])
