"""Reference solutions for 02_seq2seq_bottleneck, built on PyTorch's own pieces.

The encoder packs its padded batch (``pack_padded_sequence``), so PAD tokens never reach
the GRU; the loss is ``F.cross_entropy(ignore_index=...)``; greedy decoding runs every step
and blanks what follows the first EOS afterwards. The notebook's worked solutions take
other routes (a gather at ``lengths - 1``, an explicit mask, a ``done`` flag), so the two
are independent witnesses.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

PAD, SOS, EOS = 0, 1, 2


def shift_right(targets, sos_id=SOS):
    sos = targets.new_full((targets.shape[0], 1), sos_id)
    return torch.cat([sos, targets[:, :-1]], dim=1)


class Encoder(nn.Module):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)

    def forward(self, src, src_lengths):
        lengths = torch.as_tensor(src_lengths).to("cpu", torch.int64)
        packed = pack_padded_sequence(self.embedding(src), lengths, batch_first=True,
                                      enforce_sorted=False)
        packed_out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True,
                                         total_length=src.shape[1])
        return outputs, h_n[0]


class Decoder(nn.Module):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, dec_inputs, hidden):
        outputs, h_n = self.rnn(self.embedding(dec_inputs), hidden.unsqueeze(0).contiguous())
        return self.out(outputs), h_n[0]


def masked_cross_entropy(logits, targets, pad_id=PAD):
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                            ignore_index=pad_id, reduction="sum")
    count = (targets != pad_id).sum()
    return total / count.clamp(min=1).to(total.dtype)


def blank_after_eos(tokens, eos_id=EOS, pad_id=PAD):
    """Keep the first EOS of each row; every later position becomes PAD."""
    is_eos = (tokens == eos_id).long()
    seen_before = (is_eos.cumsum(1) - is_eos) > 0
    return tokens.masked_fill(seen_before, pad_id)


def greedy_decode(encoder, decoder, src, src_lengths, max_len, sos_id=SOS, eos_id=EOS):
    modes = (encoder.training, decoder.training)
    encoder.eval()
    decoder.eval()
    try:
        with torch.no_grad():
            _, hidden = encoder(src, src_lengths)
            y = torch.full((src.shape[0], 1), sos_id, dtype=torch.long, device=src.device)
            steps = []
            for _ in range(max_len):
                logits, hidden = decoder(y, hidden)
                y = logits[:, -1:].argmax(-1)
                steps.append(y)
            tokens = torch.cat(steps, dim=1) if steps else src.new_zeros((src.shape[0], 0))
            return blank_after_eos(tokens, eos_id)
    finally:
        encoder.train(modes[0])
        decoder.train(modes[1])


def exact_match(pred, target, pad_id=PAD):
    T = target.shape[1]
    pred = pred[:, :T]
    if pred.shape[1] < T:  # a too-short prediction misses every real token it lacks
        pred = F.pad(pred, (0, T - pred.shape[1]), value=-1)
    right = (pred == target) | (target == pad_id)
    return right.all(dim=1).float().mean().item()
