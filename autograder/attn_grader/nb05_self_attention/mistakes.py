"""Plausible wrong answers for 05_self_attention; each must fail its check, named."""

from __future__ import annotations

import math

import torch
from torch import nn

from attn_grader.mistakes import Mistake
from attn_grader.nb05_self_attention import reference as ref

NEG_INF = float("-inf")

# --- scaled_dot_product_attention -------------------------------------------------------


def _attention(q, k, v, mask=None, *, scale=None, dim=-1, fill=NEG_INF, fix_nan=True):
    """Masked attention with knobs for the mistakes below (fill -inf, softmax, NaN -> 0)."""
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ k.transpose(-2, -1) * scale
    if mask is not None:
        scores = scores.masked_fill(~mask, fill)
    weights = torch.softmax(scores, dim=dim)
    if fix_nan:
        weights = weights.nan_to_num(0.0)
    return weights @ v, weights


def sdpa_no_scale(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=1.0)


def sdpa_divides_by_dk(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=1 / q.shape[-1])


def sdpa_scaled_by_dv(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=1 / math.sqrt(v.shape[-1]))


def sdpa_multiplies_by_sqrt(q, k, v, mask=None):
    return _attention(q, k, v, mask, scale=math.sqrt(q.shape[-1]))


def sdpa_softmax_over_queries(q, k, v, mask=None):
    return _attention(q, k, v, mask, dim=-2)


def sdpa_softmax_dim_2(q, k, v, mask=None):
    # right for (B, T, D) inputs, the query axis for (B, H, T, D)
    return _attention(q, k, v, mask, dim=2)


def sdpa_mask_after_softmax(q, k, v, mask=None):
    out, weights = _attention(q, k, v, None)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


