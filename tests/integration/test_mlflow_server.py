"""The cluster MLflow setup, for real: an ``mlflow server`` process (sqlite backend, ``--serve-artifacts``
into an S3 bucket on a moto endpoint) and orthoseg talking to it over HTTP only.

Log a model as training does, evaluate, register, promote through the gate on a tiny benchmark, then
load ``@champion`` in a fresh process that has no S3 credentials and predict with it. The artifacts
must be in the bucket, not on the client's disk (apart from its download cache) nor on the server's.
This is the test that proves an MLflow version in the range pinned in ``pyproject.toml`` works.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
import torch

from orthoseg import __version__
from orthoseg.evaluation import evaluate_run
from orthoseg.model import NetworkConfig, build_network_from_config
from orthoseg.model_package import config_hash, connect_tracking, log_segmentation_model
from orthoseg.registry import CHAMPION, register_model, resolve_model
from orthoseg.registry import promote_model as promote
from orthoseg.settings import PromotionSettings, Settings
from orthoseg.storage import store_from_settings
from orthoseg.training import DATASET_TAG, PREPROCESS_HASH_TAG
from tests.integration._dataset_helpers import write_dataset_version
from tests.integration._registry_helpers import write_policy

# Generous: a cold start imports most of MLflow (tens of seconds on a loaded two-core machine).
STARTUP_TIMEOUT_S = 300.0
ARTIFACT_PREFIX = "mlflow"
# What a client process must not need: S3 access goes through the server only.
S3_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "MLFLOW_S3_ENDPOINT_URL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 40) -> str:
    text = path.read_text(errors="replace") if path.exists() else ""
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate the server and its workers (its own process group), then make sure they are gone."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=15)
    except ProcessLookupError:
        pass


@pytest.fixture()
def mlflow_server(tmp_path: Path, s3_endpoint: str, s3_bucket: str) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 with artifacts proxied to ``s3://<bucket>/mlflow``."""
    port = _free_port()
    workdir = tmp_path / "server"
    workdir.mkdir()
    log = workdir / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ORTHOSEG_"))}
    env.update(
        MLFLOW_S3_ENDPOINT_URL=s3_endpoint,
        AWS_ACCESS_KEY_ID=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        AWS_SECRET_ACCESS_KEY=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        AWS_DEFAULT_REGION=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"),
        # MLflow's background job runner (GenAI scorers) is not used by orthoseg; skip its process.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{workdir / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        f"s3://{s3_bucket}/{ARTIFACT_PREFIX}",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, cwd=workdir, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with status {process.returncode} before answering /health; "
                    f"its output ends with:\n{_tail(log)}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server at {url} did not answer /health within {STARTUP_TIMEOUT_S:.0f} s; "
                    f"its output ends with:\n{_tail(log)}"
                )
            time.sleep(0.5)
        yield url
    finally:
        _stop(process)


