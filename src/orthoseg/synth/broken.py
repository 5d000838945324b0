"""Deliberately broken files for validation demos and tests, with the verdict each one should get."""

from __future__ import annotations

import copy
import io
import json
import logging

import numpy as np
from pydicom.uid import UID

from orthoseg.storage import ObjectStore, join_key
from orthoseg.synth.config import SynthConfig
from orthoseg.synth.dicom import (
    BASIC_TEXT_SR_SOP_CLASS,
    CT_IMAGE_SOP_CLASS,
    dataset_to_bytes,
    seeded_uid,
)

logger = logging.getLogger(__name__)

# The kinds, in the order they are added; ``broken_count`` takes the first n (cycling for more).
BROKEN_KINDS: tuple[str, ...] = (
    "truncated_dicom",
    "not_dicom",
    "ct_object",
    "phi_patient_name",
    "missing_pixel_spacing",
    "seg_size_mismatch",
    "sr_object",
)

EXPECTED: dict[str, str] = {
    "truncated_dicom": "truncated DICOM: the file ends inside the pixel data",
    "not_dicom": "not a DICOM file (a JPEG photograph renamed to .dcm)",
    "ct_object": "wrong modality: a CT image, not a knee radiograph (DX/CR)",
    "phi_patient_name": "identifying data: a real-looking PatientName and no PatientIdentityRemoved",
    "missing_pixel_spacing": "no PixelSpacing or ImagerPixelSpacing: measurements in mm impossible",
    "seg_size_mismatch": "label SEG size does not match its image",
    "sr_object": "not an image: a structured report (SR) object",
}


