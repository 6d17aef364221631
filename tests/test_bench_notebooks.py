"""`attn-course bench notebooks outcomes --smoke`: the plumbing, not the budgets (no timing
assertions; the figures of a smoke run mean nothing)."""

from __future__ import annotations

import json

import nbformat
import pytest

from attn_course import benchmarks
from attn_course.benchmarks import notebooks as nbbench
from attn_course.benchmarks import outcomes

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(root, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    lines: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("ATTN_BENCH_ASSIGNMENTS", raising=False)  # the default smoke selection
        md_path, json_path = benchmarks.run(root, ["notebooks", "outcomes"], smoke=True,
                                            out_dir=out, log=lines.append)
    return json.loads(json_path.read_text()), md_path.read_text(), lines, root


def test_notebooks_part_has_positive_figures_and_consistent_ratios(smoke):
    data, _, _, _ = smoke
    part = data["parts"]["notebooks"]
    assert part["smoke"] is True and part["machine"]["cores"] >= 1
    floor = part["floor"]
    assert len(floor["samples"]) >= 2
    assert min(floor["samples"]) > 0 and floor["peak_rss_bytes"] > 50 * 2**20, floor
    assert floor["seconds_min"] <= floor["seconds_median"] <= floor["seconds_max"]
    rows = {r["id"]: r for r in part["notebooks"]}
    assert list(rows) == [nbbench.SMOKE_ID]
    row = rows[nbbench.SMOKE_ID]
    for kind in ("student", "autograde"):
        m = row[kind]
        assert m["seconds"] > 0, (kind, m)
        # the kernel imported torch: far above an empty interpreter
        assert m["peak_rss_bytes"] > 100 * 2**20, (kind, m)
        assert isinstance(m["budget_met"], bool)
    g = row["autograde"]
    assert g["ratio_to_floor"] == pytest.approx(g["seconds"] / floor["seconds_median"])
    assert g["budget_met"] == (g["ratio_to_floor"] <= nbbench.AUTOGRADE_RATIO)
    assert row["student"]["budget_met"] == (
        row["student"]["seconds"] <= nbbench.STUDENT_SECONDS
        and row["student"]["peak_rss_bytes"] <= nbbench.STUDENT_BYTES)
    assert row["nbgrader"] is None  # full runs only
    assert part["student_mode"].startswith("quick")


def test_executed_notebook_is_kept_for_outcomes(smoke):
    _, _, _, root = smoke
    kept = nbbench.bench_dir(root, quick=True) / f"{nbbench.SMOKE_ID}.ipynb"
    nb = nbformat.read(str(kept), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "every code cell ran"
    assert not any("<<attn-bench>>" in c.source for c in nb.cells), "probes are not saved"


def test_outcomes_part_reads_the_notebooks_own_numbers(smoke):
    data, _, lines, _ = smoke
    part = data["parts"]["outcomes"]
    assert part["mode"] == "quick" and part["smoke"] is True
    series = part["series"]
    assert {"bottleneck_02", "reversed_02"} <= set(series), part
    for key in ("bottleneck_02", "reversed_02"):
        acc, n = series[key]["acc"], series[key]["n"]
        assert acc and set(acc) == set(n)
        assert all(0.0 <= v <= 1.0 for v in acc.values())
        assert all(c >= 1 for c in n.values())
        assert {int(k) for k in acc} <= set(range(1, 13))  # copy task: lengths 1-12
    # the notebooks part executed the same notebook in the same mode: reused, not re-run
    assert nbbench.SMOKE_ID in outcomes.SMOKE_IDS
    assert any("reused" in line for line in lines), lines
    assert "reused" in part["sources"][nbbench.SMOKE_ID]["how"]


def test_markdown_has_both_tables(smoke):
    data, md, lines, _ = smoke
    assert "## Notebooks: as a student, and under autograding" in md
    assert "## Outcomes: sequence accuracy against length" in md
    assert f"| `{nbbench.SMOKE_ID}` |" in md
    assert "| source length | Bottleneck seq2seq (02) | Bottleneck, source reversed (02) |" in md
    assert "| 12 |" in md or "| 11 |" in md
    assert "meaningless" in md and "smoke run" in md
    floor = data["parts"]["notebooks"]["floor"]["seconds_median"]
    assert f"{floor:.2f} s" in md
    assert any("floor" in line for line in lines)


def test_outcomes_markdown_labels_missing_and_computed_columns():
    data = {"mode": "full", "sources": {"06_transformer_encoder": {"how": "x"}},
            "series": {
                "luong_04": {"acc": {"1": 1.0, "12": 0.9}, "n": {"1": 80, "12": 85}},
                "encoder_06": {"acc": {"4": 1.0, "12": 0.5}, "n": {"4": 100, "12": 110}}}}
    md = outcomes.markdown(data)
    assert md.startswith("## ")
    assert "| 1 | 1.00 | — |" in md and "| 12 | 0.90 | 0.50 |" in md
    assert "computed by the benchmark from the notebook's trained model" in md
    assert "`02_seq2seq_bottleneck`" in md  # not measured, and said so
    assert "meaningless" not in md


def test_probes_compile():
    for aid, code in outcomes.PROBES.items():
        compile(code, aid, "exec")


def test_smoke_run_checks_the_claims_of_the_prose_without_asserting_them(smoke):
    data, md, lines, _ = smoke
    part = data["parts"]["outcomes"]
    keys = [c.key for c in outcomes.CLAIMS[nbbench.SMOKE_ID]]
    assert [c["key"] for c in part["claims"]] == keys and keys
    for c in part["claims"]:
        assert c["id"] == nbbench.SMOKE_ID and isinstance(c["holds"], bool) and c["measured"]
        # every claim reads numbers the probe printed (a shrunk run may not support it)
        assert "could not be checked" not in c["measured"], c
    assert part["claims_hold"] is None and outcomes.failed_claims(part) == []
    assert "### Claims the notebooks' prose makes, checked" in md and "not asserted" in md
    assert any(line.startswith(f"  claim {nbbench.SMOKE_ID}/") for line in lines), lines


def test_claims_are_registered_by_notebook_and_checked_on_its_numbers(monkeypatch):
    monkeypatch.setattr(outcomes, "CLAIMS", {})

    @outcomes.claim("99_example", "big", "x is at least 2")
    def _big(n):
        return n["x"] >= 2, f"x = {n['x']}"

    @outcomes.claim("99_example", "named", "y is there")
    def _named(n):
        return True, str(n["y"])

    with pytest.raises(ValueError, match="twice"):
        outcomes.claim("99_example", "big", "again")(_big)
    checked = outcomes.check_claims("99_example", {"x": 1})
    assert [(c["key"], c["holds"]) for c in checked] == [("big", False), ("named", False)]
    assert checked[0]["measured"] == "x = 1" and checked[0]["claim"] == "x is at least 2"
    assert "could not be checked: KeyError" in checked[1]["measured"]
    assert all(not c["holds"] and c["measured"] == "no numbers from the notebook"
               for c in outcomes.check_claims("99_example", None))
    assert outcomes.check_claims("98_no_claims", {"x": 5}) == []


def test_full_run_asserts_claims_and_the_markdown_says_which_fail():
    claims = [{"id": "02_seq2seq_bottleneck", "key": "a", "claim": "A holds.", "holds": True,
               "measured": "1.00"},
              {"id": "04_luong_attention", "key": "b", "claim": "B holds.", "holds": False,
               "measured": "0.10"}]
    data = {"mode": "full", "sources": {}, "series": {}, "claims": claims,
            "claims_hold": False}
    assert outcomes.failed_claims(data) == [claims[1]]
    assert outcomes.failed_claims({**data, "mode": "quick"}) == []
    md = outcomes.markdown(data)
    assert "**1 of 2 hold.**" in md
    assert "| `04_luong_attention` | B holds. | 0.10 | **no** |" in md
    assert "| `02_seq2seq_bottleneck` | A holds. | 1.00 | yes |" in md


def test_every_notebook_with_claims_has_a_probe_that_prints_numbers():
    from attn_course.manifest import assignments

    assert set(outcomes.CLAIMS) == {a.id for a in assignments()}, "every notebook's prose"
    for aid, claims in outcomes.CLAIMS.items():
        assert aid in outcomes.PROBES and '"numbers"' in outcomes.PROBES[aid], aid
        assert len({c.key for c in claims}) == len(claims)
        assert all(c.aid == aid and c.text for c in claims)


def test_series_with_seeds_show_the_spread():
    data = {"mode": "full", "sources": {}, "series": {
        "luong_04": {"acc": {"12": 0.9}, "n": {"12": 80},
                     "runs": [{"12": 0.85}, {"12": 0.9}, {"12": 0.95}]}}}
    md = outcomes.markdown(data)
    assert "| 12 | 0.90 (0.85–0.95) |" in md and "lowest and highest seed" in md


NEW_PROBES = ("01_rnn_limits", "03_qkv_lookup", "05_self_attention", "06_transformer_encoder",
              "07_transformer_decoder")


@pytest.mark.parametrize("aid", NEW_PROBES)
def test_probe_reads_every_number_its_claims_need_in_a_quick_run(root, tmp_path, aid):
    # the notebook shrunk as autograding shrinks it (seconds), then its probe, as a full run
    # does it: the numbers mean nothing here, but every claim must find what it reads
    from attn_course.manifest import assignment

    nb_path = assignment(aid).source_notebook(root)
    result = nbbench.measure_once(
        {"kind": "nbclient", "notebook": str(nb_path), "cwd": str(nb_path.parent),
         "probe": outcomes.PROBES[aid], "out": str(tmp_path / f"{aid}.ipynb")},
        nbbench.student_env(quick=True))
    values = result["probe"]
    assert values and "error" not in values, values
    assert "numbers" in values
    checked = outcomes.check_claims(aid, values["numbers"])
    assert [c["key"] for c in checked] == [c.key for c in outcomes.CLAIMS[aid]] and checked
    for c in checked:
        assert isinstance(c["holds"], bool) and c["measured"], c
        assert "could not be checked" not in c["measured"], c
    json.dumps(values)  # what the results file will hold
    if aid == "07_transformer_decoder":
        series = values["series"]
        assert set(series) == {"bottleneck_07", "luong_07", "transformer_07"}
        assert len(series["transformer_07"]["runs"]) >= 1
        assert set(series["transformer_07"]["acc"]) == set(series["transformer_07"]["n"])


def test_the_transformer_of_07_stands_beside_02_and_04_in_the_table():
    runs = [{"12": 0.97}, {"12": 0.99}, {"12": 1.0}]
    data = {"mode": "full", "sources": {}, "series": {
        "bottleneck_02": {"acc": {"12": 0.05}, "n": {"12": 80}},
        "luong_04": {"acc": {"12": 0.9}, "n": {"12": 80}},
        "transformer_07": {"acc": {"12": 0.99}, "n": {"12": 80}, "runs": runs}}}
    md = outcomes.markdown(data)
    header = next(line for line in md.splitlines() if line.startswith("| source length"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == ["source length", "Bottleneck seq2seq (02)",
                       "Luong attention, general (04)", "Transformer encoder–decoder (07)"]
    assert "| 12 | 0.05 | 0.90 | 0.99 (0.97–1.00) |" in md
    assert "Columns 02, 04 and 07 share one task and one test split" in md
    assert "notebook 07 reaches 0.99 on the long strings" in md


def _bench_results(tmp_path, mode, holds):
    claims = [{"id": "07_transformer_decoder", "key": "cache-faster", "claim": "Faster.",
               "holds": holds, "measured": "×1.2"}]
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"parts": {"outcomes": {
        "mode": mode, "series": {}, "sources": {}, "claims": claims}}}))
    return path


@pytest.mark.parametrize("parts, mode, holds, code", [
    (["outcomes"], "full", False, 1),       # a claim of the prose fails: the bench fails
    ([], "full", False, 1),                 # every part, outcomes included
    (["outcomes"], "full", True, 0),
    (["outcomes"], "quick", False, 0),      # a smoke run asserts nothing
    (["notebooks"], "full", False, 0),      # outcomes not measured by this run
])
def test_bench_exits_nonzero_when_a_claim_fails(monkeypatch, tmp_path, capsys, parts, mode,
                                                 holds, code):
    from attn_course import cli

    path = _bench_results(tmp_path, mode, holds)
    monkeypatch.setattr(benchmarks, "run",
                        lambda *args, **kwargs: (tmp_path / "results.md", path))
    assert cli.main(["bench", *parts, "--out", str(tmp_path)]) == code
    out = capsys.readouterr().out
    assert ("07_transformer_decoder/cache-faster" in out) == bool(code), out
    if code:
        assert "Faster." in out and "×1.2" in out


def test_claims_table_escapes_the_pipes_of_the_math():
    claims = [{"id": "05_self_attention", "key": "q", "claim": "max |A − Aᵀ| ≤ 0.01.",
               "holds": True, "measured": "|A − Aᵀ| = 0.007"}]
    md = outcomes.markdown({"mode": "full", "sources": {}, "series": {}, "claims": claims,
                            "claims_hold": True})
    row = next(line for line in md.splitlines() if line.startswith("| `05_self_attention`"))
    assert row == r"| `05_self_attention` | max \|A − Aᵀ\| ≤ 0.01. | \|A − Aᵀ\| = 0.007 | yes |"
