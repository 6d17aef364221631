"""The shape of a catalogued mistake (each assignment's ``mistakes`` module lists them)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mistake:
    """A plausible wrong answer.

    ``impl`` is the wrong function or class; ``expect`` is a phrase the check's failure
    message must contain (case-insensitive), so the student is told what went wrong.
    """

    description: str
    impl: Callable
    expect: str
