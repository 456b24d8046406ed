"""What changed between two evaluations of a submission: accuracy per organ, worst cases, efficiency.

    python -m evaluation.compare BEFORE AFTER [--top 5] [--out comparison.json]

BEFORE and AFTER are folders written by `python -m evaluation.run` (or by `evaluation.score`
alone, then without efficiency). The rules are recognised from the metrics' columns.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from evaluation.report import write_atomic
from evaluation.rules import RULES, Rules
from evaluation.run import case_means
from evaluation.usage import OFFICIAL_COLUMNS


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(metrics.csv, results.csv or None) of a result folder."""
    for metrics in (folder / "accuracy" / "metrics.csv", folder / "metrics.csv"):
        if metrics.is_file():
            results = folder / "results.csv"
            return pd.read_csv(metrics), pd.read_csv(results) if results.is_file() else None
    raise FileNotFoundError(f"{folder}: no metrics.csv (from evaluation.run or evaluation.score)")


def rules_of(metrics: pd.DataFrame) -> Rules:
    for rules in RULES.values():
        if list(metrics.columns[1:]) == rules.metric_columns():
            return rules
    raise ValueError("metrics.csv columns match no FLARE year")


def _number(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def compare(before: pd.DataFrame, after: pd.DataFrame, rules: Rules, top: int,
            usage_before: pd.DataFrame | None = None, usage_after: pd.DataFrame | None = None) -> dict:
    """Per-organ mean DSC/NSD before, after and change; the cases whose mean DSC fell most;
    mean efficiency figures before, after and change."""
    organs = []
    for organ in rules.organs:
        row = {"organ": organ.name}
        for metric, column in (("DSC", rules.dsc_column(organ)), ("NSD", rules.nsd_column(organ))):
            b, a = before[column].mean(), after[column].mean()
            row.update({f"{metric}_before": _number(b), f"{metric}_after": _number(a), f"{metric}_change": _number(a - b)})
        organs.append(row)
    cases = case_means(before, rules).merge(case_means(after, rules), on="Name", suffixes=("_before", "_after"))
    cases["DSC_change"] = cases["DSC_mean_after"] - cases["DSC_mean_before"]
    cases["NSD_change"] = cases["NSD_mean_after"] - cases["NSD_mean_before"]
    worst = cases.sort_values("DSC_change", kind="stable").head(top)
    result = {"rules": rules.name, "cases_compared": len(cases), "organs": organs,
              "worst_cases": json.loads(worst.to_json(orient="records")), "efficiency": {}}
    if usage_before is not None and usage_after is not None:
        for column in OFFICIAL_COLUMNS[1:]:
            b, a = usage_before[column].mean(), usage_after[column].mean()
            result["efficiency"][column] = {"before": _number(b), "after": _number(a), "change": _number(a - b)}
    return result


def _print(result: dict) -> None:
    print(f"{'organ':<22}{'DSC before':>11}{'after':>8}{'change':>9}{'NSD before':>12}{'after':>8}{'change':>9}")
    fmt = lambda v, sign="": "" if v is None else f"{v:{sign}.4f}"  # noqa: E731
    for o in result["organs"]:
        print(f"{o['organ']:<22}{fmt(o['DSC_before']):>11}{fmt(o['DSC_after']):>8}{fmt(o['DSC_change'], '+'):>9}"
              f"{fmt(o['NSD_before']):>12}{fmt(o['NSD_after']):>8}{fmt(o['NSD_change'], '+'):>9}")
    print(f"\ncases that got worse most (mean DSC over organs), of {result['cases_compared']}:")
    for c in result["worst_cases"]:
        print(f"  {c['Name']}: DSC {c['DSC_mean_before']:.4f} -> {c['DSC_mean_after']:.4f} ({c['DSC_change']:+.4f}), "
              f"NSD {c['NSD_change']:+.4f}")
    if result["efficiency"]:
        print("\nefficiency (means per case):")
        for column, v in result["efficiency"].items():
            if v["before"] is not None and v["after"] is not None:
                print(f"  {column:<20} {v['before']:>12.2f} -> {v['after']:>12.2f} ({v['change']:+.2f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.compare", description=__doc__.split("\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--top", type=int, default=5, help="how many of the worst cases to list (default 5)")
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args(argv)
    try:
        (before, usage_before), (after, usage_after) = load(args.before), load(args.after)
        rules = rules_of(before)
        if rules is not rules_of(after):
            raise ValueError("the two folders were scored under different rules")
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    result = compare(before, after, rules, args.top, usage_before, usage_after)
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
