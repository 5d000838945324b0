"""A lateral film's undecidable UKA side taken from its study's AP of the same knee."""

from __future__ import annotations

from orthoseg.measure.study import reconcile_study_rows


def _row(uid: str, study: str, side: str, implant: str, view: str = "LL") -> dict:
    return {
        "sop_instance_uid": uid,
        "study_instance_uid": study,
        "laterality": side,
        "implant_type": implant,
        "view_position": view,
        "status": "ok",
        "category_evidence": "tray_width_fraction=0.41",
    }


def test_lateral_takes_the_side_of_its_study_ap() -> None:
    rows = [_row("ap", "s1", "R", "uka_medial", "AP"), _row("lat", "s1", "R", "uka")]
    assert reconcile_study_rows(rows) == 1
    assert rows[1]["implant_type"] == "uka_medial"
    assert "side_from_study_ap=ap" in rows[1]["category_evidence"]
    assert rows[1]["category_evidence"].startswith("tray_width_fraction=0.41")
    assert rows[0]["implant_type"] == "uka_medial"


def test_other_knee_other_study_or_disagreement_leave_uka() -> None:
    rows = [
        _row("ap-left", "s1", "L", "uka_lateral", "AP"),
        _row("lat-right", "s1", "R", "uka"),  # other knee of the same study
        _row("lat-other-study", "s2", "L", "uka"),  # no AP in its study
        _row("ap-a", "s3", "L", "uka_medial", "AP"),
        _row("ap-b", "s3", "L", "uka_lateral", "AP"),
        _row("lat-disputed", "s3", "L", "uka"),  # the study's APs disagree
        {**_row("lat-failed", "s1", "L", "uka"), "status": "failed"},
        {**_row("lat-no-study", "", "L", "uka")},
    ]
    assert reconcile_study_rows(rows) == 0
    assert [r["implant_type"] for r in rows[1:3]] == ["uka", "uka"]
    assert rows[5]["implant_type"] == "uka"
    assert rows[6]["implant_type"] == "uka" and rows[7]["implant_type"] == "uka"
