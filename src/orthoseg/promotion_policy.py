"""The promotion policy: which frozen benchmark set models are judged on, and what a new champion must show.

The policy is a YAML file (``mlflow/promotion.yaml`` by default, ``Settings.promotion.policy_path``),
validated here so that a typo is an error naming the field, not a silently permissive gate. Its sha256 is
recorded with every decision, so an audit can tell which rules a decision was taken under.
``benchmark_rows`` reads the images a benchmark set names, and ``benchmark_fingerprint`` proves later
that they did not change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if TYPE_CHECKING:
    import pandas as pd

    from orthoseg.settings import Settings

POLICY_FORMAT_VERSION: Final = 1
# The source checkout (``src/orthoseg/`` two levels up): where ``mlflow/promotion.yaml`` ships.
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


class PolicyError(ValueError):
    """A promotion policy that is missing, unreadable or invalid; the message names the file and field."""


class BenchmarkSet(BaseModel):
    """The frozen set of annotated radiographs every candidate and the champion are scored on.

    Dataset versions are immutable, so a version and a split name a fixed set of images. The set is
    either a whole split of one version, or an explicit list of SOPInstanceUIDs taken from that split.

    Attributes:
        name: a label people use for the set (appears in decisions and model cards).
        dataset_version: the dataset version holding the images. None freezes the set on the first
            promotion: the test split of that candidate's dataset version, recorded in the registry
            (registered-model tag ``orthoseg.benchmark``) and used for every later decision. A clinic
            should pin it explicitly once its first annotated test split exists.
        split: the split the images come from (``test``: never seen by any model in training, since
            splits derive from the patient pseudonym alone).
        sop_instance_uids: only these images of the split; None for the whole split.
        sha256: optional fingerprint of the set (``orthoseg.promotion.benchmark_fingerprint``); when
            given, a set whose images or labels changed is refused.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="benchmark", min_length=1, max_length=100)
    dataset_version: str | None = Field(default=None, min_length=1)
    split: Literal["train", "val", "test"] = "test"
    sop_instance_uids: tuple[str, ...] | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")

    @field_validator("sop_instance_uids")
    @classmethod
    def _uids_are_a_nonempty_set(cls, uids: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if uids is None:
            return None
        if not uids:
            raise ValueError("an explicit list must name at least one SOPInstanceUID (or leave it out)")
        if len(set(uids)) != len(uids):
            raise ValueError("lists a SOPInstanceUID more than once")
        return tuple(sorted(uids))

    @model_validator(mode="after")
    def _uids_need_a_version(self) -> BenchmarkSet:
        if self.sop_instance_uids is not None and self.dataset_version is None:
            raise ValueError("sop_instance_uids needs the dataset_version whose manifest holds them")
        return self


class MeasurementErrorRule(BaseModel):
    """No worse measurement error than the champion (angles in degrees, lengths in millimetres).

    Inert for now: the benchmark set has no measurement ground truth on real films yet, so the gate
    records this rule as "not evaluated" and does not refuse on it. The fields are fixed now so that
    policies written today stay valid when it is switched on.

    Attributes:
        enabled: whether the rule should apply once measurement truth exists.
        max_angle_error_increase_deg: allowed increase of the mean absolute angle error, degrees.
        max_length_error_increase_mm: allowed increase of the mean absolute length error
            (joint space, radiolucent-line width), millimetres.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    max_angle_error_increase_deg: float = Field(default=0.0, ge=0.0, le=45.0)
    max_length_error_increase_mm: float = Field(default=0.0, ge=0.0, le=50.0)


class PromotionPolicy(BaseModel):
    """What a candidate must show on the benchmark set to replace the champion.

    Attributes:
        format_version: version of this file's layout (1).
        benchmark: the frozen benchmark set.
        min_dice_mean: quality floor: the candidate's benchmark Dice mean (mean over the structures
            present in the set) must reach it, champion or not.
        min_mean_improvement: the candidate's benchmark Dice mean must exceed the champion's by at least
            this much (and always by more than zero: a tie stays with the champion).
        max_structure_regression: per-structure non-regression margin: no structure's benchmark Dice
            may fall more than this below the champion's.
        measurement_error: optional "no worse measurement error" rule (inert for now).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = POLICY_FORMAT_VERSION
    benchmark: BenchmarkSet
    min_dice_mean: float = Field(ge=0.0, le=1.0)
    min_mean_improvement: float = Field(default=0.0, ge=0.0, le=1.0)
    max_structure_regression: float = Field(default=0.02, ge=0.0, le=1.0)
    measurement_error: MeasurementErrorRule | None = None


