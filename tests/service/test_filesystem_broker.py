"""The embedded broker writes whole messages: a worker that polls the queue folder while a message is being
written finds nothing, never an empty or half-written file (``workers.filesystem_broker``)."""
from __future__ import annotations

from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection

import workers.filesystem_broker as filesystem_broker


def broker(tmp_path: Path) -> Connection:
    queue, processed = tmp_path / "queue", tmp_path / "processed"
    queue.mkdir()
    processed.mkdir()
    return Connection("filesystem://", transport="workers.filesystem_broker:Transport",
                      transport_options={"data_folder_in": str(queue), "data_folder_out": str(queue),
                                         "processed_folder": str(processed), "store_processed": False})


def test_a_reader_polling_while_a_message_is_written_finds_nothing_then_the_whole_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with broker(tmp_path) as conn:
        channel = conn.default_channel
        seen_mid_write: list[str] = []
        real_open = open

        class PollingFile:
            def __init__(self, fh: Any) -> None:
                self._fh = fh

            def write(self, data: bytes) -> int:
                half = len(data) // 2
                self._fh.write(data[:half])
                self._fh.flush()
                try:  # another worker polls the queue half way through the write
                    seen_mid_write.append(repr(channel._get("gpu")))
                except Empty:
                    pass
                return half + self._fh.write(data[half:])

            def __enter__(self) -> "PollingFile":
                return self

            def __exit__(self, *exc: Any) -> None:
                self._fh.close()

        monkeypatch.setattr(filesystem_broker, "open", lambda *a, **k: PollingFile(real_open(*a, **k)),
                            raising=False)
        channel._put("gpu", {"body": "x" * 1000, "n": 1})
        assert seen_mid_write == []
        assert channel._get("gpu") == {"body": "x" * 1000, "n": 1}
        with pytest.raises(Empty):
            channel._get("gpu")
        assert list((tmp_path / "queue").iterdir()) == []  # no staging file left behind


def test_messages_come_back_oldest_first_and_only_on_their_queue(tmp_path: Path) -> None:
    with broker(tmp_path) as conn:
        channel = conn.default_channel
        for n in range(3):
            channel._put("gpu", {"n": n})
        channel._put("cpu", {"n": "cpu"})
        assert [channel._get("gpu")["n"] for _ in range(3)] == [0, 1, 2]
        assert channel._get("cpu") == {"n": "cpu"}


def test_a_failed_write_leaves_no_message_and_no_staging_file(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from kombu.exceptions import ChannelError

    def full_disk(*_: Any, **__: Any) -> bytes:
        raise OSError(28, "No space left on device")

    with broker(tmp_path) as conn:
        channel = conn.default_channel
        monkeypatch.setattr(filesystem_broker, "str_to_bytes", full_disk)
        with pytest.raises(ChannelError):
            channel._put("gpu", {"n": 1})
        assert list((tmp_path / "queue").iterdir()) == []


def test_the_embedded_settings_select_this_transport(tmp_path: Path) -> None:
    from workers.celery_app import celery_config
    from workers.settings import load_settings

    conf = celery_config(load_settings({"QUIRKSCOPE_HOME": str(tmp_path)}))
    assert conf["broker_url"].startswith("filesystem://")
    assert conf["broker_transport"] == "workers.filesystem_broker:Transport"


def test_a_message_that_does_not_decode_is_dropped_and_the_next_one_read(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    with broker(tmp_path) as conn:
        channel = conn.default_channel
        (tmp_path / "queue" / f"{0:020d}_torn.gpu.msg").write_bytes(b"")  # older than any message put now
        channel._put("gpu", {"n": 1})
        assert channel._get("gpu") == {"n": 1}
        assert "does not decode" in caplog.text
        assert list((tmp_path / "queue").iterdir()) == []
        with pytest.raises(Empty):
            channel._get("gpu")
