"""The course manifest (manifest.toml) and where the course lives on disk."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

MANIFEST = Path(__file__).with_name("manifest.toml")


@dataclass(frozen=True)
class Assignment:
    id: str
    title: str
    teaches: str
    points: float

    def source_notebook(self, root: Path) -> Path:
        return root / "source" / self.id / f"{self.id}.ipynb"

    def release_notebook(self, root: Path) -> Path:
        return root / "release" / self.id / f"{self.id}.ipynb"


def assignments() -> list[Assignment]:
    data = tomllib.loads(MANIFEST.read_text(encoding="utf-8"))
    return [Assignment(**entry) for entry in data["assignment"]]


def assignment(assignment_id: str) -> Assignment:
    for a in assignments():
        if a.id == assignment_id:
            return a
    known = ", ".join(a.id for a in assignments())
    raise SystemExit(f"unknown assignment {assignment_id!r}; the course has: {known}")


def _is_course_root(path: Path) -> bool:
    return (path / "nbgrader_config.py").is_file() and (path / "source").is_dir()


def course_root() -> Path:
    """The nbgrader course root: $ATTN_COURSE_ROOT, else the nearest folder above the
    working directory with nbgrader_config.py and source/, else this repository."""
    if os.environ.get("ATTN_COURSE_ROOT"):
        return Path(os.environ["ATTN_COURSE_ROOT"]).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if _is_course_root(folder):
            return folder
    repo = Path(__file__).resolve().parents[2]
    if _is_course_root(repo):
        return repo
    raise SystemExit("cannot find the course root (a folder with nbgrader_config.py and source/)")
