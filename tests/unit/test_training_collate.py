"""The worker's collate function: Ray prefetch threads may collate batches at the same time."""

from __future__ import annotations

import threading

import numpy as np
import torch

from orthoseg.augment import AugmentConfig, build_train_transforms
from orthoseg.training.loop import _augmenting_collate


def test_concurrent_collation_never_mixes_random_parameters() -> None:
    # RandHistogramShift draws a control-point count in randomize() and uses it in __call__: two
    # threads sharing one chain without a lock fail with a tensor size mismatch.
    torch.set_num_threads(1)
    transforms = build_train_transforms(AugmentConfig(histogram_shift_probability=1.0))
    collate = _augmenting_collate(transforms)
    rng = np.random.default_rng(0)
    batch = {
        "image": rng.random((2, 1, 64, 64), dtype=np.float32),
        "masks": (rng.random((2, 7, 64, 64)) > 0.5).astype(np.uint8),
    }
    errors: list[str] = []
    shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def work() -> None:
        for _ in range(40):
            try:
                images, masks = collate(batch)
                shapes.append((tuple(images.shape), tuple(masks.shape)))
            except Exception as error:  # collected, asserted below
                errors.append(repr(error))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert shapes == [((2, 1, 64, 64), (2, 7, 64, 64))] * 160
