"""MLflow "models from code" entry for the segmentation model: MLflow copies and executes this file.

Do not import this module from orthoseg code; ``orthoseg.model_package.log_segmentation_model`` passes
its path to ``mlflow.pyfunc.log_model`` and ``mlflow.pyfunc.load_model`` executes it. The wrapper holds
no state of its own: ``load_context`` reads ``weights.safetensors`` and ``model.json`` from the model's
artifacts, so nothing is pickled.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

from orthoseg.model_package import ARTIFACT_CONFIG, ARTIFACT_WEIGHTS, SegmentationModel


class SegmentationPyfunc(PythonModel):
    """pyfunc face of ``SegmentationModel``: a float32 (N, 1, S, S) canvas batch in, (N, 7, S, S)
    probabilities out (structures in label-contract order, independent sigmoids)."""

    def __init__(self) -> None:
        self._model: SegmentationModel | None = None

    def load_context(self, context: Any) -> None:
        self._model = SegmentationModel.from_files(
            context.artifacts[ARTIFACT_WEIGHTS], context.artifacts[ARTIFACT_CONFIG]
        )

    def predict(
        self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        # MLflow validates nothing for an ndarray hint; the logged signature (a float32 tensor spec) does.
        if self._model is None:
            raise RuntimeError("model not loaded: MLflow calls load_context before predict")
        return self._model.predict_canvas(np.asarray(model_input, dtype=np.float32))


# The one module-level call in the package: MLflow's "models from code" executes this file and takes the
# object registered here as the model, instead of unpickling one.
mlflow.models.set_model(SegmentationPyfunc())
