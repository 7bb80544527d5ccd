"""``sea-pyg train --seeds`` (one run folder per seed, mean ± std printed), ``--threads`` and
``sea-pyg compare`` (paired tests between runs or groups of runs), with their errors."""

import csv
import json
import re
import statistics

import numpy as np
import pytest
import torch
import yaml

from sea_pyg.cli import main
from sea_pyg.cli.train import torch_threads
from sea_pyg.train import compare_runs, paired_test

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["train", "--model", "mf", "--synthetic", "tiny", "--epochs", "2", "--batch-size",
         "128", "--no-progress", "--quiet"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """mf and lightgcn over seeds 1 2 on tiny, trained once for the module."""
    root = tmp_path_factory.mktemp("study")
    mp = pytest.MonkeyPatch()
    mp.setenv("SEA_PYG_HOME", str(root / "home"))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main([*TRAIN, "--seeds", "1", "2", "--compare", "lightgcn", "--out",
                         str(root / "runs"), "--threads", "1"]) == 0
        threads_after = torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
        mp.undo()
    return root, buf.getvalue(), threads_after


def _per_user_csv(folder, split="test", metric="recall@20"):
    with open(folder / "per_user.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == split]
    return [int(r["user"]) for r in rows], np.array([float(r[metric]) for r in rows])


def test_seeds_write_one_run_folder_each_and_print_mean_and_std(study):
    root, out, threads_after = study
    runs = root / "runs"
    names = ["mf-tiny-seed1", "mf-tiny-seed2", "lightgcn-tiny-seed1", "lightgcn-tiny-seed2"]
    assert sorted(p.name for p in runs.iterdir()) == sorted(names)
    results = {n: json.loads((runs / n / "results.json").read_text()) for n in names}
    for n in names:
        seed = int(n[-1])
        config = yaml.safe_load((runs / n / "config.yaml").read_text())
        assert config["seed"] == seed and config["out"] == str(runs / n)
        assert "seeds" not in config and config["threads"] == 1
        assert results[n]["config"]["seed"] == seed and results[n]["threads"] == 1
    # --threads applied while training, restored afterwards
    assert threads_after == 2
    # the printed block of each model: mean ± sample std over its two runs
    for model in ("mf", "lightgcn"):
        block = out.split(f"\n{model}: 2 seeds (1 2), mean ± std over the seeds")[1]
        vals = [results[f"{model}-tiny-seed{s}"]["test"]["recall@20"] for s in (1, 2)]
        row = re.search(r"\nrecall@20 +\S+ ± \S+ +(\S+) ± (\S+)", block)
        assert row.groups() == (f"{statistics.mean(vals):.4f}", f"{statistics.stdev(vals):.4f}")
        vvals = [results[f"{model}-tiny-seed{s}"]["best_valid"]["ndcg@10"] for s in (1, 2)]
        row = re.search(r"\nndcg@10 +(\S+) ± (\S+)", block)
        assert row.groups() == (f"{statistics.mean(vvals):.4f}", f"{statistics.stdev(vvals):.4f}")
        assert f"runs ({model}): {runs / f'{model}-tiny-seed1'} {runs / f'{model}-tiny-seed2'}" \
            in block
    assert "sea-pyg compare" in out and "--vs" in out


def test_compare_groups_json_equals_a_hand_made_paired_test(study, capsys):
    runs = study[0] / "runs"
    a = [runs / "mf-tiny-seed1", runs / "mf-tiny-seed2"]
    b = [runs / "lightgcn-tiny-seed1", runs / "lightgcn-tiny-seed2"]
    assert main(["compare", *map(str, a), "--vs", *map(str, b)]) == 0
    text = capsys.readouterr().out
    assert f"A: mf, 2 runs ({a[0]}, {a[1]}): per-user mean over the runs" in text
    assert "2 metrics are 2 tests: the p-values are not corrected for multiple" in " ".join(
        text.split())
    assert main(["compare", *map(str, a), "--vs", *map(str, b), "--metrics", "recall@20",
                 "--json"]) == 0
    (got,) = json.loads(capsys.readouterr().out)
    users, a1 = _per_user_csv(a[0])
    assert _per_user_csv(b[1])[0] == users
    mean_a = (a1 + _per_user_csv(a[1])[1]) / 2
    mean_b = (_per_user_csv(b[0])[1] + _per_user_csv(b[1])[1]) / 2
    hand = paired_test(mean_a, mean_b)
    assert got["n"] == len(users) and got["runs_a"] == [str(p) for p in a]
    assert got["t_pvalue"] == pytest.approx(hand.t_pvalue, rel=1e-12)
    assert got["wilcoxon_pvalue"] == pytest.approx(hand.wilcoxon_pvalue, rel=1e-12)
    assert got["cohen_dz"] == pytest.approx(hand.cohen_dz, rel=1e-12)
    assert got["mean_a"] == pytest.approx(statistics.mean(
        json.loads((p / "results.json").read_text())["test"]["recall@20"] for p in a))


def test_compare_two_runs_table(study, capsys):
    runs = study[0] / "runs"
    a, b = runs / "mf-tiny-seed1", runs / "lightgcn-tiny-seed1"
    assert main(["compare", str(a), str(b), "--split", "valid", "--alternative", "greater"]) == 0
    out = capsys.readouterr().out.splitlines()
    (lib,) = compare_runs(a, b, metrics=["ndcg@20"], split="valid", alternative="greater")
    assert out[0] == (f"paired test over {lib.n} users, valid metrics at each run's best "
                      "validation epoch")
    assert out[1] == f"  A: mf ({a})" and out[2] == f"  B: lightgcn ({b})"
    assert out[4].split() == ["metric", "A", "B", "A", "-", "B", "t-test", "p", "d_z",
                              "Wilcoxon", "p", "r_rb", "ties"]
    row = out[6].split()
    assert row[0] == "ndcg@20" and row[1] == f"{lib.mean_a:.4f}" and row[-1] == str(lib.n_ties)
    assert out[8].startswith("one-sided (A better than B) tests; d_z: Cohen's")
    assert "2 metrics are 2 tests" in " ".join(out)  # recall@20 and ndcg@20 by default


def test_compare_errors(study, tmp_path, monkeypatch):
    runs = study[0] / "runs"
    mf1 = str(runs / "mf-tiny-seed1")
    with pytest.raises(SystemExit, match=r"sea-pyg compare: error: give two runs .*got 3 run"):
        main(["compare", mf1, mf1, mf1])
    with pytest.raises(SystemExit, match=r"--vs: .* is not a run folder \(no results.json\)"):
        main(["compare", mf1, "--vs", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"RUN: .*nope does not exist"):
        main(["compare", str(tmp_path / "nope"), mf1])
    with pytest.raises(SystemExit, match=r"error: RUN: .*nope does not exist"):  # not --vs
        main(["compare", mf1, str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match=r"is given in both groups"):
        main(["compare", mf1, mf1])
    with pytest.raises(SystemExit, match=r"no metric 'recall@50'"):
        main(["compare", mf1, str(runs / "mf-tiny-seed2"), "--metrics", "recall@50"])
    # the same model on other data (another synthetic draw)
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    other = tmp_path / "other"
    main([*TRAIN[:6], "1", *TRAIN[7:], "--data-seed", "1", "--out", str(other)])
    with pytest.raises(SystemExit, match=r"were trained on different data \(they differ in: "
                       r".*training edges.*\); a paired test needs the same users"):
        main(["compare", mf1, str(other)])


def test_seeds_refusals(study, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEA_PYG_HOME", str(study[0] / "home"))
    with pytest.raises(SystemExit, match=r"sea-pyg train: error: --seeds: seed 2 is given twice"):
        main([*TRAIN, "--seeds", "2", "1", "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match=r"argument --threads: must be >= 1"):
        main([*TRAIN, "--threads", "0"])
    runs = study[0] / "runs"
    before = (runs / "mf-tiny-seed2" / "results.json").read_text()
    with pytest.raises(SystemExit, match=r"mf-tiny-seed1 already holds a training run"):
        main([*TRAIN, "--seeds", "3", "1", "--out", str(runs)])
    assert not (runs / "mf-tiny-seed3").exists()  # refused before anything trained
    # --resume: finished runs are left as they are, the summary printed again
    capsys.readouterr()
    assert main([*TRAIN, "--seeds", "1", "2", "--out", str(runs), "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("had already finished") == 2 and "mf: 2 seeds (1 2)" in out
    assert (runs / "mf-tiny-seed2" / "results.json").read_text() == before


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before
