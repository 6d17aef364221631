"""Correct answers for 05_self_attention written in other styles; each must earn full marks.

Styles of public implementations: the Annotated Transformer (``masked_fill(mask == 0,
-1e9)``, ``subsequent_mask``, a positional table from ``exp``/``log``), Hugging Face (an
additive ``finfo.min`` mask, queries scaled before the product), d2l (``sequence_mask``,
``masked_softmax`` with -1e6, ``bmm``), nanoGPT (a fused QKV projection, a ``tril`` buffer
compared with 1), TensorFlow's tutorial (a numpy table), einsum, a softmax written out with
the row maximum subtracted, Python loops, ``nn.LazyLinear``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Variant

# --- scaled_dot_product_attention -------------------------------------------------------


def sdpa_annotated(q, k, v, mask=None):
    d_k = q.size(-1)
    scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = scores.softmax(dim=-1)
    if mask is not None:
        p_attn = p_attn * mask  # a row with every key masked: 0 instead of uniform
    return torch.matmul(p_attn, v), p_attn


def sdpa_additive_finfo(q, k, v, mask=None):
    q = q * q.shape[-1] ** -0.5
    scores = q @ k.transpose(-1, -2)
    if mask is not None:
        blocked = ~mask.bool()
        additive = torch.zeros(blocked.shape, dtype=scores.dtype, device=scores.device)
        scores = scores + additive.masked_fill(blocked, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)
    if mask is not None:
        weights = weights.masked_fill(blocked, 0.0)
    return weights @ v, weights


def sdpa_einsum_inf(q, k, v, mask=None):
    scores = torch.einsum("...qd,...kd->...qk", q, k) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    weights = torch.where(torch.isnan(weights), torch.zeros_like(weights), weights)
    return torch.einsum("...qk,...kd->...qd", weights, v), weights


def sdpa_manual_softmax(q, k, v, mask=None):
    scores = q.matmul(k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
    if mask is not None:
        scores = scores.masked_fill(~mask, -1e4)
    e = (scores - scores.amax(dim=-1, keepdim=True)).exp()
    if mask is not None:
        e = e * mask
    # the row's maximum contributes exp(0) = 1, so a row with a key left sums to >= 1; a
    # row with none sums to 0 and stays 0
    weights = e / e.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return weights.matmul(v), weights


# --- padding_mask ---------------------------------------------------------------------------


def padding_sequence_mask(lengths, max_len):
    positions = torch.arange(max_len, dtype=torch.float32, device=lengths.device)
    mask = positions[None, :] < lengths[:, None]
    return mask[:, None, :]


def padding_python_rows(lengths, max_len):
    rows = [[t < int(n) for t in range(max_len)] for n in lengths]
    return torch.tensor(rows, dtype=torch.bool).unsqueeze(1)


def padding_cumsum(lengths, max_len):
    counts = torch.ones(len(lengths), max_len, dtype=torch.long).cumsum(dim=1)
    return (counts <= lengths.unsqueeze(1)).view(-1, 1, max_len)


def padding_expand(lengths, max_len):
    positions = torch.arange(max_len).expand(len(lengths), max_len)
    return (positions < lengths.unsqueeze(-1)).unsqueeze(-2)


# --- causal_mask ----------------------------------------------------------------------------


def causal_subsequent(T):
    attn_shape = (1, T, T)
    subsequent = torch.triu(torch.ones(attn_shape), diagonal=1).type(torch.uint8)
    return (subsequent == 0)[0]


def causal_arange(T):
    i = torch.arange(T)
    return i[:, None] >= i[None, :]


def causal_numpy(T):
    return torch.from_numpy(np.tril(np.ones((T, T), dtype=bool)))


def causal_tril_equals_one(T):
    return torch.tril(torch.ones(T, T)) == 1


# --- SelfAttention ----------------------------------------------------------------------


class SAFusedQKV(nn.Module):
    """One product for q, k and v: the three weights concatenated, the result split."""

    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.sizes = (d_k, d_k, d_v)
        self.w_q = nn.Linear(d_model, d_k, bias=False)
        self.w_k = nn.Linear(d_model, d_k, bias=False)
        self.w_v = nn.Linear(d_model, d_v, bias=False)

    def forward(self, x, mask=None):
        weight = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight], dim=0)
        q, k, v = F.linear(x, weight).split(self.sizes, dim=-1)
        return sdpa_annotated(q, k, v, mask)


class SALazyKeepsAttn(nn.Module):
    """Lazily built projections; the weights of the last call kept on ``self.attn``."""

    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.w_q = nn.LazyLinear(d_k, bias=False)
        self.w_k = nn.LazyLinear(d_k, bias=False)
        self.w_v = nn.LazyLinear(d_v, bias=False)
        self.attn = None

    def forward(self, x, mask=None):
        q, k, v = self.w_q(x), self.w_k(x), self.w_v(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(k.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        self.attn = torch.softmax(scores, dim=-1)
        if mask is not None:
            self.attn = self.attn.masked_fill(mask == 0, 0.0)
        return self.attn @ v, self.attn


class SAEinsumPrescaled(nn.Module):
    """Queries scaled right after their projection, einsum products, a finfo.min fill."""

    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.scaling = d_k ** -0.5
        self.w_q = nn.Linear(d_model, d_k, bias=False)
        self.w_k = nn.Linear(d_model, d_k, bias=False)
        self.w_v = nn.Linear(d_model, d_v, bias=False)

    def forward(self, x, mask=None):
        q = self.w_q(x) * self.scaling
        k, v = self.w_k(x), self.w_v(x)
        scores = torch.einsum("bqd,bkd->bqk", q, k)
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        weights = scores.softmax(-1)
        if mask is not None:
            weights = weights * mask.to(weights.dtype)
        return torch.einsum("bqk,bkd->bqd", weights, v), weights


def _d2l_masked_softmax(scores, mask):
    """d2l's masked softmax: blocked scores replaced by -1e6, then zeroed weights."""
    if mask is None:
        return nn.functional.softmax(scores, dim=-1)
    keep = mask.expand(scores.shape)
    filled = torch.where(keep, scores, torch.full_like(scores, -1e6))
    return nn.functional.softmax(filled, dim=-1) * keep


