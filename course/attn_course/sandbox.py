"""Where a submission's code runs while it is graded: a bubblewrap sandbox.

``bwrap`` (https://github.com/containers/bubblewrap, Debian's ``bubblewrap``) starts a
process in new user, mount, PID, network, IPC and UTS namespaces, with no capabilities:

- the network namespace is empty but for its own loopback, so the student's code cannot
  reach the network, nor the grading machine's loopback (PostgreSQL, Jupyter, a Dask
  scheduler...);
- the file system is a fresh one: the system's programs and libraries, the Python install
  and the virtual environment, read-only; the student-side helper package ``attn_utils``,
  read-only; one writable folder for the job (:attr:`Sandbox.slot`) and a private ``/tmp``.
  Nothing else: not the course (``source/`` with the hidden tests, ``submitted/``,
  ``autograded/``, the gradebook), not the grading package, not the instructor's home;
- its own PID namespace: it sees and signals only its own processes, and everything in it
  dies with the sandbox;
- the environment holds only what a kernel needs (:data:`KERNEL_ENV`), never the
  instructor's tokens or passwords.

Kernels talk to the grader over ZeroMQ IPC sockets in the job's folder, which both sides
see at the same path (TCP would need a shared network).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

#: Environment variables a kernel may see (exact names, or prefixes ending in ``_``).
KERNEL_ENV = ("PATH", "LANG", "LANGUAGE", "TZ", "TERM", "HOME", "USER", "LOGNAME", "SHELL",
              "PYTHONPATH", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED",
              "PYTHONIOENCODING", "MPLBACKEND", "MPLCONFIGDIR", "IPYTHONDIR",
              "JUPYTER_RUNTIME_DIR", "JUPYTER_CONFIG_DIR", "JUPYTER_DATA_DIR", "JPY_PARENT_PID",
              "JPY_SESSION_NAME", "NBGRADER_EXECUTION", "PYDEVD_DISABLE_FILE_VALIDATION",
              "LC_", "OMP_", "MKL_", "OPENBLAS_", "KMP_", "TORCH_", "PYTORCH_", "CUDA_",
              "ATTN_")
#: /etc files programs read at start (the dynamic linker, time zone, users, fonts).
_ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "passwd", "group",
        "nsswitch.conf", "hosts", "fonts", "alternatives", "mime.types", "matplotlibrc")
_ROOT_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
#: The uid the student's code has inside (never 0: a uid-0 process regains capabilities in
#: its user namespace when it runs a program).
SANDBOX_UID = 1000
#: Processes and threads a slot may hold at once: its cgroup's ``pids.max`` and, for a
#: grader that is not root (root is exempt from it), the kernels' ``RLIMIT_NPROC``, which
#: counts per user namespace.
MAX_PROCESSES = 512


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot create namespaces here."""


def kernel_env(env: dict[str, str]) -> dict[str, str]:
    """The part of ``env`` a sandboxed kernel may see."""
    keep = {}
    for key, value in env.items():
        if any(key == name or (name.endswith("_") and key.startswith(name))
               for name in KERNEL_ENV):
            keep[key] = value
    return keep


