"""Checks for 05_self_attention."""

from __future__ import annotations

import math
import re

import torch

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
    randn,
    snapshot,
)
from attn_grader.nb05_self_attention import reference as ref

# --- how the catalogued mistakes are named in messages -----------------------------------

MISSING_SCALE = "the 1/sqrt(d_k) scaling is missing (scores are not scaled)"
DIVIDED_BY_DK = "the scores are divided by d_k instead of sqrt(d_k)"
MULTIPLIED_BY_SQRT = "the scores are multiplied by sqrt(d_k) instead of divided by it"
SCALED_BY_DV = "the scores are scaled by sqrt(d_v) (the value size) instead of sqrt(d_k)"
SCALED_BY_DMODEL = "the scores are scaled by sqrt(d_model) instead of sqrt(d_k)"
QUERY_AXIS = (
    "the softmax is taken over the query axis (dim=-2) instead of over the keys (dim=-1)"
)
RAW_SCORES = "the weights returned are the scaled scores before the softmax"
MASK_IGNORED = "the mask is ignored"
MASK_AFTER = (
    "the mask is applied after the softmax (weights * mask), so the rows no longer sum to 1"
)
MASK_ADDED = (
    "the mask is added to the scores as 0/1 numbers instead of blocking the False positions "
    "(masked_fill with -inf or a very large negative number)"
)
MASK_INVERTED = (
    "the mask is inverted: weight goes to the positions where the mask is False and none to "
    "the positions where it is True (True means 'may attend'; use masked_fill(~mask, ...))"
)
ALL_MASKED_UNIFORM = (
    "a query whose keys are all masked gets uniform weights 1/Tk instead of zeros — filling "
    "with a large negative number leaves such a row uniform; zero its weights (e.g. "
    "weights * mask)"
)
NAN_HINT = (
    "a query whose keys are all masked must get weights 0 and output 0, not NaN: the softmax "
    "of a row that is -inf everywhere is 0/0 = NaN; fill with torch.finfo(dtype).min and "
    "zero the blocked weights afterwards (weights * mask), or replace the NaN rows"
)
OVERFLOW_HINT = (
    "large scores overflow exp() (exp(89) is inf in float32): subtract each row's max "
    "before exp, or use torch.softmax, which does it for you"
)
LEADING_DIMS_HINT = (
    "the function must accept any leading batch dims (..., T, D), for example (B, H, T, D): "
    "use k.transpose(-2, -1) and @ (torch.matmul), not k.transpose(1, 2) or torch.bmm, and "
    "softmax over dim=-1"
)
SQUEEZE_HINT = "squeeze() drops the batch axis when B = 1; index or unsqueeze instead"
DETACHED = (
    "the result is cut off from autograd — was something detached, taken with .data, or "
    "computed with numpy?"
)


SDPA_CONTRACT = ("scaled_dot_product_attention(q (..., Tq, d_k), k (..., Tk, d_k), v (..., Tk, "
                 "d_v), mask=None) -> (out (..., Tq, d_v), weights (..., Tq, Tk))")
SA_CONTRACT = ("SelfAttention(d_model, d_k, d_v).forward(x (B, T, d_model), mask=None) -> "
               "(out (B, T, d_v), weights (B, T, T))")


def call(fn, *args, tried: str, contract: str, hint: str = ""):
    """Call the student's code; a crash says what was called and what the contract expects,
    not only the error."""
    try:
        return fn(*args)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise CheckFailed(f"{tried} raised {type(exc).__name__}: {first}"
                          + (f" — {hint}" if hint else "") + f" (the contract: {contract})"
                          ) from None


def _sdpa(fn, q, k, v, mask=None, *, hint: str = ""):
    shapes = ", ".join(str(tuple(t.shape)) for t in (q, k, v))
    args = (q, k, v) if mask is None else (q, k, v, mask)
    tried = (f"scaled_dot_product_attention(q, k, v{', mask' if mask is not None else ''}) "
             f"with q, k, v of shapes {shapes}"
             + (f" and a mask of shape {tuple(mask.shape)}" if mask is not None else ""))
    return call(fn, *args, tried=tried, contract=SDPA_CONTRACT, hint=hint)


def _scaled_scores(q, k, scale):
    return q @ k.transpose(-2, -1) * scale


def _soft(scores, mask, dim=-1):
    if mask is None:
        return torch.softmax(scores, dim)
    return torch.softmax(scores.masked_fill(~mask, -math.inf), dim).nan_to_num(0.0)


def _sdpa_variants(q, k, v, mask) -> dict:
    """What the catalogued mistakes return: name -> thunk giving (out, weights)."""
    q, k, v = q.detach().double(), k.detach().double(), v.detach().double()
    d_k, d_v = q.shape[-1], v.shape[-1]

    def pair(w):
        return lambda: (w() @ v, w())

    variants = {
        MISSING_SCALE: pair(lambda: _soft(_scaled_scores(q, k, 1.0), mask)),
        DIVIDED_BY_DK: pair(lambda: _soft(_scaled_scores(q, k, 1.0 / d_k), mask)),
        MULTIPLIED_BY_SQRT: pair(lambda: _soft(_scaled_scores(q, k, math.sqrt(d_k)), mask)),
    }
    if d_v != d_k:
        variants[SCALED_BY_DV] = pair(
            lambda: _soft(_scaled_scores(q, k, 1 / math.sqrt(d_v)), mask))
    variants[QUERY_AXIS] = pair(
        lambda: _soft(_scaled_scores(q, k, 1 / math.sqrt(d_k)), mask, dim=-2))
    if mask is not None:
        s = _scaled_scores(q, k, 1 / math.sqrt(d_k))
        variants[MASK_IGNORED] = pair(lambda: torch.softmax(s, -1))
        variants[MASK_AFTER] = pair(lambda: torch.softmax(s, -1) * mask)
        variants[MASK_ADDED] = pair(lambda: torch.softmax(s + mask.double(), -1))
        variants[ALL_MASKED_UNIFORM] = pair(lambda: torch.softmax(s.masked_fill(~mask, -1e9), -1))
    return variants


