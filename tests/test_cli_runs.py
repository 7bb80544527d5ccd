"""``sea-pyg runs DIR``: a table of the runs under a folder, in three formats, sortable."""

import json

import pytest

from sea_pyg.cli import CommandError, main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(folder, model, seed, valid, test, *, finished=True, best=3, epochs=10, status=None):
    folder.mkdir(parents=True)
    res = {
        "model": {"name": model, "hparams": {}}, "dataset": "toy", "config": {"seed": seed},
        "epochs_run": epochs, "best_epoch": best, "stop_reason": "early stop: no improvement",
        "best_valid": {"recall@20": valid, "ndcg@20": valid / 2, "recall@10": valid / 3},
        "test": {"recall@20": test, "ndcg@20": test / 2},
        "history": [{"train_time": 1.5, "eval_time": 0.5}] * epochs,
    }
    if finished:
        res["wall_seconds"] = 125.0
    if status:
        res["status"] = status
    (folder / "results.json").write_text(json.dumps(res))


@pytest.fixture
def work(tmp_path):
    _run(tmp_path / "a" / "sea-seed1", "sea", 1, 0.5, 0.25)
    _run(tmp_path / "a" / "nested" / "mf-seed1", "mf", 1, 0.125, 0.375)
    _run(tmp_path / "lightgcn-seed2", "lightgcn", 2, 0.75, 0.0625, finished=False, epochs=2)
    _run(tmp_path / "vbpr", "vbpr", 3, 0.25, 0.5, finished=False, status="interrupted")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "results.json").write_text("[1, 2]")
    return tmp_path


def test_plain_table(work, capsys):
    assert main(["runs", str(work)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == [
        "run                model     data  seed  status       epochs  best  valid:recall@20"
        "  valid:ndcg@20  test:recall@20  test:ndcg@20   time",
        "a/nested/mf-seed1  mf        toy      1  early stop       10     3           0.1250"
        "         0.0625          0.3750        0.1875  2m05s",
        "a/sea-seed1        sea       toy      1  early stop       10     3           0.5000"
        "         0.2500          0.2500        0.1250  2m05s",
        "lightgcn-seed2     lightgcn  toy      2  unfinished        2     3           0.7500"
        "         0.3750          0.0625        0.0312   4.0s",
        "vbpr               vbpr      toy      3  interrupted      10     3           0.2500"
        "         0.1250          0.5000        0.2500  20.0s",
    ]
    assert err.splitlines() == [
        f"sea-pyg runs: skipped {work / 'broken' / 'results.json'}: not valid JSON (Expecting "
        "property name enclosed in double quotes: line 1 column 2 (char 1))",
        f"sea-pyg runs: skipped {work / 'other' / 'results.json'}: not a results.json of "
        "sea-pyg train (no 'model')",
    ]


def test_sort_formats_and_metrics(work, capsys):
    assert main(["runs", str(work), "--sort", "recall@20", "--format", "csv",
                 "--metrics", "recall@20", "recall@10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("run,model,data,seed,status,epochs,best,valid:recall@20,valid:recall@10,"
                        "test:recall@20,test:recall@10,time")
    assert [line.split(",")[1] for line in lines[1:]] == ["vbpr", "mf", "sea", "lightgcn"]
    assert lines[1] == "vbpr,vbpr,toy,3,interrupted,10,3,0.25,0.08333333333333333,0.5,,20.0"
    assert main(["runs", str(work), "--sort", "valid:recall@20", "--reverse", "--format",
                 "markdown"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    assert [line.split(" | ")[1] for line in lines[2:]] == ["mf", "vbpr", "sea", "lightgcn"]
    assert lines[2] == ("| a/nested/mf-seed1 | mf | toy | 1 | early stop | 10 | 3 | 0.1250 | "
                        "0.0625 | 0.3750 | 0.1875 | 2m05s |")
    assert main(["runs", str(work / "a"), str(work / "vbpr"), "--sort", "model"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [r.split()[0] for r in rows] == [str(work / "a" / "nested" / "mf-seed1"),
                                            str(work / "a" / "sea-seed1"), str(work / "vbpr")]


@pytest.mark.parametrize(("args", "message"), [
    (["--sort", "speed"], "--sort 'speed': not a column; choose from run, model"),
    (["--metrics", "recall"], "--metrics: 'recall' is not a metric; use NAME@K"),
])
def test_bad_options(work, args, message):
    with pytest.raises(CommandError, match=f"^sea-pyg runs: error: {message}"):
        main(["runs", str(work), *args])


def test_no_runs(tmp_path):
    with pytest.raises(CommandError, match="no run under"):
        main(["runs", str(tmp_path)])
    with pytest.raises(CommandError, match="no such folder"):
        main(["runs", str(tmp_path / "nowhere")])


def test_a_real_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    out = tmp_path / "runs" / "mf"
    assert main(["train", "--model", "mf", "--synthetic", "tiny", "--epochs", "1", "--out",
                 str(out), "--quiet", "--no-progress"]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    assert main(["runs", str(tmp_path / "runs"), "--format", "csv"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split(",")
    assert row[:7] == ["mf", "mf", "tiny", "999", "epoch cap", "1", "0"]
    assert [float(x) for x in row[7:11]] == [
        res["best_valid"]["recall@20"], res["best_valid"]["ndcg@20"],
        res["test"]["recall@20"], res["test"]["ndcg@20"]]
    assert float(row[11]) == res["wall_seconds"]
