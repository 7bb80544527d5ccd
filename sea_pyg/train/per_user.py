r"""Per-user metrics of a run: the evidence behind its averages, for paired significance tests.

A run's reported metric is a mean over the evaluated users, :math:`\bar m = \frac1n \sum_u m_u`
(see :mod:`sea_pyg.train.metrics`). Two models evaluated on the same users give paired values
:math:`(m^A_u, m^B_u)`; :mod:`sea_pyg.train.significance` tests their differences. For this,
every run folder holds ``per_user.csv``: the metrics of each evaluated user at the **best
validation epoch** (the epoch whose test metrics ``results.json`` reports), for the validation
and the test split::

    split,user,recall@10,recall@20,ndcg@10,...
    valid,0,0.5,1.0,0.386852807234560,...
    test,3,0.0,0.3333333333333333,0.0,...

``user`` is the internal 0-based user id (the ``userID`` of the ``.inter`` file); the users of a
split are those with at least one held-out item in it, ascending. Values are written with
Python's shortest round-trip ``repr``, so they read back bit for bit, and the mean of a column
equals the run's reported metric (up to the rounding of the summation order). The file is
committed together with ``best.pt`` and ``results.json`` (one atomic step, see
:mod:`sea_pyg.train.runfolder`), so the three always describe the same epoch.

:func:`load_per_user` reads it back, with the run's model, seed and data fingerprint
(:func:`data_fingerprint`, stored in ``results.json`` as ``data_fingerprint``) so that runs on
different data are told apart.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sea_pyg.train.runfolder import (
    PER_USER,
    RESULTS,
    RunFolderError,
    read_committed,
    read_results,
    run_status,
)

__all__ = [
    "PER_USER",
    "SPLITS",
    "PerUserMetrics",
    "per_user_csv",
    "parse_per_user_csv",
    "load_per_user",
    "data_fingerprint",
]

#: The splits ``per_user.csv`` holds.
SPLITS = ("valid", "test")


def data_fingerprint(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The identity of a dataset for ``results.json``: a
    :func:`~sea_pyg.train.checkpoint.dataset_metadata` record with its id maps (which can be
    long lists) replaced by their SHA-1, so that
    :func:`~sea_pyg.train.checkpoint.data_differences` can compare two of them."""
    out = {k: v for k, v in meta.items() if k not in ("user_ids", "item_ids")}
    for key in ("user_ids", "item_ids"):
        ids = meta.get(key)
        out[key] = (
            None if ids is None
            else hashlib.sha1(json.dumps(list(ids)).encode("utf-8")).hexdigest()
        )
    return out


@dataclass(frozen=True)
class PerUserMetrics:
    """One split's per-user metrics of one run.

    Attributes:
        users: ``(n,)`` int64 internal user ids, ascending.
        values: ``{"recall@20": (n,) float64 array, ...}``, row ``j`` for ``users[j]``.
        split: ``"valid"`` or ``"test"``.
        run: The run folder (``None`` for values made in memory).
        model: The model's registry name (``None`` if unknown).
        seed: The training seed (``None`` if unknown).
        best_epoch: The epoch the values are from.
        status: The run's status (``"finished"``, ``"running"``, ``"interrupted"``).
        data: The run's :func:`data_fingerprint` (``{}`` if unknown).
    """

    users: np.ndarray
    values: dict[str, np.ndarray]
    split: str = "test"
    run: str | None = None
    model: str | None = None
    seed: int | None = None
    best_epoch: int | None = None
    status: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> list[str]:
        """The metric names, in file order."""
        return list(self.values)

    def metric(self, name: str) -> np.ndarray:
        """The ``(n,)`` values of metric ``name`` (e.g. ``"recall@20"``).

        Raises:
            KeyError: the run has no such metric (the message lists those it has).
        """
        if name not in self.values:
            raise KeyError(
                f"{self.label}: no metric {name!r} in its per-user values; it has "
                f"{', '.join(self.values)}"
            )
        return self.values[name]

    def mean(self) -> dict[str, float]:
        """The mean of each metric over the users (the run's reported metrics)."""
        return {name: float(v.mean()) for name, v in self.values.items()}

    @property
    def label(self) -> str:
        """How messages name the run: its folder, else its model."""
        return self.run or self.model or "per-user metrics"


def _ascending(users: np.ndarray) -> bool:
    return bool(np.all(users[1:] > users[:-1]))


