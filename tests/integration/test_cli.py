"""The CLI as a person runs it: subcommands exist, --json prints exactly one JSON object on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

COMMANDS = (
    "synth",
    "validate",
    "train",
    "retrain",
    "evaluate",
    "register",
    "promote",
    "rollback",
    "registry",
    "infer",
    "pipeline",
    "schedule",
    "demo",
)


def _orthoseg(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orthoseg.cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_stage_is_a_command_and_a_bad_setting_is_a_clear_exit_2(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from orthoseg.cli import app

    runner = CliRunner()
    for command in COMMANDS:  # each stage parses its own options: an unknown one is refused, not ignored
        result = runner.invoke(app, [command, "--no-such-option"])
        assert result.exit_code == 2, (command, result.output)
        assert "No such option" in result.output
    result = _orthoseg("train", "--profile", "nosuch", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown profile 'nosuch'; choose one of demo, standard, full" in result.stderr
    assert "Traceback" not in result.stderr


def test_synth_json_is_one_object_on_stdout(tmp_path: Path) -> None:
    result = _orthoseg(
        "synth",
        "--out",
        str(tmp_path / "store"),
        "--count",
        "2",
        "--image-px",
        "256",
        "--workers",
        "1",
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # fails on any stray output
    assert payload["images"] == 2
    assert len(list((tmp_path / "store" / "incoming" / "synth" / "images").iterdir())) == 2


def test_pipeline_compile_writes_kfp_yaml(tmp_path: Path) -> None:
    result = _orthoseg("pipeline", "compile", "--out", str(tmp_path / "compiled"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    training, platform = yaml.safe_load_all(Path(written["training"]).read_text())
    executors = training["deploymentSpec"]["executors"]
    assert {
        "exec-validate-op",
        "exec-retrain-gate-op",
        "exec-retrain-skipped-op",
        "exec-train-op",
        "exec-evaluate-op",
        "exec-register-op",
        "exec-promote-op",
    } <= set(executors)
    for executor in executors.values():
        assert executor["container"]["image"].startswith("ghcr.io/orthoseg/orthoseg")
        assert "pip install" not in " ".join(executor["container"].get("command", []))
    dag = json.dumps(training["root"]["dag"])
    assert "condition" in dag  # training sits under dsl.If (the retrain gate), promotion under another
    assert "valueFromOneof" in json.dumps(training)  # the outputs exist whichever branch ran
    assert {"force", "min_dice"} <= set(training["root"]["inputDefinitions"]["parameters"])
    # On a cluster, steps take ORTHOSEG_* from a ConfigMap and S3 credentials from a Secret.
    kubernetes = json.dumps(platform["platforms"]["kubernetes"])
    assert "orthoseg-config" in kubernetes and "orthoseg-s3" in kubernetes


def test_a_missing_source_fails_with_a_message_not_a_traceback(tmp_path: Path) -> None:
    result = _orthoseg(
        "validate",
        str(tmp_path / "nowhere"),
        "--batch",
        "b",
        "--json",
        cwd=tmp_path,
        env={"ORTHOSEG_STORE": str(tmp_path / "store"), "ORTHOSEG_MLFLOW_URI": f"sqlite:///{tmp_path}/m.db"},
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
