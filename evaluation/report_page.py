"""report.html of `evaluation.run`: one team's evaluation on one page that reads at 1,400 px.

Sections: the verdict on the year's limits (system-wide and process-tree), every problem (failed
cases with links to their logs, busy-machine cases, the scorer's problems and warnings), accuracy
per organ, the plots, then the per-case tables apart: efficiency (official figures), process
tree and machine, DSC per organ, NSD per organ. Links are relative to the run's folder.
"""
from __future__ import annotations

import html
from collections.abc import Collection
from urllib.parse import quote

import pandas as pd

from evaluation import pages
from evaluation.rules import Organ, Rules
from evaluation.usage import OFFICIAL_COLUMNS, is_failed
from flare_common.nifti import case_stem

EFFICIENCY_COLUMNS = ["Name", "Status", *OFFICIAL_COLUMNS[1:], "MeasuredTime", "StableMaxGPU_Mem", "PlainMaxGPU_Mem",
                      "Detail"]
TREE_COLUMNS = ["Name", "Status", "MaxGPU_Mem_Tree", "MaxCPU_Tree", "MaxRAM_Tree", "Samples", "MeanInterval_s",
                "Machine", "BaselineCPU_pct", "BaselineRAM_MB", "BaselineGPU_MB"]


def log_href(name: str, logs: Collection[str]) -> str | None:
    """The log of a case, relative to the run's folder and percent-encoded; None for a case that
    wrote none (`logs`: the names of the logs there are; a case with no input never ran)."""
    log = f"{case_stem(name)}.log"
    return f"efficiency/logs/{quote(log)}" if log in logs else None


def organ_header(organ: Organ) -> str:
    """An organ's name in table headers and plots: the organisers' key (Liver, RK, ...), or its
    name where the key is a bare label number (FLARE21: 1 -> liver)."""
    return organ.key if len(organ.key) > 1 else organ.name


def problem_items(summary: dict, results: pd.DataFrame, logs: Collection[str]) -> list[str]:
    """Every problem of the run as escaped HTML list items: failed cases (with links to the logs
    there are), busy machine, then the scorer's problems and warnings."""
    items = []
    for _, row in results.iterrows():
        if is_failed(row.get("Status")):
            status = row.get("Status") if isinstance(row.get("Status"), str) else "no result"
            detail = row.get("Detail") if isinstance(row.get("Detail"), str) else ""
            href = log_href(row["Name"], logs)
            link = f' (<a href="{html.escape(href)}">log</a>)' if href else ""
            items.append(f"{html.escape(row['Name'])}: {html.escape(status)}"
                         + (f": {html.escape(detail)}" if detail else "") + link)
    scored_0 = summary.get("failed_cases_scored_0", [])
    if scored_0:
        items.append(f"{len(scored_0)} stuck case(s) scored 0 on every organ by the {html.escape(summary['rules'])} "
                     "rule for stuck cases, as in results.csv and the tables below (accuracy/ holds the scores of "
                     f"their outputs as written): {html.escape(', '.join(scored_0))}")
    busy = summary.get("busy_cases", [])
    if busy:
        items.append(f"machine not idle before {len(busy)} of {summary['cases']} case(s) (the system-wide figures "
                     f"include other work; see the process-tree figures): {html.escape(', '.join(busy))}")
    for problem in summary.get("problems", []):
        if problem.get("source") != "efficiency":
            items.append(f"{html.escape(problem['case'])}: {html.escape(problem['problem'])}")
    for warning in summary.get("accuracy_warnings", []):
        items.append(f"{html.escape(warning['case'])}: warning: {html.escape(warning['warning'])}")
    return items


def report_html(summary: dict, results: pd.DataFrame, organ_table: pd.DataFrame, rules: Rules,
                logs: Collection[str]) -> str:
    """The whole page (`logs`: the names of the files in efficiency/logs, linked from their cases)."""
    team = summary["team"]
    checks = [f"{'passed' if c['passed'] else 'not measured' if c['passed'] is None else '<b>FAILED</b>'}: "
              f"{html.escape(c['limit'])}"
              + ("" if c["source"] == "both" else f" ({html.escape(c['source'])})")
              + f": {html.escape(c['value'])}" for c in summary["verdict"]["checks"]]
    bad = results["Status"].map(is_failed)
    name_link = {"Name": lambda name: log_href(name, logs)}
    efficiency = results[[c for c in EFFICIENCY_COLUMNS if c in results]]
    tree = results[[c for c in TREE_COLUMNS if c in results]]
    organs = list(rules.organs)
    dsc = results[["Name", "DSC_mean", *[rules.dsc_column(o) for o in organs]]]
    nsd = results[["Name", "NSD_mean", *[rules.nsd_column(o) for o in organs]]]
    dsc_names = {rules.dsc_column(o): f"{organ_header(o)} DSC" for o in organs}
    nsd_names = {rules.nsd_column(o): f"{organ_header(o)} NSD" for o in organs}
    mean_dsc, mean_nsd = pages.number(summary["mean_dsc"]), pages.number(summary["mean_nsd"])
    measured = summary.get("mean_measured_time_s")
    measured_time = "" if measured is None or measured == summary["mean_time_s"] else \
        f" with the year's stuck values (as measured: {pages.number(measured, 1)} s)"
    body = f"""<h1>{html.escape(team)}: FLARE evaluation ({html.escape(summary['rules'])})</h1>
<p>{summary['cases']} case(s), {summary['not_ok']} failed; mean DSC {mean_dsc or 'n/a'}, mean NSD {mean_nsd or 'n/a'};
mean time {pages.number(summary['mean_time_s'], 1) or 'n/a'} s per case{measured_time}.
Failure policy: {html.escape(summary['failures'])}.
Submission: <code>{html.escape(summary['submission'])}</code></p>
<h2>Limits of the rules</h2>
<p>Official verdict (system-wide figures): <b>{'passed' if summary['verdict']['passed'] else 'FAILED'}</b>;
on the submission's own processes: <b>{'passed' if summary['verdict'].get('passed_process_tree') else 'FAILED'}</b>.</p>
{pages.bullet_list(checks)}
<h2>Problems</h2>
{pages.bullet_list(problem_items(summary, results, logs), empty="none: every case ran and scored cleanly")}
<h2>Accuracy per organ</h2>
{pages.table(organ_table)}
<img src="accuracy.png" alt="DSC and NSD per organ">
<h2>Efficiency</h2>
<img src="time.png" alt="time per case"><img src="memory.png" alt="memory over time">
<h2>Per case: efficiency (official figures)</h2>
<p>Case names link to the run's log. Time in s (MeasuredTime: the wall time where a penalty replaced
Time), memory in MB, areas in MB·s and %·s; an empty cell was not measured (the GPU's figures
without NVML).</p>
{pages.table(efficiency, links=name_link, bad_rows=bad)}
<h2>Per case: the submission's processes and the machine</h2>
<p>Process-tree maxima (the submission's own processes), the samples, and the machine before the start
(Machine: idle, busy or not checked; baseline CPU %, RAM and GPU MB).</p>
{pages.table(tree, bad_rows=bad)}
<h2>Per case: DSC</h2>
{pages.table(dsc, bad_rows=bad, headers=dsc_names)}
<h2>Per case: NSD</h2>
{pages.table(nsd, bad_rows=bad, headers=nsd_names)}"""
    return pages.page(f"{team}: FLARE evaluation ({summary['rules']})", body)
