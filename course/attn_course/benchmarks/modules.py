"""The worked-solution ``MultiHeadAttention`` and ``EncoderLayer`` (notebook 06, from scratch)
against PyTorch's ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer``.

Both sides compute the same function: PyTorch's modules are built from ours with the grading
reference's ``to_torch_mha`` / ``to_torch_layer`` (same weights; outputs checked close once,
outside the timings). Settings, the same on both sides: float32, eval mode, dropout 0,
``batch_first=True``, post-LN with ReLU, no mask, the same number of torch threads.

- *forward*: one call under ``torch.no_grad()`` (inference: PyTorch takes its native fast
  path);
- *forward + backward*: one call with gradients on, then ``out.backward(g)`` with a fixed
  ``g``, the input requiring its gradient too (as a layer inside a model does); gradients
  are reset to ``None`` at every call, on both sides.

Timer: the process's CPU time (``time.process_time``). With one torch thread every operation
runs on the calling thread, so this is the compute time, and time spent descheduled by other
programs on a shared machine does not count (wall-clock medians are kept in the JSON too).
After a warm-up, the implementations are interleaved in rounds (their order reversed every
other round), each timed over enough calls to last ``BLOCK_MS``; times are medians over the
rounds, and the ratio is the median over the rounds of ours / PyTorch's, timed back to back.

Allocator: the (B, H, T, T) tensors are megabytes; with glibc's default, adaptive settings,
whether freeing them hands the pages back to the system (to be faulted in again, zeroed, at
the next call) depends on the heap's history, so the same comparison can cost one side
thousands of extra page faults per call in one run and none in the next (docs/benchmarks/
notes.md). During the measurement glibc's thresholds are pinned (``mallopt``: trim
above 1 GiB, ``mmap`` above 32 MiB), for both sides alike; page faults per call are recorded.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BUDGET = 1.3
THREADS = 1  # what notebook 06 itself uses (torch.set_num_threads(1) in its setup cell)
BLOCK_MS = 20.0
NOTEBOOK = Path("source") / "06_transformer_encoder" / "06_transformer_encoder.ipynb"

# (B, T, d_model, heads); d_ff = 4 d_model. Sizes a CPU course meets: the notebook's mirror
# model (d 64, 4 heads) with a larger batch, and two longer-sequence ones where the T x T work
# dominates.
SIZES = [(32, 32, 64, 4), (16, 128, 128, 8), (8, 256, 128, 8)]
SMOKE_SIZES = [(2, 8, 16, 2)]

MHA_BASELINES = {
    "weights": ("nn.MultiheadAttention(need_weights=True, average_attn_weights=False)",
                "like for like: both return the per-head weights"),
    "fast": ("nn.MultiheadAttention(need_weights=False)",
             "PyTorch's fused attention kernel, which cannot return the weights"),
}
LAYER_BASELINE = ("nn.TransformerEncoderLayer(norm_first=False, activation='relu')",
                  "PyTorch's layer never returns weights (fused attention inside)")

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_GLIBC_DEFAULT = 128 * 1024


@contextlib.contextmanager
def pinned_allocator():
    """Pin glibc's trim and mmap thresholds while timing; yields a description (None where
    the C library is not glibc). Afterwards they are set back to glibc's initial values
    (their adaptive adjustment stays off) and the freed memory is trimmed."""
    libc = None
    with contextlib.suppress(OSError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None or not (mallopt(_M_MMAP_THRESHOLD, 32 << 20)
                               and mallopt(_M_TRIM_THRESHOLD, 1 << 30)):
        yield None
        return
    try:
        yield "glibc mallopt: M_TRIM_THRESHOLD 1 GiB, M_MMAP_THRESHOLD 32 MiB"
    finally:
        mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT)
        mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT)
        libc.malloc_trim(0)


def _timer() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def _page_faults() -> int:
    """Minor page faults of this process so far (0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved(fns: dict[str, Callable[[], object]], *, rounds: int, warmup: int,
                block_ms: float) -> dict[str, dict]:
    """Time each function in interleaved rounds (the order within a round reversed every other
    round), each timed over enough calls to last about ``block_ms`` (at least one call; the
    same number for every function). Returns, per function, the median per-call milliseconds
    (CPU and wall), page faults per call, and the per-round CPU times, so that callers can
    pair them round by round."""
    slowest = 0.0
    for fn in fns.values():
        for _ in range(warmup):
            c0, _ = _timer()
            fn()
            slowest = max(slowest, (_timer()[0] - c0) * 1e3)
    inner = max(1, round(block_ms / max(slowest, 1e-3)))
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    wall: dict[str, list[float]] = {name: [] for name in fns}
    faults: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn = fns[name]
            f0, (c0, w0) = _page_faults(), _timer()
            for _ in range(inner):
                fn()
            c1, w1 = _timer()
            faults[name].append((_page_faults() - f0) / inner)
            cpu[name].append((c1 - c0) * 1e3 / inner)
            wall[name].append((w1 - w0) * 1e3 / inner)
    return {name: {"cpu_ms": statistics.median(cpu[name]),
                   "wall_ms": statistics.median(wall[name]),
                   "page_faults": statistics.median(faults[name]),
                   "rounds_ms": cpu[name], "calls_per_round": inner} for name in fns}


def _forward(module, inputs, x, **kwargs):
    """One call of ``module`` on ``inputs`` copies of ``x`` (self-attention: query, key and
    value are the same tensor), under ``torch.no_grad()``."""
    import torch

    def run():
        with torch.no_grad():
            return module(*[x] * inputs, **kwargs)
    return run


def _forward_backward(module, inputs, x, grad, **kwargs):
    """The same call with gradients, then backward from ``grad`` through the first output."""
    def run():
        module.zero_grad(set_to_none=True)
        x.grad = None
        out = module(*[x] * inputs, **kwargs)
        (out[0] if isinstance(out, tuple) else out).backward(grad)
    return run


def _check_close(name: str, ours, theirs, atol: float = 1e-4) -> float:
    import torch

    err = float((ours - theirs).abs().max())
    if not torch.allclose(ours, theirs, atol=atol, rtol=1e-4):
        raise AssertionError(f"{name}: ours and PyTorch's differ by {err:.2e}; the benchmark "
                             "would compare different functions")
    return err


def _row(part, op, baseline, size, ours, theirs, note, like_for_like):
    B, T, d, h = size
    # paired: ours and PyTorch's timed back to back in each round, so a change in the load of
    # a shared machine between rounds cancels out of the ratio
    ratios = [a / b for a, b in zip(ours["rounds_ms"], theirs["rounds_ms"], strict=True)]
    ratio = statistics.median(ratios)
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return {
        "module": part, "op": op, "baseline": baseline, "note": note,
        "like_for_like": like_for_like,
        "size": {"B": B, "T": T, "d_model": d, "heads": h, "d_ff": 4 * d},
        "ours_ms": round(ours["cpu_ms"], 4), "torch_ms": round(theirs["cpu_ms"], 4),
        "ratio": round(ratio, 3), "ratio_quartiles": [round(q1, 3), round(q3, 3)],
        "budget": BUDGET, "met": ratio <= BUDGET,
        "rounds": len(ratios), "calls_per_round": ours["calls_per_round"],
        "ours_wall_ms": round(ours["wall_ms"], 4), "torch_wall_ms": round(theirs["wall_ms"], 4),
        "ours_page_faults": ours["page_faults"], "torch_page_faults": theirs["page_faults"],
    }


def measure(root: Path, smoke: bool, log=print, *, sizes=None) -> dict:
    import torch

    from attn_course.notebooks import namespace
    from attn_grader.nb06_transformer_encoder.reference import to_torch_layer, to_torch_mha

    threads_before = torch.get_num_threads()
    ns = namespace(Path(root) / NOTEBOOK)  # its setup cell sets the thread count too
    MultiHeadAttention, EncoderLayer = ns["MultiHeadAttention"], ns["EncoderLayer"]
    sizes = sizes or (SMOKE_SIZES if smoke else SIZES)
    rounds, warmup, block_ms = (3, 1, 0.0) if smoke else (15, 3, BLOCK_MS)
    timing = {"rounds": rounds, "warmup": warmup, "block_ms": block_ms}
    rows, max_err = [], 0.0
    torch.set_num_threads(THREADS)
    try:
        with pinned_allocator() as allocator:
            for size in sizes:
                B, T, d, h = size
                label = f"B={B} T={T} d={d} h={h}"
                torch.manual_seed(0)
                x = torch.randn(B, T, d)
                xg = x.clone().requires_grad_()
                g = torch.randn(B, T, d)

                # --- multi-head attention ----------------------------------------------
                ours = MultiHeadAttention(d, h).eval()
                theirs = to_torch_mha(ours).eval()
                with torch.no_grad():
                    out, w = ours(x, x, x)
                    out_t, w_t = theirs(x, x, x, need_weights=True, average_attn_weights=False)
                    out_f, _ = theirs(x, x, x, need_weights=False)
                    max_err = max(max_err, _check_close(f"MHA {label} out", out, out_t),
                                  _check_close(f"MHA {label} weights", w, w_t),
                                  _check_close(f"MHA {label} out (fused)", out, out_f))
                with_weights = {"need_weights": True, "average_attn_weights": False}
                fwd = interleaved({
                    "ours": _forward(ours, 3, x),
                    "weights": _forward(theirs, 3, x, **with_weights),
                    "fast": _forward(theirs, 3, x, need_weights=False),
                }, **timing)
                fb = interleaved({
                    "ours": _forward_backward(ours, 3, xg, g),
                    "weights": _forward_backward(theirs, 3, xg, g, **with_weights),
                    "fast": _forward_backward(theirs, 3, xg, g, need_weights=False),
                }, **timing)
                for op, t in (("forward", fwd), ("forward+backward", fb)):
                    for key, (baseline, note) in MHA_BASELINES.items():
                        rows.append(_row("MultiHeadAttention", op, baseline, size, t["ours"],
                                         t[key], note, like_for_like=key == "weights"))

                # --- encoder layer -----------------------------------------------------
                ours = EncoderLayer(d, h, 4 * d).eval()
                theirs = to_torch_layer(ours).eval()
                with torch.no_grad():
                    max_err = max(max_err, _check_close(f"EncoderLayer {label}", ours(x)[0],
                                                        theirs(x)))
                fwd = interleaved({"ours": _forward(ours, 1, x),
                                   "torch": _forward(theirs, 1, x)}, **timing)
                fb = interleaved({"ours": _forward_backward(ours, 1, xg, g),
                                  "torch": _forward_backward(theirs, 1, xg, g)}, **timing)
                for op, t in (("forward", fwd), ("forward+backward", fb)):
                    rows.append(_row("EncoderLayer", op, LAYER_BASELINE[0], size, t["ours"],
                                     t["torch"], LAYER_BASELINE[1], like_for_like=True))
                for r in rows[-6:]:
                    log(f"  {r['module']:18s} {label:22s} {r['op']:16s} "
                        f"ours {r['ours_ms']:8.3f} ms  torch {r['torch_ms']:8.3f} ms  "
                        f"x{r['ratio']:.2f}  ({r['baseline']})")
    finally:
        torch.set_num_threads(threads_before)
    judged = [r for r in rows if r["like_for_like"]]
    return {
        "rows": rows,
        "budget": BUDGET,
        "met": all(r["met"] for r in judged),
        "worst_ratio": max(r["ratio"] for r in judged),
        "settings": {
            "notebook": NOTEBOOK.as_posix(),
            "torch_threads": THREADS,
            "dtype": "float32",
            "mode": "eval(), dropout 0, batch_first=True, post-LN (norm_first=False), ReLU, "
                    "d_ff = 4 d_model, no mask",
            "forward": "under torch.no_grad()",
            "backward": "out.backward(g) with a fixed g, the input requiring grad, grads reset "
                        "to None every call",
            "timer": "process CPU time (time.process_time); wall-clock medians in *_wall_ms",
            "rounds": rounds, "warmup_calls": warmup, "block_ms": block_ms,
            "statistic": "times: median over the rounds of the per-call time; ratio: median "
                         "over the rounds of ours / PyTorch's, timed back to back "
                         "(quartiles in ratio_quartiles)",
            "allocator": allocator or "not pinned (not glibc)",
            "max_abs_difference": max_err,
            "fast_path_enabled": bool(torch.backends.mha.get_fastpath_enabled()),
        },
    }


def markdown(data: dict) -> str:
    s = data["settings"]
    verdict = "**met**" if data["met"] else "**missed**"
    out = [
        "## Worked solutions against PyTorch",
        "",
        f"Budget: the from-scratch `MultiHeadAttention` and `EncoderLayer` of notebook 06 within "
        f"{data['budget']}× of PyTorch's own modules, forward and forward + backward: "
        f"{verdict} (worst judged ratio {data['worst_ratio']:.2f}×).",
        "",
        f"Same weights on both sides (outputs agree to {s['max_abs_difference']:.1e}); "
        f"{s['dtype']}, {s['mode']}; {s['torch_threads']} torch thread(s) on both sides. "
        f"Forward {s['forward']}; forward + backward: {s['backward']}. Timer: {s['timer']}; "
        f"{s['warmup_calls']} warm-up calls, then {s['rounds']} interleaved rounds of about "
        f"{s['block_ms']:.0f} ms per implementation; {s['statistic']}. Allocator: "
        f"{s['allocator']}.",
        "",
        "| module | B, T, d, h | pass | PyTorch | ours (ms) | PyTorch (ms) "
        "| ours / PyTorch (quartiles) | within 1.3× |",
        "|---|---|---|---|---:|---:|---:|---|",
    ]
    for r in data["rows"]:
        z = r["size"]
        met = "yes" if r["met"] else "**no**"
        if not r["like_for_like"]:
            met = f"context only ({'yes' if r['met'] else 'no'})"
        q1, q3 = r["ratio_quartiles"]
        out.append(f"| `{r['module']}` | {z['B']}, {z['T']}, {z['d_model']}, {z['heads']} "
                   f"| {r['op']} | `{r['baseline']}` | {r['ours_ms']:.2f} | {r['torch_ms']:.2f} "
                   f"| {r['ratio']:.2f}× ({q1:.2f}–{q3:.2f}) | {met} |")
    out += [
        "",
        "Judged rows: `nn.MultiheadAttention` asked for the per-head weights, as our module "
        "must return them (the graded contract), and `nn.TransformerEncoderLayer`. "
        "`need_weights=False` rows, for context, show PyTorch's fused attention kernel, which "
        "never writes the (B, H, T, T) weights and so cannot return them; "
        "`nn.TransformerEncoderLayer` always runs its attention that way, so the encoder-layer "
        "rows include that difference.",
    ]
    return "\n".join(out) + "\n"
