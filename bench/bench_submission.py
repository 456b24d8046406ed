"""Benchmark the whole submission as the organisers time it, with the authors' networks as the yardstick.

    python -m bench.bench_submission [--weights FILE] [--sizes 160 192 | --sizes checkpoint]
        [--shapes 512x512x160 512x512x300] [--real FILE ...] [--device cpu|cuda] [--precision auto]
        [--backend auto|torch|openvino] [--repeats 2] [--out DIR] [--write-docs]

On one device:
1. inputs: a phantom CT (training/phantom/) of each --shapes (x y z voxels) at 0.8 x 0.8 x 2.5 mm
   centred on the abdomen, and the real CT beside the checkout (REAL_CT) when it is there;
2. weights: the checkpoint with its networks' input sizes set to --sizes, by default the paper's
   (coarse 160^3, fine 192^3), so that the networks do the paper's work whatever size the weights
   were trained at (`--sizes checkpoint` keeps the checkpoint's own); on the CPU they are
   exported to OpenVINO (inference/openvino_runtime.py) unless --backend torch, and run in fp32
   or bf16 as predict runs them (--precision auto: OpenVINO's probe chooses, in every process);
3. yardstick: one eager fp32 forward pass of each of the authors' networks at the paper's input
   sizes on this device (random weights: the time does not depend on them), after a warm-up,
   the median of --repeats: what the authors' networks alone need, measured in the same run;
4. cold: each case alone through the efficiency harness (evaluation.efficiency.run_case: `sh
   predict.sh` started once for it, its process tree's RSS and on CUDA the GPU's used memory
   (NVML) sampled every 50 ms); predict's report gives the start-up (process, imports, model
   load) and each stage of the case (inference.pipeline.STAGES, plus the wait for the input and
   the write); "rest" is what is left of the wall time (the shell, interpreter shutdown, the
   harness). Reading and reorienting run in predict's reader thread beside the start-up: their
   own seconds are shown apart, "waited" is what the case stood still for them;
5. warm: the pipeline in this process, weights loaded once, the second run of each case timed,
   with torch's peak GPU memory on CUDA, and there again with cuDNN's autotuner (its first,
   tuning, run and a tuned one); where the precision is not fp32 or OpenVINO runs the networks,
   the labels of fp32 eager are the reference: per-organ DSC (the issue's bar: >= 0.99).
Prints Markdown tables, writes OUT/bench_submission.json; --write-docs puts them, dated, with the
CPU model and flags, the GPU and torch, into docs/benchmarks.md (section submission-DEVICE-BACKEND).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from bench.record import cpu_description, publish
from evaluation.efficiency import Submission, command_gpus, run_case
from evaluation.metrics import dice
from evaluation.nvml import GpuMemory
from evaluation.rules import get_rules
from inference import openvino_runtime
from inference.checkpoint import Models, load, save
from inference.defaults import DEFAULT_WEIGHTS
from inference.imageio import read_ct
from inference.networks import SIDE_MULTIPLE, CoarseConfig, CoarseUNet, EfficientSegNet, FineConfig
from inference.pipeline import STAGES, Segmenter, choose_precision
from training import phantom

ROOT = Path(__file__).resolve().parents[1]
REAL_CT = ROOT.parent / "shared" / "data" / "real-ct" / "ts_abdomen_0000.nii.gz"
SPACING = (0.8, 0.8, 2.5)  # mm, x y z: a portal-venous abdominal CT's usual grid
PAPER_SIZES = {"coarse": CoarseConfig().input_size, "fine": FineConfig().input_size}
CASE_STAGES = ("waited", *STAGES, "write")  # with STARTUP and "rest": the parts of the wall time
READ = ("read", "reorient")  # done in predict's reader thread beside start-up: not parts of the wall time
STARTUP = ("process", "imports", "model_load")
TIMEOUT_S = 1800.0


def parse_shape(text: str) -> tuple[int, int, int]:
    """'512x512x160' -> (512, 512, 160)."""
    try:
        shape = tuple(int(n) for n in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 16:
        raise argparse.ArgumentTypeError(f"{text!r}: expected XxYxZ voxels, each at least 16, e.g. 512x512x160")
    return shape


def make_inputs(folder: Path, shapes: list[tuple[int, int, int]], real: list[Path]) -> list[Path]:
    """A phantom CT per shape (kept between runs) and the real CTs, as one input file each."""
    cases = []
    for i, shape in enumerate(shapes):
        name = f"phantom_{'x'.join(map(str, shape))}"
        path = folder / f"{name}_0000.nii.gz"
        if not path.is_file():
            ct = phantom.generate(phantom.case_seed(0, i), geometry=phantom.centred(shape, SPACING))
            phantom.save(ct, folder, folder / "labels", name)
        cases.append(path)
    return cases + real


def at_sizes(models: Models, sizes: dict[str, tuple[int, int, int]]) -> Models:
    """A copy of the models whose networks run at the given input sizes (same weights)."""
    copied = dataclasses.replace(models)
    for stage, size in sizes.items():
        net = copy.deepcopy(models.network(stage))
        net.config = dataclasses.replace(net.config, input_size=tuple(size))
        setattr(copied, stage, net)
    return copied


def prepared_weights(source: Path, models: Models, out: Path) -> Path:
    """OUT/weights.pt holding the models (at the sizes they run at), kept from an earlier run made
    from the same checkpoint at the same sizes, so that its OpenVINO export is kept too."""
    weights, stamp = out / "weights.pt", out / "weights.source.json"
    sizes = {stage: list(models.network(stage).config.input_size) for stage in models.stages()}
    made_from = {"sha256": openvino_runtime.checksum(source), "sizes": sizes}
    if not (weights.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == made_from):
        save(weights, models)
        stamp.write_text(json.dumps(made_from) + "\n")
    return weights


def choose_backend(requested: str, device: torch.device, precision: str) -> str:
    """openvino where it can run (the CPU, fp32, bf16 or auto, installed) unless torch is asked for."""
    possible = openvino_runtime.runs_on(device.type, precision) and openvino_runtime.installed()
    if requested == "openvino" and not possible:
        raise SystemExit("error: --backend openvino needs OpenVINO installed, the CPU and fp32 or bf16")
    return "openvino" if requested != "torch" and possible else "torch"


def prepared(source: Path, sizes: dict[str, tuple[int, int, int]] | None, device: torch.device, precision: str,
             backend: str, out: Path) -> tuple[Models, Path, str]:
    """The checkpoint's models at `sizes` (None: its own), saved as OUT/weights.pt, and the backend
    that runs them, exported to OpenVINO when that is the backend and no export of them exists yet."""
    models = load(source)
    if sizes is not None:
        models = at_sizes(models, sizes)
    weights = prepared_weights(source, models, out)
    backend = choose_backend(backend, device, precision)
    if backend == "openvino" and openvino_runtime.available(weights, models) is not None:
        print("exporting the networks to OpenVINO ...", file=sys.stderr)
        openvino_runtime.export(weights, models)
    return models, weights, backend


def recorded_arguments(argv: list[str]) -> list[str]:
    """The arguments as a benchmark's docs record them: without the work folder (`--out DIR`),
    which says nothing about the numbers and would put one machine's paths into the docs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(arg)
    return kept


