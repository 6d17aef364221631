"""The pieces of grading integrity, one by one (the whole is in test_grading_pipeline)."""

from __future__ import annotations

import nbformat
import pytest

from attn_course import integrity, notebooks
from conftest import ASSIGNMENTS, ROOT, assignment_params

# --------------------------------------------------------------------------- static scan


@pytest.mark.parametrize("code, flag", [
    ("from attn_grader.nb01_rnn_limits.reference import rnn_step", "imports the grading package"),
    ("import attn_grader", "imports the grading package"),
    ("import torch\ntorch.allclose = lambda *a, **k: True", "replaces torch.allclose"),
    ("import torch as T\nT.Tensor.__eq__ = None", "replaces T.Tensor.__eq__"),
    ("from torch import nn\nnn.functional.softmax = print", "monkeypatches torch"),
    ("import numpy as np\nsetattr(np, 'isclose', None)", "calls setattr on np"),
    ("import builtins\nbuiltins.isinstance = None", "replaces builtins.isinstance"),
    ("__builtins__.print = None", "monkeypatches builtins"),
    ("import importlib, torch\nimportlib.reload(torch)", "reloads a module"),
    ("import sys\nsys.modules['attn'] = None", "uses sys.modules"),
    ("__import__('attn_grader')", "names the grading package"),
])
def test_scan_flags_tampering(code, flag):
    flags = integrity.scan_source(code)
    assert any(flag in f for f in flags), flags


@pytest.mark.parametrize("code", [
    "import torch\nx = torch.zeros(3)\nx[0] = 1",
    "import matplotlib.pyplot as plt\nplt.rcParams['figure.dpi'] = 80",
    "class A:\n    def __init__(self):\n        self.w = 1",
    "import torch\ntorch.set_num_threads(1)",
    "def broken(:\n    pass",
])
def test_scan_leaves_ordinary_code_alone(code):
    assert integrity.scan_source(code) == []


@pytest.mark.parametrize("a", assignment_params())
def test_no_notebook_of_the_course_is_flagged(a):
    for path in (a.source_notebook(ROOT), a.release_notebook(ROOT)):
        assert integrity.scan(notebooks.read(path)) == []


# --------------------------------------------------------------------------- files


