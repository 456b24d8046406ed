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
(does a kept heap grow from case to case?). Per run, from the kernel (os.wait4): wall, user and
system CPU seconds, minor page faults, peak RSS; from predict's report: its coarse and fine
stages. The labels of every run must be identical to glibc's (checked): every run gets the same
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
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bench.bench_submission import PAPER_SIZES, REAL_CT, ROOT, header, make_inputs, parse_shape, prepared
from bench.record import publish
from flare_common.nifti import output_name
from inference import openvino_runtime
from inference.defaults import BACKENDS, DEFAULT_WEIGHTS, PRECISIONS

JEMALLOC = ctypes.util.find_library("jemalloc")


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
    with open(outputs.parent / f"{outputs.name}.log", "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"predict.sh on {inputs} exited with {code}: see {log.name}")
    cases = json.loads(report.read_text())["cases"]
    return {"wall_s": wall, "user_s": usage.ru_utime, "system_s": usage.ru_stime,
            "minor_faults": usage.ru_minflt, "peak_rss_mb": usage.ru_maxrss / 1024,
            "coarse_s": [c["seconds"]["coarse"] for c in cases], "fine_s": [c["seconds"]["fine"] for c in cases]}


def same_labels(a: Path, b: Path) -> bool:
    """Whether two label files hold the same voxels."""
    return bool(np.array_equal(np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)))


def measure(cases: list[Path], weights: Path, backend: str, precision: str, repeats: int, out: Path) -> dict:
    """Every setting on each case alone and on all cases in one process, taking turns."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "LD_PRELOAD"))}
    base["PYTHON"] = sys.executable
    alone = out / "inputs-alone"
    runs: dict[str, dict[str, list[dict]]] = {name: {} for name in settings(backend)}
    for repeat in range(repeats):
        for name, (heap, change) in settings(backend).items():
            env = {**base, **change}
            for case in [*cases, None]:
                if case is None:
                    key, inputs = "all cases in one process", out / "inputs"
                else:
                    key, inputs = case.name, alone / case.name.removesuffix(".nii.gz")
                    inputs.mkdir(parents=True, exist_ok=True)
                    if not (inputs / case.name).exists():
                        (inputs / case.name).symlink_to(case.resolve())
                row = run(inputs, out / "outputs" / name / key.replace(" ", "-"), weights, backend, precision, heap, env)
                runs[name].setdefault(key, []).append(row)
                print(f"{name}, {key}, run {repeat + 1}: {row['wall_s']:.2f} s", file=sys.stderr)
    agree = {name: all(same_labels(out / "outputs" / "glibc" / "all-cases-in-one-process" / output_name(c),
                                   out / "outputs" / name / "all-cases-in-one-process" / output_name(c)) for c in cases)
             for name in runs}
    return {"runs": runs, "labels_as_glibc": agree}


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
             "| labels as glibc's |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, runs in result["measured"]["runs"].items():
        for key, rows in runs.items():
            s = summary(rows)
            stages = [" + ".join(f"{t:.2f}" for t in s[k]) for k in ("coarse_s", "fine_s")]
            lines.append(f"| {name} | {key} | {s['wall_s']:.2f} | {stages[0]} | {stages[1]} | {s['user_s']:.1f} | "
                         f"{s['system_s']:.1f} | {s['minor_faults'] / 1e6:.2f} M | {s['peak_rss_mb']:.0f} | "
                         f"{'yes' if result['measured']['labels_as_glibc'][name] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", nargs="*", type=parse_shape, default=[(512, 512, 160), (512, 512, 300)],
                        help="phantom CTs to make, XxYxZ voxels (default 512x512x160 512x512x300)")
    parser.add_argument("--real", nargs="*", type=Path, metavar="FILE",
                        help="real CTs to add (default: the one beside the checkout, when it is there)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="checkpoint (default: the shipped one)")
    parser.add_argument("--sizes", nargs="+", default=[str(PAPER_SIZES["coarse"][0]), str(PAPER_SIZES["fine"][0])],
                        help="the networks' input sizes, coarse then fine, or 'checkpoint' (default: the paper's)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="the precision of every run (default: see above)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "heap")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    real = args.real if args.real is not None else [REAL_CT] if REAL_CT.is_file() else []
    sizes = None if args.sizes == ["checkpoint"] else dict(zip(("coarse", "fine"), ((int(s),) * 3 for s in args.sizes)))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "inputs").mkdir(exist_ok=True)
    cases = make_inputs(args.out / "inputs", args.shapes, real)
    for case in cases:
        if case.parent != args.out / "inputs" and not (args.out / "inputs" / case.name).exists():
            (args.out / "inputs" / case.name).symlink_to(case.resolve())
    device = torch.device("cpu")
    models, weights, backend = prepared(args.weights, sizes, device, "auto", args.backend, args.out)
    precision, probe_s = args.precision, {}
    if precision == "auto":
        precision, probe_s = openvino_runtime.choose_precision("auto") if backend == "openvino" else ("fp32", {})
    result = {**header("bench.bench_heap", argv, device, weights, models, precision, backend, probe_s),
              "repeats": args.repeats, "measured": measure(cases, weights, backend, precision, args.repeats, args.out)}
    publish(result, args.out / "bench_heap.json", tables(result),
            (f"heap-cpu-{backend}", f"The C heap's settings on the CPU ({backend})") if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
