"""``attn-course book``: the worked solutions as a static site for self-learners.

Every notebook of the manifest, in course order, executed, with its solutions shown, its figures
and its math, but without the hidden tests; a landing page with the course map; Sphinx with
MyST-NB and the book theme, all from PyPI. It is built offline and reads offline: MathJax is
copied from the ``sphinx-mathjax-offline`` package into the site instead of coming from a CDN,
and outputs that would need JavaScript from the network (ipywidgets progress bars) are left out.

    build/book-src/   the generated Sphinx project (conf.py, index.md, the cleaned notebooks)
    build/book/       the site: open build/book/index.html
"""

from __future__ import annotations

import copy
import importlib.metadata
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from attn_course import notebooks
from attn_course.execute import execute_notebook
from attn_course.manifest import Assignment

TITLE = "Attention, from the limits of RNNs to the Transformer"
HIDDEN_REGION = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS.*?^[ \t]*### END HIDDEN TESTS[^\n]*\n?",
                           re.M | re.S)
SOLUTION_MARKER = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[^\n]*\n?", re.M)
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
# Nothing of the grading side may reach a page.
FORBIDDEN = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS", "attn_grader", "### BEGIN SOLUTION",
             '"nbgrader": {')
# The MathJax files the site needs (tex-chtml and what it loads on demand), not the other bundles.
MATHJAX_SKIP = ("tex-svg*", "tex-mml-*", "tex-chtml-full*", "mml-*", "node-main.js", "latest.js",
                "svg", "svg.js", "sre")


def default_out(root: Path) -> Path:
    return root / "build" / "book"


# -- the executed notebooks -------------------------------------------------------------------

def executed(a: Assignment, root: Path, *, quick: bool = False,
             log: Callable[[str], None] = print) -> NotebookNode:
    """The executed worked solution: build/solutions/<id>.ipynb when it is newer than the
    source notebook, else a fresh run (saved to build/solutions/ unless ``quick``)."""
    source = a.source_notebook(root)
    cached = root / "build" / "solutions" / f"{a.id}.ipynb"
    if cached.is_file() and cached.stat().st_mtime > source.stat().st_mtime:
        log(f"  {a.id}: reusing {cached.relative_to(root)}")
        return notebooks.read(cached)
    nb, seconds = execute_notebook(source, None if quick else cached, quick=quick)
    log(f"  {a.id}: executed{' (quick mode)' if quick else ''} in {seconds:.0f} s")
    return nb


# -- from a worked solution to a page ---------------------------------------------------------

