"""``make demo``: the whole system on embedded defaults, from synthetic data to a report per image."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from orthoseg.console import stage_line
from orthoseg.labels import STRUCTURE_NAMES
from orthoseg.settings import Settings
from orthoseg.storage import ObjectStore, join_key, store_from_settings

logger = logging.getLogger(__name__)


class DemoProfile(BaseModel):
    """How big the demo data set is and how the model is trained.

    Attributes:
        train_images: synthetic radiographs in the training batch.
        broken_files: deliberately broken files added to it (validation's quarantine at work).
        inference_images: synthetic radiographs in the inference batch.
        image_px: nominal side of the synthetic films.
        training_profile: the training profile (``orthoseg.profiles``) that fills unset settings.
        preprocess: preprocessing settings over the profile's.
        train: training settings over the profile's.
        promotion: promotion settings over the configured ones (``retrain_min_new_images``: the demo's
            first run has no champion, so every labelled image counts as new and must reach it).
        seed: simulator seed.
    """

    train_images: int
    broken_files: int
    inference_images: int
    image_px: int
    training_profile: str
    preprocess: dict[str, Any] = {}
    train: dict[str, Any] = {}
    promotion: dict[str, Any] = {}
    seed: int = 7


PROFILES: dict[str, DemoProfile] = {
    # The `demo` training profile: about 5 minutes of training on 2 CPU cores.
    "small": DemoProfile(
        train_images=320,
        broken_files=6,
        inference_images=12,
        image_px=1024,
        training_profile="demo",
    ),
    # For the end-to-end test: every stage runs, nothing is expected to be accurate.
    "tiny": DemoProfile(
        train_images=12,
        broken_files=6,
        inference_images=3,
        image_px=512,
        training_profile="demo",
        preprocess={"canvas_px": 96, "spacing_mm": 3.0},
        train={"epochs": 2, "network_channels": (8, 16, 32), "warmup_epochs": 0.0},
        promotion={"retrain_min_new_images": 6},  # 12 films: below the default threshold of 20
        seed=11,  # a seed whose 12 patients fall into all three splits (train 8, val 2, test 2)
    ),
}

TRAIN_BATCH = "demo-train"
INFER_BATCH = "demo-infer"


class DemoResult(BaseModel):
    """What the demo produced and where to look."""

    profile: str
    files_total: int
    files_accepted: int
    files_quarantined: int
    quarantine_reasons: dict[str, int]
    dataset_version: str | None
    model_name: str
    model_version: str
    champion_version: str | None
    retrain: str
    promotion: str
    test_dice: dict[str, float]
    test_dice_mean: float
    images_inferred: int
    images_failed: int
    store: str
    predictions: str
    report: str
    validation_report: str
    mlflow_uri: str
    mlflow_ui_command: str
    seconds: float


def demo_settings(settings: Settings, profile: DemoProfile) -> Settings:
    """The caller's settings over the demo's training profile and its own overrides.

    Settings the caller gave explicitly (``ORTHOSEG_*``) still win.
    """
    given = settings.model_dump(mode="json", exclude_unset=True, exclude={"pseudonym_salt"})
    sections: dict[str, Any] = {}  # JSON form of each section; Settings validates it
    for section, values in (
        ("preprocess", profile.preprocess),
        ("train", profile.train),
        ("promotion", profile.promotion),
    ):
        sections[section] = {**values, **given.pop(section, {})}
    return Settings(
        **given,
        **sections,
        profile=settings.profile or profile.training_profile,
        pseudonym_salt=settings.pseudonym_salt,
    )


def demo_promotion_policy(settings: Settings) -> Settings:
    """The settings with the demo's promotion policy: the configured one with the quality floor off
    (a model trained for minutes on a few synthetic films would not clear a clinic's floor), written
    to ``<work_dir>/demo-promotion.yaml``. A policy path given explicitly is kept."""
    import yaml

    from orthoseg.promotion_policy import policy_from_settings

    if "policy_path" in settings.promotion.model_fields_set:
        return settings
    policy = policy_from_settings(settings).policy.model_copy(update={"min_dice_mean": 0.0})
    path = Path(settings.work_dir).expanduser().resolve() / "demo-promotion.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False))
    promotion = settings.promotion.model_copy(update={"policy_path": str(path)})
    return settings.model_copy(update={"promotion": promotion})


def run_demo(settings: Settings, profile_name: str = "small", console: Console | None = None) -> DemoResult:
    """Synthesise a training and an inference batch, then run both pipelines through kfp.local.

    ``console``: where a line per stage goes (``console.stage_line``); None prints none.

    Raises:
        ValueError: for an unknown profile name.
    """
    from orthoseg.registry import RegistryError, resolve_model
    from pipelines.runner import run_inference_pipeline, run_training_pipeline

    if profile_name not in PROFILES:
        raise ValueError(f"unknown demo profile {profile_name!r}; choose one of {', '.join(PROFILES)}")
    profile = PROFILES[profile_name]
    settings = demo_promotion_policy(demo_settings(settings, profile))
    started = time.perf_counter()
    store = store_from_settings(settings)

    synthesising = stage_line(
        console,
        f"[1/3] Synthesising {profile.train_images} training films (+{profile.broken_files} broken files) "
        f"and {profile.inference_images} to infer",
    )
    with synthesising:
        _synthesise(store, profile)
    with stage_line(console, "[2/3] Training pipeline: validate, train, evaluate, register, promote"):
        training = run_training_pipeline(settings, store.url(join_key("incoming", TRAIN_BATCH)), TRAIN_BATCH)
    with stage_line(console, "[3/3] Inference pipeline: validate, segment, measure, report"):
        inference = run_inference_pipeline(
            settings, store.url(join_key("incoming", INFER_BATCH, "images")), INFER_BATCH, "champion"
        )
    champion_version: str | None
    try:
        champion_version, _ = resolve_model(settings, "champion")
    except RegistryError:  # no champion: the gate refused every model so far
        champion_version = None
    return summarize_demo(settings, profile_name, training, inference, champion_version, started)


def _synthesise(store: ObjectStore, profile: DemoProfile) -> None:
    """The demo's training batch (with broken files and a preview) and its inference batch."""
    from orthoseg.synth import SynthConfig, generate_dataset, write_preview

    train_config = SynthConfig(
        count=profile.train_images,
        seed=profile.seed,
        batch=TRAIN_BATCH,
        broken_count=profile.broken_files,
        image_px=profile.image_px,
        workers=2,
    )
    generate_dataset(store, train_config)
    write_preview(store, train_config, join_key("reports", "synth", TRAIN_BATCH, "preview.png"))
    infer_config = SynthConfig(
        count=profile.inference_images,
        seed=profile.seed + 1000,
        batch=INFER_BATCH,
        image_px=profile.image_px,
        workers=2,
    )
    generate_dataset(store, infer_config)


def _int(value: Any) -> int:
    return int(float(value or 0))


def summarize_demo(
    settings: Settings,
    profile_name: str,
    training: dict[str, Any],
    inference: dict[str, Any],
    champion_version: str | None,
    started: float,
) -> DemoResult:
    """Collect the pipelines' outputs into one result (counts arrive as JSON numbers).

    When the retrain gate skipped training (a second demo on the same store brings no new annotated
    images), the model is the champion and its test Dice comes from its registry tags.
    """
    from pipelines.runner import retrain_summary, trained

    store = store_from_settings(settings)
    validation = training["validation"]
    inferred = inference["inference"]
    if trained(training):
        evaluation = training["evaluation"]
        version = str(training["registered"]["version"])
        promotion = "champion" if champion_version == version else "challenger (did not beat the champion)"
        dice = {name: float(evaluation["dice"].get(name, float("nan"))) for name in STRUCTURE_NAMES}
        dice_mean = float(evaluation["dice_mean"])
    else:
        version = str(champion_version)
        promotion = "champion (unchanged: training was skipped)"
        dice, dice_mean = _registered_dice(settings, champion_version)
    return DemoResult(
        profile=profile_name,
        files_total=_int(validation["files_total"]),
        files_accepted=_int(validation["accepted"]),
        files_quarantined=_int(validation["quarantined"]),
        quarantine_reasons={k: _int(v) for k, v in validation.get("reasons_by_kind", {}).items()},
        dataset_version=validation.get("dataset_version"),
        model_name=settings.model_name,
        model_version=version,
        champion_version=champion_version,
        retrain=retrain_summary(training),
        promotion=promotion,
        test_dice=dice,
        test_dice_mean=dice_mean,
        images_inferred=_int(inferred["images_inferred"]) + _int(inferred.get("images_skipped")),
        images_failed=_int(inferred["images_failed"]),
        store=store.uri,
        predictions=store.url(str(inferred["output_prefix"])),
        report=store.url(str(inferred["report_key"])),
        validation_report=store.url(str(validation["report_key"])),
        mlflow_uri=settings.mlflow_uri,
        mlflow_ui_command=f"mlflow ui --backend-store-uri {settings.mlflow_uri}",
        seconds=round(time.perf_counter() - started, 1),
    )


def _registered_dice(settings: Settings, version: str | None) -> tuple[dict[str, float], float]:
    """Test Dice per structure and mean from a registered version's tags (NaN where absent)."""
    from orthoseg.registry import DICE_TAG, tracking_client

    tags = (
        tracking_client(settings).get_model_version(settings.model_name, version).tags
        if version is not None
        else {}
    )
    dice = {name: float(tags.get(f"test_dice_{name}", "nan")) for name in STRUCTURE_NAMES}
    return dice, float(tags.get(DICE_TAG, "nan"))


def render_demo_table(result: DemoResult) -> Table:
    """The demo's closing table: what went in, what was learned, what came out, where to look."""
    table = Table(title=f"orthoseg demo ({result.profile}) — {result.seconds:.0f} s", show_header=False)
    table.add_column("what", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(result.quarantine_reasons.items())) or "none"
    table.add_row("files accepted / quarantined", f"{result.files_accepted} / {result.files_quarantined}")
    table.add_row("quarantine reasons", reasons)
    table.add_row("dataset version", str(result.dataset_version))
    table.add_row("retraining", result.retrain)
    table.add_row("model", f"{result.model_name} v{result.model_version} → {result.promotion}")
    for name, value in result.test_dice.items():
        table.add_row(f"  test Dice {name}", f"{value:.3f}")
    table.add_row("  test Dice mean", f"{result.test_dice_mean:.3f}")
    table.add_row("images inferred (failed)", f"{result.images_inferred} ({result.images_failed})")
    table.add_row("predictions", result.predictions)
    table.add_row("inference report", result.report)
    table.add_row("validation report", result.validation_report)
    table.add_row("MLflow store", result.mlflow_uri)
    table.add_row("MLflow UI", result.mlflow_ui_command)
    return table
