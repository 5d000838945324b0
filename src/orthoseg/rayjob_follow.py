"""Submit a RayJob through the Kubernetes API, follow it to its end, clean up (``orthoseg rayjob submit``).

Written against the documented shapes of KubeRay's ``ray.io/v1`` RayJob (``status.jobDeploymentStatus``,
``status.jobStatus``, ``status.reason``, ``status.message``, ``status.dashboardURL``) and the Kubernetes
Python client's ``CustomObjectsApi`` and ``CoreV1Api``; the tests run it against a fake of those API
methods, never against a real cluster. The identity that runs it needs, in the job's namespace:
``rayjobs`` create, get and delete (group ``ray.io``), ``pods`` list and ``pods/log`` get
(``infra/base/rbac.yaml`` grants them to ``orthoseg-pipeline``).

The driver's output reaches this process through the submitter pod, which runs ``ray job submit`` and
then ``ray job logs --follow``: its log is the command's log. A command run with ``--json`` ends that log
with one JSON object, which becomes ``RayJobOutcome.result``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from pydantic import BaseModel

from orthoseg.rayjob import RAYJOB_GROUP, RAYJOB_PLURAL, RAYJOB_VERSION, SUBMITTER_CONTAINER
from orthoseg.rayjob_config import RayJobConfig

logger = logging.getLogger(__name__)

# KubeRay's JobDeploymentStatus values after which nothing more happens to the job.
TERMINAL_DEPLOYMENT_STATUSES = frozenset({"Complete", "Failed", "ValidationFailed"})
# API errors worth another read (throttling, an API server restarting); anything else is raised.
_TRANSIENT_API_STATUSES = frozenset({429, 500, 502, 503, 504})
# Seconds the log follower may take to pass on the submitter's last lines after the job ended.
_LOG_DRAIN_S = 30.0


class RayJobFailed(RuntimeError):
    """A RayJob that ended without success (or vanished), with KubeRay's reason and message."""

    def __init__(self, namespace: str, name: str, status: dict[str, Any], what: str = "failed") -> None:
        self.name = name
        self.namespace = namespace
        self.status = status
        deployment, job = status.get("jobDeploymentStatus") or "-", status.get("jobStatus") or "-"
        super().__init__(
            f"RayJob {namespace}/{name} {what}: deployment status {deployment}, job status {job}, "
            f"reason {status.get('reason') or '-'}: {status.get('message') or 'no message'}"
        )


class RayJobOutcome(BaseModel):
    """How a followed RayJob ended.

    Attributes:
        name: the RayJob's name.
        namespace: its namespace.
        job_id: the Ray job's submission id.
        ray_cluster: the RayCluster it ran on.
        dashboard_url: the Ray dashboard's address inside the cluster (``kubectl port-forward`` to it).
        deployment_status: KubeRay's ``jobDeploymentStatus`` at the end.
        job_status: Ray's job status at the end.
        seconds: from submission to the end, as this process saw it.
        deleted: whether this process deleted the RayJob afterwards (``RayJobConfig.delete_finished``).
        attached: True when a RayJob of that name already existed and was followed instead of created.
        result: the command's ``--json`` output, when its log reached this process.
    """

    name: str
    namespace: str
    job_id: str | None = None
    ray_cluster: str | None = None
    dashboard_url: str | None = None
    deployment_status: str
    job_status: str
    seconds: float
    deleted: bool
    attached: bool
    result: dict[str, Any] | None = None


def _api_status(error: BaseException) -> int | None:
    """The HTTP status of a Kubernetes client ``ApiException`` (None for any other error)."""
    from kubernetes.client.exceptions import ApiException

    return error.status if isinstance(error, ApiException) else None


def _json_object(line: str) -> dict[str, Any] | None:
    """The JSON object a line holds (what ``--json`` prints), else None."""
    text = line.strip()
    if text.startswith("{") and text.endswith("}"):
        with contextlib.suppress(ValueError):
            value = json.loads(text)
            if isinstance(value, dict):
                return value
    return None


