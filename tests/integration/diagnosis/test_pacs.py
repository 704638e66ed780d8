"""The diagnosis service's PACS client against a real Orthanc with its DICOMweb
plugin: studies uploaded with fresh UIDs are looked up (series, modality,
instance count, accession), mismatches and missing studies are told apart, and
previews render as images."""

from __future__ import annotations

import io
import secrets

import pytest
from PIL import Image
from pydicom.uid import generate_uid
from yigongti_deploy.dicom_samples import make_study, upload_study
from yigongti_deploy.embedded import free_port
from yigongti_deploy.orthanc import EmbeddedOrthanc
from yigongti_diagnosis.pacs import (
    PacsClient,
    PacsUnavailable,
    StudyOutcome,
)

# The samples' own sizes (pydicom's CT_small.dcm and MR_small.dcm).
SAMPLE_SIZE = {"CT": (128, 128), "DX": (128, 128), "MR": (64, 64), "US": (64, 64)}


def accession() -> str:
    return "ACC" + secrets.token_hex(4).upper()


@pytest.mark.parametrize("modality", ["CT", "MR", "DX", "US"])
async def test_an_uploaded_study_is_found_with_its_series_modality_and_instance_count(
    orthanc, modality
):
    study = make_study(modality, accession(), series=2, instances_per_series=3)
    await upload_study(orthanc, study)

    check = await PacsClient(orthanc).check_study(study.study_uid, study.accession)

    assert check.outcome is StudyOutcome.FOUND
    found = check.study
    assert found.study_uid == study.study_uid
    assert found.accession == study.accession
    assert found.modalities == (modality,)
    assert [s.series_uid for s in found.series] == list(study.series_uids)
    assert [(s.modality, s.instance_count, s.number) for s in found.series] == [
        (modality, 3, 1),
        (modality, 3, 2),
    ]
    assert found.instance_count == 6


async def test_ct_and_mr_studies_do_not_see_each_other(orthanc):
    ct = make_study("CT", accession())
    mr = make_study("MR", accession(), instances_per_series=2)
    await upload_study(orthanc, ct)
    await upload_study(orthanc, mr)

    client = PacsClient(orthanc)
    found_ct = (await client.check_study(ct.study_uid, ct.accession)).study
    found_mr = (await client.check_study(mr.study_uid, mr.accession)).study

    assert (found_ct.modalities, found_ct.instance_count) == (("CT",), 1)
    assert (found_mr.modalities, found_mr.instance_count) == (("MR",), 2)


async def test_a_study_under_another_accession_number_is_a_mismatch(orthanc):
    study = make_study("CT", accession())
    await upload_study(orthanc, study)

    check = await PacsClient(orthanc).check_study(study.study_uid, accession())

    assert check.outcome is StudyOutcome.ACCESSION_MISMATCH
    assert check.study.accession == study.accession


async def test_a_study_the_pacs_does_not_have_is_not_found(orthanc):
    check = await PacsClient(orthanc).check_study(generate_uid(), accession())

    assert check.outcome is StudyOutcome.NOT_FOUND
    assert check.study is None


@pytest.mark.parametrize(
    ("media_type", "magic"),
    [("image/png", b"\x89PNG\r\n\x1a\n"), ("image/jpeg", b"\xff\xd8\xff")],
    ids=["png", "jpeg"],
)
@pytest.mark.parametrize("modality", ["CT", "MR"])
async def test_a_series_preview_renders_as_an_image(orthanc, modality, media_type, magic):
    study = make_study(modality, accession())
    await upload_study(orthanc, study)

    preview = await PacsClient(orthanc).series_preview(
        study.study_uid, study.series_uids[0], media_type
    )

    assert preview.media_type == media_type
    assert preview.content.startswith(magic)
    image = Image.open(io.BytesIO(preview.content))
    assert image.size == SAMPLE_SIZE[modality]
    low, high = image.convert("L").getextrema()
    assert high - low > 32  # a picture, not a blank frame


async def test_an_instance_preview_renders_as_an_image(orthanc):
    study = make_study("CT", accession(), instances_per_series=2)
    await upload_study(orthanc, study)

    preview = await PacsClient(orthanc).instance_preview(
        study.study_uid, study.series_uids[0], study.instance_uids[1], "image/png"
    )

    assert preview.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert Image.open(io.BytesIO(preview.content)).size == SAMPLE_SIZE["CT"]


async def test_a_preview_of_a_series_the_pacs_does_not_have_is_none(orthanc):
    study = make_study("MR", accession())
    await upload_study(orthanc, study)

    assert await PacsClient(orthanc).series_preview(study.study_uid, generate_uid()) is None
    assert await PacsClient(orthanc).series_preview(generate_uid(), generate_uid()) is None


async def test_an_unreachable_pacs_is_unavailable_never_not_found():
    client = PacsClient(f"http://127.0.0.1:{free_port()}/dicom-web", connect_timeout_s=1)

    with pytest.raises(PacsUnavailable):
        await client.check_study(generate_uid(), accession())
    with pytest.raises(PacsUnavailable):
        await client.series_preview(generate_uid(), generate_uid())


async def test_a_pacs_with_credentials_answers_only_a_client_that_has_them(tmp_path, orthanc):
    # Its own Orthanc with a generated password (`orthanc` only for its skip / CI rule).
    password = secrets.token_urlsafe(16)
    server = EmbeddedOrthanc(tmp_path / "pacs", users={"diagnosis": password})
    await server.start()
    try:
        study = make_study("CT", accession())
        await upload_study(server.url, study, auth=server.auth)

        with_them = PacsClient.from_env(server.env())
        assert (await with_them.check_study(study.study_uid, study.accession)).outcome == "found"

        with pytest.raises(PacsUnavailable) as refused:
            await PacsClient(server.url).check_study(study.study_uid, study.accession)
        assert refused.value.status == 401
        wrong = PacsClient(server.url, username="diagnosis", password="not-" + password)
        with pytest.raises(PacsUnavailable):
            await wrong.check_study(study.study_uid, study.accession)
    finally:
        await server.stop()
