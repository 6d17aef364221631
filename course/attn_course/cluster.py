"""Grade on a Dask cluster: ``attn-course grade ID ... --cluster tcp://HOST:8786``.

The engine is Dask's ``distributed`` (``dask scheduler``, ``dask worker``, and Dask's own
ways to start them over SSH, on Kubernetes or on an HPC batch system); nothing here
schedules. The split:

- **the coordinator** (this process, where the course lives) finds what is new or changed
  as local grading does (:func:`attn_course.grading._jobs`, the resume manifest), makes the
  assignments' templates and the checks' trivial cases, registers the assignments in the
  course gradebook, and sends the cluster a *course bundle* once per run (the course's
  ``nbgrader_config.py``, ``source/``, those templates and cases, the limits, whether to
  sandbox, and the versions of the course and of the grading code) and then one task per
  submission, **by value** (its files as bytes, the student, the assignment, its digest).
  Only the coordinator writes the gradebook, ``autograded/`` and the manifest, one result
  at a time as it arrives (:func:`attn_course.grading._merge`);
- **a worker** (any process running ``dask worker`` with the course installed) checks that
  its course and grading code are the coordinator's (it refuses the job otherwise), keeps
  one :class:`attn_course.grading.Session` per course bundle open across tasks (the same
  sandboxed slots, warm kernels and limits as local grading, one slot per worker thread),
  grades the submission in a scratch course with :meth:`attn_course.grading._Runner.run`,
  and returns the result and the graded notebooks by value.

Faults: a worker that dies mid-job (killed, out of memory, its machine gone) loses nothing:
the scheduler gives the job to another worker, at most :data:`ALLOWED_FAILURES` more times
(Dask's ``allowed-failures``, set on the scheduler for the run), then the job is reported as
``crashed`` with the reason and left out of the manifest, so that running the command again
grades it (and whatever else is missing). A submission that runs out of time or memory
returns normally from its job and is reported as locally, never retried. Ctrl-C cancels
what has not run, stops the jobs running on the workers, and closes the client; every grade
merged so far stays.

The scheduler needs only Dask: every task is a function it can unpickle without the course
(:func:`_remote`), with arguments of plain Python types.
"""

from __future__ import annotations

import atexit
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from attn_course import grading, grading_job, integrity, nbgrader_runner, sandbox

log_ = logging.getLogger(__name__)

#: How many more times a job whose worker died is tried elsewhere (Dask's allowed-failures).
ALLOWED_FAILURES = 2
#: Retries of a job that raised on its worker (a refusal, a bug of ours), elsewhere if can be.
RETRIES = 2
#: A worker closes a course session nobody used for this long (its slots hold memory).
IDLE_S = 600.0
#: Course sessions a worker keeps open at once (one per course version being graded).
MAX_SESSIONS = 2
#: Where a worker's bundle writes the trivial cases (as local grading caches them).
_TRIVIAL = grading.TRIVIAL_CACHE.as_posix()
_TEMPLATES = grading.TEMPLATE_CACHE.as_posix()


class ClusterError(RuntimeError):
    """The cluster cannot grade this course: unreachable, no workers, or workers with
    another version of the course or without a sandbox."""


class CourseMismatch(RuntimeError):
    """A worker refuses a job: its course or grading code is not the coordinator's."""


# --------------------------------------------------------------------------- versions


#: Parts of the course tooling that never run while a submission is graded (commands of
#: their own): a change there does not make a worker's grades differ.
NOT_GRADING = ("benchmarks", "authoring.py", "book.py", "cli.py", "collect.py", "execute.py",
               "validation.py")


def _package(name: str) -> Path:
    return Path(importlib.util.find_spec(name).origin).parent  # (without importing it)


