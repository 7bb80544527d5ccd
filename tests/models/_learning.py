"""Shared check that a model learns on the planted ``unit`` data (beats popularity)."""

from __future__ import annotations

from conftest import popularity_scores

from sea_pyg.models import build_model
from sea_pyg.train import TrainConfig, Trainer, seed_everything
from sea_pyg.train.metrics import evaluate_ranking


def popularity_recall20(data) -> float:
    edges = data["user", "rates", "item"]
    return evaluate_ranking(
        popularity_scores(data),
        edges.test_edge_index,
        edges.edge_index,
        data["user"].num_nodes,
        data["item"].num_nodes,
        ks=(20,),
    )["recall@20"]


def train_registered(data, name: str, hparams: dict, **train) -> dict:
    """Build ``name`` from the registry (seed 0) and fit it with the Trainer; return results."""
    seed_everything(0)
    model, info, defaults = build_model(name, data, **hparams)
    cfg = dict(
        batch_size=256,
        patience=100,
        progress=False,
        verbose=False,
        seed=1,
        topk=(10, 20),
        valid_metric="recall@20",
    )
    cfg.update(defaults)
    cfg.update(train)
    return Trainer(model, data, TrainConfig(**cfg), model_info=info).fit()
