import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import MODELS, SLMRec, build_model
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

# 3 users, 4 items; the pair (2, 3) is listed twice and counts once
EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 2, 3, 3]])
U, N, D = 3, 4, 2
BATCH = torch.tensor([[0, 2, 1, 0], [1, 3, 1, 0]])  # item 1 twice: its own in-batch negative


def _features():
    image = torch.tensor([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.0, 0.0]])
    text = torch.tensor([[1.0, -1.0], [0.0, 1.0], [2.0, 0.5], [-1.0, 1.0]])
    return {"image": image, "text": text}


def _model(**kw):
    torch.manual_seed(0)
    feats = kw.pop("features", None)
    feats = _features() if feats is None else feats
    hp = dict(embedding_dim=D, num_layers=2, ssl_alpha=0.5, ssl_temp=0.5, temperature=0.2)
    hp.update(kw)
    model = SLMRec(U, EDGES, feats, **hp)
    with torch.no_grad():  # non-trivial values everywhere
        for p in model.parameters():
            p.copy_(torch.randn_like(p))
    return model


def _dense_adj():
    a = torch.zeros(U + N, U + N)
    for u, i in EDGES.t().tolist():
        a[u, U + i] = a[U + i, u] = 1.0
    d = (a.sum(1) + 1e-8).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _lin(lin, x):
    return x @ lin.weight.t() + lin.bias


def _branch_inputs(model):
    feats = {m: x / x.norm(dim=1, keepdim=True) for m, x in _features().items()}
    return [model.item_emb.weight] + [_lin(model.dense[m], feats[m]) for m in feats]


def _branches(model, inputs=None):
    """MMRec's compute_graph, one branch at a time: {branch: (users, items)}."""
    a = _dense_adj()
    out = []
    for x in inputs or _branch_inputs(model):
        layers = [torch.cat([model.user_emb.weight, x])]
        for _ in range(model.num_layers):
            layers.append(a @ layers[-1])
        h = torch.stack(layers).mean(0)
        out.append((h[:U], h[U:]))
    return out


def _fuse(model, branches):
    if model.fusion == "mean":
        zu, zi = (torch.stack([b[k] for b in branches]).mean(0) for k in (0, 1))
    else:
        zu, zi = (torch.cat([b[k] for b in branches], 1) for k in (0, 1))
    return _lin(model.user_fuse, zu), _lin(model.item_fuse, zi)


def _ce(p, q, tau, normalize=True):
    """In-batch softmax cross-entropy written out with math: row b's positive is q_b."""
    p, q = p.tolist(), q.tolist()
    if normalize:
        p = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in p]
        q = [[v / math.sqrt(sum(w * w for w in r)) for v in r] for r in q]
    total = 0.0
    for b, row in enumerate(p):
        logits = [sum(x * y for x, y in zip(row, other, strict=True)) / tau for other in q]
        total += -logits[b] + math.log(sum(math.exp(v) for v in logits))
    return total / len(p)


def test_forward_equals_the_per_branch_dense_computation():
    for fusion in ("concat", "mean"):
        model = _model(fusion=fusion)
        branches = _branches(model)
        eu, ei = _fuse(model, branches)
        u, i = model.embeddings()
        assert torch.allclose(u, eu, atol=1e-5) and torch.allclose(i, ei, atol=1e-5)
        reps = model.modal_item_representations()
        assert list(reps) == ["image", "text"]
        assert torch.allclose(reps["image"], branches[1][1], atol=1e-5)
        assert torch.allclose(reps["text"], branches[2][1], atol=1e-5)
        some = model.modal_item_representations(torch.tensor([3, 1]))
        assert torch.allclose(some["text"], branches[2][1][[3, 1]], atol=1e-5)
        users = torch.tensor([2, 0])
        assert torch.allclose(model.score(users), eu[users] @ ei.t(), atol=1e-5)


def test_adjacency_is_binarised_and_symmetric_normalised():
    assert torch.allclose(_model().adj.to_dense(), _dense_adj(), atol=1e-7)
    # user 2 has 2 distinct items, item 3 one user: weight 1 / sqrt(2 * 1)
    assert _dense_adj()[2, U + 3].item() == pytest.approx(1 / math.sqrt(2))


