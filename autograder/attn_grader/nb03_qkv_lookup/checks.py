"""Checks for 03_qkv_lookup."""

from __future__ import annotations

import functools
import math

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
    is_close,
    lend,
    randn,
    snapshot,
)
from attn_grader.nb03_qkv_lookup import reference as ref

_DTYPE_WORDS = ("dtype", "scalar type", "long int", "Long", "Double", "Half")
_DTYPE_HINT = ("the tensors it combines have different dtypes (float32, float64 or an integer "
               "type): convert them to one floating dtype before multiplying")


def _f32_atol(scores: torch.Tensor, base: float = 1e-6) -> float:
    """A tolerance for weights computed in float32 from these scores: a correct softmax that
    rounds a score (or a log-sum-exp) of size |s| to float32 errs by up to eps·|s| in the
    exponent, so by about that relative amount in the weights (2.4e-3 at |s| = 1e4)."""
    finite = scores.detach()[torch.isfinite(scores.detach())]
    biggest = float(finite.abs().max()) if finite.numel() else 0.0
    return base + 2 * torch.finfo(torch.float32).eps * biggest


_SHAPE_WORDS = ("size", "shape", "dimension", "broadcast", "mat1", "must match")


def _run(fn, *args, hint: str = "", dtype_hint: str = "", shape_hint: str = "", **kwargs):
    """Call student code; an exception becomes a failure message with a likely cause:
    ``shape_hint`` for an error about sizes, ``dtype_hint`` (or a generic one) for an error
    about mismatched dtypes, ``hint`` for any other error."""
    try:
        return fn(*args, **kwargs)
    except (NotImplementedError, CheckFailed):
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        if any(word in text for word in _DTYPE_WORDS):
            hint = dtype_hint or _DTYPE_HINT
        elif shape_hint and any(word in text for word in _SHAPE_WORDS):
            hint = shape_hint
        raise CheckFailed(
            f"raised {type(exc).__name__}: {text}" + (f" — {hint}" if hint else "")
        ) from None


def _grad_of(fn, args: list, wrt: int, probe: torch.Tensor):
    """Gradient of (fn(*args) * probe).sum() with respect to args[wrt] (arguments are passed
    by position, so a student's own parameter names do not matter)."""
    x = args[wrt].detach().clone().requires_grad_(True)
    args = [a.clone() if type(a) is torch.Tensor else a for a in args]
    args[wrt] = x
    out = fn(*args)
    out = as_tensor(out[0] if type(out) is tuple else out, "the output")
    expect(out.requires_grad, "the output is cut off from autograd — was it detached, "
           "computed under torch.no_grad() or converted to numpy?")
    (out * probe).sum().backward()
    expect(x.grad is not None, "no gradient reached the input")
    return x.grad


def _expect_grads(fn, reference, args: list, names: list, wrts, probe, atol=1e-4, hint="",
                  dtype_hint=""):
    for i in wrts:
        got = _grad_of(lambda *a: _run(fn, *a, hint=hint, dtype_hint=dtype_hint), args, i,
                       probe)
        want = _grad_of(reference, args, i, probe)
        expect(bool(torch.isfinite(got).all()),
               f"the gradient with respect to {names[i]} contains NaN or inf")
        expect_close(got, want, f"the gradient with respect to {names[i]}", atol=atol)


# --- hard_lookup ----------------------------------------------------------------------------

_ONE_HOT_HINT = ("if you built the one-hot weights with F.one_hot, they are int64: convert them "
                 "with .to(values.dtype) before multiplying by the values")


def _lookup_diagnoses(query, keys, values) -> dict:
    scores = keys @ query
    N = keys.shape[0]

    def pick(i):
        return values[int(i)]

    ties = (scores == scores.max()).nonzero().flatten()
    cos = scores / (keys.norm(dim=-1) * query.norm()).clamp_min(1e-12)
    return {
        "the least similar key is taken (argmin instead of argmax)": lambda: pick(scores.argmin()),
        "the nearest key by Euclidean distance is taken instead of the largest dot product":
            lambda: pick((keys - query).norm(dim=-1).argmin()),
        "the most similar key by cosine similarity is taken instead of the largest dot product":
            lambda: pick(cos.argmax()),
        "the weights are a softmax (a soft lookup) instead of one-hot":
            lambda: torch.softmax(scores, 0) @ values,
        "on a tie the last of the most similar keys is taken instead of the first":
            lambda: pick(ties[-1]),
        "on a tie the tied values are averaged instead of taking the first":
            lambda: values[ties].mean(0),
        "on a tie the tied values are summed (weights = scores == max puts a 1 on every tied "
        "key) instead of taking the first": lambda: values[ties].sum(0),
        "the key is returned instead of its value": lambda: keys[int(scores.argmax())]
        if keys.shape[1] == values.shape[1] else None,
        "the weights are uniform (the scores are ignored)":
            lambda: torch.full((N,), 1.0 / N) @ values,
    }


def _lookup(hard_lookup, query, keys, values):
    out = _run(hard_lookup, query.clone(), keys.clone(), values.clone(), dtype_hint=_ONE_HOT_HINT)
    return expect_shape(out, (values.shape[1],), "the looked-up value",
                        hint="return one value row (Dv,) = one-hot weights (N,) @ values (N, Dv),"
                        " not the weights (N,), a key (Dk,) or an index")


