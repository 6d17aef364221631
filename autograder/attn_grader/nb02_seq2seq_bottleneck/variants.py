"""Correct answers for 02_seq2seq_bottleneck written in other styles; each must earn full
marks.

Styles of public seq2seq code: the PyTorch tutorials' sorted ``pack_padded_sequence`` (and
unsorting afterwards), running the GRU over the padding and gathering the state at
``lengths - 1`` (d2l, the UvA notebooks), time-major GRUs, a step-by-step loop that freezes
finished rows, teacher forcing one token at a time, ``F.pad`` / ``torch.roll`` shifts, the
loss from ``log_softmax`` + ``gather`` or ``nll_loss(ignore_index=...)`` or ``logsumexp``,
greedy decoding with a ``done`` flag, with early stopping under ``inference_mode``, or by
re-feeding the whole prefix as the Annotated Transformer does, Python loops, numpy.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attn_grader.mistakes import Variant

PAD, SOS, EOS = 0, 1, 2

# --- shift_right --------------------------------------------------------------------------


def shift_pad(targets, sos_id=SOS):
    return F.pad(targets[:, :-1], (1, 0), value=sos_id)


def shift_roll(targets, sos_id=SOS):
    shifted = torch.roll(targets, shifts=1, dims=1)
    shifted[:, 0] = sos_id
    return shifted


def shift_preallocated(targets, sos_id=SOS):
    dec_inputs = torch.full_like(targets, sos_id)
    dec_inputs[:, 1:] = targets[:, :-1]
    return dec_inputs


def shift_hstack(targets, sos_id=SOS):
    sos = torch.full((targets.size(0), 1), sos_id, dtype=targets.dtype)
    return torch.hstack([sos, targets[:, :-1]])


# --- Encoder ------------------------------------------------------------------------------


class EncoderSortedPack(nn.Module):
    """The PyTorch tutorial's way: sort the batch by length, pack, unsort afterwards."""

    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)

    def forward(self, src, src_lengths):
        lengths = torch.as_tensor(src_lengths)
        sorted_lengths, order = lengths.sort(descending=True)
        restore = order.argsort()
        packed = pack_padded_sequence(self.embedding(src[order]), sorted_lengths.cpu(),
                                      batch_first=True)
        packed_out, hidden = self.rnn(packed)
        outputs, _ = pad_packed_sequence(packed_out, batch_first=True,
                                         total_length=src.size(1))
        return outputs[restore], hidden[-1][restore]


class EncoderGather(nn.Module):
    """The GRU runs over the padding too; the context is gathered at lengths - 1 and the
    outputs at PAD positions are zeroed with a mask."""

    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.rnn = nn.GRU(emb_dim, hidden_dim, num_layers=1, batch_first=True)

    def forward(self, src, src_lengths):
        outputs, _ = self.rnn(self.embedding(src))
        lengths = torch.as_tensor(src_lengths, device=src.device)
        index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.size(-1))
        context = outputs.gather(1, index).squeeze(1)
        valid = torch.arange(src.size(1), device=src.device)[None, :] < lengths[:, None]
        return outputs * valid.unsqueeze(-1), context


class EncoderTimeMajorLoop(nn.Module):
    """A time-major GRU run one step at a time; rows whose sequence has ended keep their
    state, and their outputs are 0."""

    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.hidden_dim = hidden_dim
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim)  # (T, B, E)

    def forward(self, src, src_lengths):
        embedded = self.embedding(src).transpose(0, 1)
        lengths = torch.as_tensor(src_lengths)
        h = embedded.new_zeros(1, src.size(0), self.hidden_dim)
        outputs = []
        for t in range(embedded.size(0)):
            out_t, h_new = self.rnn(embedded[t:t + 1], h)
            alive = (t < lengths).view(1, -1, 1)
            h = torch.where(alive, h_new, h)
            outputs.append(out_t[0] * alive[0])
        return torch.stack(outputs, dim=1), h[0]


# --- Decoder ------------------------------------------------------------------------------


