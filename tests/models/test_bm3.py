import math

import pytest
import torch
from _learning import popularity_recall20, train_registered

from sea_pyg.data import BPRSampler
from sea_pyg.models import BM3, build_model

EDGES = torch.tensor([[0, 0, 1, 2, 2], [0, 1, 1, 2, 3]])  # 3 users, 4 items


def _features():
    image = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    text = torch.tensor([[1.0, -1.0], [0.0, 1.0], [2.0, 0.5], [-1.0, 1.0]])
    return {"image": image, "text": text}


def _hand_model(dropout=0.0, reg_weight=0.1, cl_weight=2.0):
    torch.manual_seed(0)
    model = BM3(
        3,
        EDGES,
        _features(),
        embedding_dim=2,
        num_layers=1,
        dropout=dropout,
        reg_weight=reg_weight,
        cl_weight=cl_weight,
    )
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0], [2.0, 0.0]]))
        model.predictor.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 2.0]]))
        model.predictor.bias.copy_(torch.tensor([0.5, 0.0]))
        model.feat_trs["image"].weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
        model.feat_trs["image"].bias.zero_()
        model.feat_trs["text"].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        model.feat_trs["text"].bias.copy_(torch.tensor([0.0, 1.0]))
    return model


def _dense_norm_adj():
    a = torch.zeros(7, 7)
    for u, i in EDGES.t().tolist():
        a[u, 3 + i] = a[3 + i, u] = 1.0
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _online(model):
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    out = (ego + _dense_norm_adj() @ ego) / 2  # 1 layer, mean over layers 0..1
    return out[:3], out[3:] + model.item_emb.weight.detach()


def _g(x):  # the hand-set predictor
    return x @ torch.tensor([[1.0, 0.0], [1.0, 2.0]]) + torch.tensor([0.5, 0.0])


def _neg_cos(a, b):
    cos = [
        sum(x * y for x, y in zip(ra, rb, strict=True))
        / (math.sqrt(sum(x * x for x in ra)) * math.sqrt(sum(y * y for y in rb)))
        for ra, rb in zip(a.tolist(), b.tolist(), strict=True)
    ]
    return 1 - sum(cos) / len(cos)


def test_forward_and_scores_hand_computed():
    model = _hand_model()
    u, i = _online(model)
    fu, fi = model.forward()
    assert torch.allclose(fu, u, atol=1e-6) and torch.allclose(fi, i, atol=1e-6)
    su, si = model.embeddings()  # the predictor is applied at inference
    assert torch.allclose(su, _g(u), atol=1e-6) and torch.allclose(si, _g(i), atol=1e-6)
    reps = model.modal_item_representations()
    x = _features()
    assert torch.allclose(reps["image"], x["image"] @ torch.tensor([[1.0, 0], [0, 1], [1, -1]]))
    assert torch.allclose(
        reps["text"], x["text"] @ torch.tensor([[1.0, 2], [1, 0]]) + torch.tensor([0.0, 1])
    )


def test_loss_hand_computed_without_dropout():
    model = _hand_model(dropout=0.0, reg_weight=0.1, cl_weight=2.0)
    batch = torch.tensor([[0, 2, 1], [1, 3, 1]])  # (2, B): users; items
    terms = model.loss(batch)
    u_all, i_all = _online(model)
    users, items = batch
    u, i = u_all[users], i_all[items]
    rec = _neg_cos(_g(u), i) + _neg_cos(_g(i), u)  # dropout 0: targets = online values
    assert terms["rec"].item() == pytest.approx(rec, rel=1e-5)
    # EmbLoss over the FULL online tables, divided by the number of items (4)
    reg = 0.1 * (u_all.norm().item() + i_all.norm().item()) / 4
    assert terms["reg"].item() == pytest.approx(reg, rel=1e-5)
    reps = {m: r.detach() for m, r in model.modal_item_representations().items()}
    align = sum(_neg_cos(_g(r[items]), i) for r in reps.values())
    mask = sum(_neg_cos(_g(r[items]), r[items]) for r in reps.values())
    assert terms["align"].item() == pytest.approx(2.0 * align, rel=1e-5)
    assert terms["mask"].item() == pytest.approx(2.0 * mask, rel=1e-5)
    assert set(_hand_model(reg_weight=0.0, cl_weight=0.0).loss(batch)) == {"rec"}


