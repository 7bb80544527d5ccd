"""The model registry: every model registers itself next to its class.

A model file declares its CLI name, one-line description, protocol overrides and presets with
:func:`register_model`; its hyper-parameters and their defaults are its constructor's keyword
arguments (:func:`~sea_pyg.models.base.hyperparameters`), written nowhere else::

    @register_model("mf", "matrix factorisation with BPR (MMRec BPR)")
    class MFBPR(Recommender):
        def __init__(self, num_users, num_items, embedding_dim=64, reg_weight=1e-4): ...

Every registered :class:`~sea_pyg.models.MultimodalRecommender` also gets a ``NAME+sea``
entry: the model wrapped in :class:`~sea_pyg.models.WithSeparateLearning` (its
hyper-parameters plus the separate-learning ones), with the model's ``sea_preset`` if it gives
one (the settings the paper's logs give for VBPR+SEA and FREEDOM+SEA).

Models registered from outside the package (any module that is imported before the name is
looked up; ``sea-pyg train --import MODULE``) are first-class: they train, save, load and
recommend like the built-in ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch_geometric.data import HeteroData

from sea_pyg.models.base import MultimodalRecommender, Recommender, hyperparameters
from sea_pyg.models.plugin import WithSeparateLearning

__all__ = [
    "ModelSpec",
    "MODELS",
    "SEA_PLUGINS",
    "register_model",
    "build_model",
    "model_names",
    "sea_variant",
]

#: Suffix of the separate-learning variant of a multimodal model.
SEA_SUFFIX = "+sea"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model name.

    Attributes:
        name: CLI name (``sea-pyg train --model NAME``).
        cls: The model class.
        description: One line for ``--help`` and ``sea-pyg models``.
        preset: Hyper-parameters this name changes from the constructor's defaults.
        train_defaults: :class:`~sea_pyg.train.TrainConfig` fields this model changes (e.g.
            SEA's learning rate 1e-4).
        host: For a ``+sea`` entry, the name of the host model; ``None`` otherwise.
        search_space: The model's default hyper-parameter grid, ``{name: [values]}`` (MMRec's
            ``configs/model/<Model>.yaml`` grid; ``lr`` names the learning rate); empty when
            the model declares none.
    """

    name: str
    cls: type[Recommender]
    description: str
    preset: Mapping[str, Any] = field(default_factory=dict)
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    host: str | None = None
    search_space: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """All hyper-parameters of this name with their values (constructor defaults, then the
        preset's changes; for a ``+sea`` entry the host's and the separate-learning ones)."""
        base = hyperparameters(self.cls)
        if self.host is not None:
            base = {**base, **hyperparameters(WithSeparateLearning)}
        return {**base, **self.preset}

    def build(self, data: HeteroData, **hparams: Any) -> Recommender:
        """The model for ``data`` with ``hparams`` (all of :attr:`defaults`' keys)."""
        if self.host is None:
            return self.cls.from_data(data, **hparams)
        own = hyperparameters(self.cls)
        host = self.cls.from_data(data, **{k: v for k, v in hparams.items() if k in own})
        return WithSeparateLearning(host, **{k: v for k, v in hparams.items() if k not in own})


#: name -> :class:`ModelSpec`, filled by :func:`register_model`.
MODELS: dict[str, ModelSpec] = {}

#: host name -> its ``+sea`` name, for every registered multimodal model.
SEA_PLUGINS: dict[str, str] = {}


def _check_keys(name: str, cls: type, values: Mapping[str, Any], what: str,
                extra: Mapping[str, Any] | None = None) -> None:
    known = {**hyperparameters(cls), **(extra or {})}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(
            f"register_model({name!r}): {what} names {unknown}, which {cls.__name__} does not "
            f"take; its hyper-parameters are {sorted(known)}"
        )


