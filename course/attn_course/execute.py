"""Run notebooks top to bottom with nbclient (the worked solutions, or any notebook)."""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient


@contextmanager
def _env(**values: str | None):
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute_notebook(path: Path, out: Path | None = None, *, quick: bool = False,
                     timeout: int = 600) -> tuple[nbformat.NotebookNode, float]:
    """Execute ``path`` in its own folder; raise on the first error. ``quick`` shrinks the
    demos as autograding does. Returns the executed notebook and the seconds it took."""
    nb = nbformat.read(str(path), as_version=4)
    with tempfile.TemporaryDirectory(prefix="attn-kernel-") as sockets:
        km = local_kernel_manager(Path(sockets))
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3", km=km,
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        try:
            with _env(ATTN_COURSE_QUICK="1" if quick else None):
                client.execute()
        finally:
            if run_sync(km.is_alive)():  # nbclient stops only the kernels it made itself
                run_sync(km.shutdown_kernel)(now=False)
        seconds = time.perf_counter() - start
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, str(out))
    return nb, seconds


def local_kernel_manager(folder: Path, kernel_name: str = "python3") -> AsyncKernelManager:
    """A kernel manager whose kernel talks over IPC sockets in ``folder``: a kernel that only
    this machine's processes need not listen on TCP (and ipykernel then has no reason to warn
    that its traffic is unencrypted)."""
    return AsyncKernelManager(kernel_name=kernel_name, transport="ipc",
                              connection_file=str(folder / "kernel.json"))
