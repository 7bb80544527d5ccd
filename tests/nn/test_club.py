import copy
import math

import pytest
import torch

from sea_pyg.nn.losses import CLUB, club_gradient_step
from sea_pyg.nn.losses.club import _is_standard_club, _StackedCLUBs
from sea_pyg.train import fit_clubs


def _fit(club, x, y, opt, steps):
    """One estimator on one pair: what ``CLUB.fit`` was before the loop moved to train/."""
    return fit_clubs([(club, [(x, y)])], opt, steps)

LN2 = math.log(2.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _t(values, dtype=torch.float64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


# ------------------------------------------------------------------------------------------
# CLUB: exact maths on a hand-set network
# ------------------------------------------------------------------------------------------


def _hand_club(sign: float = 1.0, **kwargs) -> CLUB:
    """x_dim=1, y_dim=2: mu(x) = (sign * x, 1), sigma^2 = (1, 2) for every x."""
    club = CLUB(1, 2, 2, **kwargs).double()
    with torch.no_grad():
        lin1, _, lin2 = club.p_mu
        lin1.weight.copy_(_t([[1.0], [-1.0]]))  # hidden = (relu(x), relu(-x))
        lin1.bias.zero_()
        lin2.weight.copy_(_t([[sign, -sign], [0.0, 0.0]]))
        lin2.bias.copy_(_t([0.0, 1.0]))
        last = club.p_logvar[2]
        last.weight.zero_()
        last.bias.copy_(_t([0.0, math.atanh(LN2)]))  # logvar = tanh(bias) = (0, ln 2)
    return club


X_HAND = _t([[1.0], [-1.0]])
Y_HAND = _t([[1.0, 3.0], [-1.0, 1.0]])


def test_club_hand_network_outputs():
    mu, logvar = _hand_club().mu_logvar(X_HAND)
    torch.testing.assert_close(mu, _t([[1.0, 1.0], [-1.0, 1.0]]))
    torch.testing.assert_close(logvar, _t([[0.0, LN2], [0.0, LN2]]))


def test_club_log_likelihood_and_learning_loss():
    club = _hand_club()
    # row 0: 0 + (-(1-3)^2/4 - ln2/2); row 1: 0 + (0 - ln2/2)  ->  mean = -1/2 - ln2/2
    expected = -0.8465735902799727
    assert club.log_likelihood(X_HAND, Y_HAND).item() == pytest.approx(expected, abs=1e-14)
    assert club.learning_loss(X_HAND, Y_HAND).item() == pytest.approx(-expected, abs=1e-14)


def test_club_all_pairs_and_sample_hand_values():
    club = _hand_club()
    # all pairs: row 0 -> 2/2 - 2/4 = 0.5, row 1 -> 2/2 + 2/4 = 1.5, mean 1.0
    assert club(X_HAND, Y_HAND, estimator="all_pairs").item() == pytest.approx(1.0, abs=1e-14)
    # sample with N=2: identity permutation -> 0, swap -> (1 + 3) / 2 = 2
    seen = set()
    for seed in range(8):
        perm = torch.randperm(2, generator=torch.Generator().manual_seed(seed))
        value = club(X_HAND, Y_HAND, generator=torch.Generator().manual_seed(seed)).item()
        expected = 0.0 if perm.tolist() == [0, 1] else 2.0
        assert value == pytest.approx(expected, abs=1e-14)
        seen.add(expected)
    assert seen == {0.0, 2.0}


def test_club_scale_and_clamp():
    club = _hand_club(scale=0.5, clamp_min=0.0)
    assert club(X_HAND, Y_HAND, estimator="all_pairs").item() == pytest.approx(0.5, abs=1e-14)
    flipped = _hand_club(sign=-1.0)  # mu_0 = -x: the positives now fit worse than negatives
    assert flipped(X_HAND, Y_HAND, estimator="all_pairs").item() == pytest.approx(-1.0)
    swap = torch.Generator().manual_seed(
        next(
            s
            for s in range(100)
            if torch.randperm(2, generator=torch.Generator().manual_seed(s)).tolist() == [1, 0]
        )
    )
    state = swap.get_state()
    assert flipped(X_HAND, Y_HAND, generator=swap).item() == pytest.approx(-2.0)
    clamped = _hand_club(sign=-1.0, scale=0.5, clamp_min=0.0)
    swap.set_state(state)
    assert clamped(X_HAND, Y_HAND, generator=swap).item() == 0.0
    assert clamped(X_HAND, Y_HAND, estimator="all_pairs").item() == 0.0
    loose = _hand_club(sign=-1.0, scale=0.5, clamp_min=-0.75)
    swap.set_state(state)
    assert loose(X_HAND, Y_HAND, generator=swap).item() == pytest.approx(-0.75)
    assert loose(X_HAND, Y_HAND, estimator="all_pairs").item() == pytest.approx(-0.5)


def _naive_log_q(club, x, y):
    """log q(y_j | x_i) without the constant, as an N x N table of Python floats."""
    mu, logvar = club.mu_logvar(x)
    n, d = y.shape
    table = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            total = 0.0
            for k in range(d):
                var = math.exp(logvar[i, k].item())
                total += -((mu[i, k].item() - y[j, k].item()) ** 2) / (2 * var)
                total += -logvar[i, k].item() / 2
            table[i][j] = total
    return table


def test_club_estimators_match_naive_loops():
    torch.manual_seed(0)
    club = CLUB(3, 2, 5).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(7, 3, dtype=torch.float64, generator=gen)
    y = torch.randn(7, 2, dtype=torch.float64, generator=gen)
    table = _naive_log_q(club, x, y)
    n = 7
    positive = sum(table[i][i] for i in range(n)) / n
    all_pairs = positive - sum(table[i][j] for i in range(n) for j in range(n)) / n**2
    assert club(x, y, estimator="all_pairs").item() == pytest.approx(all_pairs, abs=1e-12)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(5)).tolist()
    sample = positive - sum(table[i][perm[i]] for i in range(n)) / n
    value = club(x, y, generator=torch.Generator().manual_seed(5)).item()
    assert value == pytest.approx(sample, abs=1e-12)
    assert club.log_likelihood(x, y).item() == pytest.approx(positive, abs=1e-12)
    # averaged over uniform random permutations, the sample estimator equals all_pairs
    gen = torch.Generator().manual_seed(2)
    mean = sum(club(x, y, generator=gen).item() for _ in range(2000)) / 2000
    assert mean == pytest.approx(all_pairs, abs=0.05 * abs(all_pairs) + 0.02)


def test_club_gradcheck():
    torch.manual_seed(0)
    club = CLUB(3, 2, 4).double()
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    y = torch.randn(6, 2, dtype=torch.float64, generator=gen, requires_grad=True)

    def sample(x, y):
        return club(x, y, generator=torch.Generator().manual_seed(7))

    assert torch.autograd.gradcheck(sample, (x, y))
    assert torch.autograd.gradcheck(lambda x, y: club(x, y, estimator="all_pairs"), (x, y))
    assert torch.autograd.gradcheck(club.learning_loss, (x, y))


# ------------------------------------------------------------------------------------------
# CLUB: fitting, and the bound on correlated Gaussians
# ------------------------------------------------------------------------------------------


def _gaussian_pairs(n, d, rho, gen):
    x = torch.randn(n, d, generator=gen)
    y = rho * x + math.sqrt(1.0 - rho**2) * torch.randn(n, d, generator=gen)
    return x, y


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.8])
def test_club_on_correlated_gaussians(rho):
    d = 4
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    club = CLUB(d, d, 16)
    x, y = _gaussian_pairs(8000, d, rho, gen)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    x_test, y_test = _gaussian_pairs(8000, d, rho, gen)  # fresh samples
    _fit(club, x, y, opt, 200)
    with torch.no_grad():
        bound = club(x_test, y_test, estimator="all_pairs").item()
        pgen = torch.Generator().manual_seed(1)
        sample = sum(club(x_test, y_test, generator=pgen).item() for _ in range(10)) / 10
    true_mi = -d / 2 * math.log(1.0 - rho**2)
    exact_club = d * rho**2 / (1.0 - rho**2)  # CLUB of the true conditional
    if rho == 0.0:
        assert abs(bound) < 0.02 and abs(sample) < 0.02
    else:
        # 10% relative. (For rho=0.8 the true conditional variance 0.36 lies just below the
        # tanh floor e^-1 of the variational family, which costs about 2%.)
        assert bound == pytest.approx(exact_club, rel=0.10)
        assert bound >= true_mi - 0.05
    assert sample == pytest.approx(bound, abs=0.02 + 0.02 * abs(bound))


