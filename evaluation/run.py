"""The organisers' whole flow for one submission: efficiency, then accuracy, then one report.

    flare-run --inputs IMAGES --gt LABELS --out DIR (--image NAME | --command CMD)   (or python -m evaluation.run)
        [--name TEAM] [--rules flare21|flare22|flare23] [--gpu auto|N|none] [--interval 0.1] [--timeout S]
        [--memory SIZE] [--isolated] [--failures official|penalised] [--baseline 1] [--busy-cpu 10]

Writes DIR/efficiency/ (evaluation.efficiency), DIR/accuracy/ (evaluation.score on the
predictions the runs produced; a case without a valid output is scored as empty), and
DIR/results.csv (one row per ground-truth case: the accuracy and efficiency columns joined, with
the case's mean DSC and NSD over organs; a ground truth without an input image is a failed case,
status no-input), DIR/summary.json (with the team's name, the rules year, the failure policy and
every problem), PNG plots and DIR/report.html. Where the year gives stuck cases fixed values
(FLARE22), a case that gets them (every failed case; only timeouts with `--failures official`)
also gets DSC 0 and NSD 0 for every organ in results.csv and the summaries: the accuracy table
printed at the end is that one, as in results.csv and summary.json, while DIR/accuracy/ keeps the
scores of the outputs as written (the table printed says so when they differ).
Exit code: 0 every case ran and scored cleanly and no limit of the year failed; 1 otherwise (every
problem is listed: failed cases, limits not met, failed readings, the scorer's problems); 2 usage
error (before anything runs); 130 interrupted; 143 terminated (SIGTERM).
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from evaluation import efficiency, score  # noqa: E402
from evaluation.report import (  # noqa: E402
    ALL_CASES,
    SUMMARY_COLUMNS,
    cases_with_problems,
    json_number,
    summarise,
    summary_json,
)
from evaluation.report_page import organ_header, report_html  # noqa: E402
from evaluation.rules import Rules, get_rules  # noqa: E402
from evaluation.sampler import COLUMNS  # noqa: E402
from evaluation.usage import (  # noqa: E402
    EXTRA_COLUMNS,
    OFFICIAL_COLUMNS,
    case_figures,
    is_failed,
    measurement_of,
    set_verdict,
)
from flare_common import cli  # noqa: E402
from flare_common.files import write_atomic  # noqa: E402
from flare_common.nifti import case_stem  # noqa: E402

SLOWEST_PLOTTED = 3


def named_as_ground_truth(usage: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """The efficiency rows with each case named as its ground truth's file (efficiency names an
    output <case>.nii.gz; a ground truth may be <case>.nii), so that the two join on the case."""
    by_stem = {case_stem(name): name for name in metrics["Name"]}  # case.nii.gz and case.nii are one case
    return usage.assign(Name=[by_stem.get(case_stem(name), name) for name in usage["Name"]])


def join_results(metrics: pd.DataFrame, usage: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row per ground-truth case: Name, mean DSC/NSD, efficiency columns, accuracy columns."""
    joined = rules.case_means(metrics).merge(usage, on="Name", how="left")
    return joined.merge(metrics, on="Name", how="left")


