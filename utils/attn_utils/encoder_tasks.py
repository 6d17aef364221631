"""Helpers for notebook 06 (the Transformer encoder): a task, a training loop, plots, and a
cost meter.

Student side: nothing here solves a graded exercise. Masks, losses and accuracies are
written in the notebook itself.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

from attn_utils.plotting import (
    heatmap,
    shared_colorbar,
    show,  # noqa: F401 - re-exported for the notebook
)
from attn_utils.runtime import PAD, is_autograding

FIRST_TOKEN = 3  # ids 0, 1, 2 are PAD, SOS, EOS


# --- the task ---------------------------------------------------------------------------


def mirror_batch(
    batch_size: int,
    min_len: int = 4,
    max_len: int = 12,
    n_symbols: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random sequences for the "mirror" task, padded to ``max_len``.

    Each sequence has a length ``L`` drawn from ``[min_len, max_len]`` and real tokens drawn
    from ``FIRST_TOKEN .. FIRST_TOKEN + n_symbols - 1``; positions ``L ..`` hold PAD. The
    target at position ``i < L`` is the token at the mirrored position ``L - 1 - i`` (the
    real part read backwards); padding positions have target PAD.

    Returns ``tokens (B, max_len)``, ``targets (B, max_len)``, ``lengths (B,)``, all int64.
    """
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    tokens = torch.randint(FIRST_TOKEN, FIRST_TOKEN + n_symbols, (batch_size, max_len),
                           generator=generator)
    positions = torch.arange(max_len)
    real = positions[None, :] < lengths[:, None]
    tokens = tokens.masked_fill(~real, PAD)
    mirrored = (lengths[:, None] - 1 - positions[None, :]).clamp(min=0)
    targets = tokens.gather(1, mirrored).masked_fill(~real, PAD)
    return tokens, targets, lengths


def neighbours_batch(
    batch_size: int,
    min_len: int = 4,
    max_len: int = 12,
    n_symbols: int = 10,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random sequences for the "neighbours" task: at every real position ``i`` name both the
    token on the left (``i - 1``) and the token on the right (``i + 1``) — two different
    lookups per position. Sequences as in :func:`mirror_batch`.

    Returns ``tokens``, ``left``, ``right`` (each ``(B, max_len)``; PAD where there is no
    such neighbour or no real token) and ``lengths (B,)``, all int64."""
    tokens, _, lengths = mirror_batch(batch_size, min_len, max_len, n_symbols, generator)
    left = torch.full_like(tokens, PAD)
    right = torch.full_like(tokens, PAD)
    left[:, 1:] = tokens[:, :-1]
    right[:, :-1] = tokens[:, 1:]
    real = tokens != PAD
    return tokens, left.masked_fill(~real, PAD), right.masked_fill(~real, PAD), lengths


def token_names(tokens: Sequence[int]) -> list[str]:
    """Readable labels for a row of token ids: PAD as '·', real tokens as letters."""
    return ["·" if t == PAD else chr(ord("a") + int(t) - FIRST_TOKEN) for t in tokens]


# --- training ---------------------------------------------------------------------------


def warmup_then_decay(optimizer: torch.optim.Optimizer, warmup: int, total: int):
    """Learning rate rising linearly for ``warmup`` steps, then falling linearly to 10%."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(0.1, 1.0 - 0.9 * progress)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_steps(
    model: torch.nn.Module,
    make_batch: Callable[[int], tuple],
    loss_fn: Callable[[torch.nn.Module, tuple], torch.Tensor],
    *,
    steps: int,
    lr: float = 3e-3,
    warmup: int = 50,
    clip: float = 1.0,
    evaluate: Callable[[torch.nn.Module], dict] | None = None,
    eval_every: int = 50,
    desc: str = "training",
) -> dict[str, list]:
    """Adam with warmup; returns the history: ``loss`` (every step) and, at step 0, every
    ``eval_every`` steps and at the end, whatever ``evaluate(model)`` returns, under
    ``eval_step`` and the dict's own keys. ``evaluate`` runs in eval mode without grad.
    With ``steps <= 0`` only the step-0 evaluation runs (no optimizer is even built)."""
    history: dict[str, list] = {"loss": [], "eval_step": []}

    def run_eval(step: int) -> None:
        if evaluate is None:
            return
        model.eval()
        with torch.no_grad():
            result = evaluate(model)
        model.train()
        history["eval_step"].append(step)
        for key, value in result.items():
            history.setdefault(key, []).append(value)

    model.train()
    run_eval(0)
    if steps <= 0:  # nothing to train (a demo shrunk away while autograding)
        model.eval()
        return history
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.98))
    schedule = warmup_then_decay(optimizer, warmup, steps)
    bar = tqdm(range(1, steps + 1), desc=desc, leave=False, mininterval=0.5,
               disable=is_autograding())
    for step in bar:
        loss = loss_fn(model, make_batch(step))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        schedule.step()
        history["loss"].append(loss.item())
        if step % eval_every == 0 or step == steps:
            run_eval(step)
            if evaluate is not None:
                bar.set_postfix({k: f"{v[-1]:.3f}" for k, v in history.items()
                                 if k not in ("loss", "eval_step")})
    model.eval()
    return history


