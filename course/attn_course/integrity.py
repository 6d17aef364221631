"""What keeps one submission from changing anything but its own grade (see ``grading``).

- :func:`scan` reads a submission's code (without running it) and flags what a reviewer
  should look at: importing the grading package, monkeypatching torch, numpy, builtins or
  the checks, reloading modules, touching ``sys.modules``.
- :class:`FileGuard` remembers files the grading depends on (the grading and helper
  packages, the course's source and config, ``.pth`` start-up hooks, the gradebook, other
  submissions) byte for byte, notices any change, and puts them back.
- :func:`restore_missing_cells` and :func:`assignment_of` handle notebooks whose structure
  nbgrader cannot cope with on its own.
"""

from __future__ import annotations

import ast
import hashlib
import shutil
import site
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nbformat

from attn_course import notebooks

_PARSE = threading.Lock()

#: Module roots whose attributes student code has no business replacing.
GUARDED_MODULES = {"torch", "numpy", "builtins", "math", "attn_grader", "attn_utils", "nbgrader"}


# --------------------------------------------------------------------------- static scan


def _module_aliases(tree: ast.AST) -> dict[str, str]:
    """Local name -> the root module it is bound to (``import numpy as np`` -> np: numpy)."""
    aliases = {"__builtins__": "builtins"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for a in node.names:
                # from torch import nn / from torch.nn import functional as F: modules of torch
                aliases[a.asname or a.name] = root
    return aliases


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, ast.Attribute | ast.Subscript):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    try:
        return ast.unparse(node)
    except Exception:  # pragma: no cover - ast.unparse handles every parsed node
        return "?"


def scan_source(code: str) -> list[str]:
    """Why a reviewer should look at this code; [] when nothing stands out."""
    try:
        with _PARSE:  # ast.parse is not thread-safe on Python 3.11 (CPython gh-106905)
            tree = ast.parse(code)
    except SyntaxError:
        return []  # it cannot run either; nbgrader reports the SyntaxError
    aliases = _module_aliases(tree)
    flags: list[str] = []

    def guarded(node) -> str | None:
        root = _root_name(node)
        module = aliases.get(root or "")
        return module if module in GUARDED_MODULES else None

    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names]
            mods = [node.module or ""] if isinstance(node, ast.ImportFrom) else names
            for m in mods:
                if m.split(".")[0] == "attn_grader":
                    flags.append(f"imports the grading package ({m})")
                if m.split(".")[0] == "builtins":
                    flags.append("imports builtins")
        elif isinstance(node, ast.Assign | ast.AugAssign | ast.AnnAssign | ast.Delete):
            targets = node.targets if isinstance(node, ast.Assign | ast.Delete) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute | ast.Subscript) and (module := guarded(t)):
                    flags.append(f"replaces {_dotted(t)} (monkeypatches {module})")
        elif isinstance(node, ast.Call):
            func = _dotted(node.func)
            if func in ("setattr", "delattr") and node.args and (module := guarded(node.args[0])):
                flags.append(f"calls {func} on {_dotted(node.args[0])} (monkeypatches {module})")
            elif func.endswith("reload"):
                flags.append(f"reloads a module ({_dotted(node)[:80]})")
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str) \
                        and "attn_grader" in arg.value:
                    flags.append(f"names the grading package in a call ({func})")
        elif isinstance(node, ast.Attribute) and node.attr == "modules" \
                and _dotted(node.value) == "sys":
            flags.append("uses sys.modules")
    return list(dict.fromkeys(flags))


def scan(nb) -> list[str]:
    """:func:`scan_source` over the notebook's code cells, except the test cells (nbgrader
    restores those from the source), each flag with where it is."""
    flags = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or notebooks.is_graded(cell) \
                and not notebooks.is_solution(cell):
            continue
        where = notebooks.grade_id(cell) or f"cell {i + 1}"
        source = "\n".join(line for line in cell.source.splitlines()
                           if not line.lstrip().startswith(("%", "!")))
        flags += [f"{where}: {f}" for f in scan_source(source)]
    return flags


# --------------------------------------------------------------------------- files


