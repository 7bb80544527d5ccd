import math
from itertools import combinations

import pytest
import torch
from _learning import popularity_recall20, train_registered

import sea_pyg.models.pamd as pamd_module
from sea_pyg.models import MODELS, PAMD, build_model
from sea_pyg.train import TrainConfig, Trainer, load_model, save_model, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")

TAU = 0.5


def _lse(*xs):
    return math.log(sum(math.exp(x) for x in xs))


def _hand_model():
    """2 items, d = 2, identity encoders; P_image = [[.5, 0], [0, 0]], P_text = [[0, 0], [0, .5]];
    decoder image->text swaps the coordinates, text->image is the identity."""
    feats = {"image": torch.tensor([[1.0, 0.0], [0.0, 2.0]]),
             "text": torch.tensor([[1.0, 1.0], [2.0, 0.0]])}  # fmt: skip
    model = PAMD(3, feats, embedding_dim=2, pretrain_epochs=1, temperature=TAU)
    eye, swap = torch.eye(2), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    with torch.no_grad():
        for m in model.modalities:
            model.encoders[m].weight.copy_(eye)
            model.encoders[m].bias.zero_()
        model.common["image"].copy_(torch.tensor([[0.5, 0.0], [0.0, 0.0]]))
        model.common["text"].copy_(torch.tensor([[0.0, 0.0], [0.0, 0.5]]))
        model.decoders["image"]["text"].weight.copy_(swap)
        model.decoders["text"]["image"].weight.copy_(eye)
        model.decoders["image"]["text"].bias.zero_()
        model.decoders["text"]["image"].bias.zero_()
    return model


def test_pretraining_terms_by_hand():
    # c_img = [.5 h0, 0], s_img = [.5 h0, h1]; c_txt = [0, .5 h1], s_txt = [h0, .5 h1]
    # item 0: h_img = [1, 0], c = [.5, 0], s = [.5, 0]; h_txt = [1, 1], c = [0, .5], s = [1, .5]
    # item 1: h_img = [0, 2], c = [0, 0],  s = [0, 2];  h_txt = [2, 0], c = [0, 0],  s = [2, 0]
    model = _hand_model()
    terms = model.loss(torch.tensor([[0, 1]]))
    assert set(terms) == {"pre_sim", "pre_ort", "pre_rec"}
    # sim: mean over 2 items x 2 dims of (c_img - c_txt)^2 = (.25 + .25 + 0 + 0) / 4
    assert terms["pre_sim"].item() == pytest.approx(0.125)
    # ort: mean of (s_img . s_txt)^2 = (.5^2 + 0^2) / 2
    assert terms["pre_ort"].item() == pytest.approx(0.125)
    # image -> text (swap decoder; target x_txt): item 0 all three cosines 1/sqrt2 (equal
    # logits); item 1: swap(c) = 0 -> cos 0, swap(h) = swap(s) = [2, 0] -> cos 1
    img_to_txt = ((_lse(0, 0, 0) + _lse(0, 0)) + (_lse(0, 2, 2) - 0 + _lse(2, 2) - 2)) / 2
    # text -> image (identity; target x_img): item 0: cos(c) = 0, cos(h) = 1/sqrt2,
    # cos(s) = 1/sqrt(1.25); item 1: target [0, 1] against c = 0, h = s = [2, 0]: all 0
    a, b, e = 0.0, 2**-0.5 / TAU, 1.25**-0.5 / TAU
    txt_to_img = ((_lse(a, b, e) - a + _lse(b, e) - b) + (_lse(0, 0, 0) + _lse(0, 0))) / 2
    assert terms["pre_rec"].item() == pytest.approx(img_to_txt + txt_to_img, rel=1e-6)


