"""Catalogue-scale k-NN through PyG's faiss indexes (sea_pyg.nn.mips): parameter rules, backend
resolution, errors without faiss, and (with faiss) the same graphs as the exact dense path."""

import sys
import warnings

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn import ItemKNNGraph, cosine_knn, cosine_topk, mips
from sea_pyg.nn.mips import ApproxParams, knn_backend, resolve_backend

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*Sparse CSR tensor support is in beta.*")
warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")


def needs_faiss():
    pytest.importorskip("faiss")


@pytest.fixture
def no_faiss(monkeypatch):
    """Makes ``import faiss`` fail, as on a machine without the knn extra."""
    monkeypatch.setitem(sys.modules, "faiss", None)


def clustered(n, d, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(max(1, n // 30), d, generator=gen)
    x = centres[torch.randint(0, centres.size(0), (n,), generator=gen)]
    return x + 0.3 * torch.randn(n, d, generator=gen)


# Parameters and resolution (no faiss needed) ################################################


def test_approx_params_rules_hand_computed():
    # N = 10000: round(4 * 100) = 400 cells, capped at 10000 // 39 = 256; visit max(8, 256/32).
    assert ApproxParams().resolve(10_000, 64) == (256, 8, 8)
    # N = 10^6, d = 384: 4000 cells (< 25641), visit ceil(4000 / 32) = 125, 384 / 8 = 48.
    assert ApproxParams().resolve(1_000_000, 384) == (4000, 125, 48)
    # d = 100: the largest divisor of 100 not above 12 is 10; d = 7 (prime): 1 sub-vector.
    assert ApproxParams().resolve(10_000, 100)[2] == 10
    assert ApproxParams().resolve(10_000, 7)[2] == 1
    # Tiny N: at least one cell, visit at most the cells.
    assert ApproxParams().resolve(300, 16) == (7, 7, 2)
    assert ApproxParams(num_cells=50, num_cells_to_visit=80).resolve(1000, 16)[:2] == (50, 50)
    assert ApproxParams.of({"rerank": 3}) == ApproxParams(rerank=3)


@pytest.mark.parametrize(
    "params, match",
    [
        (ApproxParams(bits_per_vector=5), "must divide the dimension 64"),
        (ApproxParams(num_cells=0), "'num_cells' must be a positive integer"),
        (ApproxParams(num_cells=2000), "must not exceed the number of items"),
        (ApproxParams(num_cells_to_visit=1.5), "'num_cells_to_visit' must be a positive"),
        (ApproxParams(rerank=0), "'rerank' must be a positive integer"),
    ],
)
def test_approx_params_errors(params, match):
    with pytest.raises(ValueError, match=match):
        params.resolve(1000, 64)


def test_approx_params_of_errors():
    with pytest.raises(ValueError, match=r"unknown keys \['nprobe'\]"):
        ApproxParams.of({"nprobe": 3})
    with pytest.raises(ValueError, match="must be an ApproxParams or a dict"):
        ApproxParams.of(3)


def test_resolve_backend_auto_rule(monkeypatch):
    assert resolve_backend("auto", 23_033)[0] == "exact"  # the largest paper dataset
    assert mips.AUTO_APPROX_MIN_ITEMS == 500_000
    monkeypatch.setattr(mips, "AUTO_APPROX_MIN_ITEMS", 100)
    monkeypatch.setattr(mips, "faiss_available", lambda: False)
    with pytest.warns(UserWarning, match=r"200 items.*sea_pyg\[knn\]"):
        assert resolve_backend("auto", 200)[0] == "exact"
    monkeypatch.setattr(mips, "faiss_available", lambda: True)
    with pytest.warns(UserWarning, match="200 items: backend='auto' searches approximately"):
        assert resolve_backend("auto", 200)[0] == "approx"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("auto", 99)[0] == "exact"
    with pytest.raises(ValueError, match="'backend' must be one of"):
        resolve_backend("annoy", 10)


def test_knn_backend_context_sets_and_restores_default(monkeypatch):
    monkeypatch.setattr(mips, "faiss_available", lambda: True)
    with knn_backend("faiss", {"rerank": 2}):  # "faiss" is an alias of "mips"
        backend, params = resolve_backend("auto", 10)
        assert backend == "mips" and params.rerank == 2
        assert resolve_backend("exact", 10)[0] == "exact"  # explicit wins
        with knn_backend("exact"):
            assert resolve_backend("auto", 10**7)[0] == "exact"
        assert resolve_backend("auto", 10)[0] == "mips"
    assert resolve_backend("auto", 10) == ("exact", ApproxParams())


def test_missing_faiss_names_the_extra(no_faiss):
    assert not mips.faiss_available()
    x = torch.randn(300, 4)
    for backend in ("mips", "faiss", "approx"):
        with pytest.raises(ImportError, match=r'pip install "sea_pyg\[knn\]".*faiss-cpu'):
            cosine_knn(x, 3, backend=backend)
    with pytest.raises(ImportError, match=r"sea_pyg\[knn\]"):
        ItemKNNGraph({"a": x}, k=3, backend="approx")
    with pytest.raises(ImportError, match=r"sea_pyg\[knn\]"):
        cosine_topk(x, 3, backend="mips")
    with pytest.raises(ImportError, match=r"sea_pyg\[knn\]"):
        with knn_backend("approx"):
            pass
    # The default path never needs faiss.
    assert cosine_knn(x, 3).shape == (2, 900)


# With faiss ##################################################################################


def test_mips_topk_exclusion_hand_computed():
    needs_faiss()
    # Items on a line of scores for the query q = (1, 0): inner products 5, 4, 3, 2, 1.
    items = torch.tensor([[3.0, 0], [5.0, 1], [1.0, 2], [4.0, 0], [2.0, -1]])
    q = torch.tensor([[1.0, 0], [0.0, 1]])
    index = mips.build_index(items, "mips")
    # No exclusion: q0 -> 1 (5), 3 (4), 0 (3); q1 (scores 0, 1, 2, 0, -1) -> 2, 1, then a tie.
    score, found = mips.mips_topk(index, items, q, 2)
    assert found.tolist() == [[1, 3], [2, 1]]
    assert score.tolist() == [[5.0, 4.0], [2.0, 1.0]]
    # Exclude {1, 0} for q0 and {2} for q1 (CSR): q0 -> 3 (4), 4 (2); q1 -> 1 (1), then 0 or 3.
    exclude = (torch.tensor([0, 2, 3]), torch.tensor([1, 0, 2]))
    score, found = mips.mips_topk(index, items, q, 2, exclude=exclude)
    assert found[0].tolist() == [3, 4] and score[0].tolist() == [4.0, 2.0]
    assert found[1, 0] == 1 and int(found[1, 1]) in (0, 3) and score[1].tolist() == [1.0, 0.0]
    # Fewer than k unseen items: q0 excludes 4 of 5, k = 3 -> one item, then -1 / -inf.
    exclude = (torch.tensor([0, 4, 4]), torch.tensor([1, 3, 0, 4]))
    score, found = mips.mips_topk(index, items, q, 3, exclude=exclude)
    assert found[0].tolist() == [2, -1, -1]
    assert score[0].tolist() == [1.0, float("-inf"), float("-inf")]
    with pytest.raises(ValueError, match=r"'k' must lie in \[1, 5\]"):
        mips.mips_topk(index, items, q, 6)


@pytest.mark.parametrize("n, d, k", [(40, 8, 5), (123, 16, 10)])
def test_mips_backend_builds_the_exact_graph(n, d, k):
    needs_faiss()
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(n))
    exact = cosine_knn(x, k, backend="torch")
    assert torch.equal(cosine_knn(x, k, backend="mips", chunk_size=7), exact)
    assert torch.equal(cosine_knn(x, k, backend="faiss"), exact)
    feats = {"a": x, "b": x[:, : d // 2]}
    graphs = [ItemKNNGraph(feats, k=k, backend=b) for b in ("torch", "mips")]
    assert torch.equal(graphs[0].col, graphs[1].col)
    assert torch.equal(graphs[0].mixed_value, graphs[1].mixed_value)


def test_approx_backend_is_exact_when_it_reranks_everything():
    needs_faiss()
    # rerank * k >= N: every item is re-scored exactly, so the approximate index must return
    # the exact neighbours whatever its cells and codes.
    x = torch.randn(300, 16, generator=torch.Generator().manual_seed(3))
    params = {"rerank": 60, "num_cells": 4, "num_cells_to_visit": 4}
    assert torch.equal(
        cosine_knn(x, 5, backend="approx", index_params=params), cosine_knn(x, 5, backend="torch")
    )
    with pytest.raises(ValueError, match="at least 256 items"):
        cosine_knn(x[:200], 5, backend="approx")


def test_approx_backend_recall_on_clustered_items():
    needs_faiss()
    x = clustered(2000, 32)
    exact = cosine_knn(x, 10, backend="torch").view(2, 2000, 10)[1]
    approx = cosine_knn(x, 10, backend="approx").view(2, 2000, 10)[1]
    recall = (approx.unsqueeze(2) == exact.unsqueeze(1)).any(2).float().mean()
    assert recall > 0.95  # measured 1.0 (0.51 without re-ranking: rerank=1)


def test_cosine_topk_through_the_index_same_edges_values_and_gradients():
    needs_faiss()
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(4), requires_grad=True)
    w = torch.randn(500, generator=torch.Generator().manual_seed(5))
    grads, outs = [], []
    for backend in ("exact", "mips"):
        edge_index, value = cosine_topk(x, 10, backend=backend)
        (g,) = torch.autograd.grad((value * w).sum(), x)
        outs.append((edge_index, value.detach()))
        grads.append(g)
    assert torch.equal(outs[0][0], outs[1][0])
    torch.testing.assert_close(outs[0][1], outs[1][1])
    torch.testing.assert_close(grads[0], grads[1])
    # The values are the cosines of the pairs found.
    x_n = F.normalize(x.detach(), dim=1)
    src, dst = outs[1][0]
    torch.testing.assert_close(outs[1][1], (x_n[src] * x_n[dst]).sum(1))


def test_models_item_graph_code_uses_the_context_backend(monkeypatch):
    needs_faiss()
    calls = []
    build = mips.build_index

    def recording(items, backend, params=None):
        calls.append((items.shape[0], backend, params))
        return build(items, backend, params)

    monkeypatch.setattr(mips, "build_index", recording)
    x = torch.randn(30, 8, generator=torch.Generator().manual_seed(6))
    default = ItemKNNGraph({"image": x, "text": x.flip(1)}, k=4)
    assert calls == []  # nothing changes by default
    with knn_backend("mips"):
        through = ItemKNNGraph({"image": x, "text": x.flip(1)}, k=4)
    assert [c[:2] for c in calls] == [(30, "mips"), (30, "mips")]
    assert torch.equal(default.col, through.col)
    assert torch.equal(default.mixed_value, through.mixed_value)


def test_faiss_backends_reject_k_above_2048():
    needs_faiss()
    x = torch.randn(2100, 2, generator=torch.Generator().manual_seed(7))
    for backend in ("mips", "approx"):
        with pytest.raises(ValueError, match=r"supports 'k' up to 2048 \(got 2049\)"):
            cosine_knn(x, 2049, backend=backend)