def _diagnoses(variants: dict, which: int) -> dict:
    return {name: (lambda f=f: f()[which]) for name, f in variants.items()}


def _attention_pair(result, Tq, Tk, Dv, lead, what="scaled_dot_product_attention") -> tuple:
    out, weights = as_pair(result, what)
    out, weights = as_tensor(out, "out"), as_tensor(weights, "weights")
    want_out, want_w = (*lead, Tq, Dv), (*lead, Tq, Tk)
    if Dv != Tk and tuple(out.shape) == want_w and tuple(weights.shape) == want_out:
        raise CheckFailed("the pair is in the wrong order: return (out, weights), not "
                          "(weights, out)")
    hint = SQUEEZE_HINT if 1 in lead else ""
    expect_shape(out, want_out, "out", hint=hint)
    expect_shape(weights, want_w, "weights", hint=hint)
    return out, weights


def _expect_polarity(weights: torch.Tensor, mask: torch.Tensor) -> None:
    """Name an inverted mask before anything else (an inverted -inf mask gives NaN rows).

    Judged on the rows that have both allowed and blocked keys: inverted, all their weight
    sits on the blocked keys and none on the allowed ones."""
    w = weights.detach().double().nan_to_num(0.0).abs()
    if w.dim() < mask.dim():
        return
    m = mask.expand(w.shape)
    mixed = m.any(-1) & (~m).any(-1)
    if not bool(mixed.any()):
        return
    w, m = w[mixed], m[mixed]
    if float((w * m).max()) < 1e-6 and bool(((w * ~m).sum(-1) > 0.5).all()):
        raise CheckFailed(MASK_INVERTED)


def _expect_masked_zero(weights: torch.Tensor, mask: torch.Tensor) -> None:
    w = weights.detach()
    blocked = w[~mask.expand(w.shape)]
    if blocked.numel() and bool((blocked != 0).any()):
        raise CheckFailed(
            f"weights at masked positions must be exactly 0, got values up to "
            f"{float(blocked.abs().max()):.3g} — block them before the softmax (masked_fill "
            "with -inf or torch.finfo(dtype).min), not by adding a finite penalty")


def _compare_attention(fn, q, k, v, mask, label, *, atol=1e-5):
    """Call the student's function and compare (out, weights) with the reference."""
    *lead, Tq, _ = q.shape
    Tk, Dv = k.shape[-2], v.shape[-1]
    out, weights = _attention_pair(_sdpa(fn, q.clone(), k.clone(), v.clone(),
                                         None if mask is None else mask.clone()),
                                   Tq, Tk, Dv, tuple(lead))
    if mask is not None:
        _expect_polarity(weights, mask)
    exp_out, exp_w = ref.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                      mask)
    variants = _sdpa_variants(q, k, v, mask)
    weight_diagnoses = {RAW_SCORES: (q.double() @ k.double().transpose(-2, -1)
                                     / math.sqrt(q.shape[-1])).expand(exp_w.shape)}
    weight_diagnoses.update(_diagnoses(variants, 1))
    expect_close(weights, exp_w, f"weights {label}", atol=atol, hint=NAN_HINT
                 if mask is not None and not bool(mask.any(-1).all()) else "",
                 diagnoses=weight_diagnoses)
    if mask is not None:
        _expect_masked_zero(weights, mask)
    expect_close(out, exp_out, f"out {label}", atol=atol, diagnoses=_diagnoses(variants, 0))
    return out, weights


def _lengths_mask(lengths, Tk):
    return torch.arange(Tk).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)


