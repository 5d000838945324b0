"""S3 calls survive reset connections and throttling: a flaky TCP proxy sits between boto3 and moto."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

import pytest

from orthoseg.storage import S3Store

Mode = Literal["reset", "slowdown"]
SLOWDOWN = (
    b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
    b"Content-Length: %d\r\n\r\n%s"
)
SLOWDOWN_BODY = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"


class FlakyProxy:
    """A TCP proxy on 127.0.0.1 whose first ``drop`` connections fail after the request headers arrive.

    ``reset``: the connection is reset (RST, as a load balancer that drops it); ``slowdown``: S3's 503
    SlowDown throttling answer. Later connections are piped to the upstream byte for byte.
    """

    def __init__(self, upstream: str, drop: int, mode: Mode = "reset") -> None:
        parsed = urlparse(upstream)
        self.upstream = (parsed.hostname or "127.0.0.1", int(parsed.port or 80))
        self.drop, self.mode = drop, mode
        self.accepted = 0
        self.dropped: list[bytes] = []  # request lines of the dropped requests
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._server.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                failing = self.accepted <= self.drop
            handler = self._fail if failing else self._pipe
            threading.Thread(target=handler, args=(client,), daemon=True).start()

    def _fail(self, client: socket.socket) -> None:
        client.settimeout(10)
        head = b""
        try:
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    break
                head += chunk
            if self.mode == "slowdown":
                client.sendall(SLOWDOWN % (len(SLOWDOWN_BODY), SLOWDOWN_BODY))
            else:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        finally:
            with self._lock:
                self.dropped.append(head.split(b"\r\n", 1)[0])
            client.close()

    def _pipe(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream)

        def copy(source: socket.socket, target: socket.socket) -> None:
            try:
                while chunk := source.recv(65536):
                    target.sendall(chunk)
            except OSError:
                pass
            finally:
                for sock in (source, target):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        other = threading.Thread(target=copy, args=(upstream, client), daemon=True)
        other.start()
        copy(client, upstream)
        other.join()
        client.close()
        upstream.close()


@pytest.fixture()
def flaky(s3_endpoint: str, request: pytest.FixtureRequest) -> Iterator[FlakyProxy]:
    drop, mode = request.param
    proxy = FlakyProxy(s3_endpoint, drop=drop, mode=mode)
    yield proxy
    proxy.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("flaky", [(3, "reset"), (3, "slowdown")], indirect=True, ids=["reset", "slowdown"])
def test_a_round_trip_through_dropped_requests_loses_nothing(
    flaky: FlakyProxy, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    store = S3Store(f"s3://{s3_bucket}/retried", endpoint_url=flaky.url, max_attempts=5)
    objects = {f"batch/{i}.bin": bytes([i]) * (1000 + i) for i in range(5)}
    for key, data in objects.items():
        store.put_bytes(key, data)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x07" * (3 * 1024 * 1024))
    store.put_file("batch/big.bin", big)
    assert len(flaky.dropped) == 3 and flaky.dropped[0].startswith(b"PUT ")  # the first put was hit 3 times

    assert store.list_keys("batch") == sorted([*objects, "batch/big.bin"])
    for key, data in objects.items():
        assert store.get_bytes(key) == data
    store.get_file("batch/big.bin", tmp_path / "back.bin")
    assert (tmp_path / "back.bin").read_bytes() == big.read_bytes()
    # Seen directly on the endpoint (no proxy): every object once, with its bytes.
    direct = S3Store(f"s3://{s3_bucket}/retried", endpoint_url=s3_endpoint)
    assert direct.list_keys() == store.list_keys()
    assert {key: direct.get_bytes(key) for key in objects} == objects


@pytest.mark.timeout(60)
@pytest.mark.parametrize("flaky", [(1, "reset")], indirect=True, ids=["reset"])
def test_without_retries_the_same_drop_fails(flaky: FlakyProxy, s3_bucket: str) -> None:
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    store = S3Store(f"s3://{s3_bucket}/once", endpoint_url=flaky.url, max_attempts=1)
    with pytest.raises((BotoConnectionError, HTTPClientError)):
        store.put_bytes("a.bin", b"payload")
    assert len(flaky.dropped) == 1
    store.put_bytes("a.bin", b"payload")  # the proxy drops no more: the same call now goes through
    assert store.get_bytes("a.bin") == b"payload"
