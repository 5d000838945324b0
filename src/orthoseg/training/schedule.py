"""The learning-rate schedule: linear warm-up, then cosine annealing to a floor."""

from __future__ import annotations

import math


def learning_rate_at(
    epoch_progress: float,
    base_learning_rate: float,
    epochs: int,
    warmup_epochs: float = 0.0,
    min_ratio: float = 0.0,
) -> float:
    """Learning rate after ``epoch_progress`` epochs (fractions for steps inside an epoch).

    A pure function of training progress, so a run resumed from a checkpoint continues on exactly the
    same schedule. During warm-up the rate rises linearly from ``base / (warm-up steps)`` towards
    ``base``; afterwards it follows half a cosine from ``base`` down to ``base * min_ratio`` at
    ``epochs``.

    Args:
        epoch_progress: epochs done so far (0 at the first step, ``e + step / steps`` inside epoch e).
        base_learning_rate: the peak rate.
        epochs: length of the schedule.
        warmup_epochs: length of the linear warm-up (0 for none).
        min_ratio: final rate as a fraction of the peak.

    Raises:
        ValueError: for a negative progress, no epochs, or a warm-up at least as long as the schedule.
    """
    if epoch_progress < 0 or epochs < 1:
        raise ValueError(f"need epoch_progress >= 0 and epochs >= 1, got {epoch_progress}, {epochs}")
    if warmup_epochs >= epochs:
        raise ValueError(f"warmup_epochs={warmup_epochs} must be shorter than epochs={epochs}")
    floor = base_learning_rate * min_ratio
    if warmup_epochs > 0 and epoch_progress < warmup_epochs:
        return float(base_learning_rate * max(epoch_progress, 1e-3 * warmup_epochs) / warmup_epochs)
    fraction = min(1.0, (epoch_progress - warmup_epochs) / (epochs - warmup_epochs))
    return float(floor + 0.5 * (base_learning_rate - floor) * (1.0 + math.cos(math.pi * fraction)))