def versions() -> dict[str, str]:
    """What must be the same on the coordinator and on every worker: the course package's
    version, the code of the grading machinery (the course tooling but its other commands,
    :data:`NOT_GRADING`), of the grading package and of the helpers students import,
    nbgrader's version, and Python's."""
    return {
        "course": importlib.metadata.version("attention-course"),
        "attn_course": integrity.tree_digest(_package("attn_course"), NOT_GRADING),
        "attn_grader": integrity.tree_digest(_package("attn_grader")),
        "attn_utils": integrity.tree_digest(_package("attn_utils")),
        "nbgrader": importlib.metadata.version("nbgrader"),
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def mismatch(coordinator: dict[str, str], worker: dict[str, str]) -> str:
    """Where a worker's versions differ from the coordinator's, in words ("" if nowhere)."""
    names = {"course": "attention-course", "attn_course": "the course tooling (attn_course)",
             "attn_grader": "the grading package (attn_grader)",
             "attn_utils": "the student helpers (attn_utils)", "nbgrader": "nbgrader",
             "python": "Python"}
    out = []
    for key, name in names.items():
        mine, theirs = coordinator.get(key), worker.get(key)
        if mine != theirs:
            short = (lambda v: v[:12] if v and len(v) == 64 else v)
            out.append(f"{name} {short(theirs)} on the worker, {short(mine)} here")
    return "; ".join(out)


# --------------------------------------------------------------------------- the course bundle


def _files_under(folder: Path, prefix: str) -> dict[str, bytes]:
    """Regular files under ``folder`` by POSIX path, prefixed; never a link's target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames
                             if d not in (".ipynb_checkpoints", "__pycache__")
                             and not os.path.islink(os.path.join(dirpath, d)))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                rel = path.relative_to(folder).as_posix()
                out[f"{prefix}{rel}"] = path.read_bytes()
    return out


def make_bundle(root: Path, assignment_ids: list[str], limits: grading.Limits,
                sandboxed: bool, preload: bool) -> dict:
    """Everything a worker needs to grade this course's submissions, once per run: the
    course's configuration and sources (every assignment's, to recognise a notebook handed
    in to the wrong one), the templates and trivial cases the coordinator just made or
    found cached (a worker then makes neither), the limits and the versions."""
    files = {"nbgrader_config.py": (root / "nbgrader_config.py").read_bytes()}
    files.update(_files_under(root / "source", "source/"))
    for aid in assignment_ids:
        files.update(_files_under(root / grading.TEMPLATE_CACHE / aid, f"{_TEMPLATES}/{aid}/"))
    files[_TRIVIAL] = (root / grading.TRIVIAL_CACHE).read_bytes()
    bundle = {"assignments": sorted(assignment_ids),
              "limits": {"wall_s": float(limits.wall_s),
                         "memory_bytes": int(limits.memory_bytes)},
              "sandboxed": bool(sandboxed), "versions": versions(), "files": files}
    h = hashlib.sha256(repr({k: v for k, v in bundle.items() if k != "files"}).encode())
    for name, data in sorted(files.items()):
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    bundle["key"] = h.hexdigest()
    bundle["preload"] = bool(preload)  # (not part of the key: any session will do)
    return bundle


def _write_files(dest: Path, files: dict[str, bytes]) -> None:
    dest = dest.resolve()
    for name, data in files.items():
        target = (dest / name).resolve()
        if dest not in target.parents:
            raise ValueError(f"a file outside its folder: {name!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)


# --------------------------------------------------------------------------- the worker's side


class _Hosted:
    """One course session on a worker, opened and closed by a thread of its own: the
    sandboxes' ``--die-with-parent`` follows the thread that started them, which must
    outlive them (Dask's task threads come and go)."""

    def __init__(self, bundle: dict, threads: int):
        self.key = bundle["key"]
        self.users = 0
        self.last = time.monotonic()
        self.closing = False
        self.error: BaseException | None = None
        self.session: grading.Session | None = None
        self.ready, self.stop = threading.Event(), threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._host, args=(bundle, threads), daemon=True,
                                       name=f"attn-course-session-{self.key[:8]}")
        self.thread.start()

    def _host(self, bundle: dict, threads: int) -> None:
        import json

        folder = Path(tempfile.mkdtemp(prefix="attn-worker-"))
        # for a later worker on this machine to clean up after this one if it dies
        (folder / "owner.json").write_text(json.dumps({"pid": os.getpid()}), encoding="utf-8")
        try:
            root = folder / "course"
            # (the trivial cases' key is the grading package's digest: the version check
            # found it the same here, so the coordinator's cache is this worker's)
            _write_files(root, bundle["files"])
            grading._alembic_on_path()
            session = grading.Session(
                root, bundle["assignments"], workers=threads,
                limits=grading.Limits(**bundle["limits"]), warm=True,
                sandboxed=bundle["sandboxed"], log=log_.warning, preload=bundle["preload"],
                register=False, scratch=folder)
            with session:
                self.session = session
                self.ready.set()
                self.stop.wait()
        except BaseException as exc:  # reported to every task waiting for it
            self.error = exc
        finally:
            self.ready.set()
            shutil.rmtree(folder, ignore_errors=True)
            self.done.set()

    def close(self, wait: bool = False) -> None:
        self.stop.set()
        if wait:
            self.done.wait(60)


