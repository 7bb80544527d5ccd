"""Fused feature transform, SEA encoder pieces and the separate-learning module."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sea_pyg.nn import (
    CLUB,
    ModalGCNEncoder,
    ProjectionHead,
    SeparateLearning,
    bipartite_norm_adj,
    linear_then_consumers,
    negative_l2_loss,
    solosim_loss,
)
from sea_pyg.train import fit_clubs, fit_estimator

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- fused transform
def _consumers(d):
    torch.manual_seed(0)
    return [
        (nn.Linear(d, 7), (0, d)),
        (nn.Linear(d // 2, 3), (0, d // 2)),
        (nn.Linear(d - d // 2, 2, bias=False), (d // 2, d)),
        (None, (d // 2, d)),
    ]


@pytest.mark.parametrize("bias", [True, False])
def test_fused_equals_naive_values_and_gradients(bias):
    torch.manual_seed(1)
    x = torch.randn(20, 12, dtype=torch.float64)
    lin = nn.Linear(12, 10, bias=bias).double()
    cons = [(None if c is None else c.double(), s) for c, s in _consumers(10)]
    outs = {}
    grads = {}
    for fused in (False, True):
        for p in lin.parameters():
            p.grad = None
        for c, _ in cons:
            if c is not None:
                c.zero_grad(set_to_none=True)
        out = linear_then_consumers(x, lin, cons, fused=fused)
        # a loss touching every output non-linearly
        loss = sum((o.sin() * (k + 1)).sum() for k, o in enumerate(out))
        loss.backward()
        outs[fused] = [o.detach() for o in out]
        grads[fused] = [p.grad.clone() for p in lin.parameters()] + [
            p.grad.clone() for c, _ in cons if c is not None for p in c.parameters()
        ]
    # explicit reference: T = x W^T + b, consumer on its columns
    t = lin(x)
    assert torch.allclose(outs[False][0], cons[0][0](t))
    assert torch.allclose(outs[False][3], t[:, 5:])
    for a, b in zip(outs[False], outs[True], strict=True):
        assert a.shape == b.shape
        assert torch.allclose(a, b, atol=1e-12)
    for a, b in zip(grads[False], grads[True], strict=True):
        assert torch.allclose(a, b, atol=1e-10)


def test_fused_gradient_reaches_a_learned_input():
    torch.manual_seed(2)
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    lin = nn.Linear(5, 4).double()
    cons = [(nn.Linear(2, 3).double(), (2, 4))]
    assert torch.autograd.gradcheck(
        lambda inp: linear_then_consumers(inp, lin, cons, fused=True)[0], (x,)
    )


def test_fused_rejects_bad_consumers():
    lin = nn.Linear(4, 6)
    with pytest.raises(ValueError, match="at least one"):
        linear_then_consumers(torch.randn(2, 4), lin, [])
    with pytest.raises(ValueError, match=r"reads columns \[4, 8\)"):
        linear_then_consumers(torch.randn(2, 4), lin, [(None, (4, 8))])
    with pytest.raises(ValueError, match="takes 3 inputs but reads 2 columns"):
        linear_then_consumers(torch.randn(2, 4), lin, [(nn.Linear(3, 1), (0, 2))])


# ---------------------------------------------------------------------------- encoder / head
def test_modal_gcn_encoder_hand_computed():
    # 2 users, 2 items; edges u0-i0, u0-i1, u1-i1
    ei = torch.tensor([[0, 0, 1], [0, 1, 1]])
    adj = bipartite_norm_adj(ei, 2, 2, binarize=False, eps=0.0)
    torch.manual_seed(3)
    enc = ModalGCNEncoder(2, feature_dim=3, embedding_dim=4, hidden_dim=5, num_layers=2)
    feats = torch.randn(2, 3)
    out = enc(feats, adj)
    h = enc.mlp_out(F.leaky_relu(enc.mlp(feats), 0.01))
    x0 = F.normalize(torch.cat([enc.preference, h]), dim=-1)
    a = adj.to_dense()
    # degrees: u0 2, u1 1, i0 1, i1 2
    expected_a = torch.zeros(4, 4)
    for u, i, w in [(0, 2, 1 / 2**0.5), (0, 3, 1 / 2), (1, 3, 1 / 2**0.5)]:
        expected_a[u, i] = expected_a[i, u] = w
    assert torch.allclose(a, expected_a)
    assert torch.allclose(out, x0 + a @ x0 + a @ a @ x0, atol=1e-6)
    assert out.shape == (4, 4)
    # xavier_normal on (U, d): std sqrt(2 / (U + d)); check on a large table
    big = ModalGCNEncoder(3000, 3, embedding_dim=64)
    assert abs(big.preference.std().item() - (2 / (3000 + 64)) ** 0.5) < 2e-3


def test_projection_head_shapes_and_norm():
    torch.manual_seed(4)
    head = ProjectionHead(10, hidden_dim=8, out_dim=3)
    z = head(torch.randn(16, 10))
    assert z.shape == (16, 3)
    assert torch.allclose(z.norm(dim=-1), torch.ones(16), atol=1e-6)
    assert head.input_linear is head.first
    assert len([m for m in head.modules() if isinstance(m, nn.BatchNorm1d)]) == 2


# ---------------------------------------------------------------------------- separate learning
def _reps(n=24, dims=(("image", 12), ("text", 8))):
    torch.manual_seed(5)
    return {m: torch.randn(n, d, requires_grad=True) for m, d in dims}


def test_separate_terms_match_the_primitives():
    reps = _reps()
    sep = SeparateLearning({"image": 12, "text": 8}, trans_dim=4, proj_hidden_dim=6, proj_dim=5)
    torch.manual_seed(6)
    terms = sep(reps)
    # by hand from the same layers: generic = first half, unique = second half
    zi = sep.heads["image"](reps["image"][:, :6])
    zt = sep.heads["text"](reps["text"][:, :4])
    align = 0.012 * solosim_loss(zt, zi, temperature=0.2)  # text -> image
    assert torch.allclose(terms["align"], align, atol=1e-6)
    gi = sep.trans_generic["image"](reps["image"][:, :6])
    ui = sep.trans_unique["image"](reps["image"][:, 6:])
    gt = sep.trans_generic["text"](reps["text"][:, :4])
    ut = sep.trans_unique["text"](reps["text"][:, 4:])
    torch.manual_seed(6)
    b_image = sep.clubs["image"](gi, ui)
    b_text = sep.clubs["text"](gt, ut)
    assert torch.allclose(terms["dis"], 0.006 * (b_image + b_text) / 2, atol=1e-7)
    assert sep.club_for("image") is not sep.club_for("text")  # default: one per modality


def test_separate_negative_l2_and_infonce_variants():
    reps = _reps()
    sep = SeparateLearning(
        {"image": 12, "text": 8},
        alignment="infonce",
        distancing="negl2",
        trans_dim=None,
        align_weight=1.0,
        dist_weight=1.0,
        split=0.5,
    )
    terms = sep(reps)
    expected = (
        negative_l2_loss(reps["image"][:, :6], reps["image"][:, 6:])
        + negative_l2_loss(reps["text"][:, :4], reps["text"][:, 4:])
    ) / 2
    assert torch.allclose(terms["dis"], expected)
    assert len(sep.clubs) == 0 and _fit(sep) == {}
    # ablations drop their terms
    assert set(SeparateLearning({"a": 4, "b": 4}, alignment="none")(_reps(dims=(("a", 4),
                                                                            ("b", 4))))) == {"dis"}
    assert set(SeparateLearning({"a": 4, "b": 4}, distancing="none")(_reps(dims=(("a", 4),
                                                                             ("b", 4))))) == {
        "align"
    }


def _fitted_copy(club, pairs, steps, lr):
    club = copy.deepcopy(club)
    opt = torch.optim.Adam(club.parameters(), lr=lr)
    fit_clubs([(club, pairs)], opt, steps)
    return club


def _fit(sep):
    """What the trainer does between backward and step: the declared estimators' steps."""
    out = {}
    for est in sep.auxiliary_estimators():
        loss = fit_estimator(est, torch.optim.Adam(est.parameters, lr=est.lr))
        if loss is not None:
            out[est.name] = float(loss)
    return out


