import math

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn import CandidateInfoNCE, candidate_info_nce_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _t(values, requires_grad=False):
    return torch.tensor(values, dtype=torch.float64, requires_grad=requires_grad)


def test_hand_value_sum_and_mean():
    anchors = _t([[1.0, 0.0], [0.0, 2.0]])  # normalise to (1, 0) and (0, 1)
    candidates = _t([[1.0, 0.0], [0.0, 3.0], [1.0, 1.0]])  # (1, 0), (0, 1), (1, 1)/sqrt2
    target = torch.tensor([0, 2])
    r = 1 / math.sqrt(2)
    # tau = 0.5: row 0 cosines (1, 0, r), positive 0; row 1 cosines (0, 1, r), positive 2
    row0 = -2.0 + math.log(math.exp(2.0) + 1.0 + math.exp(2 * r))
    row1 = -2 * r + math.log(1.0 + math.exp(2.0) + math.exp(2 * r))
    loss = candidate_info_nce_loss(anchors, candidates, target, 0.5)
    assert loss.item() == pytest.approx(row0 + row1, abs=1e-12)
    mean = candidate_info_nce_loss(anchors, candidates, target, 0.5, reduction="mean")
    assert mean.item() == pytest.approx((row0 + row1) / 2, abs=1e-12)
    chunked = CandidateInfoNCE(0.5, chunk_size=1)(anchors, candidates, target)
    assert chunked.item() == pytest.approx(row0 + row1, abs=1e-12)
    # a repeated anchor counts once per occurrence
    twice = candidate_info_nce_loss(anchors[[0, 0, 1]], candidates, torch.tensor([0, 0, 2]), 0.5)
    assert twice.item() == pytest.approx(2 * row0 + row1, abs=1e-12)


def test_equals_cross_entropy_without_normalisation():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(7, 4, dtype=torch.float64, generator=gen)
    c = torch.randn(11, 4, dtype=torch.float64, generator=gen)
    t = torch.randint(0, 11, (7,), generator=gen)
    expected = F.cross_entropy(a @ c.T / 0.3, t, reduction="sum")
    got = candidate_info_nce_loss(a, c, t, 0.3, normalize=False)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(
        candidate_info_nce_loss(a, c, t, 0.3, normalize=False, chunk_size=3), expected
    )


@pytest.mark.parametrize("chunk_size", [1, 4, 9, 50])
def test_chunked_equals_dense_values_and_gradients(chunk_size):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(9, 5, generator=gen, requires_grad=True)
    c = torch.randn(30, 5, generator=gen, requires_grad=True)
    t = torch.randint(0, 30, (9,), generator=gen)
    dense = candidate_info_nce_loss(a, c, t)
    ga, gc = torch.autograd.grad(dense, (a, c))
    chunked = candidate_info_nce_loss(a, c, t, chunk_size=chunk_size)
    ca, cc = torch.autograd.grad(chunked, (a, c))
    torch.testing.assert_close(chunked, dense, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ca, ga, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cc, gc, rtol=1e-5, atol=1e-5)
    # the positive's gradient reaches the candidate table through the target rows too
    assert gc[t].abs().sum() > 0


def test_dense_gradcheck():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    c = torch.randn(5, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    t = torch.tensor([4, 0, 4])
    assert torch.autograd.gradcheck(lambda a, c: candidate_info_nce_loss(a, c, t), (a, c))


def test_errors_name_the_argument():
    a, c = torch.ones(2, 3), torch.ones(4, 3)
    with pytest.raises(ValueError, match="target"):
        candidate_info_nce_loss(a, c, torch.tensor([0]))
    with pytest.raises(ValueError, match="target"):
        candidate_info_nce_loss(a, c, torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="target"):
        candidate_info_nce_loss(a, c, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="candidates"):
        candidate_info_nce_loss(a, torch.ones(4, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="reduction"):
        candidate_info_nce_loss(a, c, torch.tensor([0, 1]), reduction="none")
    with pytest.raises(ValueError, match="temperature"):
        CandidateInfoNCE(0.0)
    with pytest.raises(ValueError, match="chunk_size"):
        CandidateInfoNCE(chunk_size=0)
    assert "reduction='sum'" in repr(CandidateInfoNCE())
