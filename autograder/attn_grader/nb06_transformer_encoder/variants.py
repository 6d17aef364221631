"""Correct answers for 06_transformer_encoder written in other styles; each must earn full
marks.

They follow the contract's signatures and submodule names, and otherwise the habits of
public implementations: the Annotated Transformer's ``clones`` and sublayer connections
(attention weights kept on ``self.attn``), masking constants from -1e4 to ``finfo.min`` and
``-inf``, a fused QKV projection, einsum, per-head loops, ``nn.LazyLinear``, PyTorch's
``F.scaled_dot_product_attention``, PyTorch's ``_sa_block`` / ``_ff_block`` split, d2l's
blocks appended one by one, positional tables from numpy or plain Python loops.
"""

from __future__ import annotations

import copy
import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Variant

# --- split_heads ------------------------------------------------------------------------


def split_view_transpose(x, num_heads):
    batch, length, width = x.size()
    return x.view(batch, length, num_heads, width // num_heads).transpose(1, 2)


def split_stack_chunks(x, num_heads):
    head_dim = x.shape[-1] // num_heads
    return torch.stack(torch.split(x, head_dim, dim=-1), dim=1)


def split_unflatten_permute(x, num_heads):
    return x.unflatten(-1, (num_heads, -1)).permute(0, 2, 1, 3)


def split_loop(x, num_heads):
    d = x.shape[-1] // num_heads
    return torch.stack([x[:, :, h * d:(h + 1) * d] for h in range(num_heads)], dim=1)


# --- merge_heads ------------------------------------------------------------------------


def merge_transpose_view(x):
    batch, heads, length, d = x.size()
    return x.transpose(1, 2).contiguous().view(batch, length, heads * d)


def merge_loop_cat(x):
    return torch.cat([x[:, h] for h in range(x.size(1))], dim=-1)


def merge_permute_flatten(x):
    return x.permute(0, 2, 1, 3).flatten(start_dim=2)


def merge_einsum(x):
    batch, _, length, _ = x.shape
    return torch.einsum("bhtd->bthd", x).reshape(batch, length, -1)


# --- MultiHeadAttention -----------------------------------------------------------------


class MHAAnnotated(nn.Module):
    """The Annotated Transformer's layout: one loop over the three projections, a -1e9
    fill, the weights kept on ``self.attn``."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        assert d_model % num_heads == 0
        self.d_k, self.h = d_model // num_heads, num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(p=dropout)
        self.attn = None

    def forward(self, query, key, value, mask=None):
        if mask is not None:
            mask = mask.unsqueeze(-3)  # the same mask for every head
        nbatches = query.size(0)
        query, key, value = [
            lin(t).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, t in zip((self.w_q, self.w_k, self.w_v), (query, key, value))
        ]
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            scores = scores.masked_fill(mask == 0, -1e9)
        p_attn = scores.softmax(dim=-1)
        if mask is not None:
            p_attn = p_attn * mask  # a query with no key left: weights 0, not uniform
        self.attn = p_attn
        x = torch.matmul(self.dropout(p_attn), value)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        return self.w_o(x), self.attn


class MHAFusedEinsum(nn.Module):
    """One matrix product for q, k and v (the three weights concatenated, as nanoGPT's
    ``c_attn``), einsum for the scores, an additive ``finfo.min`` mask (Hugging Face)."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.n_head, self.d_model = num_heads, d_model
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.attn_dropout = nn.Dropout(dropout)

    def _qkv(self, query, key, value):
        weight = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight], dim=0)
        bias = torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias], dim=0)
        if query is key and key is value:  # self-attention: one product
            return F.linear(query, weight, bias).split(self.d_model, dim=-1)
        ws, bs = weight.split(self.d_model), bias.split(self.d_model)
        return tuple(F.linear(t, w, b) for t, w, b in zip((query, key, value), ws, bs))

    def forward(self, query, key, value, mask=None):
        B, Tq, C = query.shape
        Tk = key.shape[1]
        q, k, v = self._qkv(query, key, value)
        hs = C // self.n_head
        q = q.view(B, Tq, self.n_head, hs)
        k = k.view(B, Tk, self.n_head, hs)
        v = v.view(B, Tk, self.n_head, hs)
        att = torch.einsum("bqhd,bkhd->bhqk", q, k) * (1.0 / math.sqrt(hs))
        if mask is not None:
            allowed = mask.unsqueeze(-3).to(torch.bool)
            bias = torch.zeros_like(att).masked_fill(~allowed, torch.finfo(att.dtype).min)
            att = att + bias
        att = F.softmax(att, dim=-1)
        if mask is not None:
            att = att.masked_fill(~allowed, 0.0)
        y = torch.einsum("bhqk,bkhd->bqhd", self.attn_dropout(att), v).reshape(B, Tq, C)
        return self.w_o(y), att


