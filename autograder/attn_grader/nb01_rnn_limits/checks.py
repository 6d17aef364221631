"""Checks for 01_rnn_limits."""

from __future__ import annotations

import torch

from attn_grader.framework import (
    Check,
    Report,
    as_pair,
    as_tensor,
    expect,
    expect_close,
    expect_shape,
    expect_unmodified,
    randn,
    snapshot,
)
from attn_grader.nb01_rnn_limits import reference as ref


def _params(D: int, H: int, seed: int, scale: float = 0.5):
    return (
        randn(D, H, seed=seed, scale=scale),
        randn(H, H, seed=seed + 1, scale=scale),
        randn(H, seed=seed + 2, scale=scale),
    )


def _step_diagnoses(x, h, W_xh, W_hh, b_h) -> dict:
    return {
        "the bias b_h is left out": lambda: torch.tanh(x @ W_xh + h @ W_hh),
        "tanh is missing (no nonlinearity)": lambda: x @ W_xh + h @ W_hh + b_h,
        "sigmoid is used instead of tanh": lambda: torch.sigmoid(x @ W_xh + h @ W_hh + b_h),
        "ReLU is used instead of tanh": lambda: torch.relu(x @ W_xh + h @ W_hh + b_h),
        "W_hh is transposed (h_prev @ W_hh.T)": lambda: torch.tanh(x @ W_xh + h @ W_hh.T + b_h),
        "h_prev is left out": lambda: torch.tanh(x @ W_xh + b_h),
    }


def check_rnn_step(rnn_step) -> Report:
    c = Check("rnn_step")
    B, D, H = 3, 4, 5  # D != H so transposed input weights cannot go unnoticed
    W_xh, W_hh, b_h = _params(D, H, seed=10)
    x, h = randn(B, D, seed=1), randn(B, H, seed=2)

    with c.case("returns h_t of shape (B, H)"):
        expect_shape(rnn_step(x, h, W_xh, W_hh, b_h), (B, H), "h_t")

    with c.case("matches tanh(x_t W_xh + h_prev W_hh + b_h) on random inputs", weight=3):
        for seed in (3, 4, 5):
            W_xh, W_hh, b_h = _params(D, H, seed=seed * 7, scale=0.8)
            x, h = randn(B, D, seed=seed), randn(B, H, seed=seed + 100)
            expect_close(
                rnn_step(x, h, W_xh, W_hh, b_h),
                ref.rnn_step(x, h, W_xh, W_hh, b_h),
                "h_t",
                diagnoses=_step_diagnoses(x, h, W_xh, W_hh, b_h),
            )

    with c.case("saturates without overflow for large pre-activations (|a| ~ 100)"):
        xl, hl = randn(B, D, seed=8, scale=60.0), randn(B, H, seed=9)
        expect_close(rnn_step(xl, hl, W_xh, W_hh, b_h), ref.rnn_step(xl, hl, W_xh, W_hh, b_h),
                     "h_t for large inputs",
                     hint="tanh written from exp overflows (exp(89) is inf in float32): use "
                     "torch.tanh")

    with c.case("works for a batch of one"):
        x1, h1 = randn(1, D, seed=6), randn(1, H, seed=7)
        expect_close(
            rnn_step(x1, h1, W_xh, W_hh, b_h),
            ref.rnn_step(x1, h1, W_xh, W_hh, b_h),
            "h_t for B = 1",
            hint="avoid squeeze(), which drops the batch axis when B = 1",
        )

    with c.case("leaves its inputs unmodified and lets gradients flow"):
        W = W_hh.clone().requires_grad_(True)
        before = snapshot(x=x, h_prev=h, W_hh=W)
        out = as_tensor(rnn_step(x, h, W_xh, W, b_h), "h_t")
        expect_unmodified(before, {"x": x, "h_prev": h, "W_hh": W})
        expect(out.requires_grad, "h_t does not depend on W_hh through autograd — "
               "was it detached or computed with numpy?")
        out.sum().backward()
        W_ref = W_hh.clone().requires_grad_(True)
        ref.rnn_step(x, h, W_xh, W_ref, b_h).sum().backward()
        expect_close(W.grad, W_ref.grad, "the gradient with respect to W_hh", atol=1e-4)
    return c.report()


