"""Plausible wrong answers for 04_luong_attention; each must fail its check, named."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Mistake
from attn_grader.nb04_luong_attention import reference as ref

PAD = 0

# --- LuongScore --------------------------------------------------------------------------


class ScoreSoftmax(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        return super().forward(dec_h, enc_outputs).softmax(-1)


class ScoreScaled(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        return super().forward(dec_h, enc_outputs) / math.sqrt(dec_h.shape[-1])


class ScoreGeneralOnQuery(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        if self.kind == "general":
            return (enc_outputs @ self.W_a(dec_h).unsqueeze(-1)).squeeze(-1)
        return super().forward(dec_h, enc_outputs)


class ScoreGeneralBias(ref.LuongScore):
    def __init__(self, hidden_dim, kind):
        super().__init__(hidden_dim, kind)
        if kind == "general":
            self.W_a = nn.Linear(hidden_dim, hidden_dim)

    def forward(self, dec_h, enc_outputs):
        if self.kind == "general":
            return (self.W_a(enc_outputs) @ dec_h.unsqueeze(-1)).squeeze(-1)
        return super().forward(dec_h, enc_outputs)


class ScoreConcatSwapped(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        if self.kind == "concat":
            query = dec_h.unsqueeze(1).expand_as(enc_outputs)
            pair = torch.cat([enc_outputs, query], -1)
            return self.v_a(torch.tanh(self.W_a(pair))).squeeze(-1)
        return super().forward(dec_h, enc_outputs)


class ScoreConcatNoTanh(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        if self.kind == "concat":
            query = dec_h.unsqueeze(1).expand_as(enc_outputs)
            return self.v_a(self.W_a(torch.cat([query, enc_outputs], -1))).squeeze(-1)
        return super().forward(dec_h, enc_outputs)


class ScoreSqueeze(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        if self.kind == "dot":
            return torch.bmm(enc_outputs, dec_h.unsqueeze(-1)).squeeze()
        return super().forward(dec_h, enc_outputs).squeeze()


class ScoreAlwaysDot(ref.LuongScore):
    def forward(self, dec_h, enc_outputs):
        return torch.einsum("bh,bsh->bs", dec_h, enc_outputs)


# --- luong_attention ---------------------------------------------------------------------


def _scores(dec_h, enc_outputs, scorer, src_mask):
    scores = scorer(dec_h, enc_outputs)
    if src_mask is None:
        src_mask = torch.ones_like(scores, dtype=torch.bool)
    return scores, src_mask


def attn_softmax_batch(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=0)
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_softmax_hidden(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = F.softmax(scores.masked_fill(~mask, -1e9).unsqueeze(-1), dim=-1)  # (B, S, 1)
    context = (weights * enc_outputs).sum(dim=1)
    return context, weights.squeeze(-1)


def attn_mask_ignored(dec_h, enc_outputs, src_mask, scorer):
    return ref.luong_attention(dec_h, enc_outputs, None, scorer)


def attn_mask_inverted(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), -1).nan_to_num(0.0)
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_mask_after_softmax(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = scores.softmax(-1) * mask
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_nan_when_all_masked(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_uniform_when_all_masked(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = scores.masked_fill(~mask, -1e9).softmax(-1)
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_naive_exp(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    e = scores.exp() * mask
    weights = e / e.sum(-1, keepdim=True).clamp(min=1e-30)
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_without_encoder_outputs(dec_h, enc_outputs, src_mask, scorer):
    _, weights = ref.luong_attention(dec_h, enc_outputs, src_mask, scorer)
    context = weights.sum(-1, keepdim=True) * dec_h  # the query used as the value
    return context, weights


def attn_unnormalised(dec_h, enc_outputs, src_mask, scorer):
    scores, mask = _scores(dec_h, enc_outputs, scorer, src_mask)
    weights = scores.masked_fill(~mask, float("-inf")).exp()
    return torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1), weights


def attn_squeeze(dec_h, enc_outputs, src_mask, scorer):
    context, weights = ref.luong_attention(dec_h, enc_outputs, src_mask, scorer)
    return context.squeeze(), weights.squeeze()


# --- LuongDecoder ------------------------------------------------------------------------


class _Decoder(ref.LuongDecoder):
    """The reference decoder with one switch flipped; ``forward`` runs ``step``."""

    order, tanh, use_attention, attend_self, query_prev = "ch", True, True, False, False
    return_tilde, use_mask, squeeze = False, True, False

    def step(self, y_prev, hidden, enc_outputs, src_mask):
        _, h_n = self.rnn(self.embedding(y_prev).unsqueeze(1), hidden.unsqueeze(0).contiguous())
        h_t = h_n.squeeze() if self.squeeze else h_n[0]
        query = hidden if self.query_prev else h_t
        if self.attend_self:
            c_t, weights = ref.luong_attention(query, h_t.unsqueeze(1), None, self.scorer)
        else:
            mask = src_mask if self.use_mask else None
            c_t, weights = ref.luong_attention(query, enc_outputs, mask, self.scorer)
        pair = torch.cat([c_t, h_t] if self.order == "ch" else [h_t, c_t], -1)
        h_tilde = self.W_c(pair)
        if self.tanh:
            h_tilde = torch.tanh(h_tilde)
        logits = self.out(h_tilde if self.use_attention else h_t)
        return logits, (h_tilde if self.return_tilde else h_t), weights


class DecoderWrongOrder(_Decoder):
    order = "hc"


class DecoderNoTanh(_Decoder):
    tanh = False


class DecoderIgnoresAttention(_Decoder):
    use_attention = False


class DecoderAttendsToItself(_Decoder):
    attend_self = True


class DecoderQueryPrevious(_Decoder):
    query_prev = True


class DecoderReturnsTilde(_Decoder):
    return_tilde = True


class DecoderMaskIgnored(_Decoder):
    use_mask = False


class DecoderSqueeze(_Decoder):
    squeeze = True


class DecoderNotTeacherForced(ref.LuongDecoder):
    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        logits, attn = [], []
        y = dec_inputs[:, 0]
        for _ in range(dec_inputs.shape[1]):
            step_logits, hidden, weights = self.step(y, hidden, enc_outputs, src_mask)
            logits.append(step_logits)
            attn.append(weights)
            y = step_logits.argmax(-1)
        return torch.stack(logits, 1), hidden, torch.stack(attn, 1)


class DecoderAttnTransposed(ref.LuongDecoder):
    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        logits, hidden, attn = super().forward(dec_inputs, hidden, enc_outputs, src_mask)
        return logits, hidden, attn.transpose(1, 2)


class DecoderReturnsInitialHidden(ref.LuongDecoder):
    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        logits, _, attn = super().forward(dec_inputs, hidden, enc_outputs, src_mask)
        return logits, hidden, attn


MISTAKES = {
    "LuongScore": [
        Mistake("softmax applied to the scores", ScoreSoftmax, "softmax"),
        Mistake("scaled by sqrt(H)", ScoreScaled, "sqrt"),
        Mistake("general: W_a applied to the decoder state", ScoreGeneralOnQuery,
                "decoder state"),
        Mistake("general: W_a with a bias", ScoreGeneralBias, "bias"),
        Mistake("concat: [h̄_s; h_t] order", ScoreConcatSwapped, "concatenation order"),
        Mistake("concat: no tanh", ScoreConcatNoTanh, "tanh is missing"),
        Mistake("squeeze() breaks B = 1 / S = 1", ScoreSqueeze, "squeeze"),
        Mistake("kind ignored (always dot)", ScoreAlwaysDot, "dot score is used"),
    ],
    "luong_attention": [
        Mistake("softmax over the batch axis", attn_softmax_batch, "batch axis"),
        Mistake("softmax over the hidden (size-1) axis", attn_softmax_hidden, "hidden axis"),
        Mistake("mask ignored", attn_mask_ignored, "mask is ignored"),
        Mistake("mask inverted", attn_mask_inverted, "mask is inverted"),
        Mistake("mask applied after softmax", attn_mask_after_softmax, "after the softmax"),
        Mistake("NaN for an all-False mask row", attn_nan_when_all_masked, "NaN"),
        Mistake("uniform weights for an all-False mask row", attn_uniform_when_all_masked,
                "uniform weights"),
        Mistake("exp without subtracting the max (overflow)", attn_naive_exp, "overflow"),
        Mistake("context without the encoder outputs", attn_without_encoder_outputs,
                "without the encoder outputs"),
        Mistake("weights not normalised", attn_unnormalised, "not normalised"),
        Mistake("squeeze() breaks B = 1 / S = 1", attn_squeeze, "squeeze"),
    ],
    "LuongDecoder": [
        Mistake("W_c applied to [h_t; c_t]", DecoderWrongOrder, "wrong order"),
        Mistake("tanh missing in h̃_t", DecoderNoTanh, "tanh is missing"),
        Mistake("out applied to h_t (attention unused)", DecoderIgnoresAttention,
                "attention is not used"),
        Mistake("attention without the encoder outputs", DecoderAttendsToItself,
                "without the encoder outputs"),
        Mistake("query = previous hidden state", DecoderQueryPrevious, "previous hidden"),
        Mistake("returns h̃_t as the hidden state", DecoderReturnsTilde, "attentional state"),
        Mistake("src_mask ignored", DecoderMaskIgnored, "mask is ignored"),
        Mistake("squeeze() breaks B = 1", DecoderSqueeze, "squeeze"),
        Mistake("forward not teacher-forced", DecoderNotTeacherForced, "teacher forcing"),
        Mistake("attn returned as (B, S, T)", DecoderAttnTransposed, "one row of weights"),
        Mistake("forward returns the initial hidden", DecoderReturnsInitialHidden,
                "initial state"),
    ],
}
