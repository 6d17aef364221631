"""The tests of the tests: every check passes the reference and the notebook's worked
solution, gives the released stub 0, rejects every catalogued mistake by name, and gives
full marks to every correct variant (a right answer written in another style, listed in the
assignment's ``variants`` module).

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
from attn_grader import checks_for, mistakes_for, reference_for, variants_for


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


def _zeros_earn_nothing(check, reference) -> str | None:
    from attn_grader.nulls import null_answer

    report = check(null_answer(reference))
    if report.fraction == 0:
        return None
    return ("an answer of zeros (the reference's outputs zeroed) earns credit: every case "
            f"passes for zeros, so none needs real work; add one that checks values:\n{report}")


def _must_reject(check, mistake) -> str | None:
    report = check(mistake.impl)
    if report.ok:
        return f"the mistake '{mistake.description}' passes the check"
    if mistake.expect.lower() not in report.message.lower():
        return (f"the mistake '{mistake.description}' fails, but the message does not say "
                f"'{mistake.expect}':\n{report.message}")
    return None


def _must_earn_full_marks(check, variant) -> str | None:
    report = check(variant.impl)
    if report.ok:
        return None
    return (f"the correct variant '{variant.style}' loses points "
            f"({report.fraction:.0%} of the credit):\n{report}")


def _variant_catalogue(found: list) -> str | None:
    if len(found) < 3:
        return f"only {len(found)} correct variants (at least 3 expected)"
    styles = [v.style for v in found]
    if len(set(styles)) != len(styles):
        return f"two variants share a style name: {styles}"
    return None


def validations(assignment: Assignment, root: Path) -> list[Validation]:
    checks = checks_for(assignment.id)
    mistakes = mistakes_for(assignment.id)
    variants = variants_for(assignment.id)
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
        out.append(Validation(f"{prefix}:zeros-earn-nothing",
                              lambda c=check, n=name: _zeros_earn_nothing(
                                  c, getattr(reference, n))))
        catalogue = mistakes.get(name, [])
        out.append(Validation(f"{prefix}:catalogue-has-3",
                              lambda k=catalogue: None if len(k) >= 3 else
                              f"only {len(k)} catalogued mistakes (at least 3 expected)"))
        for mistake in catalogue:
            out.append(Validation(f"{prefix}:mistake:{mistake.description}",
                                  lambda c=check, m=mistake: _must_reject(c, m)))
        correct = variants.get(name, [])
        out.append(Validation(f"{prefix}:catalogue-has-3-variants",
                              lambda k=correct: _variant_catalogue(k)))
        for variant in correct:
            out.append(Validation(f"{prefix}:variant:{variant.style}",
                                  lambda c=check, v=variant: _must_earn_full_marks(c, v)))

    def graded_cells_match_checks() -> str | None:
        graded = notebooks.graded_names(notebooks.read(source))
        if set(graded) == set(checks):
            return None
        return f"graded cells {sorted(graded)} vs checks {sorted(checks)}"

    out.append(Validation(f"{assignment.id}:every-graded-cell-has-a-check",
                          graded_cells_match_checks))

    def variants_name_graded_functions() -> str | None:
        unknown = sorted(set(variants) - set(checks))
        return None if not unknown else f"variants for names that are not graded: {unknown}"

    out.append(Validation(f"{assignment.id}:variants-name-graded-functions",
                          variants_name_graded_functions))
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


def summary(results: list[tuple[str, str | None]]) -> list[str]:
    """One line per graded function: reference, worked solution, stub, mistakes rejected by
    name, correct variants with full marks (from ``run_all``'s results)."""
    by_name: dict[str, list[tuple[str, str | None]]] = {}
    for label, problem in results:
        parts = label.split(":", 3)
        if len(parts) >= 3:
            by_name.setdefault(parts[1], []).append((parts[2], problem))
    if not by_name:
        return []
    width = max(len(name) for name in by_name)
    lines = []
    for name, items in by_name.items():
        def verdict(kind: str, items=items) -> str:
            found = [p for k, p in items if k == kind]
            return "ok" if found and all(p is None for p in found) else "FAIL"

        def count(kind: str, items=items) -> str:
            found = [p for k, p in items if k == kind]
            return f"{sum(p is None for p in found)}/{len(found)}"

        lines.append(f"{name:<{width}}  reference {verdict('reference')}, worked solution "
                     f"{verdict('worked-solution')}, stub scores 0 {verdict('released-stub')}, "
                     f"mistakes failed and named {count('mistake')}, variants with full "
                     f"marks {count('variant')}")
    return lines