def check_hard_lookup(hard_lookup) -> Report:
    c = Check("hard_lookup")
    N, Dk, Dv = 5, 3, 4

    with c.case("returns a value of shape (Dv,)"):
        _lookup(hard_lookup, randn(Dk, seed=1), randn(N, Dk, seed=2), randn(N, Dv, seed=3))

    with c.case("returns the value of the key with the largest dot product", weight=3):
        # Keys of different lengths: the largest dot product is neither the nearest key nor
        # the one with the best cosine.
        query = torch.tensor([1.0, 0.0, 0.0])
        keys = torch.tensor([[1.0, 0.0, 0.0], [3.0, 2.5, 0.0], [0.0, 1.0, 0.0],
                             [-1.0, 0.0, 1.0], [0.9, 0.1, 0.0]])
        values = randn(N, Dv, seed=4)
        # Largest dot product: key 2; nearest key: key 1; best cosine: key 0.
        keys2 = torch.tensor([[0.1, 0.0, 0.0], [1.0, 0.3, 0.0], [2.0, 3.0, 0.0],
                              [-1.0, 1.0, 0.0], [0.0, 0.0, 1.5]])
        cases = [(query, keys2, values), (query, keys, values)]
        for seed in (5, 6, 7):
            cases.append((randn(Dk, seed=seed), randn(N, Dk, seed=seed + 10, scale=2.0),
                          randn(N, Dv, seed=seed + 20)))
        for query, keys, values in cases:
            expect_close(_lookup(hard_lookup, query, keys, values),
                         ref.hard_lookup(query, keys, values), "the looked-up value",
                         diagnoses=_lookup_diagnoses(query, keys, values))

    with c.case("on a tie, the first of the most similar keys wins"):
        query = torch.tensor([1.0, 0.0, 2.0])
        keys = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0],
                             [1.0, 0.0, 1.0], [3.0, 5.0, 0.0]])
        values = randn(N, Dv, seed=8)
        expect_close(_lookup(hard_lookup, query, keys, values),
                     ref.hard_lookup(query, keys, values), "the looked-up value on a tie",
                     diagnoses=_lookup_diagnoses(query, keys, values))

    with c.case("works for N = 1, for Dk = Dv and for float64 inputs"):
        q1, k1, v1 = randn(2, seed=9), randn(1, 2, seed=10), randn(1, 6, seed=11)
        expect_close(_lookup(hard_lookup, q1, k1, v1), v1[0], "the value for N = 1")
        # float64 in: float64 or float32 back, compared at float32's precision
        f64 = torch.float64
        q, k, v = (randn(3, seed=12, dtype=f64), randn(4, 3, seed=13, dtype=f64),
                   randn(4, 3, seed=14, dtype=f64))
        expect_close(_lookup(hard_lookup, q, k, v), ref.hard_lookup(q, k, v),
                     "the looked-up value (float64 inputs, Dk = Dv)",
                     diagnoses=_lookup_diagnoses(q, k, v))

    with c.case("leaves its inputs unmodified; the gradient reaches the chosen value only"):
        query, keys, values = randn(Dk, seed=15), randn(N, Dk, seed=16), randn(N, Dv, seed=17)
        before = snapshot(query=query, keys=keys, values=values)
        _run(hard_lookup, query, keys, values, dtype_hint=_ONE_HOT_HINT)
        expect_unmodified(before, {"query": query, "keys": keys, "values": values})
        probe = randn(Dv, seed=18)
        _expect_grads(hard_lookup, ref.hard_lookup, [query, keys, values],
                      ["query", "keys", "values"], [2], probe, dtype_hint=_ONE_HOT_HINT)
    return c.report()


# --- stable_softmax -------------------------------------------------------------------------


def _softmax_diagnoses(x: torch.Tensor, dim: int) -> dict:
    d = dim % x.ndim
    others = [a for a in range(x.ndim) if a != d]
    out = {}
    if d != x.ndim - 1:
        out["the dim argument is ignored (softmax always over the last axis)"] = (
            lambda: torch.softmax(x.double(), -1).to(x.dtype))
    for a in others:
        out[f"the softmax is taken over the wrong dim ({a} instead of {d})"] = (
            lambda a=a: torch.softmax(x.double(), a).to(x.dtype))

    def no_keepdim():
        e = torch.exp(x.double() - x.double().amax(dim))
        return (e / e.sum(dim, keepdim=True)).to(x.dtype)

    def total_sum():
        e = torch.exp(x.double() - x.double().amax(dim, keepdim=True))
        return (e / e.sum()).to(x.dtype)

    out["the max is subtracted without keepdim=True, so it broadcasts along the wrong axis"] = (
        no_keepdim)
    out["the exponentials are divided by their sum over all entries instead of the sum "
        "along dim"] = total_sum
    out["the exponentials are not normalised (no division by their sum)"] = (
        lambda: torch.exp(x))
    out["log_softmax is returned instead of softmax"] = lambda: torch.log_softmax(x, dim)
    return out


def _softmax_case(stable_softmax, x, dim, what, hint=""):
    out = _run(stable_softmax, x.clone(), dim)
    return expect_close(out, ref.stable_softmax(x, dim), what, atol=_f32_atol(x),
                        hint=hint, diagnoses=_softmax_diagnoses(x, dim))


def check_stable_softmax(stable_softmax) -> Report:
    c = Check("stable_softmax")

    with c.case("keeps the shape of the scores; float64 scores work too"):
        x = randn(2, 3, 5, seed=20)
        expect_shape(_run(stable_softmax, x.clone()), (2, 3, 5), "the weights")
        # float64 in: float64 or float32 back, compared at float32's precision
        _softmax_case(stable_softmax, x.double(), -1, "the weights of float64 scores")

    with c.case("matches softmax along the last axis on random scores", weight=2):
        for seed in (21, 22):
            _softmax_case(stable_softmax, randn(2, 3, 5, seed=seed, scale=3.0), -1, "the weights")
        _softmax_case(stable_softmax, randn(7, seed=23), -1, "the weights of a 1-D score vector")
        _softmax_case(stable_softmax, randn(2, 3, 4, 5, seed=28, scale=3.0), -1,
                      "the weights of 4-D scores (B, H, Tq, Tk)")

    with c.case("respects the dim argument (dim=0, dim=1, dim=-2)", weight=1.5):
        x = randn(4, 3, 5, seed=24, scale=2.0)
        for dim in (0, 1, -2):
            _softmax_case(stable_softmax, x, dim, f"the weights for dim={dim}")

    with c.case("square scores: each row's own max is subtracted (keepdim=True)"):
        _softmax_case(stable_softmax, randn(4, 4, seed=25, scale=3.0), -1,
                      "the weights of a square score matrix")

    overflow_hint = ("exp overflows for large scores (exp(1e4) = inf, inf/inf = NaN): subtract "
                     "the max along dim before exp")
    with c.case("scores of ±1e4 do not overflow", weight=2):
        x = torch.tensor([[1e4, 0.0, -1e4], [1e4, 1e4 - 1.0, 1e4 - 2.0]])
        out = as_tensor(_run(stable_softmax, x.clone(), -1), "the weights")
        expect(bool(torch.isfinite(out).all()),
               f"scores of ±1e4 gave weights {out.tolist()} with NaN or inf — {overflow_hint}")
        _softmax_case(stable_softmax, x, -1, "the weights for scores of ±1e4", hint=overflow_hint)

    with c.case("a row far below the others (-1e4) does not underflow to 0/0"):
        x = torch.tensor([[0.0, 1.0, 2.0], [-1e4, -1e4 + 1.0, -1e4 + 2.0]])
        underflow_hint = ("subtract each row's own max along dim (keepdim=True), not one max "
                          "for the whole tensor: every exp of a row far below the global max "
                          "underflows to 0, and 0/0 = NaN")
        out = as_tensor(_run(stable_softmax, x.clone(), -1), "the weights")
        expect(bool(torch.isfinite(out).all()),
               f"a row of scores near -1e4 gave weights {out[1].tolist()} — {underflow_hint}")
        _softmax_case(stable_softmax, x, -1, "the weights", hint=underflow_hint)

    with c.case("leaves the scores unmodified; gradients match softmax's"):
        x = randn(3, 4, seed=26, scale=2.0)
        before = snapshot(scores=x)
        _run(stable_softmax, x, -1)
        expect_unmodified(before, {"scores": x})
        probe = randn(3, 4, seed=27)
        _expect_grads(stable_softmax, ref.stable_softmax, [x, -1], ["the scores"], [0], probe,
                      atol=1e-5)
    return c.report()