def _sweep() -> None:
    """Remove what the sessions of dead worker processes left in the temporary folder (a
    worker killed with SIGKILL cannot clean up: its sandboxes die with it, its folders
    stay)."""
    import json

    tmp = Path(tempfile.gettempdir())
    for owner in tmp.glob("attn-worker-*/owner.json"):
        try:
            os.kill(int(json.loads(owner.read_text(encoding="utf-8"))["pid"]), 0)
            continue  # alive
        except ProcessLookupError:
            try:  # renamed first: one sweeper takes it, and a half-removed one is known
                owner.parent.rename(tmp / f"attn-dead-{owner.parent.name}")
            except OSError:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for dead in tmp.glob("attn-dead-attn-worker-*"):
        shutil.rmtree(dead, ignore_errors=True)


class _Sessions:
    """The course sessions of this worker process, by bundle key."""

    def __init__(self):
        self.lock = threading.Lock()
        self.open: dict[str, _Hosted] = {}
        self.reaper: threading.Thread | None = None
        self.stopped: list[str] = []  # runs whose coordinator was stopped

    def acquire(self, bundle: dict, threads: int, run: str = "") -> _Hosted:
        with self.lock:
            if run and run in self.stopped:
                raise RuntimeError("grading was stopped by the coordinator")
            hosted = self.open.get(bundle["key"])
            if hosted is None or hosted.closing:
                hosted = self.open[bundle["key"]] = _Hosted(bundle, threads)
            hosted.users += 1
            self._evict()
            if self.reaper is None:
                _sweep()
                self.reaper = threading.Thread(target=self._reap, daemon=True,
                                               name="attn-course-session-reaper")
                self.reaper.start()
        hosted.ready.wait()
        if hosted.error is not None:
            with self.lock:
                hosted.users -= 1
                if self.open.get(hosted.key) is hosted:
                    del self.open[hosted.key]
            raise RuntimeError(f"no grading session on {socket.gethostname()}: "
                               f"{hosted.error}") from hosted.error
        return hosted

    def release(self, hosted: _Hosted) -> None:
        with self.lock:
            hosted.users -= 1
            hosted.last = time.monotonic()
            if hosted.closing and hosted.users == 0:
                hosted.close()
            self._evict()

    def _evict(self) -> None:
        """Close idle sessions: those unused for IDLE_S, and the oldest beyond MAX_SESSIONS."""
        now = time.monotonic()
        idle = sorted((h for h in self.open.values() if h.users == 0), key=lambda h: h.last)
        excess = len(self.open) - MAX_SESSIONS
        for hosted in idle:
            if excess > 0 or now - hosted.last > IDLE_S:
                del self.open[hosted.key]
                hosted.close()
                excess -= 1

    def _reap(self) -> None:
        while True:
            time.sleep(30)
            with self.lock:
                self._evict()

    def stop(self, key: str, run: str) -> int:
        """Kill the jobs running in this course's session (the coordinator of ``run`` was
        stopped), and close it once its tasks are gone; the run's tasks that start later
        (cancelled, but already handed to this worker) are refused. Returns how many jobs
        were running."""
        with self.lock:
            self.stopped.append(run)
            del self.stopped[:-100]
            hosted = self.open.pop(key, None)
            if hosted is None:
                return 0
            hosted.closing = True
            running = hosted.users
            if hosted.session is not None and hasattr(hosted.session, "runner"):
                hosted.session.runner.kill_all()
            if hosted.users == 0:
                hosted.close()
        return running

    def close_all(self) -> None:
        with self.lock:
            hosted, self.open = list(self.open.values()), {}
        for h in hosted:  # all at once, then wait for each
            h.close()
        for h in hosted:
            h.done.wait(30)


