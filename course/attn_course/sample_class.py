"""A small bundled class of submissions, built from source/ and release/ so it never
drifts from the notebooks: the same people for every assignment, each a typical case."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nbformat

from attn_course import notebooks
from attn_course.manifest import Assignment

BROKEN_CODE = 'raise RuntimeError("a bug the student has not found yet")'


def _solutions(source_nb) -> dict[str, str]:
    return {notebooks.grade_id(c): c.source for c in source_nb.cells if notebooks.is_solution(c)}


def fill(release_nb, answers: dict[str, str]):
    """A copy of the released notebook with the given solution cells replaced."""
    nb = nbformat.from_dict(release_nb)  # deep copy
    for cell in nb.cells:
        gid = notebooks.grade_id(cell)
        if notebooks.is_solution(cell) and gid in answers:
            cell.source = answers[gid]
    return nb


def _full(solutions: dict[str, str]) -> dict[str, str]:
    return dict(solutions)


def _half(solutions: dict[str, str]) -> dict[str, str]:
    names = list(solutions)
    return {n: solutions[n] for n in names[: (len(names) + 1) // 2]}


def _insert_after_marker(source: str, line: str) -> str:
    out = []
    for existing in source.splitlines():
        out.append(existing)
        if "### BEGIN SOLUTION" in existing:
            indent = existing[: len(existing) - len(existing.lstrip())]
            out.append(indent + line)
    return "\n".join(out)


def _errors(solutions: dict[str, str]) -> dict[str, str]:
    """First half right; the rest raise, and the last one does not even parse."""
    names = list(solutions)
    half = (len(names) + 1) // 2
    answers = {n: solutions[n] for n in names[:half]}
    for n in names[half:]:
        answers[n] = _insert_after_marker(solutions[n], BROKEN_CODE)
    answers[names[-1]] = "def broken(:\n    pass"
    return answers


def _untouched(solutions: dict[str, str]) -> dict[str, str]:
    return {}


#: student id -> what they hand in (a function of the worked solutions)
STUDENTS: dict[str, Callable[[dict[str, str]], dict[str, str]]] = {
    "ada_full_marks": _full,
    "ben_untouched": _untouched,
    "cy_half_done": _half,
    "dee_raises_errors": _errors,
}


def write_submissions(course: Path, assignment: Assignment) -> list[str]:
    """Write every sample student's submission into course/submitted/. Returns the ids."""
    source = notebooks.read(assignment.source_notebook(course))
    release = notebooks.read(assignment.release_notebook(course))
    solutions = _solutions(source)
    for student, answers_for in STUDENTS.items():
        folder = course / "submitted" / student / assignment.id
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nb = fill(release, answers_for(solutions))
        nbformat.write(nb, str(folder / f"{assignment.id}.ipynb"))
    return list(STUDENTS)
