"""``attn-course``: the instructor's commands.

    attn-course release  [ID ...]     regenerate release/ from source/ with nbgrader
    attn-course validate [ID ...]     the tests of the tests (checks vs reference, stub, mistakes,
                                      correct variants)
    attn-course execute  [ID ...]     run the worked solutions into build/solutions/
    attn-course collect  ZIP [ID]     bring an LMS zip of submissions into submitted/
    attn-course grade    ID...|--all  autograde what is new in submitted/ (in parallel, under
                                      limits; --cluster on Dask workers; --db a PostgreSQL
                                      gradebook), print the grades and write grades.csv
    attn-course feedback [ID ...]     HTML feedback for graded submissions (hidden tests removed)
    attn-course sample   [ID ...]     release, run the solutions, grade the bundled sample class
    attn-course book     [ID ...]     the worked solutions as a static site in build/book/
    attn-course bench    [PART ...]   measure the budgets into docs/benchmarks/results.{md,json}
    attn-course lab                   copy release/ to workspace/ and open JupyterLab there

No ID means every assignment in the manifest, in course order.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from attn_course import cluster, grading, nbgrader_runner, report, sample_class, sandbox
from attn_course.execute import execute_notebook
from attn_course.manifest import Assignment, assignment, assignments, course_root


def _selected(ids: list[str]) -> list[Assignment]:
    return [assignment(i) for i in ids] if ids else assignments()


def _say(msg: str) -> None:
    print(msg, flush=True)


def cmd_release(args) -> int:
    root = course_root()
    for a in _selected(args.ids):
        nbgrader_runner.generate_assignment(root, a.id)
        _say(f"released {a.id} -> {a.release_notebook(root).relative_to(root)}")
    return 0


def cmd_validate(args) -> int:
    from attn_course import validation  # (the checks: torch)

    root = course_root()
    failed = 0
    for a in _selected(args.ids):
        results = validation.run_all(a, root)
        bad = [(label, p) for label, p in results if p]
        failed += len(bad)
        _say(f"{a.id}: {len(results) - len(bad)}/{len(results)} validations hold")
        for line in validation.summary(results):
            _say(f"  {line}")
        for label, problem in bad:
            _say(f"  FAIL {label}\n    " + problem.replace("\n", "\n    "))
    return 1 if failed else 0


def cmd_execute(args) -> int:
    root = course_root()
    out_dir = root / "build" / "solutions"
    for a in _selected(args.ids):
        out = out_dir / f"{a.id}.ipynb"
        _, seconds = execute_notebook(a.source_notebook(root), out, quick=args.quick)
        _say(f"executed {a.id} in {seconds:.0f} s -> {out.relative_to(root)}")
    return 0


def cmd_collect(args) -> int:
    from attn_course import collect

    root = course_root()
    regexp = args.regexp or collect.PRESETS[args.lms]
    try:
        outcome = collect.collect(root, args.zip, args.id, regexp)
    except collect.CollectError as exc:
        raise SystemExit(f"attn-course collect: {exc}") from None
    _say(collect.summary(outcome, root))
    if not outcome.collected:
        raise SystemExit("attn-course collect: no notebook was collected (see above)")
    return 0


def _grade(course: Path, selected: list[Assignment], args) -> list[grading.Result]:
    ids = []
    for a in selected:
        if not any((course / "submitted").glob(f"*/{a.id}")):
            _say(f"{a.id}: no submissions in {course / 'submitted'}")
        else:
            ids.append(a.id)
    limits = grading.Limits(wall_s=getattr(args, "wall_time", grading.Limits.wall_s),
                            memory_bytes=int(getattr(args, "memory_gib", 4) * grading.GiB))
    start = time.perf_counter()
    common = dict(limits=limits, force=getattr(args, "force", False), log=_say,
                  sandboxed=not getattr(args, "no_sandbox", False), db=getattr(args, "db", None))
    if getattr(args, "cluster", None):
        results = cluster.grade(course, ids, args.cluster, **common)
    else:
        results = grading.grade(course, ids, workers=getattr(args, "workers", None), **common)
    _say(f"graded {len(results)} submissions of {', '.join(ids) or 'nothing'} "
         f"in {time.perf_counter() - start:.0f} s")
    return results


def _watch(root: Path, args) -> int:
    limits = grading.Limits(wall_s=args.wall_time, memory_bytes=int(args.memory_gib * grading.GiB))

    def show(r: grading.Result) -> None:
        _say(f"{time.strftime('%H:%M:%S')} graded {r.student}/{r.assignment}: "
             f"{r.score:g}/{r.max_score:g} ({r.status}"
             + (f": {r.reason}" if r.reason else "") + ")"
             + ("; FLAG for review: " + "; ".join(r.flags) if r.flags else ""))

    try:
        grading.watch(root, [a.id for a in _selected(args.ids)], workers=args.workers,
                      limits=limits, interval=args.interval, log=_say,
                      sandboxed=not args.no_sandbox, on_result=show, db=args.db)
    except sandbox.SandboxUnavailable as exc:
        raise SystemExit(f"attn-course grade: no sandbox for student code: {exc}") from None
    except KeyboardInterrupt:
        _say(f"\nstopped watching; every grade so far is in "
             f"{report.gradebook_url(root, args.db)}")
        return 0
    return 0


def cmd_grade(args) -> int:
    root = course_root()
    if not args.ids and not args.all:
        raise SystemExit("attn-course grade: name assignments, or --all for every one")
    if args.watch:
        if args.cluster:
            raise SystemExit("attn-course grade: --watch grades on this machine; leave out "
                             "--cluster (or run --cluster again after each collect)")
        return _watch(root, args)
    try:
        results = _grade(root, _selected(args.ids), args)
    except sandbox.SandboxUnavailable as exc:
        raise SystemExit(f"attn-course grade: no sandbox for student code: {exc}") from None
    except KeyboardInterrupt:
        _say(f"\ninterrupted: every grade finished so far is in "
             f"{report.gradebook_url(root, args.db)}; run the same command again to grade "
             "the rest")
        return 130
    except cluster.ClusterError as exc:
        raise SystemExit(f"attn-course grade --cluster: {exc}") from None
    _say(report.summary(results))
    report.write_csv(root / "grades.csv", results)
    _say(f"grades written to {root / 'grades.csv'}")
    return 0


def cmd_feedback(args) -> int:
    root = course_root()
    for a in _selected(args.ids):
        nbgrader_runner.generate_feedback(root, a.id, args.db)
        _say(f"feedback for {a.id} -> {root / 'feedback'}")
    return 0


def cmd_book(args) -> int:
    from attn_course import book

    index = book.build_book(course_root(), _selected(args.ids), quick=args.quick, log=_say)
    _say(f"worked solutions site -> {index}")
    return 0


def _fresh_course_copy(root: Path, dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    shutil.copy2(root / "nbgrader_config.py", dest / "nbgrader_config.py")
    shutil.copytree(root / "source", dest / "source")
    shutil.copytree(root / "release", dest / "release")
    return dest


def cmd_sample(args) -> int:
    """The course's main job, end to end, for a new instructor or a CI smoke run."""
    root = course_root()
    selected = _selected(args.ids)
    _say("== 1/5 regenerate release/ from source/")
    cmd_release(args)
    _say("== 2/5 run the worked solutions" + (" (quick mode)" if args.quick else ""))
    cmd_execute(args)
    problem = sandbox.probe()
    _say("== 3/5 grade the bundled sample class" + (
        " (in a sandbox)" if not problem else
        f"\n   without a sandbox: {problem}\n   (the sample class is the course's own code; "
        "install bubblewrap before grading students)"))
    args.no_sandbox = bool(problem)
    course = _fresh_course_copy(root, root / "build" / "sample-course")
    for a in selected:
        nbgrader_runner.generate_assignment(course, a.id)
        sample_class.write_submissions(course, a)
    results = _grade(course, selected, args)
    rows = [r.row() for r in results]
    _say("== 4/5 feedback")
    for a in selected:
        nbgrader_runner.generate_feedback(course, a.id)
    report.write_csv(course / "grades.csv", results)
    _say("== 5/5 the worked solutions as a site")
    from attn_course import book

    site = book.build_book(root, selected, quick=args.quick, log=_say)
    _say("\nGrades of the sample class (points earned / points possible):\n")
    _say(report.format_table(rows))
    _say("\nPer exercise:\n" + report.format_exercises(rows))
    _say(
        "\nWhere everything is:\n"
        f"  student notebooks (release):  {root / 'release'}\n"
        f"  executed worked solutions:    {root / 'build' / 'solutions'}\n"
        f"  sample class submissions:     {course / 'submitted'}\n"
        f"  graded notebooks:             {course / 'autograded'}\n"
        f"  feedback (HTML):              {course / 'feedback'}\n"
        f"  grades CSV:                   {course / 'grades.csv'}\n"
        f"  worked solutions site:        {site}\n"
    )
    return 0


