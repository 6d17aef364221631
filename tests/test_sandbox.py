"""attn_course.sandbox: what a grading job's kernel is given, and refusing to grade without."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attn_course import cli, grading, sandbox
from conftest import ROOT


def test_a_kernel_gets_only_the_environment_it_needs():
    env = {"PATH": "/usr/bin", "HOME": "/home/x", "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1",
           "AWS_SECRET_ACCESS_KEY": "k", "GITHUB_TOKEN": "t", "PGPASSWORD": "p",
           "JUPYTERHUB_API_TOKEN": "j", "LC_ALL": "C.UTF-8"}
    assert sandbox.kernel_env(env) == {"PATH": "/usr/bin", "HOME": "/home/x",
                                       "MPLBACKEND": "agg", "OMP_NUM_THREADS": "1",
                                       "LC_ALL": "C.UTF-8"}


def test_the_command_line_unshares_everything_and_hides_the_course(tmp_path):
    argv = sandbox.Sandbox(tmp_path).argv(["python"], {"SECRET": "s", "PATH": "/usr/bin"})
    for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session",
                 "--clearenv"):
        assert flag in argv
    assert argv[argv.index("--uid") + 1] != "0" and argv[argv.index("--cap-drop") + 1] == "ALL"
    binds = {argv[i + 1] for i, a in enumerate(argv) if a in ("--bind", "--ro-bind")}
    assert str(tmp_path) in binds and "/etc" not in binds
    for hidden in ("source", "submitted", "autograded", "gradebook.db", "autograder",
                   "course"):
        assert not any(b == str(ROOT / hidden) or b.startswith(f"{ROOT / hidden}/")
                       for b in binds), hidden
    assert "SECRET" not in argv
    writable = [argv[i + 1] for i, a in enumerate(argv) if a == "--bind"]
    assert writable == [str(tmp_path)]


def test_inside_nothing_of_the_course_and_no_network(tmp_path):
    assert sandbox.probe() is None, sandbox.probe()  # .ci/run installs bubblewrap
    code = ("import json, os, socket\n"
            f"root = {str(ROOT)!r}\n"
            "seen = sorted(os.listdir(root)) if os.path.isdir(root) else []\n"
            "s = socket.socket()\n"
            "print(json.dumps([seen, s.connect_ex(('1.1.1.1', 53)) != 0]))\n")
    argv = sandbox.Sandbox(tmp_path).argv([sys.executable, "-c", code], dict(os.environ))
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    seen, unreachable = json.loads(out.stdout)
    # only what a kernel needs from the course's folder: its virtual environment (when it is
    # there, as with `python3 tasks.py`) and the helper package; no source/, no grading package
    assert set(seen) <= {".venv", "utils"}, seen
    assert unreachable


def test_grading_refuses_without_a_sandbox_and_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "probe", lambda bwrap=None: "bubblewrap (`bwrap`) is not "
                        "installed. Install it (Debian/Ubuntu: `sudo apt-get install bubblewrap`)")
    (tmp_path / "submitted" / "s" / "01_rnn_limits").mkdir(parents=True)
    monkeypatch.setenv("ATTN_COURSE_ROOT", str(tmp_path))
    with pytest.raises(SystemExit, match="apt-get install bubblewrap"):
        cli.main(["grade", "01_rnn_limits"])
    with pytest.raises(sandbox.SandboxUnavailable):
        grading.grade(Path(tmp_path), ["01_rnn_limits"], progress=False)


def test_the_probe_says_what_is_missing(monkeypatch):
    monkeypatch.setattr(sandbox, "find_bwrap", lambda: None)
    assert "apt-get install bubblewrap" in sandbox.probe()
    assert "--no-sandbox" in sandbox.probe()
