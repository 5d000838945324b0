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
    collate = _augmenting_collate(transforms, seed=0)
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


def test_training_strips_are_cut_at_random_heights_and_validation_at_the_centre() -> None:
    from orthoseg.training.loop import _windows

    rows = np.arange(128, dtype=np.float32)
    batch = {
        "image": np.broadcast_to(rows[None, None, :, None], (3, 1, 128, 64)).copy(),
        "masks": np.zeros((3, 7, 128, 64), dtype=np.uint8),
        "valid_rows": np.array([[0, 128], [32, 96], [10, 128]], dtype=np.int32),
    }
    centred, _ = _windows(batch, None)
    assert centred.shape == (3, 1, 64, 64)
    assert centred[:, 0, 0, 0].tolist() == [32.0, 32.0, 32.0]
    tops = {index: set() for index in range(3)}
    rng = np.random.default_rng(0)
    for _ in range(1000):
        windows, masks = _windows(batch, rng)
        assert windows.shape == (3, 1, 64, 64) and masks.shape == (3, 7, 64, 64)
        for index in range(3):
            tops[index].add(int(windows[index, 0, 0, 0]))
    assert tops[0] == set(range(0, 65))  # every height of a film that fills the strip
    assert tops[1] == {32}  # the film fills only the window: no choice
    assert min(tops[2]) == 10 and max(tops[2]) == 64


def test_a_share_of_training_windows_leaves_the_knee_joint_out() -> None:
    from orthoseg.labels import STRUCTURE_NAMES
    from orthoseg.training.loop import _windows

    femur, tibia = STRUCTURE_NAMES.index("femur"), STRUCTURE_NAMES.index("tibia")
    masks = np.zeros((1, 7, 192, 64), dtype=np.uint8)
    masks[0, femur, 40:96, 16:48] = 1
    masks[0, tibia, 96:152, 16:48] = 1
    batch = {  # film only in rows 64-128: a plain window is always rows 64-128, across the joint
        "image": np.ones((1, 1, 192, 64), dtype=np.float32),
        "masks": masks,
        "valid_rows": np.array([[64, 128]], dtype=np.int32),
    }
    rng = np.random.default_rng(0)
    one_sided = 0
    for _ in range(400):
        _, window_masks = _windows(batch, rng, shaft_window_probability=0.25)
        seen = window_masks[0, [femur, tibia]].any(axis=(1, 2))
        one_sided += int(seen.sum() == 1)
    assert 60 <= one_sided <= 140  # about a quarter of 400
    plain = [_windows(batch, rng)[1][0, [femur, tibia]].any(axis=(1, 2)) for _ in range(200)]
    assert all(seen.all() for seen in plain)  # the default keeps the joint in every window