@pytest.mark.parametrize("fit", ["own", "cross_modal"])
def test_club_is_fitted_on_the_right_pairs(fit):
    reps = _reps()
    sep = SeparateLearning(
        {"image": 12, "text": 8},
        trans_dim=4,
        club_fit=fit,
        club_shared=(fit == "cross_modal"),
        club_steps=3,
        club_lr=1e-2,
    )
    before = copy.deepcopy(sep.clubs)
    sep.train()
    sep(reps)
    g = {m: sep.trans_generic[m](reps[m][:, : sep.generic_slice(m)[1]]) for m in reps}
    u = {m: sep.trans_unique[m](reps[m][:, sep.unique_slice(m)[0] :]) for m in reps}
    log = _fit(sep)
    assert "club_nll" in log
    if fit == "own":
        # each modality's estimator fitted alone on its own (generic, unique) pairs
        for m in ("image", "text"):
            ref = _fitted_copy(before[m], [(g[m], u[m])], 3, 1e-2)
            for p, q in zip(sep.clubs[m].parameters(), ref.parameters(), strict=True):
                assert torch.allclose(p, q, atol=1e-6)
    else:
        # the official pairing: q(g_v | g_t) and q(u_v | u_t) with one shared network
        ref = _fitted_copy(
            before["shared"], [(g["text"], g["image"]), (u["text"], u["image"])], 3, 1e-2
        )
        for p, q in zip(sep.clubs["shared"].parameters(), ref.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-6)
    # nothing pending any more; eval-mode forwards do not queue a fit
    assert _fit(sep) == {}
    sep.eval()
    sep(reps)
    assert _fit(sep) == {}


