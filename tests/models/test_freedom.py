import math

import pytest
import torch
import torch.nn.functional as F
from _learning import popularity_recall20, train_registered

from sea_pyg.models import FREEDOM, build_model
from sea_pyg.nn.knn import image_weighted_mix

EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2], [0, 1, 1, 2, 0, 2, 3]])  # 3 users, 4 items


def _features():
    # text: items {0, 1} and {2, 3} are neighbours; image: {0, 2} and {1, 3}
    text = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    return {"image": image, "text": text}


def _knn_matrix():
    """S = 0.1 A_image + 0.9 A_text with k = 2 (self + 1 neighbour), entries 1 / (2 + 1e-7)."""
    a = 1 / (2 + 1e-7)
    a_text = torch.zeros(4, 4)
    a_image = torch.zeros(4, 4)
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        a_text[i, j] = a
    for i, j in [(0, 2), (2, 0), (1, 3), (3, 1)]:
        a_image[i, j] = a
    eye = torch.eye(4) * a
    return 0.1 * (a_image + eye) + 0.9 * (a_text + eye)


def _dense_norm_adj(edges, num_users, num_items):
    n = num_users + num_items
    a = torch.zeros(n, n)
    for u, i in edges.t().tolist():
        a[u, num_users + i] = a[num_users + i, u] = 1.0
    d = (a.sum(1) + 1e-7).pow(-0.5)
    return d[:, None] * a * d[None, :]


def _hand_model(reg_weight=0.0, dropout=0.5):
    torch.manual_seed(0)
    model = FREEDOM(
        3,
        EDGES,
        _features(),
        embedding_dim=2,
        feat_embed_dim=2,
        knn_k=2,
        num_layers=2,
        dropout=dropout,
        reg_weight=reg_weight,
    )
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0], [2.0, 0.0]]))
        for lin in model.feat_trs.values():
            lin.weight.copy_(torch.tensor([[1.0, 0.0], [1.0, 1.0]]))
            lin.bias.copy_(torch.tensor([0.0, -1.0]))
    return model


def _expected_forward(model, adj_dense):
    ego = torch.cat([model.user_emb.weight, model.item_emb.weight]).detach()
    final = (ego + adj_dense @ ego + adj_dense @ adj_dense @ ego) / 3
    h = _knn_matrix() @ model.item_emb.weight.detach()
    return final[:3], final[3:] + h


def test_item_graph_is_mmrec_mix_of_frozen_knn_graphs():
    model = _hand_model()
    assert model.item_graph.modalities == ["image", "text"]
    assert model.item_graph.modality_weights().tolist() == pytest.approx([0.1, 0.9])
    assert torch.allclose(model.item_graph.adjacency().to_dense(), _knn_matrix(), atol=1e-6)
    assert list(model.item_graph.parameters()) == []  # frozen


def test_forward_on_full_graph_hand_computed():
    model = _hand_model()
    users, items = model.embeddings()
    exp_u, exp_i = _expected_forward(model, _dense_norm_adj(EDGES, 3, 4))
    assert torch.allclose(users, exp_u, atol=1e-6) and torch.allclose(items, exp_i, atol=1e-6)
    assert users.shape == (3, 2) and items.shape == (4, 2)


def test_loss_hand_computed_on_the_pruned_graph():
    model = _hand_model(reg_weight=0.1, dropout=0.5)
    torch.manual_seed(3)
    model.pre_epoch(0)
    kept = model.train_adj.to_sparse_coo().coalesce().indices()
    kept = kept[:, kept[0] < 3]
    kept[1] -= 3
    assert kept.size(1) == int(7 * 0.5)  # 3 of the 7 edges
    batch = torch.tensor([[0, 2], [1, 3], [2, 1]])
    terms = model.loss(batch)
    u_all, i_all = _expected_forward(model, _dense_norm_adj(kept, 3, 4))
    u, p, n = u_all[batch[0]], i_all[batch[1]], i_all[batch[2]]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    # modality BPR on T_m(x) = x @ [[1, 0], [1, 1]]^T + (0, -1) = (x0, x0 + x1 - 1)
    modal = 0.0
    for x in _features().values():
        r = torch.stack([x[:, 0], x[:, 0] + x[:, 1] - 1], dim=1)
        diff = (u * r[batch[1]]).sum(1) - (u * r[batch[2]]).sum(1)
        modal += -sum(math.log(1 / (1 + math.exp(-d))) for d in diff.tolist()) / 2
    assert terms["modal_bpr"].item() == pytest.approx(0.1 * modal, rel=1e-5)