def test_targets_are_stop_gradient():
    batch = torch.tensor([[0, 2, 1], [1, 3, 1]])
    model = _hand_model(dropout=0.0)
    sum(model.loss(batch).values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}

    # the same loss written with explicitly detached targets
    ref = _hand_model(dropout=0.0)
    u_all, i_all = ref.forward()
    users, items = batch
    ut, it = u_all.detach()[users], i_all.detach()[items]
    cos = torch.nn.functional.cosine_similarity
    g = ref.predictor
    loss = (1 - cos(g(u_all[users]), it).mean()) + (1 - cos(g(i_all[items]), ut).mean())
    loss = loss + 0.1 * (u_all.norm() + i_all.norm()) / 4
    for r in ref.modal_item_representations().values():
        h = r[items]
        loss = loss + 2.0 * ((1 - cos(g(h), it).mean()) + (1 - cos(g(h), h.detach()).mean()))
    loss.backward()
    for n, p in ref.named_parameters():
        assert torch.allclose(grads[n], p.grad, atol=1e-6), n
        assert p.grad.abs().sum() > 0, n  # everything learns, raw features included


def test_dropout_targets():
    model = _hand_model(dropout=0.5)
    batch = torch.tensor([[0, 0, 1, 2] * 50, [0, 0, 1, 3] * 50])
    torch.manual_seed(0)
    out = model.forward_train(batch).rows
    assert not out["user_target"].requires_grad and not out["item_target"].requires_grad
    ut, online = out["user_target"], out["user"].detach()
    kept = ut != 0
    assert torch.allclose(ut[kept], 2.0 * online[kept])  # scaled by 1 / (1 - p)
    # one mask per table row: repeated ids share their target
    assert torch.equal(ut[0], ut[1]) and torch.equal(ut[0], ut[4])
    mt = out["modal_target"]["text"]
    assert torch.equal(mt[2], mt[6]) and not mt.requires_grad
    # a fresh draw at every call, on average half of the entries dropped
    torch.manual_seed(1)
    again = model.forward_train(batch).rows
    assert not torch.equal(again["item_target"], out["item_target"])
    big = model._target(torch.ones(1000, 8))
    assert (big == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)


def test_runs_on_sampler_batches_without_negatives(tiny_data):
    model, _, _ = build_model("bm3", tiny_data)
    assert model.uses_negatives is False
    edges = tiny_data["user", "rates", "item"].edge_index
    sampler = BPRSampler(
        edges,
        tiny_data["user"].num_nodes,
        tiny_data["item"].num_nodes,
        batch_size=32,
        negatives=model.uses_negatives,
        generator=torch.Generator().manual_seed(0),
    )
    batch = next(iter(sampler))
    assert batch.shape == (2, 32)
    terms = model.loss(batch)
    assert set(terms) == {"rec", "reg", "align", "mask"}
    assert all(torch.isfinite(v) for v in terms.values())
    u, i = model.embeddings()
    assert u.shape == (tiny_data["user"].num_nodes, 64)
    assert i.shape == (tiny_data["item"].num_nodes, 64)
    with pytest.raises(ValueError, match=r"\(2, B\)"):
        model.loss(batch[:1])


def test_init_and_any_number_of_modalities():
    torch.manual_seed(0)
    feats = {"text": torch.randn(300, 100)}
    model = BM3(400, torch.tensor([[0, 1, 2], [0, 5, 9]]), feats, embedding_dim=32)
    assert model.predictor.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    assert model.feat_trs["text"].weight.std().item() == pytest.approx(math.sqrt(2 / 132), rel=0.1)
    assert model.user_emb.weight.abs().max().item() <= math.sqrt(6 / (400 + 32))
    assert set(model.loss(torch.tensor([[0, 1], [0, 5]]))) == {"rec", "reg", "align", "mask"}
    three = {m: torch.randn(6, d) for m, d in [("a", 2), ("b", 3), ("c", 5)]}
    model = BM3(2, torch.tensor([[0, 1], [1, 4]]), three, embedding_dim=4)
    reps = model.modal_item_representations()
    assert list(reps) == ["a", "b", "c"] and all(r.shape == (6, 4) for r in reps.values())
    model.loss(torch.tensor([[0, 1], [1, 4]]))


def test_bm3_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "bm3", {}, epochs=40, lr=3e-3)
    assert res["history"][-1]["losses"]["rec"] < res["history"][0]["losses"]["rec"]
    # about 0.338 (trainer seeds 2, 3: 0.290, 0.317); BM3 is slow on this small data
    assert res["test"]["recall@20"] > pop + 0.03, (res["test"]["recall@20"], pop)
