"""`attn-course bench class_grading`: the synthetic class, and a smoke run of the comparison
(plumbing only: no timing is asserted)."""

from __future__ import annotations

import pytest

from attn_course import notebooks
from attn_course.benchmarks import class_grading as cg
from attn_course.manifest import assignment
from conftest import copy_course


def test_a_class_of_forty_has_the_promised_mix():
    kinds = [kind for _, kind in cg.student_ids(40)]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "full": 16, "partial": 10, "blank": 6, "broken": 8}
    assert {kind for _, kind in cg.student_ids(4)} == {"full", "partial", "blank", "broken"}


def test_the_class_is_deterministic_and_varied(tmp_path):
    a = assignment(cg.SMOKE_ASSIGNMENT)
    written = []
    for name in ("one", "two"):
        course = copy_course(tmp_path / name)
        described = cg.write_class(course, a, 20)
        files = {p.relative_to(course): p.read_bytes()
                 for p in sorted((course / "submitted").rglob("*.ipynb"))}
        written.append((described, files))
    assert written[0] == written[1]
    described, files = written[0]
    assert len(files) == 20
    partial = [d for s, d in described.items() if s.endswith("_partial")]
    assert len(set(partial)) > 1, partial  # different subsets, some with a mistake
    release = notebooks.read(a.release_notebook(tmp_path / "one"))
    blank = [f for p, f in files.items() if "_blank" in str(p)]
    assert all(notebooks.read(tmp_path / "one" / p).cells == release.cells
               for p in files if "_blank" in str(p)) and blank


@pytest.mark.slow
@pytest.mark.xdist_group("bench-class-grading")
def test_smoke_run_grades_identically_and_reports_a_ratio(root, tmp_path):
    lines = []
    data = cg.measure(root, smoke=True, log=lines.append, work=tmp_path / "bench")
    assert data["assignments"] == [cg.SMOKE_ASSIGNMENT]
    assert data["submissions"] == data["students"] * len(data["assignments"]) > 0
    assert set(data["class"][cg.SMOKE_ASSIGNMENT]) == {s for s, _ in
                                                       cg.student_ids(data["students"])}
    assert [r["assignment"] for r in data["per_assignment"]] == data["assignments"]
    assert data["identical"] is True, data["differences"]
    assert data["grades_compared"] > 0 and data["differences"] == []
    assert data["plain_s"] > 0 and data["ours_s"] > 0
    assert data["speedup"] > 0
    assert data["speedup"] == pytest.approx(data["plain_s"] / data["ours_s"])
    assert data["met"] == (data["speedup"] >= data["budget"])
    # the machine's own parallel ceiling, before and after, so a missed budget can be told
    # apart from a machine whose cores are not really free
    assert len(data["parallel_ceiling"]) == 2 and all(c > 0 for c in data["parallel_ceiling"])
    assert sum(data["statuses"].values()) == data["submissions"]
    md = cg.markdown(data)
    assert md.startswith("## Grading a class")
    assert "identical" in md and f"{data['speedup']:.2f}x" in md
    assert f"**{data['parallel_ceiling'][0]:.2f}x** before" in md


def test_the_cross_over_is_read_from_the_late_submission_rows():
    faster = [{"submissions": 1, "ratio": 1.3}, {"submissions": 2, "ratio": 2.5}]
    assert "none to wait for: from 1 submission on" in cg._cross_over(faster)
    slower = [{"submissions": 1, "ratio": 0.8}, {"submissions": 2, "ratio": 1.1}]
    words = cg._cross_over(slower)
    assert "plain nbgrader is faster for 1 late" in words and "faster beyond 1" in words
