"""Every user error of ``sea-pyg train`` is one line ``sea-pyg train: error: ...`` and exit
status 2, raised before any data is loaded, in the words of the command line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sea_pyg.cli import CommandError, main
from sea_pyg.cli.errors import in_flag_words
from sea_pyg.cli.hparams import check_hparams, parse_sets
from sea_pyg.cli.train import flag_names
from sea_pyg.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _error(argv, capsys) -> str:
    """The one stderr line of a failing ``main(argv)``; checks status 2 and the exception."""
    with pytest.raises(CommandError) as exc:
        main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.strip() == str(exc.value)
    assert err.startswith(f"sea-pyg {argv[0]}: error: ")
    return err.strip()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "lightgnc"], "--model: unknown model 'lightgnc' (did you mean 'lightgcn'?)"),
        (["--model", "nothing-like-it"], "unknown model 'nothing-like-it'; `sea-pyg models`"),
        (["--compare", "mff"], "--compare: unknown model 'mff' (did you mean 'mf'?)"),
        (["--epochs", "0"], "argument --epochs: must be >= 1, got 0"),
        (["--epochs", "two"], "argument --epochs: expected an integer, got 'two'"),
        (["--lr", "0"], "argument --lr: must be > 0, got '0'"),
        (["--lr", "inf"], "argument --lr: must be a finite number, got 'inf'"),
        (["--batch-size", "-5"], "argument --batch-size: must be >= 1, got -5"),
        (["--patience", "-1"], "argument --patience: must be >= 0, got -1"),
        (["--eval-chunk-size", "0"], "argument --eval-chunk-size: must be >= 1, got 0"),
        (["--weight-decay", "-0.1"], "argument --weight-decay: must be >= 0, got '-0.1'"),
        (["--seed", "-1"], "argument --seed: must be >= 0, got -1"),
        (["--valid-metric", "recall"], "--valid-metric must look like 'recall@20', got 'recall'"),
        (["--set", "lr=0.01"], "--set lr=0.01: lr is a training setting, not a hyper-parameter "
                               "of sea; pass --lr 0.01 instead"),
        (["--set", "batch-size=64"], "pass --batch-size 64 instead"),
        (["--model", "lightgcn", "--set", "layers=3"],
         "--set layers=3: model 'lightgcn' has no hyper-parameter 'layers' (did you mean "
         "'num_layers'?); it takes embedding_dim, num_layers, reg_weight"),
        (["--model", "lightgcn", "--set", "num_layers=two"],
         "--set num_layers=two: num_layers takes an integer (default 2), got the text 'two'"),
        (["--model", "lightgcn", "--set", "num_layers=2.5"],
         "takes an integer (default 2), got 2.5"),
        (["--model", "freedom", "--set", "knn_weights=[1, 2]"],
         "knn_weights takes a JSON object (e.g. {\"image\": 0.1, \"text\": 0.9}) or null "
         "(default null), got [1, 2]"),
        (["--set", "fused=maybe"], "fused takes true or false (default true), got the text"),
        (["--set", "reg_weight"], "--set expects KEY=VALUE"),
        (["--model", "lightgcn", "--sea"], "--sea: model 'lightgcn' has no SEA plug-in"),
        (["--synthetic", "huge"], "--synthetic: unknown preset 'huge'; choose from tiny, small"),
        (["--data", "/no/such/folder"], "--data /no/such/folder does not exist"),
        (["--device", "gpu"], "--device 'gpu': not a torch device; use cpu, cuda, cuda:N or mps"),
        (["--device", "cuda:99"], "--device cuda:99: "),
    ],
)
def test_bad_flags_are_one_line_before_the_data(flags, message, no_data, capsys):
    line = _error(["train", *flags], capsys)
    assert message in line
    assert "TrainConfig" not in line and "Traceback" not in line


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_missing_mps_is_a_message(no_data, capsys):
    line = _error(["train", "--device", "mps"], capsys)
    assert "--device mps: " in line and "use --device cpu" in line


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_missing_cuda_is_a_message(no_data, capsys):
    line = _error(["train", "--device", "cuda"], capsys)
    built = torch.backends.cuda.is_built()
    assert ("no CUDA device is visible" if built else "this torch build has no CUDA") in line


def test_output_folder_that_cannot_be_written(tmp_path, no_data, capsys):
    (tmp_path / "a-file").write_text("x")
    line = _error(["train", "--out", str(tmp_path / "a-file")], capsys)
    assert line.endswith(f"--out {tmp_path / 'a-file'} is a file, not a folder; pass a folder "
                         "to write into")
    line = _error(["train", "--out", str(tmp_path / "a-file" / "run")], capsys)
    assert f"{tmp_path / 'a-file'} is a file, so no folder can be created under it" in line
    if Path("/proc/self").is_dir():  # even root cannot create files in /proc
        line = _error(["train", "--out", "/proc/sea-pyg/run"], capsys)
        assert "cannot write there: creating a file in /proc failed" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]  # no probe left


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, no_data, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        line = _error(["train", "--out", str(ro / "run")], capsys)
    finally:
        ro.chmod(0o755)
    assert f"creating a file in {ro} failed (Permission denied)" in line


def test_unwritable_folder_is_found_by_a_probe(tmp_path, no_data, capsys, monkeypatch):
    """Whatever makes the probe file fail (permissions, a read-only disk, quota) is reported."""
    import tempfile

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    line = _error(["train", "--out", str(tmp_path / "run")], capsys)
    assert f"creating a file in {tmp_path} failed (Read-only file system)" in line


def test_set_values_are_converted_to_the_constructor_types():
    sets = parse_sets(["reg_weight=1", "trans_dim=null", "club_clamp_min=none",
                       'chunk_size=auto', "club_shared=True", "club_steps=3.0",
                       "alignment=infonce"])
    assert check_hparams("vbpr+sea", sets, {}) == {
        "reg_weight": 1.0, "trans_dim": None, "club_clamp_min": None, "chunk_size": "auto",
        "club_shared": True, "club_steps": 3, "alignment": "infonce",
    }
    out = check_hparams("freedom", parse_sets(['knn_weights={"image": 1, "text": 3}']), {})
    assert out == {"knn_weights": {"image": 1.0, "text": 3.0}}
    assert isinstance(check_hparams("vbpr", parse_sets(["reg_weight=0"]), {})["reg_weight"],
                      float)
    # a text hyper-parameter given a number keeps the text as typed
    assert check_hparams("sea", parse_sets(["bpr=1"]), {}) == {"bpr": "1"}


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"epochs": 0}, "--epochs must be >= 1, got 0"),
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"lr": 0}, "--lr must be > 0, got 0"),
        ({"patience": -1}, "--patience must be >= 0, got -1"),
        ({"valid_metric": "x@1"}, "--valid-metric must look like 'recall@20', got 'x@1'"),
        ({"metrics": ["nope"]}, "the reported metrics: unknown ['nope']; choose from ['recall', "
                                  "'ndcg', 'precision', 'map']"),
    ],
)
def test_library_messages_name_the_flags(kwargs, flag):
    """TrainConfig's own messages, put in the command line's words."""
    from sea_pyg.cli.parser import build_parser

    flags = flag_names(build_parser().parse_args(["train"])._parser)
    with pytest.raises(ValueError) as exc:
        TrainConfig(**kwargs)
    assert "TrainConfig." in str(exc.value)
    assert in_flag_words(str(exc.value), flags) == flag


def test_message_translation():
    flags = {"resume": "--resume", "output_dir": "--out", "epochs": "--epochs"}
    msg = ("resume: runs/x/last.pt was written for model {'name': 'mf'}, not {'name': "
           "'lightgcn'}; use another output folder or resume=False")
    assert in_flag_words(msg, flags).endswith("use another output folder or drop --resume")
    assert in_flag_words("pass `resume=True` or a new `output_dir`", flags) == (
        "pass --resume or a new --out")
    assert in_flag_words("resume=True needs `output_dir`; pass resume=False", flags) == (
        "--resume needs --out; drop --resume")
    assert in_flag_words("config.epochs is 0", flags) == "--epochs is 0"
    assert in_flag_words("x=True stays", flags) == "x=True stays"  # not a flag: unchanged
    hp = {**flags, "club_shared": "--set club_shared", "dropout": "--set dropout"}
    assert in_flag_words("`dropout` must lie in [0, 1); use club_shared=True", hp) == (
        "--set dropout must lie in [0, 1); use --set club_shared=true")
    assert in_flag_words("TrainConfig.topk: cut-off 50", flags) == (
        "the metric cut-offs (10, 20 and the one of --valid-metric): cut-off 50")


def test_errors_after_loading_name_the_flags(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SEA_PYG_HOME", str(tmp_path / "home"))
    base = ["train", "--synthetic", "tiny", "--quiet", "--no-progress", "--out",
            str(tmp_path / "run")]
    # the tiny preset has 40 items: a cut-off of 50 is refused by the trainer
    line = _error([*base, "--model", "mf", "--valid-metric", "recall@50"], capsys)
    assert line.endswith("the metric cut-offs (10, 20 and the one of --valid-metric): cut-off 50 "
                         "exceeds the number of items 40")
    # a value the constructor refuses (checked with the data): named as typed
    line = _error([*base, "--model", "freedom", "--set", "dropout=1.5"], capsys)
    assert line.endswith("--model freedom: --set dropout must lie in [0, 1), got 1.5")
    assert main([*base, "--model", "mf", "--epochs", "1"]) == 0
    with pytest.raises(CommandError) as exc:  # the refusal lists each difference, one a line
        main([*base, "--model", "lightgcn", "--epochs", "1", "--resume"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.startswith("sea-pyg train: error: cannot resume")
    assert "model: 'mf' -> 'lightgcn'" in err and "--allow-changes model" in err
    assert "resume=" not in err and "TrainConfig" not in err and "allow_changes=" not in err
    assert json.loads((tmp_path / "run" / "results.json").read_text())["model"]["name"] == "mf"


def test_the_command_exits_2_with_one_line(tmp_path):
    """As a process: no traceback (the issue saw 33 lines for --device cuda)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEA_PYG_HOME": str(tmp_path),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "sea_pyg.cli", "train", "--device", "cuda:999"],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("sea-pyg train: error: --device cuda:999: ")
    assert proc.stdout == ""
