"""Each notebook's wall time and peak memory, as a student runs it and under autograding,
against the floor of starting a kernel and importing torch (docs/CURRICULUM.md, "Budgets").

Every measurement runs in a fresh wrapper process (:func:`_child`), pinned to the budget's
:data:`CORES` cores (fewer if the machine has fewer), so that nothing one run loaded or
cached helps the next and memory figures belong to one run:

- **student**: the worked solution (``source/<id>/<id>.ipynb``) top to bottom through nbclient
  with full-size demos (no ``NBGRADER_EXECUTION``, no ``ATTN_COURSE_QUICK``, figures drawn
  inline); the time runs from kernel start to the end of the last cell. Executed notebooks are
  kept in ``build/bench/<mode>/`` (with the outcomes probe's numbers, see :mod:`.outcomes`).
- **autograde (nbclient)**: the same notebook as the kernel runs it under ``attn-course
  grade``: the environment ``nbgrader autograde`` gives its kernel
  (``NBGRADER_EXECUTION=autograde``, ``MPLBACKEND=agg`` as :mod:`attn_course.nbgrader_runner`
  sets), and without its hidden test cells, which the grader judges in its own process (their
  cost is in the class benchmark's per-job times): the figure the budget ratio uses.
- **nbgrader autograde**: the real command on the worked solution handed in as one
  submission of a scratch course (nbgrader's own start-up, gradebook and file work included).
- **floor**: a one-cell notebook ``import torch`` through nbclient, same kernel spec and
  environment as the autograde run, sampled several times spread over the run; its median is
  the denominator of every ratio.

Peak memory of an nbclient run is the kernel's own peak RSS (``ru_maxrss`` read inside the
kernel after the last cell, before any probe runs); of ``nbgrader autograde``, the largest
peak RSS of the processes it started (``RUSAGE_CHILDREN`` of the wrapper: nbgrader, its kernel).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from attn_course.manifest import Assignment, assignment, assignments

# Heavier imports (nbclient, nbformat, nbgrader) wait until they are needed: the wrapper
# process below starts once per measurement.

#: The budgets (docs/CURRICULUM.md, "Budgets").
CORES = 2
STUDENT_SECONDS = 120.0
STUDENT_BYTES = 2 * 10**9
AUTOGRADE_RATIO = 2.0

#: The one notebook of a smoke run: among the quickest in quick mode, and the one the
#: outcomes part's smoke run reads, so both parts share one execution.
SMOKE_ID = "02_seq2seq_bottleneck"
FLOOR_SOURCE = "import torch"
KERNEL = "python3"
# What nbgrader's Execute passes to a Python kernel; also keeps concurrent kernels off the
# shared history database.
KERNEL_ARGS = ["--HistoryManager.hist_file=:memory:"]
MARK = "<<attn-bench>>"
_PEAK_CELL = (
    "import json as _j, resource as _r\n"
    f"print({MARK!r} + _j.dumps(max(_r.getrusage(_r.RUSAGE_SELF).ru_maxrss,"
    " _r.getrusage(_r.RUSAGE_CHILDREN).ru_maxrss) * 1024))"
)
_QUICK_VARS = ("NBGRADER_EXECUTION", "ATTN_COURSE_QUICK")
MiB = 1 << 20


def bench_dir(root: Path, quick: bool) -> Path:
    return Path(root) / "build" / "bench" / ("quick" if quick else "full")


def _pin_cores() -> list[int]:
    """Restrict this process (and so its kernels) to at most CORES cores; return them."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: leave it, report what there is
        return list(range(os.cpu_count() or 1))[:CORES]
    chosen = cpus[:CORES]
    if len(chosen) < len(cpus):
        os.sched_setaffinity(0, chosen)
    return chosen


# --------------------------------------------------------------------------- environments


def student_env(quick: bool) -> dict[str, str | None]:
    """A student's JupyterLab: full demos (quick only for smoke runs), figures inline."""
    return {"NBGRADER_EXECUTION": None, "ATTN_COURSE_QUICK": "1" if quick else None,
            "MPLBACKEND": None}


