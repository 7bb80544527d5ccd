"""Hyper-parameter search spaces: what ``sea-pyg tune`` may vary, read from a model's registered
grid or from a user's YAML / JSON file, checked before anything is trained.

A space maps each name (a model hyper-parameter, or a training setting of
:data:`TUNABLE_TRAINING`) to one of:

* a list of values, ``dropout: [0.8, 0.9]`` (choices; the grid sampler enumerates them);
* ``{choices: [...]}``, the same written out;
* a range ``{low: A, high: B}`` with optional ``log: true`` (sampled uniformly in
  :math:`\\log x`, so :math:`0 < A`), ``step: S`` (values :math:`A, A + S, \\dots \\le B`) and
  ``type: int`` (integers; the default is ``float`` unless ``A``, ``B`` and ``S`` are all
  integers).

Choices and stepped ranges form a grid (their Cartesian product, :meth:`SearchSpace.grid`);
log or unstepped ranges only suit the random and TPE samplers. Every error names the entry and
says how to write it.

Optuna is imported only by :meth:`Param.distribution` / :meth:`SearchSpace.suggest`
(``pip install "sea-pyg[tune]"``).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Param",
    "SearchSpace",
    "SearchSpaceError",
    "TUNABLE_TRAINING",
    "read_space_file",
]

#: Training settings (:class:`~sea_pyg.train.TrainConfig` fields) a space may vary besides the
#: model's hyper-parameters (MMRec's ``learning_rate`` is ``lr`` here).
TUNABLE_TRAINING = ("lr", "weight_decay", "batch_size")

#: Types Optuna stores as categorical choices as they are; other values (lists, mappings) are
#: stored as their JSON text and decoded again.
_SCALARS = (type(None), bool, int, float, str)

_RANGE_KEYS = {"low", "high", "log", "step", "type"}


class SearchSpaceError(ValueError):
    """A search space that cannot be used; the message names the entry and the fix."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Param:
    """One entry of a search space.

    Attributes:
        name: Hyper-parameter or training setting.
        choices: The values, for a categorical entry (``None`` for a range).
        low, high: Bounds of a range (both included).
        log: Sample a range uniformly in :math:`\\log x`.
        step: Spacing of a stepped range.
        integer: The range holds integers.
    """

    name: str
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    # ------------------------------------------------------------------------ construction
    @classmethod
    def parse(cls, name: str, spec: Any, where: str = "search space") -> Param:
        """The entry ``name: spec`` of a space file or a registry grid.

        Raises:
            SearchSpaceError: empty choices, a range without ``low``/``high``, ``low >
                high``, a log range with a bound ``<= 0``, a bad ``step`` or ``type``.
        """
        at = f"{where}: {name}"
        if isinstance(spec, Mapping):
            keys = set(map(str, spec))
            if "choices" in keys:
                if keys != {"choices"}:
                    raise SearchSpaceError(
                        f"{at}: give either 'choices' or a range (low, high, log, step, type), "
                        f"not both; got keys {sorted(keys)}"
                    )
                return cls._from_choices(name, spec["choices"], at)
            unknown = sorted(keys - _RANGE_KEYS)
            if unknown:
                raise SearchSpaceError(
                    f"{at}: unknown key(s) {unknown}; a range has low, high and optionally "
                    "log, step, type (int or float); choices are written as a list"
                )
            return cls._from_range(name, spec, at)
        if isinstance(spec, (list, tuple)):
            return cls._from_choices(name, spec, at)
        raise SearchSpaceError(
            f"{at}: expected a list of values ([0.8, 0.9]), {{choices: [...]}} or a range "
            f"{{low: 1e-5, high: 1e-2, log: true}}, got {json.dumps(spec, default=str)}"
        )

    @classmethod
    def _from_choices(cls, name: str, values: Any, at: str) -> Param:
        if not isinstance(values, (list, tuple)):
            raise SearchSpaceError(f"{at}: choices must be a list of values, got {values!r}")
        if len(values) == 0:
            raise SearchSpaceError(
                f"{at}: the list of choices is empty; give at least one value (e.g. "
                f"{name}: [0.1, 0.2]) or leave {name} out of the space"
            )
        texts = [json.dumps(v, sort_keys=True, default=str) for v in values]
        dup = sorted({t for t in texts if texts.count(t) > 1})
        if dup:
            raise SearchSpaceError(f"{at}: choices repeat {', '.join(dup)}; give each value once")
        return cls(name, choices=tuple(values))

    @classmethod
    def _from_range(cls, name: str, spec: Mapping[str, Any], at: str) -> Param:
        if "low" not in spec or "high" not in spec:
            raise SearchSpaceError(f"{at}: a range needs both 'low' and 'high'")
        low, high, step = spec["low"], spec["high"], spec.get("step")
        for key, v in (("low", low), ("high", high), ("step", step)):
            if v is not None and (not _is_number(v) or not math.isfinite(v)):
                raise SearchSpaceError(f"{at}: {key} must be a finite number, got {v!r}")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise SearchSpaceError(f"{at}: log must be true or false, got {log!r}")
        kind = spec.get("type")
        if kind not in (None, "int", "float"):
            raise SearchSpaceError(f"{at}: type must be 'int' or 'float', got {kind!r}")
        integer = kind == "int" or (
            kind is None and all(isinstance(v, int) for v in (low, high, step) if v is not None)
        )
        if low > high:
            raise SearchSpaceError(f"{at}: low ({low}) is above high ({high}); swap them")
        if log and low <= 0:
            raise SearchSpaceError(
                f"{at}: a log range needs low > 0 (log of {low} is undefined); give a "
                "positive low, or drop 'log: true' for a linear range"
            )
        if step is not None:
            if step <= 0:
                raise SearchSpaceError(f"{at}: step must be > 0, got {step}")
            if log:
                raise SearchSpaceError(
                    f"{at}: 'step' and 'log: true' exclude each other (Optuna samples either "
                    "a stepped or a log range); list the values as choices instead"
                )
        if integer:
            if any(float(v) != int(v) for v in (low, high, step) if v is not None):
                raise SearchSpaceError(
                    f"{at}: an int range needs integer low, high and step, got "
                    f"low={low}, high={high}, step={step}"
                )
            low, high = int(low), int(high)
            step = int(step) if step is not None else None
        else:
            low, high = float(low), float(high)
            step = float(step) if step is not None else None
        return cls(name, low=low, high=high, log=log, step=step, integer=integer)

    # --------------------------------------------------------------------------- queries
    @property
    def is_choice(self) -> bool:
        """A list of values (not a range)."""
        return self.choices is not None

    @property
    def encoded(self) -> bool:
        """Choices Optuna cannot store as they are: each is stored as its JSON text."""
        return self.is_choice and not all(isinstance(v, _SCALARS) for v in self.choices)

    def values(self) -> list[Any]:
        """The finite list of values: the choices, or a stepped range's points.

        Raises:
            SearchSpaceError: a log or unstepped range (infinitely many values).
        """
        if self.is_choice:
            return list(self.choices)
        if self.step is None:
            raise SearchSpaceError(
                f"search space: {self.name} is a continuous range "
                f"({self.low}..{self.high}{', log' if self.log else ''}); the grid sampler "
                "needs choices or a stepped range: use --sampler random or tpe, or list its values"
            )
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        points = [self.low + i * self.step for i in range(n)]
        return [int(p) for p in points] if self.integer else [round(p, 12) for p in points]

    def to_json(self) -> Any:
        """Plain JSON form (what the study file records)."""
        if self.is_choice:
            return {"choices": list(self.choices)}
        out: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            out["log"] = True
        if self.step is not None:
            out["step"] = self.step
        out["type"] = "int" if self.integer else "float"
        return out

    def distribution(self):
        """The Optuna distribution of this entry."""
        import optuna

        if self.is_choice:
            choices = self.choices
            if self.encoded:
                choices = tuple(json.dumps(v, sort_keys=True) for v in choices)
            return optuna.distributions.CategoricalDistribution(choices)
        if self.integer:
            return optuna.distributions.IntDistribution(
                self.low, self.high, log=self.log, step=self.step or 1
            )
        return optuna.distributions.FloatDistribution(
            self.low, self.high, log=self.log, step=self.step
        )

    def suggest(self, trial) -> Any:
        """Asks the Optuna ``trial`` for this entry's value (decoded)."""
        if self.is_choice:
            choices = [self.encode(v) for v in self.choices]
            return self.decode(trial.suggest_categorical(self.name, choices))
        if self.integer:
            return trial.suggest_int(
                self.name, self.low, self.high, step=self.step or 1, log=self.log
            )
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)

    def decode(self, value: Any) -> Any:
        """A value as Optuna stored it -> the value the model takes."""
        return json.loads(value) if self.encoded else value

    def encode(self, value: Any) -> Any:
        """A value the model takes -> as Optuna stores it."""
        return json.dumps(value, sort_keys=True) if self.encoded else value


