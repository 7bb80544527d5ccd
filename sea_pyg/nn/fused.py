r"""A linear feature transform whose output only feeds other linear layers, computed fast.

SEA's per-modality item transform :math:`\mathbf{T} = \mathbf{X}\mathbf{W}^\top + \mathbf{b}`
(``t_item_linear`` / ``v_item_linear``, :math:`4096 \times 4096` for CNN image features) is
read only by linear layers: the first layer of the GCN item MLP on all columns, the first layer
of the projection head and ``trans1`` on the generic columns, ``trans2`` on the unique columns.
For such a consumer :math:`\mathbf{C}_k` reading columns :math:`s_k`,

.. math::
    \mathbf{T}_{:, s_k} \mathbf{C}_k^\top + \mathbf{c}_k
    = \mathbf{X} \big(\mathbf{W}_{s_k}^\top \mathbf{C}_k^\top\big)
    + \big(\mathbf{b}_{s_k} \mathbf{C}_k^\top + \mathbf{c}_k\big),

so all consumers together cost one :math:`(D_\text{in} \times \sum_k o_k)` product of the
weights and one :math:`\mathbf{X}` product with :math:`\sum_k o_k` columns (384 in SEA) instead of
the :math:`N \times D_\text{in} \times D` product that materialises :math:`\mathbf{T}`. The
mathematics (values and gradients of every parameter) is unchanged; only the association order
and hence the floating-point rounding differs. At Amazon-Baby scale this is about 7x fewer
FLOPs forward and backward (see ``benchmarks/bench_sea.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Consumer", "linear_then_consumers"]

#: A consumer of the transform's output: a linear layer (or ``None`` for "the columns
#: themselves") and the ``(start, stop)`` column range of the output it reads.
Consumer = tuple[nn.Linear | None, tuple[int, int]]


def _check(linear: nn.Linear, consumers: Sequence[Consumer]) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"`linear` must be a torch.nn.Linear, got {type(linear).__name__}")
    if len(consumers) == 0:
        raise ValueError("`consumers` must hold at least one (layer, (start, stop)) pair")
    d = linear.out_features
    for k, (layer, (start, stop)) in enumerate(consumers):
        if not 0 <= start < stop <= d:
            raise ValueError(
                f"consumers[{k}] reads columns [{start}, {stop}) of a {d}-column output"
            )
        if layer is not None:
            if not isinstance(layer, nn.Linear):
                raise TypeError(f"consumers[{k}] must be a torch.nn.Linear or None")
            if layer.in_features != stop - start:
                raise ValueError(
                    f"consumers[{k}] takes {layer.in_features} inputs but reads "
                    f"{stop - start} columns [{start}, {stop})"
                )


def linear_then_consumers(
    x: Tensor,
    linear: nn.Linear,
    consumers: Sequence[Consumer],
    fused: bool = True,
) -> list[Tensor]:
    r"""Outputs of linear layers applied to column ranges of ``linear(x)``.

    Returns ``[C_k(linear(x)[:, start_k:stop_k]) for (C_k, (start_k, stop_k)) in consumers]``
    (a ``None`` layer returns the columns themselves).

    Args:
        x: Input rows :math:`(N, D_\text{in})`, e.g. frozen item features.
        linear: The transform :math:`D_\text{in} \to D`.
        consumers: ``(layer, (start, stop))`` pairs, see :data:`Consumer`.
        fused: Re-associate (default) instead of materialising ``linear(x)``. Both give the
            same values and gradients up to floating-point rounding.

    Shapes:
        - **input:** :math:`(N, D_\text{in})`
        - **output:** list of :math:`(N, o_k)`
    """
    _check(linear, consumers)
    if not fused:
        t = linear(x)
        return [t[:, a:b] if c is None else c(t[:, a:b]) for c, (a, b) in consumers]
    return _fused(x, linear, consumers)


def _fused(x: Tensor, linear: nn.Linear, consumers: Sequence[Consumer]) -> list[Tensor]:
    # Cut the output columns of `linear` at every consumer boundary. Each segment's rows of W
    # are multiplied once with the stacked column blocks of all consumers reading it, so the
    # backward pass produces W's gradient as one concatenation (no zero-filled full-size
    # gradients per slice) and the weight products have a wide inner dimension.
    w, bias = linear.weight, linear.bias
    cuts = sorted({0, linear.out_features} | {c for _, r in consumers for c in r})
    segments = list(zip(cuts[:-1], cuts[1:], strict=True))
    w_segs = dict(zip(segments, w.split([b - a for a, b in segments]), strict=True))
    # per consumer: list of (D_in, o_k) contributions
    parts: list[list[Tensor]] = [[] for _ in consumers]
    for seg in segments:
        s0, s1 = seg
        blocks, owners = [], []
        for k, (layer, (a, b)) in enumerate(consumers):
            if a <= s0 and s1 <= b:
                if layer is None:
                    # identity consumer: its matrix is W's rows of this segment, placed at
                    # the segment's offset among the consumer's own columns
                    parts[k].append((s0 - a, w_segs[seg].t()))
                else:
                    blocks.append(layer.weight[:, s0 - a : s1 - a])
                    owners.append(k)
        if not blocks:
            continue
        prod = w_segs[seg].t() @ torch.cat(blocks).t()  # (D_in, sum of o_k)
        for k, piece in zip(owners, prod.split([blk.size(0) for blk in blocks], dim=1),
                            strict=True):
            parts[k].append((None, piece))
    mats, biases, sizes = [], [], []
    for k, (layer, (a, b)) in enumerate(consumers):
        if layer is None:
            mats.append(torch.cat([m for _, m in sorted(parts[k], key=lambda t: t[0])], dim=1))
            biases.append(bias[a:b] if bias is not None else w.new_zeros(b - a))
            sizes.append(b - a)
            continue
        mat = parts[k][0][1]
        for _, piece in parts[k][1:]:
            mat = mat + piece
        mats.append(mat)
        cb = layer.bias if layer.bias is not None else w.new_zeros(layer.out_features)
        if bias is not None:
            cb = torch.addmv(cb, layer.weight, bias[a:b])
        biases.append(cb)
        sizes.append(layer.out_features)
    out = torch.addmm(torch.cat(biases), x, torch.cat(mats, dim=1))
    return list(out.split(sizes, dim=1))
