"""Correct answers for 07_transformer_decoder written in other styles; each must earn full
marks.

They follow the contract's signatures and submodule names, and otherwise the habits of public
implementations: the Annotated Transformer's sublayer connections and ``clones`` (attention
weights kept on ``self.attn``, masks filled with -1e9), PyTorch's ``_sa_block`` /
``_mha_block`` / ``_ff_block`` split, fused (packed) QKV projections with einsum, per-head
loops, lazily built layers, ``F.scaled_dot_product_attention``, masks from
``nn.Transformer.generate_square_subsequent_mask``, ``triu`` or NumPy, and generation loops
that stop early, feed PAD after EOS, preallocate or run under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Variant

PAD, SOS, EOS = 0, 1, 2

# --- decoder_self_mask ------------------------------------------------------------------


def mask_tril_and_padding(tgt_lengths, T):
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    keys = torch.arange(T).unsqueeze(0) < tgt_lengths.unsqueeze(1)
    return causal.unsqueeze(0) & keys.unsqueeze(1)


def mask_not_triu(tgt_lengths, T):
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    pad = torch.arange(T).expand(len(tgt_lengths), T) >= tgt_lengths.view(-1, 1)
    return ~(future.unsqueeze(0) | pad.unsqueeze(1))


def mask_subsequent_loop(tgt_lengths, T):
    causal = nn.Transformer.generate_square_subsequent_mask(T) == 0
    rows = []
    for length in tgt_lengths.tolist():
        m = causal.clone()
        m[:, length:] = False
        rows.append(m)
    return torch.stack(rows)


def mask_numpy(tgt_lengths, T):
    lengths = tgt_lengths.numpy()
    causal = np.tril(np.ones((T, T), dtype=bool))
    keys = np.arange(T)[None, :] < lengths[:, None]
    return torch.from_numpy(causal[None, :, :] & keys[:, None, :])


# --- multi-head attention in other styles (used by the layer variants) ------------------


class MHAAnnotated(nn.Module):
    """The Annotated Transformer: a -1e9 fill, the weights kept on ``self.attn`` (and rows
    with nothing to attend to zeroed, as the course asks)."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.d_k, self.h = d_model // num_heads, num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(p=dropout)
        self.attn = None

    def forward(self, query, key, value, mask=None):
        nbatches = query.size(0)
        query, key, value = [
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip((self.w_q, self.w_k, self.w_v), (query, key, value))]
        scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(self.d_k)
        if mask is not None:
            mask = mask.unsqueeze(-3)
            scores = scores.masked_fill(mask == 0, -1e9)
        p_attn = scores.softmax(dim=-1)
        if mask is not None:
            p_attn = p_attn * mask.any(-1, keepdim=True)
        self.attn = p_attn
        x = torch.matmul(self.dropout(p_attn), value)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        return self.w_o(x), self.attn


class MHAPackedEinsum(nn.Module):
    """The three input projections packed into one matrix product (as nn.MultiheadAttention
    stores them), einsum scores, -inf then nan_to_num."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        W = torch.cat([self.w_q.weight, self.w_k.weight, self.w_v.weight])
        b = torch.cat([self.w_q.bias, self.w_k.bias, self.w_v.bias])
        D = W.shape[1]
        q = F.linear(query, W[:D], b[:D])
        k, v = F.linear(key, W[D:2 * D], b[D:2 * D]), F.linear(value, W[2 * D:], b[2 * D:])
        h = self.num_heads
        q, k, v = (t.unflatten(-1, (h, -1)) for t in (q, k, v))          # (B, T, H, Dh)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask.unsqueeze(-3), float("-inf"))
        weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
        out = torch.einsum("bhqk,bkhd->bqhd", weights, v).flatten(-2)
        return self.w_o(out), weights


class MHAHeadLoopLazy(nn.Module):
    """Lazily built projections, pre-scaled queries, one head at a time, finfo.min."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.w_q = nn.LazyLinear(d_model)
        self.w_k = nn.LazyLinear(d_model)
        self.w_v = nn.LazyLinear(d_model)
        self.w_o = nn.LazyLinear(d_model)

    def forward(self, query, key, value, mask=None):
        q, k, v = self.w_q(query), self.w_k(key), self.w_v(value)
        d = q.shape[-1] // self.num_heads
        q = q / math.sqrt(d)
        outs, maps = [], []
        for h in range(self.num_heads):
            part = slice(h * d, (h + 1) * d)
            s = q[..., part] @ k[..., part].transpose(-2, -1)
            if mask is not None:
                s = s.masked_fill(~mask, torch.finfo(s.dtype).min)
            w = torch.softmax(s, dim=-1)
            if mask is not None:
                w = torch.where(mask.any(-1, keepdim=True), w, torch.zeros_like(w))
            outs.append(w @ v[..., part])
            maps.append(w)
        return self.w_o(torch.cat(outs, -1)), torch.stack(maps, 1)