def test_file_guard_notices_and_undoes_changes_keeping_them_aside(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("A = 1\n")
    (pkg / "sub" / "b.py").write_text("B = 2\n")
    (pkg / "gone.py").write_text("G = 3\n")
    guard = integrity.FileGuard()
    guard.watch(pkg)
    assert guard.changes() == []

    (pkg / "a.py").write_text("A = 'tampered'\n")
    (pkg / "planted.py").write_text("evil = True\n")
    (pkg / "gone.py").unlink()
    (pkg / "sub" / "__pycache__").mkdir()
    (pkg / "sub" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"bytecode")
    found = {(c.path.name, c.kind) for c in guard.changes()}
    assert found == {("a.py", "changed"), ("planted.py", "added"), ("gone.py", "removed")}

    aside = tmp_path / "aside"
    guard.restore(guard.changes(), aside=aside)
    assert (pkg / "a.py").read_text() == "A = 1\n"
    assert (pkg / "gone.py").read_text() == "G = 3\n"
    assert not (pkg / "planted.py").exists()
    kept = {p.name: p.read_text() for p in aside.rglob("*.py")}
    assert kept == {"a.py": "A = 'tampered'\n", "planted.py": "evil = True\n"}
    assert guard.changes() == []

    guard.clean_bytecode()
    assert not (pkg / "sub" / "__pycache__" / "b.cpython-311.pyc").exists()


def test_file_guard_accepts_what_the_grader_writes(tmp_path):
    (tmp_path / "book.db").write_bytes(b"v1")
    guard = integrity.FileGuard()
    guard.watch(tmp_path / "book.db")
    (tmp_path / "book.db").write_bytes(b"v2")
    guard.refresh(tmp_path / "book.db")
    assert guard.changes() == []


def test_private_packages_come_from_memory_not_from_disk(tmp_path):
    guard = integrity.FileGuard()
    folder = tmp_path / "attn_grader"
    folder.mkdir()
    (folder / "checks.py").write_text("GOOD = True\n")
    guard.watch(folder)
    (folder / "checks.py").write_text("GOOD = False\n")  # another job got there first
    guard.copy_tree(folder, tmp_path / "copy")
    assert (tmp_path / "copy" / "checks.py").read_text() == "GOOD = True\n"


# --------------------------------------------------------------------------- structure


def _ids(nb):
    return [notebooks.grade_id(c) for c in nb.cells if notebooks.grade_id(c)]


@pytest.mark.parametrize("a", assignment_params())
def test_deleted_solution_and_test_are_put_back_in_place(a):
    release = notebooks.read(a.release_notebook(ROOT))
    names = notebooks.graded_names(release)
    gone = {names[0], f"test_{names[0]}", names[-1], f"test_{names[-1]}"}
    nb = nbformat.from_dict(release)
    nb.cells = [c for c in nb.cells if notebooks.grade_id(c) not in gone]
    restored = integrity.restore_missing_cells(nb, release)
    assert set(restored) == gone
    assert _ids(nb) == _ids(release)


def test_skip_tags_are_removed_from_nbgrader_cells_only():
    release = notebooks.read(ASSIGNMENTS[0].release_notebook(ROOT))
    nb = nbformat.from_dict(release)
    test_cell = next(c for c in nb.cells if notebooks.is_graded(c))
    demo = next(c for c in nb.cells if c.cell_type == "code" and not notebooks.grade_id(c))
    test_cell.metadata.tags = ["skip-execution", "mine"]
    demo.metadata.tags = [notebooks.READER_ONLY]
    assert integrity.unskip_nbgrader_cells(nb) == [notebooks.grade_id(test_cell)]
    assert test_cell.metadata.tags == ["mine"]
    assert demo.metadata.tags == [notebooks.READER_ONLY]  # a demo of the student's own: theirs
    assert integrity.unskip_nbgrader_cells(nb) == []


def test_points_come_from_the_graders_record_and_a_test_never_judged_earns_nothing(tmp_path):
    from attn_course import verdict

    record = tmp_path / "record.jsonl"
    record.write_text('{"cell": "test_0", "points": 2.0, "max": 2}\n'
                      '{"cell": "test_1", "points": 0.5, "max": 2}\n'
                      '{"cell": "test_1", "points": 2.0, "max": 2}\n'  # a second copy: ignored
                      '{"flag": "cell 3: replaced or added torch.allclose"}\n'
                      'not json\n')
    scores, flags = verdict.read_record(record)
    assert scores == {"test_0": 2.0, "test_1": 0.5}
    assert flags == ["cell 3: replaced or added torch.allclose"]
    points = {"test_0": 2.0, "test_1": 2.0, "test_2": 2.0}
    graded = tmp_path / "graded"
    graded.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), str(graded / "nb.ipynb"))
    v = verdict.finished(graded, points, ["nb"], 1 << 30, scores)
    assert v.scores == {"test_0": 2.0, "test_1": 0.5, "test_2": 0.0}


@pytest.mark.parametrize("a", assignment_params())
def test_every_hidden_test_cell_can_be_judged_outside_the_kernel(a):
    from attn_course import judge

    for cell in notebooks.read(a.source_notebook(ROOT)).cells:
        if notebooks.is_graded(cell) and not notebooks.is_solution(cell):
            calls = judge.test_calls(cell.source)
            assert calls and all(c.assignment == a.id for c in calls), cell.source


def test_a_test_cell_with_other_code_is_not_judged():
    from attn_course import judge

    assert judge.test_calls('from attn_grader import grade\ngrade("x", "f", f, points=1)')
    assert judge.test_calls('grade("x", "f", f, points=1)\nprint("more")') is None
    assert judge.test_calls('grade("x", "f", make(), points=1)') is None


def test_a_notebook_is_recognised_as_its_own_assignment():
    ids = {a.id: set(_ids(notebooks.read(a.source_notebook(ROOT)))) for a in ASSIGNMENTS}
    for a in ASSIGNMENTS:
        nb = notebooks.read(a.release_notebook(ROOT))
        assert integrity.assignment_of(nb, ids) == a.id
    assert integrity.assignment_of(nbformat.v4.new_notebook(), ids) is None
