"""Checks for 06_transformer_encoder.

Modules are judged as the student built them. The student's class is constructed with the
contract's arguments and the reference's (randomised) weights are loaded into it by the
contract's names (``build_like``: nothing of the student's module is read before, so lazily
built layers work); then outputs, attention weights and gradients are compared with the
reference's. Nothing of the student's is swapped, copied or type-tested: a check only calls
the student's objects and reads what they return (under grading they are proxies of objects
living in the student's process).

A composite module (``EncoderLayer``, ``TransformerEncoder``) is judged twice:

- its wiring, against the contract's recipe applied to its *own* submodules, called through
  the interfaces the contract gives them (``self_attn(q, k, v, mask) -> (out, weights)``,
  ``ffn(h)``, ``layers[i](x, mask) -> (x, weights)``), so a mistake inside a sublayer is not
  charged to the wiring a second time (it is charged in that sublayer's own check);
- as a whole, against the reference with the same weights (``nn.TransformerEncoderLayer``
  inside), so a layer whose sublayers are wrong, or an encoder whose layers share one set of
  weights, loses the points of that case, with a message naming the part that differs.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from torch import nn

from attn_grader.framework import (
    Check,
    CheckFailed,
    Report,
    as_pair,
    as_tensor,
    build_like,
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


def pe_atol(max_len: int) -> float:
    """How far a correct float32 sinusoidal table may be from the float64 reference.

    Measured (every common float32 formula: exp/log, pow, division, numpy in float32): the
    largest error grows with the angle p / 10000^(2i/d), up to 1.3e-7 * max_len (3.9e-4 at
    max_len 5000, d_model 512); this allows three times that."""
    return 1e-5 + 4e-7 * max_len


# --- shared machinery -------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def run(fn: Callable, *args, hints: dict[str, str] | None = None, hint: str = "",
        tried: str = "", contract: str = "", **kwargs):
    """Call student code; turn a crash into a message that says what was tried, what the
    contract expects and what probably went wrong."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        message = _first_line(exc)
        extra = next((h for key, h in (hints or {}).items() if key in message), hint)
        raise CheckFailed((f"{tried} " if tried else "")
                          + f"raised {type(exc).__name__}: {message}"
                          + (f" — {extra}" if extra else "")
                          + (f" (the contract: {contract})" if contract else "")) from None


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


def build(cls, args: tuple, reference: nn.Module, what: str, names: str):
    """The student's module built with the contract's arguments, the reference's weights
    loaded by name (``build_like``), in eval mode; a failure also says which names the
    contract asks for."""
    try:
        return build_like(cls, reference, args, what)
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} — {names}") from None


def grads_of(module) -> dict:
    """{parameter name: its .grad} of a module (read by name: the student's module may be a
    proxy whose parameters live elsewhere)."""
    return {name: p.grad for name, p in dict(module.named_parameters()).items()}


class Interface(CheckFailed):
    """A student's submodule does not answer the way the contract says it is called."""


def submodule(module, name: str, owner: str):
    try:
        return getattr(module, name)
    except AttributeError:
        raise Interface(f"{owner} has no submodule {name}") from None


def call_part(part, args: tuple, tried: str, contract: str):
    try:
        return part(*args)
    except NotImplementedError:
        raise
    except CheckFailed as exc:
        raise Interface(f"{tried}: {exc} ({contract})") from None
    except Exception as exc:
        raise Interface(f"{tried} raised {type(exc).__name__}: {_first_line(exc)} "
                        f"({contract})") from None


def tensor_part(value, shape: tuple, tried: str, contract: str) -> torch.Tensor:
    if type(value) is not torch.Tensor or tuple(value.shape) != tuple(shape):
        got = (f"shape {tuple(value.shape)}" if type(value) is torch.Tensor
               else type(value).__name__)
        raise Interface(f"{tried} returned {got}, expected shape {tuple(shape)} ({contract})")
    return value

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
_MHA_CALL = ("MultiHeadAttention(d_model, num_heads).forward(query (B, Tq, D), key (B, Tk, D), "
             "value (B, Tk, D), mask=None) -> (out (B, Tq, D), weights (B, H, Tq, Tk))")
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
                          None if mask is None else mask.clone(), hints=hints,
                          tried=f"MultiHeadAttention.forward {what}", contract=_MHA_CALL),
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
    return got[0]


def _scaled(reference, factor: float):
    big = copy.deepcopy(reference)
    with torch.no_grad():
        big.w_q.weight.mul_(factor)
        big.w_k.weight.mul_(factor)
    return big


