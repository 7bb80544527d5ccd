"""The SEA model: assembly, presets, fused == naive, estimator steps, learning on planted data."""

import pytest
import torch
from conftest import popularity_scores

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.models import MODELS, SEA, build_model
from sea_pyg.nn import bpr_loss
from sea_pyg.train import AuxiliaryTraining, TrainConfig, Trainer, seed_everything
from sea_pyg.train.metrics import evaluate_ranking

pytestmark = pytest.mark.usefixtures("one_thread")


def _sea(data, **kw):
    seed_everything(0)
    u, n = data["user"].num_nodes, data["item"].num_nodes
    return SEA(u, n, data[EDGE_TYPE].edge_index, item_features(data), **kw)


def _batch(data, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    ei = data[EDGE_TYPE].edge_index
    idx = torch.randint(0, ei.size(1), (size,), generator=g)
    neg = torch.randint(0, data["item"].num_nodes, (size,), generator=g)
    return torch.stack([ei[0, idx], ei[1, idx], neg])


def test_shapes_fusion_and_hand_computed_bpr(tiny_data):
    model = _sea(tiny_data, embedding_dim=8, hidden_dim=16)
    u, n = tiny_data["user"].num_nodes, tiny_data["item"].num_nodes
    users, items = model.embeddings()
    assert users.shape == (u, 16) and items.shape == (n, 16)  # 2 modalities x 8
    # per-user modality weights start as a softmax (rows sum to one)
    assert torch.allclose(model.user_weight.sum(1), torch.ones(u, 1), atol=1e-6)
    # fusion by hand: image first, users scaled, items + S items
    enc = []
    for m in ("image", "text"):
        t = model.transforms[m](model.feature(m))
        enc.append(model.encoders[m](t, model.adj))
    exp_users = torch.cat([enc[0][:u] * model.user_weight[:, 0], enc[1][:u] *
                           model.user_weight[:, 1]], 1)
    cat_items = torch.cat([enc[0][u:], enc[1][u:]], 1)
    exp_items = cat_items + model.item_graph(cat_items)
    assert torch.allclose(users, exp_users, atol=1e-5)
    assert torch.allclose(items, exp_items, atol=1e-5)
    # the item graph rows average: every row of S sums to one (0.1 image + 0.9 text)
    s = model.item_graph(torch.ones(n, 1))
    assert torch.allclose(s, torch.ones(n, 1), atol=1e-5)
    # loss terms: log2 BPR on the fused scores + separate-learning terms
    batch = _batch(tiny_data)
    model.train()
    terms = model.loss(batch)
    assert set(terms) == {"bpr", "align", "dis"}
    us, it = model.embeddings()
    pos = (us[batch[0]] * it[batch[1]]).sum(-1)
    neg = (us[batch[0]] * it[batch[2]]).sum(-1)
    expected = -torch.log2(torch.sigmoid(pos - neg)).mean()
    assert torch.allclose(terms["bpr"], expected, atol=1e-5)
    assert torch.allclose(bpr_loss(pos, neg, variant="log2"), expected, atol=1e-6)


def test_fused_and_naive_models_agree(tiny_data):
    a = _sea(tiny_data, fused=True)
    b = _sea(tiny_data, fused=False)
    b.load_state_dict(a.state_dict())
    batch = _batch(tiny_data)
    a.train(), b.train()
    torch.manual_seed(1)
    ta = a.loss(batch)
    torch.manual_seed(1)
    tb = b.loss(batch)
    for k in ta:
        assert torch.allclose(ta[k], tb[k], rtol=1e-4, atol=1e-6), k
    sum(ta.values()).backward()
    sum(tb.values()).backward()
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        if p.grad is None:
            assert q.grad is None, name
            continue
        scale = q.grad.abs().max().clamp_min(1e-3)
        assert ((p.grad - q.grad).abs().max() / scale) < 1e-3, name


def test_estimators_are_fitted_between_backward_and_step(tiny_data):
    model = _sea(tiny_data, club_steps=3)
    aux = AuxiliaryTraining(model.auxiliary_estimators())
    opt_params = {id(p) for p in aux.model_parameters(model)}
    club_params = list(model.separate.clubs.parameters())
    assert club_params and not any(id(p) in opt_params for p in club_params)
    model.train()
    sum(model.loss(_batch(tiny_data)).values()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()
             if p.grad is not None and id(p) in opt_params}
    before = [p.detach().clone() for p in club_params]
    log = aux.step()
    assert "club_nll" in log
    assert any(not torch.equal(p, q) for p, q in zip(club_params, before, strict=True))
    # the model's gradients are untouched by the estimator steps
    for n, p in model.named_parameters():
        if n in grads:
            assert torch.equal(p.grad, grads[n]), n
    state = aux.state_dict()
    assert list(state) == ["separate.club_nll"] and state["separate.club_nll"]["state"]


def test_one_modality_and_no_item_graph(tiny_data):
    u, n = tiny_data["user"].num_nodes, tiny_data["item"].num_nodes
    feats = {"text": item_features(tiny_data)["text"]}
    model = SEA(u, n, tiny_data[EDGE_TYPE].edge_index, feats, item_graph_layers=0)
    model.train()
    terms = model.loss(_batch(tiny_data))
    assert set(terms) == {"bpr", "dis"}  # alignment needs two modalities
    users, items = model.embeddings()
    assert users.shape == (u, 64) and items.shape == (n, 64)
    with pytest.raises(ValueError, match="non-empty mapping"):
        SEA(u, n, tiny_data[EDGE_TYPE].edge_index, {})
    with pytest.raises(ValueError, match=r"features\['text'\] has 41 rows"):
        SEA(u, n, tiny_data[EDGE_TYPE].edge_index, {"text": torch.randn(n + 1, 4)})


def test_transform_dims_makes_a_smaller_model(tiny_data):
    model = _sea(tiny_data, transform_dims=16)
    assert model.transforms["image"].weight.shape == (16, 64)
    assert model.separate.generic_slice("image") == (0, 8)
    model.train()
    assert torch.isfinite(sum(model.loss(_batch(tiny_data)).values()))


def test_every_registered_preset_builds_and_runs(tiny_data):
    presets = [name for name, spec in MODELS.items() if spec.cls is SEA]
    assert len(presets) == 9
    for name in presets:
        model, info, train_defaults = build_model(name, tiny_data)
        assert train_defaults == {"lr": 1e-4}
        model.train()
        terms = model.loss(_batch(tiny_data))
        assert all(torch.isfinite(v) for v in terms.values()), name
        AuxiliaryTraining(model.auxiliary_estimators()).step()
    ref, _, _ = build_model("sea-reference", tiny_data)
    assert ref.separate.club_fit == "cross_modal" and list(ref.separate.clubs) == ["shared"]
    b, _, _ = build_model("sea-b", tiny_data)
    assert b.separate.distancing == "negl2" and len(b.separate.clubs) == 0
    assert MODELS["sea-noboth"].defaults["alignment"] == "none"


def test_sea_learns_on_planted_data(unit_data):
    data = unit_data
    edges = data[EDGE_TYPE]
    u, n = data["user"].num_nodes, data["item"].num_nodes
    pop = evaluate_ranking(
        popularity_scores(data), edges.test_edge_index, edges.edge_index, u, n, ks=(20,)
    )
    model = _sea(data, club_steps=5)
    cfg = TrainConfig(epochs=10, patience=10, lr=1e-2, batch_size=512, progress=False,
                      verbose=False, seed=0)
    res = Trainer(model, data, cfg).fit()
    # popularity: 0.272; SEA after 10 epochs at lr 1e-2: about 0.35 (LightGCN: about 0.34)
    assert res["test"]["recall@20"] > pop["recall@20"] + 0.05