_SESSIONS = _Sessions()
atexit.register(_SESSIONS.close_all)
_TEARDOWN = threading.Lock()


def _close_with_worker() -> None:
    """Close this process's sessions when its Dask worker closes (a nanny's worker process
    ends without running ``atexit``): a worker plugin whose teardown does it, added once
    from the event loop's thread."""
    from distributed import WorkerPlugin, get_worker

    class CloseSessions(WorkerPlugin):
        name = "attn-course-sessions"

        def teardown(self, worker):
            _SESSIONS.close_all()

    with _TEARDOWN:
        try:
            worker = get_worker()
        except ValueError:  # not in a worker
            return
        if getattr(worker, "_attn_course_teardown", False):
            return
        worker._attn_course_teardown = True
        worker.loop.add_callback(worker.plugin_add, plugin=CloseSessions(),
                                 name=CloseSessions.name)


def _threads() -> int:
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError, AttributeError):
        return 1


def _where() -> str:
    try:
        from distributed import get_worker

        return str(get_worker().address)
    except (ImportError, ValueError, AttributeError):
        return socket.gethostname()


def worker_report(sandboxed: bool) -> dict:
    """What the coordinator asks every worker before a run (``client.run``)."""
    return {"versions": versions(), "host": socket.gethostname(), "threads": _threads(),
            "sandbox": sandbox.probe() if sandboxed else None}


def grade_submission(bundle: dict, payload: dict) -> dict:
    """One submission, on a worker: refuse it if this worker's course is not the
    coordinator's, else grade it in this worker's session for the bundle and return the
    result and the graded notebooks (by relative path), by value."""
    where = _where()
    problem = mismatch(bundle["versions"], versions())
    if problem:
        raise CourseMismatch(
            f"worker {where} ({socket.gethostname()}) refuses "
            f"{payload['student']}/{payload['assignment']}: it has another version of the "
            f"course ({problem}); install the same course on every worker")
    _close_with_worker()
    hosted = _SESSIONS.acquire(bundle, _threads(), payload.get("run", ""))
    session = hosted.session
    incoming = Path(tempfile.mkdtemp(prefix="attn-job-"))
    course = None
    try:
        folder = incoming / payload["assignment"]
        folder.mkdir()
        _write_files(folder, payload["files"])
        job = grading._Job(payload["student"], payload["assignment"], folder,
                           payload["digest"])
        try:
            result, course = session.runner.run(job, session.expected[job.assignment])
        except KeyboardInterrupt:  # the session was stopped by its coordinator
            raise RuntimeError("grading was stopped by the coordinator") from None
        graded = course / "autograded" / job.student / job.assignment
        files = _files_under(graded, "") if graded.is_dir() else {}
        changes = []
        if not session.sandboxed:  # (in a sandbox, nothing a job can reach is watched)
            found = session.files.changes()
            if found:
                session.files.restore(found, aside=Path(tempfile.gettempdir())
                                      / "attn-changed-during-grading")
                changes = [str(c) for c in found]
        return {"result": asdict(result), "graded": files, "isolated": session.isolated,
                "changes": changes, "worker": where}
    finally:
        shutil.rmtree(incoming, ignore_errors=True)
        if course is not None:
            shutil.rmtree(course, ignore_errors=True)
        _SESSIONS.release(hosted)


def stop_sessions(key: str, run: str) -> int:
    return _SESSIONS.stop(key, run)


