"""``sea-pyg models`` and ``sea-pyg train --model NAME --help``: every model, its paper and each
hyper-parameter with default, type and meaning, read from the registry and the docstrings."""

import re
import sys

import pytest

from sea_pyg.cli import CommandError, main
from sea_pyg.cli.hparams import arg_docs, hparam_doc, plain_rst, reference
from sea_pyg.models import MODELS, SEA, LightGCN


class _Documented:
    """A class to parse.

    Args:
        alpha: First line of alpha
            and its second line.
        beta / gamma: Shared by two.
        **rest: Forwarded.

    Shapes:
        - not: an argument
    """


def test_args_section_is_parsed():
    assert arg_docs(_Documented) == {
        "alpha": "First line of alpha and its second line.",
        "beta": "Shared by two.",
        "gamma": "Shared by two.",
        "rest": "Forwarded.",
    }


def test_docstring_markup_becomes_plain_text():
    assert plain_rst(r":math:`\lambda` of :class:`~sea_pyg.nn.ItemKNNGraph` (``n_layers``)") == (
        "λ of ItemKNNGraph (n_layers)")
    assert plain_rst(r"Propagations :math:`L_{mm}` over :math:`\mathbf{S}`") == (
        "Propagations L_mm over S")
    text = r"over :math:`\hat{\mathbf{S}}^m` with :math:`\boldsymbol{\theta}`, **zero** grads"
    assert plain_rst(text) == "over S^m with θ, zero grads"
    assert plain_rst(r":math:`N \times N`, :math:`\lambda_E`") == "N × N, λ_E"


def test_papers_come_from_the_model_files():
    assert reference(LightGCN) == "LightGCN (He et al., 2020)"
    assert reference(SEA) == "SEA: Separate Learning for Multimedia Recommendation"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_hyper_parameter_is_documented(name):
    """The house rule (docs/concepts.md): a model documents each constructor argument."""
    missing = [k for k in MODELS[name].defaults if not hparam_doc(name, k)]
    assert missing == []


def test_models_lists_every_model(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    starts = [line.split()[0] for line in out.splitlines() if line and not line[0].isspace()]
    assert starts[0] == "models" and starts[1:] == sorted(MODELS)
    text = " ".join(out.split())
    assert ("lightgcn LightGCN on PyG LGConv (MMRec LightGCN) paper: LightGCN (He et al., 2020) "
            "hyper-parameters: embedding_dim=64 num_layers=2 reg_weight=0.0001") in text
    assert "sea-b SEA_b: SoloSim alignment + negative-L2 distancing" in text
    assert "hyper-parameters: those of sea, with distancing=negl2 training defaults: --lr 0.0001" \
        in text
    assert ("paper: VBPR (He & McAuley, 2016); SEA: Separate Learning for Multimedia "
            "Recommendation") in text


def test_models_name_gives_the_table(capsys):
    assert main(["models", "LightGCN"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("lightgcn: LightGCN on PyG LGConv (MMRec LightGCN)\n"
                          "  class: sea_pyg.models.LightGCN\n"
                          "  paper: LightGCN (He et al., 2020)\n")
    rows = {line.split()[0]: line.split(None, 3)[1:] for line in out.splitlines()
            if line.startswith("    ") and not line.startswith("     ")}
    assert rows["num_layers"] == ["int", "2", "Propagation layers L (MMRec grid: 1-4)."]
    assert rows["reg_weight"] == ["float", "0.0001", "Regularisation weight (MMRec grid: 1e-2 "
                                  "... 1e-6)."]
    assert rows["name"] == ["type", "default", "meaning"]


def test_preset_values_are_marked(capsys):
    assert main(["models", "vbpr+sea"]) == 0
    out = capsys.readouterr().out
    assert "class: WithSeparateLearning(sea_pyg.models.VBPR)" in out
    assert re.search(r"\n    reg_weight +float +2\.0\* ", out)
    assert re.search(r"\n    chunk_size +int \| str \| None +auto +Rows per chunk", out)
    assert "* set by this name" in out


def test_unknown_model_name_suggests(capsys):
    with pytest.raises(CommandError, match=r"^sea-pyg models: error: unknown model 'freedon' "
                                           r"\(did you mean 'freedom'"):
        main(["models", "freedon"])


def test_train_help_lists_models_on_one_line_and_explains_one(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    text = " ".join(out.split())
    assert ", ".join(sorted(MODELS)) in text.replace("- ", "-")  # argparse may break at '-'
    assert "{" not in out and "degree-sensitive" not in out  # no choices blob, no descriptions
    with pytest.raises(SystemExit):
        main(["train", "--model", "freedom", "--sea", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: sea-pyg train")
    assert "\nfreedom+sea: FREEDOM+SEA (paper Table 3)" in out
    assert re.search(r"\n    proj_dim +int +63\* +Output size of the projection heads", out)


def test_imported_models_are_described(tmp_path, monkeypatch, capsys):
    (tmp_path / "sea_pyg_test_described.py").write_text(
        '"""Tiny MF (Doe et al., 2031), for this test."""\n'
        "from sea_pyg.models import MFBPR, register_model\n"
        "@register_model('tiny-mf', 'a user model')\n"
        "class TinyMF(MFBPR):\n"
        '    """Tiny.\n\n    Args:\n        dim: Its size.\n    """\n'
        "    def __init__(self, num_users, num_items, dim=8):\n"
        "        super().__init__(num_users, num_items, dim)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["models", "--import", "sea_pyg_test_described", "tiny-mf"]) == 0
    finally:
        sys.modules.pop("sea_pyg_test_described", None)
        MODELS.pop("tiny-mf", None)
    out = capsys.readouterr().out
    assert "paper: Tiny MF (Doe et al., 2031)" in out
    assert re.search(r"\n    dim +int +8 +Its size\.", out)


def test_prepare_help_says_the_encoder_runs_code(capsys):
    with pytest.raises(SystemExit):
        main(["prepare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "IMPORTS MODULE AND RUNS FUNCTION with your permissions" in text


def test_training_defaults_are_shown_as_the_flags_that_set_them():
    from sea_pyg.cli.models import model_details

    assert "training defaults: --lr 0.0005 --lr-schedule 0.96 50.0" in model_details("lattice")


def test_a_closed_pipe_is_not_a_traceback(tmp_path):
    """``sea-pyg models | head -1``: the reader leaves early; no BrokenPipeError traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "sea_pyg.cli", "models", "lattice", "sea"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    proc.stdout.close()  # before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err
