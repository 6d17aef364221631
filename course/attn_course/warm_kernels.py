"""Kernels that start warm, each in the sandbox of its job's slot.

A cold kernel spends about 2 s of a 5-7 s submission starting Python and importing torch;
a forked one starts in a tenth of that. Grading keeps one *slot* per worker: a sandbox
(:mod:`attn_course.sandbox`) in which a server imports torch, numpy, matplotlib and
ipykernel once, then forks the kernel of each submission graded in that slot, one at a
time. Between two submissions the slot is reset: the server, PID 1 of the sandbox's PID
namespace, kills every other process in it and empties its ``/tmp``, and the grader
empties the slot's folder. So a kernel is still a new process with nothing of any other
submission in it: it is forked from a server that never runs notebook code, which the
student's code can neither signal (it is the namespace's init) nor inspect (it is not
dumpable).

The pieces, all in this file, which runs as a script and imports only the standard library
at the top (so that no course package is imported into a kernel):

- ``serve --fd N``: the server, listening on an inherited socket (whose file lives outside
  the sandbox, so that no kernel can reach or replace it). One JSON line per connection,
  with the client's standard streams passed along (``SCM_RIGHTS``): it forks a kernel,
  answers ``{"pid"}``, relays ``{"signal": n}`` lines to the kernel's process group, and
  answers ``{"exit"}`` when the kernel ends. When a client's connection closes first (the
  client was killed), it kills the kernel's process group. On its stdin: ``reset`` (kill
  everything else, answer ``clean``); end of input: stop.
- ``kernel SPEC ARGS...``: what the kernelspec runs in place of ``ipykernel_launcher``
  (:func:`kernelspec`), outside the sandbox, started by jupyter_client like any kernel. It
  hands its request to the slot's server, forwards signals, and exits as the kernel does.
  With no server to reach it starts a cold kernel, in the same sandbox when there is one:
  a warm kernel is only ever a faster path, never a weaker one.
- :class:`KernelSlot`: the grading side; starts, resets and stops a slot's server.
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
              "ipykernel.kernelapp", "ipykernel.ipkernel", "safetensors.torch", "cloudpickle")
_PER_KERNEL = {"PYTHONPATH", "MPLCONFIGDIR"}


# --------------------------------------------------------------------------- the server


def _read_at_import(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith(_READ_AT_IMPORT)
            and k not in _PER_KERNEL}


def _allowed(env: dict[str, str], allow: list[str] | None) -> dict[str, str]:
    if allow is None:
        return dict(env)
    return {k: v for k, v in env.items()
            if any(k == a or (a.endswith("_") and k.startswith(a)) for a in allow)}


#: An environment entry of the server's, overwritten in each kernel (:func:`_show_in_proc`).
_SLOT = "ATTN_WARM_KERNEL_SLOT"


def _show_in_proc(entry: str) -> None:
    """Write ``entry`` over the slot in this process's original environment block.

    That block is what ``/proc/PID/environ`` shows, for this process and for every process
    it forks; a forked kernel's ``os.environ`` lives elsewhere. So a job's token
    (``attn_course.grading_job.kill_leftovers``) is found on a kernel, and on whatever its
    code forks, as it is on a kernel that was exec'd."""
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        env_start = int(fields[47])  # field 50 of proc(5); the list starts at field 3
        with open("/proc/self/environ", "rb") as f:
            block = f.read()
    except OSError:
        return
    at = block.find(f"{_SLOT}=".encode())
    end = block.find(b"\0", at)
    data = entry.encode()
    if at < 0 or (at and block[at - 1]) or len(data) > end - at:
        return
    ctypes.memmove(env_start + at, data + b"\0" * (end - at - len(data)), end - at)


