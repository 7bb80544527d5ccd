"""``sea-pyg train --config FILE``: the flags of ``train`` from a YAML or TOML file, and the
``config.yaml`` every run writes so that ``--config RUN/config.yaml`` reruns it.

A key is a flag's long name without its dashes (``batch-size`` or ``batch_size``; ``import``
for ``--import``): the keys are read off the parser, so a flag added later is a key at once.
``set`` is a mapping of model hyper-parameters. Flags on the command line win over the file.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from sea_pyg.cli.checks import close_names
from sea_pyg.cli.errors import UserError, first_line
from sea_pyg.cli.hparams import plain

__all__ = [
    "CONFIG_FILE",
    "config_keys",
    "read_config_file",
    "apply_config",
    "training_fields",
    "resolved_config",
    "resolved_config_yaml",
]

#: The file every ``sea-pyg train`` run writes into its output folder.
CONFIG_FILE = "config.yaml"

#: Flags that are not settings of a run: actions and output verbosity. They are accepted in a
#: config file but not written to ``config.yaml``.
NOT_SETTINGS = (
    "config", "help", "resume", "overwrite", "allow_changes", "quiet", "no_progress", "compare",
    "sea",
    "seeds",
)

#: Settings of :class:`~sea_pyg.train.TrainConfig` whose flag has another name.
FIELD_OF_DEST = {"out": "output_dir"}


def _is_flag_action(action: argparse.Action) -> bool:
    return bool(action.option_strings) and not isinstance(action, argparse._HelpAction)


def config_keys(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """``{key: action}`` of every flag of ``parser`` except ``--config`` and ``--help``: the
    long option names without dashes, with ``-`` and ``_`` both accepted, and the dests."""
    out: dict[str, argparse.Action] = {}
    for action in parser._actions:
        if not _is_flag_action(action) or action.dest == "config":
            continue
        names = {action.dest} | {o.lstrip("-") for o in action.option_strings if o.startswith("--")}
        for n in names:
            out[n] = action
            out[n.replace("-", "_")] = action
            out[n.replace("_", "-")] = action
    return out


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping in a ``.yaml`` / ``.yml`` / ``.toml`` file.

    Raises:
        UserError: missing, unreadable, another extension, a syntax error, or not a mapping.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml"):
        raise UserError(f"--config {path}: expected a .yaml, .yml or .toml file")
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise UserError(f"--config {path} {what}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path}: cannot read it ({first_line(exc)})") from None
    if suffix == ".toml":
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            try:
                import tomli as tomllib
            except ModuleNotFoundError:
                raise UserError(
                    f"--config {path}: TOML needs Python >= 3.11 or `pip install tomli`; or "
                    "write the file as YAML"
                ) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise UserError(f"--config {path}: not valid TOML ({first_line(exc)})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise UserError(
                f"--config {path}: not valid YAML ({' '.join(str(exc).split())})"
            ) from None
        data = {} if data is None else data
    if not isinstance(data, dict):
        raise UserError(
            f"--config {path}: expected a mapping of flags (key: value), got "
            f"{type(data).__name__}"
        )
    return data


def _scalar(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, (dict, list)):
        raise UserError(f"{where}: expected one value, got {json.dumps(value)}")
    if action.type is None:
        return str(value)
    try:
        return action.type(str(value))
    except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
        raise UserError(f"{where}: {first_line(exc)}") from None


def _value(action: argparse.Action, value: Any, where: str) -> Any:
    """The config value of ``action`` as argparse would have stored the flag's value."""
    if value is None:
        return action.default
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserError(f"{where}: expected true or false, got {json.dumps(value)}")
        return value if isinstance(action, argparse._StoreTrueAction) else not value
    if action.dest == "set":
        if isinstance(value, dict):
            return [f"{k}={json.dumps(v)}" for k, v in value.items()]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise UserError(f"{where}: expected a mapping of hyper-parameters (key: value)")
    if isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
        items = value if isinstance(value, list) else [value]
        items = [_scalar(action, v, where) for v in items]
        if isinstance(action, argparse._AppendAction) and action.nargs in ("*", "+"):
            return [items]
        return items
    if isinstance(action.nargs, int) and action.nargs > 1:  # e.g. --lr-schedule DECAY STEP
        if not isinstance(value, list) or len(value) != action.nargs:
            raise UserError(
                f"{where}: expected a list of {action.nargs} values, got {json.dumps(value)}"
            )
        return [_scalar(action, v, where) for v in value]
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{where}: {value!r} is not one of {list(action.choices)}")
    return _scalar(action, value, where)


