"""Add SEA's separate learning (SoloSim alignment + CLUB distancing) to PyG's own LightGCN.

PyG's ``torch_geometric.nn.models.LightGCN`` learns ID embeddings only. Here each item also gets
one 64-d projection per modality of its features; the projections are added to the item's ID
embedding before propagation, and :class:`sea_pyg.nn.SeparateLearning` splits each projection
into a generic half (aligned across modalities with SoloSim) and a unique half (pushed away from
the generic one with a CLUB upper bound of their mutual information). The few lines marked
``# SEA`` are all it takes.

    python examples/plug_sea_into_pyg_lightgcn.py                 # built-in 'small' data
    python examples/plug_sea_into_pyg_lightgcn.py --no-sea        # the same LightGCN without
"""

from __future__ import annotations

import argparse

import torch
from torch import nn
from torch_geometric.nn.models import LightGCN

from sea_pyg.data import BPRSampler, load_synthetic
from sea_pyg.data.mmrec import EDGE_TYPE, item_features
from sea_pyg.nn import SeparateLearning
from sea_pyg.train import evaluate_ranking, fit_estimator, seed_everything


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="small", help="built-in synthetic preset")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--no-sea", action="store_true", help="train without the SEA terms")
    args = p.parse_args()

    seed_everything(0)
    data = load_synthetic(args.preset)  # a HeteroData graph: 'user' -rates-> 'item'
    num_users, num_items = data["user"].num_nodes, data["item"].num_nodes
    train = data[EDGE_TYPE].edge_index
    # homogeneous view for PyG's LightGCN: users 0..U-1, items U..U+N-1, both directions
    edge_index = torch.cat([torch.stack([train[0], train[1] + num_users]),
                            torch.stack([train[1] + num_users, train[0]])], dim=1)
    feats = item_features(data)  # {"image": (N, 4096), "text": (N, 384)}

    gnn = LightGCN(num_users + num_items, embedding_dim=64, num_layers=2)
    proj = nn.ModuleDict({m: nn.Linear(x.size(1), 64) for m, x in feats.items()})
    sea = SeparateLearning({m: 64 for m in feats}, trans_dim=None,  # SEA: CLUB on the 32/32
                           align_weight=0.1, dist_weight=0.01,      # halves, as in VBPR+SEA
                           temperature=0.1, club_lr=1e-3)
    estimators = {id(q) for q in sea.estimator_parameters()}  # SEA: CLUB has its own Adam
    params = [*gnn.parameters(), *proj.parameters(),
              *(q for q in sea.parameters() if id(q) not in estimators)]
    opt = torch.optim.Adam(params, lr=1e-3)
    clubs = [(est, torch.optim.Adam(est.parameters, lr=est.lr))  # SEA
             for est in sea.auxiliary_estimators()]

    def forward():
        reps = {m: proj[m](x) for m, x in feats.items()}  # per-modality item representations
        x0 = gnn.embedding.weight + torch.cat(
            [gnn.embedding.weight.new_zeros(num_users, 64), sum(reps.values())])
        out, x = x0 * gnn.alpha[0], x0
        for k, conv in enumerate(gnn.convs):  # PyG LGConv layers, layer mean
            x = conv(x, edge_index)
            out = out + x * gnn.alpha[k + 1]
        return out, reps

    def scores(emb):
        return lambda users: emb[users] @ emb[num_users:].t()

    sampler = BPRSampler(train, num_users, num_items, batch_size=2048,
                         generator=torch.Generator().manual_seed(0))
    for epoch in range(args.epochs):
        gnn.train(), sea.train()
        total = 0.0
        for users, pos, neg in sampler:
            opt.zero_grad()
            emb, reps = forward()
            u, i, j = emb[users], emb[pos + num_users], emb[neg + num_users]
            loss = gnn.recommendation_loss((u * i).sum(-1), (u * j).sum(-1),
                                           node_id=torch.cat([users, pos + num_users]))
            if not args.no_sea:
                loss = loss + sum(sea(reps).values())  # SEA: alignment + distancing terms
            loss.backward()
            if not args.no_sea:
                for est, club_opt in clubs:  # SEA: CLUB steps between backward and step
                    fit_estimator(est, club_opt)
            opt.step()
            total += float(loss.detach())
        gnn.eval(), sea.eval()
        with torch.no_grad():
            emb, _ = forward()
        valid = evaluate_ranking(scores(emb),
                                 data[EDGE_TYPE].val_edge_index, train, num_users, num_items,
                                 ks=(20,))
        print(f"epoch {epoch:3d}  loss {total:8.3f}  valid recall@20 {valid['recall@20']:.4f}")
    test = evaluate_ranking(scores(emb),
                            data[EDGE_TYPE].test_edge_index, train, num_users, num_items,
                            ks=(20,))
    print(f"test recall@20 after {args.epochs} epochs: {test['recall@20']:.4f}")


if __name__ == "__main__":
    main()
