"""Checks for 04_luong_attention."""

from __future__ import annotations

import math

import torch
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
    expect_shape,
    expect_unmodified,
    generator,
    lend,
    randn,
    seeded,
    snapshot,
)
from attn_grader.nb04_luong_attention import reference as ref

PAD, SOS, EOS = 0, 1, 2
KINDS = ref.KINDS
B, S, H = 3, 4, 5  # all different, so a wrong axis cannot go unnoticed


def _hint_on_error(fn, hint):
    try:
        return fn()
    except CheckFailed as exc:
        raise CheckFailed(f"{exc} — {hint}") from None
    except NotImplementedError:
        raise
    except Exception as exc:
        raise CheckFailed(f"raised {type(exc).__name__}: {exc} — {hint}") from None


SQUEEZE_HINT = ("squeeze() drops every axis of size 1 (B = 1 or S = 1); use squeeze(-1) "
                "or index instead")


def _extra_params_hint(student, reference) -> str:
    extra = [k for k in student.state_dict() if k not in reference.state_dict()]
    if not extra:
        return ""
    return (f"your module has parameters the contract does not: {extra} (the Linear layers of "
            "the score have bias=False)")


def _mask(lengths, S):
    return torch.arange(S)[None, :] < torch.as_tensor(lengths)[:, None]


# --- LuongScore --------------------------------------------------------------------------


def _ref_scorer(kind, seed=0, hidden=H):
    return seeded(lambda: ref.LuongScore(hidden, kind), seed)


def _score_diagnoses(scorer: ref.LuongScore, h, enc):
    kind = scorer.kind
    Hd = h.shape[-1]
    with torch.no_grad():
        expected = scorer(h, enc)
        diag = {
            "the scores are passed through softmax (return raw scores; luong_attention "
            "normalises them)": expected.softmax(-1),
            "the scores are divided by sqrt(H) (Luong's scores are not scaled)":
                expected / math.sqrt(Hd),
            "the dot score is used whatever the kind": torch.einsum("bh,bsh->bs", h, enc),
        }
        if kind == "general":
            W = scorer.W_a.weight
            diag["W_a is applied to the decoder state instead of the encoder states "
                 "(score = W_a(h_t) · h̄_s)"] = torch.einsum("bh,bsh->bs", h @ W.T, enc)
        if kind == "concat":
            W, v = scorer.W_a.weight, scorer.v_a.weight
            query = h.unsqueeze(1).expand_as(enc)
            diag["the concatenation order is [h̄_s; h_t] instead of [h_t; h̄_s]"] = \
                (torch.tanh(torch.cat([enc, query], -1) @ W.T) @ v.T).squeeze(-1)
            diag["tanh is missing in the concat score"] = \
                ((torch.cat([query, enc], -1) @ W.T) @ v.T).squeeze(-1)
    return expected, diag


def _score_case(LuongScore, kind, seeds, b=B, s=S):
    for seed in seeds:
        scorer = _ref_scorer(kind, seed)
        student = build_like(LuongScore, scorer, (H, kind), "LuongScore")
        h, enc = randn(b, H, seed=seed + 1), randn(b, s, H, seed=seed + 2)
        expected, diag = _score_diagnoses(scorer, h, enc)
        got = student(h.clone(), enc.clone())
        expect_close(got, expected, f"the {kind} scores", atol=1e-5, diagnoses=diag,
                     hint=_extra_params_hint(student, scorer))


