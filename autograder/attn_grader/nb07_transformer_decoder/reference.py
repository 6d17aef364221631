"""Reference solutions for 07_transformer_decoder, built on PyTorch's own modules.

The graded modules keep the contract's layout (``self_attn``, ``cross_attn``, ``ffn``,
``norm1``-``norm3``; ``embedding``, ``layers``, ``pe``, ``out``) so that a reference
``state_dict`` loads into a student's module. Their forward passes run PyTorch's
``nn.TransformerDecoderLayer`` and ``nn.MultiheadAttention`` themselves, through
``torch.func.functional_call`` with the contract's parameters packed into PyTorch's layout
(``in_proj_weight`` = ``[w_q; w_k; w_v]``, ``out_proj`` = ``w_o``; ``cross_attn`` is PyTorch's
``multihead_attn``, ``ffn.linear1`` its ``linear1``). The causal part of the decoder mask is
``nn.Transformer.generate_square_subsequent_mask``. The notebook's from-scratch solution meets
an independent witness.

Two differences from PyTorch are bridged here, as the course contract requires:

- masks: the course's ``True`` means "may attend"; PyTorch's boolean ``attn_mask``,
  ``tgt_mask`` and ``memory_mask`` use ``True`` for "blocked";
- a query whose keys are all masked gets weights 0 (PyTorch gives NaN); its attention output
  is then ``0 @ V = 0`` and the projected output is ``w_o``'s bias.

This module never imports another notebook's grading package: what it shares with notebook
06 (multi-head attention, the feed-forward block, the encoder) is written again here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

PAD, SOS, EOS = 0, 1, 2

# --- positions ----------------------------------------------------------------------------


def sinusoidal_positional_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(...), computed in float64."""
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float64)
                         * (-math.log(10000.0) / d_model))
    angles = position * inv_freq
    return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1).float()


# --- masks --------------------------------------------------------------------------------


def decoder_self_mask(tgt_lengths, T):
    """(B, T, T) bool, True where key s <= query t and s < tgt_lengths[b], built from
    PyTorch's own causal mask (0 where allowed, -inf above the diagonal) and key padding mask
    (True at PAD)."""
    lengths = torch.as_tensor(tgt_lengths).reshape(-1)
    causal = nn.Transformer.generate_square_subsequent_mask(T) == 0          # (T, T)
    key_padding = torch.arange(T)[None, :] >= lengths[:, None]                # (B, T), True = PAD
    return causal.unsqueeze(0) & ~key_padding.unsqueeze(1)


def full_mask(mask, B: int, Tq: int, Tk: int):
    """A course mask broadcastable to (B, Tq, Tk) -> (mask (B, Tq, Tk), dead (B, Tq)) where
    ``dead`` marks the queries with no key to attend to."""
    mask = torch.as_tensor(mask, dtype=torch.bool).expand(B, Tq, Tk)
    return mask, ~mask.any(-1)


def torch_blocked(mask, dead, num_heads: int):
    """The blocked positions in PyTorch's layout (B*H, Tq, Tk), True = blocked. Rows with
    nothing to attend to are opened (and zeroed afterwards), so PyTorch returns no NaN."""
    safe = mask | dead.unsqueeze(-1)
    return (~safe).repeat_interleave(num_heads, dim=0)


# --- multi-head attention and the feed-forward block --------------------------------------

_TEMPLATES: dict = {}


