"""How the C heap's settings change the submission on the CPU, measured in one run.

    python -m bench.bench_heap [--shapes 512x512x160 512x512x300] [--real FILE ...]
        [--sizes 160 192 | --sizes checkpoint] [--backend auto|torch|openvino] [--precision auto]
        [--repeats 2] [--out DIR] [--write-docs]

`--heap` of predict chooses glibc's heap policy (inference/heap.py; auto: kept where PyTorch runs
the networks on the CPU). Each setting below runs `sh predict.sh` as a fresh process, the settings
taking turns, --repeats times:
- glibc: `--heap system`, glibc's own behaviour: blocks of 32 MiB and more are mapped for each
  allocation and unmapped when freed;
- kept: `--heap kept`, every block from the heap and freed memory kept for reuse;
- jemalloc (where the library is installed; LD_PRELOAD with `--heap system`, never returning freed
  pages), with PyTorch only: with OpenVINO's runtime loaded the process aborted at exit (SIGABRT,
  after writing its file).
First each case alone (process start to written file), then all cases in one process in order
(does a kept heap grow from case to case?), from a folder holding exactly this run's cases. Per
run, from the kernel (os.wait4, in bench/child_usage.py: its peak RSS the command's own, not this
process's): wall, user and system CPU seconds, minor page faults, peak RSS;
from predict's report: its coarse and fine stages. The labels of every run must be identical to
those of glibc's first run of each case (checked, run by run): every run gets the same
--precision (auto: fp32 for PyTorch, and for OpenVINO its probe's choice made once here, as
predict's own probe can choose differently from run to run on a loaded machine). Inputs, weights and
backend as bench.bench_submission (the paper's sizes by default, OpenVINO where it runs).
Prints Markdown tables, writes OUT/bench_heap.json; --write-docs puts them, dated, with the CPU
model and flags, into docs/benchmarks.md (section heap-cpu-BACKEND).
"""
from __future__ import annotations

import argparse
import ctypes.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bench.arguments import add_weights, checked_inputs, parse_shape
from bench.bench_submission import PAPER_SIZES, REAL_CT, ROOT, header, make_inputs, prepared
from bench.record import exit_description, publish, require_docs_sections
from flare_common import cli
from flare_common.cli import at_least
from flare_common.nifti import output_name
from inference import openvino_runtime
from inference.defaults import BACKENDS, PRECISIONS

JEMALLOC = ctypes.util.find_library("jemalloc")
ALL_CASES = "all cases in one process"
REFERENCE = "glibc"  # the setting whose labels every run must give


def settings(backend: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """predict's --heap and the environment's additions per setting."""
    chosen = {"glibc": (["--heap", "system"], {}), "kept": (["--heap", "kept"], {})}
    if JEMALLOC and backend == "torch":
        chosen["jemalloc"] = (["--heap", "system"], {"LD_PRELOAD": JEMALLOC,
                                                     "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"})
    return chosen


def run(inputs: Path, outputs: Path, weights: Path, backend: str, precision: str, heap: list[str],
        env: dict[str, str]) -> dict:
    """`sh predict.sh inputs outputs` in a fresh process: the kernel's accounting and predict's stages."""
    shutil.rmtree(outputs, ignore_errors=True)
    outputs.parent.mkdir(parents=True, exist_ok=True)
    report = outputs.parent / f"{outputs.name}.json"
    argv = ["sh", str(ROOT / "predict.sh"), str(inputs), str(outputs), "--weights", str(weights),
            "--device", "cpu", "--backend", backend, "--precision", precision, *heap, "--report", str(report)]
    accounting = outputs.parent / f"{outputs.name}.usage.json"
    with open(outputs.parent / f"{outputs.name}.log", "w") as log:  # started from a small process: its own peak RSS
        subprocess.run([sys.executable, str(ROOT / "bench" / "child_usage.py"), str(accounting), "--", *argv],
                       env=env, stdout=log, stderr=subprocess.STDOUT)
    usage = json.loads(accounting.read_text())
    if usage["exit_code"] != 0:
        raise RuntimeError(f"predict.sh on {inputs}: {exit_description(usage['exit_code'])}: see {log.name}")
    cases = json.loads(report.read_text())["cases"]
    return {**{key: usage[key] for key in ("wall_s", "user_s", "system_s", "minor_faults", "peak_rss_mb")},
            "coarse_s": [c["seconds"]["coarse"] for c in cases], "fine_s": [c["seconds"]["fine"] for c in cases]}


def same_labels(a: Path, b: Path) -> bool:
    """Whether two label files hold the same voxels."""
    return bool(np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)))


def case_folders(cases: list[Path], out: Path) -> dict[str, Path]:
    """Fresh input folders under OUT, made again on every run: one per case holding it alone, and
    one holding exactly the cases (no input of an earlier run); run name -> folder."""
    folders = {case.name: out / "inputs-alone" / case.name.removesuffix(".nii.gz") for case in cases}
    folders[ALL_CASES] = out / "inputs-all"
    for folder in (out / "inputs-alone", folders[ALL_CASES]):
        shutil.rmtree(folder, ignore_errors=True)
    for case in cases:
        for folder in (folders[case.name], folders[ALL_CASES]):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / case.name).symlink_to(case.resolve())
    return folders


