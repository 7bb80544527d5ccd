"""The device path: no host round trip in the training step, and every model on CUDA.

On an accelerator, reading a value on the host (``.item()``, ``float(t)``, ``if t:``, ``.cpu()``,
printing, ...) waits for every queued kernel, and an op whose output size depends on the data
(``torch.unique``, ``nonzero``, boolean masks, ...) does the same. The CPU tests run the whole
training step of every registered model (``model.loss``, ``backward``, the auxiliary estimators'
inner loop, the optimizer step) under :class:`HostSync`, a ``TorchFunctionMode`` that records
such calls, and check that there are none (data-dependent shapes only where a model's
mathematics needs them, listed in :data:`DATA_DEPENDENT` with the reason). The CUDA tests (skipped
without a device) train every model on the GPU and check the step with
``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from sea_pyg.models import MFBPR, build_model, model_names
from sea_pyg.models.registry import MODELS
from sea_pyg.train import TrainConfig, Trainer, seed_everything
from sea_pyg.train.metrics import evaluate_ranking

pytestmark = pytest.mark.usefixtures("one_thread")

T = Tensor
#: Calls that bring a tensor's value to the host.
HOST_READS = {
    T.item,
    T.tolist,
    T.__bool__,
    T.__float__,
    T.__int__,
    T.__index__,
    T.__complex__,
    T.__contains__,
    T.cpu,
    T.numpy,
    T.__array__,
    T.__repr__,
    T.__str__,
    T.__format__,
}
#: Ops whose output shape depends on the values (the host must learn the size).
DATA_DEPENDENT = {
    torch.unique,
    T.unique,
    torch.unique_consecutive,
    T.unique_consecutive,
    torch.nonzero,
    T.nonzero,
    torch.argwhere,
    T.argwhere,
    torch.masked_select,
    T.masked_select,
    torch.bincount,
    T.bincount,
    T.coalesce,
}
#: Tensor factories that put their result on the CPU unless given ``device=``.
FACTORIES = {
    torch.arange,
    torch.zeros,
    torch.ones,
    torch.full,
    torch.empty,
    torch.eye,
    torch.rand,
    torch.randn,
    torch.randint,
    torch.randperm,
    torch.linspace,
    torch.logspace,
    torch.tensor,
    torch.as_tensor,
    torch.from_numpy,
}
_TORCH_DIR = str(Path(torch.__file__).parent)


def _bool_index(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, Tensor) and p.dtype == torch.bool for p in parts)


class HostSync(TorchFunctionMode):
    """Records host reads, data-dependent shapes and device-less factories while active.

    ``found`` holds ``(kind, op, where)`` with ``kind`` one of ``"host read"``,
    ``"data-dependent"``, ``"cpu factory"`` and ``where`` the innermost frame outside torch.
    Calls made by torch's optimizers are ignored (their step counters live on the host by
    design; on CUDA the fused Adam keeps them on the device).
    """

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str, str]] = []

    def _kind(self, func, args, kwargs) -> str | None:
        if func in HOST_READS:
            return "host read"
        if func in DATA_DEPENDENT:
            return "data-dependent"
        if func in (T.__getitem__, T.__setitem__) and len(args) > 1 and _bool_index(args[1]):
            return "data-dependent"
        if (
            func in (torch.repeat_interleave, T.repeat_interleave)
            and len(args) > 1
            and isinstance(args[1], Tensor)
            and args[1].numel() > 1
            and kwargs.get("output_size") is None
        ):
            return "data-dependent"
        if func is torch.where and len(args) == 1 and not kwargs:
            return "data-dependent"
        if func in FACTORIES and kwargs.get("device") is None:
            if func in (torch.as_tensor, torch.tensor) and args and isinstance(args[0], Tensor):
                return None  # keeps the input's device
            return "cpu factory"
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = self._kind(func, args, kwargs)
        if kind is not None:
            frame, where, internal = sys._getframe(1), "?", False
            while frame is not None:
                name = frame.f_code.co_filename
                if "torch/optim" in name.replace("\\", "/"):
                    internal = True
                    break
                if where == "?" and not name.startswith(_TORCH_DIR):
                    where = f"{Path(name).name}:{frame.f_lineno}"
                frame = frame.f_back
            if not internal:
                self.found.append((kind, getattr(func, "__name__", str(func)), where))
        return func(*args, **kwargs)


# --------------------------------------------------------------------------- the CPU harness
#: Models whose step must use a data-dependent shape, and why. (The ``+sea`` variants of VBPR,
#: BM3, SLMRec and PAMD need none: separate learning asks for every item's modality
#: representations, so no distinct-item selection is made.) Everything else in the step is free
#: of host round trips.
_DISTINCT_ITEMS = "the modality encoders run on the distinct items of the batch (torch.unique)"
_LEARNED_GRAPH = (
    "the first batch of an epoch rebuilds the learned k-NN item graph(s) and coalesces them "
    "with the frozen one(s) (torch.unique of the edge keys, bincount of the row pointers)"
)
_MMSSL = (
    "the contrastive and adversarial terms run over the distinct users of the batch "
    "(torch.unique) and their dense interaction rows (repeat_interleave over their degrees)"
)
DATA_DEPENDENT_STEPS = {
    "bm3": _DISTINCT_ITEMS,
    "pamd": _DISTINCT_ITEMS,
    "slmrec": _DISTINCT_ITEMS,
    "vbpr": _DISTINCT_ITEMS,
    "lattice": _LEARNED_GRAPH,
    "lattice+sea": _LEARNED_GRAPH,
    "micro": _LEARNED_GRAPH,
    "micro+sea": _LEARNED_GRAPH,
    "mmssl": _MMSSL,
    "mmssl+sea": _MMSSL,
}
ALL_MODELS = model_names()


def _build(name: str, data, device: str = "cpu", **train):
    """Model ``name`` (a one-epoch pre-training stage for models that have one) and its
    Trainer on ``data``."""
    seed_everything(0)
    hp = {"pretrain_epochs": 1} if "pretrain_epochs" in MODELS[name].defaults else {}
    model, info, defaults = build_model(name, data, **hp)
    cfg = {"batch_size": 256, "epochs": 1, "progress": False, "verbose": False, **defaults}
    cfg.update(device=device, **train)
    return model, Trainer(model, data, TrainConfig(**cfg), model_info=info)


def _batches(model, trainer, epoch: int, count: int = 2) -> list[Tensor]:
    if epoch < getattr(model, "pretrain_epochs", 0):
        order = torch.randperm(trainer.num_items, generator=trainer.generator)
        return [order[: trainer.config.batch_size].view(1, -1).to(trainer.device)]
    return list(trainer.sampler)[:count]


def _step(model, trainer, batch: Tensor) -> None:
    """The trainer's step (precision included) without its finiteness check."""
    trainer.optimizer.zero_grad(set_to_none=True)
    with trainer.precision.forward(model):
        terms = trainer.precision.loss_terms(model.loss(batch))
        loss = sum(terms.values())
    loss.backward()
    trainer.auxiliary.step()
    trainer.optimizer.step()