def test_infonce_and_fac_terms_hand_computed():
    model = _model(ssl_task="FAC")
    terms = model.loss(BATCH)
    assert set(terms) == {"infonce", "ssl"}
    branches = _branches(model)
    eu, ei = _fuse(model, branches)
    users, items = BATCH
    infonce = _ce(eu[users], ei[items], 0.2)
    assert terms["infonce"].item() == pytest.approx(infonce, rel=1e-5)
    # FAC: ID -> (ID, image) -> (ID, image, text); last head has d // 2 = 1 output; no norm
    g1, g2 = model.fac_chain
    h1 = _lin(g1, branches[0][1][items])
    h2 = _lin(g2, h1)
    p1 = _lin(model.fac_modal["image"], branches[1][1][items])
    p2 = _lin(model.fac_modal["text"], branches[2][1][items])
    assert h2.shape == (4, 1) and p2.shape == (4, 1)
    fac = _ce(h1, p1, 0.5, normalize=False) + _ce(h2, p2, 0.5, normalize=False)
    assert terms["ssl"].item() == pytest.approx(0.5 * fac, rel=1e-5)
    assert set(_model(ssl_alpha=0.0).loss(BATCH)) == {"infonce"}


def _views_reference(model, masked, masks):
    """MMRec's feature_dropout / feature_masking per branch, with the given dropout masks
    ``masks[layer][chain]`` (``(U + N, (K+1)d)`` stacked, sliced per branch here)."""
    a, d = _dense_adj(), model.embedding_dim
    inputs = _branch_inputs(model)
    per_view = [[], []]
    for b, x in enumerate(inputs):
        ego = [torch.cat([model.user_emb.weight, torch.zeros_like(x) if masked[v] == b else x])
               for v in (0, 1)]  # fmt: skip
        chains, layers = list(ego), [[], []]
        for layer in range(model.num_layers):
            for v in (0, 1):
                chains[v] = a @ chains[v]
                if masks is not None:
                    chains[v] = chains[v] * masks[layer][v][:, b * d : (b + 1) * d]
                layers[v].append(chains[v])
        # MMRec: view 1 = own layer 0 + chain 2's layers; view 2 the converse
        for v, other in ((0, 1), (1, 0)):
            h = torch.stack([ego[v], *layers[other]]).mean(0)
            per_view[v].append((h[:U], h[U:]))
    return [_fuse(model, per_view[v]) for v in (0, 1)]


@pytest.mark.parametrize("task", ["FD", "FM", "FD+FM"])
def test_dropout_and_masking_views_equal_mmrec_under_the_same_draws(task):
    model = _model(ssl_task=task, dropout=0.4)
    torch.manual_seed(5)
    terms = model.loss(BATCH)
    out = model.forward_train(BATCH)  # (another draw; only its shapes are checked)
    assert out.rows["view_users"][0].shape == (4, D)
    # the same draws: masked branches first, then per layer chain 1's and chain 2's masks
    torch.manual_seed(5)
    masked = model.draw_masked_branches() if "FM" in task else (None, None)
    masks = None
    if "FD" in task:
        shape = (U + N, 3 * D)
        masks = [[F.dropout(torch.ones(shape), 0.4) for _ in (0, 1)] for _ in range(2)]
        assert masks[0][0].unique().tolist() == pytest.approx([0.0, 1 / 0.6])
    (u1, i1), (u2, i2) = _views_reference(model, masked, masks)
    users, items = BATCH
    ssl = _ce(u1[users], u2[users], 0.5) + _ce(i1[items], i2[items], 0.5)
    assert terms["ssl"].item() == pytest.approx(0.5 * ssl, rel=1e-5)
    eu, ei = _fuse(model, _branches(model))
    assert terms["infonce"].item() == pytest.approx(_ce(eu[users], ei[items], 0.2), rel=1e-5)


def test_masking_zeroes_one_branch_input_per_view():
    model = _model(ssl_task="FM")
    inputs = model.branch_inputs()
    for masked in [(0, 2), (1, 0), (2, 1)]:
        got = model.views(inputs, masked, dropout=0.0)
        ref = _views_reference(model, masked, None)
        for v in (0, 1):
            for k in (0, 1):
                assert torch.allclose(got[v][k], ref[v][k], atol=1e-5), (masked, v, k)
    # masking the same branch in both views without dropout gives identical views
    (u1, i1), (u2, i2) = model.views(inputs, (1, 1), dropout=0.0)
    assert torch.allclose(u1, u2) and torch.allclose(i1, i2)


def test_masked_branches_are_two_distinct_uniform_draws():
    model = _model(ssl_task="FM")
    torch.manual_seed(0)
    counts = Counter(model.draw_masked_branches() for _ in range(3000))
    assert set(counts) == {(a, b) for a in range(3) for b in range(3) if a != b}
    assert all(c == pytest.approx(500, abs=80) for c in counts.values())
    torch.manual_seed(3)
    expected = model.draw_masked_branches()
    torch.manual_seed(3)
    assert model.forward_train(BATCH).rows["masked"] == expected


