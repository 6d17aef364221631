"""What the notebooks' models learn, as the notebooks produce them: accuracy against length of
the bottleneck, Luong-attention and Transformer-encoder models in one table, each notebook's
headline numbers with their spread over seeds, and the **claims** its prose makes about them,
each checked against those numbers.

The numbers come from the worked solutions executed in full (student) mode: after the
notebook's last cell, a probe cell (:data:`PROBES`) runs in the same kernel and prints the
notebook's own result variables as JSON. The notebooks part of the benchmark runs the probes
while it executes the notebooks and leaves their output in ``build/bench/<mode>/``; this part
reuses it when it is fresh (same source notebook, helper package, probe and mode) and
executes the notebook itself otherwise.

A probe prints either ``{series key: {"acc": ..., "n": ...}}`` (accuracy by length only) or
``{"series": {...}, "numbers": {...}}``, where ``numbers`` holds the headline numbers the
notebook's prose rests on (per seed where the notebook trains several). A series may carry
``"runs"``: one ``{length: accuracy}`` per seed; ``"acc"`` is then their mean.

**Claims.** :data:`CLAIMS` maps an assignment id to the sentences its prose asserts, each with
a function that checks it on the probe's ``numbers`` (register one with :func:`claim`). A full
run checks every claim of every notebook it measured, logs which hold, and records them
(``claims``, ``claims_hold`` in the results); a smoke run checks them too, but its numbers come
from shrunk demos, so nothing is asserted. Add a notebook's claims beside its probe when its
prose cites a number.

- 02: accuracy by length over ``test_data`` of the three seeds' models (``acc_runs``), source
  as is and reversed (``acc_rev_runs``), on the training strings (``acc_train_runs``), the
  learning curves on long strings (``histories``, ``history_long``), accuracy by output
  position (``positions``), whole-string accuracy greedy vs teacher-forced;
- 04: the same copy task and split as 02 (``acc_plain_runs``, ``acc_attn_runs`` over
  ``copy_test``), parameters and seconds per epoch, the copy heatmap's diagonal, the gradient
  at initialisation, the date model's mistakes and month-row weights, the addition curves;
- 06: the notebook reports only overall accuracies, so the probe computes sequence accuracy
  by length from the notebook's trained ``mirror_model`` on its ``held_out`` set (the mirror
  task), exactly as the notebook's ``accuracy`` does overall.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
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
#: {series key: {"acc": {length: accuracy}, "n": {length: sequences}}}, or
#: {"series": {...}, "numbers": {...}} (or {"error": ...}).
PROBES = {
    "02_seq2seq_bottleneck": _probe(
        '{"series": {'
        '"bottleneck_02": {"acc": _bench_acc(acc), "runs": _b_runs(acc_runs),'
        ' "n": _bench_counts(test_data.src_lengths)},'
        ' "reversed_02": {"acc": _bench_acc(acc_rev), "runs": _b_runs(acc_rev_runs),'
        ' "n": _bench_counts(test_rev.src_lengths)}},'
        ' "numbers": _b_numbers}',
        setup="""\
_b_runs = lambda runs: [_bench_acc(r) for r in runs]
_b_curve = lambda h: [[float(x) for x in pair] for pair in h["on_epoch"]]
_b_long = long_strings(test_data)
_b_numbers = {
    "epochs": EPOCHS, "long_epochs": LONG_EPOCHS, "seeds": list(SEEDS),
    "test": _b_runs(acc_runs), "train": _b_runs(acc_train_runs), "reversed": _b_runs(acc_rev_runs),
    "loss": [h["loss"] for h in histories.values()],
    "long_curves": [_b_curve(h) for h in histories.values()],
    "long_run_curve": _b_curve(history_long), "long_run_loss": history_long["loss"],
    "positions": {k: [[float(a) for a in r] for r in v] for k, v in positions.items()},
    "long_exact": [[sequence_accuracy(m, _b_long), teacher_forced_exact_match(m, _b_long)]
                   for m in models.values()],
}"""),
    "04_luong_attention": _probe(
        '{"series": {'
        '"bottleneck_04": {"acc": _bench_acc(acc_plain), "runs": _b_runs(acc_plain_runs),'
        ' "n": _bench_counts(copy_test.src_lengths)},'
        ' "luong_04": {"acc": _bench_acc(acc_attn), "runs": _b_runs(acc_attn_runs),'
        ' "n": _bench_counts(copy_test.src_lengths)}},'
        ' "numbers": _b_numbers}',
        setup="""\