# --- masked_softmax -------------------------------------------------------------------------


def _masked_diagnoses(x: torch.Tensor, mask: torch.Tensor, dim: int) -> dict:
    xd = x.double()
    mask_b, _ = torch.broadcast_tensors(mask, x)

    def fill(value, m=mask_b):
        return torch.softmax(xd.masked_fill(~m, value), dim).to(x.dtype)

    def after():
        return (torch.softmax(xd, dim) * mask_b).to(x.dtype)

    return {
        "the mask polarity is reversed (True must mean 'may attend', False 'blocked')":
            lambda: ref.masked_softmax(x, ~mask, dim),
        "the mask is applied after softmax without renormalising the weights": after,
        "the scores are multiplied by the mask (masked scores become 0, not -inf)":
            lambda: torch.softmax(xd * mask_b, dim).to(x.dtype),
        "masked positions are filled with a finite value, so an all-masked row gets uniform "
        "weights 1/Tk instead of 0s": lambda: fill(-1e9),
        "masked positions are filled with a finite value (-1e4) that is not far enough below "
        "the scores: the masked weights are small but not exactly 0": lambda: fill(-1e4),
        "the softmax is taken over the wrong dim": lambda: ref.masked_softmax(
            x, mask, -1 if dim % x.ndim != x.ndim - 1 else -2),
    }


def _masked_case(masked_softmax, x, mask, what, dim=-1, hint=""):
    out = _run(masked_softmax, x.clone(), mask.clone(), dim)
    expected = ref.masked_softmax(x, mask, dim)
    out = expect_shape(out, tuple(expected.shape), what,
                       hint="the weights have the broadcast shape of scores and mask")
    if not bool(torch.isfinite(out).all()):
        rows_all_masked = ~torch.broadcast_to(mask, expected.shape).any(dim, keepdim=True)
        nan_in_dead_rows = bool((~torch.isfinite(out) & rows_all_masked).any())
        if nan_in_dead_rows and bool(torch.isfinite(out[~rows_all_masked.expand_as(out)]).all()):
            raise CheckFailed(
                f"{what}: an all-masked row gives NaN — softmax of a row that is all -inf is "
                "0/0; such a row must give weights of 0 (e.g. set the row max to 0 before exp, "
                "or zero the weights where the mask is False)")
        raise CheckFailed(f"{what} contain NaN or inf" + (f" — {hint}" if hint else ""))
    masked_out = out.detach()[~torch.broadcast_to(mask, expected.shape)]
    if masked_out.numel() and bool((masked_out != 0).any()):
        diag = _masked_diagnoses(x, mask, dim)
        for mistake, make in diag.items():
            cand = make()
            if type(cand) is torch.Tensor and is_close(out, cand, atol=1e-5, rtol=1e-3):
                raise CheckFailed(f"{what}: masked weights should be exactly 0; it matches "
                                  f"what you get when {mistake}")
        raise CheckFailed(
            f"{what}: masked weights should be exactly 0, got values up to "
            f"{float(masked_out.abs().max()):.3g} — a finite fill value such as -1e4 is not "
            "far enough below scores this large: fill with -inf (and handle all-masked rows) "
            "or zero the masked weights explicitly")
    return expect_close(out, expected, what, atol=_f32_atol(x), hint=hint,
                        diagnoses=_masked_diagnoses(x, mask, dim))