def cmd_bench(args) -> int:
    import json

    from attn_course import benchmarks
    from attn_course.benchmarks import outcomes

    md, js = benchmarks.run(course_root(), args.parts or None, smoke=args.smoke,
                            out_dir=args.out, log=_say)
    _say(f"benchmark results -> {md}\n                     {js}")
    if "outcomes" not in (args.parts or benchmarks.PARTS):
        return 0  # the outcomes in the results file were not measured by this run
    part = json.loads(js.read_text(encoding="utf-8"))["parts"].get("outcomes", {})
    failed = outcomes.failed_claims(part)
    if failed:
        _say(f"{len(failed)} claim(s) of the notebooks' prose do NOT hold:")
        for c in failed:
            _say(f"  {c['id']}/{c['key']}: {c['claim']}\n      measured: {c['measured']}")
        return 1
    return 0


def cmd_lab(args) -> int:
    root = course_root()
    workspace = root / "workspace"
    for a in assignments():
        target = workspace / a.id
        if not target.exists():  # never overwrite a student's work
            shutil.copytree(root / "release" / a.id, target)
    _say(f"Your notebooks are in {workspace} (your edits stay there; release/ is untouched).")
    cmd = [sys.executable, "-m", "jupyterlab", f"--notebook-dir={workspace}", *args.lab_args]
    return subprocess.call(cmd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attn-course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name, func, help_, quick=False, ids_help="assignment ids (default: all)"):
        p = sub.add_parser(name, help=help_)
        p.add_argument("ids", nargs="*", metavar="ID", help=ids_help)
        if quick:
            p.add_argument("--quick", action="store_true",
                           help="shrink the demos as autograding does (fast smoke run)")
        p.set_defaults(func=func)
        return p

    add("release", cmd_release, "regenerate release/ from source/")
    add("validate", cmd_validate, "check the checks against references, stubs and mistakes")
    add("execute", cmd_execute, "run the worked solutions into build/solutions/", quick=True)
    col = sub.add_parser(
        "collect", help="an LMS zip of submissions into submitted/ (nbgrader zip_collect)",
        description="Unpack an LMS 'download all submissions' zip into "
                    "submitted/<student>/<ID>/<ID>.ipynb with nbgrader zip_collect, one "
                    "notebook per student, and say what was collected and what was skipped.")
    col.add_argument("zip", type=Path, metavar="ZIP", help="the zip downloaded from the LMS")
    col.add_argument("id", nargs="?", metavar="ID",
                     help="the assignment (default: the one the notebook names contain)")
    col.add_argument("--lms", choices=["canvas", "moodle"], default="canvas",
                     help="the LMS's file naming (default: %(default)s)")
    col.add_argument("--regexp", default=None,
                     help="your own file naming: a Python regular expression matched against "
                          "the path inside the zip, with the named groups (?P<student_id>...) "
                          "and (?P<file_id>...) (overrides --lms)")
    col.set_defaults(func=cmd_collect)
    grade = add("grade", cmd_grade, "autograde submitted/ in parallel and write grades.csv",
                ids_help="assignment ids to grade (or --all)")
    grade.add_argument("--all", action="store_true", help="every assignment in the manifest")
    grade.add_argument("--workers", type=int, default=None,
                       help="submissions graded at once (default: the number of cores)")
    grade.add_argument("--wall-time", type=float, default=grading.Limits.wall_s,
                       help="seconds one submission may take in all (default: %(default)g)")
    grade.add_argument("--memory-gib", type=float,
                       default=grading.Limits.memory_bytes / grading.GiB,
                       help="memory cap of one submission, GiB (default: %(default)g)")
    grade.add_argument("--force", action="store_true",
                       help="regrade everything, not only what is new or changed")
    grade.add_argument("--watch", action="store_true",
                       help="keep running: grade each new or changed submission as it lands "
                            "in submitted/ (after nbgrader collect --update, say); Ctrl-C stops")
    grade.add_argument("--interval", type=float, default=5.0,
                       help="with --watch, seconds between looks at submitted/ "
                            "(default: %(default)g)")
    grade.add_argument("--no-sandbox", action="store_true",
                       help="run student code without the bubblewrap sandbox, with your "
                            "permissions and network (scores are still computed outside it)")
    grade.add_argument("--cluster", metavar="ADDRESS", default=None,
                       help="grade on a Dask cluster: its scheduler (tcp://HOST:8786) or "
                            "scheduler file; every worker needs this course installed (same "
                            "version) and bubblewrap; results are merged here")
    db_help = ("the course gradebook's database URL, e.g. postgresql://USER@HOST/COURSE "
               "(default: nbgrader's CourseDirectory.db_url, else gradebook.db)")
    grade.add_argument("--db", metavar="URL", default=None, help=db_help)
    feedback = add("feedback", cmd_feedback, "generate HTML feedback for graded submissions")
    feedback.add_argument("--all", action="store_true",
                          help="every assignment (the same as naming none)")
    feedback.add_argument("--db", metavar="URL", default=None, help=db_help)
    add("book", cmd_book, "build the worked solutions as a static site in build/book/", quick=True)
    add("sample", cmd_sample, "release, run the solutions, grade the sample class", quick=True)
    bench = sub.add_parser("bench", help="measure the course's budgets (docs/benchmarks/)")
    bench.add_argument("parts", nargs="*", metavar="PART",
                       help="notebooks, outcomes, class_grading, cluster_grading, modules "
                            "(default: all)")
    bench.add_argument("--smoke", action="store_true",
                       help="tiny sizes: checks the plumbing in seconds, not the budgets")
    bench.add_argument("--out", type=Path, default=None,
                       help="folder for results.md/.json (default: docs/benchmarks)")
    bench.set_defaults(func=cmd_bench)
    lab = sub.add_parser("lab", help="open JupyterLab on a working copy of release/ "
                                     "(other options go to jupyter lab)")
    lab.set_defaults(func=cmd_lab)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.func is not cmd_lab:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.lab_args = extra
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