class MHATorchSDPA(nn.Module):
    """F.scaled_dot_product_attention for the output (the course's mask polarity is PyTorch's
    there), the weights computed beside it; -1e4 fill."""

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.w_q = nn.Linear(d_model, d_model)
        self.w_k = nn.Linear(d_model, d_model)
        self.w_v = nn.Linear(d_model, d_model)
        self.w_o = nn.Linear(d_model, d_model)

    def forward(self, query, key, value, mask=None):
        B, Tq, D = query.shape
        Tk = key.shape[1]

        def heads(x):
            return x.view(B, x.shape[1], self.num_heads, -1).transpose(1, 2)

        q, k, v = heads(self.w_q(query)), heads(self.w_k(key)), heads(self.w_v(value))
        m = None
        if mask is not None:
            m = mask.unsqueeze(-3).expand(B, self.num_heads, Tq, Tk)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if m is not None:
            scores = scores.masked_fill(~m, -1e4)
        weights = torch.softmax(scores, -1)
        if m is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            alive = m.any(-1, keepdim=True)
            weights = weights * alive
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=m | ~alive) * alive
        return self.w_o(out.transpose(1, 2).reshape(B, Tq, D)), weights


class FFN(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(F.relu(self.linear1(x))))


class FFNLazy(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.LazyLinear(d_ff)
        self.linear2 = nn.LazyLinear(d_model)

    def forward(self, x):
        return self.linear2(self.linear1(x).clamp(min=0))


# --- DecoderLayer -----------------------------------------------------------------------


class LayerAnnotated(nn.Module):
    """The Annotated Transformer's decoder layer, post-LN: a residual helper per sublayer; the
    weights returned are read from the attention modules' ``attn`` attribute."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAAnnotated(d_model, num_heads, dropout)
        self.cross_attn = MHAAnnotated(d_model, num_heads, dropout)
        self.ffn = FFN(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def residual(self, x, norm, sublayer):
        return norm(x + self.dropout(sublayer(x)))

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        m = memory
        y = self.residual(y, self.norm1, lambda x: self.self_attn(x, x, x, self_mask)[0])
        y = self.residual(y, self.norm2, lambda x: self.cross_attn(x, m, m, memory_mask)[0])
        y = self.residual(y, self.norm3, self.ffn)
        return y, self.self_attn.attn, self.cross_attn.attn


class LayerTorchBlocks(nn.Module):
    """PyTorch's nn.TransformerDecoderLayer layout: _sa_block, _mha_block, _ff_block, with a
    packed-projection einsum attention."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAPackedEinsum(d_model, num_heads, dropout)
        self.cross_attn = MHAPackedEinsum(d_model, num_heads, dropout)
        self.ffn = FFN(d_model, d_ff, dropout)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(d_model) for _ in range(3))
        self.dropout1, self.dropout2, self.dropout3 = (nn.Dropout(dropout) for _ in range(3))

    def _sa_block(self, x, mask):
        out, self._sw = self.self_attn(x, x, x, mask)
        return self.dropout1(out)

    def _mha_block(self, x, mem, mask):
        out, self._cw = self.cross_attn(x, mem, mem, mask)
        return self.dropout2(out)

    def _ff_block(self, x):
        return self.dropout3(self.ffn(x))

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        x = self.norm1(y + self._sa_block(y, self_mask))
        x = self.norm2(x + self._mha_block(x, memory, memory_mask))
        x = self.norm3(x + self._ff_block(x))
        return x, self._sw, self._cw


