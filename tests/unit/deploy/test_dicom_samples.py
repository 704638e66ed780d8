"""Sample studies for tests and the demo: pydicom's CT and MR slices with fresh
UIDs and the given accession; DX and US are relabelled copies."""

from __future__ import annotations

import io

import pydicom
import pytest
from yigongti_deploy.dicom_samples import SAMPLES, make_study


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@pytest.mark.parametrize("modality", ["CT", "MR", "DX", "US"])
def test_a_study_has_fresh_uids_and_the_given_accession(modality):
    study = make_study(modality, "ACC42", series=2, instances_per_series=2)
    again = make_study(modality, "ACC42")
    datasets = [read(f) for f in study.files]

    assert study.instance_count == 4 and len(set(study.instance_uids)) == 4
    assert study.study_uid != again.study_uid
    assert not set(study.series_uids) & set(again.series_uids)
    for ds, uid in zip(datasets, study.instance_uids, strict=True):
        assert ds.StudyInstanceUID == study.study_uid
        assert ds.SeriesInstanceUID in study.series_uids
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID == uid
        assert ds.SOPClassUID == ds.file_meta.MediaStorageSOPClassUID
        assert (ds.Modality, ds.AccessionNumber) == (modality, "ACC42")
    assert [(ds.SeriesNumber, ds.InstanceNumber) for ds in datasets] == [
        (1, 1),
        (1, 2),
        (2, 1),
        (2, 2),
    ]


@pytest.mark.parametrize(("modality", "source"), [("DX", "CT"), ("US", "MR")])
def test_dx_and_us_are_relabelled_copies_and_say_so(modality, source):
    relabelled = read(make_study(modality, "A").files[0])
    original = read(make_study(source, "A").files[0])

    assert make_study(modality, "A").relabelled_from == source
    assert relabelled.PixelData == original.PixelData
    assert relabelled.SOPClassUID != original.SOPClassUID
    assert relabelled.SOPClassUID == SAMPLES[modality].sop_class_uid
    assert f"RELABELLED {source}" in relabelled.SeriesDescription


def test_an_unknown_modality_is_refused():
    with pytest.raises(ValueError, match="no sample"):
        make_study("PT", "A")
