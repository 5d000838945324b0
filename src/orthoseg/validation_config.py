"""The validation knobs: limits that keep hostile input bounded and the values a knee radiograph must have.

A section of ``Settings`` (``Settings.validation``, ``ORTHOSEG_VALIDATION__*`` variables), so the CLI, the
KFP pipelines (which pass the settings on) and a Python caller set it the same way. The pseudonym salt is
not part of the section: it is the top-level secret ``ORTHOSEG_PSEUDONYM_SALT``, which ``from_settings``
puts in.
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from orthoseg.radiograph import MAX_PIXELS

if TYPE_CHECKING:
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

SALT_ENV = "ORTHOSEG_PSEUDONYM_SALT"
# Used only when no salt is configured; pseudonyms made with it are reproducible by anyone with the code.
DEFAULT_SALT = "orthoseg-unsalted"

CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"

# Projection radiographs: detector pitches are 0.1-0.2 mm (CR plates 0.1-0.2, flat panels 0.1-0.15, mammo
# 0.05-0.1); an export downsampled for viewing may reach ~0.5-1 mm. Past 1 mm a knee film is ~400 px across
# (useless for millimetre measurements) and below 0.05 mm the value is in another unit (cm, inches, um).
PROJECTION_SPACING_MM = (0.05, 1.0)


class ValidationConfig(BaseModel):
    """How a batch is validated; ``Settings.validation`` (``ORTHOSEG_VALIDATION__*``) with the salt, by
    ``from_settings`` (explicit overrides win).

    Attributes:
        workers: reader processes.
        max_file_bytes: files larger than this are refused from their listed size, before any byte is read.
        max_truth_bytes: ground-truth JSON files larger than this are refused unread.
        max_pixels: declared Rows x Columns x frames x samples above this is refused before decoding.
        min_side_px: smallest Rows / Columns accepted (tiny images are thumbnails or test objects).
        header_prefix_bytes: bytes read first in header-only mode (more is read when the header is longer).
        worker_memory_limit_bytes: address-space limit of each reader process (an allocation past it fails
            as a ``MemoryError`` in that file's row instead of exhausting the machine); ``None`` for no limit.
        pseudonym_salt: secret salt of the patient pseudonym; it must stay the same for the life of a dataset
            lineage, since the train/val/test split derives from it. Set only in code (tests, benchmarks)
            or by ``from_settings``, from ``Settings.pseudonym_salt`` (``ORTHOSEG_PSEUDONYM_SALT``);
            ``Settings`` refuses it in its ``validation`` section, so there is one salt setting.
        split_fractions: (train, val, test) shares of patients.
        modalities: accepted Modality values.
        sop_classes: accepted SOP Class UIDs (CR Image, DX Image For Presentation).
        knee_body_parts: BodyPartExamined values that mean a knee (training refuses others but leg ones).
        leg_body_parts: BodyPartExamined values of lower-leg films (the tibia and fibula, often down to the
            ankle): training accepts them, and their labels need no femur, since a film of the distal leg
            shows none; they teach a model where the shafts run and end.
        view_positions: ViewPosition values considered known (others are a warning).
        lateralities: ImageLaterality / Laterality values considered known (others are a warning).
        pixel_spacing_ranges_mm: plausible pixel spacing per Modality, in millimetres (lowest, highest),
            for both the row and the column spacing; outside it the value is garbage (wrong unit, a
            downsampling not recorded, swapped fields) and measurements in mm would be wrong by that factor.
        pixel_spacing_range_mm: the plausible range for a modality not in ``pixel_spacing_ranges_mm``.
        file_time_limit_s: seconds one file may take in a reader process (reading, parsing, decoding); past
            it the process is killed and replaced and the file refused (a decoder that hangs never returns).
        decoder_plugins: modules each reader process imports when it starts, e.g. one that registers a
            pydicom pixel decoder plugin (nvImageCodec's) or wraps the decoder.
        min_range_fraction: smallest (1st..99th percentile) stored-value range, as a fraction of full scale,
            below which an image is blank.
        max_saturated_fraction: largest share of pixels pinned at either end of the stored range.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(2, ge=1, le=256)
    max_file_bytes: int = Field(512 * 1024**2, ge=1024)
    max_truth_bytes: int = Field(1024**2, ge=64)
    max_pixels: int = Field(MAX_PIXELS, ge=1)
    min_side_px: int = Field(128, ge=1)
    header_prefix_bytes: int = Field(64 * 1024, ge=1024)
    worker_memory_limit_bytes: int | None = Field(4 * 1024**3, ge=512 * 1024**2)
    pseudonym_salt: SecretStr | None = None
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    modalities: tuple[str, ...] = ("DX", "CR")
    sop_classes: tuple[str, ...] = (CR_IMAGE_STORAGE, DX_FOR_PRESENTATION)
    knee_body_parts: tuple[str, ...] = ("KNEE",)
    leg_body_parts: tuple[str, ...] = ("LEG",)
    view_positions: tuple[str, ...] = ("AP", "PA", "LL", "RL", "LATERAL")
    lateralities: tuple[str, ...] = ("L", "R", "B")
    pixel_spacing_ranges_mm: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {
            "DX": PROJECTION_SPACING_MM,
            "CR": PROJECTION_SPACING_MM,
            "DR": PROJECTION_SPACING_MM,
        }
    )
    pixel_spacing_range_mm: tuple[float, float] = (0.02, 5.0)
    file_time_limit_s: float = Field(120.0, gt=0, le=86400)
    decoder_plugins: tuple[str, ...] = ()
    min_range_fraction: float = Field(0.02, ge=0.0, le=1.0)
    max_saturated_fraction: float = Field(0.6, gt=0.0, le=1.0)

    @field_validator("split_fractions")
    @classmethod
    def _fractions_sum_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-6:
            raise ValueError(f"split_fractions must be non-negative and sum to 1, got {value}")
        return value

    @field_validator("pixel_spacing_ranges_mm")
    @classmethod
    def _ranges_are_ordered(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for modality, (low, high) in value.items():
            if not 0 < low < high:
                raise ValueError(
                    f"pixel spacing range of {modality} must be 0 < low < high mm, got {low}-{high}"
                )
        return {modality.strip().upper(): bounds for modality, bounds in value.items()}

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> ValidationConfig:
        """``Settings.validation`` with the salt of ``Settings.pseudonym_salt``; ``overrides`` win.

        Without a salt in ``settings`` (one built without reading the environment) the salt comes from
        the environment variable ``ORTHOSEG_PSEUDONYM_SALT``, the same setting.
        """
        values = settings.validation.model_dump()
        secret = settings.pseudonym_salt
        salt = (secret.get_secret_value() if secret is not None else None) or os.environ.get(SALT_ENV)
        if salt:
            values["pseudonym_salt"] = salt
        values.update(overrides)
        return cls.model_validate(values)

    def effective_salt(self) -> str:
        """The salt in use; logs a warning when the unsalted default is used."""
        if self.pseudonym_salt is not None and self.pseudonym_salt.get_secret_value():
            return self.pseudonym_salt.get_secret_value()
        logger.warning(
            "no pseudonym salt configured: set %s (a long random secret, fixed for the life of the dataset) "
            "so patient pseudonyms cannot be recomputed from patient IDs",
            SALT_ENV,
        )
        return DEFAULT_SALT

    def salt_fingerprint(self) -> str:
        """A short hash of the salt, stored with each dataset so a changed salt is caught (never the salt)."""
        salt = self.pseudonym_salt.get_secret_value() if self.pseudonym_salt is not None else ""
        salt = salt or DEFAULT_SALT
        return hashlib.sha256(f"orthoseg-salt-fingerprint:{salt}".encode()).hexdigest()[:12]