def _reference_pair(model, m, n, items):
    """One pair's sim + ort + both reconstructions, item by item, from the formulas."""
    tau = model.temperature
    total = 0.0
    parts = {}
    for k in (m, n):
        h = model.encoders[k](model.feature(k)[items])
        parts[k] = (h, h @ model.common[k], h - h @ model.common[k])
    (_, cm, sm), (_, cn, sn) = parts[m], parts[n]
    total += ((cm - cn) ** 2).mean().item()
    total += sum(float(sm[r] @ sn[r]) ** 2 for r in range(len(items))) / len(items)
    for src, dst in ((m, n), (n, m)):
        h, c, s = parts[src]
        rec = 0.0
        for r, i in enumerate(items.tolist()):
            x = model.feature(dst)[i]
            cos = [float(x @ y / (x.norm() * y.norm())) / tau for y in
                   (model.decoders[src][dst](v[r]) for v in (c, h, s))]  # fmt: skip
            rec += _lse(*cos) - cos[0] + _lse(cos[1], cos[2]) - cos[1]
        total += rec / len(items)
    return total


def test_three_modalities_average_the_pairs():
    gen = torch.Generator().manual_seed(3)
    feats = {m: torch.randn(6, k, generator=gen) for m, k in (("a", 4), ("b", 3), ("c", 5))}
    torch.manual_seed(0)
    model = PAMD(2, feats, embedding_dim=3, temperature=0.3)
    items = torch.tensor([4, 0, 2])
    terms = model.loss(items[None])
    expected = sum(_reference_pair(model, m, n, items) for m, n in combinations("abc", 2)) / 3
    assert sum(terms.values()).item() == pytest.approx(expected, rel=1e-5)
    assert set(model.decoders["a"]) == {"b", "c"} and model.decoders["c"]["a"].out_features == 4


def test_scores_and_log_loss_by_hand():
    model = _hand_model()
    with torch.no_grad():
        model.user_emb.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]]))
        model.item_emb.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    # parts (c_img, c_txt, s_img, s_txt): item 0 [.5,0] [0,.5] [.5,0] [1,.5];
    # item 1 [0,0] [0,0] [0,2] [2,0]
    parts = {0: [(0.5, 0), (0, 0.5), (0.5, 0), (1, 0.5)], 1: [(0, 0), (0, 0), (0, 2), (2, 0)]}
    users = {0: (1, 0), 1: (0, 1), 2: (1, -1)}
    item_emb = {0: (0, 1), 1: (1, 1)}

    def dot(x, y):
        return x[0] * y[0] + x[1] * y[1]

    def score(u, i):
        z = [dot(users[u], p) for p in parts[i]]
        w = [math.exp(v) for v in z]
        return dot(users[u], item_emb[i]) + sum(a * v for a, v in zip(w, z, strict=True)) / sum(w)

    dense = torch.tensor([[score(u, i) for i in (0, 1)] for u in (0, 1, 2)])
    assert torch.allclose(model.score(torch.arange(3)), dense, atol=1e-6)
    # the training pass scores the same rows; the loss is the summed point-wise log loss
    batch = torch.tensor([[0, 2, 1], [0, 1, 1], [1, 0, 0]])
    out = model.forward_train(batch)
    assert torch.allclose(out.rows["pos"], torch.tensor([dense[0, 0], dense[2, 1], dense[1, 1]]))
    assert torch.allclose(out.rows["neg"], torch.tensor([dense[0, 1], dense[2, 0], dense[1, 0]]))

    def sig(x):
        return 1 / (1 + math.exp(-x))

    bce = -sum(math.log(sig(dense[u, i])) + math.log(1 - sig(dense[u, j]))
               for u, i, j in batch.t().tolist())  # fmt: skip
    assert model.loss_terms(out)["bce"].item() == pytest.approx(bce, rel=1e-6)


def test_scores_in_blocks_equal_one_block(tiny_data, monkeypatch):
    torch.manual_seed(0)
    model, _, _ = build_model("pamd", tiny_data, embedding_dim=4)
    users = torch.arange(tiny_data["user"].num_nodes)
    whole = model.score(users)
    monkeypatch.setattr(pamd_module, "_SCORE_BLOCK", 4 * tiny_data["item"].num_nodes * 7)
    assert torch.allclose(model.score(users), whole, atol=1e-6)
    with pytest.raises(NotImplementedError, match="score"):
        model.embeddings()