def check_LuongScore(LuongScore) -> Report:
    c = Check("LuongScore")

    with c.case("builds for kind = 'dot', 'general' and 'concat' with the named parameters"):
        for kind in KINDS:
            build_like(LuongScore, _ref_scorer(kind), (H, kind), "LuongScore")

    with c.case("returns scores of shape (B, S)"):
        for kind in KINDS:
            student = build_like(LuongScore, _ref_scorer(kind), (H, kind), "LuongScore")
            expect_shape(student(randn(B, H, seed=1), randn(B, S, H, seed=2)), (B, S),
                         f"the {kind} scores", hint="one score per source position")

    with c.case("dot: score = h_t · h̄_s"):
        _score_case(LuongScore, "dot", (10, 11))

    with c.case("general: score = h_t · W_a h̄_s", weight=1.5):
        _score_case(LuongScore, "general", (20, 21))

    with c.case("concat: score = v_a tanh(W_a [h_t; h̄_s])", weight=1.5):
        _score_case(LuongScore, "concat", (30, 31))

    with c.case("works for B = 1 and for S = 1"):
        for kind in KINDS:
            _hint_on_error(lambda kind=kind: _score_case(LuongScore, kind, (40,), b=1, s=3),
                           SQUEEZE_HINT)
            _hint_on_error(lambda kind=kind: _score_case(LuongScore, kind, (41,), b=2, s=1),
                           SQUEEZE_HINT)

    with c.case("gradients reach dec_h, enc_outputs and W_a; the inputs are not modified"):
        for kind in ("general", "concat"):
            scorer = _ref_scorer(kind, 50)
            student = build_like(LuongScore, scorer, (H, kind), "LuongScore")
            h, enc = randn(B, H, seed=51), randn(B, S, H, seed=52)
            hs, es = h.clone().requires_grad_(True), enc.clone().requires_grad_(True)
            before = snapshot(dec_h=h, enc_outputs=enc)
            out = as_tensor(student(hs, es), f"the {kind} scores")
            expect_unmodified(before, {"dec_h": hs, "enc_outputs": es})
            expect(out.requires_grad, "the scores are cut off from autograd")
            w = randn(B, S, seed=53)
            (out * w).sum().backward()
            hr, er = h.clone().requires_grad_(True), enc.clone().requires_grad_(True)
            (scorer(hr, er) * w).sum().backward()
            expect(hs.grad is not None and es.grad is not None,
                   "no gradient reached dec_h or enc_outputs")
            expect_close(es.grad, er.grad, f"the gradient of the {kind} scores with respect "
                         "to enc_outputs", atol=1e-4)
            grad = dict(student.named_parameters())["W_a.weight"].grad
            expect(grad is not None, "no gradient reached W_a")
            expect_close(grad, scorer.W_a.weight.grad, "the gradient with respect to W_a",
                         atol=1e-4)
    return c.report()


# --- luong_attention ---------------------------------------------------------------------


class FixedScorer(nn.Module):
    """Returns given scores, whatever the inputs (for hand-made and extreme cases)."""

    def __init__(self, scores):
        super().__init__()
        self.scores = scores

    def forward(self, dec_h, enc_outputs):
        return self.scores.clone()


def _attention_diagnoses(scorer, h, enc, mask):
    with torch.no_grad():
        scores = scorer(h, enc)
        context, weights = ref.luong_attention(h, enc, mask, scorer)
        m = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
        neg = scores.masked_fill(~m, float("-inf"))
        plain = scores.softmax(-1)
        after = plain * m
        w_diag = {
            "the softmax is taken over the batch axis (dim=0) instead of the source "
            "positions": neg.softmax(0),
            "the softmax is taken over the hidden axis (a size-1 axis after unsqueeze(-1)), "
            "so every weight is 1": torch.ones_like(scores),
            "the mask is ignored (PAD positions get weight)": plain,
            "the mask is inverted (True must mean 'real token, may attend')":
                scores.masked_fill(m, float("-inf")).softmax(-1).nan_to_num(0.0),
            "the mask is applied after the softmax without renormalising": after,
            "the weights are not normalised (exp(scores) without dividing by the sum)":
                neg.exp(),
            "a row with nothing to attend to gets uniform weights (masked with a finite "
            "value like -1e9; its weights must be 0)": scores.masked_fill(~m, -1e9).softmax(-1),
        }
        c_diag = {
            "the context is built from the decoder state, not from the encoder outputs "
            "(attention computed without the encoder outputs)": h,
            "the context is the plain sum of the encoder outputs (the weights are not used)":
                enc.sum(1),
            "the context averages the encoder outputs uniformly (the weights are not used)":
                enc.mean(1),
            "the context is taken from the masked-but-unnormalised weights": torch.bmm(
                after.unsqueeze(1), enc).squeeze(1),
        }
    return context, weights, w_diag, c_diag


def _attention_case(luong_attention, scorer, h, enc, mask, what=""):
    expected_c, expected_w, w_diag, c_diag = _attention_diagnoses(scorer, h, enc, mask)
    m = None if mask is None else mask.clone()
    context, weights = as_pair(luong_attention(h.clone(), enc.clone(), m, lend(scorer)),
                               "luong_attention")
    expect_shape(weights, tuple(expected_w.shape), f"weights{what}",
                 hint="one weight per source position: (B, S)")
    expect_shape(context, tuple(expected_c.shape), f"context{what}",
                 hint="a weighted sum over the source positions: (B, H)")
    expect_close(weights, expected_w, f"weights{what}", atol=1e-5, diagnoses=w_diag)
    expect_close(context, expected_c, f"context{what}", atol=1e-5, diagnoses=c_diag)


