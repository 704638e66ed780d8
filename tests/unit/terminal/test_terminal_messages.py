"""Every documented refusal has plain words for a clinic nurse, with its code."""

from __future__ import annotations

import re

import pytest
from yigongti_contracts.common import PLATFORM_REJECTION_REASONS, UNVERIFIED_REASONS
from yigongti_contracts.registry import REJECTION_REASONS_BY_SERVICE
from yigongti_contracts.terminal import PLATFORM_REASON_MEANINGS, UNVERIFIED_REASON_MEANINGS
from yigongti_kit.auth import TOKEN_ERRORS
from yigongti_terminal import messages

# Codes and phrases that services give over HTTP (besides the token reasons).
_LAB_API = "services/lab/yigongti_lab/api.py"


def _documented_intake_codes() -> list[tuple[str | None, str]]:
    codes = [(None, c) for c in PLATFORM_REJECTION_REASONS | UNVERIFIED_REASONS
             | set(PLATFORM_REASON_MEANINGS) | set(UNVERIFIED_REASON_MEANINGS)]
    codes += [(s, c) for s, reasons in REJECTION_REASONS_BY_SERVICE.items() for c in reasons]
    return sorted(codes, key=lambda sc: (sc[0] or "", sc[1]))


@pytest.mark.parametrize(("service", "code"), _documented_intake_codes())
def test_every_documented_intake_reason_has_plain_words(service, code):
    known = (messages.PLATFORM.get(code) or messages.UNVERIFIED.get(code)
             or messages.SERVICE.get(service or "", {}).get(code))
    assert known, f"no message for reason code {code!r} ({service or 'platform'})"
    text = messages.intake_reason(code, service)
    assert text.endswith(f"[{code}]") and "_" not in text.removesuffix(f"[{code}]")


@pytest.mark.parametrize("code", TOKEN_ERRORS)
def test_every_token_refusal_has_plain_words(code):
    assert code in messages.TOKEN
    assert messages.http_refusal(401, code).endswith(f"[401 {code}]")


def test_every_http_refusal_phrase_of_a_service_has_plain_words():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    source = (root / _LAB_API).read_text()
    constants = dict(re.findall(r'^(NO_[A-Z]+) = "([^"]+)"', source, re.M))
    phrases = set(constants.values())
    phrases |= set(re.findall(r'HTTPException\(\d+, "([^"]+)"', source))
    for phrase in phrases:
        key = "missing role" if phrase.startswith("missing role") else phrase
        assert key in messages.HTTP_DETAIL or key == "missing role", phrase
    assert "missing role" not in messages.HTTP_DETAIL  # worded by its status (403)
    for status in (400, 401, 403, 404, 409, 413, 422, 429, 503):
        assert status in messages.HTTP_STATUS


def test_an_unknown_code_is_still_explained_with_the_code():
    text = messages.intake_reason("brand_new_code", "lab")
    assert text.endswith("[brand_new_code]") and "does not know" in text


def test_a_422_names_fields_and_codes_never_values():
    text = messages.http_refusal(422, [{"loc": ["body", "tests", 0], "type": "missing"}])
    assert "body.tests.0 (missing)" in text and text.startswith("Some details")


def test_local_messages_have_their_code():
    for code in messages.LOCAL:
        assert messages.local(code).endswith(f"[{code}]")
