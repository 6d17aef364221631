"""Reference solutions for 03_qkv_lookup.

Built on PyTorch's own functions where they exist (``F.softmax``, ``F.bilinear``,
``F.linear``, ``torch.distributions.Normal``, ``torch.einsum``), so they are a witness
independent of the notebook's from-scratch solutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Normal


def hard_lookup(query, keys, values):
    scores = keys @ query
    # Walk the keys like a dictionary scan: the first key with the best score wins.
    best = 0
    for i in range(1, scores.shape[0]):
        if scores[i] > scores[best]:
            best = i
    weights = F.one_hot(torch.tensor(best), scores.shape[0]).to(values.dtype)
    return weights @ values


def stable_softmax(scores, dim=-1):
    return F.softmax(scores, dim=dim)


def masked_softmax(scores, mask, dim=-1):
    mask, scores = torch.broadcast_tensors(mask, scores)
    # The most negative finite number: an all-masked row softmaxes to uniform weights
    # (no NaN), which the multiplication by the mask then sets to 0.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return F.softmax(filled, dim=dim) * mask


def dot_scores(q, k):
    return torch.einsum("bqd,bkd->bqk", q, k)


def scaled_dot_scores(q, k):
    return torch.einsum("bqd,bkd->bqk", q, k) / math.sqrt(q.shape[-1])


def general_scores(q, k, W):
    # F.bilinear computes x1ᵀ A x2 for paired rows: pair every query with every key.
    B, Tq, Dq = q.shape
    Tk, Dk = k.shape[1], k.shape[2]
    q_pairs = q.unsqueeze(2).expand(B, Tq, Tk, Dq).contiguous()
    k_pairs = k.unsqueeze(1).expand(B, Tq, Tk, Dk).contiguous()
    return F.bilinear(q_pairs, k_pairs, W.unsqueeze(0)).squeeze(-1)


def additive_scores(q, k, W_q, W_k, v):
    # The concat form: v^T tanh([q_i; k_j] @ [W_q; W_k]) equals v^T tanh(q_i W_q + k_j W_k).
    B, Tq, Dq = q.shape
    Tk, Dk = k.shape[1], k.shape[2]
    pairs = torch.cat(
        [q.unsqueeze(2).expand(B, Tq, Tk, Dq), k.unsqueeze(1).expand(B, Tq, Tk, Dk)], dim=-1
    )
    hidden = torch.tanh(F.linear(pairs, torch.cat([W_q, W_k], dim=0).T))
    return F.linear(hidden, v.unsqueeze(0)).squeeze(-1)


def attend(q, k, v, score_fn, mask=None):
    scores = score_fn(q, k)
    weights = F.softmax(scores, dim=-1) if mask is None else masked_softmax(scores, mask)
    return torch.einsum("bqk,bkv->bqv", weights, v), weights


def nadaraya_watson(x_query, x_train, y_train, bandwidth):
    # The Gaussian kernel's log-density; its normalising constant cancels in the softmax.
    log_kernel = Normal(x_train, bandwidth).log_prob(x_query.unsqueeze(-1))  # (M, N)
    weights = torch.exp(torch.log_softmax(log_kernel, dim=-1))
    return weights @ y_train, weights
