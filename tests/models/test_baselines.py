import math

import pytest
import torch

from sea_pyg.models import MFBPR, LightGCN, build_model
from sea_pyg.nn import bipartite_norm_adj


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_mf_loss_hand_computed():
    model = MFBPR(2, 3, embedding_dim=2, reg_weight=0.5)
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 1.0], [0.0, 1.0], [3.0, 4.0]]))
    batch = torch.tensor([[0, 1], [0, 1], [1, 2]])  # (u0, i0, i1), (u1, i1, i2)
    terms = model.loss(batch)
    # u0: pos 1, neg 0 -> diff 1 ; u1: pos 2, neg 8 -> diff -6
    bpr = -(math.log(1e-10 + _sig(1)) + math.log(1e-10 + _sig(-6))) / 2
    assert terms["bpr"].item() == pytest.approx(bpr, rel=1e-6)
    # EmbLoss: (||U_b||_F + ||P_b||_F + ||N_b||_F) / 2 = (sqrt 5 + sqrt 3 + sqrt 26) / 2
    reg = 0.5 * (math.sqrt(5) + math.sqrt(3) + math.sqrt(26)) / 2
    assert terms["reg"].item() == pytest.approx(reg, rel=1e-6)
    u, i = model.embeddings()
    assert (u @ i.t())[1, 2].item() == 8.0


def test_mf_init_is_xavier_normal():
    torch.manual_seed(0)
    model = MFBPR(3000, 2000, embedding_dim=64)
    std = math.sqrt(2 / (3000 + 64))
    assert model.user_emb.weight.std().item() == pytest.approx(std, rel=0.03)


def test_lightgcn_forward_and_loss_hand_computed():
    ei = torch.tensor([[0, 0, 1], [0, 1, 1]])
    model = LightGCN(2, 2, ei, embedding_dim=2, num_layers=2, reg_weight=0.1)
    ego_u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    ego_i = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])
    with torch.no_grad():
        model.user_emb.weight.copy_(ego_u)
        model.item_emb.weight.copy_(ego_i)
    # dense normalised adjacency, degrees u0 = 2, u1 = 1, i0 = 1, i1 = 2 (+1e-7)
    a = torch.zeros(4, 4)
    for u, i in ei.t().tolist():
        a[u, 2 + i] = a[2 + i, u] = 1.0
    d = (a.sum(1) + 1e-7).pow(-0.5)
    a_hat = d[:, None] * a * d[None, :]
    x = torch.cat([ego_u, ego_i])
    final = (x + a_hat @ x + a_hat @ a_hat @ x) / 3
    users, items = model.forward()
    assert torch.allclose(torch.cat([users, items]), final, atol=1e-6)

    batch = torch.tensor([[0], [1], [0]])
    terms = model.loss(batch)
    diff = float(final[0] @ final[3] - final[0] @ final[2])
    assert terms["bpr"].item() == pytest.approx(-math.log(1e-10 + _sig(diff)), rel=1e-5)
    # regularisation on the layer-0 (ego) rows of the batch: (|u0| + |i1| + |i0|) / 1
    reg = 0.1 * (1.0 + math.sqrt(1.25) + math.sqrt(5.0))
    assert terms["reg"].item() == pytest.approx(reg, rel=1e-6)


def test_lightgcn_adjacency_built_once_and_gradients_flow():
    ei = torch.tensor([[0, 1, 2, 2], [0, 1, 1, 2]])
    model = LightGCN(3, 3, ei, embedding_dim=4)
    ref = bipartite_norm_adj(ei, 3, 3).to_dense()
    assert torch.allclose(model.adj.to_dense(), ref)
    assert "adj" not in model.state_dict()  # rebuilt from the graph, never saved
    terms = model.loss(torch.tensor([[0, 1], [0, 1], [2, 0]]))
    sum(terms.values()).backward()
    assert model.user_emb.weight.grad.abs().sum() > 0
    assert model.item_emb.weight.grad.abs().sum() > 0


def test_registry_builds_and_rejects(tiny_data):
    model, info, _ = build_model("lightgcn", tiny_data, num_layers=3)
    assert isinstance(model, LightGCN) and info["hparams"]["num_layers"] == 3
    with pytest.raises(ValueError, match="unknown model 'nope'"):
        build_model("nope", tiny_data)
    with pytest.raises(ValueError, match="has no hyper-parameter"):
        build_model("mf", tiny_data, num_layers=2)