class DecoderTimeMajor(nn.Module):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, dec_inputs, hidden):
        embedded = self.embedding(dec_inputs).permute(1, 0, 2)  # (T, B, E)
        outputs, h_n = self.rnn(embedded, hidden[None])
        return self.out(outputs).permute(1, 0, 2), h_n[0]


class DecoderStepLoop(nn.Module):
    """Teacher forcing one token at a time."""

    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, dec_inputs, hidden):
        h = hidden.unsqueeze(0)
        steps = []
        for t in range(dec_inputs.size(1)):
            output, h = self.rnn(self.embedding(dec_inputs[:, t:t + 1]), h)
            steps.append(self.out(output))
        return torch.cat(steps, dim=1), h.squeeze(0)


class DecoderFlattened(nn.Module):
    """The output layer applied to the flattened (B*T, H) states, then viewed back."""

    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.out = nn.Linear(hidden_dim, vocab_size)

    def forward(self, dec_inputs, hidden):
        B, T = dec_inputs.shape
        outputs, h_n = self.rnn(self.embedding(dec_inputs), hidden.view(1, B, -1))
        flat = F.linear(outputs.reshape(B * T, -1), self.out.weight, self.out.bias)
        return flat.view(B, T, -1), h_n.squeeze(0)


# --- masked_cross_entropy ---------------------------------------------------------------


def mce_gather(logits, targets, pad_id=PAD):
    log_probs = F.log_softmax(logits, dim=-1)
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = (targets != pad_id).float()
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def mce_reduction_none(logits, targets, pad_id=PAD):
    V = logits.size(-1)
    losses = F.cross_entropy(logits.view(-1, V), targets.view(-1), reduction="none")
    mask = targets.view(-1).ne(pad_id).to(losses.dtype)
    return (losses * mask).sum() / max(mask.sum().item(), 1.0)


def mce_nll_ignore_index(logits, targets, pad_id=PAD):
    log_probs = torch.log_softmax(logits.flatten(0, 1), dim=-1)
    total = F.nll_loss(log_probs, targets.flatten(), ignore_index=pad_id, reduction="sum")
    count = (targets != pad_id).sum()
    return total / torch.clamp(count, min=1)


def mce_logsumexp(logits, targets, pad_id=PAD):
    picked = torch.gather(logits, 2, targets[..., None])[..., 0]
    per_token = logits.logsumexp(dim=-1) - picked
    keep = targets != pad_id
    return torch.where(keep, per_token, torch.zeros_like(per_token)).sum() / keep.sum().clamp(
        min=1)


# --- greedy_decode ----------------------------------------------------------------------


@torch.no_grad()
def greedy_done_flag(encoder, decoder, src, src_lengths, max_len, sos_id=SOS, eos_id=EOS):
    modes = (encoder.training, decoder.training)
    encoder.eval()
    decoder.eval()
    try:
        _, hidden = encoder(src, src_lengths)
        y = torch.full((src.size(0),), sos_id, dtype=torch.long)
        done = torch.zeros(src.size(0), dtype=torch.bool)
        columns = []
        for _ in range(max_len):
            logits, hidden = decoder(y.unsqueeze(1), hidden)
            y = logits[:, -1].argmax(-1)
            columns.append(torch.where(done, torch.full_like(y, PAD), y))
            done = done | (y == eos_id)
        return torch.stack(columns, dim=1)
    finally:
        encoder.train(modes[0])
        decoder.train(modes[1])


def greedy_early_stop(encoder, decoder, src, src_lengths, max_len, sos_id=SOS, eos_id=EOS):
    """A PAD-filled result written column by column; stops once every row has ended."""
    was_training = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    with torch.inference_mode():
        _, h = encoder(src, src_lengths)
        batch = src.shape[0]
        result = torch.full((batch, max_len), PAD, dtype=torch.long)
        finished = torch.zeros(batch, dtype=torch.bool)
        token = torch.full((batch, 1), sos_id, dtype=torch.long)
        for t in range(max_len):
            logits, h = decoder(token, h)
            token = logits.argmax(dim=-1)[:, -1:]
            result[:, t] = token[:, 0].masked_fill(finished, PAD)
            finished |= token[:, 0] == eos_id
            if bool(finished.all()):
                break
    encoder.train(was_training[0])
    decoder.train(was_training[1])
    return result.clone()