class LoadedPolicy(BaseModel):
    """A validated policy with where it came from and the sha256 of its bytes (for the audit trail)."""

    policy: PromotionPolicy
    path: str
    sha256: str


def resolve_policy_path(path: str | Path) -> Path:
    """The policy file a path means: as given (absolute, or relative to the working directory), else
    relative to the orthoseg source checkout.

    Raises:
        PolicyError: when neither exists.
    """
    given = Path(path).expanduser()
    candidates = [given] if given.is_absolute() else [given, CHECKOUT_ROOT / given]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    tried = ", ".join(str(c) for c in candidates)
    raise PolicyError(
        f"promotion policy not found (tried {tried}); set ORTHOSEG_PROMOTION__POLICY_PATH to the YAML file"
    )


def parse_policy(text: str, source: str = "<policy>") -> PromotionPolicy:
    """Validate a policy's YAML text.

    Raises:
        PolicyError: naming ``source`` and each invalid field (dotted path) with the reason.
    """
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"promotion policy {source} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"promotion policy {source} must be a YAML mapping, not {type(data).__name__}")
    try:
        return PromotionPolicy.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '(top level)'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise PolicyError(f"promotion policy {source} is invalid: {problems}") from None


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and validate a policy file; the sha256 is of its exact bytes.

    Raises:
        PolicyError: when the file is missing or invalid.
    """
    resolved = resolve_policy_path(path)
    raw = resolved.read_bytes()
    policy = parse_policy(raw.decode("utf-8", errors="replace"), str(resolved))
    return LoadedPolicy(policy=policy, path=str(resolved), sha256=hashlib.sha256(raw).hexdigest())


def policy_from_settings(settings: Settings) -> LoadedPolicy:
    """The policy ``settings.promotion.policy_path`` names."""
    return load_policy(settings.promotion.policy_path)


def benchmark_rows(settings: Settings, benchmark: BenchmarkSet) -> pd.DataFrame:
    """The manifest rows of the benchmark set, sorted by SOPInstanceUID.

    Raises:
        orthoseg.dataset.DatasetError: when the version, split or a listed image is missing, or a row
            has no labels.
    """
    from orthoseg.dataset import DatasetError, labelled_split_rows, read_manifest, rows_of_uids
    from orthoseg.storage import store_from_settings

    version = str(benchmark.dataset_version)
    rows = labelled_split_rows(
        read_manifest(store_from_settings(settings), version), benchmark.split, version
    )
    if benchmark.sop_instance_uids is not None:
        where = f"split {benchmark.split!r} of dataset {version!r} (benchmark {benchmark.name!r})"
        rows = rows_of_uids(rows, benchmark.sop_instance_uids, where)
    if len(rows) == 0:
        raise DatasetError(f"benchmark {benchmark.name!r}: split {benchmark.split!r} of {version!r} is empty")
    return rows


def benchmark_fingerprint(rows: pd.DataFrame) -> str:
    """sha256 over the set's SOPInstanceUIDs with their image and label digests: changes when an image
    or its labels change, or when one is added or removed."""
    label_digests = rows["label_sha256"] if "label_sha256" in rows else [""] * len(rows)
    lines = sorted(
        f"{uid}\t{image}\t{label or ''}"
        for uid, image, label in zip(rows["sop_instance_uid"], rows["sha256"], label_digests, strict=True)
    )
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()
