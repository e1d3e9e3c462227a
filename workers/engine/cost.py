"""Counting model evaluations: every forward of a model through the engine (``optimise.forward_model``) is recorded
here, as rows without a gradient (a plain forward) or rows with one (a forward whose input gradient is taken).
A caller wraps work in ``count_evaluations()`` and reads what it cost, in rows and in forward-equivalents
(a backward pass costs about two forwards, so a row with a gradient counts as three)."""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterator

BACKWARD_FORWARDS = 2  # a backward pass to the input costs about two forward passes


@dataclass
class EvaluationCount:
    forward_rows: int = 0      # rows evaluated without a gradient
    gradient_rows: int = 0     # rows evaluated with a gradient to the input (forward + backward)

    @property
    def evaluations(self) -> int:
        return self.forward_rows + self.gradient_rows

    @property
    def forward_equivalents(self) -> int:
        return self.forward_rows + (1 + BACKWARD_FORWARDS) * self.gradient_rows

    def to_json(self) -> dict[str, int]:
        return {"evaluations": self.evaluations, "forward_rows": self.forward_rows,
                "gradient_rows": self.gradient_rows, "forward_equivalents": self.forward_equivalents}


_active: ContextVar[tuple[EvaluationCount, ...]] = ContextVar("quirkscope_evaluation_counts", default=())


@contextlib.contextmanager
def count_evaluations() -> Iterator[EvaluationCount]:
    """Count the model evaluations made inside the block (nested blocks each count their own)."""
    count = EvaluationCount()
    token = _active.set(_active.get() + (count,))
    try:
        yield count
    finally:
        _active.reset(token)


def record(rows: int, *, gradient: bool) -> None:
    """Called by ``forward_model`` for each batch it evaluates."""
    for count in _active.get():
        if gradient:
            count.gradient_rows += rows
        else:
            count.forward_rows += rows
