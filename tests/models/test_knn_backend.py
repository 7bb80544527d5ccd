"""Models whose item graphs are built from features run their own item-graph code through PyG's
faiss index inside ``knn_backend(...)``; by default nothing calls faiss (no number changes)."""

import warnings

import pytest
import torch

from sea_pyg.models import build_model
from sea_pyg.nn import knn_backend, mips

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")


@pytest.mark.parametrize("name", ["freedom", "sea", "lattice", "mgcn"])
def test_item_graphs_through_the_index_equal_the_default(name, unit_data, monkeypatch):
    pytest.importorskip("faiss")
    built = []
    build = mips.build_index
    monkeypatch.setattr(mips, "build_index", lambda *a: built.append(a[1]) or build(*a))
    torch.manual_seed(0)
    default = build_model(name, unit_data)[0]
    assert built == []  # the default path never reaches faiss
    torch.manual_seed(0)
    with knn_backend("mips"):
        through = build_model(name, unit_data)[0]
    assert built and set(built) == {"mips"}  # one index per modality graph
    a, b = default.state_dict(), through.state_dict()
    assert a.keys() == b.keys()
    for key, value in a.items():
        same(value, b[key], key)
    # Buffers outside the state dict (LATTICE's initial graphs) too.
    for (key, value), (_, other) in zip(default.named_buffers(), through.named_buffers(),
                                        strict=True):  # fmt: skip
        same(value, other, key)


def same(a, b, key):
    """Equal neighbour indices and binary-graph values; cosine values (LATTICE, MGCN) computed
    per edge instead of by a matrix product, so equal up to float32 rounding."""
    a, b = (t if t.layout == torch.strided else t.to_dense() for t in (a, b))
    if a.is_floating_point():
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=key)
    else:
        assert torch.equal(a, b), key
