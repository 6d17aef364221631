"""Correct answers for 04_luong_attention written in other styles; each must earn full marks.

Styles of public Luong-attention code: the PyTorch chatbot tutorial's ``Attn`` module (one
method per score, ``torch.sum(hidden * encoder_output, dim=2)``), ``bmm`` and ``einsum``
scores, ``nn.LazyLinear``, masking with -1e9, ``finfo.min`` or ``-inf``, a softmax written
out, a time-major GRU run step by step, teacher forcing computed for all steps at once (one
GRU call, one batched attention), the attention weights kept on ``self.attn``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.mistakes import Variant

PAD = 0

# --- LuongScore ---------------------------------------------------------------------------


class ScoreBmm(nn.Module):
    def __init__(self, hidden_dim, kind):
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.W_a = nn.Linear(hidden_dim, hidden_dim, bias=False)
        elif kind == "concat":
            self.W_a = nn.Linear(hidden_dim * 2, hidden_dim, bias=False)
            self.v_a = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, dec_h, enc_outputs):
        if self.kind == "dot":
            return torch.bmm(enc_outputs, dec_h.unsqueeze(2)).squeeze(2)
        if self.kind == "general":
            return torch.bmm(self.W_a(enc_outputs), dec_h.unsqueeze(2)).squeeze(2)
        query = dec_h.unsqueeze(1).repeat(1, enc_outputs.size(1), 1)
        energy = torch.tanh(self.W_a(torch.cat([query, enc_outputs], dim=2)))
        return self.v_a(energy).squeeze(2)


class ScoreChatbot(nn.Module):
    """The PyTorch chatbot tutorial's Attn: one method per score, chosen by name."""

    def __init__(self, hidden_dim, kind):
        super().__init__()
        if kind not in ("dot", "general", "concat"):
            raise ValueError(kind, "is not an appropriate attention method.")
        self.method = kind
        if kind == "general":
            self.W_a = nn.Linear(hidden_dim, hidden_dim, bias=False)
        if kind == "concat":
            self.W_a = nn.Linear(hidden_dim * 2, hidden_dim, bias=False)
            self.v_a = nn.Linear(hidden_dim, 1, bias=False)

    def dot_score(self, hidden, encoder_output):
        return torch.sum(hidden * encoder_output, dim=2)

    def general_score(self, hidden, encoder_output):
        return torch.sum(hidden * self.W_a(encoder_output), dim=2)

    def concat_score(self, hidden, encoder_output):
        expanded = hidden.expand(-1, encoder_output.size(1), -1)
        energy = self.W_a(torch.cat((expanded, encoder_output), 2)).tanh()
        return self.v_a(energy).sum(dim=2)

    def forward(self, dec_h, enc_outputs):
        return getattr(self, f"{self.method}_score")(dec_h.unsqueeze(1), enc_outputs)


class ScoreLazyEinsum(nn.Module):
    """Lazily built layers; einsum for the products."""

    def __init__(self, hidden_dim, kind):
        super().__init__()
        self.kind = kind
        if kind == "general":
            self.W_a = nn.LazyLinear(hidden_dim, bias=False)
        elif kind == "concat":
            self.W_a = nn.LazyLinear(hidden_dim, bias=False)
            self.v_a = nn.LazyLinear(1, bias=False)

    def forward(self, dec_h, enc_outputs):
        if self.kind == "dot":
            return torch.einsum("bh,bsh->bs", dec_h, enc_outputs)
        if self.kind == "general":
            return torch.einsum("bh,bsh->bs", dec_h, self.W_a(enc_outputs))
        S = enc_outputs.shape[1]
        pairs = torch.cat([dec_h[:, None, :].expand(-1, S, -1), enc_outputs], dim=-1)
        return self.v_a(torch.tanh(self.W_a(pairs)))[..., 0]


# --- luong_attention ----------------------------------------------------------------------


def attention_fill_1e9(dec_h, enc_outputs, src_mask, scorer):
    scores = scorer(dec_h, enc_outputs)
    if src_mask is not None:
        scores = scores.masked_fill(src_mask == 0, -1e9)
    weights = F.softmax(scores, dim=1)
    if src_mask is not None:
        weights = weights * src_mask  # a row with nothing to attend to: 0, not uniform
    context = torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1)
    return context, weights


def attention_finfo_einsum(dec_h, enc_outputs, src_mask, scorer):
    scores = scorer(dec_h, enc_outputs)
    if src_mask is not None:
        scores = scores.masked_fill(~src_mask, torch.finfo(scores.dtype).min)
    weights = scores.softmax(dim=-1)
    if src_mask is not None:
        weights = weights.masked_fill(~src_mask, 0.0)
    return torch.einsum("bs,bsh->bh", weights, enc_outputs), weights


def attention_inf_broadcast(dec_h, enc_outputs, src_mask, scorer):
    scores = scorer(dec_h, enc_outputs)
    if src_mask is not None:
        scores = scores.masked_fill(~src_mask, float("-inf"))
    weights = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
    context = (weights.unsqueeze(-1) * enc_outputs).sum(dim=1)
    return context, weights


def attention_manual_softmax(dec_h, enc_outputs, src_mask, scorer):
    scores = scorer(dec_h, enc_outputs)
    keep = torch.ones_like(scores, dtype=torch.bool) if src_mask is None else src_mask
    scores = scores.masked_fill(~keep, -1e9)
    exp = torch.exp(scores - scores.max(dim=-1, keepdim=True).values) * keep
    weights = exp / exp.sum(dim=-1, keepdim=True).clamp(min=1.0)
    return weights.unsqueeze(1).bmm(enc_outputs).squeeze(1), weights


