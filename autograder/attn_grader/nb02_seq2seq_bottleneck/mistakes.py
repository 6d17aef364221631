"""Plausible wrong answers for 02_seq2seq_bottleneck; each must fail its check, named."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attn_grader.mistakes import Mistake
from attn_grader.nb02_seq2seq_bottleneck import reference as ref

PAD, SOS, EOS = 0, 1, 2

# --- shift_right -------------------------------------------------------------------------


def shift_none(targets, sos_id=1):
    return targets.clone()


def shift_left(targets, sos_id=1):
    return torch.cat([targets[:, 1:], targets.new_full((targets.shape[0], 1), sos_id)], 1)


def shift_left_pad(targets, sos_id=1):
    return F.pad(targets[:, 1:], (0, 1), value=PAD)


def shift_keeps_last(targets, sos_id=1):
    return torch.cat([targets.new_full((targets.shape[0], 1), sos_id), targets], 1)


def shift_roll(targets, sos_id=1):
    return torch.roll(targets, 1, dims=1)


def shift_hardcoded_sos(targets, sos_id=1):
    return ref.shift_right(targets, 1)


def shift_in_place(targets, sos_id=1):
    targets[:, 1:] = targets[:, :-1].clone()
    targets[:, 0] = sos_id
    return targets


def shift_float(targets, sos_id=1):
    return torch.cat([torch.full((targets.shape[0], 1), float(sos_id)), targets[:, :-1]], 1)


def shift_squeeze(targets, sos_id=1):
    return ref.shift_right(targets, sos_id).squeeze()


# --- Encoder -----------------------------------------------------------------------------


class _EncoderBase(nn.Module):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD)
        self.rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)

    def _mask(self, src, src_lengths):
        return (torch.arange(src.shape[1])[None] < src_lengths[:, None]).unsqueeze(-1)


class EncoderContextAtPad(_EncoderBase):
    def forward(self, src, src_lengths):
        outputs, h_n = self.rnn(self.embedding(src))
        return outputs * self._mask(src, src_lengths), h_n[0]


class EncoderNoZeroing(_EncoderBase):
    def forward(self, src, src_lengths):
        outputs, _ = self.rnn(self.embedding(src))
        return outputs, outputs[torch.arange(src.shape[0]), src_lengths - 1]


class EncoderOffByOne(_EncoderBase):
    def forward(self, src, src_lengths):
        outputs, _ = self.rnn(self.embedding(src))
        idx = src_lengths.clamp(max=src.shape[1] - 1)
        return outputs * self._mask(src, src_lengths), outputs[torch.arange(src.shape[0]), idx]


class EncoderMeanContext(_EncoderBase):
    def forward(self, src, src_lengths):
        outputs, _ = self.rnn(self.embedding(src))
        outputs = outputs * self._mask(src, src_lengths)
        return outputs, outputs.sum(1) / src_lengths[:, None]


class EncoderSortedPacking(_EncoderBase):
    def forward(self, src, src_lengths):
        packed = pack_padded_sequence(self.embedding(src), src_lengths, batch_first=True)
        out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(out, batch_first=True, total_length=src.shape[1])
        return outputs, h_n[0]


class EncoderNoTotalLength(_EncoderBase):
    def forward(self, src, src_lengths):
        packed = pack_padded_sequence(self.embedding(src), src_lengths, batch_first=True,
                                      enforce_sorted=False)
        out, h_n = self.rnn(packed)
        outputs, _ = pad_packed_sequence(out, batch_first=True)
        return outputs, h_n[0]


class EncoderSqueeze(ref.Encoder):
    def forward(self, src, src_lengths):
        outputs, context = super().forward(src, src_lengths)
        return outputs, context.squeeze()


class EncoderNotBatchFirst(_EncoderBase):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__(vocab_size, emb_dim, hidden_dim)
        self.rnn = nn.GRU(emb_dim, hidden_dim)

    def forward(self, src, src_lengths):
        outputs, _ = self.rnn(self.embedding(src))
        outputs = outputs * self._mask(src, src_lengths)
        return outputs, outputs[torch.arange(src.shape[0]), src_lengths - 1]


class EncoderNoPaddingIdx(ref.Encoder):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__(vocab_size, emb_dim, hidden_dim)
        self.embedding = nn.Embedding(vocab_size, emb_dim)


# --- Decoder -----------------------------------------------------------------------------


class DecoderIgnoresHidden(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        return super().forward(dec_inputs, torch.zeros_like(hidden))


class DecoderSoftmax(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        logits, h = super().forward(dec_inputs, hidden)
        return logits.softmax(-1), h


class DecoderReturnsInputHidden(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        logits, _ = super().forward(dec_inputs, hidden)
        return logits, hidden


class DecoderLayerAxis(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        outputs, h_n = self.rnn(self.embedding(dec_inputs), hidden.unsqueeze(0))
        return self.out(outputs), h_n


class DecoderSqueeze(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        outputs, h_n = self.rnn(self.embedding(dec_inputs), hidden.unsqueeze(0))
        return self.out(outputs), h_n.squeeze()


class DecoderDetachesContext(ref.Decoder):
    def forward(self, dec_inputs, hidden):
        return super().forward(dec_inputs, hidden.detach())


class DecoderNotBatchFirst(ref.Decoder):
    def __init__(self, vocab_size, emb_dim, hidden_dim):
        super().__init__(vocab_size, emb_dim, hidden_dim)
        self.rnn = nn.GRU(emb_dim, hidden_dim)


# --- masked_cross_entropy ----------------------------------------------------------------


def mce_over_pad(logits, targets, pad_id=0):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def mce_count_all(logits, targets, pad_id=0):
    per = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    return (per * (targets != pad_id)).sum() / targets.numel()


def mce_nan_when_all_pad(logits, targets, pad_id=0):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=pad_id)


def mce_per_sequence(logits, targets, pad_id=0):
    per = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    mask = (targets != pad_id).float()
    return ((per * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def mce_sum(logits, targets, pad_id=0):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=pad_id, reduction="sum")


def mce_hardcoded_pad(logits, targets, pad_id=0):
    return ref.masked_cross_entropy(logits, targets, 0)


def mce_log_of_softmax(logits, targets, pad_id=0):
    logp = torch.log(torch.exp(logits) / torch.exp(logits).sum(-1, keepdim=True))
    nll = -logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    mask = (targets != pad_id).float()
    return (nll * mask).sum() / mask.sum().clamp(min=1)


def mce_softmax_first(logits, targets, pad_id=0):
    return ref.masked_cross_entropy(logits.softmax(-1), targets, pad_id)


def mce_item(logits, targets, pad_id=0):
    return ref.masked_cross_entropy(logits, targets, pad_id).item()


# --- greedy_decode -----------------------------------------------------------------------


def _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, *, feed_sos=False,
          carry=True, stop=True, keep_eos=True, restore=True, no_grad=True, early_exit=False,
          squeeze=False):
    modes = (encoder.training, decoder.training)
    encoder.eval()
    decoder.eval()
    ctx = torch.no_grad() if no_grad else torch.enable_grad()
    with ctx:
        _, context = encoder(src, src_lengths)
        hidden = context
        B = src.shape[0]
        y = torch.full((B, 1), sos_id, dtype=torch.long)
        out = torch.full((B, max_len), PAD, dtype=torch.long)
        done = torch.zeros(B, dtype=torch.bool)
        for t in range(max_len):
            logits, hidden_new = decoder(y, hidden if carry else context)
            hidden = hidden_new
            if squeeze:
                nxt = logits.squeeze().argmax(-1).unsqueeze(1)
            else:
                nxt = logits[:, -1].argmax(-1, keepdim=True)
            tok = nxt[:, 0]
            if stop:
                tok = torch.where(done, torch.full_like(tok, PAD), tok)
            if not keep_eos:
                tok = torch.where(tok == eos_id, torch.full_like(tok, PAD), tok)
            out[:, t] = tok
            done |= nxt[:, 0] == eos_id
            y = torch.full_like(nxt, sos_id) if feed_sos else nxt
            if early_exit and bool(done.all()):
                out = out[:, : t + 1]
                break
    if restore:
        encoder.train(modes[0])
        decoder.train(modes[1])
    return out


def greedy_feeds_sos(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, feed_sos=True)


def greedy_hidden_not_carried(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, carry=False)


def greedy_keeps_emitting(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, stop=False)


def greedy_drops_eos(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, keep_eos=False)


def greedy_leaves_eval(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, restore=False)


def greedy_with_grad(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, no_grad=False)


def greedy_stops_early(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, early_exit=True)


def greedy_squeeze(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id, squeeze=True)


def greedy_hardcoded_ids(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    return _loop(encoder, decoder, src, src_lengths, max_len, SOS, EOS)


def greedy_includes_sos(encoder, decoder, src, src_lengths, max_len, sos_id=1, eos_id=2):
    out = _loop(encoder, decoder, src, src_lengths, max_len, sos_id, eos_id)
    return torch.cat([torch.full_like(out[:, :1], sos_id), out[:, :-1]], 1)


# --- exact_match -------------------------------------------------------------------------


def em_compares_pad(pred, target, pad_id=0):
    return (pred[:, : target.shape[1]] == target).all(1).float().mean().item()


def em_token_accuracy(pred, target, pad_id=0):
    p = pred[:, : target.shape[1]]
    real = target != pad_id
    return ((p == target) & real).sum().item() / real.sum().item()


def em_returns_tensor(pred, target, pad_id=0):
    p = pred[:, : target.shape[1]]
    return ((p == target) | (target == pad_id)).all(1).float().mean()


def em_no_truncation(pred, target, pad_id=0):
    return ((pred == target) | (target == pad_id)).all(1).float().mean().item()


def em_any(pred, target, pad_id=0):
    p = pred[:, : target.shape[1]]
    return ((p == target) & (target != pad_id)).any(1).float().mean().item()


def em_mask_from_pred(pred, target, pad_id=0):
    p = pred[:, : target.shape[1]]
    return ((p == target) | (p == pad_id)).all(1).float().mean().item()


def em_hardcoded_pad(pred, target, pad_id=0):
    return ref.exact_match(pred, target, 0)


MISTAKES = {
    "shift_right": [
        Mistake("not shifted", shift_none, "not shifted"),
        Mistake("shifted to the left, SOS at the end", shift_left, "wrong way"),
        Mistake("shifted to the left, PAD at the end", shift_left_pad, "wrong way"),
        Mistake("SOS prepended but the last column kept (T + 1 columns)", shift_keeps_last,
                "drop the last column"),
        Mistake("torch.roll without replacing the first column", shift_roll, "torch.roll"),
        Mistake("sos_id ignored", shift_hardcoded_sos, "sos_id"),
        Mistake("modifies the targets in place", shift_in_place, "modified in place"),
        Mistake("float dtype (torch.full without dtype)", shift_float, "dtype"),
        Mistake("squeeze() breaks B = 1", shift_squeeze, "squeeze"),
    ],
    "Encoder": [
        Mistake("context taken at a PAD position (last column / h_n of the padded run)",
                EncoderContextAtPad, "PAD position"),
        Mistake("outputs not zeroed at PAD", EncoderNoZeroing, "not zeroed at PAD"),
        Mistake("context one position too far", EncoderOffByOne, "one position past"),
        Mistake("context = mean of the states", EncoderMeanContext, "mean of the encoder"),
        Mistake("pack_padded_sequence without enforce_sorted=False", EncoderSortedPacking,
                "enforce_sorted"),
        Mistake("pad_packed_sequence without total_length", EncoderNoTotalLength,
                "total_length"),
        Mistake("squeeze() breaks B = 1", EncoderSqueeze, "squeeze"),
        Mistake("GRU without batch_first", EncoderNotBatchFirst, "batch_first"),
        Mistake("embedding without padding_idx", EncoderNoPaddingIdx, "padding_idx"),
    ],
    "Decoder": [
        Mistake("context (initial hidden) ignored", DecoderIgnoresHidden, "initial hidden"),
        Mistake("returns probabilities", DecoderSoftmax, "softmax probabilities"),
        Mistake("returns the input hidden", DecoderReturnsInputHidden, "unchanged"),
        Mistake("returns h_n with its layer axis (1, B, H)", DecoderLayerAxis, "layer axis"),
        Mistake("squeeze() breaks B = 1", DecoderSqueeze, "squeeze"),
        Mistake("detaches the context", DecoderDetachesContext, "detached"),
        Mistake("GRU without batch_first", DecoderNotBatchFirst, "batch_first"),
    ],
    "masked_cross_entropy": [
        Mistake("loss averaged over PAD tokens", mce_over_pad, "averaged over PAD"),
        Mistake("PAD excluded from the sum but counted", mce_count_all, "still counted"),
        Mistake("NaN when every target is PAD", mce_nan_when_all_pad, "NaN"),
        Mistake("mean of per-sequence means", mce_per_sequence, "per-sequence"),
        Mistake("summed, not averaged", mce_sum, "summed"),
        Mistake("pad_id ignored", mce_hardcoded_pad, "pad_id"),
        Mistake("log(softmax) overflows", mce_log_of_softmax, "log(softmax"),
        Mistake("softmax before cross_entropy", mce_softmax_first, "softmax is applied"),
        Mistake("returns a Python float", mce_item, "torch.Tensor"),
    ],
    "greedy_decode": [
        Mistake("feeds SOS every step", greedy_feeds_sos, "SOS is fed at every step"),
        Mistake("hidden state not carried", greedy_hidden_not_carried, "not carried"),
        Mistake("keeps emitting after EOS", greedy_keeps_emitting, "after EOS"),
        Mistake("drops the first EOS", greedy_drops_eos, "first EOS is dropped"),
        Mistake("leaves the modules in eval mode", greedy_leaves_eval, "mode was not restored"),
        Mistake("records gradients", greedy_with_grad, "no_grad"),
        Mistake("stops early with fewer than max_len columns", greedy_stops_early, "max_len"),
        Mistake("squeeze() breaks B = 1", greedy_squeeze, "squeeze"),
        Mistake("sos_id / eos_id ignored", greedy_hardcoded_ids, "sos_id"),
        Mistake("SOS included in the output", greedy_includes_sos, "SOS is included"),
    ],
    "exact_match": [
        Mistake("compares PAD positions too", em_compares_pad, "PAD positions are compared"),
        Mistake("token accuracy", em_token_accuracy, "token accuracy"),
        Mistake("returns a tensor", em_returns_tensor, "Python float"),
        Mistake("pred not truncated to T columns", em_no_truncation, "first T columns"),
        Mistake("any instead of all", em_any, "any"),
        Mistake("mask taken from pred", em_mask_from_pred, "mask is taken from pred"),
        Mistake("pad_id ignored", em_hardcoded_pad, "pad_id"),
    ],
}
