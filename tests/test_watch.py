"""`attn-course grade --watch` (attn_course.grading.watch): one session that grades each new
or changed submission as it lands, sandboxed, and stops cleanly."""

from __future__ import annotations

import shutil
import threading
import time

import pytest

from attn_course import grading, notebooks, sample_class
from attn_course.manifest import assignment
from conftest import copy_course

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("watch")]

A = assignment("01_rnn_limits")


def _hand_in(course, student, answers):
    release = notebooks.read(A.release_notebook(course))
    folder = course / "submitted" / student / A.id
    tmp = course / "incoming" / student
    tmp.mkdir(parents=True, exist_ok=True)
    import nbformat

    nbformat.write(sample_class.fill(release, answers), str(tmp / f"{A.id}.ipynb"))
    if folder.exists():
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp), str(folder))  # arrives whole, as nbgrader collect writes it


def test_watch_grades_what_arrives_and_regrades_what_changes(tmp_path):
    course = copy_course(tmp_path / "course")
    solutions = sample_class._solutions(notebooks.read(A.source_notebook(course)))
    graded: list[grading.Result] = []
    stop = threading.Event()
    errors = []

    def run():
        try:
            grading.watch(course, [A.id], workers=1, interval=0.5, log=lambda _: None,
                          on_result=graded.append, stop=stop)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        def wait_for(n, within=240):
            end = time.monotonic() + within
            while len(graded) < n and time.monotonic() < end and not errors:
                time.sleep(0.2)
            assert not errors, errors
            assert len(graded) >= n, graded

        _hand_in(course, "late_student", {})
        wait_for(1)
        assert (graded[0].student, graded[0].score) == ("late_student", 0)
        _hand_in(course, "late_student", solutions)  # a resubmission, now complete
        wait_for(2)
        assert graded[1].score == A.points and graded[1].status == "ok"
        time.sleep(2)
        assert len(graded) == 2  # nothing graded twice
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    rows = {r.student: r for r in grading.grade(course, [A.id], progress=False)}
    assert rows["late_student"].score == A.points  # the gradebook has it: nothing to redo
