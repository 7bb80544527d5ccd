import time

import numpy as np
import pytest

from sea_pyg.data.split import split_counts, split_per_user

# (n, (train, valid, test)) worked out by hand from the MMRec rule:
# n < 10 -> (n - 2, 1, 1); else vt = int(0.2 n), valid = vt // 2, test = vt - vt // 2.
HAND_COUNTS = [
    (3, (1, 1, 1)),
    (5, (3, 1, 1)),
    (9, (7, 1, 1)),
    (10, (8, 1, 1)),  # vt = 2
    (11, (9, 1, 1)),  # vt = 2
    (19, (16, 1, 2)),  # vt = 3
    (20, (16, 2, 2)),  # vt = 4
    (37, (30, 3, 4)),  # vt = 7
]


def _label_counts(x_label, user_ids, user):
    rows = x_label[user_ids == user]
    return tuple(int((rows == k).sum()) for k in range(3))


@pytest.mark.parametrize("n,expected", HAND_COUNTS)
def test_split_counts_hand_checked(n, expected):
    assert tuple(int(c) for c in split_counts(n)) == expected


def test_split_per_user_counts_all_users_at_once():
    # one user per hand-checked size, rows interleaved so users are not contiguous
    sizes = [n for n, _ in HAND_COUNTS]
    user_ids = np.repeat(np.arange(len(sizes)) * 7 + 3, sizes)  # non-contiguous ids
    user_ids = user_ids[np.random.default_rng(1).permutation(user_ids.size)]
    x_label = split_per_user(user_ids, seed=0)
    assert x_label.dtype == np.int64 and x_label.shape == user_ids.shape
    for u, (_, expected) in enumerate(HAND_COUNTS):
        assert _label_counts(x_label, user_ids, u * 7 + 3) == expected


def test_split_deterministic_and_seed_dependent():
    user_ids = np.repeat(np.arange(50), 12)
    a = split_per_user(user_ids, seed=3)
    b = split_per_user(user_ids, seed=3)
    c = split_per_user(user_ids, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # same per-user counts whatever the seed
    for u in range(50):
        assert _label_counts(a, user_ids, u) == _label_counts(c, user_ids, u) == (10, 1, 1)


def test_split_order_within_user_is_random():
    # each position of a 5-row user ends up in test with frequency ~1/5 across users
    num_users = 2000
    user_ids = np.repeat(np.arange(num_users), 5)
    x_label = split_per_user(user_ids, seed=0).reshape(num_users, 5)
    freq = (x_label == 2).mean(axis=0)
    np.testing.assert_allclose(freq, 0.2, atol=0.04)


def test_split_rejects_users_with_two_rows():
    user_ids = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    with pytest.raises(ValueError, match=r"1 user\(s\).*>= 3"):
        split_per_user(user_ids, seed=0)


def test_split_empty_and_bad_input():
    assert split_per_user(np.array([], dtype=np.int64), seed=0).shape == (0,)
    with pytest.raises(ValueError):
        split_per_user(np.zeros((2, 3), dtype=np.int64), seed=0)
    with pytest.raises(ValueError):
        split_per_user(np.array([0.0, 0.0, 0.0]), seed=0)


def test_split_is_fast():
    rng = np.random.default_rng(0)
    user_ids = rng.permutation(np.repeat(np.arange(30_000), 10))  # 300k rows
    start = time.perf_counter()
    x_label = split_per_user(user_ids, seed=0)
    assert time.perf_counter() - start < 1.0
    assert np.bincount(x_label).tolist() == [240_000, 30_000, 30_000]
