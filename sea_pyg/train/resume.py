"""What a resume checks: the checkpoint's model, settings and data against this run's.

A resume continues a run with the state in its ``last.pt``; the epochs still to come must be
trained as the first ones were, or ``results.json`` would describe one run made of two. So
:func:`resume_differences` compares

* the model (registry name) and each hyper-parameter (``"model"``, ``"model.<name>"``),
* the training settings of :data:`~sea_pyg.train.config.RESUME_CHECKED` (seed, lr, batch size,
  weight decay, patience, valid metric, cut-offs, metrics, precision, mini-batch settings,
  k-NN backend),
* the data (``"data"``): sizes, fingerprints of the training, validation and test edges and of
  the item features, the id maps, and the frozen tensors the model rebuilds from them (when
  the k-NN backend differs too, a difference of those tensors is reported under
  ``"knn_backend"``: the other search explains it),

and the trainer refuses any difference that :attr:`TrainConfig.allow_changes
<sea_pyg.train.TrainConfig>` does not name (``--allow-changes``). The epoch cap is not compared:
raising it continues the run. Accepted changes are recorded in ``results.json`` (``"resumes"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from sea_pyg.train.checkpoint import data_differences
from sea_pyg.train.config import RESUME_CHECKED, TrainConfig
from sea_pyg.train.runfolder import jsonable

__all__ = ["resume_differences", "refused_changes", "differences_message"]

_ABSENT = "<absent>"


def resume_differences(
    ckpt: Mapping[str, Any],
    config: TrainConfig,
    model_info: Mapping[str, Any],
    dataset: Mapping[str, Any],
    frozen: Mapping[str, str],
) -> dict[str, str]:
    """What differs between a checkpoint (``last.pt``) and the run about to resume it.

    Args:
        ckpt: The loaded checkpoint.
        config: This run's settings.
        model_info: This run's ``{"name", "hparams"}``.
        dataset: :func:`~sea_pyg.train.checkpoint.dataset_metadata` of this run's data.
        frozen: :func:`~sea_pyg.train.checkpoint.frozen_tensors` of this run's fresh model.

    Returns:
        ``{name: "checkpoint value -> value now"}`` (``name`` as :attr:`TrainConfig.allow_changes`
        takes it), empty when nothing differs. Settings the checkpoint does not record (older
        versions) are not compared.
    """
    out: dict[str, str] = {}
    old_info = ckpt.get("model_info") or {}
    if old_info.get("name") != model_info.get("name"):
        out["model"] = f"{old_info.get('name')!r} -> {model_info.get('name')!r}"
    old_h = jsonable(dict(old_info.get("hparams") or {}))
    new_h = jsonable(dict(model_info.get("hparams") or {}))
    for key in sorted(set(old_h) | set(new_h)):
        a, b = old_h.get(key, _ABSENT), new_h.get(key, _ABSENT)
        if a != b:
            out[f"model.{key}"] = f"{a!r} -> {b!r}"
    saved = ckpt.get("config") or {}
    now = jsonable(asdict(config))
    for key in RESUME_CHECKED:
        if key in saved and saved[key] != now[key]:
            out[key] = f"{saved[key]!r} -> {now[key]!r}"
    data = data_differences(ckpt.get("dataset") or {}, dataset)
    rebuilt = ckpt.get("rebuilt") or {}
    moved = [k for k, sha in rebuilt.items() if k in frozen and frozen[k] != sha]
    if moved and "knn_backend" in out:  # another k-NN search built other graphs
        out["knn_backend"] += f" (the rebuilt tensors {', '.join(moved)} differ with it)"
    elif moved:
        data.append(f"tensors the model rebuilds from the data ({', '.join(moved)})")
    if data:
        out["data"] = "; ".join(data)
    return out


def refused_changes(differences: Mapping[str, str], allowed: Iterable[str]) -> list[str]:
    """The differences that ``allowed`` (:attr:`TrainConfig.allow_changes`) does not accept;
    ``"model"`` accepts the model name and every ``"model.<name>"``."""
    allowed = set(allowed)
    return [
        k for k in differences
        if k not in allowed and not (k.startswith("model.") and "model" in allowed)
    ]


def differences_message(path: str, differences: Mapping[str, str], refused: list[str]) -> str:
    """The refusal: each difference, and the three ways forward."""
    lines = "\n".join(f"  {k}: {differences[k]}" for k in refused)
    needed = [k for k in refused if not (k.startswith("model.") and "model" in refused)]
    quoted = ", ".join(repr(k) for k in needed)
    return (
        f"cannot resume from {path}: this run differs from the one that wrote it "
        f"(checkpoint -> now):\n{lines}\n"
        "Resuming would mix two runs in one results.json. Resume with the checkpoint's "
        "settings, start a new run in another output folder (output_dir, --out), or accept "
        f"the change(s) with allow_changes=({quoted}{',' if len(needed) == 1 else ''}) "
        f"(--allow-changes {' '.join(needed)})"
    )
