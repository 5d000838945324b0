"""Lower-leg films: the tibia and fibula run whole to the ankle, labelled to their ends; the ankle bones are
on the film but unlabelled; a share of AP films is framed on the leg, some without the knee."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import numpy as np
import pytest

from orthoseg.labels import BY_NAME
from orthoseg.synth import SynthConfig, generate_case
from orthoseg.synth.anatomy_leg import build_tibia
from orthoseg.synth.geometry import Frame
from orthoseg.synth.knee import build_knee
from orthoseg.synth.leg_framing import TIBIA_LENGTH_MM
from orthoseg.synth.preview import _presentation
from orthoseg.synth.scenario import image_spec

LEG_ONLY = SynthConfig(count=40, seed=3, image_px=512, leg_film_fraction=1.0, bilateral_fraction=0.0)


def _first(config: SynthConfig, framing: str) -> int:
    return next(i for i in range(200) if image_spec(i, config).framing == framing)


def test_a_share_of_single_knee_ap_films_is_framed_on_the_leg() -> None:
    config = SynthConfig(count=600, seed=1, leg_film_fraction=0.2)
    specs = [image_spec(i, config) for i in range(config.count)]
    framings = Counter(s.framing for s in specs)
    leg = [s for s in specs if s.framing != "knee"]
    assert framings["tibia"] > 10 and framings["distal_leg"] > 10
    assert all(s.view == "AP" and not s.bilateral for s in leg)
    eligible = [s for s in specs if s.view == "AP" and not s.bilateral]
    assert 0.12 < len(leg) / len(eligible) < 0.28
    # Tibia films are long and narrow: at least the tibia's length on the film, collimated to the leg.
    for s in leg:
        field_mm = s.rows * s.spacing_mm / s.magnification
        assert field_mm > 0.9 * TIBIA_LENGTH_MM * s.knees[0].bone_scale * (
            0.5 if s.framing == "distal_leg" else 1.0
        )
        assert s.columns < 0.8 * s.rows
    none = SynthConfig(count=200, seed=1, leg_film_fraction=0.0)
    assert {image_spec(i, none).framing for i in range(none.count)} == {"knee"}


def test_the_distal_tibia_flares_to_the_plafond_and_the_medial_malleolus() -> None:
    knee = image_spec(0, LEG_ONLY).knees[0]
    knee = replace(knee, bone_scale=1.0, female=False)
    tibia, _ = build_tibia(knee, Frame.identity())
    main = tibia.outer[0].profile
    width = {t: 2.0 * float(np.interp(t, main.t, main.rm)) for t in (-160.0, -240.0, -355.0)}
    # Narrowest at the junction of the middle and distal thirds.
    assert 22.0 <= width[-240.0] <= width[-160.0] - 1.5
    assert 38.0 <= width[-355.0] <= 46.0
    assert main.t0 == pytest.approx(-TIBIA_LENGTH_MM)
    # The medial malleolus reaches below the plafond on the medial (+m) side.
    lowest = min(lobe.profile.t0 for lobe in tibia.outer)
    assert -TIBIA_LENGTH_MM - 16.0 < lowest < -TIBIA_LENGTH_MM - 8.0
    malleolus = min(tibia.outer, key=lambda lobe: lobe.profile.t0).profile
    assert float(malleolus.cm[0]) > 10.0


def test_ankle_bones_are_in_the_scene_but_not_in_the_label_contract() -> None:
    spec = image_spec(_first(LEG_ONLY, "distal_leg"), LEG_ONLY)
    scene = build_knee(spec.knees[0], spec.flexion_deg, 7)
    names = {bone.name: bone.labelled for bone in scene.bones}
    assert names["talus"] is False and names["calcaneus"] is False
    assert names["tibia"] and names["fibula"] and names["femur"]


def test_a_distal_leg_film_shows_the_shafts_labelled_down_to_the_ankle_and_no_knee() -> None:
    index = _first(LEG_ONLY, "distal_leg")
    case = generate_case(index, LEG_ONLY)
    assert case.truth["framing"] == "distal_leg"
    present = set(case.truth["structures_present"])
    assert {"tibia", "fibula"} <= present and not present & {"femur", "patella", "femoral_component"}
    tibia = case.masks[BY_NAME["tibia"].channel]
    fibula = case.masks[BY_NAME["fibula"].channel]
    spacing = case.truth["pixel_spacing_mm"][0]
    tibia_rows, fibula_rows = np.nonzero(tibia.any(axis=1))[0], np.nonzero(fibula.any(axis=1))[0]
    # The lateral malleolus reaches further down than the tibia (~12 mm below the medial malleolus' tip).
    assert fibula_rows.max() > tibia_rows.max()
    # Under the plafond lies the talus: bone on the film, brighter than the joint space above it, that no
    # label covers.
    level = int(np.median(tibia_rows)) + round(0.35 * (tibia_rows.max() - np.median(tibia_rows)))
    centre = int(np.median(np.nonzero(tibia[level])[0]))
    plafond_row = int(np.nonzero(tibia[:, centre])[0].max())
    joint_row, talus_row = plafond_row + max(1, round(1.5 / spacing)), plafond_row + round(12.0 / spacing)
    assert not case.masks[:, talus_row, centre].any()
    grey = _presentation(case)  # denser is brighter, whatever the photometric interpretation
    assert grey[talus_row, centre] > grey[joint_row, centre] + 0.15


def test_a_whole_tibia_film_shows_the_knee_at_the_top_and_the_ankle_at_the_bottom() -> None:
    index = _first(LEG_ONLY, "tibia")
    case = generate_case(index, LEG_ONLY)
    tibia = case.masks[BY_NAME["tibia"].channel]
    rows = np.nonzero(tibia.any(axis=1))[0]
    spacing = case.truth["pixel_spacing_mm"][0]
    assert (rows.max() - rows.min()) * spacing > 0.85 * TIBIA_LENGTH_MM
    femur_rows = np.nonzero(case.masks[BY_NAME["femur"].channel].any(axis=1))[0]
    assert femur_rows.size and femur_rows.max() < rows.min() + 0.3 * (rows.max() - rows.min())
