"""Benchmark: the paper's coarse-to-fine path against an nnU-Net-style sliding window over the whole CT.

    python -m bench.bench_sliding_window [--weights FILE] [--shape 512x512x160 | --input FILE]
        [--sizes 160 192] [--device cpu|cuda] [--precision auto] [--backend auto|torch|openvino]
        [--overlap 0.5] [--out DIR] [--write-docs]

The paper's claim: segmenting the organs' region found by a coarse whole-volume pass costs far
less time and memory than sliding a network's window over the whole volume at the resolution
that network works at. Measured on one CT (a phantom CT of --shape voxels at 0.8 x 0.8 x 2.5 mm
centred on the abdomen, with its ground truth, or --input), with the checkpoint's networks at the
paper's input sizes (coarse 160^3, fine 192^3), on one device, each method in a process of its own:
1. coarse-to-fine: the pipeline (inference.pipeline.Segmenter);
2. sliding window, as nnU-Net infers: the whole CT resampled to the voxel size the fine network
   has on this case in step 1 (the crop's extent over the fine input size, per axis), normalised
   once as the checkpoint says, padded to at least one window, tiled by windows of the fine input
   size (the second of --sizes) overlapping by --overlap (evenly spaced, nnU-Net's rule), each window's
   sigmoid weighted by a Gaussian (sigma 1/8 of the window, nnU-Net's) and the weighted sum
   divided by the summed weights; labels where the mean probability of the likeliest organ is
   above 0.5, back on the CT's grid (inference.postprocessing.labels_at_size of the mean's
   logit), with the checkpoint's largest-component rule. The network runs each window on the
   device (or through OpenVINO on the CPU); the tiling, weighting and accumulation are NumPy on
   the host, as are the pipeline's resampling and post-processing.
Each process loads the weights, runs its method once (on CUDA after one warm-up run) and
reports its wall time (the network passes apart), the process's peak RSS and on CUDA torch's
peak allocated memory. The two label maps are compared with each other and, for a phantom, with
its ground truth (DSC per organ). The fine network was trained on organ crops normalised on the
crop, so the window's labels say how far the comparison is like for like, not which is better.
Prints a Markdown table, writes OUT/bench_sliding_window.json; --write-docs puts it, dated, with
the machine, into docs/benchmarks.md (section sliding-window-DEVICE-BACKEND).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.special import expit, logit

from bench.arguments import BACKEND_HELP, add_weights, parse_shape, shape_text
from bench.bench_submission import PAPER_SIZES, ROOT, header, make_inputs, prepared
from bench.peak_memory import own_peak_rss_mb
from bench.record import exit_description, publish, require_docs_sections
from evaluation.metrics import dice
from flare_common import cli
from flare_common.nifti import output_name
from inference import openvino_runtime
from inference.checkpoint import load
from inference.defaults import BACKENDS, PRECISIONS
from inference.imageio import read_ct
from inference.pipeline import Segmenter
from inference.postprocessing import keep_largest_components, labels_at_size
from inference.preprocessing import resize_for_stage
from inference.torch_runtime import TorchNetworks, choose_precision

METHODS = ("coarse-to-fine", "sliding window")
GAUSSIAN_SIGMA = 1 / 8  # of the window side (nnU-Net)
PROBABILITY_EPS = 1e-6  # the mean probability is clamped to [eps, 1 - eps] before its logit


def window_starts(size: int, window: int, overlap: float) -> list[int]:
    """Start indices of windows covering [0, size) along one axis (size >= window): as few as keep
    neighbours overlapping by at least `overlap` of a window, evenly spaced, the last ending at size."""
    if size < window:
        raise ValueError(f"a side of {size} voxels is smaller than the window ({window})")
    count = math.ceil((size - window) / (window * (1 - overlap))) + 1
    if count == 1:
        return [0]
    step = (size - window) / (count - 1)
    return [round(i * step) for i in range(count)]


def gaussian_weights(window: tuple[int, int, int]) -> np.ndarray:
    """float32 (x, y, z) weights of one window: a Gaussian centred on it with sigma GAUSSIAN_SIGMA
    of each side, 1 at the centre (never 0 at the edges)."""
    axes = [np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (n * GAUSSIAN_SIGMA)) ** 2) for n in window]
    weights = axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :]
    return (weights / weights.max()).astype(np.float32)


def sliding_window_probabilities(volume: np.ndarray, network: Callable[[np.ndarray], np.ndarray],
                                 window: tuple[int, int, int], overlap: float, pad_value: float) -> np.ndarray:
    """The Gaussian-weighted mean sigmoid (organs, x, y, z), float32, of `network` (logits
    (organs, window) of a float32 window) over windows tiling a normalised (x, y, z) volume; a side
    shorter than the window is padded with pad_value (and the padding cut off again)."""
    shape = volume.shape
    padded = tuple(max(n, w) for n, w in zip(shape, window))
    origin = [(p - n) // 2 for n, p in zip(shape, padded)]
    if padded != shape:
        volume = np.pad(volume, [(o, p - n - o) for o, n, p in zip(origin, shape, padded)], constant_values=pad_value)
    weights = gaussian_weights(window)
    total, weight_sum = None, np.zeros(padded, dtype=np.float32)
    starts = [window_starts(n, w, overlap) for n, w in zip(padded, window)]
    for x in starts[0]:
        for y in starts[1]:
            for z in starts[2]:
                at = (slice(x, x + window[0]), slice(y, y + window[1]), slice(z, z + window[2]))
                probabilities = expit(network(volume[at]))
                if total is None:
                    total = np.zeros((probabilities.shape[0], *padded), dtype=np.float32)
                total[(slice(None), *at)] += probabilities * weights
                weight_sum[at] += weights
    total /= weight_sum
    return total[(slice(None), *(slice(o, o + n) for o, n in zip(origin, shape)))]


def resampled_size(shape: tuple[int, ...], spacing: tuple[float, float, float],
                   target_spacing: tuple[float, float, float]) -> list[int]:
    """The voxels per axis of a grid of `shape` at `spacing` resampled to `target_spacing` (mm)."""
    return [max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target_spacing)]


def sliding_window_labels(segmenter: Segmenter, ct: np.ndarray, spacing: tuple[float, float, float],
                          target_spacing: tuple[float, float, float], overlap: float) -> tuple[np.ndarray, dict]:
    """Labels (uint8, the CT's canonical grid) of the fine network slid over the whole CT resampled
    to target_spacing (mm), and the seconds of each part."""
    seconds, start = {}, time.perf_counter()
    spec = segmenter.spec
    size = resampled_size(ct.shape, spacing, target_spacing)
    normalised = spec.normalisation["fine"](resize_for_stage(ct, size, "fine"))
    pad_value = float(normalised.min())  # the lowest HU of the window, as air is
    seconds["resample and normalise"] = time.perf_counter() - start
    start = time.perf_counter()
    probabilities = sliding_window_probabilities(normalised, lambda x: segmenter.networks("fine", x),
                                                 spec.input_sizes["fine"], overlap, pad_value)
    del normalised
    seconds["windows"] = time.perf_counter() - start
    start = time.perf_counter()
    logits = logit(np.clip(probabilities, PROBABILITY_EPS, 1 - PROBABILITY_EPS, out=probabilities), out=probabilities)
    labels = keep_largest_components(labels_at_size(logits, ct.shape), spacing, spec.labels, spec.post)
    seconds["labels back"] = time.perf_counter() - start
    return labels, seconds


def run_method(args: argparse.Namespace) -> dict:
    """In this process: load the weights, run one method on the CT, save its labels (the CT's stored
    grid) to OUT/<method>.npy; the timings and memory."""
    device = torch.device(args.device)
    models = load(args.weights)
    networks = (openvino_runtime.compile_networks(args.weights, models.stages(), args.precision)
                if args.backend == "openvino" else TorchNetworks(models, device, args.precision))
    segmenter = Segmenter(models.spec(), networks)
    ct = read_ct(args.input)
    target = tuple(args.target_spacing) if args.target_spacing else None

    def once() -> tuple[np.ndarray, dict, float | None]:
        """The labels, the seconds of each part and, on CUDA, torch's peak allocated MB (the
        pipeline measures each of its stages, resetting the peak: its largest stage's)."""
        if args.method == "coarse-to-fine":
            result = segmenter(ct.data, ct.spacing)
            parts = {**result.seconds, "box": [[s.start, s.stop] for s in result.box or ()]}
            return result.labels, parts, result.cuda_memory().get("peak_allocated_mb")
        with networks.measured() as memory:
            labels, parts = sliding_window_labels(segmenter, ct.data, ct.spacing, target, args.overlap)
        return labels, parts, memory.get("allocated")

    if device.type == "cuda":
        once()  # warm-up: CUDA context, kernels
    rss_before = own_peak_rss_mb()
    start = time.perf_counter()
    labels, parts, gpu_peak = once()
    wall = time.perf_counter() - start
    np.save(labels_file(args.out, args.method), ct.from_canonical(labels))
    row = {"method": args.method, "seconds": wall, "parts": parts,
           "peak_rss_mb": own_peak_rss_mb(),
           "peak_rss_before_mb": rss_before}
    if gpu_peak is not None:
        row["torch_peak_allocated_mb"] = gpu_peak
    return row


def labels_file(out: Path, method: str) -> Path:
    """Where a method's child process leaves its labels."""
    return out / f"{method.replace(' ', '_')}.npy"


def fine_spacing(spacing: tuple[float, float, float], box: list[list[int]],
                 fine_size: tuple[int, int, int]) -> tuple[float, float, float]:
    """The voxel size (mm) the fine network has on a crop [start, stop) per axis of the canonical grid."""
    return tuple((stop - start) * s / n for (start, stop), s, n in zip(box, spacing, fine_size))


def compare(out: Path, case: Path, labels: dict[int, str]) -> dict:
    """DSC per organ of the two methods' labels with each other and with the phantom's ground truth."""
    maps = {m: np.load(labels_file(out, m)) for m in METHODS}
    truth_file = case.parent / "labels" / output_name(case)
    truth = np.asarray(nib.load(truth_file).dataobj) if truth_file.is_file() else None
    result = {"between": {name: dice(maps[METHODS[0]] == k, maps[METHODS[1]] == k) for k, name in labels.items()}}
    if truth is not None:
        for method, found in maps.items():
            result[method] = {name: dice(truth == k, found == k) for k, name in labels.items()}
    return result


def table(result: dict) -> str:
    rows = {r["method"]: r for r in result["runs"]}
    c2f, window = rows["coarse-to-fine"], rows["sliding window"]
    lines = [f"Command: `{result['command']}`. {result['date']}; {result['machine']}; torch {result['torch']}, "
             f"Python {result['python']}. Weights: {result['weights']} at coarse {result['sizes']['coarse']}, "
             f"fine {result['sizes']['fine']}; {result['precision']} on {result['device']}, networks run by "
             f"{result['backend']}. CT: {result['case']} ({shape_text(result['shape'])} voxels at "
             f"{' x '.join(f'{s:g}' for s in result['spacing'])} mm); the fine network's voxel on its crop: "
             f"{' x '.join(f'{s:.2f}' for s in result['fine_spacing_mm'])} mm, where the whole CT is "
             f"{shape_text(result['window_grid'])} voxels: {result['windows']} windows of "
             f"{result['sizes']['fine']} at {result['overlap']:g} overlap.", "",
             "| method | seconds (weights loaded) | peak RSS MB | torch peak allocated MB | DSC vs ground truth "
             "(liver / kidney / spleen / pancreas) |", "|---|---|---|---|---|"]
    for method in METHODS:
        r = rows[method]
        dsc = result["agreement"].get(method)
        gpu = r.get("torch_peak_allocated_mb")
        lines.append(f"| {method} | {r['seconds']:.2f} | {peak_rss(r)} | "
                     f"{'-' if gpu is None else f'{gpu:.0f}'} | "
                     + (" / ".join(f"{v:.3f}" for v in dsc.values()) if dsc else "-") + " |")
    between = " / ".join(f"{v:.3f}" for v in result["agreement"]["between"].values())
    lines += ["", f"Sliding window / coarse-to-fine: {window['seconds'] / c2f['seconds']:.1f}x the time, "
              f"{window['peak_rss_mb'] / c2f['peak_rss_mb']:.2f}x the peak RSS"
              + (f", {window['torch_peak_allocated_mb'] / c2f['torch_peak_allocated_mb']:.2f}x torch's peak GPU "
                 f"memory" if "torch_peak_allocated_mb" in c2f else "")
              + f". DSC between the two: {between}."]
    return "\n".join(lines)


def peak_rss(row: dict) -> str:
    """A method's peak RSS (MB) for the table, marked where the process had reached it before the
    method ran (loading the weights and the CT): then it is not the method's own."""
    before = " (reached while loading, before the run)" if row["peak_rss_mb"] <= row["peak_rss_before_mb"] else ""
    return f"{row['peak_rss_mb']:.0f}{before}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_sliding_window", description=__doc__.split("\n")[0])
    add_weights(parser)
    parser.add_argument("--sizes", type=int, nargs=2, default=[PAPER_SIZES["coarse"][0], PAPER_SIZES["fine"][0]],
                        metavar="SIDE", help="coarse and fine input sides (default: the paper's, %(default)s)")
    parser.add_argument("--shape", type=parse_shape, default=(512, 512, 160), metavar="XxYxZ",
                        help="the phantom CT's shape (default 512x512x160)")
    parser.add_argument("--input", type=Path, help="a CT file instead of the phantom")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="as predict's --precision (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    parser.add_argument("--overlap", type=cli.finite_float, default=0.5, help="of a window (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "sliding_window", help="work folder")
    parser.add_argument("--write-docs", action="store_true", help="write the table into docs/benchmarks.md")
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)  # a child process: one method
    parser.add_argument("--target-spacing", type=cli.finite_float, nargs=3, help=argparse.SUPPRESS)
    return parser


