"""Summaries of per-case metrics as CSV and JSON text (written with flare_common.files.write_atomic).

Kept free of pandas so that the scorer starts fast; NaN is written as an empty CSV cell (as
pandas does) and as null in JSON.
"""
from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from evaluation.rules import Rules

MEAN_OVER_ORGANS = "mean over organs"
ALL_CASES = "all cases"  # the case named by a problem or warning of the whole set, not of one case
STATS = ("mean", "std", "median", "min")


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """CSV text of rows (dicts) with the given columns; floats in full precision, NaN and a column a
    row lacks as empty."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in (row.get(c, "") for c in columns)])
    return out.getvalue()


def stats(values: list[float]) -> dict[str, float | int]:
    """mean, std (population), median and min of the finite values, and their count n."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {**dict.fromkeys(STATS, math.nan), "n": 0}
    ordered = np.sort(v)  # the median as np.median gives it, whose first call imports numpy.ma (15 ms)
    median = (ordered[(v.size - 1) // 2] + ordered[v.size // 2]) / 2
    return {"mean": float(v.mean()), "std": float(v.std()), "median": float(median),
            "min": float(ordered[0]), "n": int(v.size)}


def official_round(value: float | int, digits: int) -> float | int:
    """value rounded to `digits` decimals as the official scripts' round() of a NumPy float64
    rounds (NumPy's: scaled, rounded half to even, scaled back), which differs from Python's
    round of a float on some ties (0.06425 -> 0.0642, where Python gives 0.0643). An int (a value
    set by a rule, 0 or 1) stays that int, as their round leaves it."""
    return value if isinstance(value, int) else float(np.round(np.float64(value), digits))


def summarise(metrics: list[dict], rules: Rules) -> list[dict]:
    """One row per organ and metric (DSC, NSD) with mean, std, median, min and n over the cases,
    then the mean over organs (those with in_mean) of the per-organ means."""
    rows = []
    for organ in rules.organs:
        for metric, column in (("DSC", rules.dsc_column(organ)), ("NSD", rules.nsd_column(organ))):
            rows.append({"organ": organ.name, "metric": metric, "column": column,
                         **stats([m[column] for m in metrics])})
    in_mean = {o.name for o in rules.organs if o.in_mean}
    for metric in ("DSC", "NSD"):
        means = [r["mean"] for r in rows if r["metric"] == metric and r["organ"] in in_mean]
        overall = stats(means)
        rows.append({"organ": MEAN_OVER_ORGANS, "metric": metric, "column": "",
                     **dict.fromkeys(STATS, math.nan), "mean": overall["mean"], "n": overall["n"]})
    return rows


SUMMARY_COLUMNS = ["organ", "metric", "column", *STATS, "n"]


def json_number(value: float | None) -> float | None:
    """A number for JSON: a plain float, None (null) for NaN or None."""
    return None if value is None or math.isnan(value) else float(value)


def cases_with_problems(problems: list[dict[str, str]]) -> int:
    """How many cases the problems name (a problem of the whole set, ALL_CASES, names none)."""
    return len({p["case"] for p in problems} - {ALL_CASES})


def official_scores(summary: list[dict], rules: Rules) -> dict[str, float | None]:
    """The overall figures the year's official script reports (FLARE23's scores.txt): each
    column's mean over the cases, rounded, then Organ_DSC and Organ_NSD, the means of the organs'
    rounded means (the lesion left out), rounded again (null where nothing was scored)."""
    digits = rules.official_round or 0
    out: dict[str, float | None] = {}
    for row in summary:
        if row["column"]:
            out[row["column"]] = None if math.isnan(row["mean"]) else official_round(row["mean"], digits)
    for metric, column in (("DSC", rules.dsc_column), ("NSD", rules.nsd_column)):
        means = [out[column(o)] for o in rules.organs if o.in_mean and out[column(o)] is not None]
        out[f"Organ_{metric}"] = official_round(float(np.mean(means)), digits) if means else None
    return out


def summary_json(summary: list[dict], rules: Rules, n_cases: int,
                 problems: list[dict[str, str]], warnings: list[dict[str, str]]) -> str:
    """The summary as JSON text (NaN as null)."""
    organs: dict[str, dict] = {}
    for row in summary:
        organs.setdefault(row["organ"], {})[row["metric"]] = {
            **{k: json_number(row[k]) for k in STATS}, "n": row["n"]}
    overall = organs.pop(MEAN_OVER_ORGANS)
    doc = {
        "rules": rules.name,
        "cases": n_cases,
        "cases_with_problems": cases_with_problems(problems),
        "organs": organs,
        "mean_over_organs": {metric: s["mean"] for metric, s in overall.items()},
        **({"official_scores": official_scores(summary, rules)} if rules.official_summary else {}),
        "problems": problems,
        "warnings": warnings,
    }
    return json.dumps(doc, indent=2) + "\n"