def _files(path: Path, pattern: str = "**/*") -> Iterable[Path]:
    if path.is_file():
        yield path
    elif path.is_dir():
        for p in sorted(path.glob(pattern)):
            if p.is_file() and not p.is_symlink():
                yield p


def _read(p: Path) -> bytes | None:
    try:
        return p.read_bytes()
    except OSError:
        return None


def site_dirs() -> list[Path]:
    dirs = {*site.getsitepackages(), site.getusersitepackages()}
    return sorted(Path(d) for d in dirs if Path(d).is_dir())


def startup_hooks() -> list[Path]:
    """Files Python runs at every start besides ``.pth`` files (watched as a pattern):
    ``sitecustomize`` and ``usercustomize``."""
    return [p for d in site_dirs() for p in (d / "sitecustomize.py", d / "usercustomize.py")
            if p.exists()]


@dataclass
class Change:
    path: Path
    kind: str  # "changed" | "added" | "removed"

    def __str__(self) -> str:
        return f"{self.kind} {self.path}"


class FileGuard:
    """Byte-for-byte memory of some files and folders, to notice changes and undo them.

    ``watch`` a folder and any file added under it later counts as a change too (and is
    removed on :meth:`restore`). Byte code (``__pycache__``) is not a change: any Python
    process may write it. :meth:`clean_bytecode` deletes what appeared or changed there, so
    that a planted ``.pyc`` never outlives the run (Python recompiles what is missing).

    Used from several threads (jobs copy from it while the grader refreshes it), hence the
    lock."""

    def __init__(self):
        self.roots: list[tuple[Path, str]] = []
        self.content: dict[Path, bytes] = {}
        self.stat: dict[Path, tuple[int, int]] = {}
        self.lock = threading.RLock()

    def watch(self, *paths: Path) -> None:
        for root in paths:
            self.watch_glob(root, "**/*")

    def watch_glob(self, folder: Path, pattern: str) -> None:
        """The files of ``folder`` matching ``pattern``, and any that appear later."""
        root = (Path(folder).resolve(), pattern)
        with self.lock:
            if root not in self.roots:
                self.roots.append(root)
            for p in _files(*root):
                self._remember(p)

    def _remember(self, p: Path) -> None:
        self.content[p] = p.read_bytes()
        st = p.stat()
        self.stat[p] = (st.st_size, st.st_mtime_ns)

    def refresh(self, path: Path) -> None:
        """Accept the current contents of a path under watch (the grader wrote it)."""
        path = Path(path).resolve()
        with self.lock:
            for p in [p for p in self.content if p == path or path in p.parents]:
                if not p.exists():
                    del self.content[p], self.stat[p]
            for p in _files(path):
                if any(p == r or r in p.parents for r, _ in self.roots):
                    self._remember(p)

    def changes(self) -> list[Change]:
        with self.lock:
            return self._changes()

    def _changes(self) -> list[Change]:
        found = []
        present = set()
        for root in self.roots:
            for p in _files(*root):
                if "__pycache__" in p.parts:
                    continue
                present.add(p)
                if p not in self.content:
                    found.append(Change(p, "added"))
                    continue
                st = p.stat()
                if (st.st_size, st.st_mtime_ns) != self.stat[p] and \
                        p.read_bytes() != self.content[p]:
                    found.append(Change(p, "changed"))
        found += [Change(p, "removed") for p in self.content
                  if p not in present and "__pycache__" not in p.parts]
        return found

    def restore(self, changes: list[Change], aside: Path | None = None) -> None:
        """Put the remembered files back; the changed or added ones are first moved under
        ``aside`` (same absolute path below it), so nothing anyone wrote is lost."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with self.lock:
            for c in changes:
                if c.kind != "removed" and aside is not None and c.path.exists():
                    keep = Path(aside) / stamp / c.path.relative_to(c.path.anchor)
                    keep.parent.mkdir(parents=True, exist_ok=True)
                    shutil.move(str(c.path), keep)
                if c.kind == "added":
                    c.path.unlink(missing_ok=True)
                    continue
                c.path.parent.mkdir(parents=True, exist_ok=True)
                if c.path.exists():
                    c.path.chmod(0o644)
                c.path.write_bytes(self.content[c.path])
                st = c.path.stat()
                self.stat[c.path] = (st.st_size, st.st_mtime_ns)

    def clean_bytecode(self) -> None:
        with self.lock:
            for root in self.roots:
                for p in _files(*root):
                    if "__pycache__" in p.parts and self.content.get(p) != _read(p):
                        p.unlink(missing_ok=True)

    def snapshot(self) -> list[tuple[Path, bytes]]:
        with self.lock:
            return list(self.content.items())

    def copy_tree(self, root: Path, dest: Path) -> None:
        """Write the remembered files under ``root`` to ``dest`` (not what is on disk now,
        which another job may have changed)."""
        root = Path(root).resolve()
        with self.lock:
            items = list(self.content.items())
        if any(p == root for p, _ in items):  # a single file
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(dict(items)[root])
            return
        for p, data in items:
            if root in p.parents and "__pycache__" not in p.parts:
                target = dest / p.relative_to(root)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)


def tree_digest(root: Path, leave_out: tuple[str, ...] = ()) -> str:
    """A hash of the files under ``root``, byte code left out (any process may rewrite it,
    and it differs from machine to machine), and the top-level entries ``leave_out``."""
    h = hashlib.sha256()
    for p in _files(root):
        rel = p.relative_to(root)
        if "__pycache__" in p.parts or p.suffix in (".pyc", ".pyo") or rel.parts[0] in leave_out:
            continue
        h.update(str(rel).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def package_dirs() -> dict[str, Path]:
    """The grading and helper packages, as installed (the folders student code imports)."""
    import attn_course
    import attn_grader
    import attn_utils

    return {m.__name__: Path(m.__file__).parent for m in (attn_course, attn_grader, attn_utils)}


# --------------------------------------------------------------------------- structure


def _nbgrader_ids(nb) -> list[str]:
    return [gid for c in nb.cells if (gid := notebooks.grade_id(c))]


def assignment_of(nb, candidates: dict[str, set[str]]) -> str | None:
    """The assignment whose cell ids this notebook carries most of (None if none)."""
    ids = set(_nbgrader_ids(nb))
    best = max(candidates, key=lambda a: len(ids & candidates[a]), default=None)
    return best if best and ids & candidates[best] else None


def restore_missing_cells(nb, release_nb) -> list[str]:
    """Put back, from the released notebook, every nbgrader cell the student deleted
    (solution, test, given code), where it was, and return their ids.

    nbgrader restores a deleted test cell only after a cell it still finds, and fails with
    a KeyError when the cell before it is gone too (a student who deleted an exercise's
    solution and its test); putting the released cells back first avoids both."""
    have = set(_nbgrader_ids(nb))
    restored = []
    for i, cell in enumerate(release_nb.cells):
        gid = notebooks.grade_id(cell)
        if not gid or gid in have:
            continue
        anchor = None  # the nearest earlier released cell that the submission has
        for prev in reversed(release_nb.cells[:i]):
            pid = notebooks.grade_id(prev)
            if pid and pid in have:
                anchor = pid
                break
        at = 0
        if anchor is not None:
            at = next(j for j, c in enumerate(nb.cells) if notebooks.grade_id(c) == anchor) + 1
        nb.cells.insert(at, nbformat.from_dict(cell))
        have.add(gid)
        restored.append(gid)
    return restored


#: Cell tags that make an executor skip a cell: nbclient's default, and the course's own for
#: demos that only a reader looks at (``Execute.skip_cells_with_tag`` in nbgrader_config.py).
SKIP_TAGS = ("skip-execution", "reader-only")


def unskip_nbgrader_cells(nb) -> list[str]:
    """Remove skip tags from every nbgrader cell (solution, test, given) and return their ids.

    A skipped test cell shows no error, and nbgrader gives a test cell without an error full
    marks: tagging the tests ``skip-execution`` would earn full marks for a blank notebook."""
    unskipped = []
    for cell in nb.cells:
        tags = cell.get("metadata", {}).get("tags")
        if not notebooks.grade_id(cell) or not tags or not set(tags) & set(SKIP_TAGS):
            continue
        cell.metadata.tags = [t for t in tags if t not in SKIP_TAGS]
        unskipped.append(notebooks.grade_id(cell))
    return unskipped
