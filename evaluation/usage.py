"""Per-case efficiency figures from resource samples (evaluation/sampler.py), the organisers' way.

Samples are dicts (or a DataFrame) with the sampler's columns; times in s, memory in MB, CPU in %.
Areas use the real sample times: each sample stands for the interval until the next sample (the
last one until the process ended), where the organisers multiplied the sample count by 0.1 s.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from evaluation.rules import EfficiencyRules

OFFICIAL_COLUMNS = ["Name", "Time", "MaxGPU_Mem", "AUC_GPU_Time", "MaxCPU_Utilization", "AUC_CPU_Time",
                    "MaxRAM", "AUC_RAM_Time"]
EXTRA_COLUMNS = ["Status", "Detail", "StableMaxGPU_Mem", "PlainMaxGPU_Mem", "MaxGPU_Mem_Tree", "MaxCPU_Tree",
                 "MaxRAM_Tree", "Samples", "MeanInterval_s"]
STATUSES = ("ok", "timeout", "crashed", "no-output")


def _finite(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    return v[np.isfinite(v)]


def plain_max(values) -> float:
    """The largest finite value; NaN when there is none."""
    v = _finite(values)
    return float(v.max()) if v.size else math.nan


def stable_max(values, fraction: float = 0.02) -> float:
    """FLARE21's "maximum when inference is stable": the largest value that occurs in more than
    `fraction` of the samples. Values are compared as whole MB, as nvidia-smi reported them."""
    v = np.round(_finite(values))
    if v.size == 0:
        return math.nan
    levels, counts = np.unique(v, return_counts=True)
    stable = levels[counts > fraction * v.size]
    return float(stable.max()) if stable.size else math.nan


def area(times, values, end_s: float, free: float = 0.0) -> float:
    """Area under a sampled curve (unit x s): sum of max(0, value - free) x (next time - time),
    the last sample lasting until end_s. NaN samples add nothing; NaN when all are NaN."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.size == 0 or not np.isfinite(v).any():
        return math.nan
    dt = np.diff(np.append(t, max(end_s, t[-1])))
    return float(np.nansum(np.maximum(v - free, 0.0) * dt))


def case_figures(name: str, samples: pd.DataFrame, wall_s: float, status: str, detail: str,
                 rules: EfficiencyRules) -> dict:
    """One row of efficiency.csv: the official columns under the year's rules, plus extras."""
    t = samples["t_s"] if len(samples) else pd.Series(dtype=float)
    gpu = samples["gpu_used_mb"] if len(samples) else t
    stable, plain = stable_max(gpu, rules.stable_fraction), plain_max(gpu)
    row = {
        "Name": name,
        "Time": wall_s,
        "MaxGPU_Mem": stable if rules.gpu_max == "stable" else plain,
        "AUC_GPU_Time": area(t, gpu, wall_s, free=rules.gpu_free_mb),
        "MaxCPU_Utilization": plain_max(samples.get("cpu_used_pct", t)),
        "AUC_CPU_Time": area(t, samples.get("cpu_used_pct", t), wall_s),
        "MaxRAM": plain_max(samples.get("ram_used_mb", t)),
        "AUC_RAM_Time": area(t, samples.get("ram_used_mb", t), wall_s),
        "Status": status,
        "Detail": detail,
        "StableMaxGPU_Mem": stable,
        "PlainMaxGPU_Mem": plain,
        "MaxGPU_Mem_Tree": plain_max(samples.get("gpu_tree_mb", t)),
        "MaxCPU_Tree": plain_max(samples.get("cpu_tree_pct", t)),
        "MaxRAM_Tree": plain_max(samples.get("ram_tree_mb", t)),
        "Samples": len(samples),
        "MeanInterval_s": float(np.diff(t).mean()) if len(t) > 1 else math.nan,
    }
    if status == "timeout" and rules.stuck:
        row.update(rules.stuck)
    return row


def set_verdict(table: pd.DataFrame, rules: EfficiencyRules) -> dict:
    """The whole-set limits of the year, checked on this run (times scaled to the rules' set size)."""
    checks = []
    n = len(table)
    if rules.set_time_s and rules.set_cases and n:
        projected = float(table["Time"].mean()) * rules.set_cases
        checks.append({"limit": f"{rules.set_cases} cases within {rules.set_time_s / 3600:g} h",
                       "value": f"{projected / 3600:.2f} h projected from {n} case(s)",
                       "passed": projected <= rules.set_time_s})
    if rules.set_gpu_mb:
        peak = plain_max(table["MaxGPU_Mem"])
        checks.append({"limit": f"GPU memory at most {rules.set_gpu_mb:g} MB",
                       "value": "not measured" if math.isnan(peak) else f"{peak:.0f} MB",
                       "passed": None if math.isnan(peak) else peak <= rules.set_gpu_mb})
    if rules.set_ram_mb:
        peak = plain_max(table["MaxRAM"])
        checks.append({"limit": f"RAM at most {rules.set_ram_mb:g} MB", "value": f"{peak:.0f} MB",
                       "passed": None if math.isnan(peak) else peak <= rules.set_ram_mb})
    failed_cases = int((table["Status"] != "ok").sum()) if n else 0
    checks.append({"limit": "every case produces a valid output", "value": f"{failed_cases} case(s) did not",
                   "passed": failed_cases == 0})
    passed = all(c["passed"] is not False for c in checks)
    return {"passed": passed, "checks": checks}
