r"""The contract between a recommender, the trainer and SEA's separate-learning plug-in.

* :class:`Recommender`: what :class:`~sea_pyg.train.Trainer` fits and evaluates.
* :class:`MultimodalRecommender`: a recommender with per-modality item representations; every
  such model gets a ``+sea`` variant (:class:`~sea_pyg.models.WithSeparateLearning`) for free.
* :class:`TrainOutput`: what one training forward pass of a multimodal model returns.
* :func:`hyperparameters`: a model's hyper-parameters and defaults, read from its constructor
  signature (the one place they are written).

Shapes: ``U`` users, ``N`` items, ``B`` rows in a mini-batch, ``d`` embedding size,
``D_m`` size of modality ``m``'s item representation, ``R`` rows of a representation table
(``N``, or the distinct items of a batch).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.nn.auxiliary import AuxiliaryEstimator

__all__ = [
    "Recommender",
    "MultimodalRecommender",
    "TrainOutput",
    "DATA_ARGUMENTS",
    "hyperparameters",
]

#: Constructor arguments that :meth:`Recommender.from_data` fills from the dataset; every other
#: argument with a default is a hyper-parameter.
DATA_ARGUMENTS = ("num_users", "num_items", "train_edge_index", "features")


def hyperparameters(cls: type) -> dict[str, Any]:
    """``{name: default}`` of the keyword arguments of ``cls``'s constructor.

    Data arguments (:data:`DATA_ARGUMENTS`), arguments without a default and those the class
    lists in ``structural_arguments`` (e.g. a wrapper's ``dims``) are left out. A
    constructor that ends in ``**kwargs`` and whose class names the receiver in
    ``forwards_kwargs_to`` (e.g. :class:`~sea_pyg.nn.SeparateLearning`) also takes that
    receiver's hyper-parameters; explicit arguments of ``cls`` win.
    """
    out: dict[str, Any] = {}
    forwarded: dict[str, Any] = {}
    skip = set(DATA_ARGUMENTS) | set(getattr(cls, "structural_arguments", ()))
    for p in inspect.signature(cls).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            target = getattr(cls, "forwards_kwargs_to", None)
            if target is not None:
                forwarded = hyperparameters(target)
            continue
        if p.name in skip or p.default is p.empty or p.kind is p.VAR_POSITIONAL:
            continue
        out[p.name] = p.default
    for k, v in forwarded.items():
        out.setdefault(k, v)
    return out


def no_neighbourhood(model: str, fanout: Sequence[int] | None) -> None:
    """Checks the ``fanout`` given to a model whose loss reads only the batch's rows (no graph
    to sample): ``None`` or empty.

    Raises:
        ValueError: a fan-out was given (the message says to drop ``--fanout``).
    """
    if fanout is not None and len(list(fanout)) > 0:
        raise ValueError(
            f"fanout (--fanout): {model} has no neighbourhood to sample (its loss reads only the "
            f"batch's rows); drop --fanout, got {list(fanout)}"
        )


def dataset_features(data: HeteroData, model: str) -> dict[str, Tensor]:
    """``{modality: (N, F_m)}`` item features of ``data`` (in ``data.modalities`` order).

    Raises:
        ValueError: the dataset has none (the message names it and says how to add some).
    """
    feats = item_features(data)
    if not feats:
        raise ValueError(
            f"{model} needs item features, but dataset {getattr(data, 'name', '?')!r} has "
            "none: put at least one <modality>_feat.npy file (e.g. image_feat.npy, "
            "text_feat.npy) in its folder"
        )
    return feats


class Recommender(nn.Module):
    """Base class of every model the trainer can fit.

    A subclass implements :meth:`loss` and :meth:`embeddings`; the rest has defaults.

    * :meth:`loss` takes one mini-batch from :class:`~sea_pyg.data.BPRSampler` (a ``(3, B)``
      tensor ``[users; positives; negatives]``, or ``(2, B)`` when :attr:`uses_negatives` is
      ``False``) and returns a dict of **named, already weighted** loss terms; the trainer
      back-propagates their sum and logs each term.
    * :meth:`embeddings` returns ``(user_emb (U, d), item_emb (N, d))`` over the full graph such
      that the score of user ``u`` for item ``i`` is ``user_emb[u] @ item_emb[i]``.
    * :meth:`score` is the one scoring path (evaluation and :func:`~sea_pyg.recommend` use it);
      override it, with :meth:`scoring_state`, for a model whose score is not a dot product.
    * :meth:`pre_epoch` runs before each training epoch (e.g. FREEDOM's edge pruning).
    * :meth:`auxiliary_estimators` declares networks fitted by their own optimizer between the
      model's ``backward()`` and its optimizer step (SEA's CLUB); by default those of every
      submodule that declares some (e.g. a :class:`~sea_pyg.nn.SeparateLearning`).
    * :meth:`from_data` builds the model from a dataset: constructor arguments named in
      :data:`DATA_ARGUMENTS` come from the data, the rest are hyper-parameters.
    """

    #: Whether the model's batches carry a sampled negative item (``(3, B)``).
    uses_negatives: bool = True
    #: Leading epochs that pre-train the model (e.g. PAMD): the trainer gives :meth:`loss`
    #: ``(1, B)`` item ids (a shuffled pass over all items per epoch) and skips validation.
    pretrain_epochs: int = 0
    #: Whether the model can train on mini-batches of sampled subgraphs
    #: (:meth:`set_minibatch`, ``TrainConfig.minibatch``, ``sea-pyg train --minibatch``).
    supports_minibatch: bool = False
    #: Whether mini-batch training samples a neighbourhood around the batch's rows (and so
    #: takes a ``fanout``: LightGCN); ``False`` for models whose step reads only the batch's
    #: rows (MF, VBPR), to which ``sea-pyg train`` refuses ``--fanout`` before loading data.
    samples_neighbourhood: bool = False

    def set_minibatch(self, fanout: Sequence[int] | None = None, chunk_size: int = 4096) -> None:
        """Switch to mini-batch training: :meth:`loss` then reads only the batch's rows (and
        their sampled neighbourhood, ``fanout`` per layer), and :meth:`embeddings` is computed
        in chunks of ``chunk_size`` rows. Models with ``supports_minibatch`` override it.

        Raises:
            ValueError: this model cannot train that way.
        """
        raise ValueError(
            f"{type(self).__name__} cannot train on sampled mini-batches: its training step "
            "needs the whole graph or all items (see docs/scale.md)"
        )

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement loss(batch)")

    def embeddings(self) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement embeddings()")

    def pre_epoch(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Hook called before training epoch ``epoch`` (0-based)."""

    # ------------------------------------------------------------------ scoring
    @torch.no_grad()
    def scoring_state(self) -> tuple[Tensor, Tensor]:
        """What :meth:`score` needs, computed once for many calls: ``(user_emb (U, d),
        item_emb^T (d, N))`` from :meth:`embeddings`."""
        user_emb, item_emb = self.embeddings()
        return user_emb, item_emb.t().contiguous()

    @torch.no_grad()
    def score(self, users: Tensor, state: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Scores ``(B, N)`` of ``users`` ``(B,)`` over all items.

        Args:
            users: User ids.
            state: :meth:`scoring_state` to reuse across calls (default: computed here, which
                recomputes the full-graph embeddings).
        """
        user_emb, item_t = self.scoring_state() if state is None else state
        return user_emb[users.to(user_emb.device)] @ item_t

    # ------------------------------------------------------------------ training hooks
    def auxiliary_estimators(self) -> list[tuple[str, AuxiliaryEstimator]]:
        """``[(key, estimator)]`` of the networks the trainer fits with their own optimizer.

        ``key`` (the owning submodule's name plus the estimator's) identifies the optimizer
        state in checkpoints. By default: every non-:class:`Recommender` submodule with an
        ``auxiliary_estimators()`` method contributes its estimators.
        """
        out = []
        for path, module in self.named_modules():
            if module is self or isinstance(module, Recommender):
                continue
            declare = getattr(module, "auxiliary_estimators", None)
            if callable(declare):
                out += [(f"{path}.{est.name}", est) for est in declare()]
        return out

    def low_precision_buffers(self) -> list[str]:
        """Names (as in :meth:`named_buffers`) of float buffers that :meth:`loss` reads only as
        inputs of matrix products (``linear``, ``mm``, ``addmm``, ``matmul``).

        Under ``precision="bf16"`` (:mod:`sea_pyg.train.precision`) the trainer replaces each
        by a bfloat16 copy, made once, for the duration of every training step, so that
        autocast does not cast e.g. an ``(N, 4096)`` feature matrix at every step (the copy
        holds the values autocast's own cast gives). A row selection before the product is
        fine; name no buffer that another operation reads during :meth:`loss` (a norm, a
        sum, a loss target): it would run in bfloat16. Evaluation, :meth:`pre_epoch` and
        checkpoints always see the float32 buffers. Default: those of each child
        :class:`Recommender` (e.g. the host of a ``+sea`` variant), with its name as prefix.
        """
        return [
            f"{name}.{buffer}"
            for name, child in self.named_children()
            if isinstance(child, Recommender)
            for buffer in child.low_precision_buffers()
        ]

    # ------------------------------------------------------------------ construction
    @classmethod
    def hyperparameters(cls) -> dict[str, Any]:
        """This model's hyper-parameters and their defaults (see :func:`hyperparameters`)."""
        return hyperparameters(cls)

    @classmethod
    def from_data(cls, data: HeteroData, **hparams: Any) -> Recommender:
        """Builds the model for ``data``: ``num_users``, ``num_items``, ``train_edge_index``
        and ``features`` (whichever the constructor takes) come from the dataset, ``hparams``
        are passed on."""
        params = inspect.signature(cls).parameters
        given: dict[str, Any] = {}
        if "num_users" in params:
            given["num_users"] = int(data["user"].num_nodes)
        if "num_items" in params:
            given["num_items"] = int(data["item"].num_nodes)
        if "train_edge_index" in params:
            given["train_edge_index"] = data[EDGE_TYPE].edge_index
        if "features" in params:
            given["features"] = dataset_features(data, cls.__name__)
        return cls(**given, **hparams)


@dataclass
class TrainOutput:
    """What one training forward pass of a :class:`MultimodalRecommender` returns.

    Attributes:
        modal: Per-modality item representations ``{m: (R, D_m)}`` from this very pass (with
            autograd attached), or ``None`` when the pass did not compute them.
        modal_items: ``(R,)`` item ids of the rows of ``modal``; ``None`` means all ``N``
            items in order (what :meth:`MultimodalRecommender.forward_train` returns with
            ``all_modal_items=True``).
        rows: The model's own batch tensors for :meth:`MultimodalRecommender.loss_terms`
            (e.g. ``"user"``, ``"pos"``, ``"neg"``: ``(B, d)``); each model documents its keys.
    """

    modal: dict[str, Tensor] | None = None
    modal_items: Tensor | None = None
    rows: dict[str, Any] = field(default_factory=dict)


class MultimodalRecommender(Recommender):
    """A recommender with per-modality item representations (the host of separate learning).

    A subclass sets :attr:`modalities` and implements:

    * :meth:`modal_item_representations` ``(items=None) -> {m: (R, D_m)}``: computed afresh
      from the current parameters with autograd attached;
    * :meth:`forward_train` ``(batch, all_modal_items=False) -> TrainOutput``: one training
      forward pass; with ``all_modal_items=True`` its ``modal`` covers all ``N`` items, so an
      extra loss over all items (separate learning) reuses the very same pass;
    * :meth:`loss_terms` ``(out) -> {name: weighted term}``.

    :meth:`loss` is ``loss_terms(forward_train(batch))``. Any such model trains with SEA's
    separate-learning losses as ``sea-pyg train --model NAME --sea`` (registry name
    ``NAME+sea``), see :class:`~sea_pyg.models.WithSeparateLearning`.
    """

    #: Modality names, in the order of the features given to the constructor.
    modalities: list[str]
    #: ``N``.
    num_items: int

    def modal_item_representations(self, items: Tensor | None = None) -> dict[str, Tensor]:
        raise NotImplementedError(
            f"{type(self).__name__} must implement modal_item_representations(items=None)"
        )

    def forward_train(self, batch: Tensor, all_modal_items: bool = False) -> TrainOutput:
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward_train(batch, all_modal_items)"
        )

    def loss_terms(self, out: TrainOutput) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement loss_terms(out)")

    def loss(self, batch: Tensor) -> dict[str, Tensor]:
        return self.loss_terms(self.forward_train(batch))

    def modal_dims(self) -> dict[str, int]:
        """``{m: D_m}``, read from the representations of one item."""
        ref = next(iter(self.parameters()), None)
        device = ref.device if ref is not None else None
        with torch.no_grad():
            reps = self.modal_item_representations(
                torch.zeros(1, dtype=torch.long, device=device)
            )
        return {m: int(r.size(-1)) for m, r in reps.items()}

