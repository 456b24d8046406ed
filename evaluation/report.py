"""Summaries of per-case metrics and atomic writing of result files."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.rules import Rules


MEAN_OVER_ORGANS = "mean over organs"


def _json_number(value: float) -> float | None:
    """A float for JSON; NaN becomes None (null)."""
    value = float(value)
    return None if math.isnan(value) else value


def write_atomic(path: Path, text: str) -> None:
    """Write text to path so that readers see either the old file or the complete new one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _stats(values: pd.Series) -> dict[str, float | int]:
    """mean, std (population), median, min and count of the finite values (NaN where none)."""
    v = values.to_numpy(dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "std": math.nan, "median": math.nan, "min": math.nan, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std()),
        "median": float(np.median(v)),
        "min": float(v.min()),
        "n": int(v.size),
    }


def summarise(metrics: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row per organ and metric (DSC, NSD) with mean, std, median, min and n over cases,
    then the mean over organs (organs with in_mean only) of the per-organ means."""
    rows = []
    for organ in rules.organs:
        for metric, column in (("DSC", rules.dsc_column(organ)), ("NSD", rules.nsd_column(organ))):
            rows.append({"organ": organ.name, "label": organ.label, "metric": metric, "column": column,
                         **_stats(metrics[column])})
    table = pd.DataFrame(rows)
    in_mean = {o.name for o in rules.organs if o.in_mean}
    for metric in ("DSC", "NSD"):
        means = table[(table.metric == metric) & table.organ.isin(in_mean)]["mean"]
        rows.append({"organ": MEAN_OVER_ORGANS, "label": 0, "metric": metric, "column": "",
                     "mean": float(means.mean()) if means.notna().any() else math.nan,
                     "std": math.nan, "median": math.nan, "min": math.nan,
                     "n": int(metrics.shape[0])})
    return pd.DataFrame(rows)


def summary_json(summary: pd.DataFrame, rules: Rules, n_cases: int,
                 problems: list[dict[str, str]], warnings: list[dict[str, str]]) -> str:
    """The summary as JSON text; NaN is written as null."""
    organs: dict[str, dict] = {}
    for row in summary.itertuples():
        stats = {k: _json_number(getattr(row, k)) for k in ("mean", "std", "median", "min")}
        stats["n"] = int(row.n)
        organs.setdefault(row.organ, {})[row.metric] = stats
    overall = organs.pop(MEAN_OVER_ORGANS)
    doc = {
        "rules": rules.name,
        "cases": n_cases,
        "cases_with_problems": len({p["case"] for p in problems}),
        "organs": organs,
        "mean_over_organs": {metric: stats["mean"] for metric, stats in overall.items()},
        "problems": problems,
        "warnings": warnings,
    }
    return json.dumps(doc, indent=2) + "\n"
