import copy
import math

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn.losses import (
    CLUB,
    BPRLoss,
    EmbLoss,
    InfoNCE,
    NegativeL2,
    SoloSimLoss,
    bpr_loss,
    emb_loss,
    fit_clubs,
    info_nce_loss,
    negative_l2_loss,
    solosim_loss,
)

LN2 = math.log(2.0)
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


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
    club.fit(x, y, opt, 200)
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
    first = club.fit(x, y, opt, 1)
    assert isinstance(first, float) and first == pytest.approx(before, rel=1e-6)
    last = club.fit(x, y, opt, 100)
    assert last < before - 0.3
    assert x.grad is None
    # steps=0 only evaluates
    params = [p.clone() for p in club.parameters()]
    with torch.no_grad():
        now = club.learning_loss(x, y).item()
    assert club.fit(x, y, opt, 0) == pytest.approx(now, rel=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(params, club.parameters(), strict=True))


def test_club_fit_pairs_sums_the_learning_losses():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    club = CLUB(2, 2, 4).double()
    p1 = tuple(t.double() for t in _gaussian_pairs(32, 2, 0.3, gen))
    p2 = tuple(t.double() for t in _gaussian_pairs(32, 2, 0.9, gen))
    opt = torch.optim.SGD(club.parameters(), lr=0.1)
    expected = (club.learning_loss(*p1) + club.learning_loss(*p2)).item()
    assert club.fit_pairs([p1, p2], opt, 0) == pytest.approx(expected, abs=1e-12)
    # one SGD step equals a manual step on the summed loss
    twin = CLUB(2, 2, 4).double()
    twin.load_state_dict(club.state_dict())
    (club.learning_loss(*p1) + club.learning_loss(*p2)).backward()
    with torch.no_grad():
        manual = {k: p - 0.1 * p.grad for k, p in club.named_parameters()}
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    assert twin.fit_pairs([p1, p2], twin_opt, 1) == pytest.approx(expected, abs=1e-12)
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
        club.fit(x, y, opt, -1)
    with pytest.raises(ValueError, match="pairs"):
        club.fit_pairs([], opt, 1)


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
    from sea_pyg.nn.losses import _StackedCLUBs

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
    got = stacked.step()
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
    from sea_pyg.nn.losses import _is_standard_club

    torch.manual_seed(0)
    club = CLUB(3, 2, 4)
    assert _is_standard_club(club)
    club.p_mu[1] = torch.nn.Tanh()  # another activation: the hand-written gradient is wrong
    assert not _is_standard_club(club)
    twin = copy.deepcopy(club)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 3, generator=gen), torch.randn(20, 2, generator=gen)
    opt = torch.optim.SGD(club.parameters(), lr=0.1)
    club.fit(x, y, opt, 1)
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


# ------------------------------------------------------------------------------------------
# SoloSim
# ------------------------------------------------------------------------------------------


def test_solosim_hand_value():
    a = _t([[1.0, 0.0], [0.0, 1.0]])
    b = _t([[1.0, 0.0], [1.0, 1.0]])  # row 1 normalises to (1/sqrt2, 1/sqrt2)
    # tau = 0.5: mean of -2 + ln(e^2 + e^sqrt2) and -sqrt2 + ln(1 + e^sqrt2)
    expected = 0.3300846500601321
    assert solosim_loss(a, b, 0.5).item() == pytest.approx(expected, abs=1e-14)
    assert SoloSimLoss(0.5, chunk_size=1)(a, b).item() == pytest.approx(expected, abs=1e-14)