def test_club_fit_detaches_and_decreases_the_loss():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    club = CLUB(3, 3, 8)
    x, y = _gaussian_pairs(256, 3, 0.6, gen)
    x.requires_grad_(True)
    opt = torch.optim.Adam(club.parameters(), lr=1e-2)
    before = club.learning_loss(x, y).item()
    first = _fit(club, x, y, opt, 1)
    assert isinstance(first, float) and first == pytest.approx(before, rel=1e-6)
    last = _fit(club, x, y, opt, 100)
    assert last < before - 0.3
    assert x.grad is None
    # steps=0 only evaluates
    params = [p.clone() for p in club.parameters()]
    with torch.no_grad():
        now = club.learning_loss(x, y).item()
    assert _fit(club, x, y, opt, 0) == pytest.approx(now, rel=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(params, club.parameters(), strict=True))


def test_fit_clubs_sums_the_learning_losses_of_one_estimators_pairs():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    club = CLUB(2, 2, 4).double()
    p1 = tuple(t.double() for t in _gaussian_pairs(32, 2, 0.3, gen))
    p2 = tuple(t.double() for t in _gaussian_pairs(32, 2, 0.9, gen))
    opt = torch.optim.SGD(club.parameters(), lr=0.1)
    expected = (club.learning_loss(*p1) + club.learning_loss(*p2)).item()
    assert fit_clubs([(club, [p1, p2])], opt, 0) == pytest.approx(expected, abs=1e-12)
    # one SGD step equals a manual step on the summed loss
    twin = CLUB(2, 2, 4).double()
    twin.load_state_dict(club.state_dict())
    (club.learning_loss(*p1) + club.learning_loss(*p2)).backward()
    with torch.no_grad():
        manual = {k: p - 0.1 * p.grad for k, p in club.named_parameters()}
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    assert fit_clubs([(twin, [p1, p2])], twin_opt, 1) == pytest.approx(expected, abs=1e-12)
    for k, p in twin.named_parameters():
        torch.testing.assert_close(p, manual[k])


