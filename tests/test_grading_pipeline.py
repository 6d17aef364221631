"""`attn-course grade` (attn_course.grading): parallel, isolated, under limits, resumable.

One notebook (01_rnn_limits) and one class: two ordinary students, graded also by plain serial
`nbgrader autograde` for comparison, and a corpus of bad submissions, all graded in one run
with two workers, a 60 s wall limit and a 2 GiB memory cap.

The class is graded in a subprocess whose grading, helper and course packages are copies
(first on PYTHONPATH): one submission in the corpus writes into the grading package on disk,
and it must be the copy it reaches, never this repository.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from attn_course import cli, grading, nbgrader_runner, notebooks, report, sample_class
from attn_course.manifest import assignment
from conftest import ROOT, copy_course, session_shared_dir

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("grading-pipeline")]

A = assignment("01_rnn_limits")
LIMITS = grading.Limits(wall_s=60, memory_bytes=2 * grading.GiB)
GOOD = ["ada_full_marks", "dee_raises_errors"]
BAD = ["invalid_json", "empty_file", "missing_notebook", "syntax_error", "exception_everywhere",
       "infinite_loop", "memory_hog", "os_exit", "sys_exit", "tests_edited_to_pass",
       "tests_deleted", "non_utf8", "wrong_assignment", "prints_300_mb", "huge_image",
       "cells_reordered", "cells_inserted", "code_to_markdown", "exercise_deleted",
       "imports_references", "patches_allclose", "writes_grading_package", "tests_tagged_skipped"]
PACKAGES = {"course": "attn_course", "autograder": "attn_grader", "utils": "attn_utils"}


def _solutions(course):
    src = notebooks.read(A.source_notebook(course))
    return {notebooks.grade_id(c): c.source for c in src.cells if notebooks.is_solution(c)}


def _in_last_function(solutions, line):
    """Every answer right, but the last graded function runs ``line`` first."""
    answers = dict(solutions)
    last = list(solutions)[-1]
    answers[last] = sample_class._insert_after_marker(solutions[last], line)
    return answers


def _tests_changed(nb, change):
    nb = nbformat.from_dict(nb)
    nb.cells = [c2 for c in nb.cells
                if (c2 := change(c) if notebooks.is_graded(c) else c) is not None]
    return nb


def _edit_to_pass(cell):
    cell.source = "pass"
    return cell


def _move(nb, pick, to_end=True):
    nb = nbformat.from_dict(nb)
    i = next(i for i, c in enumerate(nb.cells) if pick(c))
    cell = nb.cells.pop(i)
    nb.cells.insert(len(nb.cells) if to_end else 0, cell)
    return nb


def _with_inserted_cells(nb):
    nb = nbformat.from_dict(nb)
    cells = []
    for c in nb.cells:
        cells.append(c)
        if notebooks.is_solution(c):
            cells.append(nbformat.v4.new_markdown_cell("My notes: I tried this twice."))
            cells.append(nbformat.v4.new_code_cell("scratch = [i * i for i in range(10)]\nscratch"))
    nb.cells = cells
    return nb


def _to_markdown(nb, gids):
    nb = nbformat.from_dict(nb)
    for c in nb.cells:
        if notebooks.grade_id(c) in gids:
            c.cell_type = "markdown"
            c.pop("outputs", None)
            c.pop("execution_count", None)
    return nb


def _with_image(nb, megabytes):
    nb = nbformat.from_dict(nb)
    png = base64.b64encode(os.urandom(megabytes * 3 << 18)).decode()  # about `megabytes` MB
    cell = next(c for c in nb.cells if c.cell_type == "code" and not notebooks.grade_id(c))
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": png})]
    return nb


def _tagged_skip(nb):
    # plain nbgrader would skip these test cells and count "no error" as full marks
    nb = nbformat.from_dict(nb)
    for i, cell in enumerate(c for c in nb.cells if notebooks.is_graded(c)):
        cell.metadata.tags = ["skip-execution" if i % 2 else notebooks.READER_ONLY]
    return nb


def _without(nb, gids):
    nb = nbformat.from_dict(nb)
    nb.cells = [c for c in nb.cells if notebooks.grade_id(c) not in gids]
    return nb


TAMPER = """
import pathlib
import attn_grader
_fake = (
    "\\nfrom attn_grader.framework import CaseResult, Report\\n"
    "CHECKS = {k: (lambda obj, k=k: Report(k, [CaseResult('all', 1.0, True)])) for k in CHECKS}\\n"
)
for _root in (pathlib.Path(attn_grader.__file__).parent, pathlib.Path(ORIGINAL)):
    _checks = _root / "nb01_rnn_limits" / "checks.py"
    _checks.write_text(_checks.read_text() + _fake)
