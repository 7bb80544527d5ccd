"""``sea-pyg train/tune --knn-backend``: the backend reaches every k-NN search of a run (the
model's construction, its training steps and evaluations, a resume, ``load_model`` /
``recommend``), is recorded in ``results.json`` / ``config.yaml``, is checked on ``--resume``,
and a bad value or a missing faiss is refused before any data is loaded."""

import json
import warnings

import pytest
import torch
import yaml

from sea_pyg.cli import CommandError, main
from sea_pyg.nn import mips

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")

QUIET = ["--quiet", "--no-progress"]


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))


def _argv(out, *flags):
    return ["train", "--synthetic", "tiny", "--out", str(out), *QUIET, *flags]


def _train(out, *flags):
    return main(_argv(out, "--epochs", "1", *flags))


def test_freedom_through_mips_is_the_exact_run(tmp_path, knn_searches):
    """mips is an exact search: the same graph, hence the same run, weights and metrics."""
    pytest.importorskip("faiss")
    assert _train(tmp_path / "exact", "--model", "freedom", "--knn-backend", "exact") == 0
    assert knn_searches == ["exact", "exact"]  # one graph per modality, in the constructor
    knn_searches.clear()
    assert _train(tmp_path / "mips", "--model", "freedom", "--knn-backend", "mips") == 0
    assert knn_searches == ["mips", "mips"]
    a = json.loads((tmp_path / "exact" / "results.json").read_text())
    b = json.loads((tmp_path / "mips" / "results.json").read_text())
    assert a["config"]["knn_backend"] == "exact" and b["config"]["knn_backend"] == "mips"
    assert a["history"][0]["losses"] == b["history"][0]["losses"]
    assert a["test"] == b["test"]
    wa = torch.load(tmp_path / "exact" / "best.pt", weights_only=True)
    wb = torch.load(tmp_path / "mips" / "best.pt", weights_only=True)
    assert (wa["knn_backend"], wb["knn_backend"]) == ("exact", "mips")
    assert wa["model"].keys() == wb["model"].keys()
    for key, value in wa["model"].items():
        other = wb["model"][key]
        if value.layout != torch.strided:
            value, other = value.to_dense(), other.to_dense()
        assert torch.equal(value, other), key
    cfg = yaml.safe_load((tmp_path / "mips" / "config.yaml").read_text())
    assert cfg["knn_backend"] == "mips"
    # config.yaml reruns it with the same backend
    knn_searches.clear()
    assert (
        main(
            [
                "train",
                "--config",
                str(tmp_path / "mips" / "config.yaml"),
                "--out",
                str(tmp_path / "again"),
                *QUIET,
            ]
        )
        == 0
    )
    assert knn_searches == ["mips", "mips"]
    again = json.loads((tmp_path / "again" / "results.json").read_text())
    assert again["config"]["knn_backend"] == "mips" and again["test"] == b["test"]


def test_default_run_records_auto_and_writes_no_key(tmp_path, knn_searches):
    assert _train(tmp_path / "r", "--model", "mf") == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert res["config"]["knn_backend"] == "auto"
    assert "knn_backend" not in yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert knn_searches == []


def test_lattice_searches_at_every_step_resume_and_recommend(tmp_path, knn_searches, capsys):
    """LATTICE builds its initial graphs in its constructor and rebuilds its learned graph at
    each epoch's first batch and at each evaluation: all through the chosen backend, again
    after ``--resume`` and in ``sea-pyg recommend``; another backend is another run."""
    pytest.importorskip("faiss")
    out = tmp_path / "r"
    flags = ["--model", "lattice", "--knn-backend", "mips"]
    assert _train(out, *flags) == 0
    # constructor, the epoch's training build, validation, test: one search per modality each
    assert knn_searches == ["mips"] * 8
    knn_searches.clear()
    assert main(_argv(out, *flags, "--resume", "--epochs", "2")) == 0
    assert len(knn_searches) >= 6 and set(knn_searches) == {"mips"}  # constructor, step, validation
    res = json.loads((out / "results.json").read_text())
    assert res["epochs_run"] == 2 and res["config"]["knn_backend"] == "mips"
    assert res["resumes"] == [{"epoch": 1, "changes": {"epochs": "1 -> 2"}}]

    # another backend is refused, before anything is trained or written
    capsys.readouterr()
    before = (out / "results.json").read_text()
    argv = _argv(out, "--model", "lattice", "--knn-backend", "exact", "--resume", "--epochs", "3")
    with pytest.raises(CommandError) as exc:
        main(argv)
    message = str(exc.value)
    assert "knn_backend: 'mips' -> 'exact'" in message
    assert "--allow-changes knn_backend" in message
    assert (out / "results.json").read_text() == before
    # ... unless accepted, and recorded
    knn_searches.clear()
    assert main([*argv, "--allow-changes", "knn_backend"]) == 0
    assert len(knn_searches) >= 6 and set(knn_searches) == {"exact"}  # exact from now on
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["knn_backend"] == "exact" and res["epochs_run"] == 3
    assert res["resumes"][-1]["changes"]["knn_backend"].startswith("'mips' -> 'exact'")

    # recommend rebuilds LATTICE's graph with the backend best.pt records
    best = torch.load(out / "best.pt", weights_only=True)
    knn_searches.clear()
    capsys.readouterr()
    assert (
        main(
            ["recommend", "--run", str(out), "--synthetic", "tiny", "--users", "0", "1", "--k", "3"]
        )
        == 0
    )
    # load_model's constructor, recommend's own search (--index auto: exact at this size,
    # resolved before the model's scope), LATTICE's graph rebuilt to score
    b = best["knn_backend"]
    assert knn_searches == [b, b, "exact", b, b]


