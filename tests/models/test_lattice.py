import math

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import LATTICE, build_model
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 2, 0, 2, 3, 3]])  # 3 users, 4 items


def _features():
    image = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, -1.0]])
    text = torch.tensor([[1.0, -1.0], [0.0, 1.0], [2.0, 0.5], [-1.0, 1.0]])
    return {"image": image.double(), "text": text.double()}


def close(a, b):
    return torch.allclose(a, b, rtol=0.0, atol=1e-12)


def _hand_model(cf_model="lightgcn", reg_weight=0.1, lambda_coeff=0.9, **kw):
    """The model in float64 (built under that default dtype, so its fixed graphs are exact)."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = LATTICE(
            3,
            EDGES,
            _features(),
            embedding_dim=2,
            feat_embed_dim=2,
            knn_k=2,
            lambda_coeff=lambda_coeff,
            cf_model=cf_model,
            reg_weight=reg_weight,
            **kw,
        )
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0], [2.0, 0.0]]))
        model.feat_trs["image"].weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
        model.feat_trs["image"].bias.copy_(torch.tensor([0.1, 0.0]))
        model.feat_trs["text"].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        model.feat_trs["text"].bias.copy_(torch.tensor([0.0, 0.5]))
        model.modal_weight.copy_(torch.tensor([0.2, -0.3]))
    assert model.ui_value.dtype == model.item_emb.weight.dtype == torch.float64
    return model


# Dense references (the reference code's N x N formulas) ######################################


def dense_knn(z, k):
    zn = z / z.norm(dim=1, keepdim=True)
    sim = zn @ zn.t()
    val, idx = sim.topk(k, dim=1)
    return torch.zeros_like(sim).scatter(1, idx, val)


def dense_sym(a):
    d = a.sum(1).pow(-0.5)
    return d[:, None] * a * d[None, :]


def dense_item_graph(model):
    """(1 - lambda) sym(sum_m w_m kNN(T_m x_m)) + lambda sum_m w_m sym(kNN(x_m^0))."""
    w = torch.softmax(model.modal_weight, 0)
    lam, k = model.item_graph.lambda_coeff, model.item_graph.k
    z = {m: model.feat_trs[m](model.features[m]) for m in model.modalities}
    learned = dense_sym(sum(w[i] * dense_knn(z[m], k) for i, m in enumerate(z)))
    raw = _features()
    initial = sum(w[i] * dense_sym(dense_knn(raw[m], k)) for i, m in enumerate(raw))
    return (1 - lam) * learned + lam * initial


def dense_rw_adj():
    """D^-1 (A + I) of the binarised user-item graph (the duplicate (2, 3) counts once)."""
    a = torch.eye(7, dtype=torch.float64)
    for u, i in EDGES.t().tolist():
        a[u, 3 + i] = a[3 + i, u] = 1.0
    return a / a.sum(1, keepdim=True)


def dense_forward(model, s):
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight])
    p = dense_rw_adj()
    out = (ego + p @ ego + p @ p @ ego) / 3
    h = s @ model.item_emb.weight
    return out[:3], out[3:] + h / h.norm(dim=1, keepdim=True)


def dense_loss(u_all, i_all, batch, reg_weight):
    u, p, n = u_all[batch[0]], i_all[batch[1]], i_all[batch[2]]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = reg_weight * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * u.size(0))
    return bpr, reg


BATCH = torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])


# Graphs and forward ###########################################################################


def test_user_item_graph_is_row_normalised_with_self_loops():
    model = _hand_model()
    assert torch.allclose(model.ui_graph.to_dense(), dense_rw_adj())
    # hand: user 2 has items {0, 2, 3} and itself: 1/4 each; item 3 has user 2 and itself: 1/2
    row2 = [0, 0, 0.25, 0.25, 0, 0.25, 0.25]
    assert model.ui_graph.to_dense()[2].tolist() == pytest.approx(row2)
    assert model.ui_graph.to_dense()[6].tolist() == pytest.approx([0, 0, 0.5, 0, 0, 0, 0.5])


def test_item_graph_and_forward_equal_the_dense_computation():
    model = _hand_model()
    with torch.no_grad():
        s = dense_item_graph(model)
        assert close(model.build_item_graph().to_dense(), s)
        users, items = model.embeddings()
        exp_u, exp_i = dense_forward(model, s)
    assert close(users, exp_u) and close(items, exp_i)
    # the initial modality weights: softmax of the hand-set logits (0.2, -0.3)
    e = math.exp(0.5)
    assert model.modality_weights().tolist() == pytest.approx([e / (1 + e), 1 / (1 + e)])


def test_loss_and_gradients_equal_the_dense_computation():
    model = _hand_model(reg_weight=0.1)
    model.pre_epoch(0)
    terms = model.loss(BATCH)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(sum(terms.values()), list(params.values()))
    bpr, reg = dense_loss(*dense_forward(model, dense_item_graph(model)), BATCH, 0.1)
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-12)
    assert terms["reg"].item() == pytest.approx(reg.item(), rel=1e-12)
    dense = torch.autograd.grad(bpr + reg, list(params.values()))
    for name, a, b in zip(params, grads, dense, strict=True):
        assert close(a, b), name
        assert a.abs().sum() > 0, name  # the graph-building batch reaches every parameter


def test_graph_is_built_once_per_epoch_and_reused_detached():
    model = _hand_model()
    model.pre_epoch(0)
    with torch.no_grad():
        s_old = dense_item_graph(model)
    model.loss(BATCH)  # first batch: builds S
    # the parameters move (as after an optimizer step); the epoch's graph does not
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    terms = model.loss(BATCH)
    sum(terms.values()).backward()
    learned = {"user_emb.weight", "item_emb.weight"}
    for name, p in model.named_parameters():
        assert (p.grad is not None) == (name in learned), name
    bpr, reg = dense_loss(*dense_forward(model, s_old), BATCH, 0.1)
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-12)
    assert terms["reg"].item() == pytest.approx(reg.item(), rel=1e-12)
    # evaluation builds S afresh from the current parameters
    with torch.no_grad():
        s_new = dense_item_graph(model)
        assert not torch.allclose(s_new, s_old)
        users, items = model.embeddings()
        assert close(items, dense_forward(model, s_new)[1])
    # the next epoch builds it again, with gradients
    model.zero_grad(set_to_none=True)
    model.pre_epoch(1)
    sum(model.loss(BATCH).values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_zero_grads_between_builds_mimics_torch_1_adam():
    model = _hand_model(zero_grads_between_builds=True)
    model.pre_epoch(0)
    first = model.loss(BATCH)
    sum(first.values()).backward()
    assert all(p.grad.abs().sum() > 0 for p in model.parameters())
    model.zero_grad(set_to_none=True)
    terms = model.loss(BATCH)  # reuses the graph: same values as without the option
    plain = _hand_model()
    plain.pre_epoch(0)
    plain.loss(BATCH)
    assert terms["bpr"].item() == plain.loss(BATCH)["bpr"].item()
    sum(terms.values()).backward()
    graph_params = {"modal_weight"} | {n for n, _ in model.named_parameters() if "feat" in n}
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert (p.grad.abs().sum() == 0) == (name in graph_params), name
    # an Adam step still moves them (its first-batch moments), as torch 1.x's Adam did
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model.zero_grad(set_to_none=True)
    model.pre_epoch(1)
    sum(model.loss(BATCH).values()).backward()
    opt.step()
    model.zero_grad(set_to_none=True)
    sum(model.loss(BATCH).values()).backward()
    before = model.feat_trs["text"].weight.detach().clone()
    opt.step()
    assert not torch.equal(model.feat_trs["text"].weight, before)


def test_trainer_builds_one_graph_with_gradients_per_epoch(tiny_data):
    model, info, _ = build_model("lattice", tiny_data, embedding_dim=8, feat_embed_dim=8)
    builds = []
    original = model.item_graph.mixed_graph

    def counting(*args, **kwargs):
        builds.append(torch.is_grad_enabled())
        return original(*args, **kwargs)

    model.item_graph.mixed_graph = counting
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, verbose=False, seed=1)
    Trainer(model, tiny_data, cfg, model_info=info).fit()
    assert builds.count(True) == 2  # 5 batches per epoch, one build each
    assert builds.count(False) >= 2  # every evaluation builds its own (no gradients)


def test_reg_term_hand_computed():
    model = _hand_model(reg_weight=0.5)
    model.pre_epoch(0)
    out = model.forward_train(BATCH)
    u, p, n = out.rows["user"], out.rows["pos"], out.rows["neg"]
    hand = 0.5 * sum(float((t**2).sum()) for t in (u, p, n)) / 6  # gamma / (2 B)
    assert model.loss_terms(out)["reg"].item() == pytest.approx(hand, rel=1e-12)
    assert set(_hand_model(reg_weight=0.0).loss(BATCH)) == {"bpr"}


@pytest.mark.parametrize("cf_model", ["mf", "ngcf"])
def test_other_cf_models(cf_model):
    model = _hand_model(cf_model=cf_model, num_layers=2)
    model.eval()  # no message dropout
    with torch.no_grad():
        s = dense_item_graph(model)
        users, items = model.embeddings()
        h = s @ model.item_emb.weight
        h = h / h.norm(dim=1, keepdim=True)
        if cf_model == "mf":
            exp_u, exp_i = model.user_emb.weight, model.item_emb.weight + h
        else:
            p, ego = dense_rw_adj(), torch.cat([model.user_emb.weight, model.item_emb.weight])
            total = ego
            for gc, bi in zip(model.gc_layers, model.bi_layers, strict=True):
                side = p @ ego
                ego = F.leaky_relu(gc(side)) + F.leaky_relu(bi(ego * side))
                total = total + ego / ego.norm(dim=1, keepdim=True)
            out = total / 3
            exp_u, exp_i = out[:3], out[3:] + h
    assert close(users, exp_u) and close(items, exp_i)
    model.train()
    model.pre_epoch(0)
    sum(model.loss(BATCH).values()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_modal_representations_any_modalities_and_errors():
    model = _hand_model()
    reps = model.modal_item_representations()
    assert list(reps) == ["image", "text"] and all(r.shape == (4, 2) for r in reps.values())
    x = _features()["text"]
    t_w = torch.tensor([[1.0, 2.0], [1.0, 0.0]], dtype=torch.float64)
    assert close(reps["text"], x @ t_w + torch.tensor([0.0, 0.5], dtype=torch.float64))
    model.pre_epoch(0)
    out = model.forward_train(BATCH, all_modal_items=True)
    assert out.modal_items is None and torch.equal(out.modal["image"], reps["image"])
    assert model.forward_train(BATCH).modal is None
    f32 = {m: x.float() for m, x in _features().items()}
    # one modality: no modality weight; three: equal softmax weights at start
    one = LATTICE(3, EDGES, {"text": f32["text"]}, embedding_dim=4, knn_k=2)
    assert one.modal_weight is None and one.modality_weights().tolist() == [1.0]
    one.pre_epoch(0)
    sum(one.loss(BATCH).values()).backward()
    assert one.features["text"].grad.abs().sum() > 0
    three = {**f32, "audio": torch.randn(4, 5)}
    model = LATTICE(3, EDGES, three, embedding_dim=4, feat_embed_dim=3, knn_k=3)
    assert model.modality_weights().tolist() == pytest.approx([1 / 3] * 3)
    assert model.embeddings()[1].shape == (4, 4)
    with pytest.raises(ValueError, match="cf_model"):
        LATTICE(3, EDGES, f32, cf_model="gcn")
    with pytest.raises(ValueError, match="knn_k"):
        LATTICE(3, EDGES, f32, knn_k=5)
    with pytest.raises(ValueError, match="mess_dropout"):
        LATTICE(3, EDGES, f32, knn_k=2, mess_dropout=1.0)
    frozen = LATTICE(3, EDGES, f32, knn_k=2, trainable_features=False)
    assert not any(p.requires_grad for p in frozen.features.values())


def test_lambda_one_is_the_frozen_graph_only():
    model = _hand_model(lambda_coeff=1.0)
    model.pre_epoch(0)
    sum(model.loss(BATCH).values()).backward()
    for p in [*model.feat_trs.parameters(), *model.features.values()]:
        assert torch.all(p.grad == 0)
    assert model.modal_weight.grad.abs().sum() > 0  # still mixes the frozen graphs


# Training, checkpoints, plug-in ###############################################################


def test_checkpoint_round_trip_and_resume(tiny_data, tmp_path):
    hp = {"embedding_dim": 8, "feat_embed_dim": 8}

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, _ = build_model("lattice", tiny_data, **hp)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=128,
            progress=False,
            verbose=False,
            seed=1,
            output_dir=str(out),
            resume=resume,
        )
        return Trainer(model, tiny_data, cfg, model_info=info).fit(), model, info

    full, model, info = run(3, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed, _, _ = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)

    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    users = torch.arange(10)
    model.eval()
    assert torch.equal(loaded.score(users), model.score(users))


def test_lattice_sea_trains(tiny_data):
    model, info, defaults = build_model(
        "lattice+sea",
        tiny_data,
        embedding_dim=8,
        feat_embed_dim=8,
        proj_hidden_dim=5,
        proj_dim=7,
    )
    assert defaults == {"lr": 5e-4, "lr_schedule": (0.96, 50.0)}  # MMRec LATTICE.yaml
    cfg = TrainConfig(**defaults, epochs=1, batch_size=256, progress=False, verbose=False)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    losses = res["history"][0]["losses"]
    assert {"bpr", "reg", "sea_align", "sea_dis"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values())


def test_lattice_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "lattice", {}, epochs=15, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # about 0.37 (LightGCN at the same settings: about 0.35)
    assert res["test"]["recall@20"] > pop + 0.04, (res["test"]["recall@20"], pop)
