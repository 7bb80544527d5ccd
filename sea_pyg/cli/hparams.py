"""Model hyper-parameters on the command line: ``--set KEY=VALUE`` parsed, checked against the
model's constructor (names, annotations, defaults) before any data is loaded, and documented from
the constructor's docstring (its ``Args:`` section) for ``sea-pyg models``."""

from __future__ import annotations

import collections.abc as cabc
import inspect
import json
import re
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from sea_pyg.cli.checks import close_names
from sea_pyg.cli.errors import UserError

__all__ = [
    "parse_sets",
    "check_hparams",
    "hparam_sources",
    "hparam_annotation",
    "describe_type",
    "short_type",
    "plain",
    "arg_docs",
    "hparam_doc",
    "plain_rst",
    "reference",
]


# ------------------------------------------------------------------------------------ --set
def parse_sets(pairs: list[str] | None) -> dict[str, tuple[Any, str]]:
    """``["k=v", ...]`` -> ``{k: (parsed value, raw text)}``: the value is JSON when it parses
    (``3``, ``0.1``, ``true``, ``null``, ``{"image": 0.2}``), else the text itself.

    Raises:
        UserError: an item without ``=`` or without a key.
    """
    out: dict[str, tuple[Any, str]] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects KEY=VALUE (e.g. --set reg_weight=0.01), got {pair!r}")
        raw = value.strip()
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = raw
        out[key.strip().replace("-", "_")] = (parsed, raw)
    return out


def check_hparams(
    model: str,
    sets: Mapping[str, tuple[Any, str]],
    training_flags: Mapping[str, str],
) -> dict[str, Any]:
    """The ``--set`` values of ``model``, checked and converted to its constructor's types.

    Args:
        model: Registry name.
        sets: :func:`parse_sets`' output.
        training_flags: ``{training setting: flag}``, to redirect ``--set lr=...`` to ``--lr``.

    Raises:
        UserError: an unknown key (a training setting names its flag; otherwise the model's
            keys are listed, close ones first) or a value of the wrong type.
    """
    from sea_pyg.models import MODELS

    spec = MODELS[model]
    defaults = spec.defaults
    out: dict[str, Any] = {}
    for key, (value, raw) in sets.items():
        if key not in defaults:
            if key in training_flags:
                flag = training_flags[key]
                raise UserError(
                    f"--set {key}={raw}: {key} is a training setting, not a hyper-parameter "
                    f"of {model}; pass {flag} {raw} instead"
                )
            raise UserError(
                f"--set {key}={raw}: model {model!r} has no hyper-parameter {key!r}"
                f"{close_names(key, defaults)}; it takes {', '.join(sorted(defaults))} "
                f"(`sea-pyg models {model}` explains each)"
            )
        ann = hparam_annotation(model, key)
        try:
            out[key] = _conform(value, raw, ann, defaults[key])
        except _Mismatch:
            raise UserError(
                f"--set {key}={raw}: {key} takes {describe_type(ann, defaults[key])} "
                f"(default {json.dumps(plain(defaults[key]))}), got {_what(value)}"
            ) from None
    return out


# ----------------------------------------------------------------------------- annotations
def hparam_sources(model: str) -> list[type]:
    """The classes whose constructor arguments make ``model``'s hyper-parameters, in the
    order a name is looked up (the one that wins first), as
    :attr:`~sea_pyg.models.ModelSpec.defaults` merges them."""
    from sea_pyg.models import MODELS, WithSeparateLearning

    spec = MODELS[model]
    classes = [WithSeparateLearning, spec.cls] if spec.host is not None else [spec.cls]
    out: list[type] = []
    for cls in classes:
        out.append(cls)
        target = getattr(cls, "forwards_kwargs_to", None)
        if target is not None:
            out.append(target)
    return out


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # an annotation that does not resolve: use the defaults' types
        return {}


def _owner(model: str, key: str) -> tuple[type, inspect.Parameter] | None:
    for cls in hparam_sources(model):
        param = inspect.signature(cls).parameters.get(key)
        if param is not None and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            return cls, param
    return None


def hparam_annotation(model: str, key: str) -> Any:
    """The resolved type annotation of hyper-parameter ``key`` of ``model`` (``Any`` when the
    constructor gives none or it does not resolve)."""
    found = _owner(model, key)
    if found is None:
        return Any
    cls, param = found
    return _hints(cls).get(key, Any)