def child(args: argparse.Namespace, method: str, weights: Path, case: Path, precision: str, backend: str,
          target: tuple[float, float, float] | None = None) -> dict:
    """One method in a fresh process; its row. Exit 1 with one line where it failed."""
    command = [sys.executable, "-m", "bench.bench_sliding_window", "--method", method, "--weights", str(weights),
               "--input", str(case), "--device", args.device, "--precision", precision, "--backend", backend,
               "--overlap", str(args.overlap), "--out", str(args.out)]
    if target is not None:
        command += ["--target-spacing", *map(str, target)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no error output"])[-1]
        raise SystemExit(f"error: {method}: {exit_description(done.returncode)}: {last}")
    row = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{method}: {row['seconds']:.2f} s", file=sys.stderr)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not 0 <= args.overlap < 1:
        parser.error(f"--overlap {args.overlap}: must be in [0, 1)")
    if args.method:
        print(json.dumps(run_method(args)))
        return 0
    if args.write_docs:
        require_docs_sections()
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device(args.device)
    precision = choose_precision(args.precision, device)  # PyTorch's
    sizes = {"coarse": (args.sizes[0],) * 3, "fine": (args.sizes[1],) * 3}
    models, weights, backend = prepared(args.weights, sizes, device, args.precision, args.backend, args.out)
    if backend == "openvino":  # both methods at the one precision OpenVINO's probe chooses here
        precision, _ = openvino_runtime.choose_precision(args.precision)
    case = args.input or make_inputs(args.out / "inputs", [args.shape], [])[0]
    ct = read_ct(case)

    c2f = child(args, METHODS[0], weights, case, precision, backend)
    if not c2f["parts"]["box"]:
        raise SystemExit(f"error: {case.name}: the coarse stage found no organ; nothing to compare")
    fine_size = models.fine.config.input_size
    target = fine_spacing(ct.spacing, c2f["parts"]["box"], fine_size)
    window = child(args, METHODS[1], weights, case, precision, backend, target)
    grid = resampled_size(ct.data.shape, ct.spacing, target)
    result = {**header("bench.bench_sliding_window", argv, device, args.weights, models, precision, backend),
              "case": case.name, "shape": list(ct.data.shape), "spacing": list(ct.spacing),
              "fine_spacing_mm": list(target), "window_grid": grid, "overlap": args.overlap,
              "windows": math.prod(len(window_starts(max(n, w), w, args.overlap)) for n, w in zip(grid, fine_size)),
              "runs": [c2f, window], "agreement": compare(args.out, case, models.labels)}
    section = (f"sliding-window-{device.type}-{backend}",
               f"Coarse-to-fine against a sliding window on the {device.type.upper()} ({backend})")
    publish(result, args.out / "bench_sliding_window.json", table(result), section if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
