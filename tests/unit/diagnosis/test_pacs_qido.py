"""What the PACS answers, as the diagnosis service records it: the study and its
series from QIDO-RS DICOM JSON, the accession check, and image sniffing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from yigongti_diagnosis.pacs import (
    PacsSeries,
    PacsStudy,
    StudyOutcome,
    compare_accession,
    sniff_image,
    study_from_qido,
)

STUDY = "1.2.826.0.1.3680043.8.498.1"


def qido_study(uid: str, accession: str | None) -> dict:
    item = {"0020000D": {"vr": "UI", "Value": [uid]}, "00080050": {"vr": "SH"}}
    if accession is not None:
        item["00080050"]["Value"] = [accession]
    # The patient module comes along in a real answer; nothing may keep it.
    item["00100010"] = {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]}
    return item


def qido_series(uid: str, modality: str, count: int, number: int | None) -> dict:
    item = {
        "0020000E": {"vr": "UI", "Value": [uid]},
        "00080060": {"vr": "CS", "Value": [modality]},
        "00201209": {"vr": "IS", "Value": [count]},
    }
    if number is not None:
        item["00200011"] = {"vr": "IS", "Value": [number]}
    return item


def test_a_study_is_read_with_its_series_in_series_number_order():
    study = study_from_qido(
        STUDY,
        [qido_study(STUDY, "ACC1")],
        [
            qido_series("1.2.3.2", "CT", 40, 2),
            qido_series("1.2.3.9", "SR", 1, None),
            qido_series("1.2.3.1", "CT", 3, 1),
        ],
    )
    assert study == PacsStudy(
        STUDY,
        "ACC1",
        (
            PacsSeries("1.2.3.1", "CT", 3, 1),
            PacsSeries("1.2.3.2", "CT", 40, 2),
            PacsSeries("1.2.3.9", "SR", 1, None),
        ),
    )
    assert study.modalities == ("CT", "SR")
    assert study.instance_count == 44
    assert "Doe" not in repr(study)


def test_an_answer_for_another_study_is_no_study():
    # A server that ignores the StudyInstanceUID filter answers with other studies.
    assert study_from_qido(STUDY, [qido_study(STUDY + "9", "ACC1")], []) is None
    assert study_from_qido(STUDY, [], []) is None


def _study(accession: str | None) -> PacsStudy:
    return PacsStudy(STUDY, accession, (PacsSeries("1.2.3.1", "MR", 1),))


@pytest.mark.parametrize(
    ("on_pacs", "requested", "outcome"),
    [
        ("ACC1", "ACC1", StudyOutcome.FOUND),
        ("ACC1 ", "ACC1", StudyOutcome.FOUND),  # DICOM pads SH values to an even length
        ("ACC1", "ACC2", StudyOutcome.ACCESSION_MISMATCH),
        ("acc1", "ACC1", StudyOutcome.ACCESSION_MISMATCH),  # identifiers are exact
        (None, "ACC1", StudyOutcome.ACCESSION_MISMATCH),  # a study without one never matches
        ("", "", StudyOutcome.ACCESSION_MISMATCH),
    ],
)
def test_the_accession_number_decides(on_pacs, requested, outcome):
    check = compare_accession(_study(on_pacs), requested)
    assert check.outcome is outcome
    assert check.study is not None


def test_a_missing_study_is_not_found():
    assert compare_accession(None, "ACC1").outcome is StudyOutcome.NOT_FOUND


@given(st.text(min_size=1, max_size=16), st.text(min_size=1, max_size=16))
def test_found_exactly_when_the_trimmed_accessions_agree(on_pacs, requested):
    found = compare_accession(_study(on_pacs), requested).outcome is StudyOutcome.FOUND
    assert found == (on_pacs.strip() == requested.strip() != "")


@pytest.mark.parametrize(
    ("head", "media_type"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00", "image/png"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"<html>error</html>", None),
        (b"", None),
    ],
)
def test_previews_are_recognised_by_their_leading_bytes(head, media_type):
    assert sniff_image(head) == media_type
