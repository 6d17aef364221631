"""Data, training and evaluation plumbing for the sequence-to-sequence notebooks (02 and 04).

Everything here is student side and solves no graded exercise: it makes toy data sets
(digit strings, human-written dates, additions), pads them into batches with the course's
token ids (``PAD = 0``, ``SOS = 1``, ``EOS = 2``, real tokens from 3), runs a training loop
around a loss function *you* write, and measures accuracy per source length with a decoder
and a metric *you* write.
"""

from __future__ import annotations

import datetime as _dt
import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

from attn_utils.runtime import EOS, PAD, SOS, is_autograding

__all__ = [
    "Vocab",
    "Seq2SeqData",
    "pad_sequences",
    "make_data",
    "copy_task",
    "date_task",
    "addition_task",
    "reverse_source",
    "fit",
    "accuracy_by_length",
    "accuracy_spread",
    "print_accuracy_table",
    "plot_accuracy_by_length",
    "DIGITS",
    "ADDITION",
    "DATE_SOURCE",
    "DATE_TARGET",
]


class Vocab:
    """A character vocabulary: ids 0, 1, 2 are PAD, SOS, EOS; the symbols get ids from 3."""

    specials = ("<pad>", "<sos>", "<eos>")

    def __init__(self, symbols: Sequence[str]):
        self.itos = list(self.specials) + list(symbols)
        self.stoi = {s: i for i, s in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("symbols must be distinct")

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        return [self.stoi[ch] for ch in text]

    def decode(self, ids) -> str:
        """Ids back to text: stops at the first EOS, skips PAD and SOS."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if i == EOS:
                break
            if i in (PAD, SOS):
                continue
            out.append(self.itos[i])
        return "".join(out)

    def tokens(self, ids) -> list[str]:
        """Ids to a list of printable symbols (for heatmap labels), EOS shown as '<eos>'."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return ["␣" if self.itos[i] == " " else self.itos[i] for i in ids if i != PAD]

    def __repr__(self) -> str:
        return f"Vocab({''.join(self.itos[3:])!r}, size={len(self)})"


def pad_sequences(seqs: Sequence[Sequence[int]], pad_id: int = PAD):
    """Right-pad lists of ids into ``(tokens (N, T_max) int64, lengths (N,) int64)``."""
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    tokens = torch.full((len(seqs), int(lengths.max()) if len(seqs) else 0), pad_id,
                        dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
    return tokens, lengths


@dataclass
class Seq2SeqData:
    """A padded parallel data set.

    ``src (N, S)`` with ``src_lengths (N,)``; ``tgt (N, T)`` holds each target followed by EOS,
    then PAD. ``pairs`` keeps the original strings.
    """

    src: torch.Tensor
    src_lengths: torch.Tensor
    tgt: torch.Tensor
    src_vocab: Vocab
    tgt_vocab: Vocab
    pairs: list[tuple[str, str]]

    def __len__(self) -> int:
        return self.src.shape[0]

    def subset(self, idx) -> Seq2SeqData:
        idx = torch.as_tensor(idx, dtype=torch.long)
        src, lengths, tgt = self.batch(idx)
        return Seq2SeqData(src, lengths, tgt, self.src_vocab, self.tgt_vocab,
                           [self.pairs[i] for i in idx.tolist()])

    def batch(self, idx) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(src, src_lengths, tgt)`` for the rows ``idx``, trimmed to their longest row."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        lengths = self.src_lengths[idx]
        tgt = self.tgt[idx]
        t_len = int((tgt != PAD).sum(1).max()) if len(idx) else 0
        s_len = int(lengths.max()) if len(idx) else 0
        return self.src[idx, :s_len], lengths, tgt[:, :t_len]

    def batches(self, batch_size: int, *, shuffle: bool = True,
                generator: torch.Generator | None = None) -> Iterator[tuple]:
        order = (torch.randperm(len(self), generator=generator) if shuffle
                 else torch.arange(len(self)))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def split(self, n_test: int) -> tuple[Seq2SeqData, Seq2SeqData]:
        """The first ``len - n_test`` rows for training, the rest for testing."""
        n = len(self) - n_test
        return self.subset(range(n)), self.subset(range(n, len(self)))

    def with_reversed_source(self) -> Seq2SeqData:
        """The same data with each source read backwards (PAD stays at the end)."""
        return Seq2SeqData(reverse_source(self.src, self.src_lengths), self.src_lengths,
                           self.tgt, self.src_vocab, self.tgt_vocab,
                           [(s[::-1], t) for s, t in self.pairs])

    def __repr__(self) -> str:
        return (f"Seq2SeqData({len(self)} pairs, src {tuple(self.src.shape)}, "
                f"tgt {tuple(self.tgt.shape)}, e.g. {self.pairs[0]!r})")


def make_data(pairs: Sequence[tuple[str, str]], src_vocab: Vocab,
              tgt_vocab: Vocab) -> Seq2SeqData:
    """Encode string pairs: the source as is, the target followed by EOS; pad both."""
    src, lengths = pad_sequences([src_vocab.encode(s) for s, _ in pairs])
    tgt, _ = pad_sequences([tgt_vocab.encode(t) + [EOS] for _, t in pairs])
    return Seq2SeqData(src, lengths, tgt, src_vocab, tgt_vocab, list(pairs))


def reverse_source(src: torch.Tensor, src_lengths: torch.Tensor) -> torch.Tensor:
    """Reverse the real tokens of each row, keeping PAD at the end: ``3 4 5 0 0 -> 5 4 3 0 0``."""
    S = src.shape[1]
    pos = torch.arange(S).expand_as(src)
    lengths = src_lengths.reshape(-1, 1)
    index = torch.where(pos < lengths, lengths - 1 - pos, pos)
    return src.gather(1, index)


DIGITS = Vocab("0123456789")


def copy_task(n: int, min_len: int, max_len: int, seed: int = 0) -> Seq2SeqData:
    """Random digit strings whose target is the same string: ``'4071' -> '4071'``.

    Lengths are uniform in ``[min_len, max_len]``. The model must carry every digit through
    the encoder to the decoder, which is exactly what a fixed-size context vector finds hard.
    """
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        s = "".join(rng.choice("0123456789") for _ in range(rng.randint(min_len, max_len)))
        pairs.append((s, s))
    return make_data(pairs, DIGITS, DIGITS)


_MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
           "september", "october", "november", "december"]
DATE_FORMATS = (
    "{d} {month} {yyyy}",     # 7 march 1998
    "{month} {d}, {yyyy}",    # march 7, 1998
    "{d} {mon} {yyyy}",       # 7 mar 1998
    "{mon} {dd} {yyyy}",      # mar 07 1998
    "{dd}/{mm}/{yyyy}",       # 07/03/1998 (day first)
    "{d}.{m}.{yy}",           # 7.3.98
)
DATE_SOURCE = Vocab("abcdefghijklmnopqrstuvwxyz0123456789 ,./")
DATE_TARGET = Vocab("0123456789-")


def human_date(date: _dt.date, fmt: str) -> str:
    month = _MONTHS[date.month - 1]
    return fmt.format(d=date.day, dd=f"{date.day:02d}", m=date.month, mm=f"{date.month:02d}",
                      month=month, mon=month[:3], yyyy=date.year, yy=f"{date.year % 100:02d}")


def date_task(n: int, seed: int = 0, formats: Sequence[str] = DATE_FORMATS,
              years: tuple[int, int] = (1950, 2049)) -> Seq2SeqData:
    """Human-written dates to ISO dates: ``'march 7, 1998' -> '1998-03-07'``.

    Two-digit years ``yy`` mean ``19yy`` from 50 to 99 and ``20yy`` from 00 to 49.
    """
    rng = random.Random(seed)
    lo = _dt.date(years[0], 1, 1).toordinal()
    hi = _dt.date(years[1], 12, 31).toordinal()
    pairs = []
    for _ in range(n):
        date = _dt.date.fromordinal(rng.randint(lo, hi))
        pairs.append((human_date(date, rng.choice(formats)), date.isoformat()))
    return make_data(pairs, DATE_SOURCE, DATE_TARGET)


ADDITION = Vocab("0123456789+")


COLUMNS = Vocab([f"{a}{b}" for a in range(10) for b in range(10)])


def addition_task(n: int, digits: int = 3, seed: int = 0, *, layout: str = "text") -> Seq2SeqData:
    """Additions of two random ``digits``-digit numbers (zero-padded to a fixed width).

    ``layout="text"``: as typed, ``'053+709' -> '0762'``, one character per token.
    ``layout="columns"``: as added on paper, one **column** per token, units first, and the
    answer units first too: ``053+709`` becomes the columns ``39 50 07`` and the answer
    ``2 6 7 0``. The ``pairs`` always keep the usual notation (``'053+709', '0762'``).
    """
    if layout not in ("text", "columns"):
        raise ValueError("layout must be 'text' or 'columns'")
    rng = random.Random(seed)
    pairs, src, tgt = [], [], []
    for _ in range(n):
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        sa, sb, sc = f"{a:0{digits}d}", f"{b:0{digits}d}", f"{a + b:0{digits + 1}d}"
        pairs.append((f"{sa}+{sb}", sc))
        if layout == "text":
            src.append(ADDITION.encode(f"{sa}+{sb}"))
            tgt.append(DIGITS.encode(sc) + [EOS])
        else:
            src.append(COLUMNS.encode([x + y for x, y in zip(sa[::-1], sb[::-1])]))
            tgt.append(DIGITS.encode(sc[::-1]) + [EOS])
    src_t, lengths = pad_sequences(src)
    tgt_t, _ = pad_sequences(tgt)
    return Seq2SeqData(src_t, lengths, tgt_t, ADDITION if layout == "text" else COLUMNS,
                       DIGITS, pairs)


# --- training and evaluation --------------------------------------------------------------


def fit(
    model: torch.nn.Module,
    data: Seq2SeqData,
    loss_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    epochs: int,
    batch_size: int = 64,
    lr: float = 3e-3,
    clip: float | None = 1.0,
    seed: int = 0,
    on_epoch: Callable[[int], object] | None = None,
    desc: str = "training",
    schedule: str | None = None,
) -> dict[str, list]:
    """Train ``model`` with Adam for ``epochs`` passes over ``data``.

    ``loss_fn(model, src, src_lengths, tgt)`` returns the scalar loss of one batch (you write
    it: teacher forcing and the masked loss live there). ``on_epoch(epoch)``, if given, is
    called after every epoch with the model in eval mode; what it returns is collected.
    Returns ``{"loss": mean loss per epoch, "on_epoch": [...]}``. ``epochs=0`` trains nothing
    and returns empty lists (graded demos do that: building the first optimizer alone makes
    PyTorch import its compiler, about 1.3 s).

    ``schedule``: ``None`` keeps the learning rate at ``lr``; ``"cosine"`` lowers it after
    every batch along half a cosine, from ``lr`` to 0 at the end of the last epoch (a short
    budget gets further that way than at a constant rate). Gradients are clipped to a total
    norm of ``clip`` (``None``: not clipped).
    """
    history: dict[str, list] = {"loss": [], "on_epoch": []}
    if epochs <= 0:
        model.eval()
        return history
    if schedule not in (None, "cosine"):
        raise ValueError(f"schedule must be None or 'cosine', got {schedule!r}")
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    total_steps = epochs * math.ceil(len(data) / batch_size)
    step = 0
    # no progress widget while nbgrader runs the notebook: nobody watches it
    bar = tqdm(range(epochs), desc=desc, leave=False, mininterval=0.5, disable=is_autograding())
    for epoch in bar:
        model.train()
        total, count = 0.0, 0
        for src, src_lengths, tgt in data.batches(batch_size, generator=generator):
            loss = loss_fn(model, src, src_lengths, tgt)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if schedule == "cosine":
                for group in optimizer.param_groups:
                    group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total_steps))
            optimizer.step()
            step += 1
            total += loss.item() * len(src)
            count += len(src)
        history["loss"].append(total / max(count, 1))
        model.eval()
        if on_epoch is not None:
            history["on_epoch"].append(on_epoch(epoch))
        bar.set_postfix(loss=f"{history['loss'][-1]:.3f}")
    model.eval()
    return history


