import json

import pytest
import torch
from conftest import popularity_scores
from torch import nn

from sea_pyg.io import atomic_torch_save
from sea_pyg.models import LightGCN, Recommender
from sea_pyg.nn import AuxiliaryEstimator
from sea_pyg.train import EarlyStopping, TrainConfig, Trainer, seed_everything
from sea_pyg.train.metrics import evaluate_ranking


@pytest.fixture(scope="module")
def tiny(tiny_data):
    return tiny_data


def _cfg(**kw):
    base = dict(
        epochs=3,
        batch_size=64,
        patience=5,
        progress=False,
        verbose=False,
        seed=1,
        topk=(5, 10),
        valid_metric="recall@10",
    )
    base.update(kw)
    return TrainConfig(**base)


def _lightgcn(data, seed=0):
    seed_everything(seed)
    return LightGCN(
        data["user"].num_nodes,
        data["item"].num_nodes,
        data["user", "rates", "item"].edge_index,
        embedding_dim=16,
    )


# ---- early stopping ---------------------------------------------------------------------------


def test_early_stopping_rounds_and_needs_strict_improvement():
    es = EarlyStopping(patience=2)
    assert es.update(0.10001)  # rounds to 0.1 > -1
    assert not es.update(0.10004)  # rounds to 0.1: not strictly better
    assert es.update(0.10006)  # rounds to 0.1001
    assert es.best == 0.1001 and es.best_step == 2
    assert not es.update(0.1001) and not es.should_stop
    assert not es.update(0.05) and not es.should_stop  # 2 bad steps == patience
    assert not es.update(0.1) and es.should_stop  # patience + 1 bad steps


def test_early_stopping_zero_patience():
    es = EarlyStopping(patience=0)
    es.update(0.2)
    es.update(0.2)
    assert es.should_stop


# ---- the loop ---------------------------------------------------------------------------------


def test_lightgcn_learns_on_planted_data(unit_data):
    data = unit_data
    edges = data["user", "rates", "item"]
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    pop = evaluate_ranking(
        popularity_scores(data),
        edges.test_edge_index,
        edges.edge_index,
        num_users,
        num_items,
        ks=(20,),
    )
    seed_everything(0)
    model = LightGCN(num_users, num_items, edges.edge_index, embedding_dim=32)
    cfg = _cfg(
        epochs=12, patience=12, lr=1e-2, batch_size=256, topk=(10, 20), valid_metric="recall@20"
    )
    res = Trainer(model, data, cfg).fit()
    losses = [h["loss"] for h in res["history"]]
    assert losses[-1] < 0.8 * losses[0]
    # popularity: 0.272 ; LightGCN after 12 epochs: about 0.34
    assert res["test"]["recall@20"] > pop["recall@20"] + 0.04
    assert set(res["test"]) >= {"recall@10", "ndcg@10", "precision@10", "map@10"}
    # test metrics are reported at the best-valid epoch
    best = res["history"][res["best_epoch"]]
    assert best["test"] == res["test"]


def test_outputs_checkpoints_and_exact_resume(tiny, tmp_path):
    full = Trainer(_lightgcn(tiny), tiny, _cfg(epochs=4, output_dir=str(tmp_path / "a"))).fit()
    # crash after 2 epochs, then resume to 4
    Trainer(_lightgcn(tiny), tiny, _cfg(epochs=2, output_dir=str(tmp_path / "b"))).fit()
    resumed = Trainer(
        _lightgcn(tiny, seed=123), tiny, _cfg(epochs=4, output_dir=str(tmp_path / "b"), resume=True)
    ).fit()
    assert [h["loss"] for h in resumed["history"]] == pytest.approx(
        [h["loss"] for h in full["history"]], rel=1e-6
    )
    assert resumed["test"] == pytest.approx(full["test"], rel=1e-6)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k in a["model"]:
        assert torch.allclose(a["model"][k], b["model"][k], atol=1e-6)
    best = torch.load(tmp_path / "a" / "best.pt", weights_only=True)
    assert best["epoch"] == full["best_epoch"]
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    assert results["best_epoch"] == full["best_epoch"]
    assert results["model"]["name"] == "LightGCN"
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_resume_refuses_other_model(tiny, tmp_path):
    Trainer(
        _lightgcn(tiny),
        tiny,
        _cfg(epochs=1, output_dir=str(tmp_path)),
        model_info={"name": "lightgcn"},
    ).fit()
    with pytest.raises(ValueError, match="model: .lightgcn. -> .mf."):
        Trainer(
            _lightgcn(tiny),
            tiny,
            _cfg(epochs=2, output_dir=str(tmp_path), resume=True),
            model_info={"name": "mf"},
        ).fit()


