import math

import pytest
import torch
from _learning import popularity_recall20, train_registered

from sea_pyg import load_model, save_model
from sea_pyg.models import LayerGCN, build_model, sea_variant
from sea_pyg.nn import bipartite_norm_adj, degree_sensitive_edge_pruning
from sea_pyg.train import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2, 3]])  # 3 users, 4 items


def _dense_norm_adj(edges, num_users, num_items):
    n = num_users + num_items
    a = torch.zeros(n, n)
    for u, i in edges.t().tolist():
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _hand_model(**kw):
    torch.manual_seed(0)
    model = LayerGCN(3, 4, EDGES, embedding_dim=2, **{"num_layers": 2, **kw})
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0], [2.0, 0.0]]))
    return model


def _expected(model, adj_dense):
    """Dense reference: refined layers 1..L summed, weights = explicit cosines."""
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    h, total = ego, 0
    for _ in range(model.propagation.num_layers):
        h = adj_dense @ h
        norms = h.norm(dim=1).clamp_min(1e-8) * ego.norm(dim=1).clamp_min(1e-8)
        cos = (h * ego).sum(1) / norms  # 0 for a node left without edges
        h = cos[:, None] * h
        total = total + h
    return total[:3], total[3:]


def test_forward_on_full_graph_dense_reference():
    model = _hand_model()
    users, items = model.embeddings()
    exp_u, exp_i = _expected(model, _dense_norm_adj(EDGES, 3, 4))
    assert torch.allclose(users, exp_u, atol=1e-6) and torch.allclose(items, exp_i, atol=1e-6)
    assert users.shape == (3, 2) and items.shape == (4, 2)


def test_forward_one_layer_hand_computed():
    # user 0 is linked to items 0 and 1 (degrees 2, 2, 2): A_hat row = (i0 + i1) / 2
    model = _hand_model(num_layers=1)
    users, _ = model.embeddings()
    # A_hat[u0] = (i0 + i1) / 2: h = ((1, 2) + (-1, .5)) / 2 = (0, 1.25), orthogonal to
    # e_u0 = (1, 0), so user 0's only layer is zeroed
    assert torch.allclose(users[0], torch.zeros(2), atol=1e-6)
    # A_hat[u1] = (i1 + i2) / 2: h = ((-1, .5) + (0, 1)) / 2 = (-.5, .75); e_u1 = (0, 1)
    h = torch.tensor([-0.5, 0.75])
    cos = 0.75 / math.sqrt(0.25 + 0.5625)
    assert torch.allclose(users[1], cos * h, atol=1e-6)


def test_loss_hand_computed_on_the_dropped_graph():
    model = _hand_model(reg_weight=0.1, dropout=0.5)
    torch.manual_seed(3)
    model.pre_epoch(0)
    kept = model.train_adj.to_sparse_coo().coalesce().indices()
    kept = kept[:, kept[0] < 3]
    kept[1] -= 3
    assert kept.size(1) == int(7 * 0.5)
    batch = torch.tensor([[0, 2], [1, 3], [2, 1]])
    terms = model.loss(batch)
    u_all, i_all = _expected(model, _dense_norm_adj(kept, 3, 4))
    u, p, n = u_all[batch[0]], i_all[batch[1]], i_all[batch[2]]
    diff = ((u * p).sum(1) - (u * n).sum(1)).tolist()
    bpr = -sum(math.log(1 / (1 + math.exp(-d))) for d in diff)  # a sum, not a mean
    assert terms["bpr"].item() == pytest.approx(bpr, rel=1e-5)
    # L2 on the ego rows: users (1, 0), (1, -1); positives (-1, .5), (2, 0); negatives (0, 1),
    # (-1, .5): 0.5 * (1 + 2 + 1.25 + 4 + 1 + 1.25) = 5.25
    assert terms["reg"].item() == pytest.approx(0.1 * 5.25, rel=1e-6)
    assert set(_hand_model(reg_weight=0.0).loss(batch)) == {"bpr"}