def _grads(model):
    names = ("user_emb", "item_emb", "encoders", "common", "decoders")
    params = list(model.named_parameters())
    return {k: [p.grad is not None and bool(p.grad.abs().sum() > 0)
                for n, p in params if n.startswith(k)] for k in names}  # fmt: skip


def test_gradients_reach_exactly_what_each_stage_trains(tiny_data):
    torch.manual_seed(0)
    model, _, _ = build_model("pamd", tiny_data, embedding_dim=4)
    sum(model.loss(torch.tensor([[0, 3, 5, 7]])).values()).backward()
    g = _grads(model)
    assert not any(g["user_emb"] + g["item_emb"])  # no gradient at all in pre-training
    assert all(g["encoders"] + g["common"] + g["decoders"])
    model.zero_grad(set_to_none=True)
    sum(model.loss(torch.tensor([[0, 1, 2], [0, 1, 2], [3, 4, 5]])).values()).backward()
    g = _grads(model)
    assert all(g["encoders"] + g["common"])
    assert all(p.grad is None for p in model.decoders.parameters())  # decoders: pre-training only
    assert model.user_emb.weight.grad[:3].abs().sum(1).gt(0).all()
    assert model.user_emb.weight.grad[3:].abs().sum() == 0
    assert model.item_emb.weight.grad[:6].abs().sum(1).gt(0).all()
    assert all(not model.feature(m).requires_grad for m in model.modalities)  # frozen buffers


def test_bad_arguments_are_named():
    feats = {"image": torch.randn(4, 3), "text": torch.randn(4, 2)}
    with pytest.raises(ValueError, match="at least two modalities.*'text'"):
        PAMD(2, {"text": feats["text"]})
    with pytest.raises(ValueError, match="embedding_dim"):
        PAMD(2, feats, embedding_dim=0)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        PAMD(2, feats, pretrain_epochs=-1)
    with pytest.raises(ValueError, match="pretrain_epochs"):
        PAMD(2, feats, pretrain_epochs=1.5)
    with pytest.raises(ValueError, match="temperature"):
        PAMD(2, feats, temperature=0)
    with pytest.raises(ValueError, match=r"\(1, B\).*\(3, B\)"):
        PAMD(2, feats).loss(torch.zeros(2, 3, dtype=torch.long))


def test_registry_defaults_are_the_authors_clothing_settings(tiny_data):
    spec = MODELS["pamd"]
    assert spec.defaults == {"embedding_dim": 100, "pretrain_epochs": 220, "temperature": 0.5}
    assert spec.train_defaults == {"batch_size": 100, "lr": 1e-3, "weight_decay": 1e-5}
    assert dict(spec.search_space) == {"embedding_dim": (30, 50, 100),
                                       "pretrain_epochs": (140, 220, 260)}  # fmt: skip
    model, info, _ = build_model("pamd", tiny_data, embedding_dim=8)
    assert model.pretrain_epochs == 220 and model.common["image"].shape == (8, 8)


def test_save_load_gives_identical_scores(tiny_data, tmp_path):
    torch.manual_seed(0)
    model, info, _ = build_model("pamd", tiny_data, embedding_dim=8)
    save_model(tmp_path / "m.pt", model, tiny_data, info)
    loaded = load_model(tmp_path / "m.pt", tiny_data)
    users = torch.arange(tiny_data["user"].num_nodes)
    assert torch.equal(model.score(users), loaded.score(users))


def _run(data, name, epochs, out, resume=False, seed=0, **hp):
    seed_everything(seed)
    model, info, defaults = build_model(name, data, embedding_dim=8, pretrain_epochs=2, **hp)
    cfg = TrainConfig(**{**defaults, "batch_size": 16}, epochs=epochs, progress=False,
                      verbose=False, seed=1, output_dir=str(out), resume=resume)  # fmt: skip
    return Trainer(model, data, cfg, model_info=info).fit()


