"""MMSSL: graphs, forward, loss terms, critic, gradients, checkpoints, learning."""

import math

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import MMSSL, MODELS, build_model
from sea_pyg.models.mmssl import left_normalized
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything
from sea_pyg.train.auxiliary import AuxiliaryTraining

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 users, 4 items; (2, 3) appears twice (binarised)
EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 0, 3, 3]])
R = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.float64)


def _features():
    image = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, -1.0]])
    text = torch.tensor([[1.0, -1.0], [0.0, 1.0], [2.0, 0.5], [-1.0, 1.0]])
    return {"image": image.double(), "text": text.double()}


def _hand_model(**kw):
    """Float64 model (built under that default dtype) with hand-set parameters; k = 2."""
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    args = dict(
        embedding_dim=2,
        num_heads=2,
        num_layers=2,
        graph_topk_rate=0.5,
        reg_weight=0.1,
        feat_reg_weight=0.2,
        cl_weight=0.3,
        temperature=0.5,
        adv_weight=0.4,
    )
    args.update(kw)
    try:
        model = MMSSL(3, EDGES, _features(), **args)
    finally:
        torch.set_default_dtype(default)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0], [2.0, 0.0]]))
        model.feat_trs["image"].weight.copy_(torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]]))
        model.feat_trs["image"].bias.copy_(torch.tensor([0.1, 0.0]))
        model.feat_trs["text"].weight.copy_(torch.tensor([[1.0, 1.0], [2.0, 0.0]]))
        model.feat_trs["text"].bias.copy_(torch.tensor([0.0, 0.5]))
        model.fusion.copy_(torch.tensor([[1.0, 0.5], [0.0, 1.0], [0.5, -1.0], [1.0, 0.0]]))
    return model


# Dense references ############################################################################


def _left(a):
    return torch.diag((a.sum(1) + 1e-8) ** -0.5) @ a


def _dense_views(model):
    """{m: (u^m, i^m)} without dropout, dense."""
    out = {}
    for m, x in _features().items():
        lin = model.feat_trs[m]
        f = x @ lin.weight.T + lin.bias
        u = _left(R) @ f
        out[m] = (u, _left(R.T) @ u)
    return out


def _dense_masked_sim(a, b):
    return F.normalize((a @ b.T) * (1 - R), dim=1)


def _dense_forward(model, graphs):
    """Final (user, item), views and z^m_U on the dense modality-aware graphs ``graphs``."""
    views = _dense_views(model)
    e_u, e_i = model.user_emb.weight, model.item_emb.weight
    z_u = {m: _left(g) @ e_i for m, g in graphs.items()}
    z_i = {m: _left(g.T) @ e_u for m, g in graphs.items()}
    w = model.fusion[:2] + model.fusion[2:]  # the two heads' blocks, summed
    h_u = (z_u["image"] + z_u["text"]) / 2 @ w
    h_i = (z_i["image"] + z_i["text"]) / 2 @ w
    u0 = e_u + 0.36 * F.normalize(h_u, dim=1)
    i0 = e_i + 0.36 * F.normalize(h_i, dim=1)
    u1 = _left(R) @ i0
    i1 = _left(R.T) @ u1
    u2 = torch.softmax(_left(R) @ i1, dim=1)
    i2 = torch.softmax(_left(R.T) @ u2, dim=1)
    user = (u0 + u1 + u2) / 3
    item = (i0 + i1 + i2) / 3
    for u, i in views.values():
        user = user + 0.55 * F.normalize(u, dim=1)
        item = item + 0.55 * F.normalize(i, dim=1)
    return user, item, views, z_u


def _dense_learned_graphs(model):
    """Top-2 of each user's masked modality similarity, as dense 0/1 matrices."""
    out = {}
    for m, (u, i) in _dense_views(model).items():
        sim = _dense_masked_sim(u, i)
        vals, idx = sim.sort(dim=1, descending=True)
        assert (vals[:, 1] > vals[:, 2]).all(), "tie at the cut: change the test features"
        out[m] = torch.zeros_like(R).scatter_(1, idx[:, :2], 1.0)
    return out


