"""Build nbgrader source notebooks from Python, cell by cell.

The committed ``source/<id>/<id>.ipynb`` is the source of truth; edit it in JupyterLab with
nbgrader's "Create Assignment" toolbar, or generate a first draft with these helpers::

    cells = [md("# Title"), code("import torch"),
             solution("rnn_step", "def rnn_step(...):\\n    ### BEGIN SOLUTION ..."),
             visible_tests("rnn_step", "assert ..."),
             hidden_tests("01_rnn_limits", "rnn_step", points=2)]
    write_notebook(cells, "source/01_rnn_limits/01_rnn_limits.ipynb")

The tests also use them to assemble submissions (tests/ and the sample class).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def _nbgrader(grade_id: str, *, grade=False, solution=False, locked=False, points=None) -> dict:
    meta = {
        "grade": grade,
        "grade_id": grade_id,
        "locked": locked,
        "schema_version": 3,
        "solution": solution,
        "task": False,
    }
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _clean(text: str) -> str:
    return textwrap.dedent(text).strip("\n")


def md(text: str):
    return new_markdown_cell(_clean(text))


def code(text: str):
    return new_code_cell(_clean(text))


def setup(text: str):
    """The notebook's first code cell (imports, seeding): read-only, restored if edited."""
    return new_code_cell(_clean(text), metadata=_nbgrader("setup", locked=True))


def given(name: str, text: str):
    """Code the student is given and graded code may use (for example an earlier
    notebook's answer): read-only, restored if edited."""
    return new_code_cell(_clean(text), metadata=_nbgrader(f"given_{name}", locked=True))


def solution(name: str, text: str):
    """The cell a student edits; wrap the answer in ### BEGIN/END SOLUTION."""
    return new_code_cell(_clean(text), metadata=_nbgrader(f"{name}", solution=True))


def visible_tests(name: str, text: str):
    """Read-only tests the student sees and runs (not graded, restored if edited)."""
    return new_code_cell(_clean(text), metadata=_nbgrader(f"visible_tests_{name}", locked=True))


def hidden_tests(assignment: str, name: str, points: float, what: str | None = None):
    """The graded cell: visible to the student only as a comment; runs the check."""
    what = what or name
    body = (
        f"# Hidden tests: {what} is checked against a reference on more cases "
        f"({points:g} point{'' if points == 1 else 's'}, partial credit).\n"
        "### BEGIN HIDDEN TESTS\n"
        "from attn_grader import grade\n"
        f'grade("{assignment}", "{name}", {name}, points={points!r})\n'
        "### END HIDDEN TESTS"
    )
    return new_code_cell(body, metadata=_nbgrader(f"test_{name}", grade=True, locked=True,
                                                  points=points))


def hidden_tests_after_solutions(cells: list) -> list:
    """Move each graded cell ``test_<name>`` right after the solution cell ``<name>``.

    nbgrader restores a deleted test cell after the source cell that preceded it, and only
    copes when that cell is a solution or graded cell (OverwriteCells.add_missing_grade_cells).
    """
    cells = list(cells)
    for test in [c for c in cells if _grade_id(c).startswith("test_")]:
        solution_id = _grade_id(test).removeprefix("test_")
        home = [i for i, c in enumerate(cells) if _grade_id(c) == solution_id]
        if home:
            cells.remove(test)
            cells.insert(home[0] + 1, test)
    return cells


def _grade_id(cell) -> str:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") or ""


def write_notebook(cells, path: str | Path) -> Path:
    cells = hidden_tests_after_solutions(cells)
    nb = new_notebook(cells=cells, metadata={"kernelspec": KERNELSPEC,
                                             "language_info": {"name": "python"}})
    for i, cell in enumerate(nb.cells):
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        cell["id"] = grade_id or f"cell-{i:03d}"
    nbformat.validate(nb)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path
