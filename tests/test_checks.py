"""The tests of the tests, one pytest test per line of attn_course.validation:
every check passes the reference and the notebook's worked solution, gives the released
stub nothing, rejects every catalogued mistake with a message that names it, and gives full
marks to every correct variant (a right answer in another style)."""

import pytest

from attn_course.validation import validations
from conftest import ASSIGNMENTS, ROOT

CASES = [v for a in ASSIGNMENTS for v in validations(a, ROOT)]


@pytest.mark.parametrize("validation", CASES, ids=[v.label for v in CASES])
def test_validation_holds(validation):
    problem = validation.run()
    assert problem is None, problem


def test_every_assignment_has_checks_mistakes_and_variants():
    labels = [v.label for v in CASES]
    for a in ASSIGNMENTS:
        assert any(label.startswith(f"{a.id}:") and ":mistake:" in label for label in labels)
        assert any(label.startswith(f"{a.id}:") and ":variant:" in label for label in labels)
