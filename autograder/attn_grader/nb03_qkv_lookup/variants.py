"""Correct answers for 03_qkv_lookup written in other styles; each must earn full marks.

Styles of public attention code: ``argmax`` and indexing, ``einsum``, ``bmm`` and
``torch.matmul``, loops over the batch or the keys, broadcast-and-sum products, queries
scaled before the product, ``logsumexp``/``log_softmax``, ``torch.softmax`` itself, masking
with -1e9, ``finfo.min`` or ``-inf`` (with ``nan_to_num``), ``torch.cdist`` distances, and
float32 arithmetic on float64 inputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from attn_grader.mistakes import Variant

# --- hard_lookup ----------------------------------------------------------------------------


def lookup_index(query, keys, values):
    return values[torch.argmax(keys @ query)]


def lookup_float32(query, keys, values):
    q, k, v = query.float(), keys.float(), values.float()
    weights = F.one_hot(torch.argmax(k @ q), k.shape[0]).float()
    return weights @ v


def lookup_loop(query, keys, values):
    best, best_score = 0, None
    for i in range(keys.shape[0]):
        score = sum(float(keys[i, j]) * float(query[j]) for j in range(query.shape[0]))
        if best_score is None or score > best_score:
            best, best_score = i, score
    weights = torch.zeros(keys.shape[0], dtype=values.dtype)
    weights[best] = 1
    return torch.einsum("n,nd->d", weights, values)


# --- stable_softmax -------------------------------------------------------------------------


def softmax_logsumexp(scores, dim=-1):
    return torch.exp(scores - torch.logsumexp(scores, dim=dim, keepdim=True))


def softmax_torch(scores, dim=-1):
    return F.softmax(scores, dim=dim)


def softmax_float32_max_values(scores, dim=-1):
    x = scores.float()
    e = (x - x.max(dim=dim, keepdim=True).values).exp()
    return e / e.sum(dim=dim, keepdim=True)


def softmax_movedim(scores, dim=-1):
    x = scores.movedim(dim, -1)
    e = torch.exp(x - x.max(-1, keepdim=True)[0])
    return (e / e.sum(-1, keepdim=True)).movedim(-1, dim)


# --- masked_softmax -------------------------------------------------------------------------


def masked_fill_1e9_times_mask(scores, mask, dim=-1):
    return torch.softmax(scores.masked_fill(~mask, -1e9), dim=dim) * mask


def masked_finfo_min(scores, mask, dim=-1):
    filled = scores.masked_fill(mask.logical_not(), torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=dim).masked_fill(mask.logical_not(), 0.0)


def masked_inf_nan_to_num(scores, mask, dim=-1):
    filled = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(filled, dim=dim).nan_to_num(0.0)


def masked_log_softmax(scores, mask, dim=-1):
    mask = torch.broadcast_to(mask, torch.broadcast_shapes(mask.shape, scores.shape))
    filled = torch.where(mask, scores, torch.full_like(scores, -1e30))
    return torch.where(mask, torch.log_softmax(filled, dim=dim).exp(), torch.zeros(()))


# --- dot_scores, scaled_dot_scores ----------------------------------------------------------


def dot_einsum(q, k):
    return torch.einsum("bid,bjd->bij", q, k)


def dot_bmm(q, k):
    return torch.bmm(q, k.transpose(1, 2))


def dot_broadcast_sum(q, k):
    return (q.unsqueeze(2) * k.unsqueeze(1)).sum(-1)


def dot_loop(q, k):
    return torch.stack([q[b] @ k[b].T for b in range(q.shape[0])])


def scaled_prescaled_query(q, k):
    return (q / math.sqrt(q.size(-1))) @ k.mT


def scaled_matmul_power(q, k):
    return torch.matmul(q, k.transpose(1, 2)) * q.shape[-1] ** -0.5


def scaled_einsum_tensor_sqrt(q, k):
    return torch.einsum("bid,bjd->bij", q, k) / torch.tensor(q.shape[-1]).sqrt()


# --- general_scores -------------------------------------------------------------------------


def general_einsum(q, k, W):
    return torch.einsum("bid,de,bje->bij", q, W, k)


def general_project_keys(q, k, W):
    return q @ (k @ W.T).transpose(-2, -1)


def general_bmm(q, k, W):
    return torch.bmm(torch.matmul(q, W), k.permute(0, 2, 1))


# --- additive_scores ------------------------------------------------------------------------


def additive_concat(q, k, W_q, W_k, v):
    Tq, Tk = q.shape[1], k.shape[1]
    pairs = torch.cat([q.unsqueeze(2).expand(-1, -1, Tk, -1),
                       k.unsqueeze(1).expand(-1, Tq, -1, -1)], dim=-1)
    return torch.tanh(pairs @ torch.cat([W_q, W_k])) @ v


def additive_einsum(q, k, W_q, W_k, v):
    hidden = torch.tanh(torch.einsum("bqd,dh->bqh", q, W_q)[:, :, None]
                        + torch.einsum("bkd,dh->bkh", k, W_k)[:, None])
    return torch.einsum("bqkh,h->bqk", hidden, v)


def additive_loop_over_queries(q, k, W_q, W_k, v):
    keys = k @ W_k
    rows = [torch.tanh((q[:, i] @ W_q).unsqueeze(1) + keys) @ v for i in range(q.shape[1])]
    return torch.stack(rows, dim=1)


# --- attend ---------------------------------------------------------------------------------


def attend_fill_1e9(q, k, v, score_fn, mask=None):
    scores = score_fn(q, k)
    if mask is None:
        weights = scores.softmax(-1)
    else:
        weights = scores.masked_fill(mask == 0, -1e9).softmax(-1) * mask
    return weights @ v, weights


def attend_inf_nan_to_num_einsum(q, k, v, score_fn, mask=None):
    scores = score_fn(q, k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    return torch.einsum("bqk,bkd->bqd", weights, v), weights


def attend_loop_over_batch(q, k, v, score_fn, mask=None):
    scores = score_fn(q, k)
    if mask is not None:
        mask = torch.broadcast_to(mask, scores.shape)
    outs, all_weights = [], []
    for b in range(q.shape[0]):
        s = scores[b]
        if mask is None:
            w = torch.softmax(s, dim=-1)
        else:
            s = s.masked_fill(~mask[b], torch.finfo(s.dtype).min)
            w = torch.softmax(s, dim=-1) * mask[b].any(-1, keepdim=True)
        outs.append(w @ v[b])
        all_weights.append(w)
    return torch.stack(outs), torch.stack(all_weights)


# --- nadaraya_watson ------------------------------------------------------------------------


def nw_cdist(x_query, x_train, y_train, bandwidth):
    dist2 = torch.cdist(x_query[:, None], x_train[:, None]) ** 2
    weights = torch.softmax(-dist2 / (2 * bandwidth**2), dim=1)
    return weights @ y_train, weights


def nw_log_softmax(x_query, x_train, y_train, bandwidth):
    scores = -0.5 * ((x_query.reshape(-1, 1) - x_train.reshape(1, -1)) / bandwidth) ** 2
    weights = torch.log_softmax(scores, dim=-1).exp()
    return (weights * y_train).sum(-1), weights


def nw_float32(x_query, x_train, y_train, bandwidth):
    xq, xt, yt = x_query.float(), x_train.float(), y_train.float()
    scores = -((xq[:, None] - xt[None, :]) ** 2) / (2.0 * float(bandwidth) ** 2)
    scores = scores - scores.max(dim=1, keepdim=True).values
    kernel = scores.exp()
    weights = kernel / kernel.sum(dim=1, keepdim=True)
    return weights @ yt, weights


def nw_loop_over_queries(x_query, x_train, y_train, bandwidth):
    rows = []
    for x in x_query:
        s = -((x - x_train) ** 2) / (2 * bandwidth * bandwidth)
        rows.append(torch.exp(s - s.max()) / torch.exp(s - s.max()).sum())
    weights = torch.stack(rows)
    return weights @ y_train, weights


VARIANTS = {
    "hard_lookup": [
        Variant("argmax, then index the values", lookup_index),
        Variant("float32 arithmetic on any input", lookup_float32),
        Variant("Python loop over the keys, einsum", lookup_loop),
    ],
    "stable_softmax": [
        Variant("exp(x - logsumexp)", softmax_logsumexp),
        Variant("F.softmax", softmax_torch),
        Variant("float32 arithmetic, max().values", softmax_float32_max_values),
        Variant("movedim to the last axis", softmax_movedim),
    ],
    "masked_softmax": [
        Variant("fill -1e9, times the mask", masked_fill_1e9_times_mask),
        Variant("fill finfo.min, zero the masked weights", masked_finfo_min),
        Variant("fill -inf, nan_to_num", masked_inf_nan_to_num),
        Variant("torch.where and log_softmax", masked_log_softmax),
    ],
    "dot_scores": [
        Variant("einsum", dot_einsum),
        Variant("bmm", dot_bmm),
        Variant("broadcast multiply and sum", dot_broadcast_sum),
        Variant("loop over the batch", dot_loop),
    ],
    "scaled_dot_scores": [
        Variant("query scaled before the product", scaled_prescaled_query),
        Variant("matmul times d ** -0.5", scaled_matmul_power),
        Variant("einsum over a tensor sqrt", scaled_einsum_tensor_sqrt),
    ],
    "general_scores": [
        Variant("einsum", general_einsum),
        Variant("keys projected by Wᵀ first", general_project_keys),
        Variant("bmm and permute", general_bmm),
    ],
    "additive_scores": [
        Variant("concat [q; k] times [W_q; W_k] (Bahdanau's W_a)", additive_concat),
        Variant("einsum", additive_einsum),
        Variant("loop over the queries", additive_loop_over_queries),
    ],
    "attend": [
        Variant("fill -1e9, times the mask", attend_fill_1e9),
        Variant("fill -inf, nan_to_num, einsum", attend_inf_nan_to_num_einsum),
        Variant("loop over the batch, finfo.min", attend_loop_over_batch),
    ],
    "nadaraya_watson": [
        Variant("torch.cdist", nw_cdist),
        Variant("log_softmax", nw_log_softmax),
        Variant("float32 arithmetic on any input", nw_float32),
        Variant("loop over the queries", nw_loop_over_queries),
    ],
}
