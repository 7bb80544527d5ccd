import math

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import MODELS, LGMRec, build_model
from sea_pyg.nn import candidate_info_nce_loss
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 users, 4 items; the pair (2, 3) is listed twice and counts once
EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 2, 0, 2, 3, 3]])
U, N = 3, 4


def _features():
    gen = torch.Generator().manual_seed(7)
    return {"image": torch.randn(N, 3, generator=gen), "text": torch.randn(N, 2, generator=gen)}


def _model(**kw):
    torch.manual_seed(0)
    feats = kw.pop("features", None) or _features()
    hp = dict(embedding_dim=2, feat_embed_dim=2, num_hyperedges=2, hyper_layers=1, alpha=0.3)
    hp.update(kw)
    return LGMRec(U, EDGES, feats, **hp)


def _dense_graph():
    r = torch.zeros(U, N)
    for u, i in EDGES.t().tolist():
        r[u, i] = 1.0
    a = torch.zeros(U + N, U + N)
    a[:U, U:], a[U:, :U] = r, r.t()
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return r, d[:, None] * a * d[None, :]


def _mmrec_reference(model, feats, train, noise=True):
    """MMRec's LGMRec forward, written densely, drawing its random numbers from the global
    RNG in MMRec's order (Gumbel per modality items then users; then dropout likewise)."""
    r, a = _dense_graph()
    p = model.state_dict()
    tau, keep = model.temperature, model.keep_rate
    mods = list(feats)

    def gumbel(x):
        return F.gumbel_softmax(x, tau, hard=False, dim=1) if noise else (x / tau).softmax(1)

    hyper = {}
    for m in mods:
        iv = feats[m] @ p[f"hyper_trs.{m}"]
        uv = r @ iv
        hyper[m] = (gumbel(iv), gumbel(uv))
    ego = torch.cat([p["user_emb.weight"], p["item_emb.weight"]])
    layers = [ego]
    for _ in range(model.propagation.num_layers):
        layers.append(a @ layers[-1])
    cge = torch.stack(layers).mean(0)
    mge = 0
    for m in mods:
        item_feats = feats[m] @ p[f"feat_trs.{m}"]
        user_feats = (r @ item_feats) / (r.sum(1, keepdim=True) + 1e-7)
        h = torch.cat([user_feats, item_feats])
        for _ in range(model.modal_propagation.num_layers):
            h = a @ h
        mge = mge + F.normalize(h)
    hu, hi = {}, {}
    for m in mods:
        ih = F.dropout(hyper[m][0], 1 - keep, training=train)
        uh = F.dropout(hyper[m][1], 1 - keep, training=train)
        x = cge[U:]
        for _ in range(model.hypergraph.num_layers):
            lat = ih.t() @ x
            x = ih @ lat
            y = uh @ lat
        hu[m], hi[m] = y, x
    ghe = torch.cat([sum(hu.values()), sum(hi.values())])
    out = cge + mge + model.alpha * F.normalize(ghe)
    return out[:U], out[U:], hu, hi


def _ssl(emb1, emb2, all_emb, tau):
    """MMRec's ssl_triple_loss, literally: a sum over the batch of -log(pos / total)."""
    n1, n2, na = F.normalize(emb1), F.normalize(emb2), F.normalize(all_emb)
    pos = torch.exp((n1 * n2).sum(1) / tau)
    total = torch.exp(n1 @ na.t() / tau).sum(1)
    return -torch.log(pos / total).sum()


def test_graphs_are_binarised_and_user_means_use_degrees():
    model = _model()
    r, a = _dense_graph()
    assert torch.equal(model.inter.to_dense(), r)
    torch.testing.assert_close(model.adj.to_dense(), a)
    torch.testing.assert_close(model.inv_degree, 1 / (torch.tensor([2.0, 2.0, 3.0]) + 1e-7))
    assert not any(k.startswith("x_") or k in ("adj", "inter") for k in model.state_dict())
    assert sorted(n for n, _ in model.named_parameters()) == [
        "feat_trs.image", "feat_trs.text", "hyper_trs.image", "hyper_trs.text",
        "item_emb.weight", "user_emb.weight",
    ]  # fmt: skip
    assert model.feat_trs["image"].shape == (3, 2) and model.hyper_trs["text"].shape == (2, 2)


def test_noise_free_evaluation_equals_dense_computation():
    model = _model(eval_gumbel_noise=False)
    users, items = model.embeddings()
    ref_u, ref_i, _, _ = _mmrec_reference(model, _features(), train=False, noise=False)
    torch.testing.assert_close(users, ref_u)
    torch.testing.assert_close(items, ref_i)
    state = torch.get_rng_state()
    again = model.embeddings()
    assert torch.equal(again[0], users) and torch.equal(torch.get_rng_state(), state)
    # cf_model="mf": the collaborative part is the ID embeddings themselves
    mf = _model(eval_gumbel_noise=False, cf_model="mf", num_layers=0)
    ref_u, ref_i, _, _ = _mmrec_reference(mf, _features(), train=False, noise=False)
    torch.testing.assert_close(torch.cat(mf.embeddings()), torch.cat([ref_u, ref_i]))


