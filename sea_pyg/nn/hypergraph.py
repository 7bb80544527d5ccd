r"""Learnable hypergraphs over users and items: soft hyperedge memberships and propagation.

A hypergraph with :math:`H` hyperedges over :math:`N` items (and :math:`U` users) is given by
soft incidence matrices :math:`\mathbf{H}_I \in \mathbb{R}^{N \times H}` and
:math:`\mathbf{H}_U \in \mathbb{R}^{U \times H}`, row :math:`i` the (soft) memberships of node
:math:`i`. With :math:`H` small (LGMRec: 4 to 64), every product below costs
:math:`O((U + N) H d)`: nothing :math:`N \times N` is ever formed.

* :func:`gumbel_softmax`: soft, differentiable samples of the memberships from learned logits
  (LGMRec's hyperedge dependencies), drawn from a torch RNG so that seeding reproduces them.
* :class:`HypergraphPropagation`: parameter-free item :math:`\to` hyperedge :math:`\to`
  item / user message passing (LGMRec's ``HGNNLayer``).
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["gumbel_softmax", "HypergraphPropagation"]


def gumbel_softmax(
    logits: Tensor,
    temperature: float,
    dim: int = -1,
    noise: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Soft Gumbel-softmax samples (the relaxed, ``hard=False`` form).

    .. math::
        \mathbf{y} = \operatorname{softmax}\!\big((\mathbf{l} + \mathbf{g}) / \tau\big),
        \qquad g_k = -\ln e_k, \quad e_k \sim \operatorname{Exp}(1) \text{ i.i.d.}

    (:math:`g_k` standard Gumbel). The noise is drawn with ``Tensor.exponential_`` from
    ``generator`` (default: the global torch RNG), in the same way and order as
    :func:`torch.nn.functional.gumbel_softmax`, so under the same RNG state the two return the
    same tensor. Gradients flow to ``logits`` (the noise is a constant).

    Args:
        logits: Unnormalised log-probabilities, any shape.
        temperature: :math:`\tau > 0`; small values give nearly one-hot samples.
        dim: The dimension the softmax runs over.
        noise: Add the Gumbel noise (default). ``False`` returns
            :math:`\operatorname{softmax}(\mathbf{l}/\tau)`, i.e. the noise at its mode
            :math:`g = 0`, and draws nothing from the RNG.
        generator: RNG of the noise (default: the global torch RNG).

    Returns:
        A tensor of the shape of ``logits`` whose slices along ``dim`` sum to 1.
    """
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, numbers.Real)
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(f"`temperature` must be a finite number > 0 (e.g. 0.2), got {temperature}")
    if noise:
        e = torch.empty_like(logits, memory_format=torch.legacy_contiguous_format)
        logits = logits - e.exponential_(generator=generator).log()
    return (logits / temperature).softmax(dim)


class HypergraphPropagation(torch.nn.Module):
    r"""Hypergraph message passing through soft incidence matrices (no parameters).

    Starting from item embeddings :math:`\mathbf{X}^{(0)} = \mathbf{X}` ``(N, d)``, each of the
    :math:`L` layers gathers the items into the :math:`H` hyperedges and scatters them back to
    items and users:

    .. math::
        \mathbf{Z}^{(l)} = \mathbf{H}_I^\top \mathbf{X}^{(l-1)} \in \mathbb{R}^{H \times d},
        \qquad
        \mathbf{X}^{(l)} = \mathbf{H}_I \mathbf{Z}^{(l)}, \qquad
        \mathbf{Y}^{(l)} = \mathbf{H}_U \mathbf{Z}^{(l)}

    and the output is the last layer, :math:`(\mathbf{Y}^{(L)}, \mathbf{X}^{(L)})`. Users only
    read the hyperedges: they never feed the next layer. There is no degree normalisation
    (rows of :math:`\mathbf{H}` are soft memberships, e.g. from :func:`gumbel_softmax`).

    Args:
        num_layers: :math:`L \geq 1` (LGMRec ``n_hyper_layer``).

    Shapes:
        - **input:** item embeddings ``(N, d)``, item incidence ``(N, H)``, user incidence
          ``(U, H)``
        - **output:** users ``(U, d)``, items ``(N, d)``
    """

    def __init__(self, num_layers: int = 1) -> None:
        super().__init__()
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(
                f"`num_layers` must be an int >= 1 (the users read the last layer), "
                f"got {num_layers!r}"
            )
        self.num_layers = num_layers

    def forward(
        self, x: Tensor, item_incidence: Tensor, user_incidence: Tensor
    ) -> tuple[Tensor, Tensor]:
        if x.dim() != 2 or item_incidence.dim() != 2 or user_incidence.dim() != 2:
            raise ValueError("`x`, `item_incidence` and `user_incidence` must all be 2-D")
        if item_incidence.size(0) != x.size(0):
            raise ValueError(
                f"`item_incidence` has {item_incidence.size(0)} rows but `x` has {x.size(0)} items"
            )
        if user_incidence.size(1) != item_incidence.size(1):
            raise ValueError(
                f"`user_incidence` has {user_incidence.size(1)} hyperedges, `item_incidence` "
                f"{item_incidence.size(1)}; they must be the same hyperedges"
            )
        users = x
        for _ in range(self.num_layers):
            edges = item_incidence.t() @ x
            x = item_incidence @ edges
            users = user_incidence @ edges
        return users, x

    def extra_repr(self) -> str:
        return f"num_layers={self.num_layers}"
