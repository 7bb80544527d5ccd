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
from sea_pyg.models import DualGNN, build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

U = 3


def _hand_model(**kw):
    torch.manual_seed(0)
    args = dict(embedding_dim=2, hidden_dim=3, num_neighbors=2, reg_weight=0.0)
    args.update(kw)
    model = DualGNN(U, EDGES, features(), **args)
    set_hand_parameters(model)
    return model


def _expected(fusion="mmrec"):
    feats = features()
    (ev, hv), (et, ht) = (
        dense_modality("image", feats["image"]),
        dense_modality("text", feats["text"]),
    )
    w0, w1 = USER_WEIGHT[:, :1], USER_WEIGHT[:, 1:]
    if fusion == "mmrec":  # MMRec's in-place add: image user rows hold image + text
        users, items = w0 * (ev[:U] + et[:U]) + w1 * et[:U], ev[U:] + et[U:]
    elif fusion == "weighted_sum":
        users, items = w0 * ev[:U] + w1 * et[:U], ev[U:] + et[U:]
    else:
        users, items = torch.cat([w0 * ev[:U], w1 * et[:U]], 1), torch.cat([ev[U:], et[U:]], 1)
    return users + USER_W @ users, items, {"image": hv, "text": ht}


@pytest.mark.parametrize("fusion", ["mmrec", "weighted_sum", "concat"])
def test_forward_hand_computed(fusion):
    model = _hand_model(fusion=fusion)
    assert torch.allclose(model.user_graph.adjacency().to_dense(), USER_W)
    users, items = model.embeddings()
    exp_u, exp_i, exp_h = _expected(fusion)
    assert torch.allclose(users, exp_u, atol=1e-6) and torch.allclose(items, exp_i, atol=1e-6)
    reps = model.modal_item_representations()
    assert all(torch.allclose(reps[m], exp_h[m], atol=1e-6) for m in ("image", "text"))
    assert torch.allclose(
        model.modal_item_representations(torch.tensor([2]))["text"], exp_h["text"][[2]], atol=1e-6
    )


def test_mmrec_fusion_weights_text_twice():
    """MMRec's user rows are w_v e_v + (w_v + w_t) e_t, not the paper's w_v e_v + w_t e_t."""
    mmrec, paper = _hand_model(fusion="mmrec"), _hand_model(fusion="weighted_sum")
    feats = features()
    et, _ = dense_modality("text", feats["text"])
    extra = USER_WEIGHT[:, :1] * et[:U]
    diff = mmrec.embeddings()[0] - paper.embeddings()[0]
    assert torch.allclose(diff, extra + USER_W @ extra, atol=1e-6)
    assert torch.equal(mmrec.embeddings()[1], paper.embeddings()[1])


def test_loss_hand_computed():
    model = _hand_model(reg_weight=0.1)
    batch = torch.tensor([[0, 2, 2], [1, 3, 0], [2, 1, 3]])
    terms = model.loss(batch)
    users, items, _ = _expected()
    u = users[batch[0]]
    diff = (u * items[batch[1]]).sum(1) - (u * items[batch[2]]).sum(1)
    bpr = -torch.log2(torch.sigmoid(diff)).mean()
    assert terms["bpr"].item() == pytest.approx(bpr.item(), rel=1e-5)
    # mean of the squared preference rows of the batch (with repetitions) + of all weights
    reg = sum(PREFERENCES[m][batch[0]].pow(2).mean() for m in PREFERENCES)
    reg = 0.1 * (reg + USER_WEIGHT.pow(2).mean())
    assert terms["reg"].item() == pytest.approx(reg.item(), rel=1e-6)
    assert set(_hand_model(reg_weight=0.0).loss(batch)) == {"bpr"}


def test_gradients_reach_every_parameter_and_nothing_else():
    model = _hand_model(reg_weight=0.0)
    batch = torch.tensor([[0, 1], [1, 2], [3, 0]])
    sum(model.loss(batch).values()).backward()
    names = {n for n, _ in model.named_parameters()}
    assert names == {
        f"encoders.{m}.{p}"
        for m in ("image", "text")
        for p in ("preference", "mlp.weight", "mlp.bias", "mlp_out.weight", "mlp_out.bias")
    } | {"user_weight"}
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # features, the user-item graph and the co-occurrence lists are not saved; the sample is
    state = set(model.state_dict())
    assert {"user_graph.index", "user_graph.weight"} <= state
    assert not any(
        k.startswith(("x_", "adj", "user_graph.neighbors", "user_graph.adj")) for k in state
    )


