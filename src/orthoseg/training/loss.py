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

    Args:
        config: ``loss`` and ``dice_over_batch`` are read from it.
    """

    def __init__(self, config: TrainConfig) -> None:
        from monai.losses import DiceLoss, FocalLoss

        self.dice = DiceLoss(sigmoid=True, batch=config.dice_over_batch, smooth_nr=1e-5, smooth_dr=1e-5)
        self.focal = FocalLoss(gamma=2.0, use_softmax=False) if config.loss == "dice_focal" else None

    def _single(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        pixel = (
            self.focal(logits, targets)
            if self.focal is not None
            else F.binary_cross_entropy_with_logits(logits, targets)
        )
        return self.dice(logits, targets) + pixel

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