class MHAHeadLoop(nn.Module):
    """One head at a time, slicing each projection's rows; -inf, then NaN rows set to 0."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.p = dropout

    def forward(self, query, key, value, mask=None):
        outputs, maps = [], []
        for h in range(self.num_heads):
            rows = slice(h * self.head_dim, (h + 1) * self.head_dim)
            qh = F.linear(query, self.w_q.weight[rows], self.w_q.bias[rows])
            kh = F.linear(key, self.w_k.weight[rows], self.w_k.bias[rows])
            vh = F.linear(value, self.w_v.weight[rows], self.w_v.bias[rows])
            scores = qh @ kh.transpose(-2, -1) / self.head_dim ** 0.5
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
            dropped = F.dropout(weights, self.p, training=self.training)
            outputs.append(dropped @ vh)
            maps.append(weights)
        return self.w_o(torch.cat(outputs, dim=-1)), torch.stack(maps, dim=1)


class MHALazySDPA(nn.Module):
    """Lazily built projections, PyTorch's fused kernel for the output (nanoGPT's flash
    path) and the weights computed beside it; fully masked rows opened, then zeroed."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads, self.dropout = num_heads, dropout
        self.w_q = nn.LazyLinear(d_model)
        self.w_k = nn.LazyLinear(d_model)
        self.w_v = nn.LazyLinear(d_model)
        self.w_o = nn.LazyLinear(d_model)

    def _heads(self, t):
        return t.view(t.size(0), t.size(1), self.num_heads, -1).transpose(1, 2)

    def forward(self, query, key, value, mask=None):
        q, k, v = self._heads(self.w_q(query)), self._heads(self.w_k(key)), self._heads(
            self.w_v(value))
        scale = q.size(-1) ** -0.5
        scores = (q @ k.transpose(-2, -1)) * scale
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v,
                                               dropout_p=self.dropout if self.training else 0)
            weights = scores.softmax(-1)
        else:
            allowed = mask.unsqueeze(-3).expand(scores.shape)
            dead = ~allowed.any(-1, keepdim=True)
            opened = allowed | dead
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=opened,
                                               dropout_p=self.dropout if self.training else 0)
            y = y.masked_fill(dead, 0.0)
            weights = scores.masked_fill(~opened, float("-inf")).softmax(-1)
            weights = weights.masked_fill(~allowed, 0.0)
        y = y.transpose(1, 2).reshape(query.size(0), query.size(1), -1)
        return self.w_o(y), weights


class MHAPrescaled(nn.Module):
    """Queries scaled right after their projection (fairseq's ``q *= self.scaling``, done out
    of place); masked with -1e4 as early BERT code did."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scaling = (d_model // num_heads) ** -0.5
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout_module = nn.Dropout(dropout)

    def _shape(self, t):
        bsz, length, dim = t.shape
        return t.reshape(bsz, length, self.num_heads, dim // self.num_heads).permute(0, 2, 1, 3)

    def forward(self, query, key, value, mask=None):
        q = self._shape(self.w_q(query) * self.scaling)
        k, v = self._shape(self.w_k(key)), self._shape(self.w_v(value))
        attn_weights = torch.matmul(q, k.transpose(2, 3))
        if mask is not None:
            keep = mask.unsqueeze(-3)
            attn_weights = attn_weights.masked_fill(~keep, -1e4)
        attn_probs = torch.softmax(attn_weights, dim=-1)
        if mask is not None:
            attn_probs = attn_probs.masked_fill(~keep, 0.0)
        out = torch.matmul(self.dropout_module(attn_probs), v)
        bsz, _, tgt_len, _ = out.shape
        out = out.permute(0, 2, 1, 3).reshape(bsz, tgt_len, -1)
        return self.w_o(out), attn_probs


# --- FeedForward ------------------------------------------------------------------------


class FFNSequential(nn.Sequential):
    """An nn.Sequential whose layers are named as the contract says."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__(OrderedDict([
            ("linear1", nn.Linear(d_model, d_ff)),
            ("relu", nn.ReLU()),
            ("dropout", nn.Dropout(dropout)),
            ("linear2", nn.Linear(d_ff, d_model)),
        ]))


class FFNLazy(nn.Module):
    """Both layers built lazily: their input sizes are taken from the first input."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.LazyLinear(d_ff)
        self.linear2 = nn.LazyLinear(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class FFNFunctional(nn.Module):
    """F.linear on the layers' weights, F.dropout that follows self.training."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.p = dropout

    def forward(self, x):
        hidden = F.relu(F.linear(x, self.linear1.weight, self.linear1.bias))
        hidden = F.dropout(hidden, p=self.p, training=self.training)
        return F.linear(hidden, self.linear2.weight, self.linear2.bias)


