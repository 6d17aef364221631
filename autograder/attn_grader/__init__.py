"""Grading side of the course: reference implementations and the checks hidden tests call.

Never shipped to students. Each assignment has a subpackage ``nb<id>`` (for example
``nb01_rnn_limits``) with three modules:

- ``reference``: the reference implementation of every graded function, built on PyTorch's
  own modules where they exist, so it is an independent witness of the notebook's solution;
- ``checks``: ``CHECKS = {name: check_fn}``; each ``check_fn(student_obj) -> Report``;
- ``mistakes``: ``MISTAKES = {name: [Mistake, ...]}``, plausible wrong answers every check
  must reject with a message that names the mistake.

A hidden test cell is two lines::

    from attn_grader import grade
    grade("01_rnn_limits", "rnn_step", rnn_step, points=2)
"""

from __future__ import annotations

import importlib
from types import ModuleType

from attn_grader import guard
from attn_grader.framework import Check, CheckFailed, Report, single_threaded

__all__ = ["Check", "CheckFailed", "Report", "check", "grade", "checks_for", "mistakes_for"]


def _part(assignment: str, module: str) -> ModuleType:
    return importlib.import_module(f"attn_grader.nb{assignment}.{module}")


def checks_for(assignment: str) -> dict:
    """{graded name: check function}, each run single-threaded."""
    return {name: single_threaded(fn) for name, fn in _part(assignment, "checks").CHECKS.items()}


def mistakes_for(assignment: str) -> dict:
    return dict(_part(assignment, "mistakes").MISTAKES)


def reference_for(assignment: str) -> ModuleType:
    return _part(assignment, "reference")


def check(assignment: str, name: str, obj) -> Report:
    """Run the check for one graded function or class and return its report."""
    return checks_for(assignment)[name](obj)


def grade(assignment: str, name: str, obj, points: float) -> float:
    """Entry point of a hidden test cell.

    Prints the report, and returns the points earned, which nbgrader reads as partial
    credit from the cell's output. A check with nothing right raises, so the student sees
    a plain failure in the notebook.
    """
    guard.report_tampering()
    report = check(assignment, name, obj)
    print(report)
    if report.fraction == 0:
        raise CheckFailed(f"{name}: no check passed\n{report.message}")
    return round(points * report.fraction, 3)
