"""Plausible wrong answers for 07_transformer_decoder; each must fail its check, named.

The modules are written the way a student would write them: a correct base class whose
subclasses each get one thing wrong. Like the student's, they are built on notebook 06's
multi-head attention and feed-forward block (given in the notebook; the reference's here).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Mistake
from attn_grader.nb07_transformer_decoder import reference as ref

PAD, SOS, EOS = 0, 1, 2

# --- decoder_self_mask ------------------------------------------------------------------


def _positions(T):
    p = torch.arange(T)
    return p[None, :], p[:, None]  # keys s (1, T), queries t (T, 1)


def mask_causal_only(tgt_lengths, T):
    s, t = _positions(T)
    return (s <= t).unsqueeze(0).expand(len(tgt_lengths), T, T)


def mask_inverted_causal(tgt_lengths, T):
    s, t = _positions(T)
    return (s >= t)[None] & (s < tgt_lengths[:, None])[:, None]


def mask_sees_next(tgt_lengths, T):
    causal = torch.ones(T, T, dtype=torch.bool).tril(1)  # t attends t + 1
    return causal[None] & (torch.arange(T)[None] < tgt_lengths[:, None])[:, None]


def mask_not_itself(tgt_lengths, T):
    causal = torch.ones(T, T, dtype=torch.bool).tril(-1)
    return causal[None] & (torch.arange(T)[None] < tgt_lengths[:, None])[:, None]


def mask_padding_rows(tgt_lengths, T):
    s, t = _positions(T)
    real = torch.arange(T)[None] < tgt_lengths[:, None]
    return (s <= t)[None] & real[:, :, None]  # blocks PAD queries, not PAD keys


def mask_padding_off_by_one(tgt_lengths, T):
    s, t = _positions(T)
    return (s <= t)[None] & (torch.arange(T)[None] <= tgt_lengths[:, None])[:, None]


def mask_padding_only(tgt_lengths, T):
    real = torch.arange(T)[None] < tgt_lengths[:, None]
    return real[:, None, :].expand(len(tgt_lengths), T, T)


def mask_without_batch(tgt_lengths, T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def mask_as_float(tgt_lengths, T):
    s, t = _positions(T)
    return ((s <= t)[None] & (s < tgt_lengths[:, None, None])).float()


def mask_pytorch_polarity(tgt_lengths, T):
    s, t = _positions(T)
    return ~((s <= t)[None] & (s < tgt_lengths[:, None, None]))  # True = blocked


# --- DecoderLayer -----------------------------------------------------------------------


class _Layer(nn.Module):
    """A correct post-LN decoder layer; each mistake overrides one step."""

    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = ref.MultiHeadAttention(d_model, num_heads, dropout)
        self.cross_attn = ref.MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = ref.FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + self.dropout(a))
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm2(h1 + self.dropout(c))
        return self.norm3(h2 + self.dropout(self.ffn(h2))), sw, cw


class LayerPreLN(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        h = self.norm1(y)
        a, sw = self.self_attn(h, h, h, self_mask)
        y = y + a
        c, cw = self.cross_attn(self.norm2(y), memory, memory, memory_mask)
        y = y + c
        return y + self.ffn(self.norm3(y)), sw, cw


class LayerCrossReadsDecoder(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(h1, h1, h1, self_mask)  # keys and values from the decoder
        h2 = self.norm2(h1 + c)
        return self.norm3(h2 + self.ffn(h2)), sw, cw


class LayerSelfMaskIgnored(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        return super().forward(y, memory, None, memory_mask)


class LayerMemoryMaskIgnored(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        return super().forward(y, memory, self_mask, None)


class LayerOneNorm(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm1(h1 + c)
        return self.norm1(h2 + self.ffn(h2)), sw, cw


class LayerNormsSwapped(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm3(h1 + c)
        return self.norm2(h2 + self.ffn(h2)), sw, cw


class LayerNoResidualAroundCross(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm2(c)
        return self.norm3(h2 + self.ffn(h2)), sw, cw


class LayerNoResidualAroundSelf(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(a)
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm2(h1 + c)
        return self.norm3(h2 + self.ffn(h2)), sw, cw


class LayerCrossQueriesFromInput(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(y, memory, memory, memory_mask)
        h2 = self.norm2(h1 + c)
        return self.norm3(h2 + self.ffn(h2)), sw, cw


class LayerFFNReadsH1(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + a)
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm2(h1 + c)
        return self.norm3(h2 + self.ffn(h1)), sw, cw


class LayerCrossFirst(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        c, cw = self.cross_attn(y, memory, memory, memory_mask)
        h1 = self.norm1(y + c)
        a, sw = self.self_attn(h1, h1, h1, self_mask)
        h2 = self.norm2(h1 + a)
        return self.norm3(h2 + self.ffn(h2)), sw, cw


class LayerWeightsSwapped(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        out, sw, cw = super().forward(y, memory, self_mask, memory_mask)
        return out, cw, sw


class LayerMasksSwapped(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        return super().forward(y, memory, memory_mask, self_mask)


class LayerDropoutAlwaysOn(_Layer):
    def forward(self, y, memory, self_mask=None, memory_mask=None):
        p = self.dropout.p
        a, sw = self.self_attn(y, y, y, self_mask)
        h1 = self.norm1(y + F.dropout(a, p))
        c, cw = self.cross_attn(h1, memory, memory, memory_mask)
        h2 = self.norm2(h1 + F.dropout(c, p))
        return self.norm3(h2 + F.dropout(self.ffn(h2), p)), sw, cw


# --- TransformerDecoder -----------------------------------------------------------------


class _Decoder(nn.Module):
    padding_idx: int | None = 0
    persistent = False

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=self.padding_idx)
        self.layers = self.make_layers(d_model, num_heads, d_ff, num_layers, dropout)
        self.register_buffer("pe", ref.sinusoidal_positional_encoding(max_len, d_model),
                             persistent=self.persistent)
        self.out = nn.Linear(d_model, vocab_size)

    def make_layers(self, d_model, num_heads, d_ff, num_layers, dropout):
        return nn.ModuleList(ref.DecoderLayer(d_model, num_heads, d_ff, dropout)
                             for _ in range(num_layers))

    def embed(self, tgt):
        return self.embedding(tgt) * math.sqrt(self.d_model) + self.pe[: tgt.shape[1]]

    def project(self, y):
        return self.out(y)

    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        y = self.embed(tgt)
        sws, cws = [], []
        for layer in self.layers:
            y, sw, cw = layer(y, memory, self_mask, memory_mask)
            sws.append(sw)
            cws.append(cw)
        return self.project(y), sws, cws


class DecoderNoScale(_Decoder):
    def embed(self, tgt):
        return self.embedding(tgt) + self.pe[: tgt.shape[1]]


class DecoderNoPositions(_Decoder):
    def embed(self, tgt):
        return self.embedding(tgt) * math.sqrt(self.d_model)


class DecoderScaleAfterPositions(_Decoder):
    def embed(self, tgt):
        return (self.embedding(tgt) + self.pe[: tgt.shape[1]]) * math.sqrt(self.d_model)


class DecoderSharedLayers(_Decoder):
    def make_layers(self, d_model, num_heads, d_ff, num_layers, dropout):
        return nn.ModuleList([ref.DecoderLayer(d_model, num_heads, d_ff, dropout)] * num_layers)


class DecoderSelfMaskNotPassed(_Decoder):
    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        return super().forward(tgt, memory, None, memory_mask)


class DecoderMemoryMaskNotPassed(_Decoder):
    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        return super().forward(tgt, memory, self_mask, None)


class DecoderBuildsCausalMask(_Decoder):
    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        if self_mask is None:
            T = tgt.shape[1]
            self_mask = torch.ones(T, T, dtype=torch.bool).tril()
        return super().forward(tgt, memory, self_mask, memory_mask)


class DecoderSoftmaxOutput(_Decoder):
    def project(self, y):
        return torch.softmax(self.out(y), dim=-1)


class DecoderNoOutputProjection(_Decoder):
    def project(self, y):
        return y


class DecoderPersistentPE(_Decoder):
    persistent = True


class DecoderNoPaddingIdx(_Decoder):
    padding_idx = None


class DecoderLastAttentionOnly(_Decoder):
    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        logits, sws, cws = super().forward(tgt, memory, self_mask, memory_mask)
        return logits, sws[-1:], cws[-1:]


class DecoderSameAttentionListed(_Decoder):
    def forward(self, tgt, memory, self_mask=None, memory_mask=None):
        y = self.embed(tgt)
        for layer in self.layers:
            y, sw, cw = layer(y, memory, self_mask, memory_mask)
        n = len(self.layers)
        return self.project(y), [sw] * n, [cw] * n


# --- greedy_generate --------------------------------------------------------------------


def _source_mask(src, src_lengths):
    return (torch.arange(src.shape[1])[None, :] < src_lengths[:, None]).unsqueeze(1)


def _causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


def _pad_after_eos(out):
    done = torch.zeros(out.shape[0], dtype=torch.bool)
    for t in range(out.shape[1]):
        out[:, t] = out[:, t].masked_fill(done, PAD)
        done |= out[:, t] == EOS
    return out


def _generate(model, src, src_lengths, max_len, *, feed="own", pick=-1, causal=True,
              encode_mask=True, memory_mask=True, pad=True, keep_eos=True, sos_first=False):
    src_mask = _source_mask(src, src_lengths)
    with torch.no_grad():
        memory = model.encode(src, src_mask if encode_mask else None)
        ys = torch.full((src.shape[0], 1), SOS, dtype=torch.long)
        for _ in range(max_len):
            inp = {"own": ys, "sos": torch.full_like(ys, SOS), "last": ys[:, -1:]}[feed]
            T = inp.shape[1]
            logits = model.decode(inp, memory, _causal(T) if causal else None,
                                  src_mask if memory_mask else None)
            ys = torch.cat([ys, logits[:, pick].argmax(-1, keepdim=True)], dim=1)
    out = ys if sos_first else ys[:, 1:]
    if pad:
        out = _pad_after_eos(out)
    if not keep_eos:
        out = out.masked_fill(out == EOS, PAD)
    return out


def generate_teacher_forced(model, src, src_lengths, max_len):
    # the "ground truth" fed in one pass, as in training, instead of the model's own tokens
    src_mask = _source_mask(src, src_lengths)
    with torch.no_grad():
        memory = model.encode(src, src_mask)
        dec_in = torch.cat([torch.full((src.shape[0], 1), SOS), src], dim=1)[:, :max_len]
        dec_in = F.pad(dec_in, (0, max_len - dec_in.shape[1]), value=PAD)
        logits = model.decode(dec_in, memory, _causal(max_len), src_mask)
    return _pad_after_eos(logits.argmax(-1))


def generate_feeds_sos(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, feed="sos")


def generate_feeds_last_token(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, feed="last")


def generate_first_position(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, pick=0)


def generate_without_causal_mask(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, causal=False)


def generate_without_memory_mask(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, memory_mask=False)


def generate_without_source_mask(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, encode_mask=False)


def generate_no_stop(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, pad=False)


def generate_drops_eos(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, keep_eos=False)


def generate_returns_sos(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len, sos_first=True)


def generate_squeezes(model, src, src_lengths, max_len):
    return _generate(model, src, src_lengths, max_len).squeeze()


def generate_with_gradients(model, src, src_lengths, max_len):
    src_mask = _source_mask(src, src_lengths)
    memory = model.encode(src, src_mask)
    ys = torch.full((src.shape[0], 1), SOS, dtype=torch.long)
    for _ in range(max_len):
        logits = model.decode(ys, memory, _causal(ys.shape[1]), src_mask)
        ys = torch.cat([ys, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return _pad_after_eos(ys[:, 1:])


MISTAKES = {
    "decoder_self_mask": [
        Mistake("target padding ignored (causal mask only)", mask_causal_only,
                "padding of the target is ignored"),
        Mistake("causal part inverted (triu)", mask_inverted_causal, "causal part is inverted"),
        Mistake("off by one: t attends t + 1 (tril(1))", mask_sees_next, "t + 1"),
        Mistake("off by one: t cannot attend to itself (tril(-1))", mask_not_itself,
                "may not attend to itself"),
        Mistake("padding blocks query rows, not key columns", mask_padding_rows,
                "blocks query rows"),
        Mistake("padding off by one (s <= length)", mask_padding_off_by_one,
                "key s = tgt_lengths[b] is allowed"),
        Mistake("causal part missing (padding only)", mask_padding_only,
                "causal part is missing"),
        Mistake("one (T, T) mask without the batch axis", mask_without_batch,
                "batch axis is missing"),
        Mistake("a float mask instead of bool", mask_as_float, "torch.bool"),
        Mistake("PyTorch's polarity (True = blocked)", mask_pytorch_polarity,
                "whole mask is inverted"),
    ],
    "DecoderLayer": [
        Mistake("pre-LN instead of post-LN", LayerPreLN, "pre-ln"),
        Mistake("cross-attention fed the decoder states as keys and values",
                LayerCrossReadsDecoder, "keys and values"),
        Mistake("causal (self) mask not passed to self-attention", LayerSelfMaskIgnored,
                "self_mask is not passed to self-attention"),
        Mistake("memory mask not applied", LayerMemoryMaskIgnored,
                "memory_mask is not passed to cross-attention"),
        Mistake("one LayerNorm shared by the three sublayers", LayerOneNorm,
                "shared by the sublayers"),
        Mistake("norms in the wrong order (norm2 and norm3 swapped)", LayerNormsSwapped,
                "norms are in the wrong order"),
        Mistake("no residual around cross-attention", LayerNoResidualAroundCross,
                "residual connection around cross-attention is missing"),
        Mistake("no residual around self-attention", LayerNoResidualAroundSelf,
                "residual connection around self-attention is missing"),
        Mistake("cross-attention queries from the layer input", LayerCrossQueriesFromInput,
                "queries come from the layer's input y"),
        Mistake("feed-forward reads h1", LayerFFNReadsH1, "reads h1"),
        Mistake("cross-attention before self-attention", LayerCrossFirst,
                "cross-attention comes before self-attention"),
        Mistake("self and cross weights returned in the wrong order", LayerWeightsSwapped,
                "returned in the wrong order"),
        Mistake("self_mask and memory_mask swapped", LayerMasksSwapped, "does not fit"),
        Mistake("dropout active in eval mode", LayerDropoutAlwaysOn, "dropout is active"),
    ],
    "TransformerDecoder": [
        Mistake("embeddings not scaled", DecoderNoScale, "not multiplied by sqrt(d_model)"),
        Mistake("positions not added", DecoderNoPositions, "positional encoding is not added"),
        Mistake("positions scaled too", DecoderScaleAfterPositions, "only the embeddings"),
        Mistake("[layer] * n: the layers share one set of weights", DecoderSharedLayers,
                "share one set of weights"),
        Mistake("self_mask not passed to the layers", DecoderSelfMaskNotPassed,
                "self_mask is not passed to the layers"),
        Mistake("memory_mask not passed to the layers", DecoderMemoryMaskNotPassed,
                "memory_mask is not passed to the layers"),
        Mistake("a causal mask built when self_mask is None", DecoderBuildsCausalMask,
                "built inside forward"),
        Mistake("softmax applied to the logits", DecoderSoftmaxOutput, "softmax"),
        Mistake("no output projection", DecoderNoOutputProjection, "is not applied"),
        Mistake("pe saved in the state_dict", DecoderPersistentPE, "persistent=False"),
        Mistake("no padding_idx", DecoderNoPaddingIdx, "padding_idx=0"),
        Mistake("only the last layer's attention returned", DecoderLastAttentionOnly,
                "one tensor per layer"),
        Mistake("the same attention listed for every layer", DecoderSameAttentionListed,
                "same layer's weights"),
    ],
    "greedy_generate": [
        Mistake("feeds the ground truth (the source) instead of its own predictions",
                generate_teacher_forced, "instead of its own predictions"),
        Mistake("feeds SOS at every step", generate_feeds_sos, "SOS is fed at every step"),
        Mistake("feeds only the last token", generate_feeds_last_token,
                "only the last predicted token"),
        Mistake("takes the first position's logits", generate_first_position,
                "first position's logits"),
        Mistake("no causal mask while re-decoding the prefix", generate_without_causal_mask,
                "no causal mask"),
        Mistake("memory mask not passed to decode", generate_without_memory_mask,
                "memory mask is not passed to decode"),
        Mistake("source mask not passed to encode", generate_without_source_mask,
                "not passed to encode"),
        Mistake("does not stop after EOS", generate_no_stop, "does not stop after EOS"),
        Mistake("drops the first EOS", generate_drops_eos, "first EOS is dropped"),
        Mistake("returns SOS as the first column", generate_returns_sos,
                "SOS is returned as the first column"),
        Mistake("squeeze() drops the batch axis at B = 1", generate_squeezes,
                "batch axis was dropped"),
        Mistake("generates with gradients enabled", generate_with_gradients,
                "gradients enabled"),
    ],
}
