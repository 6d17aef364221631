"""attn_course.warm_kernels: kernels forked from a server that has imported torch behave, for
the job that asked, like kernels started from scratch; and nothing they start outlives it.
Without a sandbox (as `attn-course grade --no-sandbox` runs them) and in one (the default)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from attn_course import grading_job, sandbox, warm_kernels

pytestmark = pytest.mark.slow
TOKEN_ENV = grading_job.JOB_ENV


def _slot(tmp_path, boxed: bool = False, **kw) -> warm_kernels.KernelSlot:
    env = {**os.environ, "MPLBACKEND": "agg"}
    folder = tmp_path / "s"
    box = sandbox.Sandbox(folder) if boxed else None
    slot = warm_kernels.KernelSlot(env, tmp_path / "c", folder, sandbox=box, mark=TOKEN_ENV,
                                   allow=list(sandbox.KERNEL_ENV) if boxed else None, **kw)
    slot.wait_ready()
    return slot


@pytest.fixture
def server(tmp_path):
    kernels = _slot(tmp_path)
    yield kernels
    kernels.close()


def _job_env(jupyter_path: str, token: str, **extra) -> dict[str, str]:
    return {**os.environ, "MPLBACKEND": "agg", "JUPYTER_PATH": jupyter_path,
            TOKEN_ENV: token, **extra}


class Kernel:
    """A kernel started as nbclient starts one (jupyter_client, by kernelspec name)."""

    def __init__(self, env: dict[str, str], cwd: Path):
        self.km = KernelManager(kernel_name=warm_kernels.KERNEL_NAME)
        self.km.kernel_spec_manager.kernel_dirs = [
            os.path.join(env["JUPYTER_PATH"], "kernels"),
            *self.km.kernel_spec_manager.kernel_dirs]
        self.km.start_kernel(env=env, cwd=str(cwd))
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str, timeout: float = 60) -> tuple[str, str]:
        """(stdout, the error's name)"""
        out, error = [], ""

        def hook(msg):
            nonlocal error
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                error = msg["content"]["ename"]

        self.kc.execute_interactive(code, timeout=timeout, output_hook=hook)
        return "".join(out).strip(), error

    def stop(self) -> None:
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _gone(pid: int, within: float = 5.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_warm_kernel_is_the_jobs_own(server, tmp_path):
    packages = tmp_path / "packages"
    (packages / "jobmod").mkdir(parents=True)
    (packages / "jobmod" / "__init__.py").write_text("WHO = 'the job'\n")
    cwd = tmp_path / "job"
    cwd.mkdir()
    env = _job_env(server.jupyter_path, "t-own", PYTHONPATH=str(packages), MARK="m-1")
    kernel = Kernel(env, cwd)
    try:
        out, error = kernel.run(
            "import sys, os, resource\n"
            "warm = 'torch' in sys.modules  # imported by the server, before any cell\n"
            "import jobmod, torch\n"
            "x = torch.randn(64, 64, requires_grad=True); (x @ x).sum().backward()\n"
            "print(warm, jobmod.WHO, os.environ['MARK'], os.getcwd(), tuple(x.grad.shape))")
        assert error == ""
        assert out == f"True the job m-1 {cwd} (64, 64)"
    finally:
        kernel.stop()


def test_interrupt_reaches_the_kernel(server, tmp_path):
    kernel = Kernel(_job_env(server.jupyter_path, "t-int"), tmp_path)
    try:
        # (stop_on_error=False: else the kernel aborts a request that arrives just after)
        kernel.kc.execute("import time; time.sleep(60)", stop_on_error=False)
        time.sleep(1.0)
        kernel.km.interrupt_kernel()
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=20)
            if msg["msg_type"] == "error":
                assert msg["content"]["ename"] == "KeyboardInterrupt"
                break
        reply = kernel.kc.execute_interactive("y = 6 * 7", user_expressions={"y": "y"},
                                              timeout=60)
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["user_expressions"]["y"]["data"]["text/plain"] == "42"
    finally:
        kernel.stop()


def test_a_job_kills_its_warm_kernel_and_what_escaped_its_group(server, tmp_path):
    kernel = Kernel(_job_env(server.jupyter_path, "t-kill"), tmp_path)
    try:
        out, _ = kernel.run(
            "import os, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.setsid(); time.sleep(300); os._exit(0)\n"
            "print(os.getpid(), pid)")
        kernel_pid, escaped = map(int, out.split())
        assert _alive(kernel_pid) and _alive(escaped)
        grading_job.kill_leftovers("t-kill")  # as a job's end does
        assert _gone(kernel_pid) and _gone(escaped)
    finally:
        kernel.stop()


def test_killing_the_launched_process_kills_the_kernel(server, tmp_path):
    kernel = Kernel(_job_env(server.jupyter_path, "t-client"), tmp_path)
    try:
        kernel_pid = int(kernel.run("import os; print(os.getpid())")[0])
        assert kernel_pid != kernel.km.provisioner.process.pid  # the kernel is forked elsewhere
        os.killpg(kernel.km.provisioner.process.pid, signal.SIGKILL)
        assert _gone(kernel_pid)
    finally:
        kernel.stop()


def test_closing_the_server_leaves_no_kernel(tmp_path):
    server = _slot(tmp_path)
    kernel = Kernel(_job_env(server.jupyter_path, "t-close"), tmp_path)
    try:
        kernel_pid = int(kernel.run("import os; print(os.getpid())")[0])
        server.close()
        assert server.proc.returncode == 0
        assert _gone(kernel_pid)
    finally:
        kernel.stop()


@pytest.mark.parametrize("case", ["no server", "another MPLBACKEND"])
def test_otherwise_the_kernel_starts_cold(server, tmp_path, case):
    extra = {"MPLBACKEND": "svg"} if case == "another MPLBACKEND" else {}
    if case == "no server":
        server.close()
    kernel = Kernel(_job_env(server.jupyter_path, "t-cold", **extra), tmp_path)
    try:
        out, error = kernel.run("import sys, os; print('torch' in sys.modules, os.getppid())")
        assert error == ""
        warm, parent = out.split()
        assert warm == "False"
        # exec'd in place of the launched process: jupyter_client's own child
        assert int(parent) == os.getpid()
    finally:
        kernel.stop()


# --------------------------------------------------------------------------- in a sandbox


def _boxed_kernel(slot, tmp_path, secret="s3cret") -> Kernel:
    folder = Path(slot.kernel_folder)
    for sub in ("home", "work", "runtime"):
        (folder / sub).mkdir(exist_ok=True)
    slot.write_spec({"HOME": str(folder / "home"), "JUPYTER_RUNTIME_DIR": str(folder / "runtime")},
                    cwd=str(folder / "work"))
    env = _job_env(slot.jupyter_path, "t-box", INSTRUCTOR_TOKEN=secret,
                   JUPYTER_RUNTIME_DIR=str(folder / "runtime"))
    kernel = Kernel.__new__(Kernel)
    kernel.km = KernelManager(kernel_name=warm_kernels.KERNEL_NAME, transport="ipc",
                              connection_file=str(folder / "runtime" / "kernel.json"))
    kernel.km.kernel_spec_manager.kernel_dirs = [
        os.path.join(env["JUPYTER_PATH"], "kernels"), *kernel.km.kernel_spec_manager.kernel_dirs]
    kernel.km.start_kernel(env=env, cwd=str(tmp_path))
    kernel.kc = kernel.km.client()
    kernel.kc.start_channels()
    kernel.kc.wait_for_ready(timeout=60)
    return kernel


@pytest.fixture
def boxed(tmp_path):
    if sandbox.probe():
        pytest.fail(f"no sandbox here: {sandbox.probe()}")  # .ci/run installs bubblewrap
    slot = _slot(tmp_path, boxed=True)
    yield slot
    slot.close()


def test_a_sandboxed_kernel_sees_its_folder_and_nothing_of_the_grader(boxed, tmp_path):
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    root = Path(__file__).resolve().parents[1]
    kernel = _boxed_kernel(boxed, tmp_path)
    try:
        out, error = kernel.run(
            "import os, sys, socket, resource\n"
            "warm = 'torch' in sys.modules\n"
            "import attn_utils\n"
            "try:\n"
            "    import attn_grader; grader = 'visible'\n"
            "except ImportError:\n"
            "    grader = 'hidden'\n"
            "s = socket.socket(); s.settimeout(3)\n"
            f"net = 'refused' if s.connect_ex(('127.0.0.1', {port})) else 'open'\n"
            f"print(warm, grader, net, os.path.exists({str(root / 'source')!r}), "
            f"os.path.exists({str(tmp_path / 'c')!r}), 'INSTRUCTOR_TOKEN' in os.environ, "
            "os.getcwd(), os.getpid() < 100, os.getuid(), "
            "resource.getrlimit(resource.RLIMIT_NPROC)[0])")
        assert error == ""
        work = Path(boxed.kernel_folder) / "work"
        assert out == (f"True hidden refused False False False {work} True {sandbox.SANDBOX_UID} "
                       f"{sandbox.MAX_PROCESSES}")
    finally:
        kernel.stop()
        listener.close()


def test_a_sandboxed_kernel_is_interrupted_and_its_slot_reset_kills_what_it_left(boxed,
                                                                                tmp_path):
    kernel = _boxed_kernel(boxed, tmp_path)
    try:
        kernel.run("import os, subprocess\n"
                   "if os.fork() == 0:\n"
                   "    os.setsid(); subprocess.Popen(['sleep', '4321.5']); os._exit(0)\n")
        kernel.kc.execute("import time; time.sleep(60)", stop_on_error=False)
        time.sleep(1.0)
        kernel.km.interrupt_kernel()
        while True:
            msg = kernel.kc.get_iopub_msg(timeout=20)
            if msg["msg_type"] == "error":
                assert msg["content"]["ename"] == "KeyboardInterrupt"
                break
    finally:
        kernel.stop()

    def sleepers():
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                if b"4321.5" in (proc / "cmdline").read_bytes():
                    found.append(proc.name)
            except OSError:
                pass
        return found

    assert sleepers()  # it outlived its kernel...
    assert boxed.reset()
    end = time.monotonic() + 5
    while sleepers() and time.monotonic() < end:
        time.sleep(0.05)
    assert not sleepers()  # ...but not the reset


def test_a_sandboxed_kernel_started_cold_keeps_the_sandbox_and_its_process_cap(boxed, tmp_path):
    warm_kernels.stop_server(boxed.proc)  # the server is gone: the next kernel starts cold
    kernel = _boxed_kernel(boxed, tmp_path)
    try:
        out, error = kernel.run(
            "import os, sys, resource\n"
            "try:\n"
            "    import attn_grader; grader = 'visible'\n"
            "except ImportError:\n"
            "    grader = 'hidden'\n"
            "print('torch' in sys.modules, grader, os.getuid(), "
            "resource.getrlimit(resource.RLIMIT_NPROC)[0])")
        assert error == ""
        assert out == f"False hidden {sandbox.SANDBOX_UID} {sandbox.MAX_PROCESSES}"
    finally:
        kernel.stop()