def greedy_prefix(encoder, decoder, src, src_lengths, max_len, sos_id=SOS, eos_id=EOS):
    """The Annotated Transformer's greedy_decode: the whole prefix is fed again at every
    step, from the context; what follows each row's first EOS becomes PAD in Python."""
    enc_mode, dec_mode = encoder.training, decoder.training
    encoder.eval()
    decoder.eval()
    try:
        with torch.no_grad():
            _, context = encoder(src, src_lengths)
            ys = torch.ones(src.size(0), 1, dtype=torch.long).fill_(sos_id)
            for _ in range(max_len):
                logits, _ = decoder(ys, context)
                next_word = torch.max(logits[:, -1], dim=1).indices
                ys = torch.cat([ys, next_word.unsqueeze(1)], dim=1)
        tokens = ys[:, 1:].clone()
        for b, row in enumerate(tokens.tolist()):
            if eos_id in row:
                tokens[b, row.index(eos_id) + 1:] = PAD
        return tokens
    finally:
        encoder.train(enc_mode)
        decoder.train(dec_mode)


# --- exact_match --------------------------------------------------------------------------


def em_python_loop(pred, target, pad_id=PAD):
    T = target.shape[1]
    right = 0
    for p_row, t_row in zip(pred[:, :T].tolist(), target.tolist()):
        right += all(p == t for p, t in zip(p_row, t_row) if t != pad_id)
    return right / len(target)


def em_logical_or(pred, target, pad_id=PAD):
    pred = pred[:, : target.size(1)]
    ok = torch.logical_or(pred.eq(target), target.eq(pad_id)).all(dim=1)
    return ok.sum().item() / target.size(0)


def em_count_mismatches(pred, target, pad_id=PAD):
    wrong = ((pred[:, : target.shape[1]] != target) & (target != pad_id)).sum(dim=1)
    return float((wrong == 0).float().mean())


def em_numpy(pred, target, pad_id=PAD):
    t = target.cpu().numpy()
    p = pred.cpu().numpy()[:, : t.shape[1]]
    return float(np.where(t == pad_id, True, p == t).all(axis=1).mean())


VARIANTS = {
    "shift_right": [
        Variant("F.pad with value=sos_id", shift_pad),
        Variant("torch.roll, then column 0 set to SOS", shift_roll),
        Variant("full_like then a slice assignment", shift_preallocated),
        Variant("torch.hstack", shift_hstack),
    ],
    "Encoder": [
        Variant("sorted pack_padded_sequence, unsorted afterwards", EncoderSortedPack),
        Variant("GRU over the padding, gather at lengths - 1, masked outputs", EncoderGather),
        Variant("time-major GRU stepped in a loop that freezes ended rows",
                EncoderTimeMajorLoop),
    ],
    "Decoder": [
        Variant("time-major GRU", DecoderTimeMajor),
        Variant("teacher forcing one token at a time", DecoderStepLoop),
        Variant("output layer on the flattened states (F.linear)", DecoderFlattened),
    ],
    "masked_cross_entropy": [
        Variant("log_softmax + gather + mask", mce_gather),
        Variant("cross_entropy(reduction='none') * mask", mce_reduction_none),
        Variant("nll_loss(ignore_index=pad_id, reduction='sum') / count",
                mce_nll_ignore_index),
        Variant("logsumexp minus the target's logit", mce_logsumexp),
    ],
    "greedy_decode": [
        Variant("done flag under @torch.no_grad()", greedy_done_flag),
        Variant("PAD-filled result, early stop, inference_mode", greedy_early_stop),
        Variant("whole prefix re-fed each step (Annotated Transformer)", greedy_prefix),
    ],
    "exact_match": [
        Variant("Python loop over rows", em_python_loop),
        Variant("logical_or + all + item", em_logical_or),
        Variant("mismatches counted at non-PAD positions", em_count_mismatches),
        Variant("numpy", em_numpy),
    ],
}