def test_evaluation_draws_gumbel_noise_as_mmrec_but_no_dropout():
    model = _model(keep_rate=0.5)
    torch.manual_seed(3)
    users, items = model.embeddings()
    torch.manual_seed(3)
    ref_u, ref_i, _, _ = _mmrec_reference(model, _features(), train=False)
    torch.testing.assert_close(users, ref_u)
    torch.testing.assert_close(items, ref_i)
    assert not torch.allclose(model.embeddings()[1], items)  # fresh noise on every call
    torch.manual_seed(3)
    assert torch.equal(model.embeddings()[1], items)  # seeded: reproducible
    model.train()  # the module's mode does not switch dropout on at evaluation
    torch.manual_seed(3)
    assert torch.equal(model.embeddings()[1], items)


@pytest.mark.parametrize("keep_rate", [1.0, 0.5])
def test_training_pass_and_loss_equal_mmrec_under_the_same_seed(keep_rate):
    model = _model(keep_rate=keep_rate, cl_weight=0.1, reg_weight=0.01, hyper_layers=2)
    batch = torch.tensor([[0, 2, 2, 1], [1, 3, 0, 2], [3, 1, 1, 0]])
    torch.manual_seed(5)
    out = model.forward_train(batch)
    terms = model.loss_terms(out)
    torch.manual_seed(5)
    ref_u, ref_i, hu, hi = _mmrec_reference(model, _features(), train=True)
    users, pos, neg = batch
    u, p, n = ref_u[users], ref_i[pos], ref_i[neg]
    torch.testing.assert_close(out.rows["user"], u)
    torch.testing.assert_close(out.rows["neg"], n)
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    hcl = _ssl(hu["image"][users], hu["text"][users], hu["text"], 0.2) + _ssl(
        hi["image"][pos], hi["text"][pos], hi["text"], 0.2
    )
    reg = (u.norm() + p.norm() + n.norm()) / 4
    assert set(terms) == {"bpr", "hcl", "reg"}
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    assert terms["hcl"].item() == pytest.approx(0.1 * hcl.item(), rel=1e-5)
    assert terms["reg"].item() == pytest.approx(0.01 * reg.item(), rel=1e-5)
    # the modal representations are the projected features of all items
    assert out.modal_items is None
    for m, x in _features().items():
        torch.testing.assert_close(out.modal[m], x @ model.feat_trs[m].detach())


def test_dropout_scales_kept_incidences():
    model = _model(keep_rate=0.25)
    torch.manual_seed(1)
    a = model.forward(train=True)
    torch.manual_seed(1)
    b = model.forward(train=True)
    assert torch.equal(a.items, b.items)  # seeded
    torch.manual_seed(1)
    c = model.forward(train=False)
    assert not torch.allclose(a.hyper_items["text"], c.hyper_items["text"])
    # the ID/modality (local) part has no randomness: with alpha 0 train == eval
    model = _model(keep_rate=0.25, alpha=0.0)
    torch.testing.assert_close(model.forward(train=True).items, model.forward().items)