def _grads(model, terms):
    model.zero_grad()
    sum(terms.values()).backward()
    return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_gradients_reach_exactly_what_should_learn():
    everything_but_fac = {"user_emb.weight", "item_emb.weight", "dense.image.weight",
                          "dense.image.bias", "dense.text.weight", "dense.text.bias",
                          "user_fuse.weight", "user_fuse.bias", "item_fuse.weight",
                          "item_fuse.bias"}  # fmt: skip
    fac = {f"fac_chain.{k}.{w}" for k in (0, 1) for w in ("weight", "bias")}
    fac |= {f"fac_modal.{m}.{w}" for m in ("image", "text") for w in ("weight", "bias")}
    model = _model(ssl_task="FAC")
    assert not any(n.startswith("x_") for n, _ in model.named_parameters())  # frozen features
    assert set(dict(model.named_parameters())) == everything_but_fac | fac
    out = model.forward_train(BATCH)
    assert _grads(model, {"i": model.loss_terms(out)["infonce"]}) == everything_but_fac
    out = model.forward_train(BATCH)
    # FAC never reaches the fusion layers; through the propagation it reaches E_U
    fusion = {"user_fuse.weight", "user_fuse.bias", "item_fuse.weight", "item_fuse.bias"}
    assert _grads(model, {"s": model.ssl_loss(out)}) == (everything_but_fac | fac) - fusion
    for task in ("FD", "FM", "FD+FM"):
        model = _model(ssl_task=task)
        assert not hasattr(model, "fac_chain")
        assert _grads(model, {"s": model.ssl_loss(model.forward_train(BATCH))}) == (
            everything_but_fac
        ), task


def test_gradients_equal_the_dense_reference():
    model = _model(ssl_task="FAC")
    sum(model.loss(BATCH).values()).backward()
    got = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    branches = _branches(model)
    eu, ei = _fuse(model, branches)
    users, items = BATCH
    logits = F.normalize(eu[users]) @ F.normalize(ei[items]).t() / 0.2
    loss = F.cross_entropy(logits, torch.arange(4))
    h = branches[0][1][items]
    for k, m in enumerate(["image", "text"]):
        h = _lin(model.fac_chain[k], h)
        p = _lin(model.fac_modal[m], branches[k + 1][1][items])
        loss = loss + 0.5 * F.cross_entropy(h @ p.t() / 0.5, torch.arange(4))
    loss.backward()
    for n, p in model.named_parameters():
        assert torch.allclose(got[n], p.grad, atol=1e-5), n


def test_one_and_three_modalities():
    gen = torch.Generator().manual_seed(1)
    one = {"text": torch.randn(N, 5, generator=gen)}
    model = _model(features=one, ssl_task="FAC", embedding_dim=4)
    assert [lin.out_features for lin in model.fac_chain] == [4]  # one modality: no halving
    assert model.user_fuse.in_features == 8
    assert set(model.loss(BATCH)) == {"infonce", "ssl"}
    model = _model(features=one, ssl_task="FM", embedding_dim=4)
    torch.manual_seed(0)
    assert {model.draw_masked_branches() for _ in range(50)} == {(0, 1), (1, 0)}
    model.loss(BATCH)
    three = {m: torch.randn(N, k, generator=gen) for m, k in [("a", 2), ("b", 3), ("c", 4)]}
    model = _model(features=three, ssl_task="FAC", embedding_dim=4)
    assert [lin.out_features for lin in model.fac_chain] == [4, 4, 2]
    assert [model.fac_modal[m].out_features for m in "abc"] == [4, 4, 2]
    reps = model.modal_item_representations()
    assert list(reps) == ["a", "b", "c"] and all(r.shape == (N, 4) for r in reps.values())
    for task in ("FAC", "FD+FM"):
        model = _model(features=three, ssl_task=task, embedding_dim=4)
        assert all(torch.isfinite(v) for v in model.loss(BATCH).values())


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"ssl_task": "FDM"}, "ssl_task"),
        ({"fusion": "sum"}, "fusion"),
        ({"dropout": 1.0}, "dropout"),
        ({"ssl_temp": 0.0}, "ssl_temp"),
        ({"temperature": -1.0}, "temperature"),
        ({"ssl_alpha": -0.1}, "ssl_alpha"),
        ({"num_layers": -1}, "num_layers"),
        ({"embedding_dim": 1}, "embedding_dim"),
        ({"features": {}}, "features"),
    ],
)
def test_bad_arguments_are_named(kw, words):
    with pytest.raises(ValueError, match=words):
        _model(**kw)


