"""`attn-course bench modules --smoke`: the plumbing, not the budget (no timing assertions; the
figures of a smoke run mean nothing)."""

from __future__ import annotations

import json

import pytest

from attn_course import benchmarks
from attn_course.benchmarks import modules


@pytest.fixture(scope="module")
def smoke(root, tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    md_path, json_path = benchmarks.run(root, ["modules"], smoke=True, out_dir=out,
                                        log=lines.append)
    assert torch.get_num_threads() == threads, "the benchmark must restore the thread count"
    data = json.loads(json_path.read_text(encoding="utf-8"))
    return data, md_path.read_text(encoding="utf-8"), lines


def test_every_size_and_pass_has_positive_times_and_a_ratio(smoke):
    data, _, lines = smoke
    part = data["parts"]["modules"]
    assert part["smoke"] is True and part["machine"]["torch"]
    rows = part["rows"]
    expected = {(m, op, b) for op in ("forward", "forward+backward")
                for m, b in [("MultiHeadAttention", modules.MHA_BASELINES["weights"][0]),
                             ("MultiHeadAttention", modules.MHA_BASELINES["fast"][0]),
                             ("EncoderLayer", modules.LAYER_BASELINE[0])]}
    for B, T, d, h in modules.SMOKE_SIZES:
        here = [r for r in rows if r["size"] == {"B": B, "T": T, "d_model": d, "heads": h,
                                                 "d_ff": 4 * d}]
        assert {(r["module"], r["op"], r["baseline"]) for r in here} == expected
    assert len(rows) == len(expected) * len(modules.SMOKE_SIZES)
    for r in rows:
        assert r["ours_ms"] > 0 and r["torch_ms"] > 0, r
        assert r["ratio"] > 0 and r["ratio_quartiles"][0] <= r["ratio_quartiles"][1], r
        assert r["budget"] == modules.BUDGET == 1.3
        assert r["met"] == (r["ratio"] <= r["budget"])
        assert isinstance(r["like_for_like"], bool)
    judged = [r for r in rows if r["like_for_like"]]
    assert part["met"] == all(r["met"] for r in judged)
    assert part["worst_ratio"] == max(r["ratio"] for r in judged)
    s = part["settings"]
    assert s["torch_threads"] == modules.THREADS
    # both sides computed the same function before they were timed
    assert 0 <= s["max_abs_difference"] < 1e-4
    assert len(lines) > 1 and any("MultiHeadAttention" in line for line in lines)


def test_markdown_has_the_section_and_one_table_row_per_measurement(smoke):
    data, md, _ = smoke
    part = data["parts"]["modules"]
    section = modules.markdown(part)
    assert section.startswith("## Worked solutions against PyTorch")
    assert section.rstrip() in md
    assert "smoke run" in md
    table = [line for line in section.splitlines() if line.startswith("| `")]
    assert len(table) == len(part["rows"])
    assert "| module |" in section and "| ours / PyTorch (quartiles) |" in section
    assert "`nn.MultiheadAttention(need_weights=False)`" in section
