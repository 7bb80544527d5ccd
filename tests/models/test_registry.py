"""The registry's declared search spaces."""

import pytest

from sea_pyg.models import MODELS, Recommender
from sea_pyg.models.registry import register_model


class _Toy(Recommender):
    def __init__(self, num_users, num_items, embedding_dim=8, reg_weight=1e-4):
        super().__init__()


def _cleanup(*names):
    for n in names:
        MODELS.pop(n, None)


def test_search_space_is_kept_for_the_name_and_its_presets():
    try:
        register_model(
            "toy-space", "toy", presets={"toy-space-b": ("b", {"embedding_dim": 4})},
            search_space={"reg_weight": [1e-4, 1e-3], "lr": (1e-3,)},
        )(_Toy)
        for name in ("toy-space", "toy-space-b"):
            assert dict(MODELS[name].search_space) == {"reg_weight": (1e-4, 1e-3), "lr": (1e-3,)}
    finally:
        _cleanup("toy-space", "toy-space-b")


@pytest.mark.parametrize(
    "space, words",
    [({"dropout": [0.1]}, "'dropout'"), ({"reg_weight": []}, "no values")],
)
def test_bad_search_space_is_refused(space, words):
    with pytest.raises(ValueError, match=words):
        register_model("toy-bad", "toy", search_space=space)(_Toy)
    assert "toy-bad" not in MODELS