def _jpeg_bytes(seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng([seed, 991])
    pixels = (rng.random((64, 64)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def _broken_case(kind: str, number: int, config: SynthConfig) -> dict[str, bytes]:
    """Files (relative to the batch) of one broken example."""
    from orthoseg.synth.case import generate_case
    from orthoseg.synth.seg_bytes import build_label_seg

    small = config.model_copy(update={"image_px": min(config.image_px, 384), "bilateral_fraction": 0.0})
    base_index = 1_000_000 + number
    name = f"broken_{number:02d}_{kind}"
    if kind == "not_dicom":
        return {f"images/{name}.dcm": _jpeg_bytes(config.seed + number)}
    case = generate_case(base_index, small)
    ds = copy.deepcopy(case.dataset)
    uid = seeded_uid(config.seed, config.batch, "broken", number)
    ds.SOPInstanceUID = UID(uid)
    ds.file_meta.MediaStorageSOPInstanceUID = UID(uid)
    if kind == "truncated_dicom":
        data = dataset_to_bytes(ds)
        return {f"images/{name}.dcm": data[: len(data) * 2 // 3]}
    if kind == "ct_object":
        ds.SOPClassUID = CT_IMAGE_SOP_CLASS
        ds.file_meta.MediaStorageSOPClassUID = UID(CT_IMAGE_SOP_CLASS)
        ds.Modality = "CT"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.BodyPartExamined = "CHEST"
        ds.SliceThickness = "1.25"
        ds.RescaleIntercept = "-1024"
        ds.RescaleType = "HU"
        for keyword in ("ViewPosition", "ImagerPixelSpacing", "PresentationIntentType", "DetectorType"):
            if keyword in ds:
                delattr(ds, keyword)
        return {f"images/{name}.dcm": dataset_to_bytes(ds)}
    if kind == "sr_object":
        from pydicom.dataset import Dataset

        sr = Dataset()
        sr.file_meta = copy.deepcopy(ds.file_meta)
        sr.file_meta.MediaStorageSOPClassUID = UID(BASIC_TEXT_SR_SOP_CLASS)
        for keyword in (
            "SpecificCharacterSet",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "PatientName",
            "PatientID",
            "PatientBirthDate",
            "PatientSex",
            "PatientIdentityRemoved",
            "StudyInstanceUID",
            "StudyID",
            "ReferringPhysicianName",
            "Manufacturer",
        ):
            setattr(sr, keyword, getattr(ds, keyword))
        sr.SOPClassUID = BASIC_TEXT_SR_SOP_CLASS
        sr.SOPInstanceUID = uid
        sr.Modality = "SR"
        sr.SeriesInstanceUID = seeded_uid(uid, "sr-series")
        sr.SeriesNumber = 99
        sr.InstanceNumber = 1
        sr.ValueType = "CONTAINER"
        sr.ContinuityOfContent = "SEPARATE"
        sr.CompletionFlag = "COMPLETE"
        sr.VerificationFlag = "UNVERIFIED"
        return {f"images/{name}.dcm": dataset_to_bytes(sr)}
    if kind == "phi_patient_name":
        ds.PatientName = "MUELLER^ANNA^MARIA"
        ds.PatientID = "4711-0815"
        ds.PatientBirthDate = "19530412"
        del ds.PatientIdentityRemoved
        del ds.DeidentificationMethod
        return {f"images/{name}.dcm": dataset_to_bytes(ds)}
    if kind == "missing_pixel_spacing":
        for keyword in (
            "PixelSpacing",
            "ImagerPixelSpacing",
            "PixelSpacingCalibrationType",
            "PixelSpacingCalibrationDescription",
            "EstimatedRadiographicMagnificationFactor",
        ):
            if keyword in ds:
                delattr(ds, keyword)
        return {f"images/{name}.dcm": dataset_to_bytes(ds)}
    if kind == "seg_size_mismatch":
        # A valid image whose SEG was made for an image of another size.
        case.dataset.SOPInstanceUID = UID(uid)
        case.dataset.file_meta.MediaStorageSOPInstanceUID = UID(uid)
        wrong = copy.deepcopy(case.dataset)
        rows, columns = case.masks.shape[1:]
        wrong.Rows, wrong.Columns = rows - 32, columns - 16
        bad = copy.copy(case)
        bad.dataset = wrong
        bad.masks = case.masks[:, : rows - 32, : columns - 16]
        bad.sop_instance_uid = uid
        return {
            f"images/{uid}.dcm": dataset_to_bytes(case.dataset),
            f"labels/{uid}.dcm": build_label_seg(bad, config),
        }
    raise ValueError(f"unknown broken kind {kind!r}; known: {', '.join(BROKEN_KINDS)}")


def broken_keys(kind: str, number: int, config: SynthConfig) -> list[str]:
    """Keys (relative to the batch) of one broken example; the first is the file the verdict is about."""
    if kind == "seg_size_mismatch":
        uid = seeded_uid(config.seed, config.batch, "broken", number)
        return [f"labels/{uid}.dcm", f"images/{uid}.dcm"]
    return [f"images/broken_{number:02d}_{kind}.dcm"]


def broken_verdicts_key(batch: str) -> str:
    """Store key of the expected verdicts of a batch's deliberately broken files."""
    return join_key("reports", "synth", batch, "broken.json")


def write_broken_files(store: ObjectStore, config: SynthConfig) -> int:
    """Add ``config.broken_count`` broken files to the batch and their verdicts to ``broken.json``.

    The verdicts go to ``reports/synth/<batch>/broken.json``, outside the batch folder, so that every
    file under ``incoming/<batch>/`` is something a clinic export could contain.

    Returns:
        The number of broken examples written.
    """
    prefix = join_key("incoming", config.batch)
    verdicts: dict[str, dict[str, str]] = {}
    for number in range(config.broken_count):
        kind = BROKEN_KINDS[number % len(BROKEN_KINDS)]
        keys = broken_keys(kind, number, config)
        if not all(store.exists(join_key(prefix, key)) for key in keys):
            files = _broken_case(kind, number, config)
            if sorted(files) != sorted(keys):
                raise RuntimeError(f"broken example {kind} wrote {sorted(files)}, expected {sorted(keys)}")
            for key, data in files.items():
                store.put_bytes(join_key(prefix, key), data)
        verdicts[keys[0]] = {"kind": kind, "problem": EXPECTED[kind]}
    store.put_bytes(
        broken_verdicts_key(config.batch), json.dumps(verdicts, indent=1, sort_keys=True).encode()
    )
    logger.info("added %d deliberately broken files to %s", len(verdicts), prefix)
    return len(verdicts)
