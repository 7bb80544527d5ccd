"""Mixed precision (``TrainConfig.precision``, ``--precision``): bf16 autocast of the training
forward pass for every registered model, float32 everywhere it is documented to stay."""

import collections
import json
import math

import pytest
import torch
import yaml
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from sea_pyg.cli import main
from sea_pyg.models import MODELS, Recommender, build_model
from sea_pyg.nn import CLUB, bpr_loss, club_gradient_step, full_precision, sparse_mm
from sea_pyg.nn.losses import info_nce_loss
from sea_pyg.train import TrainConfig, Trainer, seed_everything
from sea_pyg.train.precision import PRECISIONS, MixedPrecision

pytestmark = pytest.mark.usefixtures("one_thread")

aten = torch.ops.aten


@pytest.fixture(scope="module")
def tiny(tiny_data):
    return tiny_data


def _config(precision, **kw):
    base = dict(
        epochs=1,
        batch_size=128,
        patience=100,
        progress=False,
        verbose=False,
        seed=1,
        topk=(5, 10),
        valid_metric="recall@10",
        precision=precision,
    )
    base.update(kw)
    return base


def _registered(name, data, precision, **kw):
    """Trainer of registry model ``name`` (seed 0); a pre-training stage is cut to 1 epoch."""
    seed_everything(0)
    hparams = {"pretrain_epochs": 1} if "pretrain_epochs" in MODELS[name].defaults else {}
    model, info, defaults = build_model(name, data, **hparams)
    cfg = {**defaults, **_config(precision, **kw)}
    return Trainer(model, data, TrainConfig(**cfg), model_info=info)


class _MatmulDtypes(TorchDispatchMode):
    """Counts the dtypes of the matrix products that reach the kernels (after autocast)."""

    OPS = (aten.mm, aten.addmm, aten.bmm, aten.baddbmm)

    def __init__(self):
        super().__init__()
        self.seen = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in self.OPS:
            dense = [a for a in args if isinstance(a, torch.Tensor) and a.layout == torch.strided]
            if dense:
                self.seen[dense[-1].dtype] += 1
        return func(*args, **(kwargs or {}))


# --------------------------------------------------------------------------- every model
@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_trains_in_bf16_and_resumes_exactly(name, tiny, tmp_path):
    """Two epochs in bf16 (finite losses, float32 parameters, gradients, Adam state and
    checkpoints, buffers given back in float32) equal one epoch plus a resume to two."""
    big = {"batch_size": 256}  # 2 steps per epoch (468 training rows)
    trainer = _registered(name, tiny, "bf16", epochs=2, output_dir=str(tmp_path / "a"), **big)
    dtypes = {k: b.dtype for k, b in trainer.model.named_buffers()}
    full = trainer.fit()
    assert full["config"]["precision"] == "bf16" and full["epochs_run"] == 2
    for record in full["history"]:
        assert all(math.isfinite(v) for v in record["losses"].values()), record
    model = trainer.model
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.grad.dtype for p in model.parameters() if p.grad is not None} <= {torch.float32}
    for state in trainer.optimizer.state.values():
        assert all(v.dtype == torch.float32 for v in state.values() if v.dim() > 0)
    after = {k: b.dtype for k, b in model.named_buffers()}
    assert {k: after[k] for k in dtypes} == dtypes  # the low-precision copies were given back
    last = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert {t.dtype for t in last["model"].values() if t.is_floating_point()} == {torch.float32}

    _registered(name, tiny, "bf16", epochs=1, output_dir=str(tmp_path / "b"), **big).fit()
    resumed = _registered(
        name, tiny, "bf16", epochs=2, output_dir=str(tmp_path / "b"), resume=True, **big
    ).fit()
    assert [h["losses"] for h in resumed["history"]] == [h["losses"] for h in full["history"]]
    assert resumed["best_valid"] == full["best_valid"]
    again = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    for k, t in last["model"].items():
        assert torch.equal(t, again["model"][k]), k


