"""Top operators of one SEA training step at a synthetic scale, by self CPU time.

The step is the trainer's own (sampler -> ``loss`` under the run's
:class:`~sea_pyg.train.precision.MixedPrecision` -> ``backward`` -> the auxiliary (CLUB) steps
-> fused Adam), profiled with ``torch.profiler`` after two warm-up steps, shapes recorded.

Usage::

    python benchmarks/profile_sea.py                                # sea, baby, fp32, 1 thread
    python benchmarks/profile_sea.py --precision bf16 --threads 2 --rows 30
"""

from __future__ import annotations

import argparse


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--variant", default="sea")
    p.add_argument("--scale", default="baby")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=25, help="operators to print")
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, record_function

    torch.set_num_threads(args.threads)
    from sea_pyg.data import BPRSampler, load_synthetic
    from sea_pyg.data.mmrec import EDGE_TYPE
    from sea_pyg.models import build_model
    from sea_pyg.train import AuxiliaryTraining, seed_everything
    from sea_pyg.train.optim import adam
    from sea_pyg.train.precision import MixedPrecision

    data = load_synthetic(args.scale, seed=0)
    seed_everything(0)
    model, _, defaults = build_model(args.variant, data)
    precision = MixedPrecision(args.precision, "cpu")
    sampler = BPRSampler(data[EDGE_TYPE].edge_index, model.num_users, model.num_items,
                         batch_size=2048, generator=torch.Generator().manual_seed(0))
    aux = AuxiliaryTraining(model.auxiliary_estimators())
    opt = adam(aux.model_parameters(model), lr=defaults.get("lr", 1e-3))
    model.train()
    batches = iter(sampler)

    def step() -> None:
        batch = next(batches)
        opt.zero_grad(set_to_none=True)
        with record_function("LOSS"), precision.forward(model):
            loss = sum(precision.loss_terms(model.loss(batch)).values())
        with record_function("BACKWARD"):
            loss.backward()
        with record_function("CLUB_FIT"):
            aux.step()
        with record_function("ADAM"):
            opt.step()

    step()
    step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        step()
    print(f"{args.variant} at {args.scale}, {args.precision}, {args.threads} thread(s)")
    print(prof.key_averages(group_by_input_shape=True).table(
        sort_by="self_cpu_time_total", row_limit=args.rows, max_name_column_width=28,
        max_shapes_column_width=70))


if __name__ == "__main__":
    main()
