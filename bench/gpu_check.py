"""GPU check of the submission: cold and warm time per case, FP16 vs FP32, peak GPU memory.

    python -m bench.gpu_check [--weights PATH] [--inputs DIR | --cases 3 --shape 512 512 200] [--out DIR]

Needs an NVIDIA GPU. It takes the CTs in --inputs, or writes phantom CTs (training/phantom.py) of
the given shape (spacing 0.8 x 0.8 x 2.5 mm, centred on the abdomen, stored in the phantoms'
varied orientations), then measures:
  - cold: `sh predict.sh` started once per case on a folder holding that case alone, as the
    organisers do (process start, imports, weight loading and the case), wall clock, with NVML's
    device-wide used memory (total - free) sampled every 50 ms: peak and peak above idle;
  - warm: the pipeline in one process with the weights loaded once (FP16), per stage, with
    torch's peak allocated and reserved memory; the same in FP32, and FP16 with cuDNN's
    autotuner on (torch.backends.cudnn.benchmark: its first call, which tunes, and a tuned one);
  - FP16 vs FP32: the labels of both precisions compared voxel by voxel (per-organ Dice).
Prints a Markdown table for docs/benchmarks.md and writes OUT/gpu_check.json.

Without --weights it uses untrained full-size networks: times and memory are those of the real
networks, but the crop found by an untrained coarse stage is arbitrary, so the fine stage's size
(and the FP16/FP32 agreement) mean little until trained weights exist.

Where the GPU machine's Python lacks nibabel and connected-components-3d (a stock PyTorch image,
say), `sh bench/fetch_device_wheels.sh` downloads their wheels for Python 3.12 to install there.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from evaluation.metrics import dice
from evaluation.nvml import GpuMemory
from flare_common.nifti import nifti_files
from inference.checkpoint import load, random_models, save
from inference.imageio import CT, read_ct
from inference.pipeline import Result, Segmenter
from training import phantom

ROOT = Path(__file__).resolve().parents[1]
SPACING = (0.8, 0.8, 2.5)


class PeakSampler:
    """Samples a GPU's NVML used memory in a thread; `peak_mb` is the largest value seen."""

    def __init__(self, gpu: GpuMemory | None, interval_s: float = 0.05):
        self.gpu, self.interval_s, self.peak_mb = gpu, interval_s, math.nan
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self.gpu.used_mb()
            self.peak_mb = used if math.isnan(self.peak_mb) else max(self.peak_mb, used)
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakSampler:
        if self.gpu is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.gpu is not None:
            self._thread.join()


def make_cases(folder: Path, n: int, shape: tuple[int, int, int]) -> list[Path]:
    """Write n phantom CTs of shape (x, y, z) voxels at SPACING to folder (their labels to
    folder/labels); the CTs' paths."""
    geometry = phantom.centred(shape, SPACING)
    return [phantom.save(phantom.generate(phantom.case_seed(0, i), geometry=geometry), folder, folder / "labels",
                         f"gpu_{i:03d}")[0] for i in range(n)]


def cold_runs(cases: list[Path], weights: Path, out: Path, gpu: GpuMemory | None) -> list[dict]:
    """One `sh predict.sh` per case, each on a folder with that case alone."""
    rows = []
    for case in cases:
        inputs, outputs = out / "cold" / case.stem / "inputs", out / "cold" / case.stem / "outputs"
        inputs.mkdir(parents=True, exist_ok=True)
        target = inputs / case.name
        if not target.exists():
            target.symlink_to(case.resolve())
        idle = gpu.used_mb() if gpu else math.nan
        start = time.perf_counter()
        report = out / "cold" / case.stem / "report.json"
        with PeakSampler(gpu) as sampler:
            done = subprocess.run(["sh", str(ROOT / "predict.sh"), str(inputs), str(outputs), "--weights", str(weights),
                                   "--report", str(report)],
                                  env={**os.environ, "PYTHON": sys.executable}, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"predict.sh failed on {case.name}: {done.stderr[-2000:]}")
        case_s = json.loads(report.read_text())["cases"][0]["seconds"]
        rows.append({"case": case.name, "cold_s": wall, "case_s": case_s,
                     "start_up_s": wall - case_s["total"],  # interpreter, imports, CUDA, weights, exit
                     "peak_used_mb": sampler.peak_mb, "peak_above_idle_mb": sampler.peak_mb - idle})
    return rows


def _timed(segmenter: Segmenter, ct: CT) -> tuple[float, Result]:
    start = time.perf_counter()
    result = segmenter(ct.data, ct.spacing)
    return time.perf_counter() - start, result


