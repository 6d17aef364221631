"""Run nbgrader's own commands in a course root (the real CLI, so what we test is what
instructors run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def _env() -> dict[str, str]:
    # nbgrader shells out to `alembic`, which lives beside this interpreter in a venv that
    # need not be activated.
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    # Grading needs the numbers, not the pictures: drawing figures is most of a quick run.
    env.setdefault("MPLBACKEND", "agg")
    return env


class NbgraderError(RuntimeError):
    pass


def nbgrader(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "nbgrader", *args]
    proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True, env=_env())
    if check and proc.returncode != 0:
        raise NbgraderError(
            f"`nbgrader {' '.join(args)}` failed in {root} (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def generate_assignment(root: Path, assignment_id: str) -> None:
    nbgrader(root, "generate_assignment", assignment_id, "--force")


def autograde(root: Path, assignment_id: str, student: str | None = None) -> None:
    args = ["autograde", assignment_id, "--force"]
    if student:
        args.append(f"--student={student}")
    nbgrader(root, *args)


def generate_feedback(root: Path, assignment_id: str, db: str | None = None) -> None:
    """Feedback from the course gradebook (``db``: its URL, when not the configured one)."""
    extra = [f"--CourseDirectory.db_url={db}"] if db else []
    nbgrader(root, "generate_feedback", assignment_id, "--force", *extra)
