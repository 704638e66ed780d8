"""A read-back is confirmed only when the typed value and unit match what was sent."""

import pytest
from yigongti_terminal.readback import matches


@pytest.mark.parametrize(("typed_value", "typed_unit", "ok"), [
    ("6.9", "mmol/L", True),
    ("6.90", "mmol/L", True),
    (" 6.9 ", " mmol/L", True),
    ("6.8", "mmol/L", False),
    ("69", "mmol/L", False),
    ("6.9", "mmol/l", False),
    ("6.9", "mol/L", False),
    ("6.9", "", False),
    ("", "mmol/L", False),
    ("six point nine", "mmol/L", False),
])
def test_numeric(typed_value, typed_unit, ok):
    assert matches(sent_value="6.90", sent_unit="mmol/L", typed_value=typed_value,
                   typed_unit=typed_unit) is ok


def test_a_comparator_must_be_read_back():
    assert matches(sent_value="50", sent_unit="ng/mL", sent_comparator=">",
                   typed_value=">50", typed_unit="ng/mL")
    assert not matches(sent_value="50", sent_unit="ng/mL", sent_comparator=">",
                       typed_value="50", typed_unit="ng/mL")


def test_a_coded_value():
    assert matches(sent_value=None, sent_unit=None, sent_code="POS", typed_value="pos",
                   typed_unit="")
    assert not matches(sent_value=None, sent_unit=None, sent_code="POS", typed_value="NEG",
                       typed_unit="")