def check_luong_attention(luong_attention) -> Report:
    c = Check("luong_attention")
    mask = torch.tensor([[True, True, True, True], [True, True, False, False],
                         [False, True, True, False]])  # a full row, a padded row, an odd row

    with c.case("returns context (B, H) and weights (B, S)"):
        context, weights = as_pair(
            luong_attention(randn(B, H, seed=1), randn(B, S, H, seed=2), mask.clone(),
                            lend(_ref_scorer("dot"))), "luong_attention")
        expect_shape(context, (B, H), "context")
        expect_shape(weights, (B, S), "weights")

    with c.case("hand example: scores [0, ln 3] give weights [1/4, 3/4]"):
        enc = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
        scorer = FixedScorer(torch.tensor([[0.0, math.log(3.0)]]))
        _attention_case(luong_attention, scorer, torch.zeros(1, 2), enc,
                        torch.tensor([[True, True]]))

    with c.case("weights: a softmax over the real source positions; context: their weighted "
                "sum of the encoder outputs (dot, general, concat)", weight=3):
        for i, kind in enumerate(KINDS):
            scorer = _ref_scorer(kind, 60 + i)
            h, enc = randn(B, H, seed=61 + i, scale=1.5), randn(B, S, H, seed=62 + i)
            _attention_case(luong_attention, scorer, h, enc, mask, f" ({kind} scores)")

    with c.case("random boolean masks (every row keeps a position)"):
        for seed in (66, 67):
            g = generator(seed)
            m = torch.rand(B, S, generator=g) < 0.5
            m[torch.arange(B), torch.randint(0, S, (B,), generator=g)] = True
            scorer = _ref_scorer("general", seed)
            _attention_case(luong_attention, scorer, randn(B, H, seed=seed + 10),
                            randn(B, S, H, seed=seed + 20), m, " with a random mask")

    with c.case("src_mask=None: nothing is masked"):
        scorer = _ref_scorer("general", 70)
        _attention_case(luong_attention, scorer, randn(B, H, seed=71), randn(B, S, H, seed=72),
                        None, " with src_mask=None")

    with c.case("a row whose mask is all False gets weights 0 and context 0, never NaN"):
        m = mask.clone()
        m[1] = False
        scorer = _ref_scorer("dot", 73)
        _attention_case(luong_attention, scorer, randn(B, H, seed=74), randn(B, S, H, seed=75),
                        m, " with an all-False mask row")

    with c.case("large scores (±1e4) do not overflow"):
        big = torch.tensor([[1e4, -1e4, 9990.0, 0.0], [-1e4, 5e3, 1e4, 1e4],
                            [3e3, 1e4, -1e4, 2e3]])
        _hint_on_error(
            lambda: _attention_case(luong_attention, FixedScorer(big), randn(B, H, seed=76),
                                    randn(B, S, H, seed=77), mask, " for scores of size 1e4"),
            "exp of a large score overflows: use torch.softmax, or subtract the row maximum "
            "before exp")

    with c.case("works for B = 1 and for S = 1"):
        scorer = _ref_scorer("general", 78)
        _hint_on_error(lambda: _attention_case(
            luong_attention, scorer, randn(1, H, seed=79), randn(1, S, H, seed=80),
            mask[1:2], " for B = 1"), SQUEEZE_HINT)
        _hint_on_error(lambda: _attention_case(
            luong_attention, scorer, randn(B, H, seed=81), randn(B, 1, H, seed=82),
            torch.ones(B, 1, dtype=torch.bool), " for S = 1"), SQUEEZE_HINT)

    with c.case("gradients match the reference (none reach masked positions); inputs are not "
                "modified"):
        scorer = _ref_scorer("general", 83)
        h, enc = randn(B, H, seed=84), randn(B, S, H, seed=85)
        hs, es, ms = h.clone().requires_grad_(True), enc.clone().requires_grad_(True), mask.clone()
        before = snapshot(dec_h=h, enc_outputs=enc, src_mask=mask)
        context, weights = as_pair(luong_attention(hs, es, ms, lend(scorer)),
                                   "luong_attention")
        expect_unmodified(before, {"dec_h": hs, "enc_outputs": es, "src_mask": ms})
        context, weights = as_tensor(context, "context"), as_tensor(weights, "weights")
        expect(context.requires_grad, "the context is cut off from autograd")
        w = randn(B, H, seed=86)
        ((context * w).sum() + weights[:, 0].sum()).backward()
        hr, er = h.clone().requires_grad_(True), enc.clone().requires_grad_(True)
        r_context, r_weights = ref.luong_attention(hr, er, mask, scorer)
        ((r_context * w).sum() + r_weights[:, 0].sum()).backward()
        expect(hs.grad is not None and es.grad is not None,
               "no gradient reached dec_h or enc_outputs")
        expect_close(es.grad, er.grad, "the gradient with respect to enc_outputs", atol=1e-4)
        expect_close(hs.grad, hr.grad, "the gradient with respect to dec_h", atol=1e-4)
    return c.report()


