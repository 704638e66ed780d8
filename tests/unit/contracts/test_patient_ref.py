"""National ID normalisation (GB 11643-1999) and the keyed patient_ref."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yigongti_contracts.patient_ref import (
    PATIENT_REF_PATTERN,
    NationalIdError,
    is_valid_national_id,
    normalise_national_id,
    patient_ref,
)

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]  # GB 11643-1999 table


def with_check(first17: str) -> str:
    """Independent check-character computation, straight from the standard's table."""
    s = sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True))
    return first17 + "10X98765432"[s % 11]


def wrong_check(valid: str) -> str:
    return valid[:17] + next(c for c in "0123456789X" if c != valid[17])


VALID_BODIES = [
    "65230119450115001",  # 昌吉市, born 1945
    "65232519800229123",  # leap day
    "11010519491231002",  # the standard's example (check X)
    "65232820240101345",
    "44030419991231987",
]


@pytest.mark.parametrize("body", VALID_BODIES)
def test_valid_ids_normalise_to_themselves(body: str) -> None:
    nid = with_check(body)
    assert normalise_national_id(nid) == nid


def test_the_standards_example_ends_in_x() -> None:
    assert with_check("11010519491231002") == "11010519491231002X"


@pytest.mark.parametrize("raw,expected", [
    ("11010519491231002x", "11010519491231002X"),
    ("  11010519491231002X\n", "11010519491231002X"),
    ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),  # full-width
])
def test_case_space_and_full_width_are_folded(raw: str, expected: str) -> None:
    assert normalise_national_id(raw) == expected


@pytest.mark.parametrize("id15,body17", [
    ("652301450115001", "65230119450115001"),
    ("110105491231002", "11010519491231002"),
])
def test_fifteen_digit_ids_become_eighteen(id15: str, body17: str) -> None:
    assert normalise_national_id(id15) == with_check(body17)


def test_fifteen_and_eighteen_digit_forms_give_the_same_ref() -> None:
    assert patient_ref("110105491231002", KEY) == patient_ref("11010519491231002X", KEY)


@pytest.mark.parametrize("raw,code", [
    ("", "empty"),
    ("   ", "empty"),
    ("1234567", "length"),
    ("1101051949123100211", "length"),
    ("11010519491231002Y", "characters"),
    ("X1010519491231002X", "characters"),
    ("1101051949 231002X", "characters"),
    ("11010519491301002X", "birth_date"),  # month 13
    ("11010519490230002X", "birth_date"),  # 30 February
    ("01010519491231002X", "address_code"),
    ("110105491331002", "birth_date"),  # 15 digits, month 13
])
def test_invalid_ids_are_refused_with_a_code(raw: str, code: str) -> None:
    with pytest.raises(NationalIdError) as err:
        normalise_national_id(raw)
    assert err.value.code == code


@pytest.mark.parametrize("body", VALID_BODIES)
def test_wrong_check_character_is_refused(body: str) -> None:
    with pytest.raises(NationalIdError) as err:
        normalise_national_id(wrong_check(with_check(body)))
    assert err.value.code == "checksum"


def test_errors_never_echo_the_id() -> None:
    nid = wrong_check(with_check(VALID_BODIES[0]))
    with pytest.raises(NationalIdError) as err:
        patient_ref(nid, KEY)
    assert nid not in str(err.value) and nid[:6] not in str(err.value)
    assert all(nid not in str(a) for a in err.value.args)


def test_ref_shape_and_determinism() -> None:
    nid = with_check(VALID_BODIES[0])
    ref = patient_ref(nid, KEY)
    assert re.fullmatch(PATIENT_REF_PATTERN, ref)
    assert ref.startswith("v1:") and ref == patient_ref(nid.lower(), KEY)


def test_ref_depends_on_key_and_version() -> None:
    nid = with_check(VALID_BODIES[0])
    assert patient_ref(nid, KEY) != patient_ref(nid, OTHER_KEY)
    assert patient_ref(nid, KEY, "v2").startswith("v2:")
    assert patient_ref(nid, KEY, "v2")[3:] == patient_ref(nid, KEY)[3:]


def test_ref_is_hmac_sha256_of_the_normalised_id() -> None:
    import hashlib
    import hmac

    nid = with_check(VALID_BODIES[2])
    expected = hmac.new(KEY, nid.encode(), hashlib.sha256).hexdigest()
    assert patient_ref(nid.lower(), KEY) == "v1:" + expected


@pytest.mark.parametrize("key,version", [(b"short", "v1"), (KEY, "1"), (KEY, "v1:"),
                                         ("k" * 32, "v1")])
def test_weak_keys_and_bad_versions_are_refused(key, version) -> None:
    with pytest.raises(ValueError):
        patient_ref(with_check(VALID_BODIES[0]), key, version)


@given(st.from_regex(r"[1-8][0-9]{5}(19[0-9]{2}|20[0-2][0-9])(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])[0-9]{3}",
                     fullmatch=True))
def test_every_well_formed_body_with_its_check_is_valid(body: str) -> None:
    nid = with_check(body)
    assert is_valid_national_id(nid)
    assert not is_valid_national_id(wrong_check(nid))
