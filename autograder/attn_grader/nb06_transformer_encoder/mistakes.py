"""Plausible wrong answers for 06_transformer_encoder; each must fail its check, named.

The modules are written the way a student would write them: a correct base class whose
subclasses each get one thing wrong.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Mistake
from attn_grader.nb06_transformer_encoder import reference as ref

# --- split_heads ------------------------------------------------------------------------


def split_reshape_no_transpose(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, num_heads, T, D // num_heads)


def split_interleaved(x, num_heads):
    B, T, D = x.shape
    return x.reshape(B, T, D // num_heads, num_heads).permute(0, 3, 1, 2)


def split_transpose_missing(x, num_heads):
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads)


def split_ready_for_keys(x, num_heads):
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).permute(0, 2, 3, 1)


def split_squeezes(x, num_heads):
    B, T, D = x.shape
    return x.view(B, T, num_heads, D // num_heads).transpose(1, 2).squeeze()


# --- merge_heads ------------------------------------------------------------------------


def merge_reshape_no_transpose(x):
    B, H, T, Dh = x.shape
    return x.reshape(B, T, H * Dh)


def merge_interleaved(x):
    B, H, T, Dh = x.shape
    return x.permute(0, 2, 3, 1).reshape(B, T, H * Dh)


def merge_view_after_transpose(x):
    B, H, T, Dh = x.shape
    return x.transpose(1, 2).view(B, T, H * Dh)


def merge_mean(x):
    return x.mean(dim=1)


def merge_reversed(x):
    B, H, T, Dh = x.shape
    return x.flip(1).transpose(1, 2).reshape(B, T, H * Dh)


# --- MultiHeadAttention -----------------------------------------------------------------


class _MHA(nn.Module):
    """A correct multi-head attention; each mistake overrides one step."""

    bias = True

    def __init__(self, d_model, num_heads, dropout=0.0):
        super().__init__()
        self.num_heads, self.d_model, self.d_k = num_heads, d_model, d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model, bias=self.bias)
        self.w_k = nn.Linear(d_model, d_model, bias=self.bias)
        self.w_v = nn.Linear(d_model, d_model, bias=self.bias)
        self.w_o = nn.Linear(d_model, d_model, bias=self.bias)

    def split(self, x):
        B, T, _ = x.shape
        return x.view(B, T, self.num_heads, self.d_k).transpose(1, 2)

    def merge(self, x):
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.d_model)

    def scale(self):
        return math.sqrt(self.d_k)

    def head_mask(self, mask):
        return mask.unsqueeze(-3)

    def softmax(self, scores):
        return torch.softmax(scores, dim=-1)

    def attend(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = self.softmax(scores)
        if mask is not None:
            weights = weights.masked_fill(~mask, 0.0)
        return weights

    def inputs(self, query, key, value):
        return query, key, value

    def project_out(self, x):
        return self.w_o(x)

    def forward(self, query, key, value, mask=None):
        query, key, value = self.inputs(query, key, value)
        q = self.split(self.w_q(query))
        k = self.split(self.w_k(key))
        v = self.split(self.w_v(value))
        if mask is not None:
            mask = self.head_mask(mask)
        weights = self.attend(q @ k.transpose(-2, -1) / self.scale(), mask)
        return self.project_out(self.merge(weights @ v)), weights


class MHANoScale(_MHA):
    def scale(self):
        return 1.0


class MHAScaleByModelDim(_MHA):
    def scale(self):
        return math.sqrt(self.d_model)


class MHASoftmaxOverQueries(_MHA):
    def softmax(self, scores):
        return torch.softmax(scores, dim=-2)


class MHAMaskAfterSoftmax(_MHA):
    def attend(self, scores, mask):
        weights = torch.softmax(scores, dim=-1)
        return weights if mask is None else weights * mask


class MHAMaskAdded(_MHA):
    def attend(self, scores, mask):
        if mask is not None:
            scores = scores + mask.float()
        return torch.softmax(scores, dim=-1)


class MHAMaskInverted(_MHA):
    def attend(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        return weights if mask is None else weights.masked_fill(mask, 0.0)


class MHAMaskFilledWithZero(_MHA):
    def attend(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, 0.0)
        return torch.softmax(scores, dim=-1)


class MHAAllMaskedNaN(_MHA):
    def attend(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return torch.softmax(scores, dim=-1)


class MHAAllMaskedUniform(_MHA):
    def attend(self, scores, mask):
        if mask is not None:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=-1)


class MHASplitWithoutTranspose(_MHA):
    def split(self, x):
        B, T, _ = x.shape
        return x.reshape(B, self.num_heads, T, self.d_k)


class MHAMergeWithoutTranspose(_MHA):
    def merge(self, x):
        B, _, T, _ = x.shape
        return x.reshape(B, T, self.d_model)


class MHAMergeInterleaved(_MHA):
    def merge(self, x):
        B, _, T, _ = x.shape
        return x.permute(0, 2, 3, 1).reshape(B, T, self.d_model)


class MHANoOutputProjection(_MHA):
    def project_out(self, x):
        return x


class MHAIgnoresKeyValue(_MHA):
    def inputs(self, query, key, value):
        return query, query, query


class MHAMaskUnsqueeze1(_MHA):
    def head_mask(self, mask):
        return mask.unsqueeze(1)


class MHAManualSoftmax(_MHA):
    def softmax(self, scores):
        e = torch.exp(scores)
        return e / e.sum(-1, keepdim=True)


class MHANoBias(_MHA):
    bias = False


# --- FeedForward ------------------------------------------------------------------------


class _FFN(nn.Module):
    def __init__(self, d_model, d_ff, dropout=0.0):
        super().__init__()
        self.linear1 = nn.Linear(d_model, d_ff)
        self.linear2 = nn.Linear(d_ff, d_model)
        self.p = dropout
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.linear2(self.dropout(torch.relu(self.linear1(x))))


class FFNNoReLU(_FFN):
    def forward(self, x):
        return self.linear2(self.linear1(x))


class FFNGELU(_FFN):
    def forward(self, x):
        return self.linear2(F.gelu(self.linear1(x)))


class FFNReLUAfterLinear2(_FFN):
    def forward(self, x):
        return torch.relu(self.linear2(torch.relu(self.linear1(x))))


class FFNResidualInside(_FFN):
    def forward(self, x):
        return x + self.linear2(torch.relu(self.linear1(x)))


class FFNDropoutAlwaysOn(_FFN):
    def forward(self, x):
        return self.linear2(F.dropout(torch.relu(self.linear1(x)), self.p))


# --- EncoderLayer -----------------------------------------------------------------------


class _Layer(nn.Module):
    def __init__(self, d_model, num_heads, d_ff, dropout=0.0):
        super().__init__()
        self.self_attn = ref.MultiHeadAttention(d_model, num_heads, dropout)
        self.ffn = ref.FeedForward(d_model, d_ff, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        x = self.norm1(x + self.dropout(a))
        return self.norm2(x + self.dropout(self.ffn(x))), w


class LayerPreLN(_Layer):
    def forward(self, x, mask=None):
        h = self.norm1(x)
        a, w = self.self_attn(h, h, h, mask)
        x = x + a
        return x + self.ffn(self.norm2(x)), w


class LayerNoResidualAroundAttention(_Layer):
    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        x = self.norm1(a)
        return self.norm2(x + self.ffn(x)), w


class LayerNoResidualAroundFFN(_Layer):
    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        x = self.norm1(x + a)
        return self.norm2(self.ffn(x)), w


class LayerNorm1Twice(_Layer):
    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        x = self.norm1(x + a)
        return self.norm1(x + self.ffn(x)), w


class LayerNormInsideResidual(_Layer):
    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        x = x + self.norm1(a)
        return x + self.norm2(self.ffn(x)), w


class LayerFFNOnInput(_Layer):
    def forward(self, x, mask=None):
        a, w = self.self_attn(x, x, x, mask)
        h = self.norm1(x + a)
        return self.norm2(h + self.ffn(x)), w


class LayerMaskNotPassed(_Layer):
    def forward(self, x, mask=None):
        return super().forward(x, None)


class LayerDropoutAlwaysOn(_Layer):
    def forward(self, x, mask=None):
        p = self.dropout.p
        a, w = self.self_attn(x, x, x, mask)
        x = self.norm1(x + F.dropout(a, p))
        return self.norm2(x + F.dropout(self.ffn(x), p)), w


# --- TransformerEncoder -----------------------------------------------------------------


class _Encoder(nn.Module):
    padding_idx: int | None = 0
    persistent = False

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__()
        self.d_model = d_model
        self.embedding = nn.Embedding(vocab_size, d_model, padding_idx=self.padding_idx)
        self.layers = nn.ModuleList(ref.EncoderLayer(d_model, num_heads, d_ff, dropout)
                                    for _ in range(num_layers))
        self.register_buffer("pe", self.positional_encoding(max_len, d_model),
                             persistent=self.persistent)

    def positional_encoding(self, max_len, d_model):
        return ref.sinusoidal_positional_encoding(max_len, d_model)

    def embed(self, tokens):
        return self.embedding(tokens) * math.sqrt(self.d_model) + self.pe[: tokens.shape[1]]

    def forward(self, tokens, mask=None):
        x = self.embed(tokens)
        attentions = []
        for layer in self.layers:
            x, w = layer(x, mask)
            attentions.append(w)
        return x, attentions


class EncoderNoScale(_Encoder):
    def embed(self, tokens):
        return self.embedding(tokens) + self.pe[: tokens.shape[1]]


class EncoderNoPositions(_Encoder):
    def embed(self, tokens):
        return self.embedding(tokens) * math.sqrt(self.d_model)


class EncoderScaleAfterPositions(_Encoder):
    def embed(self, tokens):
        return (self.embedding(tokens) + self.pe[: tokens.shape[1]]) * math.sqrt(self.d_model)


def _pe_concatenated(max_len, d_model):
    position = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)
    angles = position / 10000 ** (torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).float()


def _pe_exponent_i(max_len, d_model):
    pe = torch.zeros(max_len, d_model)
    for pos in range(max_len):
        for i in range(d_model // 2):
            pe[pos, 2 * i] = math.sin(pos / 10000 ** (i / d_model))
            pe[pos, 2 * i + 1] = math.cos(pos / 10000 ** (i / d_model))
    return pe


class EncoderPEConcatenated(_Encoder):
    def positional_encoding(self, max_len, d_model):
        return _pe_concatenated(max_len, d_model)


class EncoderPEExponentI(_Encoder):
    def positional_encoding(self, max_len, d_model):
        return _pe_exponent_i(max_len, d_model)


class EncoderMaskNotPassed(_Encoder):
    def forward(self, tokens, mask=None):
        return super().forward(tokens, None)


class EncoderPersistentPE(_Encoder):
    persistent = True


class EncoderNoPaddingIdx(_Encoder):
    padding_idx = None


class EncoderLastAttentionOnly(_Encoder):
    def forward(self, tokens, mask=None):
        x, attentions = super().forward(tokens, mask)
        return x, [attentions[-1]]


class EncoderSharedLayers(_Encoder):
    """One layer object repeated: every layer holds the same weights."""

    def __init__(self, vocab_size, d_model, num_heads, d_ff, num_layers, max_len=512,
                 dropout=0.0):
        super().__init__(vocab_size, d_model, num_heads, d_ff, num_layers, max_len, dropout)
        layer = ref.EncoderLayer(d_model, num_heads, d_ff, dropout)
        self.layers = nn.ModuleList([layer] * num_layers)


class EncoderSameAttentionListed(_Encoder):
    def forward(self, tokens, mask=None):
        x = self.embed(tokens)
        attentions = []
        for layer in self.layers:
            x, w = layer(x, mask)
        for _ in self.layers:
            attentions.append(w)
        return x, attentions


MISTAKES = {
    "split_heads": [
        Mistake("reshape to (B, H, T, Dh) without transpose", split_reshape_no_transpose,
                "without the transpose"),
        Mistake("heads take interleaved features", split_interleaved, "interleaved"),
        Mistake("transpose forgotten: (B, T, H, Dh)", split_transpose_missing,
                "transpose is missing"),
        Mistake("T and head_dim swapped (keys pre-transposed)", split_ready_for_keys,
                "T and head_dim are swapped"),
        Mistake("squeeze() drops a batch or head axis of size 1", split_squeezes, "squeeze"),
    ],
    "merge_heads": [
        Mistake("reshape without transpose", merge_reshape_no_transpose,
                "without first moving the head axis"),
        Mistake("heads interleaved", merge_interleaved, "interleaved"),
        Mistake("view() on a transposed tensor", merge_view_after_transpose, "contiguous"),
        Mistake("heads averaged instead of concatenated", merge_mean, "averaged"),
        Mistake("heads in reverse order", merge_reversed, "reverse order"),
    ],
    "MultiHeadAttention": [
        Mistake("no 1/sqrt(d_k)", MHANoScale, "not divided by sqrt(d_k)"),
        Mistake("scaled by sqrt(d_model), not the head dim", MHAScaleByModelDim,
                "sqrt(d_model) instead of sqrt(d_k)"),
        Mistake("softmax over the query axis", MHASoftmaxOverQueries, "query axis"),
        Mistake("mask applied after softmax", MHAMaskAfterSoftmax, "after the softmax"),
        Mistake("mask added as 0/1", MHAMaskAdded, "as 0/1"),
        Mistake("mask inverted", MHAMaskInverted, "inverted"),
        Mistake("masked scores set to 0", MHAMaskFilledWithZero, "instead of -inf"),
        Mistake("all-masked row gives NaN", MHAAllMaskedNaN, "all masked gets NaN"),
        Mistake("all-masked row gives uniform weights", MHAAllMaskedUniform, "uniform weights"),
        Mistake("heads split by reshape without transpose", MHASplitWithoutTranspose,
                "split with reshape"),
        Mistake("heads merged by reshape without transpose", MHAMergeWithoutTranspose,
                "merged with reshape"),
        Mistake("heads merged interleaved", MHAMergeInterleaved, "merged interleaved"),
        Mistake("w_o skipped", MHANoOutputProjection, "w_o is skipped"),
        Mistake("key and value ignored", MHAIgnoresKeyValue, "key and value are ignored"),
        Mistake("mask.unsqueeze(1) breaks a (Tq, Tk) mask", MHAMaskUnsqueeze1,
                "unsqueeze(-3)"),
        Mistake("softmax from exp overflows", MHAManualSoftmax, "overflows"),
        Mistake("projections without bias", MHANoBias, "w_q.bias"),
    ],
    "FeedForward": [
        Mistake("no ReLU", FFNNoReLU, "relu between linear1 and linear2 is missing"),
        Mistake("GELU instead of ReLU", FFNGELU, "gelu"),
        Mistake("ReLU after linear2 too", FFNReLUAfterLinear2, "after linear2"),
        Mistake("residual added inside the FFN", FFNResidualInside, "residual"),
        Mistake("dropout active in eval mode", FFNDropoutAlwaysOn, "dropout is active"),
    ],
    "EncoderLayer": [
        Mistake("pre-LN instead of post-LN", LayerPreLN, "pre-ln"),
        Mistake("no residual around self-attention", LayerNoResidualAroundAttention,
                "residual connection around self-attention is missing"),
        Mistake("no residual around the FFN", LayerNoResidualAroundFFN,
                "residual connection around the feed-forward sublayer is missing"),
        Mistake("norm1 used twice", LayerNorm1Twice, "norm2 is never used"),
        Mistake("LayerNorm inside the residual branch", LayerNormInsideResidual,
                "sublayer output only"),
        Mistake("FFN reads the layer input", LayerFFNOnInput, "reads the layer's input"),
        Mistake("mask not passed to self-attention", LayerMaskNotPassed,
                "mask is not passed to self-attention"),
        Mistake("dropout active in eval mode", LayerDropoutAlwaysOn, "dropout is active"),
    ],
    "TransformerEncoder": [
        Mistake("embeddings not scaled", EncoderNoScale, "not multiplied by sqrt(d_model)"),
        Mistake("positions not added", EncoderNoPositions, "positional encoding is not added"),
        Mistake("positions scaled too", EncoderScaleAfterPositions, "only the embeddings"),
        Mistake("own PE with sin/cos concatenated", EncoderPEConcatenated, "concatenated"),
        Mistake("own PE with exponent i instead of 2i", EncoderPEExponentI, "i instead of 2i"),
        Mistake("mask not passed to the layers", EncoderMaskNotPassed,
                "mask is not passed to the layers"),
        Mistake("pe saved in the state_dict", EncoderPersistentPE, "persistent=False"),
        Mistake("no padding_idx", EncoderNoPaddingIdx, "padding_idx=0"),
        Mistake("only the last layer's attention returned", EncoderLastAttentionOnly,
                "one (B, H, T, T) tensor per layer"),
        Mistake("the same attention listed for every layer", EncoderSameAttentionListed,
                "same layer's weights"),
        Mistake("one layer repeated: [layer] * num_layers shares its weights",
                EncoderSharedLayers, "share one set of weights"),
    ],
}