def test_gradients_reach_exactly_what_should_learn():
    model = _model(keep_rate=1.0, cl_weight=1.0, reg_weight=0.1)
    batch = torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])
    terms = model.loss(batch)
    sum(terms.values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the contrastive term alone: the hypergraph logits V^m and the ID embeddings (the
    # hypergraph starts from the LightGCN items), never the feature projections W^m (X W
    # and X V are one product, so W gets an exact zero gradient rather than none)
    model.zero_grad(set_to_none=True)
    model.loss(batch)["hcl"].backward()
    assert all(torch.all(p.grad == 0) for p in model.feat_trs.values())
    for name in ("user_emb.weight", "item_emb.weight", "hyper_trs.image", "hyper_trs.text"):
        assert model.get_parameter(name).grad.abs().sum() > 0, name


def test_modalities_one_and_three():
    feats = _features()
    one = _model(features={"text": feats["text"]}, cl_weight=1.0)
    terms = one.loss(torch.tensor([[0], [1], [2]]))
    assert set(terms) == {"bpr", "reg"}  # no pair of modalities to contrast
    sum(terms.values()).backward()
    assert one.hyper_trs["text"].grad.abs().sum() > 0
    feats["audio"] = torch.randn(N, 4, generator=torch.Generator().manual_seed(1))
    three = _model(features=feats, cl_weight=1.0, keep_rate=1.0)
    batch = torch.tensor([[0, 2], [1, 3], [2, 2]])
    torch.manual_seed(2)
    out = three.forward_train(batch)
    hcl = three.loss_terms(out)["hcl"]
    hu, hi = out.rows["hyper_users"], out.rows["hyper_items"]
    expected = 0.0
    for a, c in [("image", "text"), ("image", "audio"), ("text", "audio")]:
        expected += candidate_info_nce_loss(hu[a][batch[0]], hu[c], batch[0])
        expected += candidate_info_nce_loss(hi[a][batch[1]], hi[c], batch[1])
    assert hcl.item() == pytest.approx(float(expected), rel=1e-6)
    assert list(three.modal_item_representations()) == ["image", "text", "audio"]


def test_contrastive_term_is_chunked_at_scale(monkeypatch):
    import sea_pyg.models.lgmrec as mod

    model = _model(keep_rate=1.0, cl_weight=1.0)
    batch = torch.tensor([[0, 1, 2, 0], [0, 1, 2, 3], [3, 3, 0, 1]])
    torch.manual_seed(4)
    dense = model.loss(batch)["hcl"]
    monkeypatch.setattr(mod, "_CL_BLOCK", 5)  # 4 anchors x 3 users > 5: chunks of 1 row
    torch.manual_seed(4)
    chunked = model.loss(batch)["hcl"]
    assert chunked.item() == pytest.approx(dense.item(), rel=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="feat_embed_dim"):
        _model(feat_embed_dim=3)
    with pytest.raises(ValueError, match="keep_rate"):
        _model(keep_rate=0.0)
    with pytest.raises(ValueError, match="hyper_layers"):
        _model(hyper_layers=0)
    with pytest.raises(ValueError, match="num_hyperedges"):
        _model(num_hyperedges=0)
    with pytest.raises(ValueError, match="cf_model"):
        _model(cf_model="ngcf")
    with pytest.raises(ValueError, match="modal_layers"):
        _model(modal_layers=-1)
    with pytest.raises(ValueError, match="temperature"):
        _model(temperature=0.0)
    with pytest.raises(ValueError, match="features"):
        LGMRec(U, EDGES, {})


def test_registry_defaults_are_mmrec_baby(tiny_data):
    assert MODELS["lgmrec"].defaults == {
        "embedding_dim": 64, "feat_embed_dim": 64, "cf_model": "lightgcn", "num_layers": 2,
        "modal_layers": 2, "hyper_layers": 1, "num_hyperedges": 4, "keep_rate": 0.5,
        "alpha": 0.3, "cl_weight": 1e-4, "reg_weight": 1e-6, "temperature": 0.2,
        "eval_gumbel_noise": True,
    }  # fmt: skip
    assert MODELS["lgmrec"].train_defaults == {}
    model, info, _ = build_model("lgmrec", tiny_data, num_hyperedges=64, hyper_layers=2)
    assert model.hyper_trs["image"].shape == (64, 64) and model.hypergraph.num_layers == 2


def test_save_load_gives_identical_scores(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("lgmrec", tiny_data, embedding_dim=8, feat_embed_dim=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    users = torch.arange(tiny_data["user"].num_nodes)
    model.eval()
    torch.manual_seed(9)
    a = model.score(users)
    torch.manual_seed(9)
    b = loaded.score(users)
    assert torch.equal(a, b)
    loaded.eval_gumbel_noise = model.eval_gumbel_noise = False
    assert torch.equal(model.score(users), loaded.score(users))


@pytest.mark.parametrize("name", ["lgmrec", "lgmrec+sea"])
def test_trainer_resume_is_exact(tiny_data, tmp_path, name):
    hp = {"embedding_dim": 8, "feat_embed_dim": 8}
    if name.endswith("+sea"):
        hp.update(club_steps=2, proj_hidden_dim=5, proj_dim=7)

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, _ = build_model(name, tiny_data, **hp)
        cfg = TrainConfig(epochs=epochs, batch_size=128, progress=False, verbose=False, seed=1,
                          output_dir=str(out), resume=resume)  # fmt: skip
        return Trainer(model, tiny_data, cfg, model_info=info).fit()

    full = run(3, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in full["history"]]
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_sea_plugin_trains_on_the_projected_features(tiny_data):
    seed_everything(0)
    model, info, _ = build_model("lgmrec+sea", tiny_data, embedding_dim=8, feat_embed_dim=8,
                                 club_steps=2, proj_hidden_dim=5, proj_dim=7)  # fmt: skip
    host = model.host
    assert model.separate.dims == {"image": 8, "text": 8}
    batch = torch.tensor([[0, 1, 2], [0, 1, 2], [3, 4, 5]])
    terms = model.loss(batch)
    assert {"bpr", "hcl", "reg", "sea_align", "sea_dis"} <= set(terms)
    (terms["sea_align"] + terms["sea_dis"]).backward()
    # the separate-learning terms reach W^m (which feed the scores), not the ID embeddings
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in host.feat_trs.values())
    assert host.user_emb.weight.grad is None and host.item_emb.weight.grad is None
    res = Trainer(model, tiny_data, TrainConfig(epochs=2, batch_size=128, progress=False,
                                                verbose=False), model_info=info).fit()  # fmt: skip
    assert res["epochs_run"] == 2 and all(math.isfinite(h["loss"]) for h in res["history"])


def test_lgmrec_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "lgmrec", {}, epochs=15, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # about 0.36 (LightGCN: about 0.345)
    assert res["test"]["recall@20"] > pop + 0.06, (res["test"]["recall@20"], pop)