def _step_calls(model, trainer) -> list[tuple[str, str, str]]:
    """What :class:`HostSync` records in one step of the first epoch and two of the second
    (the first batch of an epoch may rebuild a graph, the next reuses it; ``pre_epoch`` runs
    outside the mode: a once-per-epoch synchronisation is fine)."""
    found = []
    model.train()
    pre = getattr(model, "pretrain_epochs", 0)
    for epoch, count in [(0, 1), (pre, 2)] if pre else [(0, 1), (1, 2)]:
        model.pre_epoch(epoch)
        for batch in _batches(model, trainer, epoch, count):
            with HostSync() as mode:
                _step(model, trainer, batch)
            found += mode.found
    return found


@pytest.fixture(scope="module")
def tiny(tiny_data):
    return tiny_data


# --------------------------------------------------------------------------- test of the test
@pytest.mark.parametrize(
    "plant",
    [
        lambda t: t.sum().item(),
        lambda t: float(t.sum()),
        lambda t: int(t.sum()),
        lambda t: bool(t.sum() > 0),
        lambda t: 1 if t.sum() > 0 else 0,
        lambda t: t.tolist(),
        lambda t: t.cpu(),
        lambda t: t.detach().numpy(),
        lambda t: f"{t.sum():.3f}",
        lambda t: repr(t),
        lambda t: 0.5 in t,
    ],
)
def test_the_mode_catches_host_reads(plant):
    x = torch.randn(4, 3)
    with HostSync() as mode:
        plant(x)
    assert mode.found and mode.found[0][0] == "host read", mode.found
    assert mode.found[0][2].startswith("test_device_sync.py:"), mode.found