def check_MultiHeadAttention(MultiHeadAttention) -> Report:
    c = Check("MultiHeadAttention")
    # 3 heads of size 4: sqrt(d_model) != sqrt(d_k); T = 5 and 7 differ from the head size
    D, H, B, Tq, Tk = 12, 3, 2, 5, 7
    reference = randomise(ref.MultiHeadAttention(D, H), seed=20)
    x = randn(B, Tq, D, seed=21)
    kv_k, kv_v = randn(B, Tk, D, seed=22), randn(B, Tk, D, seed=23)

    def built(r=reference, args=(D, H)):
        return build(MultiHeadAttention, args, r, "MultiHeadAttention", _MHA_NAMES)

    with c.case("builds with w_q, w_k, w_v, w_o and returns (out (B, Tq, D), weights "
                "(B, H, Tq, Tk))"):
        m = built()
        out, w = as_pair(run(m, x, kv_k, kv_v, tried="MultiHeadAttention.forward(query, key, "
                             "value)", contract=_MHA_CALL), "MultiHeadAttention.forward")
        expect_shape(out, (B, Tq, D), "out")
        expect_shape(w, (B, H, Tq, Tk), "weights",
                     hint=_weights_shape_hint(as_tensor(w, "weights"), B, H, Tq, Tk))

    with c.case("self-attention matches the reference (no mask)", weight=2):
        m = built()
        _expect_mha(m, reference, x, x, x, None, "for self-attention")
        x2 = randn(B, 4, D, seed=24)
        _expect_mha(m, reference, x2, x2, x2, None, "for self-attention with T = 4")

    with c.case("cross-attention: Tq != Tk, key != value (no mask)", weight=1.5):
        m = built()
        _expect_mha(m, reference, x, kv_k, kv_v, None, "for cross-attention")
        r2 = randomise(ref.MultiHeadAttention(16, 2), seed=25)
        m2 = built(r2, (16, 2))
        q2, k2 = randn(3, 6, 16, seed=26), randn(3, 3, 16, seed=27)
        _expect_mha(m2, r2, q2, k2, k2, None, "for d_model = 16, 2 heads, Tq = 6, Tk = 3")

    with c.case("a (B, 1, Tk) padding mask: masked keys get weight exactly 0", weight=2):
        m = built()
        pad = _padding([4, 7], Tk)
        _expect_mha(m, reference, x, kv_k, kv_v, pad, "with a padding mask")

    with c.case("(Tq, Tk) causal and random (B, Tq, Tk) masks, shared by every head; with a "
                "causal mask, later positions do not change earlier outputs", weight=1.5):
        m = built()
        causal = torch.ones(Tq, Tq, dtype=torch.bool).tril()
        out = _expect_mha(m, reference, x, x, x, causal, "with a (Tq, Tq) causal mask")
        for seed in (28, 31):
            full = _random_mask(B, Tq, Tk, seed=seed)
            _expect_mha(m, reference, x, kv_k, kv_v, full, "with a random (B, Tq, Tk) mask")
        changed = x.clone()
        changed[:, 3:] = randn(B, Tq - 3, D, seed=32, scale=3.0)
        with torch.no_grad():
            out2, _ = as_pair(run(m, changed, changed.clone(), changed.clone(), causal.clone(),
                                  tried="MultiHeadAttention.forward with a causal mask",
                                  contract=_MHA_CALL), "MultiHeadAttention.forward")
        expect_close(out2[:, :3], as_tensor(out, "out")[:, :3],
                     "the outputs at positions 0..2 after changing positions 3 and later "
                     "(causal mask)", atol=1e-5,
                     hint="with a causal mask a position must not see later positions")

    with c.case("a query whose keys are all masked gets weights 0 and no NaN"):
        m = built()
        full = _random_mask(B, Tq, Tk, seed=29)
        full[0, 1] = False
        full[1, 3] = False
        _expect_mha(m, reference, x, kv_k, kv_v, full, "with all-False mask rows")

    with c.case("works for a batch of one and does not overflow on large scores"):
        m = built()
        _expect_mha(m, reference, x[:1], kv_k[:1], kv_v[:1], _padding([5], Tk)[:1],
                    "for a batch of one", atol=1e-5)
        big = _scaled(reference, 40.0)
        mb = built(big)
        with torch.no_grad():
            scores = (ref.split_heads(big.w_q(x), H)
                      @ ref.split_heads(big.w_k(x), H).transpose(-1, -2))
        expect(scores.abs().max() > 1e3, "internal: the large-score case is not large")
        with torch.no_grad():
            out, w = as_pair(run(mb, x, x, x, tried="MultiHeadAttention.forward for large "
                                 "scores", contract=_MHA_CALL), "MultiHeadAttention.forward")
        w, out = as_tensor(w, "weights"), as_tensor(out, "out")
        finite = bool(torch.isfinite(w).all()) and bool(torch.isfinite(out).all())
        expect(finite,
               "with scores of about 1e4 the result has inf or NaN — exp() overflows: use "
               "torch.softmax (or subtract the row max before exp)")
        with torch.no_grad():
            exp_out, exp_w = big(x, x, x)
        expect_close(w, exp_w, "the weights for large scores", atol=2e-3, rtol=1e-3)
        # scores of about 1e3 under a mask: still far above any masking constant in use
        # (-1e4, -1e9, finfo.min), still far past where exp() overflows
        mid = _scaled(reference, 12.0)
        _expect_mha(built(mid), mid, x, kv_k, kv_v, _random_mask(B, Tq, Tk, seed=33),
                    "for scores of about 1e3 with a random mask", atol=2e-3)

    with c.case("leaves its inputs unmodified; gradients flow to every projection"):
        m = built()
        q = x.clone().requires_grad_(True)
        mask = _padding([6, 3], Tk)
        before = snapshot(query=x, key=kv_k, value=kv_v, mask=mask)
        k_in, v_in, mask_in = kv_k.clone(), kv_v.clone(), mask.clone()
        out, _ = as_pair(run(m, q, k_in, v_in, mask_in, tried="MultiHeadAttention.forward",
                             contract=_MHA_CALL), "MultiHeadAttention.forward")
        out = as_tensor(out, "out")
        expect_unmodified(before, {"query": q, "key": k_in, "value": v_in, "mask": mask_in})
        expect(out.requires_grad, "out is cut off from autograd (detached, numpy, or "
               "computed under torch.no_grad()?)")
        g = randn(B, Tq, D, seed=30)
        (out * g).sum().backward()
        r = copy.deepcopy(reference).train(False)
        qr = x.clone().requires_grad_(True)
        (r(qr, kv_k, kv_v, mask)[0] * g).sum().backward()
        grads, want = grads_of(m), grads_of(r)
        for name in ("w_q", "w_k", "w_v", "w_o"):
            grad = grads.get(f"{name}.weight")
            expect(grad is not None, f"no gradient reached {name}.weight")
            expect_close(grad, want[f"{name}.weight"],
                         f"the gradient with respect to {name}.weight", atol=1e-4)
        expect_close(q.grad, qr.grad, "the gradient with respect to query", atol=1e-4)
    return c.report()


