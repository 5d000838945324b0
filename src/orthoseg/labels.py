"""The label contract: structures, their channel order, colours and DICOM SEG codes (data only)."""

from __future__ import annotations

from dataclasses import dataclass

LABEL_CONTRACT_VERSION = "1"


@dataclass(frozen=True)
class CodedConcept:
    """A DICOM coded concept (value, scheme designator, meaning)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class Structure:
    """One segmented structure: its channel, display colour and DICOM SEG description.

    Attributes:
        channel: index in the multi-label mask (fixed by the contract).
        name: machine name used in files, tables and metrics.
        display_name: human-readable name.
        color_rgb: overlay colour, 0-255 per channel.
        category: SEG segmented property category.
        property_type: SEG segmented property type.
        is_metal: True for implant components (saturate on radiographs).
    """

    channel: int
    name: str
    display_name: str
    color_rgb: tuple[int, int, int]
    category: CodedConcept
    property_type: CodedConcept
    is_metal: bool = False


_BONE_CATEGORY = CodedConcept("91723000", "SCT", "Anatomical Structure")
_DEVICE = CodedConcept("260787004", "SCT", "Physical object")
_MATERIAL = CodedConcept("105590001", "SCT", "Substance")
_PROSTHESIS = CodedConcept("53350007", "SCT", "Prosthesis")
# Local codes (DICOM private coding scheme) where SNOMED CT has no concept this specific.
LOCAL_SCHEME = "99ORTHOSEG"

STRUCTURES: tuple[Structure, ...] = (
    Structure(0, "femur", "Femur", (230, 159, 0), _BONE_CATEGORY, CodedConcept("71341001", "SCT", "Femur")),
    Structure(1, "tibia", "Tibia", (86, 180, 233), _BONE_CATEGORY, CodedConcept("12611008", "SCT", "Tibia")),
    Structure(
        2, "fibula", "Fibula", (0, 158, 115), _BONE_CATEGORY, CodedConcept("87342007", "SCT", "Fibula")
    ),
    Structure(
        3, "patella", "Patella", (240, 228, 66), _BONE_CATEGORY, CodedConcept("64234005", "SCT", "Patella")
    ),
    Structure(
        4,
        "femoral_component",
        "Femoral component",
        (213, 94, 0),
        _DEVICE,
        _PROSTHESIS,
        is_metal=True,
    ),
    Structure(
        5,
        "tibial_component",
        "Tibial component",
        (204, 121, 167),
        _DEVICE,
        _PROSTHESIS,
        is_metal=True,
    ),
    # Cement as the film shows it: the mantle outside the shadow of the metal components (behind metal
    # it leaves no trace, so neither an annotator nor a model can place it).
    Structure(
        6,
        "cement",
        "Bone cement",
        (0, 114, 178),
        _MATERIAL,
        CodedConcept("CEMENT", LOCAL_SCHEME, "Bone cement (PMMA)"),
    ),
)

STRUCTURE_NAMES: tuple[str, ...] = tuple(s.name for s in STRUCTURES)
NUM_STRUCTURES: int = len(STRUCTURES)
BY_NAME: dict[str, Structure] = {s.name: s for s in STRUCTURES}

# Structures every knee radiograph used for training must show.
REQUIRED_FOR_TRAINING: tuple[str, ...] = ("femur", "tibia")


def structure(name: str) -> Structure:
    """Look a structure up by machine name.

    Raises:
        KeyError: with the list of known names when ``name`` is unknown.
    """
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown structure {name!r}; known: {', '.join(STRUCTURE_NAMES)}") from None