def test_club_reset_parameters_and_repr():
    torch.manual_seed(0)
    club = CLUB(3, 2, 4, scale=0.5, clamp_min=0.0)
    before = [p.clone() for p in club.parameters()]
    club.reset_parameters()
    assert all(not torch.equal(p, q) for p, q in zip(before, club.parameters(), strict=True))
    assert "scale=0.5" in repr(club) and "clamp_min=0.0" in repr(club)


def test_club_errors():
    with pytest.raises(ValueError, match="hidden_dim"):
        CLUB(2, 2, 0)
    with pytest.raises(ValueError, match="scale"):
        CLUB(2, 2, 4, scale=0.0)
    club = CLUB(2, 3, 4)
    x, y = torch.randn(5, 2), torch.randn(5, 3)
    with pytest.raises(ValueError, match="estimator"):
        club(x, y, estimator="full")
    with pytest.raises(ValueError, match="`y` must have 3 columns"):
        club(x, torch.randn(5, 2))
    with pytest.raises(ValueError, match="same number of rows"):
        club(x, torch.randn(4, 3))
    with pytest.raises(ValueError, match="2-D"):
        club.learning_loss(torch.randn(2), y)
    opt = torch.optim.Adam(club.parameters())
    with pytest.raises(ValueError, match="steps"):
        _fit(club, x, y, opt, -1)


def _club_groups_for_fit(dtype=torch.float64, rows=(37, 37)):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    clubs = [CLUB(5, 3, 4).to(dtype) for _ in range(2)]
    groups = [
        (c, [(torch.randn(n, 5, generator=gen, dtype=dtype),
              torch.randn(n, 3, generator=gen, dtype=dtype)) for n in rows])
        for c in clubs
    ]
    return clubs, groups


def _autograd_total(groups):
    return sum(club.learning_loss(x, y) for club, pairs in groups for x, y in pairs)


def test_fit_clubs_hand_written_gradient_equals_autograd():

    clubs, groups = _club_groups_for_fit()
    # make some hidden units dead on some rows so relu' matters
    assert any((c.p_mu[0](x) <= 0).any() for c, p in groups for x, _ in p)
    loss = _autograd_total(groups)
    loss.backward()
    expected = [[p.grad.clone() for p in c.parameters()] for c in clubs]
    for c in clubs:
        c.zero_grad(set_to_none=True)
    stacked = _StackedCLUBs(
        clubs,
        [torch.cat([x for x, _ in p]) for _, p in groups],
        [torch.cat([y for _, y in p]) for _, p in groups],
        37,
    )
    got = stacked()
    assert got.item() == pytest.approx(loss.item(), rel=1e-12)
    for c, grads in zip(clubs, expected, strict=True):
        for p, g in zip(c.parameters(), grads, strict=True):
            assert p.grad.shape == p.shape
            torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rows", [(37, 37), (37, 20)])