# --- FeedForward ------------------------------------------------------------------------

_FFN_NAMES = ("FeedForward needs linear1 = nn.Linear(d_model, d_ff) and linear2 = "
              "nn.Linear(d_ff, d_model), both with bias")
_FFN_CALL = "FeedForward(d_model, d_ff).forward(x (B, T, d_model)) -> (B, T, d_model)"


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


def _ffn_out(student, x, what):
    return run(student, x.clone(), tried=what, contract=_FFN_CALL)


def _expect_ffn(student, reference, x, what):
    with torch.no_grad():
        got = _ffn_out(student, x, what)
        expected = reference(x)
        expect_match(got, expected, what, diagnoses=_ffn_diagnoses(reference, x))


def check_FeedForward(FeedForward) -> Report:
    c = Check("FeedForward")
    D, F_, B, T = 8, 20, 2, 5
    reference = randomise(ref.FeedForward(D, F_), seed=40)
    x = randn(B, T, D, seed=41)

    def built(r=reference, args=(D, F_), what="FeedForward"):
        return build(FeedForward, args, r, what, _FFN_NAMES)

    with c.case("builds with linear1, linear2 and keeps the shape (B, T, d_model)"):
        f = built()
        expect_shape(_ffn_out(f, x, "FeedForward(x)"), (B, T, D), "FeedForward(x)")

    with c.case("computes linear2(ReLU(linear1(x)))", weight=3):
        f = built()
        _expect_ffn(f, reference, x, "FeedForward(x)")
        r2 = randomise(ref.FeedForward(6, 4), seed=42)
        f2 = built(r2, (6, 4))
        _expect_ffn(f2, r2, randn(3, 2, 6, seed=43), "FeedForward(6, 4)(x)")

    with c.case("acts on each position independently; a batch of one works"):
        f = built()
        with torch.no_grad():
            whole = as_tensor(_ffn_out(f, x, "FeedForward(x)"), "FeedForward(x)")
            for t in (0, 3):
                expect_close(_ffn_out(f, x[:, t:t + 1], f"FeedForward on position {t} alone"),
                             whole[:, t:t + 1], f"FeedForward on position {t} alone",
                             hint="positions must not exchange information in the FFN")
        _expect_ffn(f, reference, x[:1], "FeedForward(x) for a batch of one")

    with c.case("in eval() mode dropout changes nothing"):
        try:
            f = built(args=(D, F_, 0.5), what="FeedForward")
        except CheckFailed as exc:
            raise CheckFailed(f"{exc} (FeedForward must accept dropout as its third "
                              "argument)") from None
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            # two calls under two different RNG states (active dropout draws two masks)
            torch.manual_seed(101)
            first = as_tensor(_ffn_out(f, x, "FeedForward(x)"), "FeedForward(x)")
            torch.manual_seed(202)
            second = as_tensor(_ffn_out(f, x, "FeedForward(x)"), "FeedForward(x)")
        expect(is_close(first, second, 0, 0),
               "two calls in eval() mode give different outputs: dropout is active in eval "
               "mode — use nn.Dropout (or F.dropout(..., training=self.training))")
        _expect_ffn(f, reference, x, "FeedForward(x) in eval mode with dropout=0.5")

    with c.case("leaves x unmodified; gradients flow to linear1 and linear2"):
        f = built()
        xg = x.clone().requires_grad_(True)
        before = snapshot(x=x)
        out = as_tensor(run(f, xg, tried="FeedForward(x)", contract=_FFN_CALL),
                        "FeedForward(x)")
        expect_unmodified(before, {"x": xg})
        expect(out.requires_grad, "the output is cut off from autograd")
        g = randn(B, T, D, seed=44)
        (out * g).sum().backward()
        r = copy.deepcopy(reference)
        xr = x.clone().requires_grad_(True)
        (r(xr) * g).sum().backward()
        grads, want = grads_of(f), grads_of(r)
        for name in ("linear1.weight", "linear2.weight"):
            expect(grads.get(name) is not None, f"no gradient reached {name}")
            expect_close(grads[name], want[name], f"the gradient with respect to {name}",
                         atol=1e-4)
        expect_close(xg.grad, xr.grad, "the gradient with respect to x", atol=1e-4)
    return c.report()


# --- EncoderLayer -----------------------------------------------------------------------

_LAYER_NAMES = ("EncoderLayer needs self_attn (MultiHeadAttention), ffn (FeedForward), norm1 "
                "and norm2 (nn.LayerNorm(d_model))")
_LAYER_CALL = ("EncoderLayer(d_model, num_heads, d_ff, dropout=0.0).forward(x (B, T, D), "
               "mask=None) -> (y (B, T, D), weights (B, H, T, T))")
_ATTN_IFACE = ("the contract: an EncoderLayer's self_attn is a MultiHeadAttention, called as "
               "self_attn(q, k, v, mask) -> (out (B, T, D), weights (B, H, T, T))")
_FFN_IFACE = ("the contract: an EncoderLayer's ffn is a FeedForward, called as ffn(h) -> "
              "(B, T, D)")
