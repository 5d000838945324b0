"""Statistics: a data set covers every implant category, design family, fixation and condition."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from orthoseg.labels import STRUCTURES
from orthoseg.measure import AP_ZONES
from orthoseg.synth import CATEGORIES, SynthCase, SynthConfig
from orthoseg.synth.scenario import image_spec


def test_a_data_set_covers_every_category_and_condition() -> None:
    config = SynthConfig(count=400, seed=1)
    specs = [image_spec(i, config) for i in range(config.count)]
    knees = [s.knees[0] for s in specs]
    assert set(Counter(k.category for k in knees)) == set(CATEGORIES)
    families = Counter(k.family for k in knees if k.category != "native")
    assert len(families) >= 6
    assert len({f for f in families if not f.startswith("uka")}) >= 4  # box vs no box, keel vs pegs, stems
    assert set(k.fixation for k in knees) == {"none", "cemented", "uncemented", "hybrid"}
    assert Counter(s.view for s in specs).keys() == {"AP", "LAT"}
    assert set(k.side for k in knees) == {"L", "R"}
    assert set(k.kl_grade for k in knees if k.category == "native") == {0, 1, 2, 3, 4}
    assert any(k.lucency_mm for k in knees) and any(k.subsidence_mm > 0 for k in knees)
    assert any(k.augments for k in knees) and any(k.patella_resurfaced for k in knees)
    assert len({k.stem_length_mm for k in knees if k.category == "revision_tka"}) >= 3
    assert any(
        abs(k.joint_space_medial_mm - k.joint_space_lateral_mm) > 1.5 for k in knees if k.category == "tka"
    )
    assert 0.1 < np.mean([s.monochrome1 for s in specs]) < 0.3
    assert any(s.bilateral for s in specs) and any(s.slot_paired for s in specs)
    assert {s.calibration for s in specs} == {"none", "sphere", "ruler"}
    assert {s.marker for s in specs} >= {"L", "R", "none"}
    knee_films = [s for s in specs if not s.bilateral and s.framing == "knee"]
    spacings = [s.spacing_mm for s in knee_films]
    assert 0.14 <= min(spacings) and max(spacings) <= 400.0 / config.image_px + 1e-3
    # Films around the joint (~190 mm along the leg) and long films (240-400 mm) both occur.
    along_leg = [s.spacing_mm * s.rows for s in knee_films]
    assert min(along_leg) < 220 and max(along_leg) > 330
    assert 0.15 < np.mean([a > 235 for a in along_leg]) < 0.6
    patients = Counter(s.patient_key for s in specs)
    assert max(patients.values()) == 2 and min(patients.values()) == 1


def test_truth_is_json_ready_and_matches_the_masks(small_cases: list[SynthCase]) -> None:
    for case in small_cases:
        truth = json.loads(json.dumps(case.truth))
        assert truth == case.truth
        for key in (
            "category",
            "design_family",
            "fixation",
            "laterality",
            "view",
            "pixel_spacing_mm",
            "patient_pseudonym",
            "joint_space_medial_mm",
            "joint_space_lateral_mm",
            "radiolucent_line_mm",
            "tibiofemoral_angle_deg",
            "femoral_component_angle_deg",
            "tibial_component_angle_deg",
        ):
            assert key in truth, key
        assert truth["structures_present"] == [s.name for s in STRUCTURES if case.masks[s.channel].any()]
        assert truth["patient_pseudonym"] == case.dataset.PatientID
        assert truth["pixel_spacing_mm"] == [float(x) for x in case.dataset.PixelSpacing]
        if truth["view"] == "AP":
            assert truth["tibiofemoral_angle_deg"] is not None
            assert set(truth["radiolucent_line_mm"]) <= set(AP_ZONES)
        if truth["category"] == "native":
            assert truth["tibial_component_angle_deg"] is None and truth["radiolucent_line_mm"] == {}


def test_all_categories_render(small_config: SynthConfig) -> None:
    from orthoseg.synth import generate_case

    for category in CATEGORIES:
        config = small_config.model_copy(
            update={"category_weights": {category: 1.0}, "image_px": 160, "count": 2}
        )
        case = generate_case(0, config)
        assert case.truth["category"] == category
        assert case.masks[:2].any(axis=(1, 2)).all()


def test_stemmed_components_follow_the_canal() -> None:
    """A revision component is one piece with its stem, and the stem fills the canal: its flexion (slope)
    and varus/valgus are the design's few degrees, while a primary's cuts vary more."""
    config = SynthConfig(count=300, seed=2, category_weights={"revision_tka": 1.0, "tka": 1.0})
    knees = [image_spec(i, config).knees[0] for i in range(config.count)]
    revision = [k for k in knees if k.category == "revision_tka"]
    primary = [k for k in knees if k.category == "tka"]
    assert revision and primary
    assert max(k.femoral_flexion_deg for k in revision) <= 2.5
    assert max(k.tibial_slope_deg for k in revision) <= 3.0
    assert max(abs(k.femoral_varus_valgus_deg) for k in revision) < 3.0
    assert max(k.femoral_flexion_deg for k in primary) > 5.0
    assert max(k.tibial_slope_deg for k in primary) > 5.0
