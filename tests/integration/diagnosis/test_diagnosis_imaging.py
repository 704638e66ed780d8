"""Imaging intake against a real Orthanc with its DICOMweb plugin: the study is
checked over QIDO-RS and its series recorded; another Accession Number is
refused; a study the PACS does not have is parked, applied when it appears,
and refused as study_not_found after the grace period. Studies are pydicom's
CT_small/MR_small with fresh UIDs (DX and US are relabelled copies)."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest_asyncio
from diagflow import IMAGING_CENTRE, imaging_request, start_dx, until
from labflow import payload, rejection_for
from pydicom.uid import generate_uid
from yigongti_deploy.dicom_samples import make_study, upload_study

RECHECK = timedelta(seconds=61)


@pytest_asyncio.fixture(scope="module")
async def dx(database_url, kafka_bootstrap, broker_kind, dev_keys, orthanc):
    service, _, cleanup = await start_dx(database_url, kafka_bootstrap, broker_kind, dev_keys,
                                         pacs_url=orthanc)
    try:
        yield service
    finally:
        await cleanup()


def accession() -> str:
    return "ACC" + secrets.token_hex(4).upper()


async def test_a_study_on_the_pacs_is_recorded_and_queued_for_the_imaging_centre(dx, orthanc):
    for modality in ("CT", "DX"):
        study = make_study(modality, accession(), series=2, instances_per_series=2)
        await upload_study(orthanc, study)
        req = imaging_request(modality, study.study_uid, study.accession)
        await dx.terminal.publish(req)
        (queued,) = await dx.wait("diagnosis.queued.v1", req.request_id)
        assert queued["reading_centre"] == IMAGING_CENTRE
        recorded = await dx.fetchval("SELECT study FROM requests WHERE request_id = $1",
                                     req.request_id)
        assert '"instance_count": 4' in recorded and f'"{modality}"' in recorded


async def test_another_accession_number_is_refused(dx, orthanc):
    study = make_study("MR", accession())
    await upload_study(orthanc, study)
    ce_id = await dx.terminal.publish(imaging_request("MR", study.study_uid, accession()))
    (refused,) = await dx.events.wait_for(rejection_for(ce_id))
    assert payload(refused)["reason"] == "accession_mismatch"


async def test_a_missing_study_is_parked_then_applied_when_it_arrives(dx, orthanc):
    study = make_study("US", accession())
    req = imaging_request("US", study.study_uid, study.accession)
    await dx.terminal.publish(req)
    await until(lambda: dx.fetchval("SELECT true FROM parked WHERE request_id = $1",
                                    req.request_id), what="parked")
    await dx.shift_clock(RECHECK)
    await upload_study(orthanc, study)
    await dx.shift_clock(RECHECK)
    (queued,) = await dx.wait("diagnosis.queued.v1", req.request_id)
    assert queued["modality"] == "US"


async def test_a_study_still_missing_after_the_grace_period_is_refused(dx):
    req = imaging_request("CT", generate_uid(), accession())
    ce_id = await dx.terminal.publish(req)
    await until(lambda: dx.fetchval("SELECT true FROM parked WHERE request_id = $1",
                                    req.request_id), what="parked")
    await dx.shift_clock(timedelta(minutes=31))
    (refused,) = await dx.events.wait_for(rejection_for(ce_id), timeout=30)
    assert payload(refused)["reason"] == "study_not_found"
    assert payload(refused)["fields"] == [{"field": "study_instance_uid", "code": "not_found"}]
    assert await dx.fetchval("SELECT refused_at IS NOT NULL FROM parked WHERE request_id = $1",
                             req.request_id)


async def test_an_imaging_request_as_fhir_has_its_imaging_study(dx, orthanc):
    from fhir_check import problems

    study = make_study("CT", accession(), series=1, instances_per_series=2)
    await upload_study(orthanc, study)
    req = imaging_request("CT", study.study_uid, study.accession)
    await dx.terminal.publish(req)
    await dx.wait("diagnosis.queued.v1", req.request_id)
    async with dx.reader("STAFF-CT", centre=IMAGING_CENTRE, reads=("ct",)) as reader:
        await reader.post(f"/requests/{req.request_id}/claim")
        signed = await reader.post(f"/requests/{req.request_id}/report", json={
            "findings": "No abnormality.", "impression": "Normal.",
            "conclusions": ["IMG.NORMAL"], "critical": False})
        assert signed.status_code == 200, signed.text
        bundle = (await reader.get(f"/requests/{req.request_id}/fhir")).json()
    resources = [e["resource"] for e in bundle["entry"]]
    (imaging,) = [r for r in resources if r["resourceType"] == "ImagingStudy"]
    assert (imaging["numberOfSeries"], imaging["numberOfInstances"]) == (1, 2)
    assert problems([bundle, *resources]) == [[]] * (1 + len(resources))