# --- LuongDecoder ------------------------------------------------------------------------

V, E = 9, 4
S_DEC, T_DEC = 6, 4


def _ref_decoder(kind, seed=0):
    return seeded(lambda: ref.LuongDecoder(V, E, H, kind), seed)


def _build_decoder(LuongDecoder, kind, seed=0):
    reference = _ref_decoder(kind, seed)
    return reference, build_like(LuongDecoder, reference, (V, E, H, kind), "LuongDecoder")


def _inputs(seed, b=B, s=S_DEC, t=T_DEC, lengths=None):
    g = generator(seed)
    y = torch.randint(3, V, (b, t), generator=g)
    y[:, 0] = SOS
    hidden = randn(b, H, seed=seed + 1)
    enc = randn(b, s, H, seed=seed + 2)
    if lengths is None:
        lengths = torch.randint(1, s + 1, (b,), generator=g)
        lengths[0] = s
    mask = _mask(lengths, s)
    enc = enc * mask.unsqueeze(-1)  # like the encoder: outputs are 0 at PAD
    return y, hidden, enc, mask


def _step_variant(dec: ref.LuongDecoder, y, hidden, enc, mask, *, order="ch", tanh=True,
                  use_attention=True, attend="encoder", query="h_t", ret_hidden="h_t",
                  use_mask=True):
    _, h_n = dec.rnn(dec.embedding(y).unsqueeze(1), hidden.unsqueeze(0).contiguous())
    h_t = h_n[0]
    q = h_t if query == "h_t" else hidden
    keys = enc if attend == "encoder" else h_t.unsqueeze(1)
    m = (mask if use_mask else None) if attend == "encoder" else None
    c_t, weights = ref.luong_attention(q, keys, m, dec.scorer)
    pair = torch.cat([c_t, h_t] if order == "ch" else [h_t, c_t], -1)
    pre = dec.W_c(pair)
    h_tilde = torch.tanh(pre) if tanh else pre
    logits = dec.out(h_tilde if use_attention else h_t)
    return logits, (h_t if ret_hidden == "h_t" else h_tilde), weights


def _step_diagnoses(dec, y, hidden, enc, mask):
    args = (dec, y, hidden, enc, mask)
    with torch.no_grad():
        variants = {
            "W_c is applied to [h_t; c_t] instead of [c_t; h_t] (wrong order)":
                _step_variant(*args, order="hc"),
            "tanh is missing: h̃_t = tanh(W_c [c_t; h_t])": _step_variant(*args, tanh=False),
            "out is applied to the GRU state h_t, so the attention is not used in the "
            "prediction (use h̃_t)": _step_variant(*args, use_attention=False),
            "the decoder attends to its own state instead of the encoder outputs "
            "(attention computed without the encoder outputs)":
                _step_variant(*args, attend="self"),
            "the query is the previous hidden state h_{t-1}; Luong attends with the new "
            "GRU state h_t (run the GRU first)": _step_variant(*args, query="prev"),
            "the src_mask is ignored (PAD positions get attention)":
                _step_variant(*args, use_mask=False),
        }
        logits_diag = {k: v[0] for k, v in variants.items()}
        hidden_diag = {
            "the returned hidden is the attentional state h̃_t instead of the GRU state h_t":
                _step_variant(*args, ret_hidden="tilde")[1],
            "the returned hidden is the state passed in (return the new GRU state)": hidden,
        }
        weights_diag = {k: v[2] for k, v in variants.items()}
    return logits_diag, hidden_diag, weights_diag


