"""Plausible wrong answers for 03_qkv_lookup; each must fail its check, named."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attn_grader.mistakes import Mistake

# --- hard_lookup ----------------------------------------------------------------------------


def lookup_argmin(query, keys, values):
    return F.one_hot((keys @ query).argmin(), keys.shape[0]).to(values.dtype) @ values


def lookup_nearest_by_distance(query, keys, values):
    best = (keys - query).norm(dim=-1).argmin()
    return values[best]


def lookup_cosine(query, keys, values):
    return values[F.cosine_similarity(keys, query.unsqueeze(0), dim=-1).argmax()]


def lookup_softmax(query, keys, values):
    return torch.softmax(keys @ query, dim=0) @ values


def lookup_last_on_tie(query, keys, values):
    scores = keys @ query
    best = 0
    for i in range(len(scores)):
        if scores[i] >= scores[best]:  # >= lets a later tie win
            best = i
    return values[best]


def lookup_int_one_hot(query, keys, values):
    return F.one_hot((keys @ query).argmax(), keys.shape[0]) @ values  # int64 @ float


def lookup_returns_weights(query, keys, values):
    return F.one_hot((keys @ query).argmax(), keys.shape[0]).to(values.dtype)


# --- stable_softmax -------------------------------------------------------------------------


def softmax_naive(scores, dim=-1):
    e = torch.exp(scores)
    return e / e.sum(dim, keepdim=True)


def softmax_dim0(scores, dim=-1):
    e = torch.exp(scores - scores.amax(0, keepdim=True))
    return e / e.sum(0, keepdim=True)


def softmax_ignores_dim(scores, dim=-1):
    e = torch.exp(scores - scores.amax(-1, keepdim=True))
    return e / e.sum(-1, keepdim=True)


def softmax_global_max(scores, dim=-1):
    e = torch.exp(scores - scores.max())
    return e / e.sum(dim, keepdim=True)


def softmax_no_keepdim(scores, dim=-1):
    e = torch.exp(scores - scores.max(dim).values)
    return e / e.sum(dim, keepdim=True)


def softmax_in_place(scores, dim=-1):
    scores -= scores.amax(dim, keepdim=True)
    e = torch.exp(scores)
    return e / e.sum(dim, keepdim=True)


def softmax_total_sum(scores, dim=-1):
    e = torch.exp(scores - scores.amax(dim, keepdim=True))
    return e / e.sum()


# --- masked_softmax -------------------------------------------------------------------------


def masked_fill_minus_1e4(scores, mask, dim=-1):
    return torch.softmax(scores.masked_fill(~mask, -1e4), dim)


def masked_fill_minus_inf(scores, mask, dim=-1):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), dim)


def masked_fill_minus_1e9(scores, mask, dim=-1):
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim)


def masked_polarity_reversed(scores, mask, dim=-1):
    w = torch.softmax(scores.masked_fill(mask, -1e9), dim)
    return w * ~mask


def masked_after_softmax(scores, mask, dim=-1):
    return torch.softmax(scores, dim) * mask


def masked_multiply_scores(scores, mask, dim=-1):
    return torch.softmax(scores * mask, dim)


def masked_naive_exp(scores, mask, dim=-1):
    e = torch.exp(scores) * mask
    total = e.sum(dim, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def masked_ignores_dim(scores, mask, dim=-1):
    return torch.softmax(scores.masked_fill(~mask, -1e9), -1) * mask


def masked_in_place(scores, mask, dim=-1):
    scores.masked_fill_(~mask, -1e9)
    return torch.softmax(scores, dim) * mask


# --- dot_scores / scaled_dot_scores ---------------------------------------------------------


def dot_k_q(q, k):
    return k @ q.transpose(-2, -1)


def dot_scaled(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


def dot_T_on_3d(q, k):
    return q @ k.T  # reverses all three axes of k


def nw_no_broadcast(x_query, x_train, y_train, bandwidth):
    scores = -((x_query - x_train) ** 2) / (2 * bandwidth**2)  # (M,) - (N,): no pairs
    weights = torch.softmax(scores, dim=-1)
    return weights @ y_train, weights


def lookup_sums_ties(query, keys, values):
    scores = keys @ query
    return (scores == scores.max()).to(values.dtype) @ values


def dot_cosine(q, k):
    return F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)


def dot_squeezed(q, k):
    return (q @ k.transpose(-2, -1)).squeeze()


def scaled_by_d(q, k):
    return q @ k.transpose(-2, -1) / q.shape[-1]


def scaled_missing(q, k):
    return q @ k.transpose(-2, -1)


def scaled_multiplied(q, k):
    return q @ k.transpose(-2, -1) * math.sqrt(q.shape[-1])


def scaled_by_num_keys(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(k.shape[1])


def scaled_k_q(q, k):
    return k @ q.transpose(-2, -1) / math.sqrt(q.shape[-1])


# --- general_scores -------------------------------------------------------------------------


def general_W_transposed(q, k, W):
    return q @ W.T @ k.transpose(-2, -1)


def general_no_W(q, k, W):
    return q @ k.transpose(-2, -1)


def general_scaled(q, k, W):
    return q @ W @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])


def general_output_transposed(q, k, W):
    return k @ W.T @ q.transpose(-2, -1)


# --- additive_scores ------------------------------------------------------------------------


def additive_no_broadcast(q, k, W_q, W_k, v):
    return torch.tanh(q @ W_q + k @ W_k) @ v


def additive_swapped_unsqueeze(q, k, W_q, W_k, v):
    return torch.tanh((q @ W_q).unsqueeze(1) + (k @ W_k).unsqueeze(2)) @ v


def additive_no_tanh(q, k, W_q, W_k, v):
    return ((q @ W_q).unsqueeze(2) + (k @ W_k).unsqueeze(1)) @ v


def additive_tanh_after_v(q, k, W_q, W_k, v):
    return torch.tanh(((q @ W_q).unsqueeze(2) + (k @ W_k).unsqueeze(1)) @ v)


def additive_repeat_reshape(q, k, W_q, W_k, v):
    qp, kp = q @ W_q, k @ W_k
    B, Tq, Dh = qp.shape
    Tk = kp.shape[1]
    pairs = (qp.repeat(1, Tk, 1).reshape(B, Tq, Tk, Dh)
             + kp.repeat(1, Tq, 1).reshape(B, Tq, Tk, Dh))
    return torch.tanh(pairs) @ v


# --- attend ---------------------------------------------------------------------------------


def _masked(scores, mask):
    """A correct masked softmax, to isolate each mistake below."""
    if mask is None:
        return torch.softmax(scores, dim=-1)
    filled = scores.masked_fill(~mask, float("-inf"))
    top = filled.amax(-1, keepdim=True)
    e = torch.exp(filled - torch.where(torch.isfinite(top), top, torch.zeros_like(top)))
    total = e.sum(-1, keepdim=True)
    return e / torch.where(total > 0, total, torch.ones_like(total))


def attend_ignores_mask(q, k, v, score_fn, mask=None):
    weights = torch.softmax(score_fn(q, k), dim=-1)
    return weights @ v, weights


def attend_mask_reversed(q, k, v, score_fn, mask=None):
    weights = _masked(score_fn(q, k), None if mask is None else ~mask)
    return weights @ v, weights


def attend_mask_after_softmax(q, k, v, score_fn, mask=None):
    weights = torch.softmax(score_fn(q, k), dim=-1)
    if mask is not None:
        weights = weights * mask
    return weights @ v, weights


def attend_all_masked_nan(q, k, v, score_fn, mask=None):
    scores = score_fn(q, k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights


def attend_ignores_score_fn(q, k, v, score_fn, mask=None):
    weights = _masked(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), mask)
    return weights @ v, weights


def attend_scales_again(q, k, v, score_fn, mask=None):
    weights = _masked(score_fn(q, k) / math.sqrt(q.shape[-1]), mask)
    return weights @ v, weights


def attend_softmax_over_queries(q, k, v, score_fn, mask=None):
    weights = _masked(score_fn(q, k).transpose(-2, -1),
                      None if mask is None else mask.transpose(-2, -1)).transpose(-2, -1)
    return weights @ v, weights


def attend_squeezed(q, k, v, score_fn, mask=None):
    weights = _masked(score_fn(q, k), mask).squeeze()
    return weights @ v, weights


# --- nadaraya_watson ------------------------------------------------------------------------


def _nw_from_scores(scores, y_train, dim=1):
    weights = torch.softmax(scores, dim=dim)
    return weights @ y_train, weights


def nw_no_square(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    return _nw_from_scores(-diff / (2 * bandwidth**2), y_train)


def nw_no_bandwidth(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    return _nw_from_scores(-(diff**2) / 2, y_train)


def nw_h_not_squared(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    return _nw_from_scores(-(diff**2) / (2 * bandwidth), y_train)


def nw_no_minus(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    return _nw_from_scores(diff**2 / (2 * bandwidth**2), y_train)


def nw_naive_normalisation(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    kernel = torch.exp(-(diff**2) / (2 * bandwidth**2))
    weights = kernel / kernel.sum(dim=1, keepdim=True)
    return weights @ y_train, weights


def nw_softmax_over_queries(x_query, x_train, y_train, bandwidth):
    diff = x_query.unsqueeze(1) - x_train.unsqueeze(0)
    weights = torch.softmax(-(diff**2) / (2 * bandwidth**2), dim=0)
    return weights @ y_train, weights


def nw_weights_transposed(x_query, x_train, y_train, bandwidth):
    diff = x_train.unsqueeze(1) - x_query.unsqueeze(0)  # (N, M)
    weights = torch.softmax(-(diff**2) / (2 * bandwidth**2), dim=0)
    return y_train @ weights, weights


MISTAKES = {
    "hard_lookup": [
        Mistake("argmin instead of argmax", lookup_argmin, "least similar"),
        Mistake("nearest key by distance", lookup_nearest_by_distance, "Euclidean distance"),
        Mistake("cosine similarity", lookup_cosine, "cosine"),
        Mistake("softmax weights (soft lookup)", lookup_softmax, "softmax"),
        Mistake("the last key wins a tie", lookup_last_on_tie, "last"),
        Mistake("every tied key gets a 1", lookup_sums_ties, "summed"),
        Mistake("one-hot weights left as int64", lookup_int_one_hot, "int64"),
        Mistake("returns the weights instead of the value", lookup_returns_weights,
                "not the weights"),
    ],
    "stable_softmax": [
        Mistake("exp without subtracting the max overflows", softmax_naive, "overflow"),
        Mistake("softmax over dim 0", softmax_dim0, "wrong dim"),
        Mistake("dim argument ignored", softmax_ignores_dim, "dim argument is ignored"),
        Mistake("one max for the whole tensor", softmax_global_max, "whole tensor"),
        Mistake("max subtracted without keepdim", softmax_no_keepdim, "keepdim"),
        Mistake("scores shifted in place", softmax_in_place, "modified in place"),
        Mistake("normalised by the sum of all entries", softmax_total_sum,
                "sum over all entries"),
    ],
    "masked_softmax": [
        Mistake("fill with -1e4: masked weights small but not 0", masked_fill_minus_1e4,
                "should be exactly 0"),
        Mistake("fill with -inf: all-masked row gives NaN", masked_fill_minus_inf,
                "all-masked row gives NaN"),
        Mistake("fill with -1e9: all-masked row gets uniform weights", masked_fill_minus_1e9,
                "uniform"),
        Mistake("mask polarity reversed", masked_polarity_reversed, "polarity"),
        Mistake("mask applied after softmax, no renormalisation", masked_after_softmax,
                "after softmax"),
        Mistake("scores multiplied by the mask", masked_multiply_scores,
                "multiplied by the mask"),
        Mistake("exp without the max shift overflows", masked_naive_exp, "overflow"),
        Mistake("dim argument ignored", masked_ignores_dim, "wrong dim"),
        Mistake("masked_fill_ in place on the caller's scores", masked_in_place,
                "modified in place"),
    ],
    "dot_scores": [
        Mistake("k qᵀ instead of q kᵀ", dot_k_q, "transposed"),
        Mistake("scaled like scaled_dot_scores", dot_scaled, "no scaling"),
        Mistake("cosine similarity", dot_cosine, "cosine"),
        Mistake("squeeze() breaks B = 1", dot_squeezed, "squeeze"),
        Mistake(".T on a 3-D tensor", dot_T_on_3d, ".T reverses"),
    ],
    "scaled_dot_scores": [
        Mistake("divided by d instead of sqrt(d)", scaled_by_d, "instead of sqrt(d)"),
        Mistake("no scaling", scaled_missing, "scaling is missing"),
        Mistake("multiplied by sqrt(d)", scaled_multiplied, "multiplied by sqrt(d)"),
        Mistake("divided by sqrt(number of keys)", scaled_by_num_keys, "number of keys"),
        Mistake("k qᵀ instead of q kᵀ", scaled_k_q, "transposed"),
    ],
    "general_scores": [
        Mistake("W transposed", general_W_transposed, "W is transposed"),
        Mistake("W left out", general_no_W, "left out"),
        Mistake("scaled by 1/sqrt(Dk)", general_scaled, "no scaling"),
        Mistake("output transposed (k Wᵀ qᵀ)", general_output_transposed, "transposed"),
    ],
    "additive_scores": [
        Mistake("q W_q + k W_k without broadcasting (fails for Tq != Tk)",
                additive_no_broadcast, "broadcast"),
        Mistake("unsqueezes swapped", additive_swapped_unsqueeze, "swapped"),
        Mistake("tanh missing", additive_no_tanh, "tanh is missing"),
        Mistake("tanh after the product with v", additive_tanh_after_v, "after the product"),
        Mistake("repeat + reshape pairs the wrong queries and keys", additive_repeat_reshape,
                "wrong queries"),
    ],
    "attend": [
        Mistake("the mask is ignored", attend_ignores_mask, "mask is ignored"),
        Mistake("mask polarity reversed", attend_mask_reversed, "polarity"),
        Mistake("mask applied after softmax, no renormalisation", attend_mask_after_softmax,
                "after the softmax"),
        Mistake("fill with -inf: a query with no visible key gets NaN", attend_all_masked_nan,
                "NaN"),
        Mistake("score_fn ignored (always scaled dot products)", attend_ignores_score_fn,
                "score_fn is ignored"),
        Mistake("scores divided by sqrt(d) on top of score_fn", attend_scales_again,
                "sqrt(d) again"),
        Mistake("softmax over the queries", attend_softmax_over_queries, "over the queries"),
        Mistake("squeeze() breaks B = 1", attend_squeezed, "squeeze"),
    ],
    "nadaraya_watson": [
        Mistake("kernel missing the square", nw_no_square, "not squared"),
        Mistake("kernel missing the bandwidth", nw_no_bandwidth, "bandwidth is ignored"),
        Mistake("divided by 2h instead of 2h²", nw_h_not_squared, "instead of 2h²"),
        Mistake("minus sign missing", nw_no_minus, "minus sign"),
        Mistake("exp then divide: far queries give 0/0", nw_naive_normalisation, "underflow"),
        Mistake("softmax over the queries", nw_softmax_over_queries, "over the queries"),
        Mistake("weights returned transposed (N, M)", nw_weights_transposed, "transposed"),
        Mistake("x_query - x_train without broadcasting to (M, N)", nw_no_broadcast,
                "broadcast"),
    ],
}