def check_scaled_dot_product_attention(fn) -> Report:
    c = Check("scaled_dot_product_attention")
    B, Tq, Tk, Dk, Dv = 3, 4, 5, 8, 6  # Tq != Tk and d_k != d_v: no mix-up hides

    with c.case("returns (out (B, Tq, Dv), weights (B, Tq, Tk))"):
        q, k, v = randn(B, Tq, Dk, seed=1), randn(B, Tk, Dk, seed=2), randn(B, Tk, Dv, seed=3)
        _attention_pair(_sdpa(fn, q, k, v), Tq, Tk, Dv, (B,))

    with c.case("matches softmax(q kᵀ / sqrt(d_k)) v without a mask (Tq != Tk, d_k != d_v)",
                weight=3):
        for seed in (10, 20, 30):
            q = randn(B, Tq, Dk, seed=seed, scale=1.5)
            k = randn(B, Tk, Dk, seed=seed + 1, scale=1.5)
            v = randn(B, Tk, Dv, seed=seed + 2)
            _compare_attention(fn, q, k, v, None, "(no mask)")

    with c.case("padding mask of shape (B, 1, Tk), a different length per sequence", weight=2):
        q, k, v = randn(B, Tq, Dk, seed=40), randn(B, Tk, Dk, seed=41), randn(B, Tk, Dv, seed=42)
        mask = _lengths_mask([5, 2, 3], Tk).unsqueeze(1)
        _compare_attention(fn, q, k, v, mask, "with a (B, 1, Tk) padding mask")

    with c.case("causal (T, T) mask (later positions change no earlier output) and random "
                "(B, Tq, Tk) masks"):
        T = 5
        q, k, v = randn(B, T, Dk, seed=50), randn(B, T, Dk, seed=51), randn(B, T, Dv, seed=52)
        out, _ = _compare_attention(fn, q, k, v, ref.causal_mask(T),
                                    "with a causal (T, T) mask")
        later = [t.clone() for t in (q, k, v)]
        for i, t in enumerate(later):
            t[:, 3:] = randn(B, T - 3, t.shape[-1], seed=57 + i, scale=3.0)
        out2, _ = _attention_pair(_sdpa(fn, *later, ref.causal_mask(T)), T, T, Dv, (B,))
        expect_close(out2[:, :3], out[:, :3], "out at positions 0..2 after changing q, k and "
                     "v at positions 3 and later (causal mask)",
                     hint="with a causal mask a query must not see later keys")
        q, k, v = randn(B, Tq, Dk, seed=53), randn(B, Tk, Dk, seed=54), randn(B, Tk, Dv, seed=55)
        for seed in (56, 58):
            mask = torch.rand(B, Tq, Tk, generator=torch.Generator().manual_seed(seed)) < 0.6
            mask[..., 0] |= ~mask.any(-1)  # all-masked rows have their own case
            _compare_attention(fn, q, k, v, mask, "with a random (B, Tq, Tk) mask")

    with c.case("a query whose keys are all masked gets weights 0 and output 0 (no NaN)"):
        q, k, v = randn(B, Tq, Dk, seed=60), randn(B, Tk, Dk, seed=61), randn(B, Tk, Dv, seed=62)
        mask = torch.rand(B, Tq, Tk, generator=torch.Generator().manual_seed(63)) < 0.6
        mask[..., 0] = True
        mask[0, 1] = False
        mask[2, 3] = False
        _compare_attention(fn, q, k, v, mask, "with all-False mask rows")
        # ... and backward() through such a row stays finite
        qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))
        out, weights = _attention_pair(_sdpa(fn, qg, kg, vg, mask.clone()), Tq, Tk, Dv, (B,))
        ((out * randn(*out.shape, seed=64)).sum()
         + (weights * randn(*weights.shape, seed=65)).sum()).backward()
        for name, t in (("q", qg), ("k", kg), ("v", vg)):
            expect(t.grad is not None, f"no gradient reached {name} — {DETACHED}")
            expect(bool(torch.isfinite(t.grad).all()),
                   f"the gradient with respect to {name} contains NaN or inf when a row is "
                   "fully masked: the output is right but the backward pass goes through a "
                   "softmax of -inf everywhere (an additive -inf mask passes that NaN "
                   "gradient on); block with masked_fill (its backward zeroes the blocked "
                   "positions) or with a large finite negative number")

    with c.case("large scores (|q·k| ~ 1e4, and ~ 1e3 under a random mask) do not overflow"):
        q = randn(B, Tq, Dk, seed=70, scale=40.0)
        k = randn(B, Tk, Dk, seed=71, scale=40.0)
        v = randn(B, Tk, Dv, seed=72)
        out, weights = _attention_pair(_sdpa(fn, q.clone(), k.clone(), v.clone()), Tq, Tk, Dv,
                                       (B,))
        exp_out, exp_w = ref.scaled_dot_product_attention(q.double(), k.double(), v.double())
        expect_close(weights, exp_w, "weights for large scores", atol=1e-4, hint=OVERFLOW_HINT)
        expect_close(out, exp_out, "out for large scores", atol=1e-4, hint=OVERFLOW_HINT)
        # scores of about 1e3: far past where exp() overflows, far above every masking
        # constant in use (-1e4, -1e9, finfo.min)
        q, k = randn(B, Tq, Dk, seed=73, scale=12.0), randn(B, Tk, Dk, seed=74, scale=12.0)
        mask = torch.rand(B, Tq, Tk, generator=torch.Generator().manual_seed(75)) < 0.6
        mask[..., 0] |= ~mask.any(-1)
        out, weights = _attention_pair(_sdpa(fn, q.clone(), k.clone(), v.clone(), mask.clone()),
                                       Tq, Tk, Dv, (B,))
        exp_out, exp_w = ref.scaled_dot_product_attention(q.double(), k.double(), v.double(),
                                                          mask)
        expect_close(weights, exp_w, "weights for large scores under a mask", atol=1e-4,
                     hint=OVERFLOW_HINT)
        expect_close(out, exp_out, "out for large scores under a mask", atol=1e-4,
                     hint=OVERFLOW_HINT)

    with c.case("batch of one, and extra leading dims (..., T, D) with broadcast and random "
                "masks"):
        q, k, v = randn(1, Tq, Dk, seed=80), randn(1, Tk, Dk, seed=81), randn(1, Tk, Dv, seed=82)
        _compare_attention(fn, q, k, v, None, "for B = 1")
        lead = (2, 3)  # e.g. (B, heads)
        q = randn(*lead, Tq, Dk, seed=83)
        k, v = randn(*lead, Tk, Dk, seed=84), randn(*lead, Tk, Dv, seed=85)
        random_mask = torch.rand(*lead, Tq, Tk, generator=torch.Generator().manual_seed(86)) < 0.6
        random_mask[..., 0] |= ~random_mask.any(-1)
        for mask, label in ((_lengths_mask([4, 2], Tk)[:, None, None, :], "a (2, 1, 1, Tk) mask"),
                            (random_mask, "a random (2, 3, Tq, Tk) mask")):
            result = _sdpa(fn, q.clone(), k.clone(), v.clone(), mask.clone(),
                           hint=LEADING_DIMS_HINT)
            out, weights = _attention_pair(result, Tq, Tk, Dv, lead)
            exp_out, exp_w = ref.scaled_dot_product_attention(q.double(), k.double(),
                                                              v.double(), mask)
            variants = _sdpa_variants(q, k, v, mask)
            expect_close(weights, exp_w, f"weights for inputs of shape (2, 3, T, D) and {label}",
                         hint=LEADING_DIMS_HINT, diagnoses=_diagnoses(variants, 1))
            expect_close(out, exp_out, f"out for inputs of shape (2, 3, T, D) and {label}",
                         hint=LEADING_DIMS_HINT, diagnoses=_diagnoses(variants, 0))

    with c.case("leaves q, k, v and the mask unmodified; gradients reach q, k and v"):
        q, k, v = randn(B, Tq, Dk, seed=90), randn(B, Tk, Dk, seed=91), randn(B, Tk, Dv, seed=92)
        mask = _lengths_mask([5, 2, 3], Tk).unsqueeze(1)
        before = snapshot(q=q, k=k, v=v, mask=mask)
        _sdpa(fn, q, k, v, mask)
        expect_unmodified(before, {"q": q, "k": k, "v": v, "mask": mask})
        w_out, w_w = randn(B, Tq, Dv, seed=93), randn(B, Tq, Tk, seed=94)
        grads = []
        for impl in (fn, ref.scaled_dot_product_attention):
            ts = [t.clone().requires_grad_(True) for t in (q, k, v)]
            out, weights = (_attention_pair(_sdpa(fn, *ts, mask), Tq, Tk, Dv, (B,))
                            if impl is fn else impl(*ts, mask))
            expect(out.requires_grad and weights.requires_grad,
                   f"out or weights does not require grad — {DETACHED}")
            ((out * w_out).sum() + (weights * w_w).sum()).backward()
            expect(all(t.grad is not None for t in ts), f"no gradient reached q, k or v — "
                   f"{DETACHED}")
            grads.append([t.grad for t in ts])
        for name, got, want in zip("qkv", *grads, strict=True):
            expect_close(got, want, f"the gradient with respect to {name}", atol=1e-4)
    return c.report()


