"""The tests of the tests: every check passes the reference and the notebook's worked
solution, gives the released stub 0 and an answer of zeros 0, rejects every catalogued
mistake by name, and gives full marks to every correct variant (a right answer written in
another style, listed in the assignment's ``variants`` module). And the notebook's visible
tests, which students run themselves, pass the worked solution and every correct variant
and fail every catalogued mistake (unless a mistake says the visible tests should not give
it away: ``Mistake(..., visible=False)``).

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


@functools.cache
def _visible_tests(path: Path) -> dict[str, list[tuple[str, str, dict]]]:
    """graded name -> [(grade id, source, namespace)] of the read-only visible-test cells
    about it (the cell ``visible_tests_<name>``, or the visible-test cells that name it),
    each with the notebook's namespace just before it: every code cell above it run in
    this process as autograding runs them (demos shrunk, reader-only cells and hidden tests
    left out), since a visible test may use what a demo cell made."""
    import contextlib
    import io
    import os
    import re
    import warnings

    import matplotlib

    matplotlib.use("agg")
    nb = notebooks.read(path)
    ns: dict = {"__name__": f"notebook_{path.stem}"}
    cells: list[tuple[str, str, dict]] = []
    previous = os.environ.get("ATTN_COURSE_QUICK")
    os.environ["ATTN_COURSE_QUICK"] = "1"
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            for cell in nb.cells:
                gid = notebooks.grade_id(cell) or ""
                if cell.cell_type != "code" or notebooks.READER_ONLY in cell.get(
                        "metadata", {}).get("tags", []):
                    continue
                if notebooks.is_hidden_test(cell):
                    continue
                code = "\n".join(line for line in cell.source.splitlines()
                                 if not line.lstrip().startswith(("%", "!")))
                if gid.startswith("visible_tests"):
                    cells.append((gid, code, dict(ns)))
                exec(compile(code, f"{path.name}:{gid or 'cell'}", "exec"), ns)  # noqa: S102
    finally:
        if previous is None:
            os.environ.pop("ATTN_COURSE_QUICK", None)
        else:
            os.environ["ATTN_COURSE_QUICK"] = previous
    out: dict[str, list[tuple[str, str, dict]]] = {}
    for name in notebooks.graded_names(nb):
        own = [c for c in cells if c[0] == f"visible_tests_{name}"]
        out[name] = own or [c for c in cells if re.search(rf"\b{name}\b", c[1])]
    return out


def _run_visible(path: Path, name: str, impl) -> str | None:
    """What the visible tests about ``name`` raise with ``impl`` in its place (None when
    they pass), each in a copy of the namespace it would run in, quietly."""
    import contextlib
    import io
    import warnings

    for gid, code, before in _visible_tests(path).get(name, []):
        ns = dict(before)
        ns[name] = impl
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                exec(compile(code, f"{path.name}:{gid}", "exec"), ns)  # noqa: S102
        except Exception as exc:
            return f"{gid}: {type(exc).__name__}: {str(exc)[:300]}"
    return None


def _visible_passes(path: Path, name: str, impl, who: str) -> str | None:
    if not _visible_tests(path).get(name):
        return f"no visible-test cell tests {name}"
    problem = _run_visible(path, name, impl)
    return None if problem is None else f"the visible tests reject {who}: {problem}"


def _visible_catches(path: Path, name: str, mistake) -> str | None:
    if _run_visible(path, name, mistake.impl) is not None:
        return None
    return (f"the visible tests let the mistake '{mistake.description}' pass (make them catch "
            "it with a tiny example, or mark the mistake visible=False)")


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
            if getattr(mistake, "visible", True):
                out.append(Validation(f"{prefix}:visible-catches:{mistake.description}",
                                      lambda n=name, m=mistake: _visible_catches(source, n, m)))
        out.append(Validation(f"{prefix}:visible-passes-worked-solution",
                              lambda n=name: _visible_passes(source, n, _namespace(source)[n],
                                                             "the worked solution")))
        correct = variants.get(name, [])
        out.append(Validation(f"{prefix}:catalogue-has-3-variants",
                              lambda k=correct: _variant_catalogue(k)))
        for variant in correct:
            out.append(Validation(f"{prefix}:variant:{variant.style}",
                                  lambda c=check, v=variant: _must_earn_full_marks(c, v)))
            out.append(Validation(f"{prefix}:visible-accepts:{variant.style}",
                                  lambda n=name, v=variant: _visible_passes(
                                      source, n, v.impl, f"the correct variant '{v.style}'")))

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
    """One line per graded function: reference, worked solution, stub, zeros, mistakes
    rejected by name, correct variants with full marks, and what the visible tests catch and
    accept (from ``run_all``'s results)."""
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
                     f"zeros score 0 {verdict('zeros-earn-nothing')}, mistakes failed and "
                     f"named {count('mistake')}, variants with full marks {count('variant')}; "
                     f"visible tests: catch {count('visible-catches')} mistakes, accept "
                     f"{count('visible-accepts')} variants")
    return lines
