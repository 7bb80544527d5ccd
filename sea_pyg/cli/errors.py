"""User errors of the command line: one line ``sea-pyg CMD: error: ...``, exit status 2.

Code under :mod:`sea_pyg.cli` raises :class:`UserError` for a mistake the user can fix (a flag, a
config file, a folder, a device); :func:`sea_pyg.cli.main` prints it as argparse prints its own
errors and exits with status 2, without a traceback (set ``SEA_PYG_DEBUG=1`` to get one).
Messages of the library (``TrainConfig.epochs must be >= 1``, ``resume=False``) are translated
to the flags the user typed (``--epochs``, ``without --resume``) by :func:`in_flag_words`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["UserError", "CommandError", "in_flag_words", "first_line"]


class UserError(Exception):
    """A mistake the user can fix; the message says what and how."""


class CommandError(SystemExit):
    """What :func:`sea_pyg.cli.main` raises for a :class:`UserError`: ``str()`` is the printed
    line (``sea-pyg train: error: ...``), ``code`` is 2 (argparse's status for usage errors)."""

    def __init__(self, line: str) -> None:
        super().__init__(line)
        self.code = 2


#: Training settings without a flag of their own, as the command line user knows them.
SETTING_WORDS = {
    "topk": "the metric cut-offs (10, 20 and the one of --valid-metric)",
    "metrics": "the reported metrics",
    "progress": "the progress bar (--no-progress)",
    "verbose": "the epoch log (--quiet)",
}


def in_flag_words(message: str, flags: Mapping[str, str]) -> str:
    """``message`` of the library with its setting names replaced by command-line flags.

    Args:
        message: An error message of :class:`~sea_pyg.train.TrainConfig`,
            :class:`~sea_pyg.train.Trainer`, ...
        flags: ``{setting name: flag}``, e.g. ``{"epochs": "--epochs", "output_dir": "--out",
            "dropout": "--set dropout"}``.

    ``TrainConfig.epochs`` / ``config.epochs`` / ```epochs``` become ``--epochs``; ``pass
    resume=True`` becomes ``pass --resume`` and ``(pass) resume=False`` ``drop --resume``; where
    the library names both (``overwrite=True (--overwrite)``, ``(output_dir, --out)``) only the
    flag stays. Names without a flag are described in words (``TrainConfig.topk`` -> the metric
    cut-offs ...).
    """

    def setting(match: re.Match) -> str:
        name = match.group(1)
        return flags.get(name) or SETTING_WORDS.get(name) or f"the training setting {name!r}"

    def boolean(match: re.Match) -> str:
        name, value = match.group(2), match.group(3)
        if name not in flags:
            return match.group(0)
        if flags[name].startswith("--set "):  # a hyper-parameter: --set KEY=true
            return f"{match.group(1) or ''}{flags[name]}={value.lower()}"
        if value == "False":
            return f"drop {flags[name]}"
        return f"pass {flags[name]}" if match.group(1) else flags[name]

    def both(match: re.Match) -> str:  # "epochs=5 (--epochs)": the library names both
        value, flag = match.group(2), match.group(3)
        if value in ("True", "False") or " " in flag or value.startswith("("):
            return flag
        return f"{flag} {value}"

    message = re.sub(r"\b([A-Za-z_]\w*)=(\([^)]*\)|[^\s()]+) \((--[^)]+)\)", both, message)
    message = re.sub(r"\(([A-Za-z_]\w*), (--[\w-]+)\)", r"(\2)", message)
    message = re.sub(r"\b(?:TrainConfig|config)\.([A-Za-z_]\w*)", setting, message)
    message = re.sub(
        r"(\b(?:pass|set|use|with) )?`{0,2}\b([A-Za-z_]\w*)=(True|False)\b`{0,2}", boolean, message
    )
    message = re.sub(
        r"`{1,2}([A-Za-z_]\w*)`{1,2}",
        lambda m: flags.get(m.group(1), m.group(0)),
        message,
    )
    return message


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (``TypeName`` when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
