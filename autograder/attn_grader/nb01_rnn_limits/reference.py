"""Reference solutions for 01_rnn_limits, built on torch.nn.RNN and torch.linalg."""

from __future__ import annotations

import torch
from torch import nn


def _torch_rnn(W_xh: torch.Tensor, W_hh: torch.Tensor, b_h: torch.Tensor) -> nn.RNN:
    D, H = W_xh.shape
    rnn = nn.RNN(D, H, nonlinearity="tanh", batch_first=True).to(W_xh.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(W_xh.T)
        rnn.weight_hh_l0.copy_(W_hh.T)
        rnn.bias_ih_l0.copy_(b_h)
        rnn.bias_hh_l0.zero_()
    return rnn


def rnn_step(x_t, h_prev, W_xh, W_hh, b_h):
    return torch.tanh(x_t @ W_xh + h_prev @ W_hh + b_h)


def rnn_forward(x, h0, W_xh, W_hh, b_h):
    # nn.RNN is an independent witness of the recurrence; its parameters are not what we
    # differentiate against, so copy them in and let autograd flow through x and h0 only.
    rnn = _torch_rnn(W_xh.detach(), W_hh.detach(), b_h.detach())
    hs, _ = rnn(x, h0.unsqueeze(0))
    return hs, hs[:, -1]


def _states(x, h0, W_xh, W_hh, b_h) -> list[torch.Tensor]:
    h = h0
    states = []
    for t in range(x.shape[1]):
        h = rnn_step(x[:, t], h, W_xh, W_hh, b_h)
        states.append(h)
    return states


def state_gradient_norms(x, h0, W_xh, W_hh, b_h):
    with torch.enable_grad():
        h0 = h0.detach().clone().requires_grad_(True)
        states = _states(x.detach(), h0, W_xh.detach(), W_hh.detach(), b_h.detach())
        grads = torch.autograd.grad(states[-1].sum(), states)
    return torch.stack([g.norm() for g in grads])


def with_spectral_radius(W, rho):
    radius = torch.linalg.eigvals(W).abs().max()
    return W * (rho / radius).to(W.dtype)