_NORM_IFACE = "the contract: norm1 and norm2 are nn.LayerNorm(d_model), called as norm(h)"


class LayerParts:
    """An encoder layer's four pieces, called through the interfaces the contract gives
    them. ``owner`` names the layer in messages."""

    def __init__(self, layer, owner: str, num_heads: int):
        self.layer, self.owner, self.H = layer, owner, num_heads

    def attn(self, h, mask):
        tried = f"{self.owner}'s self_attn(x, x, x, mask)"
        sub = submodule(self.layer, "self_attn", self.owner)
        res = call_part(sub, (h, h, h, mask), tried, _ATTN_IFACE)
        if type(res) is not tuple or len(res) != 2:
            raise Interface(f"{tried} returned {type(res).__name__}, not a pair (out, "
                            f"weights) ({_ATTN_IFACE})")
        B, T, D = h.shape
        return (tensor_part(res[0], (B, T, D), f"{tried}[0]", _ATTN_IFACE),
                tensor_part(res[1], (B, self.H, T, T), f"{tried}[1]", _ATTN_IFACE))

    def ffn(self, h):
        tried = f"{self.owner}'s ffn(h)"
        sub = submodule(self.layer, "ffn", self.owner)
        return tensor_part(call_part(sub, (h,), tried, _FFN_IFACE), tuple(h.shape), tried,
                           _FFN_IFACE)

    def norm(self, name: str, h):
        tried = f"{self.owner}'s {name}(h)"
        sub = submodule(self.layer, name, self.owner)
        return tensor_part(call_part(sub, (h,), tried, _NORM_IFACE), tuple(h.shape), tried,
                           _NORM_IFACE)


def layer_variant(P: LayerParts, x, mask, kind: str = "ok"):
    """An encoder layer wired as the contract says (``ok``), or the way a mistake wires it,
    from the pieces ``P``."""
    def attn(h, m=mask):
        return P.attn(h, m)[0]

    def n1(h):
        return P.norm("norm1", h)

    def n2(h):
        return P.norm("norm2", h)

    if kind == "ok":
        h = n1(x + attn(x))
        return n2(h + P.ffn(h))
    if kind == "pre_ln":
        h = x + attn(n1(x))
        return h + P.ffn(n2(h))
    if kind == "no_res_attn":
        h = n1(attn(x))
        return n2(h + P.ffn(h))
    if kind == "no_res_ffn":
        h = n1(x + attn(x))
        return n2(P.ffn(h))
    if kind == "norm1_twice":
        h = n1(x + attn(x))
        return n1(h + P.ffn(h))
    if kind == "norm_inside":
        h = x + n1(attn(x))
        return h + n2(P.ffn(h))
    if kind == "ffn_on_input":
        h = n1(x + attn(x))
        return n2(h + P.ffn(x))
    if kind == "mask_ignored":
        h = n1(x + attn(x, None))
        return n2(h + P.ffn(h))
    if kind == "norms_swapped":
        h = n2(x + attn(x))
        return n1(h + P.ffn(h))
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


def _layer_diagnoses(P: LayerParts, x, mask):
    return [(text, (lambda k=kind: layer_variant(P, x, mask, k)))
            for text, kind in _LAYER_MISTAKES if mask is not None or kind != "mask_ignored"]


def _layer_outputs(student, x, mask, H: int, what: str):
    res = run(student, x.clone(), None if mask is None else mask.clone(),
              tried=f"EncoderLayer.forward {what}", contract=_LAYER_CALL)
    out, w = as_pair(res, "EncoderLayer.forward")
    B, T, D = x.shape
    out = expect_shape(out, (B, T, D), f"the output {what}")
    w = expect_shape(w, (B, H, T, T), f"the weights tensor {what}",
                     hint="return the self-attention weights (B, H, T, T)")
    return out, w


def _same(out, w, want_out, want_w) -> bool:
    return is_close(out, want_out, 1e-4, 1e-4) and is_close(w, want_w, 1e-5, 1e-4)


def _expect_layer_wiring(student, reference, x, mask, what):
    """The student's layer against the contract's recipe: passes if it equals the reference,
    or the recipe applied to its own sublayers (a sublayer's own mistake is charged in that
    sublayer's check, and in the case that compares the whole layer)."""
    H = reference.self_attn.num_heads
    with torch.no_grad():
        out, w = _layer_outputs(student, x, mask, H, what)
        want_out, want_w = reference(x, mask)
        if _same(out, w, want_out, want_w):
            return
        own = LayerParts(student, "your EncoderLayer", H)
        try:
            own_out, own_w = layer_variant(own, x, mask), own.attn(x, mask)[1]
        except Interface as exc:
            problem = f"{exc}"
            parts, want = LayerParts(reference, "the reference", H), (want_out, want_w)
        else:
            if _same(out, w, own_out, own_w):
                return
            problem, parts, want = "", own, (own_out, own_w)
        expect_match(out, want[0], f"the output {what}", atol=1e-4, hint=problem,
                     diagnoses=_layer_diagnoses(parts, x, mask))
        expect_close(w, want[1], f"the weights tensor {what}",
                     hint=problem or "return the weights of self-attention on the layer's "
                                     "input x")


def _mismatch(a, b) -> str:
    return f"max abs difference {float((a.double() - b.double()).abs().max()):.3g}"


