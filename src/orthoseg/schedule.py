"""Kubeflow Pipelines recurring runs: weekly retraining and nightly inference, kept in sync idempotently.

KFP has no call that updates a recurring run, so syncing is planned first, from plain data, by
:func:`plan_schedules`: for each desired schedule, an existing recurring run of the same name is kept
when its pipeline version, cron, parameters, ``max_concurrency`` and enabled state all match, and
otherwise replaced (the new one is created, then the old one deleted); a missing one is created, and
duplicates of a name are deleted. :func:`sync_schedules` is the thin part that reads the server, plans,
and (unless ``dry_run``) applies the plan.

A pipeline version is named by the content of its compiled package (``orthoseg-training-<sha256[:12]>``),
so the same code never uploads twice and changed code always reaches the schedules.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from rich.table import Table

    from orthoseg.pipeline_config import PipelineConfig
    from orthoseg.settings import ScheduleSettings, Settings

logger = logging.getLogger(__name__)

PIPELINES = ("training", "inference")
RUN_NAMES = {"training": "orthoseg-training", "inference": "orthoseg-inference"}
"""Recurring-run names (the same as ``orthoseg pipeline submit --cron`` uses, so this takes those over)."""


class ScheduleError(ValueError):
    """A schedule cannot be planned or applied; the message says what to change."""


class CronError(ScheduleError):
    """A cron expression is not a six-field Kubeflow Pipelines cron."""


_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("seconds", 0, 59, {}),
    ("minutes", 0, 59, {}),
    ("hours", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: i + 1 for i, name in enumerate(_MONTHS)}),
    ("day of week", 0, 6, {name: i for i, name in enumerate(_DAYS)}),
)


def validate_cron(expression: str) -> str:
    """The expression with single spaces, if it is a six-field KFP cron (seconds first); else CronError.

    KFP's scheduler (robfig/cron) reads a five-field expression as seconds..month, so the usual
    ``0 2 * * *`` would silently run at minute 2 of every hour: it is refused with the fix spelled out.
    """
    fields = expression.split()
    if len(fields) != 6:
        hint = f"; prepend the seconds: '0 {' '.join(fields)}'" if len(fields) == 5 else ""
        raise CronError(
            f"cron {expression!r} has {len(fields)} fields; Kubeflow Pipelines needs 6: "
            f"seconds minutes hours day-of-month month day-of-week (e.g. '0 0 2 * * 0'){hint}"
        )
    for text, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            problem = _cron_item_problem(item.upper(), low, high, names, label)
            if problem:
                raise CronError(
                    f"cron {expression!r}: {label} field {text!r}: {problem} (allowed {low}-{high})"
                )
    return " ".join(fields)


def _cron_item_problem(item: str, low: int, high: int, names: dict[str, int], label: str) -> str | None:
    base, slash, step = item.partition("/")
    if slash and not (step.isdigit() and int(step) >= 1):
        return f"step {step!r} is not a positive number"
    if base in ("*", "?"):
        return "'?' is only allowed in the day fields" if base == "?" and "day" not in label else None
    bounds = base.split("-")
    if len(bounds) > 2:
        return f"{base!r} is not a value or a range"
    values: list[int] = []
    for text in bounds:
        value = int(text) if text.isdigit() else names.get(text)
        if value is None or not low <= value <= high:
            return f"{text!r} is out of range"
        values.append(value)
    if len(values) == 2 and values[0] > values[1]:
        return f"range {base!r} runs backwards"
    return None


class PipelinePackage(BaseModel):
    """A compiled pipeline: its KFP pipeline name and content-addressed version name."""

    model_config = ConfigDict(frozen=True)

    pipeline: Literal["training", "inference"]
    pipeline_name: str
    version_name: str
    path: str = ""


class DesiredSchedule(BaseModel):
    """One recurring run as it should be on the server."""

    model_config = ConfigDict(frozen=True)

    name: str
    pipeline: Literal["training", "inference"]
    pipeline_name: str
    version_name: str
    cron: str
    params: dict[str, Any]
    max_concurrency: Literal[1] = 1

    @field_validator("cron")
    @classmethod
    def _six_field_cron(cls, value: str) -> str:
        return validate_cron(value)


class ExistingSchedule(BaseModel):
    """One recurring run as the server has it (``version_name`` None: not an uploaded pipeline version)."""

    recurring_run_id: str
    name: str
    version_name: str | None = None
    cron: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int | None = None
    enabled: bool = True


class ScheduleAction(BaseModel):
    """What syncing does for one desired schedule, and why."""

    name: str
    pipeline: str
    action: Literal["create", "keep", "replace"]
    reason: str
    cron: str
    version_name: str
    max_concurrency: int
    params: dict[str, Any]
    recurring_run_id: str | None = None
    delete_ids: list[str] = Field(default_factory=list)


class ScheduleReport(BaseModel):
    """The plan (``dry_run``) or what was done, per recurring run."""

    host: str
    experiment: str
    experiment_id: str | None
    dry_run: bool
    actions: list[ScheduleAction]


def desired_schedules(
    schedule: ScheduleSettings, packages: Mapping[str, PipelinePackage]
) -> list[DesiredSchedule]:
    """The two recurring runs the settings ask for (crons validated, max_concurrency 1)."""
    from pipelines.remote import pipeline_arguments

    crons = {"training": schedule.retrain_cron, "inference": schedule.infer_cron}
    sources = {
        "training": (schedule.retrain_source, schedule.retrain_batch),
        "inference": (schedule.infer_source, schedule.infer_batch),
    }
    desired = []
    for pipeline in PIPELINES:
        cron = validate_cron(crons[pipeline])
        source, batch = sources[pipeline]
        profile = schedule.profile if pipeline == "training" else None
        params = pipeline_arguments(
            pipeline, source, batch, schedule.model, schedule.min_dice, profile=profile
        )
        package = packages[pipeline]
        desired.append(
            DesiredSchedule(
                name=RUN_NAMES[pipeline],
                pipeline=package.pipeline,
                pipeline_name=package.pipeline_name,
                version_name=package.version_name,
                cron=cron,
                params=params,
            )
        )
    return desired


def with_overrides(settings: Settings, **overrides: str | None) -> Settings:
    """Settings with command-line schedule options applied (None keeps the configured value)."""
    given = {key: value for key, value in overrides.items() if value is not None}
    for key in ("retrain_cron", "infer_cron"):
        if key in given:
            given[key] = validate_cron(given[key])
    if given.get("experiment") == "":
        raise ScheduleError("the experiment name must not be empty")
    schedule = type(settings.schedule).model_validate({**settings.schedule.model_dump(), **given})
    return settings.model_copy(update={"schedule": schedule})


def _normalized(params: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


def _differences(desired: DesiredSchedule, existing: ExistingSchedule) -> list[str]:
    found = []
    if existing.version_name != desired.version_name:
        was = existing.version_name or "an inline or unknown pipeline"
        found.append(f"pipeline version {was} -> {desired.version_name}")
    existing_cron = " ".join(existing.cron.split()) if existing.cron else None
    if existing_cron != desired.cron:
        found.append(f"cron {existing_cron or 'none (periodic trigger)'!r} -> {desired.cron!r}")
    have, want = _normalized(existing.params), _normalized(desired.params)
    if have != want:
        changed = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
        found.append(f"params changed: {', '.join(changed)}")
    if existing.max_concurrency != desired.max_concurrency:
        found.append(f"max_concurrency {existing.max_concurrency} -> {desired.max_concurrency}")
    if not existing.enabled:
        found.append("disabled -> enabled")
    return found


class _ActionFields(TypedDict):
    """The fields a ``ScheduleAction`` copies from its ``DesiredSchedule``."""

    name: str
    pipeline: str
    cron: str
    version_name: str
    max_concurrency: int
    params: dict[str, Any]


def plan_schedules(
    desired: Sequence[DesiredSchedule], existing: Sequence[ExistingSchedule]
) -> list[ScheduleAction]:
    """Create, keep or replace each desired schedule, given the server's recurring runs (pure).

    Existing runs with other names are left alone. Of several runs with a desired name, the first
    identical one is kept and the rest deleted; with none identical, all are replaced by one new run.
    """
    actions = []
    for want in desired:
        same_name = [run for run in existing if run.name == want.name]
        common: _ActionFields = {
            "name": want.name,
            "pipeline": want.pipeline,
            "cron": want.cron,
            "version_name": want.version_name,
            "max_concurrency": want.max_concurrency,
            "params": want.params,
        }
        if not same_name:
            actions.append(ScheduleAction(action="create", reason="no recurring run of this name", **common))
            continue
        identical = [run for run in same_name if not _differences(want, run)]
        keep = identical[0] if identical else None
        extras = [run.recurring_run_id for run in same_name if run is not keep]
        duplicates = f"; deleting {len(extras)} duplicate(s) of the name" if keep and extras else ""
        if keep is not None:
            reason = "up to date" + duplicates
            actions.append(
                ScheduleAction(
                    action="keep",
                    reason=reason,
                    recurring_run_id=keep.recurring_run_id,
                    delete_ids=extras,
                    **common,
                )
            )
        else:
            reason = "; ".join(_differences(want, same_name[0]))
            if len(same_name) > 1:
                reason += f"; {len(same_name)} runs had this name, all replaced by one"
            actions.append(ScheduleAction(action="replace", reason=reason, delete_ids=extras, **common))
    return actions


def existing_from_recurring_run(run: Any, version_name: str | None) -> ExistingSchedule:
    """Plain data from a ``kfp_server_api`` ``V2beta1RecurringRun`` (whose max_concurrency is a string)."""
    cron_schedule = getattr(run.trigger, "cron_schedule", None) if run.trigger else None
    parameters = run.runtime_config.parameters if run.runtime_config else None
    concurrency = run.max_concurrency
    return ExistingSchedule(
        recurring_run_id=str(run.recurring_run_id),
        name=str(run.display_name or ""),
        version_name=version_name,
        cron=cron_schedule.cron if cron_schedule else None,
        params=dict(parameters or {}),
        max_concurrency=int(concurrency) if concurrency not in (None, "") else None,
        enabled=str(run.mode or "").upper() != "DISABLE",
    )


def compile_packages(folder: Path, config: PipelineConfig | None = None) -> dict[str, PipelinePackage]:
    """Compile both pipelines with the project's compiler, each step sized by ``config`` (default
    ``Settings().pipeline``), and name each version by its content."""
    import yaml

    from pipelines.compile import compile_pipelines

    packages = {}
    for pipeline, path in compile_pipelines(folder, config).items():
        content = Path(path).read_bytes()
        pipeline_name = next(yaml.safe_load_all(content))["pipelineInfo"]["name"]
        version_name = f"{pipeline_name}-{hashlib.sha256(content).hexdigest()[:12]}"
        # The compiler keys its pipelines by plain str; validating checks the name is a known one.
        packages[pipeline] = PipelinePackage.model_validate(
            {"pipeline": pipeline, "pipeline_name": pipeline_name, "version_name": version_name, "path": path}
        )
    return packages


@contextlib.contextmanager
def _talking_to(host: str, step: list[str]) -> Iterator[None]:
    """Turn connection and API failures into one ScheduleError naming the host and the step."""
    import kfp_server_api
    import urllib3

    retries = logging.getLogger("urllib3.connectionpool")
    level = retries.level
    retries.setLevel(logging.ERROR)  # the retry warnings before the error below are noise
    try:
        yield
    except kfp_server_api.ApiException as error:
        raise ScheduleError(
            f"Kubeflow Pipelines at {host} answered {error.status} {error.reason} while {step[0]}"
        ) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise ScheduleError(
            f"cannot reach Kubeflow Pipelines at {host} while {step[0]} ({reason}); check --host (e.g. "
            "http://ml-pipeline.kubeflow.svc:8888, or a `kubectl port-forward`). --dry-run needs it too: "
            "the plan compares with the recurring runs already there"
        ) from error
    finally:
        retries.setLevel(level)


def sync_schedules(settings: Settings, host: str, *, dry_run: bool = False) -> ScheduleReport:
    """Read the experiment's recurring runs at ``host``, plan, and unless ``dry_run`` apply the plan.

    A dry run only reads (experiment, recurring runs, pipeline versions); it never writes.
    """
    schedule = settings.schedule
    step = ["compiling the pipelines"]
    with tempfile.TemporaryDirectory() as folder:
        packages = compile_packages(Path(folder), settings.pipeline)
        desired = desired_schedules(schedule, packages)
        with _talking_to(host, step), contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import kfp

            step[0] = "connecting"
            client = kfp.Client(host=host)
            step[0] = f"looking up experiment {schedule.experiment!r}"
            experiment_id = _experiment_id(client, schedule.experiment)
            step[0] = "listing recurring runs"
            existing = _existing_schedules(client, experiment_id) if experiment_id else []
            actions = plan_schedules(desired, existing)
            if not dry_run:
                experiment_id = _apply(client, schedule.experiment, experiment_id, actions, packages, step)
    return ScheduleReport(
        host=host,
        experiment=schedule.experiment,
        experiment_id=experiment_id,
        dry_run=dry_run,
        actions=actions,
    )


def _experiment_id(client: Any, name: str) -> str | None:
    try:
        return str(client.get_experiment(experiment_name=name).experiment_id)
    except ValueError as error:
        if str(error).startswith("No experiment is found"):
            return None
        raise


def _existing_schedules(client: Any, experiment_id: str) -> list[ExistingSchedule]:
    wanted = set(RUN_NAMES.values())
    runs: list[Any] = []  # kfp_server_api V2beta1RecurringRun
    token = ""
    while True:
        page = client.list_recurring_runs(experiment_id=experiment_id, page_size=100, page_token=token)
        runs.extend(run for run in page.recurring_runs or [] if run.display_name in wanted)
        token = page.next_page_token or ""
        if not token:
            break
    versions: dict[tuple[str, str], str | None] = {}
    existing = []
    for run in runs:
        reference = run.pipeline_version_reference
        key = (reference.pipeline_id, reference.pipeline_version_id) if reference else None
        if key and all(key) and key not in versions:
            versions[key] = str(client.get_pipeline_version(*key).display_name)
        existing.append(existing_from_recurring_run(run, versions.get(key) if key else None))
    return existing


def _pipeline_version_id(client: Any, package: PipelinePackage) -> tuple[str, str]:
    """The (pipeline id, version id) of the package's content-named version, uploading what is missing."""
    pipeline_id = client.get_pipeline_id(package.pipeline_name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(package.path, pipeline_name=package.pipeline_name).pipeline_id
    name_filter = {
        "predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": package.version_name}]
    }
    found = client.list_pipeline_versions(pipeline_id, page_size=1, filter=json.dumps(name_filter))
    if found.pipeline_versions:
        return str(pipeline_id), str(found.pipeline_versions[0].pipeline_version_id)
    version = client.upload_pipeline_version(package.path, package.version_name, pipeline_id=pipeline_id)
    return str(pipeline_id), str(version.pipeline_version_id)


