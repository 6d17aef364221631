"""Grade a whole class with nbgrader, in parallel, under limits, resumably.

Every submission ``submitted/<student>/<assignment>/`` is graded by the real
``nbgrader autograde``, but in its own throwaway course folder (the course's
``nbgrader_config.py``, ``source/<assignment>``, that one submission, and a copy of a clean
gradebook made once per assignment by ``nbgrader generate_assignment``). So:

- submissions run side by side (``workers``), and one cannot touch another's files or the
  course gradebook: the course gradebook (``gradebook.db``, or the database nbgrader's
  ``CourseDirectory.db_url`` names) is written only here, in the parent process, one result
  at a time (:func:`_merge`); with ``--cluster`` the jobs run on Dask workers and the results
  come back here to be merged the same way (:mod:`cluster`);
- every submission's kernel runs in a sandbox (:mod:`sandbox`): no network, no view of the
  course, the grading package or other submissions; its hidden tests are judged outside it,
  in the grading process (:mod:`judge`), and their points recorded there;
- each kernel is forked, inside its worker's sandbox, from a server that imported torch once
  (:mod:`warm_kernels`); the sandbox is reset between two submissions;
- each run has a total wall-time limit and a memory cap (``RLIMIT_AS``, inherited by the
  kernel); when it is hit, or the kernel dies, the whole process group is killed and the
  submission keeps the points of the test cells that ran before, read from a checkpoint the
  executor writes after every cell (:class:`CheckpointExecute`), with the reason recorded;
- results are written as they complete (gradebook, ``autograded/``, and the manifest
  ``autograded/.attn-grading.json`` of submission hashes), so an interrupted run loses nothing
  and a re-run grades only what is new or changed.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import importlib.util
import json
import math
import os
import queue
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbgrader.api import Gradebook, MissingEntry

from attn_course import (
    grading_job,
    integrity,
    nbgrader_runner,
    notebooks,
    report,
    sandbox,
    verdict,
    warm_kernels,
)
from attn_course.grading_job import CHECKPOINT_ENV, JOB_ENV

MANIFEST = Path("autograded") / ".attn-grading.json"
#: Where a file changed during grading is kept before the original is put back (outside
#: every watched folder, so keeping it is not itself a change).
SET_ASIDE = Path("changed-during-grading")
GiB = verdict.GiB


@dataclass(frozen=True)
class Limits:
    """Per submission: total wall time of ``nbgrader autograde`` (kernel start to grades) and
    the address-space cap of nbgrader and its kernel. The per-cell timeout stays nbgrader's
    ``Execute.timeout`` (``nbgrader_config.py``)."""

    wall_s: float = 600.0
    memory_bytes: int = 4 * GiB


@dataclass
class Result:
    student: str
    assignment: str
    status: str  # "ok" | "limit" | "crashed" | "invalid"
    reason: str
    score: float
    max_score: float
    cells: dict[str, float] = field(default_factory=dict)  # exercise -> points
    seconds: float = 0.0
    digest: str = ""
    flags: list[str] = field(default_factory=list)  # for a reviewer; the score stands

    def row(self) -> report.Row:
        return report.Row(self.student, self.assignment, self.score, self.max_score,
                          dict(self.cells))


# ------------------------------------------------------------------- the job's nbgrader config


_CONFIG_TAIL = '''

# ---- added by attn_course.grading for this one submission
from nbconvert.preprocessors import ClearMetadataPreprocessor
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,
                                    LimitOutput, SaveAutoGrades)
from attn_course.judge import JudgingExecute
c.Autograde.autograde_preprocessors = [
    JudgingExecute, IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
    AssignLatePenalties, CheckCellMetadata,
]
c.CourseDirectory.root = {root!r}
# this job's own copy of the clean gradebook, whatever database the course itself uses
c.CourseDirectory.db_url = {db_url!r}
# the kernel's sockets: files in its sandbox's folder (it has no network to listen on)
c.KernelManager.transport = "ipc"
c.KernelManager.connection_file = {connection_file!r}
'''

# --------------------------------------------------------------------------- one submission


@dataclass(frozen=True)
class _Job:
    student: str
    assignment: str
    folder: Path  # submitted/<student>/<assignment>
    digest: str


def submission_digest(folder: Path, source: Path) -> str:
    """Hash of the submission's files and of the assignment's source (a changed source
    regrades everyone)."""
    h = hashlib.sha256()
    for base in (folder, source):
        for p in sorted(base.rglob("*")):
            if p.is_file() and ".ipynb_checkpoints" not in p.parts:
                h.update(str(p.relative_to(base)).encode())
                h.update(b"\0")
                h.update(p.read_bytes())
                h.update(b"\0")
        h.update(b"\1")
    return h.hexdigest()


#: Templates kept between runs (a regrade of one student need not make them again).
TEMPLATE_CACHE = Path("autograded") / ".attn-templates"


def _template_digest(root: Path, assignment_id: str) -> str:
    import nbgrader

    h = hashlib.sha256(f"{nbgrader.__version__}\0".encode())
    h.update((root / "nbgrader_config.py").read_bytes())
    h.update(submission_digest(root / "source" / assignment_id, root / "source" /
                               assignment_id).encode())
    return h.hexdigest()


def _prepare_templates(root: Path, work: Path, assignment_ids: list[str],
                       zygote: grading_job.Zygote) -> dict[str, Path]:
    """A scratch course with a clean gradebook for each assignment (cells, points), made by
    ``nbgrader generate_assignment`` forked from the zygote, all at once; kept in
    ``autograded/.attn-templates/`` and reused while the source and the config are the same.

    Each starts from a copy of one empty gradebook: nbgrader creating a gradebook runs
    ``alembic heads`` in a subprocess (about 3 s), once here instead of once per assignment."""
    courses, runs, digests = {}, {}, {}
    for aid in assignment_ids:
        course = courses[aid] = work / "template" / aid
        cache = root / TEMPLATE_CACHE / aid
        digests[aid] = _template_digest(root, aid)
        if (cache / "digest").is_file() and (cache / "digest").read_text() == digests[aid]:
            shutil.copytree(cache / "course", course)
            continue
        if not runs and not (work / "empty-gradebook.db").exists():
            with Gradebook(f"sqlite:///{work / 'empty-gradebook.db'}"):
                pass
        course.mkdir(parents=True)
        shutil.copy2(root / "nbgrader_config.py", course / "nbgrader_config.py")
        shutil.copytree(root / "source" / aid, course / "source" / aid,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
        shutil.copy2(work / "empty-gradebook.db", course / "gradebook.db")
        runs[aid] = zygote.start(["generate_assignment", aid, "--force",
                                  f"--CourseDirectory.db_url={report.sqlite_url(course)}"],
                                 course, nbgrader_runner._env(), course / "generate.log",
                                 resource.RLIM_INFINITY)
    for aid, run in runs.items():
        if run.wait() != 0:
            raise nbgrader_runner.NbgraderError(
                f"`nbgrader generate_assignment {aid}` failed in {courses[aid]} (exit "
                f"{run.returncode}):\n{_tail(courses[aid] / 'generate.log', 3000)}")
        cache = root / TEMPLATE_CACHE / aid
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(courses[aid], cache / "course")
        (cache / "digest").write_text(digests[aid])
    return courses


def _register_in_course(root: Path, work: Path, assignment_id: str,
                        db: str | None = None) -> None:
    """The assignment, its notebooks and cells in the course gradebook (release/ untouched)."""
    nbgrader_runner.nbgrader(
        root, "generate_assignment", assignment_id, "--force",
        f"--CourseDirectory.release_directory={work / 'release-scratch'}",
        f"--CourseDirectory.db_url={report.gradebook_url(root, db)}")


def _registered_alike(root: Path, template: Path, assignment_id: str,
                      db: str | None = None) -> bool:
    """Whether the course gradebook already has this assignment with the same notebooks and
    graded cells as a fresh ``generate_assignment`` (as after ``attn-course release``)."""
    def shape(url: str):
        with Gradebook(url) as gb:
            try:
                a = gb.find_assignment(assignment_id)
            except MissingEntry:
                return None
            return sorted((nb.name, c.name, float(c.max_score), c.cell_type)
                          for nb in a.notebooks for c in nb.grade_cells)

    wanted = shape(report.sqlite_url(template))
    url = report.gradebook_url(root, db)
    return wanted is not None and not report.sqlite_missing(url) and shape(url) == wanted


def _expected_cells(template: Path, assignment_id: str) -> dict[tuple[str, str], float]:
    with Gradebook(report.sqlite_url(template)) as gb:
        a = gb.find_assignment(assignment_id)
        return {(nb.name, c.name): float(c.max_score) for nb in a.notebooks
                for c in nb.grade_cells}


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return ""


@dataclass
class _Slot:
    """Where one worker's kernels run: its server (warm, sandboxed or not) and the one folder
    its kernels may write (``folder``, wiped between two jobs)."""

    kernels: warm_kernels.KernelSlot
    folder: Path


#: The IPython start-up file that installs the grading agent in a kernel, before any of the
#: student's code: the agent's own source, so the kernel needs nothing of the grading package.
_AGENT_STARTUP = """\
import sys as _sys, types as _types
_module = _types.ModuleType("_attn_grading_agent")
exec(compile({source!r}, "<attn-grading-agent>", "exec"), _module.__dict__)
_sys.modules["_attn_grading_agent"] = _module
_module.install()
del _sys, _types, _module
"""


class _Runner:
    """Runs jobs in subprocesses; remembers the live process groups so that an interrupted
    run leaves no kernel behind, and when each job ran (to know who could have touched a
    file that changed)."""

    def __init__(self, root: Path, work: Path, templates: dict[str, Path], limits: Limits,
                 files: integrity.FileGuard, slots: list[_Slot], sandboxed: bool):
        self.root, self.work, self.templates, self.limits = root, work, templates, limits
        self.files = files
        self.sandboxed = sandboxed
        self.slots: queue.Queue[_Slot] = queue.Queue()
        for slot in slots:
            self.slots.put(slot)
        # (find_spec of a submodule would import the package, and torch with it)
        agent = Path(importlib.util.find_spec("attn_grader").origin).parent / "agent.py"
        self.agent_startup = _AGENT_STARTUP.format(source=agent.read_text(encoding="utf-8"))
        shown = [str(p) for p in sandbox.Sandbox(work).shown()]
        shown += [str(slot.folder) for slot in slots] + [str(work / "kit")]
        self.watch = {"hidden": sorted({str(root), str(Path.home()), str(work)}),
                      "shown": shown}
        # the released notebooks of what is graded (to put deleted cells back), and the cell
        # ids of every assignment in the course (to recognise a notebook of the wrong one)
        self.releases = {aid: {p.stem: nbformat.read(str(p), as_version=4)
                               for p in sorted((t / "release" / aid).glob("*.ipynb"))}
                         for aid, t in templates.items()}
        self.cell_ids = {d.name: {notebooks.grade_id(c) for p in d.glob("*.ipynb")
                                  for c in notebooks.read(p).cells if notebooks.grade_id(c)}
                         for d in sorted((root / "source").iterdir()) if d.is_dir()}
        self.zygote: grading_job.Zygote | None = None  # set by _run_jobs
        self.trivial: Path | None = None  # the checks' trivial cases, set by _run_jobs
        self.live: set[int] = set()
        self.lock = threading.Lock()
        self.stopping = False
        self.spans: dict[_Job, list[float]] = {}  # job -> [start, end (inf while running)]

    def running_between(self, t0: float, t1: float) -> list[_Job]:
        """The jobs that were running at some moment between t0 and t1."""
        with self.lock:
            return [j for j, (s, e) in self.spans.items() if s <= t1 and e >= t0]

    def kill_all(self) -> None:
        self.stopping = True
        with self.lock:
            for pgid in list(self.live):
                grading_job.killpg(pgid)

    def _prepare(self, job: _Job, course: Path, slot: _Slot) -> tuple[list[str], list[str]]:
        """The job's scratch course, written from the remembered copies (not from disk, which
        another job could have changed). Returns (flags, notes) about the submission."""
        template = self.templates[job.assignment]
        config = dict(self.files.snapshot())[(self.root / "nbgrader_config.py").resolve()].decode()
        (course / "nbgrader_config.py").write_text(config + _CONFIG_TAIL.format(
            root=str(course), db_url=report.sqlite_url(course),
            connection_file=str(slot.folder / "runtime" / "kernel.json")), encoding="utf-8")
        self.files.copy_tree(template / "source", course / "source")
        self.files.copy_tree(template / "gradebook.db", course / "gradebook.db")
        dest = course / "submitted" / job.student / job.assignment
        shutil.copytree(job.folder, dest, symlinks=True)
        flags, notes = [], []
        for name, release in self.releases[job.assignment].items():
            path = dest / f"{name}.ipynb"
            if not path.is_file():
                continue
            nb = nbformat.read(str(path), as_version=4)
            flags += integrity.scan(nb)
            restored = integrity.restore_missing_cells(nb, release)
            if restored:
                notes.append("deleted cells put back from the release: " + ", ".join(restored))
            unskipped = integrity.unskip_nbgrader_cells(nb)
            if unskipped:
                flags.append("tagged to be skipped when run (the tags were removed): "
                             + ", ".join(unskipped))
            if restored or unskipped:
                nbformat.write(nb, str(path))
        return flags, notes

    def _prepare_slot(self, job: _Job, slot: _Slot) -> None:
        """The kernel's side of the job, in the slot's folder (emptied first): its home, its
        working folder with the submission's other files, the agent's start-up file."""
        for entry in slot.folder.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        home, cwd, runtime = slot.folder / "home", slot.folder / "work", slot.folder / "runtime"
        startup = slot.folder / "ipython" / "profile_default" / "startup"
        for folder in (home, cwd, runtime, startup):
            folder.mkdir(parents=True)
        (startup / "00-attn-grading-agent.py").write_text(self.agent_startup, encoding="utf-8")
        for extra in job.folder.iterdir():
            if extra.is_file() and not extra.is_symlink() and extra.suffix != ".ipynb":
                shutil.copy2(extra, cwd / extra.name)
        slot.kernels.write_spec({
            "HOME": str(home), "IPYTHONDIR": str(slot.folder / "ipython"),
            "MPLCONFIGDIR": str(home / ".matplotlib"), "JUPYTER_RUNTIME_DIR": str(runtime),
            "ATTN_GRADING_WATCH": json.dumps(self.watch)}, cwd=str(cwd))

    def run(self, job: _Job, expected: dict[tuple[str, str], float]) -> tuple[Result, Path]:
        start = time.perf_counter()
        course = self.work / "jobs" / f"{job.assignment}--{job.student}"
        names = sorted({nb for (nb, _) in expected})
        problem = verdict.unreadable(job.folder, names) or self._wrong_assignment(job, names)
        if problem:
            cells = {c.removeprefix("test_"): 0.0 for (_, c) in expected}
            return Result(job.student, job.assignment, "invalid", problem, 0.0,
                          float(sum(expected.values())), cells, digest=job.digest), course
        if course.exists():  # a second run of the same job (quarantine)
            shutil.rmtree(course)
        course.mkdir(parents=True)
        slot = self.slots.get()
        try:
            return self._run_in(slot, job, course, expected, start)
        finally:
            if not slot.kernels.reset():  # the next job's kernels start cold (still sandboxed)
                slot.kernels.write_spec({})
            self.slots.put(slot)

    def _run_in(self, slot: _Slot, job: _Job, course: Path, expected, start: float):
        flags, notes = self._prepare(job, course, slot)
        self._prepare_slot(job, slot)
        checkpoint, record = course / "checkpoint.json", course / "record.jsonl"
        token = f"{os.getpid()}-{job.assignment}-{job.student}"
        env = nbgrader_runner._env()
        env.update({CHECKPOINT_ENV: str(checkpoint), JOB_ENV: token,
                    verdict.RECORD_ENV: str(record), verdict.TRIVIAL_ENV: str(self.trivial),
                    "JUPYTER_RUNTIME_DIR": str(slot.folder / "runtime"),
                    "JUPYTER_PATH": os.pathsep.join(filter(None, [
                        slot.kernels.jupyter_path, env.get("JUPYTER_PATH")]))})
        argv = ["autograde", job.assignment, "--force", f"--student={job.student}"]
        log_path = course / "nbgrader.log"
        timed_out = False
        began = time.monotonic()
        with open(log_path, "wb"):  # the child appends to it
            with self.lock:  # so that kill_all() cannot miss one being started
                if self.stopping:
                    raise KeyboardInterrupt
                proc = self.zygote.start(argv, course, env, log_path,
                                         int(self.limits.memory_bytes))
                self.live.add(proc.pid)
                self.spans[job] = [began, math.inf]
            try:
                proc.wait(timeout=self.limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                grading_job.killpg(proc.pid)  # nbgrader and the kernel's client
                if not self.sandboxed:  # (a sandbox is reset by its server, see run())
                    grading_job.kill_leftovers(token)  # what escaped the group with setsid
                proc.wait()
                with self.lock:
                    self.live.discard(proc.pid)
        self.spans[job][1] = time.monotonic()
        scores, judged_flags = verdict.read_record(record)
        result = self._collect(job, course, expected, proc.returncode, timed_out,
                               _tail(log_path), scores)
        result.flags = flags + judged_flags
        if notes:
            result.reason = "; ".join(filter(None, [result.reason, *notes]))
        result.seconds = round(time.perf_counter() - start, 1)
        return result, course

    def _wrong_assignment(self, job: _Job, names: list[str]) -> str:
        """Why the notebook belongs to another assignment ("" when it does not)."""
        folder = job.folder
        present = sorted(p.stem for p in folder.glob("*.ipynb"))
        named = [n for n in names if n in present]
        for stem in named or present:
            try:
                nb = nbformat.read(str(folder / f"{stem}.ipynb"), as_version=4)
            except Exception:
                continue
            belongs = integrity.assignment_of(nb, self.cell_ids)
            if belongs and belongs != job.assignment:
                return (f"{stem}.ipynb is the notebook of assignment {belongs}, not "
                        f"{job.assignment}: uploaded to the wrong assignment?")
        if not named:
            wanted = ", ".join(f"{n}.ipynb" for n in names)
            return f"no notebook named {wanted} in the submission (found {', '.join(present)})"
        return ""

    def _collect(self, job, course, expected, returncode, timed_out, log, record) -> Result:
        graded = course / "autograded" / job.student / job.assignment
        points = {cell: p for (_, cell), p in expected.items()}
        names = sorted({nb for (nb, _) in expected})
        if not timed_out and returncode == 0 and any(graded.glob("*.ipynb")):
            v = verdict.finished(graded, points, names, self.limits.memory_bytes, record)
        else:
            v = verdict.stopped(course / "checkpoint.json", graded, job.folder, points, names,
                                timed_out=timed_out, returncode=returncode, log=log,
                                wall_s=self.limits.wall_s, memory_cap=self.limits.memory_bytes,
                                record=record)
        cells = {cell: v.scores.get(cell, 0.0) for cell in points}
        return Result(job.student, job.assignment, v.status, v.reason,
                      round(sum(cells.values()), 3), float(sum(expected.values())),
                      {c.removeprefix("test_"): x for c, x in cells.items()}, digest=job.digest)


# --------------------------------------------------------------------------- the course


def _alembic_on_path() -> None:
    """nbgrader's Gradebook shells out to ``alembic``, which lives beside this interpreter."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")


