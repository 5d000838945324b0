"""Object store: one small interface over a local folder or S3 (the only module that talks to boto3)."""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from botocore.config import Config
    from mypy_boto3_s3.type_defs import GetObjectRequestTypeDef

    from orthoseg.settings import Settings

logger = logging.getLogger(__name__)

# Attempts per S3 call (the first one included) unless ``Settings.s3_max_attempts`` says otherwise.
DEFAULT_S3_MAX_ATTEMPTS = 5
# Seconds to wait for a TCP connection to the S3 endpoint before that attempt counts as failed.
S3_CONNECT_TIMEOUT_S = 10


def s3_client_config(max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS) -> Config:
    """The botocore client configuration of every S3 client: the one place retries are set.

    botocore's ``standard`` retry mode retries throttling (``SlowDown``, 429, 503), transient server
    errors (500, 502, 504) and connection failures (reset, closed before a response, connect and read
    timeouts) with exponential backoff and full jitter (up to 20 s between attempts), within a client-wide
    retry quota so an outage is not amplified. ``max_attempts`` counts the first attempt: 1 never retries
    (botocore's ``total_max_attempts``; its ``max_attempts`` key would count retries only).

    Raises:
        ValueError: when ``max_attempts`` is below 1.
    """
    from botocore.config import Config

    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    return Config(
        retries={"total_max_attempts": max_attempts, "mode": "standard"}, connect_timeout=S3_CONNECT_TIMEOUT_S
    )


class StoreError(RuntimeError):
    """A store operation failed in a way the caller can report (missing key, bad key, access)."""


@dataclass(frozen=True)
class ObjectInfo:
    """What the store knows of one object without reading it.

    Attributes:
        key: key relative to the store root ('/'-separated).
        size_bytes: object size.
        is_link: True for a symbolic link in a local folder (never followed).
    """

    key: str
    size_bytes: int
    is_link: bool = False


def normalize_key(key: str) -> str:
    """Return ``key`` as a clean relative '/'-path.

    Raises:
        StoreError: for empty keys, absolute keys or keys that climb out of the root ('..').
    """
    if not key or key.strip("/") == "":
        raise StoreError("empty object key")
    cleaned = posixpath.normpath(key.replace("\\", "/")).lstrip("/")
    if cleaned.startswith("..") or "/../" in f"/{cleaned}/" or cleaned == ".":
        raise StoreError(f"object key escapes the store root: {key!r}")
    return cleaned


def join_key(*parts: str) -> str:
    """Join key parts with '/', ignoring empty parts."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


@runtime_checkable
class ObjectStore(Protocol):
    """What every stage needs from storage: bytes and files under '/'-separated keys."""

    uri: str

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes: ...

    def put_file(self, key: str, path: Path) -> None: ...

    def get_file(self, key: str, path: Path) -> None: ...

    def list_keys(self, prefix: str = "") -> list[str]: ...

    def list_info(self, prefix: str = "") -> list[ObjectInfo]: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def url(self, key: str) -> str: ...


def local_path(location: str | Path) -> Path:
    """The local path named by a path or a ``file://`` URI, the user's folder expanded (not resolved)."""
    text = str(location)
    return Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()


