"""A tiny hand-made input for DualGNN / DRAGON and their dense reference computations."""

from __future__ import annotations

import torch

# 3 users, 4 items; the pair (2, 3) appears twice (MMRec's GCN counts it twice; the user graph
# binarises it). Items per user: u0 {0, 1}, u1 {1, 2}, u2 {0, 2, 3}: every two users share
# exactly one item, so with k = 2 neighbours W = (J - I) / 2, with no random padding.
EDGES = torch.tensor([[0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 2, 0, 2, 3, 3]])
NUM_USERS, NUM_ITEMS = 3, 4
USER_W = 0.5 * (torch.ones(3, 3) - torch.eye(3))


def features():
    # text: items {0, 1} and {2, 3} are neighbours; image: {0, 2} and {1, 3}
    text = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    return {"image": image, "text": text}


PREFERENCES = {
    "image": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
    "text": torch.tensor([[0.0, 1.0], [1.0, -1.0], [2.0, 0.0]]),
}
W1 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, -1.0]])
B1 = torch.tensor([0.0, 0.5, -0.5])
W2 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, -1.0]])
B2 = torch.tensor([0.1, -0.1])
USER_WEIGHT = torch.tensor([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])  # (U, M): image, text


def set_hand_parameters(model) -> None:
    """Preferences, MLPs (the same for both modalities) and user weights set by hand."""
    with torch.no_grad():
        for m, enc in model.encoders.items():
            enc.preference.copy_(PREFERENCES[m])
            enc.mlp.weight.copy_(W1)
            enc.mlp.bias.copy_(B1)
            enc.mlp_out.weight.copy_(W2)
            enc.mlp_out.bias.copy_(B2)
        if model.user_weight is not None:
            model.user_weight.copy_(USER_WEIGHT[:, : model.user_weight.size(1), None])


def dense_adj(edges=EDGES, num_users=NUM_USERS, num_items=NUM_ITEMS):
    """D^{-1/2} A D^{-1/2}: no self-loops, no epsilon, a duplicated pair counted twice."""
    n = num_users + num_items
    a = torch.zeros(n, n)
    for u, i in edges.t().tolist():
        a[u, num_users + i] += 1.0
        a[num_users + i, u] += 1.0
    d = a.sum(1)
    dinv = torch.where(d > 0, d.pow(-0.5), torch.zeros(()))
    return dinv[:, None] * a * dinv[None, :]


def dense_modality(m: str, x):
    """``(E^m (U + N, d), H^m (N, d))`` for the hand parameters."""
    h = x @ W1.t() + B1
    h = torch.where(h > 0, h, 0.01 * h) @ W2.t() + B2
    x0 = torch.cat([PREFERENCES[m], h])
    x0 = x0 / x0.norm(dim=1, keepdim=True)
    adj = dense_adj()
    return x0 + adj @ x0 + adj @ adj @ x0, h
