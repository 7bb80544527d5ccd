"""WassersteinCritic and the WGAN-GP gradient penalty against hand computations."""

import pytest
import torch
from torch import nn

from sea_pyg.nn import AuxiliaryEstimator, WassersteinCritic, gradient_penalty
from sea_pyg.train import fit_estimator
from sea_pyg.train.auxiliary import AuxiliaryTraining

pytestmark = pytest.mark.usefixtures("one_thread")


class _Square(nn.Module):
    def forward(self, x):
        return (x**2).sum(1)


def test_gradient_penalty_of_a_known_critic():
    # D(x) = ||x||^2: grad = 2 x_hat, penalty = mean (2 ||x_hat|| - 1)^2
    real = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    fake = torch.tensor([[0.0, 1.0], [2.0, 2.0]], dtype=torch.float64)
    alpha = torch.tensor([[0.25], [0.5]], dtype=torch.float64)
    # x_hat = [0.25, 0.75], [1, 2]
    want = ((2 * (0.25**2 + 0.75**2) ** 0.5 - 1) ** 2 + (2 * 5**0.5 - 1) ** 2) / 2
    got = gradient_penalty(_Square(), real, fake, alpha)
    assert got.item() == pytest.approx(want, abs=1e-12)
    with pytest.raises(ValueError, match="one value per row"):
        gradient_penalty(_Square(), real, fake, alpha[:1])
    with pytest.raises(ValueError, match="one shape"):
        gradient_penalty(_Square(), real, fake[:, :1], alpha)


def _critic(**kw):
    torch.manual_seed(0)
    c = WassersteinCritic(
        3,
        hidden=(2, 1),
        dropout=(0.31, 0.5),
        negative_slope=1.0,
        scale=100.0,
        gp_weight=0.3,
        lr=3e-4,
        betas=(0.5, 0.9),
        **kw,
    ).double()
    with torch.no_grad():  # non-trivial batch-norm state
        bn1, bn2 = c.net[2], c.net[6]
        bn1.running_mean.copy_(torch.tensor([0.1, -0.2]))
        bn1.running_var.copy_(torch.tensor([2.0, 0.5]))
        bn1.weight.copy_(torch.tensor([1.5, -0.5]))
        bn1.bias.copy_(torch.tensor([0.1, 0.2]))
        bn2.running_mean.fill_(0.3)
        bn2.running_var.fill_(4.0)
    return c.eval()


def _affine(c):
    """With slope 1 and eval batch norm the critic is s * sigmoid(c^T x + c0): (c, c0)."""
    lin1, bn1, lin2, bn2, lin3 = c.net[0], c.net[2], c.net[4], c.net[6], c.net[8]

    def bn(layer):
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return torch.diag(scale), layer.bias - scale * layer.running_mean

    s1, t1 = bn(bn1)
    s2, t2 = bn(bn2)
    w = lin3.weight @ s2 @ lin2.weight @ s1 @ lin1.weight  # (1, 3)
    b = lin3.weight @ (s2 @ (lin2.weight @ (s1 @ lin1.bias + t1) + lin2.bias) + t2) + lin3.bias
    return w.detach().view(-1), b.detach().view(())


def test_critic_is_the_documented_mlp_and_its_loss_is_wgan_gp():
    c = _critic()
    w, b = _affine(c)
    x = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([[0.0, 1.0, 1.0], [-1.0, 0.0, 0.5]], dtype=torch.float64)
    d = lambda v: 100 * torch.sigmoid(v @ w + b)  # noqa: E731
    assert torch.allclose(c(x), d(x), atol=1e-10)
    alpha = torch.tensor([[0.3], [0.9]], dtype=torch.float64)
    hat = alpha * x + (1 - alpha) * y
    sig = torch.sigmoid(hat @ w + b)
    grad_norm = (100 * sig * (1 - sig)) * w.norm()  # |dD/dx| = s sigma' ||c||
    gp = ((grad_norm - 1) ** 2).mean()
    want = -d(x).mean() + d(y).mean() + 0.3 * gp
    assert c.critic_loss(x, y, alpha).item() == pytest.approx(want.item(), rel=1e-10)
    assert c.generator_loss(y).item() == pytest.approx(-d(y).mean().item(), rel=1e-12)
    # layer order: Linear, LeakyReLU(1), BN, Dropout, Linear, LeakyReLU(1), BN, Dropout, Linear
    kinds = [type(m).__name__ for m in c.net]
    assert kinds == ["Linear", "LeakyReLU", "BatchNorm1d", "Dropout"] * 2 + ["Linear", "Sigmoid"]
    assert [m.p for m in c.net if isinstance(m, nn.Dropout)] == [0.31, 0.5]
    fresh = WassersteinCritic(5, (2, 1), (0.0, 0.0))
    assert all(float(m.bias.abs().sum()) == 0 for m in fresh.net if isinstance(m, nn.Linear))


def test_critic_estimator_fits_only_the_critic_with_its_own_betas():
    c = _critic().train()
    real = torch.randn(6, 3, dtype=torch.float64)
    fake = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    (est,) = c.auxiliary_estimators()
    assert isinstance(est, AuxiliaryEstimator)
    assert est.name == "critic_loss" and est.steps == 1 and est.lr == 3e-4
    assert est.betas == (0.5, 0.9)
    assert {id(p) for p in est.parameters} == {id(p) for p in c.parameters()}
    training = AuxiliaryTraining([("critic.critic_loss", est)])
    opt = training.optimizers["critic.critic_loss"]
    assert opt.param_groups[0]["betas"] == (0.5, 0.9)
    assert opt.param_groups[0]["lr"] == 3e-4
    assert training.step() == {}  # nothing remembered yet
    c.remember(real, fake)
    before = [p.detach().clone() for p in c.parameters()]
    losses = training.step()
    assert set(losses) == {"critic_loss"} and torch.isfinite(losses["critic_loss"])
    assert all(
        not torch.equal(a, p)
        for a, p in zip(before, c.parameters(), strict=True)
        if p.requires_grad
    )
    assert fake.grad is None  # the remembered rows are detached
    assert fit_estimator(est, opt) is None  # consumed


def test_critic_step_lowers_its_loss_on_fixed_rows():
    torch.manual_seed(1)
    c = WassersteinCritic(
        4, (8, 4), (0.0, 0.0), negative_slope=0.2, scale=1.0, gp_weight=0.0, lr=1e-2
    ).eval()  # eval: batch norm does not re-centre each call
    real = torch.randn(32, 4) + 2.0
    fake = torch.randn(32, 4) - 2.0
    (est,) = c.auxiliary_estimators()
    opt = torch.optim.Adam(est.parameters, lr=est.lr, betas=est.betas)
    first = None
    for _ in range(30):
        c.remember(real, fake)
        loss = fit_estimator(est, opt)
        first = loss if first is None else first
    assert loss < first - 0.5  # D(real) pushed up, D(fake) down: -1 <= loss <= 1


def test_critic_argument_errors():
    with pytest.raises(ValueError, match="dropout"):
        WassersteinCritic(8, (2, 1), (0.1,))
    with pytest.raises(ValueError, match="sizes"):
        WassersteinCritic(8, (0, 1), (0.1, 0.1))
    with pytest.raises(ValueError, match="gp_weight"):
        WassersteinCritic(8, (2, 1), (0.1, 0.1), gp_weight=-1)
    c = WassersteinCritic(8, (2, 1), (0.1, 0.1))
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        c.remember(torch.zeros(2, 8), torch.zeros(2, 7))
