"""Mini-batch training on sampled subgraphs: LightGCN, MF, VBPR (models and trainer)."""

import json

import pytest
import torch
from _learning import popularity_recall20, train_registered

from sea_pyg.models import build_model
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.train import TrainConfig, Trainer, seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")


def _lightgcn(layers=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    users, items = 30, 20
    ei = torch.stack([torch.randint(users, (120,), generator=g),
                      torch.randint(items, (120,), generator=g)])
    torch.manual_seed(seed)
    model = LightGCN(users, items, ei, embedding_dim=8, num_layers=layers, reg_weight=1e-3)
    batch = torch.stack([torch.randint(users, (16,), generator=g),
                         torch.randint(items, (16,), generator=g),
                         torch.randint(items, (16,), generator=g)])
    return model, batch


def _loss_and_grads(model, batch):
    model.zero_grad()
    terms = model.loss(batch)
    sum(terms.values()).backward()
    return ({k: float(v.detach()) for k, v in terms.items()},
            model.user_emb.weight.grad.clone(), model.item_emb.weight.grad.clone())


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_full_fanout_equals_full_graph_step(layers):
    model, batch = _lightgcn(layers)
    full = _loss_and_grads(model, batch)
    model.set_minibatch([-1] * layers, backend="torch")
    sampled = _loss_and_grads(model, batch)
    assert sampled[0] == pytest.approx(full[0], rel=1e-5)
    assert torch.allclose(sampled[1], full[1], atol=1e-7)
    assert torch.allclose(sampled[2], full[2], atol=1e-7)


def test_fanout_at_least_the_largest_degree_is_exact_too():
    model, batch = _lightgcn(2)
    full = _loss_and_grads(model, batch)
    big = int(torch.diff(model.adj.crow_indices()).max())
    model.set_minibatch([big, big], backend="torch")
    assert _loss_and_grads(model, batch)[0] == pytest.approx(full[0], rel=1e-5)


def test_small_fanout_gradients_reach_only_the_sampled_rows():
    model, batch = _lightgcn(2)
    model.set_minibatch([2, 1], backend="torch")
    torch.manual_seed(4)
    _, gu, gi = _loss_and_grads(model, batch)
    torch.manual_seed(4)  # the same draw again: the sampled node set
    users, pos, neg = batch
    seeds = torch.unique(torch.cat([users, torch.cat([pos, neg]) + model.num_users]))
    n_id = model._train_loader(seeds).n_id
    touched = torch.zeros(model.num_users + model.num_items, dtype=torch.bool)
    touched[n_id] = True
    grad_rows = torch.cat([gu, gi]).abs().sum(1) > 0
    assert bool((grad_rows <= touched).all())  # nothing outside the subgraph moves
    assert bool(grad_rows[seeds].all())  # and the seeds do


def test_minibatch_embeddings_equal_full_graph(tiny_data):
    seed_everything(0)
    model, _, _ = build_model("lightgcn", tiny_data, num_layers=3)
    full_u, full_i = (t.detach() for t in model.embeddings())
    model.set_minibatch([5, 5, 5], chunk_size=7, backend="torch")
    u, i = model.embeddings()
    assert torch.allclose(u, full_u, atol=1e-5) and torch.allclose(i, full_i, atol=1e-5)


def test_vbpr_chunked_embeddings_equal_full(tiny_data):
    seed_everything(0)
    model, _, _ = build_model("vbpr", tiny_data)
    full_u, full_i = (t.detach() for t in model.embeddings())
    model.set_minibatch(None, chunk_size=3)
    u, i = model.embeddings()
    assert torch.equal(u, full_u) and torch.allclose(i, full_i, atol=1e-6)


def test_set_minibatch_errors(tiny_data):
    model, _ = _lightgcn(2)
    with pytest.raises(ValueError, match=r"fanout \(--fanout\) needs one fan-out per .*: 2"):
        model.set_minibatch([10])
    mf, _, _ = build_model("mf", tiny_data)
    with pytest.raises(ValueError, match="mf has no neighbourhood to sample.*drop --fanout"):
        mf.set_minibatch([10])
    mf.set_minibatch(None)
    mf.set_minibatch([])
    for name in ("freedom", "vbpr+sea"):
        other, _, _ = build_model(name, tiny_data)
        assert not other.supports_minibatch
        with pytest.raises(ValueError, match="cannot train on sampled mini-batches"):
            other.set_minibatch()
    with pytest.raises(ValueError, match=r"fanout \(--fanout\) is a setting of mini-batch"):
        TrainConfig(fanout=(10, 10))


def test_samples_neighbourhood_says_who_takes_a_fanout(tiny_data):
    """``samples_neighbourhood`` (what ``sea-pyg train`` checks before loading data) agrees
    with what each mini-batch model's ``set_minibatch`` accepts."""
    from sea_pyg.models import MODELS

    able = {n: s.cls for n, s in MODELS.items() if s.cls.supports_minibatch and s.host is None}
    assert {n for n, c in able.items() if c.samples_neighbourhood} == {"lightgcn"}
    assert not any(s.cls.samples_neighbourhood for s in MODELS.values()
                   if not s.cls.supports_minibatch)
    for name, cls in able.items():
        model, _, _ = build_model(name, tiny_data)
        fanout = [10] * getattr(model, "num_layers", 1)
        if cls.samples_neighbourhood:
            model.set_minibatch(fanout)
        else:
            with pytest.raises(ValueError, match=f"{name} has no neighbourhood to sample"):
                model.set_minibatch(fanout)


def _fit(data, name, out=None, epochs=3, **kw):
    seed_everything(0)
    model, info, _ = build_model(name, data, embedding_dim=16)
    cfg = TrainConfig(epochs=epochs, batch_size=128, progress=False, verbose=False, seed=3,
                      minibatch=True, output_dir=out, **kw)
    return Trainer(model, data, cfg, model_info=info).fit()


def test_deterministic_with_a_fixed_seed(tiny_data):
    a = _fit(tiny_data, "lightgcn", fanout=(3, 2))
    b = _fit(tiny_data, "lightgcn", fanout=(3, 2))
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]
    assert a["test"] == b["test"]
    assert a["config"]["minibatch"] is True and a["config"]["fanout"] == [3, 2]