def _differing_sublayer(student, reference, x, mask) -> str:
    """Which of the student's sublayers, holding the reference's weights, computes something
    else than the reference's ('' if none)."""
    H = reference.self_attn.num_heads
    own, theirs = LayerParts(student, "your EncoderLayer", H), LayerParts(reference, "", H)
    try:
        a, wa = own.attn(x, mask)
        b, wb = theirs.attn(x, mask)
        if not (is_close(a, b, 1e-5, 1e-4) and is_close(wa, wb, 1e-5, 1e-4)):
            return ("its self_attn, holding the reference's weights, does not compute the "
                    f"reference multi-head attention ({_mismatch(a, b)}) — see the "
                    "MultiHeadAttention check")
        z = x + b
        h = theirs.norm("norm1", z)
        for name, mine, want, where in (
                ("norm1", lambda: own.norm("norm1", z), lambda: h, "nn.LayerNorm(d_model)"),
                ("ffn", lambda: own.ffn(h), lambda: theirs.ffn(h), "the FeedForward check"),
                ("norm2", lambda: own.norm("norm2", h + theirs.ffn(h)),
                 lambda: theirs.norm("norm2", h + theirs.ffn(h)), "nn.LayerNorm(d_model)")):
            got, expected = mine(), want()
            if not is_close(got, expected, 1e-5, 1e-4):
                see = f"see {where}" if where.startswith("the") else f"use {where}"
                return (f"its {name}, holding the reference's weights, computes something "
                        f"else than the reference's ({_mismatch(got, expected)}) — {see}")
    except Interface as exc:
        return str(exc)
    return ""


def _expect_layer_whole(student, reference, x, mask, what):
    """The student's layer, with the reference's weights in its own sublayers, against the
    reference (nn.TransformerEncoderLayer inside)."""
    H = reference.self_attn.num_heads
    with torch.no_grad():
        out, w = _layer_outputs(student, x, mask, H, what)
        want_out, want_w = reference(x, mask)
        if _same(out, w, want_out, want_w):
            return
        part = _differing_sublayer(student, reference, x, mask)
        if part:
            raise CheckFailed(f"the output {what} does not match nn.TransformerEncoderLayer "
                              f"with the same weights: {part}")
        parts = LayerParts(reference, "the reference", H)
        expect_match(out, want_out, f"the output {what}", atol=1e-4,
                     diagnoses=_layer_diagnoses(parts, x, mask))
        expect_close(w, want_w, f"the weights tensor {what}",
                     hint="return the weights of self-attention on the layer's input x")


def check_EncoderLayer(EncoderLayer) -> Report:
    c = Check("EncoderLayer")
    D, H, F_, B, T = 12, 3, 20, 2, 5
    reference = randomise(ref.EncoderLayer(D, H, F_), seed=50)
    x = randn(B, T, D, seed=51)

    def built(r=reference, args=(D, H, F_)):
        return build(EncoderLayer, args, r, "EncoderLayer", _LAYER_NAMES)

    with c.case("builds with self_attn, ffn, norm1, norm2 and returns (x (B, T, D), "
                "weights (B, H, T, T))"):
        with torch.no_grad():
            _layer_outputs(built(), x, None, H, "without a mask")

    with c.case("post-LN: norm1(x + self_attn(x)), then norm2(h + ffn(h)), around its own "
                "sublayers", weight=3):
        _expect_layer_wiring(built(), reference, x, None, "without a mask")
        r2 = randomise(ref.EncoderLayer(8, 2, 16), seed=52)
        _expect_layer_wiring(built(r2, (8, 2, 16)), r2, randn(3, 4, 8, seed=53), None,
                             "for d_model = 8, 2 heads")

    with c.case("passes padding, causal and random masks to self-attention; with a causal "
                "mask, later positions do not change earlier outputs", weight=1.5):
        layer = built()
        _expect_layer_wiring(layer, reference, x, _padding([3, 5], T), "with a padding mask")
        for seed in (54, 56):
            _expect_layer_wiring(layer, reference, x, _random_mask(B, T, T, seed=seed),
                                 "with a random (B, T, T) mask")
        causal = torch.ones(T, T, dtype=torch.bool).tril()
        _expect_layer_wiring(layer, reference, x, causal, "with a (T, T) causal mask")
        changed = x.clone()
        changed[:, 3:] = randn(B, T - 3, D, seed=57, scale=3.0)
        with torch.no_grad():
            first, _ = _layer_outputs(layer, x, causal, H, "with a causal mask")
            second, _ = _layer_outputs(layer, changed, causal, H, "with a causal mask")
        expect_close(second[:, :3], first[:, :3], "the outputs at positions 0..2 after "
                     "changing positions 3 and later (causal mask)", atol=1e-5,
                     hint="pass the mask on to self-attention")

    with c.case("with the reference's weights in its own self_attn, ffn and norms, equals "
                "nn.TransformerEncoderLayer(norm_first=False, batch_first=True)", weight=1.5):
        layer = built()
        _expect_layer_whole(layer, reference, x, None, "without a mask")
        _expect_layer_whole(layer, reference, x, _random_mask(B, T, T, seed=58),
                            "with a random (B, T, T) mask")

    with c.case("works for a batch of one; in eval() mode dropout changes nothing"):
        _expect_layer_wiring(built(), reference, x[:1], _padding([4], T)[:1],
                             "for a batch of one")
        try:
            ld = built(args=(D, H, F_, 0.5))
        except CheckFailed as exc:
            raise CheckFailed(f"{exc} (EncoderLayer must accept dropout as its fourth "
                              "argument)") from None
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            # two calls under two different RNG states (active dropout draws two masks)
            torch.manual_seed(101)
            a = _layer_outputs(ld, x, None, H, "in eval mode")[0]
            torch.manual_seed(202)
            b = _layer_outputs(ld, x, None, H, "in eval mode")[0]
        expect(is_close(a, b, 0, 0),
               "two calls in eval() mode differ: dropout is active in eval mode — use "
               "nn.Dropout modules")
        _expect_layer_wiring(ld, reference, x, None, "in eval mode with dropout=0.5")

    with c.case("leaves x unmodified; gradients flow to x, the norms and the sublayers and "
                "match the reference"):
        layer = built()
        xg = x.clone().requires_grad_(True)
        before = snapshot(x=x)
        out, _ = as_pair(run(layer, xg, tried="EncoderLayer.forward(x)", contract=_LAYER_CALL),
                         "EncoderLayer.forward")
        out = as_tensor(out, "out")
        expect_unmodified(before, {"x": xg})
        expect(out.requires_grad, "the output is cut off from autograd")
        g = randn(B, T, D, seed=55)
        (out * g).sum().backward()
        r = copy.deepcopy(reference)
        xr = x.clone().requires_grad_(True)
        (r(xr)[0] * g).sum().backward()
        grads, want = grads_of(layer), grads_of(r)
        pairs = [(name, grads.get(name), want[name]) for name in (
            "norm1.weight", "norm2.weight", "self_attn.w_q.weight", "ffn.linear1.weight")]
        for name, got, _ in pairs:
            expect(got is not None, f"no gradient reached {name}")
        pairs.append(("x", xg.grad, xr.grad))
        if not all(is_close(got, w, 1e-4, 1e-4) for _, got, w in pairs):
            with torch.no_grad():
                why = _differing_sublayer(layer, reference, x, None)
            for name, got, w in pairs:
                expect_close(got, w, f"the gradient with respect to {name}", atol=1e-4,
                             hint=why)
    return c.report()


