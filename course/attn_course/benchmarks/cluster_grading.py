"""Grading throughput on a Dask cluster against the number of workers
(``attn-course bench cluster_grading``).

For each worker count (1, 2, 4: more than this machine has cores shows where it stops
scaling), a scheduler and that many worker processes (one thread each) are started here with
the real ``dask scheduler`` / ``dask worker`` commands, and the synthetic class of
:mod:`.class_grading` is graded twice with ``attn-course grade --cluster``: first as it comes
(each worker opens its course session: sandboxed slot, warm-kernel server, zygote), then
again with ``--force`` on the same workers, whose sessions are open: that second run is the
rate a large class sees once the start-up is paid. Grades must be the same for every worker
count. The markdown gives the arithmetic for a large course from the rate per worker.

Environment overrides: ``ATTN_BENCH_STUDENTS``, ``ATTN_BENCH_ASSIGNMENTS`` (comma-separated),
``ATTN_BENCH_CLUSTER_WORKERS`` (comma-separated counts, e.g. ``1,2,4,8``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from attn_course import cluster, nbgrader_runner
from attn_course.benchmarks import class_grading as cg
from attn_course.manifest import assignment

FULL_STUDENTS = 10
SMOKE_STUDENTS = 4
FULL_WORKERS = (1, 2, 4)
SMOKE_WORKERS = (1, 2)
#: the large course of the docs' arithmetic
LARGE_STUDENTS, LARGE_NOTEBOOKS = 2000, 7


def _grades(results) -> dict[str, tuple]:
    return {f"{r.assignment}/{r.student}": (r.status, r.score, tuple(sorted(r.cells.items())))
            for r in results}


def measure(root: Path, smoke: bool, log: Callable[[str], None] = print, *,
            students: int | None = None, assignment_ids: list[str] | None = None,
            worker_counts: list[int] | None = None, work: Path | None = None) -> dict:
    from distributed import Client

    root = Path(root).resolve()
    n, ids = cg.chosen_class(smoke, students, assignment_ids, FULL_STUDENTS, SMOKE_STUDENTS)
    counts = worker_counts or [int(v) for v in cg._env_list("ATTN_BENCH_CLUSTER_WORKERS")] or list(
        SMOKE_WORKERS if smoke else FULL_WORKERS)
    work = Path(work) if work else root / "build" / "bench" / "cluster-grading"
    total = n * len(ids)
    log(f"  class: {n} students x {len(ids)} notebooks = {total} submissions; "
        f"workers: {', '.join(map(str, counts))} (one thread each) in {work}")
    template = cg._fresh_course(root, work / "class")
    for aid in ids:
        nbgrader_runner.generate_assignment(template, aid)
        cg.write_class(template, assignment(aid), n)
    cg._warm_up(log)
    ceiling = cg.parallel_ceiling(max(counts), 2_000_000 if smoke else 20_000_000)
    log(f"  this machine's parallel ceiling for {max(counts)} processes: {ceiling:.2f}x")

    rows, reference, differences = [], None, []
    for k in counts:
        course = work / f"workers-{k}"
        if course.exists():
            shutil.rmtree(course)
        shutil.copytree(template, course)
        with cluster.LocalDask(work / f"dask-{k}", workers=k) as dask:
            start = time.perf_counter()
            with Client(dask.address, timeout=30, set_as_default=False) as client:
                dask.wait(client)
            up_s = time.perf_counter() - start
            start = time.perf_counter()
            first = cluster.grade(course, ids, dask.address, progress=False,
                                  log=lambda m: None)
            first_s = time.perf_counter() - start
            start = time.perf_counter()
            stats: dict = {}
            results = cluster.grade(course, ids, dask.address, force=True, progress=False,
                                    log=lambda m: None, stats=stats)
            warm_s = time.perf_counter() - start
        grades = _grades(results)
        if reference is None:
            reference = grades
        elif grades != reference:
            differences += [f"{k} workers: {key}: {grades.get(key)} vs {reference.get(key)}"
                            for key in sorted(set(grades) | set(reference))
                            if grades.get(key) != reference.get(key)]
        if _grades(first) != grades:
            differences.append(f"{k} workers: the first and the forced run differ")
        # the rate: submissions over the time from the first job sent to the last result
        # merged (the run's own set-up, the same for any class size, is reported apart)
        rate = 60 * total / stats["grade_s"]
        row = {"workers": k, "start_s": round(up_s, 2), "first_s": round(first_s, 2),
               "warm_s": round(warm_s, 2), "prepare_s": round(stats["prepare_s"], 2),
               "grade_s": round(stats["grade_s"], 2),
               "merge_ms": round(1000 * stats["merge_s"] / max(1, stats["jobs"]), 1),
               "per_min": round(rate, 2),
               "per_min_per_worker": round(rate / k, 2)}
        rows.append(row)
        log(f"  {k} workers: cluster up in {up_s:.1f} s; first run {first_s:.1f} s, "
            f"warm run {warm_s:.1f} s (set-up {stats['prepare_s']:.1f} s): "
            f"{row['per_min']:.1f} submissions/min ({row['per_min_per_worker']:.1f} per worker); "
            f"merging a result: {row['merge_ms']:.0f} ms")
    for row in rows:  # against one worker, warm runs
        row["speedup"] = round(row["per_min"] / rows[0]["per_min"], 2)
    return {"students": n, "assignments": ids, "submissions": total, "rows": rows,
            "parallel_ceiling": ceiling, "cores": os.cpu_count(),
            "identical": not differences, "differences": differences,
            "statuses": {s: sum(1 for r in results if r.status == s)
                         for s in sorted({r.status for r in results})},
            "work": str(work)}


def large_course(per_min_per_worker: float, workers: int,
                 submissions: int = LARGE_STUDENTS * LARGE_NOTEBOOKS) -> float:
    """Hours to grade ``submissions`` on ``workers`` workers at this rate each (scaling
    assumed linear, as it is while every worker has a core of its own)."""
    return submissions / (per_min_per_worker * workers) / 60


def markdown(data: dict) -> str:
    rows = data["rows"]
    out = [
        "## Grading on a cluster",
        "",
        f"A synthetic class ({data['students']} students x {len(data['assignments'])} "
        f"notebooks = {data['submissions']} submissions, the mix of \"Grading a class\") "
        "graded with `attn-course grade --cluster` by a Dask scheduler and 1 to "
        f"{rows[-1]['workers']} worker processes started on this machine ({data['cores']} "
        "cores; one thread, so one sandboxed slot, per worker). \"first run\" includes each "
        "worker opening its course session (sandbox, warm-kernel server, zygote); \"warm "
        "run\" grades the same class again (`--force`) on the same workers, the rate a "
        "large class sees once that start-up is paid. Its rate counts from the first job "
        "sent to the last result merged; before that, the run's own set-up (finding what "
        "is new, templates, registering, the course bundle: the same for any class size) "
        "is the \"set-up\" column.",
        "",
        "| workers | first run (s) | warm run (s) | set-up (s) | submissions/min | per worker "
        "| speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(f"| {r['workers']} | {r['first_s']:.1f} | {r['warm_s']:.1f} | "
                   f"{r['prepare_s']:.1f} | {r['per_min']:.1f} | {r['per_min_per_worker']:.1f} "
                   f"| {r['speedup']:.2f}x |")
    best = max(rows, key=lambda r: r["per_min"])
    rate = rows[0]["per_min_per_worker"]
    out += [
        "",
        f"This machine's parallel ceiling for {rows[-1]['workers']} processes (a CPU-bound "
        f"loop, as in \"Grading a class\"): **{data['parallel_ceiling']:.2f}x**; beyond its "
        "cores, more workers only share them. The coordinator merged each result into the "
        "course (gradebook, graded notebook, manifest) in "
        + ", ".join(f"{r.get('merge_ms', 0):.0f}" for r in rows)
        + " ms on average (per worker count): it is not what limits the rate.",
        "",
        f"**A large course.** {LARGE_STUDENTS:,} students x {LARGE_NOTEBOOKS} notebooks = "
        f"{LARGE_STUDENTS * LARGE_NOTEBOOKS:,} submissions at the measured "
        f"{rate:.1f} submissions/min of one worker (one core): "
        + ", ".join(f"{large_course(rate, w):.1f} h on {w} workers" for w in (1, 8, 32, 64))
        + f". The best rate here was {best['per_min']:.1f}/min with {best['workers']} workers.",
        "",
    ]
    statuses = ", ".join(f"{v} {k}" for k, v in data["statuses"].items())
    if data["identical"]:
        out.append(f"Grades: **identical** for every worker count ({statuses}).")
    else:
        out.append(f"Grades: **{len(data['differences'])} differences** between worker "
                   "counts:")
        out += [f"- {d}" for d in data["differences"][:20]]
    return "\n".join(out) + "\n"
