"""A trained model on disk and in MLflow: safetensors weights + a JSON description, loaded without pickle.

The package is two files, ``weights.safetensors`` and ``model.json`` (network architecture, the exact
preprocessing the network was trained with, the label contract, the decision threshold). MLflow stores
them as a pyfunc model logged "from code" (``orthoseg/pyfunc_entry.py``), so no cloudpickled object is
ever written or read.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from orthoseg.labels import LABEL_CONTRACT_VERSION, STRUCTURE_NAMES
from orthoseg.model import (
    NetworkConfig,
    autocast_dtype,
    build_network_from_config,
    forward_logits,
    prepare_for_device,
)
from orthoseg.postprocess import PostprocessConfig, native_masks
from orthoseg.settings import PreprocessConfig

if TYPE_CHECKING:
    import torch
    from mlflow import MlflowClient

    from orthoseg.measure.field import FieldEstimate
    from orthoseg.preprocessing import CanvasTransform
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

MODEL_FORMAT_VERSION = "1"
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "model.json"
# Names of the two files inside the MLflow pyfunc model (``context.artifacts[...]``).
ARTIFACT_WEIGHTS = "weights"
ARTIFACT_CONFIG = "config"
# Run tag through which training, evaluation and the registry find a run's logged model.
MODEL_URI_TAG = "orthoseg.model_uri"
# Sub-path (MLflow "name") of the model inside a run.
MODEL_NAME_IN_RUN = "model"
DEFAULT_THRESHOLD = 0.5


class ModelConfig(BaseModel):
    """Everything besides the weights that inference needs: the content of ``model.json``.

    Attributes:
        format_version: version of this file's layout.
        network: U-Net architecture.
        preprocess: canvas and intensity settings the network was trained with (inference must match).
        label_contract_version: ``orthoseg.labels.LABEL_CONTRACT_VERSION`` at training time.
        structure_names: output channel names, in channel order.
        threshold: probability at or above which a pixel belongs to a structure.
        postprocess: how stray fragments are removed before thresholding (``orthoseg.postprocess``).
        weights_sha256: digest of ``weights.safetensors``, checked on load.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: str = MODEL_FORMAT_VERSION
    network: NetworkConfig
    preprocess: PreprocessConfig
    label_contract_version: str = LABEL_CONTRACT_VERSION
    structure_names: tuple[str, ...] = STRUCTURE_NAMES
    threshold: float = Field(default=DEFAULT_THRESHOLD, gt=0.0, lt=1.0)
    postprocess: PostprocessConfig = PostprocessConfig()
    weights_sha256: str = ""


def config_hash(config: BaseModel, length: int = 12) -> str:
    """A short stable digest of a configuration (sorted-key JSON), for names, tags and cache keys."""
    canonical = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside a DistributedDataParallel wrapper (its ``module``), else ``network``."""
    inner = getattr(network, "module", None)
    return inner if inner is not None else network


def save_weights(network: torch.nn.Module, path: Path) -> None:
    """Write the network's parameters and buffers as safetensors (CPU tensors, contiguous)."""
    from safetensors.torch import save_file

    state = {k: v.detach().to("cpu").contiguous() for k, v in unwrap_network(network).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path), metadata={"format": "pt", "label_contract_version": LABEL_CONTRACT_VERSION})


