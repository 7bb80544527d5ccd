"""``sea-pyg``: train models, describe them (``models``), tabulate runs (``runs``), test the
difference between runs (``compare``), prepare raw Amazon data, recommend, write synthetic
datasets, describe dataset folders, plot figures.

One module per concern: :mod:`~sea_pyg.cli.parser` (the flags), :mod:`~sea_pyg.cli.train`,
:mod:`~sea_pyg.cli.config` (``--config`` and ``config.yaml``), :mod:`~sea_pyg.cli.hparams`
(``--set``), :mod:`~sea_pyg.cli.models`, :mod:`~sea_pyg.cli.runs`, :mod:`~sea_pyg.cli.compare`,
:mod:`~sea_pyg.cli.commands` (the other commands), :mod:`~sea_pyg.cli.checks` (what is checked
before any data is loaded) and :mod:`~sea_pyg.cli.errors`.

Every user error ends the command with one line ``sea-pyg COMMAND: error: ...`` on stderr and
exit status 2 (:class:`~sea_pyg.cli.errors.CommandError`); ``SEA_PYG_DEBUG=1`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys

from sea_pyg.cli.commands import import_modules
from sea_pyg.cli.config import apply_config
from sea_pyg.cli.errors import CommandError, UserError
from sea_pyg.cli.parser import build_parser

__all__ = ["main", "build_parser", "CommandError", "UserError"]


def _train_model_help(argv: list[str]) -> str | None:
    """For ``train --model NAME --help``: NAME's hyper-parameter table (``None`` otherwise)."""
    if not argv or argv[0] != "train" or not {"-h", "--help"} & set(argv[1:]):
        return None
    from sea_pyg.cli.checks import check_model_name
    from sea_pyg.cli.models import model_details
    from sea_pyg.models import sea_variant

    pre = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    pre.add_argument("--model")
    pre.add_argument("--import", dest="imports", action="append")
    pre.add_argument("--sea", action="store_true")
    try:
        known, _ = pre.parse_known_args(argv[1:])
    except (SystemExit, argparse.ArgumentError):  # --model without a name: the parser says so
        return None
    if known.model is None:
        return None
    import_modules(known.imports)
    name = check_model_name(known.model)
    if known.sea:
        try:
            name = sea_variant(name)
        except ValueError as exc:
            raise UserError(f"--sea: {exc}") from None
    return model_details(name)


def main(argv: list[str] | None = None) -> int:
    """Runs ``sea-pyg`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Raises:
        CommandError: a user error (status 2), after printing its one line to stderr.
        SystemExit: argparse's own errors and ``--help``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and not argv[0].startswith("-") else None
    try:
        parser = build_parser(_train_model_help(argv))
        args = parser.parse_args(argv)
        command = args.command
        args._argv = argv  # `sea-pyg tune --workers N` starts its workers with it
        if command is None:
            parser.print_help()
            return 2
        if command == "train" and args.config:
            apply_config(args._parser, args.config)
            args = parser.parse_args(argv)  # the file's values are defaults: flags win
        import_modules(getattr(args, "imports", None))
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
        return status
    except BrokenPipeError:  # `sea-pyg models | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UserError as exc:
        if os.environ.get("SEA_PYG_DEBUG"):
            raise
        line = f"sea-pyg{' ' + command if command else ''}: error: {exc}"
        print(line, file=sys.stderr, flush=True)
        raise CommandError(line) from None