def test_pruning_each_epoch_and_full_graph_at_evaluation():
    model = _hand_model(dropout=0.5)
    full = model.embeddings()
    torch.manual_seed(0)
    graphs = []
    for epoch in range(6):
        model.pre_epoch(epoch)
        assert model.train_adj._nnz() == 2 * 3  # both directions of int(7 * 0.5) edges
        graphs.append(model.train_adj.to_dense())
    assert any(not torch.equal(graphs[0], g) for g in graphs[1:])  # redrawn every epoch
    # seeded: the same global seed gives the same pruned graphs
    torch.manual_seed(0)
    model.pre_epoch(0)
    assert torch.equal(model.train_adj.to_dense(), graphs[0])
    # evaluation ignores the pruned graph
    for a, b in zip(model.embeddings(), full, strict=True):
        assert torch.equal(a, b)
    pruned = model.forward(model.train_adj)
    assert not torch.allclose(pruned[0], full[0])
    # dropout 0 trains on the full graph
    model = _hand_model(dropout=0.0)
    model.pre_epoch(0)
    assert model.train_adj is model.adj


def test_gradients_reach_what_should_learn():
    model = _hand_model(reg_weight=0.1)
    model.pre_epoch(0)
    batch = torch.tensor([[0, 1, 2], [1, 2, 3], [3, 0, 1]])
    sum(model.loss(batch).values()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if name.startswith("feat_trs.") and name.endswith(".bias"):
            # the bias of T_m cancels in the modality BPR difference (as in MMRec)
            assert torch.all(p.grad == 0), name
        else:
            assert p.grad.abs().sum() > 0, name
    # with reg_weight = 0 the modality branch is not used by the loss (nor computed)
    model = _hand_model(reg_weight=0.0)
    terms = model.loss(batch)
    assert set(terms) == {"bpr"}
    sum(terms.values()).backward()
    assert model.item_emb.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.features.values())
    assert all(p.grad is None for p in model.feat_trs.parameters())


def test_modal_item_representations_and_forward_train():
    model = _hand_model(reg_weight=0.0)
    reps = model.modal_item_representations()
    assert list(reps) == ["image", "text"] and all(r.shape == (4, 2) for r in reps.values())
    assert reps["text"].requires_grad
    x = _features()["text"]
    assert torch.allclose(reps["text"], torch.stack([x[:, 0], x[:, 0] + x[:, 1] - 1], dim=1))
    out = model.forward_train(torch.tensor([[0], [1], [2]]), all_modal_items=True)
    assert out.modal_items is None and torch.equal(out.modal["image"], reps["image"])
    assert torch.equal(out.rows["modal_pos"]["text"], reps["text"][[1]])


def test_features_are_trainable_copies(tiny_data):
    model, _, _ = build_model("freedom", tiny_data)
    x = tiny_data["item"]["x_text"]
    assert model.features["text"] is not x and torch.equal(model.features["text"], x)
    assert model.features["text"].requires_grad
    with torch.no_grad():
        model.features["text"].add_(1.0)
    assert not torch.equal(model.features["text"], x)  # the dataset is untouched
    frozen, _, _ = build_model("freedom", tiny_data, trainable_features=False)
    assert not frozen.features["text"].requires_grad


def test_knn_weights_for_any_modalities():
    assert image_weighted_mix(["image", "text"]) == pytest.approx({"image": 0.1, "text": 0.9})
    assert image_weighted_mix(["audio", "image", "text"], 0.2) == pytest.approx(
        {"audio": 0.4, "image": 0.2, "text": 0.4}
    )
    assert image_weighted_mix(["a", "b"]) == {"a": 0.5, "b": 0.5}
    assert image_weighted_mix(["text"]) == {"text": 1.0}
    torch.manual_seed(0)
    feats = {"text": torch.randn(5, 3)}
    model = FREEDOM(
        2,
        torch.tensor([[0, 1], [1, 4]]),
        feats,
        embedding_dim=4,
        feat_embed_dim=4,
        knn_k=2,
        dropout=0.5,
    )
    model.pre_epoch(0)
    u, i = model.embeddings()
    assert u.shape == (2, 4) and i.shape == (5, 4)
    feats = {"x": torch.randn(5, 2), "y": torch.randn(5, 3), "z": torch.randn(5, 4)}
    model = FREEDOM(
        2,
        torch.tensor([[0, 1], [1, 4]]),
        feats,
        embedding_dim=4,
        feat_embed_dim=4,
        knn_k=2,
        knn_weights={"x": 0.3, "y": 0.5, "z": 0.2},
    )
    assert list(model.modal_item_representations()) == ["x", "y", "z"]
    assert model.item_graph.modality_weights().tolist() == pytest.approx([0.3, 0.5, 0.2])
    with pytest.raises(ValueError, match="feat_embed_dim"):
        FREEDOM(2, torch.tensor([[0], [1]]), feats, embedding_dim=4, feat_embed_dim=8, knn_k=2)


def test_freedom_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "freedom", {}, epochs=15, lr=1e-2)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # about 0.34 (LightGCN: about 0.34 as well)
    assert res["test"]["recall@20"] > pop + 0.04, (res["test"]["recall@20"], pop)
