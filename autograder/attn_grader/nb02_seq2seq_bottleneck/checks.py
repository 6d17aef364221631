"""Checks for 02_seq2seq_bottleneck."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attn_grader.framework import (
    Check,
    CheckFailed,
    Report,
    as_pair,
    as_tensor,
    build_like,
    expect,
    expect_close,
    expect_dtype,
    expect_shape,
    expect_unmodified,
    generator,
    lend,
    randn,
    seeded,
    snapshot,
)
from attn_grader.nb02_seq2seq_bottleneck import reference as ref

PAD, SOS, EOS = 0, 1, 2

# --- helpers ------------------------------------------------------------------------


def padded_batch(B: int, S: int, V: int, seed: int, lengths=None):
    """Random real tokens (3..V-1) with PAD after each row's length; lengths unsorted, >= 1,
    and one row (at least) uses all S columns."""
    g = generator(seed)
    if lengths is None:
        lengths = torch.randint(1, S + 1, (B,), generator=g)
        lengths[int(torch.randint(0, B, (1,), generator=g))] = S
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    src = torch.randint(3, V, (B, S), generator=g)
    src = src.masked_fill(torch.arange(S)[None, :] >= lengths[:, None], PAD)
    return src, lengths


def _with_B1_hint(fn, hint="squeeze() drops the batch axis when B = 1; index or use "
                  "squeeze(dim) instead"):
    try:
        return fn()
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} — {hint}") from None
    except NotImplementedError:
        raise
    except Exception as exc:
        raise CheckFailed(f"raised {type(exc).__name__}: {exc} — {hint}") from None


# --- shift_right -------------------------------------------------------------------------


def check_shift_right(shift_right) -> Report:
    c = Check("shift_right")
    targets = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])

    def diagnoses(t, sos):
        B = t.shape[0]
        col = t.new_full((B, 1), sos)
        return {
            "the targets are not shifted (they are returned as they are)": t,
            "the targets are shifted the wrong way (to the left: [y_2, ..., y_T, SOS])":
                torch.cat([t[:, 1:], col], 1),
            "the targets are shifted the wrong way (to the left, padded with PAD)":
                torch.cat([t[:, 1:], torch.zeros_like(col)], 1),
            "torch.roll wraps the last target around to the front instead of SOS":
                torch.roll(t, 1, 1),
            "sos_id is ignored (SOS = 1 is hard-coded)":
                torch.cat([t.new_full((B, 1), SOS), t[:, :-1]], 1),
        }

    with c.case("returns (B, T) with the targets' dtype"):
        out = expect_shape(shift_right(targets.clone()), (2, 4), "dec_inputs",
                           hint="prepend SOS and drop the last column so the length stays T")
        expect_dtype(out, torch.long, "dec_inputs")

    with c.case("hand example: [[5, 6, 7, 2], [8, 2, 0, 0]] -> [[1, 5, 6, 7], [1, 8, 2, 0]]",
                weight=2):
        expect_close(shift_right(targets.clone()), ref.shift_right(targets), "dec_inputs",
                     diagnoses=diagnoses(targets, SOS))

    with c.case("random targets and another sos_id", weight=2):
        g = generator(3)
        t = torch.randint(3, 20, (5, 7), generator=g)
        expect_close(shift_right(t.clone()), ref.shift_right(t), "dec_inputs",
                     diagnoses=diagnoses(t, SOS))
        expect_close(shift_right(t.clone(), sos_id=9), ref.shift_right(t, sos_id=9),
                     "dec_inputs with sos_id=9", diagnoses=diagnoses(t, 9))

    with c.case("works for B = 1 and for T = 1; leaves the targets unmodified"):
        t1 = torch.tensor([[4, 5, 2]])
        before = snapshot(targets=t1)
        expected = ref.shift_right(before["targets"])
        out = _with_B1_hint(lambda: shift_right(t1))
        expect_unmodified(before, {"targets": t1})
        _with_B1_hint(lambda: expect_close(out, expected, "dec_inputs for B = 1",
                                           diagnoses=diagnoses(before["targets"], SOS)))
        tt = torch.tensor([[7], [2]])
        expect_close(shift_right(tt.clone()), ref.shift_right(tt), "dec_inputs for T = 1",
                     hint="for T = 1 the decoder input is just [SOS]")
    return c.report()


# --- Encoder -----------------------------------------------------------------------------

V_ENC, E_ENC, H_ENC = 11, 5, 6


def _ref_encoder(seed=0):
    return seeded(lambda: ref.Encoder(V_ENC, E_ENC, H_ENC), seed)


def _encoder_diagnoses(enc: ref.Encoder, src, lengths):
    B, S = src.shape
    with torch.no_grad():
        emb = enc.embedding(src)
        raw, _ = enc.rnn(emb)
        mask = (torch.arange(S)[None, :] < lengths[:, None]).unsqueeze(-1)
        nb = nn.GRU(E_ENC, H_ENC)  # the same weights, without batch_first
        nb.load_state_dict(enc.rnn.state_dict())
        raw_nb, _ = nb(emb)
        rows = torch.arange(B)
        ctx = {
            "the context is taken at the last column, which is a PAD position for the "
            "shorter sequences (take the state after each row's last real token)": raw[:, -1],
            "the context is taken one position past the last real token (index lengths, "
            "not lengths - 1)": raw[rows, lengths.clamp(max=S - 1)],
            "the context is the mean of the encoder states, not the last state":
                (raw * mask).sum(1) / lengths[:, None],
            "the GRU reads the batch axis as time (batch_first=True is missing)":
                raw_nb[rows, lengths - 1],
        }
        outs = {
            "the outputs are not zeroed at PAD positions": raw,
            "the GRU reads the batch axis as time (batch_first=True is missing)":
                raw_nb * mask,
        }
    return ctx, outs


def check_Encoder(Encoder) -> Report:
    c = Check("Encoder")
    B, S = 5, 7
    ref_enc = _ref_encoder(1)
    src, lengths = padded_batch(B, S, V_ENC, seed=11)

    def run(model, s, l):
        return as_pair(model(s.clone(), l.clone()), "Encoder.forward")

    with c.case("builds with (vocab_size, emb_dim, hidden_dim), submodules embedding "
                "(padding_idx=0) and rnn"):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        fresh = seeded(lambda: Encoder(V_ENC, E_ENC, H_ENC), 5)
        pad_vec = fresh.embedding(torch.tensor([PAD]))
        expect(bool((pad_vec == 0).all()),
               "a freshly built embedding maps PAD to a non-zero vector — use "
               "nn.Embedding(vocab_size, emb_dim, padding_idx=0)")

    with c.case("returns outputs (B, S, H) and context (B, H)"):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        outputs, context = run(student, src, lengths)
        expect_shape(outputs, (B, S, H_ENC), "outputs")
        expect_shape(context, (B, H_ENC), "context",
                     hint="drop the GRU's layer axis: h_n has shape (1, B, H)")

    with c.case("context is the state after each sequence's last real token", weight=3):
        for seed, (b, s) in ((12, (B, S)), (13, (6, 9)), (14, (4, 3))):
            enc = _ref_encoder(seed)
            student = build_like(Encoder, enc, (V_ENC, E_ENC, H_ENC), "Encoder")
            sb, lb = padded_batch(b, s, V_ENC, seed=seed)
            _, context = run(student, sb, lb)
            with torch.no_grad():
                _, expected = enc(sb, lb)
            ctx_diag, _ = _encoder_diagnoses(enc, sb, lb)
            expect_close(context, expected, "context", atol=1e-5, diagnoses=ctx_diag)

    with c.case("outputs are the GRU states at real positions and exactly 0 at PAD", weight=2):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        outputs, _ = run(student, src, lengths)
        with torch.no_grad():
            expected, _ = ref_enc(src, lengths)
        _, out_diag = _encoder_diagnoses(ref_enc, src, lengths)
        expect_close(outputs, expected, "outputs", atol=1e-5, diagnoses=out_diag)

    with c.case("padding changes nothing: extra PAD columns give the same context and "
                "zero outputs there", weight=2):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        short = torch.tensor([2, 4, 1, 3, 4])
        s_src, _ = padded_batch(5, 4, V_ENC, seed=15, lengths=short)
        wide = torch.cat([s_src, torch.zeros(5, 3, dtype=torch.long)], 1)
        with torch.no_grad():
            expected_out, expected_ctx = ref_enc(wide, short)
        outputs, context = run(student, wide, short)
        ctx_diag, out_diag = _encoder_diagnoses(ref_enc, wide, short)
        expect_shape(outputs, (5, 7, H_ENC), "outputs for a source with 3 extra PAD columns",
                     hint="outputs must keep all S columns; with pad_packed_sequence pass "
                     "total_length=src.shape[1]")
        expect_close(context, expected_ctx, "context with 3 extra PAD columns",
                     diagnoses=ctx_diag)
        expect_close(outputs, expected_out, "outputs with 3 extra PAD columns",
                     diagnoses=out_diag)

    with c.case("works for a batch of one (shorter than S)"):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        s1, l1 = padded_batch(1, 6, V_ENC, seed=16, lengths=[4])
        with torch.no_grad():
            e_out, e_ctx = ref_enc(s1, l1)
        ctx_diag, _ = _encoder_diagnoses(ref_enc, s1, l1)

        def go():
            outputs, context = run(student, s1, l1)
            expect_close(outputs, e_out, "outputs for B = 1")
            expect_close(context, e_ctx, "context for B = 1", diagnoses=ctx_diag)

        _with_B1_hint(go)

    with c.case("gradients reach the parameters and match the reference; src and "
                "src_lengths are not modified"):
        student = build_like(Encoder, ref_enc, (V_ENC, E_ENC, H_ENC), "Encoder")
        student.train()
        ref_copy = _ref_encoder(1)
        s_src, s_len = src.clone(), lengths.clone()
        before = snapshot(src=s_src, src_lengths=s_len)
        outputs, context = as_pair(student(s_src, s_len), "Encoder.forward")
        expect_unmodified(before, {"src": s_src, "src_lengths": s_len})
        loss = as_tensor(outputs, "outputs").sum() + as_tensor(context, "context").pow(2).sum()
        expect(loss.requires_grad, "the outputs are cut off from autograd (detached?)")
        loss.backward()
        r_out, r_ctx = ref_copy(src, lengths)
        (r_out.sum() + r_ctx.pow(2).sum()).backward()
        grad = dict(student.named_parameters())["rnn.weight_hh_l0"].grad
        expect(grad is not None, "no gradient reached rnn.weight_hh_l0")
        expect_close(grad, ref_copy.rnn.weight_hh_l0.grad, "the gradient of rnn.weight_hh_l0",
                     atol=1e-4)
    return c.report()


# --- Decoder -----------------------------------------------------------------------------

V_DEC, E_DEC, H_DEC = 9, 4, 6


def _ref_decoder(seed=0):
    return seeded(lambda: ref.Decoder(V_DEC, E_DEC, H_DEC), seed)


def _decoder_diagnoses(dec: ref.Decoder, x, h):
    with torch.no_grad():
        logits, h_new = dec(x, h)
        zero_logits, _ = dec(x, torch.zeros_like(h))
        nb = nn.GRU(E_DEC, H_DEC)
        nb.load_state_dict(dec.rnn.state_dict())
        # without batch_first, (B, T, E) is read as (time=B, batch=T, E); h0 must be (1, T, H)
        logit_diag = {
            "the initial hidden state (the context vector) is ignored": zero_logits,
            "softmax probabilities are returned instead of logits": logits.softmax(-1),
            "log-probabilities (log_softmax) are returned instead of logits":
                logits.log_softmax(-1),
        }
        if x.shape[0] == x.shape[1]:
            nb_out, _ = nb(dec.embedding(x), h.unsqueeze(0))
            logit_diag["the GRU reads the batch axis as time (batch_first=True is missing)"] = \
                dec.out(nb_out)
        first, h1 = dec(x[:, :1], h)
        hid_diag = {
            "the hidden state passed in is returned unchanged (return the GRU's final "
            "state)": h,
            "the state after the first step is returned, not after the last": h1,
        }
    return logits, h_new, logit_diag, hid_diag


def check_Decoder(Decoder) -> Report:
    c = Check("Decoder")
    B, T = 4, 5
    ref_dec = _ref_decoder(2)
    g = generator(21)
    x = torch.randint(3, V_DEC, (B, T), generator=g)
    x[:, 0] = SOS
    h = randn(B, H_DEC, seed=22)

    def run(model, xi, hi):
        return as_pair(model(xi.clone(), hi.clone()), "Decoder.forward")

    with c.case("builds with (vocab_size, emb_dim, hidden_dim), submodules embedding, rnn, out"):
        build_like(Decoder, ref_dec, (V_DEC, E_DEC, H_DEC), "Decoder")

    with c.case("returns logits (B, T, V) and hidden (B, H)"):
        student = build_like(Decoder, ref_dec, (V_DEC, E_DEC, H_DEC), "Decoder")
        logits, hidden = _with_B1_hint(
            lambda: run(student, x, h),
            hint="the GRU needs batch_first=True and its initial state as "
            "hidden.unsqueeze(0) of shape (1, B, H)")
        expect_shape(logits, (B, T, V_DEC), "logits")
        expect_shape(hidden, (B, H_DEC), "hidden",
                     hint="drop the GRU's layer axis: h_n has shape (1, B, H)")

    with c.case("logits match the reference (the context is the initial hidden state)",
                weight=3):
        for seed, (b, t) in ((23, (B, T)), (24, (5, 5)), (25, (3, 8))):
            dec = _ref_decoder(seed)
            student = build_like(Decoder, dec, (V_DEC, E_DEC, H_DEC), "Decoder")
            xi = torch.randint(3, V_DEC, (b, t), generator=generator(seed))
            hi = randn(b, H_DEC, seed=seed + 1)
            logits, _ = run(student, xi, hi)
            expected, _, diag, _ = _decoder_diagnoses(dec, xi, hi)
            expect_close(logits, expected, "logits", atol=1e-5, diagnoses=diag)

    with c.case("hidden is the GRU state after the last input", weight=2):
        student = build_like(Decoder, ref_dec, (V_DEC, E_DEC, H_DEC), "Decoder")
        _, hidden = run(student, x, h)
        _, expected, _, diag = _decoder_diagnoses(ref_dec, x, h)
        expect_close(hidden, expected, "hidden", atol=1e-5, diagnoses=diag)

    with c.case("one step at a time gives the same as the whole sequence, for B = 1 too; "
                "later inputs change no earlier logits"):
        student = build_like(Decoder, ref_dec, (V_DEC, E_DEC, H_DEC), "Decoder")
        x1, h1 = x[:1], h[:1]
        with torch.no_grad():
            e_logits, e_hidden = ref_dec(x1, h1)

        def go():
            hidden = h1
            for t in range(T):
                logits, hidden = run(student, x1[:, t:t + 1], hidden)
                expect_close(logits, e_logits[:, t:t + 1], f"logits of step {t} for B = 1")
            expect_close(hidden, e_hidden, "hidden for B = 1")

        _with_B1_hint(go)
        later = x.clone()
        later[:, 3:] = torch.randint(3, V_DEC, (B, T - 3), generator=generator(26))
        first, _ = run(student, x, h)
        second, _ = run(student, later, h)
        expect_close(as_tensor(second, "logits")[:, :3], as_tensor(first, "logits")[:, :3],
                     "logits at steps 0..2 after changing the inputs at steps 3 and later",
                     hint="the logits at step t may only depend on dec_inputs[:, :t + 1]")

    with c.case("gradients flow back into the context (so the encoder learns); inputs are "
                "not modified"):
        student = build_like(Decoder, ref_dec, (V_DEC, E_DEC, H_DEC), "Decoder")
        hs = h.clone().requires_grad_(True)
        xs = x.clone()
        before = snapshot(dec_inputs=xs, hidden=h)
        logits, hidden = as_pair(student(xs, hs), "Decoder.forward")
        expect_unmodified(before, {"dec_inputs": xs, "hidden": hs})
        out = as_tensor(logits, "logits").sum() + as_tensor(hidden, "hidden").sum()
        expect(out.requires_grad, "the logits do not depend on the hidden state through "
               "autograd — was the context detached?")
        out.backward()
        expect(hs.grad is not None, "no gradient reached the initial hidden state — was the "
               "context detached?")
        hr = h.clone().requires_grad_(True)
        r_logits, r_hidden = ref_dec(x, hr)
        (r_logits.sum() + r_hidden.sum()).backward()
        expect_close(hs.grad, hr.grad, "the gradient with respect to the initial hidden "
                     "state", atol=1e-4, hint="was the context detached?")
    return c.report()


# --- masked_cross_entropy ----------------------------------------------------------------


def _mce_diagnoses(logits, targets, pad_id=PAD):
    V = logits.shape[-1]
    flat_l, flat_t = logits.reshape(-1, V), targets.reshape(-1)
    per_tok = F.cross_entropy(flat_l, flat_t.clamp(min=0), reduction="none").view_as(targets)
    mask = (targets != pad_id).to(per_tok.dtype)
    default_mask = (targets != PAD).to(per_tok.dtype)
    return {
        "the loss is averaged over PAD tokens too (mask them out of both the sum and the "
        "count)": per_tok.mean(),
        "PAD tokens are left out of the sum but still counted in the mean":
            (per_tok * mask).sum() / targets.numel(),
        "each sequence's mean is averaged (per-sequence means weigh short sequences "
        "more; every token must weigh the same)":
            ((per_tok * mask).sum(1) / mask.sum(1).clamp(min=1)).mean(),
        "the loss is summed over tokens instead of averaged": (per_tok * mask).sum(),
        "pad_id is ignored (PAD = 0 is hard-coded)":
            (per_tok * default_mask).sum() / default_mask.sum().clamp(min=1),
        "softmax is applied before cross_entropy (which already applies log_softmax)":
            ref.masked_cross_entropy(logits.softmax(-1), targets, pad_id),
    }


def check_masked_cross_entropy(masked_cross_entropy) -> Report:
    c = Check("masked_cross_entropy")
    B, T, V = 4, 6, 7
    logits = randn(B, T, V, seed=31, scale=2.0)
    tgt_lengths = torch.tensor([6, 2, 4, 1])
    targets = torch.randint(3, V, (B, T), generator=generator(32))
    targets = targets.masked_fill(torch.arange(T)[None] >= tgt_lengths[:, None], PAD)

    with c.case("returns a scalar (0-dim) float tensor"):
        loss = expect_shape(masked_cross_entropy(logits.clone(), targets.clone()), (),
                            "the loss", hint="average to a single number")
        expect(loss.is_floating_point(), f"the loss should be a float tensor, got {loss.dtype}")

    with c.case("without PAD it equals the usual mean cross entropy"):
        full = torch.randint(3, V, (B, T), generator=generator(33))
        expect_close(masked_cross_entropy(logits.clone(), full.clone()),
                     ref.masked_cross_entropy(logits, full), "the loss", atol=1e-5,
                     diagnoses=_mce_diagnoses(logits, full))

    with c.case("with PAD: the mean over non-PAD tokens only, every token weighing the same",
                weight=3):
        for seed in (34, 35):
            lg = randn(B, T, V, seed=seed, scale=2.0)
            expect_close(masked_cross_entropy(lg.clone(), targets.clone()),
                         ref.masked_cross_entropy(lg, targets), "the loss", atol=1e-5,
                         diagnoses=_mce_diagnoses(lg, targets))

    with c.case("respects pad_id"):
        t5 = targets.masked_fill(targets == PAD, 5)
        t5[0, 0] = 0  # 0 is now an ordinary class
        expect_close(masked_cross_entropy(logits.clone(), t5.clone(), pad_id=5),
                     ref.masked_cross_entropy(logits, t5, pad_id=5), "the loss with pad_id=5",
                     atol=1e-5, diagnoses=_mce_diagnoses(logits, t5, pad_id=5))

    with c.case("all targets PAD: returns 0, not NaN"):
        zeros = torch.zeros(B, T, dtype=torch.long)
        loss = expect_shape(masked_cross_entropy(logits.clone(), zeros), (), "the loss")
        expect(not bool(torch.isnan(loss)), "the loss is NaN when every target is PAD "
               "(0 / 0): divide by max(count, 1)")
        expect_close(loss, torch.tensor(0.0), "the loss when every target is PAD")

    with c.case("stable for large logits (±1e4)"):
        big = randn(2, 3, V, seed=36, scale=1e4)
        tb = torch.tensor([[3, 4, 2], [5, 0, 0]])
        expect_close(masked_cross_entropy(big.clone(), tb.clone()),
                     ref.masked_cross_entropy(big, tb), "the loss for logits of size 1e4",
                     rtol=1e-4, atol=1e-2,
                     hint="use F.cross_entropy or log_softmax, not log(softmax(...)), which "
                     "overflows")

    with c.case("gradients match the reference; inputs are not modified"):
        lg = logits.clone().requires_grad_(True)
        tg = targets.clone()
        before = snapshot(logits=logits, targets=targets)
        loss = as_tensor(masked_cross_entropy(lg, tg), "the loss")
        expect_unmodified(before, {"logits": lg, "targets": tg})
        expect(loss.requires_grad, "the loss is cut off from autograd (.item(), numpy or "
               "detach?)")
        loss.backward()
        lr = logits.clone().requires_grad_(True)
        ref.masked_cross_entropy(lr, targets).backward()
        expect_close(lg.grad, lr.grad, "the gradient with respect to the logits", atol=1e-5)
        expect(bool((lg.grad[targets == PAD] == 0).all()),
               "PAD positions receive a gradient — they must not count in the loss")
    return c.report()


# --- greedy_decode -----------------------------------------------------------------------


class CountingEncoder(nn.Module):
    """A stand-in encoder whose context says how each row must be decoded:
    ``context[:, 0]`` an offset taken from the source, ``[:, 1]`` a step counter (0),
    ``[:, 2]`` how many tokens to emit before EOS (the source length)."""

    def forward(self, src, src_lengths):
        B, S = src.shape
        lengths = torch.as_tensor(src_lengths)
        real = torch.arange(S)[None] < lengths[:, None]
        offset = (src * real).sum(1) % 7
        context = torch.stack([offset, torch.zeros_like(offset), lengths], 1).float()
        return torch.zeros(B, S, 3), context


class CountingDecoder(nn.Module):
    """A stand-in decoder whose next token depends on its input token, on a counter it
    carries in the hidden state, and on the context; it emits ``eos`` after as many tokens
    as the context says, then keeps going (so decoding must stop it). It records whether
    gradients were enabled at each call."""

    def __init__(self, vocab_size=12, eos=EOS):
        super().__init__()
        self.vocab_size, self.eos = vocab_size, eos
        self.grad_enabled_calls: list[bool] = []
        self.scale = nn.Parameter(torch.tensor(4.0))

    def forward(self, dec_inputs, hidden):
        self.grad_enabled_calls.append(torch.is_grad_enabled())
        if type(dec_inputs) is not torch.Tensor or dec_inputs.dim() != 2:
            raise ValueError("the decoder takes dec_inputs of shape (B, T): pass the "
                             "previous tokens as y.unsqueeze(1)")
        h = hidden
        steps = []
        for t in range(dec_inputs.shape[1]):
            x = dec_inputs[:, t].float()
            counter = h[:, 1] + 1
            tok = 3 + (x * 5 + counter * 3 + h[:, 0]).long() % (self.vocab_size - 3)
            tok = torch.where(counter == h[:, 2] + 1, torch.full_like(tok, self.eos), tok)
            h = torch.stack([h[:, 0], counter, h[:, 2]], 1)
            steps.append(F.one_hot(tok, self.vocab_size).float() * self.scale)
        return torch.stack(steps, 1), h


def _decode_variant(encoder, decoder, src, lengths, max_len, sos_id=SOS, eos_id=EOS, *,
                    feed_sos=False, carry=True, blank=True, keep_eos=True, sos_first=False):
    with torch.no_grad():
        _, context = encoder(src, lengths)
        hidden = context
        y = torch.full((src.shape[0], 1), sos_id, dtype=torch.long)
        steps = []
        for _ in range(max_len):
            logits, h_new = decoder(y, hidden if carry else context)
            hidden = h_new
            nxt = logits[:, -1:].argmax(-1)
            steps.append(nxt)
            y = torch.full_like(nxt, sos_id) if feed_sos else nxt
        tokens = torch.cat(steps, 1)
        if sos_first:
            tokens = torch.cat([torch.full_like(tokens[:, :1], sos_id), tokens[:, :-1]], 1)
        if blank:
            tokens = ref.blank_after_eos(tokens, eos_id)
        if not keep_eos:
            tokens = tokens.masked_fill(tokens == eos_id, PAD)
    return tokens


def _greedy_diagnoses(encoder, decoder, src, lengths, max_len, sos_id=SOS, eos_id=EOS):
    args = (encoder, decoder, src, lengths, max_len, sos_id, eos_id)
    return {
        "SOS is fed at every step (feed the token just predicted)":
            lambda: _decode_variant(*args, feed_sos=True),
        "the hidden state is not carried from step to step (the context is fed every step)":
            lambda: _decode_variant(*args, carry=False),
        "decoding keeps emitting tokens after EOS (positions after the first EOS must be "
        "PAD)": lambda: _decode_variant(*args, blank=False),
        "the first EOS is dropped (it must be kept; only what follows it becomes PAD)":
            lambda: _decode_variant(*args, keep_eos=False),
        "SOS is included as the first output column (return only predicted tokens)":
            lambda: _decode_variant(*args, sos_first=True),
        "sos_id / eos_id are ignored (1 and 2 are hard-coded)":
            lambda: _decode_variant(encoder, decoder, src, lengths, max_len),
    }


def _greedy_case(greedy_decode, encoder, decoder, src, lengths, max_len, what,
                 sos_id=SOS, eos_id=EOS):
    expected = ref.greedy_decode(encoder, decoder, src, lengths, max_len, sos_id, eos_id)
    kwargs = {} if (sos_id, eos_id) == (SOS, EOS) else {"sos_id": sos_id, "eos_id": eos_id}
    out = greedy_decode(lend(encoder), lend(decoder), src.clone(), lengths.clone(), max_len,
                        **kwargs)
    out = expect_shape(out, (src.shape[0], max_len), what,
                       hint="return exactly max_len columns (PAD after EOS, even if every "
                       "sequence finished early)")
    expect_dtype(out, torch.long, what)
    expect_close(out, expected, what,
                 diagnoses=_greedy_diagnoses(encoder, decoder, src, lengths, max_len,
                                             sos_id, eos_id))
    return out


def check_greedy_decode(greedy_decode) -> Report:
    c = Check("greedy_decode")
    enc, dec = CountingEncoder(), CountingDecoder()
    src, lengths = padded_batch(5, 6, 12, seed=41, lengths=[3, 1, 6, 2, 4])

    with c.case("returns (B, max_len) token ids (int64)"):
        out = expect_shape(greedy_decode(lend(enc), lend(dec), src.clone(), lengths.clone(), 9),
                           (5, 9), "the decoded tokens")
        expect_dtype(out, torch.long, "the decoded tokens")

    with c.case("feeds back its own predictions, carries the hidden state, keeps the first "
                "EOS and pads after it", weight=3):
        _greedy_case(greedy_decode, enc, dec, src, lengths, 9, "the decoded tokens")
        s2, l2 = padded_batch(4, 5, 12, seed=42, lengths=[5, 2, 4, 1])
        _greedy_case(greedy_decode, enc, dec, s2, l2, 7, "the decoded tokens")

    with c.case("returns max_len columns even when every sequence ends early"):
        s3, l3 = padded_batch(3, 3, 12, seed=43, lengths=[1, 2, 1])
        _greedy_case(greedy_decode, enc, dec, s3, l3, 8, "the decoded tokens")

    with c.case("respects sos_id and eos_id"):
        dec5 = CountingDecoder(eos=5)
        _greedy_case(greedy_decode, enc, dec5, src, lengths, 9,
                     "the decoded tokens with sos_id=4, eos_id=5", sos_id=4, eos_id=5)

    with c.case("matches the reference with a real GRU encoder and decoder", weight=2):
        r_enc = seeded(lambda: ref.Encoder(10, 4, 6), 44)
        r_dec = seeded(lambda: ref.Decoder(10, 4, 6), 45)
        with torch.no_grad():
            r_dec.out.bias[EOS] += 0.8  # so that some rows stop early
        s4, l4 = padded_batch(6, 7, 10, seed=46)
        _greedy_case(greedy_decode, r_enc, r_dec, s4, l4, 8, "the decoded tokens")

    with c.case("works for a batch of one"):
        s1, l1 = padded_batch(1, 5, 12, seed=47, lengths=[3])
        _with_B1_hint(lambda: _greedy_case(greedy_decode, enc, dec, s1, l1, 6,
                                           "the decoded tokens for B = 1"))

    with c.case("records no gradients and leaves the modules' train/eval mode as it was"):
        for enc_mode, dec_mode in ((True, False), (False, True), (True, True)):
            enc.train(enc_mode)
            # the student's code gets copies: what it does to them is read from the copies
            e, d = lend(enc), lend(CountingDecoder().train(dec_mode))
            out = as_tensor(greedy_decode(e, d, src.clone(), lengths.clone(), 6),
                            "the decoded tokens")
            expect(d.grad_enabled_calls and not any(d.grad_enabled_calls),
                   "the decoder ran with gradients enabled — decode under torch.no_grad()")
            expect(not out.requires_grad, "the decoded tokens require grad — decode under "
                   "torch.no_grad()")
            expect((e.training, d.training) == (enc_mode, dec_mode),
                   f"the train/eval mode was not restored: encoder.training={e.training}, "
                   f"decoder.training={d.training}, expected {enc_mode}, {dec_mode} — "
                   "remember the modes and put them back (module.train(was_training))")
    return c.report()


# --- exact_match -------------------------------------------------------------------------


def _em_diagnoses(pred, target, pad_id=PAD):
    T = target.shape[1]
    p = pred[:, :T]
    real = target != pad_id
    eq = p == target
    per_tok = (eq & real).sum() / real.sum().clamp(min=1)
    return {
        "PAD positions are compared too (predictions after EOS must be ignored where the "
        "target is PAD)": torch.tensor(float(eq.all(1).float().mean())),
        "token accuracy is returned instead of sequence accuracy (a sequence counts only "
        "if every real token is right)": torch.tensor(float(per_tok)),
        "a sequence counts as right if any token is right (use all, not any)":
            torch.tensor(float((eq & real).any(1).float().mean())),
        "the mask is taken from pred (pred != PAD) instead of from the target":
            torch.tensor(float(((p == target) | (p == pad_id)).all(1).float().mean())),
        "pad_id is ignored (PAD = 0 is hard-coded)":
            torch.tensor(ref.exact_match(pred, target, PAD)),
    }


def _em_case(exact_match, pred, target, what, pad_id=PAD):
    expected = ref.exact_match(pred, target, pad_id)
    kwargs = {} if pad_id == PAD else {"pad_id": pad_id}

    def go():
        return exact_match(pred.clone(), target.clone(), **kwargs)

    got = go()
    if isinstance(got, torch.Tensor):
        raise CheckFailed(f"{what} should be a Python float (use .item()), got a tensor")
    expect(type(got) is float, f"{what} should be a Python float, got {type(got).__name__}")
    expect_close(torch.tensor(got, dtype=torch.float64),
                 torch.tensor(expected, dtype=torch.float64), what, atol=1e-6,
                 diagnoses=_em_diagnoses(pred, target, pad_id))


def check_exact_match(exact_match) -> Report:
    c = Check("exact_match")
    target = torch.tensor([[5, 6, 2, 0], [7, 2, 0, 0], [3, 4, 5, 2], [8, 2, 0, 0],
                           [4, 5, 2, 0], [6, 2, 0, 0]])
    pred = torch.tensor([[5, 6, 2, 0], [7, 2, 9, 9], [3, 4, 6, 2], [8, 9, 2, 0],
                         [4, 0, 0, 0], [0, 2, 0, 0]])

    with c.case("returns a Python float"):
        got = exact_match(pred.clone(), target.clone())
        expect(type(got) is float, f"exact_match should return a Python float (use .item()), "
               f"got {type(got).__name__}")

    with c.case("hand example: 2 of 6 right (junk after EOS does not count)", weight=2):
        _em_case(exact_match, pred, target, "exact_match")

    with c.case("pred longer than target (greedy max_len): only its first T columns count",
                weight=2):
        longer = torch.cat([pred, torch.full((6, 3), 9)], 1)
        try:
            _em_case(exact_match, longer, target, "exact_match with a longer pred")
        except CheckFailed:
            raise
        except NotImplementedError:
            raise
        except Exception as exc:
            raise CheckFailed(f"raised {type(exc).__name__}: {exc} — compare only the first "
                              "T columns of pred: pred[:, :target.shape[1]]") from None

    with c.case("random cases, a batch of one, and pad_id"):
        g = generator(51)
        t = torch.randint(3, 8, (30, 5), generator=g)
        lens = torch.randint(1, 6, (30,), generator=g)
        t = t.masked_fill(torch.arange(5)[None] >= lens[:, None], PAD)
        p = torch.where(torch.rand(30, 7, generator=g) < 0.93,
                        torch.cat([t, torch.zeros(30, 2, dtype=torch.long)], 1),
                        torch.randint(3, 8, (30, 7), generator=g))
        _em_case(exact_match, p, t, "exact_match on random sequences")
        _em_case(exact_match, pred[1:2], target[1:2], "exact_match for B = 1")
        _em_case(exact_match, pred[2:3], target[2:3], "exact_match for B = 1")
        t7 = target.masked_fill(target == PAD, 7)
        p7 = pred.masked_fill(pred == PAD, 7)
        _em_case(exact_match, p7, t7, "exact_match with pad_id=7", pad_id=7)
        before = snapshot(pred=p, target=t)
        exact_match(p, t)
        expect_unmodified(before, {"pred": p, "target": t})
    return c.report()


CHECKS = {
    "shift_right": check_shift_right,
    "Encoder": check_Encoder,
    "Decoder": check_Decoder,
    "masked_cross_entropy": check_masked_cross_entropy,
    "greedy_decode": check_greedy_decode,
    "exact_match": check_exact_match,
}