def test_one_modality_and_errors():
    model = DualGNN(
        U, EDGES, {"text": features()["text"]}, embedding_dim=2, hidden_dim=3, num_neighbors=2
    )
    set_hand_parameters(model)
    assert model.user_weight is None
    et, _ = dense_modality("text", features()["text"])
    users, items = model.embeddings()
    assert torch.allclose(users, et[:U] + USER_W @ et[:U], atol=1e-6)
    assert torch.allclose(items, et[U:], atol=1e-6)
    feats3 = {**features(), "audio": torch.randn(4, 5)}
    model = DualGNN(U, EDGES, feats3, embedding_dim=4, num_neighbors=2, fusion="concat")
    assert model.user_weight.shape == (U, 3, 1)
    assert model.embeddings()[1].shape == (4, 12)
    with pytest.raises(ValueError, match="fusion"):
        DualGNN(U, EDGES, features(), fusion="max")
    with pytest.raises(ValueError, match="user_aggr_mode"):
        DualGNN(U, EDGES, features(), user_aggr_mode="sum")
    with pytest.raises(ValueError, match="reg_weight"):
        DualGNN(U, EDGES, features(), reg_weight=-1.0)


def test_user_weights_start_near_uniform():
    """xavier_normal_ on (U, 2, 1) (std sqrt(2 / (U + 2))), then one softmax over modalities:
    w_u,0 - 1/2 = sigmoid(z_0 - z_1) - 1/2 ~ (z_0 - z_1) / 4, std sqrt(2) sqrt(2 / (U + 2)) / 4."""
    torch.manual_seed(0)
    u = 3000
    model = DualGNN(u, torch.tensor([[0, 1], [0, 0]]), features(), embedding_dim=4)
    w = model.user_weight.detach().squeeze(-1)
    assert torch.allclose(w.sum(1), torch.ones(u))
    std = (2 * 2 / (u + 2)) ** 0.5 / 4
    assert (w[:, 0] - 0.5).std().item() == pytest.approx(std, rel=0.1)


def test_user_sample_redrawn_each_epoch_and_saved(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("dualgnn", tiny_data, embedding_dim=8, hidden_dim=16)
    # tiny users have fewer than 40 co-occurring users: the padding is random
    samples = []
    for epoch in range(3):
        model.pre_epoch(epoch)
        samples.append(model.user_graph.index.clone())
    assert not all(torch.equal(samples[0], s) for s in samples[1:])
    torch.manual_seed(5)
    model.pre_epoch(0)
    users = torch.arange(tiny_data["user"].num_nodes)
    before = model.score(users)
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)  # builds a fresh sample, then loads ours
    assert torch.equal(loaded.user_graph.index, model.user_graph.index)
    model.eval()
    assert torch.equal(model.score(users), before)
    assert torch.equal(loaded.score(users), before)


def test_trainer_resume_is_exact(tiny_data, tmp_path):
    def run(epochs, out, resume=False, seed=0):
        seed_everything(seed)
        model, info, _ = build_model("dualgnn", tiny_data, embedding_dim=8, hidden_dim=16)
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
    run(2, tmp_path / "b")
    resumed = run(3, tmp_path / "b", resume=True, seed=123)
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-5
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-5)


def test_sea_plugin_trains_on_the_item_rows(tiny_data):
    seed_everything(0)
    model, info, defaults = build_model(
        "dualgnn+sea", tiny_data, embedding_dim=8, hidden_dim=16, club_steps=2
    )
    assert defaults == {"lr": 1e-4} and info["hparams"]["club_lr"] == 1e-4  # the model's lr
    out = model.host.forward_train(torch.tensor([[0], [1], [2]]), all_modal_items=True)
    reps = model.host.modal_item_representations()
    assert out.modal_items is None
    assert all(torch.allclose(out.modal[m], reps[m]) and reps[m].shape == (40, 8) for m in reps)
    # the module's terms reach the item MLPs (which feed the scores), not the user side
    terms = model.loss(torch.tensor([[0, 1], [0, 1], [3, 4]]))
    (terms["sea_align"] + terms["sea_dis"]).backward()
    for name, p in model.host.named_parameters():
        if ".mlp" in name and name.endswith("weight"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        elif name.endswith("preference") or name == "user_weight":
            assert p.grad is None, name
    model.zero_grad(set_to_none=True)
    cfg = TrainConfig(epochs=2, batch_size=256, progress=False, verbose=False, seed=1)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    assert {"bpr", "reg", "sea_align", "sea_dis", "club_nll"} <= set(res["history"][-1]["losses"])


def test_dualgnn_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "dualgnn", {}, epochs=6, lr=3e-3)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.6 * losses[0]
    # about 0.37 (FREEDOM: about 0.34)
    assert res["test"]["recall@20"] > pop + 0.05, (res["test"]["recall@20"], pop)
