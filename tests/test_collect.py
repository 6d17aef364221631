"""`attn-course collect ZIP [ID]` (attn_course.collect): an LMS zip into submitted/ through
nbgrader's zip_collect, one notebook per student under the name the grader expects, and a
summary that names every file it did not take.

The rules (attn_course.collect.plan) are tested on names alone; two real runs of
`nbgrader zip_collect` (a Canvas zip, then a zip with a custom --regexp into the same course)
check the layout on disk and the printed summary; bad zips stop before nbgrader with a message.
"""

from __future__ import annotations

import io
import json
import zipfile

import nbformat
import pytest

from attn_course import cli, collect, verdict
from attn_course.manifest import assignment
from conftest import copy_course

A = assignment("01_rnn_limits")
NB = [f"{A.id}.ipynb"]


def _names(entries, action):
    return {e.path: e for e in entries if e.action == action}


# --------------------------------------------------------------------------- the rules


def test_plan_canvas_names():
    paths = [
        "lovelaceada_12345_67890_01_rnn_limits.ipynb",
        "babbagecharles_LATE_23456_67891_01_rnn_limits-1.ipynb",  # late, re-uploaded name
        "hopperg_34567_67892_Copy of 01_rnn_limits.ipynb",  # renamed by the student
        "turingalan_45678_67893_01_rnn_limits.ipynb",  # two notebooks of one student:
        "turingalan_45678_67899_01_rnn_limits-1.ipynb",  # the newer upload wins
        "turingalan_45678_67894_scratch.ipynb",  # loses to the ones named like the assignment
        "turingalan_45678_67895_notes.pdf",
        "readme.txt",
        "01_rnn_limits.ipynb",
        "__MACOSX/._lovelaceada_12345_67890_01_rnn_limits.ipynb",
        "kleene_56789_67896_work.zip",
    ]
    entries = collect.plan(paths, collect.compile_regexp(collect.CANVAS_REGEXP), NB)
    assert sorted(e.path for e in entries) == sorted(paths)
    got = _names(entries, "collected")
    assert {e.student: e.path for e in got.values()} == {
        "12345": paths[0], "23456": paths[1], "34567": paths[2], "45678": paths[4]}
    assert all(e.dest == NB[0] for e in got.values())
    assert got[paths[1]].late and not got[paths[0]].late
    assert got[paths[0]].name == "lovelaceada"
    skipped = _names(entries, "skipped")
    assert set(skipped) == {paths[i] for i in (3, 5, 6, 7, 8, 9)}
    assert "second notebook" in skipped[paths[3]].reason and paths[4] in skipped[paths[3]].reason
    assert "second notebook" in skipped[paths[5]].reason
    assert skipped[paths[6]].reason == "not a notebook" and skipped[paths[6]].student == "45678"
    assert "does not match" in skipped[paths[7]].reason
    assert "does not match" in skipped[paths[8]].reason
    assert "system file" in skipped[paths[9]].reason
    assert set(_names(entries, "unpacked")) == {paths[10]}


def test_plan_moodle_names_flat_folders_and_nested_zip():
    paths = [
        "Ada Lovelace_101_assignsubmission_file_01_rnn_limits.ipynb",
        "Grace Hopper_102_assignsubmission_file_/01_rnn_limits.ipynb",
        "Kurt Goedel_105_assignsubmission_file_/stuff/work/01_rnn_limits.ipynb",
        "Kurt Goedel_105_assignsubmission_file_/stuff/work/.ipynb_checkpoints/"
        "01_rnn_limits-checkpoint.ipynb",
        "Alan Turing_104_assignsubmission_onlinetext_onlinetext.html",
    ]
    entries = collect.plan(paths, collect.compile_regexp(collect.MOODLE_REGEXP), NB)
    got = {e.student: e.path for e in _names(entries, "collected").values()}
    assert got == {"Ada_Lovelace": paths[0], "Grace_Hopper": paths[1], "Kurt_Goedel": paths[2]}
    assert set(_names(entries, "skipped")) == {paths[3], paths[4]}


def test_plan_assignment_with_several_notebooks_keeps_names():
    pattern = collect.compile_regexp(r"(?P<student_id>\w+?)__(?P<file_id>.+)")
    entries = collect.plan(["ada__part1.ipynb", "ada__part2-1.ipynb", "ada__other.ipynb"],
                           pattern, ["part1.ipynb", "part2.ipynb"])
    got = {e.path: e.dest for e in _names(entries, "collected").values()}
    assert got == {"ada__part1.ipynb": "part1.ipynb", "ada__part2-1.ipynb": "part2.ipynb"}
    assert "not one of the assignment's notebooks" in entries[0].reason  # ada__other


