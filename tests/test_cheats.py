"""The cheat corpus: what a hostile student could hand in, graded end to end by
`attn-course grade` (sandboxed, two workers) beside honest students.

Every cheat solves nothing (the released notebook, with the cheat added as a cell after the
setup cell), so anything above 0 would be a forged grade. For each: no credit, the honest
students keep exactly their grades, a flag where the attempt can be seen, and, where the
cheat reports what it found, proof that it found nothing (the grader's files, the network,
the other kernels).
"""

from __future__ import annotations

import fcntl
import json
import shutil
import socket
import threading

import nbformat
import pytest

from attn_course import cli, notebooks, sample_class
from attn_course.manifest import assignment
from conftest import copy_course, session_shared_dir

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cheats")]

A = assignment("01_rnn_limits")
HONEST = {"ada_full_marks": "full", "dee_raises_errors": "half"}

# Each cheat: (code of the cell added after the setup cell, a phrase one of its flags must
# contain, or "" when there is nothing to see). PORT, ROOT and POINTS are filled in.
CHEATS = {
    "ast_transformer_forges_grade_calls": ('''
import ast
class Forge(ast.NodeTransformer):
    def visit_Call(self, node):
        self.generic_visit(node)
        if getattr(node.func, "id", "") == "grade":
            points = [k.value for k in node.keywords if k.arg == "points"]
            return points[0] if points else ast.Constant(1)
        return node
get_ipython().ast_transformers.append(Forge())
''', "ast_transformers"),
    "input_transformer_rewrites_tests": ('''
def forge(lines):
    text = "".join(lines)
    if "grade(" in text:
        return ["POINTS\\n"]
    return lines
get_ipython().input_transformers_post.append(forge)
''', "input_transformers_post"),
    "displayhook_forges_a_number": ('''
import sys
_real = sys.displayhook
def forge(value):
    _real(POINTS)
sys.displayhook = forge
get_ipython().displayhook.__class__.__call__ = lambda self, value: _real(POINTS)
''', "displayhook"),
    "display_publisher_forges_output": ('''
ip = get_ipython()
_publish = ip.display_pub.publish
def forge(data, metadata=None, **kw):
    return _publish({"text/plain": "POINTS"}, metadata, **kw)
ip.display_pub.publish = forge
class Pub(type(ip.display_pub)):
    pass
ip.display_pub.__class__ = Pub
Pub.publish = lambda self, data, metadata=None, **kw: _publish({"text/plain": "POINTS"})
''', "display publisher"),
    "events_forge_results": ('''
def after(result):
    result.result = POINTS
    result.error_in_exec = None
get_ipython().events.register("post_run_cell", after)
get_ipython().events.register("pre_run_cell", lambda info: None)
''', "event callback"),
    "replaces_grade_through_sys_modules": ('''
import sys, types
name = "attn_" + "grader"
fake = types.ModuleType(name)
fake.grade = lambda *a, points=0, **k: points
fake.check = lambda *a, **k: None
fake.judge = fake.grade
sys.modules[name] = fake
globals()["grade"] = fake.grade
''', "sys.modules"),
    "import_hook_fakes_the_grading_package": ('''
import builtins, types
_import = builtins.__import__
def fake_import(name, *a, **k):
    if name.startswith("attn_" + "grader"):
        m = types.ModuleType(name)
        m.grade = lambda *a, points=0, **k: points
        return m
    return _import(name, *a, **k)
builtins.__import__ = fake_import
''', "builtins.__import__"),
    "patches_torch_comparisons": ('''
import torch, numpy, math
torch.allclose = lambda *a, **k: True
torch.Tensor.__eq__ = lambda self, other: torch.ones((), dtype=torch.bool)
numpy.allclose = lambda *a, **k: True
math.isclose = lambda *a, **k: True
''', "torch.allclose"),
    "wraps_the_reference": ('''
try:
    from attn_grader.nb01_rnn_limits.reference import *  # noqa
except Exception as exc:
    print("REFERENCE:", type(exc).__name__)
''', "imports the grading package"),
    "reads_hidden_tests_from_disk": ('''
import os
found = []
for top in [os.getcwd(), os.path.dirname(os.getcwd()), "/", "ROOT"]:
    for folder, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr")][:50]
        for f in files:
            if f.endswith(".ipynb") or f == "gradebook.db":
                try:
                    text = open(os.path.join(folder, f), errors="ignore").read()
                except OSError:
                    continue
                if "HIDDEN TESTS" in text or f == "gradebook.db":
                    found.append(os.path.join(folder, f))
print("FOUND:", found)
''', "tried to reach"),
    "reads_the_gradebook": ('''
try:
    open("ROOT/gradebook.db", "rb").read()
    print("GRADEBOOK: read")
except OSError as exc:
    print("GRADEBOOK:", type(exc).__name__)
''', "tried to reach"),
    "uses_the_network": ('''
import socket
for host in ("127.0.0.1", "10.0.0.1"):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((host, PORT))
        s.sendall(b"let me in")
        print("NETWORK: connected", host)
    except OSError as exc:
        print("NETWORK:", host, type(exc).__name__)
''', "network"),
    "signals_the_grader_and_other_kernels": ('''
import os, signal
killed = []
for pid in [os.getppid(), 1] + [int(p) for p in os.listdir("/proc") if p.isdigit()]:
    if pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except OSError:
            pass
print("KILLED:", killed)
''', ""),
    "fork_bomb_in_the_background": ('''
import os, time
if os.fork() == 0:
    os.setsid()
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.01)
''', ""),
    "writes_other_students_files": ('''
import glob, os
written = []
for pattern in ("ROOT/submitted/*/*/*.ipynb", "ROOT/autograded/*/*/*.ipynb", "ROOT/gradebook.db",
                "/tmp/*/*/*.ipynb", "../../*/*.ipynb"):
    for path in glob.glob(pattern):
        try:
            open(path, "w").write("{}")
            written.append(path)
        except OSError:
            pass
print("WRITTEN:", len(written))
''', "tried to reach"),
    "huge_output_past_the_cap": ('''
import os
chunk = b"x" * (1 << 20)
for _ in range(256):
    os.write(1, chunk)
''', ""),
    "outlives_its_notebook": ('''
import os, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        time.sleep(20)  # after the notebook ended: try to spoil the next submission's slot
        for folder, _, files in os.walk("/tmp"):
            for f in files:
                try:
                    open(os.path.join(folder, f), "w").write("spoiled")
                except OSError:
                    pass
    os._exit(0)
''', ""),
    "replaces_the_grading_agent": ('''
import sys, torch
agent = sys.modules.get("_attn_grading_agent")
if agent is not None:
    def fake_call(self, header, dec, enc):
        return {"value": enc(torch.zeros(2, 3)), "outputs_rg": [False], "changed": enc([])}
    agent.Agent.op_call = fake_call
''', "grading agent"),
}


