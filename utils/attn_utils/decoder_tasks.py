"""Helpers for notebook 07 (the Transformer decoder): random training batches, accuracy against
length over several seeds, attention maps on one colour scale, where the fields of a date are,
and a timer for generation.

Student side: nothing here solves a graded exercise. Masks, models, losses and generation are
written in the notebook itself; the data sets are those of notebooks 02 and 04
(:mod:`attn_utils.seq2seq`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from attn_utils.seq2seq import Seq2SeqData

__all__ = [
    "random_batches",
    "spread_by_length",
    "plot_accuracy_spread",
    "plot_attention_maps",
    "date_fields",
    "ISO_FIELDS",
    "field_attention",
    "seconds_per_token",
]


# --- training -------------------------------------------------------------------------------


def random_batches(data: Seq2SeqData, batch_size: int = 64,
                   seed: int = 0) -> Callable[[int], tuple]:
    """``make_batch(step) -> (src, src_lengths, tgt)``: a batch of ``batch_size`` rows drawn at
    random (with replacement) from ``data``, reproducible from ``seed``; for
    :func:`attn_utils.encoder_tasks.train_steps`."""
    generator = torch.Generator().manual_seed(seed)

    def make_batch(step: int) -> tuple:
        return data.batch(torch.randint(len(data), (batch_size,), generator=generator))

    return make_batch


# --- accuracy against length over seeds -------------------------------------------------------


def spread_by_length(runs: Sequence[Mapping[int, float]]):
    """Several runs' ``{length: accuracy}`` -> ``(lengths, mean, min, max)`` as arrays, over
    the lengths every run has."""
    if not runs:
        raise ValueError("no runs")
    lengths = sorted(set.intersection(*(set(r) for r in runs)))
    table = np.array([[r[length] for length in lengths] for r in runs], dtype=float)
    return np.array(lengths), table.mean(0), table.min(0), table.max(0)


def plot_accuracy_spread(results: Mapping[str, Sequence[Mapping[int, float]]], *, ax=None,
                         title: str = "", xlabel: str = "source length (tokens)"):
    """One line per model: the mean exact match over its runs against source length, with the
    range between the worst and the best run shaded (one run: a line alone)."""
    ax = ax or plt.gca()
    for name, runs in results.items():
        lengths, mean, lo, hi = spread_by_length(runs)
        n = len(runs)
        line, = ax.plot(lengths, mean, marker="o",
                        label=f"{name} ({n} seed{'s' if n > 1 else ''}"
                              f"{': mean, min-max shaded' if n > 1 else ''})")
        if n > 1:
            ax.fill_between(lengths, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sequence accuracy (exact match)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    return ax


# --- attention maps -------------------------------------------------------------------------


def plot_attention_maps(
    maps: Sequence,
    *,
    xlabels: Sequence[str],
    ylabels: Sequence[str],
    xlabel: str = "key",
    ylabel: str = "query",
    title: str = "",
    row_names: Sequence[str] | None = None,
    cell: float = 2.6,
    vmax: float = 1.0,
):
    """A grid of attention maps on one colour scale (0 to ``vmax``) with one colour bar:
    ``maps[r]`` is an ``(H, Tq, Tk)`` array (row ``r``, e.g. a layer; one column per head)."""
    arrays = [m.detach().cpu().numpy() if hasattr(m, "detach") else np.asarray(m) for m in maps]
    n_rows, n_cols = len(arrays), arrays[0].shape[0]
    tq, tk = arrays[0].shape[1:]
    width = max(cell, cell * tk / max(tq, 1))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(width * n_cols + 1.2, cell * n_rows + 0.8),
                             squeeze=False, constrained_layout=True)
    image = None
    for r, weights in enumerate(arrays):
        for h in range(n_cols):
            ax = axes[r, h]
            image = ax.imshow(weights[h], cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
            ax.set_xticks(range(len(xlabels)), list(xlabels), fontsize=7,
                          rotation=90 if max(map(len, xlabels), default=0) > 1 else 0)
            ax.set_yticks(range(len(ylabels)), list(ylabels), fontsize=7)
            name = row_names[r] if row_names else f"layer {r + 1}"
            ax.set_title(f"{name}, head {h + 1}", fontsize=9)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel(ylabel if h == 0 else "", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="attention weight")
    if title:
        fig.suptitle(title)
    return fig


# --- dates: where each field is ----------------------------------------------------------------

#: What each character of an ISO date ``yyyy-mm-dd`` writes (``None`` for the dashes).
ISO_FIELDS = ("year",) * 4 + (None,) + ("month",) * 2 + (None,) + ("day",) * 2


def date_fields(source: str) -> dict[str, tuple[int, int]]:
    """Where the year, the month and the day are in a date written by
    :func:`attn_utils.seq2seq.date_task`: ``{field: (start, end)}``, character positions.

    The year is always last; the month is the word if there is one, otherwise the second
    number (the numeric formats put the day first)."""
    parts = [(m.start(), m.end(), m.group()) for m in re.finditer(r"[a-z]+|[0-9]+", source)]
    if len(parts) != 3:
        raise ValueError(f"not a date of date_task: {source!r}")
    year = parts[2]
    words = [p for p in parts if p[2].isalpha()]
    if words:
        month = words[0]
        day = next(p for p in parts[:2] if p is not month)
    else:
        day, month = parts[0], parts[1]
    return {"year": year[:2], "month": month[:2], "day": day[:2]}


def field_attention(cross_weights: torch.Tensor, sources: Sequence[str]) -> torch.Tensor:
    """How much of each head's cross-attention lands on the source field that the output
    character being written comes from.

    ``cross_weights (B, H, T, S)``: one layer's cross-attention while writing ISO dates (query
    ``t`` predicts character ``t`` of ``yyyy-mm-dd``); ``sources``: the B source strings.
    Returns ``(H,)``: for each head, the weight on the right field, averaged over the 8 digit
    positions and the examples."""
    totals = torch.zeros(cross_weights.shape[1], dtype=torch.float64)
    count = 0
    for b, source in enumerate(sources):
        fields = date_fields(source)
        for t, field in enumerate(ISO_FIELDS):
            if field is None:
                continue
            start, end = fields[field]
            totals += cross_weights[b, :, t, start:end].sum(-1).double()
            count += 1
    return totals / max(count, 1)


# --- timing ----------------------------------------------------------------------------------


def seconds_per_token(generate: Callable[[int], object], lengths: Sequence[int],
                      repeats: int = 3) -> list[float]:
    """For each ``n`` in ``lengths``: the median over ``repeats`` runs of the wall time of
    ``generate(n)`` (which must produce ``n`` tokens), divided by ``n``. One untimed warm-up call
    first."""
    generate(min(lengths))
    result = []
    for n in lengths:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            generate(n)
            times.append(time.perf_counter() - start)
        result.append(float(np.median(times)) / n)
    return result
