"""DICOM DX writing: a de-identified 'For Presentation' digital X-ray with seeded UIDs and fixed dates."""

from __future__ import annotations

import io
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np

from orthoseg import __version__

DX_PRESENTATION_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
BASIC_TEXT_SR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.11"
# A made-up but plausible detector; the model name says what the images are.
MANUFACTURER = "OrthosegSim"
MANUFACTURER_MODEL = "Knee DR simulator"
INSTITUTION = "Synthetic Orthopaedic Clinic"


# Namespace of the name-based (version 5) UUIDs behind every simulated UID.
_UID_NAMESPACE = uuid.UUID("6f1c0b5e-8a43-5d7e-9c1f-0a2b3c4d5e6f")


def seeded_uid(*parts: object) -> str:
    """A '2.25.<UUID>' UID derived only from ``parts`` (seed, batch, case index, role), never the clock.

    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores its entropy sources (a random UUID4 is
    returned), so the UUID here is name-based (RFC 4122 version 5), as DICOM PS3.5 B.2 allows.
    """
    name = "|".join(["orthoseg-synth", *[str(p) for p in parts]])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class DicomIdentity:
    """The identifiers and fixed dates of one image (all derived from the seed).

    Attributes:
        patient_id: pseudonymous PatientID.
        patient_name: pseudonymous PatientName (no real name).
        patient_sex: 'F', 'M' or 'O'.
        birth_date: YYYYMMDD (pseudonymous, year-shifted).
        study_uid, series_uid, sop_uid: UIDs.
        study_date, study_time: fixed YYYYMMDD and HHMMSS.
        accession: pseudonymous accession number.
        study_id: short study id.
        series_number, instance_number: small integers.
    """

    patient_id: str
    patient_name: str
    patient_sex: str
    birth_date: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_date: str
    study_time: str
    accession: str
    study_id: str
    series_number: int
    instance_number: int


def build_dx_dataset(
    stored: np.ndarray,
    identity: DicomIdentity,
    *,
    spacing_mm: float,
    magnification: float,
    view: str,
    laterality: str,
    monochrome1: bool,
    window: tuple[float, float],
    kvp: float,
    exposure_mas: float,
    series_description: str,
    body_part: str = "KNEE",
) -> Any:
    """Wrap 12-bit stored values in a DX 'For Presentation' dataset as a de-identified clinical export.

    Args:
        stored: (rows, columns) uint16 values in 0..4095, already in the stored photometric sense.
        identity: pseudonymous identifiers, UIDs and fixed dates.
        spacing_mm: detector (imager) pixel spacing in mm.
        magnification: source-to-image over source-to-object distance; PixelSpacing is the imager
            spacing divided by it (calibrated at the plane of the knee).
        view: 'AP' or 'LAT' (written as ViewPosition 'AP' or 'LL').
        laterality: 'L', 'R' or 'B' (both knees on a standing film).
        monochrome1: store inverted values (high = dark) as MONOCHROME1.
        window: (center, width) of the default VOI window in stored values.
        kvp: tube voltage.
        exposure_mas: tube current-time product.
        series_description: e.g. 'KNEE AP'.
        body_part: BodyPartExamined: 'KNEE', or 'LEG' for a film of the lower leg.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian

    rows, columns = stored.shape
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(DX_PRESENTATION_SOP_CLASS)
    meta.MediaStorageSOPInstanceUID = UID(identity.sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "ORTHOSEG_" + __version__.replace(".", "")[:7]

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = DX_PRESENTATION_SOP_CLASS
    ds.SOPInstanceUID = UID(identity.sop_uid)
    ds.StudyDate = identity.study_date
    ds.SeriesDate = identity.study_date
    ds.ContentDate = identity.study_date
    ds.AcquisitionDateTime = identity.study_date + identity.study_time
    ds.StudyTime = identity.study_time
    ds.SeriesTime = identity.study_time
    ds.ContentTime = identity.study_time
    ds.AccessionNumber = identity.accession
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = MANUFACTURER
    ds.InstitutionName = INSTITUTION
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "KNEE"
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = MANUFACTURER_MODEL
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = identity.patient_sex
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "orthoseg.synth: synthetic image, pseudonymous identifiers"
    ds.BodyPartExamined = body_part
    ds.KVP = f"{kvp:.0f}"
    ds.SoftwareVersions = f"orthoseg {__version__}"
    ds.DistanceSourceToDetector = "1150"
    ds.DistanceSourceToPatient = f"{1150 / magnification:.1f}"
    ds.ExposureInuAs = int(round(exposure_mas * 1000))
    ds.ImagerPixelSpacing = [f"{spacing_mm:.4f}", f"{spacing_mm:.4f}"]
    ds.EstimatedRadiographicMagnificationFactor = f"{magnification:.4f}"
    ds.ViewPosition = "LL" if view == "LAT" else "AP"
    ds.DetectorType = "SCINTILLATOR"
    ds.StudyInstanceUID = identity.study_uid
    ds.SeriesInstanceUID = identity.series_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber = identity.series_number
    ds.InstanceNumber = identity.instance_number
    # Image at the patient's left is the viewer's right (AP). Lateral: the camera's columns run toward
    # anterior for a right knee and toward posterior for a left one (case.knee_camera).
    if view == "LAT":
        ds.PatientOrientation = ["A", "F"] if laterality == "R" else ["P", "F"]
    else:
        ds.PatientOrientation = ["L", "F"]
    ds.ImageLaterality = laterality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = columns
    ds.PixelSpacing = [f"{spacing_mm / magnification:.4f}", f"{spacing_mm / magnification:.4f}"]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "magnification corrected to the plane of the knee"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if not monochrome1 else 1
    ds.WindowCenter = f"{window[0]:.0f}"
    ds.WindowWidth = f"{window[1]:.0f}"
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.LossyImageCompression = "00"
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = np.ascontiguousarray(stored, dtype="<u2").tobytes()
    return ds


def dataset_to_bytes(dataset: Any) -> bytes:
    """Serialise a dataset as a DICOM Part 10 file (deterministic: no clock, no random values)."""
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