_b_runs = lambda runs: [_bench_acc(r) for r in runs]
def _b_example(text):
    _tokens, _attn, _src = translate(text)
    return {"out": date_data.tgt_vocab.decode(_tokens),
            "month_row": [[ch, float(w)] for ch, w in zip(date_data.src_vocab.tokens(_src),
                                                          _attn[MONTH_DIGIT].tolist())]}
_b_numbers = {
    "seeds": list(SEEDS), "epochs_plain": EPOCHS_PLAIN, "epochs_attention": EPOCHS_ATTN,
    "plain": _b_runs(acc_plain_runs), "attention": _b_runs(acc_attn_runs),
    "params_plain": n_parameters(plain), "params_attention": n_parameters(attentive),
    "seconds_plain": [h["seconds"] for h in plain_histories],
    "seconds_attention": [h["seconds"] for h in attn_histories],
    "loss_plain": [h["loss"] for h in plain_histories],
    "loss_attention": [h["loss"] for h in attn_histories],
    "diagonal": float(on_diagonal[rows].float().mean()),
    "gradient_ratio": {k: [float(x) for x in v] for k, v in grad_ratios.items()},
    "dates_accuracy": float(dates_accuracy), "dates_test": len(dates_test),
    "dates_wrong": [list(w) for w in wrong],
    "jul": {"n": len(jul), "as_06": sum(g[5:7] == "06" for g in jul)},
    "one_digit": {"n": len(one_digit), "wrong": sum(g != t for g, t in one_digit)},
    "examples": {t: _b_example(t) for t in ("4 jun 2011", "4 jul 2011", "4 july 2011")},
    "addition": {k: [[float(a) for a in r] for r in v] for k, v in curves_.items()},
}"""),
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


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A sentence a notebook's prose asserts about its results, and how to check it:
    ``check(numbers) -> (holds, what was measured)``, ``numbers`` being the notebook probe's."""

    aid: str
    key: str
    text: str
    check: Callable[[dict], tuple[bool, str]]


#: assignment id -> the claims its prose makes, in notebook order.
CLAIMS: dict[str, list[Claim]] = {}


def claim(aid: str, key: str, text: str):
    """Register the decorated ``check(numbers) -> (holds, measured)`` as a claim of ``aid``."""
    def register(check: Callable[[dict], tuple[bool, str]]):
        if any(c.key == key for c in CLAIMS.get(aid, [])):
            raise ValueError(f"claim {aid}/{key} registered twice")
        CLAIMS.setdefault(aid, []).append(Claim(aid, key, text, check))
        return check
    return register


def check_claims(aid: str, numbers: dict | None) -> list[dict]:
    """Every claim of ``aid`` checked on ``numbers``; a check that raises, or missing numbers,
    counts as a claim that does not hold (the message says why)."""
    out = []
    for c in CLAIMS.get(aid, []):
        if numbers is None:
            holds, measured = False, "no numbers from the notebook"
        else:
            try:
                holds, measured = c.check(numbers)
                holds = bool(holds)
            except Exception as exc:  # a renamed variable, a missing key: reported, not raised
                holds, measured = False, f"could not be checked: {type(exc).__name__}: {exc}"
        out.append({"id": aid, "key": c.key, "claim": c.text, "holds": holds,
                    "measured": measured})
    return out


def failed_claims(data: dict) -> list[dict]:
    """The claims of a full run that do not hold (a smoke run asserts nothing)."""
    if data.get("mode") != "full":
        return []
    return [c for c in data.get("claims", []) if not c["holds"]]


def _acc(run: dict, length: int) -> float:
    return run[str(length)] if str(length) in run else run[length]


def _over(runs: list[dict], length: int) -> list[float]:
    return [_acc(r, length) for r in runs]


