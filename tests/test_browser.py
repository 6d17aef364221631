"""In a real browser (Debian's chromium, headless, driven by Playwright; never a downloaded
browser): the worked-solutions site that `attn-course book` builds, and the student's flow in
JupyterLab with the nbgrader extension.

Without /usr/bin/chromium these tests are skipped on a developer's machine and FAIL under CI
(CI=true), where .ci/run installs it. Screenshots go to build/test-artifacts/.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from attn_course import book, notebooks
from conftest import ASSIGNMENTS, ROOT, assignment_params

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = ROOT / "build" / "test-artifacts"
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false", "no")

# The student's flow: which notebook is opened and which exercise is filled in.
LAB_NOTEBOOK = "01_rnn_limits"
LAB_EXERCISE = "rnn_step"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _browser_missing() -> str | None:
    if not CHROMIUM.is_file():
        return f"{CHROMIUM} is missing (`apt-get install chromium`; .ci/run does it in CI)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (`pip install -e .[dev]`)"
    return None


@pytest.fixture(scope="session", autouse=True)
def browser_available():
    """Before anything is built: skip without a browser, except under CI, where it fails."""
    missing = _browser_missing()
    if missing and IN_CI:
        pytest.fail(f"browser tests cannot run under CI: {missing}")
    if missing:
        pytest.skip(missing)


@pytest.fixture(scope="session")
def playwright_api():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def context(playwright_api, tmp_path):
    """A fresh Chromium profile whose requests may only go to 127.0.0.1: anything else is
    aborted and reported in ``context.external_requests``."""
    ctx = playwright_api.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
        headless=True, viewport={"width": 1400, "height": 1000})
    ctx.external_requests = []

    def only_loopback(route):
        if re.match(r"^(https?|wss?)://127\.0\.0\.1[:/]", route.request.url) or \
                route.request.url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            ctx.external_requests.append(route.request.url)
            route.abort()

    ctx.route("**/*", only_loopback)
    try:
        yield ctx
    finally:
        ctx.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the worked-solutions site ----------------------------------------------------------------

@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """The site, built as `attn-course book --quick` builds it, into a temporary folder."""
    out = tmp_path_factory.mktemp("book") / "book"
    index = book.build_book(ROOT, ASSIGNMENTS, out=out, quick=True, log=lambda _: None)
    assert index.is_file()
    return out


@pytest.fixture(scope="session")
def site_url(site):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _open(context, url):
    page = context.new_page()
    page.js_errors = []
    page.bad_responses = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    page.on("response", lambda r: r.status >= 400 and page.bad_responses.append(
        f"{r.status} {r.url}"))
    response = page.goto(url)
    assert response is not None and response.ok, url
    page.wait_for_load_state("load")
    return page


def _figure_count(site: Path, a) -> int:
    """How many figures (image outputs) the page's executed notebook holds."""
    nb = json.loads((site.with_name(site.name + "-src") / f"{a.id}.ipynb").read_text())
    return sum("image/png" in o.get("data", {}) for c in nb["cells"] if c["cell_type"] == "code"
               for o in c["outputs"])


@pytest.mark.xdist_group("book")
def test_landing_page_has_the_course_map_in_course_order(site_url, context):
    page = _open(context, f"{site_url}/index.html")
    text = page.inner_text("main")
    for a in ASSIGNMENTS:
        assert a.title in text and a.teaches in text, a.id
    links = page.eval_on_selector_all(
        "main table a", "els => els.map(e => e.getAttribute('href'))")
    assert links == [f"{a.id}.html" for a in ASSIGNMENTS]
    sidebar = page.eval_on_selector_all(
        ".bd-sidebar-primary a.reference.internal", "els => els.map(e => e.getAttribute('href'))")
    assert [h for h in sidebar if h != "#"] == [f"{a.id}.html" for a in ASSIGNMENTS]
    assert not context.external_requests and not page.js_errors and not page.bad_responses


