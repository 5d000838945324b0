"""What a training checkpoint holds and how it is written and read (safetensors + JSON, no pickle).

A checkpoint folder has the current weights, the best epoch's weights, the optimiser and loss-scaler
state, and ``state.json`` (epochs done, the per-epoch history, the best epoch). The optimiser state is
written with ``torch.save`` but read back with ``weights_only=True``, which refuses arbitrary objects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

CKPT_WEIGHTS = "weights.safetensors"
CKPT_BEST = "best.safetensors"
CKPT_OPTIMIZER = "optimizer.pt"
CKPT_STATE = "state.json"


@dataclass
class TrainState:
    """Progress of a run, carried from epoch to epoch and through checkpoints.

    Attributes:
        epoch: epochs completed.
        history: one metrics dict per completed epoch (``epoch`` is 1-based), each epoch once.
        best_epoch: the epoch with the best validation Dice mean so far (0 before any).
        best_val_dice_mean: its validation Dice mean (None without validation images).
        best_weights: that epoch's weights (CPU tensors).
        optimizer: optimiser and loss-scaler state to restore, when resuming.
    """

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_dice_mean: float | None = None
    best_weights: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None

    def summary(self) -> dict[str, Any]:
        """The JSON part (``state.json``)."""
        return {
            "epoch": self.epoch,
            "history": self.history,
            "best_epoch": self.best_epoch,
            "best_val_dice_mean": self.best_val_dice_mean,
        }


def write_checkpoint(
    directory: Path,
    network: torch.nn.Module,
    state: TrainState,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> None:
    """Write a checkpoint of ``network`` and ``state`` into ``directory``."""
    import torch
    from safetensors.torch import save_file

    from orthoseg.model_package import save_weights

    save_weights(network, directory / CKPT_WEIGHTS)
    save_file(state.best_weights, str(directory / CKPT_BEST))
    torch.save(
        {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict()}, directory / CKPT_OPTIMIZER
    )
    (directory / CKPT_STATE).write_text(json.dumps(state.summary()))


def read_checkpoint(directory: Path, network: torch.nn.Module) -> TrainState:
    """Load the checkpoint's current weights into ``network`` and return its state."""
    import torch
    from safetensors.torch import load_file

    from orthoseg.model_package import load_weights

    summary = json.loads((directory / CKPT_STATE).read_text())
    load_weights(network, directory / CKPT_WEIGHTS)
    return TrainState(
        epoch=int(summary["epoch"]),
        history=list(summary["history"]),
        best_epoch=int(summary["best_epoch"]),
        best_val_dice_mean=summary["best_val_dice_mean"],
        best_weights=load_file(str(directory / CKPT_BEST)),
        optimizer=torch.load(directory / CKPT_OPTIMIZER, map_location="cpu", weights_only=True),
    )


def read_summary(directory: Path) -> dict[str, Any]:
    """``state.json`` of a checkpoint (epochs done, history, best epoch), without loading weights."""
    return dict(json.loads((directory / CKPT_STATE).read_text()))
