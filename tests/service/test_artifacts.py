"""The filesystem artifact store: atomic keyed writes, safe keys, listing and deletion by prefix."""
from __future__ import annotations

from pathlib import Path

import pytest

from db.artifacts import FilesystemArtifactStore, store_from_url
from workers.engine.errors import InvalidInput


def test_put_overwrites_whole_and_leaves_no_temp_files(tmp_path: Path) -> None:
    store = FilesystemArtifactStore(tmp_path)
    store.put_bytes("audits/1/a.npy", b"first")
    store.put_bytes("audits/1/a.npy", b"second")
    assert store.open("audits/1/a.npy").read() == b"second"
    assert [p.name for p in (tmp_path / "audits/1").iterdir()] == ["a.npy"]


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a//b", "a/./b", "", "a\\b"])
def test_keys_that_escape_the_root_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidInput):
        FilesystemArtifactStore(tmp_path).put_bytes(key, b"x")


def test_delete_prefix_removes_an_audits_artifacts_only(tmp_path: Path) -> None:
    store = store_from_url(f"file://{tmp_path}")
    store.put_bytes("audits/1/x.png", b"1")
    store.put_bytes("audits/1/sub/y.png", b"2")
    store.put_bytes("audits/10/x.png", b"3")
    assert store.delete_prefix("audits/1/") == 2
    assert list(store.keys("audits")) == ["audits/10/x.png"]
    store.check()