def passthrough(value):
    return value


def _remote(name: str) -> Callable:
    """A task function the scheduler can unpickle without the course installed (Dask's
    scheduler deserialises the task graph): pickled by value, it imports this module on
    the worker and calls ``name`` there."""

    def call(*args, **kwargs):
        import importlib

        return getattr(importlib.import_module("attn_course.cluster"), name)(*args, **kwargs)

    return call


# --------------------------------------------------------------------------- the coordinator


def _payload(job: grading._Job, run: str) -> dict:
    # Links are left out: their targets are the coordinator's files, not the student's.
    return {"student": job.student, "assignment": job.assignment, "digest": job.digest,
            "run": run, "files": _files_under(job.folder, "")}


def _crashed(job: grading._Job, expected, reason: str) -> grading.Result:
    """A job the cluster could not grade: 0 for now, and no digest, so that the next run
    grades it again."""
    return grading.Result(job.student, job.assignment, "crashed", reason, 0.0,
                          float(sum(expected.values())),
                          {c.removeprefix("test_"): 0.0 for (_, c) in expected}, digest="")


class _LazyZygote:
    """The zygote, started only if a template must be made (usually they are cached)."""

    def __init__(self):
        self.zygote: grading_job.Zygote | None = None

    def start(self, *args):
        if self.zygote is None:
            self.zygote = grading_job.Zygote(nbgrader_runner._env(), preload=False)
        return self.zygote.start(*args)

    def close(self) -> None:
        if self.zygote is not None:
            self.zygote.close()


def _allowed_failures(client, value: int | None = None) -> int:
    """The scheduler's allowed-failures (set to ``value`` when given); the previous one."""

    def swap(dask_scheduler=None, value=None):
        previous = dask_scheduler.allowed_failures
        if value is not None:
            dask_scheduler.allowed_failures = value
        return previous

    return client.run_on_scheduler(swap, value=value)