"""


def _corpus(course, installed):
    """student -> (file contents or notebook or None for no notebook, expected points, a word
    the reason must contain, a word the flags must contain)."""
    release = notebooks.read(A.release_notebook(course))
    solutions = _solutions(course)
    points = notebooks.graded_cells(notebooks.read(A.source_notebook(course)))
    total = sum(points.values())
    last = list(solutions)[-1]
    without_last = total - points[f"test_{last}"]
    fill = sample_class.fill
    full = fill(release, solutions)
    full_text = nbformat.writes(full)
    latin1 = full_text.encode().replace(b"### BEGIN SOLUTION", b"### BEGIN SOLUTION # caf\xe9", 1)
    first = list(solutions)[0]
    other = assignment("02_seq2seq_bottleneck")
    other_nb = notebooks.read(other.source_notebook(course))
    stub_first = f"def {first}(*args, **kwargs):\n    return torch.zeros(1)"
    corpus = {
        "invalid_json": (b'{"cells": [', 0.0, "not valid JSON"),
        "empty_file": (b"", 0.0, "is an empty file"),
        "missing_notebook": (None, 0.0, "no notebook"),
        "syntax_error": (fill(release, {**solutions, last: "def broken(:\n    pass"}),
                         without_last, "SyntaxError"),
        "exception_everywhere": (fill(release, {n: 'raise RuntimeError("no")'
                                                for n in solutions}), 0.0, "RuntimeError"),
        "infinite_loop": (fill(release, _in_last_function(solutions, "while True: pass")),
                          without_last, "time limit"),
        "memory_hog": (fill(release, _in_last_function(
            solutions, "_hog = bytearray(3 * 1024 ** 3)")), without_last, "memory"),
        "os_exit": (fill(release, _in_last_function(solutions, "import os; os._exit(1)")),
                    without_last, "kernel died"),
        "sys_exit": (fill(release, _in_last_function(solutions, "import sys; sys.exit(3)")),
                     without_last, "SystemExit"),
        "tests_edited_to_pass": (_tests_changed(release, _edit_to_pass), 0.0, ""),
        "tests_deleted": (_tests_changed(fill(release, solutions), lambda c: None), total, ""),
        "non_utf8": (latin1, 0.0, "not UTF-8 text"),
        "wrong_assignment": (other_nb, 0.0, "notebook of assignment 02_seq2seq_bottleneck"),
        "prints_300_mb": (fill(release, {**solutions, first: solutions[first] + (
            "\nfor _ in range(3000):\n    print('x' * 100_000)\n")}), total, ""),
        "huge_image": (_with_image(full, 30), total, ""),
        "cells_reordered": (_move(_move(full, notebooks.is_graded),
                                  lambda c: c.cell_type == "markdown", to_end=False), total, ""),
        "cells_inserted": (_with_inserted_cells(full), total, ""),
        "code_to_markdown": (_to_markdown(full, {last, f"test_{first}"}), total, ""),
        "exercise_deleted": (_without(full, {last, f"test_{last}"}), without_last,
                             f"put back from the release: {last}, test_{last}"),
        # the sandboxed kernel has no grading package to import from
        "imports_references": (fill(release, {
            n: f"from attn_grader.nb01_rnn_limits.reference import {n}" for n in solutions}),
            0.0, "ModuleNotFoundError"),
        "patches_allclose": (fill(release, {first: "torch.allclose = lambda *a, **k: True\n"
                                            + stub_first}), 0.0, ""),
        "writes_grading_package": (fill(release, {first: TAMPER.replace(
            "ORIGINAL", repr(str(installed / "autograder" / "attn_grader"))) + stub_first}),
            0.0, ""),
        "tests_tagged_skipped": (_tagged_skip(release), 0.0, ""),
    }
    flags = {"imports_references": "imports the grading package",
             "patches_allclose": "torch.allclose",
             "writes_grading_package": "imports the grading package",
             "tests_tagged_skipped": "tagged to be skipped"}
    return {s: (*v, flags.get(s, "")) for s, v in corpus.items()}


def _write(course, student, content):
    folder = course / "submitted" / student / A.id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{A.id}.ipynb"
    if content is None:
        (folder / "notes.txt").write_text("I forgot to upload the notebook")
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        nbformat.write(content, str(path))


def _good_students(course):
    sample_class.write_submissions(course, A)
    for extra in set(sample_class.STUDENTS) - set(GOOD):
        shutil.rmtree(course / "submitted" / extra)


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Grade the class once for the whole run (pytest-xdist workers share the outcome through
    a file, under a lock, as in test_grading_end_to_end)."""
    shared = session_shared_dir(tmp_path_factory, "grading-pipeline")
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcome = shared / "outcome.json"
        if not outcome.exists():
            shared.mkdir(parents=True, exist_ok=True)
            outcome.write_text(json.dumps(_grade_in_subprocess(shared)))
        data = json.loads(outcome.read_text())
    return {
        "course": shared / "course",
        "serial": {s: report.Row(**r) for s, r in data["serial"].items()},
        "results": {s: grading.Result(**r) for s, r in data["results"].items()},
        "gradebook": {s: report.Row(**r) for s, r in data["gradebook"].items()},
        "corpus": {s: tuple(v) for s, v in data["corpus"].items()},
        "installed": Path(data["installed"]),
        "seconds": data["seconds"],
    }