@pytest.mark.xdist_group("book")
def test_the_site_has_figures(site):
    counts = {a.id: _figure_count(site, a) for a in ASSIGNMENTS}
    assert sum(counts.values()) > 0, counts


@pytest.mark.xdist_group("book")
@pytest.mark.parametrize("assignment", assignment_params())
def test_notebook_page_shows_figures_math_and_solutions_without_hidden_tests(
        assignment, site, site_url, context):
    a = assignment
    page = _open(context, f"{site_url}/{a.id}.html")

    # Math: MathJax (served from the site itself) typesets every formula, with no errors.
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise",
                           timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    formulas = page.locator("main .math").count()
    typeset = page.locator("main .math mjx-container").count()
    assert formulas > 0 and typeset == formulas, f"{typeset} of {formulas} formulas typeset"
    assert page.locator("mjx-merror").count() == 0, "MathJax reports a TeX error"

    # Figures: one image per figure output of the executed notebook, each loaded, non-zero size.
    # (In quick mode, notebooks that draw through attn_utils' grading-aware show() have none.)
    figures = _figure_count(site, a)
    if figures:
        page.locator("main .cell_output img").last.scroll_into_view_if_needed()
    page.wait_for_function("() => Array.from(document.querySelectorAll('main .cell_output img'))"
                           ".every(i => i.complete)")
    sizes = page.eval_on_selector_all(
        "main .cell_output img", "els => els.map(i => [i.naturalWidth, i.naturalHeight])")
    assert len(sizes) == figures
    assert all(w > 0 and h > 0 for w, h in sizes), sizes

    # No error outputs; solutions visible; hidden tests and nbgrader markers left out.
    errors = page.locator("main .output.traceback, main .output.error, main .output.stderr")
    assert errors.count() == 0, errors.all_inner_texts()
    text = page.inner_text("main")
    assert "Traceback (most recent call last)" not in text
    for marker in ("BEGIN HIDDEN TESTS", "attn_grader", "BEGIN SOLUTION", "YOUR CODE HERE\n"):
        assert marker not in text, marker
    source = notebooks.read(a.source_notebook(ROOT))
    for name in notebooks.graded_names(source):
        assert re.search(rf"(def|class) {re.escape(name)}\b", text), f"no solution for {name}"

    # Navigation: previous/next links follow the course order.
    ids = [x.id for x in ASSIGNMENTS]
    i = ids.index(a.id)
    def hrefs(selector):
        return page.eval_on_selector_all(selector, "els => els.map(e => e.getAttribute('href'))")

    assert hrefs("a.left-prev") == ["index.html" if i == 0 else f"{ids[i - 1]}.html"]
    assert hrefs("a.right-next") == ([f"{ids[i + 1]}.html"] if i + 1 < len(ids) else [])

    assert not context.external_requests, context.external_requests
    assert not page.js_errors, page.js_errors
    assert not page.bad_responses, page.bad_responses

    if i == 0:  # keep one page as a test artifact
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("main .math mjx-container").first.scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / f"book-{a.id}.png"))


