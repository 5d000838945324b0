"""Joining the Ray cluster: the configured one, or a local one started on first use."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from orthoseg.settings import Settings

logger = logging.getLogger(__name__)


def connect_ray(settings: Settings) -> None:
    """Join ``settings.ray_address`` (KubeRay head, ``ray://`` client, ``auto``), or start a local cluster.

    Does nothing when this process is already connected. A local cluster runs without the dashboard
    (start-up time, memory); Ray Train's placement-group cleaner then cannot reach the state API and
    warns every few seconds from its actor, so actor output is not streamed here. Failures still
    surface: Ray Train raises them in this process and inference rows carry every failure.
    """
    import ray

    if ray.is_initialized():
        return
    logger.info("Connecting to Ray (%s)", settings.ray_address or "local")
    if settings.ray_address:
        ray.init(address=settings.ray_address, configure_logging=False)
    else:
        ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)


@contextlib.contextmanager
def quiet_ray_data() -> Iterator[None]:
    """Ray Data's own progress bars off while we run (the caller shows progress), restored after."""
    from ray.data import DataContext

    context = DataContext.get_current()
    before = context.enable_progress_bars
    context.enable_progress_bars = False
    try:
        yield
    finally:
        context.enable_progress_bars = before
