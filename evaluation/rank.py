"""Rank teams the organisers' way: per case and metric, then averaged.

    python -m evaluation.rank RESULT_DIR... [--rules flare21|flare22|flare23] [--out ranking.csv]

Each RESULT_DIR is a folder written by `python -m evaluation.run` (its results.csv); the team is
the folder's name. For every case and every metric of the year (FLARE21: DSC, NSD, time, max GPU
memory; FLARE22: DSC, NSD, time, and the GPU and CPU areas at half weight; FLARE23: DSC, NSD,
time, GPU area) the teams are ranked (1 = best; ties share the average rank; a missing value
ranks last); each team's ranks are averaged over cases per metric, then over metrics with the
weights, and the teams are ordered by that score (lower is better). DSC and NSD are a case's
means over organs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from evaluation.report import write_atomic
from evaluation.rules import DEFAULT_RULES, RULES, get_rules

HIGHER_IS_BETTER = {"DSC", "NSD"}
COLUMN = {"DSC": "DSC_mean", "NSD": "NSD_mean"}  # other metrics are results.csv columns of their name


def rank_teams(per_case: dict[str, pd.DataFrame], weights: dict[str, float]) -> pd.DataFrame:
    """One row per team: mean rank per metric (rank_<metric>), weighted score, position."""
    teams = list(per_case)
    cases = sorted(set.intersection(*(set(t["Name"]) for t in per_case.values())))
    rows = {team: {"team": team} for team in teams}
    for metric in weights:
        column = COLUMN.get(metric, metric)
        values = pd.DataFrame({team: per_case[team].set_index("Name").loc[cases, column] for team in teams})
        ranks = values.rank(axis=1, ascending=metric not in HIGHER_IS_BETTER, method="average")
        ranks = ranks.fillna(len(teams))  # no value (crash, not measured): last
        for team in teams:
            rows[team][f"rank_{metric}"] = float(ranks[team].mean())
    table = pd.DataFrame(rows.values())
    total = sum(weights.values())
    table["score"] = sum(w * table[f"rank_{m}"] for m, w in weights.items()) / total
    table = table.sort_values("score", kind="stable").reset_index(drop=True)
    table["position"] = table["score"].rank(method="min").astype(int)
    table["cases"] = len(cases)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.rank", description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="result folders of evaluation.run, one per team")
    parser.add_argument("--rules", choices=sorted(RULES), default=DEFAULT_RULES)
    parser.add_argument("--out", type=Path, help="write the ranking as CSV here")
    args = parser.parse_args(argv)
    per_case = {}
    for folder in args.folders:
        results = folder / "results.csv"
        if not results.is_file():
            parser.error(f"{folder}: no results.csv (run python -m evaluation.run first)")
        per_case[folder.resolve().name] = pd.read_csv(results)
    if len(per_case) < 2:
        parser.error("need at least two distinct team folders")
    table = rank_teams(per_case, get_rules(args.rules).efficiency.rank_weights)
    if args.out:
        write_atomic(args.out, table.to_csv(index=False))
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
