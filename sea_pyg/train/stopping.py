"""MMRec's early-stopping rule."""

from __future__ import annotations

from typing import Any

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """MMRec's early-stopping rule.

    The monitored value is rounded to ``decimals``; a step improves only if the rounded value
    is strictly greater than the best so far (initially ``-1``). :attr:`should_stop` becomes
    true after ``patience + 1`` consecutive non-improving steps.
    """

    def __init__(self, patience: int, decimals: int = 4) -> None:
        self.patience = patience
        self.decimals = decimals
        self.best = -1.0
        self.best_step = -1
        self.bad_steps = 0
        self.steps = 0

    def update(self, value: float) -> bool:
        """Record one evaluation; return whether it is a (strict) improvement."""
        rounded = round(float(value), self.decimals)
        improved = rounded > self.best
        if improved:
            self.best, self.best_step, self.bad_steps = rounded, self.steps, 0
        else:
            self.bad_steps += 1
        self.steps += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_steps > self.patience

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "bad_steps": self.bad_steps,
            "steps": self.steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_step = int(state["best_step"])
        self.bad_steps = int(state["bad_steps"])
        self.steps = int(state["steps"])
