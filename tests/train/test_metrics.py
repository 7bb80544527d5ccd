import math

import pytest
import torch
from torch_geometric.metrics import (
    LinkPredMAP,
    LinkPredNDCG,
    LinkPredPrecision,
    LinkPredRecall,
)

from sea_pyg.train.metrics import evaluate_ranking, full_sort_topk, ranking_metrics, split_csr

L3 = 1 / math.log2(3)  # discount at rank 2
L5 = 1 / math.log2(5)  # discount at rank 4


def _metrics(hits, num_pos, ks=(2, 4)):
    out = ranking_metrics(torch.tensor(hits, dtype=torch.bool), torch.tensor(num_pos), ks)
    return {k: v.tolist() for k, v in out.items()}


def test_two_held_out_items():
    # P = {a, b}; ranking hits at ranks 1 and 3.
    m = _metrics([[1, 0, 1, 0]], [2])
    assert m["recall@2"][0] == pytest.approx(0.5, abs=1e-12)
    assert m["recall@4"][0] == pytest.approx(1.0, abs=1e-12)
    assert m["precision@2"][0] == pytest.approx(0.5, abs=1e-12)
    assert m["precision@4"][0] == pytest.approx(0.5, abs=1e-12)
    # DCG@2 = 1, IDCG@2 = 1 + 1/log2 3 = 1.6309297535714575
    assert m["ndcg@2"][0] == pytest.approx(1 / 1.6309297535714575, abs=1e-12)
    # DCG@4 = 1 + 1/log2 4 = 1.5
    assert m["ndcg@4"][0] == pytest.approx(1.5 / 1.6309297535714575, abs=1e-12)
    # MAP@2 = (1/2)(P@1) = 0.5 ; MAP@4 = (1/2)(1 + 2/3) = 5/6
    assert m["map@2"][0] == pytest.approx(0.5, abs=1e-12)
    assert m["map@4"][0] == pytest.approx(5 / 6, abs=1e-12)


def test_single_held_out_item():
    m = _metrics([[0, 1, 0, 0]], [1])
    assert m["recall@2"][0] == 1.0 and m["recall@4"][0] == 1.0
    assert m["precision@2"][0] == 0.5 and m["precision@4"][0] == 0.25
    assert m["ndcg@2"][0] == pytest.approx(0.6309297535714575, abs=1e-12)
    assert m["ndcg@4"][0] == pytest.approx(0.6309297535714575, abs=1e-12)
    # MAP = (1/min(1,K)) * P@2 * 1 = 0.5
    assert m["map@2"][0] == pytest.approx(0.5, abs=1e-12)
    assert m["map@4"][0] == pytest.approx(0.5, abs=1e-12)


def test_more_held_out_items_than_k():
    # |P| = 6 > K; hits at ranks 1, 2, 4.
    m = _metrics([[1, 1, 0, 1]], [6])
    assert m["recall@2"][0] == pytest.approx(2 / 6, abs=1e-12)  # denominator not capped
    assert m["recall@4"][0] == pytest.approx(3 / 6, abs=1e-12)
    assert m["ndcg@2"][0] == pytest.approx(1.0, abs=1e-12)  # IDCG over min(6, 2) = 2 ranks
    idcg4 = 1 + L3 + 0.5 + L5
    assert m["ndcg@4"][0] == pytest.approx((1 + L3 + L5) / idcg4, abs=1e-12)
    assert m["ndcg@4"][0] == pytest.approx(0.80480997500, abs=1e-9)
    assert m["map@2"][0] == pytest.approx(1.0, abs=1e-12)
    assert m["map@4"][0] == pytest.approx((1 + 1 + 3 / 4) / 4, abs=1e-12)  # 0.6875
    assert m["precision@4"][0] == pytest.approx(0.75, abs=1e-12)


def test_no_hits_is_zero_everywhere():
    m = _metrics([[0, 0, 0, 0]], [3])
    assert all(v[0] == 0.0 for v in m.values())


def test_bad_inputs():
    with pytest.raises(ValueError, match="unknown metric"):
        ranking_metrics(torch.zeros(1, 2, dtype=torch.bool), torch.ones(1), (1,), ["auc"])
    with pytest.raises(ValueError, match="cut-offs"):
        ranking_metrics(torch.zeros(1, 2, dtype=torch.bool), torch.ones(1), (3,))
    with pytest.raises(ValueError, match="num_pos > 0"):
        ranking_metrics(torch.zeros(1, 2, dtype=torch.bool), torch.zeros(1), (1,))


