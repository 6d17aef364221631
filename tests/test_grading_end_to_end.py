"""Grading through the real nbgrader commands, in a throwaway copy of the course."""

from __future__ import annotations

import dataclasses
import fcntl
import json

import nbformat
import pytest

from attn_course import nbgrader_runner, notebooks, report, sample_class
from attn_grader import check, mistakes_for
from conftest import ASSIGNMENTS, copy_course, session_shared_dir

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("nbgrader")]


def _solutions(assignment, course):
    src = notebooks.read(assignment.source_notebook(course))
    return {notebooks.grade_id(c): c.source for c in src.cells if notebooks.is_solution(c)}


def _with_test_cells(nb, change):
    nb = nbformat.from_dict(nb)
    kept = []
    for cell in nb.cells:
        if notebooks.is_graded(cell):
            cell = change(cell)
        if cell is not None:
            kept.append(cell)
    nb.cells = kept
    return nb


def _edit_to_pass(cell):
    cell.source = 'print("all tests passed")'
    return cell


def _one_wrong(assignment, course, solutions):
    """Every answer right except the last graded one, which is a catalogued mistake."""
    name = notebooks.graded_names(notebooks.read(assignment.source_notebook(course)))[-1]
    mistake = mistakes_for(assignment.id)[name][0]
    module = mistake.impl.__module__
    answers = dict(solutions)
    answers[name] = f"from {module} import {mistake.impl.__name__} as {name}"
    return name, mistake, answers


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Autograde five typical submissions for every assignment; return the grades, the
    expected scores and the course folder. Done once for the whole run: pytest-xdist
    workers share the result through a file, under a lock."""
    shared = session_shared_dir(tmp_path_factory, "graded-course")
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = shared / "results.json"
        if not results.exists():
            grades, expected = _grade_typical_submissions(shared)
            results.write_text(json.dumps({
                "grades": [dataclasses.asdict(r) for r in grades.values()],
                "expected": [[s, a, v] for (s, a), v in expected.items()],
            }))
        data = json.loads(results.read_text())
    grades = {(r["student"], r["assignment"]): report.Row(**r) for r in data["grades"]}
    expected = {(s, a): v for s, a, v in data["expected"]}
    return grades, expected, shared


def _grade_typical_submissions(course_dir):
    course = copy_course(course_dir)
    expected: dict[tuple[str, str], float] = {}
    for a in ASSIGNMENTS:
        nbgrader_runner.generate_assignment(course, a.id)
        release = notebooks.read(a.release_notebook(course))
        solutions = _solutions(a, course)
        points = notebooks.graded_cells(notebooks.read(a.source_notebook(course)))
        total = sum(points.values())
        name, mistake, wrong = _one_wrong(a, course, solutions)
        fraction = check(a.id, name, mistake.impl).fraction
        earned_by_mistake = round(points[f"test_{name}"] * fraction, 3)
        submissions = {
            "full": (sample_class.fill(release, solutions), total),
            "untouched": (release, 0.0),
            "one_wrong": (sample_class.fill(release, wrong),
                          total - points[f"test_{name}"] + earned_by_mistake),
            "edited_tests": (_with_test_cells(release, _edit_to_pass), 0.0),
            "deleted_tests": (_with_test_cells(sample_class.fill(release, solutions),
                                               lambda c: None), total),
        }
        for student, (nb, score) in submissions.items():
            folder = course / "submitted" / student / a.id
            folder.mkdir(parents=True)
            nbformat.write(nb, str(folder / f"{a.id}.ipynb"))
            expected[(student, a.id)] = score
        nbgrader_runner.autograde(course, a.id)
    rows = report.read_grades(course, [a.id for a in ASSIGNMENTS])
    return {(r.student, r.assignment): r for r in rows}, expected


STUDENTS = ["full", "untouched", "one_wrong", "edited_tests", "deleted_tests"]


@pytest.mark.parametrize("student", STUDENTS)
@pytest.mark.parametrize("assignment", [a.id for a in ASSIGNMENTS])
def test_submission_gets_exactly_the_expected_score(graded, assignment, student):
    grades, expected, _ = graded
    row = grades[(student, assignment)]
    assert row.score == pytest.approx(expected[(student, assignment)], abs=1e-3), row.cells


@pytest.mark.parametrize("assignment", [a.id for a in ASSIGNMENTS])
def test_untouched_release_scores_zero_on_every_graded_cell(graded, assignment):
    grades, _, _ = graded
    cells = grades[("untouched", assignment)].cells
    assert cells and all(score == 0 for score in cells.values())


@pytest.mark.parametrize("assignment", [a.id for a in ASSIGNMENTS])
def test_one_wrong_function_loses_only_its_own_points(graded, assignment):
    grades, _, _ = graded
    full = grades[("full", assignment)].cells
    wrong = grades[("one_wrong", assignment)].cells
    changed = [n for n in full if wrong[n] != full[n]]
    assert changed == [list(full)[-1]]


@pytest.mark.parametrize("assignment", [a.id for a in ASSIGNMENTS])
def test_deleted_test_cells_are_restored(graded, assignment):
    _, _, course = graded
    graded_nb = course / "autograded" / "deleted_tests" / assignment / f"{assignment}.ipynb"
    nb = notebooks.read(graded_nb)
    restored = [c for c in nb.cells if notebooks.is_graded(c)]
    assert restored and all("BEGIN HIDDEN TESTS" in c.source for c in restored)


def test_feedback_shows_check_messages_but_not_hidden_test_code(graded):
    _, _, course = graded
    for a in ASSIGNMENTS:
        nbgrader_runner.generate_feedback(course, a.id)
        for student in STUDENTS:  # passing and failing hidden tests alike
            html = (course / "feedback" / student / a.id / f"{a.id}.html").read_text()
            assert "checks passed" in html  # the check's report reaches the student
            # a failing test's traceback would quote the hidden lines again ("one_wrong"
            # imports its catalogued mistake from attn_grader in its own answer: not a leak)
            assert "BEGIN HIDDEN TESTS" not in html, student
            assert "from attn_grader import grade" not in html, student