def _apply(
    client: Any,
    experiment: str,
    experiment_id: str | None,
    actions: list[ScheduleAction],
    packages: Mapping[str, PipelinePackage],
    step: list[str],
) -> str:
    """Create before deleting, so a failure never leaves a pipeline unscheduled; reruns finish the job."""
    from pipelines.remote import SERVICE_ACCOUNT

    if experiment_id is None:
        step[0] = f"creating experiment {experiment!r}"
        experiment_id = str(client.create_experiment(experiment).experiment_id)
    for action in actions:
        if action.action != "keep":
            step[0] = f"uploading the {action.pipeline} pipeline"
            pipeline_id, version_id = _pipeline_version_id(client, packages[action.pipeline])
            step[0] = f"creating recurring run {action.name!r}"
            run = client.create_recurring_run(
                experiment_id=experiment_id,
                job_name=action.name,
                description=f"orthoseg schedule: {action.pipeline} pipeline",
                cron_expression=action.cron,
                max_concurrency=action.max_concurrency,
                no_catchup=True,
                params=action.params,
                pipeline_id=pipeline_id,
                version_id=version_id,
                service_account=SERVICE_ACCOUNT,
            )
            action.recurring_run_id = str(run.recurring_run_id)
            logger.info("Created recurring run %s (%s)", action.name, action.recurring_run_id)
        for stale in action.delete_ids:
            step[0] = f"deleting recurring run {stale}"
            client.delete_recurring_run(stale)
            logger.info("Deleted recurring run %s (%s)", action.name, stale)
    return experiment_id


def render_schedule_table(report: ScheduleReport) -> Table:
    """One row per recurring run: what was (or, in a dry run, would be) done and why."""
    from rich.table import Table

    verb = "plan (dry run, nothing changed)" if report.dry_run else "applied"
    table = Table(title=f"recurring runs at {report.host}, experiment {report.experiment!r}: {verb}")
    for column in ("name", "action", "cron", "pipeline version", "recurring run", "reason"):
        table.add_column(column, overflow="fold")
    for action in report.actions:
        table.add_row(
            action.name,
            action.action,
            action.cron,
            action.version_name,
            action.recurring_run_id or "-",
            action.reason,
        )
    return table
