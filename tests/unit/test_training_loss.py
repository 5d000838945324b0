"""The training loss, the per-epoch bookkeeping of the worker loop, and the checkpoint round trip."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from orthoseg.augment import AugmentConfig
from orthoseg.labels import NUM_STRUCTURES, STRUCTURE_NAMES
from orthoseg.model import build_network
from orthoseg.settings import TrainConfig
from orthoseg.training.checkpoint import (
    CKPT_BEST,
    CKPT_OPTIMIZER,
    CKPT_STATE,
    CKPT_WEIGHTS,
    TrainState,
    read_checkpoint,
    read_summary,
    write_checkpoint,
)
from orthoseg.training.loop import LoopConfig, _owned_by, record_epoch, summarise_epoch
from orthoseg.training.loss import SegmentationLoss

SIDE = 16


def _targets(count: int = 2, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(count, NUM_STRUCTURES, SIDE, SIDE, generator=generator) > 0.6).float()


def _logits_for(targets: torch.Tensor, margin: float = 6.0) -> torch.Tensor:
    return (targets * 2 - 1) * margin


# --- loss -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", ["dice_bce", "dice_focal"])
def test_matching_logits_score_lower_than_wrong_ones(loss: str) -> None:
    function = SegmentationLoss(TrainConfig(loss=loss))
    targets = _targets()
    right = function(_logits_for(targets), targets)
    wrong = function(-_logits_for(targets), targets)
    undecided = function(torch.zeros_like(targets), targets)
    assert right.ndim == 0 and torch.isfinite(right)
    assert float(right) < float(undecided) < float(wrong)
    assert float(right) < 0.05


def test_focal_and_bce_are_different_losses() -> None:
    targets = _targets()
    logits = torch.randn(targets.shape, generator=torch.Generator().manual_seed(3))
    bce = SegmentationLoss(TrainConfig(loss="dice_bce"))(logits, targets)
    focal = SegmentationLoss(TrainConfig(loss="dice_focal"))(logits, targets)
    assert not torch.isclose(bce, focal)


@pytest.mark.parametrize("loss", ["dice_bce", "dice_focal"])
@pytest.mark.parametrize("heads", [1, 2, 3])
def test_deep_supervision_is_the_weighted_sum_of_head_losses(loss: str, heads: int) -> None:
    function = SegmentationLoss(TrainConfig(loss=loss))
    targets = _targets()
    generator = torch.Generator().manual_seed(heads)
    stacked = torch.randn((targets.shape[0], 1 + heads, *targets.shape[1:]), generator=generator)
    weights = np.array([1.0, 0.5, 0.25, 0.125][: 1 + heads])
    weights /= weights.sum()
    per_head = [float(function(stacked[:, head], targets)) for head in range(1 + heads)]
    assert float(function(stacked, targets)) == pytest.approx(float(np.dot(weights, per_head)), rel=1e-6)
    # The heads really differ, so the weighting is visible.
    assert max(per_head) - min(per_head) > 1e-4


@pytest.mark.parametrize("deep", [False, True])
def test_gradients_reach_every_logit(deep: bool) -> None:
    function = SegmentationLoss(TrainConfig())
    targets = _targets()
    shape = (targets.shape[0], 3, *targets.shape[1:]) if deep else targets.shape
    logits = torch.randn(shape, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    function(logits, targets).backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    if deep:
        assert all(logits.grad[:, head].abs().sum() > 0 for head in range(3))
    else:
        assert logits.grad.abs().sum() > 0


def test_structure_weights_scale_each_structures_share_of_the_loss() -> None:
    targets = _targets()
    logits = _logits_for(targets)
    cement = STRUCTURE_NAMES.index("cement")
    logits[:, cement] = -logits[:, cement]  # only the cement channel is wrong
    plain = float(SegmentationLoss(TrainConfig())(logits, targets))
    weighted_config = TrainConfig(structure_loss_weights={"cement": 3.0})
    weights = weighted_config.structure_weights()
    assert sum(weights) / len(weights) == pytest.approx(1.0)
    assert weights[cement] == pytest.approx(3.0 * weights[0])
    weighted = float(SegmentationLoss(weighted_config)(logits, targets))
    # Nearly all of the loss is the cement channel's, so the loss grows by about the cement weight.
    assert weighted == pytest.approx(plain * weights[cement], rel=0.05)
    unweighted_elsewhere = float(
        SegmentationLoss(TrainConfig(structure_loss_weights={"femur": 3.0}))(logits, targets)
    )
    assert unweighted_elsewhere < plain


@pytest.mark.parametrize("weights", [{"menisci": 2.0}, {"cement": 0.0}, {"cement": -1.0}])
def test_bad_structure_weights_are_refused(weights: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="structure_loss_weights"):
        TrainConfig(structure_loss_weights=weights)


# --- loop bookkeeping -------------------------------------------------------------------------------------


def _loop(train_images: int, batch_size: int) -> LoopConfig:
    train = TrainConfig(batch_size=batch_size)
    return LoopConfig(
        train=train,
        network=train.network_config(),
        augment=AugmentConfig(),
        structures_present=(True,) * NUM_STRUCTURES,
        train_images=train_images,
        val_images=0,
    )


@pytest.mark.parametrize(
    ("images", "batch", "world", "steps"),
    [(8, 4, 1, 2), (8, 4, 2, 1), (10, 4, 2, 2), (9, 4, 1, 3), (1, 4, 2, 1), (3, 4, 4, 1), (100, 8, 3, 5)],
)
def test_steps_per_epoch(images: int, batch: int, world: int, steps: int) -> None:
    assert _loop(images, batch).steps_per_epoch(world) == steps


def test_loop_config_round_trips_as_json_and_refuses_unknown_keys() -> None:
    loop = _loop(8, 4)
    assert LoopConfig.model_validate(loop.model_dump(mode="json")) == loop
    with pytest.raises(ValueError):
        LoopConfig.model_validate({**loop.model_dump(mode="json"), "extra": 1})


def _totals(loss_sum: float, seen: float, dice_sums: list[float], val_images: float) -> torch.Tensor:
    return torch.tensor([loss_sum, seen, *dice_sums, val_images], dtype=torch.float64)


def test_summarise_epoch_averages_loss_and_dice_over_present_structures() -> None:
    dice_sums = [1.8, 1.6, 1.4, 1.2, 1.0, 0.8, 2.0]  # over 2 validation images
    present = np.array([True, True, False, True, False, False, True])
    metrics = summarise_epoch(_totals(6.0, 8.0, dice_sums, 2.0), present, 1e-3, 12.5)
    assert metrics["train_loss"] == pytest.approx(0.75)
    assert metrics["lr"] == 1e-3 and metrics["epoch_seconds"] == 12.5
    for name, total in zip(STRUCTURE_NAMES, dice_sums, strict=True):
        assert metrics[f"val_dice_{name}"] == pytest.approx(total / 2)
    assert metrics["val_dice_mean"] == pytest.approx(np.mean([0.9, 0.8, 0.6, 1.0]))


def test_summarise_epoch_without_validation_has_no_val_keys() -> None:
    present = np.ones(NUM_STRUCTURES, dtype=bool)
    metrics = summarise_epoch(_totals(3.0, 4.0, [0.0] * NUM_STRUCTURES, 0.0), present, 1e-3, 1.0)
    assert metrics["train_loss"] == pytest.approx(0.75)
    assert not [key for key in metrics if key.startswith("val_")]


def test_summarise_epoch_without_present_structures_has_no_mean() -> None:
    present = np.zeros(NUM_STRUCTURES, dtype=bool)
    metrics = summarise_epoch(_totals(1.0, 1.0, [1.0] * NUM_STRUCTURES, 1.0), present, 1e-3, 1.0)
    assert "val_dice_mean" not in metrics
    assert metrics["val_dice_femur"] == pytest.approx(1.0)


def test_summarise_epoch_with_no_training_images_does_not_divide_by_zero() -> None:
    present = np.ones(NUM_STRUCTURES, dtype=bool)
    metrics = summarise_epoch(_totals(0.0, 0.0, [0.0] * NUM_STRUCTURES, 0.0), present, 1e-3, 1.0)
    assert metrics["train_loss"] == 0.0


def _set_weights(network: torch.nn.Module, value: float) -> None:
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.fill_(value)


def _first_weight(weights: dict[str, torch.Tensor]) -> float:
    return float(next(iter(weights.values())).flatten()[0])


def test_record_epoch_keeps_the_best_epoch_on_improvement_or_tie() -> None:
    network = build_network((4, 8, 16))
    state = TrainState()
    for epoch, dice in enumerate([0.5, 0.7, 0.6, 0.7, 0.2], start=1):
        _set_weights(network, float(epoch))
        record_epoch(state, network, {"train_loss": 1.0 / epoch, "val_dice_mean": dice})
    assert state.epoch == 5
    assert [entry["epoch"] for entry in state.history] == [1, 2, 3, 4, 5]
    assert [entry["val_dice_mean"] for entry in state.history] == [0.5, 0.7, 0.6, 0.7, 0.2]
    assert (state.best_epoch, state.best_val_dice_mean) == (4, 0.7)  # the tie at epoch 4 wins
    assert _first_weight(state.best_weights) == 4.0
    assert all(tensor.device.type == "cpu" for tensor in state.best_weights.values())
    # The kept weights are a copy: training on changes nothing in them.
    _set_weights(network, 9.0)
    assert _first_weight(state.best_weights) == 4.0


def test_record_epoch_without_validation_keeps_the_last_epoch() -> None:
    network = build_network((4, 8, 16))
    state = TrainState()
    for epoch in range(1, 4):
        _set_weights(network, float(epoch))
        record_epoch(state, network, {"train_loss": 1.0})
    assert (state.epoch, state.best_epoch, state.best_val_dice_mean) == (3, 3, None)
    assert _first_weight(state.best_weights) == 3.0
    assert [entry["epoch"] for entry in state.history] == [1, 2, 3]


@pytest.mark.parametrize("world_size", [1, 2, 3, 4])
def test_validation_uids_are_partitioned_between_ranks(world_size: int) -> None:
    uids = [f"1.2.826.0.1.3680043.8.498.{index}" for index in range(200)]
    owners = [[rank for rank in range(world_size) if _owned_by(uid, rank, world_size)] for uid in uids]
    assert all(len(owner) == 1 for owner in owners)
    if world_size > 1:
        assert {owner[0] for owner in owners} == set(range(world_size))
    # Stable: the same answer on every call (every node computes it on its own).
    assert owners == [
        [rank for rank in range(world_size) if _owned_by(uid, rank, world_size)] for uid in uids
    ]


# --- checkpoint -------------------------------------------------------------------------------------------


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer, torch.amp.GradScaler]:
    torch.manual_seed(0)
    network = build_network((4, 8, 16))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-5)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    images = torch.rand(2, 1, SIDE, SIDE)
    loss = SegmentationLoss(TrainConfig())(network(images), _targets())
    optimizer.zero_grad()
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return network, optimizer, scaler


def test_checkpoint_round_trip_restores_weights_state_and_optimizer(tmp_path: Path) -> None:
    network, optimizer, scaler = _trained()
    best = {k: v.detach().clone() + 1.0 for k, v in network.state_dict().items()}
    history = [{"epoch": 1, "train_loss": 0.9, "val_dice_mean": 0.4}, {"epoch": 2, "train_loss": 0.8}]
    state = TrainState(epoch=2, history=history, best_epoch=1, best_val_dice_mean=0.4, best_weights=best)
    write_checkpoint(tmp_path, network, state, optimizer, scaler)

    torch.manual_seed(1)
    fresh = build_network((4, 8, 16))
    assert not torch.equal(next(iter(fresh.state_dict().values())), next(iter(network.state_dict().values())))
    restored = read_checkpoint(tmp_path, fresh)

    for name, tensor in network.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor), name
    assert (restored.epoch, restored.best_epoch, restored.best_val_dice_mean) == (2, 1, 0.4)
    assert restored.history == history
    assert restored.best_weights.keys() == best.keys()
    assert all(torch.equal(restored.best_weights[k], v) for k, v in best.items())
    assert read_summary(tmp_path) == state.summary()

    assert restored.optimizer is not None
    again = torch.optim.AdamW(fresh.parameters(), lr=5.0)
    again.load_state_dict(restored.optimizer["optimizer"])
    expected, loaded = optimizer.state_dict(), again.state_dict()
    assert loaded["param_groups"] == expected["param_groups"]
    assert loaded["state"].keys() == expected["state"].keys() and len(loaded["state"]) > 0
    for index, values in expected["state"].items():
        for key, value in values.items():
            assert torch.equal(loaded["state"][index][key], value), (index, key)
    new_scaler = torch.amp.GradScaler("cuda", enabled=False)
    new_scaler.load_state_dict(restored.optimizer["scaler"])
    assert new_scaler.state_dict() == scaler.state_dict()


def test_checkpoint_files_are_safetensors_json_and_a_weights_only_optimizer_file(tmp_path: Path) -> None:
    network, optimizer, scaler = _trained()
    state = TrainState(epoch=1, history=[{"epoch": 1, "train_loss": 1.0}], best_epoch=1)
    state.best_weights = {k: v.detach().clone() for k, v in network.state_dict().items()}
    write_checkpoint(tmp_path, network, state, optimizer, scaler)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [CKPT_WEIGHTS, CKPT_BEST, CKPT_OPTIMIZER, CKPT_STATE]
    )
    assert load_file(str(tmp_path / CKPT_WEIGHTS)).keys() == network.state_dict().keys()
    assert load_file(str(tmp_path / CKPT_BEST)).keys() == network.state_dict().keys()
    assert json.loads((tmp_path / CKPT_STATE).read_text())["epoch"] == 1
    torch.load(tmp_path / CKPT_OPTIMIZER, map_location="cpu", weights_only=True)


class _Payload:
    """Anything a weights-only unpickler must refuse."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("pickled code ran",))


def test_read_checkpoint_refuses_arbitrary_objects_in_the_optimizer_file(tmp_path: Path) -> None:
    network, optimizer, scaler = _trained()
    state = TrainState(epoch=1, history=[{"epoch": 1}], best_epoch=1)
    state.best_weights = {k: v.detach().clone() for k, v in network.state_dict().items()}
    write_checkpoint(tmp_path, network, state, optimizer, scaler)
    torch.save({"optimizer": _Payload(), "scaler": {}}, tmp_path / CKPT_OPTIMIZER)
    with pytest.raises(pickle.UnpicklingError):
        read_checkpoint(tmp_path, build_network((4, 8, 16)))