def plot_accuracy(metrics: pd.DataFrame, rules: Rules, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(max(8, len(rules.organs) * 1.1), 4.5), sharey=True)
    for ax, metric, column in ((axes[0], "DSC", rules.dsc_column), (axes[1], "NSD", rules.nsd_column)):
        data = [metrics[column(o)].dropna().to_numpy() for o in rules.organs]
        ax.boxplot(data, tick_labels=[organ_header(o) for o in rules.organs])
        ax.set_title(f"{metric} per organ ({len(metrics)} cases)")
        ax.tick_params(axis="x", rotation=45)
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(usage: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(usage)), 4))
    colours = ["tab:blue" if s == "ok" else "tab:red" for s in usage["Status"]]
    ax.bar(range(len(usage)), usage["MeasuredTime"], color=colours)
    ax.set_xticks(range(len(usage)), [case_stem(n) for n in usage["Name"]], rotation=90, fontsize=7)
    ax.set_ylabel("measured wall time per case (s)")
    ax.set_title("Time per case as measured (red: failed)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(usage: pd.DataFrame, samples_dir: Path, path: Path) -> None:
    """GPU memory (NVML) and system RAM over time for the slowest cases."""
    fig, (gpu_ax, ram_ax) = plt.subplots(1, 2, figsize=(11, 4))
    measured = usage["MaxGPU_Mem"].notna().any()
    for name in usage.sort_values("MeasuredTime", ascending=False)["Name"].head(SLOWEST_PLOTTED):
        samples = pd.read_csv(samples_dir / f"{case_stem(name)}.csv")
        if measured:
            gpu_ax.plot(samples["t_s"], samples["gpu_used_mb"], marker=".", label=name)
        ram_ax.plot(samples["t_s"], samples["ram_used_mb"], marker=".", label=name)
    for ax, title in ((gpu_ax, "GPU memory used (NVML, MB)"), (ram_ax, "RAM used, system-wide (MB)")):
        ax.set_title(title)
        ax.set_xlabel("time since start (s)")
        if ax.lines:
            ax.legend(fontsize=7)
    if not measured:
        gpu_ax.text(0.5, 0.5, "not measured (no NVML)", ha="center", va="center", transform=gpu_ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def missing_inputs(metrics: pd.DataFrame, usage: pd.DataFrame, rules: Rules, policy: str) -> pd.DataFrame:
    """Efficiency rows for the ground-truth cases that had no input image: status no-input, nothing
    measured (NaN), the year's stuck values where the policy gives them."""
    names = sorted(set(metrics["Name"]) - set(usage["Name"]))
    empty = pd.DataFrame(columns=list(COLUMNS), dtype=float)
    rows = [case_figures(n, empty, math.nan, "no-input", "no input image for this ground truth", rules.efficiency,
                         policy) for n in names]
    return pd.DataFrame(rows, columns=OFFICIAL_COLUMNS + EXTRA_COLUMNS)


def run_problems(usage: pd.DataFrame, metrics: pd.DataFrame, scored: list[dict[str, str]],
                 whole_run: list[str]) -> list[dict[str, str]]:
    """Every problem of the run, one per case and cause: those of the whole efficiency run
    (`whole_run`: the year's limits not met, failed readings; case ALL_CASES), failed cases
    (efficiency), inputs without a ground truth, then the scorer's problems (`scored`)."""
    problems = [{"case": ALL_CASES, "source": "efficiency (all cases)", "problem": text} for text in whole_run]
    problems += [{"case": r.Name, "source": "efficiency", "problem": f"{r.Status}: {r.Detail}"}
                 for r in usage.itertuples() if is_failed(r.Status)]
    problems += [{"case": name, "source": "input", "problem": "input image has no ground truth: not scored"}
                 for name in sorted(set(usage["Name"]) - set(metrics["Name"]))]
    problems += [{"source": "accuracy", **p} for p in scored]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = cli.parser("python -m evaluation.run", "Efficiency, then accuracy, of one submission; one report.", [
        'flare-run --inputs example/images --gt example/labels --out example/run --command "sh predict.sh {inputs} '
        '{outputs}"',
        "flare-run --inputs images/ --gt labels/ --out teams/alpha --name alpha --image alpha:latest --rules flare22",
        "flare-rank teams/alpha teams/beta --html leaderboard.html   # then rank the teams"])
    parser.add_argument("--inputs", required=True, type=Path, metavar="DIR",
                        help="folder of <case>_0000.nii.gz images (required)")
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="folder of ground-truth <case>.nii.gz (required)")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR",
                        help="folder for efficiency/, accuracy/, results.csv, summary.json and report.html (required)")
    parser.add_argument("--name",
                        help="the team's name in the report and the ranking (default: the --out folder's name)")
    efficiency.add_run_arguments(parser)
    args = parser.parse_args(argv)
    cases = efficiency.check_run_arguments(parser, args, args.out / "efficiency" / "predictions")  # flare-run's usage
    gt_files = score.ground_truth_files(parser, args.gt)
    cli.refuse_unwritable(parser, "--out", args.out, folder=True)
    team = args.name or args.out.resolve().name
    rules = get_rules(args.rules)
    efficiency_code = efficiency.run(args, cases, args.out / "efficiency")
    scored = score.score_folders(gt_files, args.out / "efficiency" / "predictions",
                                 args.out / "accuracy", rules)

    metrics = pd.read_csv(args.out / "accuracy" / "metrics.csv")
    usage = pd.read_csv(args.out / "efficiency" / "efficiency.csv", dtype={"Detail": str, "Machine": str})
    usage["Detail"] = usage["Detail"].fillna("")
    usage = named_as_ground_truth(usage, metrics)
    absent = missing_inputs(metrics, usage, rules, args.failures)
    if len(absent):
        usage = pd.concat([usage, absent], ignore_index=True)
    penalised = usage.loc[usage["Penalised"].astype(bool), "Name"].tolist()
    metrics.loc[metrics["Name"].isin(penalised), rules.metric_columns()] = 0.0  # the year's rule for stuck cases
    results = join_results(metrics, usage, rules)
    organ_rows = summarise(metrics.to_dict("records"), rules)
    accuracy = json.loads(summary_json(organ_rows, rules, len(metrics), [], []))
    effort = json.loads((args.out / "efficiency" / "efficiency.json").read_text())
    scored_usage = usage[usage["Name"].isin(metrics["Name"])]
    problems = run_problems(usage, metrics, scored.problems, effort.get("problems", []))
    scored_0 = sorted(set(penalised) & set(metrics["Name"]))
    summary = {
        "team": team, "rules": rules.name, "failures": args.failures, "submission": args.image or args.command,
        "cases": len(results), "not_ok": int(scored_usage["Status"].map(is_failed).sum()),
        "mean_dsc": json_number(results["DSC_mean"].mean()), "mean_nsd": json_number(results["NSD_mean"].mean()),
        "mean_time_s": json_number(scored_usage["Time"].mean()),  # the official Time: stuck cases at the year's value
        "mean_measured_time_s": json_number(scored_usage["MeasuredTime"].mean()),
        "mean_over_organs": accuracy["mean_over_organs"], "organs": accuracy["organs"],
        "efficiency_means": {c: json_number(scored_usage[c].mean()) for c in OFFICIAL_COLUMNS[1:]},
        "verdict": set_verdict(usage, rules.efficiency), "busy_cases": effort.get("busy_cases", []),
        "cases_with_problems": cases_with_problems(problems), "problems": problems,
        "accuracy_warnings": scored.warnings, "failed_cases_scored_0": scored_0,
        "measurement": measurement_of(effort),
    }
    write_atomic(args.out / "results.csv", results.to_csv(index=False))
    write_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_accuracy(metrics, rules, args.out / "accuracy.png")
    plot_time(usage, args.out / "time.png")
    plot_memory(usage[usage["Status"] != "no-input"], args.out / "efficiency" / "samples", args.out / "memory.png")
    organ_table = pd.DataFrame(organ_rows, columns=SUMMARY_COLUMNS)
    logs = {p.name for p in (args.out / "efficiency" / "logs").glob("*.log")}
    write_atomic(args.out / "report.html", report_html(summary, results, organ_table, rules, logs))
    print(accuracy_title(rules, scored_0))
    score.print_summary(organ_rows, len(metrics), problems, scored.warnings, args.out)
    print(f"report: {args.out / 'report.html'}")
    return 0 if efficiency_code == 0 and not problems else 1


def accuracy_title(rules: Rules, scored_0: list[str]) -> str:
    """The line over the accuracy table flare-run prints: which numbers it shows."""
    if not scored_0:
        return "accuracy (as in results.csv, summary.json and accuracy/):"
    return (f"accuracy with the {rules.name} rule for stuck cases ({len(scored_0)} case(s) scored 0), as in results.csv "
            "and summary.json (accuracy/ holds the scores of the outputs as written):")


if __name__ == "__main__":
    sys.exit(cli.run(main))
