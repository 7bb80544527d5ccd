"""Settings of one training run (the MMRec protocol's defaults)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from sea_pyg.nn.mips import knn_scope
from sea_pyg.train.metrics import METRICS
from sea_pyg.train.precision import check_precision

__all__ = ["TrainConfig", "RESUME_CHECKED", "KNN_BACKENDS"]

#: Settings a resume compares with those the checkpoint was trained with (see
#: :attr:`TrainConfig.allow_changes`); ``epochs`` is not among them (a resume may raise the cap).
RESUME_CHECKED = (
    "seed",
    "lr",
    "lr_schedule",
    "batch_size",
    "weight_decay",
    "patience",
    "valid_metric",
    "topk",
    "metrics",
    "precision",
    "minibatch",
    "fanout",
    "knn_backend",
)
#: Values of :attr:`TrainConfig.knn_backend` (``--knn-backend``).
KNN_BACKENDS = ("auto", "exact", "mips", "approx")


@dataclass
class TrainConfig:
    """Settings of one training run. Defaults are the MMRec protocol's.

    Attributes:
        epochs: Epoch cap (MMRec: 1000).
        batch_size: Training rows per mini-batch (MMRec: 2048).
        lr: Adam learning rate (MMRec default 1e-3; SEA 1e-4).
        lr_schedule: MMRec's ``learning_rate_scheduler: [DECAY, STEP]``: epoch :math:`e`
            (from 0) trains at ``lr * DECAY ** (e / STEP)`` (MMRec's ``LambdaLR``, stepped
            after each epoch). The default ``(1.0, 50)`` keeps ``lr`` (MMRec's default);
            LATTICE and MGCN use ``(0.96, 50)``. The auxiliary (CLUB) optimizers keep their own
            constant rate, as in the official SEA code.
        weight_decay: Adam weight decay (MMRec: 0).
        patience: MMRec's ``stopping_step``: training stops after ``patience + 1``
            consecutive evaluations without strict improvement of the rounded valid metric.
        valid_metric: Early-stopping metric, e.g. ``"recall@20"``.
        topk: Cut-offs to report.
        metrics: Metric names to report.
        eval_chunk_size: Users scored at once during evaluation (memory bound).
        seed: Seeds everything (sampling order, negatives, model RNG use during training).
        output_dir: The run folder: checkpoints and ``results.json`` (``None``: nothing is
            written). See :mod:`sea_pyg.train.runfolder`. A folder that holds a run is refused
            unless ``resume`` or ``overwrite`` is set.
        resume: Continue the run in ``output_dir`` from its ``last.pt`` (``--resume``); a
            folder without a run starts a new one. The checkpoint's model, hyper-parameters,
            the settings in :data:`RESUME_CHECKED` and the data fingerprint must match (see
            ``allow_changes``). ``epochs`` may differ: a larger cap continues a run that
            stopped at its cap; a run that finished is reported and left unchanged otherwise.
        overwrite: Replace the run in ``output_dir`` (its ``results.json``, ``best.pt``,
            ``last.pt`` are deleted when training starts; ``--overwrite``).
        allow_changes: What a resume may change (``--allow-changes``): names from
            :data:`RESUME_CHECKED`, ``"model"`` (the model and all its hyper-parameters),
            ``"model.<hyper-parameter>"``, or ``"data"`` (other edges, features or id maps).
            Each accepted change is recorded in ``results.json`` (``"resumes"``).
        checkpoint_every: Write ``last.pt`` every this many epochs and at the end
            (``--checkpoint-every``); ``best.pt`` and ``results.json`` are committed with it
            (one consistent state), so after a crash up to ``checkpoint_every - 1`` epochs are
            trained again (exactly: resume replays them).
        progress: Show a progress bar over the mini-batches of each epoch.
        verbose: Print one log line per epoch.
        device: ``"cpu"``, ``"cuda"``, ...
        precision: ``"fp32"`` (default: everything in float32) or ``"bf16"``: the training
            forward pass and its loss terms under bfloat16 autocast on the model's device,
            parameters, gradients, optimizer states, auxiliary (CLUB) fitting, sparse graph
            products and the evaluation in float32 (``--precision``; see
            :mod:`sea_pyg.train.precision`).
        minibatch: Train on mini-batches of sampled subgraphs (``--minibatch``): the trainer
            calls the model's ``set_minibatch(fanout, eval_chunk_size)``, so each step reads
            only the batch's rows and their sampled neighbourhood, and evaluation embeddings
            are computed in chunks (see ``docs/scale.md``). Only models with
            ``supports_minibatch`` (LightGCN, MF, VBPR) can.
        fanout: With ``minibatch``: neighbours sampled per node at each propagation layer
            (``--fanout 10 10``; ``-1``: all of them; ``None``: the model's default, 10 per
            layer for LightGCN). Models without a graph (MF, VBPR) take none.
        knn_backend: The search behind the models' item :math:`k`-NN graphs
            (``--knn-backend``; see :mod:`sea_pyg.nn.mips` and ``docs/scale.md``): ``"auto"``
            (default: the surrounding :func:`~sea_pyg.nn.knn_backend` default, else exact
            below 500,000 items), ``"exact"`` (dense), ``"mips"`` (exact, PyG's faiss
            ``MIPSKNNIndex``) or ``"approx"`` (PyG's ``ApproxMIPSKNNIndex``, exact
            re-ranking). ``"mips"`` / ``"approx"`` need faiss (``pip install
            "sea_pyg[knn]"``). :meth:`~sea_pyg.train.Trainer.fit` and
            :meth:`~sea_pyg.train.Trainer.evaluate` run inside :meth:`knn_scope` (graphs that
            LATTICE and MICRO rebuild while training and evaluating); graphs a model builds in
            its constructor (FREEDOM, SEA, ...) follow it only when the model is built inside
            :meth:`knn_scope` too, as ``sea-pyg train``, ``sea-pyg tune``,
            :func:`~sea_pyg.train.train_seeds` and :func:`~sea_pyg.train.load_model` do.
            ``best.pt`` records it, and :func:`~sea_pyg.train.load_model` /
            :func:`~sea_pyg.train.recommend` rebuild the model's graphs with it.
    """

    epochs: int = 1000
    batch_size: int = 2048
    lr: float = 1e-3
    lr_schedule: tuple[float, float] = (1.0, 50.0)
    weight_decay: float = 0.0
    patience: int = 20
    valid_metric: str = "recall@20"
    topk: tuple[int, ...] = (10, 20)
    metrics: tuple[str, ...] = METRICS
    eval_chunk_size: int = 4096
    seed: int = 999
    output_dir: str | None = None
    resume: bool = False
    overwrite: bool = False
    allow_changes: tuple[str, ...] = ()
    checkpoint_every: int = 1
    progress: bool = True
    verbose: bool = True
    device: str = "cpu"
    precision: str = "fp32"
    minibatch: bool = False
    fanout: tuple[int, ...] | None = None
    knn_backend: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.topk = tuple(int(k) for k in self.topk)
        try:
            decay, step = (float(v) for v in self.lr_schedule)
        except (TypeError, ValueError):
            raise ValueError(
                "lr_schedule (--lr-schedule) must be two numbers (DECAY, STEP), got "
                f"{self.lr_schedule!r}"
            ) from None
        if not (0.0 < decay <= 1.0) or not step > 0:
            raise ValueError(
                f"lr_schedule (--lr-schedule) needs 0 < DECAY <= 1 and STEP > 0, got "
                f"({decay}, {step})"
            )
        self.lr_schedule = (decay, step)
        self.metrics = tuple(self.metrics)
        if isinstance(self.allow_changes, str):
            self.allow_changes = (self.allow_changes,)
        self.allow_changes = tuple(str(c) for c in self.allow_changes)
        known = (*RESUME_CHECKED, "model", "data")
        bad = [c for c in self.allow_changes if c not in known and not c.startswith("model.")]
        if bad:
            raise ValueError(
                f"allow_changes (--allow-changes): unknown {bad}; choose from {list(known)} "
                "or 'model.<hyper-parameter>'"
            )
        if self.fanout is not None:
            try:
                self.fanout = tuple(int(f) for f in self.fanout)
            except (TypeError, ValueError):
                raise ValueError(
                    f"fanout (--fanout) must be a list of integers, got {self.fanout!r}"
                ) from None
            if not self.minibatch:
                raise ValueError(
                    "fanout (--fanout) is a setting of mini-batch training: add minibatch=True "
                    "(--minibatch), or drop it"
                )
        if self.resume and self.overwrite:
            raise ValueError(
                "resume=True (--resume) and overwrite=True (--overwrite) exclude each other: "
                "continue the run, or replace it"
            )
        if isinstance(self.checkpoint_every, bool) or int(self.checkpoint_every) < 1:
            raise ValueError(
                f"checkpoint_every (--checkpoint-every) must be an integer >= 1, got "
                f"{self.checkpoint_every!r}"
            )
        self.checkpoint_every = int(self.checkpoint_every)
        self.precision = check_precision(self.precision)
        if self.knn_backend not in KNN_BACKENDS:
            raise ValueError(
                f"knn_backend (--knn-backend) must be one of {', '.join(KNN_BACKENDS)}, got "
                f"{self.knn_backend!r}"
            )
        if self.epochs < 1:
            raise ValueError(f"TrainConfig.epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"TrainConfig.batch_size must be >= 1, got {self.batch_size}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if self.patience < 0:
            raise ValueError(f"TrainConfig.patience must be >= 0, got {self.patience}")
        unknown = [m for m in self.metrics if m not in METRICS]
        if unknown:
            raise ValueError(f"TrainConfig.metrics: unknown {unknown}; choose from {list(METRICS)}")
        name, _, k = self.valid_metric.partition("@")
        if name not in METRICS or not k.isdigit():
            raise ValueError(
                f"TrainConfig.valid_metric must look like 'recall@20', got {self.valid_metric!r}"
            )
        if int(k) not in self.topk:
            self.topk = tuple(sorted({*self.topk, int(k)}))
        if name not in self.metrics:
            self.metrics = (*self.metrics, name)

    def knn_scope(self) -> contextlib.AbstractContextManager[None]:
        """The context of this run's :math:`k`-NN searches: :func:`~sea_pyg.nn.knn_backend`
        ``(knn_backend)`` unless it is ``"auto"`` (see :func:`sea_pyg.nn.mips.knn_scope`).
        Build the model inside it::

            with config.knn_scope():
                model, info, _ = build_model("freedom", data)
            Trainer(model, data, config, model_info=info).fit()

        Raises:
            ImportError: ``"mips"`` / ``"approx"`` without faiss (naming the install command).
        """
        return knn_scope(self.knn_backend)
