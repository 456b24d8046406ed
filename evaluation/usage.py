"""Per-case efficiency figures from resource samples (evaluation/sampler.py), the organisers' way.

Samples are dicts (or a DataFrame) with the sampler's columns; times in s, memory in MB, CPU in %.
Areas use the real sample times: the sampler reads at the end of each interval, so each sample
stands for the interval that ends at it (the first from the start, the last also until the
process ended), where the organisers multiplied the sample count by 0.1 s.

Failed cases (FAILED statuses): under the "official" policy (the default, as the organisers'
scripts did) only a timeout gets the year's stuck values where the year defines them (FLARE22)
and failed cases are ranked by what was measured; under "penalised" every failed case gets them
and ranks last on every metric (evaluation.rank), so that a fast crash never beats a case that
worked. A case the harness itself failed on (status "error") is failed, never given stuck values.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.baseline import Baseline
from evaluation.rules import EfficiencyRules

OFFICIAL_COLUMNS = ["Name", "Time", "MaxGPU_Mem", "AUC_GPU_Time", "MaxCPU_Utilization", "AUC_CPU_Time",
                    "MaxRAM", "AUC_RAM_Time"]
# The decimals the organisers' efficiency CSV rounds each official figure to (np.round; their
# FLARE22 script and the later one with these column names alike); MeasuredTime keeps the time unrounded.
OFFICIAL_DECIMALS = {"Time": 2, "MaxGPU_Mem": 0, "AUC_GPU_Time": 0, "MaxCPU_Utilization": 2, "AUC_CPU_Time": 2,
                     "MaxRAM": 2, "AUC_RAM_Time": 0}
EXTRA_COLUMNS = ["Status", "Detail", "Penalised", "MeasuredTime", "StableMaxGPU_Mem", "PlainMaxGPU_Mem",
                 "MaxGPU_Mem_Tree", "MaxCPU_Tree", "MaxRAM_Tree", "Samples", "MeanInterval_s",
                 "Machine", "BaselineCPU_pct", "BaselineRAM_MB", "BaselineGPU_MB"]
FAILED = ("timeout", "crashed", "no-output", "no-input")  # no-input: a ground truth without an image (run)
HARNESS_ERROR = "error"  # the harness itself failed on the case (not the submission's doing): failed, never penalised
FAILURE_POLICIES = ("penalised", "official")
VALID_OUTPUTS = "every case produces a valid output"  # the set-level check on the failed cases
EVERY_CASE_RUN = "every case is run"  # the check of a run that stopped early (interrupted)
DEFAULT_FAILURE_POLICY = "official"  # the organisers' behaviour by default (their rules)
# What efficiency.json records of how its figures were measured, on which they depend (areas:
# official or real-time; the sampling interval, s; the GPU's name; the timeout, s, which decides
# what is stuck): runs ranked or compared together must share them
MEASUREMENT_SETTINGS = ("areas", "interval_s", "gpu", "timeout_s")


def measurement_of(effort: dict) -> dict:
    """The MEASUREMENT_SETTINGS of an efficiency.json's content."""
    return {key: effort.get(key) for key in MEASUREMENT_SETTINGS}


def recorded_measurement(folder: Path, summary: dict) -> dict | None:
    """How the efficiency of a run folder (evaluation.run's) was measured: its summary.json's
    "measurement" (`summary`), else its efficiency/efficiency.json's fields (runs from before
    the summary kept them); None where neither records it."""
    if isinstance(summary.get("measurement"), dict):
        return summary["measurement"]
    try:
        effort = json.loads((folder / "efficiency" / "efficiency.json").read_text())
    except (OSError, ValueError):
        return None
    return measurement_of(effort) if isinstance(effort, dict) else None


def measurement_differences(runs: dict[str, dict | None]) -> list[str]:
    """The settings (MEASUREMENT_SETTINGS) on which the runs' recorded measurements differ, one
    line each with every run's value ("interval_s: alpha 0.1, beta 0.5"); runs recording none
    are left out."""
    known = {run: settings for run, settings in runs.items() if settings is not None}
    return [f"{key}: " + ", ".join(f"{run} {settings.get(key)}" for run, settings in known.items())
            for key in MEASUREMENT_SETTINGS if len({repr(s.get(key)) for s in known.values()}) > 1]


