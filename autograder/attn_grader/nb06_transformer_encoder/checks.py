"""Checks for 06_transformer_encoder.

Modules are judged by behaviour: the student's class is built with the contract's
constructor arguments, the reference's (randomised) ``state_dict`` is loaded into it, and
outputs are compared. A class is never judged through the student's other graded answers:
while a check runs, the names it would look up (``split_heads``, ``merge_heads``,
``MultiHeadAttention``, ``FeedForward``, ``EncoderLayer``) point to the reference, and the
submodules of an encoder layer or encoder are replaced by reference copies after loading.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterator

import torch
from torch import nn

from attn_grader.framework import (
    Check,
    CheckFailed,
    Report,
    as_pair,
    as_tensor,
    expect,
    expect_close,
    expect_shape,
    expect_unmodified,
    generator,
    is_close,
    randn,
    snapshot,
)
from attn_grader.nb06_transformer_encoder import reference as ref

INF = float("-inf")

# --- shared machinery -------------------------------------------------------------------

_REFERENCE_PARTS = {
    "split_heads": ref.split_heads,
    "merge_heads": ref.merge_heads,
    "MultiHeadAttention": ref.MultiHeadAttention,
    "FeedForward": ref.FeedForward,
    "EncoderLayer": ref.EncoderLayer,
}


@contextlib.contextmanager
def reference_parts(cls, names: tuple[str, ...]) -> Iterator[None]:
    """While the check runs, the graded names the student's class looks up at call time
    (in the namespace its methods were defined in) point to the reference versions, so one
    wrong answer is not charged twice. Everything is restored afterwards."""
    namespaces: list[dict] = []
    for attr in ("__init__", "forward"):
        g = getattr(getattr(cls, attr, None), "__globals__", None)
        if isinstance(g, dict) and all(g is not n for n in namespaces):
            namespaces.append(g)
    saved = []
    try:
        for g in namespaces:
            for name in names:
                if name in g:
                    saved.append((g, name, g[name]))
                    g[name] = _REFERENCE_PARTS[name]
        yield
    finally:
        for g, name, obj in reversed(saved):
            g[name] = obj


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def run(fn: Callable, *args, hints: dict[str, str] | None = None, hint: str = "", **kwargs):
    """Call student code; turn a crash into a message that says what probably went wrong."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        message = _first_line(exc)
        extra = next((h for key, h in (hints or {}).items() if key in message), hint)
        raise CheckFailed(f"raised {type(exc).__name__}: {message}"
                          + (f" — {extra}" if extra else "")) from None


def _matches(value: torch.Tensor, candidate, atol: float, rtol: float) -> bool:
    """Close, with NaN allowed where the candidate has NaN too."""
    if type(candidate) is not torch.Tensor or candidate.shape != value.shape:
        return False
    a, b = value.detach().double(), candidate.detach().double()
    nan_a, nan_b = torch.isnan(a), torch.isnan(b)
    if not torch.equal(nan_a, nan_b):
        return False
    return is_close(a.masked_fill(nan_a, 0.0), b.masked_fill(nan_b, 0.0), atol, rtol)


def expect_match(value, expected: torch.Tensor, what: str, *, diagnoses=(), atol: float = 1e-5,
                 rtol: float = 1e-4, hint: str = "") -> torch.Tensor:
    """``expect_close`` whose diagnoses are ``(mistake, candidate or thunk)`` pairs and may
    contain NaN (a mistake that yields NaN is named, not just reported as NaN)."""
    t = expect_shape(value, tuple(expected.shape), what, hint=hint)
    if is_close(t, expected, atol, rtol):
        return t
    for mistake, candidate in diagnoses:
        try:
            candidate = candidate() if callable(candidate) else candidate
        except Exception:
            continue
        if _matches(t, candidate, atol, rtol):
            raise CheckFailed(
                f"{what} does not match the reference: it matches what you get when {mistake}")
    return expect_close(t, expected, what, atol=atol, rtol=rtol, hint=hint)


def _state_dict_problem(student: nn.Module, reference: nn.Module, ignore=()) -> str:
    mine, theirs = student.state_dict(), reference.state_dict()
    missing = [k for k in theirs if k not in mine]
    unexpected = [k for k in mine if k not in theirs and k not in ignore]
    wrong = [f"{k} {tuple(mine[k].shape)} (expected {tuple(v.shape)})"
             for k, v in theirs.items() if k in mine and mine[k].shape != v.shape]
    parts = []
    if missing:
        parts.append("missing " + ", ".join(missing[:6]) + (" ..." if len(missing) > 6 else ""))
    if unexpected:
        parts.append("unexpected " + ", ".join(unexpected[:6])
                     + (" ..." if len(unexpected) > 6 else ""))
    if wrong:
        parts.append("wrong shape " + ", ".join(wrong[:4]))
    return "; ".join(parts)


def build(cls, args: tuple, reference: nn.Module, what: str, names: str, *,
          pe_must_not_persist: bool = False) -> nn.Module:
    """Construct the student's module with the contract's arguments, load the reference's
    weights into it, and switch it to eval mode. A persistent ``pe`` buffer fails only the
    case that asks for ``pe_must_not_persist``; elsewhere it is tolerated."""
    try:
        module = cls(*args)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        raise CheckFailed(f"{what}{args} could not be built: {type(exc).__name__}: "
                          f"{_first_line(exc)}") from None
    expect(isinstance(module, nn.Module), f"{what}{args} should be an nn.Module, got "
           f"{type(module).__name__}")
    extra_pe = "pe" in module.state_dict() and "pe" not in reference.state_dict()
    if extra_pe and pe_must_not_persist:
        raise CheckFailed(f"{what}'s state_dict contains pe: register the positional encoding "
                          "with register_buffer('pe', ..., persistent=False), it is computed, "
                          "not learned or saved")
    state = dict(reference.state_dict())
    if extra_pe:  # tolerated here: the case about pe fails it
        state["pe"] = module.state_dict()["pe"]
    problem = _state_dict_problem(module, reference, ignore=("pe",) if extra_pe else ())
    if problem:
        raise CheckFailed(f"the reference weights do not load into your {what}: {problem} — "
                          f"{names}")
    try:
        module.load_state_dict(state)
    except Exception as exc:
        raise CheckFailed(f"the reference weights do not load into your {what}: "
                          f"{_first_line(exc)} — {names}") from None
    return module.eval()


