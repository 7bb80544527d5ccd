"""``TrainConfig.knn_backend``: its values, the scope the trainer and the model builders run
in (``knn_scope``), what a resume reports, and what checkpoints record."""

import warnings

import pytest
import torch

from sea_pyg.models import build_model
from sea_pyg.nn import knn_backend, mips
from sea_pyg.train import TrainConfig, Trainer, train_seeds
from sea_pyg.train.checkpoint import knn_backend_of
from sea_pyg.train.config import KNN_BACKENDS, RESUME_CHECKED
from sea_pyg.train.resume import refused_changes, resume_differences

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")


def _default():
    """The (backend, params) that ``backend="auto"`` resolves to now."""
    return mips._DEFAULT.get()


def test_values_and_the_error():
    assert TrainConfig().knn_backend == "auto" and KNN_BACKENDS == (
        "auto",
        "exact",
        "mips",
        "approx",
    )
    assert "knn_backend" in RESUME_CHECKED
    for value in KNN_BACKENDS:
        assert TrainConfig(knn_backend=value).knn_backend == value
    for bad in ("faiss", "torch", "EXACT", None):
        with pytest.raises(ValueError) as exc:
            TrainConfig(knn_backend=bad)
        assert str(exc.value) == (
            f"knn_backend (--knn-backend) must be one of auto, exact, mips, approx, got {bad!r}"
        )
    TrainConfig(allow_changes=("knn_backend",))  # a name --allow-changes accepts


def test_scope():
    assert _default()[0] == "auto"
    with TrainConfig(knn_backend="exact").knn_scope():
        assert _default()[0] == "exact"
    assert _default()[0] == "auto"
    outer = {"num_cells_to_visit": 3}
    with knn_backend("exact", outer):
        with TrainConfig().knn_scope():  # "auto": the surrounding default holds
            assert _default() == ("exact", mips.ApproxParams(num_cells_to_visit=3))
        with mips.knn_scope("exact"):  # the same backend: its parameters are kept
            assert _default() == ("exact", mips.ApproxParams(num_cells_to_visit=3))
        with mips.knn_scope("auto"):
            assert _default()[0] == "exact"
    with knn_backend("exact"):
        with mips.knn_scope("approx" if mips.faiss_available() else "exact", inherit=True):
            assert _default()[0] == "exact"  # a block in force wins
    with mips.knn_scope("exact", inherit=True):  # no block in force: the backend is set
        assert _default()[0] == "exact"
    with pytest.raises(ValueError, match="'backend' must be one of"):
        mips.knn_scope("fast")


def test_scope_without_faiss_names_the_install_command(monkeypatch):
    monkeypatch.setattr(mips, "faiss_available", lambda: False)
    for backend in ("mips", "approx"):
        with pytest.raises(ImportError, match=r'pip install "sea_pyg\[knn\]"'):
            with TrainConfig(knn_backend=backend).knn_scope():
                pass
    with TrainConfig(knn_backend="exact").knn_scope():  # needs no faiss
        pass


def test_resume_reports_the_backend_and_the_graphs_it_rebuilt():
    info = {"name": "freedom", "hparams": {}}
    ckpt = {"model_info": info, "config": {"knn_backend": "approx"}, "rebuilt": {"item_graph": "a"}}
    other = resume_differences(
        ckpt, TrainConfig(knn_backend="exact"), info, {}, {"item_graph": "b"}
    )
    # the other graph is explained by the other search: not reported as other data
    assert other == {
        "knn_backend": "'approx' -> 'exact' (the rebuilt tensors item_graph differ with it)"
    }
    assert refused_changes(other, ["knn_backend"]) == []
    same = resume_differences(
        ckpt, TrainConfig(knn_backend="approx"), info, {}, {"item_graph": "b"}
    )
    assert same == {"data": "tensors the model rebuilds from the data (item_graph)"}
    # a checkpoint that does not record the backend (older versions) is not compared
    old = {"model_info": info, "config": {}}
    assert resume_differences(old, TrainConfig(knn_backend="exact"), info, {}, {}) == {}


def test_checkpoint_records():
    assert knn_backend_of({"knn_backend": "mips"}) == "mips"  # best.pt
    assert knn_backend_of({"config": {"knn_backend": "approx"}}) == "approx"  # last.pt
    assert knn_backend_of({"model": {}}) == "auto"  # save_model, older files


def test_trainer_fit_and_evaluate_search_with_the_backend(tiny_data, knn_searches):
    """LATTICE rebuilds its item graph at each epoch's first batch and at each evaluation;
    the trainer runs them inside the backend (the model was built outside it here: its
    constructor's two searches used the default)."""
    seen = knn_searches
    torch.manual_seed(0)
    model, info, _ = build_model("lattice", tiny_data)
    assert seen == ["exact", "exact"]
    seen.clear()
    cfg = TrainConfig(epochs=1, knn_backend="exact", progress=False, verbose=False)
    with knn_backend("approx" if mips.faiss_available() else "exact", {"rerank": 2}):
        trainer = Trainer(model, tiny_data, cfg, model_info=info)
        trainer.fit()  # the config's backend wins over a block around the trainer
        assert seen == ["exact"] * 6  # training build, validation, test; 2 modalities each
        seen.clear()
        trainer.evaluate("test")
        assert seen == ["exact"] * 2


def test_train_seeds_builds_inside_the_backend(tiny_data):
    seen = []

    def build():
        seen.append(_default()[0])
        return build_model("mf", tiny_data)[:2]

    cfg = TrainConfig(epochs=1, knn_backend="exact", progress=False, verbose=False)
    train_seeds(build, tiny_data, cfg, seeds=[1, 2])
    assert seen == ["exact", "exact"] and _default()[0] == "auto"