def is_failed(status) -> bool:
    """Whether a case's Status is a failure (anything but ok; a missing status counts as failed)."""
    return status != "ok"


def penalised(status: str, rules: EfficiencyRules, policy: str = DEFAULT_FAILURE_POLICY) -> bool:
    """Whether a case of this status gets the year's stuck values under the policy."""
    if not rules.stuck:
        return False
    return status == "timeout" or (policy == "penalised" and status in FAILED)


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


OFFICIAL_AREA_STEP_S = 0.1  # the organisers' areas: the sum of the samples x 0.1 s (their sampling interval)
AREAS = ("official", "real-time")  # --areas: the organisers' sum x step, or the integral over real times


def area(times, values, end_s: float, free: float = 0.0, step_s: float | None = OFFICIAL_AREA_STEP_S) -> float:
    """Area under a sampled curve (unit x s; times from the sampler's start) of max(0, value - free):
    with step_s, as the organisers computed it, the sum of the samples x step_s (the sampling
    interval); with None, over [0, end_s] in real time: each sample x (its time - the time before
    it, 0 for the first), the last also until end_s. NaN samples add nothing; NaN when all are NaN."""
    t = np.asarray(times, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if t.size == 0 or not np.isfinite(v).any():
        return math.nan
    if step_s is not None:
        return float(np.nansum(np.maximum(v - free, 0.0)) * step_s)
    dt = np.diff(np.concatenate([[0.0], t, [max(end_s, t[-1])]]))
    weights = dt[:-1].copy()
    weights[-1] += dt[-1]  # the last sample also stands for the time after it
    return float(np.nansum(np.maximum(v - free, 0.0) * weights))


def case_figures(name: str, samples: pd.DataFrame, wall_s: float, status: str, detail: str,
                 rules: EfficiencyRules, policy: str = DEFAULT_FAILURE_POLICY, baseline: Baseline | None = None,
                 busy: list[str] | tuple[str, ...] = (), area_step_s: float | None = OFFICIAL_AREA_STEP_S) -> dict:
    """One row of efficiency.csv: the official columns under the year's rules and the failure
    policy, plus extras (MeasuredTime keeps the wall time where a penalty replaced Time; Machine
    is "idle", "busy: <reasons>" or "not checked" from the baseline taken before the case). The
    official figures are rounded as the organisers' CSV rounds them (OFFICIAL_DECIMALS).
    area_step_s: the areas' step (area(); None: over real times)."""
    t = samples["t_s"] if len(samples) else pd.Series(dtype=float)
    gpu = samples["gpu_used_mb"] if len(samples) else t
    stable, plain = stable_max(gpu, rules.stable_fraction), plain_max(gpu)
    row = {
        "Name": name,
        "Time": wall_s,
        "MaxGPU_Mem": stable if rules.gpu_max == "stable" else plain,
        "AUC_GPU_Time": area(t, gpu, wall_s, rules.gpu_free_mb, area_step_s),
        "MaxCPU_Utilization": plain_max(samples.get("cpu_used_pct", t)),
        "AUC_CPU_Time": area(t, samples.get("cpu_used_pct", t), wall_s, step_s=area_step_s),
        "MaxRAM": plain_max(samples.get("ram_used_mb", t)),
        "AUC_RAM_Time": area(t, samples.get("ram_used_mb", t), wall_s, step_s=area_step_s),
        "Status": status,
        "Detail": detail,
        "Penalised": penalised(status, rules, policy),
        "MeasuredTime": wall_s,
        "StableMaxGPU_Mem": stable,
        "PlainMaxGPU_Mem": plain,
        "MaxGPU_Mem_Tree": plain_max(samples.get("gpu_tree_mb", t)),
        "MaxCPU_Tree": plain_max(samples.get("cpu_tree_pct", t)),
        "MaxRAM_Tree": plain_max(samples.get("ram_tree_mb", t)),
        "Samples": len(samples),
        "MeanInterval_s": float(np.diff(t).mean()) if len(t) > 1 else math.nan,
        "Machine": ("busy: " + "; ".join(busy)) if busy else
                   "idle" if baseline and baseline.seconds > 0 else "not checked",
        "BaselineCPU_pct": baseline.cpu_pct if baseline else math.nan,
        "BaselineRAM_MB": baseline.ram_mb if baseline else math.nan,
        "BaselineGPU_MB": baseline.gpu_mb if baseline else math.nan,
    }
    row.update({column: float(np.round(row[column], decimals)) for column, decimals in OFFICIAL_DECIMALS.items()})
    if row["Penalised"]:
        row.update(rules.stuck)
    return row


def _limit_check(limit: str, peak: float, bound: float, source: str) -> dict:
    return {"limit": limit, "source": source, "value": "not measured" if math.isnan(peak) else f"{peak:.0f} MB",
            "passed": None if math.isnan(peak) else bool(peak <= bound)}


def set_verdict(table: pd.DataFrame, rules: EfficiencyRules, planned: int | None = None) -> dict:
    """The whole-set limits of the year, checked on this run (the measured times, not penalties,
    scaled to the rules' set size). With `planned` (the run's number of cases), a run that has not
    run them all (interrupted, or still running) fails the check that every case ran.

    Memory limits are checked twice, each check named by its source: on the official system-wide
    figures ("system-wide (official)", which include whatever else the machine was doing) and on
    the submission's own processes ("process tree"). `passed` is the official verdict;
    `passed_process_tree` the same with the process-tree memory checks instead."""
    checks = []
    n = len(table)
    if rules.set_time_s and rules.set_cases and n:
        times = table["MeasuredTime"] if "MeasuredTime" in table else table["Time"]  # the real run times
        timed = times.dropna()  # a case the harness failed on has no time
        value, passed = "not measured", None
        if len(timed):
            projected = float(timed.mean()) * rules.set_cases
            value, passed = f"{projected / 3600:.2f} h projected from {len(timed)} case(s)", projected <= rules.set_time_s
        checks.append({"limit": f"{rules.set_cases} cases within {rules.set_time_s / 3600:g} h", "source": "both",
                       "value": value, "passed": passed})
    for bound, official, tree, what in ((rules.set_gpu_mb, "MaxGPU_Mem", "MaxGPU_Mem_Tree", "GPU memory"),
                                        (rules.set_ram_mb, "MaxRAM", "MaxRAM_Tree", "RAM")):
        if bound:
            peaks = table[official]
            if official == "MaxGPU_Mem" and "PlainMaxGPU_Mem" in table:  # no stable level (memory kept rising):
                peaks = peaks.fillna(table["PlainMaxGPU_Mem"])  # measured all the same, never "not measured"
            checks.append(_limit_check(f"{what} at most {bound:g} MB", plain_max(peaks), bound,
                                       "system-wide (official)"))
            checks.append(_limit_check(f"{what} at most {bound:g} MB", plain_max(table[tree]), bound, "process tree"))
    failed_cases = int(table["Status"].map(is_failed).sum()) if n else 0
    checks.append({"limit": VALID_OUTPUTS, "source": "both",
                   "value": f"{failed_cases} case(s) did not", "passed": failed_cases == 0})
    if planned is not None and n < planned:
        checks.append({"limit": EVERY_CASE_RUN, "source": "both", "value": f"{n} of {planned} case(s) run",
                       "passed": False})

    def passed(source: str) -> bool:
        return all(c["passed"] is not False for c in checks if c["source"] in (source, "both"))

    return {"passed": passed("system-wide (official)"), "passed_process_tree": passed("process tree"),
            "checks": checks}


def limit_problems(verdict: dict) -> list[str]:
    """One line per failed check of set_verdict's verdict, for the run's problems; the check that
    every case produces a valid output is left out (each failed case is a problem of its own)."""
    return [f"only {c['value']}" if c["limit"] == EVERY_CASE_RUN else
            f"limit not met: {c['limit']}" + ("" if c["source"] == "both" else f" ({c['source']})") + f": {c['value']}"
            for c in verdict["checks"] if c["passed"] is False and c["limit"] != VALID_OUTPUTS]
