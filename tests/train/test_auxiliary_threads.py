"""The estimators' inner steps run on one intra-op thread on the CPU, and the thread count
comes back afterwards (even after an error)."""

from __future__ import annotations

import pytest
import torch

from sea_pyg.nn import AuxiliaryEstimator
from sea_pyg.train import AuxiliaryTraining


def _estimator(seen: list[int], fail: bool = False) -> AuxiliaryEstimator:
    w = torch.nn.Parameter(torch.ones(3))

    def prepare():
        def step(with_loss: bool):
            seen.append(torch.get_num_threads())
            if fail:
                raise RuntimeError("planted")
            loss = (w**2).sum()
            w.grad = 2 * w.detach()
            return loss.detach() if with_loss else None

        return step

    return AuxiliaryEstimator("toy", (w,), 0.1, 3, prepare)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_inner_steps_run_on_one_thread(two_threads):
    seen: list[int] = []
    aux = AuxiliaryTraining([("toy", _estimator(seen))])
    out = aux.step()
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2
    # Adam (lr 0.1) moves each weight by ~0.1 per step: the last loss is taken at w = 0.8
    assert out["toy"].dim() == 0 and abs(float(out["toy"]) - 3 * 0.8**2) < 5e-3


def test_thread_count_restored_after_an_error(two_threads):
    aux = AuxiliaryTraining([("toy", _estimator([], fail=True))])
    with pytest.raises(RuntimeError, match="planted"):
        aux.step()
    assert torch.get_num_threads() == 2