def page_notebook(nb: NotebookNode, a: Assignment) -> NotebookNode:
    """The page version of an executed worked solution: hidden-test cells (and their score
    outputs) removed, solution markers and nbgrader metadata stripped, network-only outputs
    (widgets, which need JavaScript from a CDN) dropped, a one-line header added."""
    nb = copy.deepcopy(nb)
    cells = []
    for cell in nb.cells:
        if notebooks.is_hidden_test(cell):
            continue
        source, hidden = HIDDEN_REGION.subn("", cell.source)
        if cell.cell_type == "code":
            source = SOLUTION_MARKER.sub("", source)
            code = [ln for ln in source.splitlines() if ln.strip() and not ln.lstrip()[0] == "#"]
            if hidden and not code:
                continue  # nothing left but comments: it was a test cell
            cell.outputs = [_without_widgets(o) for o in cell.outputs]
            cell.outputs = [o for o in cell.outputs if o is not None]
        cell.source = source
        cell.metadata.pop("nbgrader", None)
        cells.append(cell)
    header = nbformat.v4.new_markdown_cell(
        f"*Worked solution of assignment `{a.id}` ({a.points:g} points), executed: the answers "
        "are shown in full and the hidden tests that grade them are left out. The student "
        "version, with these cells to fill in, is `release/"
        f"{a.id}/{a.id}.ipynb`.*")
    first_title = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"), -1)
    cells.insert(first_title + 1, header)
    nb.cells = cells
    nb.metadata.pop("widgets", None)
    nb.metadata.pop("nbgrader", None)
    errors = [o for c in cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    if errors:
        raise RuntimeError(f"{a.id}: the worked solution has error outputs: {errors[0].ename}")
    text = nbformat.writes(nb)
    leaked = [word for word in FORBIDDEN if word in text]
    if leaked:
        raise RuntimeError(f"{a.id}: the page would show grading material ({', '.join(leaked)})")
    return nb


def _without_widgets(output):
    if output.output_type not in ("display_data", "execute_result"):
        return output
    if WIDGET_MIME in output.get("data", {}):
        return None  # a tqdm progress bar: its text fallback is only the initial 0% state
    return output


# -- the Sphinx project -----------------------------------------------------------------------

CONF = '''\
# Generated by attn_course.book: edit that module, not this file.
project = {title!r}
author = "the course authors"
extensions = ["myst_nb"]
exclude_patterns = [".doctrees", "**.ipynb_checkpoints"]
nb_execution_mode = "off"            # executed beforehand by attn_course.book
nb_output_stderr = "remove"          # progress bars and warnings
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 2
smartquotes = False                  # the course map quotes the manifest verbatim
html_theme = "sphinx_book_theme"
html_title = "Attention: worked solutions"
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-chtml.js"  # vendored from sphinx-mathjax-offline: no CDN
html_copy_source = False
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {{
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
}}
'''


def landing_page(selected: list[Assignment]) -> str:
    rows = "\n".join(
        f"| {a.id.split('_')[0]} | [{a.title}]({a.id}.ipynb) | {a.teaches} | {a.points:g} |"
        for a in selected)
    toctree = "\n".join(a.id for a in selected)
    return f"""# {TITLE}

The worked solutions of the course, executed, for self-learners: every notebook in course order,
with the answers to the exercises written out, the figures they produce, and the measurements.
Students get the same notebooks with the answers left blank (`release/`) and check their work
with the visible tests under each exercise; the hidden tests that grade the answers are not shown
here.

## The course map

| # | Notebook | What it teaches | Points |
|---|----------|-----------------|--------|
{rows}

Read them in order: each notebook builds on the ideas (and re-derives the code) of the ones
before it. Use the sidebar or the links at the bottom of each page to move between notebooks.

```{{toctree}}
:hidden:
:maxdepth: 1
:caption: Notebooks

{toctree}
```
"""


def _mathjax_source() -> Path:
    dist = importlib.metadata.distribution("sphinx-mathjax-offline")
    folder = Path(dist.locate_file("sphinx-mathjax-offline/static/mathjax"))
    if not (folder / "tex-chtml.js").is_file():
        raise RuntimeError(f"MathJax is missing from the sphinx-mathjax-offline package ({folder})")
    return folder


def write_project(src: Path, pages: dict[str, NotebookNode], selected: list[Assignment]) -> None:
    if src.exists():
        shutil.rmtree(src)
    (src / "_static").mkdir(parents=True)
    shutil.copytree(_mathjax_source(), src / "_static" / "mathjax",
                    ignore=shutil.ignore_patterns(*MATHJAX_SKIP))
    (src / "conf.py").write_text(CONF.format(title=TITLE), encoding="utf-8")
    (src / "index.md").write_text(landing_page(selected), encoding="utf-8")
    for page_id, nb in pages.items():
        nbformat.write(nb, str(src / f"{page_id}.ipynb"))


def sphinx_build(src: Path, out: Path) -> list[str]:
    """Run Sphinx (in its own process); return its warnings. Raises if the build fails."""
    if out.exists():
        shutil.rmtree(out)
    warnings = src / "sphinx-warnings.txt"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-E", "--keep-going",
           "-d", str(src / ".doctrees"), "-w", str(warnings), str(src), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"sphinx failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return [ln for ln in warnings.read_text(encoding="utf-8").splitlines() if ln.strip()]


def build_book(root: Path, selected: list[Assignment], *, out: Path | None = None,
               quick: bool = False, log: Callable[[str], None] = print) -> Path:
    """Build the site of the worked solutions of ``selected`` into ``out`` (build/book/ by
    default) and return its index.html."""
    out = out or default_out(root)
    src = out.with_name(out.name + "-src")
    start = time.perf_counter()
    log("executed notebooks:")
    pages = {a.id: page_notebook(executed(a, root, quick=quick, log=log), a) for a in selected}
    write_project(src, pages, selected)
    built = time.perf_counter()
    warnings = sphinx_build(src, out)
    log(f"site built by Sphinx in {time.perf_counter() - built:.0f} s"
        + (f" with {len(warnings)} warnings (see {src / 'sphinx-warnings.txt'})"
           if warnings else ""))
    log(f"book done in {time.perf_counter() - start:.0f} s")
    return out / "index.html"
