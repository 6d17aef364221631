"""`attn-course grade --cluster` (attn_course.cluster) on a real Dask cluster, and the course
gradebook on a real PostgreSQL server.

The cluster is a scheduler and two worker processes started here with the real `dask
scheduler` and `dask worker` commands of the virtual environment, on 127.0.0.1 (one thread
each, each behind its nanny, which restarts a killed worker process). The class is the sample
class of 01_rnn_limits plus a student whose last exercise blows the memory cap and one who
handed in an extra file; it is graded once locally (attn_course.grading) as the reference.

PostgreSQL is Debian's (`apt-get install postgresql`; .ci/run installs it): a throw-away
database cluster made with its initdb and pg_ctl in a temporary folder, listening only on a
unix socket in that folder; no system service is used. Without it these tests skip on a
developer's machine and fail under CI.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from attn_course import cli, cluster, grading, notebooks, report, sample_class
from attn_course.manifest import assignment
from conftest import ROOT, copy_course

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cluster")]

A = assignment("01_rnn_limits")
LIMITS = grading.Limits(wall_s=60, memory_bytes=2 * grading.GiB)
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")
DOOMED = "dee_raises_errors"  # the student whose job the fault test kills three times


def _write_class(course: Path) -> list[str]:
    sample_class.write_submissions(course, A)
    source = notebooks.read(A.source_notebook(course))
    release = notebooks.read(A.release_notebook(course))
    solutions = sample_class._solutions(source)
    last = list(solutions)[-1]
    hog = dict(solutions)
    hog[last] = sample_class._insert_after_marker(solutions[last],
                                                  "_hog = bytearray(3 * 1024 ** 3)")
    import nbformat

    for student, answers in (("eve_memory_hog", hog), ("fay_with_notes", solutions)):
        folder = course / "submitted" / student / A.id
        folder.mkdir(parents=True)
        nbformat.write(sample_class.fill(release, answers), str(folder / f"{A.id}.ipynb"))
    (course / "submitted" / "fay_with_notes" / A.id / "notes.txt").write_text("my notes\n")
    return sorted(p.name for p in (course / "submitted").iterdir())


def _comparable(r: grading.Result) -> tuple:
    return (r.student, r.status, r.score, r.max_score, r.cells, r.reason, r.flags)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """The class, and its grades from local grading (the reference)."""
    folder = tmp_path_factory.mktemp("cluster")
    course = copy_course(folder / "base")
    students = _write_class(course)
    local = folder / "local"
    shutil.copytree(course, local)
    results = grading.grade(local, [A.id], workers=2, limits=LIMITS, progress=False,
                            log=lambda _: None)
    return {"folder": folder, "course": course, "students": students,
            "results": {r.student: r for r in results},
            "rows": {r.student: r for r in report.read_grades(local, [A.id])}}


@pytest.fixture(scope="module")
def dask(base):
    with cluster.LocalDask(base["folder"] / "dask", workers=2) as local:
        from distributed import Client

        with Client(local.address, timeout=30, set_as_default=False) as client:
            local.wait(client)
            local.client = client
            yield local


def _fresh(base, name: str) -> Path:
    course = base["folder"] / name
    shutil.copytree(base["course"], course)
    return course


def _assert_like_local(base, course: Path, results, db: str | None = None, skip=()):
    mine = {r.student: r for r in results}
    assert set(mine) == set(base["students"])
    rows = {r.student: r for r in report.read_grades(course, [A.id], db)}
    for student in base["students"]:
        if student in skip:
            continue
        assert _comparable(mine[student]) == _comparable(base["results"][student]), student
        assert rows[student] == base["rows"][student], student
        assert (course / "autograded" / student / A.id / f"{A.id}.ipynb").is_file(), student


def _manifest(course: Path) -> dict:
    try:
        return json.loads((course / grading.MANIFEST).read_text())
    except (OSError, ValueError):
        return {}


def test_the_class_graded_on_the_cluster_is_graded_as_locally(base, dask):
    assert base["results"]["eve_memory_hog"].status == "limit"  # the reference has one
    assert base["results"]["ada_full_marks"].score == A.points
    course = _fresh(base, "on-cluster")
    # the command, stopped with Ctrl-C after two results: it stops the jobs on the workers
    proc = subprocess.Popen(
        [sys.executable, "-m", "attn_course.cli", "grade", A.id, "--cluster", dask.address,
         "--wall-time", "60", "--memory-gib", "2"], env={**os.environ,
                                                         "ATTN_COURSE_ROOT": str(course)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    end = time.monotonic() + 300
    while len(_manifest(course)) < 2 and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted: every grade finished so far is in" in out
    merged = len(_manifest(course))
    assert 2 <= merged < len(base["students"]), merged
    open_sessions = dask.client.run(lambda: len(cluster._SESSIONS.open))
    assert set(open_sessions.values()) == {0}, open_sessions  # stopped, not left running
    # the same command again grades the rest, as local grading grades the class
    said = []
    results = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                            log=said.append)
    assert said[0] == f"{merged} submissions unchanged since they were graded: kept", said
    _assert_like_local(base, course, results)
    assert any("2 workers" in s for s in said), said
    # the memory hog returned normally from its job: reported as locally, run once
    assert {r.student: r.status for r in results}["eve_memory_hog"] == "limit"
    # only the coordinator wrote the course: the manifest, as a local run writes it
    again = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                          log=said.append)
    assert said[-1] == f"{len(base['students'])} submissions unchanged since they were " \
                       "graded: kept"
    assert [_comparable(r) for r in again] == [_comparable(r) for r in results]


def test_a_worker_with_another_version_of_the_course_is_refused(base, dask, tmp_path):
    # on the worker itself: a job whose bundle names other versions is refused, in words
    other = {**cluster.versions(), "attn_grader": "0" * 64}
    with pytest.raises(cluster.CourseMismatch, match=r"refuses ada/01_rnn_limits: .*"
                       r"the grading package \(attn_grader\) [0-9a-f]{12} on the worker, "
                       r"000000000000 here"):
        cluster.grade_submission({"versions": other},
                                 {"student": "ada", "assignment": A.id, "files": {}})
    # a worker whose grading package differs (one comment in a check): nothing is graded
    changed = tmp_path / "changed"
    shutil.copytree(ROOT / "autograder" / "attn_grader", changed / "attn_grader",
                    ignore=shutil.ignore_patterns("__pycache__"))
    with open(changed / "attn_grader" / "nb01_rnn_limits" / "checks.py", "a") as f:
        f.write("\n# another version\n")
    proc = dask.add_worker(env={"PYTHONPATH": str(changed)})
    try:
        dask.wait(dask.client, n=3)
        course = _fresh(base, "mismatch")
        with pytest.raises(cluster.ClusterError) as info:
            cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                          log=lambda _: None)
        assert "another version of the course: the grading package (attn_grader)" \
            in str(info.value)
        assert str(info.value).count("tcp://") == 1  # only that worker
        assert not _manifest(course) and not (course / "autograded").exists()
    finally:
        proc.terminate()
        proc.wait(60)
        dask.workers.remove(proc)
    end = time.monotonic() + 60
    while len(dask.client.scheduler_info()["workers"]) > 2 and time.monotonic() < end:
        time.sleep(0.2)


class _Killer(threading.Thread):
    """SIGKILLs the worker process that holds a matching grading task, ``times`` times
    (each time a worker whose nanny then starts a new one)."""

    def __init__(self, client, match: str, times: int):
        super().__init__(daemon=True)
        self.client, self.match, self.times = client, match, times
        self.killed: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        while len(self.killed) < self.times and not self.done.is_set():
            try:
                processing = self.client.processing()
            except Exception:
                time.sleep(0.2)
                continue
            for address, keys in processing.items():
                if any(self.match in str(k) for k in keys) and address not in self.killed:
                    try:
                        pid = self.client.run(os.getpid, workers=[address])[address]
                    except Exception:
                        continue
                    os.kill(pid, 9)
                    self.killed.append(address)
                    break
            time.sleep(0.05)


def test_a_worker_killed_mid_run_loses_nothing(base, dask):
    course = _fresh(base, "killed")
    # a worker dies while it grades: its jobs go to the other one, every grade arrives
    killer = _Killer(dask.client, "attn-grade-", times=1)
    killer.start()
    start = time.monotonic()
    results = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                            log=lambda _: None)
    killer.done.set()
    assert len(killer.killed) == 1
    _assert_like_local(base, course, results)
    print(f"one worker killed: class graded in {time.monotonic() - start:.1f} s")

    # a job whose worker dies three times is reported, and only that one: the others stay
    (course / "submitted" / DOOMED / A.id / "notes.txt").write_text("handed in again\n")
    killer = _Killer(dask.client, f"-{DOOMED}-", times=1 + cluster.ALLOWED_FAILURES)
    killer.start()
    start = time.monotonic()
    said = []
    results = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                            log=said.append)
    killer.done.set()
    assert len(killer.killed) == 3, killer.killed
    crashed = {r.student: r for r in results}[DOOMED]
    assert crashed.status == "crashed" and "died 3 times" in crashed.reason, crashed
    assert crashed.digest == ""  # not recorded as graded
    _assert_like_local(base, course, results, skip={DOOMED})
    print(f"three deaths of one job: reported after {time.monotonic() - start:.1f} s")

    # running the command again grades just what is missing
    said = []
    results = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                            log=said.append)
    assert f"{len(base['students']) - 1} submissions unchanged" in said[0], said
    _assert_like_local(base, course, results)


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="module")
def postgres():
    """A throw-away PostgreSQL cluster in a temporary folder, on a unix socket there only;
    yields the URL of an empty database in it."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        message = "PostgreSQL is not installed (`apt-get install postgresql`; .ci/run does it)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    folder = Path(tempfile.mkdtemp(prefix="attn-pg-"))  # short: a socket path fits
    as_user = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root: as its own user
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    user = "postgres" if as_user else os.environ.get("USER") or "postgres"

    def pg(*argv):
        return subprocess.run([*as_user, *argv], capture_output=True, text=True, check=True)

    data = folder / "data"
    try:
        pg(str(bin_dir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8",
           "--no-sync")
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(folder / "server.log"), "-w",
           "-o", f"-k {folder} -c listen_addresses='' -c fsync=off", "start")
        pg(str(bin_dir / "createdb"), "-h", str(folder), "-U", user, "gradebook")
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"{exc.cmd}: {exc.stdout}{exc.stderr}")
    try:
        yield f"postgresql+psycopg://{user}@/gradebook?host={folder}"
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_postgresql_gradebook_holds_a_cluster_run(base, dask, postgres, monkeypatch, capsys):
    from nbgrader.api import Gradebook

    course = _fresh(base, "postgres")
    monkeypatch.setenv("ATTN_COURSE_ROOT", str(course))
    assert cli.main(["grade", A.id, "--cluster", dask.address, "--db", postgres,
                     "--wall-time", "60", "--memory-gib", "2"]) == 0
    assert "ada_full_marks" in capsys.readouterr().out
    assert not (course / "gradebook.db").exists()  # nothing went to SQLite
    # read back with nbgrader's own API, as the formgrader would
    with Gradebook(postgres) as gb:
        assert sorted(s.id for s in gb.students) == base["students"]
        for student in base["students"]:
            sub = gb.find_submission(A.id, student)
            assert float(sub.score) == base["rows"][student].score, student
            cells = {g.cell.name.removeprefix("test_"): float(g.score)
                     for nb in sub.notebooks for g in nb.grades
                     if g.cell.name.startswith("test_")}
            assert cells == base["rows"][student].cells, student
    assert cli.main(["feedback", A.id, "--db", postgres]) == 0
    assert (course / "feedback" / "ada_full_marks" / A.id / f"{A.id}.html").is_file()

    # the same database named in the course's nbgrader_config.py, as the formgrader reads it:
    # every command follows it (the jobs' own scratch gradebooks stay SQLite)
    with open(course / "nbgrader_config.py", "a", encoding="utf-8") as f:
        f.write(f"\nc.CourseDirectory.db_url = {postgres!r}\n")
    assert report.gradebook_url(course) == postgres
    (course / "submitted" / "ben_untouched" / A.id / "notes.txt").write_text("late\n")
    said = []
    results = cluster.grade(course, [A.id], dask.address, limits=LIMITS, progress=False,
                            log=said.append)
    assert f"{len(base['students']) - 1} submissions unchanged" in said[0], said
    _assert_like_local(base, course, results)
    assert not (course / "gradebook.db").exists()
    assert [dataclasses.astuple(r) for r in report.read_grades(course, [A.id])] == \
        [dataclasses.astuple(base["rows"][s]) for s in base["students"]]