# ------------------------------------------------------------- bf16 close to fp32, not equal
@pytest.mark.parametrize("name", ["vbpr", "sea", "lgmrec+sea"])
def test_bf16_runs_bf16_products_and_stays_close_to_fp32(name, tiny):
    losses, products = {}, {}
    for precision in PRECISIONS:
        trainer = _registered(name, tiny, precision)
        batch = next(iter(trainer.sampler))
        with _MatmulDtypes() as seen:
            trainer._train_step(batch)  # one step: forward, backward, CLUB fitting, Adam
        products[precision] = seen.seen
        trainer = _registered(name, tiny, precision)
        losses[precision] = trainer.fit()["history"][0]["losses"]
    assert products["fp32"][torch.bfloat16] == 0 and products["fp32"][torch.float32] > 0
    assert products["bf16"][torch.bfloat16] > 0
    assert losses["bf16"].keys() == losses["fp32"].keys()
    differ = 0
    for k, ref in losses["fp32"].items():
        got = losses["bf16"][k]
        assert got == pytest.approx(ref, rel=1e-2, abs=1e-6), k
        differ += got != ref
    assert differ > 0  # autocast changed the rounding: the run really was bf16


@pytest.mark.parametrize("name", ["vbpr", "lgmrec", "sea"])
def test_the_bf16_feature_copy_changes_no_number(name, tiny):
    """The cached bfloat16 features give the very numbers autocast's own cast gives."""
    runs = []
    for cached in (True, False):
        trainer = _registered(name, tiny, "bf16", epochs=2)
        assert trainer.model.low_precision_buffers()
        if not cached:
            trainer.model.low_precision_buffers = list
        runs.append(trainer.fit())
    assert [h["losses"] for h in runs[0]["history"]] == [h["losses"] for h in runs[1]["history"]]
    assert runs[0]["best_valid"] == runs[1]["best_valid"]


# ----------------------------------------------------- what runs where: a recording toy model
class _Toy(Recommender):
    """Matrix factorisation whose item side is ``features @ W``; records the autocast state
    and the feature buffer's dtype in each hook, and declares a toy auxiliary estimator."""

    def __init__(self, num_users=6, num_items=5, dim=4):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.user = nn.Parameter(torch.randn(num_users, dim, generator=g))
        self.proj = nn.Linear(3, dim)
        self.register_buffer("feat", torch.randn(num_items, 3, generator=g), persistent=False)
        self.aux = nn.Linear(dim, 1)
        self.log = collections.defaultdict(list)
        self._pending = None

    def low_precision_buffers(self):
        return ["feat"]

    def _state(self, where):
        self.log[where].append((torch.is_autocast_enabled("cpu"), self.feat.dtype))

    def pre_epoch(self, epoch):
        self._state("pre_epoch")

    def loss(self, batch):
        self._state("loss")
        self.log["feat_ids"].append(id(self.feat))
        u, p, n = batch
        items = self.proj(self.feat)
        self._pending = items.detach()
        pos = (self.user[u] * items[p]).sum(-1)
        neg = (self.user[u] * items[n]).sum(-1)
        return {"bpr": bpr_loss(pos, neg, variant="logsigmoid")}

    def embeddings(self):
        self._state("eval")
        return self.user, self.proj(self.feat)

    def auxiliary_estimators(self):
        from sea_pyg.nn import AuxiliaryEstimator

        def prepare():
            pending, self._pending = self._pending, None

            def step(with_loss):
                self._state("aux")
                self.log["aux_input"].append(pending.dtype)
                loss = self.aux(pending.float()).square().mean()
                loss.backward()
                return loss.detach() if with_loss else None

            return step

        est = AuxiliaryEstimator("aux", tuple(self.aux.parameters()), 1e-3, 1, prepare)
        return [("aux", est)]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_only_the_forward_runs_under_autocast(precision, tiny):
    data = tiny
    n_users, n_items = data["user"].num_nodes, data["item"].num_nodes
    model = _Toy(n_users, n_items)
    original = model.feat
    trainer = Trainer(model, data, TrainConfig(**_config(precision, batch_size=256)))
    trainer.fit()
    bf16 = precision == "bf16"
    low = torch.bfloat16 if bf16 else torch.float32
    assert set(model.log["loss"]) == {(bf16, low)}
    for where in ("pre_epoch", "eval", "aux"):
        assert set(model.log[where]) == {(False, torch.float32)}, where
    assert set(model.log["aux_input"]) == {low}  # the forward's (bf16) output, as it came
    assert model.feat is original and model.feat.dtype == torch.float32
    if bf16:  # one bfloat16 copy for every step while the buffer is unchanged
        assert len(model.log["feat_ids"]) > 1 and len(set(model.log["feat_ids"])) == 1
        model.feat.mul_(2.0)  # an in-place change: a fresh copy, of the new values
        with trainer.precision.forward(model):
            assert torch.equal(model.feat, original.detach().to(torch.bfloat16))
            assert id(model.feat) != model.log["feat_ids"][0]
        assert model.feat is original