def _random_mask(*shape: int, seed: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < 0.6
    mask[..., 0] |= ~mask.any(-1)  # at least one visible key per row
    return mask


def check_masked_softmax(masked_softmax) -> Report:
    c = Check("masked_softmax")
    overflow_hint = "exp overflows for large scores: subtract the max along dim before exp"

    with c.case("returns weights of the broadcast shape of scores and mask", weight=0.5):
        out = _run(masked_softmax, randn(2, 3, 4, seed=30), torch.ones(2, 1, 4, dtype=torch.bool))
        expect_shape(out, (2, 3, 4), "the weights")

    with c.case("matches the reference on random scores and masks", weight=2):
        for seed in (31, 32):
            x = randn(2, 3, 5, seed=seed, scale=2.0)
            _masked_case(masked_softmax, x, _random_mask(2, 3, 5, seed=seed + 5), "the weights")
        pad = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
        _masked_case(masked_softmax, randn(2, 3, 5, seed=33), pad.unsqueeze(1),
                     "the weights with a (B, 1, Tk) padding mask")
        _masked_case(masked_softmax, randn(4, 4, seed=34), torch.ones(4, 4).tril().bool(),
                     "the weights with a causal (lower-triangular) mask")
        _masked_case(masked_softmax, randn(2, 2, 3, 5, seed=35, scale=2.0),
                     _random_mask(2, 1, 1, 5, seed=36),
                     "the weights of 4-D scores (B, H, Tq, Tk) with a (B, 1, 1, Tk) mask")

    with c.case("masked weights are exactly 0, even for scores of ±1e4", weight=1.5):
        # Batch 0: scores near -1e4 and below, so a finite fill of -1e4 is NOT far below
        # them; batch 1: scores of +1e4 and more, so exp without the max shift overflows.
        x = torch.tensor([[[-2e4, -10003.0, -3e4, -2.5e4], [-1.5e4, -1.8e4, -1.2e4, -1.6e4],
                           [-9e3, -2e4, -1.1e4, -3e4]],
                          [[2e4, 1e4, 1.5e4, 3e4], [1e4, 1e4 + 1, 0.0, -1e4],
                           [2.5e4, 25001.0, 24999.0, -5e3]]])
        mask = torch.tensor([[[True, True, False, False], [False, True, True, False],
                              [True, False, True, True]],
                             [[True, False, True, False], [True, True, True, True],
                              [False, True, True, True]]])
        _masked_case(masked_softmax, x, mask, "the weights for scores of ±1e4",
                     hint=overflow_hint)

    with c.case("a row whose keys are all masked gets weights of 0, not NaN", weight=1.5):
        x = randn(2, 3, 4, seed=37)
        mask = torch.tensor([[[True, False, True, False], [False, False, False, False],
                              [True, True, True, True]],
                             [[False, False, False, False], [False, True, False, False],
                              [True, True, False, True]]])
        _masked_case(masked_softmax, x, mask, "the weights with all-masked rows")
        _masked_case(masked_softmax, randn(3, 4, seed=38),
                     torch.zeros(3, 4, dtype=torch.bool), "the weights when everything is masked")

    with c.case("respects the dim argument", weight=0.5):
        x = randn(2, 5, 3, seed=39, scale=2.0)
        mask = _random_mask(2, 3, 5, seed=40).transpose(1, 2)
        _masked_case(masked_softmax, x, mask, "the weights for dim=1", dim=1)
        _masked_case(masked_softmax, x, mask, "the weights for dim=-2", dim=-2)

    with c.case("leaves its inputs unmodified; gradients are finite and match"):
        x = randn(2, 3, 4, seed=41, scale=2.0)
        mask = _random_mask(2, 3, 4, seed=42)
        mask[1, 2] = False
        before = snapshot(scores=x, mask=mask)
        _run(masked_softmax, x, mask)
        expect_unmodified(before, {"scores": x, "mask": mask})
        probe = randn(2, 3, 4, seed=43)
        _expect_grads(masked_softmax, ref.masked_softmax, [x, mask, -1], ["the scores"], [0],
                      probe, atol=1e-5)
    return c.report()


# --- dot_scores, scaled_dot_scores ----------------------------------------------------------

_TRANSPOSED_HINT = ("rows must be queries and columns keys: compute q kᵀ, shape (B, Tq, Tk), "
                    "not k qᵀ, shape (B, Tk, Tq) — the output is transposed")
_SQUEEZE_HINT = "squeeze() drops axes of size 1 (B = 1 or Tq = 1); keep all three axes"
_DOT_ERROR_HINT = ("if you wrote k.T: on a 3-D tensor .T reverses all three axes; use "
                   "k.transpose(-2, -1) (or k.mT) to swap the last two")


def _scores_shape(out, B, Tq, Tk, what):
    out = as_tensor(out, what)
    if tuple(out.shape) == (B, Tk, Tq) and Tq != Tk:
        raise CheckFailed(f"{what} has shape {(B, Tk, Tq)}, expected {(B, Tq, Tk)} — "
                          + _TRANSPOSED_HINT)
    hint = _SQUEEZE_HINT if 1 in (B, Tq, Tk) else "expected one score per (query, key) pair"
    return expect_shape(out, (B, Tq, Tk), what, hint=hint)


def _dot_diagnoses(q, k, scaled: bool) -> dict:
    raw = q @ k.transpose(-2, -1)
    d, Tk = q.shape[-1], k.shape[-2]
    cosine = (torch.nn.functional.normalize(q, dim=-1)
              @ torch.nn.functional.normalize(k, dim=-1).transpose(-2, -1))
    if scaled:
        diag = {
            "the 1/sqrt(d) scaling is missing": raw,
            "the scores are divided by d instead of sqrt(d)": raw / d,
            "the scores are multiplied by sqrt(d) instead of divided": raw * math.sqrt(d),
            "the scores are divided by sqrt(Tk), the number of keys, instead of sqrt(d)":
                raw / math.sqrt(Tk),
            "the scores are divided by sqrt(Tq), the number of queries, instead of sqrt(d)":
                raw / math.sqrt(q.shape[-2]),
            "q and k are normalised (cosine similarity) instead of scaled by 1/sqrt(d)": cosine,
        }
    else:
        diag = {
            "the scores are scaled by 1/sqrt(d) (dot scores have no scaling; that is "
            "scaled_dot_scores)": raw / math.sqrt(d),
            "the scores are divided by d (dot scores have no scaling)": raw / d,
            "q and k are normalised (cosine similarity) instead of a plain dot product": cosine,
        }
    if q.shape[-2] == k.shape[-2]:
        factor = 1 / math.sqrt(d) if scaled else 1.0
        diag["the output is transposed (k qᵀ instead of q kᵀ)"] = raw.transpose(-2, -1) * factor
    return diag


def _check_dot_like(name: str, fn, reference, scaled: bool) -> Report:
    c = Check(name)
    B, Tq, Tk, D = 2, 3, 5, 16  # D = 16: sqrt(D) = 4 differs from D, Tq, Tk and sqrt(Tk)

    def run(q, k, what="the scores"):
        out = _run(fn, q.clone(), k.clone(), hint=_DOT_ERROR_HINT)
        out = _scores_shape(out, q.shape[0], q.shape[1], k.shape[1], what)
        expect_close(out, reference(q, k), what, atol=1e-5, hint="",
                     diagnoses=_dot_diagnoses(q, k, scaled))

    with c.case("returns scores of shape (B, Tq, Tk) for Tq != Tk"):
        _scores_shape(_run(fn, randn(B, Tq, D, seed=50), randn(B, Tk, D, seed=51),
                           hint=_DOT_ERROR_HINT), B, Tq, Tk, "the scores")

    with c.case("matches the reference on random queries and keys", weight=2):
        for seed in (52, 53):
            run(randn(B, Tq, D, seed=seed), randn(B, Tk, D, seed=seed + 10))
        run(randn(B, 4, 9, seed=54), randn(B, 4, 9, seed=55), "the scores for Tq = Tk")

    with c.case("works for B = 1 and for a single query"):
        run(randn(1, Tq, D, seed=56), randn(1, Tk, D, seed=57), "the scores for B = 1")
        run(randn(B, 1, D, seed=58), randn(B, Tk, D, seed=59), "the scores for Tq = 1")

    with c.case("leaves q and k unmodified; gradients flow to both"):
        q, k = randn(B, Tq, D, seed=60), randn(B, Tk, D, seed=61)
        before = snapshot(q=q, k=k)
        _run(fn, q, k)
        expect_unmodified(before, {"q": q, "k": k})
        probe = randn(B, Tq, Tk, seed=62)
        _expect_grads(fn, reference, [q, k], ["q", "k"], [0, 1], probe)
    return c.report()


def check_dot_scores(dot_scores) -> Report:
    return _check_dot_like("dot_scores", dot_scores, ref.dot_scores, False)


def check_scaled_dot_scores(scaled_dot_scores) -> Report:
    return _check_dot_like("scaled_dot_scores", scaled_dot_scores, ref.scaled_dot_scores, True)


# --- general_scores -------------------------------------------------------------------------

_GENERAL_ERROR_HINT = ("with a non-square W of shape (Dq, Dk) the shapes must chain as "
                       "q (B, Tq, Dq) @ W (Dq, Dk) @ kᵀ (B, Dk, Tk) — is W transposed, "
                       "or left out?")


def _general_diagnoses(q, k, W) -> dict:
    diag = {
        "the scores are divided by sqrt(Dk) (general scores have no scaling)":
            lambda: q @ W @ k.transpose(-2, -1) / math.sqrt(k.shape[-1]),
        "the scores are divided by sqrt(Dq) (general scores have no scaling)":
            lambda: q @ W @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]),
    }
    if W.shape[0] == W.shape[1]:
        diag["W is transposed (q Wᵀ kᵀ instead of q W kᵀ)"] = (
            lambda: q @ W.T @ k.transpose(-2, -1))
        diag["W is left out (these are plain dot scores)"] = lambda: q @ k.transpose(-2, -1)
        if q.shape[1] == k.shape[1]:
            diag["the output is transposed (k W qᵀ instead of q W kᵀ)"] = (
                lambda: (q @ W @ k.transpose(-2, -1)).transpose(-2, -1))
            diag["the output is transposed and W too (k Wᵀ qᵀ)"] = (
                lambda: k @ W.T @ q.transpose(-2, -1))
    return diag