@pytest.mark.parametrize("regexp, word", [
    (r"(?P<student_id>\w+)_(?P<name>.+)", "file_id"),
    (r"(?P<student_id>\w+)_(?P<file_id>.+", "not a valid regular expression"),
])
def test_bad_regexp(regexp, word):
    with pytest.raises(collect.CollectError, match=word):
        collect.compile_regexp(regexp)


# --------------------------------------------------------------------------- real runs


def _notebook(course, marker):
    nb = nbformat.read(str(A.release_notebook(course)), as_version=4)
    nb.metadata["collect_test"] = marker
    return nbformat.writes(nb).encode()


def _zip(path, files):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def _marker(course, student):
    path = course / "submitted" / student / A.id / f"{A.id}.ipynb"
    return json.loads(path.read_text(encoding="utf-8"))["metadata"]["collect_test"]


@pytest.fixture
def course(tmp_path, monkeypatch):
    course = copy_course(tmp_path / "course")
    monkeypatch.setenv("ATTN_COURSE_ROOT", str(course))
    return course


@pytest.mark.slow
def test_collect_canvas_zip_then_a_custom_naming(course, tmp_path, capsys):
    inner = io.BytesIO()
    _zip(inner, {"work/01_rnn_limits.ipynb": _notebook(course, "kleene")})
    canvas = _zip(tmp_path / "submissions.zip", {
        "lovelaceada_12345_67890_01_rnn_limits.ipynb": _notebook(course, "ada"),
        "babbagecharles_LATE_23456_67891_01_rnn_limits-1.ipynb": _notebook(course, "charles"),
        "hopperg_34567_67892_Copy of 01_rnn_limits.ipynb": _notebook(course, "grace"),
        "turingalan_45678_67893_01_rnn_limits.ipynb": _notebook(course, "alan-old"),
        "turingalan_45678_67899_01_rnn_limits-1.ipynb": _notebook(course, "alan-new"),
        "turingalan_45678_67894_notes.pdf": b"%PDF-1.4",
        "kleenes_56789_67896_work.zip": inner.getvalue(),
        "readme.txt": b"downloaded from Canvas",
        "01_rnn_limits.ipynb": _notebook(course, "no-student"),
        "__MACOSX/._lovelaceada_12345_67890_01_rnn_limits.ipynb": b"\0\5\26\7",
    })
    assert cli.main(["collect", str(canvas)]) == 0  # the assignment inferred from the names
    out = capsys.readouterr().out

    students = {"12345": "ada", "23456": "charles", "34567": "grace", "45678": "alan-new",
                "56789": "kleene"}
    submitted = course / "submitted"
    assert {p.parent.name for p in submitted.glob(f"*/{A.id}")} == set(students)
    for student, marker in students.items():
        folder = submitted / student / A.id
        assert [p.name for p in folder.iterdir()] == [f"{A.id}.ipynb"]
        assert _marker(course, student) == marker
        assert verdict.unreadable(folder, [A.id]) == ""  # what `attn-course grade` checks
    assert (course / "downloaded" / A.id / "archive" / "submissions.zip").is_file()

    assert f"collected 5 notebooks of 5 students for {A.id}" in out
    assert "marked late by the LMS: 1 (23456)" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert "renamed" not in lines["12345"] and "lovelaceada" in lines["12345"]
    for student in ("23456", "34567"):  # uploaded as ...-1.ipynb, Copy of ...
        assert "renamed to 01_rnn_limits.ipynb" in lines[student]
    for path, reason in [
        ("turingalan_45678_67893_01_rnn_limits.ipynb [45678]", "a second notebook of 45678"),
        ("turingalan_45678_67894_notes.pdf [45678]", "not a notebook"),
        ("readme.txt", "name does not match the pattern"),
        ("01_rnn_limits.ipynb", "name does not match the pattern"),
        ("__MACOSX/._lovelaceada_12345_67890_01_rnn_limits.ipynb", "system file"),
    ]:
        assert f"  {path}: {reason}" in out, out
    assert "skipped 5 files" in out
    assert "unpacked (their files are listed): kleenes_56789_67896_work.zip" in out

    # A resubmission by hand, and a newcomer, named <student>__<file>: the others stay as
    # they were, the student who already had a submission gets the new one.
    custom = _zip(tmp_path / "late-ones.zip", {
        "12345__01_rnn_limits.ipynb": _notebook(course, "ada-again"),
        "newcomer__01_rnn_limits (1).ipynb": _notebook(course, "newcomer"),
    })
    assert cli.main(["collect", str(custom), A.id,
                     "--regexp", r"(?P<student_id>[^_/]+)__(?P<file_id>.+)"]) == 0
    out = capsys.readouterr().out
    assert _marker(course, "12345") == "ada-again"
    assert _marker(course, "newcomer") == "newcomer"
    assert _marker(course, "45678") == "alan-new"
    assert "replaces the earlier submission" in out and "skipped no file" in out
    assert [p.name for p in (course / "downloaded" / A.id / "archive").iterdir()] == \
        ["late-ones.zip"]


