"""Kernels that start warm: a server imports torch, numpy, matplotlib and ipykernel once,
then forks a fresh kernel for every submission that is graded.

A cold kernel spends about 2 s of a 5-7 s submission starting Python and importing torch;
a forked one starts in a tenth of that. Each kernel is still a new process with nothing of
any other submission in it: it is forked from a server that never runs notebook code.

The pieces, all in this file, which runs as a script and imports only the standard library
at the top (so that no course package is imported into a kernel):

- ``serve SOCKET``: the server. One JSON line per connection, with the connecting
  client's standard streams passed along (``SCM_RIGHTS``); it forks a kernel, answers
  ``{"pid"}``, and ``{"exit"}`` when the kernel ends. When a client's connection closes
  first (the client was killed), it kills the kernel's process group.
- ``kernel SOCKET ARGS...``: what the kernelspec runs in place of ``ipykernel_launcher``
  (:func:`kernelspec`). Started by jupyter_client like any kernel (its own session, the
  job's environment and memory cap), it hands all of that to a forked kernel, forwards
  signals to it, and exits as it does. With no server to reach it becomes an ordinary
  ``ipykernel_launcher``: a warm kernel is only ever a faster path, never a requirement.
- :class:`WarmKernels`: the grading side; starts and stops the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

#: The name of the kernelspec: the usual one, so that jupyter_client treats it as IPython
#: (nbclient keeps its history in memory) and a job's ``JUPYTER_PATH`` puts it first.
KERNEL_NAME = "python3"
#: Settings read while those modules are imported: a kernel is only served warm when the
#: job's values are the server's (else it starts cold). PYTHONPATH is applied per kernel.
_READ_AT_IMPORT = ("PYTHON", "MPL", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH", "PYTORCH",
                   "CUDA", "IPYKERNEL", "QT_", "LANG", "LC_")
_PRELOADED = ("torch", "numpy", "matplotlib", "matplotlib.pyplot", "tqdm.auto",
              "ipykernel.kernelapp", "ipykernel.ipkernel")


# --------------------------------------------------------------------------- the server


def _read_at_import(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_READ_AT_IMPORT) and k != "PYTHONPATH"}


#: An environment entry of the server's, overwritten in each kernel (:func:`_show_in_proc`).
_SLOT = "ATTN_WARM_KERNEL_SLOT"


def _show_in_proc(entry: str) -> None:
    """Write ``entry`` over the slot in this process's original environment block.

    That block is what ``/proc/PID/environ`` shows, for this process and for every process
    it forks; a forked kernel's ``os.environ`` lives elsewhere. So a job's token
    (``attn_course.grading_job.kill_leftovers``) is found on a kernel, and on whatever its
    code forks, as it is on a kernel that was exec'd."""
    import ctypes

    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    env_start = int(fields[47])  # field 50 of proc(5); the list starts at field 3
    with open("/proc/self/environ", "rb") as f:
        block = f.read()
    at = block.find(f"{_SLOT}=".encode())
    end = block.find(b"\0", at)
    data = entry.encode()
    if at < 0 or (at and block[at - 1]) or len(data) > end - at:
        return
    ctypes.memmove(env_start + at, data + b"\0" * (end - at - len(data)), end - at)