def test_atomic_save_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(Exception):  # noqa: B017 - lambdas cannot be pickled
        atomic_torch_save({"f": lambda: 0}, tmp_path / "x.pt")
    assert list(tmp_path.iterdir()) == []


class _Probe(Recommender):
    """Records what the trainer does, for checking the step order."""

    def __init__(self, num_users, num_items, nan_at=None):
        super().__init__()
        self.u = nn.Parameter(torch.randn(num_users, 4))
        self.i = nn.Parameter(torch.randn(num_items, 4))
        self.aux = nn.Parameter(torch.zeros(1))  # must not be in the main optimizer
        self.calls = []
        self.nan_at = nan_at
        self.steps = 0

    def auxiliary_estimators(self):
        return [("probe.aux_metric",
                 AuxiliaryEstimator("aux_metric", (self.aux,), 0.1, 2, self._prepare))]

    def _prepare(self):
        # gradients exist, parameters not yet updated
        assert self.u.grad is not None
        assert torch.equal(self.u.detach(), self._before)
        self.calls.append(("after_backward",))

        def step(with_loss):
            self.calls.append(("aux_step", with_loss))
            self.aux.grad = torch.ones_like(self.aux)
            return torch.tensor(1.0) if with_loss else None

        return step

    def pre_epoch(self, epoch):
        self.calls.append(("pre_epoch", epoch))

    def loss(self, batch):
        self.steps += 1
        self._before = self.u.detach().clone()
        users, pos, neg = batch
        diff = (self.u[users] * (self.i[pos] - self.i[neg])).sum(-1)
        loss = -torch.nn.functional.logsigmoid(diff).mean() + 0 * self.aux.sum()
        if self.nan_at is not None and self.steps >= self.nan_at:
            loss = loss * float("nan")
        return {"bpr": loss}

    def embeddings(self):
        return self.u, self.i


def test_step_order_hooks_and_logged_terms(tiny):
    model = _Probe(tiny["user"].num_nodes, tiny["item"].num_nodes)
    tr = Trainer(model, tiny, _cfg(epochs=2))
    assert all(p is not model.aux for g in tr.optimizer.param_groups for p in g["params"])
    res = tr.fit()
    assert model.calls[0] == ("pre_epoch", 0)
    assert ("pre_epoch", 1) in model.calls
    n_batches = len(tr.sampler)
    assert sum(c[0] == "after_backward" for c in model.calls) == 2 * n_batches
    # two inner steps per batch, the loss asked for at the last one only
    steps = [c[1] for c in model.calls if c[0] == "aux_step"]
    assert steps == [False, True] * (2 * n_batches)
    # the estimator's own Adam (lr 0.1) moved it against its gradient; the model's did not see it
    assert float(model.aux.detach()) < -0.1
    assert res["history"][0]["losses"]["aux_metric"] == pytest.approx(1.0)
    assert res["history"][0]["loss"] == pytest.approx(res["history"][0]["losses"]["bpr"])


def test_non_finite_loss_stops_training(tiny):
    model = _Probe(tiny["user"].num_nodes, tiny["item"].num_nodes, nan_at=30)
    res = Trainer(model, tiny, _cfg(epochs=50)).fit()
    assert "non-finite loss" in res["stop_reason"]
    assert res["epochs_run"] < 50


def test_config_validation():
    with pytest.raises(ValueError, match="valid_metric"):
        TrainConfig(valid_metric="auc")
    with pytest.raises(ValueError, match="lr"):
        TrainConfig(lr=0)
    assert 50 in TrainConfig(valid_metric="recall@50").topk


