import math

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import MGCN, build_model
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 users, 4 items; the pair (0, 1) is interacted twice (MMRec MGCN counts it twice).
EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 0], [0, 1, 1, 2, 0, 2, 3, 1]])
U, N = 3, 4


def _features():
    # image cosines: (0,1) 0.6, (1,2) 0.8, (0,2) 0, item 3 opposite item 0
    image = torch.tensor([[1.0, 0.0], [3.0, 4.0], [0.0, 1.0], [-1.0, 0.0]])
    # text: items {0, 1} and {2, 3} are each other's nearest neighbours (cosine 2/sqrt 5)
    text = torch.tensor([[2.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    return {"image": image, "text": text}


def _image_graph():
    """Hand-computed weighted k = 2 graph of the image features: row sums 1.6, 1.8, 1.8, 1."""
    s = torch.zeros(N, N)
    s[0, 0], s[0, 1] = 1 / 1.6, 0.6 / math.sqrt(1.6 * 1.8)
    s[1, 1] = s[2, 2] = 1 / 1.8
    s[1, 2] = s[2, 1] = 0.8 / 1.8
    s[3, 3] = 1.0
    return s


def _text_graph():
    c = 2 / math.sqrt(5)  # every row: self (1) + its neighbour (c), row sum 1 + c
    s = torch.eye(N) / (1 + c)
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        s[i, j] = c / (1 + c)
    return s


def _dense_adj():
    a = torch.zeros(U + N, U + N)
    for u, i in EDGES.t().tolist():
        a[u, U + i] += 1.0
        a[U + i, u] += 1.0
    d = a.sum(1).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _model(**kw):
    torch.manual_seed(0)
    kw = {"embedding_dim": 4, "knn_k": 2, **kw}
    return MGCN(U, EDGES, _features(), **kw)


def _lin(layer, x):
    return x @ layer.weight.t() + (0 if layer.bias is None else layer.bias)


def _reference(model):
    """MMRec MGCN's forward for two modalities, written densely."""
    a = _dense_adj()
    r = a[:U, U:]
    e = torch.cat([model.user_emb.weight, model.item_emb.weight])
    content = (e + a @ e + a @ a @ e) / 3
    views = {}
    for m, s in (("image", _image_graph()), ("text", _text_graph())):
        t = _lin(model.feat_trs[m], model.features[m])
        purified = model.item_emb.weight * torch.sigmoid(_lin(model.purifier[m], t))
        items = s @ purified
        views[m] = torch.cat([r @ items, items])
    q0, q2 = model.query[0], model.query[2]
    att = torch.cat([_lin(q2, torch.tanh(_lin(q0, views[m]))) for m in views], dim=-1)
    att = torch.softmax(att, dim=-1)
    common = att[:, 0:1] * views["image"] + att[:, 1:2] * views["text"]
    sep = {
        m: torch.sigmoid(_lin(model.preference[m], content)) * (views[m] - common) for m in views
    }
    side = (sep["image"] + sep["text"] + common) / 3
    return content, side


def _mmrec_infonce(a, b, tau):
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    pos = torch.exp((a * b).sum(-1) / tau)
    total = torch.exp(a @ b.t() / tau).sum(1)
    return -torch.log(pos / total).mean()


# ---- graphs ------------------------------------------------------------------------------------


def test_graphs_hand_computed():
    model = _model()
    assert torch.allclose(
        model.item_graphs["image"].adjacency().to_dense(), _image_graph(), atol=1e-6
    )
    assert torch.allclose(
        model.item_graphs["text"].adjacency().to_dense(), _text_graph(), atol=1e-6
    )
    adj = model.adj.to_dense()
    assert torch.allclose(adj, _dense_adj(), atol=1e-7)
    # user 0: degree 3 (item 0, item 1 twice); item 1: degree 3 -> weight 2 / 3
    assert adj[0, U + 1].item() == pytest.approx(2 / 3, rel=1e-6)
    assert list(model.item_graphs.parameters()) == []  # frozen
    assert "adj" not in model.state_dict()


# ---- forward and loss --------------------------------------------------------------------------


def test_forward_matches_dense_mmrec_computation():
    model = _model()
    content, side, purified = model.views()
    ref_content, ref_side = _reference(model)
    assert torch.allclose(content, ref_content, atol=1e-6)
    assert torch.allclose(side, ref_side, atol=1e-6)
    users, items = model.embeddings()
    assert torch.allclose(torch.cat([users, items]), ref_content + ref_side, atol=1e-6)
    assert users.shape == (U, 4) and items.shape == (N, 4)
    assert list(purified) == ["image", "text"]


def test_infonce_is_mmrec_definition_hand_computed():
    from sea_pyg.nn.losses import solosim_loss

    a = torch.tensor([[2.0, 0.0], [0.0, 3.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = 1 / math.sqrt(2)  # normalised rows: a = I, b1 = (c, c); tau = 0.5
    row0 = -math.log(math.exp(2) / (math.exp(2) + math.exp(2 * c)))
    row1 = -math.log(math.exp(2 * c) / (math.exp(0) + math.exp(2 * c)))
    assert solosim_loss(a, b, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)
    assert _mmrec_infonce(a, b, 0.5).item() == pytest.approx((row0 + row1) / 2, rel=1e-6)


def test_loss_terms_match_dense_computation():
    model = _model(reg_weight=0.3, cl_weight=0.7, temperature=0.4)
    batch = torch.tensor([[0, 2, 0], [1, 3, 1], [2, 1, 0]])  # duplicated rows kept
    terms = model.loss(batch)
    assert set(terms) == {"bpr", "reg", "cl"}
    content, side = _reference(model)
    final = content + side
    users, pos, neg = batch
    u, p, n = final[users], final[U + pos], final[U + neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = 0.3 * 0.5 * (u.square().sum() + p.square().sum() + n.square().sum()) / 3
    cl = _mmrec_infonce(side[U + pos], content[U + pos], 0.4) + _mmrec_infonce(
        side[users], content[users], 0.4
    )
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    assert terms["reg"].item() == pytest.approx(reg.item(), rel=1e-5)
    assert terms["cl"].item() == pytest.approx(0.7 * cl.item(), rel=1e-5)
    # zero weights drop the terms
    assert set(_model(reg_weight=0.0, cl_weight=0.0).loss(batch)) == {"bpr"}


def test_gradients_reach_exactly_what_should_learn():
    model = _model()
    batch = torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])
    sum(model.loss(batch).values()).backward()
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith("features.") for n in names)
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # frozen features: no gradient, everything else still learns
    model = _model(trainable_features=False)
    sum(model.loss(batch).values()).backward()
    for name, p in model.named_parameters():
        if name.startswith("features."):
            assert not p.requires_grad and p.grad is None
        else:
            assert p.grad.abs().sum() > 0, name
    assert not any(b.requires_grad for b in model.buffers())


def test_one_modality_and_three_modalities():
    torch.manual_seed(0)
    one = MGCN(U, EDGES, {"text": _features()["text"]}, embedding_dim=4, knn_k=2)
    content, side, purified = one.views()
    h_items = one.item_graphs["text"](purified["text"])
    h = torch.cat([_dense_adj()[:U, U:] @ h_items, h_items])
    assert torch.allclose(side, h / 2, atol=1e-6)  # alpha = 1, no specific part
    sum(one.loss(torch.tensor([[0, 1], [0, 2], [3, 1]])).values()).backward()
    for p in [*one.query.parameters(), *one.preference.parameters()]:
        assert p.grad is None or torch.all(p.grad == 0)
    assert one.user_emb.weight.grad.abs().sum() > 0

    torch.manual_seed(1)
    feats = {"a": torch.rand(N, 3), "b": torch.rand(N, 5), "c": torch.rand(N, 2)}
    three = MGCN(U, EDGES, feats, embedding_dim=4, knn_k=2)
    content, side, _ = three.views()
    h = []
    for m, x in three.modal_item_representations().items():
        items = three.item_graphs[m](x)
        h.append(torch.cat([_dense_adj()[:U, U:] @ items, items]))
    att = torch.softmax(torch.cat([three.query(v) for v in h], dim=-1), dim=-1)
    common = sum(att[:, k : k + 1] * v for k, v in enumerate(h))
    sep = [
        torch.sigmoid(three.preference[m](content)) * (v - common)
        for m, v in zip(feats, h, strict=True)
    ]
    assert torch.allclose(side, (common + sum(sep)) / 4, atol=1e-6)


def test_modal_item_representations_are_the_purified_items():
    model = _model()
    reps = model.modal_item_representations()
    for m, x in _features().items():
        t = _lin(model.feat_trs[m], x)
        expected = model.item_emb.weight * torch.sigmoid(_lin(model.purifier[m], t))
        assert torch.allclose(reps[m], expected, atol=1e-6)
    sub = model.modal_item_representations(torch.tensor([3, 1]))
    assert torch.allclose(sub["text"], reps["text"][[3, 1]])
    out = model.forward_train(torch.tensor([[0], [1], [2]]), all_modal_items=False)
    assert out.modal_items is None and torch.allclose(out.modal["image"], reps["image"])
    assert model.modal_dims() == {"image": 4, "text": 4}


def test_bad_arguments():
    with pytest.raises(ValueError, match="knn_k"):
        _model(knn_k=5)
    with pytest.raises(ValueError, match="cl_weight"):
        _model(cl_weight=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        _model(temperature=0.0)
    with pytest.raises(ValueError, match="item_graph_layers"):
        _model(item_graph_layers=-1)
    with pytest.raises(ValueError, match="embedding_dim"):
        _model(embedding_dim=0)
    with pytest.raises(ValueError, match="features"):
        MGCN(U, EDGES, {})


# ---- registry, checkpoints, +sea, learning ------------------------------------------------------


def test_registry_defaults_are_mmrec(tiny_data):
    model, info, train = build_model("mgcn", tiny_data)
    hp = info["hparams"]
    assert hp == {
        "embedding_dim": 64,
        "num_layers": 2,
        "item_graph_layers": 1,
        "knn_k": 10,
        "reg_weight": 1e-4,
        "cl_weight": 0.01,
        "temperature": 0.2,
        "trainable_features": True,
    }
    assert train == {"lr_schedule": (0.96, 50.0)}  # MMRec MGCN.yaml learning_rate_scheduler
    assert model.features["text"] is not tiny_data["item"]["x_text"]


def test_checkpoint_round_trip_and_resume(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("mgcn", tiny_data, embedding_dim=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    users = torch.arange(tiny_data["user"].num_nodes)
    model.eval()
    assert torch.equal(model.score(users), loaded.score(users))

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        m, inf, _ = build_model("mgcn", tiny_data, embedding_dim=8)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=128,
            progress=False,
            verbose=False,
            seed=1,
            output_dir=str(out),
            resume=resume,
        )
        return Trainer(m, tiny_data, cfg, model_info=inf).fit()

    full = run(3, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_mgcn_sea_trains(tiny_data):
    seed_everything(0)
    model, info, _ = build_model(
        "mgcn+sea", tiny_data, embedding_dim=8, proj_hidden_dim=5, proj_dim=7, club_steps=2
    )
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, verbose=False, seed=1)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    assert res["epochs_run"] == 2
    losses = res["history"][-1]["losses"]
    assert set(losses) == {"bpr", "reg", "cl", "sea_align", "sea_dis", "club_nll"}
    # the separate-learning terms reach the purifier (the representations feed the scores)
    model.zero_grad()
    terms = model.loss(torch.tensor([[0, 1], [2, 3], [4, 5]]))
    (terms["sea_align"] + terms["sea_dis"]).backward()
    host = model.host
    assert host.purifier["image"].weight.grad.abs().sum() > 0
    assert host.item_emb.weight.grad.abs().sum() > 0
    assert host.user_emb.weight.grad is None or torch.all(host.user_emb.weight.grad == 0)
    assert all(math.isfinite(h["loss"]) for h in res["history"])


def test_mgcn_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "mgcn", {}, epochs=15, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # about 0.354 (popularity 0.272)
    assert res["test"]["recall@20"] > pop + 0.04, (res["test"]["recall@20"], pop)
