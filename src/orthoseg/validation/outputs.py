"""Idempotent writes: byte-identical copies streamed through local files, and puts that skip equal content."""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from orthoseg.storage import LocalStore, ObjectStore, StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")
_CHUNK_BYTES = 1024 * 1024


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (memory stays bounded for any size)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local(store: ObjectStore, key: str, target: Path) -> Path:
    """A local file holding ``key``: the file itself for local stores, else a download into ``target``."""
    if isinstance(store, LocalStore):
        path = store.local_path(key)
        if path.is_symlink():
            raise StoreError(f"{key}: is a symbolic link; links are not followed")
        return path
    store.get_file(key, target)
    return target


def copy_object(src: ObjectStore, src_key: str, dst: ObjectStore, dst_key: str, scratch: Path) -> bool:
    """Copy ``src_key`` to ``dst_key`` byte for byte unless the destination already holds the same bytes.

    Returns:
        True when something was written.
    """
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        source_path = _local(src, src_key, Path(tmp) / "source")
        if dst.exists(dst_key):
            existing = _local(dst, dst_key, Path(tmp) / "existing")
            if sha256_file(existing) == sha256_file(source_path):
                return False
        dst.put_file(dst_key, source_path)
        return True


def put_file_if_changed(dst: ObjectStore, dst_key: str, path: Path, scratch: Path) -> bool:
    """Upload a local file unless the destination already holds the same bytes."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        if dst.exists(dst_key):
            existing = _local(dst, dst_key, Path(tmp) / "existing")
            if sha256_file(existing) == sha256_file(path):
                return False
        dst.put_file(dst_key, path)
        return True


def put_if_changed(store: ObjectStore, key: str, data: bytes) -> bool:
    """Write small ``data`` unless ``key`` already holds exactly these bytes."""
    try:
        if store.get_bytes(key, max_bytes=len(data) + 1) == data:
            return False
    except StoreError:
        pass
    store.put_bytes(key, data)
    return True


def run_threads(function: Callable[[T], bool], items: Iterable[T], threads: int) -> int:
    """Run I/O-bound writes on a thread pool; returns how many wrote something."""
    items = list(items)
    if not items:
        return 0
    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(items)))) as pool:
        return sum(1 for wrote in pool.map(function, items) if wrote)