# --- TransformerEncoder -----------------------------------------------------------------

_ENC_NAMES = ("TransformerEncoder needs embedding (nn.Embedding(vocab_size, d_model, "
              "padding_idx=0)), layers (nn.ModuleList of EncoderLayer) and a non-persistent "
              "buffer pe")
_ENC_CALL = ("TransformerEncoder(vocab_size, d_model, num_heads, d_ff, num_layers, max_len)"
             ".forward(tokens (B, T), mask=None) -> (out (B, T, D), attentions: a list of "
             "(B, H, T, T), one per layer)")
_LAYERS_IFACE = ("the contract: a TransformerEncoder's layers[i] is an EncoderLayer, called as "
                 "layers[i](x, mask) -> (x (B, T, D), weights (B, H, T, T))")
_EMB_IFACE = ("the contract: embedding is nn.Embedding(vocab_size, d_model, padding_idx=0), "
              "called as embedding(tokens) -> (B, T, D)")


class EncoderParts:
    """An encoder's pieces (embedding, pe, layers[i]), called or read through the interfaces
    the contract gives them. A ``pe`` that cannot be read as a (max_len, d_model) table is
    replaced by ``fallback_pe`` (the case about pe charges it)."""

    def __init__(self, enc, owner: str, d_model: int, num_heads: int, fallback_pe):
        self.enc, self.owner = enc, owner
        self.D, self.H, self.fallback_pe = d_model, num_heads, fallback_pe

    def embed(self, tokens):
        tried = f"{self.owner}'s embedding(tokens)"
        sub = submodule(self.enc, "embedding", self.owner)
        return tensor_part(call_part(sub, (tokens,), tried, _EMB_IFACE),
                           (*tokens.shape, self.D), tried, _EMB_IFACE)

    def pe(self, T: int):
        try:
            pe = getattr(self.enc, "pe", None)
        except Exception:
            pe = None
        if type(pe) is torch.Tensor and pe.dim() == 3 and pe.shape[0] == 1:
            pe = pe[0]
        if type(pe) is not torch.Tensor or pe.dim() != 2 or pe.shape[1] != self.D \
                or pe.shape[0] < T:
            pe = self.fallback_pe
        return pe[:T]

    def layer(self, i: int, x, mask):
        tried = f"{self.owner}'s layers[{i}](x, mask)"
        layers = submodule(self.enc, "layers", self.owner)
        try:
            layer = layers[i]
        except Exception as exc:
            raise Interface(f"{self.owner}'s layers[{i}] could not be read: "
                            f"{type(exc).__name__}: {_first_line(exc)} ({_LAYERS_IFACE})"
                            ) from None
        res = call_part(layer, (x, mask), tried, _LAYERS_IFACE)
        if type(res) is not tuple or len(res) != 2:
            raise Interface(f"{tried} returned {type(res).__name__}, not a pair (x, weights) "
                            f"({_LAYERS_IFACE})")
        B, T, D = x.shape
        return (tensor_part(res[0], (B, T, D), f"{tried}[0]", _LAYERS_IFACE),
                tensor_part(res[1], (B, self.H, T, T), f"{tried}[1]", _LAYERS_IFACE))