def autograde_env() -> dict[str, str | None]:
    """What ``nbgrader autograde`` gives the kernel when run by ``attn-course``."""
    return {"NBGRADER_EXECUTION": "autograde", "ATTN_COURSE_QUICK": None, "MPLBACKEND": "agg"}


def _environ(overrides: dict[str, str | None]) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    for k, v in overrides.items():
        if v is None:
            env.pop(k, None)
        else:
            env[k] = v
    return env


# --------------------------------------------------------------------------- the wrapper


def _child() -> None:
    """Entry point of the wrapper process: ``python -c ... SPEC.json RESULT.json``."""
    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    cores = _pin_cores()
    try:
        if spec["kind"] == "nbclient":
            result = asyncio.run(_nbclient_run(spec))
        else:
            result = _command_run(spec)
        result["ok"] = True
    except Exception as exc:  # reported to the parent, which raises with the message
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-4000:]}
    result["cores"] = len(cores)
    result["children_peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss \
        * 1024
    Path(sys.argv[2]).write_text(json.dumps(result), encoding="utf-8")


def _stdout(cell) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")


def _marked(cell):
    for line in _stdout(cell).splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise RuntimeError("a benchmark probe printed nothing: " + _stdout(cell)[-2000:])


async def _nbclient_run(spec: dict) -> dict:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.util import ensure_async

    nb = nbformat.read(spec["notebook"], as_version=4) if spec.get("notebook") else \
        nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(spec["source"])])
    n = len(nb.cells)
    client = NotebookClient(nb, timeout=spec.get("timeout", 900), kernel_name=KERNEL,
                            extra_arguments=KERNEL_ARGS,
                            skip_cells_with_tag=spec.get("skip_tag", "skip-execution"),
                            resources={"metadata": {"path": spec["cwd"]}})
    client.reset_execution_trackers()
    start = time.perf_counter()
    async with client.async_setup_kernel():
        info = await client.async_wait_for_reply(await ensure_async(client.kc.kernel_info()))
        if info is not None and "language_info" in info["content"]:
            nb.metadata["language_info"] = info["content"]["language_info"]
        for index in range(n):
            await client.async_execute_cell(nb.cells[index], index,
                                            execution_count=client.code_cells_executed + 1)
        seconds = time.perf_counter() - start
        # After the timed part: the kernel's own peak memory, then the outcomes probe.
        probes = [_PEAK_CELL] + ([spec["probe"]] if spec.get("probe") else [])
        nb.cells.extend(nbformat.v4.new_code_cell(code) for code in probes)
        for index in range(n, len(nb.cells)):
            await client.async_execute_cell(nb.cells[index], index)
    values = [_marked(cell) for cell in nb.cells[n:]]
    del nb.cells[n:]
    client.set_widgets_metadata()
    if spec.get("out"):
        Path(spec["out"]).parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, spec["out"])
    return {"seconds": seconds, "peak_rss_bytes": values[0],
            "probe": values[1] if len(values) > 1 else None}


