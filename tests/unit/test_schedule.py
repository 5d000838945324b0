"""Recurring-run planning: create, keep or replace from plain data; crons checked; never overlapping runs."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from orthoseg.schedule import (
    RUN_NAMES,
    CronError,
    DesiredSchedule,
    ExistingSchedule,
    PipelinePackage,
    ScheduleError,
    compile_packages,
    desired_schedules,
    existing_from_recurring_run,
    plan_schedules,
    validate_cron,
    with_overrides,
)
from orthoseg.settings import ScheduleSettings, Settings

PACKAGES = {
    "training": PipelinePackage(
        pipeline="training", pipeline_name="orthoseg-training", version_name="orthoseg-training-aaaaaaaaaaaa"
    ),
    "inference": PipelinePackage(
        pipeline="inference",
        pipeline_name="orthoseg-inference",
        version_name="orthoseg-inference-bbbbbbbbbbbb",
    ),
}


def _desired(**settings: Any) -> list[DesiredSchedule]:
    return desired_schedules(ScheduleSettings(**settings), PACKAGES)


def _existing(want: DesiredSchedule, run_id: str, **changes: Any) -> ExistingSchedule:
    fields: dict[str, Any] = {
        "recurring_run_id": run_id,
        "name": want.name,
        "version_name": want.version_name,
        "cron": want.cron,
        "params": want.params,
        "max_concurrency": 1,
        "enabled": True,
    }
    return ExistingSchedule(**{**fields, **changes})


def _by_name(actions: list) -> dict[str, Any]:
    return {action.name: action for action in actions}


def test_desired_schedules_follow_the_settings() -> None:
    training, inference = _desired(min_dice=0.8, model="challenger")
    assert (training.name, training.cron) == (RUN_NAMES["training"], "0 0 2 * * 0")
    assert (inference.name, inference.cron) == (RUN_NAMES["inference"], "0 0 1 * * *")
    assert training.version_name == "orthoseg-training-aaaaaaaaaaaa"
    assert training.params == {
        "source": "s3://orthoseg/store/incoming/annotated",
        "batch": "annotated",
        "settings_overrides": {},
        "min_dice": 0.8,
        "force": False,  # a recurring retraining never forces: its gate decides
    }
    assert inference.params["model_ref"] == "challenger"
    assert "min_dice" not in inference.params and "force" not in inference.params


def test_fresh_experiment_creates_both_schedules() -> None:
    actions = plan_schedules(_desired(), [])
    assert [(a.name, a.action) for a in actions] == [
        ("orthoseg-training", "create"),
        ("orthoseg-inference", "create"),
    ]
    assert all(a.delete_ids == [] and a.recurring_run_id is None for a in actions)


def test_identical_existing_schedules_are_kept() -> None:
    desired = _desired()
    existing = [_existing(desired[0], "r1"), _existing(desired[1], "r2")]
    actions = plan_schedules(desired, existing)
    assert [(a.action, a.recurring_run_id, a.delete_ids) for a in actions] == [
        ("keep", "r1", []),
        ("keep", "r2", []),
    ]
    assert {a.reason for a in actions} == {"up to date"}


def test_server_spelling_of_the_same_schedule_is_kept() -> None:
    # The server returns numbers without their Python type and may space the cron differently.
    desired = _desired()
    params = {**desired[0].params, "min_dice": 0}
    existing = [
        _existing(desired[0], "r1", params=params, cron="0  0 2 * *  0"),
        _existing(desired[1], "r2"),
    ]
    assert [a.action for a in plan_schedules(desired, existing)] == ["keep", "keep"]


def test_changed_cron_replaces_only_that_schedule() -> None:
    desired = _desired(retrain_cron="0 30 3 * * 6")
    old = _desired()
    existing = [_existing(old[0], "r1"), _existing(old[1], "r2")]
    actions = _by_name(plan_schedules(desired, existing))
    retrain = actions["orthoseg-training"]
    assert retrain.action == "replace"
    assert retrain.delete_ids == ["r1"]
    assert retrain.cron == "0 30 3 * * 6"
    assert "cron '0 0 2 * * 0' -> '0 30 3 * * 6'" in retrain.reason
    assert actions["orthoseg-inference"].action == "keep"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        (
            {"version_name": "orthoseg-training-000000000000"},
            "pipeline version orthoseg-training-000000000000",
        ),
        ({"version_name": None}, "an inline or unknown pipeline"),
        ({"params": {"source": "s3://elsewhere", "batch": "annotated"}}, "params changed: force, min_dice"),
        ({"max_concurrency": 3}, "max_concurrency 3 -> 1"),
        ({"max_concurrency": None}, "max_concurrency None -> 1"),
        ({"enabled": False}, "disabled -> enabled"),
        ({"cron": None}, "none (periodic trigger)"),
    ],
)
def test_any_difference_replaces_with_its_reason(changes: dict[str, Any], reason: str) -> None:
    desired = _desired()
    existing = [_existing(desired[0], "r1", **changes), _existing(desired[1], "r2")]
    retrain = _by_name(plan_schedules(desired, existing))["orthoseg-training"]
    assert retrain.action == "replace"
    assert retrain.delete_ids == ["r1"]
    assert reason in retrain.reason


def test_duplicates_keep_one_identical_and_delete_the_rest() -> None:
    desired = _desired()
    existing = [
        _existing(desired[0], "stale", cron="0 0 5 * * *"),
        _existing(desired[0], "good"),
        _existing(desired[0], "copy"),
        _existing(desired[1], "r2"),
    ]
    retrain = _by_name(plan_schedules(desired, existing))["orthoseg-training"]
    assert (retrain.action, retrain.recurring_run_id) == ("keep", "good")
    assert retrain.delete_ids == ["stale", "copy"]
    assert "deleting 2 duplicate(s)" in retrain.reason


def test_duplicates_none_identical_are_all_replaced_by_one() -> None:
    desired = _desired()
    existing = [
        _existing(desired[0], "a", cron="0 0 5 * * *"),
        _existing(desired[0], "b", max_concurrency=4),
        _existing(desired[1], "r2"),
    ]
    retrain = _by_name(plan_schedules(desired, existing))["orthoseg-training"]
    assert retrain.action == "replace"
    assert retrain.delete_ids == ["a", "b"]
    assert "2 runs had this name" in retrain.reason


def test_other_recurring_runs_are_left_alone() -> None:
    desired = _desired()
    existing = [ExistingSchedule(recurring_run_id="x", name="someone-elses-job", cron="0 0 2 * * 0")]
    actions = plan_schedules(desired, existing)
    assert [a.action for a in actions] == ["create", "create"]
    assert all("x" not in a.delete_ids for a in actions)


def test_max_concurrency_is_always_one() -> None:
    desired = _desired()
    assert {d.max_concurrency for d in desired} == {1}
    assert {a.max_concurrency for a in plan_schedules(desired, [])} == {1}
    with pytest.raises(ValidationError, match="max_concurrency"):
        DesiredSchedule(**{**desired[0].model_dump(), "max_concurrency": 2})


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("0 2 * * 0", "has 5 fields; Kubeflow Pipelines needs 6.*prepend the seconds: '0 0 2 \\* \\* 0'"),
        ("0 0 0 2 * * 0", "has 7 fields"),
        ("", "has 0 fields"),
        ("@weekly", "has 1 fields"),
        ("0 0 25 * * *", "hours field '25': '25' is out of range \\(allowed 0-23\\)"),
        ("0 60 1 * * *", "minutes field"),
        ("0 0 1 0 * *", "day of month field '0'"),
        ("0 0 1 * 13 *", "month field '13'"),
        ("0 0 1 * * 7", "day of week field '7'"),
        ("0 */0 1 * * *", "step '0' is not a positive number"),
        ("0 0 ? * * *", "'\\?' is only allowed in the day fields"),
        ("0 0 5-2 * * *", "range '5-2' runs backwards"),
        ("0 0 1-2-3 * * *", "is not a value or a range"),
        ("0 0 1 * FOO *", "'FOO' is out of range"),
        ("a b c d e f", "seconds field 'a'"),
    ],
)
def test_bad_cron_is_rejected_with_a_clear_error(cron: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        validate_cron(cron)
    with pytest.raises(ValidationError, match="retrain_cron"):
        ScheduleSettings(retrain_cron=cron)
    with pytest.raises(CronError, match=message):
        with_overrides(Settings(), infer_cron=cron)


@pytest.mark.parametrize(
    ("cron", "normalized"),
    [
        ("0 0 2 * * 0", "0 0 2 * * 0"),
        ("0 0 1 * * *", "0 0 1 * * *"),
        ("  0 */15   9-17 ? * MON-FRI ", "0 */15 9-17 ? * MON-FRI"),
        ("0 0 0 1 jan,jul ?", "0 0 0 1 jan,jul ?"),
        ("30 5/10 0,12 1-31/2 * SUN", "30 5/10 0,12 1-31/2 * SUN"),
    ],
)
def test_valid_crons_are_accepted(cron: str, normalized: str) -> None:
    assert validate_cron(cron) == normalized


def test_schedule_settings_from_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORTHOSEG_SCHEDULE__RETRAIN_CRON", "0 0 3 * * 1")
    monkeypatch.setenv("ORTHOSEG_SCHEDULE__EXPERIMENT", "clinic-a")
    settings = Settings()
    assert settings.schedule.retrain_cron == "0 0 3 * * 1"
    assert settings.schedule.infer_cron == "0 0 1 * * *"
    assert settings.schedule.experiment == "clinic-a"
    overridden = with_overrides(settings, retrain_cron="0 0 4 * * 2", infer_cron=None, experiment="other")
    assert overridden.schedule.retrain_cron == "0 0 4 * * 2"
    assert overridden.schedule.infer_cron == "0 0 1 * * *"
    assert overridden.schedule.experiment == "other"
    with pytest.raises(ScheduleError, match="experiment name must not be empty"):
        with_overrides(settings, experiment="")
    monkeypatch.setenv("ORTHOSEG_SCHEDULE__INFER_CRON", "0 1 * * *")
    with pytest.raises(ValidationError, match="has 5 fields"):
        Settings()


def test_existing_schedule_from_a_server_recurring_run() -> None:
    import kfp_server_api as api

    run = api.V2beta1RecurringRun(
        recurring_run_id="r1",
        display_name="orthoseg-training",
        max_concurrency="1",
        mode="DISABLE",
        trigger=api.V2beta1Trigger(cron_schedule=api.V2beta1CronSchedule(cron="0 0 2 * * 0")),
        runtime_config=api.V2beta1RuntimeConfig(parameters={"source": "s3://x", "min_dice": 0}),
        pipeline_version_reference=api.V2beta1PipelineVersionReference(
            pipeline_id="p", pipeline_version_id="v"
        ),
    )
    existing = existing_from_recurring_run(run, "orthoseg-training-aaaaaaaaaaaa")
    assert existing == ExistingSchedule(
        recurring_run_id="r1",
        name="orthoseg-training",
        version_name="orthoseg-training-aaaaaaaaaaaa",
        cron="0 0 2 * * 0",
        params={"source": "s3://x", "min_dice": 0},
        max_concurrency=1,
        enabled=False,
    )
    periodic = api.V2beta1RecurringRun(
        recurring_run_id="r2",
        display_name="orthoseg-inference",
        trigger=api.V2beta1Trigger(periodic_schedule=api.V2beta1PeriodicSchedule(interval_second="3600")),
    )
    bare = existing_from_recurring_run(periodic, None)
    assert (bare.cron, bare.max_concurrency, bare.params, bare.enabled) == (None, None, {}, True)


def test_pipeline_versions_are_named_by_content(tmp_path: Path) -> None:
    first = compile_packages(tmp_path / "a")
    second = compile_packages(tmp_path / "b")
    assert {k: p.version_name for k, p in first.items()} == {k: p.version_name for k, p in second.items()}
    assert first["training"].pipeline_name == "orthoseg-training"
    assert first["inference"].pipeline_name == "orthoseg-inference"
    assert first["training"].version_name.startswith("orthoseg-training-")
    assert Path(first["training"].path).is_file()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _schedule_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orthoseg.cli", "schedule", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_dry_run_without_a_reachable_host_fails_clearly(tmp_path: Path) -> None:
    # The plan compares with the server's recurring runs, so even a dry run must reach it.
    host = f"http://127.0.0.1:{_closed_port()}"
    result = _schedule_cli("--host", host, "--dry-run", "--json", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    message = " ".join(result.stderr.split())
    assert f"cannot reach Kubeflow Pipelines at {host}" in message
    assert "--dry-run needs it too" in message
    assert "Traceback" not in result.stderr


def test_cli_refuses_a_five_field_cron_before_contacting_the_host(tmp_path: Path) -> None:
    result = _schedule_cli("--host", "http://127.0.0.1:9", "--retrain-cron", "0 2 * * 0", cwd=tmp_path)
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "has 5 fields; Kubeflow Pipelines needs 6" in message
    assert "cannot reach" not in message


def test_a_submitted_training_run_can_be_forced_past_its_gate() -> None:
    from pipelines.remote import pipeline_arguments

    forced = pipeline_arguments("training", "s3://b/in", "in", "champion", 0.5, profile="demo", force=True)
    assert forced == {
        "source": "s3://b/in",
        "batch": "in",
        "settings_overrides": {"profile": "demo"},
        "min_dice": 0.5,
        "force": True,
    }
    assert pipeline_arguments("training", "s3://b/in", "in", "champion", 0.5)["force"] is False
    with pytest.raises(ValueError, match="training pipeline only"):
        pipeline_arguments("inference", "s3://b/in", "in", "champion", 0.0, force=True)
