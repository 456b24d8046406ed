"""Benchmark: the project's scorer against the organisers' per-organ surface-distance loop.

    python -m bench.bench_score [--cases 4] [--shape 512 512 200] [--spacing 0.8 0.8 2.5]

Makes synthetic 4-organ cases (FLARE21 labels: phantom anatomy from training/phantom/ on a grid
of the given size centred on the abdomen, predictions from evaluation.synthetic.degraded), then
scores the same files
  1. with the official loop (bench/official_loop.py: get_fdata's float64, then the year's casts,
     OFFICIAL_CASTS, here FLARE21's: the ground truth to uint8, the prediction left as floats;
     surface-distance per organ),
  2. with `python -m evaluation.score --workers 1`, and
  3. with `python -m evaluation.score --workers <cores>`,
(both by --python where given: an environment with only requirements-evaluation.txt and the
loop's surface-distance installed, as organisers install them, starts faster than the development
one, where nibabel also imports pydicom; the two always run under the same Python),
each in its own process, end to end (process start, reading, scoring, writing), the three taking
turns --repeats times (default 3): a run's seconds are the median of its repeats, with their
range beside it, so that one slow moment of a shared machine moves no ratio. Peak memory is the
largest sum of resident memory over the process tree, sampled every 10 ms in one more run of
each, apart from the timed ones (the sampler's share of a core would slow a scorer that uses
both cores of a 2-core machine). It checks that all three give the same numbers and prints a
Markdown table for docs/benchmarks.md.

Case i of a quality is drawn from the seed (0, i) alone. The cases are kept under WORK/QUALITY/cache
between runs (--work) with a stamp of what made them (shape, spacing, quality, seed and the
generator's sources), made again where it differs; each run scores exactly its --cases cases,
case_000 to case_<n-1>, from fresh folders WORK/QUALITY/gt and pred.

Two prediction qualities are measured: "good" (small errors, NSD at 1 mm around 0.85, like the
FLARE21 winners) and "poor" (larger errors, NSD around 0.45), since the cost of the surface
distance part grows with the fraction of the surface that is off.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

from bench.record import cpu_description, markdown_table
from bench.stamp import PHANTOM_SOURCES, is_current, sources_digest, write_stamp
from evaluation.sampler import ProcessTree, Sampler
from evaluation.synthetic import degraded, phantom_labels, save_labels
from flare_common import cli
from flare_common.cli import at_least

ROOT = Path(__file__).resolve().parents[1]
QUALITIES = {"good": (0.8, 0.015), "poor": (2.0, 0.05)}  # degraded(): shift (mm) and relative size change
CASE_SOURCES = (*PHANTOM_SOURCES, ROOT / "evaluation" / "synthetic.py")  # what makes the cases
SEED = 0


def case_name(index: int) -> str:
    return f"case_{index:03d}.nii.gz"


def make_case(cache: Path, index: int, shape, spacing, quality: str, seed: int) -> None:
    """Case `index` (ground truth and prediction) into cache/gt and cache/pred, drawn from the seed
    (seed, index) alone; each file written under a hidden name and renamed when complete."""
    shift_mm, scale = QUALITIES[quality]
    rng = np.random.default_rng([seed, index])
    gt = phantom_labels(shape, spacing, rng)
    pred = degraded(gt, spacing, rng, shift_mm, scale, island=False)
    for sub, labels in (("gt", gt), ("pred", pred)):
        path = cache / sub / case_name(index)
        partial = path.with_name(f".partial-{path.name}")
        save_labels(labels, spacing, partial)
        partial.replace(path)


def make_cases(folder: Path, n: int, shape, spacing, quality: str, seed: int = SEED) -> None:
    """folder/gt and folder/pred holding exactly cases 0..n-1 (links into folder/cache, where the
    cases are kept between runs while its stamp matches what this run would make them from)."""
    cache = folder / "cache"
    made_from = {"shape": list(shape), "spacing": list(spacing), "quality": quality,
                 "degraded": list(QUALITIES[quality]), "seed": seed, "generator": sources_digest(*CASE_SOURCES)}
    if not is_current(cache, made_from):
        shutil.rmtree(cache, ignore_errors=True)
        for sub in ("gt", "pred"):
            (cache / sub).mkdir(parents=True)
        write_stamp(cache, made_from)
    for i in range(n):
        if not all((cache / sub / case_name(i)).is_file() for sub in ("gt", "pred")):
            make_case(cache, i, shape, spacing, quality, seed)
    for sub in ("gt", "pred"):
        shutil.rmtree(folder / sub, ignore_errors=True)
        (folder / sub).mkdir()
        for i in range(n):
            (folder / sub / case_name(i)).symlink_to((cache / sub / case_name(i)).resolve())


def _started(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finished(proc: subprocess.Popen, cmd: list[str]) -> None:
    """Wait for the command; RuntimeError with its stderr's tail when it failed (exit code 1:
    cases with problems, still a finished run)."""
    _, err = proc.communicate()
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} failed: {err.decode()[-2000:]}")


def run_timed(cmd: list[str]) -> float:
    """Run a command; its wall seconds. Nothing else runs beside it: the memory sampler of
    run_peak takes a share of a core, which on a 2-core machine slows a command that uses both."""
    start = time.perf_counter()
    proc = _started(cmd)
    _finished(proc, cmd)
    return time.perf_counter() - start


def run_peak(cmd: list[str]) -> float:
    """Run a command; the peak resident MB of its whole process tree, sampled every 10 ms by the
    efficiency harness's own sampler (evaluation.sampler)."""
    proc = _started(cmd)
    tree = ProcessTree(proc.pid)
    sampler = Sampler(tree=lambda: tree, interval_s=0.01).start()
    try:
        _finished(proc, cmd)
    finally:
        samples = sampler.stop()
    return max((s["ram_tree_mb"] for s in samples if not math.isnan(s["ram_tree_mb"])), default=0.0)


