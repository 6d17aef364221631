"""Answers that do no work: the reference's outputs replaced by zeros of the same shape and
dtype. A case such an answer passes (a shape, a dtype, inputs left unmodified, zeros where
zeros are expected) proves nothing about the student's work, so it earns credit only beside
a case that needs real work (:meth:`attn_grader.framework.Report.credit_only_for_work`).
"""

from __future__ import annotations

import functools
import inspect

import torch


def zeros_like(value):
    """``value`` with every number and tensor replaced by a zero of its kind."""
    if isinstance(value, torch.Tensor):
        return torch.zeros_like(value.detach())
    if type(value) is bool:
        return False
    if type(value) in (int, float):
        return type(value)(0)
    if type(value) is tuple:
        return tuple(zeros_like(v) for v in value)
    if type(value) is list:
        return [zeros_like(v) for v in value]
    if type(value) is dict:
        return {k: zeros_like(v) for k, v in value.items()}
    return value


def _zeroed(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return zeros_like(fn(*args, **kwargs))

    return wrapper


def null_answer(reference):
    """The zero answer for a graded function or class of the reference."""
    if not inspect.isclass(reference):
        return _zeroed(reference)
    methods = {}
    for klass in reference.__mro__:
        if not klass.__module__.startswith("attn_grader"):
            continue
        for name, value in vars(klass).items():
            if callable(value) and not name.startswith("__") and name not in methods:
                methods[name] = _zeroed(value)
    methods["__module__"] = __name__
    return type(f"Null{reference.__name__}", (reference,), methods)
