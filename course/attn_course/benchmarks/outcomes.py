"""What the notebooks' models learn, as the notebooks produce them: accuracy against length of
the bottleneck, Luong-attention and Transformer models in one table, each notebook's headline
numbers with their spread over seeds, and the **claims** its prose makes about them, each
checked against those numbers.

The numbers come from the worked solutions executed in full (student) mode: after the
notebook's last cell, a probe cell (:data:`PROBES`) runs in the same kernel and prints the
notebook's own result variables as JSON. The notebooks part of the benchmark runs the probes
while it executes the notebooks and leaves their output in ``build/bench/<mode>/``; this part
reuses it when it is fresh (same source notebook, helper package, probe and mode) and
executes the notebook itself otherwise.

A probe prints either ``{series key: {"acc": ..., "n": ...}}`` (accuracy by length only) or
``{"series": {...}, "numbers": {...}}``, where ``numbers`` holds the headline numbers the
notebook's prose rests on (per seed where the notebook trains several). A series may carry
``"runs"``: one ``{length: accuracy}`` per seed; ``"acc"`` is then their mean. A probe never
trains: it reads the notebook's variables, and where the prose cites a number the notebook
prints but does not keep, it recomputes it from the notebook's objects exactly as the
notebook's cell does (cheap: a forward pass, a gradient, a few generations). Its own names
start with ``_b`` or ``_bench`` so that it clobbers nothing it reads.

**Claims.** :data:`CLAIMS` maps an assignment id to the sentences its prose asserts, each with
a function that checks it on the probe's ``numbers`` (register one with :func:`claim`). A full
run checks every claim of every notebook it measured, logs which hold, and records them
(``claims``, ``claims_hold`` in the results); ``attn-course bench`` exits 1 when one fails. A
smoke run checks them too, but its numbers come from shrunk demos, so nothing is asserted.
A claim uses the prose's own thresholds; a number the prose gives to two decimals is checked
rounded to two decimals, and "about" is spelled out in the claim's text (for example "within
a factor √10"). Add a notebook's claims beside its probe when its prose cites a number.

- 01: the gradient profiles by spectral radius (per-step factors, σ_max, g at 40 steps back
  recomputed in float64), the recall runs per delay and seed (accuracy, steps), and for seed 0
  the gradient at the first symbol and the forget-gate products (recomputed as the notebook's
  cell does);
- 02: accuracy by length over ``test_data`` of the three seeds' models (``acc_runs``), source
  as is and reversed (``acc_rev_runs``), on the training strings (``acc_train_runs``), the
  learning curves on long strings (``histories``, ``history_long``), accuracy by output
  position (``positions``), whole-string accuracy greedy vs teacher-forced;
- 03: deterministic measurements (no training): the hard lookup's gradient and ties, the
  temperature tables, the √d statistics, the padded sentence, kernel regression's bandwidths;
- 04: the same copy task and split as 02 (``acc_plain_runs``, ``acc_attn_runs`` over
  ``copy_test``), parameters and seconds per epoch, the copy heatmap's diagonal, the gradient
  at initialisation, the date model's mistakes and month-row weights, the addition curves;
- 05: the softmax statistics by d_k, the hand-set it → animal weights, equivariance gaps, the
  previous-token and next-token models per seed (accuracies, where their attention sits), the
  memory of one attention call;
- 06: the notebook reports only overall accuracies, so the probe computes sequence accuracy
  by length from the notebook's trained ``mirror_model`` on its ``held_out`` set (the mirror
  task), exactly as the notebook's ``accuracy`` does overall; and the pre/post-LN gradient
  ratios, the mirror runs per set-up and seed, the weight each head puts on the mirror, the
  neighbours task's heads, the cost slopes;
- 07: the copy task and split of 02 and 04 (``acc_seq2seq_runs``, ``acc_luong_runs``: one run
  each; ``acc_transformer_runs``: three seeds; over ``copy_test``), causality of one pass, the
  cross-attention's share on the date field being written, the key/value cache's tokens and
  time per token.
"""

from __future__ import annotations

