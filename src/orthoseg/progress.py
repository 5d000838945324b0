"""The progress callback every long-running step accepts; the CLI turns it into a progress bar."""

from __future__ import annotations

from collections.abc import Callable

# Called as progress(done, total) whenever a unit of work (file, image, epoch) finishes.
ProgressCallback = Callable[[int, int], None]
