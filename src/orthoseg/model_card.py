"""A short model card, written as each registered version's description (Markdown, shown in the MLflow UI).

A reader who finds a version in the registry should learn, without opening the run: what data it was
trained on (dataset version, images per split, view and implant category), which code trained it, how
it scored, what it is for and what it must not be used for.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from orthoseg.labels import STRUCTURE_NAMES

if TYPE_CHECKING:
    from orthoseg.promotion_audit import PromotionDecision
    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

TRAINING_DATA_TAG = "model_card.training_data"
# Reading one ground-truth JSON per image for the category count costs one store request each.
MAX_CATEGORY_READS = 2000
INTENDED_USE = (
    "Research and engineering evaluation of segmentation and measurement of post-operative knee "
    "radiographs (AP and lateral views)."
)
LIMITS = (
    "Synthetic-trained (orthoseg simulator) unless the dataset's batches say otherwise; research use "
    "only; **not a medical device**. Figures on synthetic films are a test instrument, not a claim about "
    "clinical accuracy; judge it on real annotated films before any clinical reading. Outputs must be "
    "reviewed by a qualified reader."
)


class TrainingDataSummary(BaseModel):
    """Image counts of a dataset version (no patient data).

    Attributes:
        dataset_version: the version counted.
        images: images per split.
        by_view: ``{view: {split: images}}`` (manifest ``view_position``).
        by_category: ``{implant category: {split: images}}`` from the ground-truth JSON (empty when the
            dataset has none or is too large to count cheaply).
    """

    dataset_version: str
    images: dict[str, int]
    by_view: dict[str, dict[str, int]]
    by_category: dict[str, dict[str, int]] = {}


def _counts(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    table: dict[str, dict[str, int]] = {}
    for (group, split), count in sorted(Counter(pairs).items()):
        table.setdefault(group, {})[split] = count
    return table


def summarize_training_data(settings: Settings, dataset_version: str) -> TrainingDataSummary | None:
    """Count a dataset version's images per split, view and category; None when it cannot be read."""
    from orthoseg.dataset import DatasetError, read_manifest
    from orthoseg.storage import store_from_settings

    if not dataset_version:
        return None
    store = store_from_settings(settings)
    try:
        manifest = read_manifest(store, dataset_version)
    except (DatasetError, OSError) as error:
        logger.warning("No training-data counts for the model card: %s", error)
        return None
    splits = [str(s) for s in manifest["split"]]
    views = [str(v or "unknown") for v in manifest.get("view_position", ["unknown"] * len(manifest))]
    categories: list[tuple[str, str]] = []
    truth_keys = list(manifest["truth_key"]) if "truth_key" in manifest else []
    if 0 < len(truth_keys) <= MAX_CATEGORY_READS:
        for key, split in zip(truth_keys, splits, strict=True):
            category = "unknown"
            if isinstance(key, str) and key:
                try:
                    category = str(json.loads(store.get_bytes(key)).get("category", "unknown"))
                except Exception:  # an unreadable truth file only loses its category
                    category = "unknown"
            categories.append((category, split))
    return TrainingDataSummary(
        dataset_version=dataset_version,
        images=dict(sorted(Counter(splits).items())),
        by_view=_counts(list(zip(views, splits, strict=True))),
        by_category=_counts(categories) if any(c != "unknown" for c, _ in categories) else {},
    )


def _group_lines(title: str, groups: dict[str, dict[str, int]]) -> list[str]:
    if not groups:
        return []
    cells = "; ".join(
        f"{group} {sum(per_split.values())} ("
        + ", ".join(f"{split} {count}" for split, count in per_split.items())
        + ")"
        for group, per_split in groups.items()
    )
    return [f"- {title}: {cells}"]


def render_model_card(
    name: str, version: str | int, tags: Mapping[str, str], decision: PromotionDecision | None = None
) -> str:
    """The model card as Markdown, from the version's registration tags and, after a promotion
    decision, the benchmark figures it was judged on. Dice is a fraction in [0, 1]."""
    lines = [f"## {name} v{version}: model card", "", f"**Intended use.** {INTENDED_USE}", ""]
    lines += [f"**Limits.** {LIMITS}", "", "**Training data.**"]
    data = None
    if tags.get(TRAINING_DATA_TAG):
        try:
            data = TrainingDataSummary.model_validate_json(tags[TRAINING_DATA_TAG])
        except ValidationError:
            data = None
    lines.append(f"- dataset version `{tags.get('dataset_version') or 'unknown'}`")
    if data is not None:
        per_split = ", ".join(f"{split} {count}" for split, count in data.images.items())
        lines.append(f"- images: {sum(data.images.values())} ({per_split})")
        lines += _group_lines("by view", data.by_view)
        lines += _group_lines("by implant category", data.by_category)
    lines += ["", "**Code.**"]
    commit = tags.get("git_commit") or "unknown"
    lines.append(
        f"- orthoseg {tags.get('code_version') or 'unknown'}, commit `{commit}`, "
        f"preprocessing `{tags.get('preprocess_hash') or 'unknown'}`"
        + (f", architecture {tags['architecture']}" if tags.get("architecture") else "")
        + (f", profile {tags['training_profile']}" if tags.get("training_profile") else "")
    )
    lines += ["", "**Metrics** (Dice on the native grid)."]
    own = tags.get("evaluated_dataset_version") or tags.get("dataset_version") or "its dataset"
    per_structure = ", ".join(
        f"{s} {float(tags[f'test_dice_{s}']):.3f}" for s in STRUCTURE_NAMES if f"test_dice_{s}" in tags
    )
    mean = tags.get("test_dice_mean")
    lines.append(
        f"- test split of `{own}`: mean {float(mean):.3f}" + (f" ({per_structure})" if per_structure else "")
        if mean
        else "- not evaluated"
    )
    if decision is not None and decision.candidate is not None and decision.benchmark is not None:
        bench, scores = decision.benchmark, decision.candidate
        figures = ", ".join(f"{s} {v:.3f}" for s, v in scores.dice.items())
        mean_text = "n/a" if scores.dice_mean is None else f"{scores.dice_mean:.3f}"
        lines.append(
            f"- benchmark {bench.name} (`{bench.dataset_version}`/{bench.split}, {bench.images} images, "
            f"the set every version is compared on): mean {mean_text} ({figures})"
        )
        outcome = "forced" if decision.forced else ("promoted" if decision.promoted else "refused")
        lines += ["", f"**Last promotion decision** ({decision.decided_at}, {outcome}): {decision.reason}"]
    return "\n".join(lines) + "\n"
