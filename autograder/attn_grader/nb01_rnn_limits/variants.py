"""Correct answers for 01_rnn_limits written in other styles; each must earn full marks.

Styles: einsum, one product on the concatenated ``[x; h]`` (the fused weight of many RNN
write-ups), ``F.linear`` with PyTorch's (out, in) weight layout, tanh through the sigmoid,
time-major loops, a preallocated state tensor filled step by step, the input projection
hoisted out of the loop (as cuDNN does), ``itertools.accumulate``, gradients read with
``retain_grad`` or tensor hooks or written out by hand (backpropagation through time),
eigenvalues from numpy or in float64.
"""

from __future__ import annotations

from itertools import accumulate

import numpy as np
import torch
import torch.nn.functional as F

from attn_grader.mistakes import Variant

# --- rnn_step ---------------------------------------------------------------------------


def step_einsum(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(torch.einsum("bd,dh->bh", x_t, W_xh)
                      + torch.einsum("bh,hk->bk", h_prev, W_hh) + b_h)


def step_concatenated(x_t, h_prev, W_xh, W_hh, b_h):
    xh = torch.cat([x_t, h_prev], dim=1)
    W = torch.cat([W_xh, W_hh], dim=0)
    return torch.tanh(xh @ W + b_h)


def step_linear_layout(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(F.linear(x_t, W_xh.t(), b_h) + F.linear(h_prev, W_hh.t()))


def step_tanh_from_sigmoid(x_t, h_prev, W_xh, W_hh, b_h):
    a = torch.addmm(b_h, x_t, W_xh).addmm(h_prev, W_hh)
    return 2 * torch.sigmoid(2 * a) - 1  # tanh(a), stable for any |a|


def _step(x_t, h, W_xh, W_hh, b_h):
    return torch.tanh(x_t @ W_xh + h @ W_hh + b_h)


# --- rnn_forward ------------------------------------------------------------------------


def forward_time_major(x, h0, W_xh, W_hh, b_h):
    h, outputs = h0, []
    for x_t in x.transpose(0, 1):  # (T, B, D): one step at a time
        h = _step(x_t, h, W_xh, W_hh, b_h)
        outputs.append(h)
    hs = torch.stack(outputs).transpose(0, 1)
    return hs, h


def forward_preallocated(x, h0, W_xh, W_hh, b_h):
    B, T, _ = x.shape
    hs = x.new_zeros(B, T, W_hh.shape[0])
    h = h0
    for t in range(T):
        h = _step(x[:, t, :], h, W_xh, W_hh, b_h)
        hs[:, t, :] = h
    return hs, hs[:, -1, :]


def forward_hoisted_input(x, h0, W_xh, W_hh, b_h):
    xw = x @ W_xh + b_h  # every step's input term at once
    h, states = h0, []
    for xw_t in torch.unbind(xw, dim=1):
        h = torch.tanh(xw_t + h @ W_hh)
        states.append(h)
    return torch.stack(states, dim=1), h


def forward_accumulate(x, h0, W_xh, W_hh, b_h):
    states = list(accumulate(x.unbind(1), lambda h, x_t: _step(x_t, h, W_xh, W_hh, b_h),
                             initial=h0))[1:]
    hs = torch.stack(states, 1)
    return hs, states[-1]


# --- state_gradient_norms -----------------------------------------------------------------


def norms_retain_grad(x, h0, W_xh, W_hh, b_h):
    with torch.enable_grad():
        W_xh, W_hh, b_h, x = W_xh.detach(), W_hh.detach(), b_h.detach(), x.detach()
        h = h0.detach().clone().requires_grad_(True)
        states = []
        for t in range(x.shape[1]):
            h = _step(x[:, t], h, W_xh, W_hh, b_h)
            h.retain_grad()
            states.append(h)
        states[-1].sum().backward()
    return torch.stack([s.grad.norm() for s in states])


def norms_by_hand(x, h0, W_xh, W_hh, b_h):
    """Backpropagation through time written out: dL/dh_{t-1} = (dL/dh_t * (1 - h_t^2)) W_hhᵀ."""
    with torch.no_grad():
        h, hs = h0, []
        for t in range(x.shape[1]):
            h = _step(x[:, t], h, W_xh, W_hh, b_h)
            hs.append(h)
        g = torch.ones_like(hs[-1])
        norms = [torch.linalg.vector_norm(g)]
        for t in range(len(hs) - 1, 0, -1):
            g = (g * (1 - hs[t] ** 2)) @ W_hh.T
            norms.append(torch.linalg.vector_norm(g))
    return torch.stack(norms[::-1])


def norms_with_hooks(x, h0, W_xh, W_hh, b_h):
    T = x.shape[1]
    grads = [None] * T
    with torch.enable_grad():
        h = h0.detach().requires_grad_(True)
        for t in range(T):
            h = _step(x[:, t].detach(), h, W_xh.detach(), W_hh.detach(), b_h.detach())
            h.register_hook(lambda grad, t=t: grads.__setitem__(t, grad))
        torch.autograd.backward(h.sum())
    return torch.tensor([float(g.pow(2).sum().sqrt()) for g in grads])


# --- with_spectral_radius -----------------------------------------------------------------


def radius_numpy(W, rho):
    eigenvalues = np.linalg.eigvals(W.detach().cpu().numpy())
    return W * float(rho / np.abs(eigenvalues).max())


def radius_eig(W, rho):
    eigenvalues, _ = torch.linalg.eig(W)
    return W / eigenvalues.abs().max().to(W.dtype) * rho


def radius_float64(W, rho):
    r = torch.linalg.eigvals(W.double()).abs().amax().item()
    return (W.double() * (rho / r)).to(W.dtype)


VARIANTS = {
    "rnn_step": [
        Variant("einsum", step_einsum),
        Variant("one product on the concatenated [x; h]", step_concatenated),
        Variant("F.linear with transposed weights", step_linear_layout),
        Variant("addmm, tanh through the sigmoid", step_tanh_from_sigmoid),
    ],
    "rnn_forward": [
        Variant("time-major loop", forward_time_major),
        Variant("preallocated states filled in place", forward_preallocated),
        Variant("input projection hoisted out of the loop", forward_hoisted_input),
        Variant("itertools.accumulate", forward_accumulate),
    ],
    "state_gradient_norms": [
        Variant("retain_grad on every state", norms_retain_grad),
        Variant("backpropagation through time by hand", norms_by_hand),
        Variant("tensor hooks collect the gradients", norms_with_hooks),
    ],
    "with_spectral_radius": [
        Variant("numpy eigenvalues", radius_numpy),
        Variant("torch.linalg.eig", radius_eig),
        Variant("eigenvalues in float64, cast back", radius_float64),
    ],
}
