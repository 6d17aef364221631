"""Kernel-side guard, installed by ``attn-course grade`` before any student code runs.

A hidden test runs in the same Python process as the student's code, so nothing in-process
is tamper-proof. What this module does is make tampering either ineffective or visible:

- the grading package is imported *before* the student's first cell, so editing its files
  on disk changes nothing for this run (``attn-course grade`` also detects and undoes it);
- the functions the checks and nbgrader's scoring lean on are remembered as they were, and
  every hidden test reports any that were replaced (``INTEGRITY:`` lines, read by the grader
  and shown in its report for review);
- printing is capped per cell, so a cell that prints hundreds of MB cannot exhaust the
  grader's memory or time.

Outside grading, :func:`install` is never called and :func:`tampered` reports nothing.
"""

from __future__ import annotations

import builtins
import importlib
import json
import math
import os
import pkgutil
import sys

MARKER = "INTEGRITY:"
#: Where the grader wants, after every cell, the list of replaced names (if any).
LOG_ENV = "ATTN_GRADING_INTEGRITY_LOG"
OUTPUT_CAP_BYTES = 1 << 20  # per cell and stream

_originals: dict[str, object] = {}


def _watched() -> dict[str, object]:
    """Name -> the object it names now."""
    import numpy
    import torch

    import attn_grader
    from attn_grader import framework

    found: dict[str, object] = {}
    for name in ("allclose", "isclose", "equal", "isnan", "abs", "where", "randn", "matmul",
                 "softmax", "get_num_threads", "set_num_threads"):
        found[f"torch.{name}"] = getattr(torch, name)
    for name in ("__eq__", "__sub__", "__abs__", "__bool__", "allclose", "all", "any",
                 "double", "detach", "clone", "tolist", "item", "__float__"):
        found[f"torch.Tensor.{name}"] = getattr(torch.Tensor, name)
    for name in ("allclose", "isclose", "array_equal"):
        found[f"numpy.{name}"] = getattr(numpy, name)
    found["numpy.testing.assert_allclose"] = numpy.testing.assert_allclose
    for name in ("isinstance", "type", "abs", "min", "max", "all", "any", "float", "round",
                 "len", "print", "bool", "sum", "__import__"):
        found[f"builtins.{name}"] = getattr(builtins, name)
    found["math.isclose"] = math.isclose
    for module_name, module in list(sys.modules.items()):
        if module_name == "attn_grader" or module_name.startswith("attn_grader."):
            for attr, value in list(vars(module).items()):
                if callable(value) and not attr.startswith("__"):
                    found[f"{module_name}.{attr}"] = value
            for key, fn in dict(getattr(module, "CHECKS", {})).items():
                found[f"{module_name}.CHECKS[{key!r}]"] = fn
    found["Check.case"] = framework.Check.case
    found["attn_grader.grade"] = attn_grader.grade
    return found


def _preload() -> None:
    """Import every module of the grading package now, from the files as they are."""
    import attn_grader

    for info in pkgutil.walk_packages(attn_grader.__path__, "attn_grader."):
        importlib.import_module(info.name)


def _cap_stream(stream, cap: int):
    written = {"n": 0, "told": False}
    write = stream.write

    def capped(text):
        room = cap - written["n"]
        written["n"] += len(text)
        if len(text) <= room:
            return write(text)
        if room > 0:
            write(text[:room])
        if not written["told"]:
            written["told"] = True
            write(f"\n[output of this cell cut at {cap} bytes by the grader]\n")
        return len(text)

    def reset(*_):
        written["n"], written["told"] = 0, False

    stream.write = capped
    return reset


def install(cap: int = OUTPUT_CAP_BYTES) -> None:
    sys.dont_write_bytecode = True
    _preload()
    _originals.clear()
    _originals.update(_watched())
    resets = [_cap_stream(s, cap) for s in (sys.stdout, sys.stderr)]
    try:
        ip = get_ipython()  # noqa: F821 (defined inside IPython)
    except NameError:
        return
    for reset in resets:
        ip.events.register("pre_run_cell", reset)
    log = os.environ.get(LOG_ENV)
    if log:
        seen: set[str] = set()

        def record(*_):
            names = set(tampered()) - seen
            if names:
                seen.update(names)
                with open(log, "w", encoding="utf-8") as f:
                    json.dump(sorted(seen), f)

        ip.events.register("post_run_cell", record)


def report_tampering() -> None:
    """Print one ``INTEGRITY:`` line if anything watched was replaced (with the original
    ``print``, in case that is what was replaced)."""
    names = tampered()
    if names:
        say = _originals.get("builtins.print", print)
        say(f"{MARKER} replaced by code in the notebook before grading: {', '.join(names)}. "
            "Your instructor will review this submission.")


def tampered() -> list[str]:
    """The watched names whose object was replaced since :func:`install`."""
    if not _originals:
        return []
    try:
        now = _watched()
    except Exception as exc:  # someone broke the package or torch badly enough
        return [f"could not inspect the grading environment ({type(exc).__name__})"]
    return sorted(name for name, obj in _originals.items() if now.get(name) is not obj)
