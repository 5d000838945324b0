"""Pipeline steps on RayJobs: one job name per step of a pipeline run, whatever the attempt."""

from __future__ import annotations

import pytest

from orthoseg.rayjob import MAX_NAME_LENGTH, check_job_name
from orthoseg.rayjob_steps import step_job_name
from orthoseg.settings import Settings


def test_a_step_keeps_its_job_name_across_attempts_and_runs_do_not_share_one() -> None:
    prefix = Settings().rayjob.name_prefix
    first = step_job_name(prefix, "train", "run-0f3a")
    assert first == step_job_name(prefix, "train", "run-0f3a")  # a retried step follows its own job
    assert first != step_job_name(prefix, "train", "run-0f3b")
    assert first != step_job_name(prefix, "infer", "run-0f3a")
    assert first.startswith(f"{prefix}-train-") and len(first) <= MAX_NAME_LENGTH
    check_job_name(first)  # a DNS-1035 label KubeRay accepts
    longest = step_job_name("a" * 16, "infer", "x")
    assert len(longest) <= MAX_NAME_LENGTH and not longest.endswith("-")


def test_steps_join_ray_themselves_unless_asked_to_submit_jobs() -> None:
    assert Settings().rayjob.pipeline_steps is False
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ORTHOSEG_RAYJOB__PIPELINE_STEPS", "true")
        assert Settings().rayjob.pipeline_steps is True