def _response_lines(response: Any) -> Iterator[str]:
    """Lines of a streamed (``_preload_content=False``) Kubernetes API response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=False):
        pending += chunk.encode() if isinstance(chunk, str) else chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


class _SubmitterLogs:
    """Passes the log of every submitter pod of one RayJob to ``sink`` while the job runs (a thread)."""

    def __init__(
        self, core_api: Any, namespace: str, name: str, sink: Callable[[str], None], poll_s: float
    ) -> None:
        self._core_api, self._namespace, self._sink, self._poll_s = core_api, namespace, sink, poll_s
        # KubeRay names the submitter Job after the RayJob; Kubernetes labels the Job's pods with its name.
        self._selector = f"batch.kubernetes.io/job-name={name}"
        self._stop = threading.Event()
        self._streaming: Any = None
        self._followed: set[str] = set()
        self.result: dict[str, Any] | None = None  # the last JSON object in the log
        self._thread = threading.Thread(target=self._run, name=f"rayjob-logs-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Let the current pod's log run out (up to ``_LOG_DRAIN_S``), look once more for pods, end."""
        self._stop.set()
        self._thread.join(_LOG_DRAIN_S)
        if self._thread.is_alive() and self._streaming is not None:
            with contextlib.suppress(Exception):
                self._streaming.close()
            self._thread.join(5.0)

    def _run(self) -> None:
        warned = False
        while True:
            stopping = self._stop.is_set()
            try:
                self._follow_new_pods()
            except Exception as error:  # a log is a convenience: never fail the job's follower for it
                level = logging.DEBUG if warned else logging.WARNING
                logger.log(
                    level, "The driver's log cannot be streamed (%s); the job is followed all the same", error
                )
                warned = True
            if stopping:
                return
            self._stop.wait(self._poll_s)

    def _follow_new_pods(self) -> None:
        pods = self._core_api.list_namespaced_pod(self._namespace, label_selector=self._selector).items
        for pod in sorted(pods, key=lambda p: str(p.metadata.creation_timestamp)):
            name = pod.metadata.name
            if name in self._followed or pod.status.phase not in {"Running", "Succeeded", "Failed"}:
                continue
            self._followed.add(name)
            self._streaming = self._core_api.read_namespaced_pod_log(
                name, self._namespace, container=SUBMITTER_CONTAINER, follow=True, _preload_content=False
            )
            try:
                for line in _response_lines(self._streaming):
                    self.result = _json_object(line) or self.result
                    self._sink(line)
            finally:
                with contextlib.suppress(Exception):
                    self._streaming.release_conn()
                self._streaming = None


def _read_status(custom_api: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The RayJob's ``status`` (empty before KubeRay first reports), or None after a transient API error."""
    try:
        job = custom_api.get_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, name
        )
    except Exception as error:
        status = _api_status(error)
        if status == 404:
            raise RayJobFailed(
                namespace, name, {}, "no longer exists (deleted before its end was seen)"
            ) from error
        if status in _TRANSIENT_API_STATUSES:
            logger.warning("Reading RayJob %s/%s failed (HTTP %s); trying again", namespace, name, status)
            return None
        raise
    return dict(job.get("status") or {})