import json
import math
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
    "01_rnn_limits": _probe(
        '{"numbers": _b_numbers}',
        setup="""\
import torch as _t
_b_radii = {}
for _b_rho in radii:
    _b_g, _ = gradient_profile(_b_rho, 1e-15)
    _b_radii[str(_b_rho)] = {
        "sigma_max": _t.linalg.matrix_norm(with_spectral_radius(W_base, _b_rho), 2).item(),
        "factor_linear": factor[_b_rho, 1e-15], "factor_saturated": factor[_b_rho, 1.0],
        "max_h_linear": largest_h[_b_rho, 1e-15], "max_h_saturated": largest_h[_b_rho, 1.0],
        "slope_saturated": slope[_b_rho, 1.0],
        "g40_over_g0": (_b_g[40] / _b_g[0]).item(),
        "g_max_over_min": (_b_g.max() / _b_g.min()).item()}
_b_seed0 = []
for _b_name, (_b_cell, _b_bias, _b_lags) in configs.items():
    for _b_lag in _b_lags:
        seed_everything(0)
        _b_start, _b_run = Recaller(_b_cell, _b_bias), runs[_b_name, _b_lag][0]
        _b_row = {"name": _b_name, "lag": _b_lag, "accuracy": _b_run["accuracy"],
                  "gradient_first_over_last": first_symbol_gradient(_b_start, _b_lag)}
        if _b_cell == "lstm":
            _b_p0 = forget_product(_b_start, _b_lag)
            _b_p1 = forget_product(_b_run["model"], _b_lag)
            _b_row.update(forget_init_best=_b_p0.max().item(),
                          forget_init_median=_b_p0.median().item(),
                          forget_trained_best=_b_p1.max().item(),
                          forget_trained_median=_b_p1.median().item())
        _b_seed0.append(_b_row)
_b_numbers = {
    "radii": _b_radii, "max_steps": MAX_STEPS, "seeds": len(SEEDS),
    "recall": {name: {str(lag): {"accuracy": [r["accuracy"] for r in runs[name, lag]],
                                 "steps": [r["steps"] for r in runs[name, lag]]}
                      for lag in lags} for name, (_, _, lags) in configs.items()},
    "seed0": _b_seed0,
}"""),
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
    "03_qkv_lookup": _probe(
        '{"numbers": _b_numbers}',
        setup="""\
import torch as _t
_b_games = lambda year: hard_lookup(year_vectors([year])[0], games_keys, games_values)
_b_year = _t.tensor(2019.0, requires_grad=True)
_b_share = hard_lookup(year_vectors(_b_year[None])[0], games_keys, games_values)[3]
_b_sweep = _t.linspace(2008, 2024, 1601)
_b_steps = _t.stack([hard_lookup(q, games_keys, games_values)[3]
                     for q in year_vectors(_b_sweep)]).diff()
_b_ties = {}
for _b_y in (2012, 2016, 2020):
    _b_s = games_keys @ year_vectors([_b_y])[0]
    _b_i, _b_j = sorted(_b_s.topk(2).indices.tolist())
    _b_ties[_b_y] = float(_b_s[_b_i] - _b_s[_b_j])
_b_tables = {tau: stable_softmax(games_scores / tau) for tau in (3.0, 0.3, 0.1, 0.01)}
_b_soft = _t.tensor(2019.0, requires_grad=True)
_b_soft_share = (stable_softmax(games_keys @ year_vectors(_b_soft[None])[0] / 0.3)
                 @ games_values)[3]
_b_before = (masked_softmax(games_scores / 0.05, _t.tensor(query_years)[:, None]
                            > _t.tensor(game_years)[None, :]) @ games_values).sum(-1)
_b_verb, _b_prep = kinds.index("verb"), kinds.index("preposition")
_b_barked, _b_pad = vocab.index("barked"), vocab.index("·")
_b_q, _b_k, _b_v = (_t.randn(2, n, d, generator=_t.Generator().manual_seed(0))
                    for n, d in ((4, 8), (6, 8), (6, 3)))
_b_mask = _t.rand(2, 4, 6, generator=_t.Generator().manual_seed(1)) < 0.7
_b_mask[0, 1] = False
_b_ours = attend(_b_q, _b_k, _b_v, scaled_dot_scores, _b_mask)[0]
_b_fits = {}
for _b_h in bandwidths:
    _b_yh, _b_w = nadaraya_watson(x_query, x_train, y_train, _b_h)
    _b_fits[str(_b_h)] = {"mse": F.mse_loss(_b_yh, y_true).item(), "w_min": _b_w.min().item(),
                          "w_max": _b_w.max().item()}
_b_numbers = {
    "hard_autograd": (_t.autograd.grad(_b_share, _b_year)[0].item()
                      if _b_share.requires_grad else 0.0),
    "hard_changes": [[float(_b_sweep[i + 1]), float(_b_steps[i])]
                     for i in (_b_steps != 0).nonzero().flatten().tolist()],
    "hard_constant": int((_b_steps == 0).sum()), "ties": _b_ties,
    "cities": cities, "query_years": list(query_years),
    "query_2019": {str(tau): w[query_years.index(2019)].tolist() for tau, w in _b_tables.items()},
    "tau3_from_uniform": (_b_tables[3.0] - 0.25).abs().max().item(),
    "tau001_top2": {y: sorted(r.tolist())[-2:] for y, r in zip(query_years, _b_tables[0.01])},
    "soft_share": _b_soft_share.item(),
    "soft_slope": _t.autograd.grad(_b_soft_share, _b_soft)[0].item(),
    "before_sums": dict(zip(query_years, _b_before.tolist())),
    "dims": list(dims), "var_raw": var_raw, "var_scaled": var_scaled, "peak_raw": peak_raw,
    "peak_scaled": peak_scaled, "jac_raw": jac_raw, "jac_scaled": jac_scaled,
    "sentence_verb": {"masked": out_masked[1, _b_verb, _b_barked].item(),
                      "open": out_open[1, _b_verb, _b_barked].item(),
                      "open_on_pad": out_open[1, _b_verb, _b_pad].item()},
    "sentence_prep": {"masked": w_masked[1, _b_prep].tolist(),
                      "open_on_pad": out_open[1, _b_prep, _b_pad].item()},
    "fused_difference": (_b_ours - F.scaled_dot_product_attention(
        _b_q, _b_k, _b_v, attn_mask=_b_mask)).abs().max().item(),
    "fused_all_masked": _b_ours[0, 1].abs().max().item(),
    "bandwidths": _b_fits, "uniform": 1 / len(x_train),
    "sweep_h": hs.tolist(), "train_err": train_err, "val_err": val_err, "true_err": true_err,
    "learned_h": learned[-1],
    "val_at_learned": F.mse_loss(nadaraya_watson(x_val, x_train, y_train, learned[-1])[0],
                                 y_val).item(),
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
    "05_self_attention": _probe(
        '{"numbers": _b_numbers}',
        setup="""\
import torch as _t
_b_wp, _b_wh = w_plain[0], w_hand[0]
_b_thes = [i for i, w in enumerate(sentence) if w == "the"]
with _t.no_grad():
    _b_out = layer(x + pe7)[0]
    _b_pos_gap = (layer(x[:, perm] + pe7)[0] - _b_out[:, perm]).abs().max().item()
_b_sim = [s for s in similarity.values()]
_b_shift = max((pe[:-k].double() @ shift_matrix(k).T - pe[k:]).abs().max().item()
               for k in (1, 5, 50))
def _b_diagonal(model, tokens, offset, mask=None):
    with _t.no_grad():
        _, _b_w = model(tokens, mask)
    return _b_w.diagonal(offset, -2, -1).mean().item()
_b_lm_in = lm_test[:, :-1]
_b_mean = lambda values: sum(values) / max(len(values), 1)
_b_names = {"unpredictable": 0, "predictable": 1, "generated": 2, "whole": 3}
_b_numbers = {
    "seeds": len(SEEDS), "steps": steps,
    "d_k": list(d_ks), "raw_std": raw_std,
    "scaled": [list(r) for r in stats["scaled by 1/sqrt(d_k)"]],
    "unscaled": [list(r) for r in stats["not scaled"]],
    "plain_self": [_b_wp[i, i].item() for i in range(len(sentence)) if i not in _b_thes],
    "plain_thes": [[_b_wp[i, j].item() for j in _b_thes] for i in _b_thes],
    "plain_asymmetry": (_b_wp - _b_wp.T).abs().max().item(),
    "hand_it_on_animal": _b_wh[it, animal].item(),
    "hand_animal_row": [_b_wh[animal].min().item(), _b_wh[animal].max().item()],
    "n_words": len(sentence),
    "permutation_gap": permutation_gap(layer, x, perm), "gru_gap": rnn_gap,
    "with_positions_gap": _b_pos_gap,
    "pe_similarity_gap": max((s - _b_sim[0]).abs().max().item() for s in _b_sim),
    "pe_similarity_range": [_b_sim[0].min().item(), _b_sim[0].max().item()],
    "pe_shift_error": _b_shift,
    "previous": {name: [accuracy[name, s] for s in SEEDS]
                 for name in ("no positions", "sinusoidal positions")},
    "previous_guess": (guess == test_targets)[keep].float().mean().item(),
    "previous_loss": {name: [[_b_mean(losses[name, s][50:100]), _b_mean(losses[name, s][-50:])]
                             for s in SEEDS] for name in ("no positions", "sinusoidal positions")},
    "previous_on_t_minus_1": [_b_diagonal(models["sinusoidal positions", s], test_tokens, -1)
                              for s in SEEDS],
    "lm": {name: {k: [list(lm_scores[name, s].values())[i] for s in SEEDS]
                  for k, i in _b_names.items()} for name in ("causal mask", "no mask")},
    "lm_no_mask_on_t_plus_1": [_b_diagonal(lm_models["no mask", s], _b_lm_in, 1)
                               for s in SEEDS],
    "lm_causal_on_t_minus_3": [
        _b_diagonal(lm_models["causal mask", s], _b_lm_in, -3, causal_mask(_b_lm_in.shape[1]))
        for s in SEEDS],
    "cost_T": list(lengths_T), "cost_seconds": seconds, "cost_megabytes": megabytes,
}"""),
    "06_transformer_encoder": _probe(
        '{"series": {"encoder_06": {"acc": _bench_by_len, "n": _bench_counts(_bench_len)}},'
        ' "numbers": _b_numbers}',
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
                 for L in sorted(set(_bench_len.tolist()))}
_b_f = lambda a: [float(v) for v in a]
_b_reached = lambda steps, acc: next((s for s, a in zip(steps, acc) if a >= 0.99), None)
_b_neighbours = {}
for (_b_heads, _b_seed), _b_h in neighbour_runs.items():
    _b_share = weight_by_offset(neighbour_models[_b_heads, _b_seed])
    _b_neighbours.setdefault(str(_b_heads), []).append({
        "left": _b_h["left"][-1], "right": _b_h["right"][-1],
        "reached": _b_reached(_b_h["eval_step"], [min(a, b) for a, b in zip(_b_h["left"],
                                                                            _b_h["right"])]),
        "heads": [[_b_share[k][h].item() for k in ("left", "right", "itself")]
                  for h in range(_b_heads)]})
_b_numbers = {
    "seeds": SEEDS, "steps": STEPS, "neighbour_steps": NEIGHBOUR_STEPS,
    "layer_norm": {name: {"weights_last_over_first": _b_f(w[:, -1] / w[:, 0]),
                          "all_last_over_first": _b_f(e[:, -1] / e[:, 0]),
                          "stream_first": float(st[:, 0].mean()),
                          "stream_last": float(st[:, -1].mean()),
                          "stream_by_layer": _b_f(st.mean(0)), "top_weights": _b_f(w[:, -1])}
                   for name, (w, e, st) in profiles.items()},
    "mirror": {name: [{"token": h["token accuracy"][-1], "sequence": h["sequence accuracy"][-1],
                       "reached": _b_reached(h["eval_step"], h["token accuracy"])}
                      for h in histories] for name, histories in runs.items()},
    "heads": [{"layer": layer + 1, "head": head + 1, "on_mirror": [m for m, _ in v],
               "on_pad": [p for _, p in v]} for (layer, head), v in table.items()],
    "mirror_uniform": uniform,
    "neighbours": _b_neighbours,
    "cost_T": list(LENGTHS),
    "cost": {name: {"ms": _b_f(m["ms"]), "MiB": _b_f(m["MiB"]),
                    "slope_ms": loglog_slope(LENGTHS, m["ms"]),
                    "slope_MiB": loglog_slope(LENGTHS, m["MiB"])} for name, m in cost.items()},
}"""),
    "07_transformer_decoder": _probe(
        '{"series": {'
        '"bottleneck_07": {"acc": _bench_acc(acc_seq2seq), "runs": _b_runs(acc_seq2seq_runs),'
        ' "n": _bench_counts(copy_test.src_lengths)},'
        ' "luong_07": {"acc": _bench_acc(acc_luong), "runs": _b_runs(acc_luong_runs),'
        ' "n": _bench_counts(copy_test.src_lengths)},'
        ' "transformer_07": {"acc": _bench_acc(acc_transformer),'
        ' "runs": _b_runs(acc_transformer_runs), "n": _bench_counts(copy_test.src_lengths)}},'
        ' "numbers": _b_numbers}',
        setup="""\
import torch as _t
from attn_utils.decoder_tasks import ISO_FIELDS as _b_iso, date_fields as _b_fields
_b_runs = lambda runs: [_bench_acc(r) for r in runs]
# section 6, as its cell does: one pass against every prefix, and a change at position 4
_b_src = _t.tensor([[5, 7, 9, 4, 3, 8, 6]])
_b_in = shift_right(_t.tensor([[5, 7, 9, 4, 3, 8, 6, EOS]]))
_b_T, _b_smask = _b_in.shape[1], (_b_src != PAD).unsqueeze(1)
_b_causal = decoder_self_mask(_t.tensor([_b_T]), _b_T)
_b_changed = _b_in.clone()
_b_changed[0, 4] = 12
with _t.no_grad():
    _b_mem = probe.encode(_b_src, _b_smask)
    _b_one = probe.decode(_b_in, _b_mem, _b_causal, _b_smask)
    _b_pre = _t.stack([probe.decode(_b_in[:, :t + 1], _b_mem, _b_causal[:, :t + 1, :t + 1],
                                    _b_smask)[:, -1] for t in range(_b_T)], dim=1)
    _b_delta = {name: (probe.decode(_b_changed, _b_mem, m, _b_smask)
                       - probe.decode(_b_in, _b_mem, m, _b_smask)).abs().amax(-1)[0].tolist()
                for name, m in (("causal", _b_causal), ("none", None))}
# section 9: the example's last-layer head, and every head over the test set
_b_fld = _b_fields("september 23, 1987")
_b_reads = []
for _b_t, _b_f in enumerate(_b_iso):
    if _b_f is not None:
        _b_at = int(last[head][_b_t].argmax())
        _b_reads.append([example["output"][_b_t], example["source"][_b_at], _b_f,
                         _b_fld[_b_f][0] <= _b_at < _b_fld[_b_f][1]])
# section 10: the cache, on every test date and copy string
_b_same = {}
for _b_name, _b_model, _b_data in (("dates", dates_model, dates_test),
                                   ("copy", copy_model, copy_test)):
    _b_s, _b_l, _b_y = _b_data.batch(_t.arange(len(_b_data)))
    _b_plain = greedy_generate(_b_model, _b_s, _b_l, _b_y.shape[1] + 1)
    with kv_cache(_b_model) as _b_cached:
        _b_same[_b_name] = bool(_t.equal(_b_plain, greedy_generate(_b_cached, _b_s, _b_l,
                                                                   _b_y.shape[1] + 1)))
_b_same["timing"] = bool(same)
_b_ds, _b_dl, _b_dy = dates_test.batch(_t.arange(len(dates_test)))
_b_numbers = {
    "seeds": list(TRANSFORMER_SEEDS), "steps": STEPS, "rnn_epochs": RNN_EPOCHS,
    "seq2seq": _b_runs(acc_seq2seq_runs), "luong": _b_runs(acc_luong_runs),
    "transformer": _b_runs(acc_transformer_runs),
    "one_pass_vs_prefixes": (_b_one - _b_pre).abs().max().item(), "change_at_4": _b_delta,
    "dates_accuracy": float(exact_match(dates_pred, _b_dy)), "dates_test": len(dates_test),
    "field_share": [field_attention(w, sources).tolist() for w in cross],
    "field_share_uniform": field_attention(uniform, sources).item(),
    "example_output": "".join(example["output"][:-1]), "example_reads": _b_reads,
    "self_above_diagonal": max(w.triu(1).abs().max().item() for w in example["self"]),
    "self_first_row_on_sos": min(w[:, 0, 0].min().item() for w in example["self"]),
    "cache_same_tokens": _b_same,
    "per_token_lengths": list(LENGTHS), "per_token_plain": without,
    "per_token_cached": with_cache,
}"""),
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


