import pytest
import torch

from sea_pyg.nn.losses import NegativeL2, negative_l2_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _t(values, dtype=torch.float64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# ------------------------------------------------------------------------------------------
# NegativeL2
# ------------------------------------------------------------------------------------------


def test_negative_l2_hand_values():
    x = _t([[1.0, 0.0], [0.0, 2.0]])
    y = _t([[0.0, 1.0], [0.0, -1.0]])
    # raw: -(||(1,-1)||^2 + ||(0,3)||^2) / 2 = -(2 + 9) / 2
    assert NegativeL2(normalize=False)(x, y).item() == pytest.approx(-5.5, abs=1e-15)
    # normalised: orthogonal -> 2, antiparallel -> 4
    assert NegativeL2()(x, y).item() == pytest.approx(-3.0, abs=1e-15)
    assert negative_l2_loss(x, x).item() == pytest.approx(0.0, abs=1e-15)
    assert negative_l2_loss(x, -3 * x).item() == pytest.approx(-4.0, abs=1e-15)


def test_negative_l2_bounded_and_gradcheck():
    gen = torch.Generator().manual_seed(7)
    for _ in range(5):
        x = torch.randn(50, 3, dtype=torch.float64, generator=gen) * 10
        y = torch.randn(50, 3, dtype=torch.float64, generator=gen)
        assert -4.0 <= NegativeL2()(x, y).item() <= 0.0
    x = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randn(4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(NegativeL2(), (x, y))
    assert torch.autograd.gradcheck(NegativeL2(normalize=False), (x, y))
    with pytest.raises(ValueError, match="same shape"):
        NegativeL2()(x, y[:3])
