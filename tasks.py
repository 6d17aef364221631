#!/usr/bin/env python3
"""One entry point for people who just cloned the course. Standard library only.

    python3 tasks.py course   # set up .venv, release, run the solutions, grade the sample class
    python3 tasks.py test     # set up .venv, lint, and run the whole test suite
    python3 tasks.py lab      # set up .venv and open JupyterLab on your copy of the notebooks

Each creates the local virtual environment .venv on first use and reuses it afterwards
(reinstalling only when pyproject.toml changes). Extra arguments go to the underlying
command, e.g. `python3 tasks.py test -k rnn_step` or `python3 tasks.py course --quick`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".installed-from"


def _fingerprint() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - tasks.py runs under any python3
        sys.exit(f"Python 3.11 or newer is needed (this is {sys.version.split()[0]}).")
    if not PYTHON.exists():
        print(f"Creating the virtual environment {VENV} ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("Installing the course and its dependencies into .venv (first run: a few minutes) ...",
          flush=True)
    # -qq: only errors (a machine's own pip configuration can add warnings nobody here can act on)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-qq", "--upgrade", "pip"],
                   check=True)
    subprocess.run([str(PYTHON), "-m", "pip", "install", "-qq", "-e", ".[dev]"],
                   cwd=ROOT, check=True)
    STAMP.write_text(_fingerprint())


def run(*cmd: str) -> int:
    env = dict(os.environ)
    env["PATH"] = str(BIN) + os.pathsep + env.get("PATH", "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.call(list(cmd), cwd=ROOT, env=env)


def task_course(args: list[str]) -> int:
    return run(str(BIN / "attn-course"), "sample", *args)


def task_test(args: list[str]) -> int:
    code = run(str(BIN / "ruff"), "check", ".")
    if code:
        return code
    return run(str(PYTHON), "-m", "pytest", *args)


def task_lab(args: list[str]) -> int:
    return run(str(BIN / "attn-course"), "lab", *args)


TASKS = {"course": task_course, "test": task_test, "lab": task_lab}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        print(__doc__)
        return 2
    ensure_venv()
    return TASKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