# --- padding_mask -------------------------------------------------------------------------

PAD_SHAPE_HINT = ("return shape (B, 1, max_len): the middle axis of size 1 lets the mask "
                  "broadcast over the query axis of (B, Tq, Tk) scores")


def _padding_diagnoses(lengths, max_len):
    pos = torch.arange(max_len).unsqueeze(0)
    L = lengths.unsqueeze(1)
    return {
        "the comparison is off by one (<= instead of <): position lengths[b] is a PAD "
        "position and must be False": (pos <= L).unsqueeze(1),
        "the polarity is inverted: True must mark real tokens (may attend), False "
        "padding": (pos >= L).unsqueeze(1),
    }


def _padding_shape(mask, B, max_len, lengths):
    t = as_tensor(mask, "the mask")
    shape = tuple(t.shape)
    if shape == (B, max_len):
        raise CheckFailed(f"the mask has shape (B, max_len) = {shape}: the middle axis is "
                          f"missing — {PAD_SHAPE_HINT}")
    if shape == (B, max_len, 1):
        raise CheckFailed(f"the mask has shape (B, max_len, 1) = {shape}: the axis of size 1 "
                          f"is in the wrong place — {PAD_SHAPE_HINT}")
    longest = int(lengths.max())
    if longest != max_len and shape in ((B, 1, longest), (B, longest)):
        raise CheckFailed(f"the mask has width {longest} = lengths.max(), expected max_len = "
                          f"{max_len}: use max_len, the padded length of the batch")
    return expect_shape(t, (B, 1, max_len), "the mask", hint=PAD_SHAPE_HINT)


def _pad_call(padding_mask, lengths, max_len):
    return call(padding_mask, lengths, max_len,
                tried=f"padding_mask(lengths {tuple(lengths.shape)}, {max_len})",
                contract="padding_mask(lengths (B,), max_len) -> a bool (B, 1, max_len) mask")


def _causal_call(causal_mask, T):
    return call(causal_mask, T, tried=f"causal_mask({T})",
                contract="causal_mask(T) -> a bool (T, T) mask, True on and below the "
                         "diagonal")