# --- plots ------------------------------------------------------------------------------




def plot_attention_grid(
    attentions: Sequence[torch.Tensor],
    labels: Sequence[str],
    *,
    query_labels: Sequence[str] | None = None,
    title: str = "",
    cell: float = 2.3,
    real_queries: Sequence[bool] | torch.Tensor | None = None,
    colorbar: bool = True,
    marks: dict[str, float] | None = None,
):
    """One heatmap per layer (rows) and head (columns) for a single example, all on one
    colour scale (0 to 1) with one colour bar.

    ``attentions[l]`` is ``(H, T, T)`` (the example's slice of layer ``l``'s weights).
    ``real_queries`` (T booleans): rows where it is False (padding queries, whose output no
    loss reads) are greyed out instead of drawn. ``marks`` are values to mark on the colour
    bar, e.g. ``{"uniform 1/L": 1 / L}``.
    """
    n_layers, n_heads = len(attentions), attentions[0].shape[0]
    fig, axes = plt.subplots(n_layers, n_heads,
                             figsize=(cell * n_heads + (1.4 if colorbar else 0.6), cell * n_layers),
                             squeeze=False, constrained_layout=True)
    keep = None if real_queries is None else torch.as_tensor(real_queries, dtype=torch.bool)
    image = None
    for layer, weights in enumerate(attentions):
        for head in range(n_heads):
            ax = axes[layer, head]
            w = torch.as_tensor(weights[head]).detach().float().cpu()
            if keep is not None:
                w = w.masked_fill(~keep[:, None], float("nan"))
            image = heatmap(w, ax=ax, xlabels=labels, ylabels=query_labels or labels,
                            xlabel="key" if layer == n_layers - 1 else "",
                            ylabel=f"layer {layer + 1}\nquery" if head == 0 else "",
                            title=f"layer {layer + 1}, head {head + 1}", colorbar=False,
                            vmin=0.0, vmax=1.0, bad_color="lightgray")
            ax.tick_params(labelsize=7)
            ax.tick_params(axis="x", rotation=0)
    if colorbar and image is not None:
        shared_colorbar(image, axes, label="attention weight"
                        + (" (grey: padding query)" if keep is not None else ""), marks=marks)
    if title:
        fig.suptitle(title)
    return fig


# --- cost -------------------------------------------------------------------------------


def saved_tensor_bytes(fn: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Run ``fn()`` and count the bytes autograd keeps for the backward pass (distinct
    storages of the saved tensors): the activation memory a training step must hold."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = max(storages.get(storage.data_ptr(), 0), storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


def time_forward_backward(fn: Callable[[], torch.Tensor], repeats: int = 3) -> float:
    """Median wall-clock seconds of ``fn().sum().backward()`` after one warm-up call."""
    fn().sum().backward()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn().sum().backward()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def measure_cost(
    factories: dict[str, Callable[[int], Callable[[], torch.Tensor]]],
    lengths: Sequence[int],
    repeats: int = 3,
) -> dict[str, dict[str, list[float]]]:
    """For every name and sequence length ``T``, ``factories[name](T)`` returns a function
    that runs a forward pass; measure its forward+backward time (ms) and the activation
    memory kept for backward (MiB)."""
    results: dict[str, dict[str, list[float]]] = {}
    for name, factory in factories.items():
        ms, mib = [], []
        for T in tqdm(lengths, desc=name, leave=False, disable=is_autograding()):
            fn = factory(T)
            _, nbytes = saved_tensor_bytes(fn)
            ms.append(1e3 * time_forward_backward(fn, repeats))
            mib.append(nbytes / 2**20)
        results[name] = {"ms": ms, "MiB": mib}
    return results


def loglog_slope(x: Sequence[float], y: Sequence[float], last: int = 3) -> float:
    """The exponent k of y ~ x^k fitted on the ``last`` points (the large-T regime)."""
    lx, ly = np.log(np.asarray(x[-last:], float)), np.log(np.asarray(y[-last:], float))
    return float(np.polyfit(lx, ly, 1)[0]) if len(lx) >= 2 else math.nan
