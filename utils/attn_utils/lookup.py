"""Data for notebook 03: a small lookup table and a 1-D regression problem.

Student side: nothing here computes attention weights or solves a graded exercise.
"""

from __future__ import annotations

import torch

from attn_utils.plotting import show  # noqa: F401 - re-exported for the notebook

#: Winter Olympic Games by year: (host nation, host city).
WINTER_GAMES: dict[int, tuple[str, str]] = {
    2010: ("Canada", "Vancouver"),
    2014: ("Russia", "Sochi"),
    2018: ("South Korea", "PyeongChang"),
    2022: ("China", "Beijing"),
}


def wavy_function(x: torch.Tensor) -> torch.Tensor:
    """The noise-free curve behind :func:`wavy_data`: a slow wave on a slope, plus a faster
    ripple ``0.5 sin(5 (x - 2.5))`` on the right half only. The ripple starts at 0, so the
    curve is continuous at ``x = 2.5`` (its slope changes there)."""
    ripple = 0.5 * torch.sin(5.0 * (x - 2.5)) * (x > 2.5)
    return torch.sin(2.0 * x) + 0.4 * x + ripple


def wavy_data(
    n: int, noise: float = 0.3, x_max: float = 5.0, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points ``x`` drawn uniformly from ``[0, x_max]`` (sorted), and noisy targets
    ``y = wavy_function(x) + noise * N(0, 1)``. Both float32 of shape ``(n,)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.sort(torch.rand(n, generator=g) * x_max).values
    y = wavy_function(x) + noise * torch.randn(n, generator=g)
    return x, y


def grid(n: int = 200, x_max: float = 5.0) -> torch.Tensor:
    """Evenly spaced query points covering the data range."""
    return torch.linspace(0.0, x_max, n)


__all__ = ["WINTER_GAMES", "wavy_function", "wavy_data", "grid", "show"]