def test_solosim_equals_cross_entropy():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20, 6, dtype=torch.float64, generator=gen)
    b = torch.randn(20, 6, dtype=torch.float64, generator=gen)
    an, bn = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    target = torch.arange(20)
    expected = F.cross_entropy(an @ bn.T / 0.2, target)
    torch.testing.assert_close(SoloSimLoss()(a, b), expected)
    raw = F.cross_entropy(a @ b.T / 0.7, target)
    torch.testing.assert_close(SoloSimLoss(0.7, normalize=False)(a, b), raw)
    torch.testing.assert_close(SoloSimLoss(0.7, 3, normalize=False)(a, b), raw)


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float32, 1e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("chunk_size", [1, 7, 37, 100])
def test_solosim_chunked_equals_dense(dtype, tol, chunk_size):
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(37, 16, generator=gen).to(dtype).requires_grad_(True)
    b = torch.randn(37, 16, generator=gen).to(dtype).requires_grad_(True)
    dense = SoloSimLoss(0.2)(a, b)
    ga, gb = torch.autograd.grad(dense, (a, b))
    chunked = SoloSimLoss(0.2, chunk_size=chunk_size)(a, b)
    ca, cb = torch.autograd.grad(chunked, (a, b))
    assert chunked.dtype == dtype
    torch.testing.assert_close(chunked, dense, rtol=tol, atol=tol)
    torch.testing.assert_close(ca, ga, rtol=tol, atol=tol)
    torch.testing.assert_close(cb, gb, rtol=tol, atol=tol)


