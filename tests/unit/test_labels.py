"""The label contract is fixed: channel order, names and colours never drift."""

from __future__ import annotations

import subprocess
import sys

import pytest

from orthoseg import labels


def test_channel_order_matches_the_design() -> None:
    assert labels.STRUCTURE_NAMES == (
        "femur",
        "tibia",
        "fibula",
        "patella",
        "femoral_component",
        "tibial_component",
        "cement",
    )
    assert [s.channel for s in labels.STRUCTURES] == list(range(labels.NUM_STRUCTURES))


def test_colours_are_distinct_and_metal_is_flagged() -> None:
    assert len({s.color_rgb for s in labels.STRUCTURES}) == labels.NUM_STRUCTURES
    assert {s.name for s in labels.STRUCTURES if s.is_metal} == {"femoral_component", "tibial_component"}


def test_lookup_by_name_says_what_is_known() -> None:
    assert labels.structure("patella").channel == 3
    with pytest.raises(KeyError, match="known: femur"):
        labels.structure("meniscus")


def test_labels_module_imports_nothing_heavy() -> None:
    code = "import sys, orthoseg.labels; print(any(m in sys.modules for m in ('torch', 'numpy', 'pydicom')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