class Coordinator:
    """One run of ``attn-course grade --cluster``: the client, the bundle, the futures."""

    def __init__(self, client, root: Path, assignment_ids: list[str], *, limits: grading.Limits,
                 sandboxed: bool, db: str | None, log: Callable[[str], None]):
        self.client, self.root, self.ids = client, root, assignment_ids
        self.limits, self.sandboxed, self.db, self.log = limits, sandboxed, db, log
        self.run_id = uuid.uuid4().hex[:8]
        self.threads = 1
        self.bundle_key = ""

    # ---- before any job

    def check_workers(self, wait_s: float) -> None:
        """Refuse to start unless every connected worker has this course and (when
        sandboxing) can make a sandbox: a clear message, not a class of crashed jobs."""
        try:
            self.client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise ClusterError(
                f"no worker joined the scheduler at {self.client.scheduler.address} within "
                f"{wait_s:g} s: start some with `dask worker {self.client.scheduler.address}`"
            ) from None
        mine = versions()
        reports = self.client.run(_remote("worker_report"), self.sandboxed, on_error="return")
        problems, threads = [], 0
        for address, rep in sorted(reports.items()):
            if isinstance(rep, BaseException):
                problems.append(f"{address}: cannot run the course's grading ({rep!r}); is the "
                                "course installed in the worker's Python environment?")
                continue
            threads += rep["threads"]
            if diff := mismatch(mine, rep["versions"]):
                problems.append(f"{address} ({rep['host']}): another version of the course: "
                                f"{diff}")
            if rep["sandbox"]:
                problems.append(f"{address} ({rep['host']}): no sandbox for student code: "
                                f"{rep['sandbox']}")
        if problems:
            raise ClusterError(
                "these workers cannot grade this course:\n  " + "\n  ".join(problems)
                + "\nInstall the same version of the course on every worker (and bubblewrap, "
                "with user namespaces allowed), or stop those workers.")
        self.threads = max(1, threads)
        self.log(f"cluster {self.client.scheduler.address}: {len(reports)} workers, "
                 f"{threads} threads, the same course version as here")

    def prepare(self, preload: bool) -> dict:
        """Templates, trivial cases and registration, here (as a local run does), then the
        bundle, sent once. Returns the cells expected of each assignment."""
        root = self.root
        with tempfile.TemporaryDirectory(prefix="attn-coordinator-") as tmp:
            work = Path(tmp)
            zygote = _LazyZygote()
            try:
                templates = grading._prepare_templates(root, work, self.ids, zygote)
            finally:
                zygote.close()
            grading._trivial_cases(root, work, self.ids)
            expected = {aid: grading._expected_cells(t, aid) for aid, t in templates.items()}
            for aid, template in templates.items():
                if not grading._registered_alike(root, template, aid, self.db):
                    grading._register_in_course(root, work, aid, self.db)
        bundle = make_bundle(root, self.ids, self.limits, self.sandboxed, preload)
        self.bundle_key = bundle["key"]
        with warnings.catch_warnings():  # a course with big data files: sent once anyway
            warnings.filterwarnings("ignore", message=".*large graph.*")
            self.bundle = self.client.submit(
                _remote("passthrough"), bundle, pure=False,
                key=f"attn-course-bundle-{self.bundle_key[:12]}-{self.run_id}")
        return expected

    # ---- the jobs

    def submit(self, job: grading._Job, attempt: str = ""):
        key = f"attn-grade-{job.assignment}-{job.student}-{self.run_id}{attempt}"
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*large graph.*")
            return self.client.submit(_remote("grade_submission"), self.bundle,
                                      _payload(job, self.run_id),
                                      key=key, pure=False, retries=RETRIES)

    def outcome(self, job: grading._Job, future, expected) -> tuple[grading.Result, dict, dict]:
        """(result, graded files, what the worker said) of a finished future."""
        from distributed import KilledWorker

        try:
            out = future.result()
        except KilledWorker as exc:
            last = getattr(getattr(exc, "last_worker", None), "address", "?")
            return _crashed(job, expected, (
                f"its worker died {exc.allowed_failures + 1} times while grading it (the last "
                f"one: {last}; see the workers' logs); not recorded as graded: run the "
                "command again to retry it")), {}, {}
        except Exception as exc:
            if future.status == "cancelled":
                raise ClusterError(
                    f"lost the cluster while {job.student}/{job.assignment} was being graded "
                    f"({exc!r}): is the scheduler at {self.client.scheduler.address} still "
                    "running? Every grade merged so far stays; run the command again for the "
                    "rest") from exc
            return _crashed(job, expected, (
                f"grading failed on the cluster: {exc}; not recorded as graded: run the "
                "command again to retry it")), {}, {}
        return grading.Result(**out["result"]), out["graded"], out

    def stop(self, futures) -> None:
        """Ctrl-C: cancel what has not run, and kill what runs (best effort, briefly)."""
        try:
            self.client.cancel(list(futures), force=True)
        except Exception:  # noqa: S110 - the cluster may be gone already
            pass
        if self.bundle_key:
            t = threading.Thread(target=lambda: self.client.run(
                _remote("stop_sessions"), self.bundle_key, self.run_id, on_error="ignore"),
                daemon=True)
            t.start()
            t.join(15)


