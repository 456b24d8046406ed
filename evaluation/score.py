"""Score predicted label maps against ground truth with the official FLARE DSC and NSD.

    flare-score --gt GT_DIR --pred PRED_DIR --out OUT_DIR [--rules flare21]   (or python -m evaluation.score)

Writes OUT_DIR/metrics.csv (one row per ground-truth case, the year's official columns),
OUT_DIR/summary.json and OUT_DIR/summary.csv (per-case values rounded as the year's official
files are, unless --round says otherwise), and prints a summary. Warns when the ground
truth's labels fit another year's rules better (e.g. FLARE21 labels scored with --rules flare22,
where the organs absent from both files score 1.0). Exit code: 0 every case scored cleanly, 1
results written but some cases had problems, 2 usage error, 130 interrupted, 143 terminated (SIGTERM).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from evaluation.imageio import LabelMap, read_label_runs
from evaluation.metrics import score_runs
from evaluation.report import (
    ALL_CASES,
    SUMMARY_COLUMNS,
    cases_with_problems,
    csv_text,
    official_round,
    summarise,
    summary_json,
)
from evaluation.rules import DEFAULT_RULES, RULES, Rules, get_rules
from evaluation.runs import LabelRuns
from flare_common import cli
from flare_common.errors import InputError, describe_error
from flare_common.files import write_atomic
from flare_common.nifti import AFFINE_TOLERANCE_MM, MISCASED, case_stem, folder_cases, miscased_nifti, nifti_files


@dataclass
class CaseResult:
    """The official columns of one case (NaN where not scored) and what went wrong."""

    name: str
    values: dict[str, float]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    labels: tuple[int, ...] = ()  # the label values (not 0) in the ground truth


def prediction_files(pred_dir: Path, gt_file: Path) -> list[Path]:
    """The predictions there are for a ground-truth file, the one scored first: the same name,
    then the same stem with the other NIfTI suffix."""
    names = dict.fromkeys((gt_file.name, case_stem(gt_file) + ".nii.gz", case_stem(gt_file) + ".nii"))
    return [pred_dir / name for name in names if (pred_dir / name).is_file()]


def find_prediction(pred_dir: Path, gt_file: Path) -> Path | None:
    """The prediction scored for a ground-truth file (see prediction_files), None if there is none."""
    found = prediction_files(pred_dir, gt_file)
    return found[0] if found else None


def prediction_warnings(pred_dir: Path, gt_files: list[Path]) -> list[dict[str, str]]:
    """Warnings about the prediction folder: a case with two predictions (<case>.nii.gz and
    <case>.nii: one is scored, the other ignored) and predictions without a ground truth (NIfTI
    files as flare_common.nifti.nifti_files counts them: hidden files such as macOS's '._' ones
    are no predictions), and files of either folder named as NIfTI in upper case, which are not
    read (flare_common.nifti.miscased_nifti)."""
    warnings = []
    for gt_file in gt_files:
        found = prediction_files(pred_dir, gt_file)
        if len(found) > 1:
            warnings.append({"case": gt_file.name, "warning": f"predictions {', '.join(p.name for p in found)} all "
                             f"exist: {found[0].name} scored, the other{'s' if len(found) > 2 else ''} ignored"})
    known = {case_stem(g) for g in gt_files}
    warnings += [{"case": p.name, "warning": "prediction has no ground truth: ignored"}
                 for p in nifti_files(pred_dir) if case_stem(p) not in known]
    folders = dict.fromkeys([*(g.parent for g in gt_files), pred_dir])  # --gt's (once), then --pred's
    warnings += [{"case": str(p), "warning": MISCASED} for folder in folders for p in miscased_nifti(folder)]
    return warnings


def rules_mismatch(present: set[int], rules: Rules) -> str | None:
    """A warning when the labels found in the ground truth fit another year's rules better than
    the chosen ones: fewer mismatches, counting the values present that are none of the year's
    organs and its organs counted in the mean that are absent from every case (an organ absent
    from the ground truth and the prediction scores 1.0, which lifts the mean). Only years that
    score every label the chosen rules score are suggested (a partly labelled FLARE23 set is
    never sent to a year that would drop its left kidney). None when the chosen rules fit best (a
    stray label alone does not make a year of nine more organs fit: each case reports it as a
    problem)."""
    if not present:
        return None

    def labels(candidate: Rules) -> set[int]:
        return {o.label for o in candidate.organs}

    def fit(candidate: Rules) -> int:
        return len(present - labels(candidate)) + sum(o.in_mean and o.label not in present for o in candidate.organs)

    scored = present & labels(rules)
    best = min((r for r in RULES.values() if scored <= labels(r)), key=fit)
    if fit(best) >= fit(rules):
        return None
    unknown = sorted(present - labels(rules))
    absent = [o.name for o in rules.organs if o.in_mean and o.label not in present]
    reasons = [f"{', '.join(map(str, unknown))} {'is not a' if len(unknown) == 1 else 'are not'} {rules.name} "
               f"label{'' if len(unknown) == 1 else 's'} (ignored)"] if unknown else []
    if absent:
        reasons.append(f"{len(absent)} of the {rules.name} organs in the mean ({', '.join(absent)}) are absent from "
                       f"every case and score 1.0 where the prediction has none either")
    return (f"the ground truth holds labels {', '.join(map(str, sorted(present)))} only: {'; '.join(reasons)}; "
            f"these labels fit --rules {best.name} (wrong --rules?)")


def _unexpected_labels(runs: LabelRuns, rules: Rules) -> list[int]:
    return [v for v in runs.present() if v > rules.max_label]


def _read_prediction(pred_file: Path | None, gt: LabelMap, result: CaseResult, rules: Rules) -> LabelRuns:
    """The prediction's runs; an empty prediction's (with the problem listed) when it is missing or
    unusable."""
    problem = None
    if pred_file is None:
        problem = "prediction missing"
    else:
        try:
            pred = read_label_runs(pred_file)
            if pred.runs.shape != gt.runs.shape:
                problem = (f"prediction {pred_file.name}: shape {pred.runs.shape} differs from ground truth "
                           f"{gt.runs.shape}")
        except InputError as exc:
            problem = f"prediction {pred_file.name}: {exc}"
    if problem:
        result.problems.append(f"{problem}: scored as empty")
        return LabelRuns.empty(gt.runs.shape)
    result.warnings += [f"prediction {pred_file.name}: {m.source}: {m}" for m in pred.messages]
    affine_diff = float(np.abs(pred.affine - gt.affine).max())
    if not affine_diff <= AFFINE_TOLERANCE_MM:  # NaN differs too
        result.warnings.append(
            f"prediction {pred_file.name}: affine differs from ground truth by up to {affine_diff:.4g} "
            "(the ground truth's spacing is used)")
    extra = _unexpected_labels(pred.runs, rules)
    if extra:
        result.problems.append(f"prediction {pred_file.name}: labels outside {rules.name} {extra}: ignored")
    return pred.runs


def score_files(gt_file: Path, pred_file: Path | None, rules_name: str, fix_slab: bool = False) -> CaseResult:
    """Score one case from files; never raises for bad input, lists the problem instead."""
    rules = get_rules(rules_name)
    result = CaseResult(gt_file.name, dict.fromkeys(rules.metric_columns(), math.nan))
    try:
        gt = read_label_runs(gt_file)
    except InputError as exc:
        result.problems.append(f"ground truth {gt_file.name}: {exc}: not scored")
        return result
    result.warnings += [f"ground truth {gt_file.name}: {m.source}: {m}" for m in gt.messages]
    result.labels = gt.runs.present()
    extra = _unexpected_labels(gt.runs, rules)
    if extra:
        result.problems.append(
            f"ground truth {gt_file.name}: labels outside {rules.name} {extra}: ignored (wrong --rules?)")
    pred = _read_prediction(pred_file, gt, result, rules)
    scores_by_label = score_runs(gt.runs, pred, gt.spacing, rules, fix_slab)
    for organ in rules.organs:
        score = scores_by_label[organ.label]
        result.values[rules.dsc_column(organ)] = score.dsc
        result.values[rules.nsd_column(organ)] = score.nsd
        if score.note:
            result.warnings.append(f"{organ.name}: {score.note}: DSC and NSD are NaN")
    return result


def _failed(gt_file: Path, rules: str, exc: BaseException) -> CaseResult:
    """The result of a case whose scoring itself failed (out of memory, a crashed worker, a bug)."""
    result = CaseResult(gt_file.name, dict.fromkeys(get_rules(rules).metric_columns(), math.nan))
    result.problems.append(f"scoring failed ({describe_error(exc)}): not scored")
    return result


def _score_safely(gt_file: Path, pred_file: Path | None, rules: str, fix_slab: bool) -> CaseResult:
    try:
        return score_files(gt_file, pred_file, rules, fix_slab)
    except Exception as exc:  # one case must never stop the others
        return _failed(gt_file, rules, exc)


def _score_all(jobs: list[tuple[Path, Path | None]], rules: str, fix_slab: bool, workers: int) -> list[CaseResult]:
    """Score every (ground truth, prediction) pair, in parallel processes when workers > 1. A
    worker process that dies (e.g. killed for memory) breaks the pool and every case it had not
    returned yet: those are scored again one at a time, each in a process of its own, so that only
    a case that kills its process fails."""
    progress = dict(total=len(jobs), desc="scoring", unit="case")
    if workers <= 1:
        return [_score_safely(g, p, rules, fix_slab) for g, p in cli.progress(jobs, **progress)]
    results = _in_pool(jobs, rules, fix_slab, workers, progress)
    lost = [i for i, r in enumerate(results) if isinstance(r, BrokenProcessPool)]
    if lost:
        print(f"a scoring process died: scoring {len(lost)} case(s) again one at a time", file=sys.stderr)
    for i in lost:
        results[i] = _in_pool([jobs[i]], rules, fix_slab, 1, {"disable": True})[0]
        if isinstance(results[i], BrokenProcessPool):
            results[i] = BrokenProcessPool("its process died scoring it alone (killed, e.g. for lack of memory)")
    return [_failed(gt_file, rules, r) if isinstance(r, BaseException) else r for (gt_file, _), r in zip(jobs, results)]


def _in_pool(jobs: list[tuple[Path, Path | None]], rules: str, fix_slab: bool, workers: int,
             progress: dict) -> list[CaseResult | BaseException]:
    """Each job's result from a pool of worker processes, or the exception its future raised
    (BrokenProcessPool for every case not returned when a worker died)."""
    results: list[CaseResult | BaseException] = []
    with ProcessPoolExecutor(max_workers=workers, initializer=_ignore_interrupt) as pool:
        futures = [pool.submit(_score_safely, g, p, rules, fix_slab) for g, p in jobs]
        try:
            for future in cli.progress(futures, **progress):
                try:
                    results.append(future.result())
                except Exception as exc:  # the worker process died
                    results.append(exc)
        except KeyboardInterrupt:  # Ctrl-C: the workers finish their case, nothing else starts
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return results


def _ignore_interrupt() -> None:
    """In a worker process: leave Ctrl-C to the main process (no traceback from every worker), and
    let a SIGTERM or SIGHUP sent to the worker itself end it (not the main process's handler,
    inherited; a SIGHUP ignored stays ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stop in cli.termination_signals():
        signal.signal(stop, signal.SIG_DFL)


def metrics_rows(results: list[CaseResult], columns: list[str], round_digits: int | None) -> list[dict]:
    """The rows of metrics.csv: Name and the official columns, rounded as asked (official_round).

    As in the official pandas files, a column holds integers only when every value in it was set
    by a rule (the ints 0 and 1); otherwise all its values are floats.
    """
    rows = [{"Name": r.name, **r.values} for r in results]
    for column in columns:
        as_int = all(type(row[column]) is int for row in rows)
        for row in rows:
            value = row[column] if as_int else float(row[column])
            row[column] = value if round_digits is None or math.isnan(value) else official_round(value, round_digits)
    return rows


def print_summary(summary: list[dict], n_cases: int, problems: list, warnings: list, out: Path) -> None:
    """The accuracy table (mean ± std per organ) and a count line on stdout; every problem and
    warning on stderr, one line each."""
    by_organ: dict[str, dict[str, dict]] = {}
    for row in summary:
        by_organ.setdefault(row["organ"], {})[row["metric"]] = row
    print(f"{'organ':<22}{'DSC':>17}{'NSD':>17}")
    for organ, metrics in by_organ.items():
        cells = [f"{m['mean']:.4f}" + (f" ± {m['std']:.4f}" if np.isfinite(m["std"]) else "")
                 for m in (metrics["DSC"], metrics["NSD"])]
        print(f"{organ:<22}{cells[0]:>17}{cells[1]:>17}")
    print(f"{n_cases} case(s) scored; {cases_with_problems(problems)} with problems, "
          f"{len(warnings)} warning(s); results in {out}")
    for item in problems:
        print(f"problem: {item['case']}: {item['problem']}", file=sys.stderr)
    for item in warnings:
        print(f"warning: {item['case']}: {item['warning']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m evaluation.score",
                        "Score FLARE predictions: per-case DSC and NSD exactly as the organisers compute them.", [
                            "flare-score --gt labels/ --pred predictions/ --out scores/",
                            "flare-score --gt FLARE22/labels --pred out/ --out scores/ --rules flare22 --round none",
                            "flare-synthetic -o try && flare-score --gt try/gt --pred try/pred --out try/scores"])
    parser.add_argument("--gt", required=True, type=Path, metavar="DIR",
                        help="folder of ground-truth <case>.nii.gz files (required)")
    parser.add_argument("--pred", required=True, type=Path, metavar="DIR",
                        help="folder of predicted <case>.nii.gz files (required)")
    parser.add_argument("--out", "-o", required=True, type=Path, metavar="DIR",
                        help="folder for metrics.csv and the summaries (required)")
    parser.add_argument("--rules", choices=sorted(RULES), default=DEFAULT_RULES,
                        help="which year's organs, tolerances and columns (default %(default)s)")
    parser.add_argument("--workers", type=int, default=cli.default_workers(),
                        help=f"cases scored in parallel (default: the CPU cores, at most {cli.MAX_WORKERS})")
    parser.add_argument("--round", type=_rounding, default="official", metavar="DIGITS",
                        help="decimals per-case values are rounded to: 'official' rounds as that year's official "
                             "files do (FLARE22 and 23: 4; FLARE21: not rounded), 'none' never, or a number "
                             "(default %(default)s)")
    parser.add_argument("--fix-slab", action="store_true",
                        help="include the top ground-truth slice in the aorta/IVC/oesophagus slab "
                             "(default: left out, as the official scripts do)")
    return parser


def _rounding(text: str) -> str | int | None:
    """--round's value: "official", None for "none", or a number of decimals."""
    if text in ("official", "none"):
        return None if text == "none" else text
    try:
        digits = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: 'official', 'none' or a number of decimals") from None
    if digits < 0:
        raise argparse.ArgumentTypeError(f"{text}: at least 0 decimals")
    return digits


@dataclass
class Scored:
    """What score_folders wrote: the per-organ summary rows, the number of cases, the problems and
    warnings (dicts with case and problem / warning)."""

    summary: list[dict]
    cases: int
    problems: list[dict[str, str]]
    warnings: list[dict[str, str]]


def score_folders(gt_files: list[Path], pred_dir: Path, out: Path, rules: Rules, workers: int | None = None,
                  round_to: str | int | None = "official", fix_slab: bool = False) -> Scored:
    """Score every ground-truth file against its prediction in pred_dir and write
    OUT/metrics.csv, summary.csv and summary.json (OUT is created); prints nothing. round_to:
    "official" (the year's rounding), None (none) or a number of decimals; workers: processes
    (None: flare_common.cli.default_workers)."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(g, find_prediction(pred_dir, g)) for g in gt_files]
    results = _score_all(jobs, rules.name, fix_slab, min(workers or cli.default_workers(), len(jobs)))
    problems = [{"case": r.name, "problem": p} for r in results for p in r.problems]
    warnings = [{"case": r.name, "warning": w} for r in results for w in r.warnings]
    warnings += prediction_warnings(pred_dir, gt_files)
    mismatch = rules_mismatch({v for r in results for v in r.labels}, rules)
    if mismatch:
        warnings.insert(0, {"case": ALL_CASES, "warning": mismatch})
    metrics = metrics_rows(results, rules.metric_columns(), rules.official_round if round_to == "official" else round_to)
    summary = summarise(metrics, rules)
    write_atomic(out / "metrics.csv", csv_text(metrics, ["Name", *rules.metric_columns()]))
    write_atomic(out / "summary.csv", csv_text(summary, SUMMARY_COLUMNS))
    write_atomic(out / "summary.json", summary_json(summary, rules, len(results), problems, warnings))
    return Scored(summary, len(results), problems, warnings)


def ground_truth_files(parser: argparse.ArgumentParser, gt: Path) -> list[Path]:
    """The ground-truth files of --gt, after refusing (parser.error: exit 2, one line) a folder
    that is none, holds none, or holds two files of one case (a.nii and a.nii.gz)."""
    if not gt.is_dir():
        parser.error(f"--gt {gt}: not a folder")
    gt_files, problem = folder_cases(gt, case_stem)
    if problem:
        parser.error(f"--gt {gt}: {problem}")
    return gt_files


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    gt_files = ground_truth_files(parser, args.gt)
    if not args.pred.is_dir():
        parser.error(f"--pred {args.pred}: not a folder")
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    cli.refuse_unwritable(parser, "--out", args.out, folder=True)
    scored = score_folders(gt_files, args.pred, args.out, get_rules(args.rules), args.workers, args.round,
                           args.fix_slab)
    print_summary(scored.summary, scored.cases, scored.problems, scored.warnings, args.out)
    return 1 if scored.problems else 0


if __name__ == "__main__":
    cli.exit_at_once(cli.run(main))  # every output is written and closed when main returns