class SearchSpace:
    """An ordered set of :class:`Param` entries.

    Args:
        params: The entries (names must be distinct).
    """

    def __init__(self, params: Iterable[Param]) -> None:
        self.params: dict[str, Param] = {}
        for p in params:
            if p.name in self.params:
                raise SearchSpaceError(f"search space: {p.name} is given twice")
            self.params[p.name] = p

    @classmethod
    def parse(
        cls, spec: Any, known: Iterable[str] | None = None, where: str = "search space"
    ) -> SearchSpace:
        """A space from a mapping ``{name: entry}``, checked against ``known`` names.

        Args:
            spec: The mapping (a file's content, or a registry grid).
            known: The names that may be varied (the model's hyper-parameters and
                :data:`TUNABLE_TRAINING`); ``None`` skips the check.
            where: How messages name the source (e.g. the file).

        Raises:
            SearchSpaceError: not a mapping, empty, an unknown name (the known ones are
                listed, close ones first) or a bad entry (see :meth:`Param.parse`).
        """
        if not isinstance(spec, Mapping):
            raise SearchSpaceError(
                f"{where}: expected a mapping of hyper-parameters (name: values), got "
                f"{type(spec).__name__}"
            )
        if not spec:
            raise SearchSpaceError(
                f"{where}: the space is empty; give at least one hyper-parameter and its values"
            )
        if known is not None:
            known = sorted(set(known))
            for name in spec:
                if name not in known:
                    close = _close(str(name), known)
                    raise SearchSpaceError(
                        f"{where}: unknown hyper-parameter {name!r}"
                        + (f" (did you mean {', '.join(close)}?)" if close else "")
                        + f"; the model takes {', '.join(known)}"
                    )
        return cls(Param.parse(str(k), v, where) for k, v in spec.items())

    # --------------------------------------------------------------------------- queries
    def __iter__(self):
        return iter(self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def names(self) -> list[str]:
        """The entry names, in order."""
        return list(self.params)

    @property
    def is_grid(self) -> bool:
        """Every entry has finitely many values."""
        return all(p.is_choice or p.step is not None for p in self)

    def grid(self) -> dict[str, list[Any]]:
        """``{name: values}`` for the grid sampler (values as Optuna stores them).

        Raises:
            SearchSpaceError: an entry is a continuous range.
        """
        return {p.name: [p.encode(v) for v in p.values()] for p in self}

    def grid_size(self) -> int:
        """Number of grid points (the product of the entries' value counts)."""
        return math.prod(len(p.values()) for p in self)

    def grid_points(self) -> list[dict[str, Any]]:
        """Every grid point as ``{name: value}`` (decoded), in product order."""
        names = self.names()
        return [
            dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(self.params[n].values() for n in names))
        ]

    def to_json(self) -> dict[str, Any]:
        """Plain JSON form, in entry order."""
        return {p.name: p.to_json() for p in self}

    def suggest(self, trial) -> dict[str, Any]:
        """Asks the Optuna ``trial`` for a value of every entry; returns them decoded."""
        return {p.name: p.suggest(trial) for p in self}

    def decode(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A trial's stored ``params`` -> the values the model and trainer take."""
        return {k: (self.params[k].decode(v) if k in self.params else v) for k, v in params.items()}


def _close(name: str, names: list[str]) -> list[str]:
    import difflib

    return difflib.get_close_matches(name, names, n=3, cutoff=0.6)


def read_space_file(path: str | Path, known: Iterable[str] | None = None) -> SearchSpace:
    """The space in a YAML (``.yaml`` / ``.yml``) or JSON (``.json``) file.

    The file holds the mapping itself, or ``{space: mapping}``::

        dropout: [0.8, 0.9]
        reg_weight: {low: 1.0e-5, high: 1.0e-2, log: true}

    Raises:
        SearchSpaceError: the file is missing, has another extension, does not parse, or
            its space is bad (see :meth:`SearchSpace.parse`).
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise SearchSpaceError(f"--space {path}: expected a .yaml, .yml or .json file")
    if not path.is_file():
        raise SearchSpaceError(
            f"--space {path}: " + ("is a folder" if path.is_dir() else "does not exist")
        )
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SearchSpaceError(f"--space {path}: not valid JSON ({exc})") from None
    else:
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SearchSpaceError(
                f"--space {path}: not valid YAML ({' '.join(str(exc).split())})"
            ) from None
    if isinstance(data, Mapping) and set(data) == {"space"}:
        data = data["space"]
    return SearchSpace.parse(data, known, where=f"--space {path}")