def load_weights(network: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``network`` (strict: every key must match; no pickle involved)."""
    from safetensors.torch import load_file

    unwrap_network(network).load_state_dict(load_file(str(path), device="cpu"), strict=True)


def save_model_artifacts(
    directory: str | Path,
    network: torch.nn.Module,
    network_config: NetworkConfig,
    preprocess_config: PreprocessConfig,
    threshold: float = DEFAULT_THRESHOLD,
) -> dict[str, str]:
    """Write ``weights.safetensors`` and ``model.json`` into ``directory``.

    Returns:
        The MLflow artifact mapping: ``{"weights": <path>, "config": <path>}``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_path = directory / WEIGHTS_FILE
    save_weights(network, weights_path)
    config = ModelConfig(
        network=network_config,
        preprocess=preprocess_config,
        threshold=threshold,
        weights_sha256=_sha256_file(weights_path),
    )
    config_path = directory / CONFIG_FILE
    config_path.write_text(json.dumps(config.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
    return {ARTIFACT_WEIGHTS: str(weights_path), ARTIFACT_CONFIG: str(config_path)}


def _pick_device(device: str | None) -> torch.device:
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class SegmentationModel:
    """A loaded network with its preprocessing: canvases in, per-structure probabilities out.

    Build it with ``from_directory`` / ``from_files`` (weights are read with ``safetensors``, never
    unpickled). On CUDA the forward pass runs in channels-last layout under bfloat16 autocast (float16
    where bfloat16 is not supported); on CPU in float32 (``orthoseg.model.autocast_dtype``).
    """

    def __init__(self, network: torch.nn.Module, config: ModelConfig, device: str | None = None) -> None:
        if tuple(config.structure_names) != STRUCTURE_NAMES:
            raise ValueError(
                f"model outputs {config.structure_names} but this code's label contract is {STRUCTURE_NAMES}"
            )
        self.config = config
        self.device = _pick_device(device)
        self.network = prepare_for_device(network, self.device, channels_last=True).eval()

    @classmethod
    def from_files(
        cls, weights_path: str | Path, config_path: str | Path, device: str | None = None
    ) -> SegmentationModel:
        """Load a model from its two files.

        Raises:
            ValueError: when the weights do not match the digest recorded in ``model.json`` or the model
                was trained for another label contract.
        """
        weights_path, config_path = Path(weights_path), Path(config_path)
        config = ModelConfig.model_validate_json(config_path.read_text())
        if config.label_contract_version != LABEL_CONTRACT_VERSION:
            raise ValueError(
                f"model was trained for label contract v{config.label_contract_version}; "
                f"this code uses v{LABEL_CONTRACT_VERSION}"
            )
        if config.weights_sha256 and _sha256_file(weights_path) != config.weights_sha256:
            raise ValueError(f"{weights_path} does not match the sha256 recorded in {config_path}")
        network = build_network_from_config(config.network)
        load_weights(network, weights_path)
        return cls(network, config, device=device)

    @classmethod
    def from_directory(cls, directory: str | Path, device: str | None = None) -> SegmentationModel:
        """Load from a folder holding ``model.json`` and ``weights.safetensors`` at any depth (an MLflow
        model download keeps them under ``artifacts/``).

        Raises:
            FileNotFoundError: when no ``model.json`` is found under ``directory``.
        """
        directory = Path(directory)
        configs = sorted(directory.rglob(CONFIG_FILE), key=lambda p: len(p.parts))
        if not configs:
            raise FileNotFoundError(f"no {CONFIG_FILE} under {directory}")
        config_path = configs[0]
        return cls.from_files(config_path.parent / WEIGHTS_FILE, config_path, device=device)

    @property
    def preprocess(self) -> PreprocessConfig:
        """The preprocessing inference must apply (the one used in training)."""
        return self.config.preprocess

    @property
    def threshold(self) -> float:
        return self.config.threshold

    @property
    def structure_names(self) -> tuple[str, ...]:
        return self.config.structure_names

    def native_masks(
        self,
        probabilities: np.ndarray,
        transform: CanvasTransform,
        pixels: np.ndarray | None = None,
        field: FieldEstimate | None = None,
    ) -> np.ndarray:
        """(C, H, W) boolean masks on the film's grid from one canvas's probabilities, cleaned by the
        model's own post-processing (with the film's ``pixels``: emptied in the collimator's shadow,
        ``field`` when already detected) and thresholded at its threshold."""
        return native_masks(probabilities, transform, self.threshold, self.config.postprocess, pixels, field)

    def predict_canvas(self, batch: np.ndarray, batch_size: int = 8) -> np.ndarray:
        """Per-structure probabilities for a batch of canvases.

        Args:
            batch: (N, 1, H, W) canvases as made by ``orthoseg.preprocessing.preprocess_radiograph``
                (float, [0, 1]): the model's ``canvas_px`` square, or an extended canvas whose sides
                are multiples of the network's downsampling factor.
            batch_size: canvases per forward pass (bounds memory).

        Returns:
            (N, C, S, S) float32 probabilities in [0, 1], one channel per structure (independent
            sigmoids: masks may overlap).

        Raises:
            ValueError: for a batch of the wrong shape.
        """
        import torch

        array = np.asarray(batch, dtype=np.float32)
        factor = self.config.network.downsampling_factor
        if array.ndim != 4 or array.shape[1] != 1 or array.shape[2] % factor or array.shape[3] % factor:
            raise ValueError(
                f"expected canvases of shape (N, 1, H, W), H and W multiples of {factor}; got {array.shape}"
            )
        outputs = np.empty((array.shape[0], len(self.structure_names), *array.shape[2:]), dtype=np.float32)
        amp = autocast_dtype(self.device)
        with torch.inference_mode():
            for start in range(0, array.shape[0], max(1, batch_size)):
                chunk = torch.from_numpy(array[start : start + batch_size]).to(self.device)
                if self.device.type == "cuda":
                    chunk = chunk.contiguous(memory_format=torch.channels_last)
                logits = forward_logits(self.network, chunk, amp)
                outputs[start : start + chunk.shape[0]] = torch.sigmoid(logits).cpu().numpy()
        return outputs


def connect_tracking(settings: Settings) -> MlflowClient:
    """Point MLflow at ``settings.mlflow_uri`` (tracking and registry) and return a client for it.

    A local ``sqlite:///`` database's folder is created first, so the embedded default works on a fresh
    checkout.
    """
    import mlflow
    from mlflow import MlflowClient

    uri = settings.mlflow_uri
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).expanduser().parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def pip_requirements() -> list[str]:
    """What an environment needs to load the pyfunc model, besides the orthoseg package itself."""
    from importlib.metadata import PackageNotFoundError, version

    requirements = []
    for package in ("torch", "monai", "safetensors", "numpy", "pydantic", "pydantic-settings"):
        try:
            requirements.append(f"{package}=={version(package).split('+')[0]}")
        except PackageNotFoundError:
            requirements.append(package)
    return requirements


def log_segmentation_model(
    network: torch.nn.Module,
    network_config: NetworkConfig,
    preprocess_config: PreprocessConfig,
    threshold: float = DEFAULT_THRESHOLD,
) -> str:
    """Log the model to the active MLflow run as a pyfunc "from code" and tag the run with its URI.

    The pyfunc needs the ``orthoseg`` package where it is loaded (the project image provides it);
    ``mlflow.pyfunc.load_model(uri).predict(canvases)`` then returns probabilities.

    Returns:
        The logged model's URI (``models:/m-...``), also set as the run tag ``orthoseg.model_uri``.

    Raises:
        RuntimeError: when no MLflow run is active.
    """
    import tempfile
    import warnings

    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    run = mlflow.active_run()
    if run is None:
        raise RuntimeError("log_segmentation_model needs an active MLflow run (mlflow.start_run())")
    # Canvas sides vary: canvas_px square, or larger for big films (PreprocessConfig.large_films).
    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, len(STRUCTURE_NAMES), -1, -1))]),
    )
    entry = Path(__file__).with_name("pyfunc_entry.py")
    with tempfile.TemporaryDirectory(prefix="orthoseg-model-") as tmp:
        artifacts = save_model_artifacts(tmp, network, network_config, preprocess_config, threshold)
        with warnings.catch_warnings():
            # The explicit tensor signature makes an input example redundant (and it would cost a load).
            warnings.filterwarnings("ignore", message=".*input example was not provided.*")
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME_IN_RUN,
                python_model=str(entry),
                artifacts=artifacts,
                signature=signature,
                pip_requirements=pip_requirements(),
            )
    mlflow.set_tag(MODEL_URI_TAG, info.model_uri)
    logger.info("Logged model %s to run %s", info.model_uri, run.info.run_id)
    return str(info.model_uri)


def download_model(model_uri: str, directory: str | Path, device: str | None = None) -> SegmentationModel:
    """Download a logged model's files into ``directory`` (reused when already there) and load them.

    Args:
        model_uri: any MLflow model URI whose files are reachable (``models:/m-...``, ``runs:/...``).
        directory: local cache folder for this URI.
        device: torch device; default CUDA when available.
    """
    import shutil
    import tempfile

    import mlflow

    directory = Path(directory)
    if not (directory.is_dir() and any(directory.rglob(CONFIG_FILE))):
        # Download beside the target, then rename: an interrupted download never looks complete.
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".download-", dir=directory.parent))
        try:
            mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(staging))
            if directory.exists():
                shutil.rmtree(directory)
            staging.rename(directory)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return SegmentationModel.from_directory(directory, device=device)
