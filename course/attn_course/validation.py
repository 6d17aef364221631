"""The tests of the tests: every check passes the reference and the notebook's worked
solution, gives the released stub 0, and rejects every catalogued mistake by name.

``attn-course validate`` runs them for instructors; ``tests/test_checks.py`` runs the same
list under pytest, one test per line.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from attn_course import notebooks
from attn_course.manifest import Assignment
from attn_grader import checks_for, mistakes_for, reference_for


@dataclass(frozen=True)
class Validation:
    label: str
    run: Callable[[], str | None]  # None when it holds, else what went wrong


@functools.cache
def _namespace(path: Path) -> dict:
    return notebooks.namespace(path)


def _must_pass(check, obj, who: str) -> str | None:
    report = check(obj)
    return None if report.ok else f"{who} does not pass its check:\n{report}"


def _must_score_zero(check, obj) -> str | None:
    report = check(obj)
    return None if report.fraction == 0 else f"the blank stub earns credit:\n{report}"


def _must_reject(check, mistake) -> str | None:
    report = check(mistake.impl)
    if report.ok:
        return f"the mistake '{mistake.description}' passes the check"
    if mistake.expect.lower() not in report.message.lower():
        return (f"the mistake '{mistake.description}' fails, but the message does not say "
                f"'{mistake.expect}':\n{report.message}")
    return None


def validations(assignment: Assignment, root: Path) -> list[Validation]:
    checks = checks_for(assignment.id)
    mistakes = mistakes_for(assignment.id)
    reference = reference_for(assignment.id)
    source = assignment.source_notebook(root)
    release = assignment.release_notebook(root)
    out: list[Validation] = []
    for name, check in checks.items():
        prefix = f"{assignment.id}:{name}"
        out.append(Validation(f"{prefix}:reference",
                              lambda c=check, n=name: _must_pass(c, getattr(reference, n),
                                                                 "the reference")))
        out.append(Validation(f"{prefix}:worked-solution",
                              lambda c=check, n=name: _must_pass(c, _namespace(source)[n],
                                                                 "the notebook's worked solution")))
        out.append(Validation(f"{prefix}:released-stub",
                              lambda c=check, n=name: _must_score_zero(c, _namespace(release)[n])))
        catalogue = mistakes.get(name, [])
        out.append(Validation(f"{prefix}:catalogue-has-3",
                              lambda k=catalogue: None if len(k) >= 3 else
                              f"only {len(k)} catalogued mistakes (at least 3 expected)"))
        for mistake in catalogue:
            out.append(Validation(f"{prefix}:mistake:{mistake.description}",
                                  lambda c=check, m=mistake: _must_reject(c, m)))

    def graded_cells_match_checks() -> str | None:
        graded = notebooks.graded_names(notebooks.read(source))
        if set(graded) == set(checks):
            return None
        return f"graded cells {sorted(graded)} vs checks {sorted(checks)}"

    out.append(Validation(f"{assignment.id}:every-graded-cell-has-a-check",
                          graded_cells_match_checks))
    return out


def run_all(assignment: Assignment, root: Path) -> list[tuple[str, str | None]]:
    results = []
    for v in validations(assignment, root):
        try:
            problem = v.run()
        except Exception as exc:  # report, keep going
            problem = f"{type(exc).__name__}: {exc}"
        results.append((v.label, problem))
    return results