@torch.no_grad()
def randomise(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Random weights everywhere (LayerNorm gains and biases too), so that no mistake hides
    behind a default initialisation (gain 1, bias 0)."""
    g = generator(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
            p.copy_(1.0 + 0.3 * noise)
        elif p.dim() >= 2 and "embedding" not in name:
            p.copy_(noise * scale / math.sqrt(p.shape[1]) * 2)
        else:
            p.copy_(noise * scale)
    return module.eval()


def _random_mask(B: int, Tq: int, Tk: int, seed: int, p: float = 0.35) -> torch.Tensor:
    """A (B, Tq, Tk) bool mask, different for every row, each row with one key at least."""
    mask = torch.rand(B, Tq, Tk, generator=generator(seed)) > p
    mask[..., 0] |= ~mask.any(-1)
    return mask


def _padding(lengths: list[int], T: int) -> torch.Tensor:
    return (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)


# --- split_heads / merge_heads ----------------------------------------------------------


def _squeeze_hint(got: tuple, expected: tuple) -> str:
    if got != expected and tuple(d for d in expected if d != 1) == got:
        return "an axis of size 1 was dropped (avoid squeeze(); keep every axis)"
    return ""


def _split_shape_hint(B, H, T, Dh) -> dict:
    return {
        (B, T, H, Dh): "the transpose is missing: view as (B, T, H, D/H), then swap axes 1 and 2",
        (B, H, Dh, T): "T and head_dim are swapped: the result must be (B, H, T, D/H)",
        (B, Dh, T, H): "num_heads and head_dim are swapped: view as (B, T, H, D/H), "
                       "not (B, T, D/H, H)",
    }


def _split_diagnoses(x, H):
    B, T, D = x.shape
    Dh = D // H
    return [
        ("the heads are split with reshape to (B, H, T, D/H) directly, without the transpose "
         "(positions and features get mixed)", lambda: x.reshape(B, H, T, Dh)),
        ("the heads take interleaved features (view as (B, T, D/H, H)): head h must get the "
         "contiguous block of features h*D/H ... (h+1)*D/H - 1",
         lambda: x.reshape(B, T, Dh, H).permute(0, 3, 1, 2)),
    ]


def _expect_split(out, x, H, what):
    B, T, D = x.shape
    Dh = D // H
    t = as_tensor(out, what)
    shape_hints = _split_shape_hint(B, H, T, Dh)
    hint = shape_hints.get(tuple(t.shape)) or _squeeze_hint(tuple(t.shape), (B, H, T, Dh))
    if tuple(t.shape) != (B, H, T, Dh) and hint:
        raise CheckFailed(f"{what} should have shape {(B, H, T, Dh)}, got {tuple(t.shape)} — "
                          + hint)
    return expect_match(t, ref.split_heads(x, H), what, diagnoses=_split_diagnoses(x, H))


def check_split_heads(split_heads) -> Report:
    c = Check("split_heads")
    # T != head_dim != num_heads, so that no wrong axis order keeps the right shape
    B, T, D, H = 2, 5, 12, 3
    x = randn(B, T, D, seed=1)

    with c.case("returns (B, H, T, D/H)"):
        out = as_tensor(run(split_heads, x.clone(), H), "split_heads(x, 3)")
        shape_hints = _split_shape_hint(B, H, T, D // H)
        hint = shape_hints.get(tuple(out.shape), "")
        expect_shape(out, (B, H, T, D // H), "split_heads(x (2, 5, 12), 3)", hint=hint)

    with c.case("head h holds the h-th block of D/H features of every position", weight=3):
        for (b, t, d, h), seed in (((2, 5, 12, 3), 2), ((3, 7, 8, 2), 3), ((2, 6, 24, 4), 4)):
            xs = randn(b, t, d, seed=seed)
            _expect_split(run(split_heads, xs.clone(), h), xs, h,
                          f"split_heads(x {(b, t, d)}, {h})")

    with c.case("works for a batch of one and for a single head"):
        x1 = randn(1, 4, 6, seed=5)
        _expect_split(run(split_heads, x1.clone(), 2), x1, 2, "split_heads(x (1, 4, 6), 2)")
        out = run(split_heads, x1.clone(), 1)
        expect_close(out, x1.unsqueeze(1), "split_heads(x (1, 4, 6), 1)",
                     hint="with one head the result is x with a head axis of size 1 "
                          "(avoid squeeze())")

    with c.case("leaves x unmodified and lets gradients flow"):
        xg = x.clone().requires_grad_(True)
        before = snapshot(x=x)
        out = as_tensor(run(split_heads, xg, H), "split_heads")
        expect(out.requires_grad, "the result is cut off from autograd (detached or numpy?)")
        weights = randn(B, H, T, D // H, seed=6)
        (out * weights).sum().backward()
        expect_close(xg.grad, ref.merge_heads(weights), "the gradient with respect to x")
        expect_unmodified(before, {"x": xg})
    return c.report()


_VIEW_HINT = ("view() needs a contiguous tensor, and a transposed one is not: use .reshape(...) "
              "or .contiguous().view(...)")


def _merge_diagnoses(x):
    B, H, T, Dh = x.shape
    return [
        ("the heads are merged with reshape to (B, T, H*Dh) without first moving the head axis "
         "next to the features (transpose(1, 2) before the reshape)",
         lambda: x.reshape(B, T, H * Dh)),
        ("the heads are interleaved feature by feature (permuted to (B, T, Dh, H)): head h's "
         "features must stay together as block h", lambda: x.permute(0, 2, 3, 1).reshape(B, T, -1)),
        ("the heads are concatenated in reverse order", lambda: ref.merge_heads(x.flip(1))),
    ]


def _expect_merge(out, x, what):
    B, H, T, Dh = x.shape
    t = as_tensor(out, what)
    if tuple(t.shape) == (B, T, Dh):
        raise CheckFailed(f"{what} should have shape {(B, T, H * Dh)}, got {tuple(t.shape)} — "
                          "the heads are averaged or summed instead of concatenated")
    return expect_match(t, ref.merge_heads(x), what, diagnoses=_merge_diagnoses(x),
                        hint=_squeeze_hint(tuple(t.shape), (B, T, H * Dh)))


def check_merge_heads(merge_heads) -> Report:
    c = Check("merge_heads")
    B, H, T, Dh = 2, 3, 5, 4
    x = randn(B, H, T, Dh, seed=11)
    hints = {"view size": _VIEW_HINT}

    with c.case("returns (B, T, H*Dh)"):
        out = as_tensor(run(merge_heads, x.clone(), hints=hints), "merge_heads(x)")
        hint = ("the heads are averaged or summed instead of concatenated"
                if tuple(out.shape) == (B, T, Dh) else "")
        expect_shape(out, (B, T, H * Dh), "merge_heads(x (2, 3, 5, 4))", hint=hint)

    with c.case("puts the heads side by side: head h fills features h*Dh ... (h+1)*Dh - 1",
                weight=3):
        for shape, seed in (((2, 3, 5, 4), 12), ((3, 2, 7, 6), 13), ((2, 4, 3, 5), 14)):
            xs = randn(*shape, seed=seed)
            _expect_merge(run(merge_heads, xs.clone(), hints=hints), xs,
                          f"merge_heads(x {shape})")

    with c.case("undoes split_heads (on transposed, non-contiguous input too)"):
        y = randn(2, 6, 12, seed=15)
        split = y.view(2, 6, 3, 4).transpose(1, 2)  # what split_heads gives: not contiguous
        expect_close(run(merge_heads, split, hints=hints), y, "merge_heads(split_heads(y, 3))",
                     hint="merging must invert splitting exactly")

    with c.case("works for a batch of one and for a single head"):
        x1 = randn(1, 2, 4, 3, seed=16)
        _expect_merge(run(merge_heads, x1.clone(), hints=hints), x1, "merge_heads(x (1, 2, 4, 3))")
        xh = randn(2, 1, 4, 3, seed=17)
        expect_close(run(merge_heads, xh.clone(), hints=hints), xh[:, 0],
                     "merge_heads(x (2, 1, 4, 3))", hint="avoid squeeze()")

    with c.case("leaves x unmodified and lets gradients flow"):
        xg = x.clone().requires_grad_(True)
        before = snapshot(x=x)
        out = as_tensor(run(merge_heads, xg, hints=hints), "merge_heads")
        expect(out.requires_grad, "the result is cut off from autograd (detached or numpy?)")
        weights = randn(B, T, H * Dh, seed=18)
        (out * weights).sum().backward()
        expect_close(xg.grad, ref.split_heads(weights, H), "the gradient with respect to x")
        expect_unmodified(before, {"x": xg})
    return c.report()


# --- MultiHeadAttention -----------------------------------------------------------------


def mha_variant(m, query, key, value, mask=None, *, scale="head", softmax_dim=-1,
                masking="fill", split="ok", merge="ok", w_o=True, self_only=False):
    """Multi-head attention written out, with one thing done the way a mistake does it."""
    H, D = m.num_heads, m.w_q.out_features
    Dh = D // H
    if self_only:
        key = value = query
    B, Tq = query.shape[0], query.shape[1]

    def heads(t):
        T = t.shape[1]
        if split == "reshape":
            return t.reshape(B, H, T, Dh)
        if split == "interleave":
            return t.reshape(B, T, Dh, H).permute(0, 3, 1, 2)
        return t.reshape(B, T, H, Dh).transpose(1, 2)

    q, k, v = heads(m.w_q(query)), heads(m.w_k(key)), heads(m.w_v(value))
    scores = q @ k.transpose(-2, -1) / {"head": math.sqrt(Dh), "model": math.sqrt(D),
                                        "none": 1.0}[scale]
    m4 = None if mask is None else mask.unsqueeze(-3)
    if m4 is not None:
        if masking in ("fill", "nan"):
            scores = scores.masked_fill(~m4, INF)
        elif masking == "big":
            scores = scores.masked_fill(~m4, torch.finfo(scores.dtype).min)
        elif masking in ("invert", "invert_zeroed"):
            scores = scores.masked_fill(m4, INF)
        elif masking == "add":
            scores = scores + m4.to(scores.dtype)
        elif masking == "zero":
            scores = scores.masked_fill(~m4, 0.0)
    w = torch.softmax(scores, dim=softmax_dim)
    if m4 is not None:
        if masking == "fill":
            w = w.masked_fill(~m4, 0.0)
        elif masking == "after":
            w = w * m4
        elif masking == "invert_zeroed":
            w = w.masked_fill(m4, 0.0)
    out = w @ v
    if merge == "reshape":
        o = out.reshape(B, Tq, D)
    elif merge == "interleave":
        o = out.permute(0, 2, 3, 1).reshape(B, Tq, D)
    else:
        o = out.transpose(1, 2).reshape(B, Tq, D)
    return (m.w_o(o) if w_o else o), w


_MHA_MISTAKES = [
    ("the scores are not divided by sqrt(d_k) (d_k = d_model / num_heads, the head dimension)",
     {"scale": "none"}),
    ("the scores are divided by sqrt(d_model) instead of sqrt(d_k) = sqrt(d_model / num_heads), "
     "the head dimension", {"scale": "model"}),
    ("softmax is taken over the query axis (dim=-2) instead of over the keys (dim=-1)",
     {"softmax_dim": -2}),
    ("the heads are split with reshape to (B, H, T, D/H) without the transpose",
     {"split": "reshape"}),
    ("the heads are split with interleaved features (head h must get the h-th contiguous "
     "block of D/H features)", {"split": "interleave"}),
    ("the heads are merged with reshape to (B, T, D) without the transpose back",
     {"merge": "reshape"}),
    ("the heads are merged interleaved feature by feature (head h's output must be the h-th "
     "block of features before w_o)", {"merge": "interleave"}),
    ("the output projection w_o is skipped", {"w_o": False}),
    ("key and value are ignored (the query is used as key and value)", {"self_only": True}),
    ("the mask is applied after the softmax (weights * mask: the rest no longer sums to 1)",
     {"masking": "after"}),
    ("the mask is added to the scores as 0/1 instead of blocking with -inf (masked_fill)",
     {"masking": "add"}),
    ("the mask is inverted (True must mean 'may attend', False 'blocked')",
     {"masking": "invert"}),
    ("the mask is inverted (True must mean 'may attend', False 'blocked'), ",
     {"masking": "invert_zeroed"}),
    ("masked scores are set to 0 instead of -inf (a score of 0 still gets weight)",
     {"masking": "zero"}),
    ("a query whose keys are all masked gets NaN (softmax over a row of -inf): give it "
     "weights 0", {"masking": "nan"}),
    ("a query whose keys are all masked gets uniform weights instead of 0 (after filling "
     "with a large negative number, also zero the masked weights)", {"masking": "big"}),
]


def _mha_diagnoses(m, q, k, v, mask, part: int):
    cache: dict = {}

    def thunk(opts):
        def compute():
            key_ = tuple(sorted(opts.items()))
            if key_ not in cache:
                with torch.no_grad():
                    cache[key_] = mha_variant(m, q, k, v, mask, **opts)
            return cache[key_][part]
        return compute

    relevant = [(text, opts) for text, opts in _MHA_MISTAKES
                if mask is not None or "masking" not in opts]
    return [(text.rstrip(", "), thunk(opts)) for text, opts in relevant]


_MHA_NAMES = ("MultiHeadAttention needs w_q, w_k, w_v, w_o, each nn.Linear(d_model, d_model) "
              "with bias, and no other parameters")
_MASK_HINTS = {
    "size of tensor": "the mask must be shared by all heads: add the head axis with "
                      "mask.unsqueeze(-3) (a (Tq, Tk) mask has no batch axis, so unsqueeze(1) "
                      "puts the head axis in the wrong place)",
    "must match": "the mask must be shared by all heads: add the head axis with "
                  "mask.unsqueeze(-3)",
}


def _weights_shape_hint(w, B, H, Tq, Tk) -> str:
    shape = tuple(w.shape)
    if Tq != Tk and shape == (B, H, Tq, Tq):
        return ("the weights are (Tq, Tq): key and value are ignored (the query is used as "
                "key and value)")
    if shape == (B, Tq, Tk):
        return "keep one (Tq, Tk) map per head: do not average the weights over the heads"
    return "one (Tq, Tk) map per head"


def _expect_mha(student, reference, q, k, v, mask, what, *, atol=1e-5):
    with torch.no_grad():
        hints = _MASK_HINTS if mask is not None and mask.dim() == 2 else None
        got = as_pair(run(student, q.clone(), k.clone(), v.clone(),
                          None if mask is None else mask.clone(), hints=hints),
                      "MultiHeadAttention.forward")
        out, weights = reference(q, k, v, mask)
    B, Tq, Tk = q.shape[0], q.shape[1], k.shape[1]
    H = reference.num_heads
    w = expect_shape(got[1], (B, H, Tq, Tk), f"the weights tensor {what}",
                     hint=_weights_shape_hint(as_tensor(got[1], "weights"), B, H, Tq, Tk))
    expect_match(w, weights, f"the weights tensor {what}", atol=atol,
                 diagnoses=_mha_diagnoses(reference, q, k, v, mask, 1))
    expect_match(got[0], out, f"the output {what}", atol=atol,
                 diagnoses=_mha_diagnoses(reference, q, k, v, mask, 0))


def check_MultiHeadAttention(MultiHeadAttention) -> Report:
    c = Check("MultiHeadAttention")
    # 3 heads of size 4: sqrt(d_model) != sqrt(d_k); T = 5 and 7 differ from the head size
    D, H, B, Tq, Tk = 12, 3, 2, 5, 7
    reference = randomise(ref.MultiHeadAttention(D, H), seed=20)
    x = randn(B, Tq, D, seed=21)
    kv_k, kv_v = randn(B, Tk, D, seed=22), randn(B, Tk, D, seed=23)

    with reference_parts(MultiHeadAttention, ("split_heads", "merge_heads")):
        with c.case("builds with w_q, w_k, w_v, w_o and returns (out (B, Tq, D), weights "
                    "(B, H, Tq, Tk))"):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            out, w = as_pair(run(m, x, kv_k, kv_v), "MultiHeadAttention.forward")
            expect_shape(out, (B, Tq, D), "out")
            expect_shape(w, (B, H, Tq, Tk), "weights",
                         hint=_weights_shape_hint(as_tensor(w, "weights"), B, H, Tq, Tk))

        with c.case("self-attention matches the reference (no mask)", weight=2):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            _expect_mha(m, reference, x, x, x, None, "for self-attention")
            x2 = randn(B, 4, D, seed=24)
            _expect_mha(m, reference, x2, x2, x2, None, "for self-attention with T = 4")

        with c.case("cross-attention: Tq != Tk, key != value (no mask)", weight=1.5):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            _expect_mha(m, reference, x, kv_k, kv_v, None, "for cross-attention")
            r2 = randomise(ref.MultiHeadAttention(16, 2), seed=25)
            m2 = build(MultiHeadAttention, (16, 2), r2, "MultiHeadAttention", _MHA_NAMES)
            q2, k2 = randn(3, 6, 16, seed=26), randn(3, 3, 16, seed=27)
            _expect_mha(m2, r2, q2, k2, k2, None, "for d_model = 16, 2 heads, Tq = 6, Tk = 3")

        with c.case("a (B, 1, Tk) padding mask: masked keys get weight exactly 0", weight=2):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            pad = _padding([4, 7], Tk)
            _expect_mha(m, reference, x, kv_k, kv_v, pad, "with a padding mask")

        with c.case("(Tq, Tk) causal and (B, Tq, Tk) masks, shared by every head", weight=1.5):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            causal = torch.ones(Tq, Tq, dtype=torch.bool).tril()
            _expect_mha(m, reference, x, x, x, causal, "with a (Tq, Tq) causal mask")
            full = _random_mask(B, Tq, Tk, seed=28)
            _expect_mha(m, reference, x, kv_k, kv_v, full, "with a (B, Tq, Tk) mask")

        with c.case("a query whose keys are all masked gets weights 0 and no NaN"):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            full = _random_mask(B, Tq, Tk, seed=29)
            full[0, 1] = False
            full[1, 3] = False
            _expect_mha(m, reference, x, kv_k, kv_v, full, "with all-False mask rows")

        with c.case("works for a batch of one and does not overflow on large scores"):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            _expect_mha(m, reference, x[:1], kv_k[:1], kv_v[:1], _padding([5], Tk)[:1],
                        "for a batch of one", atol=1e-5)
            big = copy.deepcopy(reference)
            with torch.no_grad():
                big.w_q.weight.mul_(40.0)
                big.w_k.weight.mul_(40.0)
            mb = build(MultiHeadAttention, (D, H), big, "MultiHeadAttention", _MHA_NAMES)
            with torch.no_grad():
                scores = (ref.split_heads(big.w_q(x), H)
                          @ ref.split_heads(big.w_k(x), H).transpose(-1, -2))
            expect(scores.abs().max() > 1e3, "internal: the large-score case is not large")
            out, w = as_pair(run(mb, x, x, x), "MultiHeadAttention.forward")
            w, out = as_tensor(w, "weights"), as_tensor(out, "out")
            finite = bool(torch.isfinite(w).all()) and bool(torch.isfinite(out).all())
            expect(finite,
                   "with scores of about 1e4 the result has inf or NaN — exp() overflows: use "
                   "torch.softmax (or subtract the row max before exp)")
            exp_out, exp_w = big(x, x, x)
            expect_close(w, exp_w, "the weights for large scores", atol=2e-3, rtol=1e-3)

        with c.case("leaves its inputs unmodified; gradients flow to every projection"):
            m = build(MultiHeadAttention, (D, H), reference, "MultiHeadAttention", _MHA_NAMES)
            q = x.clone().requires_grad_(True)
            mask = _padding([6, 3], Tk)
            before = snapshot(query=x, key=kv_k, value=kv_v, mask=mask)
            k_in, v_in, mask_in = kv_k.clone(), kv_v.clone(), mask.clone()
            out, _ = as_pair(run(m, q, k_in, v_in, mask_in), "MultiHeadAttention.forward")
            out = as_tensor(out, "out")
            expect_unmodified(before, {"query": q, "key": k_in, "value": v_in, "mask": mask_in})
            expect(out.requires_grad, "out is cut off from autograd (detached, numpy, or "
                   "computed under torch.no_grad()?)")
            g = randn(B, Tq, D, seed=30)
            (out * g).sum().backward()
            r = copy.deepcopy(reference).train(False)
            qr = x.clone().requires_grad_(True)
            (r(qr, kv_k, kv_v, mask)[0] * g).sum().backward()
            for name in ("w_q", "w_k", "w_v", "w_o"):
                grad = getattr(m, name).weight.grad
                expect(grad is not None, f"no gradient reached {name}.weight")
                expect_close(grad, getattr(r, name).weight.grad,
                             f"the gradient with respect to {name}.weight", atol=1e-4)
            expect_close(q.grad, qr.grad, "the gradient with respect to query", atol=1e-4)
    return c.report()


# --- FeedForward ------------------------------------------------------------------------

_FFN_NAMES = ("FeedForward needs linear1 = nn.Linear(d_model, d_ff) and linear2 = "
              "nn.Linear(d_ff, d_model), both with bias")


def _ffn_diagnoses(f, x):
    relu = torch.relu
    return [
        ("the ReLU between linear1 and linear2 is missing",
         lambda: f.linear2(f.linear1(x))),
        ("GELU is used instead of ReLU",
         lambda: f.linear2(torch.nn.functional.gelu(f.linear1(x)))),
        ("a ReLU is also applied after linear2 (the output must be able to go negative)",
         lambda: relu(f.linear2(relu(f.linear1(x))))),
        ("the residual x + FFN(x) is added inside FeedForward (the encoder layer adds it)",
         lambda: x + f.linear2(relu(f.linear1(x)))),
        ("the ReLU is applied to the input before linear1",
         lambda: f.linear2(f.linear1(relu(x)))),
    ]


def _expect_ffn(student, reference, x, what):
    with torch.no_grad():
        got = run(student, x.clone())
        expected = reference(x)
        expect_match(got, expected, what, diagnoses=_ffn_diagnoses(reference, x))


def check_FeedForward(FeedForward) -> Report:
    c = Check("FeedForward")
    D, F_, B, T = 8, 20, 2, 5
    reference = randomise(ref.FeedForward(D, F_), seed=40)
    x = randn(B, T, D, seed=41)

    with c.case("builds with linear1, linear2 and keeps the shape (B, T, d_model)"):
        f = build(FeedForward, (D, F_), reference, "FeedForward", _FFN_NAMES)
        expect_shape(run(f, x.clone()), (B, T, D), "FeedForward(x)")

    with c.case("computes linear2(ReLU(linear1(x)))", weight=3):
        f = build(FeedForward, (D, F_), reference, "FeedForward", _FFN_NAMES)
        _expect_ffn(f, reference, x, "FeedForward(x)")
        r2 = randomise(ref.FeedForward(6, 4), seed=42)
        f2 = build(FeedForward, (6, 4), r2, "FeedForward", _FFN_NAMES)
        _expect_ffn(f2, r2, randn(3, 2, 6, seed=43), "FeedForward(6, 4)(x)")

    with c.case("acts on each position independently; a batch of one works"):
        f = build(FeedForward, (D, F_), reference, "FeedForward", _FFN_NAMES)
        with torch.no_grad():
            whole = as_tensor(run(f, x.clone()), "FeedForward(x)")
            for t in (0, 3):
                expect_close(run(f, x[:, t:t + 1].clone()), whole[:, t:t + 1],
                             f"FeedForward on position {t} alone",
                             hint="positions must not exchange information in the FFN")
        _expect_ffn(f, reference, x[:1], "FeedForward(x) for a batch of one")

    with c.case("in eval() mode dropout changes nothing"):
        try:
            f = build(FeedForward, (D, F_, 0.5), reference, "FeedForward(..., dropout=0.5)",
                      _FFN_NAMES)
        except CheckFailed as exc:
            raise CheckFailed(f"{exc} (FeedForward must accept dropout as its third "
                              "argument)") from None
        with torch.no_grad():
            first = as_tensor(run(f, x.clone()), "FeedForward(x)")
            second = as_tensor(run(f, x.clone()), "FeedForward(x)")
        expect(is_close(first, second, 0, 0),
               "two calls in eval() mode give different outputs: dropout is active in eval "
               "mode — use nn.Dropout (or F.dropout(..., training=self.training))")
        _expect_ffn(f, reference, x, "FeedForward(x) in eval mode with dropout=0.5")

    with c.case("leaves x unmodified; gradients flow to linear1 and linear2"):
        f = build(FeedForward, (D, F_), reference, "FeedForward", _FFN_NAMES)
        xg = x.clone().requires_grad_(True)
        before = snapshot(x=x)
        out = as_tensor(run(f, xg), "FeedForward(x)")
        expect_unmodified(before, {"x": xg})
        expect(out.requires_grad, "the output is cut off from autograd")
        g = randn(B, T, D, seed=44)
        (out * g).sum().backward()
        r = copy.deepcopy(reference)
        (r(x) * g).sum().backward()
        for name in ("linear1", "linear2"):
            grad = getattr(f, name).weight.grad
            expect(grad is not None, f"no gradient reached {name}.weight")
            expect_close(grad, getattr(r, name).weight.grad,
                         f"the gradient with respect to {name}.weight", atol=1e-4)
    return c.report()


# --- EncoderLayer -----------------------------------------------------------------------

_LAYER_NAMES = ("EncoderLayer needs self_attn (MultiHeadAttention), ffn (FeedForward), norm1 "
                "and norm2 (nn.LayerNorm(d_model))")


def layer_variant(L, x, mask, kind):
    """An encoder layer wired the way a mistake wires it (using L's reference parts)."""
    def attn(h, m=mask):
        return L.self_attn(h, h, h, m)[0]
    if kind == "pre_ln":
        h = x + attn(L.norm1(x))
        return h + L.ffn(L.norm2(h))
    if kind == "no_res_attn":
        h = L.norm1(attn(x))
        return L.norm2(h + L.ffn(h))
    if kind == "no_res_ffn":
        h = L.norm1(x + attn(x))
        return L.norm2(L.ffn(h))
    if kind == "norm1_twice":
        h = L.norm1(x + attn(x))
        return L.norm1(h + L.ffn(h))
    if kind == "norm_inside":
        h = x + L.norm1(attn(x))
        return h + L.norm2(L.ffn(h))
    if kind == "ffn_on_input":
        h = L.norm1(x + attn(x))
        return L.norm2(h + L.ffn(x))
    if kind == "mask_ignored":
        h = L.norm1(x + attn(x, None))
        return L.norm2(h + L.ffn(h))
    if kind == "norms_swapped":
        h = L.norm2(x + attn(x))
        return L.norm1(h + L.ffn(h))
    raise ValueError(kind)


_LAYER_MISTAKES = [
    ("pre-LN is used (x + sublayer(norm(x))) instead of post-LN (norm(x + sublayer(x)))",
     "pre_ln"),
    ("the residual connection around self-attention is missing (norm1(attn(x)) instead of "
     "norm1(x + attn(x)))", "no_res_attn"),
    ("the residual connection around the feed-forward sublayer is missing (norm2(ffn(h)) "
     "instead of norm2(h + ffn(h)))", "no_res_ffn"),
    ("norm1 is used after both sublayers (norm2 is never used)", "norm1_twice"),
    ("norm1 and norm2 are swapped", "norms_swapped"),
    ("LayerNorm is applied to the sublayer output only (x + norm(sublayer(x)))", "norm_inside"),
    ("the feed-forward sublayer reads the layer's input x instead of the attention "
     "sublayer's output", "ffn_on_input"),
    ("the mask is not passed to self-attention", "mask_ignored"),
]


def _expect_layer(student, reference, x, mask, what):
    with torch.no_grad():
        got = as_pair(run(student, x.clone(), None if mask is None else mask.clone()),
                      "EncoderLayer.forward")
        out, weights = reference(x, mask)
        diagnoses = [(text, (lambda k=kind: layer_variant(reference, x, mask, k)))
                     for text, kind in _LAYER_MISTAKES
                     if mask is not None or kind != "mask_ignored"]
        B, T, _ = x.shape
        expect_shape(got[1], (B, reference.self_attn.num_heads, T, T), f"the weights tensor {what}",
                     hint="return the self-attention weights (B, H, T, T)")
        expect_match(got[0], out, f"the output {what}", diagnoses=diagnoses, atol=1e-4)
        expect_close(got[1], weights, f"the weights tensor {what}",
                     hint="return the weights of self-attention on the layer's input x")


def _build_layer(cls, args, reference):
    layer = build(cls, args, reference, "EncoderLayer", _LAYER_NAMES)
    # judge the wiring only: the sublayers are the reference's (already graded separately)
    layer.self_attn = copy.deepcopy(reference.self_attn)
    layer.ffn = copy.deepcopy(reference.ffn)
    return layer.eval()


def check_EncoderLayer(EncoderLayer) -> Report:
    c = Check("EncoderLayer")
    D, H, F_, B, T = 12, 3, 20, 2, 5
    reference = randomise(ref.EncoderLayer(D, H, F_), seed=50)
    x = randn(B, T, D, seed=51)
    names = ("MultiHeadAttention", "FeedForward", "split_heads", "merge_heads")

    with reference_parts(EncoderLayer, names):
        with c.case("builds with self_attn, ffn, norm1, norm2 and returns (x (B, T, D), "
                    "weights (B, H, T, T))"):
            layer = _build_layer(EncoderLayer, (D, H, F_), reference)
            out, w = as_pair(run(layer, x.clone()), "EncoderLayer.forward")
            expect_shape(out, (B, T, D), "the output")
            expect_shape(w, (B, H, T, T), "the weights")

        with c.case("post-LN: norm1(x + attn(x)), then norm2(h + ffn(h)), as "
                    "nn.TransformerEncoderLayer(norm_first=False)", weight=3):
            layer = _build_layer(EncoderLayer, (D, H, F_), reference)
            _expect_layer(layer, reference, x, None, "without a mask")
            r2 = randomise(ref.EncoderLayer(8, 2, 16), seed=52)
            l2 = _build_layer(EncoderLayer, (8, 2, 16), r2)
            _expect_layer(l2, r2, randn(3, 4, 8, seed=53), None, "for d_model = 8, 2 heads")

        with c.case("passes a (B, 1, T) padding mask to self-attention", weight=1.5):
            layer = _build_layer(EncoderLayer, (D, H, F_), reference)
            _expect_layer(layer, reference, x, _padding([3, 5], T), "with a padding mask")
            _expect_layer(layer, reference, x, _random_mask(B, T, T, seed=54),
                          "with a (B, T, T) mask")

        with c.case("works for a batch of one; in eval() mode dropout changes nothing"):
            layer = _build_layer(EncoderLayer, (D, H, F_), reference)
            _expect_layer(layer, reference, x[:1], _padding([4], T)[:1], "for a batch of one")
            try:
                ld = _build_layer(EncoderLayer, (D, H, F_, 0.5), reference)
            except CheckFailed as exc:
                raise CheckFailed(f"{exc} (EncoderLayer must accept dropout as its fourth "
                                  "argument)") from None
            with torch.no_grad():
                a = as_pair(run(ld, x.clone()), "EncoderLayer.forward")[0]
                b = as_pair(run(ld, x.clone()), "EncoderLayer.forward")[0]
            expect(is_close(as_tensor(a, "out"), as_tensor(b, "out"), 0, 0),
                   "two calls in eval() mode differ: dropout is active in eval mode — use "
                   "nn.Dropout modules")
            _expect_layer(ld, reference, x, None, "in eval mode with dropout=0.5")

        with c.case("leaves x unmodified; gradients flow to the norms and to x"):
            layer = _build_layer(EncoderLayer, (D, H, F_), reference)
            xg = x.clone().requires_grad_(True)
            before = snapshot(x=x)
            out, _ = as_pair(run(layer, xg), "EncoderLayer.forward")
            out = as_tensor(out, "out")
            expect_unmodified(before, {"x": xg})
            expect(out.requires_grad, "the output is cut off from autograd")
            g = randn(B, T, D, seed=55)
            (out * g).sum().backward()
            r = copy.deepcopy(reference)
            xr = x.clone().requires_grad_(True)
            (r(xr)[0] * g).sum().backward()
            for name in ("norm1", "norm2"):
                grad = getattr(layer, name).weight.grad
                expect(grad is not None, f"no gradient reached {name}.weight")
                expect_close(grad, getattr(r, name).weight.grad,
                             f"the gradient with respect to {name}.weight", atol=1e-4)
            expect_close(xg.grad, xr.grad, "the gradient with respect to x", atol=1e-4)
    return c.report()


# --- TransformerEncoder -----------------------------------------------------------------

_ENC_NAMES = ("TransformerEncoder needs embedding (nn.Embedding(vocab_size, d_model, "
              "padding_idx=0)), layers (nn.ModuleList of EncoderLayer) and a non-persistent "
              "buffer pe")


def encoder_variant(E, tokens, mask, kind):
    """The encoder computed the way a mistake computes it (E is the reference)."""
    T, D = tokens.shape[1], E.d_model
    H = E.layers[0].self_attn.num_heads
    e, pe = E.embedding(tokens), E.pe[:T]
    x = {
        "ok": e * math.sqrt(D) + pe,
        "no_scale": e + pe,
        "no_pos": e * math.sqrt(D),
        "scale_after": (e + pe) * math.sqrt(D),
        "divide": e / math.sqrt(D) + pe,
        "head_scale": e * math.sqrt(D // H) + pe,
    }.get(kind, e * math.sqrt(D) + pe)
    attentions = []
    for layer in E.layers:
        x, w = layer(x, None if kind == "mask_ignored" else mask)
        attentions.append(w)
    return x, attentions


_ENC_MISTAKES = [
    ("the embeddings are not multiplied by sqrt(d_model)", "no_scale"),
    ("the positional encoding is not added", "no_pos"),
    ("the sum embedding + positions is multiplied by sqrt(d_model) (only the embeddings are "
     "scaled)", "scale_after"),
    ("the embeddings are divided by sqrt(d_model) instead of multiplied", "divide"),
    ("the embeddings are scaled by sqrt(d_model / num_heads) instead of sqrt(d_model)",
     "head_scale"),
    ("the mask is not passed to the layers", "mask_ignored"),
]


def _pe_diagnoses(max_len: int, d_model: int):
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)

    def concatenated():
        angles = position / 10000 ** (two_i / d_model)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).float()

    def exponent_i():
        angles = position / 10000 ** (two_i / 2 / d_model)
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).float()

    return [("sin and cos are concatenated ([sin | cos]) instead of interleaved (sin on even "
             "features, cos on odd ones)", concatenated),
            ("the exponent uses i instead of 2i (10000^(i/d) instead of 10000^(2i/d))",
             exponent_i)]