class SAD2LBmm(nn.Module):
    """d2l's DotProductAttention: torch.bmm and a masked softmax with -1e6."""

    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_k, bias=False)
        self.w_k = nn.Linear(d_model, d_k, bias=False)
        self.w_v = nn.Linear(d_model, d_v, bias=False)

    def forward(self, x, mask=None):
        queries, keys, values = self.w_q(x), self.w_k(x), self.w_v(x)
        d = queries.shape[-1]
        scores = torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)
        self.attention_weights = _d2l_masked_softmax(scores, mask)
        return torch.bmm(self.attention_weights, values), self.attention_weights


# --- sinusoidal_positional_encoding -------------------------------------------------------


def pe_numpy(max_len, d_model):
    def get_angles(pos, i, d):
        return pos / np.power(10000, (2 * (i // 2)) / np.float32(d))

    angle_rads = get_angles(np.arange(max_len)[:, np.newaxis],
                            np.arange(d_model)[np.newaxis, :], d_model)
    angle_rads[:, 0::2] = np.sin(angle_rads[:, 0::2])
    angle_rads[:, 1::2] = np.cos(angle_rads[:, 1::2])
    return torch.tensor(angle_rads, dtype=torch.float32)


def pe_annotated(max_len, d_model):
    pe = torch.zeros(max_len, d_model)
    position = torch.arange(0, max_len).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


def pe_python_loops(max_len, d_model):
    rows = []
    for pos in range(max_len):
        row = []
        for i in range(0, d_model, 2):
            angle = pos / 10000 ** (i / d_model)
            row += [math.sin(angle), math.cos(angle)]
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float32).reshape(max_len, d_model)


def pe_pow_interleaved(max_len, d_model):
    X = torch.arange(max_len, dtype=torch.float32).reshape(-1, 1) / torch.pow(
        10000, torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    return torch.stack([torch.sin(X), torch.cos(X)], dim=2).reshape(max_len, d_model)


VARIANTS = {
    "scaled_dot_product_attention": [
        Variant("Annotated Transformer: masked_fill(mask == 0, -1e9), weights * mask",
                sdpa_annotated),
        Variant("pre-scaled queries, additive finfo.min mask", sdpa_additive_finfo),
        Variant("einsum, -inf then NaN rows set to 0 with torch.where", sdpa_einsum_inf),
        Variant("softmax written out: -1e4 fill, row max subtracted, exp, normalise",
                sdpa_manual_softmax),
    ],
    "padding_mask": [
        Variant("d2l sequence_mask on float positions", padding_sequence_mask),
        Variant("Python lists of booleans", padding_python_rows),
        Variant("cumsum of ones compared with the lengths", padding_cumsum),
        Variant("expand + compare + unsqueeze(-2)", padding_expand),
    ],
    "causal_mask": [
        Variant("Annotated Transformer subsequent_mask (triu == 0)", causal_subsequent),
        Variant("arange comparison i >= j", causal_arange),
        Variant("numpy tril", causal_numpy),
        Variant("nanoGPT: tril(ones) == 1", causal_tril_equals_one),
    ],
    "SelfAttention": [
        Variant("fused QKV projection (one F.linear, then split)", SAFusedQKV),
        Variant("lazy layers, -1e9 fill, weights kept on self.attn", SALazyKeepsAttn),
        Variant("einsum, pre-scaled queries, finfo.min fill", SAEinsumPrescaled),
        Variant("d2l: torch.bmm and a masked softmax with -1e6", SAD2LBmm),
    ],
    "sinusoidal_positional_encoding": [
        Variant("numpy table (get_angles), cast to float32", pe_numpy),
        Variant("Annotated Transformer: exp/log div_term, pe[:, 0::2] = sin", pe_annotated),
        Variant("Python loops with math.sin and math.cos", pe_python_loops),
        Variant("pow in float32, interleaved by stack + reshape", pe_pow_interleaved),
    ],
}
