"""Where the student's code runs, seen from the checks (placeholder: in-process)."""

from __future__ import annotations

import copy


def lend(obj):
    return copy.deepcopy(obj)