def sdpa_mask_added(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + mask.float()
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_mask_inverted(q, k, v, mask=None):
    return _attention(q, k, v, None if mask is None else ~mask)


def sdpa_mask_inverted_finite(q, k, v, mask=None):
    return _attention(q, k, v, None if mask is None else ~mask, fill=-1e9)


def sdpa_mask_ignored(q, k, v, mask=None):
    return _attention(q, k, v, None)


def sdpa_nan_rows(q, k, v, mask=None):
    return _attention(q, k, v, mask, fix_nan=False)


def sdpa_uniform_rows(q, k, v, mask=None):
    return _attention(q, k, v, mask, fill=-1e9)


def sdpa_additive_inf_mask(q, k, v, mask=None):
    # forward is right; backward through an all -inf row sends NaN into q and k
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores + torch.zeros(mask.shape).masked_fill(~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights


def sdpa_finite_penalty(q, k, v, mask=None):
    # "subtract 1e4 where masked": small scores are fine, masked weights are not exactly 0
    # for a fully masked row, and weights leak for large scores
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores - 30.0 * (~mask)
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def sdpa_exp_overflow(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    e = scores.exp()
    if mask is not None:
        e = e * mask
    weights = e / e.sum(-1, keepdim=True).clamp_min(1e-30)
    return weights @ v, weights


def sdpa_returns_scores(q, k, v, mask=None):
    out, _ = _attention(q, k, v, mask)
    return out, q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def sdpa_swapped_pair(q, k, v, mask=None):
    out, weights = _attention(q, k, v, mask)
    return weights, out


def sdpa_transpose_1_2(q, k, v, mask=None):
    scores = q @ k.transpose(1, 2) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights


def sdpa_bmm(q, k, v, mask=None):
    scores = torch.bmm(q, k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, NEG_INF)
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return torch.bmm(weights, v), weights


def sdpa_squeezes(q, k, v, mask=None):
    out, weights = _attention(q, k, v, mask)
    return out.squeeze(), weights.squeeze()


def sdpa_scales_q_in_place(q, k, v, mask=None):
    q /= math.sqrt(q.shape[-1])
    return _attention(q, k, v, mask, scale=1.0)


def sdpa_detached(q, k, v, mask=None):
    out, weights = _attention(q.detach(), k.detach(), v.detach(), mask)
    return out, weights


# --- padding_mask -----------------------------------------------------------------------


def pad_no_middle_axis(lengths, max_len):
    return torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)


def pad_off_by_one(lengths, max_len):
    return (torch.arange(max_len).unsqueeze(0) <= lengths.unsqueeze(1)).unsqueeze(1)


def pad_inverted(lengths, max_len):
    return (torch.arange(max_len).unsqueeze(0) >= lengths.unsqueeze(1)).unsqueeze(1)


def pad_float(lengths, max_len):
    return ref.padding_mask(lengths, max_len).float()


def pad_wrong_axis(lengths, max_len):
    return ref.padding_mask(lengths, max_len).transpose(1, 2)


def pad_uses_max_length(lengths, max_len):
    return ref.padding_mask(lengths, int(lengths.max()))


def pad_in_place(lengths, max_len):
    lengths.unsqueeze_(1)
    return (torch.arange(max_len).unsqueeze(0) < lengths).unsqueeze(1)


# --- causal_mask ------------------------------------------------------------------------


def causal_upper(T):
    return torch.ones(T, T, dtype=torch.bool).triu()


def causal_strict(T):
    return torch.ones(T, T, dtype=torch.bool).tril(-1)


def causal_inverted(T):
    return torch.ones(T, T, dtype=torch.bool).triu(1)


def causal_float(T):
    return torch.ones(T, T).tril()


def causal_additive(T):
    return nn.Transformer.generate_square_subsequent_mask(T)


def causal_batched(T):
    return torch.ones(1, T, T, dtype=torch.bool).tril()


# --- SelfAttention ----------------------------------------------------------------------


class _Projections(ref.SelfAttention):
    def qkv(self, x):
        return self.w_q(x), self.w_k(x), self.w_v(x)


class SANoScale(_Projections):
    def forward(self, x, mask=None):
        return _attention(*self.qkv(x), mask, scale=1.0)


class SAScaledByDModel(_Projections):
    def forward(self, x, mask=None):
        return _attention(*self.qkv(x), mask, scale=1 / math.sqrt(x.shape[-1]))


class SASoftmaxOverQueries(_Projections):
    def forward(self, x, mask=None):
        return _attention(*self.qkv(x), mask, dim=-2)


class SAQueryProjectionForKeys(_Projections):
    def forward(self, x, mask=None):
        return _attention(self.w_q(x), self.w_q(x), self.w_v(x), mask)


class SAKeyProjectionForQueries(_Projections):
    def forward(self, x, mask=None):
        return _attention(self.w_k(x), self.w_k(x), self.w_v(x), mask)


class SAQueriesKeysSwapped(_Projections):
    def forward(self, x, mask=None):
        q, k, v = self.qkv(x)
        return _attention(k, q, v, None if mask is None else mask.transpose(-2, -1))


class SAMaskIgnored(_Projections):
    def forward(self, x, mask=None):
        return _attention(*self.qkv(x), None)


class SAMaskAfterSoftmax(_Projections):
    def forward(self, x, mask=None):
        return sdpa_mask_after_softmax(*self.qkv(x), mask)


class SANanRows(_Projections):
    def forward(self, x, mask=None):
        return sdpa_nan_rows(*self.qkv(x), mask)


class SAWithBias(nn.Module):
    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_k)
        self.w_k = nn.Linear(d_model, d_k)
        self.w_v = nn.Linear(d_model, d_v)

    def forward(self, x, mask=None):
        return _attention(self.w_q(x), self.w_k(x), self.w_v(x), mask)


class SAValuesNotProjectedToDv(nn.Module):
    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_k, bias=False)
        self.w_k = nn.Linear(d_model, d_k, bias=False)
        self.w_v = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, mask=None):
        return _attention(self.w_q(x), self.w_k(x), self.w_v(x), mask)


class SAReturnsOnlyOutput(_Projections):
    def forward(self, x, mask=None):
        return _attention(*self.qkv(x), mask)[0]


