from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from attn_course.manifest import assignments

ROOT = Path(__file__).resolve().parents[1]
ASSIGNMENTS = assignments()


def assignment_params():
    return [pytest.param(a, id=a.id) for a in ASSIGNMENTS]


def copy_course(dest: Path) -> Path:
    """A throwaway nbgrader course root with this repository's source/ and release/."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(ROOT / "nbgrader_config.py", dest / "nbgrader_config.py")
    for folder in ("source", "release"):
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns(
            ".ipynb_checkpoints", "__pycache__"))
    return dest


def session_shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder every pytest-xdist worker of this run sees (and no other run): heavy
    fixtures compute their outcome once, under a lock, and share it through here."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's folder, above the per-worker ones
    return base / name


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
