"""What the machine was doing just before a case: the idle check.

The official figures are system-wide (RAM used, CPU utilisation, GPU memory used), so on a machine
that is not idle they measure the other work too. Before each case the harness watches the
machine for a moment (`measure`): system CPU utilisation over the window (the organisers' formula,
%), mean RAM used (MB), mean GPU memory used (MB) and the number of processes computing on the GPU.
`busy_reasons` says why the machine counts as busy (empty when idle). A reading that fails (NVML
after the GPU is lost, say) counts as not measured (NaN, None), with one notice (sampler.Readings).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from evaluation.report import stats
from evaluation.sampler import Readings, SystemCpu, used_ram_mb

BUSY_CPU_PCT = 10.0  # default: system CPU utilisation above this before a case marks it busy


@dataclass(frozen=True)
class Baseline:
    """The machine before a case: CPU %, RAM MB and GPU MB (NaN where not measured), GPU processes
    (None where NVML cannot list them), over `seconds` of watching."""

    cpu_pct: float
    ram_mb: float
    gpu_mb: float
    gpu_processes: int | None
    seconds: float


def measure(gpu=None, seconds: float = 1.0, interval_s: float = 0.1, readings: Readings | None = None) -> Baseline:
    """Watch the machine for `seconds` (RAM and GPU sampled every interval_s, CPU over the window);
    seconds <= 0 measures nothing (all NaN). Failing readings count as not measured (`readings`)."""
    if seconds <= 0:
        return Baseline(math.nan, math.nan, math.nan, None, 0.0)
    take = (readings or Readings()).take
    cpu = SystemCpu()
    ram, used = [], []
    start = time.perf_counter()
    while True:
        ram.append(take("system RAM", used_ram_mb))
        if gpu is not None:
            used.append(take("GPU memory (NVML)", gpu.used_mb))
        left = start + seconds - time.perf_counter()
        if left <= 0:
            break
        time.sleep(min(interval_s, left))
    return Baseline(take("system CPU", cpu.used_pct), stats(ram)["mean"], stats(used)["mean"],
                    take("GPU processes (NVML)", gpu.process_count, default=None) if gpu is not None else None,
                    time.perf_counter() - start)


def busy_reasons(baseline: Baseline, cpu_threshold_pct: float = BUSY_CPU_PCT) -> list[str]:
    """Why the machine was not idle before the case (empty list: idle, or not measured)."""
    reasons = []
    if baseline.cpu_pct > cpu_threshold_pct:
        reasons.append(f"CPU {baseline.cpu_pct:.0f} % used (threshold {cpu_threshold_pct:g} %)")
    if baseline.gpu_processes:
        reasons.append(f"{baseline.gpu_processes} process(es) computing on the GPU")
    return reasons