_UNIONS = (typing.Union, types.UnionType)


class _Mismatch(Exception):
    pass


_BOOLS = {"true": True, "false": False}


def _conform(value: Any, raw: str | None, ann: Any, default: Any) -> Any:
    """``value`` converted to ``ann`` (ints to floats, lists to tuples, ...), or _Mismatch."""
    if ann is Any:
        if default is None or isinstance(value, type(default)):
            return value
        ann = float if isinstance(default, float) else type(default)
    origin = typing.get_origin(ann)
    if origin in _UNIONS:
        arms = typing.get_args(ann)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in arms:
                return None
        for arm in sorted(arms, key=lambda a: a is str):  # text last: "3" is an int first
            if arm is type(None):
                continue
            try:
                return _conform(value, raw, arm, default)
            except _Mismatch:
                continue
        raise _Mismatch
    if ann is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin is typing.Literal:
        if value in typing.get_args(ann):
            return value
        raise _Mismatch
    if ann is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise _Mismatch
    if ann is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _Mismatch
    if ann is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _Mismatch
    if ann is str:
        if isinstance(value, str):
            return value
        if raw is not None and not isinstance(value, (dict, list)):
            return raw  # --set bpr=1 where a name is expected: keep the text
        raise _Mismatch
    if origin in (cabc.Mapping, dict, cabc.MutableMapping) or ann in (dict, cabc.Mapping):
        if not isinstance(value, dict):
            raise _Mismatch
        kt, vt = (typing.get_args(ann) or (Any, Any))[:2]
        return {_conform(k, None, kt, None): _conform(v, None, vt, None) for k, v in value.items()}
    if origin in (cabc.Sequence, list, tuple) or ann in (list, tuple, cabc.Sequence):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        args = typing.get_args(ann)
        if origin is tuple and args and Ellipsis not in args:  # tuple[int, str]: per position
            if len(args) != len(value):
                raise _Mismatch
            return tuple(_conform(v, None, a, None) for v, a in zip(value, args, strict=True))
        elem = args[0] if args else Any
        items = [_conform(v, None, elem, None) for v in value]
        return tuple(items) if origin is tuple or ann is tuple else items
    if isinstance(ann, type):
        if isinstance(value, ann):
            return value
        raise _Mismatch
    return value  # an annotation this checker does not know: let the constructor decide


def describe_type(ann: Any, default: Any = None) -> str:
    """``ann`` in words: ``an integer``, ``a number``, ``true or false``, ``a text``, ``null``,
    ``a mapping``, ... joined with ``or``."""
    if ann is Any:
        if default is None:
            return "any value"
        ann = float if isinstance(default, float) else type(default)
    origin = typing.get_origin(ann)
    if origin in _UNIONS:
        return " or ".join(describe_type(a) for a in typing.get_args(ann))
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in typing.get_args(ann))
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a text",
             type(None): "null"}
    if ann in words:
        return words[ann]
    if origin in (cabc.Mapping, dict, cabc.MutableMapping) or ann in (dict, cabc.Mapping):
        return 'a JSON object (e.g. {"image": 0.1, "text": 0.9})'
    if origin in (cabc.Sequence, list, tuple) or ann in (list, tuple):
        return "a JSON list"
    return getattr(ann, "__name__", str(ann))


def short_type(ann: Any, default: Any = None) -> str:
    """``ann`` as a short type name for tables: ``int``, ``float | None``, ``mapping``."""
    if ann is Any:
        return type(default).__name__ if default is not None else "any"
    origin = typing.get_origin(ann)
    if origin in _UNIONS:
        return " | ".join(short_type(a) for a in typing.get_args(ann))
    if ann is type(None):
        return "None"
    if origin in (cabc.Mapping, dict, cabc.MutableMapping) or ann in (dict, cabc.Mapping):
        return "mapping"
    if origin in (cabc.Sequence, list, tuple):
        return "list"
    return getattr(ann, "__name__", str(ann))


def _what(value: Any) -> str:
    if isinstance(value, str):
        return f"the text {value!r}"
    return json.dumps(value)


