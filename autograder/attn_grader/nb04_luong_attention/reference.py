"""Reference solutions for 04_luong_attention, built on PyTorch's own pieces.

The ``general`` score is ``F.bilinear`` (``h_t^T W_a h̄_s``), the ``concat`` score splits
``W_a`` into its decoder and encoder halves instead of concatenating, and the teacher-forced
``forward`` runs ``step`` once per target position. The notebook's worked solutions compute
the scores with explicit matrix products and run the teacher-forced attention for all steps
at once, so the two are independent witnesses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PAD = 0
KINDS = ("dot", "general", "concat")


class LuongScore(nn.Module):
    def __init__(self, hidden_dim, kind):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        self.hidden_dim, self.kind = hidden_dim, kind
        if kind == "general":
            self.W_a = nn.Linear(hidden_dim, hidden_dim, bias=False)
        elif kind == "concat":
            self.W_a = nn.Linear(2 * hidden_dim, hidden_dim, bias=False)
            self.v_a = nn.Linear(hidden_dim, 1, bias=False)

    def forward(self, dec_h, enc_outputs):
        if self.kind == "dot":
            return torch.einsum("bh,bsh->bs", dec_h, enc_outputs)
        query = dec_h.unsqueeze(1).expand_as(enc_outputs).contiguous()
        if self.kind == "general":
            return F.bilinear(query, enc_outputs, self.W_a.weight.unsqueeze(0)).squeeze(-1)
        H = self.hidden_dim
        W_dec, W_enc = self.W_a.weight[:, :H], self.W_a.weight[:, H:]
        hidden = torch.tanh(F.linear(query, W_dec) + F.linear(enc_outputs, W_enc))
        return self.v_a(hidden).squeeze(-1)


def luong_attention(dec_h, enc_outputs, src_mask, scorer):
    scores = scorer(dec_h, enc_outputs)
    if src_mask is not None:
        scores = scores.masked_fill(~src_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if src_mask is not None:  # a row with every position masked: weights 0, not NaN
        weights = torch.where(src_mask, weights, torch.zeros_like(weights))
    context = torch.bmm(weights.unsqueeze(1), enc_outputs).squeeze(1)
    return context, weights


class LuongDecoder(nn.Module):
    def __init__(self, vocab_size, emb_dim, hidden_dim, kind):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.scorer = LuongScore(hidden_dim, kind)
        self.W_c = nn.Linear(2 * hidden_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def step(self, y_prev, hidden, enc_outputs, src_mask):
        _, h_n = self.rnn(self.embedding(y_prev).unsqueeze(1), hidden.unsqueeze(0).contiguous())
        h_t = h_n[0]
        context, weights = luong_attention(h_t, enc_outputs, src_mask, self.scorer)
        h_tilde = torch.tanh(self.W_c(torch.cat([context, h_t], dim=-1)))
        return self.out(h_tilde), h_t, weights

    def forward(self, dec_inputs, hidden, enc_outputs, src_mask):
        logits, attn = [], []
        for t in range(dec_inputs.shape[1]):
            step_logits, hidden, weights = self.step(dec_inputs[:, t], hidden, enc_outputs,
                                                     src_mask)
            logits.append(step_logits)
            attn.append(weights)
        return torch.stack(logits, 1), hidden, torch.stack(attn, 1)
