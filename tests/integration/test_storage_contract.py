"""One contract for every object store: the local folder and S3 (moto over HTTP) must behave alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from orthoseg.storage import LocalStore, ObjectStore, StoreError, open_store, substore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest) -> ObjectStore:
    return request.getfixturevalue("local_store" if request.param == "local" else "s3_store")


def test_bytes_round_trip(store: ObjectStore) -> None:
    store.put_bytes("a/b/c.bin", b"\x00\x01payload")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01payload"
    assert store.get_bytes("a/b/c.bin", max_bytes=3) == b"\x00\x01p"
    assert store.exists("a/b/c.bin")
    assert not store.exists("a/b/missing.bin")


def test_files_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("hello")
    store.put_file("docs/in.txt", source)
    target = tmp_path / "out" / "copy.txt"
    store.get_file("docs/in.txt", target)
    assert target.read_text() == "hello"


def test_list_is_recursive_sorted_and_folder_scoped(store: ObjectStore) -> None:
    for key in ["x/2.dcm", "x/1.dcm", "x/sub/3.dcm", "xy/4.dcm", "top.txt"]:
        store.put_bytes(key, b"1")
    assert store.list_keys("x") == ["x/1.dcm", "x/2.dcm", "x/sub/3.dcm"]
    assert store.list_keys() == ["top.txt", "x/1.dcm", "x/2.dcm", "x/sub/3.dcm", "xy/4.dcm"]
    assert [info.size_bytes for info in store.list_info("xy")] == [1]


def test_delete_and_missing(store: ObjectStore) -> None:
    store.put_bytes("gone.bin", b"1")
    store.delete("gone.bin")
    assert not store.exists("gone.bin")
    with pytest.raises(StoreError, match="no object"):
        store.get_bytes("gone.bin")


def test_keys_cannot_escape_the_root(store: ObjectStore) -> None:
    with pytest.raises(StoreError, match="escapes"):
        store.put_bytes("../outside.bin", b"1")
    with pytest.raises(StoreError, match="empty"):
        store.put_bytes("", b"1")


def test_substore_is_rooted_at_prefix(store: ObjectStore) -> None:
    store.put_bytes("batch/images/a.dcm", b"1")
    inner = substore(store, "batch")
    assert inner.list_keys() == ["images/a.dcm"]
    assert inner.get_bytes("images/a.dcm") == b"1"


def test_local_store_reports_links_without_following(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "s")
    store.put_bytes("real.bin", b"1")
    (tmp_path / "s" / "link.bin").symlink_to(tmp_path / "s" / "real.bin")
    infos = {info.key: info for info in store.list_info()}
    assert infos["link.bin"].is_link and not infos["real.bin"].is_link
    with pytest.raises(StoreError, match="symbolic link"):
        store.get_bytes("link.bin")


def test_open_store_picks_backend(tmp_path: Path, s3_endpoint: str) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store("s3://bucket/prefix", endpoint_url=s3_endpoint).uri == "s3://bucket/prefix"
