"""Named training profiles: how big the canvas, the network and the schedule are for a given budget.

Data only (no torch): ``Settings(profile=...)`` fills every preprocessing, training and augmentation
value the caller did not set from here, so ``ORTHOSEG_TRAIN__EPOCHS=5`` still wins over a profile.

- ``demo``: what ``make demo`` trains; about 5 minutes of training on 2 CPU cores.
- ``standard``: the default of ``orthoseg train``; at most about an hour on 2 CPU cores.
- ``full``: GPU nodes (bf16, channels-last), a finer canvas, thousands of images.
"""

from __future__ import annotations

from typing import Any

PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "demo": {
        "preprocess": {"canvas_px": 256, "spacing_mm": 0.8},
        "train": {
            "epochs": 20,
            "batch_size": 8,
            "learning_rate": 4e-3,
            "warmup_epochs": 1.0,
            "architecture": "unet",
            "network_channels": (16, 32, 64, 128, 256),
            "num_res_units": 0,
            "window_context_rows": 64,
            "num_workers": 2,
            "use_gpu": False,
        },
        "augment": {},
    },
    "standard": {
        "preprocess": {"canvas_px": 320, "spacing_mm": 0.6},
        "train": {
            "epochs": 100,
            "batch_size": 8,
            "learning_rate": 4e-3,
            "warmup_epochs": 2.0,
            "architecture": "unet",
            "network_channels": (16, 32, 64, 128, 256),
            "num_res_units": 0,
            "window_context_rows": 160,
            "structure_loss_weights": {"tibial_component": 1.5, "cement": 2.0},
            "num_workers": 2,
            "use_gpu": False,
        },
        "augment": {},
    },
    "full": {
        "preprocess": {"canvas_px": 512, "spacing_mm": 0.4},
        "train": {
            "epochs": 200,
            "batch_size": 16,
            "learning_rate": 2e-3,
            "warmup_epochs": 5.0,
            "architecture": "dynunet",
            "network_channels": (32, 64, 128, 256, 320, 320),
            "deep_supervision": True,
            "window_context_rows": 256,
            "num_workers": 1,
            "cpus_per_worker": 8.0,
            "use_gpu": True,
            "mixed_precision": True,
            "shuffle_buffer_images": 256,
        },
        "augment": {},
    },
}


def profile_defaults(name: str) -> dict[str, dict[str, Any]]:
    """The section values of a profile (``preprocess``, ``train``, ``augment``); a copy, safe to change.

    Raises:
        KeyError: for an unknown profile name.
    """
    return {section: dict(values) for section, values in PROFILES[name].items()}