def test_solosim_gradcheck():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(6, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    for chunk in (None, 4):
        for normalize in (False, True):
            fn = SoloSimLoss(0.5, chunk_size=chunk, normalize=normalize)
            assert torch.autograd.gradcheck(fn, (a, b))
    # gradient w.r.t. one input only
    b_const = b.detach()
    assert torch.autograd.gradcheck(lambda a: solosim_loss(a, b_const, 0.5, 4), (a,))
    a_const = a.detach()
    assert torch.autograd.gradcheck(lambda b: solosim_loss(a_const, b, 0.5, 4), (b,))
    # without grad mode the chunked pass skips the gradient and returns the same value
    with torch.no_grad():
        assert solosim_loss(a, b, 0.5, 4).item() == pytest.approx(
            solosim_loss(a, b, 0.5).item(), rel=1e-12)
        assert info_nce_loss(a, b, 0.5, chunk_size=4).item() == pytest.approx(
            info_nce_loss(a, b, 0.5).item(), rel=1e-12)


def _max_saved_numel(fn) -> int:
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = fn()
    loss.backward()
    return max(sizes)


def test_chunked_path_saves_no_n_by_n_tensor():
    n, d = 64, 4
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(n, d, generator=gen, requires_grad=True)
    b = torch.randn(n, d, generator=gen, requires_grad=True)
    assert _max_saved_numel(lambda: solosim_loss(a, b, chunk_size=8)) < n * n
    assert _max_saved_numel(lambda: info_nce_loss(a, b, chunk_size=8)) < n * n
    assert _max_saved_numel(lambda: solosim_loss(a, b)) >= n * n  # the dense path does


def test_solosim_errors():
    a = torch.randn(4, 3)
    for bad in (0.0, -0.2, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            SoloSimLoss(bad)
        with pytest.raises(ValueError, match="temperature"):
            solosim_loss(a, a, bad)
    with pytest.raises(ValueError, match="chunk_size"):
        SoloSimLoss(chunk_size=0)
    with pytest.raises(ValueError, match="same shape"):
        SoloSimLoss()(a, torch.randn(5, 3))
    with pytest.raises(ValueError, match="2-D"):
        SoloSimLoss()(a[0], a[0])


# ------------------------------------------------------------------------------------------
# InfoNCE
# ------------------------------------------------------------------------------------------


def _naive_nt_xent(a, b, tau, symmetric):
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    n = a.size(0)

    def direction(u, v):
        total = 0.0
        for i in range(n):
            pos = math.exp((u[i] @ v[i]).item() / tau)
            den = sum(math.exp((u[i] @ v[j]).item() / tau) for j in range(n))
            den += sum(math.exp((u[i] @ u[j]).item() / tau) for j in range(n) if j != i)
            total += -math.log(pos / den)
        return total / n

    if symmetric:
        return (direction(a, b) + direction(b, a)) / 2
    return direction(a, b)


@pytest.mark.parametrize("symmetric", [True, False])
def test_info_nce_matches_naive_loop(symmetric):
    gen = torch.Generator().manual_seed(4)
    a = torch.randn(9, 5, dtype=torch.float64, generator=gen)
    b = torch.randn(9, 5, dtype=torch.float64, generator=gen)
    expected = _naive_nt_xent(a, b, 0.3, symmetric)
    loss = InfoNCE(0.3, symmetric=symmetric)
    assert loss(a, b).item() == pytest.approx(expected, abs=1e-12)
    chunked = InfoNCE(0.3, symmetric=symmetric, chunk_size=4)
    assert chunked(a, b).item() == pytest.approx(expected, abs=1e-12)


def test_info_nce_hand_value():
    a = _t([[1.0, 0.0], [0.0, 1.0]])
    b = _t([[1.0, 0.0], [1.0, 1.0]])  # c = <b_1 normalised, e_k> = 1/sqrt2
    # a->b: [-1 + ln(e + e^c + 1)] and [-c + ln(e^c + 2)]
    # b->a: [-1 + ln(e + 1 + e^c)] and [ln 3] (all three similarities of b_1 equal c)
    assert info_nce_loss(a, b, 1.0, symmetric=False).item() == pytest.approx(
        0.7173823777608692, abs=1e-14
    )
    assert InfoNCE(1.0)(a, b).item() == pytest.approx(0.8204875152141293, abs=1e-14)


def test_info_nce_symmetric_is_mean_of_directions():
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(12, 4, dtype=torch.float64, generator=gen)
    b = torch.randn(12, 4, dtype=torch.float64, generator=gen)
    ab = info_nce_loss(a, b, symmetric=False)
    ba = info_nce_loss(b, a, symmetric=False)
    torch.testing.assert_close(info_nce_loss(a, b), (ab + ba) / 2)
    assert not torch.allclose(ab, ba)
    # more negatives than SoloSim (which only contrasts against b)
    assert ab > solosim_loss(a, b)


@pytest.mark.parametrize("symmetric", [True, False])
def test_info_nce_chunked_equals_dense_and_gradcheck(symmetric):
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(23, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(23, 8, dtype=torch.float64, generator=gen, requires_grad=True)
    dense = info_nce_loss(a, b, 0.2, symmetric)
    chunked = info_nce_loss(a, b, 0.2, symmetric, chunk_size=5)
    torch.testing.assert_close(chunked, dense, rtol=1e-10, atol=1e-10)
    for g, h in zip(
        torch.autograd.grad(dense, (a, b)), torch.autograd.grad(chunked, (a, b)), strict=True
    ):
        torch.testing.assert_close(h, g, rtol=1e-10, atol=1e-10)
    small = (a[:5].detach().requires_grad_(True), b[:5].detach().requires_grad_(True))
    for chunk in (None, 2):
        assert torch.autograd.gradcheck(InfoNCE(0.5, symmetric=symmetric, chunk_size=chunk), small)


def test_info_nce_errors():
    with pytest.raises(ValueError, match="temperature"):
        InfoNCE(temperature=0)
    with pytest.raises(ValueError, match="same shape"):
        InfoNCE()(torch.randn(3, 2), torch.randn(3, 4))


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


# ------------------------------------------------------------------------------------------
# dtype / device
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_and_device_follow_the_inputs(device, dtype):
    gen = torch.Generator().manual_seed(8)
    a = torch.randn(10, 4, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(10, 4, generator=gen).to(device=device, dtype=dtype)
    club = CLUB(4, 4, 3).to(device=device, dtype=dtype)
    outputs = [
        bpr_loss(a[:, 0], b[:, 0], "log2"),
        emb_loss(a, b),
        club(a, b),
        club(a, b, estimator="all_pairs", generator=None),
        club(a, b, generator=torch.Generator().manual_seed(0)),  # CPU generator is fine
        club.learning_loss(a, b),
        SoloSimLoss()(a, b),
        SoloSimLoss(chunk_size=3)(a, b),
        InfoNCE()(a, b),
        InfoNCE(chunk_size=3)(a, b),
        NegativeL2()(a, b),
    ]
    for out in outputs:
        assert out.dtype == dtype and out.device.type == device and out.dim() == 0
    opt = torch.optim.Adam(club.parameters(), lr=1e-3)
    assert math.isfinite(club.fit(a, b, opt, 2))
