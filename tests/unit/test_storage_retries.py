"""S3 retries are configured in one place and reach every client: settings, sub-stores, validation sources."""

from __future__ import annotations

import pytest

from orthoseg.settings import Settings
from orthoseg.storage import S3Store, batch_store, open_store, s3_client_config, store_from_settings, substore


def _retries(store: object) -> dict[str, object]:
    assert isinstance(store, S3Store)
    return dict(store._client.meta.config.retries)


def test_max_attempts_flows_from_settings_to_every_s3_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("ORTHOSEG_S3_MAX_ATTEMPTS", "7")
    settings = Settings(store="s3://bucket/root", s3_endpoint_url="http://127.0.0.1:9")
    assert settings.s3_max_attempts == 7
    store = store_from_settings(settings)
    expected = {"total_max_attempts": 7, "mode": "standard"}
    assert _retries(store) == expected
    assert _retries(substore(store, "incoming/b1")) == expected
    assert _retries(batch_store(settings, "s3://other/incoming/b1")) == expected
    assert _retries(batch_store(settings, "incoming/b1")) == expected
    assert _retries(open_store("s3://bucket/x")) == {"total_max_attempts": 5, "mode": "standard"}


def test_attempts_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        s3_client_config(0)
    with pytest.raises(ValueError):
        Settings(s3_max_attempts=0)