@pytest.mark.parametrize("k", [1, 3, 5, 10])
def test_agrees_with_pyg_link_pred_metrics(k):
    gen = torch.Generator().manual_seed(k)
    num_users, num_items, kmax = 50, 30, 10
    pred = torch.stack([torch.randperm(num_items, generator=gen)[:kmax] for _ in range(num_users)])
    # 1..12 held-out items per user (some users have more than k).
    rows, cols = [], []
    for u in range(num_users):
        n = int(torch.randint(1, 13, (1,), generator=gen))
        items = torch.randperm(num_items, generator=gen)[:n]
        rows.append(torch.full((n,), u))
        cols.append(items)
    label = torch.stack([torch.cat(rows), torch.cat(cols)])
    rowptr, items = split_csr(label, num_users)
    num_pos = rowptr[1:] - rowptr[:-1]
    hits = torch.zeros(num_users, kmax, dtype=torch.bool)
    for u in range(num_users):
        pos = set(items[rowptr[u] : rowptr[u + 1]].tolist())
        hits[u] = torch.tensor([int(i) in pos for i in pred[u]])
    ours = ranking_metrics(hits, num_pos, [k])
    for cls, name in [
        (LinkPredRecall, "recall"),
        (LinkPredPrecision, "precision"),
        (LinkPredNDCG, "ndcg"),
        (LinkPredMAP, "map"),
    ]:
        metric = cls(k)
        metric.update(pred[:, :k], label)
        assert float(metric.compute()) == pytest.approx(float(ours[f"{name}@{k}"].mean()), abs=1e-6)


def test_full_sort_topk_masks_training_items_only():
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    train = torch.tensor([[0, 0, 1], [0, 3, 4]])  # user 0: items 0, 3; user 1: item 4
    rowptr, items = split_csr(train, 2)
    top = full_sort_topk(scores.clone(), torch.tensor([0, 1]), rowptr, items, 3)
    assert top.tolist() == [[1, 2, 4], [3, 2, 1]]


def test_evaluate_ranking_end_to_end_hand_computed():
    # 3 users, 6 items. Scores are a fixed table; user 2 has no held-out item (not evaluated).
    table = torch.tensor(
        [
            [9.0, 8.0, 7.0, 6.0, 5.0, 4.0],  # user 0
            [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # user 1
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # user 2
        ]
    )
    train = torch.tensor([[0, 1, 2], [0, 5, 1]])  # u0: item 0, u1: item 5, u2: item 1
    # Held-out (e.g. test): u0 -> {1, 4}; u1 -> {0}. A *validation* item of u0 (item 2)
    # is not masked at test time: it stays at rank 2 and counts as a miss.
    test = torch.tensor([[0, 0, 1], [1, 4, 0]])
    out = evaluate_ranking(lambda u: table[u].clone(), test, train, 3, 6, ks=(2, 4), chunk_size=1)
    # u0 ranking (item 0 masked): 1, 2, 3, 4 -> hits 1,0,0,1 ; |P| = 2
    # u1 ranking (item 5 masked): 4, 3, 2, 1 -> hits 0,0,0,0 ; |P| = 1
    assert out["recall@2"] == pytest.approx((0.5 + 0.0) / 2, abs=1e-12)
    assert out["recall@4"] == pytest.approx((1.0 + 0.0) / 2, abs=1e-12)
    ndcg4_u0 = (1 + L5) / (1 + L3)
    assert out["ndcg@4"] == pytest.approx(ndcg4_u0 / 2, abs=1e-12)
    assert out["map@4"] == pytest.approx(((1 + 2 / 4) / 2) / 2, abs=1e-12)
    assert out["precision@2"] == pytest.approx(0.25, abs=1e-12)


def test_ties_do_not_leak_masked_items_and_chunking_is_invariant():
    # All scores tie: only the masked training items may never appear in the top-K.
    num_users, num_items = 7, 9
    gen = torch.Generator().manual_seed(0)
    train = torch.stack(
        [torch.arange(num_users), torch.randint(0, num_items, (num_users,), generator=gen)]
    )
    heldout = torch.stack([torch.arange(num_users), (train[1] + 1) % num_items])
    out_a = evaluate_ranking(
        lambda u: torch.zeros(u.numel(), num_items),
        heldout,
        train,
        num_users,
        num_items,
        ks=(8,),
        chunk_size=3,
    )
    # 8 unmasked items remain and K = 8: every held-out item is retrieved whatever the tie order.
    assert out_a["recall@8"] == pytest.approx(1.0, abs=1e-12)
    scores = torch.randn(num_users, num_items, generator=gen)
    res = [
        evaluate_ranking(
            lambda u: scores[u].clone(),
            heldout,
            train,
            num_users,
            num_items,
            ks=(1, 3),
            chunk_size=c,
        )
        for c in (1, 2, 7, 100)
    ]
    for r in res[1:]:
        for key in r:
            assert r[key] == pytest.approx(res[0][key], abs=1e-12)


def test_evaluate_ranking_checks_score_shape():
    train = torch.tensor([[0], [0]])
    test = torch.tensor([[0], [1]])
    with pytest.raises(ValueError, match="score_fn returned shape"):
        evaluate_ranking(lambda u: torch.zeros(u.numel(), 3), test, train, 1, 4, ks=(1,))