def check_padding_mask(padding_mask) -> Report:
    c = Check("padding_mask")
    lengths, max_len = torch.tensor([3, 1, 4]), 5

    with c.case("returns a bool tensor of shape (B, 1, max_len)"):
        mask = _padding_shape(_pad_call(padding_mask, lengths.clone(), max_len), 3, max_len,
                              lengths)
        expect(mask.dtype == torch.bool, f"the mask should have dtype torch.bool, got "
               f"{mask.dtype} — compare positions with lengths (a < b gives bool), do not "
               "convert to float or long")

    with c.case("True exactly at the first lengths[b] positions of each row", weight=2):
        g = torch.Generator().manual_seed(100)
        for B, max_len in ((6, 7), (4, 9)):
            lengths = torch.randint(1, max_len + 1, (B,), generator=g)
            lengths[0] = max_len
            mask = _padding_shape(_pad_call(padding_mask, lengths.clone(), max_len), B, max_len,
                                  lengths)
            expect_close(mask, ref.padding_mask(lengths, max_len), "the mask",
                         hint="True (real) for positions t < lengths[b], False (PAD) after",
                         diagnoses=_padding_diagnoses(lengths, max_len))

    with c.case("a batch of one, and max_len longer than every sequence"):
        for lengths, max_len in ((torch.tensor([4]), 6), (torch.tensor([2, 3]), 8)):
            mask = _padding_shape(_pad_call(padding_mask, lengths.clone(), max_len), len(lengths),
                                  max_len, lengths)
            expect_close(mask, ref.padding_mask(lengths, max_len), "the mask",
                         hint=SQUEEZE_HINT if len(lengths) == 1 else "",
                         diagnoses=_padding_diagnoses(lengths, max_len))

    with c.case("leaves lengths unmodified; as an attention mask, PAD keys get weight 0"):
        lengths, max_len = torch.tensor([2, 5, 3]), 5
        before = snapshot(lengths=lengths)
        mask = as_tensor(_pad_call(padding_mask, lengths, max_len), "the mask")
        expect_unmodified(before, {"lengths": lengths})
        mask = _padding_shape(mask, 3, max_len, lengths)
        x = randn(3, max_len, 4, seed=101)
        _, weights = ref.scaled_dot_product_attention(x, x, x, mask.to(torch.bool))
        _, want = ref.scaled_dot_product_attention(x, x, x, ref.padding_mask(lengths, max_len))
        expect_close(weights, want, "attention weights under your mask",
                     hint="the mask must broadcast over the queries and mark real keys True")
    return c.report()


# --- causal_mask --------------------------------------------------------------------------


def _causal_diagnoses(T):
    ones = torch.ones(T, T, dtype=torch.bool)
    return {
        "the mask is transposed: True on and ABOVE the diagonal (upper triangle, triu); "
        "query t may only see keys 0..t, so the lower triangle (tril) is True": ones.triu(),
        "the diagonal is excluded (tril(-1)): every position may attend to itself":
            ones.tril(-1),
        "the mask is inverted: True above the diagonal marks blocked positions, but in this "
        "course True means 'may attend'": ones.triu(1),
        "every position is allowed (all True)": ones,
    }


def _causal_pattern(mask, T):
    """The mask's True/False pattern (an additive 0/-inf mask is judged on where the -inf
    are; the dtype case says why it still loses that point)."""
    t = _causal_shape(mask, T)
    if t.is_floating_point() and bool(((t == 0) | (t == -math.inf)).all()):
        return ~torch.isinf(t)
    return t


def _causal_shape(mask, T):
    t = as_tensor(mask, "the mask")
    if tuple(t.shape) == (1, T, T):
        raise CheckFailed(f"the mask has shape (1, {T}, {T}): return (T, T) without a batch "
                          "axis; it broadcasts against (B, T, T) scores by itself")
    return expect_shape(t, (T, T), "the mask")


def check_causal_mask(causal_mask) -> Report:
    c = Check("causal_mask")

    with c.case("returns a bool tensor of shape (T, T)"):
        mask = _causal_shape(_causal_call(causal_mask, 4), 4)
        if mask.is_floating_point() and bool(torch.isinf(mask).any()):
            raise CheckFailed(
                "this looks like an additive float mask (0 and -inf, as "
                "nn.Transformer.generate_square_subsequent_mask returns); the course's masks "
                "are bool with True = may attend")
        expect(mask.dtype == torch.bool, f"the mask should have dtype torch.bool, got "
               f"{mask.dtype} — use torch.ones(T, T, dtype=torch.bool).tril()")

    with c.case("True on and below the diagonal, False above it", weight=2):
        for T in (5, 8):
            expect_close(_causal_pattern(_causal_call(causal_mask, T), T), ref.causal_mask(T),
                         f"the mask for T = {T}",
                         diagnoses=_causal_diagnoses(T))

    with c.case("T = 1 gives [[True]]; a long sequence (T = 64) is right too"):
        for T in (1, 64):
            expect_close(_causal_pattern(_causal_call(causal_mask, T), T), ref.causal_mask(T),
                         f"the mask for T = {T}", diagnoses=_causal_diagnoses(T))

    with c.case("used as an attention mask, changing later tokens changes no earlier output"):
        T, t = 7, 4
        mask = _causal_pattern(_causal_call(causal_mask, T), T).to(torch.bool)
        x = randn(2, T, 6, seed=110)
        changed = x.clone()
        changed[:, t:] = randn(2, T - t, 6, seed=111, scale=3.0)
        before, _ = ref.scaled_dot_product_attention(x, x, x, mask)
        after, _ = ref.scaled_dot_product_attention(changed, changed, changed, mask)
        expect_close(after[:, :t], before[:, :t], f"self-attention outputs at positions "
                     f"0..{t - 1} after changing positions {t} and later, under your mask",
                     hint="position t may only see positions 0..t: the mask lets a query "
                     "see later keys")
    return c.report()


# --- SelfAttention ------------------------------------------------------------------------

D_MODEL, D_K, D_V = 8, 4, 6  # all different: each scale and projection mix-up shows
W_Q_FOR_KEYS = "w_q is used for the keys too (k = w_q(x) instead of w_k(x))"
W_K_FOR_QUERIES = "w_k is used for the queries too (q = w_k(x) instead of w_q(x))"
QK_SWAPPED = ("queries and keys are swapped (scores = k qᵀ instead of q kᵀ): the weights "
              "come out transposed")