@pytest.mark.parametrize("stop", [1, 2, 3])  # inside pre-training, at its end, after it
def test_resume_in_and_after_pretraining_is_exact(tiny_data, tmp_path, stop):
    full = _run(tiny_data, "pamd", 4, tmp_path / "full")
    assert [h.get("stage") for h in full["history"]] == ["pretrain", "pretrain", None, None]
    _run(tiny_data, "pamd", stop, tmp_path / "b")
    resumed = _run(tiny_data, "pamd", 4, tmp_path / "b", resume=True, seed=123)
    assert [h["losses"] for h in resumed["history"]] == [h["losses"] for h in full["history"]]
    assert [h.get("valid") for h in resumed["history"]] == [h.get("valid") for h in
                                                           full["history"]]  # fmt: skip
    assert resumed["test"] == full["test"] and resumed["best_epoch"] == full["best_epoch"]


def test_pretraining_sees_every_item_once_per_epoch(tiny_data):
    seen = []
    seed_everything(0)
    model, info, _ = build_model("pamd", tiny_data, embedding_dim=4, pretrain_epochs=2)
    original = model.forward_train

    def spy(batch, all_modal_items=False):
        if batch.size(0) == 1:
            seen.append(batch[0].clone())
        return original(batch, all_modal_items)

    model.forward_train = spy
    cfg = TrainConfig(batch_size=16, epochs=2, progress=False, verbose=False)
    res = Trainer(model, tiny_data, cfg, model_info=info).fit()
    n = tiny_data["item"].num_nodes  # 40: batches 16, 16, 8
    assert [len(b) for b in seen] == [16, 16, 8] * 2
    for epoch in (seen[:3], seen[3:]):
        assert torch.equal(torch.cat(epoch).sort().values, torch.arange(n))
    assert not torch.equal(torch.cat(seen[:3]), torch.cat(seen[3:]))  # reshuffled
    assert res["best_epoch"] == -1 and res["test"] == {}


def test_sea_plugin_trains_in_both_stages(tiny_data):
    seed_everything(0)
    model, info, _ = build_model("pamd+sea", tiny_data, embedding_dim=8, pretrain_epochs=1,
                                 club_steps=2, proj_hidden_dim=5, proj_dim=7)  # fmt: skip
    host = model.host
    assert model.pretrain_epochs == 1 and model.separate.dims == {"image": 8, "text": 8}
    terms = model.loss(torch.tensor([[0, 1, 2], [0, 1, 2], [3, 4, 5]]))
    assert set(terms) == {"bce", "sea_align", "sea_dis"}
    (terms["sea_align"] + terms["sea_dis"]).backward()
    assert all(p.grad is not None for p in host.encoders.parameters())
    assert host.user_emb.weight.grad is None and host.common["image"].grad is None
    users = torch.arange(5)
    assert torch.equal(model.score(users), host.score(users))
    res = Trainer(model, tiny_data, TrainConfig(epochs=2, batch_size=64, progress=False,
                                                verbose=False), model_info=info).fit()  # fmt: skip
    hist = res["history"]
    assert {"pre_sim", "pre_ort", "pre_rec", "sea_align", "sea_dis"} <= set(hist[0]["losses"])
    assert {"bce", "sea_align", "sea_dis"} <= set(hist[1]["losses"])
    assert all(math.isfinite(h["loss"]) for h in hist) and res["best_epoch"] == 1


def test_pretraining_lowers_its_loss_and_pamd_learns_on_planted_data(unit_data):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, "pamd", {"embedding_dim": 4, "pretrain_epochs": 3},
                           epochs=45, lr=5e-2, batch_size=1024)  # fmt: skip
    hist = res["history"]
    pre = [h["loss"] for h in hist[:3]]
    assert pre[-1] < 0.8 * pre[0]
    assert hist[-1]["loss"] < 0.8 * hist[3]["loss"]
    first = hist[3]["valid"]["recall@20"]  # after one training epoch: about 0.14
    best = max(h["valid"]["recall@20"] for h in hist[3:])  # about 0.29
    assert best > first + 0.1, (first, best)
    # test recall about 0.25 (random ranking: 20 / 150 = 0.13): PAMD (no graph, N(0, 1)
    # initialised ID embeddings, point-wise loss) is at MF-BPR's level here, below popularity
    assert res["test"]["recall@20"] > 0.2, (res["test"]["recall@20"], pop)