def test_load_model_and_recommend_follow_the_training_backend(tmp_path, knn_searches, tiny_data):
    pytest.importorskip("faiss")
    from sea_pyg.nn import knn_backend
    from sea_pyg.train import load_model, recommend

    out = tmp_path / "r"
    assert _train(out, "--model", "lattice", "--knn-backend", "mips") == 0
    knn_searches.clear()
    model = load_model(out, tiny_data)
    assert model.checkpoint["knn_backend"] == "mips"
    assert knn_searches == ["mips", "mips"]  # the constructor's initial graphs, one per modality
    knn_searches.clear()
    exact = recommend(model, tiny_data, torch.arange(5), k=5, index="exact")
    assert knn_searches == ["exact", "mips", "mips"]  # the index="exact" search, LATTICE's graph
    knn_searches.clear()
    with knn_backend("exact"):  # a block in force wins
        again = load_model(out, tiny_data)
        same = recommend(again, tiny_data, torch.arange(5), k=5, index="exact")
    assert knn_searches == ["exact"] * 5
    assert torch.equal(exact.items, same.items)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--synthetic", "tiny", "--knn-backend", "faiss"],
            "argument --knn-backend: invalid choice: 'faiss'",
        ),
        (["--synthetic", "tiny", "--knn-backend", "mips"], 'pip install "sea_pyg[knn]"'),
        (["--data", "/no/such/folder", "--knn-backend", "approx"], "--knn-backend approx:"),
    ],
)
def test_errors_before_the_data(no_data, monkeypatch, tmp_path, capsys, flags, message):
    monkeypatch.setattr(mips, "faiss_available", lambda: False)
    with pytest.raises(CommandError) as exc:
        main(["train", "--model", "freedom", "--out", str(tmp_path / "r"), *flags])
    assert exc.value.code == 2
    assert message in str(exc.value)
    if "invalid choice" not in message:
        assert "or use --knn-backend exact" in str(exc.value)
    assert not (tmp_path / "r").exists()


def test_bad_value_in_a_config_file(no_data, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: freedom\nsynthetic: tiny\nknn_backend: fast\n")
    with pytest.raises(CommandError, match=r"knn_backend: 'fast' is not one of \['auto', "):
        main(["train", "--config", str(cfg), "--out", str(tmp_path / "r")])


def test_tune_forwards_the_backend(tmp_path, knn_searches, capsys, monkeypatch):
    pytest.importorskip("faiss")
    pytest.importorskip("optuna")
    space = tmp_path / "space.yaml"
    space.write_text("knn_k: [5]\n")
    study = tmp_path / "study"
    base = [
        "tune",
        "--model",
        "freedom",
        "--synthetic",
        "tiny",
        "--epochs",
        "1",
        "--space",
        str(space),
        "--study",
        str(study),
        "--quiet",
        "--no-progress",
    ]
    assert main([*base, "--knn-backend", "mips"]) == 0
    assert knn_searches and set(knn_searches) == {"mips"}
    (trial,) = (study / "trials").iterdir()
    res = json.loads((trial / "results.json").read_text())
    assert res["config"]["knn_backend"] == "mips"
    assert yaml.safe_load((study / "best.yaml").read_text())["knn_backend"] == "mips"
    capsys.readouterr()
    with pytest.raises(CommandError):  # the same study with the default search: another study
        main(base)
    assert "train.knn_backend" in capsys.readouterr().err
    monkeypatch.setattr(mips, "faiss_available", lambda: False)
    with pytest.raises(CommandError, match=r'pip install "sea_pyg\[knn\]"'):
        main([*base, "--knn-backend", "approx", "--study", str(tmp_path / "other")])
    assert not (tmp_path / "other").exists()
