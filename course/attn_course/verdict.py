"""What one grading job's leftovers mean: the points, a status and a reason in words.

A job either finished (nbgrader wrote the executed notebooks to ``autograded/``) or was
stopped: at the wall-time limit, at the memory cap, or by a dead kernel. Either way the
points are those of the grading process's record (:mod:`attn_course.judge`): each hidden test
was judged there, outside the student's process, and appended to the record as it was
judged, so a job stopped half-way keeps the points of the tests judged before. Points are
never read from a notebook's outputs or from the job's gradebook.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

GiB = 1 << 30
#: Where a job's judging executor appends what it judged (``attn_course.judge``).
RECORD_ENV = "ATTN_GRADING_RECORD"
#: A JSON file of the checks' trivial cases, computed by the grader once per run.
TRIVIAL_ENV = "ATTN_GRADING_TRIVIAL"


@dataclass
class Verdict:
    status: str  # "ok" | "limit" | "crashed" | "invalid"
    reason: str
    scores: dict[str, float] = field(default_factory=dict)  # grade cell id -> points


def unreadable(folder: Path, notebook_names: list[str]) -> str:
    """Why the submission cannot be graded at all, in words; "" when it can."""
    present = sorted(p.name for p in folder.glob("*.ipynb"))
    if not present:
        wanted = ", ".join(f"{n}.ipynb" for n in notebook_names)
        return f"no notebook in the submission (expected {wanted})"
    for name in notebook_names:
        path = folder / f"{name}.ipynb"
        if not path.is_file():
            continue  # nbgrader grades what is there; the missing one earns nothing
        data = path.read_bytes()
        if not data.strip():
            return f"{path.name} is an empty file"
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (f"{path.name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at "
                    f"position {exc.start}); notebooks are always UTF-8")
        try:
            json.loads(text)
        except ValueError as exc:
            return f"{path.name} is not valid JSON ({exc}): a broken or truncated upload"
        try:
            nbformat.reads(text, as_version=4)
        except Exception as exc:  # nbformat raises several kinds
            return f"{path.name} is not a Jupyter notebook: {str(exc).splitlines()[0][:200]}"
    return ""


def _judged(record: dict[str, float], points: dict[str, float]) -> dict[str, float]:
    return {cell: min(max(float(record.get(cell, 0.0)), 0.0), points[cell]) for cell in points}


def finished(graded: Path, points: dict[str, float], notebook_names: list[str],
             memory_cap: int, record: dict[str, float]) -> Verdict:
    """A job nbgrader saw to the end: ``graded`` holds its executed notebooks."""
    nbs = [nbformat.read(str(p), as_version=4) for p in graded.glob("*.ipynb")]
    scores = _judged(record, points)
    status, reason = "ok", ""
    if any(memory_hit(nb) for nb in nbs):
        status = "limit"
        reason = (f"ran out of memory (cap {memory_cap / GiB:g} GiB) in a cell; that cell's "
                  "points are lost")
    else:
        errors = sorted(set().union(*(error_names(nb) for nb in nbs)) - {""})
        if "CellTimeoutError" in errors:
            status, reason = "limit", "a cell ran past the per-cell time limit"
        elif errors:
            reason = "errors in some cells: " + ", ".join(errors)
    missing = set(notebook_names) - {p.stem for p in graded.glob("*.ipynb")}
    if missing:
        status = "invalid"
        reason = "missing notebook: " + ", ".join(f"{m}.ipynb" for m in sorted(missing))
    return Verdict(status, reason, scores)


def stopped(checkpoint: Path, graded: Path, submission: Path, points: dict[str, float],
            notebook_names: list[str], *, timed_out: bool, returncode: int | None, log: str,
            wall_s: float, memory_cap: int, record: dict[str, float]) -> Verdict:
    """A job that did not finish: its points are those of the tests judged before it
    stopped. What ran (the executor's checkpoint) is kept in ``graded`` (with the
    submission's other files, such as ``timestamp.txt``, which ``release_feedback`` needs),
    for feedback and review."""
    nb = None
    try:
        data = json.loads(checkpoint.read_text(encoding="utf-8"))
        nb = nbformat.from_dict(data["nb"])
    except (OSError, ValueError, KeyError):
        pass
    scores = _judged(record, points)
    if nb is not None:
        graded.mkdir(parents=True, exist_ok=True)
        if len(notebook_names) == 1:
            nbformat.write(nb, str(graded / f"{notebook_names[0]}.ipynb"))
        for extra in submission.iterdir():
            if extra.is_file() and extra.suffix != ".ipynb" and not (graded / extra.name).exists():
                shutil.copy2(extra, graded / extra.name)
    ran = ("the points of the tests judged before are kept" if any(record.values())
           or nb is not None else "nothing ran, so no points")
    if timed_out:
        return Verdict("limit", f"stopped at the total time limit of {wall_s:g} s; {ran}", scores)
    if nb is not None and memory_hit(nb):
        return Verdict("limit", f"ran out of memory (cap {memory_cap / GiB:g} GiB); {ran}", scores)
    if nb is not None:
        problem = ("the kernel died" if "DeadKernelError" in log or "Kernel died" in log
                   else (nbgrader_problem(log) or f"nbgrader exited with {returncode}"))
        return Verdict("crashed", f"{problem}; {ran}", scores)
    return Verdict("invalid", nbgrader_problem(log)
                   or f"nbgrader could not run it (exit {returncode})", scores)


def error_names(nb) -> set[str]:
    return {o.get("ename", "") for c in nb.cells for o in c.get("outputs", [])
            if o.get("output_type") == "error"}


def memory_hit(nb) -> bool:
    for c in nb.cells:
        for o in c.get("outputs", []):
            text = o.get("evalue", "")
            if o.get("output_type") == "error" and (
                    o.get("ename") == "MemoryError" or "can't allocate memory" in text
                    or "not enough memory" in text):
                return True
    return False


def nbgrader_problem(log: str) -> str:
    """The first readable line of what nbgrader complained about."""
    for line in log.splitlines():
        if "ERROR" in line or "Error" in line:
            text = line.split("]", 1)[-1].strip()
            if text and "Traceback" not in text:
                return text[:300]
    return ""


def read_record(path) -> tuple[dict[str, float], list[str]]:
    """(points per test cell, flags) from a job's record; a line that cannot be read is
    skipped (the record is written by the grading process only, line by line)."""
    scores: dict[str, float] = {}
    flags: list[str] = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return scores, flags
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if "cell" in entry and entry["cell"] not in scores:
            scores[str(entry["cell"])] = float(entry.get("points", 0.0))
        elif "flag" in entry:
            flags.append(str(entry["flag"]))
    return scores, flags
