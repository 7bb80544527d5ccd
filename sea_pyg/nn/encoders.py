r"""Per-modality user-item encoder and projection heads (the SEA / DRAGON backbone pieces)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sea_pyg.nn.conv import LightGCNPropagation

__all__ = ["ModalGCNEncoder", "ProjectionHead"]


class ModalGCNEncoder(nn.Module):
    r"""One modality's user-item graph encoder (DRAGON's ``GCN``, used by the official SEA).

    Users have a free preference embedding; items get an MLP of their (transformed) modality
    features; both are L2-normalised row-wise and propagated over the symmetric-normalised
    user-item graph with PyG ``LGConv`` (through :class:`~sea_pyg.nn.LightGCNPropagation`):

    .. math::
        \mathbf{h}_i = \mathbf{W}_2\,\mathrm{LeakyReLU}_{0.01}(\mathbf{W}_1 \mathbf{f}_i
        + \mathbf{b}_1) + \mathbf{b}_2, \qquad
        \mathbf{E}^{(0)} = \mathrm{normalize}\begin{pmatrix} \mathbf{P} \\ \mathbf{H}
        \end{pmatrix}, \qquad
        \mathbf{E} = \sum_{l=0}^{L} \hat{A}^l \mathbf{E}^{(0)}

    (the official code sums the layers, ``aggregation="sum"``, with :math:`L = 2`). There is no
    free item embedding: items are represented by their features only.

    :meth:`forward_from_hidden` starts from the first MLP layer's output, so that a caller can
    compute that layer fused with an upstream linear transform (see
    :func:`~sea_pyg.nn.linear_then_consumers`); :attr:`input_linear` is that layer.

    Args:
        num_users: Number of users ``U``.
        feature_dim: Input feature size ``F``.
        embedding_dim: Output size ``d`` (official: 64).
        hidden_dim: MLP hidden size (official: ``4 * d`` = 256).
        num_layers: Propagation layers ``L`` (official: 2).
        aggregation: Layer aggregation, ``"sum"`` (official), ``"mean"`` or ``"last"``.
        negative_slope: LeakyReLU slope (official: 0.01).
        normalize: L2-normalise the layer-0 rows (official: ``True``).

    Shapes:
        - **input:** item features ``(N, F)``, adjacency ``(U + N, U + N)``
        - **output:** ``(U + N, d)``, users first
    """

    def __init__(
        self,
        num_users: int,
        feature_dim: int,
        embedding_dim: int = 64,
        hidden_dim: int = 256,
        num_layers: int = 2,
        aggregation: str = "sum",
        negative_slope: float = 0.01,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_users", num_users),
            ("feature_dim", feature_dim),
            ("embedding_dim", embedding_dim),
            ("hidden_dim", hidden_dim),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        self.num_users = num_users
        self.negative_slope = negative_slope
        self.normalize = normalize
        self.preference = nn.Parameter(torch.empty(num_users, embedding_dim))
        self.mlp = nn.Linear(feature_dim, hidden_dim)
        self.mlp_out = nn.Linear(hidden_dim, embedding_dim)
        self.propagation = LightGCNPropagation(num_layers, aggregation)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.preference)
        self.mlp.reset_parameters()
        self.mlp_out.reset_parameters()

    @property
    def input_linear(self) -> nn.Linear:
        """The first layer applied to the item features."""
        return self.mlp

    def item_embedding(self, hidden: Tensor) -> Tensor:
        """Item rows ``H`` from the first MLP layer's output (before normalisation)."""
        return self.mlp_out(F.leaky_relu(hidden, self.negative_slope))

    def forward_from_items(self, items: Tensor, adj: Tensor) -> Tensor:
        """Propagation from given item rows ``H`` ``(N, d)`` (e.g. :meth:`item_embedding`'s
        output, kept by a caller that also needs it)."""
        x = torch.cat([self.preference, items], dim=0)
        if self.normalize:
            x = F.normalize(x, dim=-1)
        return self.propagation(x, adj)

    def forward_from_hidden(self, hidden: Tensor, adj: Tensor) -> Tensor:
        return self.forward_from_items(self.item_embedding(hidden), adj)

    def forward(self, features: Tensor, adj: Tensor) -> Tensor:
        return self.forward_from_hidden(self.mlp(features), adj)


class ProjectionHead(nn.Module):
    r"""The SEA projection head for the alignment loss (not described in the paper).

    ``Linear(in, h) -> BN -> ReLU -> Linear(h, h) -> BN -> ReLU -> Linear(h, out)``, then
    row-wise L2 normalisation (official: ``h = 64``, ``out = 32``). Batch normalisation is taken
    over the rows given (all items in SEA).

    Args:
        in_dim: Input size.
        hidden_dim: Hidden size.
        out_dim: Output size.
        batch_norm: Use the BN layers (official: ``True``).
        normalize: L2-normalise the output rows (official: ``True``).

    Shapes:
        - **input:** ``(N, in_dim)``
        - **output:** ``(N, out_dim)``
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int = 64,
        out_dim: int = 32,
        batch_norm: bool = True,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        self.first = nn.Linear(in_dim, hidden_dim)
        bn = (lambda: nn.BatchNorm1d(hidden_dim)) if batch_norm else nn.Identity
        self.rest = nn.Sequential(
            bn(),
            nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim),
            bn(),
            nn.ReLU(),
            nn.Linear(hidden_dim, out_dim),
        )
        self.normalize = normalize

    def reset_parameters(self) -> None:
        for m in (self.first, *self.rest):
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()

    @property
    def input_linear(self) -> nn.Linear:
        return self.first

    def forward_from_hidden(self, hidden: Tensor) -> Tensor:
        out = self.rest(hidden)
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from_hidden(self.first(x))