def close(a, b, tol=1e-12):
    return torch.allclose(a, b, rtol=0.0, atol=tol)


# Graphs ######################################################################################


def test_left_normalisation_and_interaction_rows_by_hand():
    adj = left_normalized(torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0]), 3, 3).to_dense()
    s = 2**-0.5
    want = torch.tensor([[0.0, s, s], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(adj.float(), want, atol=1e-7)  # (1 + 1e-8)^-1/2 == 1 in float32
    model = _hand_model()
    assert torch.equal(model.interaction_rows(torch.tensor([2, 0, 2])), R[[2, 0, 2]])
    assert close(model.ui_adj.to_dense(), _left(R)) and close(model.iu_adj.to_dense(), _left(R.T))


def test_modality_aware_graphs_are_the_top_k_of_the_masked_similarity():
    model = _hand_model().eval()
    assert model.graph_topk == 2 and not bool(model.graph_built)
    # before the first rebuild every modality uses the observed graph
    for ui, iu in model.modal_graphs():
        assert close(ui.to_dense(), _left(R)) and close(iu.to_dense(), _left(R.T))
    model.pre_epoch(0)
    assert not bool(model.graph_built)  # epoch 0 trains on the observed graph
    model.pre_epoch(1)
    want = _dense_learned_graphs(model)
    for k, m in enumerate(model.modalities):
        got = torch.zeros_like(R).scatter_(1, model.modal_topk[k], 1.0)
        assert torch.equal(got, want[m]), m
        ui, iu = model.modal_graphs()[k]
        assert close(ui.to_dense(), _left(want[m])) and close(iu.to_dense(), _left(want[m].T))
    # graph_topk_rate: k = max(1, floor(N * rate))
    assert _hand_model(graph_topk_rate=1e-4).graph_topk == 1
    assert _hand_model(graph_topk_rate=0.75).graph_topk == 3


@pytest.mark.parametrize("built", [False, True])
def test_forward_equals_the_dense_computation(built):
    model = _hand_model().eval()
    graphs = {m: R for m in model.modalities}
    if built:
        model.rebuild_modal_graphs()
        graphs = _dense_learned_graphs(model)
    user, item, _, _ = _dense_forward(model, graphs)
    got_u, got_i = model.embeddings()
    assert close(got_u, user) and close(got_i, item)
    assert close(model.score(torch.tensor([1, 2])), user[[1, 2]] @ item.T)
    reps = model.modal_item_representations(torch.tensor([3, 0]))
    views = _dense_views(model)
    assert all(close(reps[m], views[m][1][[3, 0]]) for m in model.modalities)


# Loss terms ##################################################################################

BATCH = torch.tensor([[0, 2, 1, 0], [1, 3, 2, 0], [2, 1, 0, 3]])


def _dense_info_nce(z, e, tau):
    """MMSSL's batched_contrastive_loss (one block), written out."""
    z, e = F.normalize(z, dim=1), F.normalize(e, dim=1)
    refl, between = torch.exp(z @ z.T / tau), torch.exp(z @ e.T / tau)
    ratio = between.diag() / (refl.sum(1) + between.sum(1) - refl.diag())
    return -torch.log(ratio).mean()


def test_loss_terms_equal_the_hand_computation():
    model = _hand_model().eval()  # no dropout; the critic's batch norm uses running stats
    model.rebuild_modal_graphs()
    user, item, views, z_u = _dense_forward(model, _dense_learned_graphs(model))
    users, pos, neg = BATCH
    u, p, n = user[users], item[pos], item[neg]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    reg = 0.1 * 0.5 * (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 4
    feat = 0.2 * 0.5 * sum(a.pow(2).sum() + b.pow(2).sum() for a, b in views.values()) / 4
    ub = torch.tensor([0, 1, 2])  # distinct batch users
    cl = 0.3 * sum(_dense_info_nce(z_u[m][ub], user[ub], 0.5) for m in model.modalities)
    fake = torch.cat([_dense_masked_sim(a, b)[ub] for a, b in views.values()])
    adv = -0.4 * model.critic(fake).mean()
    out = model.forward_train(BATCH)
    assert close(out.rows["fake"], fake)
    terms = model.loss_terms(out)
    assert set(terms) == {"bpr", "reg", "feat_reg", "cl", "adv"}
    for name, want in dict(bpr=bpr, reg=reg, feat_reg=feat, cl=cl, adv=adv).items():
        assert close(terms[name], want), name
    # eval mode: nothing is remembered for the critic
    assert model.critic._pending is None
    # every weight at 0 switches its term off (BPR stays)
    off = _hand_model(reg_weight=0, feat_reg_weight=0, cl_weight=0, adv_weight=0).eval()
    assert set(off.loss(BATCH)) == {"bpr"}


def test_real_rows_are_sharpened_interactions_plus_scaled_similarity():
    model = _hand_model(gumbel_scale=0.0, real_tau=0.5, real_scale=3.0)
    user, item = torch.randn(3, 2, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    users = torch.tensor([2, 0])
    soft = torch.softmax(R[users] / 0.5, dim=1)
    want = F.normalize(soft + 3.0 * _dense_masked_sim(user, item)[users], dim=1)
    assert close(model.real_rows(users, user, item), want)
    # with noise: Gumbel(0, 1) draws from the global RNG, scaled by gumbel_scale
    model = _hand_model(gumbel_scale=0.7, real_tau=0.5, real_scale=3.0)
    torch.manual_seed(5)
    got = model.real_rows(users, user, item)
    torch.manual_seed(5)
    g = -torch.log(-torch.log(torch.rand(2, 4, dtype=torch.float64) + 1e-8) + 1e-8)
    soft = torch.softmax((R[users] + 0.7 * g) / 0.5, dim=1)
    assert close(got, F.normalize(soft + 3.0 * _dense_masked_sim(user, item)[users], dim=1))


def test_training_pass_remembers_real_and_fake_rows_for_the_critic():
    model = _hand_model(dropout=0.0, gumbel_scale=0.0)
    model.train()
    out = model.forward_train(BATCH)
    real, fake = model.critic._pending
    assert close(fake, out.rows["fake"].detach())
    user, item, _, _ = _dense_forward(model, {m: R for m in model.modalities})
    one = model.real_rows(torch.tensor([0, 1, 2]), user, item)
    assert close(real, torch.cat([one, one]))  # the real rows, once per modality
    assert not real.requires_grad and not fake.requires_grad
    # a single row (one user, one modality) cannot feed batch norm: no adversarial term
    solo = MMSSL(3, EDGES, {"image": _features()["image"].float()}, embedding_dim=2)
    terms = solo.loss(torch.tensor([[1], [1], [0]]))
    assert "adv" not in terms and solo.critic._pending is None


# Gradients ###################################################################################

PARAMS = {
    "user_emb": "user_emb.weight",
    "item_emb": "item_emb.weight",
    "fusion": "fusion",
    "image": "feat_trs.image.weight",
    "text": "feat_trs.text.weight",
}


def _reached(model, term):
    named = dict(model.named_parameters())
    grads = torch.autograd.grad(term, list(named.values()), retain_graph=True, allow_unused=True)
    return {k for k, g in zip(named, grads, strict=True) if g is not None and g.abs().sum() > 0}


def test_gradients_reach_exactly_the_right_parameters():
    model = _hand_model(dropout=0.0)
    model.rebuild_modal_graphs()
    terms = model.loss(BATCH)
    critic = {k for k, _ in model.named_parameters() if k.startswith("critic.")}
    everything = set(PARAMS.values()) | {"feat_trs.image.bias", "feat_trs.text.bias"}
    assert _reached(model, terms["bpr"]) == everything
    assert _reached(model, terms["cl"]) == everything
    assert _reached(model, terms["reg"]) == everything
    modal = {
        "feat_trs.image.weight",
        "feat_trs.image.bias",
        "feat_trs.text.weight",
        "feat_trs.text.bias",
    }
    assert _reached(model, terms["feat_reg"]) == modal
    # the generator's adversarial term: the modality transforms (and the critic's own
    # parameters, which the model's optimizer does not hold), never the ID side
    assert _reached(model, terms["adv"]) - critic == modal
    # the critic's step: only the critic
    sum(terms.values()).backward()
    model_grads = {k: p.grad.clone() for k, p in model.named_parameters() if k not in critic}
    training = AuxiliaryTraining(model.auxiliary_estimators())
    assert [k for k, _ in training.estimators] == ["critic.critic_loss"]
    before = {k: p.detach().clone() for k, p in model.named_parameters()}
    assert set(training.step()) == {"critic_loss"}
    for k, p in model.named_parameters():
        if k in critic:
            assert not torch.equal(p.detach(), before[k]), k
        else:
            assert torch.equal(p.detach(), before[k]) and torch.equal(p.grad, model_grads[k]), k


def test_trainer_keeps_the_critic_out_of_the_model_optimizer(tiny_data):
    model, info, defaults = build_model("mmssl", tiny_data, embedding_dim=8)
    tr = Trainer(
        model, tiny_data, TrainConfig(progress=False, verbose=False, **defaults), model_info=info
    )
    held = {id(p) for g in tr.optimizer.param_groups for p in g["params"]}
    assert all(id(p) not in held for p in model.critic.parameters())
    assert all(id(p) in held for p in model.user_emb.parameters())
    (opt,) = tr.auxiliary.optimizers.values()
    assert opt.param_groups[0]["betas"] == (0.5, 0.9) and opt.param_groups[0]["lr"] == 3e-4
    assert tr.optimizer.param_groups[0]["lr"] == 5.5e-4


# Registry, arguments, modalities #############################################################


def test_registry_defaults_are_the_authors_release(tiny_data):
    assert MODELS["mmssl"].defaults == {
        "embedding_dim": 64, "num_layers": 2, "dropout": 0.2, "modal_weight": 0.55,
        "id_modal_weight": 0.36, "num_heads": 4, "reg_weight": 1e-5, "feat_reg_weight": 1e-5,
        "cl_weight": 0.03, "temperature": 0.5, "adv_weight": 1e-4, "critic_lr": 3e-4,
        "gp_weight": 0.3, "critic_dropout1": 0.31, "critic_dropout2": 0.5,
        "critic_negative_slope": 1.0, "real_tau": 0.005, "real_scale": 100.0,
        "gumbel_scale": 1e-5, "graph_topk_rate": 1e-4,
    }  # fmt: skip
    assert MODELS["mmssl"].train_defaults == {"lr": 5.5e-4}
    assert set(MODELS["mmssl"].search_space) == {"cl_weight", "adv_weight"}
    model, _, _ = build_model("mmssl", tiny_data)
    n = tiny_data["item"].num_nodes
    widths = [m.out_features for m in model.critic.net if isinstance(m, torch.nn.Linear)]
    assert widths == [n // 4, n // 8, 1] and model.graph_topk == 1


@pytest.mark.parametrize("modalities", [["text"], ["a", "b", "c"]])
def test_any_number_of_modalities(modalities):
    torch.manual_seed(0)
    feats = {m: torch.randn(4, 3 + k) for k, m in enumerate(modalities)}
    model = MMSSL(3, EDGES, feats, embedding_dim=4)
    terms = model.loss(BATCH)
    assert set(terms) == {"bpr", "reg", "feat_reg", "cl", "adv"}
    assert model.forward_train(BATCH).rows["fake"].shape == (3 * len(modalities), 4)
    model.rebuild_modal_graphs()
    assert model.modal_topk.shape == (len(modalities), 3, 1)
    assert set(model.modal_item_representations()) == set(modalities)


def test_bad_arguments_are_named():
    f = _features()
    with pytest.raises(ValueError, match="dropout"):
        MMSSL(3, EDGES, f, dropout=1.0)
    with pytest.raises(ValueError, match="temperature"):
        MMSSL(3, EDGES, f, temperature=0)
    with pytest.raises(ValueError, match="cl_weight"):
        MMSSL(3, EDGES, f, cl_weight=-1)
    with pytest.raises(ValueError, match="graph_topk_rate"):
        MMSSL(3, EDGES, f, graph_topk_rate=0)
    with pytest.raises(ValueError, match="embedding_dim"):
        MMSSL(3, EDGES, f, embedding_dim=0)
    with pytest.raises(ValueError, match="features"):
        MMSSL(3, EDGES, {})


# Checkpoints, resume, +sea, learning #########################################################


def test_save_load_gives_identical_scores_with_the_learned_graphs(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("mmssl", tiny_data, embedding_dim=8)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    model.pre_epoch(1)
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    assert bool(loaded.graph_built) and torch.equal(loaded.modal_topk, model.modal_topk)
    users = torch.arange(tiny_data["user"].num_nodes)
    model.eval()
    assert torch.equal(model.score(users), loaded.score(users))


@pytest.mark.parametrize("name", ["mmssl", "mmssl+sea"])
def test_trainer_resume_is_exact_with_the_critic_optimizer(tiny_data, tmp_path, name):
    hp = {"embedding_dim": 8}
    if name.endswith("+sea"):
        hp.update(club_steps=1, proj_hidden_dim=5, proj_dim=7)

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, defaults = build_model(name, tiny_data, **hp)
        cfg = TrainConfig(epochs=epochs, batch_size=128, progress=False, verbose=False, seed=1,
                          output_dir=str(out), resume=resume, **defaults)  # fmt: skip
        return Trainer(model, tiny_data, cfg, model_info=info).fit()

    full = run(3, tmp_path / "a")
    run(2, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["losses"] for h in resumed["history"]] == [h["losses"] for h in full["history"]]
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in full["history"]]
    assert resumed["test"] == full["test"]
    assert "critic_loss" in full["history"][0]["losses"]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    key = ("host." if name.endswith("+sea") else "") + "critic.critic_loss"
    state_a, state_b = a["auxiliary"][key], b["auxiliary"][key]
    assert state_a["param_groups"][0]["betas"] == (0.5, 0.9)
    assert state_a["state"] and set(state_a["state"]) == set(state_b["state"])
    for i, s in state_a["state"].items():
        assert all(torch.equal(s[k], state_b["state"][i][k]) for k in s)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert bool(a["model"][key.replace("critic.critic_loss", "graph_built")])


def test_mmssl_sea_trains_on_the_propagated_modality_items(tiny_data):
    seed_everything(0)
    model, info, defaults = build_model(
        "mmssl+sea", tiny_data, embedding_dim=8, club_steps=1, proj_hidden_dim=5, proj_dim=7
    )
    host = model.host
    assert model.separate.dims == {"image": 8, "text": 8}
    assert [k for k, _ in model.auxiliary_estimators()] == [
        "host.critic.critic_loss",
        "separate.club_nll",
    ]
    terms = model.loss(torch.tensor([[0, 1, 2], [0, 1, 2], [3, 4, 5]]))
    assert {"bpr", "cl", "adv", "sea_align", "sea_dis"} <= set(terms)
    (terms["sea_align"] + terms["sea_dis"]).backward()
    assert all(lin.weight.grad.abs().sum() > 0 for lin in host.feat_trs.values())
    assert host.user_emb.weight.grad is None and host.item_emb.weight.grad is None
    cfg = TrainConfig(epochs=2, batch_size=128, progress=False, verbose=False, **defaults)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    assert res["epochs_run"] == 2 and all(math.isfinite(h["loss"]) for h in res["history"])


def test_mmssl_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)
    res = train_registered(unit_data, "mmssl", {"embedding_dim": 32}, epochs=6, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert res["test"]["recall@20"] > pop + 0.05, (res["test"]["recall@20"], pop)
