"""SEA's alignment loss alone: chunked SoloSim / InfoNCE over all items, float32 against
bfloat16 autocast (``--precision bf16``: the three ``N x N x D`` products in bfloat16, the
softmax statistics in float32).

For each loss it draws two correlated ``(N, D)`` views (a shared base plus noise, so the loss
is informative), runs forward + backward ``--repeat`` times in each precision, round-robin, and
prints the median seconds, and the bfloat16 loss's and gradients' relative error against the
float32 ones.

Usage::

    python benchmarks/bench_alignment.py                     # Baby: 7,050 items, 32-d heads
    python benchmarks/bench_alignment.py --items 46066 --repeat 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from sea_pyg.nn.losses import info_nce_loss, solosim_loss


def run(fn, a0: torch.Tensor, b0: torch.Tensor, bf16: bool, args: argparse.Namespace):
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = fn(a, b, args.temperature, chunk_size=args.chunk_size)
    loss.backward()
    return time.perf_counter() - t0, loss.detach(), a.grad, b.grad


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=7050)
    p.add_argument("--dim", type=int, default=32, help="projection-head width (SEA: 32)")
    p.add_argument("--chunk-size", type=int, default=256, help="rows per chunk (SEA: 256)")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(args.seed)
    base = torch.randn(args.items, args.dim, generator=gen)
    a0 = base + 0.5 * torch.randn(args.items, args.dim, generator=gen)
    b0 = base + 0.5 * torch.randn(args.items, args.dim, generator=gen)
    print(f"{args.items} items, {args.dim}-d, chunk {args.chunk_size}, {args.threads} thread(s), "
          f"median of {args.repeat} (forward + backward)\n")
    print("| loss | fp32 s | bf16 s | bf16 / fp32 | loss rel. error | grad rel. error |")
    print("|---|---|---|---|---|---|")
    for name, fn in (("SoloSim (sea)", solosim_loss), ("InfoNCE over 2N (sea-d)", info_nce_loss)):
        for bf16 in (False, True):  # warm-up
            run(fn, a0, b0, bf16, args)
        times: dict[bool, list[float]] = {False: [], True: []}
        out = {}
        for _ in range(args.repeat):
            for bf16 in (False, True):
                seconds, loss, grad_a, grad_b = run(fn, a0, b0, bf16, args)
                times[bf16].append(seconds)
                out[bf16] = (loss, grad_a, grad_b)
        (l32, ga32, gb32), (l16, ga16, gb16) = out[False], out[True]
        grad_err = max(float((g16 - g32).norm() / g32.norm())
                       for g16, g32 in ((ga16, ga32), (gb16, gb32)))
        t32, t16 = statistics.median(times[False]), statistics.median(times[True])
        print(f"| {name} | {t32:.3f} | {t16:.3f} | {t16 / t32:.2f}x | "
              f"{abs(float(l16 - l32)) / abs(float(l32)):.1e} | {grad_err:.1e} |", flush=True)


if __name__ == "__main__":
    main()