def header(module: str, argv: list[str] | None, device: torch.device, weights: Path, models: Models,
           precision: str, backend: str, probe_s: dict[str, float] | None = None) -> dict:
    """What a benchmark's result says first: its command, the date, the machine and software, and
    what ran (weights, their sizes, precision and OpenVINO's probe that chose it, backend)."""
    return {"command": f"python -m {module} " + " ".join(recorded_arguments(argv if argv is not None else sys.argv[1:])),
            "date": time.strftime("%Y-%m-%d"), "machine": cpu_description(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "weights": weights.name, "trained_on": models.trained_on, "precision": precision,
            "precision_probe_s": probe_s or {}, "backend": backend,
            "sizes": {stage: "x".join(map(str, models.network(stage).config.input_size)) for stage in models.stages()}}


def yardstick(device: torch.device, repeats: int) -> dict[str, float]:
    """Seconds of one eager fp32 forward pass of each of the authors' networks at the paper's input
    size (median of `repeats` after a warm-up), on a random z-scored input."""
    seconds = {}
    for stage, net in (("coarse", CoarseUNet()), ("fine", EfficientSegNet())):
        net = net.to(device).eval()
        x = torch.randn(1, 1, *PAPER_SIZES[stage], device=device)
        times = []
        with torch.inference_mode():
            for i in range(repeats + 1):
                start = time.perf_counter()
                net(x)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                if i:
                    times.append(time.perf_counter() - start)
        seconds[stage] = statistics.median(times)
        del net, x
    seconds["both"] = seconds["coarse"] + seconds["fine"]
    return seconds


def nvml_gpu(device: torch.device) -> GpuMemory | None:
    """NVML's reader of the GPU torch calls `device`, found by its UUID (CUDA numbers the GPUs
    fastest first unless CUDA_DEVICE_ORDER says otherwise, NVML by PCI bus)."""
    uuid = "GPU-" + str(torch.cuda.get_device_properties(device).uuid).removeprefix("GPU-")
    return GpuMemory.open(uuid=uuid, quiet=True) or GpuMemory.open(device.index or 0)


def cold(cases: list[Path], weights: Path, device: torch.device, precision: str, backend: str, out: Path) -> list[dict]:
    """Each case through the efficiency harness: wall time, peak RSS, NVML peak, stage times."""
    gpu = nvml_gpu(device) if device.type == "cuda" else None
    index = (gpu.index if gpu else device.index or 0) if device.type == "cuda" else None
    visible = command_gpus(index, gpu)
    for folder in ("predictions", "logs", "reports"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    os.environ["PYTHON"] = sys.executable  # predict.sh runs this interpreter
    rows = []
    for case in cases:
        report = out / "reports" / f"{case.name.removesuffix('.nii.gz')}.json"
        command = (f"sh {shlex.quote(str(ROOT / 'predict.sh'))} {{inputs}} {{outputs}} "
                   f"--weights {shlex.quote(str(weights))} --device {device.type} --precision {precision} --backend {backend} "
                   f"--report {shlex.quote(str(report))}")
        row, _ = run_case(case, Submission(command=command, gpu=index, cuda_visible=visible), out,
                          get_rules("flare22").efficiency, gpu, interval_s=0.05, timeout_s=TIMEOUT_S)
        if row["Status"] != "ok":
            raise RuntimeError(f"{case.name}: {row['Status']}: {row['Detail']}")
        predicted = json.loads(report.read_text())
        seconds = {**predicted["startup_s"], **predicted["cases"][0]["seconds"]}
        seconds["rest"] = row["Time"] - sum(seconds[k] for k in STARTUP) - seconds["total"]
        rows.append({"case": case.name, "shape": predicted["cases"][0]["shape"], "wall_s": row["Time"],
                     "precision": predicted["precision"],
                     "seconds": seconds, "crop": predicted["cases"][0]["crop"],
                     "peak_rss_mb": row["MaxRAM_Tree"], "gpu_peak_mb": row["PlainMaxGPU_Mem"],
                     "gpu_peak_above_idle_mb": row["PlainMaxGPU_Mem"] - row["BaselineGPU_MB"]})
        print(f"cold {case.name}: {row['Time']:.2f} s", file=sys.stderr)
    return rows


def warm(cases: list[Path], models: Models, device: torch.device, precision: str,
         compiled: dict | None) -> list[dict]:
    """The pipeline in this process (`compiled`: OpenVINO's networks, at `precision`): the second
    run of each case, and its agreement with fp32."""
    segmenter = Segmenter(models, device, precision, compiled=compiled)
    reference = Segmenter(models, device, "fp32") if precision != "fp32" or compiled else None
    rows = []
    for case in cases:
        ct = read_ct(case)
        segmenter(ct.data, ct.spacing)
        start = time.perf_counter()
        result = segmenter(ct.data, ct.spacing)
        row = {"case": case.name, "warm_s": time.perf_counter() - start, "seconds": result.seconds,
               **result.cuda_memory()}
        if device.type == "cuda":  # cuDNN's autotuner: its first run tunes each convolution shape
            torch.backends.cudnn.benchmark = True
            for key in ("cudnn_benchmark_first_s", "cudnn_benchmark_tuned_s"):
                start = time.perf_counter()
                segmenter(ct.data, ct.spacing)
                row[key] = time.perf_counter() - start
            torch.backends.cudnn.benchmark = False
        if reference is not None:
            expected = reference(ct.data, ct.spacing).labels
            row["dsc_vs_fp32"] = {name: dice(result.labels == k, expected == k) for k, name in models.labels.items()}
        rows.append(row)
        print(f"warm {case.name}: {row['warm_s']:.2f} s", file=sys.stderr)
    return rows


def _f(value: float, digits: int = 2) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _probe(probe_s: dict[str, float]) -> str:
    """Where OpenVINO's probe chose the precision: its times, for the header."""
    return (f" (chosen by OpenVINO's probe: {1e3 * probe_s['fp32']:.1f} ms in fp32, {1e3 * probe_s['bf16']:.1f} ms "
            "in bf16)") if probe_s else ""


def tables(result: dict) -> str:
    """The run as Markdown: the machine, the yardstick, cold and warm per case."""
    y = result["yardstick_s"]
    lines = [f"Command: `{result['command']}`. {result['date']}; {result['machine']}; torch {result['torch']} "
             f"({result['threads']} threads), Python {result['python']}. Weights: {result['weights']} run at "
             f"coarse {result['sizes']['coarse']}, fine {result['sizes']['fine']}; precision {result['precision']} "
             f"on {result['device']}{_probe(result['precision_probe_s'])}, networks run by {result['backend']}.", "",
             f"Yardstick, the authors' networks in eager fp32, forward only: coarse 160^3 {y['coarse']:.2f} s + "
             f"fine 192^3 {y['fine']:.2f} s = {y['both']:.2f} s (target for a whole case: at most half, "
             f"{y['both'] / 2:.2f} s).", "",
             "Cold, process start to written file (seconds):", "",
             "| case | shape | wall | / yardstick | " + " | ".join(k.replace("_", " ") for k in STARTUP)
             + " | " + " | ".join(CASE_STAGES) + " | rest | " + " | ".join(f"{k} (beside start-up)" for k in READ)
             + " | peak RSS MB | GPU peak above idle MB |",
             "|---|---|---|---|" + "---|" * (len(STARTUP) + len(CASE_STAGES) + len(READ) + 3)]
    for r in result["cold"]:
        s = r["seconds"]
        case = r["case"] if r["precision"] == result["precision"] else f"{r['case']} ({r['precision']})"
        lines.append(f"| {case} | {'x'.join(map(str, r['shape']))} | {r['wall_s']:.2f} | "
                     f"{r['wall_s'] / y['both']:.2f} | " + " | ".join(_f(s[k]) for k in (*STARTUP, *CASE_STAGES))
                     + f" | {_f(s['rest'])} | " + " | ".join(_f(s[k]) for k in READ)
                     + f" | {_f(r['peak_rss_mb'], 0)} | {_f(r['gpu_peak_above_idle_mb'], 0)} |")
    lines += ["", "Warm, weights loaded once, the second run (seconds):", "",
              "| case | total | " + " | ".join(STAGES) + " | torch peak allocated MB | cuDNN autotuner first / tuned "
              "| DSC vs fp32 (min over organs) |",
              "|---|---|" + "---|" * (len(STAGES) + 3)]
    for r in result["warm"]:
        agreement = min(r["dsc_vs_fp32"].values()) if "dsc_vs_fp32" in r else None
        lines.append(f"| {r['case']} | {r['warm_s']:.2f} | " + " | ".join(_f(r["seconds"].get(k)) for k in STAGES)
                     + f" | {_f(r.get('peak_allocated_mb', math.nan), 0)} | "
                     + f"{_f(r.get('cudnn_benchmark_first_s', math.nan))} / {_f(r.get('cudnn_benchmark_tuned_s', math.nan))} | "
                     + (f"{agreement:.4f}" if agreement is not None else "fp32 itself") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_submission", description=__doc__.split("\n")[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="checkpoint (default: the shipped one)")
    parser.add_argument("--sizes", nargs="+", default=[str(PAPER_SIZES["coarse"][0]), str(PAPER_SIZES["fine"][0])],
                        metavar="SIDE", help="coarse and fine input sides to run the networks at, or 'checkpoint' "
                                             "(default: the paper's, %(default)s)")
    parser.add_argument("--shapes", nargs="*", type=parse_shape, default=[(512, 512, 160), (512, 512, 300)],
                        metavar="XxYxZ", help="phantom CT shapes (default 512x512x160 512x512x300)")
    parser.add_argument("--real", nargs="*", type=Path, metavar="FILE",
                        help=f"real CTs to add (default: {REAL_CT.relative_to(ROOT.parent)} when present)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", help="as predict's --precision (default %(default)s)")
    parser.add_argument("--backend", choices=("auto", "torch", "openvino"), default="auto",
                        help="what runs the networks; auto: OpenVINO on the CPU in fp32 where installed (default)")
    parser.add_argument("--repeats", type=int, default=2, help="timed yardstick passes after a warm-up (default 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "submission", help="work folder")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.sizes == ["checkpoint"]:
        sizes = None
    elif len(args.sizes) == 2 and all(s.isdigit() and int(s) > 0 and int(s) % SIDE_MULTIPLE == 0 for s in args.sizes):
        sizes = {"coarse": (int(args.sizes[0]),) * 3, "fine": (int(args.sizes[1]),) * 3}
    else:
        parser.error(f"--sizes {' '.join(args.sizes)}: expected two sides (coarse fine), multiples of "
                     f"{SIDE_MULTIPLE}, or 'checkpoint'")
    real = args.real if args.real is not None else [REAL_CT] if REAL_CT.is_file() else []
    device = torch.device(args.device)
    try:
        precision = choose_precision(args.precision, device)  # PyTorch's
    except ValueError as exc:
        parser.error(f"--precision: {exc}")
    models, weights, backend = prepared(args.weights, sizes, device, args.precision, args.backend, args.out)
    networks = openvino_runtime.compile_networks(weights, models, args.precision) if backend == "openvino" else None
    if networks is not None:
        precision = networks.precision
    cases = make_inputs(args.out / "inputs", args.shapes, real)

    result = header("bench.bench_submission", argv, device, args.weights, models, precision, backend,
                    networks.probe_s if networks else None)
    result["yardstick_s"] = yardstick(device, args.repeats)
    result["cold"] = cold(cases, weights, device, args.precision if networks else precision, backend, args.out)
    result["warm"] = warm(cases, models, device, precision, networks.stages if networks else None)
    section = (f"submission-{device.type}-{backend}",
               f"The whole submission on the {device.type.upper()}, networks run by {backend}")
    publish(result, args.out / "bench_submission.json", tables(result), section if args.write_docs else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