class LocalStore:
    """A folder on disk. Writes are atomic (temporary file, then rename), so a crash leaves no half files."""

    def __init__(self, root: str | Path) -> None:
        self.root = local_path(root).resolve()
        self.uri = self.root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / normalize_key(key)

    def put_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        path = self._path(key)
        if path.is_symlink():
            raise StoreError(f"{key}: is a symbolic link; links are not followed")
        try:
            with path.open("rb") as fh:
                return fh.read() if max_bytes is None else fh.read(max_bytes)
        except FileNotFoundError:
            raise StoreError(f"no object {key!r} in {self.uri}") from None
        except IsADirectoryError:
            raise StoreError(f"{key}: is a directory, not a file") from None

    def put_file(self, key: str, path: Path) -> None:
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        if src.is_symlink():
            raise StoreError(f"{key}: is a symbolic link; links are not followed")
        if not src.is_file():
            raise StoreError(f"no object {key!r} in {self.uri}")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)

    def _walk(self, prefix: str) -> Iterator[ObjectInfo]:
        base = self.root
        start = self.root / normalize_key(prefix) if prefix.strip("/") else self.root
        if start.is_symlink() or start.is_file():
            candidates = [start]
        elif start.is_dir():
            candidates = []
            for dirpath, dirnames, filenames in os.walk(start, followlinks=False):
                dirnames.sort()
                directory = Path(dirpath)
                # Links to directories show up in dirnames; report them as links, never descend.
                candidates.extend(directory / d for d in dirnames if (directory / d).is_symlink())
                candidates.extend(directory / f for f in sorted(filenames) if not f.startswith(".tmp-"))
        else:
            candidates = []
        for path in candidates:
            key = path.relative_to(base).as_posix()
            if path.is_symlink():
                yield ObjectInfo(key, 0, is_link=True)
            else:
                yield ObjectInfo(key, path.stat().st_size)

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        return sorted(self._walk(prefix), key=lambda info: info.key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    def exists(self, key: str) -> bool:
        path = self._path(key)
        return path.is_file() or path.is_symlink()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return self._path(key).as_uri()

    def local_path(self, key: str) -> Path:
        """The file behind ``key`` (local stores only), for tools that need a path."""
        return self._path(key)

    def __repr__(self) -> str:
        return f"LocalStore({self.root})"


class S3Store:
    """An S3 (or MinIO / any S3-compatible) bucket and prefix, through boto3 with retries.

    Every call is retried with backoff as ``s3_client_config`` sets (``max_attempts`` attempts in all).
    """

    def __init__(
        self, uri: str, endpoint_url: str | None = None, max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
    ) -> None:
        import boto3

        if not uri.startswith("s3://"):
            raise ValueError(f"S3 store URI must start with s3://, got {uri!r}")
        bucket, _, prefix = uri[len("s3://") :].partition("/")
        if not bucket:
            raise ValueError(f"S3 store URI has no bucket: {uri!r}")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.max_attempts = max_attempts
        self._client = boto3.client("s3", endpoint_url=endpoint_url, config=s3_client_config(max_attempts))

    def _key(self, key: str) -> str:
        return join_key(self.prefix, normalize_key(key))

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.prefix) + 1 :] if self.prefix else full_key

    def _missing(self, error: Exception) -> bool:
        code = getattr(error, "response", {}).get("Error", {}).get("Code", "")
        return code in {"404", "NoSuchKey", "NotFound"}

    def put_bytes(self, key: str, data: bytes) -> None:
        self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)

    def get_bytes(self, key: str, max_bytes: int | None = None) -> bytes:
        from botocore.exceptions import ClientError

        kwargs: GetObjectRequestTypeDef = {"Bucket": self.bucket, "Key": self._key(key)}
        if max_bytes is not None:
            kwargs["Range"] = f"bytes=0-{max(max_bytes - 1, 0)}"
        try:
            response = self._client.get_object(**kwargs)
        except ClientError as error:
            if self._missing(error):
                raise StoreError(f"no object {key!r} in {self.uri}") from None
            if max_bytes is not None and "InvalidRange" in str(error):
                return b""
            raise
        data: bytes = response["Body"].read()
        return data

    def put_file(self, key: str, path: Path) -> None:
        self._client.upload_file(str(path), self.bucket, self._key(key))

    def get_file(self, key: str, path: Path) -> None:
        from botocore.exceptions import ClientError

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._client.download_file(self.bucket, self._key(key), str(path))
        except ClientError as error:
            if self._missing(error):
                raise StoreError(f"no object {key!r} in {self.uri}") from None
            raise

    def list_info(self, prefix: str = "") -> list[ObjectInfo]:
        folder = prefix.strip("/")
        full_prefix = join_key(self.prefix, folder)
        paginator = self._client.get_paginator("list_objects_v2")
        infos = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{full_prefix}/" if full_prefix else ""):
            for item in page.get("Contents", []):
                infos.append(ObjectInfo(self._relative(item["Key"]), int(item["Size"])))
        if folder and not infos and self.exists(folder):
            infos.append(ObjectInfo(folder, 0))
        return sorted(infos, key=lambda info: info.key)

    def list_keys(self, prefix: str = "") -> list[str]:
        return [info.key for info in self.list_info(prefix)]

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as error:
            if self._missing(error):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    def __repr__(self) -> str:
        return f"S3Store({self.uri}, endpoint={self.endpoint_url})"


def open_store(
    uri: str, endpoint_url: str | None = None, max_attempts: int = DEFAULT_S3_MAX_ATTEMPTS
) -> ObjectStore:
    """Open the store behind ``uri``: ``s3://bucket/prefix`` or a local folder / ``file://`` URI.

    ``max_attempts`` (S3 only) is the attempts per call, retries with backoff included.
    """
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=endpoint_url, max_attempts=max_attempts)
    return LocalStore(uri)


def store_from_settings(settings: Settings) -> ObjectStore:
    """The project's object store as configured.

    ``ORTHOSEG_STORE``, ``ORTHOSEG_S3_ENDPOINT_URL`` and ``ORTHOSEG_S3_MAX_ATTEMPTS`` (attempts per S3 call).
    """
    return open_store(
        settings.store, endpoint_url=settings.s3_endpoint_url, max_attempts=settings.s3_max_attempts
    )


def batch_store(settings: Settings, source: str) -> ObjectStore:
    """The store holding a batch of files to validate.

    ``source`` is a store URI (``s3://bucket/prefix``, ``file://...``), an existing local folder, or else a
    prefix inside the configured store (e.g. ``incoming/<batch>``).

    Raises:
        ValueError: when ``source`` is a local file rather than a folder.
    """
    if source.startswith(("s3://", "file://")):
        return open_store(
            source, endpoint_url=settings.s3_endpoint_url, max_attempts=settings.s3_max_attempts
        )
    path = local_path(source)
    if path.is_dir():
        return open_store(str(path))
    if path.is_file():
        raise ValueError(f"source must be a folder or store prefix holding a batch, not a file: {source}")
    return substore(store_from_settings(settings), source)


def substore(store: ObjectStore, prefix: str) -> ObjectStore:
    """A store rooted at ``prefix`` inside ``store`` (same backend, same credentials)."""
    if isinstance(store, LocalStore):
        return LocalStore(store.root / normalize_key(prefix))
    if isinstance(store, S3Store):
        return S3Store(
            f"s3://{store.bucket}/{join_key(store.prefix, normalize_key(prefix))}",
            store.endpoint_url,
            max_attempts=store.max_attempts,
        )
    raise TypeError(f"cannot take a sub-store of {store!r}")