def encoder_variant(P: EncoderParts, tokens, mask, kind: str, num_layers: int):
    """The encoder computed from the pieces ``P`` as the contract says (``ok``) or the way a
    mistake computes it."""
    T, D, H = tokens.shape[1], P.D, P.H
    e, pe = P.embed(tokens), P.pe(T)
    x = {
        "ok": e * math.sqrt(D) + pe,
        "no_scale": e + pe,
        "no_pos": e * math.sqrt(D),
        "scale_after": (e + pe) * math.sqrt(D),
        "divide": e / math.sqrt(D) + pe,
        "head_scale": e * math.sqrt(D // H) + pe,
    }.get(kind, e * math.sqrt(D) + pe)
    attentions = []
    for i in range(num_layers):
        x, w = P.layer(i, x, None if kind == "mask_ignored" else mask)
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


def _encoder_diagnoses(P, tokens, mask, N):
    return [(text, (lambda k=kind: encoder_variant(P, tokens, mask, k, N)[0]))
            for text, kind in _ENC_MISTAKES if mask is not None or kind != "mask_ignored"]


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




def _enc_outputs(student, tokens, mask, N: int, H: int, D: int, what: str):
    res = run(student, tokens.clone(), None if mask is None else mask.clone(),
              tried=f"TransformerEncoder.forward {what}", contract=_ENC_CALL)
    out, att = as_pair(res, "TransformerEncoder.forward")
    B, T = tokens.shape
    out = expect_shape(out, (B, T, D), f"the output {what}")
    expect(type(att) in (list, tuple) and len(att) == N,
           f"attentions {what} should be a list with one (B, H, T, T) tensor per layer "
           f"({N}), got " + (f"{len(att)} items" if type(att) in (list, tuple)
                             else type(att).__name__))
    att = [expect_shape(a, (B, H, T, T), f"attentions[{i}] {what}") for i, a in enumerate(att)]
    return out, att


def _same_encoding(out, att, want_out, want_att) -> bool:
    return is_close(out, want_out, 1e-4, 1e-4) and all(
        is_close(a, e, 1e-5, 1e-4) for a, e in zip(att, want_att))


def _expect_attentions(att, expected, what, hint=""):
    if all(is_close(a, e) for a, e in zip(att, expected)):
        return
    if len(att) > 1 and all(is_close(a, expected[-1]) for a in att):
        raise CheckFailed(f"attentions {what}: the same layer's weights (the last layer's) "
                          "are listed for every layer — append each layer's weights inside "
                          "the loop")
    if len(att) > 1 and all(is_close(a, e) for a, e in zip(att, expected[::-1])):
        raise CheckFailed(f"attentions {what}: the layers' weights are listed in reverse "
                          "order (attentions[0] must be the first layer's)")
    for i, (a, e) in enumerate(zip(att, expected)):
        expect_close(a, e, f"attentions[{i}] {what}", hint=hint)


def _expect_encoder_wiring(student, reference, tokens, mask, what):
    """The student's encoder against the contract's recipe: passes if it equals the
    reference, or the recipe applied to its own embedding, pe and layers."""
    N, D = len(reference.layers), reference.d_model
    H = reference.layers[0].self_attn.num_heads
    with torch.no_grad():
        out, att = _enc_outputs(student, tokens, mask, N, H, D, what)
        want_out, want_att = reference(tokens, mask)
        if _same_encoding(out, att, want_out, want_att):
            return
        own = EncoderParts(student, "your TransformerEncoder", D, H, reference.pe)
        try:
            own_out, own_att = encoder_variant(own, tokens, mask, "ok", N)
        except Interface as exc:
            problem = str(exc)
            parts = EncoderParts(reference, "the reference", D, H, reference.pe)
            want = (want_out, want_att)
        else:
            if _same_encoding(out, att, own_out, own_att):
                return
            problem, parts, want = "", own, (own_out, own_att)
        expect_match(out, want[0], f"the output {what}", atol=1e-4, hint=problem,
                     diagnoses=_encoder_diagnoses(parts, tokens, mask, N))
        _expect_attentions(att, want[1], what, hint=problem)


def _shared_layers(student, N: int) -> str:
    """'' unless two of the student's layers hold the same tensors after the reference's
    (different) weights were loaded into each: then they are one module listed twice."""
    try:
        state = dict(student.state_dict())
    except Exception:
        return ""

    def layer(i):
        prefix = f"layers.{i}."
        return {k[len(prefix):]: v for k, v in state.items()
                if type(k) is str and k.startswith(prefix) and type(v) is torch.Tensor}

    first = layer(0)
    for i in range(1, N):
        other = layer(i)
        same = [k for k, v in first.items()
                if k in other and other[k].shape == v.shape and torch.equal(other[k], v)]
        if first and len(same) == len(first):
            return (f"the layers share one set of weights: layers.0 and layers.{i} hold the "
                    "same tensors although different weights were loaded into them, so they "
                    "are one EncoderLayer listed twice ([layer] * num_layers, or the same "
                    "layer appended in the loop) — build a new EncoderLayer for each layer "
                    "(or copy.deepcopy a built one) so that each layer has its own weights")
        if same:
            parts = sorted({k.rsplit(".", 2)[0] if k.count(".") >= 2 else k.split(".")[0]
                            for k in same})
            return (f"the layers share part of their weights: layers.0 and layers.{i} hold "
                    f"the same {', '.join(parts)} — give each layer its own submodules")
    return ""


def _differing_piece(student, reference, tokens, mask) -> str:
    """Which piece of the student's encoder (pe, embedding, a layer), holding the
    reference's weights, computes something else than the reference's ('' if none)."""
    N, D = len(reference.layers), reference.d_model
    H = reference.layers[0].self_attn.num_heads
    shared = _shared_layers(student, N)
    if shared:
        return shared
    own = EncoderParts(student, "your TransformerEncoder", D, H, reference.pe)
    theirs = EncoderParts(reference, "the reference", D, H, reference.pe)
    T = tokens.shape[1]
    try:
        pe = own.pe(T)
        max_len = reference.pe.shape[0]
        if not is_close(pe, reference.pe[:T], pe_atol(max_len), 0):
            return (f"its pe is not the sinusoidal encoding ({_mismatch(pe, reference.pe[:T])})"
                    " — see the case about pe")
        e = own.embed(tokens)
        if not is_close(e, theirs.embed(tokens), 1e-6, 1e-5):
            return "its embedding, holding the reference's weights, gives other vectors"
        x = theirs.embed(tokens) * math.sqrt(D) + reference.pe[:T]
        for i in range(N):
            got, gw = own.layer(i, x, mask)
            want, ww = theirs.layer(i, x, mask)
            if not (is_close(got, want, 1e-4, 1e-4) and is_close(gw, ww, 1e-5, 1e-4)):
                return (f"its layers[{i}], holding the reference's weights, does not compute "
                        f"the reference EncoderLayer ({_mismatch(got, want)}) — see the "
                        "EncoderLayer check")
            x = want
    except Interface as exc:
        return str(exc)
    return ""


def _expect_encoder_whole(student, reference, tokens, mask, what):
    N, D = len(reference.layers), reference.d_model
    H = reference.layers[0].self_attn.num_heads
    with torch.no_grad():
        out, att = _enc_outputs(student, tokens, mask, N, H, D, what)
        want_out, want_att = reference(tokens, mask)
        if _same_encoding(out, att, want_out, want_att):
            return
        piece = _differing_piece(student, reference, tokens, mask)
        if piece:
            raise CheckFailed(f"the output {what} does not match the reference encoder with "
                              f"the same weights: {piece}")
        parts = EncoderParts(reference, "the reference", D, H, reference.pe)
        expect_match(out, want_out, f"the output {what}", atol=1e-4,
                     diagnoses=_encoder_diagnoses(parts, tokens, mask, N))
        _expect_attentions(att, want_att, what)


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

    def built():
        return build(TransformerEncoder, args, reference, "TransformerEncoder", _ENC_NAMES)

    with c.case("builds with embedding, layers, pe and returns (out (B, T, D), a list of "
                "(B, H, T, T))"):
        with torch.no_grad():
            _enc_outputs(built(), tokens, None, N, H, D, "without a mask")

    with c.case("pe is a (max_len, d_model) non-persistent buffer with the sinusoidal "
                "encoding"):
        enc = built()
        buffers = dict(enc.named_buffers())
        expect("pe" in buffers, "pe should be registered as a buffer "
               "(self.register_buffer('pe', ..., persistent=False))")
        expect("pe" not in dict(enc.state_dict()), "pe must not be saved in the state_dict: "
               "register it with persistent=False")
        expect_match(buffers["pe"], reference.pe, "pe", atol=pe_atol(max_len), rtol=0,
                     diagnoses=_pe_diagnoses(max_len, D),
                     hint="use the given sinusoidal_positional_encoding(max_len, d_model)")

    with c.case("embeddings * sqrt(d_model) + positions, then its own layers in order",
                weight=3):
        enc = built()
        _expect_encoder_wiring(enc, reference, tokens, None, "without a mask")
        t2 = torch.randint(3, V, (1, 3), generator=generator(62))
        _expect_encoder_wiring(enc, reference, t2, None, "for a batch of one with T = 3")

    with c.case("passes the (B, 1, T) padding mask to every layer", weight=1.5):
        _expect_encoder_wiring(built(), reference, tokens, pad, "with a padding mask")

    with c.case("each layer has its own weights: with the reference's weights loaded, it "
                "equals the reference encoder", weight=1.5):
        enc = built()
        _expect_encoder_whole(enc, reference, tokens, None, "without a mask")
        _expect_encoder_whole(enc, reference, tokens, pad, "with a padding mask")

    with c.case("the embedding has padding_idx=0 (PAD's row gets no gradient); tokens are "
                "unmodified; gradients flow and match the reference"):
        fresh = run(TransformerEncoder, *args, tried=f"TransformerEncoder{args}",
                    contract=_ENC_CALL)
        enc = built()
        g = randn(2, 6, D, seed=63)
        for module, label in ((fresh, "a new encoder"), (enc, "the encoder")):
            toks = tokens.clone()
            before = snapshot(tokens=tokens)
            out, _ = as_pair(run(module, toks, pad.clone(), tried="TransformerEncoder.forward",
                                 contract=_ENC_CALL), "TransformerEncoder.forward")
            expect_unmodified(before, {"tokens": toks})
            out = as_tensor(out, "out")
            expect(out.requires_grad, "the output is cut off from autograd")
            (out * g).sum().backward()
            grad = grads_of(module).get("embedding.weight")
            expect(grad is not None, f"no gradient reached embedding.weight of {label}")
            expect(float(grad[0].abs().max()) == 0.0,
                   f"the PAD row of embedding.weight gets a gradient in {label}: build the "
                   "embedding with padding_idx=0")
            expect(float(grad[3:].abs().max()) > 0, "no gradient reaches the real tokens' "
                   "embeddings")
        r = copy.deepcopy(reference)
        (r(tokens, pad)[0] * g).sum().backward()
        if not is_close(grad, r.embedding.weight.grad, 1e-4, 1e-4):
            with torch.no_grad():
                why = _differing_piece(enc, reference, tokens, pad)
            expect_close(grad, r.embedding.weight.grad, "the gradient with respect to "
                         "embedding.weight", atol=1e-4, hint=why)
    return c.report()


CHECKS = {
    "split_heads": check_split_heads,
    "merge_heads": check_merge_heads,
    "MultiHeadAttention": check_MultiHeadAttention,
    "FeedForward": check_FeedForward,
    "EncoderLayer": check_EncoderLayer,
    "TransformerEncoder": check_TransformerEncoder,
}