def check_general_scores(general_scores) -> Report:
    c = Check("general_scores")
    B, Tq, Tk, Dq, Dk = 2, 3, 4, 5, 6  # non-square W: a transposed W cannot go unnoticed

    def run(q, k, W, what="the scores"):
        out = _run(general_scores, q.clone(), k.clone(), W.clone(), hint=_GENERAL_ERROR_HINT)
        out = _scores_shape(out, q.shape[0], q.shape[1], k.shape[1], what)
        return expect_close(out, ref.general_scores(q, k, W), what, atol=1e-4,
                            diagnoses=_general_diagnoses(q, k, W))

    with c.case("returns (B, Tq, Tk) for a non-square W (Dq != Dk)"):
        out = _run(general_scores, randn(B, Tq, Dq, seed=70), randn(B, Tk, Dk, seed=71),
                   randn(Dq, Dk, seed=72), hint=_GENERAL_ERROR_HINT)
        _scores_shape(out, B, Tq, Tk, "the scores")

    with c.case("matches q W kᵀ for a non-square W", weight=2):
        for seed in (73, 74):
            run(randn(B, Tq, Dq, seed=seed), randn(B, Tk, Dk, seed=seed + 10),
                randn(Dq, Dk, seed=seed + 20, scale=0.5))

    with c.case("matches q W kᵀ for a square, non-symmetric W with Tq = Tk"):
        run(randn(B, 4, 4, seed=75), randn(B, 4, 4, seed=76), randn(4, 4, seed=77),
            "the scores for a square W")

    with c.case("works for B = 1 and a single query", weight=0.5):
        W = randn(Dq, Dk, seed=78)
        run(randn(1, Tq, Dq, seed=79), randn(1, Tk, Dk, seed=80), W, "the scores for B = 1")
        run(randn(B, 1, Dq, seed=81), randn(B, Tk, Dk, seed=82), W, "the scores for Tq = 1")

    with c.case("leaves its inputs unmodified; gradients flow to q, k and W"):
        q, k, W = randn(B, Tq, Dq, seed=83), randn(B, Tk, Dk, seed=84), randn(Dq, Dk, seed=85)
        before = snapshot(q=q, k=k, W=W)
        _run(general_scores, q, k, W, hint=_GENERAL_ERROR_HINT)
        expect_unmodified(before, {"q": q, "k": k, "W": W})
        probe = randn(B, Tq, Tk, seed=86)
        _expect_grads(general_scores, ref.general_scores, [q, k, W], ["q", "k", "W"],
                      [0, 1, 2], probe, hint=_GENERAL_ERROR_HINT)
    return c.report()


# --- additive_scores ------------------------------------------------------------------------

_ADDITIVE_BROADCAST_HINT = (
    "q W_q has shape (B, Tq, Dh) and k W_k has shape (B, Tk, Dh): they do not broadcast when "
    "Tq != Tk — unsqueeze them to (B, Tq, 1, Dh) and (B, 1, Tk, Dh) so that every query "
    "meets every key")


def _additive_diagnoses(q, k, W_q, W_k, v) -> dict:
    qp, kp = q @ W_q, k @ W_k
    B, Tq, Dh = qp.shape
    Tk = kp.shape[1]
    pre = qp.unsqueeze(2) + kp.unsqueeze(1)
    diag = {
        "tanh is missing": lambda: pre @ v,
        "tanh is applied after the product with v instead of before":
            lambda: torch.tanh(pre @ v),
        "ReLU is used instead of tanh": lambda: torch.relu(pre) @ v,
        "sigmoid is used instead of tanh": lambda: torch.sigmoid(pre) @ v,
        "repeat + reshape pairs the wrong queries with keys (use unsqueeze to broadcast)":
            lambda: torch.tanh(qp.repeat(1, Tk, 1).reshape(B, Tq, Tk, Dh)
                               + kp.repeat(1, Tq, 1).reshape(B, Tq, Tk, Dh)) @ v,
        "the scores are divided by sqrt(Dh) (additive scores have no scaling)":
            lambda: torch.tanh(pre) @ v / math.sqrt(Dh),
    }
    if Tq == Tk:
        diag["the unsqueezes are swapped: the output is (keys, queries), i.e. transposed"] = (
            lambda: torch.tanh(qp.unsqueeze(1) + kp.unsqueeze(2)) @ v)
    return diag


def _additive_shape(out, B, Tq, Tk, what):
    out = as_tensor(out, what)
    if tuple(out.shape) == (B, Tk, Tq) and Tq != Tk:
        raise CheckFailed(f"{what} has shape {(B, Tk, Tq)}, expected {(B, Tq, Tk)} — the "
                          "unsqueezes are swapped: q W_q needs the new axis at -2 and k W_k at "
                          "-3")
    if tuple(out.shape) != (B, Tq, Tk):
        hint = _SQUEEZE_HINT if 1 in (B, Tq) else _ADDITIVE_BROADCAST_HINT
        raise CheckFailed(f"{what} should have shape {(B, Tq, Tk)}, got {tuple(out.shape)} — "
                          + hint)
    return out