def _command_run(spec: dict) -> dict:
    start = time.perf_counter()
    with open(spec["log"], "wb") as log:
        proc = subprocess.run(spec["argv"], cwd=spec["cwd"], stdout=log,
                              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = Path(spec["log"]).read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{spec['argv'][2:]} exited with {proc.returncode}:\n{tail}")
    return {"seconds": seconds,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024}


_LAUNCH = "from attn_course.benchmarks.notebooks import _child; _child()"


class BenchError(RuntimeError):
    pass


def measure_once(spec: dict, env: dict[str, str | None]) -> dict:
    """Run one measurement in a fresh wrapper process under ``env``; return its figures."""
    with tempfile.TemporaryDirectory(prefix="attn-bench-") as tmp:
        spec_path, result_path = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec = {"log": str(Path(tmp) / "command.log"), **spec}
        spec_path.write_text(json.dumps(spec), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-c", _LAUNCH, str(spec_path), str(result_path)],
                              env=_environ(env), capture_output=True, text=True)
        if not result_path.exists():
            raise BenchError(f"the benchmark wrapper died (exit {proc.returncode}):\n"
                             f"{proc.stderr[-3000:]}")
        result = json.loads(result_path.read_text(encoding="utf-8"))
    if not result.pop("ok"):
        raise BenchError(f"measuring {spec.get('notebook') or spec.get('argv')} failed: "
                         f"{result['error']}")
    return result


# --------------------------------------------------------------------------- the pieces


def fingerprint(root: Path, a: Assignment, probe: str | None, quick: bool) -> str:
    """What an executed notebook's numbers depend on: the source notebook, the helper
    package it imports, the probe and the mode."""
    h = hashlib.sha256()
    h.update(a.source_notebook(root).read_bytes())
    for p in sorted((Path(root) / "utils").rglob("*.py")):
        h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    h.update((probe or "").encode() + b"\0" + (b"quick" if quick else b"full"))
    return h.hexdigest()


def run_student(root: Path, a: Assignment, quick: bool) -> dict:
    """The worked solution as a student runs it; saves the executed notebook and, for the
    notebooks :mod:`.outcomes` reads, the probe's numbers beside it."""
    from attn_course.benchmarks import outcomes

    probe = outcomes.PROBES.get(a.id)
    out_dir = bench_dir(root, quick)
    nb_path = a.source_notebook(root)
    result = measure_once({"kind": "nbclient", "notebook": str(nb_path),
                           "cwd": str(nb_path.parent), "probe": probe,
                           "out": str(out_dir / f"{a.id}.ipynb")}, student_env(quick))
    if probe:
        outcomes.save_probe(out_dir / f"{a.id}.outcomes.json",
                            fingerprint(root, a, probe, quick), result["probe"])
    result.pop("probe", None)
    return result


def run_autograde_nbclient(root: Path, a: Assignment) -> dict:
    """What the kernel runs under ``attn-course grade``: demos shrunk, reader-only cells
    skipped, and no hidden test cell (those are judged in the grading process, not in the
    kernel: :mod:`attn_course.judge`)."""
    import nbformat

    from attn_course import notebooks
    from attn_course.notebooks import READER_ONLY

    nb_path = a.source_notebook(root)
    nb = notebooks.read(nb_path)
    for cell in nb.cells:
        if notebooks.is_hidden_test(cell):
            cell.metadata.setdefault("tags", []).append(READER_ONLY)
    with tempfile.TemporaryDirectory(prefix="attn-bench-") as tmp:
        copy = Path(tmp) / nb_path.name
        nbformat.write(nb, str(copy))
        return measure_once({"kind": "nbclient", "notebook": str(copy),
                             "cwd": str(nb_path.parent), "skip_tag": READER_ONLY},
                            autograde_env())


def run_floor(root: Path) -> dict:
    return measure_once({"kind": "nbclient", "source": FLOOR_SOURCE, "cwd": str(root)},
                        autograde_env())


def run_nbgrader(root: Path, a: Assignment) -> dict:
    """``nbgrader autograde`` of the worked solution, one submission in a scratch course; the
    scratch course is set up (``generate_assignment``) outside the timed part."""
    import nbformat

    from attn_course import grading, nbgrader_runner, notebooks, report, sample_class

    student = "bench_worked_solution"
    with tempfile.TemporaryDirectory(prefix="attn-bench-course-") as tmp:
        course = Path(tmp)
        shutil.copy2(root / "nbgrader_config.py", course / "nbgrader_config.py")
        shutil.copytree(root / "source" / a.id, course / "source" / a.id,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        nbgrader_runner.generate_assignment(course, a.id)
        source = notebooks.read(a.source_notebook(course))
        answers = {notebooks.grade_id(c): c.source for c in source.cells
                   if notebooks.is_solution(c)}
        submission = sample_class.fill(notebooks.read(a.release_notebook(course)), answers)
        folder = course / "submitted" / student / a.id
        folder.mkdir(parents=True)
        nbformat.write(submission, str(folder / f"{a.id}.ipynb"))
        argv = [sys.executable, "-m", "nbgrader", "autograde", a.id, "--force",
                f"--student={student}"]
        env = {k: None for k in _QUICK_VARS}
        env["MPLBACKEND"] = "agg"
        result = measure_once({"kind": "command", "argv": argv, "cwd": str(course)}, env)
        grading._alembic_on_path()
        rows = report.read_grades(course, [a.id])
    if not rows:
        raise BenchError(f"nbgrader autograde of {a.id} left no grade in the gradebook")
    result["score"], result["max_score"] = rows[0].score, rows[0].max_score
    return result


# --------------------------------------------------------------------------- the part


def measure(root: Path, smoke: bool, log: Callable[[str], None] = print,
            ids: list[str] | None = None) -> dict:
    """``ids``, else ``$ATTN_BENCH_ASSIGNMENTS`` (comma-separated, as for the class-grading
    part), picks notebooks for a partial re-measurement; default: every notebook, or
    :data:`SMOKE_ID` in a smoke run."""
    root = Path(root)
    quick = smoke
    env_ids = [i.strip() for i in os.environ.get("ATTN_BENCH_ASSIGNMENTS", "").split(",")
               if i.strip()]
    wanted = ids or env_ids or ([SMOKE_ID] if smoke else [a.id for a in assignments()])
    selected = [assignment(i) for i in wanted]
    floors: list[dict] = []

    def floor_sample() -> None:
        f = run_floor(root)
        floors.append(f)
        log(f"  floor (kernel + import torch): {f['seconds']:.2f} s, "
            f"{f['peak_rss_bytes'] / MiB:.0f} MiB")

    start = time.perf_counter()
    for _ in range(1 if smoke else 2):
        floor_sample()
    rows = []
    for a in selected:
        row = {"id": a.id, "title": a.title}
        row["student"] = run_student(root, a, quick)
        log(f"  {a.id} as a student{' (quick)' if quick else ''}: "
            f"{row['student']['seconds']:.1f} s, {row['student']['peak_rss_bytes'] / MiB:.0f} MiB")
        row["autograde"] = run_autograde_nbclient(root, a)
        log(f"  {a.id} under autograding (nbclient): {row['autograde']['seconds']:.1f} s, "
            f"{row['autograde']['peak_rss_bytes'] / MiB:.0f} MiB")
        # The real command costs half a minute more (generate_assignment, nbgrader's own
        # start-up): full runs only; the test suite grades through nbgrader elsewhere.
        row["nbgrader"] = None if smoke else run_nbgrader(root, a)
        if row["nbgrader"]:
            log(f"  {a.id} nbgrader autograde: {row['nbgrader']['seconds']:.1f} s, "
                f"{row['nbgrader']['peak_rss_bytes'] / MiB:.0f} MiB, score "
                f"{row['nbgrader']['score']:g}/{row['nbgrader']['max_score']:g}")
        floor_sample()  # spread over the run: slow drifts of the machine hit both sides
        rows.append(row)

    floor_s = statistics.median(f["seconds"] for f in floors)
    floor = {"seconds_median": floor_s,
             "seconds_min": min(f["seconds"] for f in floors),
             "seconds_max": max(f["seconds"] for f in floors),
             "samples": [round(f["seconds"], 3) for f in floors],
             "peak_rss_bytes": int(statistics.median(f["peak_rss_bytes"] for f in floors)),
             "source": FLOOR_SOURCE}
    for row in rows:
        s = row["student"]
        s["budget_met"] = (s["seconds"] <= STUDENT_SECONDS
                           and s["peak_rss_bytes"] <= STUDENT_BYTES)
        g = row["autograde"]
        g["ratio_to_floor"] = g["seconds"] / floor_s
        g["budget_met"] = g["ratio_to_floor"] <= AUTOGRADE_RATIO
        if row["nbgrader"]:
            row["nbgrader"]["ratio_to_floor"] = row["nbgrader"]["seconds"] / floor_s
    return {
        "budgets": {"student_seconds": STUDENT_SECONDS, "student_bytes": STUDENT_BYTES,
                    "autograde_ratio": AUTOGRADE_RATIO, "cores": CORES},
        "cores_used": min([r["cores"] for r in floors]),
        "student_mode": "quick (ATTN_COURSE_QUICK=1)" if quick else "full",
        "floor": floor,
        "notebooks": rows,
        "partial": len(rows) < len(assignments()),
        "all_met": all(r["student"]["budget_met"] and r["autograde"]["budget_met"]
                       for r in rows),
        "seconds_total": time.perf_counter() - start,
        "smoke": smoke,
    }


def _mib(n: float) -> str:
    return f"{n / MiB:,.0f}"


def _ok(met: bool) -> str:
    return "yes" if met else "**no**"


def markdown(data: dict) -> str:
    b, f = data["budgets"], data["floor"]
    out = [
        "## Notebooks: as a student, and under autograding",
        "",
        f"Each notebook's worked solution, executed top to bottom through nbclient in a fresh "
        f"kernel pinned to {data['cores_used']} cores (kernel start to the end of the last "
        f"cell). *As a student*: {data['student_mode']} demos, figures drawn inline; budget "
        f"≤ {b['student_seconds']:g} s and ≤ {b['student_bytes'] / 1e9:g} GB "
        f"({_mib(b['student_bytes'])} MiB). *Autograde*: the "
        "same notebook with `NBGRADER_EXECUTION=autograde` (demos shrink) and `MPLBACKEND=agg`, "
        "as the kernel runs it under `attn-course grade` (without the hidden test cells, which "
        "are judged in the grading process); budget "
        f"≤ {b['autograde_ratio']:g}× the floor. "
        "*nbgrader autograde*: the real command grading the worked solution as one submission "
        "in a scratch course, timed from the command's start to its exit (nbgrader's own "
        "start-up and gradebook work included; for reference, not the budget; full runs "
        "only). "
        "Memory is peak RSS (for nbgrader: its largest process).",
        "",
        f"**Floor** (new kernel + `{f['source']}`): median **{f['seconds_median']:.2f} s** over "
        f"{len(f['samples'])} runs spread across the benchmark (min {f['seconds_min']:.2f} s, "
        f"max {f['seconds_max']:.2f} s), {_mib(f['peak_rss_bytes'])} MiB.",
        "",
        "| notebook | student s | student MiB | student budget | autograde s | autograde MiB "
        f"| ÷ floor | ≤ {b['autograde_ratio']:g}× | nbgrader autograde s (÷ floor) "
        "| nbgrader MiB | nbgrader score |",
        "|---|--:|--:|:-:|--:|--:|--:|:-:|--:|--:|--:|",
    ]
    for r in data["notebooks"]:
        s, g, n = r["student"], r["autograde"], r["nbgrader"]
        real = (f"{n['seconds']:.2f} ({n['ratio_to_floor']:.1f}×) | "
                f"{_mib(n['peak_rss_bytes'])} | "
                f"{n['score']:g}/{n['max_score']:g}") if n else "not run | — | —"
        out.append(
            f"| `{r['id']}` | {s['seconds']:.1f} | {_mib(s['peak_rss_bytes'])} | "
            f"{_ok(s['budget_met'])} | {g['seconds']:.2f} | {_mib(g['peak_rss_bytes'])} | "
            f"{g['ratio_to_floor']:.2f}× | {_ok(g['budget_met'])} | {real} |")
    out.append("")
    missed = [r["id"] for r in data["notebooks"]
              if not (r["student"]["budget_met"] and r["autograde"]["budget_met"])]
    if data.get("smoke"):
        out.append("Smoke run: one notebook, quick demos, one or two floor samples; the "
                   "figures say nothing about the budgets.")
    else:
        out.append(("Every notebook measured is within both budgets." if not missed else
                    "Over a budget: " + ", ".join(f"`{m}`" for m in missed) + ".")
                   + (" Partial run: only the notebooks listed were measured."
                      if data.get("partial") else ""))
    short = [f"`{r['id']}` ({r['nbgrader']['score']:g}/{r['nbgrader']['max_score']:g})"
             for r in data["notebooks"]
             if r["nbgrader"] and r["nbgrader"]["score"] < r["nbgrader"]["max_score"]]
    if short:
        out.append("")
        out.append("**The worked solution did not earn full marks under nbgrader:** "
                   + ", ".join(short) + ".")
    return "\n".join(out) + "\n"