# --- 01 ------------------------------------------------------------------------------------

_01 = "01_rnn_limits"
_RNN, _LSTM3, _LSTM5 = "vanilla RNN", "LSTM, forget bias 3", "LSTM, forget bias 5"


def _learned_by_all(n: dict, name: str) -> list[int]:
    """The delays every seed of ``name`` learned (accuracy >= 95%, the notebook's criterion)."""
    return [int(lag) for lag, r in n["recall"][name].items() if min(r["accuracy"]) >= 0.95]


@claim(_01, "linear-factor", "While tanh is linear (inputs of size 1e-15) the gradient changes "
       "by a factor within about 1% of ρ per step, for every ρ from 0.5 to 1.5.")
def _linear_factor(n):
    off = {rho: r["factor_linear"] / float(rho) - 1 for rho, r in n["radii"].items()}
    return max(abs(v) for v in off.values()) < 0.015, "factor / ρ − 1: " + ", ".join(
        f"ρ = {rho}: {v:+.2%}" for rho, v in off.items())


@claim(_01, "linear-powers", "With tanh linear, the gradient from 40 steps back is about "
       "1/175 of the last step's for ρ = 0.9, about 3e-13 for ρ = 0.5 and about 4e6 times "
       "larger for ρ = 1.5 (each within a factor 1.5 of the stated value), and the pure powers "
       "ρ^40 are 2.5 to 3 times larger.")
def _linear_powers(n):
    stated = {"0.9": 1 / 175, "0.5": 3e-13, "1.5": 4e6}
    got = {rho: n["radii"][rho]["g40_over_g0"] for rho in stated}
    ok = all(abs(math.log10(got[rho] / v)) <= math.log10(1.5) for rho, v in stated.items()) \
        and all(2.5 <= float(rho) ** 40 / got[rho] <= 3.0 for rho in stated)
    return ok, "g(40) / g(0): " + ", ".join(
        f"ρ = {rho}: {got[rho]:.2g} (stated {v:.2g})" for rho, v in stated.items())


@claim(_01, "rho-one", "With tanh linear only ρ = 1 keeps every distance (0 to 59 steps back) "
       "within one order of magnitude of the others.")
def _rho_one(n):
    spread = {rho: r["g_max_over_min"] for rho, r in n["radii"].items()}
    ok = all((v < 10) == (float(rho) == 1.0) for rho, v in spread.items())
    return ok, "largest / smallest g: " + ", ".join(
        f"ρ = {rho}: {v:.3g}" for rho, v in spread.items())


@claim(_01, "sigma-max", "σ_max is about 1.8 times ρ for these matrices, and only the ρ = 0.5 "
       "matrix has σ_max < 1.")
def _sigma(n):
    r = n["radii"]
    ratios = [v["sigma_max"] / float(rho) for rho, v in r.items()]
    below = [rho for rho, v in r.items() if v["sigma_max"] < 1]
    return all(round(x, 1) == 1.8 for x in ratios) and below == ["0.5"], (
        "σ_max: " + ", ".join(f"ρ = {rho}: {v['sigma_max']:.2f}" for rho, v in r.items()))


@claim(_01, "saturated", "With inputs of size 1 the states reach |h| ≈ 1, the mean slope "
       "1 − h² is about one half, every per-step factor falls well below ρ (≤ 0.75 ρ) and "
       "below 1 — all five curves decay, even ρ = 1.5 — and a larger ρ decays more slowly.")
def _saturated(n):
    r = n["radii"]
    rhos = sorted(r, key=float)
    factors = [r[rho]["factor_saturated"] for rho in rhos]
    ok = (all(r[rho]["max_h_saturated"] >= 0.99 for rho in rhos)
          and all(0.4 <= r[rho]["slope_saturated"] <= 0.6 for rho in rhos)
          and all(f <= 0.75 * float(rho) and f < 1 for f, rho in zip(factors, rhos))
          and all(a < b for a, b in zip(factors, factors[1:])))
    return ok, ", ".join(f"ρ = {rho}: factor {r[rho]['factor_saturated']:.3f}, mean slope "
                         f"{r[rho]['slope_saturated']:.2f}, max |h| "
                         f"{r[rho]['max_h_saturated']:.4f}" for rho in rhos)


