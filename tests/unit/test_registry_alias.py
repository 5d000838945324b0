"""An alias that does not exist reads as None; a registry that fails is an error, never 'no champion'."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE

from orthoseg.registry import alias_version


def test_a_missing_model_or_alias_is_none(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # The registry named explicitly: a process-wide registry URI set earlier must not be used instead.
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert alias_version(client, "no-such-model", "champion") is None
    client.create_registered_model("alias-test-model")
    assert alias_version(client, "alias-test-model", "champion") is None


class _FailingRegistry:
    """MLflow's client as it behaves when its server fails (the error MLflow itself raises)."""

    def __init__(self, code: int) -> None:
        self.code = code

    def get_model_version_by_alias(self, name: str, alias: str) -> None:
        raise MlflowException(f"registry failed while reading {name}@{alias}", error_code=self.code)


@pytest.mark.parametrize("code", [INTERNAL_ERROR, TEMPORARILY_UNAVAILABLE])
def test_a_failing_registry_is_an_error(code: int) -> None:
    with pytest.raises(MlflowException, match="registry failed"):
        alias_version(_FailingRegistry(code), "orthoseg-knee", "champion")  # type: ignore[arg-type]