@pytest.fixture()
def http_client_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The test process as an MLflow client: own working folder, fast failures, global URIs restored."""
    client_dir = tmp_path / "client"
    client_dir.mkdir()
    monkeypatch.chdir(client_dir)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    # connect_tracking sets these (and MLflow's globals); monkeypatch puts the variables back.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    try:
        yield
    finally:
        # Later tests must not talk to a server that is gone.
        mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
        mlflow.set_registry_uri(None)  # type: ignore[arg-type]


def _log_model_run(settings: Settings, dataset: str) -> str:
    """A run carrying a (randomly initialised) model logged exactly as training logs it."""
    connect_tracking(settings)
    mlflow.set_experiment(settings.experiment_name)
    torch.manual_seed(0)
    config = NetworkConfig(channels=settings.train.network_channels)
    network = build_network_from_config(config)
    with mlflow.start_run() as run:
        mlflow.set_tags(
            {
                DATASET_TAG: dataset,
                PREPROCESS_HASH_TAG: config_hash(settings.preprocess),
                "orthoseg.code_version": __version__,
            }
        )
        mlflow.log_params({"dataset_version": dataset, "train.architecture": "unet", "profile": "test"})
        log_segmentation_model(network, config, settings.preprocess)
    return run.info.run_id


FRESH_PROCESS = textwrap.dedent(
    """
    import json, os

    import numpy as np

    from orthoseg.registry import load_registered_model
    from orthoseg.settings import Settings

    assert not any(k in os.environ for k in {s3_env!r}), "the client must not hold S3 settings"
    settings = Settings()
    model, version = load_registered_model(settings, "champion")
    px = model.preprocess.canvas_px
    probabilities = model.predict_canvas(np.zeros((2, 1, px, px), dtype=np.float32))
    print(json.dumps({{
        "tracking_uri": settings.mlflow_uri,
        "version": version,
        "shape": list(probabilities.shape),
        "in_range": bool(np.isfinite(probabilities).all() and probabilities.min() >= 0
                         and probabilities.max() <= 1),
        "structures": list(model.structure_names),
        "weights_sha256": model.config.weights_sha256,
    }}))
    """
)


@pytest.mark.timeout(900)
def test_register_promote_and_load_through_an_mlflow_server(
    tmp_path: Path, mlflow_server: str, http_client_env: None, s3_endpoint: str, s3_bucket: str
) -> None:
    import boto3

    store = tmp_path / "store"
    settings = Settings(
        store=str(store),
        mlflow_uri=mlflow_server,
        work_dir=str(tmp_path / "work"),
        experiment_name="http-test",
        preprocess={"canvas_px": 64, "spacing_mm": 4.0},
        train={"network_channels": (4, 8, 16)},
    )
    dataset = write_dataset_version(
        store_from_settings(settings), version="v-http", count=4, seed=7, image_px=128, test_fraction=0.25
    )
    policy = write_policy(
        tmp_path / "promotion.yaml", benchmark={"name": "http-bench", "dataset_version": dataset}
    )
    settings = settings.model_copy(update={"promotion": PromotionSettings(policy_path=str(policy))})

    run_id = _log_model_run(settings, dataset)
    client = connect_tracking(settings)
    assert mlflow.get_tracking_uri() == mlflow_server
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:")

    evaluation = evaluate_run(settings, run_id, dataset)
    assert evaluation.images >= 1 and 0.0 <= evaluation.dice_mean <= 1.0
    registered = register_model(settings, run_id, dataset)
    assert registered.version == "1"
    assert registered.tags["dataset_version"] == dataset
    decision = promote(settings, registered.version)
    assert (decision.promoted, decision.alias) == (True, CHAMPION), decision.reason
    assert decision.benchmark is not None and decision.benchmark.dataset_version == dataset
    assert resolve_model(settings, CHAMPION) == ("1", f"models:/{settings.model_name}/1")
    version_tags = client.get_model_version(settings.model_name, "1").tags
    assert version_tags["promotion.outcome"] == "promoted"
    assert version_tags["promotion.artifact"].startswith(f"runs:/{run_id}/")  # the JSON record was uploaded

    # A fresh process, configured by environment only, holding no S3 settings: everything over HTTP.
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ORTHOSEG_", "AWS_"))}
    env.update(
        ORTHOSEG_MLFLOW_URI=mlflow_server,
        ORTHOSEG_STORE=str(store),
        ORTHOSEG_WORK_DIR=str(fresh / "work"),
        ORTHOSEG_MODEL_NAME=settings.model_name,
    )
    script = FRESH_PROCESS.format(s3_env=S3_ENV)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=fresh, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"fresh process failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["tracking_uri"] == mlflow_server
    assert loaded["version"] == "1"
    assert loaded["shape"] == [2, 7, 64, 64] and loaded["in_range"]
    assert len(loaded["structures"]) == 7

    # The artifacts are in the bucket, behind the server ...
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        region_name="us-east-1",
    )
    keys = [
        item["Key"]
        for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=s3_bucket, Prefix=f"{ARTIFACT_PREFIX}/"
        )
        for item in page.get("Contents", [])
    ]
    names = {key.rsplit("/", 1)[-1] for key in keys}
    assert {"weights.safetensors", "model.json", "MLmodel", "test_dice.png"} <= names, sorted(keys)
    assert any("/promotion/" in key and key.endswith(".json") for key in keys), sorted(keys)
    weights_keys = [key for key in keys if key.endswith("/weights.safetensors")]
    assert len(weights_keys) == 1, weights_keys
    stored = s3.get_object(Bucket=s3_bucket, Key=weights_keys[0])["Body"].read()
    assert hashlib.sha256(stored).hexdigest() == loaded["weights_sha256"]

    # ... and on no local disk: the model files exist only in the clients' download caches.
    caches = (tmp_path / "work" / "models", fresh / "work" / "models")
    for name in ("weights.safetensors", "MLmodel", "test_dice.png"):
        for path in tmp_path.rglob(name):
            assert any(path.is_relative_to(cache) for cache in caches), f"artifact on local disk: {path}"
    assert not [p for p in tmp_path.rglob("*") if p.name in {"mlruns", "mlartifacts"}]
    assert list((fresh / "work" / "models").rglob("weights.safetensors"))