def accuracy_by_length(
    decode: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor],
    data: Seq2SeqData,
    metric: Callable[[torch.Tensor, torch.Tensor], float],
    *,
    extra_steps: int = 2,
) -> dict[int, float]:
    """Sequence accuracy for each source length in ``data``.

    ``decode(src, src_lengths, max_len) -> pred (B, max_len)`` is your decoder (for example
    greedy decoding); ``metric(pred, tgt) -> float`` your exact-match metric. ``max_len`` is
    the longest target of the group plus ``extra_steps``.
    """
    result = {}
    for length in sorted(set(data.src_lengths.tolist())):
        idx = (data.src_lengths == length).nonzero().flatten()
        src, src_lengths, tgt = data.batch(idx)
        pred = decode(src, src_lengths, tgt.shape[1] + extra_steps)
        result[length] = float(metric(pred, tgt))
    return result


Runs = Mapping[int, float] | Sequence[Mapping[int, float]]


def accuracy_spread(runs: Runs) -> dict[int, tuple[float, float, float]]:
    """``{length: (mean, min, max)}`` over several runs' ``{length: accuracy}`` (for example
    one per seed), over the lengths every run has; one run gives ``(a, a, a)``."""
    runs = [runs] if isinstance(runs, Mapping) else list(runs)
    if not runs:
        raise ValueError("no runs")
    lengths = sorted(set.intersection(*(set(r) for r in runs)))
    return {L: (sum(r[L] for r in runs) / len(runs), min(r[L] for r in runs),
                max(r[L] for r in runs)) for L in lengths}