def _forward_diagnoses(dec, y, hidden, enc, mask):
    with torch.no_grad():
        h, logits = hidden, []
        x = y[:, 0]
        for _t in range(y.shape[1]):
            step_logits, h, _ = dec.step(x, h, enc, mask)
            logits.append(step_logits)
            x = step_logits.argmax(-1)
    return {
        "forward feeds back its own predictions instead of dec_inputs (teacher forcing "
        "means reading the given inputs)": torch.stack(logits, 1),
    }, {
        "the returned hidden is the initial state (return the GRU state after the last "
        "step)": hidden,
    }


def _step_case(LuongDecoder, kind, seed, b=B, lengths=None, what=""):
    dec, student = _build_decoder(LuongDecoder, kind, seed)
    y, hidden, enc, mask = _inputs(seed + 100, b=b, lengths=lengths)
    y_prev = y[:, 1]
    with torch.no_grad():
        e_logits, e_hidden, e_weights = dec.step(y_prev, hidden, enc, mask)
    out = student.step(y_prev.clone(), hidden.clone(), enc.clone(), mask.clone())
    if type(out) is not tuple or len(out) != 3:
        raise CheckFailed("step should return a tuple (logits, hidden, weights)")
    logits, new_hidden, weights = out
    l_diag, h_diag, w_diag = _step_diagnoses(dec, y_prev, hidden, enc, mask)
    expect_shape(logits, (b, V), f"step logits{what}")
    expect_close(logits, e_logits, f"step logits{what} ({kind})", atol=1e-5, diagnoses=l_diag)
    expect_shape(new_hidden, (b, H), f"step hidden{what}")
    expect_close(new_hidden, e_hidden, f"step hidden{what} ({kind})", atol=1e-5,
                 diagnoses=h_diag)
    expect_shape(weights, (b, S_DEC), f"step weights{what}")
    expect_close(weights, e_weights, f"step attention weights{what} ({kind})", atol=1e-5,
                 diagnoses=w_diag)


def _forward_case(LuongDecoder, kind, seed, b=B, t=T_DEC, src_mask_none=False, what=""):
    dec, student = _build_decoder(LuongDecoder, kind, seed)
    y, hidden, enc, mask = _inputs(seed + 200, b=b, t=t)
    if src_mask_none:
        mask = None
    with torch.no_grad():
        e_logits, e_hidden, e_attn = dec(y, hidden, enc, mask)
    out = student(y.clone(), hidden.clone(), enc.clone(), None if mask is None else mask.clone())
    if type(out) is not tuple or len(out) != 3:
        raise CheckFailed("forward should return a tuple (logits, hidden, attn)")
    logits, new_hidden, attn = out
    l_diag, h_diag = _forward_diagnoses(dec, y, hidden, enc, mask)
    expect_shape(logits, (b, t, V), f"forward logits{what}")
    expect_close(logits, e_logits, f"forward logits{what} ({kind})", atol=1e-5,
                 diagnoses=l_diag)
    expect_shape(new_hidden, (b, H), f"forward hidden{what}")
    expect_close(new_hidden, e_hidden, f"forward hidden{what} ({kind})", atol=1e-5,
                 diagnoses=h_diag)
    expect_shape(attn, (b, t, S_DEC), f"forward attn{what}",
                 hint="one row of weights per decoder step: (B, T, S)")
    expect_close(attn, e_attn, f"forward attn{what} ({kind})", atol=1e-5)