def test_a_bad_buffer_name_and_a_bad_precision_are_named():
    model = _Toy()
    model.low_precision_buffers = lambda: ["proj.nothing"]
    with pytest.raises(ValueError, match="'proj.nothing', which is not a buffer"):
        with MixedPrecision("bf16", "cpu").forward(model):
            pass
    with pytest.raises(ValueError, match=r"precision \(--precision\) must be one of"):
        TrainConfig(precision="fp16")
    with MixedPrecision("fp32", "cpu").forward(model):
        assert not torch.is_autocast_enabled("cpu")


def test_the_float32_buffer_comes_back_after_an_exception():
    model, mp = _Toy(), MixedPrecision("bf16", "cpu")
    original = model.feat
    with pytest.raises(RuntimeError, match="boom"), mp.forward(model):
        assert model.feat.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        raise RuntimeError("boom")
    assert model.feat is original and not torch.is_autocast_enabled("cpu")


def test_a_wrapper_forwards_its_hosts_low_precision_buffers():
    class Wrapper(Recommender):
        def __init__(self):
            super().__init__()
            self.host = _Toy()

    assert Wrapper().low_precision_buffers() == ["host.feat"]
    assert Recommender().low_precision_buffers() == []


# ------------------------------------------------------------ sparse products and losses
def test_sparse_mm_runs_in_float32_under_autocast():
    # A = [[0.5, 0, 2], [0, 1, 0]] (CSR) and x = [[1, 2], [3, 4], [5, 6]] (bf16-exact)
    adj = torch.tensor([[0.5, 0.0, 2.0], [0.0, 1.0, 0.0]]).to_sparse_csr()
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    expected = torch.tensor([[10.5, 13.0], [3.0, 4.0]])
    assert torch.equal(sparse_mm(adj, x), expected)  # plain call outside autocast
    xb = x.to(torch.bfloat16).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(NotImplementedError, match="BFloat16"):
            adj @ x  # what full_precision avoids: autocast casts the CSR matrix
        out = sparse_mm(adj, xb)
        assert out.dtype == torch.float32 and torch.equal(out, expected)
        # the next product is autocast's again
        assert (out @ torch.ones(2, 1)).dtype == torch.bfloat16
    out.sum().backward()  # d sum(A x) / dx = A^T 1 = [[0.5, 0.5], [1, 1], [2, 2]]
    assert xb.grad.dtype == torch.bfloat16
    assert torch.equal(xb.grad.float(), torch.tensor([[0.5, 0.5], [1.0, 1.0], [2.0, 2.0]]))


def test_full_precision_is_a_plain_call_without_autocast():
    calls = []

    @full_precision
    def f(a, b=None):
        calls.append((torch.is_autocast_enabled("cpu"), a.dtype, b.dtype))
        return a

    a = torch.ones(2, dtype=torch.bfloat16)
    assert f(a, b=torch.ones(1)) is a
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert f(a, b=torch.ones(1, dtype=torch.bfloat16)).dtype == torch.float32
    assert calls == [(False, torch.bfloat16, torch.float32), (False, torch.float32, torch.float32)]


