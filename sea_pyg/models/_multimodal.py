"""Small helpers shared by the multimodal models (argument checks, batch row bookkeeping,
per-modality projections)."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["check_features", "batch_item_rows", "project_modalities"]


def check_features(
    features: Mapping[str, Tensor], num_items: int | None = None
) -> dict[str, Tensor]:
    """Validate ``{modality: (N, F_m) tensor}`` and return it as an ordered ``dict``.

    ``num_items`` defaults to the row count of the first modality; all must match it.

    The order of the mapping is kept (it fixes parameter order and, for VBPR, the column order
    of the fused Linear layer).
    """
    if not isinstance(features, Mapping) or len(features) == 0:
        raise ValueError(
            "`features` must be a non-empty mapping {modality: (num_items, dim) tensor} (e.g. "
            "features={'text': Tensor[N, 384]}, an MMRec folder's <modality>_feat.npy), got "
            f"{type(features).__name__ if not isinstance(features, Mapping) else 'an empty one'}"
        )
    out: dict[str, Tensor] = {}
    for name, x in features.items():
        name = str(name)
        if "." in name or not name:
            raise ValueError(f"modality names must be non-empty and contain no '.', got {name!r}")
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"features[{name!r}] must be a 2-D (num_items, dim) tensor, got {shape}"
            )
        if num_items is None:
            num_items = x.size(0)
        if x.size(0) != num_items:
            raise ValueError(
                f"features[{name!r}] has {x.size(0)} rows but there are {num_items} items; "
                f"row i must be item i"
            )
        if x.size(1) < 1:
            raise ValueError(f"features[{name!r}] has no columns")
        if not x.is_floating_point():
            x = x.to(torch.get_default_dtype())
        out[name] = x.detach()
    return out


def batch_item_rows(items: Tensor, all_items: bool) -> tuple[Tensor | None, Tensor]:
    """Rows at which to compute per-item modality representations for a batch.

    Returns ``(rows, index)``: the representations are computed at item ids ``rows`` (``None``:
    every item) and ``reps[index]`` gives one row per entry of ``items``. With
    ``all_items=False`` the rows are the batch's **distinct** items, so a duplicated item shares
    one representation (and one dropout mask in BM3), exactly as when the whole table is
    computed and then indexed, at a fraction of the cost.
    """
    if all_items:
        return None, items
    rows, index = torch.unique(items, return_inverse=True)
    return rows, index


def project_modalities(
    features: Mapping[str, Tensor], transforms: Mapping[str, nn.Module], items: Tensor | None
) -> dict[str, Tensor]:
    """``{m: transforms[m](features[m][items])}`` (all rows when ``items`` is ``None``)."""
    return {
        m: lin(features[m] if items is None else features[m][items])
        for m, lin in transforms.items()
    }