def _install_copies(base: Path) -> Path:
    installed = base / "installed"
    for folder, package in PACKAGES.items():
        shutil.copytree(ROOT / folder / package, installed / folder / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return installed


def _grade_in_subprocess(base: Path) -> dict:
    installed = _install_copies(base)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [*(str(installed / f) for f in PACKAGES), str(ROOT / "tests")])
    code = ("import json, pathlib, sys, test_grading_pipeline as t; "
            "print(json.dumps(t._grade_the_class(pathlib.Path(sys.argv[1]), "
            "pathlib.Path(sys.argv[2]))))")
    proc = subprocess.run([sys.executable, "-c", code, str(base), str(installed)], env=env,
                          capture_output=True, text=True, cwd=base)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _grade_the_class(base, installed):
    # the reference: plain serial nbgrader on the ordinary students
    serial = copy_course(base / "serial")
    nbgrader_runner.generate_assignment(serial, A.id)
    _good_students(serial)
    nbgrader_runner.autograde(serial, A.id)
    serial_rows = report.read_grades(serial, [A.id])

    course = copy_course(base / "course")
    _good_students(course)
    corpus = _corpus(course, installed)
    for student, (content, *_) in corpus.items():
        _write(course, student, content)
    start = time.perf_counter()
    results = grading.grade(course, [A.id], workers=2, limits=LIMITS, progress=False)
    return {
        "installed": str(installed),
        "seconds": time.perf_counter() - start,
        "serial": {r.student: dataclasses.asdict(r) for r in serial_rows},
        "results": {r.student: dataclasses.asdict(r) for r in results},
        "gradebook": {r.student: dataclasses.asdict(r)
                      for r in report.read_grades(course, [A.id])},
        "corpus": {s: [expected, word, flag] for s, (_, expected, word, flag) in corpus.items()},
    }