def warm_runs(cases: list[Path], weights: Path, device: torch.device) -> list[dict]:
    """The pipeline in this process, FP16 (bf16 on a CPU dry run) and FP32, weights loaded once;
    the second run of each precision is timed, then FP16 again with cuDNN's autotuner."""
    cuda = device.type == "cuda"
    fp16 = Segmenter(load(weights), device, "fp16" if cuda else "bf16")
    fp32 = Segmenter(load(weights), device, "fp32")
    rows = []
    for case in cases:
        ct = read_ct(case)
        fp16(ct.data, ct.spacing)  # warm-up
        warm, result = _timed(fp16, ct)
        fp32(ct.data, ct.spacing)  # warm-up
        fp32_s, reference = _timed(fp32, ct)
        tuning_s = tuned_s = math.nan
        if cuda:  # the autotuner tunes each convolution shape once per process: in the first case
            torch.backends.cudnn.benchmark = True
            tuning_s, tuned_s = _timed(fp16, ct)[0], _timed(fp16, ct)[0]
            torch.backends.cudnn.benchmark = False
        agreement = {name: dice(result.labels == k, reference.labels == k)
                     for k, name in fp16.models.labels.items()}
        rows.append({"case": case.name, "shape": list(ct.image.shape), "warm_s": warm, "stages_s": result.seconds,
                     "fp32_warm_s": fp32_s, "fp32_stages_s": reference.seconds,
                     "cudnn_benchmark_first_s": tuning_s, "cudnn_benchmark_tuned_s": tuned_s,
                     "crop": [s.stop - s.start for s in result.box] if result.box else None,
                     "peak_allocated_mb": math.nan, "peak_reserved_mb": math.nan, "stage_peak_allocated_mb": {},
                     **result.cuda_memory(),
                     "fp16_vs_fp32_dice": agreement,
                     "voxels_differing": float((result.labels != reference.labels).mean())})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, help="checkpoint (default: untrained full-size networks)")
    parser.add_argument("--inputs", type=Path, help="folder of CTs to use (default: write synthetic ones)")
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200))
    parser.add_argument("--gpu", type=int, default=0)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cpu: a dry run of the script itself (bf16 instead of FP16, no GPU memory)")
    parser.add_argument("--out", type=Path, default=Path("bench/out/gpu"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA GPU: this check needs one (--device cpu for a dry run)", file=sys.stderr)
        return 2
    device = torch.device("cuda", args.gpu) if args.device == "cuda" else torch.device("cpu")
    weights = args.weights
    if weights is None:
        weights = args.out / "untrained.pt"
        save(weights, random_models())
    if args.inputs is not None:
        cases = nifti_files(args.inputs)
        if not cases:
            print(f"error: {args.inputs}: no NIfTI files", file=sys.stderr)
            return 2
    else:
        cases = make_cases(args.out / "cases", args.cases, tuple(args.shape))
    gpu = GpuMemory.open(args.gpu) if args.device == "cuda" else None
    cold = cold_runs(cases, weights, args.out, gpu)
    warm = warm_runs(cases, weights, device)
    gpu_name = torch.cuda.get_device_name(device) if args.device == "cuda" else "none (CPU dry run)"
    report = {"gpu": gpu_name, "torch": torch.__version__, "weights": str(weights),
              "cases": [str(c) for c in cases], "cold": cold, "warm": warm}
    (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"GPU: {gpu_name}, torch {torch.__version__}; weights: {weights}\n")
    print("| case | shape | cold s (start-up + read/coarse/fine/post/write) | warm s FP16 (coarse/fine/post) | "
          "warm s FP32 | FP16 + cudnn.benchmark s (first / tuned) | NVML peak MB (above idle) | "
          "torch peak alloc MB (coarse/fine) | reserved MB | crop | FP16 vs FP32 voxels differing |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for c, w in zip(cold, warm):
        stages = "/".join(f"{c['case_s'].get(k, math.nan):.2f}" for k in ("read", "coarse", "fine", "post", "write"))
        warm_stages = "/".join(f"{w['stages_s'].get(k, math.nan):.2f}" for k in ("coarse", "fine", "post"))
        alloc = "/".join(f"{w['stage_peak_allocated_mb'].get(k, math.nan):.0f}" for k in ("coarse", "fine"))
        print(f"| {c['case']} | {'x'.join(map(str, w['shape']))} | {c['cold_s']:.2f} ({c['start_up_s']:.2f} + {stages}) | "
              f"{w['warm_s']:.2f} ({warm_stages}) | {w['fp32_warm_s']:.2f} | "
              f"{w['cudnn_benchmark_first_s']:.2f} / {w['cudnn_benchmark_tuned_s']:.2f} | "
              f"{c['peak_used_mb']:.0f} ({c['peak_above_idle_mb']:.0f}) | {alloc} | {w['peak_reserved_mb']:.0f} | "
              f"{w['crop']} | {100 * w['voxels_differing']:.4f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