def test_resume_is_exact(tiny_data, tmp_path):
    whole = _fit(tiny_data, "lightgcn", tmp_path / "a", epochs=4, fanout=(3, 2))
    _fit(tiny_data, "lightgcn", tmp_path / "b", epochs=2, fanout=(3, 2))
    resumed = _fit(tiny_data, "lightgcn", tmp_path / "b", epochs=4, fanout=(3, 2), resume=True)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in whole["history"]]
    assert resumed["test"] == whole["test"]
    with pytest.raises(ValueError, match="fanout"):  # another fan-out is another run
        _fit(tiny_data, "lightgcn", tmp_path / "b", epochs=5, fanout=(4, 2), resume=True)
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    assert saved["config"]["fanout"] == [3, 2]


@pytest.mark.parametrize(
    ("name", "hparams", "train"),
    [
        ("lightgcn", {"embedding_dim": 16}, {"fanout": (5, 5), "lr": 1e-2}),
        ("vbpr", {"embedding_dim": 16}, {"lr": 3e-3}),
    ],
)
def test_minibatch_models_learn_on_planted_data(unit_data, name, hparams, train):
    pop = popularity_recall20(unit_data)  # 0.272
    res = train_registered(unit_data, name, hparams, epochs=20, minibatch=True, **train)
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    assert res["test"]["recall@20"] > pop + 0.02, (res["test"]["recall@20"], pop)


@pytest.mark.parametrize("name", ["mf", "vbpr"])
def test_graphless_models_train_identically_in_minibatch_mode(tiny_data, name):
    # MF's and VBPR's steps read only the batch's rows: the mode changes nothing but the
    # chunking of the evaluation embeddings (MF on the planted data is at popularity level,
    # 0.26-0.28, so "learns" is shown by this identity with the full path plus its own tests)
    runs = []
    for minibatch in (False, True):
        seed_everything(0)
        model, info, _ = build_model(name, tiny_data, embedding_dim=16)
        cfg = TrainConfig(epochs=3, batch_size=128, progress=False, verbose=False, seed=3,
                          minibatch=minibatch, eval_chunk_size=5)
        runs.append(Trainer(model, tiny_data, cfg, model_info=info).fit())
    assert [h["loss"] for h in runs[0]["history"]] == [h["loss"] for h in runs[1]["history"]]
    for k, v in runs[0]["test"].items():
        assert runs[1]["test"][k] == pytest.approx(v, abs=1e-9)