def _build_encoder(cls, args, reference, *, own_pe=False, pe_must_not_persist=False):
    enc = build(cls, args, reference, "TransformerEncoder", _ENC_NAMES,
                pe_must_not_persist=pe_must_not_persist)
    layers = getattr(enc, "layers", None)
    expect(isinstance(layers, nn.ModuleList), "TransformerEncoder.layers should be an "
           "nn.ModuleList of EncoderLayer")
    # judge the encoder's own work only: its layers are the reference's, and (outside the
    # case that checks pe itself) so is the positional encoding
    enc.layers = copy.deepcopy(reference.layers)
    pe = dict(enc.named_buffers()).get("pe")
    if not own_pe and type(pe) is torch.Tensor and pe.shape == reference.pe.shape:
        with torch.no_grad():
            pe.copy_(reference.pe)
    return enc.eval()


def _expect_encoder(student, reference, tokens, mask, what):
    with torch.no_grad():
        got = as_pair(run(student, tokens.clone(), None if mask is None else mask.clone()),
                      "TransformerEncoder.forward")
        out, attentions = reference(tokens, mask)
        diagnoses = [(text, (lambda k=kind: encoder_variant(reference, tokens, mask, k)[0]))
                     for text, kind in _ENC_MISTAKES if mask is not None or kind != "mask_ignored"]
        expect_match(got[0], out, f"the output {what}", diagnoses=diagnoses, atol=1e-4)
        att = got[1]
        expect(isinstance(att, (list, tuple)) and len(att) == len(attentions),
               f"attentions {what} should be a list with one (B, H, T, T) tensor per layer "
               f"({len(attentions)}), got "
               + (f"{len(att)} items" if isinstance(att, (list, tuple)) else type(att).__name__))
        att = [expect_shape(a, tuple(e.shape), f"attentions[{i}] {what}")
               for i, (a, e) in enumerate(zip(att, attentions))]
        if all(is_close(a, e) for a, e in zip(att, attentions)):
            return
        if all(is_close(a, attentions[-1]) for a in att):
            raise CheckFailed(f"attentions {what}: the same layer's weights (the last layer's) "
                              "are listed for every layer — append each layer's weights inside "
                              "the loop")
        if all(is_close(a, e) for a, e in zip(att, attentions[::-1])):
            raise CheckFailed(f"attentions {what}: the layers' weights are listed in reverse "
                              "order (attentions[0] must be the first layer's)")
        for i, (a, e) in enumerate(zip(att, attentions)):
            expect_close(a, e, f"attentions[{i}] {what}")


