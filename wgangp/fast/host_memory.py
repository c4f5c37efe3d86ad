"""Keep freed host memory in the process (glibc), so CPU training steps stop page-faulting.

Why: PyTorch's CPU allocator is plain ``malloc``. glibc serves a block above
``M_MMAP_THRESHOLD`` (128 KiB at first, raised as mmapped blocks are freed, at most
32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and it trims the top of the
heap back to the OS once more than ``M_TRIM_THRESHOLD`` is free there. A training step
allocates and frees the same large activations every time, so every step touches new
pages, and the kernel zero-fills each 4 KiB page on its first touch (a minor page
fault). Our step allocates larger blocks than a textbook loop (real and fake in one
critic forward), which defeats glibc's adaptive threshold more often
(``scripts/bench.py`` reports ``minor_faults_per_iter``; docs/performance.md has the counts).

:func:`keep_freed_host_memory` sets ``M_MMAP_MAX = 0`` (every block comes from the
heap) and ``M_TRIM_THRESHOLD`` to its maximum (the heap is never trimmed). After the
first iteration the heap holds the step's peak and serves every later step from pages
it has already touched. This is what PyTorch's caching allocator does on CUDA. The
price is the same: memory a step freed is not given back to the OS while the process
lives, so the resident size stays at the peak. It is applied only for training on the
CPU, where it was measured to pay: a CUDA run's activations live in the caching
allocator, and its host memory has no such churn. The switch is ``speed.keep_freed_memory``; the
settings are process-wide, like ``cudnn.benchmark``, and never undone.
``scripts/bench.py`` times the textbook loop in the same process, under the same
settings.

Other C libraries (macOS, musl) have no ``mallopt``, and nothing is changed there.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

log = logging.getLogger(__name__)

# <malloc.h>
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1  # mallopt takes an int

_applied = False


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  (glibc only: musl has no such symbol)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_host_memory(device: torch.device | str, enabled: bool) -> bool:
    """Tell glibc's malloc to keep what is freed mapped, for training on ``device``;
    ``True`` if the setting is in effect.

    Changes nothing unless ``enabled`` and ``device`` is the CPU, or off glibc. Logs one
    line when it applies the setting; later calls find it applied and stay quiet.
    """
    global _applied
    if not enabled or torch.device(device).type != "cpu":
        return _applied
    if _applied:
        return True
    libc = _libc()
    if libc is None:
        log.debug("not glibc: host memory settings left as they are")
        return False
    # mallopt returns 1 on success and 0 on error
    ok = libc.mallopt(M_TRIM_THRESHOLD, _INT_MAX) == 1 and libc.mallopt(M_MMAP_MAX, 0) == 1
    _applied = ok
    if ok:
        log.info(
            "host memory: freed blocks stay in the process (glibc mallopt M_MMAP_MAX=0, "
            "M_TRIM_THRESHOLD=max), so each CPU step reuses pages instead of "
            "page-faulting them in again; resident memory stays at the peak"
        )
    else:
        log.warning("glibc refused mallopt; host memory settings left as they are")
    return ok


__all__ = ["keep_freed_host_memory"]