def plain(value: Any) -> Any:
    """``value`` as plain JSON / YAML data: mappings to dicts, tuples to lists, other objects
    to their text."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


# ------------------------------------------------------------------------------- docstrings
_SECTION = re.compile(r"^(\s*)Args:\s*$")
_ENTRY = re.compile(r"^\s*(\*{0,2}[A-Za-z_][\w]*(?:\s*[/,]\s*\*{0,2}[A-Za-z_]\w*)*)\s*:\s*(.*)$")


def arg_docs(cls: type) -> dict[str, str]:
    """``{argument: description}`` from the ``Args:`` section of ``cls``'s docstring (Google
    style; ``a / b: ...`` documents both)."""
    doc = inspect.getdoc(cls) or ""
    lines = doc.splitlines()
    out: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if _SECTION.match(line)), None)
    if start is None:
        return out
    base = len(_SECTION.match(lines[start]).group(1))
    entry_indent = None
    names: list[str] = []
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= base:
            break
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line) if indent == entry_indent else None
        if match:
            names = [n.strip().lstrip("*") for n in re.split(r"[/,]", match.group(1))]
            for n in names:
                out[n] = match.group(2).strip()
        elif names:
            for n in names:
                out[n] = f"{out[n]} {line.strip()}".strip()
    return out


_GREEK = {n: chr(c) for n, c in [
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5),
    ("lambda", 0x3BB), ("mu", 0x3BC), ("sigma", 0x3C3), ("tau", 0x3C4), ("theta", 0x3B8),
    ("times", 0xD7), ("in", 0x2208), ("le", 0x2264), ("ge", 0x2265), ("cdot", 0xB7),
]}


def plain_rst(text: str) -> str:
    """Docstring markup as plain text: roles (``:class:`~a.B``` -> ``B``), literals, simple
    maths (``:math:`\\lambda``` -> ``λ``, ``L_{mm}`` -> ``L_mm``, ``\\mathbf{S}`` -> ``S``)."""

    def role(match: re.Match) -> str:
        kind, body = match.group(1), match.group(2)
        if kind == "math":
            while True:  # \hat{\mathbf{S}} -> S, innermost first
                done = re.sub(r"\\(?:mathbf|mathrm|mathcal|operatorname|text|boldsymbol|hat|"
                              r"widehat|tilde|bar)\{([^{}]*)\}", r"\1", body)
                if done == body:
                    break
                body = done
            body = re.sub(r"\\([A-Za-z]+)", lambda m: _GREEK.get(m.group(1), m.group(1)), body)
            return body.replace("{", "").replace("}", "")
        return body.lstrip("~").split(".")[-1] if body.startswith("~") else body

    text = re.sub(r":(\w+):`([^`]*)`", role, text)
    text = re.sub(r"``([^`]*)``", r"\1", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"\1", text)  # **bold**
    return re.sub(r"\s+", " ", text).strip()


def _first_sentence(text: str) -> str:
    parts = re.split(r"(?<=\.)\s+(?=[A-Z(])", text, maxsplit=1)
    return parts[0].rstrip()


def hparam_doc(model: str, key: str) -> str:
    """One line on hyper-parameter ``key`` of ``model``: the first sentence of its entry in the
    ``Args:`` section of the class that takes it (``""`` when undocumented)."""
    found = _owner(model, key)
    classes = [found[0]] if found else []
    classes += [c for c in hparam_sources(model) if c not in classes]
    for cls in classes:
        docs = arg_docs(cls)
        if key in docs:
            return _first_sentence(plain_rst(docs[key]))
    return ""


def reference(cls: type) -> str:
    """The paper of ``cls``, from the first line of its module's docstring (the models' files
    open with it: ``LightGCN (He et al., 2020) as in MMRec ...`` -> ``LightGCN (He et al.,
    2020)``); the whole line when it cites no year; ``""`` without a docstring."""
    module = sys.modules.get(cls.__module__)
    doc = inspect.getdoc(module) if module is not None else None
    if not doc or not doc.strip():
        return ""
    line = plain_rst(doc.strip().splitlines()[0]).rstrip(".")
    cited = re.match(r"^(.*?\([^()]*\b(?:19|20)\d\d\))", line)
    if cited:
        return cited.group(1)
    depth = 0  # else the line up to its first ", " or " as in " outside parentheses
    for i, ch in enumerate(line):
        depth += (ch == "(") - (ch == ")")
        if depth == 0 and (line.startswith(", ", i) or line.startswith(" as in ", i)):
            return line[:i]
    return line