def check_additive_scores(additive_scores) -> Report:
    c = Check("additive_scores")
    B, Tq, Tk, Dq, Dk, Dh = 2, 3, 4, 5, 6, 7

    def params(seed):
        return (randn(Dq, Dh, seed=seed, scale=0.6), randn(Dk, Dh, seed=seed + 1, scale=0.6),
                randn(Dh, seed=seed + 2))

    def run(q, k, W_q, W_k, v, what="the scores"):
        out = _run(additive_scores, q.clone(), k.clone(), W_q.clone(), W_k.clone(), v.clone(),
                   hint=_ADDITIVE_BROADCAST_HINT)
        out = _additive_shape(out, q.shape[0], q.shape[1], k.shape[1], what)
        return expect_close(out, ref.additive_scores(q, k, W_q, W_k, v), what, atol=1e-5,
                            diagnoses=_additive_diagnoses(q, k, W_q, W_k, v))

    with c.case("returns (B, Tq, Tk) for Tq != Tk"):
        out = _run(additive_scores, randn(B, Tq, Dq, seed=90), randn(B, Tk, Dk, seed=91),
                   *params(92), hint=_ADDITIVE_BROADCAST_HINT)
        _additive_shape(out, B, Tq, Tk, "the scores")

    with c.case("matches vᵀ tanh(q W_q + k W_k) for every (query, key) pair", weight=2.5):
        for seed in (93, 94):
            run(randn(B, Tq, Dq, seed=seed), randn(B, Tk, Dk, seed=seed + 10), *params(seed + 20))

    with c.case("Tq = Tk: rows are queries, columns are keys"):
        run(randn(B, 4, Dq, seed=95), randn(B, 4, Dk, seed=96), *params(97),
            "the scores for Tq = Tk")

    with c.case("works for B = 1 and a single query", weight=0.5):
        run(randn(1, Tq, Dq, seed=98), randn(1, Tk, Dk, seed=99), *params(100),
            "the scores for B = 1")
        run(randn(B, 1, Dq, seed=101), randn(B, Tk, Dk, seed=102), *params(100),
            "the scores for Tq = 1")

    with c.case("leaves its inputs unmodified; gradients flow to q, k, W_q, W_k and v"):
        q, k = randn(B, Tq, Dq, seed=103), randn(B, Tk, Dk, seed=104)
        W_q, W_k, v = params(105)
        inputs = {"q": q, "k": k, "W_q": W_q, "W_k": W_k, "v": v}
        before = snapshot(**inputs)
        _run(additive_scores, *inputs.values(), hint=_ADDITIVE_BROADCAST_HINT)
        expect_unmodified(before, inputs)
        probe = randn(B, Tq, Tk, seed=106)
        _expect_grads(additive_scores, ref.additive_scores, list(inputs.values()), list(inputs),
                      range(5), probe, hint=_ADDITIVE_BROADCAST_HINT)
    return c.report()


# --- attend ---------------------------------------------------------------------------------
# Score functions the check hands to the student's attend (module-level, so they can be lent).


def _loud_dot_scores(q, k):
    """Dot products times 1000: scores of order 1e4, to test overflow."""
    return ref.dot_scores(q, k) * 1000.0


def _attend_outcomes(q, k, v, score_fn, mask) -> dict:
    """{a known mistake: () -> (out, weights) it produces}."""
    s = score_fn(q, k)
    d, Tq, Tk = q.shape[-1], q.shape[1], k.shape[1]

    def norm(scores, m=mask, dim=-1):
        return torch.softmax(scores, dim) if m is None else ref.masked_softmax(scores, m, dim)

    def pool(w):
        return w @ v, w

    scaled_again = "the scores are divided by sqrt(d) again (score_fn already returns the scores)"
    ignored = "score_fn is ignored: scaled dot products are used instead of score_fn(q, k)"
    out = {
        "score_fn is ignored: plain dot products q kᵀ are used instead of score_fn(q, k)":
            lambda: pool(norm(q @ k.transpose(-2, -1))),
        ignored: lambda: pool(norm(q @ k.transpose(-2, -1) / math.sqrt(d))),
        scaled_again: lambda: pool(norm(s / math.sqrt(d))),
        "the softmax is taken over the queries (dim=1) instead of the keys":
            lambda: pool(norm(s, dim=-2)),
    }
    if score_fn is ref.dot_scores:  # the two mistakes give the same numbers: name both
        out[f"{ignored}, or {scaled_again}"] = out.pop(ignored)
        del out[scaled_again]
    if mask is not None:
        m = torch.broadcast_to(mask, s.shape)
        out.update({
            "the mask is ignored": lambda: pool(torch.softmax(s, -1)),
            "the mask polarity is reversed (True must mean 'may attend', False 'blocked')":
                lambda: pool(ref.masked_softmax(s, ~m)),
            "the mask is applied after the softmax without renormalising the weights":
                lambda: pool(torch.softmax(s, -1) * m),
            "masked scores are filled with a finite value (such as -1e9) and the weights are "
            "not zeroed, so a query with no visible key gets uniform weights instead of 0s":
                lambda: pool(torch.softmax(s.masked_fill(~m, -1e9), -1)),
        })
    if Tq == Tk:
        out["the values are pooled with the transposed weights (a sum over the queries)"] = (
            lambda: (norm(s).transpose(-2, -1) @ v, norm(s)))
    return out


_ATTEND_HINT = ("attend computes scores = score_fn(q, k) (B, Tq, Tk), softmax over the keys "
                "(masked where the mask is False), then the weighted sum of the values")