# -- the student's flow in JupyterLab ---------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _stop(proc: subprocess.Popen, shutdown_url: str) -> None:
    """Shut JupyterLab down (kernels included) whatever state it is in."""
    kernels = _descendants(proc.pid)  # kernels run in process groups of their own
    if proc.poll() is None:
        try:
            urllib.request.urlopen(urllib.request.Request(shutdown_url, method="POST"),
                                   timeout=5)
            proc.wait(timeout=20)
        except Exception:
            pass
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for pid in kernels:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab on a temporary copy of release/, on 127.0.0.1 with a random port and a token;
    its own config, data, settings and runtime folders. Yields (base url, token, work folder)."""
    work = tmp_path / "work"
    shutil.copytree(ROOT / "release", work, ignore=shutil.ignore_patterns(
        ".ipynb_checkpoints", "__pycache__"))
    settings = tmp_path / "lab-settings"
    for plugin, values in {
        # every cell in the DOM (no virtual scrolling), no news from the network
        "notebook-extension/tracker": {"windowingMode": "none"},
        "apputils-extension/notification": {"fetchNews": "false"},
    }.items():
        path = settings / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ,
               PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]),
               JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "lab-workspaces"),
               IPYTHONDIR=str(tmp_path / "ipython"),
               ATTN_COURSE_QUICK="1")  # the demos shrink as under autograding
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           "--ServerApp.allow_root=True", "--LabApp.news_url=",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "jupyterlab.log").open("w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail("JupyterLab exited:\n" + (tmp_path / "jupyterlab.log").read_text())
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("JupyterLab did not start in 120 s")
                time.sleep(0.5)
        yield url, token, work
    finally:
        _stop(proc, f"{url}/api/shutdown?token={token}")
        log.close()


def _solution_source(name: str) -> str:
    """The worked solution of exercise ``name``, as a student would type it."""
    source = notebooks.read(ROOT / "source" / LAB_NOTEBOOK / f"{LAB_NOTEBOOK}.ipynb")
    cell = next(c for c in source.cells if notebooks.grade_id(c) == name)
    return "\n".join(line for line in cell.source.splitlines()
                     if not re.match(r"\s*### (BEGIN|END) SOLUTION", line))


TRACEBACK = "Traceback (most recent call last)"
CELL_STATES = """els => els.map(e => ({
    code: e.classList.contains('jp-CodeCell'),
    prompt: (e.querySelector('.jp-InputPrompt') || {}).textContent || '',
    input: Array.from(e.querySelectorAll('.jp-InputArea .cm-line'))
                .map(l => l.textContent).join('\\n'),
    output: (e.querySelector('.jp-OutputArea') || {}).innerText || '',
}))"""

KERNEL_DONE = """() => {
    const prompts = Array.from(document.querySelectorAll('.jp-Notebook .jp-InputPrompt'));
    const status = document.querySelector('#jp-main-statusbar');
    return !prompts.some(p => p.textContent.includes('*'))
        && status && status.textContent.includes('Idle');
}"""


@pytest.mark.xdist_group("jupyterlab")
def test_student_fills_in_one_exercise_in_jupyterlab(jupyterlab, context):
    url, token, work = jupyterlab
    release = notebooks.read(work / LAB_NOTEBOOK / f"{LAB_NOTEBOOK}.ipynb")
    ids = [notebooks.grade_id(c) for c in release.cells]
    untouched = [n for n in notebooks.graded_names(release) if n != LAB_EXERCISE]
    assert untouched, "the notebook needs more than one exercise"
    solution = _solution_source(LAB_EXERCISE)

    page = context.new_page()
    try:
        page.goto(f"{url}/lab/tree/{LAB_NOTEBOOK}/{LAB_NOTEBOOK}.ipynb?token={token}")
        cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell", timeout=90_000)
        page.wait_for_function(KERNEL_DONE, timeout=90_000, polling=500)
        # The nbgrader extension is there: its Validate button is on the notebook's toolbar.
        assert page.locator(".jp-NotebookPanel-toolbar", has_text="Validate").count() == 1
        assert cells.count() == len(release.cells)

        def menu(top: str, item: str) -> None:
            page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(f"^{top}$")).click()
            page.locator(".lm-Menu-itemLabel", has_text=re.compile(f"^{item}$")).click()
            page.wait_for_timeout(500)
            page.wait_for_function(KERNEL_DONE, timeout=180_000, polling=500)

        # Fill in the exercise as a student would: click into its cell, select all, type.
        target = ids.index(LAB_EXERCISE)
        cells.nth(target).locator(".cm-content").click()
        page.keyboard.press("Control+a")
        page.keyboard.insert_text(solution)
        page.keyboard.press("Escape")
        assert cells.evaluate_all(CELL_STATES)[target]["input"] == solution

        # Run all cells. Execution stops at the first error (the next exercise's visible tests);
        # like a student who carries on, run from the next unexecuted cell until none is left.
        menu("Run", "Run All Cells")
        for _ in range(len(release.cells)):
            states = cells.evaluate_all(CELL_STATES)
            failed = [i for i, s in enumerate(states) if TRACEBACK in s["output"]]
            after = max(failed, default=-1)
            pending = [i for i, s in enumerate(states)
                       if i > after and s["code"] and s["prompt"].strip() in ("", "[ ]:")]
            if not pending:
                break
            cells.nth(pending[0]).locator(".jp-InputPrompt").click()
            menu("Run", "Run Selected Cell and All Below")

        states = cells.evaluate_all(CELL_STATES)
        filled = states[ids.index(f"visible_tests_{LAB_EXERCISE}")]["output"]
        assert f"{LAB_EXERCISE}: visible tests passed" in filled, filled
        assert TRACEBACK not in filled, filled
        for name in untouched:
            out = states[ids.index(f"visible_tests_{name}")]["output"]
            assert "NotImplementedError" in out, f"{name}: {out[-500:]}"
        assert not context.external_requests, context.external_requests
        cells.nth(ids.index(f"visible_tests_{LAB_EXERCISE}")).scroll_into_view_if_needed()
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"jupyterlab-{LAB_NOTEBOOK}.png"))


# -- the attention viewer (attn_utils.viz) ----------------------------------------------------

VIEWER_PAGE = "07_transformer_decoder"
KEY_WEIGHTS = ("els => els.map(e => e.getAttribute('data-weight'))")


def _viewer_weights():
    """Two layers of three heads, 4 queries x 5 keys, every row different (seeded)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.softmax(2.5 * torch.randn(3, 4, 5, generator=g), dim=-1) for _ in range(2)]


