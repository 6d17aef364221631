"""Checks for 07_transformer_decoder.

Every check judges the student's own objects by their behaviour. A module is built with the
contract's constructor arguments and the reference's (randomised) weights are loaded into it
by the contract's submodule names (``build_like``: nothing of the student's module is read
before, so lazily built layers work); then outputs, attention weights and gradients are
compared with the reference's, which runs PyTorch's ``nn.TransformerDecoderLayer`` and
``nn.MultiheadAttention``. Nothing of the student's is swapped, copied or type-tested: a check
only calls the student's objects and reads what they return (under grading they are proxies of
objects living in the student's process).

``TransformerDecoder`` is judged twice, as notebook 06 judges its encoder: its wiring, against
the contract's recipe applied to its *own* embedding, ``pe``, ``layers[i]`` and ``out``
(a mistake inside ``DecoderLayer`` is charged in that check, not again here), and as a whole,
against the reference with the same weights (so layers that share one set of weights lose the
points of that case, with a message naming them).

For ``greedy_generate``, the models handed to the student's function are lent (``lend``):
what the function did to them is read from the lent copies. A scripted stand-in model makes
every way of feeding it visible in the tokens; a real 2-layer Transformer with random weights
checks agreement with the reference.

When an answer is wrong, the failure message names the mistake whenever the answer matches
what a catalogued mistake computes (``diagnoses``).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.framework import (
    Check,
    CheckFailed,
    Report,
    as_tensor,
    build_like,
    expect,
    expect_close,
    expect_dtype,
    expect_shape,
    expect_unmodified,
    generator,
    is_close,
    lend,
    randn,
    seeded,
    snapshot,
)
from attn_grader.nb07_transformer_decoder import reference as ref

PAD, SOS, EOS = ref.PAD, ref.SOS, ref.EOS

# --- shared machinery -------------------------------------------------------------------


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


def as_tuple(value, n: int, what: str) -> tuple:
    if type(value) is not tuple or len(value) != n:
        got = f"a tuple of length {len(value)}" if type(value) is tuple else type(value).__name__
        raise CheckFailed(f"{what} should return a tuple of {n} things, got {got}")
    return value


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
    """``expect_close`` whose diagnoses are ``(mistake, candidate or thunk)`` pairs (the same
    mistake may be listed with several candidates) and may contain NaN."""
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


@torch.no_grad()
def randomise(module: nn.Module, seed: int, scale: float = 0.5) -> nn.Module:
    """Random weights everywhere (LayerNorm gains and biases too), so that no mistake hides
    behind a default initialisation (gain 1, bias 0)."""
    g = generator(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g, dtype=p.dtype)
        if ".norm" in f".{name}" and name.endswith("weight"):
            p.copy_(1.0 + 0.3 * noise)
        elif p.dim() >= 2 and "embedding" not in name:
            p.copy_(noise * scale / math.sqrt(p.shape[1]) * 2)
        else:
            p.copy_(noise * scale)
    return module.eval()


def _padding(lengths: list[int], S: int) -> torch.Tensor:
    """(B, 1, S) bool, True at the real positions."""
    return (torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]).unsqueeze(1)


def _random_mask(B: int, Tq: int, Tk: int, seed: int, p: float = 0.35) -> torch.Tensor:
    """A (B, Tq, Tk) bool mask, different for every row, each row with one key at least."""
    mask = torch.rand(B, Tq, Tk, generator=generator(seed)) > p
    mask[..., 0] |= ~mask.any(-1)
    return mask


def _causal(T: int) -> torch.Tensor:
    return torch.ones(T, T, dtype=torch.bool).tril()


B1_HINT = "squeeze() drops every axis of size 1 (B = 1 or T = 1); index or squeeze(dim) instead"


def _with_hint(fn, hint: str):
    try:
        return fn()
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} — {hint}") from None
    except NotImplementedError:
        raise
    except Exception as exc:
        raise CheckFailed(f"raised {type(exc).__name__}: {_first_line(exc)} — {hint}") from None


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


def _mismatch(a, b) -> str:
    return f"max abs difference {float((a.double() - b.double()).abs().max()):.3g}"


# --- decoder_self_mask ------------------------------------------------------------------


def _mask_diagnoses(lengths: torch.Tensor, T: int):
    lengths = lengths.reshape(-1)
    pos = torch.arange(T)
    causal = pos[None, :] <= pos[:, None]                    # [t, s]: s <= t
    key = pos[None, :] < lengths[:, None]                    # (B, T)
    full = causal[None] & key[:, None]
    B = lengths.shape[0]
    return [
        ("the causal part is inverted (True above the diagonal: every query sees the future and "
         "not the past)", (pos[None, :] >= pos[:, None])[None] & key[:, None]),
        ("the whole mask is inverted (True must mean 'may attend')", ~full),
        ("the causal mask is off by one: query t may also attend to key t + 1 (use s <= t, "
         "tril(), not tril(1))", (pos[None, :] <= pos[:, None] + 1)[None] & key[:, None]),
        ("the causal mask is off by one: query t may not attend to itself (use s <= t, tril(), "
         "not tril(-1))", (pos[None, :] < pos[:, None])[None] & key[:, None]),
        ("the padding of the target is ignored (only the causal part is there: keys at "
         "positions >= tgt_lengths[b] must be blocked)", causal[None].expand(B, T, T)),
        ("the causal part is missing (only padding is there: key s must also satisfy s <= t)",
         key[:, None].expand(B, T, T)),
        ("the padding blocks query rows instead of key columns (a PAD position may still "
         "attend; what it must not be is attended to)", causal[None] & key[:, :, None]),
        ("the padding blocks the query rows as well as the key columns (the contract masks "
         "keys only: rows of PAD queries keep their causal keys below the length)",
         full & key[:, :, None]),
        ("the padding is off by one: key s = tgt_lengths[b] is allowed too (use s < length)",
         causal[None] & (pos[None, :] <= lengths[:, None])[:, None]),
    ]


def _expect_mask(decoder_self_mask, lengths, T, what, hint=""):
    expected = ref.decoder_self_mask(lengths, T)
    out = run(decoder_self_mask, lengths.clone(), T, hint=hint)
    out = as_tensor(out, what)
    B = lengths.shape[0]
    shape_hint = ""
    if tuple(out.shape) == (T, T):
        shape_hint = "the batch axis is missing: one (T, T) mask per sequence, (B, T, T)"
    elif tuple(out.shape) == (B, 1, T):
        shape_hint = ("this is a padding mask only (B, 1, T); combine it with the causal (T, T) "
                      "mask into (B, T, T)")
    elif tuple(out.shape) == (B, T) or tuple(out.shape) == (T,):
        shape_hint = "one (T, T) mask per sequence: (B, T, T)"
    elif hint:
        shape_hint = hint
    expect_shape(out, (B, T, T), what, hint=shape_hint)
    if out.dtype != torch.bool:
        raise CheckFailed(f"{what} should have dtype torch.bool, got {out.dtype} — comparisons "
                          "(<, <=) and & give bool tensors; do not convert to int or float")
    return expect_match(out, expected, what, diagnoses=_mask_diagnoses(lengths, T))


def check_decoder_self_mask(decoder_self_mask) -> Report:
    c = Check("decoder_self_mask")

    with c.case("returns a (B, T, T) bool tensor"):
        out = as_tensor(run(decoder_self_mask, torch.tensor([4, 2, 3]), 5),
                        "decoder_self_mask(tgt_lengths (3,), 5)")
        expect_shape(out, (3, 5, 5), "decoder_self_mask(tgt_lengths (3,), 5)",
                     hint="one (T, T) mask per sequence")
        expect_dtype(out, torch.bool, "decoder_self_mask(tgt_lengths (3,), 5)")

    with c.case("causal: with every length equal to T, query t may attend to key s iff s <= t",
                weight=1.5):
        _expect_mask(decoder_self_mask, torch.tensor([6, 6]), 6, "the mask for lengths [6, 6]")
        _expect_mask(decoder_self_mask, torch.tensor([3, 3, 3]), 3,
                     "the mask for lengths [3, 3, 3]")

    with c.case("padding: keys at positions >= tgt_lengths[b] are blocked for every query, "
                "together with the causal part", weight=1.5):
        _expect_mask(decoder_self_mask, torch.tensor([5, 2, 3, 1]), 5,
                     "the mask for lengths [5, 2, 3, 1]")
        g = generator(7)
        lengths = torch.randint(1, 8, (6,), generator=g)
        _expect_mask(decoder_self_mask, lengths, 7,
                     f"the mask for lengths {lengths.tolist()} and T = 7")

    with c.case("a batch of one, T = 1, lengths shorter than T; tgt_lengths is not modified"):
        _expect_mask(decoder_self_mask, torch.tensor([3]), 4, "the mask for lengths [3], T = 4",
                     hint=B1_HINT)
        _expect_mask(decoder_self_mask, torch.tensor([1, 1]), 1, "the mask for T = 1",
                     hint=B1_HINT)
        lengths = torch.tensor([4, 2, 6])
        before = snapshot(tgt_lengths=lengths)
        run(decoder_self_mask, lengths, 6)
        expect_unmodified(before, {"tgt_lengths": lengths})
    return c.report()


# --- DecoderLayer -----------------------------------------------------------------------

_LAYER_NAMES = ("DecoderLayer needs self_attn and cross_attn (MultiHeadAttention), ffn "
                "(FeedForward), norm1, norm2 and norm3 (nn.LayerNorm(d_model))")


def layer_variant(L, y, memory, self_mask, memory_mask, kind):
    """A decoder layer wired the way a mistake wires it, from L's (reference) parts.
    Returns (out, self_weights, cross_weights)."""
    n1, n2, n3 = L.norm1, L.norm2, L.norm3
    s_mask = None if kind == "self_mask_ignored" else self_mask
    m_mask = None if kind == "memory_mask_ignored" else memory_mask

    def sa(h):
        return L.self_attn(h, h, h, s_mask)

    def ca(q, kv=memory):
        return L.cross_attn(q, kv, kv, m_mask)

    if kind == "pre_ln":
        a, sw = sa(n1(y))
        h1 = y + a
        c, cw = ca(n2(h1))
        h2 = h1 + c
        return h2 + L.ffn(n3(h2)), sw, cw
    if kind == "norm_inside":
        a, sw = sa(y)
        h1 = y + n1(a)
        c, cw = ca(h1)
        h2 = h1 + n2(c)
        return h2 + n3(L.ffn(h2)), sw, cw
    if kind == "cross_before_self":
        c, cw = ca(y)
        h1 = n1(y + c)
        a, sw = sa(h1)
        h2 = n2(h1 + a)
        return n3(h2 + L.ffn(h2)), sw, cw
    if kind == "cross_self_kv":
        a, sw = sa(y)
        h1 = n1(y + a)
        c, cw = L.cross_attn(h1, h1, h1, s_mask)
        h2 = n2(h1 + c)
        return n3(h2 + L.ffn(h2)), sw, cw
    a, sw = sa(y)
    h1 = n1(a) if kind == "no_res_self" else n1(y + a)
    q = y if kind == "cross_on_input" else h1
    c, cw = ca(q)
    if kind == "no_res_cross":
        h2 = n2(c)
    elif kind == "cross_residual_input":
        h2 = n2(y + c)
    else:
        h2 = n2(h1 + c)
    f_in = h1 if kind == "ffn_on_h1" else h2
    if kind == "no_res_ffn":
        out = n3(L.ffn(f_in))
    else:
        out = n3(h2 + L.ffn(f_in))
    return out, sw, cw


def layer_with_norms(L, y, memory, self_mask, memory_mask, norms):
    """Post-LN with the three norms in another order (norms = names for sublayers 1, 2, 3)."""
    n = [getattr(L, name) for name in norms]
    a, sw = L.self_attn(y, y, y, self_mask)
    h1 = n[0](y + a)
    c, cw = L.cross_attn(h1, memory, memory, memory_mask)
    h2 = n[1](h1 + c)
    return n[2](h2 + L.ffn(h2)), sw, cw


_LAYER_MISTAKES = [
    ("pre-LN is used (y + sublayer(norm(y))) instead of post-LN (norm(y + sublayer(y)))",
     "pre_ln"),
    ("LayerNorm is applied to the sublayer output only (y + norm(sublayer(y)))", "norm_inside"),
    ("the residual connection around self-attention is missing (norm1(self_attn(y)) instead of "
     "norm1(y + self_attn(y)))", "no_res_self"),
    ("the residual connection around cross-attention is missing (norm2(cross_attn(h1, memory)) "
     "instead of norm2(h1 + cross_attn(h1, memory)))", "no_res_cross"),
    ("the residual around cross-attention adds the layer's input y instead of h1",
     "cross_residual_input"),
    ("the residual connection around the feed-forward sublayer is missing (norm3(ffn(h2)) "
     "instead of norm3(h2 + ffn(h2)))", "no_res_ffn"),
    ("cross-attention is fed the decoder states as keys and values (it must read the "
     "encoder's memory: cross_attn(h1, memory, memory, memory_mask))", "cross_self_kv"),
    ("cross-attention's queries come from the layer's input y instead of h1, the output of the "
     "self-attention sublayer", "cross_on_input"),
    ("the feed-forward sublayer reads h1 (after self-attention) instead of h2 (after "
     "cross-attention)", "ffn_on_h1"),
    ("cross-attention comes before self-attention (the order is self-attention, "
     "cross-attention, feed-forward)", "cross_before_self"),
    ("self_mask is not passed to self-attention (the decoder sees the future)",
     "self_mask_ignored"),
    ("memory_mask is not passed to cross-attention (the decoder attends to the source's PAD "
     "positions)", "memory_mask_ignored"),
]

_NORM_ORDERS = [
    ("one LayerNorm is shared by the sublayers (norm1 used three times; norm2 and norm3 never)",
     ("norm1", "norm1", "norm1")),
    ("one LayerNorm is shared by two sublayers (norm1 used twice)", ("norm1", "norm1", "norm3")),
    ("one LayerNorm is shared by two sublayers (norm2 used twice)", ("norm1", "norm2", "norm2")),
    ("one LayerNorm is shared by two sublayers (norm1 used twice)", ("norm1", "norm2", "norm1")),
    ("the norms are in the wrong order (norm1 after self-attention, norm2 after "
     "cross-attention, norm3 after the feed-forward sublayer)", ("norm2", "norm1", "norm3")),
    ("the norms are in the wrong order (norm1 after self-attention, norm2 after "
     "cross-attention, norm3 after the feed-forward sublayer)", ("norm1", "norm3", "norm2")),
    ("the norms are in the wrong order (norm1 after self-attention, norm2 after "
     "cross-attention, norm3 after the feed-forward sublayer)", ("norm3", "norm2", "norm1")),
    ("the norms are in the wrong order (norm1 after self-attention, norm2 after "
     "cross-attention, norm3 after the feed-forward sublayer)", ("norm2", "norm3", "norm1")),
    ("the norms are in the wrong order (norm1 after self-attention, norm2 after "
     "cross-attention, norm3 after the feed-forward sublayer)", ("norm3", "norm1", "norm2")),
]


def _layer_diagnoses(L, y, memory, self_mask, memory_mask, part: int):
    cache: dict = {}

    def thunk(key, fn):
        def compute():
            if key not in cache:
                with torch.no_grad():
                    cache[key] = fn()
            return cache[key][part]
        return compute

    out = []
    for text, kind in _LAYER_MISTAKES:
        if kind == "self_mask_ignored" and self_mask is None:
            continue
        if kind == "memory_mask_ignored" and memory_mask is None:
            continue
        if kind == "cross_self_kv" and y.shape[1] != memory.shape[1] and part == 2:
            continue
        out.append((text, thunk(kind, lambda k=kind: layer_variant(L, y, memory, self_mask,
                                                                   memory_mask, k))))
    for text, norms in _NORM_ORDERS:
        out.append((text, thunk(norms, lambda n=norms: layer_with_norms(L, y, memory, self_mask,
                                                                       memory_mask, n))))
    return out


def _weights_hint(got: tuple, B, H, T, S, which: str) -> str:
    if which == "cross" and got == (B, H, T, T) and T != S:
        return ("the cross-attention weights are (T, T): cross-attention must use the memory as "
                "keys and values (Tk = S)")
    if which == "self" and got == (B, H, T, S) and T != S:
        return "self_weights and cross_weights are returned in the wrong order"
    if which == "cross" and got == (B, H, T, T):
        return "self_weights and cross_weights are returned in the wrong order?"
    if got in ((B, T, T), (B, T, S)):
        return "keep one map per head: (B, H, Tq, Tk), do not average over the heads"
    return ""


def _expect_layer(student, reference, y, memory, self_mask, memory_mask, what, *, atol=1e-4,
                  rtol=1e-4, hints=None):
    B, T, _ = y.shape
    S = memory.shape[1]
    H = reference.self_attn.num_heads
    with torch.no_grad():
        got = as_tuple(run(student, y.clone(), memory.clone(),
                           None if self_mask is None else self_mask.clone(),
                           None if memory_mask is None else memory_mask.clone(), hints=hints),
                       3, "DecoderLayer.forward")
        expected = reference(y, memory, self_mask, memory_mask)
    for part, which in ((1, "self"), (2, "cross")):
        w = as_tensor(got[part], f"{which}_weights {what}")
        shape = (B, H, T, T) if which == "self" else (B, H, T, S)
        expect_shape(w, shape, f"{which}_weights {what}",
                     hint=_weights_hint(tuple(w.shape), B, H, T, S, which))
    expect_match(got[0], expected[0], f"the output {what}", atol=atol, rtol=rtol,
                 diagnoses=_layer_diagnoses(reference, y, memory, self_mask, memory_mask, 0))
    expect_match(got[1], expected[1], f"self_weights {what}", atol=atol,
                 diagnoses=_layer_diagnoses(reference, y, memory, self_mask, memory_mask, 1),
                 hint="return the weights of self-attention on the layer's input y")
    expect_match(got[2], expected[2], f"cross_weights {what}", atol=atol,
                 diagnoses=_layer_diagnoses(reference, y, memory, self_mask, memory_mask, 2),
                 hint="return the weights of cross-attention (queries h1, keys the memory)")


_LAYER_HINTS = {
    "size of tensor": "a mask does not fit the scores it guards: self_mask goes to self-attention "
                      "(T x T), memory_mask to cross-attention (T x S)",
    "must match": "a mask does not fit the scores it guards: self_mask goes to self-attention "
                  "(T x T), memory_mask to cross-attention (T x S)",
}

D, HEADS, FF = 12, 3, 20


def _ref_layer(seed: int, args=(D, HEADS, FF)):
    return randomise(seeded(lambda: ref.DecoderLayer(*args), seed), seed)


def _build_layer(cls, reference, args=(D, HEADS, FF)):
    return build_like(cls, reference, args, "DecoderLayer")


def check_DecoderLayer(DecoderLayer) -> Report:
    c = Check("DecoderLayer")
    B, T, S = 2, 5, 7
    reference = _ref_layer(70)
    y, memory = randn(B, T, D, seed=71), randn(B, S, D, seed=72)

    with c.case("builds with self_attn, cross_attn, ffn, norm1, norm2, norm3 and returns (y "
                "(B, T, D), self_weights (B, H, T, T), cross_weights (B, H, T, S))"):
        layer = _build_layer(DecoderLayer, reference)
        out = as_tuple(run(layer, y.clone(), memory.clone(), hints=_LAYER_HINTS), 3,
                       "DecoderLayer.forward")
        expect_shape(out[0], (B, T, D), "the output y")
        for part, which, shape in ((1, "self", (B, HEADS, T, T)), (2, "cross", (B, HEADS, T, S))):
            w = as_tensor(out[part], f"{which}_weights")
            expect_shape(w, shape, f"{which}_weights",
                         hint=_weights_hint(tuple(w.shape), B, HEADS, T, S, which))

    with c.case("post-LN: norm1(y + self_attn(y)), norm2(h1 + cross_attn(h1, memory)), "
                "norm3(h2 + ffn(h2)), as nn.TransformerDecoderLayer(norm_first=False)",
                weight=3):
        layer = _build_layer(DecoderLayer, reference)
        _expect_layer(layer, reference, y, memory, None, None, "without masks (T = 5, S = 7)",
                      hints=_LAYER_HINTS)
        r2 = _ref_layer(73, (8, 2, 16))
        l2 = _build_layer(DecoderLayer, r2, (8, 2, 16))
        _expect_layer(l2, r2, randn(3, 4, 8, seed=74), randn(3, 3, 8, seed=75), None, None,
                      "for d_model = 8, 2 heads, T = 4, S = 3", hints=_LAYER_HINTS)

    with c.case("self-attention uses self_mask: a (T, T) causal mask and a (B, T, T) causal + "
                "padding mask", weight=1.5):
        layer = _build_layer(DecoderLayer, reference)
        _expect_layer(layer, reference, y, memory, _causal(T), None, "with a (T, T) causal mask",
                      hints=_LAYER_HINTS)
        _expect_layer(layer, reference, y, memory, ref.decoder_self_mask(torch.tensor([5, 3]), T),
                      None, "with a (B, T, T) causal and padding mask", hints=_LAYER_HINTS)

    with c.case("cross-attention uses memory_mask, the (B, 1, S) padding mask of the source",
                weight=1.5):
        layer = _build_layer(DecoderLayer, reference)
        _expect_layer(layer, reference, y, memory, None, _padding([7, 4], S),
                      "with a (B, 1, S) memory mask", hints=_LAYER_HINTS)
        _expect_layer(layer, reference, y, memory, _causal(T), _padding([3, 6], S),
                      "with both masks", hints=_LAYER_HINTS)

    with c.case("random boolean masks; a query with nothing to attend to gets weights 0 and no "
                "NaN"):
        layer = _build_layer(DecoderLayer, reference)
        self_mask = _random_mask(B, T, T, seed=76)
        memory_mask = _random_mask(B, T, S, seed=77)
        _expect_layer(layer, reference, y, memory, self_mask, memory_mask,
                      "with random (B, T, T) and (B, T, S) masks", hints=_LAYER_HINTS)
        self_mask[0, 2] = False
        memory_mask[1, 3] = False
        memory_mask[0, 2] = False
        _expect_layer(layer, reference, y, memory, self_mask, memory_mask,
                      "with all-False mask rows", hints=_LAYER_HINTS)

    with c.case("a batch of one, T = 1, large inputs; in eval() mode dropout changes nothing"):
        layer = _build_layer(DecoderLayer, reference)
        _with_hint(lambda: _expect_layer(layer, reference, y[:1], memory[:1], _causal(T),
                                         _padding([5], S), "for a batch of one"), B1_HINT)
        _with_hint(lambda: _expect_layer(layer, reference, y[:, :1], memory, _causal(1),
                                         _padding([7, 2], S), "for T = 1"), B1_HINT)
        _expect_layer(layer, reference, 30.0 * y, 30.0 * memory, _causal(T), _padding([6, 3], S),
                      "for inputs of size about 30 (scores in the thousands)", atol=1e-3,
                      rtol=1e-3)
        try:
            ld = build_like(DecoderLayer, reference, (D, HEADS, FF, 0.5), "DecoderLayer")
        except CheckFailed as exc:
            raise CheckFailed(f"{exc} (DecoderLayer must accept dropout as its fourth "
                              "argument)") from None
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            # two calls under two different RNG states (active dropout draws two masks)
            torch.manual_seed(101)
            a = as_tuple(run(ld, y.clone(), memory.clone()), 3, "DecoderLayer.forward")[0]
            torch.manual_seed(202)
            b = as_tuple(run(ld, y.clone(), memory.clone()), 3, "DecoderLayer.forward")[0]
        expect(is_close(as_tensor(a, "out"), as_tensor(b, "out"), 0, 0),
               "two calls in eval() mode differ: dropout is active in eval mode — use "
               "nn.Dropout modules")
        _expect_layer(ld, reference, y, memory, _causal(T), None,
                      "in eval mode with dropout=0.5")

    with c.case("leaves its inputs unmodified; gradients reach y, memory and every norm"):
        layer = _build_layer(DecoderLayer, reference)
        yg, mg = y.clone().requires_grad_(True), memory.clone().requires_grad_(True)
        self_mask = ref.decoder_self_mask(torch.tensor([5, 4]), T)
        memory_mask = _padding([7, 5], S)
        sm, mm = self_mask.clone(), memory_mask.clone()
        before = snapshot(y=y, memory=memory, self_mask=self_mask, memory_mask=memory_mask)
        out = as_tuple(run(layer, yg, mg, sm, mm), 3, "DecoderLayer.forward")
        expect_unmodified(before, {"y": yg, "memory": mg, "self_mask": sm, "memory_mask": mm})
        out = as_tensor(out[0], "the output")
        expect(out.requires_grad, "the output is cut off from autograd (detached, numpy, or "
               "computed under torch.no_grad()?)")
        g = randn(B, T, D, seed=78)
        (out * g).sum().backward()
        r = copy.deepcopy(reference)
        yr, mr = y.clone().requires_grad_(True), memory.clone().requires_grad_(True)
        (r(yr, mr, self_mask, memory_mask)[0] * g).sum().backward()
        expect(yg.grad is not None, "no gradient reached y")
        expect(mg.grad is not None, "no gradient reached memory: cross-attention must read it")
        grads, want = grads_of(layer), grads_of(r)
        names = ("norm1.weight", "norm2.weight", "norm3.weight", "self_attn.w_q.weight",
                 "cross_attn.w_k.weight", "ffn.linear1.weight")
        for name in names:
            expect(grads.get(name) is not None, f"no gradient reached {name}")
        expect_close(yg.grad, yr.grad, "the gradient with respect to y", atol=1e-4)
        expect_close(mg.grad, mr.grad, "the gradient with respect to memory", atol=1e-4)
        for name in names:
            expect_close(grads[name], want[name], f"the gradient with respect to {name}",
                         atol=1e-4)
    return c.report()


# --- TransformerDecoder -----------------------------------------------------------------

_DEC_NAMES = ("TransformerDecoder needs embedding (nn.Embedding(vocab_size, d_model, "
              "padding_idx=0)), layers (nn.ModuleList of DecoderLayer), a non-persistent buffer "
              "pe and out (nn.Linear(d_model, vocab_size))")
_DEC_CALL = ("TransformerDecoder(vocab_size, d_model, num_heads, d_ff, num_layers, max_len)"
             ".forward(tgt (B, T), memory (B, S, D), self_mask=None, memory_mask=None) -> "
             "(logits (B, T, V), self_attentions: a list of (B, H, T, T), cross_attentions: a "
             "list of (B, H, T, S))")
_LAYERS_IFACE = ("the contract: a TransformerDecoder's layers[i] is a DecoderLayer, called as "
                 "layers[i](y, memory, self_mask, memory_mask) -> (y, self_weights, "
                 "cross_weights)")
_EMB_IFACE = ("the contract: embedding is nn.Embedding(vocab_size, d_model, padding_idx=0), "
              "called as embedding(tgt) -> (B, T, D)")
_OUT_IFACE = "the contract: out is nn.Linear(d_model, vocab_size), called as out(y)"


class DecoderParts:
    """A decoder's pieces (embedding, pe, layers[i], out), called or read through the
    interfaces the contract gives them. A ``pe`` that cannot be read as a (max_len, d_model)
    table is replaced by ``fallback_pe`` (the case about pe charges it)."""

    def __init__(self, dec, owner: str, d_model: int, num_heads: int, vocab_size: int,
                 fallback_pe):
        self.dec, self.owner = dec, owner
        self.D, self.H, self.V, self.fallback_pe = d_model, num_heads, vocab_size, fallback_pe

    def embed(self, tgt):
        tried = f"{self.owner}'s embedding(tgt)"
        sub = submodule(self.dec, "embedding", self.owner)
        return tensor_part(call_part(sub, (tgt,), tried, _EMB_IFACE), (*tgt.shape, self.D),
                           tried, _EMB_IFACE)

    def pe(self, T: int):
        try:
            pe = getattr(self.dec, "pe", None)
        except Exception:
            pe = None
        if type(pe) is torch.Tensor and pe.dim() == 3 and pe.shape[0] == 1:
            pe = pe[0]
        if type(pe) is not torch.Tensor or pe.dim() != 2 or pe.shape[1] != self.D \
                or pe.shape[0] < T:
            pe = self.fallback_pe
        return pe[:T]

    def layer(self, i: int, y, memory, self_mask, memory_mask):
        tried = f"{self.owner}'s layers[{i}](y, memory, self_mask, memory_mask)"
        layers = submodule(self.dec, "layers", self.owner)
        try:
            layer = layers[i]
        except Exception as exc:
            raise Interface(f"{self.owner}'s layers[{i}] could not be read: "
                            f"{type(exc).__name__}: {_first_line(exc)} ({_LAYERS_IFACE})"
                            ) from None
        res = call_part(layer, (y, memory, self_mask, memory_mask), tried, _LAYERS_IFACE)
        if type(res) is not tuple or len(res) != 3:
            raise Interface(f"{tried} returned {type(res).__name__}, not a triple (y, "
                            f"self_weights, cross_weights) ({_LAYERS_IFACE})")
        B, T, D = y.shape
        S = memory.shape[1]
        return (tensor_part(res[0], (B, T, D), f"{tried}[0]", _LAYERS_IFACE),
                tensor_part(res[1], (B, self.H, T, T), f"{tried}[1]", _LAYERS_IFACE),
                tensor_part(res[2], (B, self.H, T, S), f"{tried}[2]", _LAYERS_IFACE))

    def out(self, y):
        tried = f"{self.owner}'s out(y)"
        sub = submodule(self.dec, "out", self.owner)
        B, T, _ = y.shape
        return tensor_part(call_part(sub, (y,), tried, _OUT_IFACE), (B, T, self.V), tried,
                           _OUT_IFACE)


def decoder_variant(P: DecoderParts, tgt, memory, self_mask, memory_mask, kind: str,
                    num_layers: int):
    """The decoder computed from the pieces ``P`` as the contract says (``ok``) or the way a
    mistake computes it. Returns (logits, self_attentions, cross_attentions)."""
    T, Dm = tgt.shape[1], P.D
    e, pe = P.embed(tgt), P.pe(T)
    y = {
        "no_scale": e + pe,
        "no_pos": e * math.sqrt(Dm),
        "scale_after": (e + pe) * math.sqrt(Dm),
        "divide": e / math.sqrt(Dm),
        "head_scale": e * math.sqrt(Dm // P.H) + pe,
    }.get(kind, e * math.sqrt(Dm) + pe)
    s_mask = None if kind == "self_mask_ignored" else self_mask
    m_mask = None if kind == "memory_mask_ignored" else memory_mask
    if kind == "builds_causal" and self_mask is None:
        s_mask = _causal(T)
    order = list(range(num_layers))
    if kind == "shared_layers":
        order = [num_layers - 1] * num_layers
    elif kind == "reversed_layers":
        order = order[::-1]
    sws, cws = [], []
    for i in order:
        y, sw, cw = P.layer(i, y, memory, s_mask, m_mask)
        sws.append(sw)
        cws.append(cw)
    logits = P.out(y)
    if kind == "softmax":
        logits = logits.softmax(-1)
    return logits, sws, cws


_DEC_MISTAKES = [
    ("the embeddings are not multiplied by sqrt(d_model)", "no_scale"),
    ("the positional encoding is not added", "no_pos"),
    ("the sum embedding + positions is multiplied by sqrt(d_model) (only the embeddings are "
     "scaled)", "scale_after"),
    ("the embeddings are divided by sqrt(d_model) instead of multiplied", "divide"),
    ("the embeddings are scaled by sqrt(d_model / num_heads) instead of sqrt(d_model)",
     "head_scale"),
    ("the layers are applied in reverse order", "reversed_layers"),
    ("self_mask is not passed to the layers", "self_mask_ignored"),
    ("memory_mask is not passed to the layers", "memory_mask_ignored"),
    ("a causal mask is built inside forward when self_mask is None (the caller builds the "
     "mask; with self_mask=None nothing is masked)", "builds_causal"),
    ("the logits are passed through a softmax (return raw logits; the loss and argmax take "
     "them as they are)", "softmax"),
]


def _dec_diagnoses(P: DecoderParts, tgt, memory, self_mask, memory_mask, N: int):
    cache: dict = {}

    def thunk(kind):
        def compute():
            if kind not in cache:
                with torch.no_grad():
                    cache[kind] = decoder_variant(P, tgt, memory, self_mask, memory_mask, kind,
                                                  N)
            return cache[kind][0]
        return compute

    return [(text, thunk(kind)) for text, kind in _DEC_MISTAKES
            if not (kind == "self_mask_ignored" and self_mask is None)
            and not (kind == "memory_mask_ignored" and memory_mask is None)
            and not (kind == "builds_causal" and self_mask is not None)]


def _dec_outputs(student, tgt, memory, self_mask, memory_mask, N: int, H: int, V: int,
                 D: int, what: str):
    res = run(student, tgt.clone(), memory.clone(),
              None if self_mask is None else self_mask.clone(),
              None if memory_mask is None else memory_mask.clone(), hints=_LAYER_HINTS,
              hint=f"the contract: {_DEC_CALL}")
    logits, sws, cws = as_tuple(res, 3, "TransformerDecoder.forward")
    B, T = tgt.shape
    S = memory.shape[1]
    lg = as_tensor(logits, f"the logits {what}")
    if tuple(lg.shape) == (B, T, D) and D != V:
        raise CheckFailed(f"the logits {what} have shape {tuple(lg.shape)}, expected {(B, T, V)} "
                          "— the output projection out (nn.Linear(d_model, vocab_size)) is not "
                          "applied")
    lg = expect_shape(lg, (B, T, V), f"the logits {what}")
    lists = []
    for att, which, shape in ((sws, "self_attentions", (B, H, T, T)),
                              (cws, "cross_attentions", (B, H, T, S))):
        expect(type(att) in (list, tuple) and len(att) == N,
               f"{which} {what} should be a list with one tensor per layer ({N}), got "
               + (f"{len(att)} items" if type(att) in (list, tuple) else type(att).__name__))
        hint = ("self_attentions come first, then cross_attentions" if T != S else "")
        lists.append([expect_shape(a, shape, f"{which}[{i}] {what}", hint=hint)
                      for i, a in enumerate(att)])
    return lg, lists[0], lists[1]


def _same_decoding(got, want) -> bool:
    return is_close(got[0], want[0], 1e-4, 1e-4) and all(
        is_close(a, e, 1e-5, 1e-4) for i in (1, 2) for a, e in zip(got[i], want[i]))


def _expect_attention_list(got, expected, what: str, which: str, hint: str = ""):
    if all(is_close(a, e, 1e-5, 1e-4) for a, e in zip(got, expected)):
        return
    n = len(expected)
    if n > 1 and all(is_close(a, expected[-1], 1e-5, 1e-4) for a in got):
        raise CheckFailed(f"{which} {what}: the same layer's weights (the last layer's) are "
                          "listed for every layer — append each layer's weights inside the loop")
    if n > 1 and all(is_close(a, e, 1e-5, 1e-4) for a, e in zip(got, expected[::-1])):
        raise CheckFailed(f"{which} {what}: the layers' weights are listed in reverse order "
                          f"({which}[0] must be the first layer's)")
    for i, (a, e) in enumerate(zip(got, expected)):
        expect_close(a, e, f"{which}[{i}] {what}", atol=1e-5, hint=hint)


def _expect_dec(got, want, parts, tgt, memory, self_mask, memory_mask, N, what, problem=""):
    expect_match(got[0], want[0], f"the logits {what}", atol=1e-4, hint=problem,
                 diagnoses=_dec_diagnoses(parts, tgt, memory, self_mask, memory_mask, N))
    _expect_attention_list(got[1], want[1], what, "self_attentions", problem)
    _expect_attention_list(got[2], want[2], what, "cross_attentions", problem)


def _expect_decoder_wiring(student, reference, tgt, memory, self_mask, memory_mask, what):
    """The student's decoder against the contract's recipe: passes if it equals the reference,
    or the recipe applied to its own embedding, pe, layers and out."""
    N, D, V = len(reference.layers), reference.d_model, reference.out.out_features
    H = reference.layers[0].self_attn.num_heads
    with torch.no_grad():
        got = _dec_outputs(student, tgt, memory, self_mask, memory_mask, N, H, V, D, what)
        want = reference(tgt, memory, self_mask, memory_mask)
        if _same_decoding(got, want):
            return
        own = DecoderParts(student, "your TransformerDecoder", D, H, V, reference.pe)
        try:
            own_want = decoder_variant(own, tgt, memory, self_mask, memory_mask, "ok", N)
        except Interface as exc:
            problem = str(exc)
            parts = DecoderParts(reference, "the reference", D, H, V, reference.pe)
        else:
            if _same_decoding(got, own_want):
                return
            problem, parts, want = "", own, own_want
        _expect_dec(got, want, parts, tgt, memory, self_mask, memory_mask, N, what, problem)


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
                    "are one DecoderLayer listed twice ([DecoderLayer(...)] * num_layers, or "
                    "the same layer appended in the loop) — build a new DecoderLayer for each "
                    "layer (or copy.deepcopy a built one)")
        if same:
            parts = sorted({k.rsplit(".", 2)[0] if k.count(".") >= 2 else k.split(".")[0]
                            for k in same})
            return (f"the layers share part of their weights: layers.0 and layers.{i} hold "
                    f"the same {', '.join(parts)} — give each layer its own submodules")
    return ""


def _differing_piece(student, reference, tgt, memory, self_mask, memory_mask) -> str:
    """Which piece of the student's decoder (pe, embedding, a layer, out), holding the
    reference's weights, computes something else than the reference's ('' if none)."""
    N, D, V = len(reference.layers), reference.d_model, reference.out.out_features
    H = reference.layers[0].self_attn.num_heads
    shared = _shared_layers(student, N)
    if shared:
        return shared
    own = DecoderParts(student, "your TransformerDecoder", D, H, V, reference.pe)
    theirs = DecoderParts(reference, "the reference", D, H, V, reference.pe)
    T = tgt.shape[1]
    try:
        pe = own.pe(T)
        if not is_close(pe, reference.pe[:T], 1e-4, 0):
            return (f"its pe is not the sinusoidal encoding ({_mismatch(pe, reference.pe[:T])})"
                    " — see the case about pe")
        if not is_close(own.embed(tgt), theirs.embed(tgt), 1e-6, 1e-5):
            return "its embedding, holding the reference's weights, gives other vectors"
        y = theirs.embed(tgt) * math.sqrt(D) + reference.pe[:T]
        for i in range(N):
            got = own.layer(i, y, memory, self_mask, memory_mask)
            want = theirs.layer(i, y, memory, self_mask, memory_mask)
            if not all(is_close(a, b, 1e-4, 1e-4) for a, b in zip(got, want)):
                return (f"its layers[{i}], holding the reference's weights, does not compute "
                        f"the reference DecoderLayer ({_mismatch(got[0], want[0])}) — see the "
                        "DecoderLayer check")
            y = want[0]
        if not is_close(own.out(y), theirs.out(y), 1e-5, 1e-4):
            return "its out, holding the reference's weights, computes something else"
    except Interface as exc:
        return str(exc)
    return ""


def _expect_decoder_whole(student, reference, tgt, memory, self_mask, memory_mask, what):
    N, D, V = len(reference.layers), reference.d_model, reference.out.out_features
    H = reference.layers[0].self_attn.num_heads
    with torch.no_grad():
        got = _dec_outputs(student, tgt, memory, self_mask, memory_mask, N, H, V, D, what)
        want = reference(tgt, memory, self_mask, memory_mask)
        if _same_decoding(got, want):
            return
        piece = _differing_piece(student, reference, tgt, memory, self_mask, memory_mask)
        if piece:
            raise CheckFailed(f"the logits {what} do not match the reference decoder with the "
                              f"same weights: {piece}")
        parts = DecoderParts(reference, "the reference", D, H, V, reference.pe)
        _expect_dec(got, want, parts, tgt, memory, self_mask, memory_mask, N, what)


V_DEC, N_LAYERS, MAX_LEN = 11, 2, 16
_DEC_ARGS = (V_DEC, D, HEADS, FF, N_LAYERS, MAX_LEN)


def _ref_decoder(seed: int):
    R = randomise(seeded(lambda: ref.TransformerDecoder(*_DEC_ARGS), seed), seed)
    with torch.no_grad():
        R.embedding.weight[PAD].zero_()
    return R


def _build_decoder(cls, reference):
    try:
        return build_like(cls, reference, _DEC_ARGS, "TransformerDecoder")
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} — {_DEC_NAMES}") from None


def _pe_diagnoses(max_len: int, d_model: int):
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angles = position / 10000 ** (two_i / d_model)
    slow = position / 10000 ** (two_i / 2 / d_model)
    return [("sin and cos are concatenated ([sin | cos]) instead of interleaved (sin on even "
             "features, cos on odd ones)", torch.cat([angles.sin(), angles.cos()], -1).float()),
            ("the exponent uses i instead of 2i (10000^(i/d) instead of 10000^(2i/d))",
             torch.stack([slow.sin(), slow.cos()], -1).flatten(1).float())]


def check_TransformerDecoder(TransformerDecoder) -> Report:
    c = Check("TransformerDecoder")
    reference = _ref_decoder(80)
    B, T, S = 2, 6, 5
    tgt = torch.randint(3, V_DEC, (B, T), generator=generator(81))
    tgt[:, 0] = SOS
    tgt[1, 4:] = PAD
    memory = randn(B, S, D, seed=82)
    self_mask = ref.decoder_self_mask(torch.tensor([6, 4]), T)
    memory_mask = _padding([5, 3], S)

    def built():
        return _build_decoder(TransformerDecoder, reference)

    with c.case("builds with embedding, layers, pe, out and returns (logits (B, T, V), a list "
                "of (B, H, T, T), a list of (B, H, T, S))"):
        dec = built()
        try:
            n = len(dec.layers)
        except Exception as exc:
            raise CheckFailed(f"TransformerDecoder.layers could not be read ({type(exc).__name__}"
                              f": {_first_line(exc)}) — {_DEC_NAMES}") from None
        expect(n == N_LAYERS, f"TransformerDecoder(..., num_layers={N_LAYERS}, ...).layers has "
               f"{n} layers")
        with torch.no_grad():
            _dec_outputs(dec, tgt, memory, None, None, N_LAYERS, HEADS, V_DEC, D,
                         "without masks")

    with c.case("pe is a (max_len, d_model) non-persistent buffer holding the sinusoidal "
                "encoding", weight=0.5):
        dec = built()
        buffers = dict(dec.named_buffers())
        expect("pe" in buffers, "pe should be registered as a buffer "
               "(self.register_buffer('pe', ..., persistent=False))")
        expect("pe" not in dict(dec.state_dict()), "pe must not be saved in the state_dict: "
               "register it with persistent=False")
        expect_match(buffers["pe"], reference.pe, "pe", atol=1e-4, rtol=0,
                     diagnoses=_pe_diagnoses(MAX_LEN, D),
                     hint="use the given sinusoidal_positional_encoding(max_len, d_model)")

    with c.case("embeddings * sqrt(d_model) + positions, then its own layers in order, then "
                "out", weight=3):
        dec = built()
        _expect_decoder_wiring(dec, reference, tgt, memory, None, None, "without masks")
        t2 = torch.randint(3, V_DEC, (3, 4), generator=generator(83))
        _expect_decoder_wiring(dec, reference, t2, randn(3, 7, D, seed=84), None, None,
                               "for B = 3, T = 4, S = 7")

    with c.case("passes self_mask and memory_mask to every layer; self_mask=None masks nothing",
                weight=1.5):
        dec = built()
        _expect_decoder_wiring(dec, reference, tgt, memory, self_mask, memory_mask,
                               "with a (B, T, T) self mask and a (B, 1, S) memory mask")
        _expect_decoder_wiring(dec, reference, tgt, memory, _causal(T), None,
                               "with a (T, T) causal mask")
        _expect_decoder_wiring(dec, reference, tgt, memory, None, memory_mask,
                               "with self_mask=None and a memory mask")

    with c.case("each layer has its own weights: with the reference's weights loaded, it "
                "equals the reference decoder", weight=1.5):
        dec = built()
        _expect_decoder_whole(dec, reference, tgt, memory, None, None, "without masks")
        _expect_decoder_whole(dec, reference, tgt, memory, self_mask, memory_mask,
                              "with both masks")

    with c.case("a batch of one and T = 1"):
        dec = built()
        _with_hint(lambda: _expect_decoder_wiring(dec, reference, tgt[:1], memory[:1],
                                                  self_mask[:1], memory_mask[:1],
                                                  "for a batch of one"), B1_HINT)
        _with_hint(lambda: _expect_decoder_wiring(dec, reference, tgt[:, :1], memory,
                                                  _causal(1), memory_mask, "for T = 1"),
                   B1_HINT)

    with c.case("the embedding has padding_idx=0 (PAD's row gets no gradient); the inputs are "
                "unmodified; gradients reach the embedding, out and the memory"):
        fresh = run(TransformerDecoder, *_DEC_ARGS, hint=f"the contract: {_DEC_CALL}")
        dec = built()
        g = randn(B, T, V_DEC, seed=85)
        for module, label in ((fresh, "a new decoder"), (dec, "the decoder")):
            toks, mem = tgt.clone(), memory.clone().requires_grad_(True)
            sm, mm = self_mask.clone(), memory_mask.clone()
            before = snapshot(tgt=tgt, memory=memory, self_mask=self_mask,
                              memory_mask=memory_mask)
            got = as_tuple(run(module, toks, mem, sm, mm), 3, "TransformerDecoder.forward")
            expect_unmodified(before, {"tgt": toks, "memory": mem, "self_mask": sm,
                                       "memory_mask": mm})
            logits = as_tensor(got[0], "the logits")
            expect(logits.requires_grad, "the logits are cut off from autograd")
            (logits * g).sum().backward()
            grads = grads_of(module)
            grad = grads.get("embedding.weight")
            expect(grad is not None, f"no gradient reached embedding.weight of {label}")
            expect(float(grad[PAD].abs().max()) == 0.0,
                   f"the PAD row of embedding.weight gets a gradient in {label}: build the "
                   "embedding with padding_idx=0")
            expect(float(grad[3:].abs().max()) > 0,
                   "no gradient reaches the real tokens' embeddings")
            expect(grads.get("out.weight") is not None,
                   f"no gradient reached out.weight of {label}")
            expect(mem.grad is not None and float(mem.grad.abs().max()) > 0,
                   f"no gradient reached the memory in {label}: the layers must read it")
        r = copy.deepcopy(reference)
        mr = memory.clone().requires_grad_(True)
        (r(tgt, mr, self_mask, memory_mask)[0] * g).sum().backward()
        want = grads_of(r)
        pairs = [("memory", mem.grad, mr.grad),
                 ("out.weight", grads["out.weight"], want["out.weight"]),
                 ("embedding.weight", grads["embedding.weight"], want["embedding.weight"])]
        if not all(is_close(a, b, 1e-4, 1e-4) for _, a, b in pairs):
            with torch.no_grad():
                why = _differing_piece(dec, reference, tgt, memory, self_mask, memory_mask)
            for name, a, b in pairs:
                expect_close(a, b, f"the gradient with respect to {name}", atol=1e-4, hint=why)
    return c.report()


# --- greedy_generate --------------------------------------------------------------------


class ScriptedSeq2Seq(nn.Module):
    """A stand-in encoder-decoder with the interface ``greedy_generate`` drives, whose next token
    is plain arithmetic on what it is given, so that every way of feeding it shows:

    - ``encode(src, src_mask) -> memory (B, S, 2)``: channel 0 holds the source tokens, with junk
      at PAD positions (a real encoder's outputs there are not 0 either); channel 1 is 1 where
      ``src_mask`` says the token is real;
    - ``decode(tgt, memory, self_mask, memory_mask) -> logits (B, T, V)``: position ``t``
      combines two rounds of sums over the fed tokens that ``self_mask`` lets it see (as two
      causal layers would) with the sum of the memory that ``memory_mask`` lets it see; it says
      EOS at position ``n`` (the number of real source tokens) and never elsewhere, so the
      generation must stop by itself.

    It records whether gradients were enabled at each call."""

    def __init__(self, vocab_size: int = 13):
        super().__init__()
        self.vocab_size = vocab_size
        self.scale = nn.Parameter(torch.tensor(3.0))
        self.grad_enabled_calls: list[bool] = []

    def encode(self, src, src_mask=None):
        self.grad_enabled_calls.append(torch.is_grad_enabled())
        B, S = src.shape
        real = (torch.ones(B, S) if src_mask is None
                else torch.as_tensor(src_mask, dtype=torch.bool).reshape(B, S).float())
        junk = 5.0 * (torch.arange(S, dtype=torch.float32) + 1)
        tokens = torch.where(src == PAD, junk.expand(B, S), src.float())
        return torch.stack([tokens, real], dim=-1) * (self.scale / self.scale)

    def decode(self, tgt, memory, self_mask=None, memory_mask=None):
        self.grad_enabled_calls.append(torch.is_grad_enabled())
        if type(tgt) is not torch.Tensor or tgt.dim() != 2:
            raise ValueError("decode takes tgt of shape (B, T): the tokens so far, SOS first")
        B, T = tgt.shape
        S = memory.shape[1]
        allowed = (torch.ones(B, T, T, dtype=torch.bool) if self_mask is None
                   else torch.as_tensor(self_mask, dtype=torch.bool).expand(B, T, T))
        a = allowed.double()
        h1 = a @ tgt.double().unsqueeze(-1)                      # (B, T, 1)
        h2 = (a @ h1).squeeze(-1)                                # (B, T)
        if memory_mask is None:
            visible = torch.ones(B, T, S, dtype=torch.bool)
        else:
            visible = torch.as_tensor(memory_mask, dtype=torch.bool)
            visible = (visible.reshape(B, 1, S) if visible.dim() <= 2 else visible).expand(B, T, S)
        offset = (visible.double() * memory[..., 0].detach().double()[:, None, :]).sum(-1)
        n = memory[..., 1].detach().sum(-1).round().long()       # real source tokens
        position = torch.arange(T)
        token = 3 + (h2.round().long() * 3 + position[None] * 5 + offset.round().long()) \
            % (self.vocab_size - 3)
        token = torch.where(position[None] == n[:, None], torch.full_like(token, EOS), token)
        return F.one_hot(token, self.vocab_size).float() * self.scale


def _src_batch(lengths: list[int], S: int, V: int, seed: int):
    g = generator(seed)
    src = torch.randint(3, V, (len(lengths), S), generator=g)
    lengths_t = torch.tensor(lengths)
    src = src.masked_fill(torch.arange(S)[None] >= lengths_t[:, None], PAD)
    return src, lengths_t


def generate_variant(model, src, lengths, max_len, *, self_mask="causal", encode_mask=True,
                     memory_mask=True, feed="own", pick="last", blank=True, keep_eos=True,
                     sos_first=False):
    """Greedy generation done the way a mistake does it (one option changed)."""
    B, S = src.shape
    src_mask = (torch.arange(S)[None, :] < lengths[:, None]).unsqueeze(1)
    with torch.no_grad():
        memory = model.encode(src, src_mask if encode_mask else None)
        if feed == "source":
            dec_in = torch.cat([torch.full((B, 1), SOS), src], 1)[:, :max_len]
            if dec_in.shape[1] < max_len:
                dec_in = F.pad(dec_in, (0, max_len - dec_in.shape[1]), value=PAD)
            T = dec_in.shape[1]
            logits = model.decode(dec_in, memory, _causal(T) if self_mask else None,
                                  src_mask if memory_mask else None)
            tokens = logits.argmax(-1)
        else:
            ys = torch.full((B, 1), SOS)
            steps = []
            for t in range(max_len):
                inp = {"own": ys, "sos": torch.full((B, t + 1), SOS), "last": ys[:, -1:]}[feed]
                T = inp.shape[1]
                logits = model.decode(inp, memory, _causal(T) if self_mask else None,
                                      src_mask if memory_mask else None)
                nxt = logits[:, -1 if pick == "last" else 0].argmax(-1)
                steps.append(nxt)
                ys = torch.cat([ys, nxt[:, None]], 1)
            tokens = torch.stack(steps, 1)
        if sos_first:
            tokens = torch.cat([torch.full((B, 1), SOS), tokens[:, :-1]], 1)
        if blank:
            tokens = ref.blank_after_eos(tokens)
        if not keep_eos:
            tokens = tokens.masked_fill(tokens == EOS, PAD)
    return tokens


_GEN_MISTAKES = [
    ("the decoder is fed a known sequence (the source, as teacher forcing would feed the "
     "target) instead of its own predictions", {"feed": "source"}),
    ("SOS is fed at every step (feed back the tokens predicted so far)", {"feed": "sos"}),
    ("only the last predicted token is fed (the decoder needs the whole prefix, SOS first)",
     {"feed": "last"}),
    ("the first position's logits are used (logits[:, 0]); the next token comes from the last "
     "position, logits[:, -1]", {"pick": "first"}),
    ("no causal mask is passed to decode (each step must re-decode its prefix as in training: "
     "position t sees positions <= t, or the earlier positions' states change)",
     {"self_mask": None}),
    ("the memory mask is not passed to decode (the decoder attends to the source's PAD "
     "positions)", {"memory_mask": False}),
    ("the source mask is not passed to encode (the encoder attends to PAD)",
     {"encode_mask": False}),
    ("generation does not stop after EOS (positions after the first EOS must be PAD)",
     {"blank": False}),
    ("the first EOS is dropped (keep it; only what follows it becomes PAD)", {"keep_eos": False}),
    ("SOS is returned as the first column (return only the generated tokens)",
     {"sos_first": True}),
]


def _gen_diagnoses(model, src, lengths, max_len):
    cache: dict = {}

    def thunk(opts):
        def compute():
            key = tuple(sorted(opts.items()))
            if key not in cache:
                cache[key] = generate_variant(copy.deepcopy(model), src, lengths, max_len, **opts)
            return cache[key]
        return compute

    return [(text, thunk(opts)) for text, opts in _GEN_MISTAKES]


def _gen_case(greedy_generate, model, src, lengths, max_len, what):
    with torch.no_grad():
        expected = ref.greedy_generate(copy.deepcopy(model), src, lengths, max_len)
    out = run(greedy_generate, lend(model), src.clone(), lengths.clone(), max_len,
              hints={"decode takes tgt": "pass the tokens so far as a (B, T) tensor"})
    out = as_tensor(out, what)
    B = src.shape[0]
    hint = "return exactly max_len columns (PAD after EOS, even if every row finished early)"
    if B == 1 and tuple(out.shape) == (max_len,):
        hint = "the batch axis was dropped: " + B1_HINT
    elif tuple(out.shape) == (B, max_len + 1):
        hint = "SOS is returned as the first column? Return only the max_len generated tokens"
    expect_shape(out, (B, max_len), what, hint=hint)
    expect_dtype(out, torch.long, what)
    return expect_match(out, expected, what,
                        diagnoses=_gen_diagnoses(model, src, lengths, max_len))


def _real_model(seed: int):
    model = seeded(lambda: ref.Seq2SeqTransformer(12, 12, d_model=16, num_heads=2, d_ff=32,
                                                  num_layers=2, max_len=32), seed)
    randomise(model, seed, scale=0.8)
    with torch.no_grad():
        model.encoder.embedding.weight[PAD].zero_()
        model.decoder.embedding.weight[PAD].zero_()
        model.decoder.out.bias[EOS] += 1.5  # so that some rows stop early
    return model.eval()


def check_greedy_generate(greedy_generate) -> Report:
    c = Check("greedy_generate")
    scripted = ScriptedSeq2Seq()
    full, full_len = _src_batch([5, 5, 5, 5], 5, 13, seed=90)         # no padding
    src, lengths = _src_batch([3, 1, 6, 2, 4], 6, 13, seed=91)         # padded rows

    with c.case("returns (B, max_len) token ids (int64)"):
        out = as_tensor(run(greedy_generate, lend(scripted), src.clone(), lengths.clone(), 9),
                        "the generated tokens")
        expect_shape(out, (5, 9), "the generated tokens",
                     hint="return exactly max_len columns, without SOS")
        expect_dtype(out, torch.long, "the generated tokens")

    with c.case("feeds back its own predictions (SOS first) with a causal mask, takes the "
                "argmax at the last position, keeps the first EOS and pads after it", weight=3):
        _gen_case(greedy_generate, scripted, full, full_len, 8, "the generated tokens")
        f2, l2 = _src_batch([3, 3, 3], 3, 13, seed=92)
        _gen_case(greedy_generate, scripted, f2, l2, 6, "the generated tokens")

    with c.case("the source's padding: src_mask reaches encode and memory_mask reaches decode",
                weight=1.5):
        _gen_case(greedy_generate, scripted, src, lengths, 9,
                  "the generated tokens for a padded batch")

    with c.case("returns max_len columns even when every sequence ends early"):
        s3, l3 = _src_batch([1, 2, 1], 3, 13, seed=93)
        _gen_case(greedy_generate, scripted, s3, l3, 8, "the generated tokens")

    with c.case("agrees with the reference on a real 2-layer Transformer (random weights)",
                weight=2):
        for seed in (94, 95):
            model = _real_model(seed)
            s4, l4 = _src_batch([6, 4, 5, 2, 6, 3], 6, 12, seed=seed + 10)
            _gen_case(greedy_generate, model, s4, l4, 8,
                      "the tokens generated by a random Transformer")

    with c.case("works for a batch of one"):
        s1, l1 = _src_batch([3], 5, 13, seed=96)
        _with_hint(lambda: _gen_case(greedy_generate, scripted, s1, l1, 6,
                                     "the generated tokens for B = 1"), B1_HINT)
        _with_hint(lambda: _gen_case(greedy_generate, _real_model(97), s1, l1, 5,
                                     "the tokens generated by a random Transformer for B = 1"),
                   B1_HINT)

    with c.case("runs without gradients and leaves src and src_lengths unmodified"):
        model = lend(ScriptedSeq2Seq())
        s5, l5 = src.clone(), lengths.clone()
        before = snapshot(src=src, src_lengths=lengths)
        out = as_tensor(run(greedy_generate, model, s5, l5, 7), "the generated tokens")
        expect_unmodified(before, {"src": s5, "src_lengths": l5})
        expect(model.grad_enabled_calls and not any(model.grad_enabled_calls),
               "the model ran with gradients enabled — generate under torch.no_grad() (nothing "
               "is trained here, and autograd would keep every step's activations)")
        expect(not out.requires_grad, "the generated tokens require grad")
    return c.report()


CHECKS = {
    "decoder_self_mask": check_decoder_self_mask,
    "DecoderLayer": check_DecoderLayer,
    "TransformerDecoder": check_TransformerDecoder,
    "greedy_generate": check_greedy_generate,
}
