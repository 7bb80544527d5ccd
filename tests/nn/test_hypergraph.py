import math

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn import HypergraphPropagation, gumbel_softmax

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------
# Gumbel-softmax
# ------------------------------------------------------------------------------------------


def test_gumbel_softmax_without_noise_is_the_tempered_softmax():
    logits = torch.tensor([[0.0, math.log(2.0)], [math.log(3.0), 0.0]])
    state = torch.get_rng_state()
    # tau = 1: (1, 2) / 3 and (3, 1) / 4; tau = 0.5 squares the odds: (1, 4) / 5, (9, 1) / 10
    out = gumbel_softmax(logits, 1.0, noise=False)
    torch.testing.assert_close(out, torch.tensor([[1 / 3, 2 / 3], [3 / 4, 1 / 4]]))
    out = gumbel_softmax(logits, 0.5, noise=False)
    torch.testing.assert_close(out, torch.tensor([[1 / 5, 4 / 5], [9 / 10, 1 / 10]]))
    assert torch.equal(torch.get_rng_state(), state)  # draws nothing


def test_gumbel_softmax_noise_is_minus_log_exponential():
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(3)
    out = gumbel_softmax(logits, 0.2, generator=gen)
    e = torch.empty(2, 3).exponential_(generator=torch.Generator().manual_seed(3))
    expected = torch.softmax((logits - e.log()) / 0.2, dim=-1)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(out.sum(-1), torch.ones(2))
    # along another dim, and with the same draws as torch's own gumbel_softmax
    torch.manual_seed(11)
    mine = gumbel_softmax(logits, 0.7, dim=0)
    torch.manual_seed(11)
    theirs = F.gumbel_softmax(logits, tau=0.7, hard=False, dim=0)
    assert torch.equal(mine, theirs)
    torch.testing.assert_close(mine.sum(0), torch.ones(3))


def test_gumbel_softmax_is_seeded_random_and_differentiable():
    logits = torch.zeros(4, 3, requires_grad=True)
    torch.manual_seed(0)
    a = gumbel_softmax(logits, 0.2)
    b = gumbel_softmax(logits, 0.2)
    torch.manual_seed(0)
    c = gumbel_softmax(logits, 0.2)
    assert not torch.equal(a, b) and torch.equal(a, c)
    (a * torch.arange(3.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    # the softmax Jacobian has zero row sums: the gradient of each row sums to 0
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(4))
    for bad in (0.0, -1.0, float("nan"), True):
        with pytest.raises(ValueError, match="temperature"):
            gumbel_softmax(logits, bad)


# ------------------------------------------------------------------------------------------
# Hypergraph propagation
# ------------------------------------------------------------------------------------------


def _incidences():
    items = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])  # 3 items, 2 hyperedges
    users = torch.tensor([[1.0, 0.0], [0.25, 0.75]])  # 2 users
    return items, users


def test_hypergraph_propagation_hand_computed():
    items, users = _incidences()
    x = torch.tensor([[1.0], [2.0], [3.0]])
    # layer 1: Z = H_I^T x = (1 + 1, 1 + 3) = (2, 4); items H_I Z = (2, 3, 4); users (2, 3.5)
    u, i = HypergraphPropagation(1)(x, items, users)
    assert i.flatten().tolist() == [2.0, 3.0, 4.0]
    assert u.flatten().tolist() == [2.0, 3.5]
    # layer 2 from (2, 3, 4): Z = (3.5, 5.5); items (3.5, 4.5, 5.5); users (3.5, 5.0)
    u, i = HypergraphPropagation(2)(x, items, users)
    assert i.flatten().tolist() == [3.5, 4.5, 5.5]
    assert u.flatten().tolist() == [3.5, 5.0]


def test_hypergraph_propagation_matches_dense_and_backpropagates():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    items = torch.rand(6, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    users = torch.rand(5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    u, i = HypergraphPropagation(3)(x, items, users)
    a = items @ items.T  # item -> item through the hyperedges
    torch.testing.assert_close(i, a @ a @ a @ x)
    torch.testing.assert_close(u, users @ items.T @ a @ a @ x)
    assert torch.autograd.gradcheck(
        lambda x, h, g: HypergraphPropagation(2)(x, h, g), (x, items, users)
    )
    assert list(HypergraphPropagation(1).parameters()) == []


def test_hypergraph_propagation_errors():
    items, users = _incidences()
    with pytest.raises(ValueError, match="num_layers"):
        HypergraphPropagation(0)
    with pytest.raises(ValueError, match="item_incidence"):
        HypergraphPropagation()(torch.ones(4, 2), items, users)
    with pytest.raises(ValueError, match="same hyperedges"):
        HypergraphPropagation()(torch.ones(3, 2), items, torch.ones(2, 3))
