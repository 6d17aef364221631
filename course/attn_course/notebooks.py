"""Reading nbgrader notebooks: which cells are what, and what a notebook defines."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat import NotebookNode


def read(path: Path) -> NotebookNode:
    return nbformat.read(str(path), as_version=4)


def nbgrader_meta(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


#: Tag of a demo cell that only prints or draws for a reader: nbgrader skips it when it
#: autogrades (``Execute.skip_cells_with_tag`` in nbgrader_config.py). Every other run, quick
#: ones included, executes it.
READER_ONLY = "reader-only"


def grade_id(cell) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


def is_solution(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def is_graded(cell) -> bool:
    return bool(nbgrader_meta(cell).get("grade"))


def is_hidden_test(cell) -> bool:
    """A cell nbgrader scores by running it (graded, not an answer): the hidden tests."""
    return is_graded(cell) and not is_solution(cell)


def graded_cells(nb: NotebookNode) -> dict[str, float]:
    """{grade_id: points} of the notebook's graded (hidden test) cells."""
    return {grade_id(c): float(nbgrader_meta(c)["points"]) for c in nb.cells if is_graded(c)}


def graded_names(nb: NotebookNode) -> list[str]:
    """The graded functions and classes, in notebook order (test_<name> cells)."""
    return [gid.removeprefix("test_") for gid in graded_cells(nb)]


def defining_cells(nb: NotebookNode) -> list:
    """The cells whose code graded answers may rely on: the setup cell, given code, and
    solution cells, in order (see CONTRIBUTING.md)."""
    keep = []
    for cell in nb.cells:
        gid = grade_id(cell) or ""
        if cell.cell_type == "code" and (gid == "setup" or gid.startswith("given_")
                                         or is_solution(cell)):
            keep.append(cell)
    return keep


def namespace(path: Path) -> dict:
    """Execute a notebook's defining cells in a fresh namespace and return it.

    For a source notebook that is the worked solution; for a released notebook, the stubs.
    Lines starting with % or ! (IPython magics) are skipped.
    """
    ns: dict = {"__name__": f"notebook_{path.stem}"}
    for cell in defining_cells(read(path)):
        source = "\n".join(
            line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!"))
        )
        exec(compile(source, f"{path.name}:{grade_id(cell)}", "exec"), ns)  # noqa: S102
    return ns


def has_outputs(nb: NotebookNode) -> bool:
    return any(
        c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))
        for c in nb.cells
    )
