"""A small, readable training loop with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from tqdm.auto import tqdm

from attn_utils.runtime import is_autograding


def train(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable] | Iterable,
    loss_fn: Callable[..., torch.Tensor],
    *,
    steps: int,
    lr: float = 1e-3,
    clip: float | None = 1.0,
    desc: str = "training",
    optimizer: torch.optim.Optimizer | None = None,
    stop: Callable[[list[float]], bool] | None = None,
) -> list[float]:
    """Train ``model`` for at most ``steps`` updates and return the loss of every step.

    ``batches(step)`` returns the batch for a step (or pass any iterable of batches);
    ``loss_fn(model, batch)`` returns a scalar loss. The optimizer is Adam with learning rate
    ``lr`` unless one is given.

    Before every update the gradient's total norm is clipped to ``clip``
    (``torch.nn.utils.clip_grad_norm_``; ``clip=None`` turns that off), so a demo that uses
    the defaults never takes a step larger than a norm-1 gradient would.

    ``stop(losses)``, if given, is called after every update with the losses so far; training
    ends early when it returns True (``len(result)`` is then the number of steps taken).
    ``steps=0`` trains nothing (demos do that while they are graded: building the first
    optimizer alone makes PyTorch import its compiler, about 1.3 s).
    """
    if steps <= 0:
        model.eval()
        return []
    optimizer = optimizer or torch.optim.Adam(model.parameters(), lr=lr)
    source = iter(batches) if not callable(batches) else None
    losses: list[float] = []
    model.train()
    # no progress widget while nbgrader runs the notebook: nobody watches it
    bar = tqdm(range(steps), desc=desc, leave=False, mininterval=0.5, disable=is_autograding())
    for step in bar:
        batch = batches(step) if source is None else next(source)
        loss = loss_fn(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        if stop is not None and stop(losses):
            break
    bar.close()
    model.eval()
    return losses
