"""The processes of a grading job.

Inside the job's nbgrader process:

- :class:`CheckpointExecute`: nbgrader's executor, checkpointing after every cell (the
  judging executor, :class:`attn_course.judge.JudgingExecute`, builds on it);
- :func:`zygote`: one process that imports nbgrader, torch and the grading package (every
  check, every reference) once and forks a fresh ``nbgrader autograde`` per submission, so
  that a job starts in milliseconds and judges its hidden tests with what it inherited.
  For one or two submissions it imports nbgrader only: each job then imports the checks
  while its kernel runs the notebook (:class:`attn_course.judge.JudgingExecute`).

On the parent's side (``attn_course.grading``): :class:`Zygote` drives that process, and
:func:`killpg` / :func:`kill_leftovers` stop a job and everything it started.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

from nbgrader.preprocessors import Execute

from attn_course.warm_kernels import stop_server

CHECKPOINT_ENV = "ATTN_GRADING_CHECKPOINT"
#: Every process of a job carries ``ATTN_GRADING_JOB=<token>`` (see :func:`kill_leftovers`).
JOB_ENV = "ATTN_GRADING_JOB"


class CheckpointExecute(Execute):
    """nbgrader's executor, writing the notebook to ``$ATTN_GRADING_CHECKPOINT`` after every
    cell, so that a run killed at a limit still shows which test cells ran and how."""

    def _checkpoint(self, last: int) -> None:
        path = os.environ.get(CHECKPOINT_ENV)
        if not path:
            return
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:  # dumps: the C encoder, 2-3x faster
            f.write(json.dumps({"last": last, "nb": self.nb}))
        os.replace(tmp, path)

    def preprocess_cell(self, cell, resources, index):
        if index == 0:
            self._checkpoint(-1)
        result = super().preprocess_cell(cell, resources, index)
        self._checkpoint(index)
        return result


def no_rfc3987() -> None:
    """jsonschema (imported by nbformat) builds a Lark grammar for IRIs at import when
    ``rfc3987_syntax`` is installed: about 2 s of CPU in every process, for a format that
    no notebook schema uses. jsonschema imports it under ``suppress(ImportError)``."""
    sys.modules.setdefault("rfc3987_syntax", None)


def _run_nbgrader(argv: list[str], cwd: str, env: dict, log_path: str, cap: int) -> int:
    if cap > 0:
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)
    sys.argv = ["nbgrader", *argv]
    from nbgrader.apps.nbgraderapp import main

    try:
        code = main()
    except SystemExit as exc:
        code = exc.code
    sys.stdout.flush()
    sys.stderr.flush()
    return code if isinstance(code, int) else (0 if code is None else 1)


def zygote(preload: bool = True) -> None:
    """Import nbgrader once, then fork one ``nbgrader <argv>`` per request.

    One JSON object per line. In, on stdin: ``{"id", "argv", "cwd", "env", "log", "cap"}``.
    Out, on stdout: ``{"id", "pid"}`` once forked (the child leads its own session, so
    ``killpg(pid)`` reaches it and its kernel) and ``{"id", "exit"}`` once it is reaped (as
    ``subprocess`` reports it: ``-N`` for a signal). Ends when stdin closes and every child
    has been reaped. Single-threaded, so forking is safe."""
    import select

    no_rfc3987()
    import importlib
    import pkgutil

    import nbconvert.preprocessors  # noqa: F401
    import nbgrader.apps.nbgraderapp  # noqa: F401 (imports every app)
    import nbgrader.preprocessors  # noqa: F401

    import attn_course.judge  # noqa: F401 (the judging executor)

    if preload:  # for a class: every job inherits torch, every check and reference
        import attn_grader

        for info in pkgutil.walk_packages(attn_grader.__path__, "attn_grader."):
            importlib.import_module(info.name)

    inp = sys.stdin.fileno()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    running: dict[int, object] = {}
    pending, reading = b"", True
    while reading or running:
        ready, _, _ = select.select([inp] if reading else [], [], [], 0.05)
        if ready:
            data = os.read(inp, 65536)
            reading = bool(data)
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                req = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    code = 70
                    try:
                        os.setsid()
                        out.close()
                        code = _run_nbgrader(req["argv"], req["cwd"], req["env"], req["log"],
                                             req["cap"])
                    except BaseException:
                        import traceback

                        traceback.print_exc()
                    finally:
                        os._exit(code)
                running[pid] = req["id"]
                out.write(json.dumps({"id": req["id"], "pid": pid}) + "\n")
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            job = running.pop(pid, None)
            if job is not None:
                out.write(json.dumps({"id": job, "exit": os.waitstatus_to_exitcode(status)})
                          + "\n")
    out.flush()
    os._exit(0)  # nothing to tear down: an interpreter holding torch takes a second to exit


# --------------------------------------------------------------------------- the parent's side


class Forked:
    """One nbgrader run forked by the zygote: ``pid`` leads its own process group."""

    def __init__(self):
        self.started, self.done = threading.Event(), threading.Event()
        self.pid = 0
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if not self.done.wait(timeout):
            raise subprocess.TimeoutExpired("nbgrader", timeout)
        return self.returncode


class Zygote:
    """A process that has imported nbgrader once and forks a fresh ``nbgrader autograde``
    per submission (:func:`zygote`): each job then starts in
    milliseconds instead of seconds of imports. Started after the files are remembered,
    so what it imported is what the guard holds."""

    def __init__(self, env: dict[str, str], preload: bool = True):
        self.proc = subprocess.Popen(
            [sys.executable, "-c",
             f"from attn_course.grading_job import zygote; zygote(preload={preload})"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.lock = threading.Lock()
        self.jobs: dict[int, Forked] = {}
        self.count = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.lock:
                job = self.jobs.get(msg["id"])
                if job is not None and "exit" in msg:
                    del self.jobs[msg["id"]]
            if job is None:
                continue
            if "pid" in msg:
                job.pid = msg["pid"]
                job.started.set()
            else:
                job.returncode = msg["exit"]
                job.done.set()
        with self.lock:  # the zygote is gone: nothing more will be reported
            lost, self.jobs = list(self.jobs.values()), {}
        for job in lost:
            job.returncode = -signal.SIGKILL if job.returncode is None else job.returncode
            job.started.set()
            job.done.set()

    def start(self, argv: list[str], cwd: Path, env: dict[str, str], log: Path,
              cap: int) -> Forked:
        job = Forked()
        with self.lock:
            self.count += 1
            self.jobs[self.count] = job
            request = {"id": self.count, "argv": argv, "cwd": str(cwd), "env": env,
                       "log": str(log), "cap": cap}
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        job.started.wait()
        if not job.pid:
            raise RuntimeError("the grading zygote died")
        return job

    def close(self) -> None:
        stop_server(self.proc)




def kill_leftovers(token: str) -> None:
    """Kill processes a job started that left its process group (``setsid``): they carry
    the job's token in their environment."""
    needle = f"{JOB_ENV}={token}".encode()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if needle in (proc / "environ").read_bytes().split(b"\0"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ValueError):
            continue


def killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
