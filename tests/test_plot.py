"""``sea-pyg plot``: every figure from tiny runs trained here for 1-2 epochs, and the errors."""

import json
import shutil
import sys

import pytest

pytest.importorskip("matplotlib")

from sea_pyg import plot  # noqa: E402
from sea_pyg.cli import main  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(out, model, seed, epochs, *sets):
    args = ["train", "--synthetic", "tiny", "--model", model, "--seed", str(seed), "--epochs",
            str(epochs), "--lr", "1e-3", "--out", str(out), "--quiet", "--no-progress"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A compare_models-style work folder: sea x 2 seeds (align_weight 0.012 / 0.1), lightgcn;
    and a sea-noboth run in its own folder."""
    root = tmp_path_factory.mktemp("plotruns")
    wd = root / "work"
    _train(wd / "sea-tiny-seed1", "sea", 1, 2)
    _train(wd / "sea-tiny-seed2", "sea", 2, 2, "align_weight=0.1")
    _train(wd / "lightgcn-tiny-seed1", "lightgcn", 1, 1)
    _train(root / "noboth", "sea-noboth", 1, 1)
    return root


def test_curves_of_a_run_that_starts_with_pretraining(tmp_path):
    _train(tmp_path / "pamd", "pamd", 1, 3, "pretrain_epochs=2", "embedding_dim=4")
    out = tmp_path / "curves.png"
    assert main(["plot", "curves", str(tmp_path / "pamd"), "--out", str(out)]) == 0
    assert _is_png(out)


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_curves_of_several_runs(runs, tmp_path, capsys):
    out = tmp_path / "curves.png"
    wd = runs / "work"
    assert main(["plot", "curves", str(wd / "sea-tiny-seed1"),
                 str(wd / "lightgcn-tiny-seed1" / "results.json"), "--out", str(out)]) == 0
    assert _is_png(out)
    assert f"wrote {out}" in capsys.readouterr().out
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary file was renamed


def test_ablation_and_sensitivity(runs, tmp_path):
    out = tmp_path / "ablation.png"
    assert main(["plot", "ablation", str(runs / "work"), "--out", str(out)]) == 0
    assert _is_png(out)
    out2 = tmp_path / "ablation2.png"
    assert main(["plot", "ablation", str(runs / "work"), str(runs / "noboth"), "--models",
                 "sea-noboth", "sea", "--out", str(out2)]) == 0  # fmt: skip
    assert _is_png(out2)
    sens = tmp_path / "sens.png"
    assert main(["plot", "sensitivity", str(runs / "work"), "--param", "align_weight",
                 "--param", "lr", "--out", str(sens)]) == 0  # fmt: skip
    assert _is_png(sens)


def test_embeddings_tsne_and_pca(runs, tmp_path):
    pytest.importorskip("sklearn")
    for method, parts in [("auto", "auto"), ("pca", "z")]:
        out = tmp_path / f"emb-{method}.png"
        assert main(["plot", "embeddings", str(runs / "work" / "sea-tiny-seed1"), "--synthetic",
                     "tiny", "--items", "30", "--method", method, "--parts", parts, "--out",
                     str(out)]) == 0  # fmt: skip
        assert _is_png(out)


def test_embedding_points_sample_and_groups(runs):
    from sea_pyg.data import load_synthetic
    from sea_pyg.train import load_model

    model = load_model(runs / "work" / "sea-tiny-seed1", load_synthetic("tiny"))
    pts, rows, groups, idx = plot.embedding_points(model, items=25, seed=3)
    assert groups == ["image generic", "image unique", "text generic", "text unique"]
    assert pts.shape[0] == len(rows) == 4 * 25 and idx.unique().numel() == 25
    again = plot.embedding_points(model, items=25, seed=3)[3]
    assert idx.tolist() == again.tolist()  # seeded draw
    pts_z, _, groups_z, _ = plot.embedding_points(model, items=500, seed=0, parts="z")
    assert groups_z == ["image projection", "text projection"] and pts_z.shape[0] == 2 * 40


def test_errors_name_the_file_or_argument(runs, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match=f"no results.json in {empty}"):
        main(["plot", "curves", str(empty), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match=f"no results.json in {empty} or its sub-folders"):
        main(["plot", "ablation", str(empty), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="work folder .*nowhere does not exist"):
        main(["plot", "ablation", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.png")])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text("{not json")
    with pytest.raises(SystemExit, match="results.json is not valid JSON"):
        main(["plot", "curves", str(bad), "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="--param 'no_such_param': no run in .* records it"):
        main(["plot", "sensitivity", str(runs / "work"), "--param", "no_such_param", "--out",
              str(tmp_path / "x.png")])  # fmt: skip
    with pytest.raises(SystemExit, match=r"--models: no run of \['bm3'\]"):
        main(["plot", "ablation", str(runs / "work"), "--models", "bm3", "--out",
              str(tmp_path / "x.png")])  # fmt: skip
    with pytest.raises(SystemExit, match="no validation metric"):
        main(["plot", "curves", str(runs / "noboth"), "--metrics", "recall@7", "--out",
              str(tmp_path / "x.png")])  # fmt: skip
    with pytest.raises(SystemExit, match="must be a .png"):
        main(["plot", "curves", str(runs / "noboth"), "--out", str(tmp_path / "x.pdf")])
    assert not list(tmp_path.glob("*.png"))


def test_embeddings_errors(runs, tmp_path):
    out = str(tmp_path / "x.png")
    with pytest.raises(SystemExit, match="'lightgcn' has no separate parts"):
        main(["plot", "embeddings", str(runs / "work" / "lightgcn-tiny-seed1"), "--synthetic",
              "tiny", "--out", out])  # fmt: skip
    with pytest.raises(SystemExit, match="'sea-noboth' has no separate parts.*switched off"):
        main(["plot", "embeddings", str(runs / "noboth"), "--synthetic", "tiny", "--out", out])
    with pytest.raises(SystemExit, match="needs the run's dataset"):
        main(["plot", "embeddings", str(runs / "noboth"), "--out", out])
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["plot", "embeddings", str(tmp_path), "--synthetic", "tiny", "--out", out])


def test_unfinished_runs_are_skipped(runs, tmp_path):
    wd = tmp_path / "wd"
    shutil.copytree(runs / "work" / "lightgcn-tiny-seed1", wd / "lightgcn-tiny-seed1")
    res = json.loads((wd / "lightgcn-tiny-seed1" / "results.json").read_text())
    del res["wall_seconds"]
    (wd / "lightgcn-tiny-seed1" / "results.json").write_text(json.dumps(res))
    with pytest.raises(SystemExit, match="none finished yet"):
        main(["plot", "ablation", str(wd), "--out", str(tmp_path / "x.png")])
    out = tmp_path / "y.png"
    assert main(["plot", "ablation", str(wd), "--include-unfinished", "--out", str(out)]) == 0
    assert _is_png(out)


def test_missing_matplotlib_says_how_to_install(runs, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(SystemExit, match=r'pip install "sea-pyg\[plot\]"'):
        main(["plot", "curves", str(runs / "noboth"), "--out", str(tmp_path / "x.png")])


def test_pca_fallback_without_sklearn(runs, tmp_path, monkeypatch):
    from sea_pyg.data import load_synthetic
    from sea_pyg.train import load_model

    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    model = load_model(runs / "work" / "sea-tiny-seed1", load_synthetic("tiny"))
    out = plot.plot_embeddings(model, tmp_path / "pca.png", items=20)
    assert _is_png(out)
    with pytest.raises(ImportError, match="--method pca works without it"):
        plot.plot_embeddings(model, tmp_path / "t.png", items=20, method="tsne")


def test_figures_are_written_atomically(tmp_path):
    """``_save`` goes through sea_pyg.io.atomic_write: a failed write keeps the old figure and
    leaves no temporary file; missing folders are created."""

    class Broken:
        def savefig(self, path, format):
            with open(path, "wb") as f:
                f.write(b"half a png")
            raise RuntimeError("disk full")

    out = tmp_path / "fig.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"):
        plot._save(Broken(), out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]
    fig = plot._figure(3.0, 2.0)
    fig.subplots().plot([0, 1], [1, 0])
    new = plot._save(fig, tmp_path / "sub" / "new.png")
    assert new == tmp_path / "sub" / "new.png" and _is_png(new)
