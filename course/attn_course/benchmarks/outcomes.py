"""Accuracy against length of the bottleneck, Luong-attention and Transformer-encoder models,
as the notebooks produce them, in one table.

The numbers come from the worked solutions executed in full (student) mode: after the
notebook's last cell, a probe cell (:data:`PROBES`) runs in the same kernel and prints the
notebook's own result variables as JSON. The notebooks part of the benchmark runs the probes
while it executes the notebooks and leaves their output in ``build/bench/<mode>/``; this part
reuses it when it is fresh (same source notebook, helper package, probe and mode) and
executes the notebook itself otherwise.

- 02: ``acc`` and ``acc_rev`` (sequence accuracy by source length on the copy task, source
  as is and reversed), over ``test_data``;
- 04: ``acc_plain`` and ``acc_attn`` (the same copy task and split as 02: bottleneck seq2seq
  retrained in 04, and with Luong attention), over ``copy_test``;
- 06: the notebook reports only overall accuracies, so the probe computes sequence accuracy
  by length from the notebook's trained ``mirror_model`` on its ``held_out`` set (the mirror
  task), exactly as the notebook's ``accuracy`` does overall.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from attn_course.benchmarks.notebooks import MARK, bench_dir, fingerprint, run_student
from attn_course.manifest import assignment

_TEMPLATE = """\
import collections as _c, json as _j
def _bench_counts(lengths):
    return {int(k): int(v) for k, v in sorted(_c.Counter(lengths.tolist()).items())}
def _bench_acc(d):
    return {int(k): float(v) for k, v in d.items()}
try:
SETUP    _bench = BODY
except Exception as _e:
    _bench = {"error": f"{type(_e).__name__}: {_e}"}
print(MARK + _j.dumps(_bench))
"""


def _probe(body: str, setup: str = "") -> str:
    """A probe cell: ``body`` (an expression) evaluated after ``setup`` (statements); any
    error is reported, never raised, so a renamed variable costs the numbers, not the run."""
    indented = "".join(f"    {line}\n" for line in setup.splitlines())
    return (_TEMPLATE.replace("SETUP", indented).replace("BODY", body)
            .replace("MARK", repr(MARK)))


#: assignment id -> code run in the notebook's kernel after its last cell; prints
#: {series key: {"acc": {length: accuracy}, "n": {length: sequences}}} (or {"error": ...}).
PROBES = {
    "02_seq2seq_bottleneck": _probe(
        '{"bottleneck_02": {"acc": _bench_acc(acc), "n": _bench_counts(test_data.src_lengths)},'
        ' "reversed_02": {"acc": _bench_acc(acc_rev), "n": _bench_counts(test_rev.src_lengths)}}'),
    "04_luong_attention": _probe(
        '{"bottleneck_04": {"acc": _bench_acc(acc_plain),'
        ' "n": _bench_counts(copy_test.src_lengths)},'
        ' "luong_04": {"acc": _bench_acc(acc_attn), "n": _bench_counts(copy_test.src_lengths)}}'),
    "06_transformer_encoder": _probe(
        '{"encoder_06": {"acc": _bench_by_len, "n": _bench_counts(_bench_len)}}',
        setup="""\
import torch as _t
_bench_tok, _bench_tgt, _bench_len = held_out
_bench_mode = mirror_model.training
mirror_model.eval()
with _t.no_grad():
    _bench_pred = mirror_model(_bench_tok)[0].argmax(-1)