def test_fit_does_not_touch_the_host_gradients():
    reps = _reps()
    sep = SeparateLearning({"image": 12, "text": 8}, trans_dim=4, club_steps=2)
    terms = sep(reps)
    sum(terms.values()).backward()  # the trainer's order: backward, estimator steps, step
    grads = {m: r.grad.clone() for m, r in reps.items()}
    assert "club_nll" in _fit(sep)
    for m, r in reps.items():  # the estimators' steps read detached pairs only
        assert torch.equal(r.grad, grads[m])


def test_separate_bound_gradient_flows_into_parts():
    reps = _reps()
    sep = SeparateLearning({"image": 12, "text": 8}, alignment="none", trans_dim=4,
                           club_clamp_min=None, dist_weight=1.0)
    sep(reps)["dis"].backward()
    assert reps["image"].grad.abs().sum() > 0
    assert sep.trans_unique["text"].weight.grad.abs().sum() > 0


def test_separate_validation_messages():
    with pytest.raises(ValueError, match="needs two modalities"):
        SeparateLearning({"text": 8})
    SeparateLearning({"text": 8}, alignment="none")  # one modality: distancing only
    with pytest.raises(ValueError, match="club_shared=True"):
        SeparateLearning({"a": 8, "b": 8}, club_fit="cross_modal")
    with pytest.raises(ValueError, match="`alignment` must be one of"):
        SeparateLearning({"a": 8, "b": 8}, alignment="mse")
    with pytest.raises(ValueError, match="needs equal sizes"):
        SeparateLearning({"a": 7, "b": 8}, trans_dim=None)
    sep = SeparateLearning({"a": 8, "b": 8})
    with pytest.raises(ValueError, match=r"missing representations for modalities \['b'\]"):
        sep({"a": torch.randn(3, 8)})
    with pytest.raises(ValueError, match=r"must be \(N, 8\)"):
        sep({"a": torch.randn(3, 8), "b": torch.randn(3, 5)})


def test_shared_club_is_one_network():
    sep = SeparateLearning({"a": 8, "b": 8}, club_shared=True, trans_dim=4)
    assert list(sep.clubs) == ["shared"]
    assert isinstance(sep.club_for("a"), CLUB) and sep.club_for("a") is sep.club_for("b")
