"""``attn-course bench``: the course's budgets (docs/CURRICULUM.md, "Budgets"), measured.

Each part is a module with ``measure(root, smoke, log) -> dict`` and ``markdown(data) -> str``:

- :mod:`.notebooks`      each notebook run as a student would and under autograding, against
                         the kernel-start-plus-``import torch`` floor; wall time and peak memory
- :mod:`.outcomes`       accuracy against length of the bottleneck, Luong and encoder models,
                         as the notebooks produce them
- :mod:`.class_grading`  a synthetic class graded by ``attn-course grade`` and by plain serial
                         ``nbgrader autograde``: speed-up, and proof the grades are identical
- :mod:`.cluster_grading` that class graded with ``--cluster`` by 1, 2, 4 Dask workers started
                         here: throughput against workers, the arithmetic for a large course
- :mod:`.modules`        the worked-solution MultiHeadAttention / EncoderLayer against
                         ``nn.MultiheadAttention`` / ``nn.TransformerEncoderLayer``

``smoke`` shrinks every part to seconds (the test suite runs it that way); its figures prove
the plumbing, not the budgets. Results go to ``docs/benchmarks/results.{md,json}``; a full
run rewrites them, and ``docs/benchmarks/notes.md`` (profiling, fixes, before/after, written
by hand) is carried into the markdown.
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
import os
import platform
from collections.abc import Callable
from pathlib import Path

PARTS = ("notebooks", "outcomes", "class_grading", "cluster_grading", "modules")


def machine() -> dict:
    import numpy
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    mem_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gib = round(pages / (1 << 30), 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpu": cpu,
        "cores": cores,
        "memory_gib": mem_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": numpy.__version__,
    }


def run(root: Path, parts: list[str] | None = None, *, smoke: bool = False,
        out_dir: Path | None = None, log: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Measure ``parts`` (default: all) and write ``results.md`` and ``results.json`` into
    ``out_dir`` (default ``docs/benchmarks``). Parts not measured this time keep their
    figures from the previous results file, so one part can be re-measured alone."""
    root = Path(root)
    out_dir = Path(out_dir) if out_dir else root / "docs" / "benchmarks"
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    previous = {}
    if json_path.exists():
        try:
            previous = json.loads(json_path.read_text(encoding="utf-8"))
        except ValueError:
            previous = {}
    results = {"parts": dict(previous.get("parts", {}))}
    for name in parts or PARTS:
        if name not in PARTS:
            raise ValueError(f"unknown benchmark part {name!r}; choose from {', '.join(PARTS)}")
        log(f"== bench: {name}" + (" (smoke)" if smoke else ""))
        module = importlib.import_module(f"{__name__}.{name}")
        data = module.measure(root, smoke=smoke, log=log)
        data["machine"] = machine()
        data["smoke"] = smoke
        results["parts"][name] = data
    json_path.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    md_path.write_text(markdown(results, out_dir), encoding="utf-8")
    return md_path, json_path


def markdown(results: dict, out_dir: Path) -> str:
    out = ["# Benchmarks", "",
           "Written by `attn-course bench` (do not edit by hand; profiling notes live in "
           "`notes.md` and are copied in below). Budgets: docs/CURRICULUM.md, \"Budgets\". "
           "Raw figures: `results.json`.", ""]
    for name in PARTS:
        data = results["parts"].get(name)
        if data is None:
            continue
        module = importlib.import_module(f"{__name__}.{name}")
        m = data["machine"]
        out.append(module.markdown(data).rstrip())
        out.append("")
        out.append(f"<sub>Measured {m['date']} on {m['cores']} cores ({m['cpu']}), "
                   f"{m['memory_gib']} GiB, Python {m['python']}, torch {m['torch']}"
                   + (" — **smoke run: plumbing only, not the budgets**" if data["smoke"]
                      else "") + ".</sub>")
        out.append("")
    notes = out_dir / "notes.md"
    if notes.exists():
        out += [notes.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(out)
