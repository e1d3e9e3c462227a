"""The allocator setting the CPU engine applies once per process (workers/engine/cpu_memory.py)."""
from __future__ import annotations

import platform

import pytest

from workers.engine import cpu_memory


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="only glibc is tuned")
def test_glibc_accepts_the_thresholds_and_a_second_call_changes_nothing(monkeypatch) -> None:
    monkeypatch.setattr(cpu_memory, "_applied", None)
    assert cpu_memory.keep_freed_blocks_in_heap() is True
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *a, **k: pytest.fail("applied twice"))
    assert cpu_memory.keep_freed_blocks_in_heap() is True


def test_without_glibc_it_does_nothing_and_says_so(monkeypatch) -> None:
    monkeypatch.setattr(cpu_memory, "_applied", None)
    monkeypatch.setattr(cpu_memory.platform, "libc_ver", lambda: ("musl", "1.2"))
    monkeypatch.setattr(cpu_memory.ctypes, "CDLL", lambda *a, **k: pytest.fail("must not touch the C library"))
    assert cpu_memory.keep_freed_blocks_in_heap() is False