def _attend(attend, q, k, v, score_fn, mask, what):
    B, Tq, Tk, Dv = q.shape[0], q.shape[1], k.shape[1], v.shape[2]
    atol = _f32_atol(score_fn(q, k), base=1e-5)
    got = _run(attend, q.clone(), k.clone(), v.clone(), lend(score_fn),
               None if mask is None else mask.clone(), hint=_ATTEND_HINT)
    out, weights = as_pair(got, "attend")
    squeeze = _SQUEEZE_HINT if 1 in (B, Tq) else ""
    weights = as_tensor(weights, "the weights")
    if tuple(weights.shape) == (B, Tk, Tq) and Tq != Tk:
        raise CheckFailed(f"the weights {what} have shape {(B, Tk, Tq)}, expected "
                          f"{(B, Tq, Tk)}: one row per query, one column per key")
    weights = expect_shape(weights, (B, Tq, Tk), f"the weights {what}", hint=squeeze)
    out = expect_shape(out, (B, Tq, Dv), f"out {what}",
                       hint=squeeze or "one weighted sum of the values per query")
    exp_out, exp_weights = ref.attend(q, k, v, score_fn, mask)
    outcomes = _attend_outcomes(q, k, v, score_fn, mask)
    if mask is not None:
        m = torch.broadcast_to(mask, exp_weights.shape)
        dead = ~m.any(-1, keepdim=True)
        if bool(dead.any()) and not bool(torch.isfinite(weights.detach()[dead.expand_as(m)]).all()):
            raise CheckFailed(
                f"the weights {what}: a query whose keys are all masked gets NaN — softmax of a "
                "row that is all -inf is 0/0; such a query must get weights of 0 (and out 0)")
        masked = weights.detach()[~m]
        if masked.numel() and bool((masked != 0).any()) and bool(torch.isfinite(masked).all()):
            for mistake, make in outcomes.items():
                if is_close(weights, make()[1], atol=atol, rtol=1e-3):
                    raise CheckFailed(f"the weights {what}: masked weights should be exactly 0; "
                                      f"it matches what you get when {mistake}")
            raise CheckFailed(f"the weights {what}: masked weights should be exactly 0, got "
                              f"values up to {float(masked.abs().max()):.3g}")
    expect_close(weights, exp_weights, f"the weights {what}", atol=atol,
                 diagnoses={k: (lambda f=f: f()[1]) for k, f in outcomes.items()})
    expect_close(out, exp_out, f"out {what}", atol=atol,
                 diagnoses={k: (lambda f=f: f()[0]) for k, f in outcomes.items()},
                 hint="out[b, i] = sum_j weights[b, i, j] * v[b, j]")
    return out, weights


def check_attend(attend) -> Report:
    c = Check("attend")
    B, Tq, Tk, D, Dv = 2, 3, 5, 4, 6

    def qkv(seed, tq=Tq, tk=Tk, b=B, scale=1.0):
        return (randn(b, tq, D, seed=seed, scale=scale),
                randn(b, tk, D, seed=seed + 1, scale=scale), randn(b, tk, Dv, seed=seed + 2))

    with c.case("returns (out (B, Tq, Dv), weights (B, Tq, Tk)) for Tq != Tk != Dv", weight=0.5):
        q, k, v = qkv(140)
        out, weights = as_pair(_run(attend, q, k, v, lend(ref.dot_scores), None,
                                    hint=_ATTEND_HINT), "attend")
        expect_shape(weights, (B, Tq, Tk), "the weights")
        expect_shape(out, (B, Tq, Dv), "out")

    with c.case("no mask: weights = softmax over the keys of score_fn(q, k), out = their "
                "weighted sum of v", weight=2):
        _attend(attend, *qkv(141), ref.dot_scores, None, "with dot scores")
        _attend(attend, *qkv(144, tq=4, tk=4), ref.scaled_dot_scores, None,
                "with scaled dot scores and Tq = Tk")

    with c.case("the scores come from score_fn (general and additive scores)"):
        W = randn(D, D, seed=147)
        _attend(attend, *qkv(148), functools.partial(ref.general_scores, W=W), None,
                "with general scores")
        W_q, W_k, w = randn(D, 7, seed=151), randn(D, 7, seed=152), randn(7, seed=153)
        _attend(attend, *qkv(154), functools.partial(ref.additive_scores, W_q=W_q, W_k=W_k, v=w),
                None, "with additive scores")

    with c.case("masks: a (B, 1, Tk) padding mask and a random (B, Tq, Tk) mask; masked "
                "weights are exactly 0", weight=2):
        pad = torch.tensor([[True, True, True, False, False], [True] * 5]).unsqueeze(1)
        _attend(attend, *qkv(157), ref.dot_scores, pad, "with a (B, 1, Tk) padding mask")
        _attend(attend, *qkv(160), ref.scaled_dot_scores, _random_mask(B, Tq, Tk, seed=163),
                "with a random (B, Tq, Tk) mask")

    with c.case("a query whose keys are all masked gets weights 0 and out 0, not NaN"):
        mask = _random_mask(B, Tq, Tk, seed=164)
        mask[0, 1] = False
        mask[1, 2] = False
        _attend(attend, *qkv(165), ref.dot_scores, mask, "with all-masked queries")

    with c.case("scores of order 1e4 do not overflow"):
        mask = _random_mask(B, Tq, Tk, seed=168)
        _attend(attend, *qkv(169, scale=3.0), _loud_dot_scores, mask, "for scores of order 1e4")

    with c.case("works for B = 1 and a single query", weight=0.5):
        _attend(attend, *qkv(172, b=1), ref.dot_scores, None, "for B = 1")
        _attend(attend, *qkv(175, tq=1), ref.dot_scores,
                _random_mask(B, 1, Tk, seed=178), "for Tq = 1")

    with c.case("leaves its inputs unmodified; gradients flow to q, k and v"):
        q, k, v = qkv(179)
        mask = _random_mask(B, Tq, Tk, seed=182)
        mask[1, 0] = False
        before = snapshot(q=q, k=k, v=v, mask=mask)
        _run(attend, q, k, v, lend(ref.dot_scores), mask, hint=_ATTEND_HINT)
        expect_unmodified(before, {"q": q, "k": k, "v": v, "mask": mask})
        probe = randn(B, Tq, Dv, seed=183)

        def student(q, k, v):
            return _run(attend, q, k, v, lend(ref.dot_scores), mask.clone(), hint=_ATTEND_HINT)

        def reference(q, k, v):
            return ref.attend(q, k, v, ref.dot_scores, mask)

        _expect_grads(student, reference, [q, k, v], ["q", "k", "v"], [0, 1, 2], probe)
    return c.report()


# --- nadaraya_watson ------------------------------------------------------------------------


