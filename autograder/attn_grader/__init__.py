"""Grading side of the course: reference implementations and the checks hidden tests call.

Never shipped to students. Each assignment has a subpackage ``nb<id>`` (for example
``nb01_rnn_limits``) with four modules:

- ``reference``: the reference implementation of every graded function, built on PyTorch's
  own modules where they exist, so it is an independent witness of the notebook's solution;
- ``checks``: ``CHECKS = {name: check_fn}``; each ``check_fn(student_obj) -> Report``;
- ``mistakes``: ``MISTAKES = {name: [Mistake, ...]}``, plausible wrong answers every check
  must reject with a message that names the mistake;
- ``variants``: ``VARIANTS = {name: [Variant, ...]}``, correct answers in other styles every
  check must give full marks.

A hidden test cell is two lines::

    from attn_grader import grade
    grade("01_rnn_limits", "rnn_step", rnn_step, points=2)

Under ``attn-course grade`` that cell never runs in the student's kernel: the grader reads
it and calls :func:`judge` in its own process, with a channel to the agent in the student's
sandboxed kernel (``attn_course.judge``). Anywhere else (a notebook run by hand, nbgrader
alone, the tests) :func:`grade` judges through an in-process channel with the same
encoding. Either way the check sees a proxy of the student's object (:mod:`remote`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from attn_grader import remote
from attn_grader.framework import Check, CheckFailed, Report, single_threaded

__all__ = ["Check", "CheckFailed", "Report", "check", "grade", "judge", "checks_for",
           "mistakes_for", "variants_for"]


def _part(assignment: str, module: str) -> ModuleType:
    return importlib.import_module(f"attn_grader.nb{assignment}.{module}")


def checks_for(assignment: str) -> dict:
    """{graded name: check function}, each run single-threaded, giving credit for cases an
    answer of zeros also passes only beside real work (:mod:`attn_grader.nulls`). Handed the
    student's object itself (not a proxy), a check function reaches it through an
    in-process channel, so that it is judged exactly as under grading."""
    return {name: _through_a_channel(name, _for_work(assignment, name, single_threaded(fn)))
            for name, fn in _part(assignment, "checks").CHECKS.items()}


_TRIVIAL: dict[tuple[str, str], frozenset[tuple[int, str]]] = {}


def trivial_cases(assignment: str, name: str) -> frozenset[tuple[int, str]]:
    """The cases of a check that an answer of zeros passes, as ``(index, name)``. Computed
    once per process, or handed over with :func:`known_trivial_cases` (the grader computes
    them once per run, outside the processes it forks)."""
    key = (assignment, name)
    if key not in _TRIVIAL:
        from attn_grader.nulls import null_answer

        fn = single_threaded(_part(assignment, "checks").CHECKS[name])
        null = null_answer(getattr(reference_for(assignment), name))
        report = _through_a_channel(name, fn)(null)
        _TRIVIAL[key] = frozenset((i, c.name) for i, c in enumerate(report.cases) if c.passed)
    return _TRIVIAL[key]


def known_trivial_cases(found: dict[tuple[str, str], list]) -> None:
    """Take :func:`trivial_cases` as computed elsewhere: ``{(assignment, name): [(i, case)]}``."""
    for key, cases in found.items():
        _TRIVIAL[tuple(key)] = frozenset((int(i), str(n)) for i, n in cases)


def _for_work(assignment: str, name: str, fn):
    def run(obj) -> Report:
        return fn(obj).credit_only_for_work(set(trivial_cases(assignment, name)))

    return run


def _through_a_channel(name: str, fn):
    def run(obj) -> Report:
        if isinstance(obj, remote.RemoteObject):
            return fn(obj)
        channel = remote.LoopbackChannel({name: obj})
        with remote.using(channel):
            return fn(channel.lookup(name))

    run.__name__ = run.__qualname__ = getattr(fn, "__name__", f"check_{name}")
    run.__doc__ = fn.__doc__
    return run


def mistakes_for(assignment: str) -> dict:
    return dict(_part(assignment, "mistakes").MISTAKES)


def variants_for(assignment: str) -> dict:
    try:
        return dict(_part(assignment, "variants").VARIANTS)
    except ModuleNotFoundError:
        return {}


def reference_for(assignment: str) -> ModuleType:
    return _part(assignment, "reference")


def judge(channel: remote.Channel, assignment: str, name: str, expression: str) -> Report:
    """Run the check of ``name`` on the student's object that ``expression`` (a name in the
    student's namespace) refers to, through ``channel``; the report is computed here."""
    fn = checks_for(assignment)[name]
    try:
        with remote.using(channel):
            try:
                obj = channel.lookup(expression)
            except NameError as exc:
                c = Check(name)
                with c.case(f"{expression} is defined"):
                    raise CheckFailed(f"{exc} — run the cell that defines it (and fix its "
                                      "errors) before this test") from None
                return c.report()
            return fn(obj)
    finally:
        try:
            channel.release()
        except remote.ChannelBroken:
            pass


def check(assignment: str, name: str, obj) -> Report:
    """Run the check for one graded function or class, given the object itself."""
    return checks_for(assignment)[name](obj)


def grade(assignment: str, name: str, obj, points: float) -> float:
    """Entry point of a hidden test cell run outside ``attn-course grade``.

    Prints the report, and returns the points earned, which nbgrader reads as partial
    credit from the cell's output. A check with nothing right raises, so the student sees
    a plain failure in the notebook."""
    report = check(assignment, name, obj)
    print(report)
    if report.fraction == 0:
        raise CheckFailed(f"{name}: no check passed\n{report.message}")
    return round(points * report.fraction, 3)