def _serve(path: str, mark: str) -> None:
    import importlib
    import random
    import resource
    import select

    for name in _PRELOADED:
        importlib.import_module(name)
    import numpy as np

    # Python's own path entries, without the folder of this script and the server's
    # PYTHONPATH: each kernel puts its job's PYTHONPATH in front of them.
    ours = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base_path = [p for p in sys.path[1:] if p and os.path.abspath(p) not in ours]
    settings = _read_at_import(os.environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the grading parent's to handle

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    kernels: dict[int, socket.socket] = {}  # kernel pid -> its client's connection
    conns: dict[socket.socket, int] = {}
    stdin_open = True

    def start(conn: socket.socket) -> None:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while not msg.endswith(b"\n"):
            more = conn.recv(1 << 16)
            if not more:
                raise ValueError("the request ended early")
            msg += more
        req = json.loads(msg)
        differ = sorted(set(settings.items()) ^ set(_read_at_import(req["env"]).items()))
        if differ:
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"cold": f"{differ[0][0]} differs"}).encode() + b"\n")
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            for fd in fds:
                os.close(fd)
            kernels[pid], conns[conn] = conn, pid
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            return
        code = 1
        try:
            os.setsid()  # as jupyter_client starts a kernel: its own group, for signals
            listener.close()
            for other in conns:
                other.close()
            conn.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                os.close(fd)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_AS, tuple(req["rlimit_as"]))
            if req["env"].get(mark):
                _show_in_proc(f"{mark}={req['env'][mark]}")
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(req["env"])
            extra = [p for p in req["env"].get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[:] = extra + base_path
            random.seed()
            np.random.seed()
            sys.argv = ["ipykernel_launcher", *req["argv"]]
            if os.environ.get("JPY_PARENT_PID"):  # read when ipykernel was imported: too early
                sys.argv.append(f"--IPKernelApp.parent_handle={os.environ['JPY_PARENT_PID']}")
            from ipykernel import kernelapp

            kernelapp.launch_new_instance()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    while stdin_open or kernels:
        watched = [*conns] + ([listener, sys.stdin] if stdin_open else [])
        ready, _, _ = select.select(watched, [], [], 0.05)
        for r in ready:
            if r is sys.stdin:
                stdin_open = bool(os.read(sys.stdin.fileno(), 4096))
                if not stdin_open:
                    listener.close()
            elif r is listener:
                if stdin_open:
                    conn, _ = listener.accept()
                    try:
                        start(conn)
                    except (OSError, ValueError) as exc:
                        print(f"warm kernels: a request failed: {exc!r}", file=sys.stderr)
                        conn.close()
            elif r in conns and not r.recv(4096):  # the client is gone: so is its kernel
                _kill_group(conns.pop(r))
                r.close()
        while kernels:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = kernels.pop(pid, None)
            if conn is not None:
                conns.pop(conn, None)
                try:
                    conn.sendall(json.dumps(
                        {"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                conn.close()
        if not stdin_open and not ready:
            for pid in kernels:  # the grading run is over: nothing may outlive it
                _kill_group(pid)


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --------------------------------------------------------------------------- the client


def _client(path: str, argv: list[str]) -> None:
    import resource

    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(path)
        request = {"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ),
                   "rlimit_as": list(resource.getrlimit(resource.RLIMIT_AS))}
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reply = conn.makefile("rb")
        pid = json.loads(reply.readline())["pid"]
    except (OSError, ValueError, KeyError):  # no server: an ordinary kernel
        os.execv(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *argv])

    def forward(signum, frame):
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT,
                   signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    line = reply.readline()
    code = json.loads(line)["exit"] if line else 1
    if code < 0:  # end as the kernel did, by the same signal
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


# --------------------------------------------------------------------------- grading's side


def stop_server(proc: subprocess.Popen, timeout: float = 30) -> None:
    """End a server that finishes when its stdin closes (this one, the nbgrader zygote):
    close it, wait, and kill it if it has not finished within ``timeout`` seconds."""
    try:
        proc.stdin.close()
    except OSError:
        pass
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kernelspec(folder: os.PathLike, socket_path: str) -> str:
    """Write the warm kernel's kernelspec under ``folder/kernels`` (a folder for
    ``JUPYTER_PATH``); return its name."""
    spec = os.path.join(os.fspath(folder), "kernels", KERNEL_NAME)
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump({"argv": [sys.executable, "-S", os.path.abspath(__file__), "kernel",
                            socket_path, "-f", "{connection_file}"],
                   "display_name": "Python 3 (warm, for grading)", "language": "python"}, f)
    return KERNEL_NAME


class WarmKernels:
    """The server's process, for one grading run.

    ``WarmKernels(env, folder, mark)`` starts it with the environment the jobs get (so that
    imports see the same settings), listening on a socket in ``folder``, and writes the
    kernelspec under ``jupyter_path`` (for a job's ``JUPYTER_PATH``). Each kernel shows its
    job's ``mark`` variable in ``/proc`` (:func:`_show_in_proc`). :meth:`close` kills every
    kernel still running, and the server."""

    def __init__(self, env: dict[str, str], folder: os.PathLike, mark: str = ""):
        socket_path = os.path.join(os.fspath(folder), "warm-kernels.sock")
        self.jupyter_path = os.path.join(os.fspath(folder), "jupyter")
        self.proc = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "serve", socket_path, mark],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**env, _SLOT: "." * 240})
        if self.proc.stdout.readline().strip() != b"ready":
            self.close()
            raise RuntimeError("the warm-kernel server did not start")
        kernelspec(self.jupyter_path, socket_path)

    def close(self) -> None:
        stop_server(self.proc)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve(sys.argv[2], sys.argv[3])
    else:
        _client(sys.argv[2], sys.argv[3:])