def check_rnn_forward(rnn_forward) -> Report:
    c = Check("rnn_forward")
    B, T, D, H = 2, 6, 3, 4
    W_xh, W_hh, b_h = _params(D, H, seed=20)
    x, h0 = randn(B, T, D, seed=21), randn(B, H, seed=22)

    def diagnoses(x, h0):
        states = ref._states(x, h0, W_xh, W_hh, b_h)
        zero_start = torch.stack(ref._states(x, torch.zeros_like(h0), W_xh, W_hh, b_h), 1)
        shifted = torch.stack([h0] + states[:-1], 1)
        return {
            "h0 is ignored (the recurrence starts from zeros)": zero_start,
            "hs holds the state before each step instead of after it": shifted,
            "the sequence is processed in reverse": torch.stack(
                ref._states(x.flip(1), h0, W_xh, W_hh, b_h), 1),
            "every step starts from h0 (the state is not carried)": torch.stack(
                [ref.rnn_step(x[:, t], h0, W_xh, W_hh, b_h) for t in range(x.shape[1])], 1),
        }

    with c.case("returns (hs (B, T, H), h_last (B, H))"):
        hs, h_last = as_pair(rnn_forward(x, h0, W_xh, W_hh, b_h), "rnn_forward")
        expect_shape(hs, (B, T, H), "hs")
        expect_shape(h_last, (B, H), "h_last")

    with c.case("hs matches the reference recurrence", weight=3):
        for seed in (23, 24):
            x, h0 = randn(B, T, D, seed=seed), randn(B, H, seed=seed + 50)
            hs, _ = as_pair(rnn_forward(x, h0, W_xh, W_hh, b_h), "rnn_forward")
            expected, _ = ref.rnn_forward(x, h0, W_xh, W_hh, b_h)
            expect_close(hs, expected.detach(), "hs", atol=1e-5, diagnoses=diagnoses(x, h0))

    with c.case("causal: changing later inputs leaves earlier states unchanged"):
        hs, _ = as_pair(rnn_forward(x, h0, W_xh, W_hh, b_h), "rnn_forward")
        later = x.clone()
        later[:, 3:] = randn(B, T - 3, D, seed=27, scale=2.0)
        hs2, _ = as_pair(rnn_forward(later, h0, W_xh, W_hh, b_h), "rnn_forward")
        expect_close(as_tensor(hs2, "hs")[:, :3], as_tensor(hs, "hs")[:, :3],
                     "hs at steps 0..2 after changing x at steps 3 and later",
                     hint="the state at step t may only depend on x[:, :t + 1] and h0 (is "
                     "the sequence read in reverse?)")

    with c.case("h_last is the state after the last step"):
        hs, h_last = as_pair(rnn_forward(x, h0, W_xh, W_hh, b_h), "rnn_forward")
        expected, expected_last = ref.rnn_forward(x, h0, W_xh, W_hh, b_h)
        expect_close(h_last, expected_last.detach(), "h_last",
                     diagnoses={"h_last is taken at the first step (hs[:, 0])": expected[:, 0]})

    with c.case("works for B = 1 and T = 1"):
        for b, t in ((1, 5), (3, 1)):
            xb, hb = randn(b, t, D, seed=25), randn(b, H, seed=26)
            hs, h_last = as_pair(rnn_forward(xb, hb, W_xh, W_hh, b_h), "rnn_forward")
            expected, _ = ref.rnn_forward(xb, hb, W_xh, W_hh, b_h)
            expect_close(hs, expected.detach(), f"hs for B = {b}, T = {t}",
                         hint="squeeze() drops an axis of size 1; index or unsqueeze instead")

    with c.case("gradients flow back to x and h0; inputs are not modified"):
        xg, hg = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
        before = snapshot(x=x, h0=h0)
        hs, _ = as_pair(rnn_forward(xg, hg, W_xh, W_hh, b_h), "rnn_forward")
        hs = as_tensor(hs, "hs")
        expect_unmodified(before, {"x": xg, "h0": hg})
        expect(hs.requires_grad, "hs is cut off from autograd — were states detached, "
               "converted to numpy, or written under torch.no_grad()?")
        hs.sum().backward()
        xr, hr = x.clone().requires_grad_(True), h0.clone().requires_grad_(True)
        ref.rnn_forward(xr, hr, W_xh, W_hh, b_h)[0].sum().backward()
        expect(xg.grad is not None and hg.grad is not None,
               "no gradient reached x or h0 — were the states detached?")
        expect_close(hg.grad, hr.grad, "the gradient with respect to h0", atol=1e-4,
                     hint="states must stay connected to the graph (no .detach() or .data)")
    return c.report()


