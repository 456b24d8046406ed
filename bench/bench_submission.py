"""Benchmark the whole submission as the organisers time it, with the authors' networks as the yardstick.

    python -m bench.bench_submission [--weights FILE] [--sizes 160 192 | --sizes checkpoint]
        [--shapes 512x512x160 512x512x300] [--real FILE ...] [--device cpu|cuda] [--precision auto]
        [--backend auto|torch|openvino] [--repeats 2] [--out DIR] [--write-docs]

On one device:
1. inputs: a phantom CT (training/phantom/) of each --shapes (x y z voxels) at 0.8 x 0.8 x 2.5 mm
   centred on the abdomen, the same patient at every shape (case 0 of seed PHANTOM_SEED), and
   the real CT beside the checkout (REAL_CT) when it is there;
2. weights: the checkpoint with its networks' input sizes set to --sizes, by default the paper's
   (coarse 160^3, fine 192^3), so that the networks do the paper's work whatever size the weights
   were trained at (`--sizes checkpoint` keeps the checkpoint's own); on the CPU they are
   exported to OpenVINO (inference/openvino_runtime.py) unless --backend torch, and run in fp32
   or bf16 as predict runs them (--precision auto: OpenVINO's probe chooses, in every process);
3. yardstick: one eager fp32 forward pass of each of the authors' networks at the paper's input
   sizes on this device (random weights: the time does not depend on them), after a warm-up,
   the median of --repeats: what the authors' networks alone need, measured in the same run,
   once under glibc's own heap and once under the kept heap (inference/heap.py; mallopt is
   process-wide, so each in a fresh process: bench/yardstick.py); the ratio of a case to it takes
   the faster of the two;
4. cold: each case alone through the efficiency harness (evaluation.efficiency.run_case: `sh
   predict.sh` started once for it, its process tree's RSS and on CUDA the GPU's used memory
   (NVML) sampled every 50 ms); predict's report gives the start-up (process; loading: the
   imports, the weights and the networks) and each stage of the case (inference.pipeline.STAGES,
   plus the wait for the input and the write); "rest" is what is left of the wall time (the
   shell, interpreter shutdown, the harness). Reading and reorienting run in predict's reader thread beside the start-up: their
   own seconds are shown apart, "waited" is what the case stood still for them; each row keeps
   the harness's idle check (a case started on a busy machine is marked);
5. warm: the pipeline in this process under the heap predict's --heap auto chooses for the
   backend (inference.heap.choose_heap), weights loaded once, the second run of each case timed,
   with torch's peak GPU memory on CUDA, and there again with cuDNN's autotuner (its first run and
   a tuned one; the networks' inputs have one size, so only the first case's first run tunes);
   where the precision is not fp32 or OpenVINO runs the networks,
   the labels of fp32 eager are the reference: per-organ DSC (the issue's bar: >= 0.99).
The phantom CTs are kept in OUT/inputs between runs, each with a stamp of what made it (its shape,
seed and the generator's sources); one whose stamp differs is made again.
Prints Markdown tables, writes OUT/bench_submission.json; --write-docs puts them, dated, with the
CPU model and flags, the GPU, torch, OpenVINO, ISA-L and the heap, into docs/benchmarks.md
(section submission-DEVICE-BACKEND).
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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

from bench.arguments import BACKEND_HELP, add_weights, checked_inputs, parse_shape, shape_text
from bench.record import cpu_description, package_version, publish, require_docs_sections
from bench.shared_data import REAL_CT
from bench.stamp import PHANTOM_SOURCES, is_current, sources_digest, write_stamp
from bench.yardstick import faster_heap, yardsticks
from evaluation.efficiency import Measurement, Submission, command_gpus, run_case
from evaluation.metrics import dice
from evaluation.nvml import GpuMemory
from evaluation.rules import get_rules
from flare_common import cli
from flare_common.cli import at_least
from flare_common.nifti import image_name
from inference import openvino_runtime
from inference.checkpoint import Models, load, save
from inference.defaults import BACKENDS, PRECISIONS
from inference.heap import choose_heap, keep_freed_memory
from inference.imageio import read_ct
from inference.networks import CoarseConfig, FineConfig
from inference.pipeline import STAGES, NetworkRunner, Segmenter
from inference.torch_runtime import TorchNetworks, choose_precision
from training import phantom

ROOT = Path(__file__).resolve().parents[1]
SPACING = (0.8, 0.8, 2.5)  # mm, x y z: a portal-venous abdominal CT's usual grid
PAPER_SIZES = {"coarse": CoarseConfig().input_size, "fine": FineConfig().input_size}
CASE_STAGES = ("waited", *STAGES, "write")  # with STARTUP and "rest": the parts of the wall time
READ = ("read", "reorient")  # done in predict's reader thread beside start-up: not parts of the wall time
STARTUP = ("process", "loading")
TIMEOUT_S = 1800.0
PHANTOM_SEED = 0  # every benchmark phantom is case 0 of this seed: one patient, whatever its shape


def make_inputs(folder: Path, shapes: list[tuple[int, int, int]], real: list[Path]) -> list[Path]:
    """A phantom CT per shape and the real CTs, as one input file each. A phantom is kept between
    runs while its stamp (shape, spacing, seed, the generator's sources) matches; made again where not."""
    generator = sources_digest(*PHANTOM_SOURCES)
    cases = []
    for shape in shapes:
        name = f"phantom_{shape_text(shape)}"
        path = folder / image_name(name)
        made_from = {"shape": list(shape), "spacing": list(SPACING), "seed": PHANTOM_SEED, "case": 0,
                     "generator": generator}
        if not is_current(path, made_from):
            ct = phantom.generate(phantom.case_seed(PHANTOM_SEED, 0), geometry=phantom.centred(shape, SPACING))
            phantom.save(ct, folder, folder / "labels", name)
            write_stamp(path, made_from)
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
    weights = out / "weights.pt"
    sizes = {stage: list(models.network(stage).config.input_size) for stage in models.stages()}
    made_from = {"sha256": openvino_runtime.checksum(source), "sizes": sizes}
    if not is_current(weights, made_from):
        save(weights, models)
        write_stamp(weights, made_from)
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
    if backend == "openvino" and openvino_runtime.read_export(weights)[0] is None:
        print("exporting the networks to OpenVINO ...", file=sys.stderr)
        openvino_runtime.export(weights, models)
    return models, weights, backend


def recorded_arguments(argv: list[str]) -> list[str]:
    """The arguments as a benchmark's docs record them: without the work folder (`--out DIR`),
    which says nothing about the numbers, and with absolute paths (weights, CTs) cut to their file
    names: neither puts one machine's paths into the docs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--out":
            skip = True
        elif not arg.startswith("--out="):
            kept.append(Path(arg).name if os.path.isabs(arg) else arg)
    return kept


def header(module: str, argv: list[str] | None, device: torch.device, weights: Path, models: Models,
           precision: str, backend: str, probe_s: dict[str, float] | None = None) -> dict:
    """What a benchmark's result says first: its command, the date, the machine and software (torch,
    OpenVINO and ISA-L's versions, None where not installed), and what ran (weights, their sizes,
    precision and OpenVINO's probe that chose it, backend; the C heap, None until a benchmark sets one)."""
    return {"command": f"python -m {module} " + " ".join(recorded_arguments(argv if argv is not None else sys.argv[1:])),
            "date": time.strftime("%Y-%m-%d"), "machine": cpu_description(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "python": platform.python_version(),
            "openvino": package_version("openvino"), "isal": package_version("isal"),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "weights": weights.name, "trained_on": models.trained_on, "precision": precision,
            "precision_probe_s": probe_s or {}, "backend": backend, "heap": None,
            "sizes": {stage: shape_text(models.network(stage).config.input_size) for stage in models.stages()}}


def warm_heap(device: torch.device, backend: str) -> str:
    """Set this process's heap as predict's --heap auto would for the backend; the heap in effect."""
    heap = choose_heap("auto", device.type, backend)
    return "kept" if heap == "kept" and keep_freed_memory() else "system"


def nvml_gpu(device: torch.device) -> GpuMemory | None:
    """NVML's reader of the GPU torch calls `device`, found by its UUID (CUDA numbers the GPUs
    fastest first unless CUDA_DEVICE_ORDER says otherwise, NVML by PCI bus)."""
    uuid = "GPU-" + str(torch.cuda.get_device_properties(device).uuid).removeprefix("GPU-")
    return GpuMemory.open(uuid=uuid, quiet=True) or GpuMemory.open(device.index or 0)


def cold_round(cases: list[Path], weights: Path, device: torch.device, precision: str, backend: str,
               out: Path) -> list[dict]:
    """Each case once through the efficiency harness, in a fresh process: per case its wall time,
    peak RSS, NVML peak and stage times."""
    gpu = nvml_gpu(device) if device.type == "cuda" else None
    index = (gpu.index if gpu else device.index or 0) if device.type == "cuda" else None
    visible = command_gpus(index, gpu)
    for folder in ("predictions", "logs", "reports"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    os.environ["PYTHON"] = sys.executable  # predict.sh runs this interpreter
    done = []
    for case in cases:
        report = out / "reports" / f"{case.name.removesuffix('.nii.gz')}.json"
        command = (f"sh {shlex.quote(str(ROOT / 'predict.sh'))} {{inputs}} {{outputs}} "
                   f"--weights {shlex.quote(str(weights))} --device {device.type} --precision {precision} --backend {backend} "
                   f"--report {shlex.quote(str(report))}")
        row, _ = run_case(case, Submission(command=command, gpu=index, cuda_visible=visible), out,
                          Measurement(get_rules("flare22").efficiency, gpu, interval_s=0.05, timeout_s=TIMEOUT_S))
        if row["Status"] != "ok":
            raise RuntimeError(f"{case.name}: {row['Status']}: {row['Detail']}")
        predicted = json.loads(report.read_text())
        seconds = {**predicted["startup_s"], **predicted["cases"][0]["seconds"]}
        seconds["rest"] = row["Time"] - sum(seconds[k] for k in STARTUP) - seconds["total"]
        done.append({"case": case.name, "shape": predicted["cases"][0]["shape"], "wall_s": row["Time"],
                     "precision": predicted["precision"], "heap": predicted.get("heap"), "machine": row["Machine"],
                     "seconds": seconds, "crop": predicted["cases"][0]["crop"],
                     "peak_rss_mb": row["MaxRAM_Tree"], "gpu_peak_mb": row["PlainMaxGPU_Mem"],
                     "gpu_peak_above_idle_mb": row["PlainMaxGPU_Mem"] - row["BaselineGPU_MB"]})
        print(f"cold {case.name}: {row['Time']:.2f} s", file=sys.stderr)
    return done


T = TypeVar("T")


def lower_median(values: list[T], key: Callable[[T], float] | None = None) -> T:
    """The median of an odd count (by `key` where given); of an even one the lower middle value (a
    measured one, never a mean)."""
    return sorted(values, key=key)[(len(values) - 1) // 2]


def median_yardstick(rounds: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Per heap measured in every round, each stage's (and both's) median over the rounds."""
    heaps = [heap for heap in rounds[0] if all(heap in r for r in rounds)]
    return {heap: {stage: lower_median([r[heap][stage] for r in rounds]) for stage in rounds[0][heap]} for heap in heaps}


def cold_rows(rounds: list[list[dict]], yardstick_rounds: list[float]) -> list[dict]:
    """Per case the run of median wall time, with every run's wall time ("wall_runs_s") and its
    ratio to the yardstick measured just before it, in its round ("ratio_runs"), and their median
    ("ratio"): a slow spell of the machine falls on both sides of a ratio."""
    rows = []
    for i in range(len(rounds[0])):
        runs = [r[i] for r in rounds]
        ratios = [run["wall_s"] / y for run, y in zip(runs, yardstick_rounds)]
        median = lower_median(runs, key=lambda r: r["wall_s"])
        rows.append({**median, "wall_runs_s": [r["wall_s"] for r in runs], "ratio_runs": ratios,
                     "ratio": lower_median(ratios)})
    return rows


def warm(cases: list[Path], models: Models, networks: NetworkRunner, device: torch.device) -> list[dict]:
    """The pipeline in this process, its networks run by `networks`: the second run of each case,
    and its agreement with eager PyTorch in fp32."""
    segmenter = Segmenter(models.spec(), networks)
    eager_fp32 = isinstance(networks, TorchNetworks) and networks.precision == "fp32"
    reference = None if eager_fp32 else Segmenter(models.spec(), TorchNetworks(models, device, "fp32"))
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


HEAP_WORDS = {"system": "glibc's own heap (`--heap system`)", "kept": "the kept heap (`--heap kept`)"}


def lowest_dsc(dsc: dict[str, float]) -> float | None:
    """The lowest per-organ DSC, NaN values (an organ in neither label map) left out; None if all are."""
    values = [v for v in dsc.values() if not math.isnan(v)]
    return min(values) if values else None


def _software(result: dict) -> str:
    """torch, OpenVINO, ISA-L and Python, for the header."""
    openvino = f"OpenVINO {result['openvino']}" if result.get("openvino") else "no OpenVINO"
    isal = f"ISA-L (isal {result['isal']})" if result.get("isal") else "no ISA-L (isal not installed: zlib's gzip)"
    return f"torch {result['torch']} ({result['threads']} threads), {openvino}, {isal}, Python {result['python']}"


def _heaps(result: dict) -> str:
    """The C heap of the cold runs (predict's --heap auto, from its reports) and of the warm runs."""
    cold = sorted({r["heap"] or "?" for r in result["cold"]})
    return f"C heap {'/'.join(cold)} in the cold runs (predict's --heap auto), {result['heap']} in the warm runs"


def _yardstick_lines(result: dict) -> list[str]:
    """Each heap's yardstick and the one the ratios use."""
    sizes, by_heap = result["yardstick_sizes"], result["yardstick_by_heap_s"]
    measured = "; ".join(f"{HEAP_WORDS.get(heap, heap)}: coarse {sizes['coarse']} {y['coarse']:.2f} s + fine "
                         f"{sizes['fine']} {y['fine']:.2f} s = {y['both']:.2f} s" for heap, y in by_heap.items())
    y = result["yardstick_s"]
    heap = result["yardstick_heap"]
    faster = HEAP_WORDS.get(heap, heap)
    rounds = ", ".join(_f(r[heap]) for r in result["yardstick_rounds_s"])
    return [f"Yardstick, the authors' networks in eager fp32, forward only, each heap in a fresh process before each "
            f"round of cold runs, medians over the rounds: {measured}. The ratios below use the faster: {y['both']:.2f} "
            f"s, under {faster} (target for a whole case: at most half, {y['both'] / 2:.2f} s); its rounds took "
            f"{rounds} s, and each case's ratio is the median of its runs' ratios to the yardstick of their round.", ""]


def _cold_case(row: dict, precision: str) -> str:
    """A cold row's case cell: its name, with its precision where it differs and a busy machine noted."""
    notes = [row["precision"]] if row["precision"] != precision else []
    notes += ["machine busy before it"] if str(row.get("machine", "")).startswith("busy") else []
    return row["case"] + (f" ({', '.join(notes)})" if notes else "")


def _runs(result: dict) -> str:
    """How many cold runs each case had, in words."""
    n = len(result["cold"][0]["wall_runs_s"]) if result["cold"] else 0
    return "run once" if n == 1 else f"run {n} times, in turn with the others and the yardstick"


def tables(result: dict) -> str:
    """The run as Markdown: the machine, the yardstick, cold and warm per case."""
    lines = [f"Command: `{result['command']}`. {result['date']}; {result['machine']}; {_software(result)}. "
             f"Weights: {result['weights']} run at coarse {result['sizes']['coarse']}, fine {result['sizes']['fine']}; "
             f"precision {result['precision']} on {result['device']}{_probe(result['precision_probe_s'])}, networks "
             f"run by {result['backend']}; {_heaps(result)}.", "",
             *_yardstick_lines(result),
             f"Cold, process start to written file (seconds; each case {_runs(result)}, the run of median wall time "
             "shown):", "",
             "| case | shape | wall | / yardstick (faster heap) | all runs (their ratios) | "
             + " | ".join(k.replace("_", " ") for k in STARTUP)
             + " | " + " | ".join(CASE_STAGES) + " | rest | " + " | ".join(f"{k} (beside start-up)" for k in READ)
             + " | peak RSS MB | GPU peak above idle MB |",
             "|---|---|---|---|---|" + "---|" * (len(STARTUP) + len(CASE_STAGES) + len(READ) + 3)]
    for r in result["cold"]:
        s = r["seconds"]
        lines.append(f"| {_cold_case(r, result['precision'])} | {shape_text(r['shape'])} | {r['wall_s']:.2f} | "
                     f"{r['ratio']:.2f} | "
                     + ", ".join(f"{w:.2f} ({q:.2f})" for w, q in zip(r["wall_runs_s"], r["ratio_runs"])) + " | "
                     + " | ".join(_f(s[k]) for k in (*STARTUP, *CASE_STAGES))
                     + f" | {_f(s['rest'])} | " + " | ".join(_f(s[k]) for k in READ)
                     + f" | {_f(r['peak_rss_mb'], 0)} | {_f(r['gpu_peak_above_idle_mb'], 0)} |")
    lines += ["", "Warm, weights loaded once, the second run (seconds):", "",
              "| case | total | " + " | ".join(STAGES) + " | torch peak allocated MB | cuDNN autotuner first / tuned "
              "| DSC vs fp32 (min over organs) |",
              "|---|---|" + "---|" * (len(STAGES) + 3)]
    for r in result["warm"]:
        agreement = lowest_dsc(r["dsc_vs_fp32"]) if "dsc_vs_fp32" in r else None
        lines.append(f"| {r['case']} | {r['warm_s']:.2f} | " + " | ".join(_f(r["seconds"].get(k)) for k in STAGES)
                     + f" | {_f(r.get('peak_allocated_mb', math.nan), 0)} | "
                     + f"{_f(r.get('cudnn_benchmark_first_s', math.nan))} / {_f(r.get('cudnn_benchmark_tuned_s', math.nan))} | "
                     + (f"{agreement:.4f}" if agreement is not None else
                        "no organ in either" if "dsc_vs_fp32" in r else "fp32 itself") + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_submission", description=__doc__.split("\n")[0])
    add_weights(parser)
    parser.add_argument("--sizes", nargs="+", default=[str(PAPER_SIZES["coarse"][0]), str(PAPER_SIZES["fine"][0])],
                        metavar="SIDE", help="coarse and fine input sides to run the networks at, or 'checkpoint' "
                                             "(default: the paper's, %(default)s)")
    parser.add_argument("--shapes", nargs="*", type=parse_shape, default=[(512, 512, 160), (512, 512, 300)],
                        metavar="XxYxZ", help="phantom CT shapes (default 512x512x160 512x512x300)")
    parser.add_argument("--real", nargs="*", type=Path, metavar="FILE",
                        help=f"real CTs to add (default: {REAL_CT.relative_to(ROOT.parent)} when present)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="as predict's --precision (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", help=BACKEND_HELP)
    parser.add_argument("--repeats", type=at_least(1), default=2,
                        help="timed yardstick passes after a warm-up (default 2)")
    parser.add_argument("--cold-runs", type=at_least(1), default=3,
                        help="cold runs of each case, the median shown (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "submission", help="work folder")
    parser.add_argument("--write-docs", action="store_true", help="write the tables into docs/benchmarks.md")
    args = parser.parse_args(argv)
    sizes, real = checked_inputs(parser, args, REAL_CT)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA GPU here")
    try:
        precision = choose_precision(args.precision, device)  # PyTorch's
    except ValueError as exc:
        parser.error(f"--precision: {exc}")
    if args.write_docs:
        require_docs_sections()
    try:
        result = measure(args, argv, sizes, real, device, precision)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    section = (f"submission-{device.type}-{result['backend']}",
               f"The whole submission on the {device.type.upper()}, networks run by {result['backend']}")
    publish(result, args.out / "bench_submission.json", tables(result), section if args.write_docs else None)
    return 0


def measure(args: argparse.Namespace, argv: list[str] | None, sizes: dict[str, tuple[int, int, int]] | None,
            real: list[Path], device: torch.device, precision: str) -> dict:
    """The whole run: inputs and weights prepared, the yardstick under each heap, cold, then warm
    under predict's heap; the result. RuntimeError where a measurement failed."""
    models, weights, backend = prepared(args.weights, sizes, device, args.precision, args.backend, args.out)
    compiled = (openvino_runtime.compile_networks(weights, models.stages(), args.precision)
                if backend == "openvino" else None)
    networks = compiled or TorchNetworks(models, device, precision)
    precision = networks.precision
    cases = make_inputs(args.out / "inputs", args.shapes, real)

    result = header("bench.bench_submission", argv, device, args.weights, models, precision, backend,
                    compiled.probe_s if compiled else None)
    yardstick_rounds, cold_runs = [], []
    for _ in range(args.cold_runs):  # in turns, the yardstick (fresh processes) before each round of cold runs
        yardstick_rounds.append(yardsticks(device, args.repeats, PAPER_SIZES))
        cold_runs.append(cold_round(cases, weights, device, args.precision if compiled else precision, backend,
                                    args.out))
    by_heap = median_yardstick(yardstick_rounds)
    heap = faster_heap(by_heap)
    result.update(yardstick_sizes={stage: shape_text(size) for stage, size in PAPER_SIZES.items()},
                  yardstick_by_heap_s=by_heap, yardstick_heap=heap, yardstick_s=by_heap[heap],
                  yardstick_rounds_s=[{h: y["both"] for h, y in r.items()} for r in yardstick_rounds])
    result["cold"] = cold_rows(cold_runs, [r[heap]["both"] for r in yardstick_rounds])
    result["heap"] = warm_heap(device, backend)  # process-wide from here on: the warm runs come last
    result["warm"] = warm(cases, models, networks, device)
    return result


if __name__ == "__main__":
    sys.exit(cli.run(main))