@claim(_01, "recall-limits", "Memory task, 500 steps, 3 seeds: the longest delay every seed "
       "learns (≥ 95%) is L = 10 for the RNN and L = 40 for the LSTM with forget bias 3; no RNN "
       "seed learns L = 20; in between (L = 15) the RNN's seeds disagree, and the LSTM too fails "
       "in the end (not every seed learns L = 80).")
def _recall_limits(n):
    rnn, lstm = _learned_by_all(n, _RNN), _learned_by_all(n, _LSTM3)
    r15, r20 = n["recall"][_RNN]["15"]["accuracy"], n["recall"][_RNN]["20"]["accuracy"]
    l80 = n["recall"][_LSTM3]["80"]["accuracy"]
    ok = (max(rnn, default=0) == 10 and max(lstm, default=0) == 40 and max(r20) < 0.95
          and min(r15) < 0.95 <= max(r15) and min(l80) < 0.95)
    return ok, (f"learned by every seed: RNN L = {rnn}, LSTM L = {lstm}; RNN L = 15: "
                + ", ".join(f"{a:.0%}" for a in r15) + "; L = 20: "
                + ", ".join(f"{a:.0%}" for a in r20) + "; LSTM L = 80: "
                + ", ".join(f"{a:.0%}" for a in l80))


@claim(_01, "steps-grow", "The training steps a model needs grow with the delay, for both "
       "networks, until they run into the 500-step budget; a few runs that stop at 500 still "
       "answer most sequences right.")
