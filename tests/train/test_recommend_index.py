"""recommend() through PyG's faiss indexes (index="mips" / "approx"): the same top-k as the
exact scoring path, seen items excluded, heavy users and non-dot-product models handled."""

import warnings

import pytest
import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from sea_pyg import recommend
from sea_pyg.data.mmrec import EDGE_TYPE
from sea_pyg.models.base import Recommender
from sea_pyg.nn import mips

pytestmark = pytest.mark.usefixtures("one_thread")
warnings.filterwarnings("ignore", ".*TypedStorage is deprecated.*")


class FixedEmbeddings(Recommender):
    """Scores by the dot product of fixed embeddings."""

    def __init__(self, user_emb: Tensor, item_emb: Tensor):
        super().__init__()
        self.register_buffer("user_emb", user_emb)
        self.register_buffer("item_emb", item_emb)

    def embeddings(self):
        return self.user_emb, self.item_emb


class OwnScore(FixedEmbeddings):
    """A score that is not a dot product (like PAMD's)."""

    def scoring_state(self):
        return self.user_emb, self.item_emb

    def score(self, users, state=None):
        u, i = self.scoring_state() if state is None else state
        return -torch.cdist(u[users], i)


def make(num_users=40, num_items=300, d=16, per_user=(0, 60), seed=0):
    gen = torch.Generator().manual_seed(seed)
    data = HeteroData()
    data["user"].num_nodes, data["item"].num_nodes = num_users, num_items
    train, val, test = [], [], []
    for u in range(num_users):  # n training items, then one validation and one test item
        n = int(torch.randint(per_user[0], per_user[1] + 1, (1,), generator=gen))
        items = torch.randperm(num_items, generator=gen)[: n + 2]
        for part, chosen in ((train, items[:n]), (val, items[n : n + 1]), (test, items[n + 1 :])):
            part.append(torch.stack([torch.full_like(chosen, u), chosen]))
    store = data[EDGE_TYPE]
    store.edge_index = torch.cat(train, dim=1)
    store.val_edge_index = torch.cat(val, dim=1)
    store.test_edge_index = torch.cat(test, dim=1)
    model = FixedEmbeddings(torch.randn(num_users, d, generator=gen),
                            torch.randn(num_items, d, generator=gen))  # fmt: skip
    return model, data


def dense_reference(model, data, users, k, exclude):
    """Top-k by a dense score matrix with the excluded items set to -inf (hand-rolled)."""
    scores = model.user_emb[users] @ model.item_emb.t()
    keys = {"train": ["edge_index"], "all": ["edge_index", "val_edge_index", "test_edge_index"]}
    for key in keys.get(exclude, []):
        e = data[EDGE_TYPE][key]
        for row, u in enumerate(users.tolist()):
            scores[row, e[1, e[0] == u]] = float("-inf")
    top = scores.topk(k, dim=1)
    return top.values, torch.where(top.values == float("-inf"), -1, top.indices)


@pytest.mark.parametrize("exclude", ["train", "all", "none"])
def test_mips_recommend_equals_exact(exclude):
    pytest.importorskip("faiss")
    model, data = make()
    users = torch.tensor([5, 0, 17, 5, 39, 22])
    exact = recommend(model, data, users, k=12, exclude=exclude, index="exact", user_chunk=4)
    assert exact.users.tolist() == users.tolist()
    ref_scores, ref_items = dense_reference(model, data, users, 12, exclude)
    assert torch.equal(exact.items, ref_items)
    torch.testing.assert_close(exact.scores, ref_scores)
    for index in ("mips", "approx"):
        params = {"rerank": 30}  # 30 * 12 >= 300: the approximate candidates are every item
        got = recommend(model, data, users, k=12, exclude=exclude, index=index,
                        index_params=params, user_chunk=4)  # fmt: skip
        assert torch.equal(got.items, exact.items), index
        torch.testing.assert_close(got.scores, exact.scores)
        assert got.item_ids == exact.item_ids and got.user_ids == exact.user_ids


def test_users_with_fewer_unseen_items_than_k_are_padded_like_exact():
    pytest.importorskip("faiss")
    model, data = make(num_users=6, num_items=30, per_user=(20, 27))
    users = torch.arange(6)
    exact = recommend(model, data, users, k=10, exclude="all", index="exact")
    got = recommend(model, data, users, k=10, exclude="all", index="mips")
    assert (exact.items == -1).any()  # some user has fewer than 10 unseen items
    assert torch.equal(got.items, exact.items)
    torch.testing.assert_close(got.scores, exact.scores)


def test_heavy_users_are_scored_exactly(monkeypatch):
    pytest.importorskip("faiss")
    model, data = make(per_user=(0, 60))
    users = torch.arange(40)
    exact = recommend(model, data, users, k=5, index="exact")
    searched = []
    topk = mips.mips_topk

    def recording(index, items, queries, k, rerank=1, exclude=None, chunk_size=4096):
        searched.append(queries.size(0))
        if exclude is not None:  # each searched user fits the (patched) limit
            assert int(exclude[0].diff().max()) + k * rerank <= mips.FAISS_MAX_K
        return topk(index, items, queries, k, rerank, exclude, chunk_size)

    monkeypatch.setattr(mips, "mips_topk", recording)
    monkeypatch.setattr(mips, "FAISS_MAX_K", 35)  # users with more than 30 seen items: exact
    counts = torch.bincount(data[EDGE_TYPE].edge_index[0], minlength=40)
    got = recommend(model, data, users, k=5, index="mips")
    assert searched == [int((counts + 5 <= 35).sum())] and 0 < searched[0] < 40
    assert torch.equal(got.items, exact.items)
    torch.testing.assert_close(got.scores, exact.scores)


def test_auto_index_and_models_with_their_own_score(monkeypatch):
    pytest.importorskip("faiss")
    model, data = make()
    own = OwnScore(model.user_emb, model.item_emb)
    users = torch.arange(10)
    with pytest.raises(ValueError, match="OwnScore has its own score.*index='exact'"):
        recommend(own, data, users, index="mips")
    monkeypatch.setattr(mips, "AUTO_APPROX_MIN_ITEMS", 100)  # 300 items: auto -> approx
    built = []
    build = mips.build_index
    monkeypatch.setattr(mips, "build_index", lambda *a: built.append(a[1]) or build(*a))
    exact = recommend(own, data, users, index="exact")
    assert torch.equal(recommend(own, data, users).items, exact.items)  # auto: exact fallback
    assert built == []
    recommend(model, data, users, index_params={"rerank": 30})
    assert built == ["approx"]


def test_recommend_index_argument_errors():
    model, data = make(num_users=3, num_items=20)
    with pytest.raises(ValueError, match="index must be 'auto', 'exact', 'mips' or 'approx'"):
        recommend(model, data, torch.tensor([0]), index="hnsw")
    with pytest.raises(ValueError, match="user_chunk must be a positive integer"):
        recommend(model, data, torch.tensor([0]), user_chunk=0)
