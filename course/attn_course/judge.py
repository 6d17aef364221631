"""Hidden tests judged outside the student's process.

Under ``attn-course grade``, nbgrader's executor is :class:`JudgingExecute`. It runs every
cell of the submission in the student's (sandboxed) kernel as nbgrader would, except the
hidden test cells: a test cell is never sent to the kernel. The executor reads the cell's
``grade("<assignment>", "<name>", <name>, points=...)`` call itself (the cell's source is
the instructor's: nbgrader has restored it from the gradebook), and at that point of the
notebook runs the check here, in the grading process, against the student's object in the
kernel through a :class:`KernelChannel` (:mod:`attn_grader.remote`). The student's code
runs only on the check's inputs and only returns values; the comparison, the report and the
points are computed here. So nothing the student's code prints, displays, returns, patches
or rewrites (IPython transformers and hooks, ``sys.modules``, torch, numpy) reaches a score.

For nbgrader the cell then looks as if it had run: the report on stdout and the points as
its result (partial credit), or an error when no case passed. Those outputs are written
here, and the points are also appended to a record outside the sandbox
(``$ATTN_GRADING_RECORD``, JSON lines), which is what ``attn-course grade`` reads.

After every other cell the executor asks the kernel's agent what changed in its machinery
(IPython transformers and hooks, display hooks, torch functions replaced) and whether the
code tried to use the network or reach the grader's files: a reviewer's hints, recorded
with the cell where they appeared. They never change a score.
"""

from __future__ import annotations

import ast
import json
import os
import re
import threading

from attn_course import notebooks
from attn_course.grading_job import CheckpointExecute
from attn_course.verdict import RECORD_ENV, TRIVIAL_ENV


def _load_the_judges() -> None:
    """What judging needs (torch, every check and reference, the kernel channel): imported in
    a thread while the kernel starts and runs the notebook, unless the zygote has already."""
    import importlib
    import pkgutil

    import attn_course.kernel_channel  # noqa: F401
    import attn_grader

    for info in pkgutil.walk_packages(attn_grader.__path__, "attn_grader."):
        importlib.import_module(info.name)


# --------------------------------------------------------------------------- test cells


class TestCall:
    """``grade("<assignment>", "<name>", <expression>, points=<n>)`` read from a cell."""

    def __init__(self, assignment: str, name: str, expression: str):
        self.assignment, self.name, self.expression = assignment, name, expression