def test_edge_dropout_alternates_degree_and_uniform_sampling():
    model = _hand_model(dropout=0.4)
    assert [model.sampling_for_epoch(e) for e in range(4)] == [
        "degree",
        "uniform",
        "degree",
        "uniform",
    ]
    for epoch, weights in [(0, model.edge_weight), (1, torch.ones(7)), (2, model.edge_weight)]:
        got = model.drop_edges(epoch, generator=torch.Generator().manual_seed(5))
        kept = degree_sensitive_edge_pruning(
            model.edge_index,
            3,
            4,
            0.4,
            weights=weights,
            generator=torch.Generator().manual_seed(5),
        )
        assert kept.size(1) == int(7 * 0.6)
        assert torch.equal(got.to_dense(), bipartite_norm_adj(kept, 3, 4).to_dense())
    # the degree weights are 1 / sqrt(d_u d_i) of the full graph
    d_u, d_i = torch.tensor([2.0, 2, 3]), torch.tensor([2.0, 2, 2, 1])
    expected = (d_u[EDGES[0]] + 1e-7).pow(-0.5) * (d_i[EDGES[1]] + 1e-7).pow(-0.5)
    assert torch.allclose(model.edge_weight, expected)
    # one schedule for every epoch
    only = _hand_model(dropout=0.4, edge_sampling="uniform")
    assert {only.sampling_for_epoch(e) for e in range(3)} == {"uniform"}


def test_dropout_redraws_each_epoch_and_evaluation_uses_the_full_graph():
    model = _hand_model(dropout=0.5)
    full = model.embeddings()
    torch.manual_seed(0)
    graphs = []
    for epoch in range(6):
        model.pre_epoch(epoch)
        assert model.train_adj._nnz() == 2 * 3
        graphs.append(model.train_adj.to_dense())
    assert any(not torch.equal(graphs[0], g) for g in graphs[1:])
    for a, b in zip(model.embeddings(), full, strict=True):
        assert torch.equal(a, b)
    model = _hand_model(dropout=0.0)
    model.pre_epoch(1)
    assert model.train_adj is model.adj


def test_gradients_reach_both_embedding_tables_only():
    model = _hand_model(reg_weight=0.1, dropout=0.2)
    assert [n for n, _ in model.named_parameters()] == ["user_emb.weight", "item_emb.weight"]
    model.pre_epoch(0)
    sum(model.loss(torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])).values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the regulariser alone reaches exactly the batch's ego rows: grad = reg_weight * row
    model = _hand_model(reg_weight=0.1)
    model.loss(torch.tensor([[0], [1], [3]]))["reg"].backward()
    g_u, g_i = model.user_emb.weight.grad, model.item_emb.weight.grad
    assert torch.allclose(g_u[0], 0.1 * model.user_emb.weight[0].detach())
    assert g_u[1:].abs().sum() == 0 and g_i[[0, 2]].abs().sum() == 0


def test_registry_defaults_and_errors(tiny_data):
    model, info, train = build_model("layergcn", tiny_data)
    assert isinstance(model, LayerGCN) and train == {}
    assert info["hparams"] == {
        "embedding_dim": 64,
        "num_layers": 4,
        "reg_weight": 1e-2,
        "dropout": 0.0,
        "edge_sampling": "alternate",
    }
    with pytest.raises(ValueError, match="no SEA plug-in"):
        sea_variant("layergcn")  # a pure CF model
    with pytest.raises(ValueError, match="dropout"):
        LayerGCN(3, 4, EDGES, dropout=1.0)
    with pytest.raises(ValueError, match="edge_sampling"):
        LayerGCN(3, 4, EDGES, edge_sampling="random")
    with pytest.raises(ValueError, match="num_layers"):
        LayerGCN(3, 4, EDGES, num_layers=0)
    with pytest.raises(ValueError, match="item ids"):
        LayerGCN(3, 2, EDGES)


def test_checkpoint_round_trip(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("layergcn", tiny_data, dropout=0.1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    users = torch.arange(tiny_data["user"].num_nodes)
    model.eval()
    assert torch.equal(model.score(users), loaded.score(users))


def test_trainer_resume_is_exact(tiny_data, tmp_path):
    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, _ = build_model("layergcn", tiny_data, embedding_dim=8, dropout=0.2)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=128,
            progress=False,
            verbose=False,
            seed=1,
            output_dir=str(out),
            resume=resume,
        )
        return Trainer(model, tiny_data, cfg, model_info=info).fit()

    full = run(4, tmp_path / "a")
    run(3, tmp_path / "b")  # stops after an odd number of epochs: the next draw is "uniform"
    resumed = run(4, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-6
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)


def test_layergcn_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "layergcn", {"dropout": 0.2}, epochs=12, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert res["test"]["recall@20"] > pop + 0.04, (res["test"]["recall@20"], pop)