def _template(kind: str, *args):
    """A PyTorch module used only as code: its own parameters are replaced by ours at every
    call (functional_call)."""
    key = (kind, *args)
    if key not in _TEMPLATES:
        if kind == "mha":
            d_model, num_heads, dropout = args
            module = nn.MultiheadAttention(d_model, num_heads, dropout=dropout, batch_first=True)
        else:
            d_model, num_heads, d_ff, dropout = args
            module = nn.TransformerDecoderLayer(d_model, num_heads, d_ff, dropout=dropout,
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
            kwargs["attn_mask"] = torch_blocked(mask, dead, self.num_heads)
        out, weights = functional_call(torch_mha, torch_mha_params(self), (query, key, value),
                                       kwargs)
        if dead is not None:
            weights = weights.masked_fill(dead[:, None, :, None], 0.0)
            out = torch.where(dead.unsqueeze(-1), self.w_o.bias.expand_as(out), out)
        return out, weights


class FeedForward(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


# --- the decoder layer --------------------------------------------------------------------


def torch_layer_params(layer) -> dict:
    """The contract's DecoderLayer parameters as nn.TransformerDecoderLayer's."""
    params = torch_mha_params(layer.self_attn, "self_attn.")
    params.update(torch_mha_params(layer.cross_attn, "multihead_attn."))
    for mine, theirs in (("ffn.linear1", "linear1"), ("ffn.linear2", "linear2"),
                         ("norm1", "norm1"), ("norm2", "norm2"), ("norm3", "norm3")):
        for p in ("weight", "bias"):
            params[f"{theirs}.{p}"] = layer.get_parameter(f"{mine}.{p}")
    return params


class DecoderLayer(nn.Module):
    """Post-LN: h1 = norm1(y + self_attn(y)), h2 = norm2(h1 + cross_attn(h1, memory)),
    out = norm3(h2 + ffn(h2)), run by nn.TransformerDecoderLayer."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.args = (d_model, num_heads, d_ff, dropout)
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        B, T, _ = y.shape
        S = memory.shape[1]
        H = self.self_attn.num_heads
        torch_layer = _template("layer", *self.args).train(self.training)
        kwargs = {}
        dead_self = dead_cross = None
        if self_mask is not None:
            m, dead_self = full_mask(self_mask, B, T, T)
            kwargs["tgt_mask"] = torch_blocked(m, dead_self, H)
        if memory_mask is not None:
            m, dead_cross = full_mask(memory_mask, B, T, S)
            kwargs["memory_mask"] = torch_blocked(m, dead_cross, H)
        out = functional_call(torch_layer, torch_layer_params(self), (y, memory), kwargs)
        self_out, self_weights = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + self_out)
        cross_out, cross_weights = self.cross_attn(h1, memory, memory, memory_mask)
        dead = torch.zeros(B, T, dtype=torch.bool)
        for d in (dead_self, dead_cross):
            if d is not None:
                dead = dead | d
        if bool(dead.any()):
            # a query with nothing to attend to: the sublayer gives w_o's bias (PyTorch: NaN)
            h2 = self.norm2(h1 + cross_out)
            composed = self.norm3(h2 + self.ffn(h2))
            out = torch.where(dead.unsqueeze(-1), composed, out)
        return out, self_weights, cross_weights


def to_torch_layer(layer) -> nn.TransformerDecoderLayer:
    """A real nn.TransformerDecoderLayer(norm_first=False, batch_first=True) holding a copy of
    layer's weights."""
    d_model = layer.norm1.normalized_shape[0]
    d_ff = layer.ffn.linear1.out_features
    torch_layer = nn.TransformerDecoderLayer(d_model, layer.self_attn.num_heads, d_ff,
                                             dropout=0.0, batch_first=True, norm_first=False)
    with torch.no_grad():
        for name, value in torch_layer_params(layer).items():
            torch_layer.get_parameter(name).copy_(value)
    return torch_layer.eval()


# --- the decoder ----------------------------------------------------------------------------


class TransformerDecoder(nn.Module):
    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model),
                             persistent=False)
        self.out = nn.Linear(d_model, vocab_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        T = tgt.shape[1]
        y = self.dropout(self.embedding(tgt) * math.sqrt(self.d_model) + self.pe[:T])
        self_attentions, cross_attentions = [], []
        for layer in self.layers:
            y, sw, cw = layer(y, memory, self_mask, memory_mask)
            self_attentions.append(sw)
            cross_attentions.append(cw)
        return self.out(y), self_attentions, cross_attentions


# --- the encoder (given in the notebook; here for the full model the checks drive) ----------


def torch_encoder_layer_params(layer) -> dict:
    params = torch_mha_params(layer.self_attn, "self_attn.")
    for mine, theirs in (("ffn.linear1", "linear1"), ("ffn.linear2", "linear2"),
                         ("norm1", "norm1"), ("norm2", "norm2")):
        for p in ("weight", "bias"):
            params[f"{theirs}.{p}"] = layer.get_parameter(f"{mine}.{p}")
    return params


class EncoderLayer(nn.Module):
    """Post-LN encoder layer; rows with nothing to attend to are handled as in the course."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x, mask=None):
        a, weights = self.self_attn(x, x, x, mask)
        h = self.norm1(x + a)
        return self.norm2(h + self.ffn(h)), weights


class TransformerEncoder(nn.Module):
    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, d_ff, dropout) for _ in range(num_layers))
        self.register_buffer("pe", sinusoidal_positional_encoding(max_len, d_model),
                             persistent=False)

    def forward(self, tokens, mask=None):
        x = self.embedding(tokens) * math.sqrt(self.d_model) + self.pe[: tokens.shape[1]]
        attentions = []
        for layer in self.layers:
            x, w = layer(x, mask)
            attentions.append(w)
        return x, attentions


class Seq2SeqTransformer(nn.Module):
    """The full model with the interface ``greedy_generate`` drives: ``encode(src, src_mask)``
    and ``decode(tgt, memory, self_mask, memory_mask)``."""

    def __init__(self, src_vocab, tgt_vocab, d_model=16, num_heads=2, d_ff=32, num_layers=2,
                 max_len=64):
        super().__init__()
        self.encoder = TransformerEncoder(src_vocab, d_model, num_heads, d_ff, num_layers,
                                          max_len)
        self.decoder = TransformerDecoder(tgt_vocab, d_model, num_heads, d_ff, num_layers,
                                          max_len)

    def encode(self, src, src_mask=None):
        if src_mask is not None:
            src_mask = torch.as_tensor(src_mask, dtype=torch.bool).reshape(src.shape[0], 1, -1)
        return self.encoder(src, src_mask)[0]

    def decode(self, tgt, memory, self_mask=None, memory_mask=None):
        if memory_mask is not None:
            memory_mask = torch.as_tensor(memory_mask, dtype=torch.bool)
            if memory_mask.dim() == 2:
                memory_mask = memory_mask.unsqueeze(1)
        return self.decoder(tgt, memory, self_mask, memory_mask)[0]


# --- greedy generation --------------------------------------------------------------------


def blank_after_eos(tokens: torch.Tensor) -> torch.Tensor:
    """PAD after each row's first EOS (the EOS itself is kept)."""
    is_eos = (tokens == EOS).long()
    seen_before = is_eos.cumsum(1) - is_eos
    return tokens.masked_fill(seen_before > 0, PAD)


@torch.no_grad()
def greedy_generate(model, src, src_lengths, max_len):
    """Generate max_len tokens for every row by re-decoding the prefix at each step (with the
    causal mask from nn.Transformer), then blank what follows each row's first EOS."""
    B, S = src.shape
    src_mask = (torch.arange(S)[None, :] < torch.as_tensor(src_lengths)[:, None]).unsqueeze(1)
    memory = model.encode(src, src_mask)
    ys = torch.full((B, 1), SOS, dtype=torch.long)
    for _ in range(max_len):
        T = ys.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T) == 0
        logits = model.decode(ys, memory, causal, src_mask)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return blank_after_eos(ys[:, 1:])