class SADetached(_Projections):
    def forward(self, x, mask=None):
        out, weights = _attention(*self.qkv(x), mask)
        return out.detach(), weights.detach()


# --- sinusoidal_positional_encoding ---------------------------------------------------------


def _pe_table(max_len, d_model, angle_fn, *, concat=False, swap=False, start=0):
    pe = torch.zeros(max_len, d_model)
    for p in range(max_len):
        for i in range(d_model // 2):
            a = angle_fn(p + start, i, d_model)
            first, second = (math.cos(a), math.sin(a)) if swap else (math.sin(a), math.cos(a))
            if concat:
                pe[p, i], pe[p, d_model // 2 + i] = first, second
            else:
                pe[p, 2 * i], pe[p, 2 * i + 1] = first, second
    return pe


def _angle(p, i, d):
    return p / 10000 ** (2 * i / d)


def pe_concatenated(max_len, d_model):
    return _pe_table(max_len, d_model, _angle, concat=True)


def pe_exponent_i(max_len, d_model):
    return _pe_table(max_len, d_model, lambda p, i, d: p / 10000 ** (i / d))


def pe_column_index(max_len, d_model):
    pe = torch.zeros(max_len, d_model)
    for p in range(max_len):
        for j in range(d_model):
            a = p / 10000 ** (j / d_model)
            pe[p, j] = math.sin(a) if j % 2 == 0 else math.cos(a)
    return pe


def pe_doubled_exponent(max_len, d_model):
    pe = torch.zeros(max_len, d_model)
    for p in range(max_len):
        for i in range(0, d_model, 2):  # i already steps by 2, then it is doubled again
            pe[p, i] = math.sin(p / 10000 ** (2 * i / d_model))
            pe[p, i + 1] = math.cos(p / 10000 ** (2 * i / d_model))
    return pe


def pe_swapped(max_len, d_model):
    return _pe_table(max_len, d_model, _angle, swap=True)


def pe_starts_at_one(max_len, d_model):
    return _pe_table(max_len, d_model, _angle, start=1)


def pe_multiplied(max_len, d_model):
    return _pe_table(max_len, d_model, lambda p, i, d: p * 10000 ** (2 * i / d))


def pe_transposed(max_len, d_model):
    return ref.sinusoidal_positional_encoding(max_len, d_model).T


def pe_float64(max_len, d_model):
    return ref.positional_encoding64(max_len, d_model)


def pe_batch_axis(max_len, d_model):
    return ref.sinusoidal_positional_encoding(max_len, d_model).unsqueeze(0)


MISTAKES = {
    "scaled_dot_product_attention": [
        Mistake("missing 1/sqrt(d_k)", sdpa_no_scale, "1/sqrt(d_k) scaling is missing"),
        Mistake("divided by d_k", sdpa_divides_by_dk, "divided by d_k instead"),
        Mistake("scaled by sqrt(d_v)", sdpa_scaled_by_dv, "sqrt(d_v)"),
        Mistake("multiplied by sqrt(d_k)", sdpa_multiplies_by_sqrt, "multiplied by sqrt(d_k)"),
        Mistake("softmax over the query axis", sdpa_softmax_over_queries, "query axis"),
        Mistake("softmax(dim=2) hard-coded", sdpa_softmax_dim_2, "query axis"),
        Mistake("mask applied after the softmax", sdpa_mask_after_softmax, "after the softmax"),
        Mistake("mask added as 0/1", sdpa_mask_added, "added to the scores as 0/1"),
        Mistake("mask inverted (-inf)", sdpa_mask_inverted, "inverted"),
        Mistake("mask inverted (-1e9)", sdpa_mask_inverted_finite, "inverted"),
        Mistake("mask ignored", sdpa_mask_ignored, "mask is ignored"),
        Mistake("all-masked row gives NaN", sdpa_nan_rows, "NaN"),
        Mistake("all-masked row gives uniform weights", sdpa_uniform_rows, "uniform"),
        Mistake("additive -inf mask: NaN gradients", sdpa_additive_inf_mask,
                "gradient with respect to q contains NaN"),
        Mistake("finite penalty instead of blocking", sdpa_finite_penalty, "exactly 0"),
        Mistake("exp without the max: overflow", sdpa_exp_overflow, "overflow"),
        Mistake("weights are the raw scores", sdpa_returns_scores, "before the softmax"),
        Mistake("(weights, out) order", sdpa_swapped_pair, "wrong order"),
        Mistake("k.transpose(1, 2) breaks leading dims", sdpa_transpose_1_2,
                "transpose(-2, -1)"),
        Mistake("torch.bmm breaks leading dims", sdpa_bmm, "torch.bmm"),
        Mistake("squeeze() breaks B = 1", sdpa_squeezes, "squeeze"),
        Mistake("q scaled in place", sdpa_scales_q_in_place, "modified in place"),
        Mistake("inputs detached", sdpa_detached, "autograd"),
    ],
    "padding_mask": [
        Mistake("(B, max_len) without the middle axis", pad_no_middle_axis, "middle axis"),
        Mistake("off by one (<=)", pad_off_by_one, "off by one"),
        Mistake("polarity inverted", pad_inverted, "inverted"),
        Mistake("float instead of bool", pad_float, "torch.bool"),
        Mistake("(B, max_len, 1)", pad_wrong_axis, "wrong place"),
        Mistake("lengths.max() instead of max_len", pad_uses_max_length, "lengths.max()"),
        Mistake("lengths modified in place", pad_in_place, "modified in place"),
    ],
    "causal_mask": [
        Mistake("upper triangle (transposed)", causal_upper, "transposed"),
        Mistake("diagonal excluded", causal_strict, "diagonal is excluded"),
        Mistake("inverted polarity", causal_inverted, "inverted"),
        Mistake("float 0/1 mask", causal_float, "torch.bool"),
        Mistake("additive 0/-inf mask", causal_additive, "additive float mask"),
        Mistake("extra batch axis", causal_batched, "without a batch axis"),
    ],
    "SelfAttention": [
        Mistake("missing 1/sqrt(d_k)", SANoScale, "1/sqrt(d_k) scaling is missing"),
        Mistake("scaled by sqrt(d_model)", SAScaledByDModel, "sqrt(d_model)"),
        Mistake("softmax over the query axis", SASoftmaxOverQueries, "query axis"),
        Mistake("w_q used for the keys", SAQueryProjectionForKeys, "w_q is used for the keys"),
        Mistake("w_k used for the queries", SAKeyProjectionForQueries,
                "w_k is used for the queries"),
        Mistake("queries and keys swapped", SAQueriesKeysSwapped, "swapped"),
        Mistake("mask ignored", SAMaskIgnored, "mask is ignored"),
        Mistake("mask applied after the softmax", SAMaskAfterSoftmax, "after the softmax"),
        Mistake("all-masked row gives NaN", SANanRows, "NaN"),
        Mistake("projections with bias", SAWithBias, "bias=False"),
        Mistake("w_v maps to d_model, not d_v", SAValuesNotProjectedToDv, "w_v.weight"),
        Mistake("returns only the output", SAReturnsOnlyOutput, "tuple of two"),
        Mistake("outputs detached", SADetached, "autograd"),
    ],
    "sinusoidal_positional_encoding": [
        Mistake("sin/cos concatenated", pe_concatenated, "concatenated"),
        Mistake("exponent i instead of 2i", pe_exponent_i, "i/d instead of 2i/d"),
        Mistake("column index in the exponent", pe_column_index, "column index j"),
        Mistake("exponent doubled twice", pe_doubled_exponent, "doubles it again"),
        Mistake("sin and cos swapped", pe_swapped, "swapped"),
        Mistake("positions start at 1", pe_starts_at_one, "start at 1"),
        Mistake("multiplied instead of divided", pe_multiplied, "multiplied"),
        Mistake("transposed", pe_transposed, "transposed"),
        Mistake("float64 returned", pe_float64, "float32"),
        Mistake("extra batch axis", pe_batch_axis, "batch axis"),
    ],
}
