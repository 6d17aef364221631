"""Data and measurements for notebook 01: remember the token seen L steps ago."""

from __future__ import annotations

import torch
from torch import nn


def delayed_recall(
    batch_size: int, lag: int, n_symbols: int = 8, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbol sequences of length ``lag + 1``; the target is the first symbol.

    Returns ``tokens (B, lag + 1)`` and ``targets (B,)``, both int64. The model reads the
    whole sequence and must answer with the symbol it saw ``lag`` steps before the end.
    """
    tokens = torch.randint(0, n_symbols, (batch_size, lag + 1), generator=generator)
    return tokens, tokens[:, 0].clone()


@torch.no_grad()
def lstm_forget_gates(lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """The forget gate ``f_t`` of a one-layer, batch-first ``nn.LSTM`` at every step.

    ``x (B, T, D)`` is the LSTM's input; returns ``f (B, T, H)`` with values in (0, 1), where
    ``c_t = f_t * c_{t-1} + i_t * g_t`` (the state starts at zero). Along the cell's own path
    ``d c_t / d c_{t-1} = diag(f_t)``, so ``f[:, 1:].prod(1)`` is the factor by which what the
    cell held after the first step still counts at the end.
    """
    if lstm.num_layers != 1 or not lstm.batch_first or lstm.bidirectional or lstm.proj_size:
        raise ValueError("lstm_forget_gates reads a one-layer, batch-first, unidirectional "
                         "nn.LSTM without projections")
    hs, _ = lstm(x)  # (B, T, H): h_t after every step
    h_prev = torch.cat([torch.zeros_like(hs[:, :1]), hs[:, :-1]], dim=1)  # h_{t-1}, h_{-1} = 0
    H = lstm.hidden_size
    rows = slice(H, 2 * H)  # PyTorch orders the gates (input, forget, cell, output)
    pre = (x @ lstm.weight_ih_l0[rows].T + lstm.bias_ih_l0[rows]
           + h_prev @ lstm.weight_hh_l0[rows].T + lstm.bias_hh_l0[rows])
    return torch.sigmoid(pre)