def register_model(
    name: str,
    description: str,
    *,
    train_defaults: Mapping[str, Any] | None = None,
    presets: Mapping[str, tuple[str, Mapping[str, Any]]] | None = None,
    sea_preset: tuple[str, Mapping[str, Any]] | None = None,
    search_space: Mapping[str, Sequence[Any]] | None = None,
) -> Callable[[type], type]:
    """Class decorator: registers a :class:`~sea_pyg.models.Recommender` under ``name``.

    Args:
        name: CLI name (lower case, no spaces; must not end in ``+sea``).
        description: One line for ``--help``.
        train_defaults: :class:`~sea_pyg.train.TrainConfig` fields the model changes (e.g.
            ``{"lr": 1e-4}``); they apply to its presets and its ``+sea`` entry too.
        presets: ``{preset_name: (description, {hparam: value})}``: more registry names for
            the same class with some hyper-parameters changed (e.g. SEA's ``sea-b``).
        sea_preset: ``(description, {hparam: value})`` of the model's ``+sea`` entry (only
            for a :class:`~sea_pyg.models.MultimodalRecommender`; host and separate-learning
            hyper-parameters may both be set).
        search_space: ``{hparam: [values]}``, the grid MMRec's config searches for this model
            (``lr`` for the learning rate); it applies to the presets and the ``+sea`` entry too.

    Raises:
        ValueError: a name is taken, a preset or the search space names an unknown
            hyper-parameter, or a search-space entry has no values.
    """
    if not name or name != name.strip().lower() or " " in name or name.endswith(SEA_SUFFIX):
        raise ValueError(
            f"register_model: bad name {name!r}; use lower case without spaces, not ending "
            f"in {SEA_SUFFIX!r}"
        )

    def decorate(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Recommender)):
            raise TypeError(f"register_model({name!r}) decorates a Recommender subclass, "
                            f"got {cls!r}")
        train = dict(train_defaults or {})
        space = {k: tuple(v) for k, v in (search_space or {}).items()}
        _check_keys(name, cls, space, "search_space", {"lr": None})
        empty = sorted(k for k, v in space.items() if not v)
        if empty:
            raise ValueError(f"register_model({name!r}): search_space entries {empty} have no "
                             "values; give each hyper-parameter at least one value")
        entries = [ModelSpec(name, cls, description, {}, train, search_space=space)]
        for preset_name, (desc, values) in (presets or {}).items():
            _check_keys(name, cls, values, f"preset {preset_name!r}")
            entries.append(ModelSpec(preset_name, cls, desc, dict(values), train,
                                     search_space=space))
        if issubclass(cls, MultimodalRecommender):
            desc, values = sea_preset or (
                f"{name} + SEA's separate learning on its per-modality item representations",
                {},
            )
            _check_keys(name, cls, values, "sea_preset", hyperparameters(WithSeparateLearning))
            entries.append(ModelSpec(name + SEA_SUFFIX, cls, desc, dict(values), train, name,
                                     search_space=space))
        elif sea_preset is not None:
            raise ValueError(
                f"register_model({name!r}): sea_preset needs a MultimodalRecommender (one with "
                "per-modality item representations)"
            )
        taken = [e.name for e in entries if e.name in MODELS and MODELS[e.name].cls is not cls]
        if taken:
            raise ValueError(f"register_model: model name(s) {taken} are already registered")
        for e in entries:
            MODELS[e.name] = e
            if e.host is not None:
                SEA_PLUGINS[e.host] = e.name
        return cls

    return decorate


def model_names() -> list[str]:
    """The registered model names, sorted (what ``sea-pyg train --model`` accepts)."""
    return sorted(MODELS)


def sea_variant(name: str) -> str:
    """The ``+sea`` model name of ``name`` (``"vbpr"`` -> ``"vbpr+sea"``).

    Raises:
        ValueError: when ``name`` has no separate-learning variant.
    """
    key = name.lower()
    if key in SEA_PLUGINS.values():
        return key
    if key in SEA_PLUGINS:
        return SEA_PLUGINS[key]
    spec = MODELS.get(key)
    if spec is not None and getattr(spec.cls, "has_separate_learning", False):
        raise ValueError(
            f"model {name!r} is SEA itself and already has separate learning; drop --sea"
        )
    hosts = ", ".join(sorted(SEA_PLUGINS))
    raise ValueError(
        f"model {name!r} has no SEA plug-in (--sea works with every model that has "
        f"per-modality item representations: {hosts}); see docs/concepts.md, "
        "'How to add a model'"
    )


def build_model(
    name: str, data: HeteroData, **overrides: Any
) -> tuple[Recommender, dict[str, Any], dict[str, Any]]:
    """Build model ``name`` for ``data``.

    Returns:
        ``(model, model_info, train_defaults)``: ``model_info`` is ``{"name", "hparams"}``
        (JSON-able, stored in checkpoints); ``train_defaults`` are the model's
        :class:`~sea_pyg.train.TrainConfig` overrides.

    Raises:
        ValueError: unknown name or hyper-parameter (the message lists the valid ones).
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    spec = MODELS[key]
    defaults = spec.defaults
    unknown = [k for k in overrides if k not in defaults]
    if unknown:
        raise ValueError(
            f"model {key!r} has no hyper-parameter(s) {unknown}; it takes {sorted(defaults)}"
        )
    hparams = {**defaults, **overrides}
    model = spec.build(data, **hparams)
    return model, {"name": key, "hparams": hparams}, dict(spec.train_defaults)
