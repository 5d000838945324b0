"""Shared fixtures: one local Ray cluster per session, a real S3 endpoint (moto over HTTP), temp stores."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from orthoseg.settings import Settings
from orthoseg.storage import LocalStore, S3Store

REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for the whole test session (starting Ray costs ~10 s)."""
    import ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 HTTP endpoint on 127.0.0.1 (moto's ThreadedMotoServer) with dummy credentials."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture()
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket on the moto endpoint; returns its name."""
    import boto3

    name = "orthoseg-" + "".join(c for c in request.node.name.lower() if c.isalnum())[:40]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def local_store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


@pytest.fixture()
def s3_store(s3_endpoint: str, s3_bucket: str) -> S3Store:
    return S3Store(f"s3://{s3_bucket}/orthoseg", endpoint_url=s3_endpoint)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings for an isolated run: temp store, temp sqlite MLflow, small canvas and short training."""
    return Settings(
        store=str(tmp_path / "store"),
        mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        work_dir=str(tmp_path / "work"),
        preprocess={"canvas_px": 128, "spacing_mm": 2.0},
        train={
            "epochs": 2,
            "batch_size": 4,
            "network_channels": (8, 16, 32),
            "num_workers": 2,
            "window_context_rows": 32,
        },
    )


@pytest.fixture()
def realdata_dir() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real radiographs not found at {REALDATA} (the shared/realdata folder is absent)")
    return REALDATA
