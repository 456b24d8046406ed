"""The organisers' whole flow for one submission: efficiency, then accuracy, then one report.

    python -m evaluation.run --inputs IMAGES --gt LABELS --out DIR (--image NAME | --command CMD)
        [--rules flare21|flare22|flare23] [--gpu N] [--interval 0.1] [--timeout S]

Writes DIR/efficiency/ (evaluation.efficiency), DIR/accuracy/ (evaluation.score on the
predictions the runs produced; a case without a valid output is scored as empty), and
DIR/results.csv (one row per case: the accuracy and efficiency columns joined, with the case's
mean DSC and NSD over organs), DIR/summary.json, PNG plots and DIR/report.html. Where the year
gives stuck cases fixed values (FLARE22), a timed-out case also gets DSC 0 and NSD 0 for every
organ in results.csv and the summaries.
Exit code: 0 every case ran and scored cleanly, 1 otherwise, 2 usage error.
"""
from __future__ import annotations

import argparse
import html
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from evaluation import efficiency, score  # noqa: E402
from evaluation.report import SUMMARY_COLUMNS, summarise, summary_json, write_atomic  # noqa: E402
from evaluation.rules import DEFAULT_RULES, RULES, Rules, get_rules  # noqa: E402
from evaluation.usage import OFFICIAL_COLUMNS  # noqa: E402

SLOWEST_PLOTTED = 3


