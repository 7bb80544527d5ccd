"""The example scripts run end to end on tiny inputs (what their docstrings promise)."""

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(monkeypatch, script, *argv):
    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(EXAMPLES / script), run_name="__main__")


def test_prepare_amazon_demo(monkeypatch, capsys):
    _run(monkeypatch, "prepare_amazon.py", "--demo", "--no-text", "--model", "lightgcn",
         "--epochs", "1")  # fmt: skip
    out = capsys.readouterr().out
    assert "kept: 30 users, 25 items, 240 interactions" in out
    assert "5 item(s) without an image vector got the mean" in out
    assert "lightgcn on demo, best epoch 0: recall@10" in out


def test_prepare_amazon_needs_inputs(monkeypatch):
    with pytest.raises(SystemExit):
        _run(monkeypatch, "prepare_amazon.py", "--out", "x")


def test_reproduce_tables_dry_run(monkeypatch, capsys, tmp_path):
    md = tmp_path / "tables.md"
    args = ["--synthetic", "tiny", "--epochs", "1", "--tables", "3", "4", "--workdir",
            str(tmp_path / "runs"), "--markdown", str(md)]  # fmt: skip
    _run(monkeypatch, "reproduce_tables.py", *args)
    text = md.read_text()
    assert "| VBPR + SEA (`vbpr+sea`) | 0.0457 |" in text
    assert "| SEA_d (`sea-d`) | 0.0644 |" in text
    assert "Table 2" not in text
    assert (tmp_path / "runs" / "freedom+sea-tiny-seed999" / "results.json").is_file()
    capsys.readouterr()
    _run(monkeypatch, "reproduce_tables.py", *args)  # finished runs are read back
    assert "not retrained" in capsys.readouterr().out
    assert md.read_text() == text