def _cheater(release, code: str):
    nb = nbformat.from_dict(release)
    at = next(i for i, c in enumerate(nb.cells) if notebooks.grade_id(c) == "setup") + 1
    nb.cells.insert(at, nbformat.v4.new_code_cell(code))
    return nb


class _Listener:
    """A TCP server on the grading machine's loopback that counts who connects."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()


def _printed(course, student: str) -> str:
    path = course / "autograded" / student / A.id / f"{A.id}.ipynb"
    if not path.exists():
        return ""
    nb = nbformat.read(str(path), as_version=4)
    return "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                   if o.get("output_type") == "stream")


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    shared = session_shared_dir(tmp_path_factory, "cheats")
    with open(shared.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        outcome = shared / "outcome.json"
        if not outcome.exists():
            shared.mkdir(parents=True, exist_ok=True)
            outcome.write_text(json.dumps(_grade(shared)))
        data = json.loads(outcome.read_text())
    data["course"] = shared / "course"
    return data


def _grade(base) -> dict:
    course = copy_course(base / "course")
    sample_class.write_submissions(course, A)
    for student in set(sample_class.STUDENTS) - set(HONEST):
        shutil.rmtree(course / "submitted" / student)
    release = notebooks.read(A.release_notebook(course))
    listener = _Listener()
    for student, (code, _) in CHEATS.items():
        code = (code.replace("PORT", str(listener.port)).replace("ROOT", str(course))
                .replace("POINTS", str(A.points)))
        folder = course / "submitted" / student / A.id
        folder.mkdir(parents=True)
        nbformat.write(_cheater(release, code), str(folder / f"{A.id}.ipynb"))
    import os

    os.environ["ATTN_COURSE_ROOT"] = str(course)  # what `attn-course grade` grades
    try:
        assert cli.main(["grade", A.id, "--workers", "2", "--wall-time", "120"]) == 0
    finally:
        del os.environ["ATTN_COURSE_ROOT"]
    manifest = json.loads((course / "autograded" / ".attn-grading.json").read_text())
    rows = {entry["student"]: entry for entry in manifest.values()}
    return {"rows": rows, "connections": listener.connections,
            "printed": {s: _printed(course, s) for s in CHEATS}}


@pytest.mark.parametrize("student", sorted(CHEATS))
def test_a_cheat_earns_nothing(graded, student):
    row = graded["rows"][student]
    assert row["score"] == 0, (row["cells"], row["reason"])


@pytest.mark.parametrize("student", sorted(CHEATS))
def test_a_cheat_is_flagged_where_it_can_be_seen(graded, student):
    phrase = CHEATS[student][1]
    flags = graded["rows"][student]["flags"]
    if phrase:
        assert any(phrase in f for f in flags), flags


def test_honest_students_keep_their_grades_and_are_never_flagged(graded):
    solutions = sample_class._solutions(notebooks.read(A.source_notebook(graded["course"])))
    points = notebooks.graded_cells(notebooks.read(A.source_notebook(graded["course"])))
    half = list(solutions)[: (len(solutions) + 1) // 2]
    expected = {"full": sum(points.values()),
                "half": sum(points[f"test_{n}"] for n in half)}
    for student, kind in HONEST.items():
        row = graded["rows"][student]
        assert row["score"] == expected[kind], row
        assert row["flags"] == [], row["flags"]


def test_nothing_of_the_grader_was_reachable(graded):
    printed = graded["printed"]
    found = printed["reads_hidden_tests_from_disk"].split("FOUND:", 1)[1].splitlines()[0]
    course = str(graded["course"])
    # (nbgrader's own test notebooks, in the read-only virtual environment, are no secret)
    assert course not in found and "attn-" not in found, found
    assert "GRADEBOOK: FileNotFoundError" in printed["reads_the_gradebook"]
    assert "WRITTEN: 0" in printed["writes_other_students_files"]
    assert "REFERENCE: ModuleNotFoundError" in printed["wraps_the_reference"]
    assert "NETWORK: connected" not in printed["uses_the_network"]
    assert "NETWORK: 127.0.0.1 ConnectionRefusedError" in printed["uses_the_network"]
    assert graded["connections"] == 0


def test_a_kernel_sees_only_its_own_processes(graded):
    killed = graded["printed"]["signals_the_grader_and_other_kernels"]
    pids = json.loads(killed.split("KILLED:", 1)[1].splitlines()[0].strip()) if "KILLED:" in \
        killed else []
    assert all(p < 100 for p in pids), pids  # its own PID namespace, nothing of the host
