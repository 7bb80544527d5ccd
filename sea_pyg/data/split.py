"""The MMRec per-user random split into train / validation / test.

The released MMRec datasets (Amazon Baby, Sports, Clothing) carry an ``x_label`` column with
``0`` = train, ``1`` = validation and ``2`` = test. It was produced per user with a random order
inside each user (the split is random, not temporal). For a user with :math:`n` interactions:

* if :math:`n < 10`: :math:`n - 2` train, 1 validation, 1 test;
* otherwise, with :math:`v = \\lfloor 0.2\\,n \\rfloor`: :math:`\\lfloor v/2 \\rfloor` validation,
  :math:`v - \\lfloor v/2 \\rfloor` test and the remaining :math:`n - v` train.

Examples: :math:`n = 5 \\to (3, 1, 1)`, :math:`n = 10 \\to (8, 1, 1)`,
:math:`n = 19 \\to (16, 1, 2)`, :math:`n = 37 \\to (30, 3, 4)`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TRAIN", "VALID", "TEST", "split_counts", "split_per_user"]

TRAIN, VALID, TEST = 0, 1, 2

_MIN_ROWS = 3


def split_counts(n: np.ndarray | int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Number of (train, valid, test) rows for users with ``n`` interactions (MMRec rule).

    Args:
        n: interaction count(s) per user, each ``>= 3``.

    Returns:
        Three int64 arrays with the shape of ``n``: train, valid and test counts.
    """
    n = np.asarray(n, dtype=np.int64)
    vt = np.where(n < 10, 2, (n * 2) // 10)  # int(0.2 * n) without float rounding
    valid = np.where(n < 10, 1, vt // 2)
    test = vt - valid
    return n - vt, valid, test


def split_per_user(user_ids: np.ndarray, seed: int) -> np.ndarray:
    """Assign every interaction row to train (0), validation (1) or test (2), per user.

    Rows are grouped by user; inside a user the order is a uniformly random permutation drawn from
    ``np.random.default_rng(seed)``. The first rows of that order go to train, the next ones to
    validation and the last ones to test, in the numbers given by :func:`split_counts`.
    Vectorised: one ``lexsort`` over all rows, no loop over users.

    Args:
        user_ids: 1-D integer array, the user of each interaction row (any integer ids, any order).
        seed: seed of the random order inside each user.

    Returns:
        ``x_label``: int64 array of the same length as ``user_ids``, aligned with its rows.

    Raises:
        ValueError: if ``user_ids`` is not a 1-D integer array, or if some user has fewer than 3
            rows (the protocol needs at least one train, one validation and one test row).
    """
    user_ids = np.asarray(user_ids)
    if user_ids.ndim != 1:
        raise ValueError(f"user_ids must be 1-D, got shape {user_ids.shape}")
    if user_ids.size and not np.issubdtype(user_ids.dtype, np.integer):
        raise ValueError(f"user_ids must hold integers, got dtype {user_ids.dtype}")
    num_rows = user_ids.shape[0]
    x_label = np.empty(num_rows, dtype=np.int64)
    if num_rows == 0:
        return x_label

    rng = np.random.default_rng(seed)
    key = rng.random(num_rows)
    order = np.lexsort((key, user_ids))  # by user, random inside a user
    sorted_users = user_ids[order]

    is_start = np.empty(num_rows, dtype=bool)
    is_start[0] = True
    np.not_equal(sorted_users[1:], sorted_users[:-1], out=is_start[1:])
    starts = np.flatnonzero(is_start)
    counts = np.diff(np.append(starts, num_rows))

    too_small = counts < _MIN_ROWS
    if too_small.any():
        bad = sorted_users[starts[too_small]]
        shown = ", ".join(str(u) for u in bad[:5]) + (", ..." if bad.size > 5 else "")
        raise ValueError(
            f"{bad.size} user(s) have fewer than {_MIN_ROWS} interactions (e.g. {shown}); the "
            f"MMRec split needs >= {_MIN_ROWS} per user (1 train, 1 valid, 1 test)"
        )

    group = np.cumsum(is_start) - 1  # group index of each sorted row
    rank = np.arange(num_rows, dtype=np.int64) - starts[group]
    n_train, n_valid, _ = split_counts(counts)
    n_train, n_train_valid = n_train[group], (n_train + n_valid)[group]

    sorted_label = np.full(num_rows, TEST, dtype=np.int64)
    sorted_label[rank < n_train_valid] = VALID
    sorted_label[rank < n_train] = TRAIN
    x_label[order] = sorted_label
    return x_label