@pytest.mark.parametrize(
    "plant",
    [
        lambda t: torch.unique(t),
        lambda t: t.nonzero(),
        lambda t: t[t > 0],
        lambda t: torch.repeat_interleave(torch.arange(3), torch.tensor([1, 2, 0])),
        lambda t: torch.bincount(t.long().abs().flatten()),
    ],
)
def test_the_mode_catches_data_dependent_shapes(plant):
    with HostSync() as mode:
        plant(torch.randn(4, 3))
    assert any(kind == "data-dependent" for kind, _, _ in mode.found), mode.found


def test_the_mode_catches_cpu_factories_and_passes_device_code():
    x = torch.randn(4, 3)
    with HostSync() as mode:
        torch.zeros(3)
        torch.arange(3, device=x.device)
        torch.randperm(3, generator=torch.Generator())
    assert [f[1] for f in mode.found] == ["zeros", "randperm"]
    repeats = torch.tensor([1, 2, 0, 1])
    with HostSync() as mode:  # device-side code: nothing to report
        y = torch.zeros(2, device=x.device) + x[:2, 0] * 2
        torch.repeat_interleave(x[:, 0], repeats, output_size=4)
        y.new_zeros(3), torch.zeros_like(y), torch.where(y > 0, y, 0.0), y.topk(1)
        torch.as_tensor(y), x.to(torch.float64)
    assert mode.found == []


class _PlantedItem(MFBPR):
    """MF whose loss reads a value on the host, as a careless model would."""

    def loss(self, batch):
        terms = super().loss(batch)
        self.last = terms["bpr"].item()
        return terms


class _PlantedFactory(MFBPR):
    """MF whose loss makes a CPU tensor (a device mismatch waiting to happen on CUDA)."""

    def loss(self, batch):
        terms = super().loss(batch)
        terms["bpr"] = terms["bpr"] + torch.zeros(())
        return terms


@pytest.mark.parametrize(
    ("cls", "kind"), [(MFBPR, None), (_PlantedItem, "host read"), (_PlantedFactory, "cpu factory")]
)
def test_the_harness_catches_a_planted_round_trip_in_a_model_step(tiny, cls, kind):
    seed_everything(0)
    model = cls.from_data(tiny)
    trainer = Trainer(model, tiny, TrainConfig(batch_size=256, progress=False, verbose=False))
    found = _step_calls(model, trainer)
    if kind is None:
        assert found == []
    else:
        assert found and all(f[0] == kind for f in found), found
        assert all(f[2].startswith("test_device_sync.py:") for f in found), found


# --------------------------------------------------------------------------- every model, on CPU
@pytest.mark.parametrize("name", ALL_MODELS)
def test_the_training_step_has_no_host_round_trip(tiny, name):
    model, trainer = _build(name, tiny)
    found = _step_calls(model, trainer)
    reads = [f for f in found if f[0] != "data-dependent"]
    assert reads == [], f"{name}: host reads / CPU tensors in the step: {sorted(set(reads))}"
    shapes = sorted({f[1:] for f in found if f[0] == "data-dependent"})
    if name not in DATA_DEPENDENT_STEPS:
        assert shapes == [], f"{name}: data-dependent shapes in the step: {shapes}"
    else:  # the list is not stale: drop a model from it once its step needs none
        assert shapes, f"{name} no longer needs its DATA_DEPENDENT_STEPS entry"


@pytest.mark.parametrize("name", ["sea", "vbpr", "lgmrec"])
def test_the_bf16_step_has_no_host_round_trip(tiny, name):
    """``precision="bf16"`` (autocast, bfloat16 feature copies) adds no host round trip."""
    model, trainer = _build(name, tiny, precision="bf16")
    found = _step_calls(model, trainer)
    assert [f for f in found if f[0] != "data-dependent"] == []
    assert bool(found) == (name in DATA_DEPENDENT_STEPS)


@pytest.mark.parametrize("name", ["lattice", "mmssl", "sea", "dualgnn"])
def test_scoring_makes_no_cpu_tensor_and_reads_nothing(tiny, name):
    model, trainer = _build(name, tiny)
    model.pre_epoch(0)
    model.pre_epoch(1)  # MMSSL: the built modality-aware graphs
    model.eval()
    users = torch.arange(5)
    with torch.no_grad(), HostSync() as mode:
        model.score(users, model.scoring_state())
    assert [f for f in mode.found if f[0] != "data-dependent"] == []


