"""HL7 v2 ORU^R01 as analysers and LIS bridges send it → AnalyserResults, and the ACK."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import hl7
import pytest
from yigongti_lab.hl7_results import (
    AckCode,
    ResultsTranslator,
    canonical_unit,
    catalogue_code_mapper,
    parse_hl7_time,
)
from yigongti_lab.mllp import Frame, FrameReader, frame

MINDRAY_MSH = ("MSH|^~\\&|BS-2000M|Mindray|LIS|652325-L01|20240315103000||ORU^R01|1001|P|"
               "2.3.1||||0||UNICODE UTF-8")
PATIENT = "PID|1||P0099^^^H^MR||WANG^Fang||19580211|F|||Beijing Road 1"


def message(*segments: str, msh: str = MINDRAY_MSH) -> bytes:
    return ("\r".join((msh, *segments)) + "\r").encode()


CHEMISTRY = message(
    PATIENT,
    "ORC|RE|O-7781|B24031500017",
    "OBR|1|O-7781|B24031500017|^^^CHEM^Chemistry|R||20240315102500",
    "OBX|1|NM|K^Potassium^99MRC||4.52|mmol/l|3.50-5.30|N|||F|||20240315102900",
    "OBX|2|NM|2951-2^Sodium^LN||140.1|mmol/L|137-147|N|||F|||20240315102900",
    "OBX|3|NM|GLU^Glucose^99MRC||6.10|MMOL/L|3.9-6.1|N|||F|||20240315102910",
)


def parse_ack(ack: bytes, encoding: str = "utf-8") -> hl7.Message:
    return hl7.parse(ack.decode(encoding))


@pytest.fixture(scope="module")
def translator() -> ResultsTranslator:
    return ResultsTranslator()


def test_chemistry_message_becomes_one_analyser_results(translator):
    t = translator.translate(CHEMISTRY)
    assert t.ack_code is AckCode.AA, t.errors
    [result] = t.results
    assert result.barcode == "B24031500017"
    assert result.analyser_id == "BS-2000M"
    assert result.message_id == "1001"
    assert [(o.code, o.value, o.unit) for o in result.observations] == [
        ("K", Decimal("4.52"), "mmol/L"),
        ("NA", Decimal("140.1"), "mmol/L"),
        ("GLU", Decimal("6.10"), "mmol/L"),
    ]
    # the latest OBX-14, China Standard Time → UTC
    assert result.run_at == datetime(2024, 3, 15, 2, 29, 10, tzinfo=UTC)


def test_nothing_of_pid_reaches_the_results(translator):
    [result] = translator.translate(CHEMISTRY).results
    text = result.model_dump_json()
    for identity in ("P0099", "WANG", "Fang", "19580211", "Beijing"):
        assert identity not in text


def test_cbc_from_a_sysmex_like_analyser_maps_loinc_codes():
    sysmex = ("MSH|^~\\&|XN-1000^00-11^|SYSMEX|LIS|652325-L01|20240315104500||ORU^R01^ORU_R01|"
              "MSG00042|P|2.5.1|||AL|NE|CHN|UNICODE UTF-8")
    raw = message(
        PATIENT,
        "PV1|1|O",
        "ORC|RE||C24031500001",
        "OBR|1||C24031500001|58410-2^CBC panel^LN|||20240315104000|||||||||||||||||HM|F",
        "OBX|1|NM|6690-2^WBC^LN||7.12|10^9/L|3.5-9.5|N|||F",
        "OBX|2|NM|789-8^RBC^LN||4.51|10\\S\\12/L|4.3-5.8|N|||F",
        "OBX|3|NM|718-7^HGB^LN||132|g/L|130-175|N|||F",
        "OBX|4|NM|777-3^PLT^LN||212|x10E9/L|125-350|N|||F",
        msh=sysmex,
    )
    catalogue = {
        "HGB": SimpleNamespace(code="HGB", loinc="718-7", unit="g/L"),
        "WBC": SimpleNamespace(code="WBC", loinc="6690-2", unit="10*9/L"),
        "RBC": SimpleNamespace(code="RBC", loinc="789-8", unit="10*12/L"),
        "PLT": SimpleNamespace(code="PLT", loinc="777-3", unit="10*9/L"),
    }
    t = ResultsTranslator(catalogue=catalogue).translate(raw)
    assert t.ack_code is AckCode.AA, t.errors
    [result] = t.results
    assert result.analyser_id == "XN-1000"
    assert [(o.code, str(o.value), o.unit) for o in result.observations] == [
        ("WBC", "7.12", "10*9/L"), ("RBC", "4.51", "10*12/L"), ("HGB", "132", "g/L"),
        ("PLT", "212", "10*9/L"),
    ]
    assert result.run_at == datetime(2024, 3, 15, 2, 40, tzinfo=UTC)  # OBR-7, +08:00


def test_hgb_of_the_shipped_catalogue_is_found_by_loinc(translator):
    raw = message("OBR|1||C24031500002|^^^CBC|||20240315104000",
                  "OBX|1|NM|718-7^Hemoglobin^LN||98|g/l||L|||F")
    [result] = translator.translate(raw).results
    assert (result.observations[0].code, result.observations[0].unit) == ("HGB", "g/L")


def test_analyser_codes_of_a_catalogue_entry_map_local_codes():
    catalogue = {
        "K": SimpleNamespace(code="K", loinc="2823-3", unit="mmol/L", analyser_codes=["K+"]),
        "NA": SimpleNamespace(code="NA", loinc="2951-2", unit="mmol/L",
                              analyser_codes=[{"code": "0002", "system": "99MRC"}]),
    }
    map_code = catalogue_code_mapper(catalogue)
    assert map_code("K+", "L") == "K"
    assert map_code("0002", "99MRC") == "NA"
    assert map_code("0002", "OTHER") is None
    assert map_code("2823-3", "LN") == "K"
    assert map_code("na", "") == "NA"
    assert map_code("2951-2", "L") == "NA"  # LOINC sent as a local code
    # an entry without analyser_codes (the catalogue before it grows them) works too
    assert catalogue_code_mapper({"K": SimpleNamespace(code="K", loinc=None, unit="mmol/L")})(
        "K", "") == "K"


def test_a_custom_map_code_is_used_and_the_alternate_code_tried():
    def map_code(identifier, system):
        return {"LN:2823-3": "K"}.get(f"{system}:{identifier}")

    raw = message("OBR|1||B24031500017|||20240315102500",
                  "OBX|1|NM|K01^Kalium^L^2823-3^Potassium^LN||4.1|mmol/L||N|||F")
    [result] = ResultsTranslator(map_code=map_code).translate(raw).results
    assert result.observations[0].code == "K"


def test_gb18030_message_with_chinese_text_is_read_and_answered_in_gb18030(translator):
    msh = ("MSH|^~\\&|BS-2000M|迈瑞生化仪|LIS|昌吉州医学检验中心|20240315103000||ORU^R01|"
           "2002|P|2.4||||||GB 18030-2000")
    text = "\r".join([
        msh,
        "PID|1||P0099||王芳||19580211|F",
        "OBR|1||B24031500018|^^^CHEM^生化|||20240315102500",
        "OBX|1|NM|GLU^葡萄糖^L||5.3|mmol/L|3.9-6.1|N|||F",
        "OBX|2|NM|K^钾^L||3.9|mmol/L|3.5-5.3|N|||F",
    ]) + "\r"
    raw = text.encode("gb18030")
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AA, t.errors
    assert [o.code for o in t.results[0].observations] == ["GLU", "K"]
    ack = t.ack()
    assert "昌吉州医学检验中心".encode("gb18030") in ack
    msh_ack = parse_ack(ack, "gb18030").segment("MSH")
    assert str(msh_ack(3)) == "LIS" and str(msh_ack(4)) == "昌吉州医学检验中心"
    assert str(msh_ack(6)) == "迈瑞生化仪"
    assert str(msh_ack(18)) == "GB 18030-2000"


@pytest.mark.parametrize("label", ["GBK", "GB18030", "GB 18030-2000"])
def test_gbk_and_gb18030_labels_are_accepted(translator, label):
    msh = ("MSH|^~\\&|BS-2000M|迈瑞|LIS|检验中心|20240315103000||ORU^R01|2003|P|2.3.1||||||"
           + label)
    raw = message("OBR|1||B24031500019|||20240315102500",
                  "OBX|1|NM|K^钾^L||4.0|mmol/L||N|||F", msh=msh).decode().encode("gbk")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AA, t.errors
    assert "检验中心".encode("gbk") in t.ack()


def test_gbk_bytes_that_look_like_separators_do_not_split_fields(translator):
    # 東 is 0x96 0x7C and 抃 is 0x92 0x5C in GBK: a "|" and a "\" inside a character.
    assert "東".encode("gbk")[1:] == b"|" and "抃".encode("gbk")[1:] == b"\\"
    msh = ("MSH|^~\\&|BS-2000M|東抃检验|LIS|检验中心|20240315103000||ORU^R01|2005|P|2.3.1|||"
           "|||GBK")
    raw = message("OBR|1||B24031500034|||20240315102500",
                  "OBX|1|NM|K^東^L||4.0|mmol/L||N|||F", msh=msh).decode().encode("gbk")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AA, t.errors
    assert t.encode_as == "gbk"  # MSH-18 was found after the "|" inside 東
    msh_ack = parse_ack(t.ack(), "gbk").segment("MSH")
    assert str(msh_ack(6)) == "東抃检验" and str(msh_ack(18)) == "GBK"


def test_without_msh18_utf8_then_gb18030_is_tried(translator):
    msh = "MSH|^~\\&|BS-2000M|迈瑞|LIS|检验中心|20240315103000||ORU^R01|2004|P|2.3.1"
    body = message("OBR|1||B24031500020|||20240315102500",
                   "OBX|1|NM|K^钾^L||4.0|mmol/L||N|||F", msh=msh).decode()
    for encoding in ("utf-8", "gb18030"):
        t = translator.translate(body.encode(encoding))
        assert t.ack_code is AckCode.AA, (encoding, t.errors)
        assert "检验中心".encode(encoding) in t.ack()


def test_multiple_obr_groups_give_one_analyser_results_per_barcode(translator):
    raw = message(
        PATIENT,
        "OBR|1||B24031500021|^^^LYTES|||20240315102500",
        "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F",
        "OBX|2|NM|NA^Sodium^L||139|mmol/L||N|||F",
        "PID|2||P0100||LI^Lei",
        "OBR|2||B24031500022|^^^GLU|||20240315102600",
        "OBX|3|NM|GLU^Glucose^L||11.2|mmol/L||H|||F",
        "OBR|3||B24031500021|^^^CL|||20240315102700",
        "OBX|4|NM|CL^Chloride^L||101|mmol/L||N|||F",
    )
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AA, t.errors
    by_barcode = {r.barcode: [o.code for o in r.observations] for r in t.results}
    assert by_barcode == {"B24031500021": ["K", "NA", "CL"], "B24031500022": ["GLU"]}
    first = next(r for r in t.results if r.barcode == "B24031500021")
    assert first.run_at == datetime(2024, 3, 15, 2, 27, tzinfo=UTC)  # latest OBR-7
    assert len({ce_id for ce_id, _ in t.records}) == 2


def test_structured_numeric_with_a_comparator(translator):
    raw = message("OBR|1||B24031500023|||20240315102500",
                  "OBX|1|SN|CTNI^hs-cTnI^L||<^0.01|ng/L|<26.2|N|||F",
                  "OBX|2|SN|K^Potassium^L||^4.4|mmol/L||N|||F",
                  "OBX|3|NM|GLU^Glucose^L||>33.3|mmol/L||H|||F")
    [result] = translator.translate(raw).results
    assert [(o.code, o.comparator, o.value) for o in result.observations] == [
        ("CTNI", "<", Decimal("0.01")), ("K", None, Decimal("4.4")),
        ("GLU", ">", Decimal("33.3")),
    ]


def test_coded_results_carry_no_unit(translator):
    catalogue = {"HBSAG": SimpleNamespace(code="HBSAG", loinc="5196-1", unit=None),
                 "UPRO": SimpleNamespace(code="UPRO", loinc="20454-5", unit=None)}
    raw = message("OBR|1||U24031500001|||20240315102500",
                  "OBX|1|ST|HBSAG^HBsAg^L||NEG|||N|||F",
                  "OBX|2|CWE|UPRO^Protein^L||2+^2+^L|||A|||F")
    [result] = ResultsTranslator(catalogue=catalogue).translate(raw).results
    assert [(o.code, o.coded_value, o.unit) for o in result.observations] == [
        ("HBSAG", "NEG", None), ("UPRO", "2+", None)]


def test_unknown_obx_code_is_an_application_error_naming_the_obx(translator):
    raw = message("OBR|1||B24031500024|||20240315102500",
                  "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F",
                  "OBX|2|NM|ZZZ9^Mystery^L||1.0|mmol/L||N|||F")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AE
    assert t.results == ()  # nothing of the message is taken
    [error] = t.errors
    assert error.reason == "unknown_code" and "OBX 2" in error.text
    ack = parse_ack(t.ack())
    assert str(ack.segment("MSA")(1)) == "AE"
    assert "OBX 2" in str(ack.segment("MSA")(3))
    err = ack.segment("ERR")  # a v2.3.1 message: ERR-1 (ELD) only
    assert err.extract_field(1, 1, 1, 1) == "OBX" and err.extract_field(1, 1, 1, 2) == "2"
    assert err.extract_field(1, 1, 1, 3) == "3"
    assert err.extract_field(1, 1, 1, 4, 1) == "103"


def test_unit_mismatch_and_missing_unit_are_application_errors(translator):
    raw = message("OBR|1||B24031500025|||20240315102500",
                  "OBX|1|NM|GLU^Glucose^L||110.37|mg/dL||N|||F",
                  "OBX|2|NM|K^Potassium^L||4.2|||N|||F")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AE
    assert [(e.reason, e.sequence, e.field) for e in t.errors] == [
        ("unit_mismatch", 1, 6), ("missing_unit", 2, 6)]
    # The value is never echoed ("110.37": a random control id can hold "110").
    assert "110.37" not in t.ack().decode()


def test_preliminary_results_are_skipped_and_preliminary_only_is_an_error(translator):
    raw = message("OBR|1||B24031500026|||20240315102500",
                  "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||P",
                  "OBX|2|NM|NA^Sodium^L||140|mmol/L||N|||C")
    [result] = translator.translate(raw).results
    assert [o.code for o in result.observations] == ["NA"]
    only = message("OBR|1||B24031500026|||20240315102500",
                   "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||P")
    t = translator.translate(only)
    assert t.ack_code is AckCode.AE and t.errors[0].reason == "no_final_results"


def test_barcode_comes_from_obr3_then_obr2_then_spm2():
    spm_only = message("OBR|1|||^^^CHEM|||20240315102500",
                       "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F",
                       "SPM|1|S24031500001&LAB^F24031500001&LAB||SER",
                       "OBX|2|NM|VOL^Volume^L||2|mL|||||F")  # describes the specimen
    placer_only = message("OBR|1|P24031500001||^^^CHEM|||20240315102500",
                          "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F")
    translator = ResultsTranslator()
    assert translator.translate(spm_only).results[0].barcode == "F24031500001"
    assert translator.translate(placer_only).results[0].barcode == "P24031500001"
    # an analyser that puts its sample number in OBR-3 is configured to read OBR-2
    numbered = message("OBR|1|B24031500027|17|||20240315102500",
                       "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F")
    t = ResultsTranslator(barcode_fields=("OBR-2",)).translate(numbered)
    assert t.results[0].barcode == "B24031500027"


def test_bad_or_missing_barcode_is_an_application_error(translator):
    bad = message("OBR|1||B#1|||20240315102500", "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F")
    none = message("OBR|1||||||20240315102500", "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F")
    assert translator.translate(bad).errors[0].reason == "bad_barcode"
    assert translator.translate(none).errors[0].reason == "missing_barcode"
    assert translator.translate(none).ack_code is AckCode.AE


def test_malformed_segment_is_rejected(translator):
    raw = message("OBR|1||B24031500028|||20240315102500",
                  "OBX1NM|K^Potassium^L||4.2|mmol/L",
                  "OBX|2|NM|NA^Sodium^L||140|mmol/L||N|||F")
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AR
    assert t.errors[0].reason == "malformed_segment" and "segment 3" in t.errors[0].text
    assert str(parse_ack(t.ack()).segment("MSA")(1)) == "AR"


@pytest.mark.parametrize("raw, reason", [
    (b"hello, this is not HL7", "not_hl7"),
    (message("OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F"), "malformed_message"),
    (message(PATIENT), "malformed_message"),
    (message("OBR|1||B24031500029", msh=MINDRAY_MSH.replace("2.3.1", "2.2")),
     "unsupported_version"),
    (message("OBR|1||B24031500029", msh=MINDRAY_MSH.replace("|P|", "|T|")),
     "unsupported_processing_id"),
    (message("OBR|1||B24031500029", msh=MINDRAY_MSH.replace("UNICODE UTF-8", "ISO IR87")),
     "unsupported_charset"),
    (message("OBR|1||B24031500029", msh=MINDRAY_MSH.replace("UNICODE UTF-8", "ASCII"))
     .replace(b"OBR", "OBR|1||B24031500029|钾".encode(), 1), "bad_encoding"),
])
def test_messages_that_cannot_be_taken_at_all_are_rejected(translator, raw, reason):
    t = translator.translate(raw)
    assert t.ack_code is AckCode.AR
    assert t.errors[0].reason == reason
    ack = parse_ack(t.ack(), "utf-8")
    assert str(ack.segment("MSA")(1)) == "AR"


def test_wrong_message_type_is_rejected_with_hl7_error_200(translator):
    adt = message(PATIENT, "PV1|1|I|W3^301^1",
                  msh=MINDRAY_MSH.replace("ORU^R01", "ADT^A01^ADT_A01"))
    t = translator.translate(adt)
    assert t.ack_code is AckCode.AR and t.errors[0].reason == "unsupported_message_type"
    ack = parse_ack(t.ack())
    assert ack.segment("MSH").extract_field(1, 9, 1, 2) == "A01"
    assert ack.segment("ERR").extract_field(1, 1, 1, 4, 1) == "200"  # ERR-1: v2.3.1
    assert "WANG" not in t.ack().decode()


def test_ack_swaps_sender_and_receiver_and_echoes_the_message_id(translator):
    t = translator.translate(CHEMISTRY)
    fixed = datetime(2024, 3, 15, 2, 30, 5, tzinfo=UTC)
    ack = parse_ack(t.ack(now=fixed, control_id="ACK0001"))
    msh, msa = ack.segment("MSH"), ack.segment("MSA")
    assert [str(msh(n)) for n in (3, 4, 5, 6)] == ["LIS", "652325-L01", "BS-2000M", "Mindray"]
    assert str(msh(7)) == "20240315103005+0800"
    assert str(msh(9)) == "ACK^R01^ACK"
    assert str(msh(10)) == "ACK0001"
    assert (str(msh(11)), str(msh(12))) == ("P", "2.3.1")
    assert (str(msa(1)), str(msa(2))) == ("AA", "1001")
    assert [str(s[0][0]) for s in ack] == ["MSH", "MSA"]


def test_ack_uses_our_name_when_the_message_left_receiver_empty():
    msh = "MSH|^~\\&|BS-2000M|Mindray|||20240315103000||ORU^R01|1003|P|2.3.1"
    raw = message("OBR|1||B24031500030|||20240315102500",
                  "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F", msh=msh)
    t = ResultsTranslator(application="YGT-LAB", facility="652325-L01").translate(raw)
    msh_ack = parse_ack(t.ack()).segment("MSH")
    assert (str(msh_ack(3)), str(msh_ack(4))) == ("YGT-LAB", "652325-L01")


def test_ack_text_is_escaped(translator):
    raw = message("OBR|1||B24031500031|||20240315102500",
                  "OBX|1|NM|A\\F\\B^Odd^L||4.2|mmol/L||N|||F")
    ack = parse_ack(translator.translate(raw).ack())
    assert len(ack.segment("MSA")) == 4  # the "|" in the code did not add a field
    assert "A|B" in ack.unescape(str(ack.segment("MSA")(3)))


@pytest.mark.parametrize("text, expected", [
    ("20240315102900", datetime(2024, 3, 15, 2, 29, tzinfo=UTC)),
    ("202403151029", datetime(2024, 3, 15, 2, 29, tzinfo=UTC)),
    ("20240315102900.25", datetime(2024, 3, 15, 2, 29, 0, 250000, tzinfo=UTC)),
    ("20240315102900+0800", datetime(2024, 3, 15, 2, 29, tzinfo=UTC)),
    ("20240315102900+0000", datetime(2024, 3, 15, 10, 29, tzinfo=UTC)),
    ("20240301070000", datetime(2024, 2, 29, 23, 0, tzinfo=UTC)),  # across a (leap) day
])
def test_hl7_times_without_offset_are_china_standard_time(text, expected):
    assert parse_hl7_time(text) == expected


@pytest.mark.parametrize("text", ["2024-03-15", "20240315", "20241315102900", "abc"])
def test_unreadable_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_hl7_time(text)


def test_explicit_offset_in_obx14_is_honoured(translator):
    raw = message("OBR|1||B24031500032|||20240315102500",
                  "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F|||20240315022900+0000")
    assert translator.translate(raw).results[0].run_at == datetime(2024, 3, 15, 2, 29,
                                                                     tzinfo=UTC)


def test_resent_message_gets_the_same_ce_ids(translator):
    first = translator.translate(CHEMISTRY).records
    again = translator.translate(CHEMISTRY).records
    other = translator.translate(CHEMISTRY.replace(b"|1001|", b"|1002|")).records
    assert [c for c, _ in first] == [c for c, _ in again]
    assert first[0][0] != other[0][0]


def test_duplicate_code_for_one_tube_is_an_error(translator):
    raw = message("OBR|1||B24031500033|||20240315102500",
                  "OBX|1|NM|K^Potassium^L||4.2|mmol/L||N|||F",
                  "OBX|2|NM|2823-3^Potassium^LN||4.3|mmol/L||N|||F")
    t = translator.translate(raw)
    assert t.errors[0].reason == "duplicate_code" and "OBX 1" in t.errors[0].text


def test_analyser_id_from_a_registration_table():
    t = ResultsTranslator(analyser_ids={"BS-2000M^Mindray": "an-chem-01"}).translate(CHEMISTRY)
    assert t.results[0].analyser_id == "an-chem-01"
    fixed = ResultsTranslator(analyser_id="an-chem-02").translate(CHEMISTRY)
    assert fixed.results[0].analyser_id == "an-chem-02"


@pytest.mark.parametrize("sent, expected, canonical", [
    ("mmol/l", "mmol/L", "mmol/L"), ("MMOL/L", "mmol/L", "mmol/L"),
    ("10^9/L", "10*9/L", "10*9/L"), ("pg/mL", "ng/L", "ng/L"), ("秒", "s", "s"),
    ("µmol/L", "umol/L", "umol/L"), ("mg/dL", "mmol/L", None), ("g/L", None, None),
])
def test_unit_spellings(sent, expected, canonical):
    assert canonical_unit(sent, expected) == canonical


def test_line_feeds_as_segment_separators_are_tolerated(translator):
    assert translator.translate(CHEMISTRY.replace(b"\r", b"\r\n")).ack_code is AckCode.AA
    assert translator.translate(CHEMISTRY.replace(b"\r", b"\n")).ack_code is AckCode.AA


# --- MLLP framing -----------------------------------------------------------------------


def test_frames_are_found_across_partial_reads_and_several_per_read():
    reader = FrameReader()
    stream = frame(b"MSH|one") + b"\r\n" + frame(b"MSH|two") + frame(b"MSH|three")
    found: list[Frame] = []
    for i in range(0, len(stream), 3):
        found += reader.feed(stream[i:i + 3])
    assert [f.data for f in found] == [b"MSH|one", b"MSH|two", b"MSH|three"]
    assert reader.feed(frame(b"a") + frame(b"b")) == [Frame(b"a"), Frame(b"b")]
    assert not reader.in_frame


def test_oversized_frame_is_discarded_keeping_its_head():
    reader = FrameReader(max_frame_bytes=100)
    big = b"MSH|^~\\&|BIG" + b"x" * 500
    found = []
    for i in range(0, len(big), 64):
        found += reader.feed((b"\x0b" if i == 0 else b"") + big[i:i + 64])
    assert found == []
    found = reader.feed(b"\x1c\r" + frame(b"MSH|next"))
    assert found[0].oversized and found[0].data.startswith(b"MSH|^~\\&|BIG")
    assert len(found[0].data) <= 4096
    assert found[1] == Frame(b"MSH|next")


def test_a_new_start_block_abandons_an_unfinished_frame():
    reader = FrameReader()
    assert reader.feed(b"\x0bMSH|cut off\x0bMSH|whole\x1c\r") == [Frame(b"MSH|whole")]
