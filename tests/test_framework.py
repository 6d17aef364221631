"""The grading framework itself: partial credit, messages, and distrust of what it is handed."""

import pytest
import torch

from attn_grader import grade
from attn_grader.framework import Check, CheckFailed, as_tensor, expect_close, is_close


def _report(outcomes):
    c = Check("demo")
    for i, (ok, weight) in enumerate(outcomes):
        with c.case(f"case {i}", weight=weight):
            if not ok:
                raise CheckFailed("wrong")
    return c.report()


def test_partial_credit_is_the_passed_weight_fraction():
    r = _report([(True, 1), (False, 3), (True, 2)])
    assert r.fraction == pytest.approx(0.5)
    assert not r.ok
    assert r.failures == ["case 1: wrong"]


def test_an_exception_fails_only_its_case_and_names_the_exception():
    c = Check("demo")
    with c.case("boom"):
        raise ZeroDivisionError("division by zero")
    with c.case("fine"):
        pass
    r = c.report()
    assert r.fraction == 0.5
    assert "ZeroDivisionError" in r.message


def test_not_implemented_is_reported_as_such():
    c = Check("demo")
    with c.case("stub"):
        raise NotImplementedError
    assert "not implemented" in c.report().message


def test_cases_write_nothing_to_stderr(capfd):
    import sys
    import warnings

    c = Check("demo")
    with c.case("noisy"):
        warnings.warn("student code warns", UserWarning, stacklevel=1)
        print("to stderr", file=sys.stderr)
    assert capfd.readouterr().err == ""


def test_tensor_subclass_with_fake_equality_is_refused():
    class Liar(torch.Tensor):
        def __eq__(self, other):
            return True

    fake = torch.zeros(3).as_subclass(Liar)
    with pytest.raises(CheckFailed, match="subclass"):
        as_tensor(fake, "out")
    with pytest.raises(CheckFailed, match="should be a torch.Tensor"):
        as_tensor([1.0, 2.0], "out")


def test_comparison_does_not_use_torch_allclose(monkeypatch):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    assert not is_close(torch.zeros(2), torch.ones(2))
    with pytest.raises(CheckFailed, match="does not match"):
        expect_close(torch.zeros(2), torch.ones(2), "out")


def test_nan_never_counts_as_close():
    assert not is_close(torch.tensor([float("nan")]), torch.tensor([float("nan")]))


def test_diagnosis_names_the_matching_mistake():
    expected, wrong = torch.ones(3), torch.zeros(3)
    with pytest.raises(CheckFailed, match="the bias is left out"):
        expect_close(wrong, expected, "h", diagnoses={"the bias is left out": torch.zeros(3)})


def test_grade_returns_points_times_fraction_and_raises_on_zero(capsys):
    import math

    def half_right(x_t, h_prev, W_xh, W_hh, b_h):  # right values, but breaks B = 1
        return torch.tanh(x_t @ W_xh + h_prev @ W_hh + b_h).squeeze()

    earned = grade("01_rnn_limits", "rnn_step", half_right, points=2)
    assert 0 < earned < 2
    assert "squeeze" in capsys.readouterr().out
    with pytest.raises(CheckFailed):
        grade("01_rnn_limits", "rnn_step", lambda *a: (_ for _ in ()).throw(NotImplementedError),
              points=2)
    assert math.isclose(grade("01_rnn_limits", "rnn_step",
                              lambda x, h, a, b, c: torch.tanh(x @ a + h @ b + c), points=2), 2)