def check_state_gradient_norms(state_gradient_norms) -> Report:
    c = Check("state_gradient_norms")
    B, T, D, H = 2, 7, 3, 4
    W_xh, W_hh, b_h = _params(D, H, seed=30, scale=0.9)
    x, h0 = randn(B, T, D, seed=31), randn(B, H, seed=32)
    expected = ref.state_gradient_norms(x, h0, W_xh, W_hh, b_h)

    def diagnoses():
        with torch.enable_grad():
            h0r = h0.clone().requires_grad_(True)
            states = ref._states(x, h0r, W_xh, W_hh, b_h)
            grads = torch.autograd.grad(states[-1].sum(), states)
        per_row = torch.stack([g.norm(dim=1).sum() for g in grads])
        last_only = torch.zeros(T)
        last_only[-1] = expected[-1]
        return {
            "the gradient is taken with respect to the stacked hs tensor (only the last "
            "slice is reached; take it with respect to each step's state)": last_only,
            "the norms are in reverse order (g[t] must be for step t, not distance t)":
                expected.flip(0),
            "the squared norm is returned instead of the norm": expected**2,
            "one norm per sequence is summed instead of one norm over the whole (B, H) "
            "gradient": per_row,
        }

    with c.case("returns a tensor of shape (T,)"):
        expect_shape(state_gradient_norms(x, h0, W_xh, W_hh, b_h), (T,), "g")

    with c.case("matches the autograd norms of d hs[:, -1].sum() / d hs[:, t]", weight=3):
        expect_close(state_gradient_norms(x, h0, W_xh, W_hh, b_h), expected, "g", atol=1e-4,
                     diagnoses=diagnoses())
        x2, h2 = randn(1, 12, D, seed=33), randn(1, H, seed=34)
        W2 = ref.with_spectral_radius(randn(H, H, seed=35), 1.5)
        expect_close(state_gradient_norms(x2, h2, W_xh, W2, b_h),
                     ref.state_gradient_norms(x2, h2, W_xh, W2, b_h),
                     "g for B = 1, T = 12", atol=1e-4)

    with c.case("works whether or not the inputs require grad, and leaves them as they were"):
        tensors = {"x": x.clone(), "h0": h0.clone(), "W_xh": W_xh.clone(),
                   "W_hh": W_hh.clone(), "b_h": b_h.clone()}
        before = snapshot(**tensors)
        g = state_gradient_norms(*tensors.values())
        expect_close(g, expected, "g", atol=1e-4)
        expect_unmodified(before, tensors)
        flipped = [n for n, t in tensors.items() if t.requires_grad]
        expect(not flipped, f"requires_grad was switched on for the caller's {flipped} — "
               "make a copy (h0.detach().clone().requires_grad_()) instead")
        W = W_hh.clone().requires_grad_(True)
        g = state_gradient_norms(x, h0, W_xh, W, b_h)
        expect_close(g, expected, "g when W_hh requires grad", atol=1e-4)
    return c.report()


def check_with_spectral_radius(with_spectral_radius) -> Report:
    c = Check("with_spectral_radius")
    # A non-normal matrix with complex eigenvalues: its spectral norm, Frobenius norm and
    # largest real eigenvalue part all differ from its spectral radius.
    W = torch.tensor([[0.5, 2.0, 0.0], [-1.0, 0.3, 0.1], [0.2, 0.0, -0.7]])

    def radius(M):
        return torch.linalg.eigvals(M.detach().double()).abs().max().item()

    def diagnoses(rho):
        return {
            "W is divided by its largest singular value (spectral norm), not its largest "
            "eigenvalue magnitude": W * rho / torch.linalg.matrix_norm(W, 2),
            "W is divided by its Frobenius norm": W * rho / W.norm(),
            "W is divided by the largest real part of its eigenvalues instead of the largest "
            "magnitude": W * rho / torch.linalg.eigvals(W).real.max(),
        }

    with c.case("returns a matrix of the same shape"):
        expect_shape(with_spectral_radius(W.clone(), 0.9), (3, 3), "W'")

    with c.case("the result's spectral radius is rho", weight=2):
        for rho in (0.5, 1.0, 1.7):
            out = as_tensor(with_spectral_radius(W.clone(), rho), "W'")
            got = radius(out)
            if abs(got - rho) > 1e-4:
                expect_close(out, ref.with_spectral_radius(W, rho), "W'", atol=1e-4,
                             diagnoses=diagnoses(rho))
                expect(False, f"the spectral radius of W' should be {rho}, got {got:.4g}")

    with c.case("keeps W's direction: W' is a positive multiple of W"):
        out = as_tensor(with_spectral_radius(W.clone(), 0.8), "W'")
        expect_close(out, ref.with_spectral_radius(W, 0.8), "W'", atol=1e-5,
                     hint="scale W by rho / max|eigenvalue|; do not change its direction")
        M = randn(6, 6, seed=40)
        expect_close(with_spectral_radius(M.clone(), 1.2), ref.with_spectral_radius(M, 1.2),
                     "W' for a random 6x6 matrix", atol=1e-4)

    with c.case("does not modify W and keeps its dtype"):
        M = randn(4, 4, seed=41)
        before = snapshot(W=M)
        out = as_tensor(with_spectral_radius(M, 0.5), "W'")
        expect_unmodified(before, {"W": M})
        expect(out.dtype == M.dtype, f"W' should keep W's dtype {M.dtype}, got {out.dtype}")
    return c.report()


CHECKS = {
    "rnn_step": check_rnn_step,
    "rnn_forward": check_rnn_forward,
    "state_gradient_norms": check_state_gradient_norms,
    "with_spectral_radius": check_with_spectral_radius,
}
