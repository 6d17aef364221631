"""Reference solutions for 06_transformer_encoder, built on PyTorch's own modules.

The graded modules keep the contract's layout (``w_q``, ``w_k``, ``w_v``, ``w_o``; ``linear1``,
``linear2``; ``norm1``, ``norm2``), so a reference ``state_dict`` loads into a student's module.
Their forward passes run ``nn.MultiheadAttention`` and ``nn.TransformerEncoderLayer`` themselves,
through ``torch.func.functional_call`` with the contract's parameters packed into PyTorch's
layout (``in_proj_weight`` = ``[w_q; w_k; w_v]``, ``out_proj`` = ``w_o``). Gradients flow to the
contract's parameters, and the notebook's from-scratch solution meets an independent witness.

Two differences from PyTorch are bridged here, as the course contract requires:

- masks: the course's ``True`` means "may attend"; PyTorch's ``attn_mask`` and
  ``key_padding_mask`` use ``True`` for "blocked";
- a query whose keys are all masked gets weights 0 (PyTorch gives NaN); its attention output
  is then ``0 @ V = 0`` and the projected output is ``w_o``'s bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

# --- helpers given to the students in the notebook (from notebook 05) ------------------


def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q kᵀ / sqrt(d_k)) v with the course's mask convention, via PyTorch's kernel."""
    Tq, Tk = q.shape[-2], k.shape[-2]
    if mask is None:
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)
        return F.scaled_dot_product_attention(q, k, v), weights
    mask = mask.expand(*mask.shape[:-2], Tq, Tk)
    dead = ~mask.any(-1, keepdim=True)
    safe = mask | dead
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~safe, float("-inf")), dim=-1)
    return out.masked_fill(dead, 0.0), weights.masked_fill(~mask, 0.0)


def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...), computed in float64."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64)
                         * (-math.log(10000.0) / d_model))
    angles = position * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).float()


# --- heads ------------------------------------------------------------------------------


def split_heads(x, num_heads):
    """(B, T, D) -> (B, H, T, D/H): head h gets the h-th contiguous block of features."""
    return torch.stack(x.chunk(num_heads, dim=-1), dim=1)


def merge_heads(x):
    """(B, H, T, Dh) -> (B, T, H*Dh): the heads' features side by side, head 0 first."""
    return torch.cat(x.unbind(1), dim=-1)


# --- masks: the course's convention to PyTorch's ----------------------------------------


def full_mask(mask, B: int, Tq: int, Tk: int):
    """A course mask broadcastable to (B, Tq, Tk) -> (mask (B, Tq, Tk), dead (B, Tq)) where
    ``dead`` marks queries with no key to attend to."""
    mask = torch.as_tensor(mask, dtype=torch.bool).expand(B, Tq, Tk)
    return mask, ~mask.any(-1)


def torch_attn_mask(mask, dead, num_heads: int):
    """The blocked positions in PyTorch's layout (B*H, Tq, Tk), True = blocked. Rows with
    nothing to attend to are opened (and zeroed afterwards), so PyTorch returns no NaN."""
    safe = mask | dead.unsqueeze(-1)
    return (~safe).repeat_interleave(num_heads, dim=0)


def key_padding_mask(mask):
    """The course's (B, 1, Tk) padding mask (True = real token) as PyTorch's
    ``key_padding_mask`` (B, Tk) (True = padding, ignore)."""
    return ~mask.reshape(mask.shape[0], mask.shape[-1])


# --- multi-head attention ---------------------------------------------------------------

_TEMPLATES: dict = {}


def _template(kind: str, *args):
    """An nn.MultiheadAttention / nn.TransformerEncoderLayer used only as code: its own
    parameters are replaced by ours at every call (functional_call)."""
    key = (kind, *args)
    if key not in _TEMPLATES:
        if kind == "mha":
            d_model, num_heads, dropout = args
            module = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        else:
            d_model, num_heads, d_ff, dropout = args
            module = nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout=dropout,
                                                activation="relu", batch_first=True,
                                                norm_first=False)
        _TEMPLATES[key] = module.requires_grad_(False)
    return _TEMPLATES[key]