def test_fit_clubs_follows_the_autograd_trajectory(rows):
    """Fast path (equal rows) and autograd fallback (unequal rows) both take the same Adam
    steps as a plain autograd loop on the summed learning loss."""
    clubs, groups = _club_groups_for_fit(rows=rows)
    ref = copy.deepcopy(clubs)
    ref_groups = [(r, pairs) for r, (_, pairs) in zip(ref, groups, strict=True)]
    opt = torch.optim.Adam([p for c in clubs for p in c.parameters()], lr=1e-2)
    ref_opt = torch.optim.Adam([p for c in ref for p in c.parameters()], lr=1e-2)
    for _ in range(20):
        ref_opt.zero_grad()
        ref_loss = _autograd_total(ref_groups)
        ref_loss.backward()
        ref_opt.step()
    last = fit_clubs(groups, opt, 20)
    assert last == pytest.approx(ref_loss.item(), rel=1e-9)
    for c, r in zip(clubs, ref, strict=True):
        for p, q in zip(c.parameters(), r.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-8, atol=1e-10)
    # steps=0 evaluates without touching the parameters
    before = [p.clone() for c in clubs for p in c.parameters()]
    with torch.no_grad():
        now = _autograd_total(groups).item()
    assert fit_clubs(groups, opt, 0) == pytest.approx(now, rel=1e-9)
    assert all(torch.equal(p, q) for p, q in
               zip(before, [p for c in clubs for p in c.parameters()], strict=True))


def test_fit_clubs_float32_and_custom_estimators():
    clubs, groups = _club_groups_for_fit(dtype=torch.float32)
    twin = copy.deepcopy(clubs)
    fit_clubs(groups, torch.optim.Adam([p for c in clubs for p in c.parameters()], lr=1e-2), 5)

    class Custom(CLUB):  # a subclass with its own network takes the autograd path
        def mu_logvar(self, x):
            mu, logvar = super().mu_logvar(x)
            return mu, logvar

    custom = []
    for c in twin:
        k = Custom(5, 3, 4)
        k.load_state_dict(c.state_dict())
        custom.append(k)
    custom_groups = [(k, pairs) for k, (_, pairs) in zip(custom, groups, strict=True)]
    fit_clubs(custom_groups,
              torch.optim.Adam([p for c in custom for p in c.parameters()], lr=1e-2), 5)
    for c, k in zip(clubs, custom, strict=True):
        for p, q in zip(c.parameters(), k.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)


def test_fit_clubs_changed_network_takes_the_autograd_path():

    torch.manual_seed(0)
    club = CLUB(3, 2, 4)
    assert _is_standard_club(club)
    club.p_mu[1] = torch.nn.Tanh()  # another activation: the hand-written gradient is wrong
    assert not _is_standard_club(club)
    twin = copy.deepcopy(club)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, 2, generator=gen)
    opt = torch.optim.SGD(club.parameters(), lr=0.1)
    _fit(club, x, y, opt, 1)
    twin.learning_loss(x, y).backward()
    with torch.no_grad():
        for p, q in zip(club.parameters(), twin.parameters(), strict=True):
            torch.testing.assert_close(p, q - 0.1 * q.grad)


def test_fit_clubs_errors():
    club = CLUB(2, 3, 4)
    opt = torch.optim.Adam(club.parameters())
    x, y = torch.randn(5, 2), torch.randn(5, 3)
    with pytest.raises(ValueError, match="at least one"):
        fit_clubs([], opt, 1)
    with pytest.raises(ValueError, match=r"groups\[0\]"):
        fit_clubs([(torch.nn.Linear(2, 2), [(x, y)])], opt, 1)
    with pytest.raises(ValueError, match=r"no \(x, y\) pair"):
        fit_clubs([(club, [])], opt, 1)
    with pytest.raises(ValueError, match="`y` must have 3 columns"):
        fit_clubs([(club, [(x, x)])], opt, 1)
    with pytest.raises(ValueError, match="steps"):
        fit_clubs([(club, [(x, y)])], opt, 1.5)


@pytest.mark.parametrize("standard", [True, False])
def test_club_gradient_step_sets_the_learning_loss_gradient(standard):
    # no optimizer, no loop in nn/: one call sets .grad to d(summed learning loss)/d(theta)
    torch.manual_seed(0)
    clubs = [CLUB(3, 3, 5).double() for _ in range(2)]
    if not standard:
        clubs[1].p_logvar[3] = torch.nn.Sigmoid()  # another architecture: the autograd path
    pairs = [[(torch.randn(9, 3, dtype=torch.float64), torch.randn(9, 3, dtype=torch.float64))]
             for _ in clubs]
    expected_loss = sum(c.learning_loss(x, y) for c, p in zip(clubs, pairs, strict=True)
                        for x, y in p)
    expected = torch.autograd.grad(expected_loss, [w for c in clubs for w in c.parameters()])
    step = club_gradient_step(list(zip(clubs, pairs, strict=True)))
    assert isinstance(step, _StackedCLUBs) == standard
    for w in (w for c in clubs for w in c.parameters()):
        w.grad = None
    assert step(False) is None
    got = [w.grad for c in clubs for w in c.parameters()]
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)
    for w in (w for c in clubs for w in c.parameters()):
        w.grad = None
    assert float(step(True)) == pytest.approx(float(expected_loss.detach()), rel=1e-12)
