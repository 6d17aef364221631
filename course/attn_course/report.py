"""Grade tables: read back from nbgrader's gradebook, printed, and written to ``grades.csv``.

The course gradebook is where nbgrader's ``CourseDirectory.db_url`` says (:func:`gradebook_url`):
``sqlite:///<course>/gradebook.db`` unless the course's nbgrader configuration names another
database (PostgreSQL for a formgrader shared by several instructors), or ``--db`` overrides it
for one command."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from nbgrader.api import Gradebook, MissingEntry


@dataclass
class Row:
    student: str
    assignment: str
    score: float
    max_score: float
    cells: dict[str, float]


def sqlite_url(course: Path) -> str:
    """The gradebook file of a course folder (the scratch courses of grading always use it)."""
    return f"sqlite:///{Path(course) / 'gradebook.db'}"


def configured_db_url(root: Path) -> str | None:
    """``CourseDirectory.db_url`` as nbgrader's own commands run in ``root`` would read it:
    from ``nbgrader_config.py`` in Jupyter's configuration folders (``~/.jupyter``,
    ``/etc/jupyter``...) and in the course root, the latter winning; None when unset."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import Config, ConfigFileNotFound, PyFileConfigLoader

    config = Config()
    for folder in [*reversed(jupyter_config_path()), str(root)]:
        try:
            config.merge(PyFileConfigLoader("nbgrader_config.py", path=folder).load_config())
        except ConfigFileNotFound:
            continue
    url = config.CourseDirectory.get("db_url") if "CourseDirectory" in config else None
    return str(url) if url else None


def gradebook_url(root: Path, db: str | None = None) -> str:
    """The course gradebook: ``db`` when given (``--db``), else the configured
    ``CourseDirectory.db_url``, else ``sqlite:///<root>/gradebook.db`` (nbgrader's default)."""
    return db or configured_db_url(root) or sqlite_url(root)


def sqlite_missing(url: str) -> bool:
    """Whether ``url`` names an SQLite file that does not exist yet (opening it would create
    it). A server's database always counts as present: nbgrader creates its schema."""
    return url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists()


def submissions(gb: Gradebook, assignment_ids: list[str]):
    """(student, assignment id, submission) for every graded submission, students sorted."""
    for student in sorted(s.id for s in gb.students):
        for aid in assignment_ids:
            try:
                yield student, aid, gb.find_submission(aid, student)
            except MissingEntry:
                continue


def read_grades(root: Path, assignment_ids: list[str], db: str | None = None) -> list[Row]:
    rows = []
    with Gradebook(gradebook_url(root, db)) as gb:
        for student, aid, sub in submissions(gb, assignment_ids):
            cells = {}
            for nb in sub.notebooks:
                for g in nb.grades:
                    if g.cell.name.startswith("test_"):
                        cells[g.cell.name.removeprefix("test_")] = float(g.score)
            rows.append(Row(student, aid, float(sub.score), float(sub.max_score), cells))
    return rows


def format_table(rows: list[Row]) -> str:
    if not rows:
        return "(no graded submissions)"
    assignments = sorted({r.assignment for r in rows})
    students = sorted({r.student for r in rows})
    by = {(r.student, r.assignment): r for r in rows}
    width = max(len(s) for s in students) + 2
    cols = [a[:22] for a in assignments]
    lines = ["student".ljust(width) + "".join(c.rjust(24) for c in cols) + "total".rjust(12)]
    for s in students:
        total = got = 0.0
        cells = []
        for a in assignments:
            r = by.get((s, a))
            if r is None:
                cells.append("-".rjust(24))
                continue
            got += r.score
            total += r.max_score
            cells.append(f"{r.score:g}/{r.max_score:g}".rjust(24))
        lines.append(s.ljust(width) + "".join(cells) + f"{got:g}/{total:g}".rjust(12))
    return "\n".join(lines)


def format_exercises(rows: list[Row]) -> str:
    """Per exercise: each student's points."""
    out = []
    for aid in sorted({r.assignment for r in rows}):
        sub = [r for r in rows if r.assignment == aid]
        names = list(sub[0].cells)
        width = max(len(n) for n in [*names, "exercise"]) + 2
        out.append(aid)
        out.append("  " + "exercise".ljust(width) + "".join(r.student[:16].rjust(18) for r in sub))
        for n in names:
            scores = "".join(f"{r.cells.get(n, 0):g}".rjust(18) for r in sub)
            out.append("  " + n.ljust(width) + scores)
    return "\n".join(out)


def write_csv(path: Path, results) -> Path:
    """``grades.csv``: one row per :class:`attn_course.grading.Result`, one column per exercise."""
    exercises: list[str] = []
    multi = len({r.assignment for r in results}) > 1
    for r in results:
        for e in r.cells:
            col = f"{r.assignment}:{e}" if multi else e
            if col not in exercises:
                exercises.append(col)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "assignment", *exercises, "score", "max_score", "status", "reason",
                    "flags"])
        for r in sorted(results, key=lambda r: (r.student, r.assignment)):
            cells = {(f"{r.assignment}:{e}" if multi else e): v for e, v in r.cells.items()}
            w.writerow([r.student, r.assignment, *(cells.get(e, "") for e in exercises),
                        r.score, r.max_score, r.status, r.reason, " | ".join(r.flags)])
    return path


def summary(results) -> str:
    """The grade table, the points per exercise, and what needs a reviewer's look."""
    rows = [r.row() for r in results]
    out = [format_table(rows)]
    if rows:
        out.append("\nPer exercise:\n" + format_exercises(rows))
    flagged = [r for r in results if r.status != "ok" or r.reason or r.flags]
    if flagged:
        out.append("\nNeeds a look:")
        for r in flagged:
            out.append(f"  {r.student}/{r.assignment} [{r.status}] {r.reason}".rstrip())
            out += [f"      FLAG for review: {f}" for f in r.flags]
    return "\n".join(out)