def _highlighted(view, side: str) -> list[float | None]:
    """The weights the view shades on one side ('q' or 'k'), as it reports them."""
    values = view.locator(f".attn-view-{side}").evaluate_all(KEY_WEIGHTS)
    return [float(v) if v else None for v in values]


def _hover(page, view, side: str, index: int) -> None:
    view.locator(f".attn-view-{side}[data-index='{index}'] text").hover()
    page.wait_for_timeout(50)


@pytest.fixture
def viewer_url(tmp_path):
    """A standalone page with one attention view, served from 127.0.0.1."""
    from attn_utils.viz import attention_view

    weights = _viewer_weights()
    view = attention_view(weights, ["the", "cat", "sat", "<pad>", "."],
                          ["<sos>", "le", "chat", "<eos>"], title="viewer test")
    (tmp_path / "view.html").write_text(view.page(), encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/view.html", weights
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def test_viewer_renders_and_hovering_changes_the_highlighted_weights(viewer_url, context):
    url, weights = viewer_url
    page = _open(context, url)
    view = page.locator(".attn-view")
    assert view.count() == 1
    assert not view.locator(".attn-view-fallback").is_visible(), "the script did not run"
    assert view.locator(".attn-view-q").count() == 4 and view.locator(".attn-view-k").count() == 5
    assert view.locator("svg text", has_text="chat").count() == 1
    assert view.locator("select.attn-view-layer option").count() == 2
    assert view.locator("select.attn-view-head option").count() == 4  # all heads + 3
    assert _highlighted(view, "k") == [None] * 5, "nothing is highlighted before a hover"
    assert view.locator("svg line").count() > 0, "the resting view draws the attention lines"

    # All heads (the default): hovering query i shades key j by the mean weight over the heads.
    _hover(page, view, "q", 1)
    first = _highlighted(view, "k")
    expected = weights[0].mean(0)[1].tolist()
    assert first == pytest.approx(expected, abs=1e-3), (first, expected)
    _hover(page, view, "q", 2)
    second = _highlighted(view, "k")
    assert second == pytest.approx(weights[0].mean(0)[2].tolist(), abs=1e-3)
    assert second != first, "hovering another query changes the highlighted weights"
    assert "chat" in page.inner_text(".attn-view-readout")

    # One head of another layer.
    view.locator("select.attn-view-layer").select_option("1")
    view.locator("select.attn-view-head").select_option("2")
    _hover(page, view, "q", 3)
    assert _highlighted(view, "k") == pytest.approx(weights[1][2][3].tolist(), abs=1e-3)
    lines = view.locator("svg line").count()
    assert 1 <= lines <= 5, f"one query of one head draws at most one line per key, got {lines}"

    # Hovering a key shows who attends to it: the queries are shaded by that key's column.
    _hover(page, view, "k", 0)
    assert _highlighted(view, "q") == pytest.approx(weights[1][2][:, 0].tolist(), abs=1e-3)
    assert _highlighted(view, "k") == [None] * 5

    # A click keeps a query selected while the mouse moves on.
    view.locator(".attn-view-q[data-index='0'] text").click()
    _hover(page, view, "k", 4)
    assert _highlighted(view, "k") == pytest.approx(weights[1][2][0].tolist(), abs=1e-3)

    assert not context.external_requests, context.external_requests
    assert not page.js_errors, page.js_errors
    assert not page.bad_responses, page.bad_responses
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer.png"))


@pytest.mark.xdist_group("book")
def test_viewer_stays_interactive_on_the_site(site_url, context):
    page = _open(context, f"{site_url}/{VIEWER_PAGE}.html")
    views = page.locator("main .attn-view")
    assert views.count() >= 1, "notebook 07's page shows no attention view"
    for i in range(views.count()):
        view = views.nth(i)
        view.scroll_into_view_if_needed()
        assert not view.locator(".attn-view-fallback").is_visible(), "the view's script did not run"
        n_keys = view.locator(".attn-view-k").count()
        assert n_keys > 1 and view.locator(".attn-view-q").count() > 1
        _hover(page, view, "q", 0)
        first = _highlighted(view, "k")
        _hover(page, view, "q", 1)
        second = _highlighted(view, "k")
        assert None not in first and None not in second
        assert sum(second) == pytest.approx(1.0, abs=0.01), "a query's weights sum to 1"
        assert first != second, "hovering another query changes the highlighted weights"
    assert not context.external_requests, context.external_requests
    assert not page.js_errors, page.js_errors
    assert not page.bad_responses, page.bad_responses


@pytest.mark.xdist_group("jupyterlab")
def test_viewer_works_in_jupyterlab(jupyterlab, context):
    url, token, work = jupyterlab
    from attn_course.authoring import code, write_notebook

    write_notebook([code("""
        import torch
        from attn_utils.viz import attention_view
        g = torch.Generator().manual_seed(0)
        weights = [torch.softmax(2.5 * torch.randn(3, 4, 5, generator=g), dim=-1) for _ in range(2)]
        attention_view(weights, ["the", "cat", "sat", "<pad>", "."],
                       ["<sos>", "le", "chat", "<eos>"])
    """)], work / "viewer.ipynb")
    page = context.new_page()
    page.js_errors = []
    page.on("pageerror", lambda exc: page.js_errors.append(str(exc)))
    try:
        page.goto(f"{url}/lab/tree/viewer.ipynb?token={token}")
        page.wait_for_selector(".jp-NotebookPanel .jp-Notebook .jp-CodeCell", timeout=90_000)
        page.wait_for_function(KERNEL_DONE, timeout=90_000, polling=500)
        page.locator(".jp-NotebookPanel .jp-Notebook .jp-CodeCell .cm-content").first.click()
        page.keyboard.press("Shift+Enter")
        view = page.locator(".jp-OutputArea .attn-view")
        view.wait_for(timeout=90_000)
        page.wait_for_function(KERNEL_DONE, timeout=90_000, polling=500)
        assert not view.locator(".attn-view-fallback").is_visible(), (
            "JupyterLab did not run the view's script")
        weights = _viewer_weights()
        _hover(page, view, "q", 1)
        first = _highlighted(view, "k")
        assert first == pytest.approx(weights[0].mean(0)[1].tolist(), abs=1e-3)
        _hover(page, view, "q", 2)
        assert _highlighted(view, "k") != first
        assert not context.external_requests, context.external_requests
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer-jupyterlab.png"))
