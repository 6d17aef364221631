"""A synthetic class graded twice on the same data in the same run: by the course's pipeline
(:func:`attn_course.grading.grade`, parallel and isolated) and by plain serial
``nbgrader autograde`` (one command per assignment over the whole class, nbgrader's normal
usage). Reports the speed-up (plain / ours) against the budget, and proves that both wrote
the same grade for every student, assignment and graded cell.

The class is built deterministically from source/ and release/ (no randomness outside a
seeded generator per student and assignment): a mix of full marks, partial work (different
subsets, some with catalogued mistakes), blank hand-ins and broken ones (exceptions, a syntax
error, a catalogued mistake everywhere). No infinite loops or memory bombs: plain nbgrader has
no total time or memory limit, so they would measure the limits, not the throughput; and no
unreadable files, which ours marks invalid without running anything, so they would not
compare like with like (tests/test_grading_pipeline.py covers all three).

Environment overrides for experiments: ``ATTN_BENCH_STUDENTS`` (class size),
``ATTN_BENCH_ASSIGNMENTS`` (comma-separated ids), ``ATTN_BENCH_WORKERS``.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat

from attn_course import grading, nbgrader_runner, notebooks, report, sample_class
from attn_course.manifest import Assignment, assignment, assignments

BUDGET = 3.0
FULL_STUDENTS = 40
SMOKE_STUDENTS = 3
SMOKE_ASSIGNMENT = "03_qkv_lookup"
#: rough serial seconds per submission, only for the up-front estimate in the log
SECONDS_PER_SUBMISSION = 9.0

#: the class mix, one cycle of 20 students: 8 full (40%), 5 partial (25%), 3 blank (15%),
#: 4 broken (20%); a class of n students takes the first n of the repeated cycle, which
#: starts with one of each kind so that a small class is a mix too
CYCLE = ("full", "broken", "partial", "blank", "full", "partial", "full", "broken", "full",
         "partial", "blank", "full", "broken", "partial", "full", "blank", "full", "partial",
         "broken", "full")
assert len(CYCLE) == 20 and CYCLE.count("full") == 8 and CYCLE.count("partial") == 5
assert CYCLE.count("blank") == 3 and CYCLE.count("broken") == 4


# --------------------------------------------------------------------------- the class


_IMPORTS = {"torch": "import torch", "nn": "from torch import nn",
            "F": "import torch.nn.functional as F", "math": "import math",
            "np": "import numpy as np", "numpy": "import numpy"}


def _own_code(impl) -> str | None:
    """The source of a catalogued mistake as a student would have written it in the cell:
    its own code, renamed to the graded name by the caller, with the imports it needs; None
    when it leans on the grading package (a reference it subclasses or calls), which a
    sandboxed kernel cannot import: honest work does not import the grader."""
    import inspect
    import textwrap

    functions = [impl] if inspect.isfunction(impl) else [
        f for f in vars(impl).values() if inspect.isfunction(f)] if inspect.isclass(impl) else []
    if not functions or (inspect.isclass(impl) and any(
            b.__module__.startswith("attn_grader") for b in impl.__mro__[1:])):
        return None
    needed, constants = set(), {}
    for fn in functions:
        for key, value in inspect.getclosurevars(fn).globals.items():
            if key in _IMPORTS:
                needed.add(key)
            elif type(value) in (int, float, str, bool, tuple):
                constants[key] = value
            else:
                return None
    lines = [_IMPORTS[k] for k in sorted(needed)]
    lines += [f"{k} = {v!r}" for k, v in sorted(constants.items())]
    return "\n".join(lines + [textwrap.dedent(inspect.getsource(impl))])


def _mistake_source(assignment_id: str, name: str, index: int) -> str | None:
    """A catalogued mistake for ``name`` as a student's cell would hold it, written out (None
    if the catalogue has none that stands on its own)."""
    import re

    from attn_grader import mistakes_for

    own = [(m.impl, code) for m in mistakes_for(assignment_id).get(name) or []
           if (code := _own_code(m.impl))]
    if not own:
        return None
    impl, code = own[index % len(own)]
    return re.sub(rf"^(def|class) {re.escape(impl.__name__)}\b", rf"\1 {name}", code,
                  count=1, flags=re.M)


def answers_for(kind: str, variant: int, rng: random.Random, assignment_id: str,
                solutions: dict[str, str]) -> tuple[dict[str, str], str]:
    """What one student hands in (solution cell -> source) and a short description."""
    names = list(solutions)
    if kind == "full":
        return dict(solutions), "every exercise right"
    if kind == "blank":
        return {}, "the released notebook as is"
    if kind == "partial":
        k = rng.randint(1, max(1, len(names) - 1))
        done = sorted(rng.sample(names, k), key=names.index)
        answers = {n: solutions[n] for n in done}
        wrong = [n for n in names if n not in done]
        if wrong and variant % 2:  # every other partial student also gets one wrong
            n = rng.choice(wrong)
            src = _mistake_source(assignment_id, n, rng.randrange(100))
            if src:
                answers[n] = src
                return answers, f"{k}/{len(names)} right, {n} a catalogued mistake"
        return answers, f"{k}/{len(names)} right, the rest left as stubs"
    if kind == "broken":
        which = variant % 3
        if which == 0:
            return sample_class._errors(solutions), \
                "first half right, the rest raise, the last a syntax error"
        if which == 1:
            answers = {n: sample_class._insert_after_marker(
                solutions[n], 'raise ValueError("shapes do not match")') for n in names}
            return answers, "every exercise raises"
        answers = {}
        for i, n in enumerate(names):
            answers[n] = _mistake_source(assignment_id, n, i + variant) or solutions[n]
        return answers, "a catalogued mistake in every exercise"
    raise ValueError(kind)


def student_ids(n: int) -> list[tuple[str, str]]:
    return [(f"s{i + 1:03d}_{CYCLE[i % len(CYCLE)]}", CYCLE[i % len(CYCLE)]) for i in range(n)]


def write_class(course: Path, a: Assignment, n_students: int) -> dict[str, str]:
    """Write the synthetic class's submissions of one assignment; student -> description."""
    source = notebooks.read(a.source_notebook(course))
    release = notebooks.read(a.release_notebook(course))
    solutions = {notebooks.grade_id(c): c.source for c in source.cells
                 if notebooks.is_solution(c)}
    described = {}
    seen: dict[str, int] = {}
    for student, kind in student_ids(n_students):
        variant = seen.get(kind, 0)
        seen[kind] = variant + 1
        rng = random.Random(f"{student}/{a.id}")
        answers, what = answers_for(kind, variant, rng, a.id, solutions)
        folder = course / "submitted" / student / a.id
        folder.mkdir(parents=True, exist_ok=True)
        nbformat.write(sample_class.fill(release, answers), str(folder / f"{a.id}.ipynb"))
        described[student] = f"{kind}: {what}"
    return described


