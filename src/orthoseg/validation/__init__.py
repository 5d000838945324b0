"""Validation of incoming batches with Great Expectations: accept into a dataset version or quarantine.

``validate_batch`` is the pipeline step; ``prescreen_batch`` a header-only triage; ``load_manifest`` and
``latest_dataset_version`` are what training and inference read.
"""

from __future__ import annotations

from orthoseg.dataset_version import MANIFEST_COLUMNS, latest_dataset_version, load_manifest
from orthoseg.validation.batch import PrescreenSummary, ValidationSummary, prescreen_batch, validate_batch
from orthoseg.validation_config import ValidationConfig

__all__ = [
    "MANIFEST_COLUMNS",
    "PrescreenSummary",
    "ValidationConfig",
    "ValidationSummary",
    "latest_dataset_version",
    "load_manifest",
    "prescreen_batch",
    "validate_batch",
]
