"""The small vocabulary every check is written in.

A check is a plain function ``check_<name>(student_obj) -> Report``. Inside it, each
``with c.case("...", weight=w):`` block is one independently scored case: an exception
inside the block fails that case only, with a message for the student, and the next case
still runs. ``expect_*`` helpers raise :class:`CheckFailed` with a message that says what
was expected, what came back, and the likely mistake.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch


class CheckFailed(AssertionError):
    """A case failed; the message is written for the student."""


@dataclass
class CaseResult:
    name: str
    weight: float
    passed: bool
    message: str = ""
    #: False for a case an answer of zeros also passes (shape, dtype, inputs unmodified...)
    #: while no case that checks values passed: see :meth:`Report.credit_only_for_work`.
    counts: bool = True


@dataclass
class Report:
    """The outcome of one check: which cases passed and why the others failed."""

    name: str
    cases: list[CaseResult] = field(default_factory=list)

    @property
    def total_weight(self) -> float:
        return sum(c.weight for c in self.cases)

    @property
    def fraction(self) -> float:
        if not self.cases:
            return 0.0
        return sum(c.weight for c in self.cases if c.passed and c.counts) / self.total_weight

    def credit_only_for_work(self, trivial: set[tuple[int, str]]) -> Report:
        """This report, with no credit for the ``trivial`` cases (those an answer of zeros
        passes, as ``(index, name)``) unless a case that needs real work passed too: a
        function that returns zeros of the right shape earns nothing, a partly right one
        still earns its shape and dtype points."""
        worked = any(c.passed for i, c in enumerate(self.cases) if (i, c.name) not in trivial)
        if worked or not trivial:
            return self
        cases = [CaseResult(c.name, c.weight, c.passed, c.message,
                            counts=not (c.passed and (i, c.name) in trivial))
                 for i, c in enumerate(self.cases)]
        return Report(self.name, cases)

    @property
    def ok(self) -> bool:
        return bool(self.cases) and all(c.passed for c in self.cases)

    @property
    def failures(self) -> list[str]:
        return [f"{c.name}: {c.message}" for c in self.cases if not c.passed]

    @property
    def message(self) -> str:
        """All failure messages, one per line (empty when everything passed)."""
        return "\n".join(self.failures)

    def __str__(self) -> str:
        passed = sum(c.passed for c in self.cases)
        lines = [f"{self.name}: {passed}/{len(self.cases)} checks passed"]
        for c in self.cases:
            mark = "PASS" if c.passed else "FAIL"
            note = "" if c.counts else " (no credit yet: an answer of zeros passes this too)"
            lines.append(f"  [{mark}] {c.name}{note}"
                         + ("" if c.passed else f"\n         {c.message}"))
        return "\n".join(lines)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence warnings and Python-level stderr: nbgrader scores a test cell that writes to
    stderr as 0, and a student's harmless warning must not cost points."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with contextlib.redirect_stderr(io.StringIO()):
            yield


def single_threaded(check_fn: Callable) -> Callable:
    """Run a check on one intra-op thread, restoring the caller's setting. Its tensors are
    tiny, and on a busy machine PyTorch's thread pool made them tens of times slower
    (measured: 2.3 s instead of 0.04 s for the Encoder check with 2 threads under load)."""

    @functools.wraps(check_fn)
    def wrapper(obj):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return check_fn(obj)
        finally:
            torch.set_num_threads(threads)

    return wrapper


class Check:
    """Collects the cases of one check. See the module docstring."""

    def __init__(self, name: str):
        self.name = name
        self.results: list[CaseResult] = []

    @contextlib.contextmanager
    def case(self, name: str, weight: float = 1.0) -> Iterator[None]:
        try:
            with quiet():
                yield
        except CheckFailed as exc:
            self.results.append(CaseResult(name, weight, False, str(exc)))
        except NotImplementedError:
            self.results.append(
                CaseResult(name, weight, False, "not implemented yet (raises NotImplementedError)")
            )
        except Exception as exc:  # the student's code may raise anything
            self.results.append(
                CaseResult(name, weight, False, f"raised {type(exc).__name__}: {exc}")
            )
        else:
            self.results.append(CaseResult(name, weight, True))

    def report(self) -> Report:
        return Report(self.name, list(self.results))


# --- what a check may assume about what the student handed back -----------------------


def as_tensor(value, what: str) -> torch.Tensor:
    """Accept only a genuine ``torch.Tensor``: a subclass could fake comparisons."""
    if type(value) is torch.nn.Parameter:
        return value.data
    if type(value) is not torch.Tensor:
        if isinstance(value, torch.Tensor):
            raise CheckFailed(
                f"{what} is a subclass of torch.Tensor ({type(value).__name__}); "
                "return a plain torch.Tensor"
            )
        raise CheckFailed(f"{what} should be a torch.Tensor, got {type(value).__name__}")
    return value


def as_pair(value, what: str) -> tuple:
    if type(value) is not tuple or len(value) != 2:
        got = f"a tuple of length {len(value)}" if type(value) is tuple else type(value).__name__
        raise CheckFailed(f"{what} should return a tuple of two things, got {got}")
    return value


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def expect_shape(value, shape: tuple[int, ...], what: str, hint: str = "") -> torch.Tensor:
    t = as_tensor(value, what)
    if tuple(t.shape) != tuple(shape):
        msg = f"{what} should have shape {tuple(shape)}, got {tuple(t.shape)}"
        raise CheckFailed(msg + (f" — {hint}" if hint else ""))
    return t


def expect_dtype(value, dtype: torch.dtype, what: str) -> torch.Tensor:
    t = as_tensor(value, what)
    if t.dtype != dtype:
        raise CheckFailed(f"{what} should have dtype {dtype}, got {t.dtype}")
    return t


def _max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    diff = (a.detach().double() - b.detach().double()).abs()
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    return float(diff.max()) if diff.numel() else 0.0


def is_close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    """Like ``torch.allclose`` but written out, so a student who patches ``allclose``
    changes nothing, and NaN never counts as close."""
    if type(a) is not torch.Tensor or type(b) is not torch.Tensor or a.shape != b.shape:
        return False
    a64, b64 = a.detach().double(), b.detach().double()
    if bool(torch.isnan(a64).any()) or bool(torch.isnan(b64).any()):
        return False
    return bool(((a64 - b64).abs() <= atol + rtol * b64.abs()).all())


def _preview(t: torch.Tensor, n: int = 4) -> str:
    flat = t.detach().reshape(-1)[:n].tolist()
    body = ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in flat)
    return f"[{body}{', ...' if t.numel() > n else ''}]"


def expect_close(
    value,
    expected: torch.Tensor,
    what: str,
    *,
    atol: float = 1e-5,
    rtol: float = 1e-4,
    hint: str = "",
    diagnoses: Mapping[str, torch.Tensor | Callable[[], torch.Tensor]] | None = None,
) -> torch.Tensor:
    """Compare with the reference. ``diagnoses`` maps a description of a known mistake to
    the value that mistake produces; when the student's value matches one, the message
    names that mistake instead of the generic ``hint``."""
    t = expect_shape(value, tuple(expected.shape), what, hint=hint)
    if is_close(t, expected, atol, rtol):
        return t
    if bool(torch.isnan(t.detach()).any()):
        raise CheckFailed(f"{what} contains NaN" + (f" — {hint}" if hint else ""))
    for mistake, candidate in (diagnoses or {}).items():
        try:
            candidate = candidate() if callable(candidate) else candidate
        except Exception:
            continue
        if type(candidate) is torch.Tensor and is_close(t, candidate, atol, rtol):
            raise CheckFailed(
                f"{what} does not match the reference: it matches what you get when {mistake}"
            )
    raise CheckFailed(
        f"{what} does not match the reference "
        f"(max abs difference {_max_abs_diff(t, expected):.3g}; "
        f"expected {_preview(expected)}, got {_preview(t)})" + (f" — {hint}" if hint else "")
    )


def expect_unmodified(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor]):
    for name, original in before.items():
        now = after[name]
        if now.shape != original.shape or not torch.equal(now.detach(), original):
            raise CheckFailed(
                f"the input {name} was modified in place — work on a copy or use "
                "out-of-place operations"
            )


def snapshot(**tensors: torch.Tensor) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in tensors.items()}


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=generator(seed), dtype=dtype) * scale


def call(fn: Callable, *args, **kwargs):
    """Call student code with fresh copies of tensor arguments, so one case cannot leak
    state into the next."""
    copied = [a.clone() if type(a) is torch.Tensor else a for a in args]
    return fn(*copied, **kwargs)


# --- modules: build the student's class with the reference's weights -------------------


def seeded(factory, seed: int):
    """Build a reference module from a fixed seed without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def build_like(cls, reference: torch.nn.Module, args: tuple, what: str) -> torch.nn.Module:
    """Construct the student's class with the contract's arguments and load the reference's
    weights into it by the contract's submodule names, in eval mode.

    Nothing of the student's module is read before the weights are loaded (a lazily built
    layer, ``nn.LazyLinear``, has no shapes until then). Extra parameters are allowed;
    missing or differently shaped ones fail with a message naming them. Through a channel
    the three steps are one request (:meth:`attn_grader.remote.Channel.build`)."""
    from attn_grader import remote

    call = f"{what}({', '.join(repr(a) for a in args)})"
    ours = reference.state_dict()
    if isinstance(cls, remote.RemoteObject):
        outcome = cls._channel.build(cls, args, ours)
    else:
        outcome = _build_here(cls, args, ours)
    step, error = outcome.get("step"), outcome.get("error") or {}
    kind, text = str(error.get("type", "")), str(error.get("message", ""))
    if kind == "NotImplementedError":
        raise NotImplementedError(text)
    if step == "build":
        raise CheckFailed(f"{call} raised {kind}: {text}")
    if step == "module":
        raise CheckFailed(f"{call} should build a torch.nn.Module (subclass nn.Module and "
                          "call super().__init__() first)")
    if step == "load":
        sizes = [line.strip() for line in text.splitlines() if "size mismatch" in line]
        if sizes:
            raise CheckFailed(f"{call}: the reference weights do not fit: {sizes[0]} — check "
                              "the sizes passed to the submodule")
        raise CheckFailed(f"{call}: loading the reference weights by name failed: "
                          f"{kind}: {text[:300]}")
    if step == "eval":
        raise CheckFailed(f"{call}: .eval() raised {kind}: {text[:300]}")
    unexpected = list(outcome.get("unexpected") or [])
    if unexpected:
        raise CheckFailed(
            f"{call} has no parameter(s) {unexpected}; the check loads reference weights by "
            "name, so name the submodules as the notebook says")
    return outcome["value"]


def _build_here(cls, args: tuple, state: dict) -> dict:
    """:func:`build_like`'s steps in this process (for a class handed over directly)."""
    step = "build"
    try:
        student = cls(*args)
        step = "load"
        if not hasattr(student, "load_state_dict"):
            return {"step": "module"}
        result = student.load_state_dict(state, strict=False)
        step = "eval"
        student.eval()
    except Exception as exc:
        return {"step": step, "error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"value": student, "unexpected": list(result.unexpected_keys)}


def lend(obj):
    """The student's own copy of a trusted object (a test double or a reference module) to
    hand to the student's code, for example the decoder that ``greedy_decode`` drives.

    The copy lives where the student's code runs (under grading: in the sandboxed kernel), so
    read its state after the call from the returned object, never from ``obj``. Without a
    remote kernel it is a deep copy, with the same semantics."""
    from attn_grader import remote

    return remote.lend(obj)
