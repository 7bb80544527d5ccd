import numpy as np
import pandas as pd
import pytest

from sea_pyg.data.split import split_counts
from sea_pyg.data.synthetic import PRESETS, SyntheticPreset, make_synthetic


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic("tiny", seed=0)


@pytest.fixture(scope="module")
def small():
    # the only "small" generation in this file; features are not needed here
    return make_synthetic("small", seed=0, with_features=False)


def _recall_at_k(scores, data, k=20):
    """Test Recall@k with training items masked (MMRec protocol), averaged over test users."""
    df = data.interactions
    train = np.zeros((data.num_users, data.num_items), dtype=bool)
    test = np.zeros_like(train)
    tr, te = df[df.x_label == 0], df[df.x_label == 2]
    train[tr.userID, tr.itemID] = True
    test[te.userID, te.itemID] = True
    scores = np.where(train, -np.inf, np.broadcast_to(scores, train.shape))
    top = np.argpartition(-scores, k, axis=1)[:, :k]
    hits = np.take_along_axis(test, top, axis=1).sum(axis=1)
    n_test = test.sum(axis=1)
    return float((hits[n_test > 0] / n_test[n_test > 0]).mean())


def test_deterministic_per_seed(tiny):
    again = make_synthetic("tiny", seed=0)
    pd.testing.assert_frame_equal(tiny.interactions, again.interactions)
    for group in ("features", "factors"):
        a, b = getattr(tiny, group), getattr(again, group)
        assert list(a) == list(b)
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    other = make_synthetic("tiny", seed=1)
    assert not tiny.interactions.equals(other.interactions)
    assert not np.array_equal(tiny.features["text"], other.features["text"])


def test_without_features_same_interactions(tiny):
    bare = make_synthetic("tiny", seed=0, with_features=False)
    assert bare.features == {}
    pd.testing.assert_frame_equal(tiny.interactions, bare.interactions)
    np.testing.assert_array_equal(tiny.factors["user"], bare.factors["user"])


def test_shapes_dtypes_columns(tiny):
    p = PRESETS["tiny"]
    df = tiny.interactions
    assert tiny.name == "tiny"
    assert list(df.columns) == ["userID", "itemID", "x_label"]
    assert all(df[c].dtype == np.int64 for c in df.columns)
    assert list(tiny.features) == ["image", "text"]
    assert tiny.features["image"].shape == (p.num_items, 64)
    assert tiny.features["text"].shape == (p.num_items, 32)
    assert all(f.dtype == np.float32 for f in tiny.features.values())
    d_user = p.generic_dim + 2 * p.unique_dim + p.collab_dim
    expected = {
        "generic": (p.num_items, p.generic_dim),
        "unique_image": (p.num_items, p.unique_dim),
        "unique_text": (p.num_items, p.unique_dim),
        "collab": (p.num_items, p.collab_dim),
        "popularity": (p.num_items,),
        "user": (p.num_users, d_user),
    }
    assert {k: v.shape for k, v in tiny.factors.items()} == expected
    assert tiny.true_affinity([0, 3]).shape == (2, p.num_items)
    np.testing.assert_allclose(tiny.true_affinity([3])[0], tiny.true_affinity()[3], rtol=1e-5)


def test_ids_contiguous_counts_and_no_duplicates(tiny):
    df, p = tiny.interactions, PRESETS["tiny"]
    assert len(df) == p.num_interactions
    np.testing.assert_array_equal(np.unique(df.userID), np.arange(p.num_users))
    np.testing.assert_array_equal(np.unique(df.itemID), np.arange(p.num_items))  # all covered
    assert not df.duplicated(["userID", "itemID"]).any()
    per_user = df.groupby("userID").x_label.agg(
        n="size",
        train=lambda x: (x == 0).sum(),
        valid=lambda x: (x == 1).sum(),
        test=lambda x: (x == 2).sum(),
    )
    assert per_user.n.min() >= 5 and per_user.valid.min() >= 1 and per_user.test.min() >= 1
    train, valid, test = split_counts(per_user.n.to_numpy())
    np.testing.assert_array_equal(
        per_user[["train", "valid", "test"]].to_numpy().T, [train, valid, test]
    )


def test_feature_styles(tiny):
    norms = np.linalg.norm(tiny.features["text"], axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    image = tiny.features["image"]
    assert image.min() >= 0.0
    zero_fraction = (image == 0).mean()
    assert 0.5 < zero_fraction < 0.9  # sparse like post-ReLU activations
    assert not np.allclose(np.linalg.norm(image, axis=1), 1.0)


def test_features_carry_generic_not_other_unique():
    preset = SyntheticPreset("r2", 300, 1500, 3000, feature_dims={"image": 256, "text": 64})
    data = make_synthetic(preset, seed=0)

    def heldout_r2(x, y):
        half = len(x) // 2
        x = np.c_[x, np.ones(len(x))]
        w, *_ = np.linalg.lstsq(x[:half], y[:half], rcond=None)
        res = y[half:] - x[half:] @ w
        return 1.0 - (res**2).sum() / ((y[half:] - y[half:].mean(0)) ** 2).sum()

    text, image, f = data.features["text"], data.features["image"], data.factors
    assert heldout_r2(text, f["generic"]) > 0.8
    assert heldout_r2(text, f["unique_text"]) > 0.8
    assert heldout_r2(image, f["generic"]) > 0.7
    assert heldout_r2(text, f["unique_image"]) < 0.1
    assert heldout_r2(image, f["unique_text"]) < 0.1
    assert heldout_r2(text, f["collab"]) < 0.1


def test_planted_signal_is_learnable(small):
    rng = np.random.default_rng(0)
    df = small.interactions
    popularity = np.bincount(df[df.x_label == 0].itemID, minlength=small.num_items)
    random = _recall_at_k(rng.random((small.num_users, small.num_items)), small)
    pop = _recall_at_k(popularity.astype(float), small)
    oracle = _recall_at_k(small.true_affinity(), small)
    assert random < 0.05
    assert pop > 2 * random
    assert oracle > 2.5 * pop and oracle > 0.3


def test_real_size_count_close_to_target():
    data = make_synthetic("baby", seed=0, with_features=False)
    df, p = data.interactions, PRESETS["baby"]
    assert abs(len(df) - p.num_interactions) <= 0.02 * p.num_interactions
    assert df.userID.max() + 1 == p.num_users and df.itemID.nunique() == p.num_items
    assert df.groupby("userID").size().min() >= 5


def test_presets_and_errors():
    assert set(PRESETS) == {"tiny", "small", "baby", "sports", "clothing"}
    for name in ("small", "baby", "sports", "clothing"):
        assert dict(PRESETS[name].feature_dims) == {"image": 4096, "text": 384}
    with pytest.raises(ValueError, match="clothing"):
        make_synthetic("nope")
    with pytest.raises(ValueError, match="num_interactions"):
        make_synthetic(SyntheticPreset("bad", 10, 20, 30))  # < 5 per user
