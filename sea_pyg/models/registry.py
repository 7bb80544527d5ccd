"""Model presets: how each named model is built from a dataset, and its protocol settings.

This is the one place that knows both models and data; models themselves take explicit
tensors and sizes, never a dataset or a file.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch_geometric.data import HeteroData

from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.models.base import Recommender
from sea_pyg.models.bm3 import BM3
from sea_pyg.models.freedom import FREEDOM
from sea_pyg.models.lightgcn import LightGCN
from sea_pyg.models.mf import MFBPR
from sea_pyg.models.plugin import WithSeparateLearning
from sea_pyg.models.sea import SEA
from sea_pyg.models.vbpr import VBPR
from sea_pyg.nn.separate import SeparateLearning

__all__ = ["ModelSpec", "MODELS", "SEA_PLUGINS", "build_model", "model_names", "sea_variant"]


@dataclass(frozen=True)
class ModelSpec:
    """A named model: its builder, default hyper-parameters and protocol overrides.

    Attributes:
        name: CLI name.
        build: ``build(data, **hparams) -> Recommender``.
        defaults: Default hyper-parameters (constructor keyword arguments).
        train_defaults: :class:`~sea_pyg.train.TrainConfig` fields this model changes
            (e.g. SEA's learning rate 1e-4).
        description: One line for ``--help``.
    """

    name: str
    build: Callable[..., Recommender]
    defaults: dict[str, Any] = field(default_factory=dict)
    train_defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""


def _sizes(data: HeteroData) -> tuple[int, int]:
    return int(data["user"].num_nodes), int(data["item"].num_nodes)


def _build_mf(data: HeteroData, **kw: Any) -> Recommender:
    u, n = _sizes(data)
    return MFBPR(u, n, **kw)


def _build_lightgcn(data: HeteroData, **kw: Any) -> Recommender:
    u, n = _sizes(data)
    return LightGCN(u, n, data[EDGE_TYPE].edge_index, **kw)


def _build_sea(data: HeteroData, **kw: Any) -> Recommender:
    u, n = _sizes(data)
    return SEA(u, n, data[EDGE_TYPE].edge_index, _features(data), **kw)


#: SEA hyper-parameters of the official code (reference.md 4.8); presets change a few.
SEA_DEFAULTS: dict[str, Any] = {
    "embedding_dim": 64,
    "hidden_dim": 256,
    "num_layers": 2,
    "transform_dims": None,
    "knn_k": 10,
    "knn_weights": None,
    "learnable_knn_weights": False,
    "item_graph_layers": 1,
    "bpr": "log2",
    "binarize_graph": False,
    "graph_eps": 0.0,
    "fused": True,
    "split": 0.5,
    "alignment": "solosim",
    "distancing": "club",
    "align_weight": 0.012,
    "dist_weight": 0.006,
    "temperature": 0.2,
    "proj_hidden_dim": 64,
    "proj_dim": 32,
    "trans_dim": 32,
    "club_hidden_dim": 8,
    "club_scale": 0.5,
    "club_clamp_min": 0.0,
    "club_estimator": "sample",
    "club_fit": "own",
    "club_shared": False,
    "club_steps": 50,
    "club_lr": 1e-4,
    # Alignment logits 256 rows at a time: never an N x N matrix, and at Baby scale about
    # 2.5x faster than the dense path on a CPU (cache-sized chunks; benchmarks/bench_sea.py).
    "chunk_size": 256,
}

#: name -> (changes to SEA_DEFAULTS, description)
SEA_PRESETS: dict[str, tuple[dict[str, Any], str]] = {
    "sea": ({}, "SEA (preset default: SoloSim + CLUB, each modality's CLUB fitted on its own "
            "generic/unique pairs, the paper's method)"),
    "sea-reference": (
        {"club_fit": "cross_modal", "club_shared": True},
        "SEA as the official code trains it (one shared CLUB fitted on cross-modal pairs)",
    ),
    "sea-a": ({}, "SEA_a: SoloSim alignment + CLUB distancing (= sea)"),
    "sea-b": ({"distancing": "negl2"}, "SEA_b: SoloSim alignment + negative-L2 distancing"),
    "sea-c": ({"alignment": "infonce"}, "SEA_c: InfoNCE alignment + CLUB distancing"),
    "sea-d": (
        {"alignment": "infonce", "distancing": "negl2"},
        "SEA_d: InfoNCE alignment + negative-L2 distancing",
    ),
    "sea-noalign": ({"alignment": "none"}, "SEA without alignment (ablation)"),
    "sea-nodist": ({"distancing": "none"}, "SEA without distancing (ablation)"),
    "sea-noboth": (
        {"alignment": "none", "distancing": "none"},
        "SEA without alignment and distancing (ablation w/o All)",
    ),
}
def _features(data: HeteroData) -> dict:
    """``{modality: (N, F_m)}`` item features of ``data``, in ``data.modalities`` order."""
    feats = item_features(data)
    if not feats:
        raise ValueError(
            f"this model needs item features, but dataset {getattr(data, 'name', '?')!r} has "
            "none: put at least one <modality>_feat.npy file (e.g. image_feat.npy, "
            "text_feat.npy) in its folder"
        )
    return feats


def _build_vbpr(data: HeteroData, **kw: Any) -> Recommender:
    u, _ = _sizes(data)
    return VBPR(u, _features(data), **kw)


def _build_freedom(data: HeteroData, **kw: Any) -> Recommender:
    u, _ = _sizes(data)
    return FREEDOM(u, data[EDGE_TYPE].edge_index, _features(data), **kw)


def _build_bm3(data: HeteroData, **kw: Any) -> Recommender:
    u, _ = _sizes(data)
    return BM3(u, data[EDGE_TYPE].edge_index, _features(data), **kw)


MODELS: dict[str, ModelSpec] = {
    "mf": ModelSpec(
        "mf",
        _build_mf,
        {"embedding_dim": 64, "reg_weight": 1e-4},
        description="matrix factorisation with BPR (MMRec BPR)",
    ),
    "lightgcn": ModelSpec(
        "lightgcn",
        _build_lightgcn,
        {"embedding_dim": 64, "num_layers": 2, "reg_weight": 1e-4},
        description="LightGCN on PyG LGConv (MMRec LightGCN)",
    ),
    # MMRec VBPR.yaml: embedding_size 64; reg_weight grid {2.0, 1.0, 0.1, 0.01, 1e-3, 1e-4, 1e-5}
    # (the best grid point is unpublished; 1e-4 as for MF). Protocol lr 1e-3.
    "vbpr": ModelSpec(
        "vbpr",
        _build_vbpr,
        {"embedding_dim": 64, "reg_weight": 1e-4},
        description="VBPR: ID + fused-feature item embeddings (MMRec VBPR)",
    ),
    # MMRec FREEDOM.yaml: embedding/feat_embed 64, knn_k 10, mm_image_weight 0.1, n_mm_layers 1,
    # n_ui_layers 2; grid dropout {0.8, 0.9}, reg_weight {0, 1e-5, 1e-4, 1e-3}. Defaults: the
    # FREEDOM+SEA run (dropout 0.8, reg_weight 0). Protocol lr 1e-3.
    "freedom": ModelSpec(
        "freedom",
        _build_freedom,
        {
            "embedding_dim": 64,
            "feat_embed_dim": 64,
            "knn_k": 10,
            "mm_image_weight": 0.1,
            "knn_weights": None,
            "n_mm_layers": 1,
            "n_ui_layers": 2,
            "dropout": 0.8,
            "reg_weight": 0.0,
            "trainable_features": True,
            "fuse_modalities": False,
        },
        description="FREEDOM: frozen item kNN graph + degree-sensitive edge pruning (MMRec)",
    ),
    # MMRec BM3.yaml: embedding_size 64, cl_weight 2.0; grid n_layers {1, 2}, dropout {0.3, 0.5},
    # reg_weight {0.1, 0.01}. Defaults: the official best for Baby (1, 0.5, 0.1). Protocol lr 1e-3.
    "bm3": ModelSpec(
        "bm3",
        _build_bm3,
        {
            "embedding_dim": 64,
            "n_layers": 1,
            "dropout": 0.5,
            "reg_weight": 0.1,
            "cl_weight": 2.0,
            "trainable_features": True,
        },
        description="BM3: self-supervised, no negatives, dropout target views (MMRec BM3)",
    ),
}


# ---- host + SEA (paper Table 3) ---------------------------------------------------------------
#: Keyword arguments of SeparateLearning; the rest of a plug-in model's hparams go to the host.
_SEPARATE_KEYS = (
    "split", "alignment", "distancing", "align_weight", "dist_weight", "temperature",
    "proj_hidden_dim", "proj_dim", "trans_dim", "club_hidden_dim", "club_scale",
    "club_clamp_min", "club_estimator", "club_fit", "club_shared", "club_steps", "club_lr",
    "chunk_size",
)
assert set(_SEPARATE_KEYS) == set(inspect.signature(SeparateLearning).parameters) - {"dims"}


def _plugin_builder(host_build: Callable[..., Recommender]) -> Callable[..., Recommender]:
    def build(data: HeteroData, **kw: Any) -> Recommender:
        separate = {k: kw.pop(k) for k in _SEPARATE_KEYS if k in kw}
        if separate.get("chunk_size") == "auto":
            n = _sizes(data)[1]
            separate["chunk_size"] = None if n <= 8192 else 2048
        return WithSeparateLearning(host_build(data, **kw), **separate)

    return build


#: Separate-learning settings shared by the plug-in models (reference.md 4.8 and 5): 50/50
#: split, SoloSim + CLUB, no trans layers (the CLUB reads the halves directly), CLUB hidden
#: width 8, 50 inner steps at the model's learning rate (1e-3 for the MMRec hosts).
_PLUGIN_SEPARATE: dict[str, Any] = {
    "split": 0.5,
    "alignment": "solosim",
    "distancing": "club",
    "trans_dim": None,
    "club_hidden_dim": 8,
    "club_scale": 0.5,
    "club_clamp_min": 0.0,
    "club_estimator": "sample",
    "club_fit": "own",
    "club_shared": False,
    "club_steps": 50,
    "club_lr": 1e-3,
    "chunk_size": "auto",
}

#: host name -> its "+sea" model name (``sea-pyg train --model HOST --sea``).
SEA_PLUGINS: dict[str, str] = {"vbpr": "vbpr+sea", "freedom": "freedom+sea"}

# XVBPR (reference.md 5): reg_weight 2.0, alpha_contrast 0.1, explore_loss_coeff 0.01 (taken as
# the CLUB weight), temp 0.1, heads 32 -> 64 -> 64 -> 32 on the 32/32 halves of the 64-d
# per-modality representations. Here those are VBPR's own W_m x^m blocks (they feed the score).
MODELS["vbpr+sea"] = ModelSpec(
    "vbpr+sea",
    _plugin_builder(_build_vbpr),
    {
        **MODELS["vbpr"].defaults,
        "reg_weight": 2.0,
        **_PLUGIN_SEPARATE,
        "align_weight": 0.1,
        "dist_weight": 0.01,
        "temperature": 0.1,
        "proj_hidden_dim": 64,
        "proj_dim": 32,
    },
    description="VBPR+SEA (paper Table 3): VBPR + separate learning on its per-modality "
    "content representations W_m x^m",
)
# XFREEDOM (reference.md 5): dropout 0.8, reg_weight 0, heads 32 -> 33 -> 33 -> 63 on the 32/32
# halves of the 64-d T_m(x^m). The SEA weights and temperature are not in its log: the official
# SEA defaults (0.012, 0.006, 0.2) are assumed.
MODELS["freedom+sea"] = ModelSpec(
    "freedom+sea",
    _plugin_builder(_build_freedom),
    {
        **MODELS["freedom"].defaults,
        **_PLUGIN_SEPARATE,
        "align_weight": 0.012,
        "dist_weight": 0.006,
        "temperature": 0.2,
        "proj_hidden_dim": 33,
        "proj_dim": 63,
    },
    description="FREEDOM+SEA (paper Table 3): FREEDOM + separate learning on T_m(x^m) "
    "(which do not feed the score unless fuse_modalities=true)",
)


def sea_variant(name: str) -> str:
    """The ``+sea`` model name of host ``name`` (``"vbpr"`` -> ``"vbpr+sea"``).

    Raises:
        ValueError: when ``name`` has no separate-learning plug-in.
    """
    key = name.lower()
    if key in SEA_PLUGINS.values():
        return key
    if key in SEA_PLUGINS:
        return SEA_PLUGINS[key]
    if key in SEA_PRESETS:
        raise ValueError(
            f"model {name!r} is SEA itself and already has separate learning; drop --sea"
        )
    hosts = ", ".join(sorted(SEA_PLUGINS))
    raise ValueError(
        f"model {name!r} has no SEA plug-in (--sea works with: {hosts}); "
        "see docs/models.md, 'Host + SEA', to add one"
    )


for _name, (_changes, _desc) in SEA_PRESETS.items():
    MODELS[_name] = ModelSpec(
        _name, _build_sea, {**SEA_DEFAULTS, **_changes}, {"lr": 1e-4}, description=_desc
    )


def model_names() -> list[str]:
    """The registered model names, sorted (what ``sea-pyg train --model`` accepts)."""
    return sorted(MODELS)


def build_model(
    name: str, data: HeteroData, **overrides: Any
) -> tuple[Recommender, dict[str, Any], dict[str, Any]]:
    """Build model ``name`` for ``data``.

    Returns:
        ``(model, model_info, train_defaults)``: ``model_info`` is ``{"name", "hparams"}``
        (JSON-able, stored in checkpoints); ``train_defaults`` are the model's
        :class:`~sea_pyg.train.TrainConfig` overrides.
    """
    key = name.lower()
    if key not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {model_names()}")
    spec = MODELS[key]
    unknown = [k for k in overrides if k not in spec.defaults]
    if unknown:
        raise ValueError(
            f"model {key!r} has no hyper-parameter(s) {unknown}; it takes {sorted(spec.defaults)}"
        )
    hparams = {**spec.defaults, **overrides}
    model = spec.build(data, **hparams)
    return model, {"name": key, "hparams": hparams}, dict(spec.train_defaults)