def case_means(metrics: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """Per case, the mean DSC and NSD over the organs counted in the organ mean."""
    organs = [o for o in rules.organs if o.in_mean]
    return pd.DataFrame({
        "Name": metrics["Name"],
        "DSC_mean": metrics[[rules.dsc_column(o) for o in organs]].mean(axis=1, skipna=True),
        "NSD_mean": metrics[[rules.nsd_column(o) for o in organs]].mean(axis=1, skipna=True),
    })


def join_results(metrics: pd.DataFrame, usage: pd.DataFrame, rules: Rules) -> pd.DataFrame:
    """One row per ground-truth case: Name, mean DSC/NSD, efficiency columns, accuracy columns."""
    joined = case_means(metrics, rules).merge(usage, on="Name", how="left")
    return joined.merge(metrics, on="Name", how="left")


def plot_accuracy(metrics: pd.DataFrame, rules: Rules, path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(max(8, len(rules.organs) * 1.1), 4.5), sharey=True)
    for ax, metric, column in ((axes[0], "DSC", rules.dsc_column), (axes[1], "NSD", rules.nsd_column)):
        data = [metrics[column(o)].dropna().to_numpy() for o in rules.organs]
        ax.boxplot(data, tick_labels=[o.key if len(o.key) > 1 else o.name for o in rules.organs])
        ax.set_title(f"{metric} per organ ({len(metrics)} cases)")
        ax.tick_params(axis="x", rotation=45)
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time(usage: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(usage)), 4))
    colours = ["tab:blue" if s == "ok" else "tab:red" for s in usage["Status"]]
    ax.bar(range(len(usage)), usage["Time"], color=colours)
    ax.set_xticks(range(len(usage)), [n.removesuffix(".nii.gz") for n in usage["Name"]], rotation=90, fontsize=7)
    ax.set_ylabel("wall time per case (s)")
    ax.set_title("Time per case (red: not ok)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_memory(usage: pd.DataFrame, samples_dir: Path, path: Path) -> None:
    """GPU memory (NVML) and system RAM over time for the slowest cases."""
    fig, (gpu_ax, ram_ax) = plt.subplots(1, 2, figsize=(11, 4))
    measured = usage["MaxGPU_Mem"].notna().any()
    for name in usage.sort_values("Time", ascending=False)["Name"].head(SLOWEST_PLOTTED):
        samples = pd.read_csv(samples_dir / f"{name.removesuffix('.nii.gz')}.csv")
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


def _table_html(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="", border=0, classes="t")


def report_html(summary: dict, results: pd.DataFrame, organ_table: pd.DataFrame) -> str:
    """A static page: the verdict, the summaries, the plots and the per-case table."""
    checks = "".join(f"<li>{'passed' if c['passed'] else 'not measured' if c['passed'] is None else 'FAILED'}: "
                      f"{html.escape(c['limit'])} ({html.escape(c['value'])})</li>"
                      for c in summary["verdict"]["checks"])
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>FLARE evaluation: {html.escape(summary['submission'])}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table.t{{border-collapse:collapse;font-size:12px}}
table.t td,table.t th{{border-bottom:1px solid #ddd;padding:2px 6px;text-align:right}} img{{max-width:100%}}</style>
</head><body>
<h1>FLARE evaluation ({html.escape(summary['rules'])})</h1>
<p>Submission: <code>{html.escape(summary['submission'])}</code>; {summary['cases']} case(s),
{summary['not_ok']} not ok; mean DSC {summary['mean_dsc']:.4f}, mean NSD {summary['mean_nsd']:.4f};
mean time {summary['mean_time_s']:.1f} s per case.</p>
<h2>Limits of the rules</h2><ul>{checks}</ul>
<h2>Accuracy per organ</h2>{_table_html(organ_table)}<img src="accuracy.png" alt="DSC and NSD per organ">
<h2>Efficiency</h2><img src="time.png" alt="time per case"><img src="memory.png" alt="memory over time">
<h2>Per case</h2>{_table_html(results)}
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.run",
                                     description="Efficiency, then accuracy, of one submission; one report.")
    parser.add_argument("--inputs", required=True, type=Path, help="folder of <case>_0000.nii.gz images")
    parser.add_argument("--gt", required=True, type=Path, help="folder of ground-truth <case>.nii.gz")
    parser.add_argument("--out", "-o", required=True, type=Path)
    how = parser.add_mutually_exclusive_group(required=True)
    how.add_argument("--image")
    how.add_argument("--command")
    parser.add_argument("--rules", choices=sorted(RULES), default=DEFAULT_RULES)
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--interval", type=float, default=0.1)
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--docker", default="docker")
    args = parser.parse_args(argv)
    if not args.gt.is_dir():
        parser.error(f"--gt {args.gt}: not a folder")
    rules = get_rules(args.rules)
    how_args = ["--image", args.image] if args.image else ["--command", args.command]
    efficiency_code = efficiency.main(["--inputs", str(args.inputs), "--out", str(args.out / "efficiency"), *how_args,
                                       "--rules", args.rules, "--gpu", str(args.gpu), "--interval", str(args.interval),
                                       "--timeout", str(args.timeout), "--docker", args.docker])
    score_code = score.main(["--gt", str(args.gt), "--pred", str(args.out / "efficiency" / "predictions"),
                             "--out", str(args.out / "accuracy"), "--rules", args.rules])

    metrics = pd.read_csv(args.out / "accuracy" / "metrics.csv")
    usage = pd.read_csv(args.out / "efficiency" / "efficiency.csv")
    stuck = usage.loc[usage["Status"].eq("timeout"), "Name"].tolist() if rules.efficiency.stuck else []
    metrics.loc[metrics["Name"].isin(stuck), rules.metric_columns()] = 0.0  # the year's rule for stuck cases
    results = join_results(metrics, usage, rules)
    organ_rows = summarise(metrics.to_dict("records"), rules)
    accuracy = json.loads(summary_json(organ_rows, rules, len(metrics), [], []))
    scored = json.loads((args.out / "accuracy" / "summary.json").read_text())
    effort = json.loads((args.out / "efficiency" / "efficiency.json").read_text())
    summary = {
        "rules": rules.name, "submission": args.image or args.command, "cases": len(results),
        "not_ok": effort["not_ok"], "mean_dsc": float(results["DSC_mean"].mean()),
        "mean_nsd": float(results["NSD_mean"].mean()), "mean_time_s": float(usage["Time"].mean()),
        "mean_over_organs": accuracy["mean_over_organs"], "organs": accuracy["organs"],
        "efficiency_means": {c: _nan_to_none(usage[c].mean()) for c in OFFICIAL_COLUMNS[1:]},
        "verdict": effort["verdict"], "accuracy_problems": scored["problems"], "stuck_cases_scored_0": stuck,
    }
    write_atomic(args.out / "results.csv", results.to_csv(index=False))
    write_atomic(args.out / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_accuracy(metrics, rules, args.out / "accuracy.png")
    plot_time(usage, args.out / "time.png")
    plot_memory(usage, args.out / "efficiency" / "samples", args.out / "memory.png")
    organ_table = pd.DataFrame(organ_rows, columns=SUMMARY_COLUMNS)
    write_atomic(args.out / "report.html", report_html(summary, results, organ_table))
    print(f"report: {args.out / 'report.html'}")
    return 0 if efficiency_code == 0 and score_code == 0 else 1


def _nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


if __name__ == "__main__":
    sys.exit(main())