def _reference_module(seed: int) -> ref.SelfAttention:
    with torch.random.fork_rng(devices=[]):
        module = ref.SelfAttention(D_MODEL, D_K, D_V)
    with torch.no_grad():
        for i, p in enumerate(module.parameters()):
            p.copy_(randn(*p.shape, seed=seed + i, scale=0.9))
    return module.eval()


def _student_module(cls, reference: ref.SelfAttention):
    """The student's module with the reference's weights. Judged on its parameters: extra
    buffers (a stored scale, say) keep their own values; projections with a bias (and
    nothing else wrong) get zero biases — the first case already takes that point off, and
    the behaviour still earns the rest. Nothing is read from the module before the weights
    are loaded (lazy layers have no shapes until then)."""
    with torch.random.fork_rng(devices=[]):
        module = cls(D_MODEL, D_K, D_V)
    state = reference.state_dict()
    expected = ("its only parameters must be w_q = nn.Linear(d_model, d_k, bias=False), "
                "w_k = nn.Linear(d_model, d_k, bias=False) and w_v = "
                "nn.Linear(d_model, d_v, bias=False)")
    try:
        result = module.load_state_dict(state, strict=False)
    except Exception as exc:
        raise CheckFailed(
            f"could not load the reference's weights into SelfAttention({D_MODEL}, {D_K}, "
            f"{D_V}): {str(exc)[:300]} — {expected}") from None
    unexpected = list(result[1])
    params = {name for name, _ in module.named_parameters()}
    biases = {f"{n}.bias" for n in ("w_q", "w_k", "w_v")}
    extra = sorted(params - set(state))
    if unexpected or not set(extra) <= biases:
        raise CheckFailed(f"the parameters of SelfAttention({D_MODEL}, {D_K}, {D_V}) are "
                          f"{sorted(params)}; expected w_q.weight, w_k.weight and w_v.weight "
                          f"— {expected}")
    if extra:
        theirs = module.state_dict()
        module.load_state_dict({n: torch.zeros_like(theirs[n]) for n in extra}, strict=False)
    return module.eval()


def _self_attention_diagnoses(reference, x, mask) -> tuple[dict, dict]:
    x = x.detach().double()
    Wq, Wk, Wv = (m.weight.detach().double() for m in (reference.w_q, reference.w_k,
                                                        reference.w_v))
    q, k, v = x @ Wq.T, x @ Wk.T, x @ Wv.T
    variants = _sdpa_variants(q, k, v, mask)

    def attend(q_, k_, scale):
        def run():
            w = _soft(_scaled_scores(q_, k_, scale), mask)
            return w @ v, w
        return run

    s = 1 / math.sqrt(D_K)
    variants[SCALED_BY_DMODEL] = attend(q, k, 1 / math.sqrt(D_MODEL))
    variants[W_Q_FOR_KEYS] = attend(q, q, s)
    variants[W_K_FOR_QUERIES] = attend(k, k, s)
    variants[QK_SWAPPED] = attend(k, q, s)
    return _diagnoses(variants, 0), _diagnoses(variants, 1)


def _self_attention_call(module, x, mask, label):
    return call(module, x.clone(), None if mask is None else mask.clone(),
                tried=f"SelfAttention.forward(x, mask) {label}", contract=SA_CONTRACT)


def _compare_self_attention(module, reference, x, mask, label):
    B, T, _ = x.shape
    result = _self_attention_call(module, x, mask, label)
    out, weights = _attention_pair(result, T, T, D_V, (B,), what="SelfAttention.forward")
    if mask is not None:
        _expect_polarity(weights, mask)
    with torch.no_grad():
        exp_out, exp_w = reference(x, mask)
    out_diag, w_diag = _self_attention_diagnoses(reference, x, mask)
    expect_close(weights, exp_w, f"weights {label}", diagnoses=w_diag,
                 hint=NAN_HINT if mask is not None else "")
    expect_close(out, exp_out, f"out {label}", diagnoses=out_diag,
                 hint=NAN_HINT if mask is not None else "")