class FFNEinsumClamp(nn.Module):
    """The two products as einsums over the layers' weights, ReLU as clamp(min=0)."""

    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        h = torch.einsum("...d,fd->...f", x, self.linear1.weight) + self.linear1.bias
        h = self.drop(h.clamp(min=0))
        return torch.einsum("...f,df->...d", h, self.linear2.weight) + self.linear2.bias


# --- EncoderLayer -----------------------------------------------------------------------


class LayerAnnotated(nn.Module):
    """Sublayer connections as in the Annotated Transformer (a residual helper called with
    a lambda); the attention weights are read from ``self_attn.attn``."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAAnnotated(d_model, num_heads, dropout)
        self.ffn = FFNSequential(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def _sublayer(self, x, norm, sublayer):
        return norm(x + self.dropout(sublayer(x)))

    def forward(self, x, mask=None):
        x = self._sublayer(x, self.norm1, lambda t: self.self_attn(t, t, t, mask)[0])
        x = self._sublayer(x, self.norm2, self.ffn)
        return x, self.self_attn.attn


class LayerTorchBlocks(nn.Module):
    """nn.TransformerEncoderLayer's ``_sa_block`` / ``_ff_block`` split, with lazily built
    sublayers."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHALazySDPA(d_model, num_heads, dropout)
        self.ffn = FFNLazy(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def _sa_block(self, x, mask):
        out, weights = self.self_attn(x, x, x, mask)
        return self.dropout1(out), weights

    def _ff_block(self, x):
        return self.dropout2(self.ffn(x))

    def forward(self, x, mask=None):
        sa, weights = self._sa_block(x, mask)
        x = self.norm1(x + sa)
        x = self.norm2(x + self._ff_block(x))
        return x, weights


class LayerHeadLoopEps(nn.Module):
    """Per-head attention in a loop, the einsum feed-forward, LayerNorm with eps=1e-6 (the
    Annotated Transformer's value)."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAHeadLoop(d_model, num_heads, dropout)
        self.ffn = FFNEinsumClamp(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        residual = x
        x, attn = self.self_attn(query=x, key=x, value=x, mask=mask)
        x = self.norm1(residual + self.drop(x))
        residual = x
        x = self.norm2(residual + self.drop(self.ffn(x)))
        return x, attn


class LayerFusedSequential(nn.Module):
    """Fused-QKV attention with an additive finfo.min mask, the nn.Sequential feed-forward;
    the layer's own dropout applied functionally."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAFusedEinsum(d_model, num_heads, dropout)
        self.ffn = FFNSequential(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.p = dropout

    def forward(self, x, mask=None):
        attended, weights = self.self_attn(x, x, x, mask)
        h = self.norm1(x + F.dropout(attended, self.p, self.training))
        return self.norm2(h + F.dropout(self.ffn(h), self.p, self.training)), weights


# --- TransformerEncoder -----------------------------------------------------------------


def clones(module, n):
    """n independent deep copies (the Annotated Transformer's helper)."""
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def numpy_table(max_len, d_model):
    """The sinusoidal table computed in numpy (as TensorFlow's tutorial does)."""
    pos = np.arange(max_len)[:, np.newaxis]
    i = np.arange(d_model)[np.newaxis, :]
    angle_rads = pos / np.power(10000, (2 * (i // 2)) / np.float64(d_model))
    angle_rads[:, 0::2] = np.sin(angle_rads[:, 0::2])
    angle_rads[:, 1::2] = np.cos(angle_rads[:, 1::2])
    return torch.from_numpy(angle_rads).float()


class EncoderAnnotated(nn.Module):
    """Layers made by ``clones`` (deep copies of one built layer), a numpy positional table."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = clones(LayerAnnotated(d_model, num_heads, d_ff, dropout), num_layers)
        self.register_buffer("pe", numpy_table(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens, mask=None):
        x = self.embedding(tokens) * math.sqrt(self.d_model)
        x = self.dropout(x + self.pe[: x.size(1)])
        attentions = []
        for layer in self.layers:
            x, attn = layer(x, mask)
            attentions.append(attn)
        return x, attentions


class EncoderD2L(nn.Module):
    """d2l's habits: blocks appended one by one, a positional table filled by Python loops,
    the attention weights of the last call kept on ``self.attention_weights``."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.num_hiddens = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = nn.ModuleList()
        for _ in range(num_layers):
            self.layers.append(LayerHeadLoopEps(d_model, num_heads, d_ff, dropout))
        table = torch.zeros(max_len, d_model)
        for pos in range(max_len):
            for i in range(0, d_model, 2):
                angle = pos / (10000 ** (i / d_model))
                table[pos, i] = math.sin(angle)
                table[pos, i + 1] = math.cos(angle)
        self.register_buffer("pe", table, persistent=False)
        self.dropout = nn.Dropout(dropout)
        self.attention_weights = [None] * num_layers

    def forward(self, tokens, mask=None):
        X = self.embedding(tokens) * math.sqrt(self.num_hiddens)
        X = self.dropout(X + self.pe[: X.shape[1], :].unsqueeze(0))
        for i, blk in enumerate(self.layers):
            X, self.attention_weights[i] = blk(X, mask)
        return X, list(self.attention_weights)


class EncoderLazyStacked(nn.Module):
    """Lazily built layers, a float32 table from exp/log, the embedding scale kept as a
    buffer, the attentions gathered with torch.stack and handed back as a list."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = nn.ModuleList(
            LayerTorchBlocks(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)
        self.register_buffer("scale", torch.tensor(math.sqrt(d_model)), persistent=False)

    def forward(self, tokens, mask=None):
        x = self.embedding(tokens) * self.scale + self.pe[: tokens.size(1)]
        maps = []
        for layer in self.layers:
            x, w = layer(x, mask)
            maps.append(w)
        return x, list(torch.stack(maps).unbind(0))


class EncoderFusedPow(nn.Module):
    """Fused-QKV layers, a table from pow in float32 interleaved with stack + flatten."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = nn.ModuleList([LayerFusedSequential(d_model, num_heads, d_ff, dropout)
                                     for _ in range(num_layers)])
        pos = torch.arange(max_len, dtype=torch.float32)[:, None]
        freq = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
        angles = pos * freq
        self.register_buffer("pe", torch.stack((angles.sin(), angles.cos()), -1).flatten(1),
                             persistent=False)

    def forward(self, tokens, mask=None):
        h = self.embedding(tokens) * self.d_model ** 0.5 + self.pe[: tokens.shape[1]]
        attentions = []
        for layer in self.layers:
            h, a = layer(h, mask=mask)
            attentions += [a]
        return h, attentions


VARIANTS = {
    "split_heads": [
        Variant("view + transpose", split_view_transpose),
        Variant("torch.split + torch.stack", split_stack_chunks),
        Variant("unflatten + permute", split_unflatten_permute),
        Variant("a Python loop over heads", split_loop),
    ],
    "merge_heads": [
        Variant("transpose + contiguous + view", merge_transpose_view),
        Variant("torch.cat over a loop of heads", merge_loop_cat),
        Variant("permute + flatten", merge_permute_flatten),
        Variant("einsum", merge_einsum),
    ],
    "MultiHeadAttention": [
        Variant("Annotated Transformer: mask with -1e9, weights kept on self.attn",
                MHAAnnotated),
        Variant("fused QKV projection, einsum, additive finfo.min mask", MHAFusedEinsum),
        Variant("a loop over heads, -inf then nan_to_num", MHAHeadLoop),
        Variant("lazy layers and F.scaled_dot_product_attention", MHALazySDPA),
        Variant("pre-scaled queries, mask with -1e4", MHAPrescaled),
    ],
    "FeedForward": [
        Variant("nn.Sequential with named layers", FFNSequential),
        Variant("lazy layers (nn.LazyLinear)", FFNLazy),
        Variant("F.linear and F.dropout(training=self.training)", FFNFunctional),
        Variant("einsum, ReLU as clamp(min=0)", FFNEinsumClamp),
    ],
    "EncoderLayer": [
        Variant("Annotated Transformer: residual helper, weights read from self_attn.attn",
                LayerAnnotated),
        Variant("PyTorch's _sa_block/_ff_block with lazily built sublayers", LayerTorchBlocks),
        Variant("attention head by head, LayerNorm(eps=1e-6)", LayerHeadLoopEps),
        Variant("fused QKV attention, nn.Sequential feed-forward, functional dropout",
                LayerFusedSequential),
    ],
    "TransformerEncoder": [
        Variant("Annotated Transformer: clones() by deepcopy, numpy positional table",
                EncoderAnnotated),
        Variant("d2l: blocks appended in a loop, table from Python loops, weights on an "
                "attribute", EncoderD2L),
        Variant("lazily built layers, exp/log table, scale buffer, stacked attentions",
                EncoderLazyStacked),
        Variant("fused QKV layers, pow table interleaved by stack + flatten", EncoderFusedPow),
    ],
}