def _fresh_course(root: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(root / "nbgrader_config.py", dest / "nbgrader_config.py")
    for folder in ("source", "release"):
        shutil.copytree(root / folder, dest / folder,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return dest


# --------------------------------------------------------------------------- comparing


def gradebook_scores(course: Path, ids: list[str]) -> dict[tuple[str, str, str, str], float]:
    """(student, assignment, notebook, cell) -> score, for every grade in the gradebook."""
    from nbgrader.api import Gradebook

    out = {}
    with Gradebook(report.gradebook_url(course)) as gb:
        for student, aid, sub in report.submissions(gb, ids):
            for nb in sub.notebooks:
                for g in nb.grades:
                    out[(student, aid, nb.name, g.cell.name)] = float(g.score or 0.0)
    return out


def compare(plain: dict, ours: dict) -> tuple[int, list[str]]:
    """How many grades were compared, and every difference in words."""
    differences = []
    for key in sorted(set(plain) | set(ours)):
        a, b = plain.get(key), ours.get(key)
        if a is None or b is None or abs(a - b) > 1e-9:
            differences.append(f"{'/'.join(key)}: plain nbgrader {a}, attn-course grade {b}")
    return len(set(plain) | set(ours)), differences


# --------------------------------------------------------------------------- measuring


def _warm_up(log) -> None:
    """Load what both pipelines load (python, nbgrader, a kernel's torch) once, untimed, so
    that whichever runs first does not pay for a cold file cache."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import nbgrader.apps, torch, matplotlib.pyplot"],
                   check=True, env=nbgrader_runner._env())
    log(f"  warm-up (imports, untimed): {time.perf_counter() - t:.1f} s")


_SPIN = "x = 0\nfor i in range({n}): x += i\n"


def parallel_ceiling(workers: int, loops: int = 20_000_000, rounds: int = 3) -> float:
    """The most any parallel grader could gain on this machine, now: ``workers`` times the
    wall time of a CPU-bound loop run alone, over the wall time of ``workers`` copies run at
    once (median of ``rounds``). 2.0 on two free cores; less when the virtual cores share a
    physical one or the host is busy."""
    argv = [sys.executable, "-c", _SPIN.format(n=loops)]

    def wall(k: int) -> float:
        start = time.perf_counter()
        procs = [subprocess.Popen(argv) for _ in range(k)]
        for proc in procs:
            proc.wait()
        return time.perf_counter() - start

    ratios = sorted(workers * wall(1) / wall(workers) for _ in range(rounds))
    return round(ratios[len(ratios) // 2], 2)


def _cpu_s() -> float:
    """CPU seconds of this process and of its waited-for descendants, so far."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                  resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def chosen_class(smoke: bool, students: int | None, assignment_ids: list[str] | None,
                 full_students: int, smoke_students: int) -> tuple[int, list[str]]:
    """The class to grade: the arguments, else ``ATTN_BENCH_STUDENTS`` and
    ``ATTN_BENCH_ASSIGNMENTS``, else the defaults (one assignment in a smoke run)."""
    n = students or _env_int("ATTN_BENCH_STUDENTS") or (smoke_students if smoke
                                                        else full_students)
    ids = assignment_ids or _env_list("ATTN_BENCH_ASSIGNMENTS") or (
        [SMOKE_ASSIGNMENT] if smoke else [a.id for a in assignments()])
    return n, ids


def measure(root: Path, smoke: bool, log: Callable[[str], None] = print, *,
            students: int | None = None, assignment_ids: list[str] | None = None,
            workers: int | None = None, work: Path | None = None) -> dict:
    root = Path(root).resolve()
    n, ids = chosen_class(smoke, students, assignment_ids, FULL_STUDENTS, SMOKE_STUDENTS)
    selected = [assignment(i) for i in ids]
    workers = workers or _env_int("ATTN_BENCH_WORKERS") or os.cpu_count() or 1
    work = Path(work) if work else root / "build" / "bench" / "class-grading"

    total = n * len(ids)
    est = total * SECONDS_PER_SUBMISSION
    log(f"  class: {n} students x {len(ids)} notebooks = {total} submissions; "
        f"{workers} workers; expect about {est / 60:.0f} min serial + "
        f"{est / BUDGET / 60:.0f} min ours (at the budget) in {work}")

    # one course, released and filled, then copied: identical gradebooks and submissions
    plain = _fresh_course(root, work / "plain")
    described: dict[str, dict[str, str]] = {}
    for a in selected:
        nbgrader_runner.generate_assignment(plain, a.id)
        described[a.id] = write_class(plain, a, n)
    ours = work / "ours"
    if ours.exists():
        shutil.rmtree(ours)
    shutil.copytree(plain, ours)

    _warm_up(log)
    loops = 2_000_000 if smoke else 20_000_000
    ceiling = [parallel_ceiling(workers, loops)]
    log(f"  this machine's parallel ceiling for {workers} workers: {ceiling[0]:.2f}x")
    # plain nbgrader: one command per assignment over the whole class, one after the other
    per_assignment = []
    cpu = _cpu_s()
    for a in selected:
        start = time.perf_counter()
        # not check=True: a submission nbgrader gives up on must not lose the whole run (it
        # shows up below as grades that differ)
        proc = nbgrader_runner.nbgrader(plain, "autograde", a.id, "--force", check=False)
        seconds = time.perf_counter() - start
        per_assignment.append({"assignment": a.id, "submissions": n,
                               "plain_s": round(seconds, 2), "plain_exit": proc.returncode})
        if proc.returncode:
            log(f"  plain nbgrader autograde {a.id} exited with {proc.returncode}:\n"
                + (proc.stdout + proc.stderr)[-2000:])
        log(f"  plain nbgrader autograde {a.id}: {seconds:.1f} s "
            f"({seconds / n:.1f} s a submission)")
    plain_cpu = _cpu_s() - cpu
    # ours: one call for the whole class, set-up included
    cpu = _cpu_s()
    start = time.perf_counter()
    results = grading.grade(ours, ids, workers=workers, force=True, progress=False,
                            log=lambda m: log("    " + m))
    ours_s = time.perf_counter() - start
    ours_cpu = _cpu_s() - cpu
    log(f"  attn-course grade: {ours_s:.1f} s")
    ceiling.append(parallel_ceiling(workers, loops))
    log(f"  this machine's parallel ceiling for {workers} workers, after: {ceiling[1]:.2f}x")
    for row in per_assignment:
        mine = [r for r in results if r.assignment == row["assignment"]]
        # what one submission took in ours, alone in its job (start to result, in parallel)
        row["ours_job_s"] = round(sum(r.seconds for r in mine) / max(1, len(mine)), 2)

    plain_s = sum(r["plain_s"] for r in per_assignment)
    speedup = plain_s / ours_s
    regrades = [_regrade(plain, ours, ids[0], k, n, workers, log) for k in (1, 2) if k <= n]
    compared, differences = compare(gradebook_scores(plain, ids), gradebook_scores(ours, ids))
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    # every student of this class is honest (mistakes written out, nothing imported)
    flagged = sorted(f"{r.student}/{r.assignment}: {'; '.join(r.flags)}"
                     for r in results if r.flags)
    kinds: dict[str, int] = {}
    for _, kind in student_ids(n):
        kinds[kind] = kinds.get(kind, 0) + 1
    log(f"  total: plain {plain_s:.0f} s, ours {ours_s:.0f} s: {speedup:.2f}x "
        f"(budget {BUDGET}x); {compared} grades compared, {len(differences)} differ")
    return {
        "students": n,
        "assignments": ids,
        "submissions": total,
        "workers": workers,
        "class_mix": kinds,
        "class": described,
        "per_assignment": per_assignment,
        "plain_s": plain_s,
        "ours_s": ours_s,
        "plain_cpu_s": round(plain_cpu, 1),
        "ours_cpu_s": round(ours_cpu, 1),
        "speedup": speedup,
        "parallel_ceiling": ceiling,
        "budget": BUDGET,
        "met": speedup >= BUDGET,
        "grades_compared": compared,
        "differences": differences,
        "identical": not differences and compared > 0,
        "statuses": statuses,
        "regrades": regrades,
        "flagged": flagged,
        "work": str(work),
    }


def _regrade(plain: Path, ours: Path, aid: str, k: int, n: int, workers: int, log) -> dict:
    """``k`` late submissions of one assignment graded after the class: plain nbgrader, one
    ``nbgrader autograde ID --student S --force`` each (as an instructor regrades), against
    one ``attn-course grade ID`` that finds just them new (set-up included)."""
    import nbformat

    students = [s for s, _ in student_ids(n)][:k]
    start = time.perf_counter()
    for student in students:
        nbgrader_runner.nbgrader(plain, "autograde", aid, f"--student={student}", "--force",
                                 check=False)
    plain_s = time.perf_counter() - start
    for student in students:  # a new upload: same answers, another file
        path = ours / "submitted" / student / aid / f"{aid}.ipynb"
        nb = nbformat.read(str(path), as_version=4)
        nb.metadata["resubmitted"] = True
        nbformat.write(nb, str(path))
    start = time.perf_counter()
    grading.grade(ours, [aid], workers=workers, progress=False, log=lambda m: None)
    ours_s = time.perf_counter() - start
    log(f"  {k} late submission(s) of {aid}: plain nbgrader {plain_s:.1f} s, "
        f"attn-course grade {ours_s:.1f} s")
    return {"submissions": k, "assignment": aid, "plain_s": round(plain_s, 2),
            "ours_s": round(ours_s, 2), "ratio": round(plain_s / ours_s, 2)}


# --------------------------------------------------------------------------- markdown


def markdown(data: dict) -> str:
    mix = ", ".join(f"{v} {k}" for k, v in sorted(data["class_mix"].items()))
    out = [
        "## Grading a class",
        "",
        f"Budget: a whole class graded on 2 cores at least {data['budget']}x faster than "
        "running `nbgrader autograde` serially. "
        f"**{data['speedup']:.2f}x: {'met' if data['met'] else 'NOT met'}** "
        f"({data['workers']} workers).",
        "",
        f"A synthetic class of {data['students']} students x {len(data['assignments'])} "
        f"notebooks = {data['submissions']} submissions ({mix}), built deterministically "
        "from source/ and release/: full marks; partial work (a different subset of the "
        "exercises each, every other one with a catalogued mistake); the released notebook "
        "as is; broken (half right and the rest raising with a syntax error at the end, "
        "every exercise raising, or a catalogued mistake in every exercise). No infinite "
        "loops or memory bombs (plain nbgrader has no total limit: they would measure the "
        "limits, not the throughput) and no unreadable files (ours marks them invalid "
        "without running anything: not like with like); the grading tests cover all three.",
        "",
        "Both graded the same files in the same run, in two copies of one course "
        "(same gradebook, same environment), one after the other after an untimed warm-up "
        "of the imports: plain = `nbgrader autograde <id> --force` for each assignment, "
        "over the whole class (nbgrader's normal, serial use); ours = one "
        "`attn_course.grading.grade(ids, force=True)` call, as `attn-course grade --all "
        "--force` runs it, set-up included (clean-gradebook templates, registering the "
        "assignments, the sandboxed slots and their warm-kernel servers). Plain nbgrader "
        "runs every hidden test in the student's kernel and starts every kernel from "
        "scratch, unsandboxed; ours runs every kernel in a bubblewrap sandbox, forked from "
        "a server that imported torch once (`attn_course.warm_kernels`), and judges every "
        "hidden test in the grading process (`attn_course.judge`).",
        "",
        "| assignment | submissions | plain nbgrader (s) | plain, per submission (s) "
        "| ours, one job (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in data["per_assignment"]:
        out.append(f"| {r['assignment']} | {r['submissions']} | {r['plain_s']:.1f} | "
                   f"{r['plain_s'] / r['submissions']:.2f} | {r['ours_job_s']:.2f} |")
    out += [
        "",
        "| whole class | plain nbgrader | attn-course grade | speed-up |",
        "|---|---:|---:|---:|",
        f"| wall time (s) | {data['plain_s']:.1f} | {data['ours_s']:.1f} | "
        f"**{data['speedup']:.2f}x** |",
        f"| CPU time (s) | {data['plain_cpu_s']:.1f} | {data['ours_cpu_s']:.1f} | |",
        "",
    ]
    if data.get("parallel_ceiling"):
        before, after = data["parallel_ceiling"]
        out += [
            f"**What {data['workers']} workers can gain here.** The same run timed a "
            "CPU-bound Python loop alone, then as many copies at once as there are workers, "
            f"before and after the grading: the most any parallel grader could gain on this "
            f"machine at that moment was **{before:.2f}x** before and **{after:.2f}x** "
            f"after (the full {data['workers']}x only when the virtual cores are really free). "
            f"The speed-up is {data['speedup'] / max(before, after):.0%} to "
            f"{data['speedup'] / min(before, after):.0%} of that ceiling.",
            "",
        ]
    out += [
        "\"ours, one job\" is a submission's own time in ours, start to result, while "
        f"{data['workers']} run at once; CPU time adds this process and every process it "
        "waited for (nbgrader, kernels).",
        "",
    ]
    if data.get("regrades"):
        out += [
            "**Regrading a few late submissions** after the class, in the same run: plain = "
            "`nbgrader autograde ID --student S --force` for each (how an instructor "
            "regrades one student); ours = `attn-course grade ID`, which finds just those "
            "submissions new (its whole set-up included: sandboxed slot, templates, kernels).",
            "",
            "| late submissions | plain nbgrader (s) | attn-course grade (s) | plain / ours |",
            "|---:|---:|---:|---:|",
        ]
        out += [f"| {r['submissions']} | {r['plain_s']:.1f} | {r['ours_s']:.1f} | "
                f"{r['ratio']:.2f} |" for r in data["regrades"]]
        out += ["", _cross_over(data["regrades"]), ""]
    if "flagged" in data:
        out += [f"Flags on this class of honest students: **{len(data['flagged'])}**"
                + (":" if data["flagged"] else "."), ""]
        out += [f"- {f}" for f in data["flagged"][:20]] + ([""] if data["flagged"] else [])
    failed = [r["assignment"] for r in data["per_assignment"] if r.get("plain_exit")]
    if failed:
        out += [f"Plain nbgrader exited with an error for {', '.join(failed)} (its log is in "
                "the run's output).", ""]
    statuses = ", ".join(f"{v} {k}" for k, v in sorted(data["statuses"].items()))
    if data["identical"]:
        out.append(f"Grades: **identical**: {data['grades_compared']} grades (every student "
                   "x assignment x graded cell) read back from both gradebooks, no "
                   f"difference. Statuses given by `attn-course grade`: {statuses}.")
    else:
        out.append(f"Grades: **{len(data['differences'])} of {data['grades_compared']} "
                   "differ**:")
        out.append("")
        out += [f"- {d}" for d in data["differences"][:50]]
        if len(data["differences"]) > 50:
            out.append(f"- ... and {len(data['differences']) - 50} more (results.json)")
    return "\n".join(out) + "\n"


def _cross_over(regrades: list[dict]) -> str:
    """Where ours starts to beat plain nbgrader, in words, from the late-submission rows."""
    slower = [r["submissions"] for r in regrades if r["ratio"] < 1]
    if not slower:
        return (f"**Cross-over:** none to wait for: from {regrades[0]['submissions']} "
                "submission on, `attn-course grade` (sandboxed, set-up included) is at least as "
                "fast as plain nbgrader, and the gap widens with the class (table above).")
    return (f"**Cross-over:** plain nbgrader is faster for {', '.join(map(str, slower))} "
            "late submission(s); `attn-course grade` is faster beyond "
            f"{max(slower)} (and for the whole class, table above).")