def _readable_roots() -> list[Path]:
    """Folders the kernel's Python needs, read-only: the interpreter and its standard
    library, the virtual environment, and the site-packages on its path."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix),
             Path(sys.executable).resolve().parent.parent}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(Path(path))
    out = []
    for r in sorted({p.resolve() for p in roots if p.exists()}, key=lambda p: len(p.parts)):
        if not any(r == o or o in r.parents for o in out) and r != Path("/usr"):
            out.append(r)
    return out


def _package_dir(name: str) -> Path | None:
    import importlib.util

    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve()


@dataclass
class Sandbox:
    """The bwrap command line for one job folder (``slot``, writable, same path inside)."""

    slot: Path
    readonly: list[Path] = field(default_factory=list)  # more folders to show, read-only
    bwrap: str = field(default_factory=lambda: find_bwrap() or "bwrap")
    max_processes: int = MAX_PROCESSES  # RLIMIT_NPROC of its kernels (set by warm_kernels)

    def hidden_packages(self) -> list[Path]:
        """The grading and instructor packages, wherever they are installed: hidden even
        where a read-only folder shown to the kernel contains them (site-packages)."""
        return [p for p in map(_package_dir, ("attn_grader", "attn_course")) if p]

    def shown(self) -> list[Path]:
        shown = _readable_roots()
        helpers = _package_dir("attn_utils")
        if helpers and not any(helpers == s or s in helpers.parents for s in shown):
            shown.append(helpers)
        shown += [Path(p).resolve() for p in self.readonly]
        return shown

    def argv(self, command: list[str], env: dict[str, str], *, pid1: bool = False,
             chdir: Path | None = None) -> list[str]:
        """``bwrap ... command``, running with exactly ``kernel_env(env)``."""
        args = [self.bwrap, "--unshare-all", "--unshare-user", "--uid", str(SANDBOX_UID),
                "--gid", str(SANDBOX_UID), "--die-with-parent", "--new-session",
                "--cap-drop", "ALL", "--hostname", "grader", "--clearenv"]
        if pid1:
            args.append("--as-pid-1")
        # the new root's own folders first: a later mount on top of them wins
        args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--ro-bind", "/usr", "/usr"]
        for name in _ROOT_LINKS:
            path = Path("/") / name
            if path.is_symlink():
                args += ["--symlink", os.readlink(path), str(path)]
            elif path.is_dir():
                args += ["--ro-bind", str(path), str(path)]
        for name in _ETC:
            path = Path("/etc") / name
            if path.exists():
                args += ["--ro-bind", str(path), str(path)]
        for path in self.shown():
            if not str(path).startswith("/usr/"):
                args += ["--ro-bind", str(path), str(path)]
        for path in self.hidden_packages():
            if any(path == s or s in path.parents for s in self.shown()):
                args += ["--tmpfs", str(path)]
        args += ["--bind", str(self.slot), str(self.slot)]
        for key, value in sorted(kernel_env(env).items()):
            args += ["--setenv", key, value]
        args += ["--chdir", str(chdir or self.slot)]
        return args + ["--", *command]


def find_bwrap() -> str | None:
    return shutil.which("bwrap")


def probe(bwrap: str | None = None) -> str | None:
    """Why no sandbox can be made here (None when it can): bwrap starts a process in the
    namespaces a grading job needs."""
    bwrap = bwrap or find_bwrap()
    if not bwrap:
        return ("bubblewrap (`bwrap`) is not installed. Install it (Debian/Ubuntu: "
                "`sudo apt-get install bubblewrap`; Fedora: `sudo dnf install bubblewrap`), "
                "or grade without a sandbox with --no-sandbox (student code then runs with "
                "your permissions and your network)")
    import tempfile

    with tempfile.TemporaryDirectory(prefix="attn-probe-") as tmp:
        box = Sandbox(Path(tmp), bwrap=bwrap)
        try:
            proc = subprocess.run(box.argv([sys.executable, "-S", "-c", "print('ok')"],
                                           dict(os.environ)),
                                  capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start: {exc}"
    if proc.returncode != 0 or proc.stdout.strip() != "ok":
        hint = ""
        if "namespace" in proc.stderr or "Operation not permitted" in proc.stderr:
            hint = (" — user namespaces look disabled or restricted here (check "
                    "`sysctl kernel.unprivileged_userns_clone` and, on Ubuntu 24.04+, "
                    "`kernel.apparmor_restrict_unprivileged_userns`; in a container, allow "
                    "user namespaces, see the instructor guide)")
        return f"bubblewrap failed (exit {proc.returncode}): {proc.stderr.strip()[:500]}{hint}"
    return None


# --------------------------------------------------------------------------- slot limits


class SlotCgroups:
    """A slot's processes in cgroups of their own, where this machine lets us make them: at
    most ``pids`` processes (a fork bomb stays in its slot), an equal share of the CPU
    whatever the number of processes (so it cannot starve the other slots' jobs), and at most
    ``memory`` bytes in all (a memory cap per process is not enough against many processes).

    cgroup v1 hierarchies (``/sys/fs/cgroup/<controller>``) and a delegated cgroup v2 tree
    are both used when writable; :attr:`controllers` says which took. Processes join with
    :meth:`join` (from inside the process, before it execs or forks anything)."""

    def __init__(self, name: str, pids: int = MAX_PROCESSES, memory: int | None = None):
        self.name = name
        self.dirs: list[Path] = []
        self.controllers: list[str] = []
        limits = {"pids": [("pids.max", str(pids))], "cpu": [],
                  "memory": [("memory.limit_in_bytes", str(memory))] if memory else []}
        for controller, path in _own_cgroups().items():
            if controller not in limits:
                continue
            folder = Path("/sys/fs/cgroup") / controller / path.lstrip("/") / name
            if self._make(folder, limits[controller]):
                self.controllers.append(controller)
        unified = _own_cgroups().get("")
        if unified is not None and Path("/sys/fs/cgroup/cgroup.controllers").exists():
            folder = Path("/sys/fs/cgroup") / unified.lstrip("/") / name
            v2 = [("pids.max", str(pids))] + ([("memory.max", str(memory))] if memory else [])
            if self._make(folder, v2, require=("pids.max",)):
                self.controllers.append("v2")

    def _make(self, folder: Path, settings, require=()) -> bool:
        try:
            folder.mkdir(exist_ok=True)
        except OSError:
            return False
        try:
            for file, value in settings:
                (folder / file).write_text(value)
            if any(not (folder / r).exists() for r in require):
                raise OSError("controller missing")
        except OSError:
            try:
                folder.rmdir()
            except OSError:
                pass
            return False
        self.dirs.append(folder)
        return True

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def join(self) -> None:
        for path in self.procs_files:
            try:
                with open(path, "w") as f:
                    f.write(str(os.getpid()))
            except OSError:
                pass

    def close(self) -> None:
        for folder in self.dirs:
            try:
                folder.rmdir()
            except OSError:
                pass


def _own_cgroups() -> dict[str, str]:
    """controller -> this process's cgroup path ('' for the cgroup v2 tree)."""
    found = {}
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in (parts[1].split(",") if parts[1] else [""]):
            found[controller] = parts[2]
    return found