def test_evaluation_reads_the_host_once_per_chunk(tiny):
    """The metric sums stay on the device: the host reads of an evaluation grow by one per
    chunk of users (the number of masked training entries), not one per chunk and metric."""
    store = tiny["user", "rates", "item"]
    scores = torch.randn(tiny["user"].num_nodes, tiny["item"].num_nodes)

    def reads(chunk: int) -> tuple[int, dict]:
        with HostSync() as mode:
            out = evaluate_ranking(
                lambda u: scores[u],
                store.val_edge_index,
                store.edge_index,
                tiny["user"].num_nodes,
                tiny["item"].num_nodes,
                ks=(5, 10),
                chunk_size=chunk,
            )
        return sum(f[0] == "host read" for f in mode.found), out

    users = int(torch.unique(store.val_edge_index[0]).numel())
    few, a = reads(users)  # one chunk
    many, b = reads(7)
    assert many - few == -(-users // 7) - 1
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-12 for k in a)


@pytest.mark.parametrize("name", ["lightgcn", "sea"])
def test_the_trainer_step_itself_has_no_host_round_trip(name, tiny):
    # the accelerator path (host_checks is False off the CPU), run on the CPU
    model, trainer = _build(name, tiny)
    trainer.host_checks = False
    batch = next(iter(trainer.sampler))
    with HostSync() as mode:
        trainer._train_step(batch)
    assert mode.found == []


def test_the_device_side_check_skips_a_non_finite_batch_and_stops_the_epoch(tiny):
    model, trainer = _build("sea", tiny)
    trainer.host_checks = False
    before = [p.detach().clone() for p in model.parameters()]
    real_loss = model.loss

    def nan_loss(batch):
        terms = real_loss(batch)
        terms["bpr"] = terms["bpr"] * float("nan")
        return terms

    model.loss = nan_loss
    assert trainer.train_epoch(0) is None  # read once, at the end of the epoch
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    model.loss = real_loss
    assert trainer.train_epoch(1) is not None  # the flag starts clear in the next epoch
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


# --------------------------------------------------------------------------- CUDA
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _on_cuda(model, trainer) -> None:
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        assert t.device.type == "cuda", f"{name} is on {t.device}"
    for opt in [trainer.optimizer, *trainer.auxiliary.optimizers.values()]:
        for state in opt.state.values():
            for key, v in state.items():
                if isinstance(v, Tensor) and key != "step":
                    assert v.device.type == "cuda", f"optimizer state {key} is on {v.device}"


@needs_cuda
@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_trains_and_evaluates_on_cuda(tiny, name):
    model, trainer = _build(name, tiny, device="cuda", epochs=2, patience=5)
    results = trainer.fit()
    assert results["epochs_run"] == 2, results["stop_reason"]
    assert results["best_epoch"] >= 0 and all(0.0 <= v <= 1.0 for v in results["test"].values())
    _on_cuda(model, trainer)
    state = model.scoring_state()
    scores = model.score(torch.arange(3, device="cuda"), state)
    assert scores.device.type == "cuda" and bool(torch.isfinite(scores).all())


@needs_cuda
@pytest.mark.parametrize("name", [n for n in ALL_MODELS if n not in DATA_DEPENDENT_STEPS])
def test_the_cuda_step_does_not_synchronise(tiny, name):
    model, trainer = _build(name, tiny, device="cuda")
    model.train()
    model.pre_epoch(0)
    batches = _batches(model, trainer, 0)
    first, second = batches[0], batches[-1]
    _step(model, trainer, first)  # warm-up: library handles, lazy buffers
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        _step(model, trainer, second)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()


@needs_cuda
def test_club_fitting_runs_on_cuda_without_synchronising(tiny):
    model, trainer = _build("sea", tiny, device="cuda")
    model.train()
    model.pre_epoch(0)
    batches = list(trainer.sampler)
    trainer.optimizer.zero_grad()
    sum(model.loss(batches[0]).values()).backward()
    trainer.auxiliary.step()
    trainer.optimizer.zero_grad()
    sum(model.loss(batches[-1]).values()).backward()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        losses = trainer.auxiliary.step()  # the 50 CLUB steps
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert losses and all(v.device.type == "cuda" for v in losses.values())
    assert all(bool(torch.isfinite(v)) for v in losses.values())
    _on_cuda(model, trainer)
    assert trainer.auxiliary.optimizers and all(
        opt.state for opt in trainer.auxiliary.optimizers.values()
    )