mirror_model.train(_bench_mode)
_bench_real = _bench_tgt != PAD
_bench_ok = ((_bench_pred == _bench_tgt) | ~_bench_real).all(dim=1)
_bench_by_len = {int(L): _bench_ok[_bench_len == L].float().mean().item()
                 for L in sorted(set(_bench_len.tolist()))}"""),
}

#: The table's columns, in order: series key -> (heading, notebook, note).
SERIES = {
    "bottleneck_02": ("Bottleneck seq2seq (02)", "02_seq2seq_bottleneck", "copy task"),
    "reversed_02": ("Bottleneck, source reversed (02)", "02_seq2seq_bottleneck", "copy task"),
    "bottleneck_04": ("Bottleneck seq2seq, retrained (04)", "04_luong_attention", "copy task"),
    "luong_04": ("Luong attention, general (04)", "04_luong_attention", "copy task"),
    "encoder_06": ("Transformer encoder (06)†", "06_transformer_encoder", "mirror task"),
}
SMOKE_IDS = ("02_seq2seq_bottleneck",)


def save_probe(path: Path, fingerprint: str, values: dict | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"fingerprint": fingerprint, "values": values}, indent=1),
                    encoding="utf-8")


def _load_probe(path: Path, fingerprint: str) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data["values"] if data.get("fingerprint") == fingerprint else None


def measure(root: Path, smoke: bool, log: Callable[[str], None] = print) -> dict:
    root = Path(root)
    quick = smoke
    ids = SMOKE_IDS if smoke else tuple(PROBES)
    out_dir = bench_dir(root, quick)
    series: dict[str, dict] = {}
    sources: dict[str, dict] = {}
    for aid in ids:
        a = assignment(aid)
        probe = PROBES[aid]
        fp = fingerprint(root, a, probe, quick)
        path = out_dir / f"{aid}.outcomes.json"
        values = _load_probe(path, fp)
        if values is not None:
            how = ("reused: an earlier execution (normally the notebooks part of this run) "
                   "of the same source, helpers and probe")
            log(f"  {aid}: numbers reused from {path.relative_to(root)}")
        else:
            log(f"  {aid}: executing the worked solution" + (" (quick)" if quick else ""))
            result = run_student(root, a, quick)
            how = f"executed for this part ({result['seconds']:.0f} s)"
            values = _load_probe(path, fp)
        if values is None or "error" in values:
            problem = (values or {}).get("error", "the probe produced nothing")
            sources[aid] = {"how": how, "error": problem}
            log(f"  {aid}: no numbers: {problem}")
            continue
        sources[aid] = {"how": how, "file": str((out_dir / f"{aid}.ipynb").relative_to(root))}
        for key, value in values.items():
            series[key] = {"acc": {str(k): v for k, v in value["acc"].items()},
                           "n": {str(k): v for k, v in value["n"].items()}}
    return {"mode": "quick" if quick else "full", "series": series, "sources": sources}


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def _mean(series: dict, lo: int, hi: int) -> float | None:
    vals = [v for k, v in series["acc"].items() if lo <= int(k) <= hi]
    return sum(vals) / len(vals) if vals else None


def _summary(data: dict) -> str:
    s = data["series"]
    parts = []
    if "bottleneck_02" in s:
        short, long = _mean(s["bottleneck_02"], 1, 4), _mean(s["bottleneck_02"], 10, 12)
        parts.append(f"the bottleneck seq2seq of notebook 02 copies {_fmt(short)} of the "
                     f"strings of length 1–4 but {_fmt(long)} of those of length 10–12")
        if "reversed_02" in s:
            parts.append(f"reversing the source gives {_fmt(_mean(s['reversed_02'], 10, 12))} "
                         "on the long ones")
    if "luong_04" in s:
        text = (f"with Luong attention (04) the long strings reach "
                f"{_fmt(_mean(s['luong_04'], 10, 12))}")
        if "bottleneck_04" in s:
            text += (f", against {_fmt(_mean(s['bottleneck_04'], 10, 12))} for the same "
                     "bottleneck model trained the same way in 04")
        parts.append(text)
    out = []
    if parts:
        out.append("Mean over lengths, on the copy task: " + "; ".join(parts) + ".")
    if "encoder_06" in s:
        e = s["encoder_06"]
        lengths = sorted(int(k) for k in e["acc"])
        out.append(
            f"† A different task and model: the encoder of notebook 06 tags every position of a "
            f"sequence with its mirror (lengths {lengths[0]}–{lengths[-1]}, no decoder); its "
            "sequence accuracy by length is *computed by the benchmark from the notebook's "
            "trained model* on the notebook's held-out set (the notebook itself reports only "
            f"the overall figure). Lengths 4–6: {_fmt(_mean(e, 4, 6))}, lengths 10–12: "
            f"{_fmt(_mean(e, 10, 12))}.")
    return "\n\n".join(out)


def markdown(data: dict) -> str:
    s = data["series"]
    out = ["## Outcomes: sequence accuracy against length", ""]
    intro = ("Exact-match sequence accuracy on each notebook's held-out set, by source length, "
             "from the worked solutions executed as a student runs them "
             f"({data['mode']} mode). Columns 02 and 04 share one task and one test split "
             "(copying digit strings of length 1–12).")
    if data["mode"] != "full":
        intro += (" **Smoke run: the demos were shrunk to a few steps, so these numbers are "
                  "meaningless; only the plumbing is checked.**")
    out += [intro, ""]
    keys = [k for k in SERIES if k in s]
    if not keys:
        out.append("(no accuracy numbers were produced)")
    else:
        lengths = sorted({int(L) for k in keys for L in s[k]["acc"]})
        out.append("| source length | " + " | ".join(SERIES[k][0] for k in keys) + " |")
        out.append("|--:|" + "--:|" * len(keys))
        for L in lengths:
            out.append(f"| {L} | " + " | ".join(_fmt(s[k]["acc"].get(str(L))) for k in keys)
                       + " |")
        ns = []
        for k in keys:
            counts = list(s[k]["n"].values())
            ns.append(f"{min(counts)}–{max(counts)}" if min(counts) != max(counts)
                      else str(counts[0]))
        out.append("| *sequences per length* | " + " | ".join(ns) + " |")
        out += ["", _summary(data)]
    missing = [f"`{aid}` ({info['error']})" for aid, info in data["sources"].items()
               if "error" in info]
    absent = sorted({nb for _, nb, _ in SERIES.values()} - {SERIES[k][1] for k in keys}
                    - set(data["sources"]))
    if missing:
        out += ["", "No numbers from " + ", ".join(missing) + "."]
    if absent:
        out += ["", "Not measured in this run: " + ", ".join(f"`{a}`" for a in absent) + "."]
    return "\n".join(out) + "\n"

