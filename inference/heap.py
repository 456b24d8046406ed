"""The C heap's policy while PyTorch runs the networks on the CPU (glibc only).

By default glibc serves each block of 32 MiB and more with a fresh mapping and unmaps it when it is
freed, so every convolution's output and every resampled volume is faulted in page by page again:
on 2 CPU cores that was about half of PyTorch's network time (docs/pipeline.md). Kept, freed
memory stays in the process for the next allocation: faster, for a higher peak resident memory.
OpenVINO manages its own buffers, so the policy is left alone where it runs the networks.
"""
from __future__ import annotations

import ctypes

HEAPS = ("auto", "kept", "system")
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # mallopt's parameters (malloc.h)
TRIM_THRESHOLD = 2**31 - 1  # bytes: the largest int; free memory at the heap's top is kept up to this


def choose_heap(requested: str, device_type: str, backend: str) -> str:
    """auto: kept where PyTorch runs the networks on the CPU, else system."""
    if requested != "auto":
        return requested
    return "kept" if device_type == "cpu" and backend == "torch" else "system"


def keep_freed_memory() -> bool:
    """From now on serve every allocation from glibc's heap (no mappings per block) and keep what is
    freed there for reuse; False where the C library is not glibc (nothing changed)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
