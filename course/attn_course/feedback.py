"""What nbgrader's feedback may show a student of a hidden test (nbgrader_config.py).

``ClearHiddenTests`` removes the hidden lines from a test cell's source, but a failing hidden
test's traceback quotes those lines again. :class:`ShortHiddenTracebacks` keeps only its last
line (``CheckFailed: <what went wrong>``); the check's own report, printed above it, already
says case by case what passed and what did not.
"""

from __future__ import annotations

from nbconvert.preprocessors import Preprocessor
from nbgrader.utils import is_grade
from traitlets import Bool


class ShortHiddenTracebacks(Preprocessor):
    enabled = Bool(True)  # nbconvert's preprocessors are off unless enabled

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and is_grade(cell):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output["traceback"] = [f"{output.get('ename', 'Error')}: "
                                           f"{output.get('evalue', '')}"]
        return cell, resources