def labels_as_reference(outputs: Path, cases: list[Path], reference: Path, sets: bool) -> bool:
    """Whether a run's labels equal the reference's, case by case; where `sets` (a run of the
    REFERENCE setting), the first run of a case becomes its reference."""
    agree = True
    for case in cases:
        found, kept = outputs / output_name(case), reference / output_name(case)
        if not kept.exists():
            if not sets:
                raise RuntimeError(f"{case.name}: no {REFERENCE} run made its reference labels before this one")
            reference.mkdir(parents=True, exist_ok=True)
            shutil.copy2(found, kept)
        agree = agree and same_labels(kept, found)
    return agree


def measure(cases: list[Path], weights: Path, backend: str, precision: str, repeats: int, out: Path) -> dict:
    """Every setting on each case alone and on all cases in one process, taking turns; every run's
    labels checked against the reference setting's."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "LD_PRELOAD"))}
    base["PYTHON"] = sys.executable
    folders = case_folders(cases, out)
    reference = out / "outputs" / "reference"
    shutil.rmtree(reference, ignore_errors=True)
    runs: dict[str, dict[str, list[dict]]] = {name: {} for name in settings(backend)}
    for repeat in range(repeats):
        for name, (heap, change) in settings(backend).items():
            env = {**base, **change}
            for key, inputs in folders.items():
                outputs = out / "outputs" / name / key.replace(" ", "-")
                row = run(inputs, outputs, weights, backend, precision, heap, env)
                predicted = cases if key == ALL_CASES else [c for c in cases if c.name == key]
                row["labels_as_reference"] = labels_as_reference(outputs, predicted, reference, name == REFERENCE)
                runs[name].setdefault(key, []).append(row)
                print(f"{name}, {key}, run {repeat + 1}: {row['wall_s']:.2f} s", file=sys.stderr)
    return {"runs": runs, "reference": REFERENCE}


def summary(rows: list[dict]) -> dict:
    """Medians over the repeats (peak RSS: the largest)."""
    return {"wall_s": statistics.median(r["wall_s"] for r in rows), "user_s": statistics.median(r["user_s"] for r in rows),
            "system_s": statistics.median(r["system_s"] for r in rows),
            "minor_faults": statistics.median(r["minor_faults"] for r in rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in rows),
            "coarse_s": [statistics.median(c) for c in zip(*(r["coarse_s"] for r in rows))],
            "fine_s": [statistics.median(f) for f in zip(*(r["fine_s"] for r in rows))]}


def tables(result: dict) -> str:
    """The result as Markdown."""
    lines = [f"Command: `{result['command']}`. {result['date']}; {result['machine']}; torch {result['torch']}, "
             f"Python {result['python']}. Weights: {result['weights']} run at coarse {result['sizes']['coarse']}, "
             f"fine {result['sizes']['fine']}; networks run by {result['backend']} in {result['precision']}; medians of "
             f"{result['repeats']} "
             "runs each, the settings taking turns.", "",
             "| heap | run | wall s | coarse s | fine s | user CPU s | system CPU s | minor page faults | peak RSS MB "
             "| labels as glibc's (every run) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in result["measured"]["runs"].items():
        for key, rows in runs.items():
            s = summary(rows)
            stages = [" + ".join(f"{t:.2f}" for t in s[k]) for k in ("coarse_s", "fine_s")]
            lines.append(f"| {name} | {key} | {s['wall_s']:.2f} | {stages[0]} | {stages[1]} | {s['user_s']:.1f} | "
                         f"{s['system_s']:.1f} | {s['minor_faults'] / 1e6:.2f} M | {s['peak_rss_mb']:.0f} | "
                         f"{'yes' if all(r['labels_as_reference'] for r in rows) else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", type=parse_shape, default=[(512, 512, 160), (512, 512, 300)],
                        help="phantom CTs to make, XxYxZ voxels (default 512x512x160 512x512x300)")
    parser.add_argument("--real", nargs="*", type=Path, metavar="FILE",
                        help="real CTs to add (default: the one beside the checkout, when it is there)")
    add_weights(parser)
    parser.add_argument("--sizes", nargs="+", default=[str(PAPER_SIZES["coarse"][0]), str(PAPER_SIZES["fine"][0])],
                        help="the networks' input sizes, coarse then fine, or 'checkpoint' (default: the paper's)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="the precision of every run (default: see above)")
    parser.add_argument("--repeats", type=at_least(1), default=2, help="runs of each setting (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "heap")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes, real = checked_inputs(parser, args, REAL_CT)
    if args.write_docs:
        require_docs_sections()
    args.out.mkdir(parents=True, exist_ok=True)
    cases = make_inputs(args.out / "inputs", args.shapes, real)
    device = torch.device("cpu")
    models, weights, backend = prepared(args.weights, sizes, device, "auto", args.backend, args.out)
    precision, probe_s = args.precision, {}
    if precision == "auto":
        precision, probe_s = openvino_runtime.choose_precision("auto") if backend == "openvino" else ("fp32", {})
    try:
        measured = measure(cases, weights, backend, precision, args.repeats, args.out)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    result = {**header("bench.bench_heap", argv, device, args.weights, models, precision, backend, probe_s),
              "repeats": args.repeats, "measured": measured}
    publish(result, args.out / "bench_heap.json", tables(result),
            (f"heap-cpu-{backend}", f"The C heap's settings on the CPU ({backend})") if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