def wait_for_rayjob(
    custom_api: Any,
    namespace: str,
    name: str,
    timeout_s: float,
    poll_interval_s: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Read the RayJob's status every ``poll_interval_s`` seconds until KubeRay reports its end; returns
    that status. Raises ``TimeoutError`` naming the job after ``timeout_s`` seconds without an end."""
    deadline = clock() + timeout_s
    seen: tuple[str, str] | None = None
    dashboard = None
    status: dict[str, Any] = {}
    while True:
        read = _read_status(custom_api, namespace, name)
        if read is not None:
            status = read
            now_seen = (str(status.get("jobDeploymentStatus") or "-"), str(status.get("jobStatus") or "-"))
            if now_seen != seen:
                logger.info("RayJob %s/%s: deployment %s, job %s", namespace, name, *now_seen)
                seen = now_seen
            if status.get("dashboardURL") and status["dashboardURL"] != dashboard:
                dashboard = status["dashboardURL"]
                logger.info("Ray dashboard of %s (inside the cluster): http://%s", name, dashboard)
            if status.get("jobDeploymentStatus") in TERMINAL_DEPLOYMENT_STATUSES:
                return status
        if clock() >= deadline:
            raise TimeoutError(
                f"RayJob {namespace}/{name} did not end within {timeout_s:.0f} s (deployment status "
                f"{status.get('jobDeploymentStatus') or '-'}, job status {status.get('jobStatus') or '-'})"
            )
        sleep(max(0.0, min(poll_interval_s, deadline - clock())))


def _succeeded(status: dict[str, Any]) -> bool:
    return status.get("jobDeploymentStatus") == "Complete" and status.get("jobStatus") == "SUCCEEDED"


def _delete(custom_api: Any, namespace: str, name: str) -> bool:
    """Delete the RayJob (KubeRay stops its Ray job; its cluster and submitter go with it)."""
    try:
        custom_api.delete_namespaced_custom_object(
            RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, name, propagation_policy="Background"
        )
    except Exception as error:
        if _api_status(error) == 404:
            return True
        logger.warning("Could not delete RayJob %s/%s: %s", namespace, name, error)
        return False
    logger.info("Deleted RayJob %s/%s", namespace, name)
    return True


def _create(
    custom_api: Any,
    manifest: dict[str, Any],
    config: RayJobConfig,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> bool:
    """Create the RayJob; returns True when one of that name was running or had succeeded already (it is
    followed instead: a retried pipeline step finds the job of its first attempt). One that ended without
    success is deleted and created again, so that a retry is a new attempt."""
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    deadline = clock() + config.status_grace_s
    replacing = False
    while True:
        try:
            custom_api.create_namespaced_custom_object(
                RAYJOB_GROUP, RAYJOB_VERSION, namespace, RAYJOB_PLURAL, manifest
            )
        except Exception as error:
            if _api_status(error) != 409:
                raise
        else:
            logger.info("Created RayJob %s/%s: %s", namespace, name, manifest["spec"]["entrypoint"])
            return False
        if not replacing:
            with contextlib.suppress(RayJobFailed):  # gone since it refused the name: created next round
                status = _read_status(custom_api, namespace, name)
                ended = (
                    status is not None and status.get("jobDeploymentStatus") in TERMINAL_DEPLOYMENT_STATUSES
                )
                if status is not None and (not ended or _succeeded(status)):
                    logger.info("RayJob %s/%s exists already; following it", namespace, name)
                    return True
                if ended:
                    logger.info("RayJob %s/%s of an earlier attempt failed; replacing it", namespace, name)
                    replacing = _delete(custom_api, namespace, name)
        if clock() >= deadline:
            raise TimeoutError(f"RayJob {namespace}/{name} exists and could not be replaced in time")
        sleep(config.poll_interval_s)  # KubeRay's finalizer stops the old Ray job before it goes


def submit_rayjob(
    custom_api: Any,
    core_api: Any,
    manifest: dict[str, Any],
    config: RayJobConfig,
    log_sink: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RayJobOutcome:
    """Create the RayJob (or, when one of that name exists, follow that one), follow it to its end while
    passing the driver's log to ``log_sink``, and delete it as ``config.delete_finished`` says.

    Args:
        custom_api: a ``kubernetes.client.CustomObjectsApi`` (or an object with its methods).
        core_api: a ``kubernetes.client.CoreV1Api``, for the submitter pod's log.
        manifest: from ``orthoseg.rayjob.build_rayjob``.
        config: the poll interval, the deadline to follow it (``follow_timeout_s``), the clean-up.
        log_sink: receives each log line; None: this module's logger at INFO.
        clock: monotonic seconds (tests pass a fake).
        sleep: waits that many seconds (tests pass a fake).

    Raises:
        RayJobFailed: when the job ends without success, or disappears, with KubeRay's reason and message.
        TimeoutError: when it has not ended within ``config.follow_timeout_s()`` seconds.
    """
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    started = clock()
    attached = _create(custom_api, manifest, config, clock, sleep)
    logs = _SubmitterLogs(core_api, namespace, name, log_sink or _log_line, config.poll_interval_s)
    logs.start()
    succeeded = False
    status: dict[str, Any] = {}
    try:
        status = wait_for_rayjob(
            custom_api, namespace, name, config.follow_timeout_s(), config.poll_interval_s, clock, sleep
        )
        succeeded = _succeeded(status)
    finally:
        logs.stop()
        wanted = config.delete_finished == "always" or (succeeded and config.delete_finished == "on_success")
        deleted = _delete(custom_api, namespace, name) if wanted else False
    if not succeeded:
        raise RayJobFailed(namespace, name, status)
    return RayJobOutcome(
        name=name,
        namespace=namespace,
        job_id=status.get("jobId"),
        ray_cluster=status.get("rayClusterName"),
        dashboard_url=status.get("dashboardURL"),
        deployment_status=str(status.get("jobDeploymentStatus")),
        job_status=str(status.get("jobStatus")),
        seconds=round(clock() - started, 3),
        deleted=deleted,
        attached=attached,
        result=logs.result,
    )


def _log_line(line: str) -> None:
    logger.info("%s", line)


def kubernetes_apis() -> tuple[Any, Any]:
    """``CustomObjectsApi`` and ``CoreV1Api`` with the pod's service account inside a cluster, else the
    current kubeconfig context."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except config.ConfigException as error:
            raise FileNotFoundError(
                f"no Kubernetes credentials: not inside a cluster and no usable kubeconfig ({error})"
            ) from error
    return client.CustomObjectsApi(), client.CoreV1Api()
