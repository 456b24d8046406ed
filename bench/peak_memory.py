"""This process's own peak resident memory.

`resource.getrusage(RUSAGE_SELF).ru_maxrss` is not it: Linux carries the high-water mark of the
process that forked this one through fork and exec, so a benchmark's child started by a parent
holding gigabytes reads at least the parent's figure (bench/child_usage.py says more). The kernel's
VmHWM (/proc/self/status) belongs to this process's own memory, made anew at exec.
"""
from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


def own_peak_rss_mb(status: Path = STATUS) -> float:
    """The largest resident memory this process has held (MiB): VmHWM, or ru_maxrss where the
    kernel gives no /proc (which may then include the parent's)."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
