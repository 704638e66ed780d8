"""ACKs a sender can use (issue 8, item 19): addressed to the sender and naming
its message when only MSH-2 is unusable, ERR laid out for the message's HL7
version, and an invalid MSH-7 refused by name instead of taken as empty."""

from __future__ import annotations

import hl7
import pytest
from yigongti_lab.hl7_results import AckCode, ResultsTranslator

OBR = "OBR|1||B24031500017|^^^CHEM|||20240315102500"
UNKNOWN_CODE = "OBX|1|NM|KX^Potassium^L||4.52|mmol/L|3.50-5.30|N|||F|||20240315102900"


def msh(*, encoding: str = "^~\\&", time: str = "20240315103000", version: str = "2.3.1",
        sep: str = "|") -> str:
    return sep.join(["MSH", encoding, "BS-2000M", "Mindray", "LIS", "652325-L01", time, "",
                     "ORU^R01", "MSG-77", "P", version])


def message(header: str, *segments: str, sep: str = "|") -> bytes:
    return ("\r".join((header, *(s.replace("|", sep) for s in segments))) + "\r").encode()


@pytest.fixture(scope="module")
def translator() -> ResultsTranslator:
    return ResultsTranslator()


@pytest.mark.parametrize("encoding", ["^~", "^~\\A", "^^\\&", "^~ &", "^~\\&&"])
def test_an_unusable_msh2_is_answered_to_the_sender_naming_its_message(translator, encoding):
    raw = message(msh(encoding=encoding), OBR, UNKNOWN_CODE)
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AR
    assert t.errors[0].reason == "bad_encoding_characters"
    assert "MSH-2" in t.errors[0].text
    ack = hl7.parse(t.ack().decode())
    header, msa = ack.segment("MSH"), ack.segment("MSA")
    assert [str(header(n)) for n in (3, 4, 5, 6)] == ["LIS", "652325-L01", "BS-2000M", "Mindray"]
    assert (str(msa(1)), str(msa(2))) == ("AR", "MSG-77")


def test_an_unusable_msh2_behind_another_field_separator_is_answered_too(translator):
    raw = message(msh(encoding="^~", sep="#"), OBR, UNKNOWN_CODE, sep="#")
    ack = translator.translate(raw).ack().decode()
    msa = next(line for line in ack.split("\r") if line.startswith("MSA"))
    assert msa.split(ack[3])[1:3] == ["AR", "MSG-77"]


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4"])
def test_acks_to_v23_and_v24_messages_carry_err1_only(translator, version):
    t = translator.translate(message(msh(version=version), OBR, UNKNOWN_CODE))
    assert t.ack_code is AckCode.AE
    ack = hl7.parse(t.ack().decode())
    err = ack.segment("ERR")
    assert len(err) == 2  # ERR-1 only: fields 2-8 exist from v2.5
    assert str(ack.segment("MSH")(12)) == version
    # ERR-1 (ELD): segment ^ sequence ^ field ^ code & text & table
    assert [str(err(1)(1)(c)) for c in (1, 2, 3)] == ["OBX", "1", "3"]
    assert err.extract_field(1, 1, 1, 4, 1) == "103"


@pytest.mark.parametrize("version", ["2.5", "2.5.1", "2.6"])
def test_acks_to_v25_and_later_carry_location_code_and_severity(translator, version):
    t = translator.translate(message(msh(version=version), OBR, UNKNOWN_CODE))
    err = hl7.parse(t.ack().decode()).segment("ERR")
    assert str(err(2)) == "OBX^1^3"
    assert err.extract_field(1, 3, 1, 1) == "103"
    assert str(err(4)) == "E"


@pytest.mark.parametrize("time", ["2024-03-15 10:30", "20241315103000", "20240315",
                                  "00010101000000+0100", "99991231235959-0100"])
def test_an_invalid_msh7_is_refused_by_name(translator, time):
    t = translator.translate(message(msh(time=time), "OBR|1||B24031500017|^^^CHEM",
                                     "OBX|1|NM|K^Potassium^L||4.52|mmol/L|3.50-5.30|N|||F"))
    assert t.ack_code is AckCode.AR
    [error] = t.errors
    assert error.reason == "bad_message_time"
    assert (error.segment, error.field) == ("MSH", 7)
    assert "MSH-7" in error.text and "empty" not in error.text
    assert str(hl7.parse(t.ack().decode()).segment("MSA")(2)) == "MSG-77"


def test_a_valid_msh7_is_still_the_run_time_of_last_resort(translator):
    t = translator.translate(message(msh(), "OBR|1||B24031500017|^^^CHEM",
                                     "OBX|1|NM|K^Potassium^L||4.52|mmol/L|3.50-5.30|N|||F"))
    assert t.ack_code is AckCode.AA, t.errors
    assert t.results[0].run_at.isoformat() == "2024-03-15T02:30:00+00:00"


@pytest.mark.parametrize("time", ["00010101000000+0100", "99991231235959-0100"])
def test_an_obx14_past_the_calendar_edges_is_a_bad_time_not_an_internal_error(
        translator, time):
    t = translator.translate(message(msh(), OBR, "OBX|1|NM|K^Potassium^L||4.52|mmol/L||N|||F"
                                                 f"|||{time}"))
    assert [e.reason for e in t.errors] == ["bad_time"]
