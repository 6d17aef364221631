"""The shape of a catalogued mistake and of a correct variant (each assignment's
``mistakes`` and ``variants`` modules list them)."""

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
    #: False for a mistake the notebook's visible tests should not give away
    visible: bool = True


@dataclass(frozen=True)
class Variant:
    """A correct answer written in another style, as public implementations write it (other
    masking constants, fused projections, einsum, loops, lazy layers, ...): it must earn
    full marks. Each assignment's ``variants`` module lists them as
    ``VARIANTS = {graded name: [Variant, ...]}``.

    ``style`` names the style in a few words (``"einsum"``, ``"mask with -1e9"``);
    ``impl`` is the correct function or class."""

    style: str
    impl: Callable