def check_SelfAttention(cls) -> Report:
    c = Check("SelfAttention")
    B, T = 3, 5

    with c.case(f"SelfAttention({D_MODEL}, {D_K}, {D_V}) has w_q, w_k, w_v: nn.Linear "
                "without bias, d_model -> d_k, d_k, d_v"):
        with torch.random.fork_rng(devices=[]):
            module = call(cls, D_MODEL, D_K, D_V, tried=f"SelfAttention({D_MODEL}, {D_K}, "
                          f"{D_V})", contract=SA_CONTRACT)
        want = {"w_q.weight": (D_K, D_MODEL), "w_k.weight": (D_K, D_MODEL),
                "w_v.weight": (D_V, D_MODEL)}
        # shapes are read after loading weights (a lazily built layer has none before)
        try:
            module.load_state_dict(_reference_module(100).state_dict(), strict=False)
        except Exception as exc:
            for name, got in re.findall(r"size mismatch for ([\w.]+):.*?current model is "
                                        r"torch\.Size\(\[([\d, ]*)\]\)", str(exc)):
                if name in want:
                    raise CheckFailed(
                        f"{name} has shape ({got}), expected {want[name]}: "
                        f"nn.Linear(d_model, {'d_v' if name[2] == 'v' else 'd_k'}) stores "
                        "its weight as (out_features, in_features)") from None
            raise CheckFailed(f"could not load weights named w_q.weight, w_k.weight, "
                              f"w_v.weight into SelfAttention({D_MODEL}, {D_K}, {D_V}): "
                              f"{str(exc)[:300]}") from None
        state = dict(module.named_parameters())
        biases = sorted(n for n in state if n.endswith(".bias"))
        expect(not biases, f"the projections have a bias ({', '.join(biases)}): use "
               "nn.Linear(..., bias=False)")
        missing = sorted(set(want) - set(state))
        expect(not missing, f"no parameter named {', '.join(missing)}: name the "
               "projections w_q, w_k, w_v")
        extra = sorted(set(state) - set(want))
        expect(not extra, f"unexpected parameters {', '.join(extra)}: the module has only "
               "w_q, w_k and w_v")
        for name, shape in want.items():
            got = tuple(state[name].shape)
            expect(got == shape, f"{name} has shape {got}, expected {shape}: "
                   f"nn.Linear(d_model, {'d_v' if name[2] == 'v' else 'd_k'}) stores its "
                   "weight as (out_features, in_features)")

    with c.case("with the reference's weights, matches on random inputs (no mask)", weight=3):
        for seed in (200, 300):
            reference = _reference_module(seed)
            module = _student_module(cls, reference)
            x = randn(B, T, D_MODEL, seed=seed + 50)
            _compare_self_attention(module, reference, x, None, "(no mask)")

    with c.case("padding (B, 1, T), causal (T, T) and random (B, T, T) masks; with a "
                "causal mask, later positions change no earlier output", weight=2):
        reference = _reference_module(400)
        module = _student_module(cls, reference)
        x = randn(B, T, D_MODEL, seed=401)
        pad = _lengths_mask([5, 3, 2], T).unsqueeze(1)
        _compare_self_attention(module, reference, x, pad, "with a padding mask")
        _compare_self_attention(module, reference, x, ref.causal_mask(T),
                                "with a causal mask")
        _compare_self_attention(module, reference, x, pad & ref.causal_mask(T),
                                "with a padding & causal (B, T, T) mask")
        random_mask = torch.rand(B, T, T, generator=torch.Generator().manual_seed(402)) < 0.6
        random_mask[..., 0] |= ~random_mask.any(-1)
        _compare_self_attention(module, reference, x, random_mask,
                                "with a random (B, T, T) mask")
        changed = x.clone()
        changed[:, 3:] = randn(B, T - 3, D_MODEL, seed=403, scale=3.0)
        first = _attention_pair(_self_attention_call(module, x, ref.causal_mask(T),
                                                     "with a causal mask"),
                                T, T, D_V, (B,), what="SelfAttention.forward")[0]
        second = _attention_pair(_self_attention_call(module, changed, ref.causal_mask(T),
                                                      "with a causal mask"),
                                 T, T, D_V, (B,), what="SelfAttention.forward")[0]
        expect_close(second[:, :3], first[:, :3], "out at positions 0..2 after changing x at "
                     "positions 3 and later (causal mask)",
                     hint="with a causal mask a position must not see later positions")

    with c.case("large inputs (scores of about 1e3) do not overflow, with and without a mask"):
        reference = _reference_module(450)
        module = _student_module(cls, reference)
        x = randn(B, T, D_MODEL, seed=451, scale=10.0)
        with torch.no_grad():
            q, k = reference.w_q(x), reference.w_k(x)
        expect(float((q @ k.transpose(-2, -1)).abs().max()) > 300,
               "internal: the large-input case is not large")
        for mask, label in ((None, "for large inputs"),
                            (_lengths_mask([5, 2, 4], T).unsqueeze(1),
                             "for large inputs with a padding mask")):
            out, weights = _attention_pair(_self_attention_call(module, x, mask, label),
                                           T, T, D_V, (B,), what="SelfAttention.forward")
            with torch.no_grad():
                exp_out, exp_w = reference(x, mask)
            expect_close(weights, exp_w, f"weights {label}", atol=1e-4, hint=OVERFLOW_HINT)
            expect_close(out, exp_out, f"out {label}", atol=1e-4, hint=OVERFLOW_HINT)

    with c.case("batch of one; an all-masked query row gives 0, not NaN"):
        reference = _reference_module(500)
        module = _student_module(cls, reference)
        x = randn(1, T, D_MODEL, seed=501)
        _compare_self_attention(module, reference, x, None, "for B = 1")
        x = randn(2, T, D_MODEL, seed=502)
        mask = ref.causal_mask(T).repeat(2, 1, 1)
        mask[1, 2] = False
        _compare_self_attention(module, reference, x, mask, "with an all-False mask row")

    with c.case("leaves x unmodified; gradients reach x, w_q, w_k and w_v"):
        reference = _reference_module(600)
        module = _student_module(cls, reference)
        x = randn(B, T, D_MODEL, seed=601)
        mask = _lengths_mask([5, 4, 2], T).unsqueeze(1)
        before = snapshot(x=x)
        call(module, x, mask, tried="SelfAttention.forward(x, mask)", contract=SA_CONTRACT)
        expect_unmodified(before, {"x": x})
        w_out, w_w = randn(B, T, D_V, seed=602), randn(B, T, T, seed=603)
        grads = []
        for m in (module, reference):
            m.zero_grad(set_to_none=True)
            xg = x.clone().requires_grad_(True)
            result = _self_attention_call(m, xg, mask, "") if m is module else m(xg, mask)
            out, weights = _attention_pair(result, T, T, D_V, (B,),
                                           what="SelfAttention.forward")
            expect(out.requires_grad and weights.requires_grad,
                   f"out or weights does not require grad — {DETACHED}")
            ((out * w_out).sum() + (weights * w_w).sum()).backward()
            params = dict(m.named_parameters())
            missing = [n for n in ("w_q.weight", "w_k.weight", "w_v.weight")
                       if params[n].grad is None]
            expect(xg.grad is not None, f"no gradient reached x — {DETACHED}")
            expect(not missing, f"no gradient reached {', '.join(missing)} — does forward "
                   f"use that projection? If it does: {DETACHED[0].lower()}{DETACHED[1:]}")
            grads.append([xg.grad] + [params[n].grad for n in
                                      ("w_q.weight", "w_k.weight", "w_v.weight")])
        for name, got, want in zip(("x", "w_q.weight", "w_k.weight", "w_v.weight"), *grads,
                                   strict=True):
            expect_close(got, want, f"the gradient with respect to {name}", atol=1e-4)
    return c.report()


