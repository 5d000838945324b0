"""The training loss: soft Dice plus a pixel loss, per structure (sigmoid), with deep supervision."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from orthoseg.settings import TrainConfig


class SegmentationLoss:
    """Soft Dice + binary cross-entropy (or focal loss) on independent sigmoid outputs.

    With deep supervision the network returns (N, 1 + heads, C, H, W) in training mode: every head is
    scored against the same masks, weighted 1, 1/2, 1/4, ... (normalised), as nnU-Net does.

    Each structure's Dice and pixel loss are weighted by ``config.structure_weights()`` (mean 1).

    Args:
        config: ``loss``, ``dice_over_batch`` and ``structure_loss_weights`` are read from it.
    """

    def __init__(self, config: TrainConfig) -> None:
        from monai.losses import DiceLoss, FocalLoss

        self.dice = DiceLoss(
            sigmoid=True, batch=config.dice_over_batch, smooth_nr=1e-5, smooth_dr=1e-5, reduction="none"
        )
        self.focal = (
            FocalLoss(gamma=2.0, use_softmax=False, reduction="none") if config.loss == "dice_focal" else None
        )
        self.weights = config.structure_weights()

    def _single(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch
        import torch.nn.functional as F

        weights = torch.tensor(self.weights, dtype=logits.dtype, device=logits.device)
        pixel = (
            self.focal(logits, targets)
            if self.focal is not None
            else F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        )
        pixel_per_structure = pixel.float().mean(dim=(0, *range(2, pixel.ndim)))
        dice_per_structure = self.dice(logits, targets).float().reshape(-1, len(self.weights)).mean(dim=0)
        return ((dice_per_structure + pixel_per_structure) * weights.float()).mean()

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Loss of (N, C, H, W) logits, or (N, 1 + heads, C, H, W) with deep supervision."""
        if logits.ndim == targets.ndim:
            return self._single(logits, targets)
        heads = logits.shape[1]
        weights = [0.5**head for head in range(heads)]
        total = sum(weights)
        loss = self._single(logits[:, 0], targets) * (weights[0] / total)
        for head in range(1, heads):
            loss = loss + self._single(logits[:, head], targets) * (weights[head] / total)
        return loss
