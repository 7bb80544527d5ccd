import math

import pytest
import torch

from sea_pyg.nn.losses import BPRLoss, EmbLoss, bpr_loss, emb_loss

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _t(values, dtype=torch.float64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# ------------------------------------------------------------------------------------------
# BPR
# ------------------------------------------------------------------------------------------


def test_bpr_hand_values():
    pos, neg = _t([2.0, 0.0]), _t([1.0, 1.0])  # gaps +1, -1
    # -(ln s(1) + ln s(-1)) / 2 = 1/2 + ln(1 + e^-1)
    assert bpr_loss(pos, neg, "logsigmoid").item() == pytest.approx(0.8132616875182228, abs=1e-15)
    # the 1e-10 epsilon lowers the loss by about 2.5e-10
    assert bpr_loss(pos, neg, "mmrec").item() == pytest.approx(0.8132616872639148, abs=1e-15)
    assert bpr_loss(pos, neg).item() == pytest.approx(0.8132616872639148, abs=1e-15)
    assert bpr_loss(pos, neg, "log2").item() == pytest.approx(1.17328860352753, abs=1e-14)


def test_bpr_large_negative_gap():
    pos, neg = _t([0.0]), _t([30.0])
    # ln(1e-10 + s(-30)) is dominated by the epsilon
    assert bpr_loss(pos, neg, "mmrec").item() == pytest.approx(23.02491560519617, rel=1e-12)
    assert bpr_loss(pos, neg, "logsigmoid").item() == pytest.approx(30.000000000000092, rel=1e-12)
    assert bpr_loss(pos, neg, "log2").item() == pytest.approx(43.280851226669036, rel=1e-12)


def test_bpr_log2_has_no_epsilon_and_overflows_in_float32():
    pos, neg = torch.tensor([0.0]), torch.tensor([200.0])
    assert math.isinf(bpr_loss(pos, neg, "log2").item())
    assert bpr_loss(pos, neg, "logsigmoid").item() == pytest.approx(200.0)
    assert bpr_loss(pos, neg, "mmrec").item() == pytest.approx(23.02585, rel=1e-5)


def test_bpr_log2_is_natural_over_ln2_with_scaled_gradient():
    gen = torch.Generator().manual_seed(0)
    pos = torch.randn(64, dtype=torch.float64, generator=gen, requires_grad=True)
    neg = torch.randn(64, dtype=torch.float64, generator=gen)
    l2 = bpr_loss(pos, neg, "log2")
    ln = bpr_loss(pos, neg, "logsigmoid")
    assert l2.item() == pytest.approx(ln.item() / LN2, rel=1e-12)
    (g2,) = torch.autograd.grad(l2, pos)
    (gn,) = torch.autograd.grad(ln, pos)
    torch.testing.assert_close(g2, gn / LN2, rtol=1e-12, atol=1e-15)


def test_bpr_module_and_dtype():
    pos, neg = _t([[1.0, -2.0]]), _t([[0.5, 0.5]])
    for variant in ("mmrec", "logsigmoid", "log2"):
        out = BPRLoss(variant)(pos, neg)
        assert out.dtype == torch.float64 and out.dim() == 0
        assert out.item() == bpr_loss(pos, neg, variant).item()
    assert "log2" in repr(BPRLoss("log2"))


def test_bpr_errors():
    with pytest.raises(ValueError, match="variant"):
        BPRLoss("ln")
    with pytest.raises(ValueError, match="variant"):
        bpr_loss(_t([1.0]), _t([0.0]), "bce")
    with pytest.raises(ValueError, match="same shape"):
        bpr_loss(_t([1.0, 2.0]), _t([[0.0], [1.0]]))
    with pytest.raises(ValueError, match="empty"):
        bpr_loss(_t([]), _t([]))


# ------------------------------------------------------------------------------------------
# EmbLoss
# ------------------------------------------------------------------------------------------


def test_emb_loss_hand_values():
    a, b = _t([[3.0, 4.0]]), _t([[1.0, 0.0], [0.0, 1.0]])
    # un-squared Frobenius norms 5 and sqrt(2), divided by the LAST argument's 2 rows
    assert emb_loss(a, b).item() == pytest.approx(3.2071067811865475, abs=1e-15)
    assert EmbLoss()(a, b).item() == pytest.approx(3.2071067811865475, abs=1e-15)
    assert emb_loss(b, a).item() == pytest.approx(5.0 + math.sqrt(2.0), abs=1e-15)
    assert emb_loss(a).item() == pytest.approx(5.0)
    assert emb_loss(a, b).dtype == torch.float64


def test_emb_loss_gradient_and_errors():
    a = _t([[3.0, 4.0]], requires_grad=True)
    emb_loss(a).backward()
    torch.testing.assert_close(a.grad, _t([[0.6, 0.8]]))
    with pytest.raises(ValueError, match="at least one"):
        emb_loss()
    with pytest.raises(ValueError, match="last embedding"):
        emb_loss(a, torch.tensor(1.0))