class LayerLazyHeadLoop(nn.Module):
    """Lazily built sublayers, attention head by head, LayerNorm with eps=1e-6."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = MHAHeadLoopLazy(d_model, num_heads, dropout)
        self.cross_attn = MHAHeadLoopLazy(d_model, num_heads, dropout)
        self.ffn = FFNLazy(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model, eps=1e-6)
        self.norm2 = nn.LayerNorm(d_model, eps=1e-6)
        self.norm3 = nn.LayerNorm(d_model, eps=1e-6)

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        y = self.norm1(a + y)
        c, cw = self.cross_attn(y, memory, memory, memory_mask)
        y = self.norm2(c + y)
        return self.norm3(self.ffn(y) + y), sw, cw


class LayerSDPA(nn.Module):
    """F.scaled_dot_product_attention inside, functional dropout with training=self.training,
    the sublayers kept in a ModuleDict-free loop."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.p = dropout
        self.self_attn = MHATorchSDPA(d_model, num_heads, dropout)
        self.cross_attn = MHATorchSDPA(d_model, num_heads, dropout)
        self.ffn = FFN(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        weights = []
        steps = ((self.norm1, lambda x: self.self_attn(x, x, x, self_mask)),
                 (self.norm2, lambda x: self.cross_attn(x, memory, memory, memory_mask)),
                 (self.norm3, lambda x: (self.ffn(x), None)))
        for norm, sublayer in steps:
            out, w = sublayer(y)
            y = norm(y + F.dropout(out, self.p, training=self.training))
            if w is not None:
                weights.append(w)
        return y, weights[0], weights[1]


# --- TransformerDecoder -----------------------------------------------------------------


def numpy_table(max_len, d_model):
    pos = np.arange(max_len)[:, None]
    angle = pos / np.power(10000, (2 * (np.arange(d_model)[None, :] // 2)) / d_model)
    table = np.zeros((max_len, d_model))
    table[:, 0::2] = np.sin(angle[:, 0::2])
    table[:, 1::2] = np.cos(angle[:, 1::2])
    return torch.tensor(table, dtype=torch.float32)


def exp_log_table(max_len, d_model):
    position = torch.arange(max_len).unsqueeze(1).float()
    div = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    pe = torch.zeros(max_len, d_model)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


def clones(module, n):
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


class DecoderAnnotated(nn.Module):
    """The Annotated Transformer: clones() by deepcopy of one layer, a NumPy positional
    table, the weights read from each layer's attention modules after the loop."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = clones(LayerAnnotated(d_model, num_heads, d_ff, dropout), num_layers)
        self.register_buffer("pe", numpy_table(max_len, d_model), persistent=False)
        self.out = nn.Linear(d_model, vocab_size)
        self.drop = nn.Dropout(dropout)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        x = self.drop(self.embedding(tgt) * math.sqrt(self.d_model) + self.pe[: tgt.size(1)])
        for layer in self.layers:
            x = layer(x, memory, self_mask, memory_mask)[0]
        return (self.out(x), [layer.self_attn.attn for layer in self.layers],
                [layer.cross_attn.attn for layer in self.layers])


class DecoderD2L(nn.Module):
    """d2l: blocks added one by one with add_module, a float scale kept as a (persistent)
    buffer, the attention weights collected in a dict by layer index."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.register_buffer("scale", torch.tensor(math.sqrt(d_model)))
        self.register_buffer("pe", exp_log_table(max_len, d_model), persistent=False)
        self.layers = nn.ModuleList()
        for i in range(num_layers):
            self.layers.add_module(str(i), LayerTorchBlocks(d_model, num_heads, d_ff, dropout))
        self.out = nn.Linear(d_model, vocab_size)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        X = self.embedding(tgt) * self.scale + self.pe[: tgt.shape[1]].unsqueeze(0)
        seen = {}
        for i, blk in enumerate(self.layers):
            X, sw, cw = blk(X, memory, self_mask, memory_mask)
            seen[i] = (sw, cw)
        return (F.linear(X, self.out.weight, self.out.bias), [seen[i][0] for i in seen],
                [seen[i][1] for i in seen])


class DecoderLazy(nn.Module):
    """Lazily built layers, the embedding scaled by d_model ** 0.5, the attention lists
    built with zip(*...) over the layers' outputs."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=PAD)
        self.layers = nn.ModuleList(
            [LayerLazyHeadLoop(d_model, num_heads, d_ff, dropout) for _ in range(num_layers)])
        pe = torch.zeros(max_len, d_model)
        for pos in range(max_len):
            for i in range(0, d_model, 2):
                pe[pos, i] = math.sin(pos / 10000 ** (i / d_model))
                pe[pos, i + 1] = math.cos(pos / 10000 ** (i / d_model))
        self.register_buffer("pe", pe, persistent=False)
        self.out = nn.LazyLinear(vocab_size)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        y = self.embedding(tgt) * self.embedding.embedding_dim ** 0.5 + self.pe[: tgt.shape[-1]]
        maps = []
        for layer in self.layers:
            y, *w = layer(y, memory, self_mask, memory_mask)
            maps.append(w)
        selfs, crosses = (list(x) for x in zip(*maps)) if maps else ([], [])
        return self.out(y), selfs, crosses


class DecoderSDPA(nn.Module):
    """Layers built by a helper method, the positional table interleaved by stack + flatten,
    explicit indexing over range(len(self.layers))."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.layers = nn.ModuleList(self._layer(d_model, num_heads, d_ff, dropout)
                                    for _ in range(num_layers))
        angles = (torch.arange(max_len, dtype=torch.float64)[:, None]
                  / torch.pow(10000.0, torch.arange(0, d_model, 2, dtype=torch.float64)
                              / d_model))
        self.register_buffer("pe", torch.stack([angles.sin(), angles.cos()], -1)
                             .flatten(1).float(), persistent=False)
        self.out = nn.Linear(d_model, vocab_size)

    @staticmethod
    def _layer(d_model, num_heads, d_ff, dropout):
        return LayerSDPA(d_model, num_heads, d_ff, dropout)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        h = math.sqrt(self.d_model) * self.embedding(tgt) + self.pe[None, : tgt.shape[1], :]
        selfs, crosses = [], []
        for i in range(len(self.layers)):
            h, s, c = self.layers[i](h, memory, self_mask=self_mask, memory_mask=memory_mask)
            selfs.append(s)
            crosses.append(c)
        return self.out(h), selfs, crosses


# --- greedy_generate --------------------------------------------------------------------


def generate_early_stop(model, src, src_lengths, max_len):
    """Stops as soon as every row has said EOS; the output starts as all PAD."""
    B, S = src.shape
    src_mask = (torch.arange(S).expand(B, S) < src_lengths.unsqueeze(1)).unsqueeze(1)
    out = torch.full((B, max_len), PAD, dtype=torch.long)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        ys = torch.full((B, 1), SOS, dtype=torch.long)
        finished = torch.zeros(B, dtype=torch.bool)
        for i in range(max_len):
            T = ys.size(1)
            causal = ~torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
            prob = model.decode(ys, memory, causal, src_mask)[:, -1]
            _, next_word = torch.max(prob, dim=1)
            out[:, i] = torch.where(finished, torch.full_like(next_word, PAD), next_word)
            finished = finished | (next_word == EOS)
            if bool(finished.all()):
                break
            ys = torch.cat([ys, next_word.unsqueeze(1)], dim=1)
    return out


@torch.no_grad()
def generate_feed_pad_after_eos(model, src, src_lengths, max_len):
    """Finished rows are fed PAD (a (B, T, T) mask keeps their PAD keys out), the output
    collected in a list."""
    B, S = src.shape
    src_mask = (torch.arange(S)[None] < src_lengths[:, None])[:, None, :]
    memory = model.encode(src, src_mask)
    ys = torch.full((B, 1), SOS)
    lengths = torch.ones(B, dtype=torch.long)
    alive = torch.ones(B, dtype=torch.bool)
    tokens = []
    for _ in range(max_len):
        T = ys.shape[1]
        pos = torch.arange(T)
        mask = (pos[None, :] <= pos[:, None])[None] & (pos[None, :] < lengths[:, None])[:, None]
        nxt = model.decode(ys, memory, mask, src_mask)[:, -1, :].argmax(dim=-1)
        nxt = torch.where(alive, nxt, torch.zeros_like(nxt))
        tokens.append(nxt)
        lengths = lengths + alive.long()
        alive = alive & (nxt != EOS)
        ys = torch.cat([ys, nxt[:, None]], dim=1)
    return torch.stack(tokens, dim=1)


def generate_inference_mode_cumsum(model, src, src_lengths, max_len):
    """torch.inference_mode, the whole max_len generated, then everything after the first
    EOS blanked with a cumulative sum."""
    S = src.shape[1]
    src_mask = (torch.arange(S) < src_lengths.unsqueeze(-1)).unsqueeze(-2)
    with torch.inference_mode():
        memory = model.encode(src, src_mask)
        seq = src.new_full((src.shape[0], 1), SOS)
        for _ in range(max_len):
            T = seq.shape[1]
            causal = nn.Transformer.generate_square_subsequent_mask(T) == 0
            logits = model.decode(seq, memory, causal, src_mask)
            seq = torch.cat([seq, logits[:, -1:].argmax(-1)], dim=-1)
        out = seq[:, 1:].clone()
    eos_seen = (out == EOS).cumsum(dim=1)
    after_first = (eos_seen - (out == EOS).long()) > 0
    return out.masked_fill(after_first, PAD)


def generate_preallocated_numpy_blank(model, src, src_lengths, max_len):
    """A preallocated (B, max_len + 1) buffer, the causal mask built with tril, the PAD after
    EOS written row by row in NumPy."""
    B, S = src.shape
    src_mask = torch.zeros(B, 1, S, dtype=torch.bool)
    for b, n in enumerate(src_lengths.tolist()):
        src_mask[b, 0, :n] = True
    buf = torch.zeros(B, max_len + 1, dtype=torch.long)
    buf[:, 0] = SOS
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        for t in range(1, max_len + 1):
            causal = torch.ones(t, t).tril().bool()
            buf[:, t] = model.decode(buf[:, :t], memory, causal, src_mask)[:, t - 1].argmax(-1)
    tokens = buf[:, 1:].numpy().copy()
    for row in tokens:
        hits = np.flatnonzero(row == EOS)
        if hits.size:
            row[hits[0] + 1:] = PAD
    return torch.from_numpy(tokens)


VARIANTS = {
    "decoder_self_mask": [
        Variant("tril & a padding comparison, unsqueezed", mask_tril_and_padding),
        Variant("~(triu(1) | padding)", mask_not_triu),
        Variant("generate_square_subsequent_mask == 0, a loop over the rows", mask_subsequent_loop),
        Variant("NumPy tril and broadcasting", mask_numpy),
    ],
    "DecoderLayer": [
        Variant("Annotated Transformer: residual helper, -1e9 masks, weights kept on attn",
                LayerAnnotated),
        Variant("PyTorch's _sa_block/_mha_block/_ff_block, packed QKV, einsum, -inf then "
                "nan_to_num", LayerTorchBlocks),
        Variant("lazily built sublayers, a loop over heads, pre-scaled queries, finfo.min, "
                "LayerNorm(eps=1e-6)", LayerLazyHeadLoop),
        Variant("F.scaled_dot_product_attention, -1e4 weights, a loop over the sublayers",
                LayerSDPA),
    ],
    "TransformerDecoder": [
        Variant("Annotated Transformer: clones() by deepcopy, NumPy table, weights read from "
                "attributes", DecoderAnnotated),
        Variant("d2l: add_module in a loop, scale buffer, exp/log table, F.linear output",
                DecoderD2L),
        Variant("lazily built layers and output, table from Python loops, zip(*maps)",
                DecoderLazy),
        Variant("layers from a helper, pow table interleaved by stack + flatten, indexed loop",
                DecoderSDPA),
    ],
    "greedy_generate": [
        Variant("stops early once every row is done, torch.triu mask, torch.max",
                generate_early_stop),
        Variant("feeds PAD after EOS with a (B, T, T) mask from lengths, @torch.no_grad()",
                generate_feed_pad_after_eos),
        Variant("torch.inference_mode, generate_square_subsequent_mask, cumsum blanking",
                generate_inference_mode_cumsum),
        Variant("a preallocated buffer, per-row mask loop, NumPy blanking",
                generate_preallocated_numpy_blank),
    ],
}