def test_every_submission_has_a_result_and_a_gradebook_entry(graded):
    students = set(GOOD) | set(graded["corpus"])
    assert set(graded["results"]) == students
    assert set(graded["gradebook"]) == students


@pytest.mark.parametrize("student", GOOD)
def test_parallel_grades_equal_serial_nbgrader(graded, student):
    serial = graded["serial"][student]
    assert graded["gradebook"][student].cells == serial.cells
    assert graded["gradebook"][student].score == pytest.approx(serial.score)
    assert graded["results"][student].cells == serial.cells
    assert graded["results"][student].status == "ok"


@pytest.mark.parametrize("student", BAD)
def test_bad_submission_gets_what_it_earned_and_a_reason(graded, student):
    expected, word, flag = graded["corpus"][student]
    result = graded["results"][student]
    assert result.score == pytest.approx(expected, abs=1e-3), (result.status, result.reason)
    assert graded["gradebook"][student].score == pytest.approx(expected, abs=1e-3)
    assert word.lower() in result.reason.lower(), result.reason
    if word and "put back" not in word:
        assert result.status != "ok" or "errors in" in result.reason
    if flag:
        assert any(flag in f for f in result.flags), result.flags
    else:
        assert result.flags == [], result.flags


def test_the_grading_package_written_to_disk_is_put_back(graded):
    for folder, package in PACKAGES.items():
        copy = graded["installed"] / folder / package
        for original in (ROOT / folder / package).rglob("*.py"):
            assert (copy / original.relative_to(ROOT / folder / package)).read_bytes() \
                == original.read_bytes(), original
        assert not [p for p in copy.rglob("*.py")
                    if not (ROOT / folder / package / p.relative_to(copy)).exists()]


def test_flagged_submissions_are_in_the_summary(graded):
    text = report.summary(list(graded["results"].values()))
    assert "imports_references" in text and "imports the grading package" in text
    assert "writes_grading_package" in text and "patches_allclose" in text


def test_limits_keep_the_points_of_cells_that_ran(graded):
    for student in ("infinite_loop", "os_exit"):
        cells = graded["results"][student].cells
        full = graded["serial"]["ada_full_marks"].cells
        assert list(cells.values())[:-1] == list(full.values())[:-1]
        assert list(cells.values())[-1] == 0


def test_resume_grades_only_what_changed(graded, monkeypatch, capsys):
    course = graded["course"]
    ran = []
    real = grading._Runner.run

    def spy(self, job, expected):
        ran.append(job.student)
        return real(self, job, expected)

    monkeypatch.setattr(grading._Runner, "run", spy)
    monkeypatch.setenv("ATTN_COURSE_ROOT", str(course))
    assert cli.main(["grade", A.id, "--workers", "2"]) == 0
    assert ran == []
    out = capsys.readouterr().out
    assert "unchanged" in out and "ada_full_marks" in out
    csv_text = (course / "grades.csv").read_text()
    assert "memory_hog" in csv_text and "status" in csv_text

    release = notebooks.read(A.release_notebook(course))
    _write(course, "invalid_json", sample_class.fill(release, _solutions(course)))
    results = {r.student: r for r in grading.grade(course, [A.id], workers=2, progress=False)}
    assert ran == ["invalid_json"]
    assert results["invalid_json"].score == A.points and results["invalid_json"].status == "ok"
    book = {r.student: r for r in report.read_grades(course, [A.id])}
    assert book["invalid_json"].score == A.points
    for student, row in graded["gradebook"].items():
        if student != "invalid_json":
            assert book[student] == row
    manifest = json.loads((course / grading.MANIFEST).read_text())
    assert manifest[f"{A.id}/invalid_json"]["status"] == "ok"