# --------------------------------------------------------------------------- bad zips


def _bad_zips(tmp_path, course):
    nb = _notebook(course, "x")
    not_a_zip = tmp_path / "notes.zip"
    not_a_zip.write_text("this is not a zip")
    empty = _zip(tmp_path / "empty.zip", {})
    damaged = _zip(tmp_path / "damaged.zip", {"ada_1_2_01_rnn_limits.ipynb": nb})
    data = bytearray(damaged.read_bytes())
    data[30 + len("ada_1_2_01_rnn_limits.ipynb") + 10] ^= 0xFF  # in the data: fails its CRC
    damaged.write_bytes(bytes(data))
    return {
        "missing": ([str(tmp_path / "nowhere.zip")], "no such file"),
        "not_a_zip": ([str(not_a_zip)], "is not a zip file"),
        "empty": ([str(empty)], "is empty"),
        "damaged": ([str(damaged)], "damaged"),
        "no_notebooks": ([str(_zip(tmp_path / "pdfs.zip", {"ada_1_2_report.pdf": b"%PDF"}))],
                         "has no notebooks"),
        "no_match": ([str(_zip(tmp_path / "odd.zip", {"01_rnn_limits by ada.ipynb": nb}))],
                     "matches the naming pattern"),
        "two_assignments": ([str(_zip(tmp_path / "mixed.zip", {
            "ada_1_2_01_rnn_limits.ipynb": nb, "ben_3_4_03_qkv_lookup.ipynb": nb}))],
            "several assignments"),
        "no_assignment_named": ([str(_zip(tmp_path / "anon.zip", {"ada_1_2_hw.ipynb": nb}))],
                                "say which one"),
        "unsafe": ([str(_zip(tmp_path / "unsafe.zip", {"../ada_1_2_01_rnn_limits.ipynb": nb}))],
                   "outside its folder"),
        "bad_regexp": ([str(_zip(tmp_path / "ok.zip", {"ada_1_2_01_rnn_limits.ipynb": nb})),
                        "--regexp", r"(?P<student_id>\w+)"], "file_id"),
        "unknown_id": ([str(tmp_path / "ok.zip"), "99_nothing"], "unknown assignment"),
    }


def test_bad_zips_stop_with_a_message(course, tmp_path, capsys):
    for case, (argv, word) in _bad_zips(tmp_path, course).items():
        with pytest.raises(SystemExit) as exc:
            cli.main(["collect", *argv])
        assert word in str(exc.value), (case, str(exc.value))
        assert "Traceback" not in str(exc.value)
    assert not (course / "submitted").exists() and not (course / "downloaded").exists()


@pytest.mark.parametrize("regexp, path, student", [
    (r"(?P<file_id>.+)_(?P<student_id>s\d+)\.ipynb", "01_rnn_limits_s1234567.ipynb", "s1234567"),
    (r"(?:.*/)?[^/_]+_(?P<student_id>\d+)_assignsubmission_file_/?(?P<file_id>.+)",
     "Participant_101_assignsubmission_file_/01_rnn_limits.ipynb", "101"),
])
def test_regexps_in_the_instructor_guide(root, regexp, path, student):
    assert regexp in (root / "docs" / "instructor-guide.md").read_text(encoding="utf-8")
    (entry,) = collect.plan([path], collect.compile_regexp(regexp), NB)
    assert (entry.action, entry.student, entry.dest) == ("collected", student, NB[0])