def _nw_weight_diagnoses(x_query, x_train, h) -> dict:
    diff = x_query.double().unsqueeze(1) - x_train.double().unsqueeze(0)

    def sm(s, dim=1):
        return torch.softmax(s, dim).to(x_query.dtype)

    return {
        "the difference (x - x_i) is not squared (the kernel is missing the square)":
            lambda: sm(-diff / (2 * h**2)),
        "the distance |x - x_i| is not squared (the kernel is missing the square)":
            lambda: sm(-diff.abs() / (2 * h**2)),
        "the bandwidth is ignored (the kernel is missing the bandwidth h)":
            lambda: sm(-diff**2 / 2),
        "the squared distance is divided by 2h instead of 2h²": lambda: sm(-diff**2 / (2 * h)),
        "the squared distance is divided by h² instead of 2h² (the 2 is missing)":
            lambda: sm(-diff**2 / h**2),
        "the squared distance is multiplied by 2h² instead of divided":
            lambda: sm(-diff**2 * (2 * h**2)),
        "the minus sign is missing (far points get the largest weights)":
            lambda: sm(diff**2 / (2 * h**2)),
        "the softmax is taken over the queries (dim 0) instead of the training points":
            lambda: sm(-diff**2 / (2 * h**2), dim=0),
        "the weights are the unnormalised kernel values (no softmax)":
            lambda: torch.exp(-diff**2 / (2 * h**2)).to(x_query.dtype),
    }


_NW_ERROR_HINT = ("x_query (M,) and x_train (N,) must be broadcast against each other: "
                  "x_query[:, None] - x_train[None, :] has shape (M, N)")


def _nw(nadaraya_watson, x_query, x_train, y_train, h, hint=""):
    out = _run(nadaraya_watson, x_query.clone(), x_train.clone(), y_train.clone(), h,
               shape_hint=_NW_ERROR_HINT)
    y_hat, weights = as_pair(out, "nadaraya_watson")
    M, N = x_query.shape[0], x_train.shape[0]
    weights = as_tensor(weights, "weights")
    if tuple(weights.shape) == (N, M) and M != N:
        raise CheckFailed(f"weights have shape {(N, M)}, expected {(M, N)} — they are "
                          "transposed: one row per query, one column per training point")
    expect_shape(weights, (M, N), "weights")
    expect_shape(y_hat, (M,), "y_hat", hint="one prediction per query")
    return y_hat, weights


_UNDERFLOW_HINT = ("for a far query or a tiny bandwidth every exp(-(x - x_i)² / (2h²)) "
                   "underflows to 0 and 0/0 = NaN: normalise with a stable softmax (subtract "
                   "the row max first)")


def check_nadaraya_watson(nadaraya_watson) -> Report:
    c = Check("nadaraya_watson")
    M, N, h = 6, 9, 0.6
    x_train = torch.rand(N, generator=torch.Generator().manual_seed(130)) * 5
    y_train = torch.sin(x_train) + randn(N, seed=131, scale=0.2)
    x_query = torch.linspace(-0.5, 5.5, M)

    with c.case("returns (y_hat (M,), weights (M, N))"):
        _nw(nadaraya_watson, x_query, x_train, y_train, h)

    with c.case("weights = softmax over training points of -(x - x_i)² / (2h²)", weight=2.5):
        for hh, seed in ((h, 132), (1.7, 133)):
            xq = torch.rand(M, generator=torch.Generator().manual_seed(seed)) * 6 - 0.5
            _, weights = _nw(nadaraya_watson, xq, x_train, y_train, hh)
            _, expected = ref.nadaraya_watson(xq, x_train, y_train, hh)
            expect_close(weights, expected, f"weights (bandwidth {hh})", atol=1e-5,
                         diagnoses=_nw_weight_diagnoses(xq, x_train, hh))

    with c.case("y_hat is the weighted average of y_train"):
        y_hat, weights = _nw(nadaraya_watson, x_query, x_train, y_train, h)
        expected, w_ref = ref.nadaraya_watson(x_query, x_train, y_train, h)
        expect_close(y_hat, expected, "y_hat", atol=1e-5, diagnoses={
            "y_hat ignores the weights (a plain mean of y_train)":
                torch.full((M,), float(y_train.mean())),
            "y_hat averages x_train (the inputs) instead of y_train (the targets)":
                lambda: w_ref @ x_train,
        }, hint="y_hat[m] = sum_i weights[m, i] * y_train[i]")

    with c.case("a far query or a tiny bandwidth gives no NaN (stable softmax)", weight=1.5):
        far = torch.tensor([-50.0, 2.0, 100.0, 1e3])
        for hh in (0.5, 0.01):
            y_hat, weights = _nw(nadaraya_watson, far, x_train, y_train, hh)
            expect(bool(torch.isfinite(weights).all()) and bool(torch.isfinite(y_hat).all()),
                   f"bandwidth {hh}: weights or y_hat contain NaN or inf — {_UNDERFLOW_HINT}")
            expected_y, expected_w = ref.nadaraya_watson(far, x_train, y_train, hh)
            expect_close(weights, expected_w, f"weights for far queries (bandwidth {hh})",
                         atol=1e-5, hint=_UNDERFLOW_HINT,
                         diagnoses=_nw_weight_diagnoses(far, x_train, hh))
            expect_close(y_hat, expected_y, f"y_hat for far queries (bandwidth {hh})", atol=1e-4)

    with c.case("float64 inputs work; leaves inputs unmodified; gradients flow to y_train and "
                "x_query"):
        # float64 in: float64 or float32 back, compared at float32's precision
        xq64, xt64, yt64 = x_query.double(), x_train.double(), y_train.double()
        y_hat, weights = _nw(nadaraya_watson, xq64, xt64, yt64, h)
        expected_y, expected_w = ref.nadaraya_watson(xq64, xt64, yt64, h)
        expect_close(weights, expected_w, "weights for float64 inputs", atol=1e-5,
                     diagnoses=_nw_weight_diagnoses(xq64, xt64, h))
        expect_close(y_hat, expected_y, "y_hat for float64 inputs", atol=1e-5)
        before = snapshot(x_query=x_query, x_train=x_train, y_train=y_train)
        _run(nadaraya_watson, x_query, x_train, y_train, h)
        expect_unmodified(before, {"x_query": x_query, "x_train": x_train, "y_train": y_train})
        probe = randn(M, seed=134)
        _expect_grads(nadaraya_watson, ref.nadaraya_watson, [x_query, x_train, y_train, h],
                      ["x_query", "x_train", "y_train"], [2, 0], probe)
    return c.report()


CHECKS = {
    "hard_lookup": check_hard_lookup,
    "stable_softmax": check_stable_softmax,
    "masked_softmax": check_masked_softmax,
    "dot_scores": check_dot_scores,
    "scaled_dot_scores": check_scaled_dot_scores,
    "general_scores": check_general_scores,
    "additive_scores": check_additive_scores,
    "attend": check_attend,
    "nadaraya_watson": check_nadaraya_watson,
}