def test_calls(source: str) -> list[TestCall] | None:
    """The ``grade(...)`` calls of a hidden test cell; None if the cell has code that is
    neither those calls nor their import (it cannot be judged outside the kernel)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    calls = []
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.module == "attn_grader" and all(
                a.name == "grade" for a in stmt.names):
            continue
        call = stmt.value if isinstance(stmt, ast.Expr) else None
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and call.func.id == "grade" and len(call.args) == 3
                and all(isinstance(a, ast.Constant) and isinstance(a.value, str)
                        for a in call.args[:2]) and isinstance(call.args[2], ast.Name)):
            return None
        calls.append(TestCall(call.args[0].value, call.args[1].value, call.args[2].id))
    return calls


def _is_test_cell(cell) -> bool:
    return cell.get("cell_type") == "code" and notebooks.is_hidden_test(cell)


def _label(cell, index: int) -> str:
    gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
    return f"cell {index + 1}" + (f" ({gid})" if gid else "")


class JudgingExecute(CheckpointExecute):
    """nbgrader's executor, judging hidden test cells outside the kernel (module doc)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._channel = None  # an attn_course.kernel_channel.KernelChannel, once needed
        self._broken = ""
        self._judged: set[str] = set()
        self._seen_flags: set[str] = set()
        self._loading = threading.Thread(target=_load_the_judges, daemon=True)
        self._loading.start()

    def _ready(self) -> None:
        """Wait for what judging needs; hand it the checks' trivial cases."""
        if self._loading is None:
            return
        self._loading.join()
        self._loading = None
        from attn_grader import known_trivial_cases

        try:
            with open(os.environ[TRIVIAL_ENV], encoding="utf-8") as f:
                known_trivial_cases({tuple(k.split("/", 1)): v for k, v in json.load(f).items()})
        except (KeyError, OSError, ValueError):
            pass  # computed on first use instead

    # ---- the record

    def _record(self, entry: dict) -> None:
        path = os.environ.get(RECORD_ENV)
        if not path:
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")

    def _channel_or_none(self):
        self._ready()
        if self._channel is None and not self._broken:
            from attn_course.kernel_channel import KernelChannel

            try:
                self._channel = KernelChannel(self.km, float(self.timeout or 180))
            except Exception as exc:  # the kernel has no agent, or died
                self._broken = f"the grader could not reach the kernel ({exc})"
        return self._channel

    # ---- cells

    def execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if _is_test_cell(cell):
            return self._judge_cell(cell, cell_index)
        cell = super().execute_cell(cell, cell_index, execution_count, store_history)
        self._inspect(cell, cell_index)
        return cell

    def _inspect(self, cell, index: int) -> None:
        if cell.get("cell_type") != "code" or not cell.get("source", "").strip():
            return
        channel = self._channel_or_none()
        if channel is None:
            return
        from attn_grader import remote

        try:
            seen = channel.request("inspect")
        except (remote.ChannelBroken, remote.StudentTimeout) as exc:
            self._record({"flag": f"{_label(cell, index)}: the kernel's grading agent stopped "
                                  f"answering ({exc})"})
            self._channel, self._broken = None, str(exc)
            return
        except Exception as exc:  # the agent was tampered with
            self._record({"flag": f"{_label(cell, index)}: the kernel's grading agent fails "
                                  f"({type(exc).__name__}: {exc})"})
            return
        found = [x for key in ("replaced", "alerts") if type(seen.get(key)) is list
                 for x in seen[key]]
        new = [str(x)[:300] for x in found[:50] if str(x) not in self._seen_flags]
        if new:
            self._seen_flags.update(new)
            self._record({"flag": f"{_label(cell, index)}: " + "; ".join(new[:8])})

    def _judge_cell(self, cell, index: int):
        meta = cell.metadata.nbgrader
        grade_id, points = meta.get("grade_id", f"cell{index}"), float(meta.get("points", 0))
        self.code_cells_executed += 1
        cell["execution_count"] = self.code_cells_executed
        calls = test_calls(cell.source)
        text, earned, failure = "", 0.0, ""
        if grade_id in self._judged:
            failure = f"{grade_id} appears twice in the notebook; only the first one counts"
            self._record({"flag": f"{_label(cell, index)}: a second copy of test {grade_id}"})
        elif not calls:
            failure = ("this test cell has code other than grade(...) calls; it cannot be "
                       "judged outside the kernel (instructor: see CONTRIBUTING.md)")
        else:
            channel = self._channel_or_none()
            if channel is None:
                failure = self._broken
            else:
                from attn_grader import judge as judge_check
                from attn_grader import remote

                reports = []
                for call in calls:
                    try:
                        reports.append(judge_check(channel, call.assignment, call.name,
                                                   call.expression))
                    except remote.ChannelBroken as exc:
                        self._channel, self._broken = None, str(exc)
                        failure = str(exc)
                        break
                if reports and not failure:
                    fraction = sum(r.fraction for r in reports) / len(reports)
                    earned = round(points * fraction, 3)
                    text = "\n".join(str(r) for r in reports)
                    if fraction == 0:
                        failure = "\n".join(f"{r.name}: no check passed\n{r.message}"
                                            for r in reports)
        if grade_id not in self._judged:
            self._judged.add(grade_id)
            self._record({"cell": grade_id, "points": earned, "max": points,
                          "text": text[-20000:]})
        cell.outputs = []
        if text:
            cell.outputs.append({"output_type": "stream", "name": "stdout", "text": text + "\n"})
        if failure or earned == 0:
            message = failure or "no check passed"
            raised = re.search(r"raised (\w+):", message)  # what the student's code raised
            cell.outputs.append({"output_type": "error",
                                 "ename": raised.group(1) if raised else "CheckFailed",
                                 "evalue": message.splitlines()[0][:500],
                                 "traceback": message.splitlines()})
        else:
            cell.outputs.append({"output_type": "execute_result", "metadata": {},
                                 "execution_count": cell["execution_count"],
                                 "data": {"text/plain": repr(earned)}})
        from nbformat import from_dict

        cell.outputs = [from_dict(o) for o in cell.outputs]
        self.nb["cells"][index] = cell
        if self._broken and not self._channel:
            from nbclient.exceptions import DeadKernelError

            if "died" in self._broken:
                raise DeadKernelError(self._broken)
        return cell

    def preprocess(self, nb, resources=None, km=None):
        try:
            return super().preprocess(nb, resources, km)
        finally:
            self.cleanup()

    def cleanup(self) -> None:
        if self._channel is not None:
            try:
                self._channel.close()
            except Exception:
                pass
            self._channel = None
