"""The Great Expectations suite over the validation table: the one place where accept/quarantine is decided.

Every check is one GX expectation on one column of the reader's table. Critical expectations quarantine
the files they flag; warning expectations are recorded with the accepted file; info expectations are only
reported. Null means "not determined" (the file was not read that far) and is skipped by every expectation,
so an unreadable file is refused for being unreadable, not for twenty missing attributes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from orthoseg.json_values import json_scalar
from orthoseg.validation_config import ValidationConfig

logger = logging.getLogger(__name__)

Severity = Literal["critical", "warning", "info"]
UID_PATTERN = r"^[0-9]+(?:\.[0-9]+)*$"
PSEUDONYM_PATTERN = r"^[0-9a-f]{16}$"


@dataclass(frozen=True)
class Check:
    """One expectation with the words a person reads when it fails.

    Attributes:
        kind: short machine name of the reason (``reasons_by_kind`` key).
        expectation: GX expectation class name in ``great_expectations.expectations``.
        column: the table column it checks.
        kwargs: the expectation's other arguments (value_set, min_value, regex, ...).
        message: what is expected, in words ("modality must be DX or CR").
        severity: critical (quarantine), warning (accept, record) or info (report only).
        detail_column: a column whose value explains a failure (an error message, a name).
        facts_columns: columns whose values go, by column name, into the finding's ``facts`` (the values
            a program needs to act on the reason: the spacing declared and the range applied, ...).
    """

    kind: str
    expectation: str
    column: str
    kwargs: dict[str, Any]
    message: str
    severity: Severity = "critical"
    detail_column: str | None = None
    facts_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class Finding:
    """One failed expectation for one file (what goes into ``<file>.reasons.json``)."""

    kind: str
    severity: Severity
    expectation: str
    column: str
    observed: Any
    expected: Any
    message: str
    detail: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        document = {
            "kind": self.kind,
            "severity": self.severity,
            "expectation": self.expectation,
            "column": self.column,
            "observed": self.observed,
            "expected": self.expected,
            "message": self.message,
            "detail": self.detail,
        }
        if self.facts:
            document["facts"] = dict(self.facts)
        return document


@dataclass
class SuiteOutcome:
    """The suite's verdicts.

    Attributes:
        findings: failed expectations by file key (all severities).
        expectations: one summary per expectation (kind, success, counts, expected) for reports.
        result: the GX validation result as JSON (saved next to the report).
        gx_version: Great Expectations version that decided.
        suite_name: the suite's name.
    """

    findings: dict[str, list[Finding]] = field(default_factory=dict)
    expectations: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    gx_version: str = ""
    suite_name: str = ""

    def refused(self, key: str) -> list[Finding]:
        """Critical findings of ``key`` (non-empty means quarantine)."""
        return [f for f in self.findings.get(key, []) if f.severity == "critical"]

    def warnings(self, key: str) -> list[Finding]:
        """Warning findings of ``key``."""
        return [f for f in self.findings.get(key, []) if f.severity == "warning"]


def _in_set(kind: str, column: str, values: list[Any], message: str, **extra: Any) -> Check:
    return Check(kind, "ExpectColumnValuesToBeInSet", column, {"value_set": values}, message, **extra)


def _between(
    kind: str, column: str, low: float | None, high: float | None, message: str, **extra: Any
) -> Check:
    return Check(
        kind, "ExpectColumnValuesToBeBetween", column, {"min_value": low, "max_value": high}, message, **extra
    )


def build_checks(
    purpose: str, config: ValidationConfig, transfer_syntaxes: tuple[str, ...], header_only: bool = False
) -> list[Check]:
    """The checks for a purpose.

    Training refuses PHI, non-knee body parts, missing pixel spacing, missing patient IDs and missing or
    bad labels. Inference accepts PHI (it never leaves the file: no value reaches a row, log or report),
    records a warning for non-knee body parts and missing spacing, and needs no labels (labels that are
    given must still be valid, since they are copied with the image).
    """
    training = purpose == "training"
    strict: Severity = "critical" if training else "warning"
    ranges = ", ".join(
        f"{m} {lo:g}-{hi:g} mm" for m, (lo, hi) in sorted(config.pixel_spacing_ranges_mm.items())
    )
    low_mm, high_mm = config.pixel_spacing_range_mm
    checks = [
        _in_set(
            "decode_timeout",
            "timed_out",
            [False],
            f"each file must be read and decoded within {config.file_time_limit_s:g} s (a reader past it is "
            "stopped and replaced)",
            detail_column="read_error",
            facts_columns=("time_limit_s",),
        ),
        _in_set(
            "orphan",
            "item_kind",
            ["image", "not_radiograph"],
            "a label or truth file must belong to an image of the batch",
            detail_column="orphan_detail",
        ),
        _in_set(
            "not_radiograph",
            "item_kind",
            ["image", "orphan_label", "orphan_truth"],
            "only radiographs (DICOM), labels/ and truth/ belong in a batch",
            detail_column="orphan_detail",
        ),
        _in_set("link", "is_link", [False], "symbolic links are not followed"),
        _between("empty_file", "size_bytes", 1, None, "the file must not be empty"),
        _between(
            "file_too_large",
            "size_bytes",
            None,
            config.max_file_bytes,
            f"files over {config.max_file_bytes} bytes are refused unread",
        ),
        _in_set(
            "unreadable",
            "readable",
            [True],
            "the file must be a readable DICOM Part 10 file",
            detail_column="read_error",
        ),
        _in_set(
            "sop_class",
            "sop_class_uid",
            list(config.sop_classes),
            "the object must be a CR image or a DX image for presentation",
            detail_column="sop_class_name",
        ),
        _in_set(
            "modality",
            "modality",
            list(config.modalities),
            f"modality must be {' or '.join(config.modalities)}",
        ),
        _in_set("multi_frame", "number_of_frames", [1], "a radiograph has exactly one frame"),
        _in_set("colour", "samples_per_pixel", [1], "a radiograph is greyscale (SamplesPerPixel 1)"),
        _in_set(
            "photometric",
            "photometric_interpretation",
            ["MONOCHROME1", "MONOCHROME2"],
            "photometric interpretation must be MONOCHROME1 or MONOCHROME2",
        ),
        _between("too_small", "rows", config.min_side_px, None, f"at least {config.min_side_px} rows"),
        _between("too_small", "columns", config.min_side_px, None, f"at least {config.min_side_px} columns"),
        _between(
            "too_many_pixels",
            "pixel_count",
            None,
            config.max_pixels,
            f"declared image size must not exceed {config.max_pixels} pixels",
        ),
        _in_set("bits", "bits_allocated", [8, 16], "BitsAllocated must be 8 or 16"),
        _between("bits", "bits_stored", 8, 16, "BitsStored must be 8 to 16"),
        _in_set(
            "transfer_syntax",
            "transfer_syntax",
            list(transfer_syntaxes),
            "the transfer syntax must be one this installation decodes",
            detail_column="transfer_syntax_name",
        ),
        Check(
            "sop_instance_uid",
            "ExpectColumnValuesToMatchRegex",
            "sop_instance_uid",
            {"regex": UID_PATTERN},
            "SOPInstanceUID must be a valid UID (digits and dots)",
        ),
        Check(
            "sop_instance_uid",
            "ExpectColumnValueLengthsToBeBetween",
            "sop_instance_uid",
            {"min_value": 1, "max_value": 64},
            "SOPInstanceUID must be 1 to 64 characters",
        ),
        _in_set(
            "duplicate",
            "duplicate_of",
            [""],
            "each SOPInstanceUID once per batch: the best readable copy is kept, other copies are refused",
            detail_column="duplicate_detail",
            facts_columns=("sop_instance_uid", "duplicate_of"),
        ),
        _in_set(
            "dataset_conflict",
            "dataset_conflict",
            [False],
            "an image already in the dataset must come back byte-identical",
        ),
        _in_set(
            "phi",
            "phi_fields",
            [""],
            "training data must carry no PHI (identifiers only as declared pseudonyms)",
            severity="critical" if training else "info",
        ),
        _in_set(
            "body_part",
            "body_part",
            [*config.knee_body_parts, *config.leg_body_parts],
            f"body part must be {' or '.join((*config.knee_body_parts, *config.leg_body_parts))} (a knee "
            "model on another part is not meaningful)",
            severity=strict,
        ),
        _in_set(
            "pixel_spacing",
            "has_pixel_spacing",
            [True],
            "PixelSpacing or ImagerPixelSpacing is needed for millimetre measurements",
            severity=strict,
            detail_column="pixel_spacing_source",
        ),
        # Critical for inference too: a wrong spacing rescales the film wrongly and every mm is off.
        _in_set(
            "pixel_spacing_implausible",
            "pixel_spacing_plausible",
            [True],
            f"pixel spacing must be plausible for the modality ({ranges}; other modalities {low_mm:g}-"
            f"{high_mm:g} mm)",
            detail_column="pixel_spacing_detail",
            facts_columns=(
                "modality",
                "pixel_spacing_source",
                "pixel_spacing_row_mm",
                "pixel_spacing_col_mm",
                "pixel_spacing_min_mm",
                "pixel_spacing_max_mm",
            ),
        ),
        _in_set(
            "view_position",
            "view_position",
            list(config.view_positions),
            "ViewPosition should be a known view",
            severity="warning",
        ),
        _in_set(
            "laterality",
            "laterality",
            list(config.lateralities),
            "laterality should be L, R or B",
            severity="warning",
        ),
    ]
    if training:
        checks.append(
            Check(
                "patient_id",
                "ExpectColumnValuesToMatchRegex",
                "patient_pseudonym",
                {"regex": PSEUDONYM_PATTERN},
                "a PatientID is needed to split by patient",
            )
        )
        checks.append(_in_set("label_missing", "label_present", [True], "training images need label masks"))
    if not header_only:
        checks += [
            _in_set(
                "pixels_undecodable",
                "pixel_decoded",
                [True],
                "the pixel data must decode",
                detail_column="pixel_error",
            ),
            _between(
                "blank",
                "pixel_range_fraction",
                config.min_range_fraction,
                None,
                f"the image must not be blank (1-99th percentile range >= {config.min_range_fraction} "
                "of full scale)",
            ),
            _between(
                "saturated",
                "saturated_fraction",
                None,
                config.max_saturated_fraction,
                f"at most {config.max_saturated_fraction:.0%} of pixels pinned at one end of the range",
            ),
            _in_set(
                "label_unreadable",
                "label_readable",
                [True],
                "the label must be readable",
                detail_column="label_error",
            ),
            _in_set(
                "label_shape",
                "label_shape_matches",
                [True],
                "label masks must have the image's size",
                detail_column="label_shape",
            ),
            _in_set("label_not_binary", "label_binary", [True], "label masks must be binary"),
            _in_set(
                "label_unknown_structure",
                "label_unknown_structures",
                [""],
                "label masks must name known structures only",
                detail_column="label_unknown_structures",
            ),
            _in_set("label_reference", "label_references_image", [True], "the SEG must reference this image"),
            _femur_check(config, strict),
            _in_set(
                "label_no_tibia", "label_has_tibia", [True], "the tibia must be labelled", severity=strict
            ),
            _in_set(
                "truth_invalid",
                "truth_valid",
                [True],
                "ground truth must be a JSON object for this image",
                detail_column="truth_error",
            ),
        ]
    return checks


def _femur_check(config: ValidationConfig, severity: Severity) -> Check:
    """The femur must be labelled, except on a lower-leg film (which may show the tibia and fibula only)."""
    kwargs: dict[str, Any] = {"value_set": [True]}
    message = "the femur must be labelled"
    if config.leg_body_parts:
        kwargs |= {
            "row_condition": f"body_part not in {list(config.leg_body_parts)!r}",
            "condition_parser": "pandas",
        }
        message += f" (only a lower-leg film, body part {' or '.join(config.leg_body_parts)}, may show none)"
    return Check(
        "label_no_femur", "ExpectColumnValuesToBeInSet", "label_has_femur", kwargs, message, severity
    )


def _expected(check: Check) -> Any:
    if "value_set" in check.kwargs:
        return list(check.kwargs["value_set"])
    if "regex" in check.kwargs:
        return f"matches {check.kwargs['regex']}"
    return {k: v for k, v in check.kwargs.items() if v is not None}


def _raised(exception_info: Any) -> str:
    """The message of an exception GX caught while evaluating, or ''."""
    if not isinstance(exception_info, dict):
        return ""
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message"))
    for value in exception_info.values():
        if isinstance(value, dict) and value.get("raised_exception"):
            return str(value.get("exception_message"))
    return ""


def run_suite(
    table: pd.DataFrame,
    checks: list[Check],
    suite_name: str,
    run_name: str,
    docs_dir: Path | None = None,
    keep_result: bool = True,
) -> SuiteOutcome:
    """Validate the table with Great Expectations (ephemeral context) and turn failures into findings.

    Args:
        table: one row per item, ``COLUMNS`` of ``orthoseg.validation.reader``.
        checks: from ``build_checks``.
        suite_name: GX suite name (shown in Data Docs).
        run_name: GX run name (the batch).
        docs_dir: when given, GX Data Docs are built into this local folder (through a checkpoint).
        keep_result: keep the GX result JSON in the outcome (serialising it costs time on big tables).

    Raises:
        RuntimeError: when an expectation could not be evaluated; the decision point never guesses.
    """
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    if docs_dir is not None:
        context.add_data_docs_site(
            site_name="validation",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(docs_dir),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
    asset = context.data_sources.add_pandas("validation_table").add_dataframe_asset("files")
    batch_definition = asset.add_batch_definition_whole_dataframe("whole_batch")
    expectations = [
        getattr(gxe, check.expectation)(
            column=check.column,
            severity=check.severity,
            meta={"check": index, "kind": check.kind, "message": check.message},
            **check.kwargs,
        )
        for index, check in enumerate(checks)
    ]
    # One suite built whole (adding expectations one by one re-serialises the suite each time).
    suite = context.suites.add(gx.ExpectationSuite(name=suite_name, expectations=expectations))
    result_format = {"result_format": "COMPLETE", "unexpected_index_column_names": ["file_key"]}
    if docs_dir is None:
        # Nothing to render: validate the batch directly (no checkpoint, no result store).
        validation_result = batch_definition.get_batch(batch_parameters={"dataframe": table}).validate(
            suite, result_format=result_format
        )
    else:
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}-definition", data=batch_definition, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"{suite_name}-checkpoint",
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["validation"])],
                result_format=result_format,
            )
        )
        checkpoint_result = checkpoint.run(
            batch_parameters={"dataframe": table}, run_id=RunIdentifier(run_name=run_name)
        )
        (validation_result,) = checkpoint_result.run_results.values()
    outcome = SuiteOutcome(
        result=validation_result.to_json_dict() if keep_result else {},
        gx_version=gx.__version__,
        suite_name=suite_name,
    )
    details = table.set_index("file_key")
    for result in validation_result.results:
        configuration = result.expectation_config
        if configuration is None:
            raise RuntimeError("Great Expectations returned a result without its expectation")
        check = checks[int(configuration.meta["check"])]
        problem = _raised(result.exception_info)
        if problem:
            raise RuntimeError(
                f"expectation {check.expectation} on {check.column!r} could not be evaluated: {problem}"
            )
        flagged = result.result.get("unexpected_index_list") or []
        outcome.expectations.append(
            {
                "kind": check.kind,
                "expectation": configuration.type,
                "column": check.column,
                "severity": check.severity,
                "message": check.message,
                "expected": _expected(check),
                "success": bool(result.success),
                "element_count": json_scalar(result.result.get("element_count", 0), whole_float_as_int=True),
                "unexpected_count": json_scalar(
                    result.result.get("unexpected_count", 0), whole_float_as_int=True
                ),
            }
        )
        for entry in flagged:
            key = str(entry["file_key"])
            detail = ""
            if check.detail_column is not None:
                detail = (
                    json_scalar(details.at[key, check.detail_column], whole_float_as_int=True)
                    if key in details.index
                    else ""
                )
            facts = {}
            if key in details.index:
                facts = {
                    column: json_scalar(details.at[key, column], whole_float_as_int=True)
                    for column in check.facts_columns
                }
            outcome.findings.setdefault(key, []).append(
                Finding(
                    kind=check.kind,
                    severity=check.severity,
                    expectation=configuration.type,
                    column=check.column,
                    observed=json_scalar(entry.get(check.column), whole_float_as_int=True),
                    expected=_expected(check),
                    message=check.message,
                    detail="" if detail is None else str(detail),
                    facts=facts,
                )
            )
    order = {check.kind: index for index, check in enumerate(checks)}
    for findings in outcome.findings.values():
        findings.sort(key=lambda f: (order.get(f.kind, 0), f.column))
    return outcome
