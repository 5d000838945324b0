"""Which identifying attributes a file carries (by name, never by value), and the patient pseudonym.

DICOM PS3.15: a file that declares de-identification (PatientIdentityRemoved YES) may keep pseudonymous
identifiers; the basic profile's other identifiers count as PHI whatever the file declares.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from typing import Any

from orthoseg.validation.dicom_access import text_value

# Identifiers a de-identified export may keep as pseudonyms when it declares PatientIdentityRemoved=YES.
PSEUDONYMISABLE_IDENTIFIERS = ("PatientName", "PatientID", "PatientBirthDate", "AccessionNumber")
# Identifiers no de-identification profile keeps (PS3.15 basic profile: removed); PHI whatever is declared.
ALWAYS_PHI = (
    "OtherPatientIDs",
    "OtherPatientIDsSequence",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientTelecomInformation",
    "PatientMotherBirthName",
    "PatientBirthName",
    "MedicalRecordLocator",
    "ResponsiblePerson",
    "MilitaryRank",
    "BranchOfService",
    "RegionOfResidence",
)


def pseudonymize(patient_id: str, salt: str) -> str:
    """Salted hash (HMAC-SHA256) of a PatientID: stable for a salt, not reversible without it (16 hex)."""
    return hmac.new(salt.encode(), patient_id.strip().encode(), hashlib.sha256).hexdigest()[:16]


@functools.cache
def _tag(keyword: str) -> int:
    from pydicom.datadict import tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(f"not a DICOM keyword: {keyword}")
    return int(tag)


def _has_value(dataset: Any, keyword: str) -> bool:
    """Whether the attribute is present with a non-empty value (raw bytes looked at, nothing converted)."""
    try:
        element = dataset.get_item(_tag(keyword))
    except Exception:
        return True  # present but unparseable: treat as present
    if element is None:
        return False
    value = element.value
    if value is None:
        return False
    if isinstance(value, bytes):
        return bool(value.strip(b"\x00 "))
    if isinstance(value, str):
        return bool(value.strip("\x00 "))
    try:
        return len(value) > 0
    except TypeError:
        return True


def phi_fields(dataset: Any) -> list[str]:
    """Names (never values) of identifying attributes the file carries.

    A file that declares de-identification (PatientIdentityRemoved YES, DICOM PS3.15) may keep
    pseudonymous PatientName/PatientID/PatientBirthDate/AccessionNumber; without that declaration any
    non-empty value of these is PHI. ``ALWAYS_PHI`` attributes count whatever the file declares.
    """
    declared = text_value(dataset, "PatientIdentityRemoved") == "YES"
    names = [] if declared else [k for k in PSEUDONYMISABLE_IDENTIFIERS if _has_value(dataset, k)]
    return names + [k for k in ALWAYS_PHI if _has_value(dataset, k)]
