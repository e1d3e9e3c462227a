"""The C allocator's settings for activation maximisation on the CPU.

Every optimisation step allocates and frees the same large activation tensors (EfficientNet-Lite0 at 224 px and 8
rows: tensors of about 13 MB). glibc's malloc serves blocks above its mmap threshold (dynamic, from 128 KiB) with
fresh ``mmap`` pages and gives them back on free, so every step page-faults and zero-fills its activations anew:
``fill_`` and ``copy_`` into new tensors took an eighth of a step in the profile. Keeping such blocks in the heap (a
fixed mmap threshold of 32 MiB, glibc's largest, and no trimming below 1 GiB) measured, on the 2-core CPU with
EfficientNet-Lite0 (8 rows, 16 steps), 18.5 sample-iterations/s without and 20.8-21.9 with it (three runs; the
same thresholds set through glibc's environment variables gave 21.2-27.0), and Lucent 9.8 without and 10.7 with
(tests/benchmarks/real_model_quality.py, docs/real_model_quality.md). PyTorch's CPU performance guide recommends
the same through jemalloc or tcmalloc; this needs no preloaded library.

Process-wide and idempotent: ``visualize`` applies it once per process before optimising on the CPU. A worker that
also serves other work keeps up to the trim threshold of freed memory in its heap. Only glibc is tuned; elsewhere
(musl, macOS) it does nothing and says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import platform

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20  # glibc refuses more than HEAP_MAX_SIZE / 2 (32 MiB on 64-bit)
TRIM_THRESHOLD_BYTES = 2**30

_applied: bool | None = None


def keep_freed_blocks_in_heap() -> bool:
    """Set glibc's mmap and trim thresholds (module docstring) once per process; True when they are in force."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        log.debug("allocator left as it is: not glibc")
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
            libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
    except (OSError, AttributeError) as exc:
        log.debug("allocator left as it is: %s", exc)
        return False
    _applied = ok
    log.debug("glibc malloc: mmap threshold %d, trim threshold %d (%s)", MMAP_THRESHOLD_BYTES,
              TRIM_THRESHOLD_BYTES, "applied" if ok else "refused")
    return ok