def test_lower_case_task_and_bad_batch():
    assert _model(ssl_task="fd+fm").ssl_task == "FD+FM"
    with pytest.raises(ValueError, match=r"\(2, B\)"):
        _model().loss(BATCH[:1])


def test_registry_defaults_grid_and_train_defaults(tiny_data):
    spec = MODELS["slmrec"]
    assert spec.defaults == {
        "embedding_dim": 64, "num_layers": 3, "ssl_task": "FAC", "ssl_alpha": 0.01,
        "ssl_temp": 0.1, "temperature": 0.2, "dropout": 0.3, "fusion": "concat",
    }  # fmt: skip
    assert spec.train_defaults == {"lr": 1e-4, "weight_decay": 1e-4}
    assert dict(spec.search_space) == {
        "lr": (1e-4, 1e-3, 1e-2, 0.1),
        "ssl_alpha": (0.01, 0.05, 0.1, 0.5, 1.0),
        "ssl_temp": (0.1, 0.2, 0.5, 1.0),
    }
    assert MODELS["slmrec+sea"].search_space == spec.search_space
    model, _, _ = build_model("slmrec", tiny_data)
    assert model.uses_negatives is False and model.user_fuse.in_features == 192
    assert model.item_emb.weight.abs().max() <= math.sqrt(6 / (tiny_data["item"].num_nodes + 64))


def test_save_load_gives_identical_scores(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("slmrec", tiny_data, embedding_dim=8, ssl_task="FD+FM")
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    assert loaded.ssl_task == "FD+FM"
    users = torch.arange(tiny_data["user"].num_nodes)
    assert torch.equal(model.score(users), loaded.score(users))


@pytest.mark.parametrize("name", ["slmrec", "slmrec+sea"])
def test_trainer_resume_is_exact(tiny_data, tmp_path, name):
    hp = {"embedding_dim": 8, "num_layers": 2, "ssl_task": "FD+FM", "ssl_alpha": 0.1}
    if name.endswith("+sea"):
        hp.update(ssl_task="FAC", club_steps=2, proj_hidden_dim=5, proj_dim=7)

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, defaults = build_model(name, tiny_data, **hp)
        cfg = TrainConfig(**defaults, epochs=epochs, batch_size=128, progress=False,
                          verbose=False, seed=1, output_dir=str(out), resume=resume)  # fmt: skip
        return Trainer(model, tiny_data, cfg, model_info=info).fit()

    full = run(3, tmp_path / "a")
    run(1, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert [h["valid"] for h in resumed["history"]] == [h["valid"] for h in full["history"]]
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_sea_plugin_trains_on_the_modality_branches(tiny_data):
    seed_everything(0)
    model, info, defaults = build_model("slmrec+sea", tiny_data, embedding_dim=8,
                                        club_steps=2, proj_hidden_dim=5, proj_dim=7)  # fmt: skip
    host = model.host
    assert model.separate.dims == {"image": 8, "text": 8}
    out = host.forward_train(torch.tensor([[0, 1, 2], [3, 4, 3]]), all_modal_items=True)
    assert out.modal_items is None and out.modal["text"].shape == (host.num_items, 8)
    assert torch.allclose(out.modal["text"], host.modal_item_representations()["text"])
    terms = model.loss(torch.tensor([[0, 1, 2], [3, 4, 3]]))
    assert set(terms) == {"infonce", "ssl", "sea_align", "sea_dis"}
    (terms["sea_align"] + terms["sea_dis"]).backward()
    # the separate-learning terms reach the modality branches (D_m and, through the graph,
    # E_U), never the item ID table or the fusion layers
    assert all(lin.weight.grad.abs().sum() > 0 for lin in host.dense.values())
    assert host.user_emb.weight.grad.abs().sum() > 0
    for p in (host.item_emb.weight, host.item_fuse.weight, host.user_fuse.weight):
        assert p.grad is None or not p.grad.any()
    cfg = TrainConfig(**defaults, epochs=2, batch_size=128, progress=False, verbose=False)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    assert res["epochs_run"] == 2 and all(math.isfinite(h["loss"]) for h in res["history"])


def test_slmrec_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "slmrec", {}, epochs=15, lr=3e-3)
    losses = [h["losses"]["infonce"] for h in res["history"]]
    assert losses[-1] < 0.85 * losses[0]
    # about 0.348 (trainer seeds 2, 3: 0.322, 0.326; LightGCN: about 0.345)
    assert res["test"]["recall@20"] > pop + 0.04, (res["test"]["recall@20"], pop)