def print_accuracy_table(results: Mapping[str, Runs], *, lengths: Sequence[int] | None = None):
    """One column per model: sequence accuracy by source length, ``mean (min-max)`` over the
    runs of each model (a single run shows its value alone)."""
    spreads = {name: accuracy_spread(runs) for name, runs in results.items()}
    several = {name: not isinstance(runs, Mapping) and len(runs) > 1
               for name, runs in results.items()}
    lengths = lengths or sorted(set().union(*spreads.values()))
    width = max(14, *(len(n) for n in results))
    print("length  " + "  ".join(f"{name:>{width}}" for name in results))
    for L in lengths:
        cells = []
        for name, spread in spreads.items():
            if L not in spread:
                cells.append(f"{'-':>{width}}")
                continue
            mean, lo, hi = spread[L]
            text = f"{mean:.2f} ({lo:.2f}-{hi:.2f})" if several[name] else f"{mean:.2f}"
            cells.append(f"{text:>{width}}")
        print(f"{L:>6}  " + "  ".join(cells))


def plot_accuracy_by_length(results: Mapping[str, Runs], *, ax=None, title: str = "",
                            xlabel: str = "source length (tokens)",
                            styles: Mapping[str, Mapping] | None = None):
    """One line per model: sequence accuracy (exact match) against source length.

    A model's value is one run's ``{length: accuracy}``, or a list of runs (for example one per
    seed): then the line is their mean and a shaded band spans their minimum to maximum.
    ``styles`` maps a model's name to extra keyword arguments for its line (colour,
    linestyle, ...).
    """
    ax = ax or plt.gca()
    styles = styles or {}
    for name, runs in results.items():
        spread = accuracy_spread(runs)
        xs = sorted(spread)
        n = 1 if isinstance(runs, Mapping) else len(runs)
        label = name if n == 1 else f"{name} (mean of {n}; band: min-max)"
        (line,) = ax.plot(xs, [spread[x][0] for x in xs], marker="o", label=label,
                          **dict(styles.get(name, {})))
        if n > 1:
            ax.fill_between(xs, [spread[x][1] for x in xs], [spread[x][2] for x in xs],
                            color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("sequence accuracy (exact match)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return ax
