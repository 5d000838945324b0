"""Synthetic knee radiographs with exact ground truth (DICOM DX, DICOM SEG and JSON); DESIGN.md section 6."""

from __future__ import annotations

from orthoseg.synth.case import generate_case
from orthoseg.synth.config import CATEGORIES, SynthCase, SynthConfig, SynthSummary
from orthoseg.synth.generate import generate_dataset
from orthoseg.synth.preview import write_preview

__all__ = [
    "CATEGORIES",
    "SynthCase",
    "SynthConfig",
    "SynthSummary",
    "generate_case",
    "generate_dataset",
    "write_preview",
]