def _span(values) -> str:
    values = list(values)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{sum(values) / len(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def _avg(values) -> float:
    values = list(values)
    return sum(values) / len(values)


# --- 02 ------------------------------------------------------------------------------------

_02 = "02_seq2seq_bottleneck"


@claim(_02, "short-strings", "Strings of up to 4 digits are copied almost always (≥ 0.95 "
       "for every seed).")
def _short(n):
    worst = min(min(_over(n["test"], L)) for L in range(1, 5))
    return worst >= 0.95, f"worst seed over lengths 1–4: {worst:.2f}"


@claim(_02, "falls", "Accuracy falls with length: at 12 digits every seed copies ≤ 0.10 of "
       "new strings, at 10 digits ≤ 0.35.")
def _falls(n):
    a12, a10 = _over(n["test"], 12), _over(n["test"], 10)
    return max(a12) <= 0.10 and max(a10) <= 0.35, f"length 12: {_span(a12)}; 10: {_span(a10)}"


@claim(_02, "seeds-agree", "The three seeds agree: at every length their accuracies lie "
       "within 0.15 of each other.")
def _seeds_agree(n):
    widest = max(max(_over(n["test"], L)) - min(_over(n["test"], L)) for L in range(1, 13))
    return widest <= 0.15, f"widest spread over lengths 1–12: {widest:.2f}"


@claim(_02, "seen-better", "The models copy the 10-digit strings they were trained on far "
       "more often than new ones: at least 0.2 more for every seed, about three times as many "
       "on average (≥ 2.5×).")
def _seen_better(n):
    seen, new = _over(n["train"], 10), _over(n["test"], 10)
    gaps = [tr - te for tr, te in zip(seen, new)]
    ratio = _avg(seen) / max(_avg(new), 1e-9)
    return min(gaps) >= 0.2 and ratio >= 2.5, (
        f"length 10: trained on {_span(seen)}, new {_span(new)} (×{ratio:.1f})")


@claim(_02, "parting", "At the end of the main runs every seed copies at least twice as many "
       "long (10–12 digit) strings it trained on as new ones.")
def _parting(n):
    if not all(n["long_curves"]):
        return False, "no learning curves (nothing was trained)"
    ends = [curve[-1] for curve in n["long_curves"]]
    return all(seen >= 2 * new for seen, new in ends), (
        f"trained on {_span(s for s, _ in ends)}, new {_span(w for _, w in ends)}")


@claim(_02, "longer-memorises", "Twice the epochs (one run): the long strings it trained on "
       "reach ≥ 0.7, new ones stay ≤ 0.35; over the last quarter of training the trained-on "
       "ones gain ≥ 0.1 and at least 3× what new ones gain.")
def _longer(n):
    curve = n["long_run_curve"]
    if len(curve) < 4:
        return False, "no learning curve (nothing was trained)"
    k = 3 * len(curve) // 4
    seen_end, new_end = curve[-1]
    seen_gain, new_gain = seen_end - curve[k - 1][0], new_end - curve[k - 1][1]
    ok = (seen_end >= 0.7 and new_end <= 0.35 and seen_gain >= 0.1
          and seen_gain >= 3 * new_gain)
    return ok, (f"{n['long_epochs']} epochs: trained on {seen_end:.2f} (+{seen_gain:.2f} in the "
                f"last quarter), new {new_end:.2f} (+{new_gain:.2f})")


@claim(_02, "reversal-helps", "Reversing the source helps: higher mean accuracy over the "
       "lengths, and from 6 to 11 digits the worst reversed seed beats the best seed read as "
       "is.")
def _reversal(n):
    margins = [min(_over(n["reversed"], L)) - max(_over(n["test"], L)) for L in range(6, 12)]
    rev = _avg(_avg(_over(n["reversed"], L)) for L in range(1, 13))
    fwd = _avg(_avg(_over(n["test"], L)) for L in range(1, 13))
    return min(margins) > 0 and rev > fwd, (
        f"mean over lengths: reversed {rev:.2f}, as is {fwd:.2f}; smallest margin over "
        f"lengths 6–11: {min(margins):+.2f}")


@claim(_02, "reversal-still-falls", "Reversed, the curve still falls: ≤ 0.35 at 12 digits "
       "for every seed.")
def _reversal_falls(n):
    a12 = _over(n["reversed"], 12)
    return max(a12) <= 0.35, f"reversed, length 12: {_span(a12)}"


@claim(_02, "first-digits-best", "Per position (10–12 digits, greedy): the first digit is "
       "right ≥ 0.95 of the time in both reading orders, accuracy falls by ≥ 0.3 by position "
       "10, and every position is far above chance (≥ 0.3 against 0.1).")
def _first_best(n):
    ok, parts = True, []
    for name in ("as is, greedy", "reversed, greedy"):
        pos = [_avg(col) for col in zip(*n["positions"][name])]
        ok &= pos[0] >= 0.95 and pos[0] - pos[9] >= 0.3 and min(pos) >= 0.3
        parts.append(f"{name}: {pos[0]:.2f} → {pos[9]:.2f} (lowest {min(pos):.2f})")
    return ok, "; ".join(parts)


@claim(_02, "reversal-helps-late", "Reversal leaves the first five positions as they were "
       "(within 0.06) and helps the later ones (≥ 0.1 better at position 10).")
def _late(n):
    fwd = [_avg(col) for col in zip(*n["positions"]["as is, greedy"])]
    rev = [_avg(col) for col in zip(*n["positions"]["reversed, greedy"])]
    early = max(abs(a - b) for a, b in zip(fwd[:5], rev[:5]))
    return early <= 0.06 and rev[9] - fwd[9] >= 0.1, (
        f"largest difference at positions 1–5: {early:.2f}; position 10: as is {fwd[9]:.2f}, "
        f"reversed {rev[9]:.2f}")


@claim(_02, "teacher-forcing-price", "Fed the truth (teacher forcing) the models get late "
       "digits right far more often than fed their own outputs (≥ 0.2 more at position 10), "
       "and never less often (beyond 0.01).")
def _price(n):
    tf = [_avg(col) for col in zip(*n["positions"]["as is, teacher-forced"])]
    gr = [_avg(col) for col in zip(*n["positions"]["as is, greedy"])]
    gap = tf[9] - gr[9]
    return gap >= 0.2 and min(t - g for t, g in zip(tf, gr)) >= -0.01, (
        f"position 10: teacher-forced {tf[9]:.2f}, greedy {gr[9]:.2f}")


@claim(_02, "same-whole-strings", "Whole long strings: greedy and teacher-forced exact match "
       "are equal for every seed.")
def _same_whole(n):
    diffs = [abs(g - t) for g, t in n["long_exact"]]
    return max(diffs) <= 1e-6, "greedy vs teacher-forced: " + ", ".join(
        f"{g:.3f}/{t:.3f}" for g, t in n["long_exact"])


# --- 04 ------------------------------------------------------------------------------------

_04 = "04_luong_attention"


@claim(_04, "attention-long", "With attention every seed copies ≥ 0.8 of the 12-digit "
       "strings, where the bottleneck model copies ≤ 0.05.")
def _attn_long(n):
    att, pl = _over(n["attention"], 12), _over(n["plain"], 12)
    return min(att) >= 0.8 and max(pl) <= 0.05, (
        f"length 12: attention {_span(att)}, bottleneck {_span(pl)}")


@claim(_04, "attention-everywhere", "The attention models copy about 90% or more at every "
       "length, for every seed (≥ 0.88).")
def _attn_all(n):
    worst = min(min(_over(n["attention"], L)) for L in range(1, 13))
    return worst >= 0.88, f"worst seed and length: {worst:.3f}"


@claim(_04, "parameters", "Attention adds W_a and W_c: 12,352 parameters to the plain "
       "model's 32,749 (+38%).")
def _params(n):
    extra = n["params_attention"] - n["params_plain"]
    return (extra == 12352 and n["params_plain"] == 32749,
            f"{n['params_plain']:,} vs {n['params_attention']:,} (+{extra:,})")


@claim(_04, "same-time", "With twice the epochs the plain model trains in about the same time "
       "as the attention model (within a factor 1.5 either way).")
def _same_time(n):
    plain, attn = _avg(n["seconds_plain"]), _avg(n["seconds_attention"])
    ratio = plain / attn
    return 1 / 1.5 <= ratio <= 1.5, (f"{plain:.1f} s per plain model, {attn:.1f} s per "
                                      f"attention model (ratio {ratio:.2f})")


@claim(_04, "plain-not-converged", "The plain model had not converged: its training loss ends "
       "above 0.1 and still falling, for every seed, while the attention model's ends below "
       "0.01.")
def _not_converged(n):
    if not all(len(loss) >= 2 for loss in n["loss_plain"] + n["loss_attention"]):
        return False, "no loss curves (nothing was trained)"
    drops = [loss[-2] - loss[-1] for loss in n["loss_plain"]]
    att = [loss[-1] for loss in n["loss_attention"]]
    ends = [loss[-1] for loss in n["loss_plain"]]
    return min(drops) > 0 and min(ends) > 0.1 and max(att) < 0.01, (
        f"plain: last-epoch drop {_span(drops)}, final {_span(l[-1] for l in n['loss_plain'])}; "
        f"attention final {_span(att)}")


@claim(_04, "diagonal", "Copying, the row that writes digit i looks hardest at source "
       "position i (≥ 0.95 of the rows).")
def _diagonal(n):
    return n["diagonal"] >= 0.95, f"{n['diagonal']:.3f} of the rows"


@claim(_04, "gradient", "At initialisation the first output's gradient at x_1 is more than "
       "200× smaller than at x_12 without attention, and within 3× of it with attention.")
def _gradient(n):
    plain = n["gradient_ratio"]["seq2seq"]
    attn = n["gradient_ratio"]["seq2seq + attention"]
    return max(plain) < 1 / 200 and min(attn) >= 1 / 3, (
        f"x_1 / x_12: without attention {', '.join(f'{r:.2g}' for r in plain)}; with "
        f"{', '.join(f'{r:.2g}' for r in attn)}")


def _month_row(example: dict) -> tuple[str, float, dict]:
    weights: dict[str, float] = {}
    for ch, w in example["month_row"]:
        weights[ch] = weights.get(ch, 0.0) + w
    top = max(weights, key=weights.get)
    return top, weights[top], weights


@claim(_04, "jul-mistake", "'4 jul 2011' comes out as 2011-06-04: the row writing the "
       "month's second digit looks at 'u' (≥ 0.9), not at 'l' (≤ 0.05); '4 july 2011' comes "
       "out right, looking mostly at 'y'.")
def _jul(n):
    ex = n["examples"]
    top, w, weights = _month_row(ex["4 jul 2011"])
    top_y, w_y, _ = _month_row(ex["4 july 2011"])
    ok = (ex["4 jul 2011"]["out"] == "2011-06-04" and top == "u" and w >= 0.9
          and weights.get("l", 0.0) <= 0.05 and ex["4 july 2011"]["out"] == "2011-07-04"
          and top_y == "y")
    return ok, (f"'4 jul 2011' -> {ex['4 jul 2011']['out']}, month row on "
                f"'u' {weights.get('u', 0):.2f}, 'l' {weights.get('l', 0):.2f}; "
                f"'4 july 2011' -> {ex['4 july 2011']['out']}, looking at {top_y!r} {w_y:.2f}")


@claim(_04, "jul-systematic", "In the test set every 'jul' comes out as month 06, and these "
       "are a large share (≥ 1/3) of the date model's mistakes.")
def _jul_all(n):
    j, wrong = n["jul"], len(n["dates_wrong"])
    ok = j["n"] > 0 and j["as_06"] == j["n"] and j["as_06"] >= wrong / 3
    return ok, (f"{j['as_06']} of {j['n']} 'jul' dates as 06; {wrong} of {n['dates_test']} "
                f"dates wrong (accuracy {n['dates_accuracy']:.3f})")


@claim(_04, "other-mistakes", "The date model's other mistakes are one-digit days written "
       "'month d, yyyy'.")
def _other_mistakes(n):
    j, d, wrong = n["jul"], n["one_digit"], len(n["dates_wrong"])
    return j["as_06"] + d["wrong"] == wrong, (
        f"{wrong} mistakes: {j['as_06']} 'jul' as 06, {d['wrong']} of {d['n']} one-digit days "
        "written 'month d, yyyy'")


@claim(_04, "addition-fast", "Addition: attention reaches 90% by epoch 7 in every seed; the "
       "plain model is below 30% after all its epochs, in every seed, and still improving.")
def _addition(n):
    att, pl = n["addition"]["seq2seq + attention"], n["addition"]["seq2seq"]
    if not all(len(r) >= 2 for r in att + pl):
        return False, "no learning curves (nothing was trained)"
    firsts = [next((i + 1 for i, a in enumerate(r) if a >= 0.9), None) for r in att]
    ok = all(f is not None and f <= 7 for f in firsts)
    ok &= max(r[-1] for r in pl) < 0.3 and min(r[-1] - r[-2] for r in pl) > 0
    return ok, (f"attention reaches 90% at epochs {firsts}; plain ends at "
                f"{_span(r[-1] for r in pl)}, last-epoch gain {_span(r[-1] - r[-2] for r in pl)}")


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
    numbers: dict[str, dict] = {}
    claims: list[dict] = []
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
            checked = check_claims(aid, None)
        else:
            sources[aid] = {"how": how,
                            "file": str((out_dir / f"{aid}.ipynb").relative_to(root))}
            if "series" in values or "numbers" in values:
                found, numbers[aid] = values.get("series", {}), values.get("numbers")
            else:
                found = values
            for key, value in found.items():
                series[key] = {"acc": {str(k): v for k, v in value["acc"].items()},
                               "n": {str(k): v for k, v in value["n"].items()}}
                if value.get("runs"):
                    series[key]["runs"] = [{str(k): v for k, v in run.items()}
                                           for run in value["runs"]]
            checked = check_claims(aid, numbers.get(aid))
        for c in checked:
            verdict = "holds" if c["holds"] else ("FAILS" if not quick else "does not hold")
            log(f"  claim {aid}/{c['key']}: {verdict} ({c['measured']})")
        claims += checked
    data = {"mode": "quick" if quick else "full", "series": series, "sources": sources,
            "numbers": numbers, "claims": claims,
            "claims_hold": all(c["holds"] for c in claims) if not quick else None}
    failed = failed_claims(data)
    if failed:
        log(f"  {len(failed)} claim(s) of the notebooks' prose do NOT hold: "
            + ", ".join(f"{c['id']}/{c['key']}" for c in failed))
    elif claims and not quick:
        log(f"  all {len(claims)} claims of the notebooks' prose hold")
    return data


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
            text += (f", against {_fmt(_mean(s['bottleneck_04'], 10, 12))} for the "
                     "bottleneck model retrained in 04")
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
            out.append(f"| {L} | " + " | ".join(_cell(s[k], L) for k in keys) + " |")
        ns = []
        for k in keys:
            counts = list(s[k]["n"].values())
            ns.append(f"{min(counts)}–{max(counts)}" if min(counts) != max(counts)
                      else str(counts[0]))
        out.append("| *sequences per length* | " + " | ".join(ns) + " |")
        seeds = [k for k in keys if len(s[k].get("runs", [])) > 1]
        if seeds:
            out += ["", "Where a notebook trains several seeds (" + ", ".join(
                f"{SERIES[k][0]}: {len(s[k]['runs'])}" for k in seeds) + "), a cell shows "
                "the mean and, in brackets, the lowest and highest seed."]
        out += ["", _summary(data)]
    missing = [f"`{aid}` ({info['error']})" for aid, info in data["sources"].items()
               if "error" in info]
    absent = sorted({nb for _, nb, _ in SERIES.values()} - {SERIES[k][1] for k in keys}
                    - set(data["sources"]))
    if missing:
        out += ["", "No numbers from " + ", ".join(missing) + "."]
    if absent:
        out += ["", "Not measured in this run: " + ", ".join(f"`{a}`" for a in absent) + "."]
    out += ["", *_claims_markdown(data)]
    return "\n".join(out).rstrip() + "\n"


def _cell(series: dict, length: int) -> str:
    runs = series.get("runs") or []
    values = [r[str(length)] for r in runs if str(length) in r]
    if len(values) > 1:
        return f"{sum(values) / len(values):.2f} ({min(values):.2f}–{max(values):.2f})"
    return _fmt(series["acc"].get(str(length)))


def _claims_markdown(data: dict) -> list[str]:
    claims = data.get("claims") or []
    if not claims:
        return []
    held = sum(c["holds"] for c in claims)
    out = ["### Claims the notebooks' prose makes, checked", ""]
    if data["mode"] != "full":
        out += ["Smoke run: the numbers come from shrunk demos, so the claims are checked "
                "for the plumbing only and **not asserted**.", ""]
    else:
        out += [f"**{held} of {len(claims)} hold.** Each sentence is what the notebook says; "
                "*measured* is what the executed notebook printed (per seed where it trains "
                "several: mean and, in brackets, lowest–highest).", ""]
    out += ["| notebook | claim | measured | holds |", "|---|---|---|:-:|"]
    for c in claims:
        mark = "yes" if c["holds"] else "**no**"
        out.append(f"| `{c['id']}` | {c['claim']} | {c['measured']} | {mark} |")
    return out

