"""Source notebooks: no outputs, the manifest agrees with them, they run top to bottom,
and release/ is exactly what nbgrader generates from them."""

import json

import pytest

from attn_course import nbgrader_runner, notebooks
from attn_course.execute import execute_notebook
from conftest import ASSIGNMENTS, ROOT, assignment_params, copy_course


def test_manifest_lists_exactly_the_source_and_release_folders():
    ids = [a.id for a in ASSIGNMENTS]
    assert ids == sorted(ids), "assignments are numbered in course order"
    assert sorted(p.name for p in (ROOT / "source").iterdir() if p.is_dir()) == ids
    assert sorted(p.name for p in (ROOT / "release").iterdir() if p.is_dir()) == ids


@pytest.mark.parametrize("assignment", assignment_params())
def test_source_notebook_has_no_outputs(assignment):
    assert not notebooks.has_outputs(notebooks.read(assignment.source_notebook(ROOT)))


@pytest.mark.parametrize("assignment", assignment_params())
def test_only_plain_demo_cells_are_reader_only(assignment):
    # autograding skips reader-only cells, so an nbgrader cell must never be one; that nothing
    # later needs them is proven by grading the full solutions (test_grading_end_to_end)
    for cell in notebooks.read(assignment.source_notebook(ROOT)).cells:
        if notebooks.READER_ONLY in cell.get("metadata", {}).get("tags", []):
            assert cell.cell_type == "code" and not notebooks.grade_id(cell), cell.source[:80]


def test_autograding_skips_exactly_the_reader_only_cells():
    from traitlets.config import Config

    config = Config()
    exec((ROOT / "nbgrader_config.py").read_text(), {"get_config": lambda: config})
    assert config.Execute.skip_cells_with_tag == notebooks.READER_ONLY


@pytest.mark.parametrize("assignment", assignment_params())
def test_manifest_points_match_the_notebook(assignment):
    cells = notebooks.graded_cells(notebooks.read(assignment.source_notebook(ROOT)))
    assert sum(cells.values()) == assignment.points


@pytest.mark.parametrize("assignment", assignment_params())
def test_release_hides_solutions_and_hidden_tests(assignment):
    text = assignment.release_notebook(ROOT).read_text(encoding="utf-8")
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "attn_grader"):
        assert marker not in text
    release = notebooks.read(assignment.release_notebook(ROOT))
    stubs = [c.source for c in release.cells if notebooks.is_solution(c)]
    assert stubs and all("raise NotImplementedError()" in s for s in stubs)


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_params())
def test_regenerating_the_release_changes_nothing(assignment, tmp_path):
    course = copy_course(tmp_path / "course")
    nbgrader_runner.generate_assignment(course, assignment.id)
    regenerated = assignment.release_notebook(course).read_text(encoding="utf-8")
    committed = assignment.release_notebook(ROOT).read_text(encoding="utf-8")
    assert json.loads(regenerated) == json.loads(committed), (
        f"release/{assignment.id} is out of date: run `attn-course release {assignment.id}`")


@pytest.mark.slow
@pytest.mark.parametrize("assignment", assignment_params())
def test_source_notebook_runs_top_to_bottom(assignment, tmp_path):
    # Quick mode (as under autograding) keeps CI short; `attn-course execute` runs the full demos.
    nb, _ = execute_notebook(assignment.source_notebook(ROOT), tmp_path / "out.ipynb", quick=True)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    graded = [c for c in nb.cells if notebooks.is_graded(c)]
    for cell in graded:  # every hidden check reports full marks on the worked solution
        results = [o for o in cell.outputs if o.output_type == "execute_result"]
        points = notebooks.nbgrader_meta(cell)["points"]
        assert results and float(results[0].data["text/plain"]) == points, cell.source


@pytest.mark.parametrize("assignment", assignment_params())
def test_each_hidden_test_cell_follows_its_solution_cell(assignment):
    # nbgrader can only restore a deleted test cell after a solution or graded cell.
    cells = notebooks.read(assignment.source_notebook(ROOT)).cells
    for i, cell in enumerate(cells):
        if notebooks.is_graded(cell):
            name = notebooks.grade_id(cell).removeprefix("test_")
            assert i > 0 and notebooks.grade_id(cells[i - 1]) == name, name