def _load_manifest(root: Path) -> dict:
    try:
        return json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_manifest(root: Path, data: dict) -> None:
    path = root / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _merge(root: Path, result: Result, graded: Path | Mapping[str, bytes],
           expected: dict[tuple[str, str], float], db: str | None = None) -> None:
    """Into the course: the graded notebooks, then the gradebook (parent process only).

    ``graded``: the job's scratch course (local grading), or the files of its graded folder
    by relative path (what a cluster worker sends back, :mod:`attn_course.cluster`)."""
    dest = root / "autograded" / result.student / result.assignment
    if dest.exists():
        shutil.rmtree(dest)
    if isinstance(graded, Mapping):
        for name, data in graded.items():
            target = (dest / name).resolve()
            if dest.resolve() not in target.parents:  # only ever inside its own folder
                raise ValueError(f"a graded file outside its folder: {name!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    elif (src := graded / "autograded" / result.student / result.assignment).exists():
        shutil.copytree(src, dest)
        for p in dest.rglob("*"):  # nbgrader leaves them read-only
            p.chmod(0o755 if p.is_dir() else 0o644)
    with warnings.catch_warnings(), Gradebook(report.gradebook_url(root, db)) as gb:
        # nbgrader's own add_submission trips SQLAlchemy's autoflush warning; it is harmless
        warnings.filterwarnings("ignore", message=".*not in session.*")
        gb.update_or_create_student(result.student)
        try:
            gb.find_submission(result.assignment, result.student)
        except MissingEntry:
            gb.add_submission(result.assignment, result.student)
        for nb_name, cell in expected:
            grade = gb.find_grade(cell, nb_name, result.assignment, result.student)
            grade.auto_score = result.cells.get(cell.removeprefix("test_"), 0.0)
            grade.needs_manual_grade = False
        gb.db.commit()


def _jobs(root: Path, assignment_ids: Iterable[str], manifest: dict,
          force: bool, db: str | None = None) -> tuple[list[_Job], int]:
    jobs, unchanged = [], 0
    with Gradebook(report.gradebook_url(root, db)) as gb:
        for aid in assignment_ids:
            for folder in sorted((root / "submitted").glob(f"*/{aid}")):
                if not folder.is_dir():
                    continue
                student = folder.parent.name
                digest = submission_digest(folder, root / "source" / aid)
                done = manifest.get(f"{aid}/{student}", {})
                if not force and done.get("digest") == digest:
                    try:
                        gb.find_submission(aid, student)
                        unchanged += 1
                        continue
                    except MissingEntry:
                        pass
                jobs.append(_Job(student, aid, folder, digest))
    return jobs, unchanged


def grade(root: Path, assignment_ids: list[str], workers: int | None = None,
          limits: Limits = Limits(), force: bool = False, progress: bool = True,
          log: Callable[[str], None] = print, warm: bool = True,
          sandboxed: bool = True, db: str | None = None) -> list[Result]:
    """Grade what is new or changed under ``root/submitted`` for these assignments; return the
    results of every submission of them (fresh and from earlier runs).

    ``warm``: start kernels forked from one that has imported torch (:mod:`warm_kernels`);
    without, every kernel starts from scratch as in plain nbgrader. ``sandboxed``: run every
    kernel in a bubblewrap sandbox (:mod:`sandbox`); raises
    :class:`~attn_course.sandbox.SandboxUnavailable` when none can be made here. Without it,
    the student's code runs with the instructor's permissions and network (the scores are
    still computed outside its process). ``db``: the course gradebook's URL when it is not
    the one nbgrader's configuration names (:func:`attn_course.report.gradebook_url`)."""
    root = Path(root).resolve()
    workers = max(1, workers or os.cpu_count() or 1)
    if sandboxed:
        problem = sandbox.probe()
        if problem:
            raise sandbox.SandboxUnavailable(problem)
    _alembic_on_path()
    manifest = _load_manifest(root)
    jobs, unchanged = _jobs(root, assignment_ids, manifest, force, db)
    if unchanged:
        log(f"{unchanged} submissions unchanged since they were graded: kept")
    if jobs:
        # SIGTERM (a scheduler, a closed terminal) stops like Ctrl-C: no kernel left running.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
        try:
            ids = sorted({j.assignment for j in jobs})
            with Session(root, ids, workers=min(workers, len(jobs)), limits=limits, warm=warm,
                         sandboxed=sandboxed, log=log, preload=len(jobs) > 2,
                         db=db) as session:
                session.grade(jobs, manifest, progress)
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
    return _recorded(root, assignment_ids, manifest)


def _recorded(root: Path, assignment_ids: list[str], manifest: dict) -> list[Result]:
    """The results the manifest holds for the submissions still in ``submitted/``."""
    results = []
    for aid in assignment_ids:
        for key, entry in sorted(manifest.items()):
            if key.startswith(f"{aid}/") and (root / "submitted" / entry["student"] / aid).is_dir():
                results.append(Result(**entry))
    return results


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _guard_for(root: Path, work: Path, sandboxed: bool) -> integrity.FileGuard:
    """Everything a submission must not change, remembered before any of them runs. In a
    sandbox a submission sees none of it: then only what each job is written from."""
    g = integrity.FileGuard()
    if sandboxed:
        g.watch(root / "nbgrader_config.py", work / "template")
        return g
    g.watch(*integrity.package_dirs().values(), *integrity.startup_hooks(),
            root / "nbgrader_config.py", root / "source", root / "release", root / "submitted",
            root / "autograded", root / "gradebook.db", work / "template", work / "kit")
    for d in integrity.site_dirs():
        g.watch_glob(d, "*.pth")
    return g


def _problem_line(job: _Job, result: Result) -> str:
    """What the progress output says of a result that is not a clean ok."""
    return (f"{job.student}/{job.assignment}: {result.status}: "
            + "; ".join(filter(None, [result.reason, *result.flags])))


def _regraded_line(job: _Job, result: Result) -> str:
    return (f"regraded alone: {job.student}/{job.assignment}: {result.score:g}"
            + ("; FLAGGED: " + "; ".join(result.flags) if result.flags else ""))


def _changed_flag(changes: list) -> str:
    """The flag of a submission graded alone while files every grade depends on changed."""
    shown = ", ".join(str(c) for c in changes[:5])
    return (f"changed files outside its submission (restored): {shown}"
            + (" ..." if len(changes) > 5 else ""))


def _failed(job: _Job, expected, exc: BaseException) -> Result:
    return Result(job.student, job.assignment, "crashed", f"grading failed: {exc!r}", 0.0,
                  float(sum(expected.values())),
                  {c.removeprefix("test_"): 0.0 for (_, c) in expected}, digest=job.digest)


def _start_slots(work: Path, count: int, warm: bool, sandboxed: bool, log,
                 memory: int) -> list[_Slot]:
    """One slot per worker, their servers importing torch side by side. Kernel folders have
    short paths: a ZeroMQ IPC socket's path must fit in 107 bytes."""
    kit = work / "kit"
    kit.mkdir(exist_ok=True)
    script = kit / "warm_kernels.py"
    shutil.copy2(warm_kernels.__file__, script)
    env = nbgrader_runner._env()

    def start(k: int) -> _Slot:
        folder = work / f"s{k}"
        box = sandbox.Sandbox(folder, readonly=[kit]) if sandboxed else None
        allow = list(sandbox.KERNEL_ENV) if sandboxed else None
        # the server's own memory, on top of what the job may use
        cgroups = sandbox.SlotCgroups(f"{work.name}-s{k}", memory=memory + GiB)
        kernels = warm_kernels.KernelSlot(env, work / f"c{k}", folder, sandbox=box,
                                          mark=JOB_ENV, allow=allow, script=str(script),
                                          warm=warm, cgroups=cgroups)
        return _Slot(kernels, folder)

    return [start(k) for k in range(count)]  # from this thread: see KernelSlot


def _slots_ready(slots: list[_Slot], log) -> None:
    """Note, in the background, when each server has imported what it preloads. Jobs need
    not wait: their kernels' requests queue on the server's socket until it accepts them."""

    def watch():
        for slot in slots:
            slot.kernels.wait_ready()
        reasons = {s.kernels.cold_reason for s in slots if s.kernels.cold_reason}
        if reasons:
            log("kernels will start cold (each imports torch again): " + "; ".join(reasons))

    threading.Thread(target=watch, daemon=True).start()


TRIVIAL_CACHE = Path("autograded") / ".attn-trivial-cases.json"


def _trivial_cases(root: Path, work: Path, assignment_ids: list[str]) -> Path:
    """The cases each check gives credit for only beside real work (attn_grader.nulls), for
    the jobs to read: computed here, once per version of the grading package (cached in the
    course), never in the zygote (running torch there before it forks would not be safe)."""
    package = Path(importlib.util.find_spec("attn_grader").origin).parent
    digest = integrity.tree_digest(package)
    cache_path = root / TRIVIAL_CACHE
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if cache.get("digest") != digest:
        cache = {"digest": digest, "cases": {}}
    found = {}
    for aid in assignment_ids:
        names = cache.setdefault("names", {}).get(aid)
        if names is None or any(f"{aid}/{n}" not in cache["cases"] for n in names):
            import attn_grader  # (torch: only when the cache does not have them)

            names = cache["names"][aid] = list(attn_grader.checks_for(aid))
            for name in names:
                cache["cases"][f"{aid}/{name}"] = sorted(attn_grader.trivial_cases(aid, name))
        for name in names:
            found[f"{aid}/{name}"] = cache["cases"][f"{aid}/{name}"]
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_text(json.dumps(cache), encoding="utf-8")
    out = work / "trivial-cases.json"
    out.write_text(json.dumps(found), encoding="utf-8")
    return out


class Session:
    """What a grading run keeps between submissions: a scratch folder, the zygote, one
    sandboxed slot per worker, the assignments' templates. ``with Session(...) as s:
    s.grade(jobs, manifest)`` grades a batch; a watching run grades batch after batch in one
    session (:func:`watch`). A cluster worker (:mod:`attn_course.cluster`) keeps one open
    on its copy of the course with ``register=False`` (that copy has no gradebook to
    register the assignments in: the coordinator did it in the course's) and its scratch
    folder inside its own (``scratch``, removed whole if the worker dies), and calls
    ``session.runner.run`` itself."""

    def __init__(self, root: Path, assignment_ids: list[str], *, workers: int, limits: Limits,
                 warm: bool, sandboxed: bool, log: Callable[[str], None], preload: bool,
                 db: str | None = None, register: bool = True, scratch: Path | None = None):
        self.root, self.ids, self.workers, self.limits = root, assignment_ids, workers, limits
        self.warm, self.sandboxed, self.log, self.preload = warm, sandboxed, log, preload
        self.db, self.register = db, register
        self.scratch = scratch  # where the scratch folder goes (default: the system's tmp)

    def __enter__(self) -> Session:
        self._tmp = tempfile.TemporaryDirectory(prefix="attn-", dir=self.scratch)
        work = self.work = Path(self._tmp.name)
        # with few jobs, each imports the checks beside its kernel instead of the zygote
        self.zygote = grading_job.Zygote(nbgrader_runner._env(), preload=self.preload)
        self.slots: list[_Slot] = []
        try:
            self.slots = _start_slots(work, self.workers, self.warm, self.sandboxed, self.log,
                                      int(self.limits.memory_bytes))
            trivial = _trivial_cases(self.root, work, self.ids)
            _slots_ready(self.slots, self.log)
            templates = _prepare_templates(self.root, work, self.ids, self.zygote)
            self.expected = {aid: _expected_cells(t, aid) for aid, t in templates.items()}
            for aid, template in templates.items():
                if self.register and not _registered_alike(self.root, template, aid, self.db):
                    _register_in_course(self.root, work, aid, self.db)
            self.files = _guard_for(self.root, work, self.sandboxed)
        except BaseException:
            self._close()
            raise
        self.runner = _Runner(self.root, work, templates, self.limits, self.files, self.slots,
                              self.sandboxed)
        self.runner.zygote = self.zygote
        self.runner.trivial = trivial
        # Without a CPU share and a process cap per slot, one submission's fork bomb could
        # starve another's cells past their time limit: those are graded again, alone.
        self.isolated = all({"pids", "cpu"} <= set(s.kernels.cgroups.controllers)
                            for s in self.slots)
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is not None and hasattr(self, "runner"):
            self.runner.kill_all()
        self._close()

    def _close(self) -> None:
        self.zygote.close()
        for slot in self.slots:
            slot.kernels.close()
        if hasattr(self, "files"):
            self.files.clean_bytecode()
        self._tmp.cleanup()

    def _accept(self, job: _Job, result: Result, course: Path, manifest: dict) -> None:
        root = self.root
        _merge(root, result, course, self.expected[job.assignment], self.db)
        manifest[f"{job.assignment}/{job.student}"] = asdict(result)
        _save_manifest(root, manifest)
        for written in (root / "autograded" / job.student / job.assignment,
                        root / "gradebook.db", root / MANIFEST):
            self.files.refresh(written)
        shutil.rmtree(course, ignore_errors=True)

    def grade(self, jobs: list[_Job], manifest: dict, progress: bool = True,
              on_result: Callable[[Result], None] | None = None) -> None:
        """Grade ``jobs`` (of this session's assignments), merging each result into the
        course as it arrives."""
        from tqdm.auto import tqdm

        root, runner, files, expected = self.root, self.runner, self.files, self.expected
        bar = tqdm(total=len(jobs), desc="grading", unit="submission", disable=not progress,
                   file=sys.stderr, dynamic_ncols=True)
        suspects: dict[tuple[str, str], _Job] = {}
        checked = time.monotonic()

        def done(job: _Job, result: Result, course: Path) -> None:
            self._accept(job, result, course, manifest)
            if on_result:
                on_result(result)

        pool = cf.ThreadPoolExecutor(max_workers=self.workers)
        try:
            futures = {pool.submit(runner.run, j, expected[j.assignment]): j for j in jobs}
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    result, course = fut.result()
                except Exception as exc:  # a bug of ours must not stop the class
                    result, course = _failed(job, expected[job.assignment], exc), \
                        self.work / "none"
                changes = files.changes()
                if changes:
                    # Someone running since the last check changed a file every grade
                    # depends on: undo it, and grade everyone who was running again, alone.
                    files.restore(changes, aside=root / SET_ASIDE)
                    for other in runner.running_between(checked, time.monotonic()):
                        suspects[(other.assignment, other.student)] = other
                        manifest.pop(f"{other.assignment}/{other.student}", None)
                    bar.write("changed during grading, and put back (the changed versions are "
                              f"in {root / SET_ASIDE}): "
                              + ", ".join(str(c) for c in changes[:5])
                              + f"; {len(suspects)} submissions will be regraded one at a time")
                checked = time.monotonic()
                done(job, result, course)
                if result.status == "limit" and not self.isolated and len(self.slots) > 1:
                    suspects.setdefault((job.assignment, job.student), job)
                if result.status != "ok" or result.flags:
                    bar.write(_problem_line(job, result))
                bar.update(1)
            for _, job in sorted(suspects.items(), key=lambda kv: kv[0]):  # one at a time
                try:
                    result, course = runner.run(job, expected[job.assignment])
                except Exception as exc:
                    result, course = _failed(job, expected[job.assignment], exc), \
                        self.work / "none"
                changes = files.changes()
                if changes:
                    files.restore(changes, aside=root / SET_ASIDE)
                    result.flags.append(_changed_flag(changes))
                done(job, result, course)
                bar.write(_regraded_line(job, result))
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            runner.kill_all()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()


def watch(root: Path, assignment_ids: list[str], workers: int | None = None,
          limits: Limits = Limits(), interval: float = 5.0, log: Callable[[str], None] = print,
          sandboxed: bool = True, on_result: Callable[[Result], None] | None = None,
          stop: threading.Event | None = None, db: str | None = None) -> None:
    """Grade each new or changed submission of these assignments as it lands in
    ``submitted/`` (for example after ``nbgrader collect --update``), until ``stop`` is set
    or Ctrl-C: one session, so each costs only its own job."""
    root = Path(root).resolve()
    workers = max(1, workers or os.cpu_count() or 1)
    if sandboxed and (problem := sandbox.probe()):
        raise sandbox.SandboxUnavailable(problem)
    _alembic_on_path()
    stop = stop or threading.Event()
    with Session(root, list(assignment_ids), workers=workers, limits=limits, warm=True,
                 sandboxed=sandboxed, log=log, preload=True, db=db) as session:
        log(f"watching {root / 'submitted'} for {', '.join(assignment_ids)} "
            f"(every {interval:g} s; Ctrl-C to stop)")
        while not stop.is_set():
            manifest = _load_manifest(root)
            jobs, _ = _jobs(root, assignment_ids, manifest, force=False, db=db)
            jobs = [j for j in jobs if _settled(j.folder)]
            if jobs:
                session.grade(jobs, manifest, progress=False, on_result=on_result)
            stop.wait(interval)


def _settled(folder: Path, quiet_s: float = 2.0) -> bool:
    """Whether nothing in a submission changed in the last seconds (a copy still arriving
    is graded once it is complete)."""
    newest = max((p.stat().st_mtime for p in folder.rglob("*") if p.is_file()), default=0)
    return time.time() - newest >= quiet_s