@needs_cuda
@pytest.mark.parametrize("name", ["lightgcn", "mf", "vbpr"])
def test_cuda_gives_the_cpu_numbers(tiny, name):
    """Models without randomness in the step (the batches come from the same CPU generator)
    train to the same losses and metrics on both devices, up to float rounding."""
    runs = {}
    for device in ("cpu", "cuda"):
        _, trainer = _build(name, tiny, device=device, epochs=3, patience=5)
        runs[device] = trainer.fit()["history"]
    for cpu, gpu in zip(runs["cpu"], runs["cuda"], strict=True):
        assert gpu["loss"] == pytest.approx(cpu["loss"], rel=1e-3)
        for k, v in cpu["valid"].items():
            assert gpu["valid"][k] == pytest.approx(v, abs=0.05), k


# --------------------------------------------------------------------------- the fixes themselves
def _slot_by_slot(neighbors, counts, num_users, k, generator):
    """The padding as it was written before (one device copy per slot): the reference."""
    src, dst = neighbors[0], neighbors[1]
    deg = torch.bincount(src, minlength=num_users)
    first = torch.zeros(num_users, dtype=torch.long)
    first[1:] = deg.cumsum(0)[:-1]
    n = deg.clamp(max=k)
    slot = torch.arange(k)
    valid = slot[None, :] < n[:, None]
    pos = (first[:, None] + slot[None, :]).clamp(max=src.numel() - 1)
    index = torch.where(valid, dst[pos], torch.arange(num_users)[:, None].expand(-1, k))
    count = torch.where(valid, counts.float()[pos], 0.0)
    for t in range(1, k):
        rows = ((n > 0) & (n <= t)).nonzero().flatten()
        if rows.numel():
            pick = torch.randint(0, t, (rows.numel(),), generator=generator)
            index[rows, t] = index[rows, pick]
            count[rows, t] = count[rows, pick]
    return index, count


def test_neighbour_padding_composed_on_the_host_is_the_slot_by_slot_sample():
    from sea_pyg.nn.user_graph import sample_user_neighbors, user_cooccurrence_graph

    g = torch.Generator().manual_seed(3)
    users = torch.randint(0, 40, (90,), generator=g)  # users 40..49: no neighbour
    items = torch.randint(0, 60, (90,), generator=g)
    nbr, cnt = user_cooccurrence_graph(torch.stack([users, items]), 50, 60, 6)
    deg = torch.bincount(nbr[0], minlength=50)
    assert ((deg > 0) & (deg < 5)).any() and (deg == 0).any() and (deg >= 6).any()  # all cases
    index, weight = sample_user_neighbors(
        nbr, cnt, 50, 6, generator=torch.Generator().manual_seed(7)
    )
    ref_index, ref_count = _slot_by_slot(nbr, cnt, 50, 6, torch.Generator().manual_seed(7))
    assert torch.equal(index, ref_index)
    ref_weight = torch.where((deg > 0)[:, None], torch.softmax(ref_count, dim=1), 0.0)
    assert torch.equal(weight, ref_weight)