def grade(root: Path, assignment_ids: list[str], cluster: str, *,
          limits: grading.Limits | None = None, force: bool = False,
          progress: bool = True, log: Callable[[str], None] = print, sandboxed: bool = True,
          db: str | None = None, connect_timeout: float = 30.0,
          window: int | None = None, stats: dict | None = None) -> list[grading.Result]:
    """Like :func:`attn_course.grading.grade`, with the jobs run by the Dask cluster whose
    scheduler is at ``cluster`` (``tcp://host:8786``, or a scheduler file's path).
    ``stats``, when given, receives the run's timings (``prepare_s``: from the start to the
    first job sent; ``grade_s``: from then to the last result merged; ``merge_s``: merging
    results into the course, in all) and ``jobs``."""
    started = time.perf_counter()
    stats = {} if stats is None else stats
    stats.update(jobs=0, prepare_s=0.0, grade_s=0.0, merge_s=0.0)
    from distributed import Client, as_completed
    from tqdm.auto import tqdm

    root = Path(root).resolve()
    limits = limits or grading.Limits()
    grading._alembic_on_path()
    manifest = grading._load_manifest(root)
    jobs, unchanged = grading._jobs(root, assignment_ids, manifest, force, db)
    if unchanged:
        log(f"{unchanged} submissions unchanged since they were graded: kept")
    if not jobs:
        return grading._recorded(root, assignment_ids, manifest)
    main = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, grading._interrupt) if main else None
    where = {"scheduler_file": cluster} if Path(cluster).is_file() else {"address": cluster}
    try:
        try:
            client = Client(**where, timeout=connect_timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(f"cannot reach the Dask scheduler at {cluster}: {exc}") from None
        with client:
            _run(client, root, sorted({j.assignment for j in jobs}), jobs, manifest,
                 limits=limits, progress=progress, log=log, sandboxed=sandboxed, db=db,
                 wait_s=connect_timeout, window=window, tqdm=tqdm, as_completed=as_completed,
                 stats=stats, started=started)
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous_handler)
    return grading._recorded(root, assignment_ids, manifest)