def torch_mha_params(mha, prefix: str = "") -> dict:
    """The contract's w_q/w_k/w_v/w_o as nn.MultiheadAttention's parameters."""
    return {
        prefix + "in_proj_weight": torch.cat([mha.w_q.weight, mha.w_k.weight, mha.w_v.weight]),
        prefix + "in_proj_bias": torch.cat([mha.w_q.bias, mha.w_k.bias, mha.w_v.bias]),
        prefix + "out_proj.weight": mha.w_o.weight,
        prefix + "out_proj.bias": mha.w_o.bias,
    }


class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        assert d_model % num_heads == 0, "d_model must be divisible by num_heads"
        self.d_model, self.num_heads, self.p = d_model, num_heads, dropout
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        B, Tq, _ = query.shape
        Tk = key.shape[1]
        torch_mha = _template("mha", self.d_model, self.num_heads, self.p).train(self.training)
        kwargs = {"need_weights": True, "average_attn_weights": False}
        dead = None
        if mask is not None:
            mask, dead = full_mask(mask, B, Tq, Tk)
            kwargs["attn_mask"] = torch_attn_mask(mask, dead, self.num_heads)
        out, weights = functional_call(torch_mha, torch_mha_params(self), (query, key, value),
                                       kwargs)
        if dead is not None:
            weights = weights.masked_fill(dead[:, None, :, None], 0.0)
            out = torch.where(dead.unsqueeze(-1), self.w_o.bias.expand_as(out), out)
        return out, weights


def to_torch_mha(mha) -> nn.MultiheadAttention:
    """A real nn.MultiheadAttention(batch_first=True) holding a copy of mha's weights."""
    torch_mha = nn.MultiheadAttention(mha.w_q.in_features, mha.num_heads, batch_first=True)
    with torch.no_grad():
        for name, value in torch_mha_params(mha).items():
            torch_mha.get_parameter(name).copy_(value)
    return torch_mha.eval()


# --- feed-forward, encoder layer, encoder -----------------------------------------------


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


def torch_layer_params(layer) -> dict:
    """The contract's EncoderLayer parameters as nn.TransformerEncoderLayer's."""
    params = torch_mha_params(layer.self_attn, "self_attn.")
    for mine, theirs in (("ffn.linear1", "linear1"), ("ffn.linear2", "linear2"),
                         ("norm1", "norm1"), ("norm2", "norm2")):
        for p in ("weight", "bias"):
            params[f"{theirs}.{p}"] = layer.get_parameter(f"{mine}.{p}")
    return params


class EncoderLayer(nn.Module):
    """Post-LN: x = norm1(x + attn(x)); x = norm2(x + ffn(x)), run by nn.TransformerEncoderLayer."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.args = (d_model, num_heads, d_ff, dropout)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
        B, T, D = x.shape
        torch_layer = _template("layer", *self.args).train(self.training)
        kwargs, dead = {}, None
        if mask is not None:
            mask, dead = full_mask(mask, B, T, T)
            kwargs["src_mask"] = torch_attn_mask(mask, dead, self.self_attn.num_heads)
        out = functional_call(torch_layer, torch_layer_params(self), (x,), kwargs)
        if dead is not None and bool(dead.any()):
            # a query with nothing to attend to receives w_o's bias from the attention sublayer
            h = self.norm1(x + self.self_attn.w_o.bias)
            out = torch.where(dead.unsqueeze(-1), self.norm2(h + self.ffn(h)), out)
        _, weights = self.self_attn(x, x, x, mask)
        return out, weights


def to_torch_layer(layer) -> nn.TransformerEncoderLayer:
    """A real nn.TransformerEncoderLayer(norm_first=False, batch_first=True) holding a copy of
    layer's weights."""
    d_model = layer.norm1.normalized_shape[0]
    d_ff = layer.ffn.linear1.out_features
    torch_layer = nn.TransformerEncoderLayer(d_model, layer.self_attn.num_heads, d_ff,
                                             dropout=0.0, batch_first=True, norm_first=False)
    with torch.no_grad():
        for name, value in torch_layer_params(layer).items():
            torch_layer.get_parameter(name).copy_(value)
    return torch_layer.eval()


class TransformerEncoder(nn.Module):
    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model),
                             persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens, mask=None):
        T = tokens.shape[1]
        x = self.dropout(self.embedding(tokens) * math.sqrt(self.d_model) + self.pe[:T])
        attentions = []
        for layer in self.layers:
            x, weights = layer(x, mask)
            attentions.append(weights)
        return x, attentions
