"""Item k-NN search at catalogue scale: exact dense torch vs PyG's MIPSKNNIndex (exact faiss)
vs ApproxMIPSKNNIndex (IVF-PQ, re-ranked exactly), on random unit vectors.

For each catalogue size N and dimension d it draws N random items (``--data clustered``: a
mixture of N / 100 Gaussian clusters, closer to real feature sets; ``gaussian``: i.i.d. normal,
the worst case for an inverted file), normalises them (cosine = inner product) and takes
``--queries`` of them as queries (the k-NN graph asks every item for its neighbours). It prints

* build seconds (faiss: adding the vectors, plus k-means and product-quantiser training for
  ``approx``; torch: none);
* query seconds for the sampled queries, and that time scaled to all N queries (the full graph);
* recall@k of each backend's neighbours against the exact dense top-k (self included, as in the
  item graphs), averaged over the queries;

and, for ``approx``, one row per ``--visit`` value (``num_cells_to_visit``, the cells scanned).

Usage::

    python benchmarks/bench_knn.py --quick                   # seconds; a smoke check
    python benchmarks/bench_knn.py                           # 7k, 100k, 1M items at d=64, 384
    python benchmarks/bench_knn.py --sizes 1000000 --dims 128 --visit 8 32 128 --threads 16
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch
import torch.nn.functional as F


def make_items(n: int, d: int, data: str, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    if data == "gaussian":
        x = torch.randn(n, d, generator=gen)
    else:  # clustered: centres on the sphere, items at angular noise ~0.5 rad around them
        centres = F.normalize(torch.randn(max(1, n // 100), d, generator=gen), dim=1)
        assign = torch.randint(0, centres.size(0), (n,), generator=gen)
        x = centres[assign] + 0.5 / math.sqrt(d) * torch.randn(n, d, generator=gen)
    return F.normalize(x, dim=1)


def exact_topk(items: torch.Tensor, queries: torch.Tensor, k: int, chunk: int = 1024):
    out = []
    item_t = items.t().contiguous()
    for start in range(0, queries.size(0), chunk):
        out.append((queries[start : start + chunk] @ item_t).topk(k, dim=1).indices)
    return torch.cat(out)


def recall(found: torch.Tensor, truth: torch.Tensor) -> float:
    hits = (found.unsqueeze(2) == truth.unsqueeze(1)).any(dim=2).sum(dim=1)
    return float(hits.float().mean() / truth.size(1))


def run(n: int, d: int, args: argparse.Namespace) -> list[dict]:
    from sea_pyg.nn import mips

    items = make_items(n, d, args.data, args.seed)
    gen = torch.Generator().manual_seed(args.seed + 1)
    q_idx = torch.randperm(n, generator=gen)[: min(args.queries, n)]
    queries = items[q_idx]
    rows = []

    t0 = time.perf_counter()
    truth = exact_topk(items, queries, args.k)
    t_exact = time.perf_counter() - t0
    rows.append(
        dict(
            N=n,
            d=d,
            backend="torch (exact)",
            build_s=0.0,
            query_s=t_exact,
            graph_s=t_exact * n / queries.size(0),
            recall=1.0,
        )
    )

    t0 = time.perf_counter()
    index = mips.build_index(items, "mips")
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    found = mips.mips_topk(index, items, queries, args.k)[1]
    query = time.perf_counter() - t0
    rows.append(
        dict(
            N=n,
            d=d,
            backend="mips (exact faiss)",
            build_s=build,
            query_s=query,
            graph_s=build + query * n / queries.size(0),
            recall=recall(found, truth),
        )
    )
    del index

    if n < mips.PQ_MIN_ITEMS:
        return rows
    rerank = mips.ApproxParams().rerank if args.rerank is None else args.rerank
    base = mips.ApproxParams(num_cells=args.cells, bits_per_vector=args.sub, rerank=rerank)
    cells, _, sub = base.resolve(n, d)
    t0 = time.perf_counter()
    index = mips.build_index(items, "approx", base)
    build = time.perf_counter() - t0
    for visit in sorted({min(v, cells) for v in args.visit or [base.resolve(n, d)[1]]}):
        index.index.nprobe = visit
        t0 = time.perf_counter()
        found = mips.mips_topk(index, items, queries, args.k, rerank=rerank)[1]
        query = time.perf_counter() - t0
        rows.append(
            dict(
                N=n,
                d=d,
                backend=f"approx cells={cells} visit={visit} M={sub} rerank={rerank}",
                build_s=build,
                query_s=query,
                graph_s=build + query * n / queries.size(0),
                recall=recall(found, truth),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[7_000, 100_000, 1_000_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 384])
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--queries", type=int, default=2000, help="sampled query items")
    parser.add_argument("--data", choices=["clustered", "gaussian"], default="clustered")
    parser.add_argument("--cells", type=int, default=None, help="num_cells (default: rule)")
    parser.add_argument(
        "--visit",
        type=int,
        nargs="*",
        default=None,
        help="num_cells_to_visit values to sweep (default: the rule's)",
    )
    parser.add_argument("--sub", type=int, default=None, help="bits_per_vector (PQ sub-vectors)")
    parser.add_argument(
        "--rerank", type=int, default=None, help="candidates re-scored / k (default: library's)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--quick", action="store_true", help="2k and 20k items, d=64, 500 queries")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.dims, args.queries = [2_000, 20_000], [64], 500
    torch.set_num_threads(args.threads)
    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        raise SystemExit('bench_knn.py needs faiss: pip install "sea_pyg[knn]"') from None

    print(
        f"{args.data} items, k={args.k}, {args.queries} sampled queries, "
        f"{args.threads} thread(s); graph_s = build + query time scaled to all N items"
    )
    header = (
        f"{'N':>9} {'d':>4}  {'backend':<46} {'build_s':>8} {'query_s':>8} "
        f"{'graph_s':>9} {'recall@k':>8}"
    )
    print(header)
    all_rows = []
    for n in args.sizes:
        for d in args.dims:
            for r in run(n, d, args):
                all_rows.append(r)
                print(
                    f"{r['N']:>9} {r['d']:>4}  {r['backend']:<46} {r['build_s']:>8.2f} "
                    f"{r['query_s']:>8.3f} {r['graph_s']:>9.1f} {r['recall']:>8.4f}",
                    flush=True,
                )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(all_rows, fh, indent=1)


if __name__ == "__main__":
    main()
