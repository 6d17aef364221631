"""Reference solutions for 05_self_attention.

Built on PyTorch's own pieces (``F.scaled_dot_product_attention``,
``nn.Transformer.generate_square_subsequent_mask``) so that they are a witness independent
of the notebook's from-scratch solutions.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def scaled_dot_product_attention(q, k, v, mask=None):
    """``softmax(q kᵀ / sqrt(d_k)) v`` with the course's mask contract.

    ``F.scaled_dot_product_attention`` returns no weights, and (depending on the PyTorch
    version and backend) NaN for a query whose keys are all masked. So: the weights come
    from the same kernel applied to identity values (``weights @ I = weights``), and fully
    masked rows are given an all-True mask (no NaN can arise, forward or backward) and
    zeroed afterwards, which is what the contract asks for.
    """
    Tk = k.shape[-2]
    eye = torch.eye(Tk, dtype=v.dtype, device=v.device).expand(*k.shape[:-2], Tk, Tk)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v), F.scaled_dot_product_attention(q, k, eye)
    mask = mask.to(torch.bool)
    # broadcast by `&`, not torch.broadcast_shapes: that one imports sympy (0.7 s) on first use
    full = mask & torch.ones(*q.shape[:-1], Tk, dtype=torch.bool, device=mask.device)
    has_key = full.any(dim=-1, keepdim=True)  # (..., Tq, 1)
    safe = full | ~has_key
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe)
    weights = F.scaled_dot_product_attention(q, k, eye, attn_mask=safe)
    return out.masked_fill(~has_key, 0.0), weights.masked_fill(~has_key, 0.0)


def padding_mask(lengths, max_len):
    positions = torch.arange(max_len, device=lengths.device)
    return (positions.unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(1)


def causal_mask(T):
    # PyTorch's float mask holds -inf where attention is blocked; the course's bool mask
    # holds True where it is allowed.
    return ~torch.isinf(nn.Transformer.generate_square_subsequent_mask(T))


class SelfAttention(nn.Module):
    def __init__(self, d_model, d_k, d_v):
        super().__init__()
        self.w_q = nn.Linear(d_model, d_k, bias=False)
        self.w_k = nn.Linear(d_model, d_k, bias=False)
        self.w_v = nn.Linear(d_model, d_v, bias=False)

    def forward(self, x, mask=None):
        return scaled_dot_product_attention(self.w_q(x), self.w_k(x), self.w_v(x), mask)


def positional_encoding64(max_len, d_model):
    """The sinusoidal table in float64 (what the check compares against)."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.exp(
        -math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model
    )
    angle = position * inv_freq  # (max_len, d_model / 2)
    # stack + flatten interleaves: [sin_0, cos_0, sin_1, cos_1, ...]
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)


def sinusoidal_positional_encoding(max_len, d_model):
    return positional_encoding64(max_len, d_model).to(torch.get_default_dtype())