def apply_config(parser: argparse.ArgumentParser, path: str | Path) -> dict[str, Any]:
    """Reads ``path`` and makes its values ``parser``'s defaults, so that flags given on the
    command line win; returns ``{dest: value}``.

    Raises:
        UserError: the file (see :func:`read_config_file`), an unknown key (named with the
            file, and close keys suggested) or a value the flag would refuse.
    """
    data = read_config_file(path)
    keys = config_keys(parser)
    values: dict[str, Any] = {}
    for key, value in data.items():
        action = keys.get(str(key))
        if action is None:
            known = sorted({a.option_strings[-1].lstrip("-") for a in keys.values()} | {"set"})
            raise UserError(
                f"--config {path}: unknown key {key!r}{close_names(str(key), known)}; the keys "
                f"are the flags of `sea-pyg train` without dashes: {', '.join(known)}"
            )
        values[action.dest] = _value(action, value, f"--config {path}: {key}")
    parser.set_defaults(**values)
    return values


def training_fields() -> set[str]:
    """The fields of :class:`~sea_pyg.train.TrainConfig`."""
    from sea_pyg.train import TrainConfig

    return {f.name for f in fields(TrainConfig)}


def resolved_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, info: Mapping[str, Any],
    config: Any, data_args: Mapping[str, Any],
) -> dict[str, Any]:
    """The complete settings of one run, as ``train`` config keys: the model's registry name,
    the data, every flag that maps to a :class:`~sea_pyg.train.TrainConfig` field (with the
    value the run used: model defaults and the quick start's included) and every
    hyper-parameter under ``set``."""
    out: dict[str, Any] = {"model": info["name"]}
    out.update({k: v for k, v in data_args.items() if v is not None})
    train = training_fields()
    for action in parser._actions:
        dest = action.dest
        if not _is_flag_action(action) or dest in NOT_SETTINGS or dest in out:
            continue
        field = FIELD_OF_DEST.get(dest, dest)
        if field in train:
            value = getattr(config, field)
            if field == "output_dir" and value is not None:
                value = str(Path(value).resolve())
            if field == "minibatch" and not value:
                value = None  # a full-graph run's config.yaml stays as it was
            if field == "knn_backend" and value == "auto":
                value = None  # so does a run with the default k-NN search
        elif dest in ("set", "data", "name", "synthetic", "data_seed", "model", "imports"):
            continue
        else:
            value = getattr(args, dest, None)
        if value is not None:
            out[dest] = plain(value)
    if getattr(args, "imports", None):
        out["imports"] = list(args.imports)
    out["set"] = plain(info["hparams"])
    return out


def resolved_config_yaml(
    parser: argparse.ArgumentParser, args: argparse.Namespace, info: Mapping[str, Any],
    config: Any, data_args: Mapping[str, Any],
) -> str:
    """:func:`resolved_config` as the text of ``RUN/config.yaml``, with a header that says how
    to rerun it."""
    import yaml

    from sea_pyg import __version__

    where = Path(config.output_dir) / CONFIG_FILE if config.output_dir else Path(CONFIG_FILE)
    header = (
        f"# written by sea-pyg {__version__}: the complete settings of this run.\n"
        f"# `sea-pyg train --config {where} --out NEW_FOLDER` reruns it;\n"
        "# flags given with --config win over this file.\n"
    )
    settings = resolved_config(parser, args, info, config, data_args)
    return header + yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)