def check_TransformerEncoder(TransformerEncoder) -> Report:
    c = Check("TransformerEncoder")
    V, D, H, F_, N, max_len = 11, 12, 3, 20, 2, 16
    args = (V, D, H, F_, N, max_len)
    reference = randomise(ref.TransformerEncoder(*args), seed=60, scale=0.5)
    with torch.no_grad():
        reference.embedding.weight[0].zero_()
    tokens = torch.randint(3, V, (2, 6), generator=generator(61))
    tokens[1, 4:] = 0
    pad = (tokens != 0).unsqueeze(1)
    names = ("EncoderLayer", "MultiHeadAttention", "FeedForward", "split_heads", "merge_heads")

    with reference_parts(TransformerEncoder, names):
        with c.case("builds with embedding, layers, pe and returns (out (B, T, D), a list of "
                    "(B, H, T, T))"):
            enc = _build_encoder(TransformerEncoder, args, reference)
            out, att = as_pair(run(enc, tokens.clone()), "TransformerEncoder.forward")
            expect_shape(out, (2, 6, D), "out")
            expect(isinstance(att, (list, tuple)) and len(att) == N,
                   f"attentions should be a list of {N} tensors, one per layer")
            expect_shape(att[0], (2, H, 6, 6), "attentions[0]")

        with c.case("pe is a (max_len, d_model) non-persistent buffer with the sinusoidal "
                    "encoding"):
            enc = _build_encoder(TransformerEncoder, args, reference, own_pe=True,
                                 pe_must_not_persist=True)
            buffers = dict(enc.named_buffers())
            expect("pe" in buffers, "pe should be registered as a buffer "
                   "(self.register_buffer('pe', ..., persistent=False))")
            expect("pe" not in enc.state_dict(), "pe must not be saved in the state_dict: "
                   "register it with persistent=False")
            expect_match(buffers["pe"], reference.pe, "pe", atol=1e-4,
                         diagnoses=_pe_diagnoses(max_len, D),
                         hint="use the given sinusoidal_positional_encoding(max_len, d_model)")

        with c.case("embeddings * sqrt(d_model) + positions, then the layers in order",
                    weight=3):
            enc = _build_encoder(TransformerEncoder, args, reference)
            _expect_encoder(enc, reference, tokens, None, "without a mask")
            t2 = torch.randint(3, V, (1, 3), generator=generator(62))
            _expect_encoder(enc, reference, t2, None, "for a batch of one with T = 3")

        with c.case("passes the (B, 1, T) padding mask to every layer", weight=1.5):
            enc = _build_encoder(TransformerEncoder, args, reference)
            _expect_encoder(enc, reference, tokens, pad, "with a padding mask")

        with c.case("the embedding has padding_idx=0 (PAD's row gets no gradient); tokens are "
                    "unmodified; gradients flow"):
            fresh = run(TransformerEncoder, *args)
            enc = _build_encoder(TransformerEncoder, args, reference)
            for module, label in ((fresh, "a new encoder"), (enc, "the encoder")):
                toks = tokens.clone()
                before = snapshot(tokens=tokens)
                out, _ = as_pair(run(module, toks, pad.clone()), "TransformerEncoder.forward")
                expect_unmodified(before, {"tokens": toks})
                out = as_tensor(out, "out")
                expect(out.requires_grad, "the output is cut off from autograd")
                (out * randn(*out.shape, seed=63)).sum().backward()
                grad = module.embedding.weight.grad
                expect(grad is not None, f"no gradient reached embedding.weight of {label}")
                expect(float(grad[0].abs().max()) == 0.0,
                       f"the PAD row of embedding.weight gets a gradient in {label}: build the "
                       "embedding with padding_idx=0")
                expect(float(grad[3:].abs().max()) > 0, "no gradient reaches the real tokens' "
                       "embeddings")
    return c.report()


CHECKS = {
    "split_heads": check_split_heads,
    "merge_heads": check_merge_heads,
    "MultiHeadAttention": check_MultiHeadAttention,
    "FeedForward": check_FeedForward,
    "EncoderLayer": check_EncoderLayer,
    "TransformerEncoder": check_TransformerEncoder,
}