def _steps_grow(n):
    parts, ok = [], True
    for name in (_RNN, _LSTM3):
        med = [sorted(r["steps"])[len(r["steps"]) // 2] for r in n["recall"][name].values()]
        ok &= all(a <= b for a, b in zip(med, med[1:])) and med[-1] == n["max_steps"]
        parts.append(f"{name}: median steps {med}")
    stopped = [a for name in (_RNN, _LSTM3, _LSTM5) for r in n["recall"][name].values()
               for a, s in zip(r["accuracy"], r["steps"]) if s == n["max_steps"]]
    ok &= any(a > 0.5 for a in stopped)
    return ok, "; ".join(parts) + "; accuracy of the runs stopped at the budget: " + ", ".join(
        f"{a:.0%}" for a in stopped)


@claim(_01, "bias-5", "With forget bias 5 the same LSTM learns L = 80 with every seed.")
def _bias5(n):
    acc = n["recall"][_LSTM5]["80"]["accuracy"]
    return min(acc) >= 0.95, "L = 80: " + ", ".join(f"{a:.1%}" for a in acc)


def _seed0(n: dict, name: str) -> list[dict]:
    return [r for r in n["seed0"] if r["name"] == name]


@claim(_01, "rnn-gradient", "At initialisation (seed 0) the RNN's error reaches the first "
       "symbol about 1e-3 times as strongly as the last at L = 10 and about 1e-6 at L = 20 "
       "(within half a decade), roughly a factor 0.5 per step; the delays it failed to learn "
       "are those where this signal is weakest.")
def _rnn_gradient(n):
    rows = {r["lag"]: r["gradient_first_over_last"] for r in _seed0(n, _RNN)}
    per_step = (rows[20] / rows[10]) ** (1 / 10)
    learned = _learned_by_all(n, _RNN)
    weakest = max((v for lag, v in rows.items() if lag not in learned), default=1) < min(
        (v for lag, v in rows.items() if lag in learned), default=0)
    ok = (abs(math.log10(rows[10]) + 3) <= 0.5 and abs(math.log10(rows[20]) + 6) <= 0.5
          and round(per_step, 1) == 0.5 and weakest)
    return ok, (", ".join(f"L = {lag}: {v:.1e}" for lag, v in rows.items())
                + f"; {per_step:.2f} per step from L = 10 to 20")


@claim(_01, "lstm-gradient", "At initialisation (seed 0) the LSTM's gradient at the first "
       "symbol is between about 0.6 and 2.3 times the last symbol's at every delay, L = 80 "
       "included: it does not vanish.")
def _lstm_gradient(n):
    rows = [r for r in n["seed0"] if r["name"] != _RNN]
    values = [r["gradient_first_over_last"] for r in rows]
    return 0.55 <= min(values) and max(values) < 2.35, ", ".join(
        f"bias {r['name'][-1]}, L = {r['lag']}: {r['gradient_first_over_last']:.2f}"
        for r in rows)


@claim(_01, "forget-init", "At initialisation the median forget-gate product is about 0.37 at "
       "L = 20 and 0.02 at L = 80 with bias 3, and near 0.993^80 ≈ 0.6 with bias 5.")
def _forget_init(n):
    b3 = {r["lag"]: r["forget_init_median"] for r in _seed0(n, _LSTM3)}
    b5 = _seed0(n, _LSTM5)[0]["forget_init_median"]
    ok = round(b3[20], 2) == 0.37 and round(b3[80], 2) == 0.02 and round(b5, 1) == 0.6
    return ok, f"bias 3: L = 20 {b3[20]:.3f}, L = 80 {b3[80]:.3f}; bias 5, L = 80: {b5:.3f}"


@claim(_01, "forget-trained", "In the run shown (seed 0), every LSTM that learned the task "
       "(accuracy of 87% or more) ended with a unit whose forget-gate product is about 0.7 or "
       "more (≥ 0.65), while the failed run at L = 80 ended with about 0.1 at best (≤ 0.15).")
def _forget_trained(n):
    rows = [r for r in n["seed0"] if r["name"] != _RNN]
    learned = [r for r in rows if round(r["accuracy"], 2) >= 0.87]
    failed = [r for r in rows if round(r["accuracy"], 2) < 0.87]
    ok = (all(r["forget_trained_best"] >= 0.65 for r in learned)
          and [(r["name"], r["lag"]) for r in failed] == [(_LSTM3, 80)]
          and failed[0]["forget_trained_best"] <= 0.15)
    return ok, ", ".join(f"bias {r['name'][-1]}, L = {r['lag']}: accuracy {r['accuracy']:.1%}, "
                         f"best unit {r['forget_trained_best']:.2f}" for r in rows)


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


# --- 03 ------------------------------------------------------------------------------------

_03 = "03_qkv_lookup"


@claim(_03, "hard-no-gradient", "The hard lookup has no useful gradient: autograd reports 0 "
       "at the query 2019, and sweeping the query from 2008 to 2024 in 1600 steps the share of "
       "Beijing changes at exactly one step, by a jump from 0 to 1 just after 2020.")
def _hard(n):
    changes = n["hard_changes"]
    ok = (n["hard_autograd"] == 0 and len(changes) == 1 and changes[0][1] == 1.0
          and 2020 < changes[0][0] <= 2020.1 and n["hard_constant"] == 1599)
    return ok, (f"autograd {n['hard_autograd']:g}; changes at "
                + ", ".join(f"{y:.2f} (by {d:+g})" for y, d in changes)
                + f", constant at {n['hard_constant']} steps")


@claim(_03, "ties", "Years halfway between two Games: in float32 their two scores differ by "
       "about 1e-7 or not at all.")
def _ties(n):
    diffs = [abs(d) for d in n["ties"].values()]
    return max(diffs) < 5e-7, ", ".join(f"{y}: {d:+.1e}" for y, d in n["ties"].items())


@claim(_03, "temperature", "At τ = 0.01 the rows are one-hot except 2012, 2016 and 2020, which "
       "share their weight 50/50; at τ = 0.1 the query 2019 is mostly PyeongChang with a share "
       "of Beijing; at τ = 3 every weight lies within 0.10 of 1/4.")
def _temperature(n):
    halfway = {"2012", "2016", "2020"}
    top2 = n["tau001_top2"]
    one_hot = all(top2[y][1] >= 0.99 for y in top2 if y not in halfway)
    split = all(abs(top2[y][0] - 0.5) <= 0.01 and abs(top2[y][1] - 0.5) <= 0.01
                for y in halfway)
    q = n["query_2019"]["0.1"]
    pyeongchang, beijing = q[n["cities"].index("PyeongChang")], q[n["cities"].index("Beijing")]
    mostly = pyeongchang > 0.5 and beijing == sorted(q)[-2] and beijing >= 0.01
    uniform = n["tau3_from_uniform"] <= 0.10
    return one_hot and split and mostly and uniform, (
        f"τ = 0.01: other rows one-hot {one_hot}, halfway rows "
        + ", ".join(f"{y} {top2[y][1]:.3f}/{top2[y][0]:.3f}" for y in sorted(halfway))
        + f"; τ = 0.1, 2019: PyeongChang {pyeongchang:.2f}, Beijing {beijing:.2f}; "
        f"τ = 3: largest distance from 1/4 {n['tau3_from_uniform']:.3f}")


@claim(_03, "soft-gradient", "At τ = 0.3 the share of Beijing in the answer to 2019 grows by "
       "0.18 per year.")
def _soft(n):
    return round(n["soft_slope"], 2) == 0.18, f"{n['soft_slope']:+.3f} per year"


@claim(_03, "before-mask", "'The last Games strictly before': the queries 2008 and 2010 (all "
       "keys masked) get the zero vector, every other query a full answer.")
def _before(n):
    sums = n["before_sums"]
    empty = [y for y, s in sums.items() if s == 0]
    ok = {"2008", "2010"} <= set(empty) and all(abs(s - 1) < 1e-5 for y, s in sums.items()
                                               if int(y) > 2010)
    return ok, f"zero answers for {', '.join(empty)}; the others sum to 1: {ok}"


@claim(_03, "sqrt-d", "The variance of the raw dot product follows d (within 10% at every d; "
       "1036 at d = 1024); at d = 1024 the largest of 16 weights is 0.96 on average and the "
       "weights move about 6 times less than with scaling.")
def _sqrt_d(n):
    follows = all(abs(v / d - 1) <= 0.10 for v, d in zip(n["var_raw"], n["dims"]))
    ratio = n["jac_scaled"][-1] / n["jac_raw"][-1]
    ok = (follows and round(n["var_raw"][-1]) == 1036 and round(n["peak_raw"][-1], 2) == 0.96
          and 5.5 <= ratio < 6.5)
    return ok, (f"Var[q·k] / d from {min(v / d for v, d in zip(n['var_raw'], n['dims'])):.2f} to "
                f"{max(v / d for v, d in zip(n['var_raw'], n['dims'])):.2f} "
                f"({n['var_raw'][-1]:.0f} at d = {n['dims'][-1]}); largest weight "
                f"{n['peak_raw'][-1]:.2f}; derivative {ratio:.1f}× smaller")


@claim(_03, "sqrt-d-small", "For d ≤ 16 the softmax's derivative with and without scaling are "
       "within about 7% of each other, the raw one slightly larger for d from 2 to 8.")
def _sqrt_d_small(n):
    ratios = {d: r / s for d, r, s in zip(n["dims"], n["jac_raw"], n["jac_scaled"]) if d <= 16}
    ok = max(abs(r - 1) for r in ratios.values()) <= 0.08 and all(
        ratios[d] > 1 for d in (2, 4, 8))
    return ok, "raw / scaled: " + ", ".join(f"d = {d}: {r:.3f}" for d, r in ratios.items())


@claim(_03, "scaled-flat", "The scaled scores keep variance 1 (within 5%) and the same "
       "peakedness and derivative at every dimension (largest and smallest within 25%).")
def _scaled_flat(n):
    var_ok = all(abs(v - 1) <= 0.05 for v in n["var_scaled"])
    peak = max(n["peak_scaled"]) / min(n["peak_scaled"])
    jac = max(n["jac_scaled"]) / min(n["jac_scaled"])
    return var_ok and peak <= 1.25 and jac <= 1.25, (
        f"variance {min(n['var_scaled']):.3f}–{max(n['var_scaled']):.3f}; largest weight "
        f"{min(n['peak_scaled']):.2f}–{max(n['peak_scaled']):.2f}; derivative "
        f"{min(n['jac_scaled']):.3f}–{max(n['jac_scaled']):.3f}")


@claim(_03, "padding-mask", "On the padded sentence the verb query gives 5/6 to 'barked' with "
       "the mask and 2/3 without it (a fifth of its answer is then padding); without the mask "
       "half of the answer to 'where is the preposition?' is padding, with it the three real "
       "words get a third each.")
def _padding(n):
    v, p = n["sentence_verb"], n["sentence_prep"]
    close = lambda a, b: abs(a - b) < 1e-5  # noqa: E731
    ok = (close(v["masked"], 5 / 6) and close(v["open"], 2 / 3) and close(v["open_on_pad"], 0.2)
          and close(p["open_on_pad"], 0.5) and all(close(w, 1 / 3) for w in p["masked"][:3])
          and p["masked"][3:] == [0.0, 0.0, 0.0])
    return ok, (f"verb: {v['masked']:.4f} masked, {v['open']:.4f} open ({v['open_on_pad']:.4f} "
                f"padding); preposition: {p['open_on_pad']:.4f} padding open, masked "
                + ", ".join(f"{w:.4f}" for w in p["masked"]))


@claim(_03, "fused", "attend and F.scaled_dot_product_attention agree (to float32 rounding), "
       "including a query whose keys are all masked, which gets zeros.")
def _fused(n):
    return n["fused_difference"] < 1e-5 and n["fused_all_masked"] == 0, (
        f"largest difference {n['fused_difference']:.1e}; all-masked query "
        f"{n['fused_all_masked']:g}")


@claim(_03, "bandwidth", "At h = 2 every weight lies between about 0.0014 and 0.037, within a "
       "factor of 12 of 1/60; between the tiny and the huge bandwidth, the fit follows the "
       "curve best.")
def _bandwidth(n):
    b, u = n["bandwidths"], n["uniform"]
    wide = b["2.0"]
    within = max(u / wide["w_min"], wide["w_max"] / u)
    errors = {h: v["mse"] for h, v in b.items()}
    best = min(errors, key=errors.get)
    ok = (round(wide["w_min"], 4) == 0.0014 and round(wide["w_max"], 3) == 0.037
          and round(within) <= 12 and best not in (min(b, key=float), max(b, key=float)))
    return ok, (f"h = 2: {wide['w_min']:.4f} to {wide['w_max']:.3f} (within ×{within:.1f} of "
                f"1/60); error by h: " + ", ".join(f"{h}: {e:.3f}" for h, e in errors.items()))


@claim(_03, "choosing-h", "The training error falls towards 0 as h → 0; the validation error "
       "is U-shaped with its minimum a little above the noise variance 0.09; the h learned by "
       "gradient descent lands in the same valley.")
def _choosing(n):
    train, val = n["train_err"], n["val_err"]
    i = val.index(min(val))
    falls = all(a <= b for a, b in zip(train, train[1:])) and train[0] <= 0.005
    u_shape = (0 < i < len(val) - 1 and all(a >= b for a, b in zip(val[:i], val[1:i + 1]))
               and all(a <= b for a, b in zip(val[i:], val[i + 1:])))
    above = 0.09 < val[i] <= 0.10
    valley = n["val_at_learned"] <= 1.05 * val[i]
    return falls and u_shape and above and valley, (
        f"training error {train[0]:.4f} at h = {n['sweep_h'][0]:.2f}; validation minimum "
        f"{val[i]:.3f} at h = {n['sweep_h'][i]:.3f} (U-shaped: {u_shape}); learned h = "
        f"{n['learned_h']:.3f}, validation {n['val_at_learned']:.3f}")


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


# --- 05 ------------------------------------------------------------------------------------

_05 = "05_self_attention"


@claim(_05, "scores-spread", "The raw scores spread like √d_k (measured standard deviation "
       "within 5% of √d_k at every d_k from 2 to 1024).")
def _spread(n):
    off = [s / math.sqrt(d) - 1 for d, s in zip(n["d_k"], n["raw_std"])]
    return max(abs(v) for v in off) <= 0.05, (
        f"std / √d_k from {1 + min(off):.3f} to {1 + max(off):.3f}")


@claim(_05, "saturation", "Without scaling the largest weight of a row climbs towards 1 (0.95 "
       "at d_k = 1024) and the entropy falls towards 0 (below 0.05); the Jacobian is larger "
       "than the scaled one for small d_k, falls steadily once d_k passes about 32, and ends "
       "about 4 times below the scaled value at d_k = 1024, still falling.")
def _saturation(n):
    d, s, u = n["d_k"], n["scaled"], n["unscaled"]
    largest = [r[0] for r in u]
    entropy = [r[1] for r in u]
    jac = [r[2] for r in u]
    i32 = d.index(32)
    ratio = s[-1][2] / jac[-1]
    ok = (all(a < b for a, b in zip(largest, largest[1:])) and round(largest[-1], 2) == 0.95
          and all(a > b for a, b in zip(entropy, entropy[1:])) and entropy[-1] < 0.05
          and all(jac[i] > s[i][2] for i in range(len(d)) if d[i] <= 16)
          and all(a > b for a, b in zip(jac[i32:], jac[i32 + 1:])) and round(ratio) == 4)
    return ok, (f"unscaled at d_k = {d[-1]}: largest weight {largest[-1]:.2f}, entropy "
                f"{entropy[-1]:.3f}; Jacobian scaled / unscaled: " + ", ".join(
                    f"{dk}: {sc[2] / j:.2f}" for dk, sc, j in zip(d, s, jac)))


@claim(_05, "scaled-flat", "With the 1/√d_k factor all three curves stay flat (largest weight, "
       "entropy and Jacobian each within 15% over d_k = 2 to 1024).")
def _scaled_flat5(n):
    spans = [max(r[i] for r in n["scaled"]) / min(r[i] for r in n["scaled"]) for i in range(3)]
    return max(spans) <= 1.15, "largest / smallest: " + ", ".join(
        f"{name} {v:.2f}" for name, v in zip(("largest weight", "entropy", "Jacobian"), spans))


@claim(_05, "q-equals-k", "With Q = K = X every word puts most of its weight on itself, the two "
       "'the's split theirs between each other, and the weights are nearly symmetric (max "
       "|A − Aᵀ| ≤ 0.01, as the figure prints).")
def _q_equals_k(n):
    thes = n["plain_thes"]
    ok = (min(n["plain_self"]) > 0.5 and all(sum(row) >= 0.9 and min(row) >= 0.4 for row in thes)
          and n["plain_asymmetry"] <= 0.01)
    return ok, (f"weight on itself {min(n['plain_self']):.2f}–{max(n['plain_self']):.2f}; "
                f"the 'the' rows on the two 'the's: {thes[0][0]:.2f} + {thes[0][1]:.2f}; "
                f"max |A − Aᵀ| = {n['plain_asymmetry']:.3f}")


@claim(_05, "it-animal", "With the hand-set W_Q, W_K, 'it' puts most of its weight on 'animal' "
       "while the row of 'animal' stays uniform, 1/11 on every word.")
def _it_animal(n):
    lo, hi = n["hand_animal_row"]
    uniform = 1 / n["n_words"]
    ok = n["hand_it_on_animal"] > 0.5 and abs(lo - uniform) < 1e-5 and abs(hi - uniform) < 1e-5
    return ok, (f"'it' on 'animal' {n['hand_it_on_animal']:.2f}; row of 'animal' from {lo:.4f} "
                f"to {hi:.4f}")


@claim(_05, "equivariance", "Self-attention is permutation-equivariant (shuffling the input "
       "shuffles the output, to float32 rounding) where a GRU is not; with positions added it "
       "no longer is.")
def _equivariance(n):
    ok = n["permutation_gap"] < 1e-5 and n["gru_gap"] > 0.01 and n["with_positions_gap"] > 0.01
    return ok, (f"self-attention {n['permutation_gap']:.1e}, GRU {n['gru_gap']:.2f}, with "
                f"positions {n['with_positions_gap']:.2f}")


@claim(_05, "pe-properties", "The sinusoidal encoding's similarity depends on the distance only "
       "(the three curves agree to float32 rounding), and an offset is one rotation for every "
       "position.")
def _pe(n):
    lo, hi = n["pe_similarity_range"]
    ok = n["pe_similarity_gap"] <= 1e-4 * hi and n["pe_shift_error"] < 1e-4
    return ok, (f"largest difference between the curves {n['pe_similarity_gap']:.1e} (range "
                f"{lo:.1f} to {hi:.1f}); rotation error {n['pe_shift_error']:.1e}")


@claim(_05, "previous-token", "Previous token, 3 seeds: without positions the loss stops falling "
       "after a few dozen steps (the last 50 steps within 3% of steps 50–100) and the accuracy is "
       "above chance, far from 100% and close to the order-blind guess (within 0.02); with the "
       "sinusoidal encoding it reaches or comes close to 100% (≥ 99%) with every seed, most of "
       "each query's weight on the key just before it.")
def _previous(n):
    blind, pos = n["previous"]["no positions"], n["previous"]["sinusoidal positions"]
    guess = n["previous_guess"]
    flat = [late / early if early else 0.0
            for early, late in n["previous_loss"]["no positions"]]
    ok = (all(f >= 0.97 for f in flat) and all(0.1 < a <= 0.5 for a in blind)
          and all(abs(a - guess) <= 0.02 for a in blind) and min(pos) >= 0.99
          and min(n["previous_on_t_minus_1"]) > 0.5)
    return ok, (f"no positions: {_span(blind)} (order-blind guess {guess:.3f}), loss of the "
                f"last 50 steps / steps 50–100: {_span(flat)}; positions: {_span(pos)}, weight "
                f"on t − 1 {_span(n['previous_on_t_minus_1'])}")


@claim(_05, "no-mask-reads-answer", "Next token without the mask: the model predicts the 3 "
       "random symbols (≥ 99%, every seed) by reading the key right after the query (a large "
       "share, at least a quarter, of the weight), and fails when it generates: far fewer "
       "generated tokens right than with the mask (at least 0.3 fewer) and almost no sequence "
       "(≤ 5%) generated without a mistake.")
def _no_mask(n):
    free, causal = n["lm"]["no mask"], n["lm"]["causal mask"]
    ok = (min(free["unpredictable"]) >= 0.99 and min(n["lm_no_mask_on_t_plus_1"]) >= 0.25
          and max(free["generated"]) <= min(causal["generated"]) - 0.3
          and max(free["whole"]) <= 0.05)
    return ok, (f"random symbols {_span(free['unpredictable'])}; weight on t + 1 "
                f"{_span(n['lm_no_mask_on_t_plus_1'])}; generated tokens "
                f"{_span(free['generated'])} (causal {_span(causal['generated'])}); whole "
                f"sequences {_span(free['whole'])}")


@claim(_05, "causal-mask-works", "With the causal mask the 3 random symbols stay at chance "
       "(within 0.02 of 10%), the predictable tokens are right almost every time (≥ 98%), "
       "generation works (≥ 90% of generated tokens), every seed, and the weight sits on the key "
       "3 positions back (most of it).")
def _causal(n):
    c = n["lm"]["causal mask"]
    ok = (all(abs(a - 0.1) <= 0.02 for a in c["unpredictable"]) and min(c["predictable"]) >= 0.98
          and min(c["generated"]) >= 0.9 and min(n["lm_causal_on_t_minus_3"]) > 0.5)
    return ok, (f"random symbols {_span(c['unpredictable'])}, predictable "
                f"{_span(c['predictable'])}, generated {_span(c['generated'])}, whole sequences "
                f"{_span(c['whole'])}; weight on t − 3 {_span(n['lm_causal_on_t_minus_3'])}")


@claim(_05, "memory-quadratic", "The memory one call allocates follows T²: each doubling of T "
       "multiplies it by about 4 (within 10%), about 3 T × T matrices (within 20%).")
def _memory5(n):
    mb, T = n["cost_megabytes"], n["cost_T"]
    growth = [b / a for a, b in zip(mb, mb[1:])]
    matrices = [m / (4 * t * t / 2**20) for m, t in zip(mb, T)]
    ok = all(3.6 <= g <= 4.4 for g in growth) and all(2.4 <= m <= 3.6 for m in matrices)
    return ok, ("growth per doubling " + ", ".join(f"{g:.2f}" for g in growth)
                + "; T × T matrices " + ", ".join(f"{m:.2f}" for m in matrices))


# --- 06 ------------------------------------------------------------------------------------

_06 = "06_transformer_encoder"
_POST, _PRE = "post-LN (the original)", "pre-LN"
_WARM, _COLD, _DEFAULT = ("N(0, 1/d) embeddings, warm-up", "N(0, 1/d) embeddings, no warm-up",
                          "N(0, 1) embeddings (nn.Embedding default), warm-up")


def _ratios(values) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


@claim(_06, "post-ln-even", "Post-LN, 12 layers at initialisation: the attention and "
       "feed-forward weights of every layer get gradients of about the same size (last/first "
       "0.8 to 1.1 over 3 seeds); only with the LayerNorms' own parameters does the top layer "
       "stand out (≥ 1.3); the stream stays at √d_model = 8.")
def _post_ln(n):
    p = n["layer_norm"][_POST]
    w, a = p["weights_last_over_first"], p["all_last_over_first"]
    ok = (all(0.75 <= r < 1.15 for r in w) and all(r >= 1.3 for r in a)
          and all(abs(s - 8) <= 0.05 for s in p["stream_by_layer"]))
    return ok, (f"last/first: weights {_ratios(w)}, LayerNorms included {_ratios(a)}; stream "
                f"{min(p['stream_by_layer']):.2f}–{max(p['stream_by_layer']):.2f}")


@claim(_06, "pre-ln-shrinks", "Pre-LN: the gradients shrink towards the top (last/first 0.62 to "
       "0.71) and the residual stream grows from 8.2 to 11.4 over 12 layers; the top layer's "
       "weights get 1.4 times more gradient in post-LN than in pre-LN.")
def _pre_ln(n):
    p, q = n["layer_norm"][_PRE], n["layer_norm"][_POST]
    w = p["weights_last_over_first"]
    top = _avg(q["top_weights"]) / _avg(p["top_weights"])
    ok = (all(0.615 <= r < 0.715 for r in w) and round(p["stream_first"], 1) == 8.2
          and round(p["stream_last"], 1) == 11.4
          and all(a < b for a, b in zip(p["stream_by_layer"], p["stream_by_layer"][1:]))
          and round(top, 1) == 1.4)
    return ok, (f"last/first {_ratios(w)}; stream {p['stream_first']:.1f} -> "
                f"{p['stream_last']:.1f}; top layer post / pre {top:.2f}")


def _mirror_end(runs: list[dict]) -> str:
    tokens = ", ".join(f"{r['token']:.2%}" for r in runs)
    sequences = ", ".join(f"{r['sequence']:.1%}" for r in runs)
    return (f"tokens {tokens}; sequences {sequences}; 99% at steps "
            f"{[r['reached'] for r in runs]}")


@claim(_06, "mirror-trains", "Mirror task, 3 seeds, 300 steps, embeddings N(0, 1/d): above 99% "
       "of the tokens by step 225 to 250 in every seed, ending with at least 99.8% of the tokens "
       "and 98% of the whole sequences; without warm-up 99% by step 250 to 275 and the same final "
       "accuracy.")
def _mirror(n):
    warm, cold = n["mirror"][_WARM], n["mirror"][_COLD]
    ends = all(round(r["token"], 3) >= 0.998 and round(r["sequence"], 2) >= 0.98
               for r in warm + cold)
    ok = (ends and all(r["reached"] in (225, 250) for r in warm)
          and all(r["reached"] in (250, 275) for r in cold))
    return ok, f"warm-up: {_mirror_end(warm)}. No warm-up: {_mirror_end(cold)}"


@claim(_06, "default-init-stalls", "With nn.Embedding's default N(0, 1) the very same model "
       "stalls at 30% of the tokens and almost no whole sequence (≤ 1%), in all three seeds.")
def _stalls(n):
    runs = n["mirror"][_DEFAULT]
    ok = all(round(r["token"], 2) == 0.30 and r["sequence"] <= 0.01 and r["reached"] is None
             for r in runs)
    return ok, _mirror_end(runs)


@claim(_06, "layers-divide-work", "Mirror heads, 3 seeds: in layer 1 every head spreads its "
       "weight broadly with only a mild preference for the mirror (above uniform, below twice "
       "uniform); in layer 2 most of each query's weight (> 0.5) sits on its mirrored key, in "
       "every head of every seed; PAD keys get exactly 0.")
def _layers(n):
    u = n["mirror_uniform"]
    first = [m for h in n["heads"] if h["layer"] == 1 for m in h["on_mirror"]]
    second = [m for h in n["heads"] if h["layer"] == 2 for m in h["on_mirror"]]
    pad = max(p for h in n["heads"] for p in h["on_pad"])
    ok = all(u < m < 2 * u for m in first) and min(second) > 0.5 and pad == 0
    return ok, (f"on the mirror: layer 1 {min(first):.3f}–{max(first):.3f} (uniform {u:.3f}), "
                f"layer 2 {min(second):.3f}–{max(second):.3f}; on PAD at most {pad:g}")


@claim(_06, "two-heads-specialise", "Neighbours task, two heads: in every seed one head puts "
       "about half of its weight on the left neighbour (0.4–0.6) and a tenth (0.05–0.15) on the "
       "right, the other the reverse, about 0.3 on the token itself; they pass 99% on both "
       "sides by step 250 to 400.")
def _two_heads(n):
    ok, parts = True, []
    for run in n["neighbours"]["2"]:
        heads = sorted(run["heads"], key=lambda h: -h[0])  # left-looking head first
        (l1, r1, s1), (l2, r2, s2) = heads
        ok &= (0.4 <= l1 <= 0.6 and 0.05 <= r1 <= 0.15 and 0.4 <= r2 <= 0.6
               and 0.05 <= l2 <= 0.15 and all(0.25 <= s <= 0.35 for s in (s1, s2))
               and run["reached"] is not None and 250 <= run["reached"] <= 400)
        parts.append(f"{l1:.2f}/{r1:.2f}/{s1:.2f} and {l2:.2f}/{r2:.2f}/{s2:.2f} "
                     f"(99% at step {run['reached']})")
    return ok, "left/right/itself per head: " + "; ".join(parts)


@claim(_06, "one-head-unequal", "One head: in all three seeds it weighs the neighbours "
       "unequally, 0.44 on the left against 0.18 to 0.19 on the right, passes 99% by step 450 "
       "to 500 and ends at 99.7% or more on both sides.")
def _one_head(n):
    runs = n["neighbours"]["1"]
    ok = all(round(r["heads"][0][0], 2) == 0.44 and 0.18 <= round(r["heads"][0][1], 2) <= 0.19
             and r["reached"] is not None and 450 <= r["reached"] <= 500
             and round(min(r["left"], r["right"]), 3) >= 0.997 for r in runs)
    return ok, "; ".join(f"left {r['heads'][0][0]:.3f}, right {r['heads'][0][1]:.3f}, 99% at "
                         f"step {r['reached']}, ends {r['left']:.2%} / {r['right']:.2%}"
                         for r in runs)


_MINE, _WEIGHTS, _FUSED = ("your MultiHeadAttention", "nn.MultiheadAttention (need_weights=True)",
                           "nn.MultiheadAttention (need_weights=False: fused)")


@claim(_06, "cost", "Memory: slope 2 (rounded) for the two modules that keep the weights, tens "
       "of MiB at T = 1024, and about 1 for the fused kernel. Time: the slope reaches 2 or more "
       "(≥ 1.95) without the fused kernel; the fused kernel is the fastest at T = 1024 and its "
       "fitted slope is below the other two's.")
def _cost6(n):
    c = n["cost"]
    ok = (all(round(c[k]["slope_MiB"]) == 2 and 10 <= c[k]["MiB"][-1] < 100
              for k in (_MINE, _WEIGHTS))
          and round(c[_FUSED]["slope_MiB"]) == 1
          and all(c[k]["slope_ms"] >= 1.95 for k in (_MINE, _WEIGHTS))
          and c[_FUSED]["ms"][-1] < min(c[_MINE]["ms"][-1], c[_WEIGHTS]["ms"][-1])
          and c[_FUSED]["slope_ms"] < min(c[_MINE]["slope_ms"], c[_WEIGHTS]["slope_ms"]))
    return ok, "; ".join(f"{k}: memory slope {v['slope_MiB']:.2f} ({v['MiB'][-1]:.1f} MiB), time "
                         f"slope {v['slope_ms']:.2f} ({v['ms'][-1]:.0f} ms)" for k, v in c.items())


# --- 07 ------------------------------------------------------------------------------------

_07 = "07_transformer_decoder"


def _at(runs: list[dict], length: int) -> float:
    return _avg(_over(runs, length))


@claim(_07, "one-pass", "One teacher-forced pass equals the prefix runs (to float32 rounding); "
       "changing the input at position 4 changes no earlier logit, by exactly zero, with the "
       "causal mask, and every position without it.")
def _one_pass(n):
    causal, free = n["change_at_4"]["causal"], n["change_at_4"]["none"]
    ok = (n["one_pass_vs_prefixes"] < 1e-5 and causal[:4] == [0.0] * 4
          and all(d > 0 for d in causal[4:]) and all(d > 0 for d in free))
    return ok, (f"one pass vs prefixes {n['one_pass_vs_prefixes']:.1e}; change by position, "
                f"causal: {', '.join(f'{d:.1e}' for d in causal)}; no mask: "
                f"{', '.join(f'{d:.1e}' for d in free)}")


@claim(_07, "bottleneck-falls", "Copy task, the bottleneck model (one run): right on every "
       "string up to length 3, then falling: 0.94 at length 4, 0.53 at 6, 0.12 at 8, nothing at "
       "11 and 12.")
def _bottleneck07(n):
    r = n["seq2seq"]
    stated = {4: 0.94, 6: 0.53, 8: 0.12}
    ok = (all(_at(r, L) == 1.0 for L in (1, 2, 3))
          and all(round(_at(r, L), 2) == v for L, v in stated.items())
          and _at(r, 11) == 0 and _at(r, 12) == 0)
    return ok, ", ".join(f"{L}: {_at(r, L):.3f}" for L in range(1, 13))


@claim(_07, "luong-declines", "Luong attention (one run) keeps 0.98 or more up to length 9, "
       "then declines, to 0.82 at length 12.")
def _luong07(n):
    r = n["luong"]
    ok = (all(round(_at(r, L), 2) >= 0.98 for L in range(1, 10))
          and all(_at(r, L) > _at(r, L + 1) for L in (9, 10, 11)) and round(_at(r, 12), 2) == 0.82)
    return ok, ", ".join(f"{L}: {_at(r, L):.3f}" for L in range(1, 13))


@claim(_07, "transformer-copies", "The Transformer's three runs average 0.97 or more at every "
       "length; every run is at 0.99 or more at every length except 2, where they range from "
       "0.95 to 0.99.")
def _transformer07(n):
    r = n["transformer"]
    at2 = _over(r, 2)
    ok = (all(round(_at(r, L), 2) >= 0.97 for L in range(1, 13))
          and all(round(a, 2) >= 0.99 for L in range(1, 13) if L != 2 for a in _over(r, L))
          and round(min(at2), 2) == 0.95 and round(max(at2), 2) == 0.99)
    worst = min((a, L) for L in range(1, 13) if L != 2 for a in _over(r, L))
    return ok, (f"lowest mean {min(_at(r, L) for L in range(1, 13)):.3f}; length 2: "
                f"{_span(at2)}; lowest run elsewhere {worst[0]:.3f} (length {worst[1]})")


@claim(_07, "long-strings", "On the strings of 10 to 12 digits the means are 1.00 for the "
       "Transformer, 0.89 for Luong attention and 0.01 for the bottleneck.")
def _long07(n):
    means = {k: _avg(_at(n[k], L) for L in (10, 11, 12))
             for k in ("transformer", "luong", "seq2seq")}
    stated = {"transformer": 1.00, "luong": 0.89, "seq2seq": 0.01}
    return all(round(means[k], 2) == v for k, v in stated.items()), ", ".join(
        f"{k} {v:.3f}" for k, v in means.items())


@claim(_07, "example-head", "On 'september 23, 1987', the last layer's head with the most "
       "weight on the right fields reads, for most output digits, a character of the field it "
       "is writing.")
def _example(n):
    reads = n["example_reads"]
    right = sum(r[3] for r in reads)
    return right > len(reads) / 2, (f"{n['example_output']!r}: {right} of {len(reads)} digits; "
                                    + ", ".join(f"{o}<-{s}" for o, s, _, _ in reads))


@claim(_07, "fields", "Dates (one run): every head of both layers puts between two thirds and "
       "nine tenths of its cross-attention on the field being written, where uniform attention "
       "would put 0.28.")
def _fields(n):
    shares = [v for layer in n["field_share"] for v in layer]
    ok = all(2 / 3 <= v <= 0.9 for v in shares) and round(n["field_share_uniform"], 2) == 0.28
    return ok, (f"{min(shares):.3f} to {max(shares):.3f}; uniform "
                f"{n['field_share_uniform']:.3f} (test accuracy {n['dates_accuracy']:.3f})")


@claim(_07, "self-attention-triangle", "The decoder's self-attention maps are lower triangles "
       "(exactly 0 above the diagonal), and the first row puts all its weight on <sos>.")
def _triangle(n):
    ok = n["self_above_diagonal"] == 0 and n["self_first_row_on_sos"] >= 1 - 1e-6
    return ok, (f"largest weight above the diagonal {n['self_above_diagonal']:g}; first row on "
                f"<sos> {n['self_first_row_on_sos']:.6f}")


@claim(_07, "cache-same-tokens", "The key/value cache changes nothing in what is generated: the "
       "same tokens on every test date, every test string of the copy task and the 8 × 256 "
       "tokens of the timing runs.")
def _cache_same(n):
    same = n["cache_same_tokens"]
    return all(same.values()), ", ".join(f"{k}: {v}" for k, v in same.items())


@claim(_07, "cache-faster", "Time per token: without the cache it grows several-fold (≥ 3×) "
       "from n = 16 to 256, with it it stays about the same (within 1.5×); at the longest "
       "output the cache is about an order of magnitude faster (≥ √10 ≈ 3.2×, the nearer power "
       "of ten being 10).")
def _cache_fast(n):
    plain, cached = n["per_token_plain"], n["per_token_cached"]
    growth = plain[-1] / plain[0]
    flat = max(cached) / min(cached)
    speedup = plain[-1] / cached[-1]
    ok = growth >= 3 and flat <= 1.5 and speedup >= math.sqrt(10)
    return ok, (f"without the cache ×{growth:.1f} from n = {n['per_token_lengths'][0]} to "
                f"{n['per_token_lengths'][-1]}; with it largest / smallest {flat:.2f}; at n = "
                f"{n['per_token_lengths'][-1]} {1e3 * plain[-1]:.1f} ms against "
                f"{1e3 * cached[-1]:.2f} ms per token (×{speedup:.1f})")


#: The table's columns, in order: series key -> (heading, notebook, note).
SERIES = {
    "bottleneck_02": ("Bottleneck seq2seq (02)", "02_seq2seq_bottleneck", "copy task"),
    "reversed_02": ("Bottleneck, source reversed (02)", "02_seq2seq_bottleneck", "copy task"),
    "bottleneck_04": ("Bottleneck seq2seq, retrained (04)", "04_luong_attention", "copy task"),
    "luong_04": ("Luong attention, general (04)", "04_luong_attention", "copy task"),
    "bottleneck_07": ("Bottleneck seq2seq, retrained (07)", "07_transformer_decoder",
                      "copy task"),
    "luong_07": ("Luong attention, retrained (07)", "07_transformer_decoder", "copy task"),
    "transformer_07": ("Transformer encoder–decoder (07)", "07_transformer_decoder",
                       "copy task"),
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
    if "transformer_07" in s:
        text = (f"the Transformer encoder–decoder of notebook 07 reaches "
                f"{_fmt(_mean(s['transformer_07'], 10, 12))} on the long strings (its lowest "
                f"mean at any length: {_fmt(min(s['transformer_07']['acc'].values()))})")
        retrained = [f"{_fmt(_mean(s[k], 10, 12))} ({name})"
                     for k, name in (("luong_07", "Luong attention"),
                                     ("bottleneck_07", "bottleneck")) if k in s]
        if retrained:
            text += (", beside the two RNN models it retrains (one run each): "
                     + " and ".join(retrained))
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
             f"({data['mode']} mode). Columns 02, 04 and 07 share one task and one test split "
             "(copying digit strings of length 1–12); 07 retrains 02's and 04's models (one "
             "run each) beside its Transformer.")
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
        claim_text, measured = (text.replace("|", "\\|") for text in (c["claim"], c["measured"]))
        out.append(f"| `{c['id']}` | {claim_text} | {measured} | {mark} |")
    return out

