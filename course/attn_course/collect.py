"""``attn-course collect ZIP [ID]``: an LMS "download all submissions" zip into nbgrader's
``submitted/<student>/<assignment>/<assignment>.ipynb``, with ``nbgrader zip_collect``
underneath.

nbgrader's ``zip_collect`` extracts ``downloaded/<id>/archive/*.zip`` into
``downloaded/<id>/extracted/`` and hands every extracted file to a collector plugin, which
returns the ``student_id`` and ``file_id`` (the file name in ``submitted/``) or skips it.
Its stock ``FileNameCollectorPlugin`` takes both from a regular expression alone, so a
notebook the student renamed (``Copy of 01_rnn_limits.ipynb``, Canvas's ``-1`` for a
re-upload) would land under a name the grader does not know, and two notebooks of one
student stop the whole run ("Duplicate submission file"). :class:`CourseCollector` uses the
same ``named_regexp`` but decides for the whole class first (:func:`plan`): one notebook per
student, saved under the assignment's notebook name, and every other file skipped with a
reason, written to ``downloaded/<id>/collect-report.json`` for the summary.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

from nbgrader.plugins import FileNameCollectorPlugin
from traitlets import Unicode

from attn_course import nbgrader_runner
from attn_course.manifest import Assignment, assignment, assignments

# Canvas: <name>_[LATE_]<user id>_<attachment id>_<the file name as uploaded>, where a
# re-upload of the same name gets "-1", "-2" before the extension. The user id is stable
# across assignments and is the "ID" column of Canvas's gradebook CSV: it is the student id.
CANVAS_REGEXP = (r"(?:.*/)?(?P<name>[^/_]+)_(?:(?P<late>(?i:late))_)?(?P<student_id>\d+)_"
                 r"(?P<upload>\d+)_(?P<file_id>.+)")
# Moodle: <full name>_<participant id>_assignsubmission_file_<file name> (or .../<file name>
# with "download submissions in folders"). The participant id changes from one assignment to
# the next, so the student id is the full name, made folder-safe ("Ada Lovelace" -> Ada_Lovelace).
MOODLE_REGEXP = (r"(?:.*/)?(?P<student_id>[^/_]+)_(?P<participant>\d+)_assignsubmission_file_"
                 r"/?(?P<file_id>.+)")
PRESETS = {"canvas": CANVAS_REGEXP, "moodle": MOODLE_REGEXP}
REPORT = "collect-report.json"
ARCHIVE_EXT = (".zip", ".gz")  # what nbgrader's extractor unpacks (ExtractorPlugin.zip_ext)
_SYSTEM = {"__MACOSX", ".ipynb_checkpoints", ".DS_Store", "Thumbs.db", "desktop.ini"}


class CollectError(Exception):
    """A problem with the zip or the options, said in words (no traceback)."""


# --------------------------------------------------------------------------- the plan


@dataclass
class Entry:
    path: str  # inside the zip, "/"-separated
    action: str  # "collected" | "skipped" | "unpacked"
    reason: str = ""
    student: str = ""
    name: str = ""  # the student's name, when the pattern has a `name` group
    late: bool = False
    uploaded: str = ""  # the file name the student uploaded (the `file_id` group)
    dest: str = ""  # the file name in submitted/<student>/<assignment>/


def compile_regexp(regexp: str) -> re.Pattern:
    try:
        pattern = re.compile(regexp)
    except re.error as exc:
        raise CollectError(f"the --regexp is not a valid regular expression: {exc}") from None
    missing = {"student_id", "file_id"} - set(pattern.groupindex)
    if missing:
        raise CollectError(
            "the --regexp must have the named groups (?P<student_id>...) and (?P<file_id>...); "
            f"it lacks {', '.join(sorted(missing))}")
    return pattern


def _safe_student(raw: str) -> str:
    """A student id that is one folder name: runs of anything but letters, digits, ``.`` and
    ``-`` become ``_``."""
    return re.sub(r"[^\w.-]+", "_", raw.strip(), flags=re.UNICODE).strip("_.")


def _stem_without_copy_mark(file_name: str) -> str:
    """``01_rnn_limits-1.ipynb`` (Canvas re-upload), ``01_rnn_limits (2).ipynb`` (browser)
    -> ``01_rnn_limits``."""
    stem = os.path.splitext(os.path.basename(file_name))[0]
    return re.sub(r"(?:-\d+|\s*\(\d+\))$", "", stem)


def _is_system(path: str) -> bool:
    parts = path.split("/")
    return any(p in _SYSTEM for p in parts) or parts[-1].startswith(".")


def plan(paths: list[str], pattern: re.Pattern, notebooks: list[str],
         valid_ext: tuple[str, ...] = (".ipynb",)) -> list[Entry]:
    """What happens to every file of the zip (paths inside it). ``notebooks``: the released
    notebook file names of the assignment (``["01_rnn_limits.ipynb"]``).

    A file whose path matches ``pattern`` (``re.match``, as nbgrader does) belongs to the
    student of its ``student_id`` group. Of a student's notebooks, one is collected per
    released notebook: the one whose name, less a copy mark (``-1``, `` (2)``), is the
    notebook's name, else (an assignment with one notebook) any other; ties go to the
    highest ``upload`` group (Canvas's attachment id grows with every upload), then the
    highest copy mark, then the last path. Everything else is skipped, with the reason."""
    entries: dict[str, Entry] = {}
    candidates: dict[str, list[tuple[str, dict]]] = {}
    for path in sorted(paths):
        if _is_system(path):
            entries[path] = Entry(path, "skipped", "system file (__MACOSX, hidden, checkpoint)")
            continue
        if path.lower().endswith(ARCHIVE_EXT):
            entries[path] = Entry(path, "unpacked", "an archive: its files are listed too")
            continue
        m = pattern.match(path)
        if not m:
            entries[path] = Entry(path, "skipped", "name does not match the pattern")
            continue
        groups = {k: (v or "") for k, v in m.groupdict().items()}
        student = _safe_student(groups["student_id"])
        entry = Entry(path, "skipped", student=student, name=groups.get("name", ""),
                      late=bool(groups.get("late")),
                      uploaded=os.path.basename(groups["file_id"]))
        entries[path] = entry
        if not student:
            entry.reason = "the pattern found no student id in the name"
        elif not path.endswith(valid_ext):
            entry.reason = "not a notebook"
        else:
            candidates.setdefault(student, []).append((path, groups))

    released = {os.path.splitext(n)[0]: n for n in notebooks}
    only = notebooks[0] if len(notebooks) == 1 else None
    for student, files in candidates.items():
        by_target: dict[str, list[tuple[str, dict]]] = {}
        for path, groups in files:
            stem = _stem_without_copy_mark(groups["file_id"])
            target = released.get(stem) or only
            if target is None:
                entries[path].reason = ("not one of the assignment's notebooks ("
                                        + ", ".join(notebooks) + ")")
                continue
            by_target.setdefault(target, []).append((path, groups))
        for target, group in by_target.items():
            def rank(item, target=target):
                path, groups = item
                stem = os.path.splitext(os.path.basename(groups["file_id"]))[0]
                mark = re.search(r"-(\d+)$", stem)
                upload = groups.get("upload", "")
                return (_stem_without_copy_mark(groups["file_id"]) == target.removesuffix(
                    ".ipynb"), int(upload) if upload.isdigit() else -1,
                    int(mark.group(1)) if mark else -1, path)
            group.sort(key=rank)
            chosen, _ = group[-1]
            entries[chosen].action, entries[chosen].dest = "collected", target
            entries[chosen].reason = ""
            for path, _ in group[:-1]:
                entries[path].reason = (f"a second notebook of {student}: {chosen} was "
                                        "taken instead")
    return [entries[p] for p in sorted(entries)]


# --------------------------------------------------------------------------- nbgrader plugin


class CourseCollector(FileNameCollectorPlugin):
    """nbgrader collector plugin: :func:`plan` over every extracted file at the first call,
    then each file's student and destination name (or None: skipped). Run as
    ``nbgrader zip_collect ID --collector=attn_course.collect.CourseCollector
    --FileNameCollectorPlugin.named_regexp=...``; the regexp sees the path inside the zip."""

    report_path = Unicode("", help="where to write the plan as JSON (default: beside "
                                   "the extracted folder)").tag(config=True)

    _by_file: dict[str, Entry] | None = None

    def _plan_all(self) -> dict[str, Entry]:
        app = self.parent
        step = os.path.join(app.coursedir.root, app.collect_directory_structure)
        fmt = dict(downloaded=app.downloaded_directory, assignment_id=app.coursedir.assignment_id)
        extracted = step.format(collect_step=app.extracted_directory, **fmt)
        archive = step.format(collect_step=app.archive_directory, **fmt)
        archives = {os.path.splitext(n)[0].removesuffix(".tar") for n in os.listdir(archive)
                    if n.endswith(ARCHIVE_EXT)} if os.path.isdir(archive) else set()
        inside: dict[str, str] = {}
        for folder, _, names in os.walk(extracted):
            for n in names:
                full = os.path.join(folder, n)
                parts = os.path.relpath(full, extracted).split(os.sep)
                if len(parts) > 1 and parts[0] in archives:
                    parts = parts[1:]  # the archive's own folder
                inside[full] = "/".join(parts)
        released = os.path.join(app.coursedir.root, app.coursedir.format_path(
            app.coursedir.release_directory, ".", app.coursedir.assignment_id))
        notebooks = sorted(str(p.relative_to(released)) for p in Path(released).rglob("*.ipynb")
                           if ".ipynb_checkpoints" not in p.parts)
        entries = plan(list(inside.values()), compile_regexp(self.named_regexp), notebooks,
                       tuple(self.valid_ext))
        report = self.report_path or os.path.join(os.path.dirname(extracted), REPORT)
        with open(report, "w", encoding="utf-8") as f:
            json.dump({"notebooks": notebooks, "entries": [asdict(e) for e in entries]}, f,
                      indent=1)
        by_path = {e.path: e for e in entries}
        return {full: by_path[p] for full, p in inside.items()}

    def collect(self, submitted_file: str) -> dict | None:
        if self._by_file is None:
            self._by_file = self._plan_all()
        entry = self._by_file.get(submitted_file)
        if entry is None or entry.action != "collected":
            return None
        return {"student_id": entry.student, "file_id": entry.dest}


# --------------------------------------------------------------------------- the command


def read_zip(zip_path: Path) -> list[str]:
    """The file paths inside the zip, after checking it can be read; CollectError if not."""
    if not zip_path.is_file():
        raise CollectError(f"{zip_path}: no such file")
    if not zipfile.is_zipfile(zip_path):
        raise CollectError(f"{zip_path} is not a zip file (download the submissions again: "
                           "the LMS's \"download all submissions\" gives a .zip)")
    try:
        with zipfile.ZipFile(zip_path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            broken = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, NotImplementedError) as exc:
        raise CollectError(f"{zip_path} cannot be read as a zip: {exc}") from None
    if broken:
        raise CollectError(f"{zip_path} is damaged ({broken} fails its checksum); "
                           "download it again")
    unsafe = [n for n in names if n.startswith("/") or "\\" in n or ".." in n.split("/")]
    if unsafe:
        raise CollectError(f"{zip_path} has paths that would land outside its folder "
                           f"(e.g. {unsafe[0]!r}); it was not made by an LMS")
    if not names:
        raise CollectError(f"{zip_path} is empty")
    if not any(n.endswith(".ipynb") or n.lower().endswith(ARCHIVE_EXT) for n in names):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise CollectError(f"{zip_path} has no notebooks: {len(names)} files ({shown})")
    return names


def infer_assignment(names: list[str], course: list[Assignment] | None = None) -> Assignment:
    """The one assignment whose id the notebook names of the zip contain."""
    course = course if course is not None else assignments()
    notebooks = [os.path.basename(n) for n in names
                 if n.endswith(".ipynb") and not _is_system(n)]
    counts = {a.id: sum(a.id in n for n in notebooks) for a in course}
    found = {aid: n for aid, n in counts.items() if n}
    if len(found) == 1:
        return next(a for a in course if a.id in found)
    if found:
        listed = ", ".join(f"{aid} ({n} notebooks)" for aid, n in found.items())
        raise CollectError(f"the zip's notebooks name several assignments: {listed}; "
                           "say which one: attn-course collect ZIP ID")
    raise CollectError("no notebook name in the zip contains an assignment id; say which one: "
                       "attn-course collect ZIP ID, with ID one of "
                       + ", ".join(a.id for a in course))


@dataclass
class Outcome:
    assignment: str
    entries: list[Entry]
    replaced: set[str]  # students whose earlier submission was replaced
    warnings: list[str]

    @property
    def collected(self) -> list[Entry]:
        return [e for e in self.entries if e.action == "collected"]

    @property
    def skipped(self) -> list[Entry]:
        return [e for e in self.entries if e.action == "skipped"]


def collect(root: Path, zip_path: Path, assignment_id: str | None = None,
            regexp: str = CANVAS_REGEXP) -> Outcome:
    """Bring the zip into ``root/submitted`` with ``nbgrader zip_collect``; raise
    CollectError, in words, when the zip or the options cannot work."""
    zip_path = Path(zip_path).resolve()
    pattern = compile_regexp(regexp)
    names = read_zip(zip_path)
    a = assignment(assignment_id) if assignment_id else infer_assignment(names)
    warnings = []
    if assignment_id:
        ids = [b.id for b in assignments() if b.id != a.id
               and any(b.id in os.path.basename(n) for n in names)]
        if ids and not any(a.id in os.path.basename(n) for n in names):
            warnings.append(f"no file name in the zip mentions {a.id}, but some mention "
                            f"{', '.join(ids)}: is this the zip of {a.id}?")
    release = root / "release" / a.id
    notebooks = sorted(str(p.relative_to(release)) for p in release.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts)
    if not notebooks:
        raise CollectError(f"{release} has no notebook: run `attn-course release {a.id}` first")
    preview = plan(names, pattern, notebooks)
    if not any(e.action in ("collected", "unpacked") for e in preview):
        shown = "\n  ".join(n for n in names[:5])
        raise CollectError(
            f"no notebook in the zip matches the naming pattern\n  {pattern.pattern}\n"
            f"first files in the zip:\n  {shown}\n"
            "pass --lms for another LMS's naming, or your own --regexp")

    base = root / "downloaded" / a.id
    archive = base / "archive"
    if archive.exists():
        shutil.rmtree(archive)  # an earlier zip would be collected again
    archive.mkdir(parents=True)
    stem = zip_path.name[:-4] if zip_path.name.lower().endswith(".zip") else zip_path.name
    shutil.copy2(zip_path, archive / f"{stem}.zip")  # nbgrader unpacks only .zip/.gz names
    report = base / REPORT
    report.unlink(missing_ok=True)
    before = {p.parent.name for p in (root / "submitted").glob(f"*/{a.id}")}
    try:
        nbgrader_runner.nbgrader(
            root, "zip_collect", a.id, "--force",
            "--collector=attn_course.collect.CourseCollector",
            f"--FileNameCollectorPlugin.named_regexp={pattern.pattern}",
            f"--CourseCollector.report_path={report}")
    except nbgrader_runner.NbgraderError as exc:
        raise CollectError(str(exc)) from None
    if not report.is_file():
        raise CollectError(f"nbgrader zip_collect ran but wrote no report ({report}); "
                           "is --collector=attn_course.collect.CourseCollector overridden?")
    data = json.loads(report.read_text(encoding="utf-8"))
    entries = [Entry(**e) for e in data["entries"]]
    lost = [e for e in entries if e.action == "collected"
            and not (root / "submitted" / e.student / a.id / e.dest).is_file()]
    if lost:
        raise CollectError("nbgrader did not write " + ", ".join(
            f"submitted/{e.student}/{a.id}/{e.dest} (from {e.path})" for e in lost))
    replaced = {e.student for e in entries if e.action == "collected"} & before
    return Outcome(a.id, entries, replaced, warnings)


def summary(outcome: Outcome, root: Path) -> str:
    aid = outcome.assignment
    collected = outcome.collected
    students = sorted({e.student for e in collected})
    out = [f"collected {len(collected)} notebooks of {len(students)} students for {aid} "
           f"-> {root / 'submitted'}/<student>/{aid}/"]
    for e in sorted(collected, key=lambda e: (e.student, e.dest)):
        notes = []
        if e.name:
            notes.append(e.name)
        if e.late:
            notes.append("LATE")
        if e.uploaded not in (e.dest, os.path.splitext(e.dest)[0]):
            notes.append(f"renamed to {e.dest}")
        if e.student in outcome.replaced:
            notes.append("replaces the earlier submission")
        out.append(f"  {e.student:<20} {e.path}" + (f"  ({'; '.join(notes)})" if notes else ""))
    unpacked = [e.path for e in outcome.entries if e.action == "unpacked"]
    if unpacked:
        out.append(f"archives inside the zip, unpacked (their files are listed): "
                   f"{', '.join(unpacked)}")
    late = sorted({e.student for e in collected if e.late})
    if late:
        out.append(f"marked late by the LMS: {len(late)} ({', '.join(late)})")
    skipped = outcome.skipped
    if skipped:
        out.append(f"skipped {len(skipped)} files (not in submitted/):")
        for e in skipped:
            who = f" [{e.student}]" if e.student else ""
            out.append(f"  {e.path}{who}: {e.reason}")
    else:
        out.append("skipped no file")
    no_notebook = sorted({e.student for e in skipped if e.student} - set(students))
    if no_notebook:
        out.append(f"students with files but no notebook collected: {', '.join(no_notebook)}")
    out += [f"WARNING: {w}" for w in outcome.warnings]
    return "\n".join(out)
