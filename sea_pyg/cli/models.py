"""``sea-pyg models [NAME...]`` and ``sea-pyg train --model NAME --help``: the registered models,
their paper, training defaults and hyper-parameters (default, type, one-line meaning), all read
from the registry and the constructors' docstrings, so models added later are described too."""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from typing import Any

from sea_pyg.cli.checks import check_model_name
from sea_pyg.cli.hparams import hparam_annotation, hparam_doc, reference, short_type

__all__ = ["cmd_models", "model_details", "models_overview", "compact_model_list"]


def _value(v: Any) -> str:
    """A default as it is typed after ``--set KEY=`` (JSON; plain text for names)."""
    if isinstance(v, str):
        return v
    if isinstance(v, tuple):
        v = list(v)
    return json.dumps(v)


def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 120))


def _base_entry(name: str) -> str | None:
    """The first registry name of the class that ``name`` is a preset of (``sea-b`` ->
    ``sea``), ``None`` for that name itself and for ``+sea`` entries."""
    from sea_pyg.models import MODELS

    spec = MODELS[name]
    if spec.host is not None:
        return None
    for other, s in MODELS.items():
        if s.cls is spec.cls and s.host is None and not s.preset:
            return None if other == name else other
    return None


def _papers(name: str) -> list[str]:
    """The papers of ``name``: its class's, and SEA's for a ``+sea`` entry."""
    from sea_pyg.models import MODELS, SEA

    spec = MODELS[name]
    refs = [reference(spec.cls), reference(SEA) if spec.host is not None else ""]
    return [r for r in dict.fromkeys(refs) if r]


def compact_model_list() -> str:
    """The registered names on one line, for ``train --help``."""
    from sea_pyg.models import model_names

    return ", ".join(model_names())


def models_overview() -> str:
    """``sea-pyg models``: every model with its description, paper and hyper-parameters."""
    from sea_pyg.models import MODELS, model_names

    width = _width()
    names = model_names()
    pad = max(len(n) for n in names) + 2
    wrap = textwrap.TextWrapper(width=width, initial_indent=" " * pad,
                                subsequent_indent=" " * (pad + 2))
    lines = [
        "models (sea-pyg train --model NAME --set KEY=VALUE; `sea-pyg models NAME` explains "
        "each hyper-parameter):",
        "",
    ]
    for name in names:
        spec = MODELS[name]
        lines += textwrap.wrap(spec.description, width, initial_indent=f"{name:<{pad}}",
                               subsequent_indent=" " * (pad + 2))
        papers = _papers(name)
        if papers:
            lines += wrap.wrap("paper: " + "; ".join(papers))
        base = _base_entry(name)
        if base is not None:
            changed = " ".join(f"{k}={_value(v)}" for k, v in spec.preset.items())
            text = f"hyper-parameters: those of {base}" + (f", with {changed}" if changed else "")
        elif spec.host is not None:
            text = (f"hyper-parameters: those of {spec.host} and of the separate-learning "
                    "module (`sea-pyg models " + name + "`)")
            if spec.preset:
                text += ", with " + " ".join(f"{k}={_value(v)}" for k, v in spec.preset.items())
        else:
            text = "hyper-parameters: " + " ".join(
                f"{k}={_value(v)}" for k, v in spec.defaults.items()
            )
        lines += wrap.wrap(text)
        if spec.train_defaults:
            lines += wrap.wrap("training defaults: " + " ".join(
                _flag(k, v) for k, v in spec.train_defaults.items()
            ))
    return "\n".join(lines)


def _flag(key: str, value) -> str:
    """A training default as the flag that sets it: ``--lr 0.0005``, ``--lr-schedule 0.96 50``."""
    values = value if isinstance(value, (list, tuple)) else [value]
    return f"--{key.replace('_', '-')} " + " ".join(_value(v) for v in values)


def model_details(name: str) -> str:
    """One model in full: description, class, paper, training defaults and a table of its
    hyper-parameters (name, type, default, meaning; preset changes marked ``*``)."""
    from sea_pyg.models import MODELS, WithSeparateLearning

    spec = MODELS[name]
    width = _width()
    lines = [f"{name}: {spec.description}"]
    cls = f"{spec.cls.__module__.rsplit('.', 1)[0]}.{spec.cls.__name__}"
    if spec.host is not None:
        cls = f"{WithSeparateLearning.__name__}({cls})"
    lines.append(f"  class: {cls}")
    for ref in _papers(name):
        lines.append(textwrap.fill(f"paper: {ref}", width, initial_indent="  ",
                                   subsequent_indent="    "))
    if spec.train_defaults:
        lines.append("  training defaults: " + " ".join(
            _flag(k, v) for k, v in spec.train_defaults.items()
        ))
    lines += ["", f"  hyper-parameters (sea-pyg train --model {name} --set KEY=VALUE):"]
    rows = []
    for key, default in spec.defaults.items():
        mark = "*" if key in spec.preset else ""
        ann = hparam_annotation(name, key)
        rows.append((key, short_type(ann, default), _value(default) + mark,
                     hparam_doc(name, key)))
    heads = ("name", "type", "default", "meaning")
    w = [max(len(r[i]) for r in [heads, *rows]) for i in range(3)]
    left = 4 + sum(w) + 6
    for row in [heads, *rows]:
        text = "    " + "  ".join(f"{c:<{w[i]}}" for i, c in enumerate(row[:3])) + "  "
        meaning = textwrap.wrap(row[3], max(30, width - left)) or [""]
        lines.append(text + meaning[0])
        lines += [" " * left + m for m in meaning[1:]]
    if spec.preset:
        lines.append("    * set by this name (the class's own default differs)")
    if spec.search_space:
        lines += ["", f"  search space (sea-pyg tune --model {name}):"]
        lines += [f"    {k}: {', '.join(_value(v) for v in vals)}"
                  for k, vals in spec.search_space.items()]
    return "\n".join(lines)


def cmd_models(args: argparse.Namespace) -> int:
    names = [check_model_name(n, flag="") for n in args.names or []]
    if not names:
        print(models_overview())
        return 0
    print("\n\n".join(model_details(n) for n in names))
    return 0
