"""`attn-course bench cluster_grading`: the report and its arithmetic for a large course
(the measurement itself starts Dask clusters; tests/test_cluster.py covers their grading)."""

from __future__ import annotations

import pytest

from attn_course.benchmarks import cluster_grading as cb


def _data():
    rows = []
    for k, grade_s in ((1, 60.0), (2, 32.0), (4, 30.0)):
        rate = 60 * 20 / grade_s
        rows.append({"workers": k, "start_s": 1.0, "first_s": grade_s + 20, "warm_s": grade_s + 3,
                     "prepare_s": 3.0, "grade_s": grade_s, "per_min": rate,
                     "per_min_per_worker": rate / k, "speedup": 60.0 / grade_s})
    return {"students": 10, "assignments": ["01_rnn_limits", "03_qkv_lookup"],
            "submissions": 20, "rows": rows, "parallel_ceiling": 1.9, "cores": 2,
            "identical": True, "differences": [], "statuses": {"ok": 20}}


def test_the_large_course_arithmetic():
    # 14,000 submissions at 20 a minute on one worker: 700 minutes
    assert cb.large_course(20.0, 1) == pytest.approx(700 / 60)
    assert cb.large_course(20.0, 10) == pytest.approx(70 / 60)
    assert cb.large_course(20.0, 1, submissions=1200) == pytest.approx(1.0)


def test_the_report_has_a_row_per_worker_count_and_the_large_course():
    md = cb.markdown(_data())
    assert md.startswith("## Grading on a cluster")
    assert "| 1 | 80.0 | 63.0 | 3.0 | 20.0 | 20.0 | 1.00x |" in md
    assert "| 2 | 52.0 | 35.0 | 3.0 | 37.5 | 18.8 | 1.88x |" in md
    assert "2,000 students x 7 notebooks = 14,000 submissions" in md
    assert f"{cb.large_course(20.0, 8):.1f} h on 8 workers" in md
    assert "**identical**" in md and "**1.90x**" in md
