"""``import sea_pyg`` makes OpenMP's waiting threads sleep unless the user chose otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = (
    "import os, sys\n"
    "import sea_pyg\n"
    "print(os.environ.get('OMP_WAIT_POLICY', '<unset>'))\n"
)


def _policy(env_value: str | None, code: str = CODE) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_value is not None:
        env["OMP_WAIT_POLICY"] = env_value
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def test_passive_by_default():
    assert _policy(None) == "PASSIVE"


def test_users_value_wins():
    assert _policy("ACTIVE") == "ACTIVE"


def test_torch_imported_first_is_left_alone():
    # OpenMP read its settings when torch loaded: setting the variable afterwards would
    # only make it lie about the process
    assert _policy(None, "import torch\n" + CODE) == "<unset>"