def test_lr_schedule_is_mmrecs_per_epoch_decay_and_survives_resume(tiny, tmp_path):
    """``lr_schedule=(DECAY, STEP)``: epoch e trains at ``lr * DECAY ** (e / STEP)`` (MMRec's
    LambdaLR stepped after each epoch): with (0.5, 2) and lr 0.01 the epochs train at 0.01,
    0.01 / sqrt(2), 0.005, 0.005 / sqrt(2); a resumed run continues on the schedule."""
    seen: list[float] = []

    class Spy(Trainer):
        def _train_step(self, *args, **kwargs):
            seen.append(self.optimizer.param_groups[0]["lr"])
            return super()._train_step(*args, **kwargs)

    cfg = dict(lr=0.01, lr_schedule=(0.5, 2), batch_size=10_000)  # one batch per epoch
    full = Spy(_lightgcn(tiny), tiny, _cfg(epochs=4, output_dir=str(tmp_path / "a"), **cfg)).fit()
    assert seen == pytest.approx([0.01, 0.01 / 2**0.5, 0.005, 0.005 / 2**0.5], rel=1e-12)
    constant = Trainer(_lightgcn(tiny), tiny, _cfg(epochs=4, lr=0.01, batch_size=10_000)).fit()
    assert [h["loss"] for h in constant["history"]][1:] != [h["loss"] for h in full["history"]][1:]
    seen.clear()
    Spy(_lightgcn(tiny), tiny, _cfg(epochs=2, output_dir=str(tmp_path / "b"), **cfg)).fit()
    resumed = Spy(
        _lightgcn(tiny), tiny, _cfg(epochs=4, output_dir=str(tmp_path / "b"), resume=True, **cfg)
    ).fit()
    assert seen == pytest.approx([0.01, 0.01 / 2**0.5, 0.005, 0.005 / 2**0.5], rel=1e-12)
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(lr_schedule=(1.5, 50))
    with pytest.raises(ValueError, match="lr_schedule"):
        _cfg(lr_schedule=(0.9,))


class _Staged(Recommender):
    """MF that pre-trains its item table for ``pretrain_epochs`` epochs on ``(1, B)`` item
    batches (pulling items towards 1) and records the batches it gets."""

    def __init__(self, num_users, num_items, pretrain_epochs):
        super().__init__()
        self.pretrain_epochs = pretrain_epochs
        self.u, self.i = nn.Embedding(num_users, 4), nn.Embedding(num_items, 4)
        self.seen: list[tuple[int, ...]] = []

    def loss(self, batch):
        self.seen.append(tuple(batch.shape))
        if batch.size(0) == 1:
            return {"pre": (self.i(batch[0]) - 1).pow(2).mean()}
        u, p, n = self.u(batch[0]), self.i(batch[1]), self.i(batch[2])
        return {"bpr": -torch.nn.functional.logsigmoid((u * (p - n)).sum(-1)).mean()}

    def embeddings(self):
        return self.u.weight, self.i.weight


def test_pretraining_stage_passes_over_items_without_validation(tiny, tmp_path):
    """A model's ``pretrain_epochs`` leading epochs: each a shuffled pass over all items in
    ``(1, batch_size)`` batches, no validation (history ``stage: pretrain``), and the first
    training epoch after them starts a fresh Adam."""
    num_items = tiny["item"].num_nodes  # 40
    seed_everything(0)
    model = _Staged(tiny["user"].num_nodes, num_items, pretrain_epochs=2)
    steps = []

    class Spy(Trainer):
        def train_epoch(self, epoch):
            out = super().train_epoch(epoch)
            steps.append(int(self.optimizer.state[model.u.weight].get("step", 0))
                         if model.u.weight in self.optimizer.state else 0)
            steps.append(int(self.optimizer.state[model.i.weight]["step"]))
            return out

    tr = Spy(model, tiny, _cfg(epochs=4, batch_size=16, output_dir=str(tmp_path)))
    res = tr.fit()
    n_rows = len(tr.sampler)
    assert model.seen[:6] == [(1, 16), (1, 16), (1, 8)] * 2  # 40 items: 16 + 16 + 8, twice
    assert len(model.seen) == 6 + 2 * n_rows and {s[0] for s in model.seen[6:]} == {3}
    # (the item ids of each pass are a permutation of all items: checked through PAMD's tests)
    hist = res["history"]
    assert [h.get("stage") for h in hist] == ["pretrain", "pretrain", None, None]
    assert all("valid" not in h and "eval_time" not in h for h in hist[:2])
    assert list(hist[0]["losses"]) == ["pre"] and list(hist[2]["losses"]) == ["bpr"]
    assert res["best_epoch"] >= 2 and res["eval_seconds_per_epoch"] is not None
    # Adam steps of the item table: 3 per pre-training epoch, then restarted after them
    assert steps[1::2] == [3, 6, n_rows, 2 * n_rows]
    assert steps[0::2] == [0, 0, n_rows, 2 * n_rows]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [h.get("stage") for h in saved["history"]] == ["pretrain", "pretrain", None, None]


def test_run_ending_inside_pretraining_reports_no_metrics(tiny):
    seed_everything(0)
    model = _Staged(tiny["user"].num_nodes, tiny["item"].num_nodes, pretrain_epochs=3)
    res = Trainer(model, tiny, _cfg(epochs=2)).fit()
    assert res["stop_reason"] == "epoch cap" and res["best_epoch"] == -1
    assert res["test"] == {} and res["best_valid"] == {} and res["eval_seconds_per_epoch"] is None
