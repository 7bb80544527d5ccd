import pytest
import torch
from _dual_graph import (
    EDGES,
    PREFERENCES,
    USER_W,
    USER_WEIGHT,
    dense_modality,
    features,
    set_hand_parameters,
)
from _learning import popularity_recall20, train_registered

from sea_pyg import load_model, save_model
from sea_pyg.models import DRAGON, DualGNN, build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

U = 3


def _knn_matrix():
    """S = 0.1 A_image + 0.9 A_text with k = 2 (self + 1 neighbour), entries 1 / (2 + 1e-7):
    text pairs {0, 1}, {2, 3}; image pairs {0, 2}, {1, 3}."""
    a = 1 / (2 + 1e-7)
    a_text, a_image = torch.eye(4) * a, torch.eye(4) * a
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        a_text[i, j] = a
    for i, j in [(0, 2), (2, 0), (1, 3), (3, 1)]:
        a_image[i, j] = a
    return 0.1 * a_image + 0.9 * a_text


def _hand_model(**kw):
    torch.manual_seed(0)
    args = dict(embedding_dim=2, hidden_dim=3, knn_k=2, num_neighbors=2, reg_weight=0.0)
    args.update(kw)
    model = DRAGON(U, EDGES, features(), **args)
    set_hand_parameters(model)
    return model


def _expected():
    feats = features()
    ev, _ = dense_modality("image", feats["image"])
    et, _ = dense_modality("text", feats["text"])
    users = torch.cat([USER_WEIGHT[:, :1] * ev[:U], USER_WEIGHT[:, 1:] * et[:U]], dim=1)
    items = torch.cat([ev[U:], et[U:]], dim=1)
    return users + USER_W @ users, items + _knn_matrix() @ items


def test_item_graph_is_the_frozen_mmrec_mix():
    model = _hand_model()
    assert model.item_graph.modalities == ["image", "text"]
    assert model.item_graph.modality_weights().tolist() == pytest.approx([0.1, 0.9])
    assert torch.allclose(model.item_graph.adjacency().to_dense(), _knn_matrix(), atol=1e-6)
    assert list(model.item_graph.parameters()) == []
    assert list(model.user_graph.parameters()) == []
    # built once from the raw features: training does not move it
    before = model.item_graph.adjacency().to_dense()
    sum(model.loss(torch.tensor([[0], [1], [2]])).values()).backward()
    assert torch.equal(model.item_graph.adjacency().to_dense(), before)


def test_forward_hand_computed():
    model = _hand_model()
    users, items = model.embeddings()
    exp_u, exp_i = _expected()
    assert users.shape == (3, 4) and items.shape == (4, 4)  # image then text, 2 + 2
    assert torch.allclose(users, exp_u, atol=1e-6) and torch.allclose(items, exp_i, atol=1e-6)
    # two item-graph layers: S^2
    model = _hand_model(item_graph_layers=2)
    _, items = model.embeddings()
    feats = features()
    base = torch.cat([dense_modality(m, feats[m])[0][U:] for m in ("image", "text")], 1)
    assert torch.allclose(items, base + _knn_matrix() @ _knn_matrix() @ base, atol=1e-6)


def test_loss_hand_computed():
    model = _hand_model(reg_weight=1e-3)
    batch = torch.tensor([[0, 2, 1], [1, 3, 2], [2, 1, 0]])
    terms = model.loss(batch)
    users, items = _expected()
    u = users[batch[0]]
    diff = (u * items[batch[1]]).sum(1) - (u * items[batch[2]]).sum(1)
    assert terms["bpr"].item() == pytest.approx(
        -torch.log2(torch.sigmoid(diff)).mean().item(), rel=1e-5
    )
    reg = sum(PREFERENCES[m][batch[0]].pow(2).mean() for m in PREFERENCES)
    reg = 1e-3 * (reg + USER_WEIGHT.pow(2).mean())
    assert terms["reg"].item() == pytest.approx(reg.item(), rel=1e-6)


def test_is_dualgnn_plus_an_item_graph():
    """Without the item graph and with DualGNN's fusion, DRAGON computes DualGNN."""
    dragon = _hand_model(item_graph_layers=0, fusion="mmrec", reg_weight=0.1)
    assert dragon.item_graph is None
    torch.manual_seed(0)
    dual = DualGNN(
        U, EDGES, features(), embedding_dim=2, hidden_dim=3, num_neighbors=2, reg_weight=0.1
    )
    dual.load_state_dict(dragon.state_dict())
    for a, b in zip(dragon.embeddings(), dual.embeddings(), strict=True):
        assert torch.equal(a, b)
    batch = torch.tensor([[0, 1], [1, 2], [3, 0]])
    a, b = dragon.loss(batch), dual.loss(batch)
    assert set(a) == set(b) == {"bpr", "reg"}
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradients_reach_every_parameter():
    model = _hand_model(reg_weight=1e-3)
    sum(model.loss(torch.tensor([[0, 1], [1, 2], [3, 0]])).values()).backward()
    names = [n for n, _ in model.named_parameters()]
    assert len(names) == 11 and "user_weight" in names  # 2 x (preference + 2 Linear) + weights
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_any_modalities():
    torch.manual_seed(0)
    feats = {"text": torch.randn(4, 3)}
    model = DRAGON(U, EDGES, feats, embedding_dim=4, knn_k=2, num_neighbors=2)
    assert model.user_weight is None and model.item_graph.modality_weights().tolist() == [1.0]
    users, items = model.embeddings()
    assert users.shape == (3, 4) and items.shape == (4, 4)
    feats = {"a": torch.randn(4, 2), "b": torch.randn(4, 3), "c": torch.randn(4, 5)}
    model = DRAGON(
        U,
        EDGES,
        feats,
        embedding_dim=4,
        knn_k=2,
        num_neighbors=2,
        knn_weights={"a": 0.2, "b": 0.3, "c": 0.5},
    )
    assert model.item_graph.modality_weights().tolist() == pytest.approx([0.2, 0.3, 0.5])
    assert model.embeddings()[0].shape == (3, 12)
    assert list(model.modal_item_representations()) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="item_graph_layers"):
        DRAGON(U, EDGES, feats, item_graph_layers=-1)


def test_checkpoint_round_trip(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, defaults = build_model("dragon", tiny_data, embedding_dim=8, hidden_dim=16)
    assert defaults == {"lr": 1e-4} and info["hparams"]["reg_weight"] == 1e-3
    model.pre_epoch(0)
    users = torch.arange(tiny_data["user"].num_nodes)
    model.eval()
    before = model.score(users)
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    assert torch.equal(loaded.score(users), before)


def test_sea_plugin_and_resume(tiny_data, tmp_path):
    hp = {"embedding_dim": 8, "hidden_dim": 16, "club_steps": 2}

    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, _ = build_model("dragon+sea", tiny_data, **hp)
        cfg = TrainConfig(
            epochs=epochs,
            batch_size=128,
            lr=1e-2,
            progress=False,
            verbose=False,
            seed=1,
            output_dir=str(out),
            resume=resume,
        )
        return Trainer(model, tiny_data, cfg, model_info=info).fit()

    full = run(3, tmp_path / "a")
    assert {"bpr", "reg", "sea_align", "sea_dis", "club_nll"} <= set(full["history"][0]["losses"])
    run(2, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_dragon_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "dragon", {}, epochs=6, lr=3e-3)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.7 * losses[0]
    # about 0.37 (FREEDOM: about 0.34)
    assert res["test"]["recall@20"] > pop + 0.05, (res["test"]["recall@20"], pop)
