"""attn_course.warm_kernels: kernels forked from a server that has imported torch behave, for
the job that asked, like kernels started from scratch; and nothing they start outlives it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

from attn_course import grading_job, warm_kernels

pytestmark = pytest.mark.slow
TOKEN_ENV = grading_job.JOB_ENV


@pytest.fixture
def server(tmp_path):
    env = {**os.environ, "MPLBACKEND": "agg"}
    kernels = warm_kernels.WarmKernels(env, tmp_path, mark=TOKEN_ENV)
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
    server = warm_kernels.WarmKernels({**os.environ, "MPLBACKEND": "agg"}, tmp_path)
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