def _run(client, root, ids, jobs, manifest, *, limits, progress, log, sandboxed, db, wait_s,
         window, tqdm, as_completed, stats, started) -> None:
    coordinator = Coordinator(client, root, ids, limits=limits, sandboxed=sandboxed, db=db,
                              log=log)
    coordinator.check_workers(wait_s)
    expected = coordinator.prepare(preload=len(jobs) > 2)
    try:
        previous = _allowed_failures(client, ALLOWED_FAILURES)
    except Exception as exc:  # a scheduler that refuses to run functions: its own setting
        previous = None
        log(f"could not set the scheduler's allowed-failures to {ALLOWED_FAILURES} ({exc!r}): "
            "a job whose worker dies is retried as often as the scheduler allows")
    bar = tqdm(total=len(jobs), desc="grading", unit="submission", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    waiting = list(reversed(jobs))
    window = window or max(4, 2 * coordinator.threads)
    futures: dict = {}
    suspects: dict[tuple[str, str], grading._Job] = {}

    def accept(job, result, graded) -> None:
        t = time.perf_counter()
        grading._merge(root, result, graded, expected[job.assignment], db)
        manifest[f"{job.assignment}/{job.student}"] = asdict(result)
        grading._save_manifest(root, manifest)
        stats["merge_s"] += time.perf_counter() - t

    def say(job, result) -> None:
        if result.status != "ok" or result.flags:
            bar.write(grading._problem_line(job, result))

    stats["jobs"] = len(jobs)
    stats["prepare_s"] = time.perf_counter() - started
    try:
        running = as_completed(loop=client.loop)
        while waiting and len(futures) < window:
            job = waiting.pop()
            fut = coordinator.submit(job)
            futures[fut] = job
            running.add(fut)
        for fut in running:
            job = futures.pop(fut)
            result, graded, info = coordinator.outcome(job, fut, expected[job.assignment])
            fut.release()
            if waiting:
                nxt = waiting.pop()
                new = coordinator.submit(nxt)
                futures[new] = nxt
                running.add(new)
            if info.get("changes"):  # unsandboxed: a file every grade depends on changed
                suspects[(job.assignment, job.student)] = job
                bar.write(f"changed during grading on {info['worker']}, and put back: "
                          + ", ".join(info["changes"][:5]) + f"; {job.student}/"
                          f"{job.assignment} will be regraded alone")
            if result.status == "limit" and not info.get("isolated", True):
                suspects.setdefault((job.assignment, job.student), job)
            accept(job, result, graded)
            say(job, result)
            bar.update(1)
        # Stopped at a limit on a worker without per-slot cgroups (a neighbour could have
        # starved it), or beside a change to the grading files: again, alone on the cluster.
        for n, (_, job) in enumerate(sorted(suspects.items(), key=lambda kv: kv[0])):
            fut = coordinator.submit(job, attempt=f"-alone{n}")
            futures[fut] = job
            result, graded, info = coordinator.outcome(job, fut, expected[job.assignment])
            futures.pop(fut)
            if info.get("changes"):
                result.flags.append(grading._changed_flag(info["changes"]))
            accept(job, result, graded)
            bar.write(grading._regraded_line(job, result))
    except BaseException:
        coordinator.stop(futures)
        raise
    finally:
        stats["grade_s"] = time.perf_counter() - started - stats["prepare_s"]
        bar.close()
        if previous is not None and previous != ALLOWED_FAILURES:
            try:
                _allowed_failures(client, previous)
            except Exception:  # noqa: S110 - the scheduler may be gone
                pass
        try:
            coordinator.bundle.release()
        except Exception:  # noqa: S110
            pass


# --------------------------------------------------------------------------- a cluster here


class LocalDask:
    """A scheduler and worker processes on this machine, started with the real ``dask
    scheduler`` and ``dask worker`` commands of this Python environment, on the loopback
    (for the tests and the benchmark; on a real cluster, start them as the instructor
    guide says). Each worker is its own ``dask worker --nworkers 1`` command, with a nanny
    that restarts its worker process if it dies. ``with LocalDask(folder, 2) as dask:
    dask.address``."""

    def __init__(self, folder: Path, workers: int, threads: int = 1,
                 env: dict[str, str] | None = None):
        self.folder, self.count, self.threads = Path(folder), workers, threads
        self.env = {**os.environ, **(env or {})}
        self.bin = Path(sys.executable).parent
        self.scheduler = None
        self.workers: list = []

    @property
    def scheduler_file(self) -> Path:
        return self.folder / "scheduler.json"

    @property
    def address(self) -> str:
        import json

        return json.loads(self.scheduler_file.read_text())["address"]

    def _start(self, argv: list[str], log: str):
        import subprocess

        out = open(self.folder / log, "ab")  # noqa: SIM115 - closed with the process
        try:
            return subprocess.Popen([str(self.bin / "dask"), *argv], stdout=out,
                                    stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)
        finally:
            out.close()

    def __enter__(self) -> LocalDask:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.scheduler_file.unlink(missing_ok=True)
        self.scheduler = self._start(
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(self.scheduler_file)], "scheduler.log")
        end = time.monotonic() + 60
        while not self.scheduler_file.exists():
            if self.scheduler.poll() is not None or time.monotonic() > end:
                self.close()
                raise ClusterError("the local dask scheduler did not start: "
                                   + (self.folder / "scheduler.log").read_text()[-2000:])
            time.sleep(0.1)
        for _ in range(self.count):
            self.add_worker()
        return self

    def add_worker(self, env: dict[str, str] | None = None):
        """One more ``dask worker`` command (``env``: added to its environment)."""
        k = len(self.workers)
        saved, self.env = self.env, {**self.env, **(env or {})}
        try:
            proc = self._start(
                ["worker", "--scheduler-file", str(self.scheduler_file), "--nworkers", "1",
                 "--nthreads", str(self.threads), "--no-dashboard", "--host", "127.0.0.1",
                 "--name", f"w{k}", "--local-directory", str(self.folder / f"w{k}")],
                f"worker{k}.log")
        finally:
            self.env = saved
        self.workers.append(proc)
        return proc

    def wait(self, client, n: int | None = None, timeout: float = 120) -> None:
        client.wait_for_workers(self.count if n is None else n, timeout=timeout)

    def close(self) -> None:
        """The workers (SIGTERM: a nanny closes its worker, which closes its sessions), then
        the scheduler; whatever is left of them after 30 s is killed."""
        for procs in (self.workers, [self.scheduler] if self.scheduler else []):
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            end = time.monotonic() + 30
            for proc in procs:
                try:
                    proc.wait(max(0.1, end - time.monotonic()))
                except Exception:  # noqa: S110 - killed below
                    pass
                try:  # the whole group: nanny, worker, and what the worker started
                    os.killpg(proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                proc.wait()

    def __exit__(self, *exc) -> None:
        self.close()
