"""Data for notebook 01: remember the token seen L steps ago."""

from __future__ import annotations

import torch


def delayed_recall(
    batch_size: int, lag: int, n_symbols: int = 8, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random symbol sequences of length ``lag + 1``; the target is the first symbol.

    Returns ``tokens (B, lag + 1)`` and ``targets (B,)``, both int64. The model reads the
    whole sequence and must answer with the symbol it saw ``lag`` steps before the end.
    """
    tokens = torch.randint(0, n_symbols, (batch_size, lag + 1), generator=generator)
    return tokens, tokens[:, 0].clone()