def per_user_csv(splits: Mapping[str, Any]) -> str:
    """The text of ``per_user.csv``.

    Args:
        splits: ``{split: (users, values)}``: ``users`` a ``(n,)`` tensor or array of user
            ids, ``values`` ``{metric: (n,) tensor or array}`` (e.g. a
            :class:`~sea_pyg.train.metrics.PerUserRanking`'s ``users`` and ``values``); every
            split with the same metrics, in the same order.
    """
    names: list[str] | None = None
    lines: list[str] = []
    for split, (users, values) in splits.items():
        if names is None:
            names = list(values)
        elif list(values) != names:
            raise ValueError(
                f"per_user_csv: split {split!r} has metrics {list(values)}, another has {names}"
            )
        ids = np.asarray(users, dtype=np.int64).reshape(-1)
        cols = [np.asarray(values[n], dtype=np.float64).reshape(-1) for n in names]
        if any(c.shape != ids.shape for c in cols):
            raise ValueError(f"per_user_csv: split {split!r}: one value per user is needed")
        fields = [[split] * ids.size, list(map(str, ids.tolist()))]
        fields += [list(map(repr, c.tolist())) for c in cols]  # shortest exact float text
        lines.extend(map(",".join, zip(*fields, strict=True)))
    header = ",".join(["split", "user", *(names or [])])
    return "\n".join([header, *lines]) + "\n"


def parse_per_user_csv(text: str, where: str = PER_USER) -> dict[str, tuple[np.ndarray, dict]]:
    """``{split: (users int64 array, {metric: float64 array})}`` from the text of
    ``per_user.csv`` (``where`` names it in errors).

    Raises:
        ValueError: not the file :func:`per_user_csv` writes (the message names the line).
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("split,user,"):
        raise ValueError(
            f"{where}: not a per-user metrics file (its first line must be "
            "'split,user,<metric>,...')"
        )
    names = lines[0].split(",")[2:]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise ValueError(f"{where}: bad header {lines[0]!r}")
    rows: dict[str, tuple[list[int], list[list[float]]]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line:
            continue
        parts = line.split(",")
        if len(parts) != len(names) + 2:
            raise ValueError(
                f"{where}, line {number}: expected {len(names) + 2} fields, got {len(parts)}"
            )
        try:
            user = int(parts[1])
            vals = [float(v) for v in parts[2:]]
        except ValueError:
            raise ValueError(
                f"{where}, line {number}: not a user id and numbers: {line!r}"
            ) from None
        if user < 0 or not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{where}, line {number}: negative user id or non-finite value")
        users, table = rows.setdefault(parts[0], ([], []))
        users.append(user)
        table.append(vals)
    out = {}
    for split, (users, table) in rows.items():
        ids = np.asarray(users, dtype=np.int64)
        if not _ascending(ids):
            raise ValueError(f"{where}: the users of split {split!r} are not strictly ascending")
        mat = np.asarray(table, dtype=np.float64).reshape(len(users), len(names))
        out[split] = (ids, {n: mat[:, j].copy() for j, n in enumerate(names)})
    return out


def _run_folder(run: str | os.PathLike) -> Path:
    path = Path(run)
    if path.is_file() and path.name in (RESULTS, PER_USER):
        path = path.parent
    if not path.is_dir():
        raise FileNotFoundError(f"{run}: no such run folder")
    return path


def load_per_user(run: str | os.PathLike, split: str = "test") -> PerUserMetrics:
    """The per-user metrics of the run in folder ``run`` (or its ``results.json`` /
    ``per_user.csv``) on ``split``, at its best validation epoch, with the run's model, seed,
    status and data fingerprint from its ``results.json``.

    Raises:
        FileNotFoundError: ``run`` is not a folder.
        ValueError: ``split`` is not ``"valid"`` / ``"test"``; the folder holds no run
            (no ``results.json``) or no ``per_user.csv`` (a run from a sea_pyg version that did
            not save it, or that has not finished an epoch yet), or the file is damaged.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    folder = _run_folder(run)
    results = read_results(folder)
    if results is None:
        raise RunFolderError(f"{folder} holds no training run (no {RESULTS})")
    try:
        text = read_committed(folder, PER_USER, lambda p: p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunFolderError(
            f"{folder} has no {PER_USER}: the run was trained by a sea_pyg version that did not "
            "save per-user metrics, or has not finished an epoch. Train it again, e.g. "
            f"`sea-pyg train --config {folder / 'config.yaml'} --out NEW_FOLDER`"
        ) from None
    splits = parse_per_user_csv(text, str(folder / PER_USER))
    if split not in splits:
        raise RunFolderError(f"{folder / PER_USER} has no {split!r} rows")
    users, values = splits[split]
    config = results.get("config") if isinstance(results.get("config"), dict) else {}
    model = results.get("model")
    status = (run_status(folder) or {}).get("status")
    return PerUserMetrics(
        users=users,
        values=values,
        split=split,
        run=str(folder),
        model=str(model.get("name")) if isinstance(model, dict) and model.get("name") else None,
        seed=config.get("seed"),
        best_epoch=results.get("best_epoch"),
        status=status,
        data=dict(results.get("data_fingerprint") or {}),
    )