def test_losses_are_float32_under_autocast():
    # BPR log-sigmoid of gaps (2, -1): -(ln s(2) + ln s(-1)) / 2
    pos = torch.tensor([3.0, 0.0], dtype=torch.bfloat16)
    neg = torch.tensor([1.0, 1.0], dtype=torch.bfloat16)
    want = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 / (1 + math.exp(1)))) / 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = bpr_loss(pos, neg, variant="logsigmoid")
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
        nce = info_nce_loss(a.to(torch.bfloat16), b.to(torch.bfloat16))  # dense: float32
        chunked = info_nce_loss(a.to(torch.bfloat16), b.to(torch.bfloat16), chunk_size=3)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want, rel=1e-6)
    ref = info_nce_loss(a.to(torch.bfloat16).float(), b.to(torch.bfloat16).float())
    assert nce.dtype == torch.float32 and torch.equal(nce, ref)
    # the chunked path's products are bfloat16, its statistics float32 (tests/nn/test_contrastive)
    assert chunked.dtype == torch.float32 and chunked.item() == pytest.approx(ref.item(), rel=1e-2)


def test_club_is_fitted_in_float32_on_bf16_pairs():
    torch.manual_seed(0)
    club = CLUB(4, 4, 8)
    x, y = torch.randn(16, 4).to(torch.bfloat16), torch.randn(16, 4).to(torch.bfloat16)
    step = club_gradient_step([(club, [(x, y)])])
    loss = step(True)
    grads = [p.grad.clone() for p in club.parameters()]
    assert type(step).__name__ == "_StackedCLUBs"  # the fast path: same dtype as the weights
    assert loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads)
    for p in club.parameters():
        p.grad = None
    ref = club_gradient_step([(club, [(x.float(), y.float())])])(True)
    assert torch.equal(loss, ref)
    assert all(torch.equal(p.grad, g) for p, g in zip(club.parameters(), grads, strict=True))


# ------------------------------------------------------------------------ CLI and resume
def test_cli_records_precision_and_resume_refuses_another(tmp_path, capsys):
    out = tmp_path / "run"
    base = [
        "train",
        "--model",
        "vbpr",
        "--synthetic",
        "tiny",
        "--out",
        str(out),
        "--no-progress",
        "--quiet",
    ]
    assert main([*base, "--epochs", "1", "--precision", "bf16"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["precision"] == "bf16"
    assert yaml.safe_load((out / "config.yaml").read_text())["precision"] == "bf16"
    resume = [*base, "--epochs", "2", "--resume", "--precision", "fp32"]
    with pytest.raises(SystemExit, match="precision: 'bf16' -> 'fp32'"):
        main(resume)
    assert main([*resume, "--allow-changes", "precision"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["precision"] == "fp32" and results["epochs_run"] == 2
    assert results["resumes"][0]["changes"] == {"precision": "'bf16' -> 'fp32'", "epochs": "1 -> 2"}
    with pytest.raises(SystemExit):
        main(["train", "--precision", "fp16"])
    assert "invalid choice: 'fp16'" in capsys.readouterr().err


def test_tune_passes_precision_to_its_trials_and_keeps_old_studies(tmp_path):
    from sea_pyg.cli.parser import build_parser
    from sea_pyg.cli.tune import _setup

    def settings(*flags):
        args = build_parser().parse_args(
            ["tune", "--model", "mf", "--synthetic", "tiny", "--study", str(tmp_path), *flags]
        )
        return _setup(args)

    bf16 = settings("--precision", "bf16")
    assert bf16["kwargs"]["precision"] == "bf16" and bf16["config"].precision == "bf16"
    assert bf16["settings"]["train"]["precision"] == "bf16"
    fp32 = settings()  # the settings of a study made before --precision existed
    assert fp32["config"].precision == "fp32" and "precision" not in fp32["settings"]["train"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["vbpr", "sea", "lgmrec+sea"])
def test_bf16_on_cuda(name, tiny):
    trainer = _registered(name, tiny, "bf16", epochs=2, device="cuda")
    res = trainer.fit()
    assert all(math.isfinite(v) for h in res["history"] for v in h["losses"].values())
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    ref = _registered(name, tiny, "fp32", device="cuda").fit()["history"][0]["losses"]
    for k, v in ref.items():
        assert res["history"][0]["losses"][k] == pytest.approx(v, rel=2e-2, abs=1e-5), k
