"""What changed between two evaluations of a submission: status, accuracy per organ and case, efficiency.

    flare-compare BEFORE AFTER [--top 5] [--out comparison.json]   (or python -m evaluation.compare)

BEFORE and AFTER are folders written by `python -m evaluation.run` (or by `evaluation.score`
alone, then without status and efficiency). The rules are recognised from the metrics' columns.
Printed first: the cases whose status changed (e.g. ok -> crashed). Then the per-organ means over
the cases scored in both runs (those scored in only one are named, not compared), the cases whose
mean DSC fell and those whose mean DSC rose (a list says "none" rather than show cases of the
other kind), and the efficiency means over the cases ok in both runs only, so that cases that
stopped succeeding never read as a faster submission. Exit code 0; 2 usage error (two runs with no
case in common included).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from evaluation.report import json_number
from evaluation.rules import RULES, Rules
from evaluation.usage import OFFICIAL_COLUMNS, measurement_differences, recorded_measurement
from flare_common import cli
from flare_common.errors import describe_error
from flare_common.files import write_atomic


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame | None, Rules]:
    """(metrics.csv, results.csv or None, the year its columns are) of a result folder;
    ValueError naming the file for one that is missing, unreadable or of no FLARE year."""
    for metrics in (folder / "accuracy" / "metrics.csv", folder / "metrics.csv"):
        if metrics.is_file():
            results = folder / "results.csv"
            try:
                table, usage = pd.read_csv(metrics), pd.read_csv(results) if results.is_file() else None
            except (OSError, ValueError) as exc:  # pandas' parser errors are ValueErrors
                raise ValueError(f"{folder}: unreadable CSV ({describe_error(exc)})") from exc
            rules = rules_of(table)
            if rules is None:
                raise ValueError(f"{metrics}: its columns match no FLARE year")
            columns = ["Name", *rules.metric_columns()]
            if usage is not None and not {"Name", "Status", *OFFICIAL_COLUMNS} <= set(usage.columns):
                raise ValueError(f"{results}: not evaluation.run's results (it lacks the Status or efficiency columns)")
            if usage is not None and set(columns) <= set(usage.columns):  # evaluation.run's: failed cases as scored
                table = usage[columns]  # there (FLARE22's stuck cases 0), not as the scorer saw their outputs
            return table, usage, rules
    raise ValueError(f"{folder}: no metrics.csv (from evaluation.run or evaluation.score)")


def rules_of(metrics: pd.DataFrame) -> Rules | None:
    """The year whose official columns metrics.csv has, None if none."""
    for rules in RULES.values():
        if list(metrics.columns[1:]) == rules.metric_columns():
            return rules
    return None


def status_changes(usage_before: pd.DataFrame, usage_after: pd.DataFrame) -> list[dict]:
    """Cases whose Status differs between the runs (a case absent from one run reads "absent")."""
    joined = usage_before[["Name", "Status"]].merge(usage_after[["Name", "Status"]], on="Name", how="outer",
                                                    suffixes=("_before", "_after"))
    joined = joined.fillna({"Status_before": "absent", "Status_after": "absent"})
    changed = joined[joined["Status_before"] != joined["Status_after"]].sort_values("Name")
    return [{"Name": r.Name, "before": r.Status_before, "after": r.Status_after,
             "change": "stopped succeeding" if r.Status_before == "ok" else
                       "started succeeding" if r.Status_after == "ok" else "failed differently"}
            for r in changed.itertuples()]


def efficiency_changes(usage_before: pd.DataFrame, usage_after: pd.DataFrame) -> dict:
    """Mean official efficiency figures over the cases ok in both runs only (a case that stopped
    succeeding must not make the submission look faster), each change called better or worse
    (every figure: lower is better)."""
    ok = usage_before.loc[usage_before["Status"] == "ok", "Name"]
    ok = sorted(set(ok) & set(usage_after.loc[usage_after["Status"] == "ok", "Name"]))
    result = {"cases_ok_in_both": len(ok), "figures": {}}
    b_rows, a_rows = usage_before.set_index("Name").loc[ok], usage_after.set_index("Name").loc[ok]
    for column in OFFICIAL_COLUMNS[1:]:
        b, a = (json_number(rows[column].mean()) if len(ok) else None for rows in (b_rows, a_rows))
        change = None if b is None or a is None else a - b
        verdict = None if change is None else "better" if change < 0 else "worse" if change > 0 else "same"
        result["figures"][column] = {"before": b, "after": a, "change": change, "verdict": verdict}
    return result


def compare(before: pd.DataFrame, after: pd.DataFrame, rules: Rules, top: int,
            usage_before: pd.DataFrame | None = None, usage_after: pd.DataFrame | None = None) -> dict:
    """Status changes (first: they matter most); per-organ mean DSC/NSD before, after and change
    over the cases scored in both runs, and the cases scored in only one; the cases whose mean DSC
    fell most and those whose mean DSC rose most (each list holds only such cases); mean
    efficiency figures over the cases ok in both runs."""
    only_before, only_after = sorted(set(before["Name"]) - set(after["Name"])), sorted(set(after["Name"]) - set(before["Name"]))
    before, after = before[~before["Name"].isin(only_before)], after[~after["Name"].isin(only_after)]
    organs = []
    for organ in rules.organs:
        row = {"organ": organ.name}
        for metric, column in (("DSC", rules.dsc_column(organ)), ("NSD", rules.nsd_column(organ))):
            b, a = before[column].mean(), after[column].mean()
            row.update({f"{metric}_before": json_number(b), f"{metric}_after": json_number(a),
                        f"{metric}_change": json_number(a - b)})
        organs.append(row)
    cases = rules.case_means(before).merge(rules.case_means(after), on="Name", suffixes=("_before", "_after"))
    cases["DSC_change"] = cases["DSC_mean_after"] - cases["DSC_mean_before"]
    cases["NSD_change"] = cases["NSD_mean_after"] - cases["NSD_mean_before"]
    fell = cases[cases["DSC_change"] < 0].sort_values("DSC_change", kind="stable").head(top)
    rose = cases[cases["DSC_change"] > 0].sort_values("DSC_change", ascending=False, kind="stable").head(top)
    result = {"rules": rules.name, "cases_compared": len(cases), "only_before": only_before, "only_after": only_after,
              "status_changes": None, "organs": organs,  # None: a run of scores only
              "dsc_fell": json.loads(fell.to_json(orient="records")),
              "dsc_rose": json.loads(rose.to_json(orient="records")),
              "dsc_unchanged": int((cases["DSC_change"] == 0).sum()), "efficiency": {}}
    if usage_before is not None and usage_after is not None:
        result["status_changes"] = status_changes(usage_before, usage_after)
        result["efficiency"] = efficiency_changes(usage_before, usage_after)
    return result


def _print(result: dict) -> None:
    changes = result["status_changes"]
    stopped = [c for c in changes or [] if c["change"] == "stopped succeeding"]
    if changes is None:
        print("status changes: not compared (a run of scores only: no efficiency results)")
    else:
        print(f"status changes ({len(changes)}" + (f", {len(stopped)} stopped succeeding" if stopped else "") + "):")
        for c in changes:
            print(f"  {c['Name']}: {c['before']} -> {c['after']} ({c['change']})")
        if not changes:
            print("  none")
    for key, which in (("only_before", "BEFORE"), ("only_after", "AFTER")):
        if result[key]:
            print(f"\nnot compared: {len(result[key])} case(s) scored in {which} only: {', '.join(result[key])}")
    print(f"\n{'organ':<22}{'DSC before':>11}{'after':>8}{'change':>9}{'NSD before':>12}{'after':>8}{'change':>9}")
    fmt = lambda v, sign="": "" if v is None else f"{v:{sign}.4f}"  # noqa: E731
    for o in result["organs"]:
        print(f"{o['organ']:<22}{fmt(o['DSC_before']):>11}{fmt(o['DSC_after']):>8}{fmt(o['DSC_change'], '+'):>9}"
              f"{fmt(o['NSD_before']):>12}{fmt(o['NSD_after']):>8}{fmt(o['NSD_change'], '+'):>9}")
    for key, title in (("dsc_fell", "cases whose mean DSC fell (most first)"),
                       ("dsc_rose", "cases whose mean DSC rose (most first)")):
        print(f"\n{title}, of {result['cases_compared']}:")
        for c in result[key]:
            print(f"  {c['Name']}: DSC {c['DSC_mean_before']:.4f} -> {c['DSC_mean_after']:.4f} "
                  f"({c['DSC_change']:+.4f}), NSD {c['NSD_change']:+.4f}")
        if not result[key]:
            print("  none")
    if result["efficiency"]:
        eff = result["efficiency"]
        if eff.get("measured_differently"):
            print(f"\nwarning: the runs' efficiency was measured differently ({'; '.join(eff['measured_differently'])}): "
                  "the changes below are partly the settings'")
        print(f"\nefficiency, means over the {eff['cases_ok_in_both']} case(s) ok in both runs"
              + (f" ({len(stopped)} case(s) that stopped succeeding are not compared: that is no progress)"
                 if stopped else "") + ":")
        for column, v in eff["figures"].items():
            if v["change"] is not None:
                print(f"  {column:<20} {v['before']:>12.2f} -> {v['after']:>12.2f} "
                      f"({v['change']:+.2f}, {v['verdict']})")


def _measurement(folder: Path) -> dict | None:
    """How a run folder's efficiency was measured (usage.recorded_measurement), None if unknown."""
    try:
        summary = json.loads((folder / "summary.json").read_text())
    except (OSError, ValueError):
        summary = {}
    return recorded_measurement(folder, summary if isinstance(summary, dict) else {})


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m evaluation.compare", __doc__.split("\n")[0], [
        "flare-compare runs/monday runs/tuesday",
        "flare-compare scores/before scores/after --top 10 --out comparison.json"])
    parser.add_argument("before", type=Path, metavar="BEFORE", help="result folder of the earlier run")
    parser.add_argument("after", type=Path, metavar="AFTER", help="result folder of the later run")
    parser.add_argument("--top", type=cli.at_least(1), default=5,
                        help="how many cases to list in each of the fell and rose lists (default 5)")
    parser.add_argument("--out", type=Path, metavar="FILE.json", help="write the comparison as JSON here (default: none)")
    args = parser.parse_args(argv)
    cli.refuse_unwritable(parser, "--out", args.out, folder=False)
    try:
        (before, usage_before, rules), (after, usage_after, rules_after) = load(args.before), load(args.after)
        if rules is not rules_after:
            raise ValueError(f"{args.before} and {args.after} were scored under different rules "
                             f"({rules.name}, {rules_after.name})")
        if not set(before["Name"]) & set(after["Name"]):
            raise ValueError(f"{args.before} and {args.after} have no case in common: nothing to compare")
    except ValueError as exc:
        parser.error(str(exc))
    result = {"before": str(args.before), "after": str(args.after),
              **compare(before, after, rules, args.top, usage_before, usage_after)}
    if result["efficiency"]:
        result["efficiency"]["measured_differently"] = measurement_differences(
            {"BEFORE": _measurement(args.before), "AFTER": _measurement(args.after)})
    if args.out:
        write_atomic(args.out, json.dumps(result, indent=2) + "\n")
    _print(result)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
