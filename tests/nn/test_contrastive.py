import math

import pytest
import torch
import torch.nn.functional as F

from sea_pyg.nn.losses import InfoNCE, SoloSimLoss, info_nce_loss, solosim_loss

pytestmark = pytest.mark.usefixtures("one_thread")


def _t(values, dtype=torch.float64, requires_grad=False):
    return torch.tensor(values, dtype=dtype, requires_grad=requires_grad)


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
# Under bfloat16 autocast: the chunked path's products in bfloat16, statistics in float32
# ------------------------------------------------------------------------------------------


class _MmDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records the dtype of the operands of every matrix product."""

    def __init__(self):
        super().__init__()
        self.dtypes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in (torch.ops.aten.mm, torch.ops.aten.addmm):
            self.dtypes.append(args[-1].dtype)
        return func(*args, **(kwargs or {}))


def _views(n=300, d=8, seed=0):
    """Two correlated views (an informative loss) in float32."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(n, d, generator=gen)
    return (base + 0.5 * torch.randn(n, d, generator=gen),
            base + 0.5 * torch.randn(n, d, generator=gen))


@pytest.mark.parametrize("fn", [solosim_loss, info_nce_loss])
def test_chunked_bf16_products_float32_statistics(fn):
    a0, b0 = _views()
    grads = {}
    for mode in ("fp32-dense", "bf16-chunked"):
        a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16-chunked"):
            with _MmDtypes() as seen:
                loss = fn(a, b, 0.2, chunk_size=64 if mode == "bf16-chunked" else None)
        loss.backward()
        assert loss.dtype == torch.float32 and a.grad.dtype == torch.float32
        grads[mode] = (loss.detach(), a.grad, b.grad)
        if mode == "bf16-chunked":  # logits, P K and P^T q of every chunk: bfloat16 operands
            assert seen.dtypes and set(seen.dtypes) == {torch.bfloat16}
        else:
            assert torch.bfloat16 not in seen.dtypes
    (l32, ga32, gb32), (l16, ga16, gb16) = grads["fp32-dense"], grads["bf16-chunked"]
    # log-sum-exp and positives in float32: the loss keeps ~4 digits, the gradients ~2-3
    assert l16.item() == pytest.approx(l32.item(), rel=2e-4)
    assert l16.item() != l32.item()  # it really ran in bfloat16
    for g16, g32 in ((ga16, ga32), (gb16, gb32)):
        assert (g16 - g32).norm() / g32.norm() < 1e-2


def test_chunked_without_autocast_or_normalisation_is_float32_throughout():
    a, b = _views(n=50)
    with _MmDtypes() as seen:
        chunked = solosim_loss(a, b, chunk_size=16)
    assert set(seen.dtypes) == {torch.float32}
    assert chunked.item() == pytest.approx(solosim_loss(a, b).item(), rel=1e-6)
    # unbounded logits (each row shifted by its maximum): float32 even under autocast
    with torch.autocast("cpu", dtype=torch.bfloat16), _MmDtypes() as seen:
        raw = info_nce_loss(a, b, chunk_size=16, normalize=False)
    assert set(seen.dtypes) == {torch.float32}
    assert raw.item() == pytest.approx(info_nce_loss(a, b, normalize=False).item(), rel=1e-6)