# --- LuongDecoder -------------------------------------------------------------------------


class DecoderAllSteps(nn.Module):
    """Teacher forcing for all steps at once: one GRU call, the scores of every step against
    every source position, one batched context; ``step`` is ``forward`` on one token."""

    def __init__(self, vocab_size, emb_dim, hidden_dim, kind):
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.scorer = ScoreBmm(hidden_dim, kind)
        self.W_c = nn.Linear(2 * hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def _scores(self, states, enc_outputs):
        """(B, T, H) decoder states against (B, S, H) encoder states -> (B, T, S)."""
        if self.kind == "dot":
            return states @ enc_outputs.transpose(1, 2)
        if self.kind == "general":
            return states @ self.scorer.W_a(enc_outputs).transpose(1, 2)
        T, S = states.size(1), enc_outputs.size(1)
        pairs = torch.cat([states.unsqueeze(2).expand(-1, -1, S, -1),
                           enc_outputs.unsqueeze(1).expand(-1, T, -1, -1)], dim=-1)
        return self.scorer.v_a(torch.tanh(self.scorer.W_a(pairs))).squeeze(-1)

    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        states, h_n = self.rnn(self.embedding(dec_inputs), hidden.unsqueeze(0).contiguous())
        scores = self._scores(states, enc_outputs)
        if src_mask is not None:
            scores = scores.masked_fill(~src_mask.unsqueeze(1), float("-inf"))
        attn = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        context = attn @ enc_outputs
        h_tilde = torch.tanh(self.W_c(torch.cat([context, states], dim=-1)))
        return self.out(h_tilde), h_n[0], attn

    def step(self, y_prev, hidden, enc_outputs, src_mask):
        logits, h_t, attn = self.forward(y_prev.unsqueeze(1), hidden, enc_outputs, src_mask)
        return logits[:, 0], h_t, attn[:, 0]


class DecoderTimeMajorChatbot(nn.Module):
    """The chatbot tutorial's decoder: a time-major GRU run one step at a time, the Attn
    module, -1e9 masking."""

    def __init__(self, vocab_size, emb_dim, hidden_dim, kind):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.rnn = nn.GRU(emb_dim, hidden_dim)
        self.scorer = ScoreChatbot(hidden_dim, kind)
        self.W_c = nn.Linear(hidden_dim * 2, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def step(self, y_prev, hidden, enc_outputs, src_mask):
        embedded = self.embedding(y_prev).unsqueeze(0)  # (1, B, E)
        rnn_output, new_hidden = self.rnn(embedded, hidden.unsqueeze(0))
        h_t = rnn_output.squeeze(0)
        context, weights = attention_fill_1e9(h_t, enc_outputs, src_mask, self.scorer)
        concat_output = torch.tanh(self.W_c(torch.cat((context, h_t), 1)))
        return self.out(concat_output), new_hidden[0], weights

    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        all_logits, all_weights = [], []
        for t in range(dec_inputs.size(1)):
            logits, hidden, weights = self.step(dec_inputs[:, t], hidden, enc_outputs,
                                                src_mask)
            all_logits.append(logits)
            all_weights.append(weights)
        return torch.stack(all_logits, 1), hidden, torch.stack(all_weights, 1)


class DecoderLazyKeepsAttn(nn.Module):
    """Lazily built W_c and out, the lazy einsum scorer, the weights of the last step kept
    on ``self.attn``."""

    def __init__(self, vocab_size, emb_dim, hidden_dim, kind):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.scorer = ScoreLazyEinsum(hidden_dim, kind)
        self.W_c = nn.LazyLinear(hidden_dim)
        self.out = nn.LazyLinear(vocab_size)
        self.attn = None

    def step(self, y_prev, hidden, enc_outputs, src_mask):
        _, h = self.rnn(self.embedding(y_prev)[:, None], hidden[None].contiguous())
        h_t = h.squeeze(0)
        context, self.attn = attention_finfo_einsum(h_t, enc_outputs, src_mask, self.scorer)
        attentional = torch.tanh(self.W_c(torch.cat([context, h_t], dim=-1)))
        return self.out(attentional), h_t, self.attn

    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        logits, maps = [], []
        for y_t in dec_inputs.unbind(1):
            step_logits, hidden, _ = self.step(y_t, hidden, enc_outputs, src_mask)
            logits.append(step_logits)
            maps.append(self.attn)
        return torch.stack(logits, 1), hidden, torch.stack(maps, 1)


VARIANTS = {
    "LuongScore": [
        Variant("bmm scores, repeat + cat for concat", ScoreBmm),
        Variant("PyTorch chatbot tutorial: one method per score", ScoreChatbot),
        Variant("lazy layers and einsum", ScoreLazyEinsum),
    ],
    "luong_attention": [
        Variant("mask with -1e9, weights * mask, bmm", attention_fill_1e9),
        Variant("finfo.min fill, einsum context", attention_finfo_einsum),
        Variant("-inf then nan_to_num, broadcast weighted sum", attention_inf_broadcast),
        Variant("softmax written out with the row max subtracted", attention_manual_softmax),
    ],
    "LuongDecoder": [
        Variant("teacher forcing for all steps at once (one GRU call, batched attention)",
                DecoderAllSteps),
        Variant("chatbot tutorial: time-major GRU stepped in a loop", DecoderTimeMajorChatbot),
        Variant("lazy layers, weights kept on self.attn", DecoderLazyKeepsAttn),
    ],
}
