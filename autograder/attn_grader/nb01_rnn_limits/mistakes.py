"""Plausible wrong answers for 01_rnn_limits; each must fail its check, named."""

from __future__ import annotations

import torch

from attn_grader.mistakes import Mistake
from attn_grader.nb01_rnn_limits import reference as ref

# --- rnn_step ---------------------------------------------------------------------------


def step_no_bias(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(x_t @ W_xh + h_prev @ W_hh)


def step_sigmoid(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.sigmoid(x_t @ W_xh + h_prev @ W_hh + b_h)


def step_W_hh_transposed(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(x_t @ W_xh + h_prev @ W_hh.T + b_h)


def step_no_tanh(x_t, h_prev, W_xh, W_hh, b_h):
    return x_t @ W_xh + h_prev @ W_hh + b_h


def step_squeezes(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(x_t @ W_xh + h_prev @ W_hh + b_h).squeeze()


# --- rnn_forward ------------------------------------------------------------------------


def forward_ignores_h0(x, h0, W_xh, W_hh, b_h):
    return ref.rnn_forward(x, torch.zeros_like(h0), W_xh, W_hh, b_h)


def forward_stores_state_before_step(x, h0, W_xh, W_hh, b_h):
    h, hs = h0, []
    for t in range(x.shape[1]):
        hs.append(h)
        h = ref.rnn_step(x[:, t], h, W_xh, W_hh, b_h)
    hs = torch.stack(hs, 1)
    return hs, hs[:, -1]


def forward_h_last_first_step(x, h0, W_xh, W_hh, b_h):
    hs, _ = ref.rnn_forward(x, h0, W_xh, W_hh, b_h)
    return hs, hs[:, 0]


def forward_detaches_states(x, h0, W_xh, W_hh, b_h):
    h, hs = h0, []
    for t in range(x.shape[1]):
        h = ref.rnn_step(x[:, t], h, W_xh, W_hh, b_h).detach()
        hs.append(h)
    hs = torch.stack(hs, 1)
    return hs, hs[:, -1]


def forward_squeezes(x, h0, W_xh, W_hh, b_h):
    hs, h_last = ref.rnn_forward(x, h0, W_xh, W_hh, b_h)
    return hs.squeeze(), h_last.squeeze()


# --- state_gradient_norms ---------------------------------------------------------------


def grads_wrt_stacked_hs(x, h0, W_xh, W_hh, b_h):
    h0 = h0.detach().clone().requires_grad_(True)
    hs = torch.stack(ref._states(x, h0, W_xh, W_hh, b_h), 1)
    (g,) = torch.autograd.grad(hs[:, -1].sum(), hs)
    return torch.stack([g[:, t].norm() for t in range(hs.shape[1])])


def grads_reversed(x, h0, W_xh, W_hh, b_h):
    return ref.state_gradient_norms(x, h0, W_xh, W_hh, b_h).flip(0)


def grads_squared(x, h0, W_xh, W_hh, b_h):
    return ref.state_gradient_norms(x, h0, W_xh, W_hh, b_h) ** 2


def grads_need_requires_grad(x, h0, W_xh, W_hh, b_h):
    states = ref._states(x, h0, W_xh, W_hh, b_h)  # nothing requires grad: autograd raises
    grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm() for g in grads])


def grads_per_row_summed(x, h0, W_xh, W_hh, b_h):
    h0 = h0.detach().clone().requires_grad_(True)
    states = ref._states(x, h0, W_xh, W_hh, b_h)
    grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm(dim=1).sum() for g in grads])


def grads_flip_callers_flag(x, h0, W_xh, W_hh, b_h):
    h0.requires_grad_(True)
    states = ref._states(x, h0, W_xh, W_hh, b_h)
    grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm() for g in grads]).detach()


# --- with_spectral_radius ---------------------------------------------------------------


def radius_by_spectral_norm(W, rho):
    return W * rho / torch.linalg.matrix_norm(W, 2)


def radius_by_real_part(W, rho):
    return W * rho / torch.linalg.eigvals(W).real.max()


def radius_by_frobenius(W, rho):
    return W * rho / W.norm()


def radius_in_place(W, rho):
    return W.mul_(rho / torch.linalg.eigvals(W).abs().max())


def radius_in_float64(W, rho):
    W = W.double()  # "for accuracy", but the caller gets float64 back
    return W * rho / torch.linalg.eigvals(W).abs().max()


MISTAKES = {
    "rnn_step": [
        Mistake("bias left out", step_no_bias, "bias"),
        Mistake("sigmoid instead of tanh", step_sigmoid, "sigmoid"),
        Mistake("W_hh transposed", step_W_hh_transposed, "transposed"),
        Mistake("no nonlinearity", step_no_tanh, "tanh is missing"),
        Mistake("squeeze() breaks B = 1", step_squeezes, "squeeze"),
    ],
    "rnn_forward": [
        Mistake("h0 ignored", forward_ignores_h0, "h0 is ignored"),
        Mistake("states stored before the step", forward_stores_state_before_step, "before"),
        Mistake("h_last taken at step 0", forward_h_last_first_step, "first step"),
        Mistake("states detached", forward_detaches_states, "detached"),
        Mistake("squeeze() breaks B = 1", forward_squeezes, "squeeze"),
    ],
    "state_gradient_norms": [
        Mistake("gradient w.r.t. the stacked tensor", grads_wrt_stacked_hs, "stacked"),
        Mistake("reversed order", grads_reversed, "reverse"),
        Mistake("squared norm", grads_squared, "squared"),
        Mistake("assumes inputs require grad", grads_need_requires_grad, "does not require grad"),
        Mistake("per-sequence norms summed", grads_per_row_summed, "per sequence"),
        Mistake("switches on requires_grad of the caller's h0", grads_flip_callers_flag,
                "requires_grad was switched on"),
    ],
    "with_spectral_radius": [
        Mistake("spectral norm instead of radius", radius_by_spectral_norm, "singular value"),
        Mistake("largest real part", radius_by_real_part, "real part"),
        Mistake("Frobenius norm", radius_by_frobenius, "frobenius"),
        Mistake("modifies W in place", radius_in_place, "modified in place"),
        Mistake("computed in float64 and not cast back", radius_in_float64, "dtype"),
    ],
}