def _check_LuongDecoder(LuongDecoder) -> Report:
    c = Check("LuongDecoder")

    with c.case("builds with (vocab_size, emb_dim, hidden_dim, kind): embedding, rnn, scorer, "
                "W_c, out"):
        for kind in KINDS:
            _build_decoder(LuongDecoder, kind)

    with c.case("step: the GRU state is the query, c_t the attention context, "
                "logits = out(tanh(W_c [c_t; h_t]))", weight=3):
        for i, kind in enumerate(KINDS):
            _step_case(LuongDecoder, kind, 300 + i)

    with c.case("forward: teacher-forced logits (B, T, V), final GRU state, attention "
                "(B, T, S)", weight=2):
        for i, kind in enumerate(KINDS):
            _forward_case(LuongDecoder, kind, 400 + i)

    with c.case("forward with src_mask=None and T = 1"):
        _forward_case(LuongDecoder, "general", 410, src_mask_none=True, what=" (no mask)")
        _forward_case(LuongDecoder, "dot", 411, t=1, what=" for T = 1")

    with c.case("the encoder outputs matter where the mask is True, and only there",
                weight=1.5):
        dec, student = _build_decoder(LuongDecoder, "general", 420)
        y, hidden, enc, mask = _inputs(421, lengths=[6, 3, 4])
        out1 = student(y, hidden, enc, mask)
        noise = randn(B, S_DEC, H, seed=422) * (~mask).unsqueeze(-1)
        out2 = student(y, hidden, enc + noise, mask)
        changed = enc.clone()
        changed[:, 0] += 1.0
        out3 = student(y, hidden, changed, mask)
        expect(type(out1) is tuple and len(out1) == 3, "forward should return a tuple "
               "(logits, hidden, attn)")
        l1, l2, l3 = (as_tensor(o[0], "forward logits") for o in (out1, out2, out3))
        expect(not bool(torch.isclose(l1, l3, atol=1e-6).all()),
               "the logits do not change when the encoder outputs change — is the attention "
               "computed without the encoder outputs?")
        expect_close(l2, l1, "forward logits when the encoder outputs change at PAD "
                     "positions", atol=1e-5,
                     hint="PAD positions must not influence anything: pass src_mask on to "
                     "the attention")

    with c.case("teacher forcing is causal: later inputs change no earlier logits"):
        dec, student = _build_decoder(LuongDecoder, "concat", 425)
        y, hidden, enc, mask = _inputs(426)
        later = y.clone()
        later[:, 2:] = torch.randint(3, V, (B, T_DEC - 2), generator=generator(427))
        first, second = (student(t.clone(), hidden.clone(), enc.clone(), mask.clone())
                         for t in (y, later))
        expect(type(first) is tuple and len(first) == 3, "forward should return a tuple "
               "(logits, hidden, attn)")
        expect_close(as_tensor(second[0], "forward logits")[:, :2],
                     as_tensor(first[0], "forward logits")[:, :2],
                     "forward logits at steps 0 and 1 after changing dec_inputs at steps 2 "
                     "and later", atol=1e-5,
                     hint="the logits at step t may only depend on dec_inputs[:, :t + 1]")

    with c.case("works for a batch of one"):
        _hint_on_error(lambda: _step_case(LuongDecoder, "concat", 430, b=1, lengths=[4],
                                          what=" for B = 1"), SQUEEZE_HINT)
        _hint_on_error(lambda: _forward_case(LuongDecoder, "general", 431, b=1,
                                             what=" for B = 1"), SQUEEZE_HINT)

    with c.case("gradients flow into the encoder outputs and the initial state and match the "
                "reference"):
        dec, student = _build_decoder(LuongDecoder, "general", 440)
        student.train()
        y, hidden, enc, mask = _inputs(441)
        hs, es = hidden.clone().requires_grad_(True), enc.clone().requires_grad_(True)
        before = snapshot(dec_inputs=y, hidden=hidden, enc_outputs=enc, src_mask=mask)
        out = student(y.clone(), hs, es, mask.clone())
        expect(type(out) is tuple and len(out) == 3, "forward should return a tuple")
        expect_unmodified(before, {"dec_inputs": y, "hidden": hs, "enc_outputs": es,
                                   "src_mask": mask})
        w = randn(B, T_DEC, V, seed=442)
        (as_tensor(out[0], "forward logits") * w).sum().backward()
        hr, er = hidden.clone().requires_grad_(True), enc.clone().requires_grad_(True)
        (dec(y, hr, er, mask)[0] * w).sum().backward()
        expect(es.grad is not None, "no gradient reached the encoder outputs — the encoder "
               "would never learn from the attention")
        expect_close(es.grad, er.grad, "the gradient with respect to the encoder outputs",
                     atol=1e-4)
        expect(hs.grad is not None, "no gradient reached the initial hidden state")
        expect_close(hs.grad, hr.grad, "the gradient with respect to the initial hidden state",
                     atol=1e-4)
    return c.report()


def check_LuongDecoder(LuongDecoder) -> Report:
    """The student's decoder as built, with its own scorer (the reference's weights loaded
    into it by name): nothing in the student's namespace is replaced."""
    return _check_LuongDecoder(LuongDecoder)


CHECKS = {
    "LuongScore": check_LuongScore,
    "luong_attention": check_luong_attention,
    "LuongDecoder": check_LuongDecoder,
}