OFFICIAL_SNIPPET = """
import json, sys
from pathlib import Path
from bench.official_loop import official_files
from evaluation.rules import get_rules
gt, pred, out = map(Path, sys.argv[1:4])
rules = get_rules("flare21")
res = {f.name: {str(k): list(map(float, v)) for k, v in official_files(f, pred / f.name, rules).items()}
       for f in sorted(gt.glob("*.nii.gz"))}
out.write_text(json.dumps(res))
"""


def max_difference(official_json: Path, metrics_csv: Path) -> float:
    """Largest absolute difference between the official loop's and the scorer's values."""
    official = json.loads(official_json.read_text())
    ours = pd.read_csv(metrics_csv).set_index("Name")
    worst = 0.0
    for name, organs in official.items():
        for label, (dsc, nsd) in organs.items():
            worst = max(worst, abs(ours.loc[name, f"DSC_{label}"] - dsc),
                        abs(ours.loc[name, f"NSD-1mm_{label}"] - nsd))
    return worst


def bench(quality: str, args, work: Path) -> list[dict]:
    """Time the official loop and the scorer on one set of cases; one row per run."""
    folder = work / quality
    make_cases(folder, args.cases, tuple(args.shape), tuple(args.spacing), quality)
    py = scorer = str(args.python or sys.executable)  # the same environment for both: neither starts faster
    official_out = folder / "official.json"
    runs = [("official loop (surface-distance)", None,
             [py, "-c", OFFICIAL_SNIPPET, str(folder / "gt"), str(folder / "pred"), str(official_out)])]
    for workers in sorted({1, args.workers}):
        runs.append((f"evaluation.score --workers {workers}", folder / f"scores_w{workers}" / "metrics.csv",
                     [scorer, "-m", "evaluation.score", "--gt", str(folder / "gt"), "--pred", str(folder / "pred"),
                      "--out", str(folder / f"scores_w{workers}"), "--workers", str(workers)]))
    walls: dict[str, list[float]] = {label: [] for label, _, _ in runs}
    for _ in range(args.repeats):  # the runs take turns: a slow spell of the machine falls on all of them
        for label, _, cmd in runs:
            walls[label].append(run_timed(cmd))
    rows = []
    for label, metrics_csv, cmd in runs:
        wall = float(np.median(walls[label]))
        rows.append({"quality": quality, "run": label, "seconds": wall,
                     "range_s": f"{min(walls[label]):.3g}-{max(walls[label]):.3g}", "per_case_s": wall / args.cases,
                     "peak_MB": run_peak(cmd),
                     "max_abs_diff": max_difference(official_out, metrics_csv) if metrics_csv else 0.0})
    nsd = pd.read_csv(runs[1][1]).filter(like="NSD").to_numpy().mean()
    for row in rows:
        row["speed_up"] = rows[0]["seconds"] / row["seconds"]
        row["mean_NSD"] = nsd
    return rows


def markdown(table: pd.DataFrame) -> str:
    """A Markdown table with 3 significant digits."""
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    return markdown_table(list(table.columns), cells)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_score", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=at_least(1), default=4)
    parser.add_argument("--shape", type=at_least(1), nargs=3, default=(512, 512, 200))
    parser.add_argument("--spacing", type=cli.finite_float, nargs=3, default=(0.8, 0.8, 2.5))
    parser.add_argument("--workers", type=at_least(1), default=cli.default_workers())
    parser.add_argument("--quality", choices=sorted(QUALITIES), nargs="+", default=["good", "poor"])
    parser.add_argument("--repeats", type=at_least(1), default=3, help="runs of each command, taking turns (default 3)")
    parser.add_argument("--python", type=Path, default=None,
                        help="the Python that runs both the official loop and evaluation.score (default: this one), "
                             "e.g. an environment with only requirements-evaluation.txt and surface-distance installed")
    parser.add_argument("--work", type=Path, default=None, help="folder for the cases (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        rows = [row for q in args.quality for row in bench(q, args, work)]
    table = pd.DataFrame(rows)
    print(f"{time.strftime('%Y-%m-%d')}; machine: {cpu_description()}; {psutil.virtual_memory().total / 2**30:.0f} GiB "
          f"RAM; Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"{args.cases} cases of {tuple(args.shape)} voxels at {tuple(args.spacing)} mm, FLARE21 rules; "
          f"medians of {args.repeats} runs each, taking turns; both run by "
          f"{'--python' if args.python else 'this Python'}\n")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
