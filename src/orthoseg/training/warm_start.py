"""Warm starts: begin a training run from a logged model's weights when its network is the one trained.

``TrainConfig.init_weights_uri`` names the model (an MLflow model URI or a local model folder). The driver
loads it with the model package loader (``orthoseg.model_package``: safetensors inside the pyfunc model,
digest and label contract checked), compares its network configuration with the configured one and,
when they are equal, hands the weights to the Ray workers as safetensors bytes in the object store;
when they differ the run starts from scratch, with a warning. Either way the run's
``orthoseg.warm_start`` tag says which happened. A worker that finds a checkpoint of its own run resumes
from it instead: a resumed run continues, it is not re-initialised.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    import torch

    from orthoseg.model import NetworkConfig
    from orthoseg.model_package import SegmentationModel
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

# Run tag: the model URI the run's weights started from, or "none (<why>)".
WARM_START_TAG = "orthoseg.warm_start"
NO_WARM_START = "none"


class WarmStart(BaseModel):
    """How a run's network is initialised.

    Attributes:
        uri: the model whose weights start the run (None: from scratch).
        reason: why, in words (the ``orthoseg.warm_start`` tag when ``uri`` is None).
        weights: those weights as safetensors bytes (None: from scratch).
    """

    uri: str | None = None
    reason: str = "no initial weights configured"
    weights: bytes | None = None

    @property
    def tag(self) -> str:
        """The ``orthoseg.warm_start`` tag value: the URI, or ``none (<reason>)``."""
        return self.uri if self.uri is not None else f"{NO_WARM_START} ({self.reason})"


def architecture_difference(source: NetworkConfig, target: NetworkConfig) -> str | None:
    """What differs between two network configurations, e.g. ``channels (4, 8, 16) -> (8, 16, 32)``
    (from ``source`` to ``target``); None when the weights of one fit the other."""
    before, after = source.model_dump(mode="json"), target.model_dump(mode="json")
    changes = [
        f"{key} {_plain(before.get(key))} -> {_plain(after.get(key))}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]
    return ", ".join(changes) or None


def _plain(value: Any) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


def load_init_model(settings: Settings, uri: str) -> SegmentationModel:
    """Load the model ``uri`` names on the CPU: a local model folder, or any MLflow model URI (downloaded
    afresh each time, so an alias such as ``models:/name@champion`` means the version it names now).

    Raises:
        mlflow.exceptions.MlflowException: when the URI does not resolve.
        ValueError: when the model's files fail their digest or were made for another label contract.
    """
    from orthoseg.model_package import SegmentationModel, connect_tracking, download_model

    local = Path(uri).expanduser()
    if local.is_dir():
        return SegmentationModel.from_directory(local, device="cpu")
    connect_tracking(settings)
    logger.info("Downloading the initial weights' model %s", uri)
    work = Path(settings.work_dir).expanduser()
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="init-weights-", dir=work) as tmp:
        return download_model(uri, Path(tmp) / "model", device="cpu")


def network_mismatch(settings: Settings, uri: str) -> tuple[SegmentationModel | None, str | None]:
    """Load ``uri`` and compare its network with the configured one.

    Returns:
        The loaded model (None when it cannot serve as a starting point) and why not (None when it can).
    """
    try:
        model = load_init_model(settings, uri)
    except ValueError as error:  # another label contract, or damaged files
        return None, f"{uri} cannot be loaded: {error}"
    difference = architecture_difference(model.config.network, settings.train.network_config())
    if difference is not None:
        return None, f"architecture differs: {difference}"
    return model, None


def resolve_warm_start(settings: Settings) -> WarmStart:
    """Decide how the configured run is initialised (``settings.train.init_weights_uri``), with the
    weights to start from when it is a warm start. Logs a warning when the model cannot be used."""
    uri = settings.train.init_weights_uri
    if not uri:
        return WarmStart()
    model, why_not = network_mismatch(settings, uri)
    if model is None:
        logger.warning("Not warm-starting from %s (%s): training from scratch", uri, why_not)
        return WarmStart(reason=str(why_not))
    return warm_start_from_model(model, uri)


def warm_start_from_model(model: SegmentationModel, uri: str) -> WarmStart:
    """A warm start from an already loaded (and architecture-checked) ``model`` that ``uri`` names, so a
    caller that loaded it to decide need not download it again."""
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.network.state_dict().items()}
    logger.info("Warm start: the network starts from the weights of %s", uri)
    return WarmStart(uri=uri, reason=f"warm start from {uri}", weights=save(state))


def apply_initial_weights(network: torch.nn.Module, weights: bytes | None) -> None:
    """Load safetensors ``weights`` (``WarmStart.weights``) into ``network``, strictly; nothing for None."""
    if weights is None:
        return
    from safetensors.torch import load

    from orthoseg.model_package import unwrap_network

    unwrap_network(network).load_state_dict(load(weights), strict=True)


def initial_state_dict(settings: Settings, warm_start: WarmStart | None = None) -> dict[str, torch.Tensor]:
    """The weights a fresh (not resumed) run of ``settings`` starts its first epoch with, built as a Ray
    worker builds them: seeded initialisation, then the warm start's weights when there is one."""
    import torch

    from orthoseg.model import build_network_from_config

    warm_start = warm_start if warm_start is not None else resolve_warm_start(settings)
    torch.manual_seed(settings.train.seed)
    network = build_network_from_config(settings.train.network_config())
    apply_initial_weights(network, warm_start.weights)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}