def test_unchecked_graph_building_reads_nothing_and_builds_the_same_graph():
    from sea_pyg.nn import WeightedGraph, cosine_topk

    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.1]])
    with HostSync() as mode:
        edges, values = cosine_topk(x, 2, check_values=False)
        graph = WeightedGraph.from_edges(edges, values, 4, check_values=False)
    assert [f for f in mode.found if f[0] == "host read"] == []
    ref = WeightedGraph.from_edges(*cosine_topk(x, 2), 4)
    assert torch.equal(graph.crow, ref.crow) and torch.equal(graph.col, ref.col)
    assert torch.equal(graph.value, ref.value)
    # by hand: item 1's neighbours are itself (1) and item 0 (0.8) or 2 (0.6): 0 wins
    dense = torch.zeros(4, 4)
    dense[graph.row, graph.col] = graph.value
    assert dense[1].tolist() == pytest.approx([0.8, 1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="NaN or infinite"):  # the checked path still checks
        cosine_topk(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 1)
    with pytest.raises(ValueError, match="outside"):
        WeightedGraph.from_edges(torch.tensor([[0, 5], [1, 0]]), torch.ones(2), 4)


def test_unchecked_candidate_loss_reads_nothing_and_is_the_same_loss():
    from sea_pyg.nn import candidate_info_nce_loss

    a, c = torch.randn(3, 4), torch.randn(5, 4)
    t = torch.tensor([4, 0, 4])
    with HostSync() as mode:
        fast = candidate_info_nce_loss(a, c, t, 0.5, check_values=False)
    assert [f for f in mode.found if f[0] == "host read"] == []
    logits = torch.nn.functional.normalize(a, dim=1) @ torch.nn.functional.normalize(c, dim=1).T
    hand = torch.nn.functional.cross_entropy(logits / 0.5, t, reduction="sum")
    assert torch.allclose(fast, hand) and torch.equal(fast, candidate_info_nce_loss(a, c, t, 0.5))
    with pytest.raises(ValueError, match="outside"):
        candidate_info_nce_loss(a, c, torch.tensor([5, 0, 0]))


def test_mmssl_keeps_its_graphs_between_rebuilds_and_after_a_load(tiny):
    seed_everything(0)
    model, _, _ = build_model("mmssl", tiny)
    assert model.modal_graphs()[0][0] is model.ui_adj  # observed graph before the first build
    model.rebuild_modal_graphs()
    first = model.modal_graphs()
    assert model.modal_graphs()[0][0] is first[0][0]  # kept: not rebuilt per step
    with torch.no_grad():
        model.user_emb.weight.mul_(-1.0)  # other parameters, other top-k
    model.rebuild_modal_graphs()
    again = model.modal_graphs()
    assert again[0][0] is not first[0][0]  # a rebuild drops the kept graphs
    fresh = model._build_modal_graphs(model.item_emb.weight.dtype)
    for (ui, iu), (fu, fi) in zip(again, fresh, strict=True):
        assert torch.equal(ui.to_dense(), fu.to_dense()) and torch.equal(
            iu.to_dense(), fi.to_dense()
        )
    seed_everything(1)
    loaded, _, _ = build_model("mmssl", tiny)
    loaded.load_state_dict(model.state_dict())
    assert loaded._built
    for (ui, _), (fu, _) in zip(loaded.modal_graphs(), fresh, strict=True):
        assert torch.equal(ui.to_dense(), fu.to_dense())


def _club_after_one_step(tiny, skip):
    model, trainer = _build("sea", tiny)
    model.train()
    model.pre_epoch(0)
    batch = next(iter(trainer.sampler))
    sum(model.loss(batch).values()).backward()
    before = [p.detach().clone() for _, est in trainer.auxiliary.estimators for p in est.parameters]
    with HostSync() as mode:
        losses = trainer.auxiliary.step() if skip is None else trainer.auxiliary.step(skip)
    after = [p.detach() for _, est in trainer.auxiliary.estimators for p in est.parameters]
    state = [opt.state for opt in trainer.auxiliary.optimizers.values()]
    return before, after, state, losses, mode.found


def test_auxiliary_step_skips_on_a_device_flag_without_reading_it(tiny):
    """``AuxiliaryTraining.step(skip)``: a true flag leaves the CLUB estimators and their Adam
    state as they were, a false one is the plain step; neither reads the flag on the host."""
    before, after, state, losses, found = _club_after_one_step(tiny, torch.tensor(True))
    assert found == [] and losses  # the losses are still computed (0-d tensors)
    assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
    steps = [s["step"] for st in state for s in st.values()]
    assert steps and all(float(s) == 0.0 for s in steps)  # no Adam step counted
    _, plain, _, plain_losses, _ = _club_after_one_step(tiny, None)
    _, kept, _, kept_losses, found = _club_after_one_step(tiny, torch.tensor(False))
    assert found == []
    assert all(torch.equal(a, b) for a, b in zip(plain, kept, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(before, plain, strict=True))
    assert all(torch.equal(plain_losses[k], kept_losses[k]) for k in plain_losses)


@needs_cuda
def test_a_cuda_run_resumes(tiny, tmp_path):
    _, first = _build("lightgcn", tiny, device="cuda", epochs=1, output_dir=str(tmp_path))
    first.fit()
    _, again = _build(
        "lightgcn", tiny, device="cuda", epochs=2, output_dir=str(tmp_path), resume=True
    )
    assert again.fit()["epochs_run"] == 2
