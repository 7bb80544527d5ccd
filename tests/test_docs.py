"""The worked examples of the docs run as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _section(page: str, title: str) -> str:
    text = (DOCS / page).read_text(encoding="utf-8")
    start = text.index(f"## {title}")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(cwd)}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_how_to_add_a_model_runs_as_written(tmp_path):
    section = _section("concepts.md", "How to add a model")
    code = _blocks(section, "python")
    assert len(code) == 3
    (tmp_path / "walkthrough.py").write_text("\n".join(code), encoding="utf-8")
    proc = _run([sys.executable, "walkthrough.py"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    # the toy model trained one epoch with its own hyper-parameter recorded
    assert lines[0].startswith("{'name': 'toy-mf', 'hparams': {'dim': 8}} 1 ")
    # the multimodal toy got SEA's terms (and its CLUB fitted) for free
    assert lines[1] == "['bpr', 'club_nll', 'sea_align', 'sea_dis']"

    # the CLI route: the module that registers the model, imported with --import
    (tmp_path / "my_models.py").write_text(code[0], encoding="utf-8")
    (cli,) = _blocks(section, "bash")
    args = cli.split()[1:] + ["--out", str(tmp_path / "run"), "--quiet"]
    proc = _run([sys.executable, "-m", "sea_pyg.cli", *args], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "results.json").is_file()