# --- sinusoidal_positional_encoding ----------------------------------------------------------


def _pe_diagnoses(max_len, d):
    p = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    i = torch.arange(d // 2, dtype=torch.float64)
    j = torch.arange(d, dtype=torch.float64)

    def interleave(sin, cos):
        return torch.stack((sin, cos), dim=-1).flatten(-2)

    def standard(angle):
        return interleave(angle.sin(), angle.cos())

    return {
        "sin and cos are concatenated ([sin..., cos...]) instead of interleaved (sin in the "
        "even columns 0, 2, 4, ..., cos in the odd columns)":
            torch.cat(((p / 10000 ** (2 * i / d)).sin(), (p / 10000 ** (2 * i / d)).cos()), 1),
        "the exponent is i/d instead of 2i/d (i is the index of the sin/cos pair)":
            standard(p / 10000 ** (i / d)),
        "the exponent uses the column index j for every column, so the cos column 2i+1 gets "
        "(2i+1)/d instead of the pair's 2i/d":
            torch.where(j % 2 == 0, (p / 10000 ** (j / d)).sin(), (p / 10000 ** (j / d)).cos()),
        "the exponent is 2j/d with j the column index (a loop over range(0, d, 2) that "
        "doubles it again): the pair starting at column 2i uses 4i/d":
            standard(p / 10000 ** (4 * i / d)),
        "sin and cos are swapped (cos in the even columns)":
            interleave((p / 10000 ** (2 * i / d)).cos(), (p / 10000 ** (2 * i / d)).sin()),
        "positions start at 1 instead of 0 (row 0 must be [0, 1, 0, 1, ...])":
            standard((p + 1) / 10000 ** (2 * i / d)),
        "the position is multiplied by 10000^(2i/d) instead of divided by it":
            standard(p * 10000 ** (2 * i / d)),
    }


def _pe_shape(pe, max_len, d):
    t = as_tensor(pe, "the encoding")
    shape = tuple(t.shape)
    if max_len != d and shape == (d, max_len):
        raise CheckFailed(f"the encoding has shape (d_model, max_len) = {shape}: it is "
                          "transposed; row p must be the encoding of position p")
    if shape == (1, max_len, d):
        raise CheckFailed(f"the encoding has shape {shape}: return (max_len, d_model) "
                          "without a batch axis")
    return expect_shape(t, (max_len, d), "the encoding")


def pe_atol(max_len: int) -> float:
    """How far a correct float32 table may be from the float64 reference.

    Measured (every common float32 formula: exp/log, pow, division, numpy in float32): the
    largest error grows with the angle p / 10000^(2i/d), up to 1.3e-7 * max_len (2.7e-4 at
    max_len 5000, d_model 64; 3.9e-4 at d_model 512); this allows three times that. A
    fixed atol=1e-4 failed correct float32 code from max_len ~ 2000 on."""
    return 1e-5 + 4e-7 * max_len


def _pe_call(fn, max_len, d):
    return call(fn, max_len, d, tried=f"sinusoidal_positional_encoding({max_len}, {d})",
                contract="sinusoidal_positional_encoding(max_len, d_model) -> a float32 "
                         "(max_len, d_model) tensor")


def _compare_pe(fn, max_len, d):
    pe = _pe_shape(_pe_call(fn, max_len, d), max_len, d)
    expect_close(pe, ref.positional_encoding64(max_len, d),
                 f"the encoding for max_len = {max_len}, d_model = {d}", atol=pe_atol(max_len),
                 rtol=0, diagnoses=_pe_diagnoses(max_len, d))


def check_sinusoidal_positional_encoding(fn) -> Report:
    c = Check("sinusoidal_positional_encoding")

    with c.case("returns a float32 tensor of shape (max_len, d_model)"):
        pe = _pe_shape(_pe_call(fn, 10, 6), 10, 6)
        expect(pe.dtype == torch.float32, f"the encoding should have dtype torch.float32, got "
               f"{pe.dtype} — it is added to float32 embeddings; convert with .float()")

    with c.case("PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d))",
                weight=3):
        _compare_pe(fn, 50, 16)

    with c.case("other sizes: (1, 2), (7, 6), (256, 64), (2048, 64), max_len < d_model"):
        for max_len, d in ((1, 2), (7, 6), (256, 64), (2048, 64), (3, 10)):
            _compare_pe(fn, max_len, d)
    return c.report()


CHECKS = {
    "scaled_dot_product_attention": check_scaled_dot_product_attention,
    "padding_mask": check_padding_mask,
    "causal_mask": check_causal_mask,
    "SelfAttention": check_SelfAttention,
    "sinusoidal_positional_encoding": check_sinusoidal_positional_encoding,
}