def _set_dumpable(flag: bool) -> None:
    """Whether processes of the same user may ptrace this one or read its memory."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(4, int(flag), 0, 0, 0)  # PR_SET_DUMPABLE
    except (OSError, AttributeError):
        pass


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _kill_everything_else() -> None:
    """As PID 1 of the sandbox: every other process in it. Else: nothing (the grader kills
    a job's leftovers by its token)."""
    if os.getpid() != 1:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    import shutil

    for entry in os.listdir("/tmp"):
        path = os.path.join("/tmp", entry)
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass


def _serve(fd: int, mark: str, allow: list[str] | None, nproc: int | None = None) -> None:
    import importlib
    import random
    import resource
    import select

    for name in _PRELOADED:
        importlib.import_module(name)
    import numpy as np

    sandboxed = os.getpid() == 1
    if sandboxed:
        _set_dumpable(False)
    if nproc:  # a fork bomb stays in its slot even where there are no cgroups
        resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    # Python's own path entries, without the folder of this script and the server's
    # PYTHONPATH: each kernel puts its job's PYTHONPATH in front of them.
    ours = {os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p}
    base_path = [p for p in sys.path[1:] if p and os.path.abspath(p) not in ours]
    settings = _read_at_import(os.environ)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the grading parent's to handle
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    listener = socket.socket(fileno=fd)
    listener.setblocking(True)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    kernels: dict[int, socket.socket] = {}  # kernel pid -> its client's connection
    conns: dict[socket.socket, int] = {}
    pending: dict[socket.socket, bytes] = {}
    stdin_open = True

    def start(conn: socket.socket) -> None:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while not msg.endswith(b"\n"):
            more = conn.recv(1 << 16)
            if not more:
                raise ValueError("the request ended early")
            msg += more
        req = json.loads(msg)
        env = _allowed(req["env"], allow)
        differ = sorted(set(settings.items()) ^ set(_read_at_import(env).items()))
        if differ or len(fds) != 3:
            for fd_ in fds:
                os.close(fd_)
            reason = f"{differ[0][0]} differs" if differ else "no standard streams"
            conn.sendall(json.dumps({"cold": reason}).encode() + b"\n")
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid:
            for fd_ in fds:
                os.close(fd_)
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
            for target, fd_ in enumerate(fds):
                os.dup2(fd_, target)
            os.closerange(3, 1 << 16)
            _set_dumpable(True)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            resource.setrlimit(resource.RLIMIT_AS, tuple(req["rlimit_as"]))
            if env.get(mark):
                _show_in_proc(f"{mark}={env[mark]}")
            os.chdir(req["cwd"])
            os.environ.clear()
            os.environ.update(env)
            extra = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
            sys.path[:] = extra + base_path
            random.seed()
            np.random.seed()
            sys.argv = ["ipykernel_launcher", *req["argv"]]
            # (the parent poller would take PID 1, the sandbox's server, for a dead parent;
            # there the server kills the kernel when its client goes)
            if sandboxed:  # 1: no poller, and no console banner
                sys.argv.append("--IPKernelApp.parent_handle=1")
            elif os.environ.get("JPY_PARENT_PID"):  # read at import: too early
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

    def client_says(conn: socket.socket) -> bool:
        """Handle what a kernel's client sent; False when it has gone."""
        data = conn.recv(4096)
        if not data:
            return False
        pending[conn] = pending.get(conn, b"") + data
        while b"\n" in pending[conn]:
            line, pending[conn] = pending[conn].split(b"\n", 1)
            try:
                signum = int(json.loads(line)["signal"])
            except (ValueError, KeyError, TypeError):
                continue
            pid = conns.get(conn)
            if pid and signum in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL, signal.SIGHUP,
                                  signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
                try:
                    os.killpg(pid, signum)
                except (ProcessLookupError, PermissionError):
                    pass
        return True

    while stdin_open or kernels:
        watched = [*conns] + ([listener, sys.stdin] if stdin_open else [])
        ready, _, _ = select.select(watched, [], [], 0.05)
        for r in ready:
            if r is sys.stdin:
                line = sys.stdin.readline()
                stdin_open = bool(line)
                if not stdin_open:
                    listener.close()
                elif line.strip() == "reset":
                    for pid, conn in list(kernels.items()):
                        _kill_group(pid)
                        if not sandboxed:
                            os.waitpid(pid, 0)
                        try:
                            conn.sendall(json.dumps({"exit": -signal.SIGKILL}).encode() + b"\n")
                        except OSError:
                            pass
                        conn.close()
                    kernels.clear()
                    conns.clear()
                    pending.clear()
                    _kill_everything_else()
                    sys.stdout.write("clean\n")
                    sys.stdout.flush()
            elif r is listener:
                if stdin_open:
                    conn, _ = listener.accept()
                    try:
                        start(conn)
                    except (OSError, ValueError, KeyError) as exc:
                        print(f"warm kernels: a request failed: {exc!r}", file=sys.stderr)
                        conn.close()
            elif r in conns and not client_says(r):  # the client is gone: so is its kernel
                _kill_group(conns.pop(r))
                pending.pop(r, None)
                r.close()
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            conn = kernels.pop(pid, None)
            if conn is not None:
                conns.pop(conn, None)
                pending.pop(conn, None)
                try:
                    conn.sendall(json.dumps(
                        {"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
                except OSError:
                    pass
                conn.close()
        if not stdin_open and not ready:
            for pid in kernels:  # the grading run is over: nothing may outlive it
                _kill_group(pid)
            _kill_everything_else()
    sys.stdout.flush()
    os._exit(0)  # nothing to tear down: an interpreter holding torch takes a second to exit


# --------------------------------------------------------------------------- the client


def _cold(spec: dict, argv: list[str], why: str) -> None:
    """An ordinary ipykernel, in the slot's sandbox when there is one."""
    if spec.get("socket"):
        print(f"warm kernels: starting cold ({why})", file=sys.stderr, flush=True)
    command = [sys.executable, "-m", "ipykernel_launcher", *argv]
    prefix = spec.get("cold")
    if not prefix:
        os.execv(sys.executable, command)
    if spec.get("nproc"):  # the cap the warm server would have set (see _serve)
        command[1:3] = ["-c", "import resource, runpy; "
                        f"resource.setrlimit(resource.RLIMIT_NPROC, ({spec['nproc']:d},) * 2); "
                        "runpy.run_module('ipykernel_launcher', run_name='__main__', "
                        "alter_sys=True)"]
    # the sandbox's init is PID 1: no parent poller (the client kills the sandbox instead)
    command.append("--IPKernelApp.parent_handle=1")
    env = _allowed({**os.environ, **spec.get("env", {})}, spec.get("allow"))
    args = list(prefix)
    for key, value in sorted(env.items()):
        args += ["--setenv", key, value]
    args += ["--chdir", spec.get("cwd") or os.getcwd(), "--", *command]
    os.execv(args[0], args)


def _client(spec_path: str, argv: list[str]) -> None:
    import resource

    with open(spec_path, encoding="utf-8") as f:
        spec = json.load(f)
    for procs in spec.get("cgroups") or []:  # a cold kernel stays within the slot's limits
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    try:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(spec["socket"])
        env = {**os.environ, **spec.get("env", {})}
        request = {"argv": argv, "cwd": spec.get("cwd") or os.getcwd(), "env": env,
                   "rlimit_as": list(resource.getrlimit(resource.RLIMIT_AS))}
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
        reply = conn.makefile("rb")
        answer = json.loads(reply.readline())
        if "pid" not in answer:
            raise ValueError(answer.get("cold", "no pid"))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # no server, or told to go cold
        _cold(spec, argv, str(exc))
        return

    def forward(signum, frame):
        try:
            conn.sendall(json.dumps({"signal": signum}).encode() + b"\n")
        except OSError:
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


def kernelspec(folder: os.PathLike, spec_path: str, script: str | None = None) -> str:
    """Write the warm kernel's kernelspec under ``folder/kernels`` (a folder for
    ``JUPYTER_PATH``); return its name."""
    spec = os.path.join(os.fspath(folder), "kernels", KERNEL_NAME)
    os.makedirs(spec, exist_ok=True)
    with open(os.path.join(spec, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump({"argv": [sys.executable, "-S", script or os.path.abspath(__file__),
                            "kernel", spec_path, "-f", "{connection_file}"],
                   "display_name": "Python 3 (warm, for grading)", "language": "python"}, f)
    return KERNEL_NAME


class KernelSlot:
    """One slot: a server forking kernels, sandboxed when ``sandbox`` is given.

    ``folder`` is the grader's own (the control socket, the kernelspec: never shown to a
    kernel); ``kernel_folder`` is the job side (what the sandbox shows, writable).
    ``env`` is the environment the jobs get (imports see the same settings); ``allow`` the
    names a kernel may see (None: all). Call :meth:`wait_ready` before the first job (slots
    are started from one thread, which must outlive them: bwrap's ``--die-with-parent``
    follows the thread that started it, and several slots import torch side by side).
    :meth:`reset` makes it ready for the next job; :meth:`close` kills every kernel still
    running, and the server."""

    def __init__(self, env: dict[str, str], folder: os.PathLike, kernel_folder: os.PathLike,
                 sandbox=None, mark: str = "", allow: list[str] | None = None,
                 script: str | None = None, warm: bool = True, cgroups=None):
        self.folder = os.fspath(folder)
        self.kernel_folder = os.fspath(kernel_folder)
        os.makedirs(self.folder, exist_ok=True)
        os.makedirs(self.kernel_folder, exist_ok=True)
        self.sandbox, self.allow, self.cgroups = sandbox, allow, cgroups
        self.script = script or os.path.abspath(__file__)
        if sandbox is not None and not any(
                self.script.startswith(str(p) + os.sep) for p in sandbox.shown()):
            import shutil  # the sandbox must see the server's script: a read-only copy

            kit = self.folder + "-kit"
            os.makedirs(kit, exist_ok=True)
            self.script = shutil.copy2(self.script, os.path.join(kit, "warm_kernels.py"))
            sandbox.readonly.append(kit)
        self.jupyter_path = os.path.join(self.folder, "jupyter")
        self.spec_path = os.path.join(self.folder, "kernel-spec.json")
        self.socket_path = os.path.join(self.folder, "warm-kernels.sock")
        self.env = {**env, _SLOT: "." * 240}
        self.mark = mark
        self.proc: subprocess.Popen | None = None
        self.cold_reason = ""
        if warm:
            try:
                self._start_server()
            except OSError as exc:
                self.cold_reason = str(exc)
        kernelspec(self.jupyter_path, self.spec_path, self.script)
        self.write_spec({})

    def wait_ready(self) -> None:
        """Wait for the server to have imported everything (or note why it could not: the
        next kernels then start cold)."""
        if self.proc is not None and self.proc.stdout.readline().strip() != b"ready":
            self.close()
            self.proc = None
            self.cold_reason = "the warm-kernel server did not start"
            self.write_spec({})

    def _start_server(self) -> None:
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.socket_path)
        listener.listen(64)
        try:
            command = [sys.executable, self.script, "serve", "--fd", str(listener.fileno()),
                       "--mark", self.mark, "--allow", json.dumps(self.allow)]
            if self.sandbox is not None:
                command += ["--nproc", str(self.sandbox.max_processes)]
                command = self.sandbox.argv(command, self.env, pid1=True)
            self.proc = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self.env,
                pass_fds=[listener.fileno()],
                preexec_fn=self.cgroups.join if self.cgroups else None)  # noqa: PLW1509
        finally:
            listener.close()

    def write_spec(self, kernel_env: dict[str, str], cwd: str | None = None) -> None:
        """What the next kernel of this slot gets: extra environment (its home, IPython
        folder...) and its working folder."""
        cold, nproc = None, None
        if self.sandbox is not None:
            full = self.sandbox.argv(["true"], {}, chdir=None)
            cold, nproc = full[:full.index("--chdir")], self.sandbox.max_processes
        with open(self.spec_path, "w", encoding="utf-8") as f:
            json.dump({"socket": self.socket_path if self.proc else None, "cold": cold,
                       "nproc": nproc,
                       "allow": self.allow, "env": kernel_env, "cwd": cwd,
                       "cgroups": self.cgroups.procs_files if self.cgroups else []}, f)

    def reset(self, timeout: float = 30) -> bool:
        """Kill everything the last job left in the slot. False if the server is gone (the
        next kernels then start cold, still sandboxed)."""
        if self.proc is None or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(b"reset\n")
            self.proc.stdin.flush()
        except OSError:
            return False
        import select

        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return bool(ready) and self.proc.stdout.readline().strip() == b"clean"

    def close(self) -> None:
        if self.proc is not None:
            stop_server(self.proc)
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        if self.cgroups is not None:
            self.cgroups.close()


def _serve_main(args: list[str]) -> None:
    fd = int(args[args.index("--fd") + 1])
    mark = args[args.index("--mark") + 1] if "--mark" in args else ""
    allow = json.loads(args[args.index("--allow") + 1]) if "--allow" in args else None
    nproc = int(args[args.index("--nproc") + 1]) if "--nproc" in args else None
    _serve(fd, mark, allow, nproc)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        _serve_main(sys.argv[2:])
    else:
        _client(sys.argv[2], sys.argv[3:])
