"""Data, plots, timing and memory for notebook 05 (self-attention).

Student side: nothing here computes attention, a mask or a positional encoding — those are
the exercises.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.colors import ListedColormap

#: Target value that ``F.cross_entropy`` ignores (its default ``ignore_index``).
IGNORE = -100
FIRST_TOKEN = 3  # PAD = 0, SOS = 1, EOS = 2; real tokens start at 3


def previous_token_batch(
    batch_size: int,
    length: int,
    n_symbols: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences and, at every position, the token one step to the left.

    Returns ``tokens (B, T)`` with ids in ``[3, 3 + n_symbols)`` and ``targets (B, T)`` with
    ``targets[:, t] = tokens[:, t - 1]``; position 0 has no left neighbour, so its target
    is :data:`IGNORE`. Both int64.
    """
    tokens = torch.randint(FIRST_TOKEN, FIRST_TOKEN + n_symbols, (batch_size, length),
                           generator=generator)
    targets = torch.full_like(tokens, IGNORE)
    targets[:, 1:] = tokens[:, :-1]
    return tokens, targets


def repeated_pattern_batch(
    batch_size: int,
    length: int,
    period: int,
    n_symbols: int = 10,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sequences that repeat a random pattern: ``tokens (B, length)``, int64.

    Each row draws ``period`` tokens with ids in ``[3, 3 + n_symbols)`` and repeats them, so
    ``tokens[:, t] == tokens[:, t - period]`` for ``t >= period``: after the first ``period``
    tokens the next token is always predictable from the past, before it never is.
    """
    pattern = torch.randint(FIRST_TOKEN, FIRST_TOKEN + n_symbols, (batch_size, period),
                            generator=generator)
    return pattern.repeat(1, -(-length // period))[:, :length]


_MASK_CMAP = ListedColormap(["#2b2b2b", "#f2c14e"])  # False = dark (blocked), True = gold


def show_mask(
    mask,
    *,
    ax=None,
    title: str = "",
    xlabels: Sequence[str] | None = None,
    ylabels: Sequence[str] | None = None,
    xlabel: str = "keys (attended to)",
    ylabel: str = "queries (attending)",
):
    """Draw a 2-D boolean mask: gold cells are True (may attend), dark cells False."""
    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"show_mask draws one 2-D mask; got shape {m.shape} "
                         "(index or expand it first)")
    ax = ax or plt.gca()
    ax.imshow(m.astype(float), cmap=_MASK_CMAP, vmin=0, vmax=1, aspect="equal")
    rows, cols = m.shape
    ax.set_xticks(np.arange(-0.5, cols, 1), minor=True)
    ax.set_yticks(np.arange(-0.5, rows, 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1)
    ax.tick_params(which="minor", length=0)
    ax.set_xticks(range(cols), list(xlabels) if xlabels is not None else range(cols),
                  rotation=90 if xlabels is not None else 0)
    ax.set_yticks(range(rows), list(ylabels) if ylabels is not None else range(rows))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    return ax


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    # the profiler's C++ side prints "profiler_start/stop" lines straight to file descriptor 2
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocated_bytes(fn: Callable[[], object]) -> int:
    """Bytes PyTorch's CPU allocator hands out while ``fn()`` runs, measured with PyTorch's
    profiler (``profile_memory=True``): every tensor an operation allocates counts, even one
    freed again before ``fn`` returns, so this is the memory the call writes, not its peak."""
    with _native_stderr_silenced(), torch.autograd.profiler.profile(
            profile_memory=True, use_kineto=False) as prof:
        fn()
    return int(sum(max(event.self_cpu_memory_usage, 0) for event in prof.function_events
                   if event.name != "[memory]"))


def best_time(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """Wall-clock seconds of the fastest of ``repeats`` calls of ``fn()`` (after ``warmup``
    calls). The fastest run is the least disturbed by whatever else the machine is doing,
    which is why ``timeit`` recommends it too."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
