"""Segment CTs: the submission's entry point (predict.sh runs this; installed as flare-predict).

    flare-predict -i INPUTS -o OUTPUTS [--weights PATH] [--device auto|cpu|cuda]
                  [--precision auto|fp16|bf16|fp32] [--backend auto|torch|openvino]
                  [--heap auto|kept|system] [--report FILE.json] [--continue]

INPUTS is a folder or a single file. Each <case>_0000.nii.gz (or any other .nii/.nii.gz) becomes
OUTPUTS/<case>.nii.gz: uint8 labels on exactly the input's grid and header. The arguments are
checked before torch is imported and the weights are loaded: a missing input, an output folder or
report that cannot be written, an input without NIfTI files or a missing weights file end the
run at once with one line and exit code 2. One line per case on stdout; on stderr every problem
(one line each) and the progress: each stage of each case (a bar on a terminal, plain lines
elsewhere). Exit code: 0 every case written (or already there with --continue), 1 some cases
failed (the others are still written), 2 usage error (paths, weights, device), 130 interrupted
(Ctrl-C: the case being written leaves no file; --continue resumes).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from flare_common import cli
from flare_common.errors import InputError, describe_error
from flare_common.files import file_problem, folder_problem, write_atomic
from flare_common.nifti import is_nifti, output_name
from inference.defaults import BACKENDS, DEFAULT_WEIGHTS, DEVICES, PRECISIONS, WEIGHTS_HELP
from inference.heap import HEAPS, choose_heap, keep_freed_memory

if TYPE_CHECKING:
    import torch

    from inference.imageio import CT
    from inference.openvino_runtime import Networks
    from inference.pipeline import Segmenter

STAGES = {"read": "reading", "coarse": "coarse stage", "fine": "fine stage", "paste": "post-processing",
          "write": "writing"}  # the stages the progress names (the pipeline's others are timed, not announced)


class UsageError(Exception):
    """A problem with the arguments: one line, exit code 2."""


class Progress:
    """Where the run is: on a terminal, a bar over the cases whose text names the case and its
    stage; elsewhere (a log, a pipe), one plain line as each stage of each case starts."""

    def __init__(self, total: int, stream: TextIO | None = None):
        stream = stream or sys.stderr
        self.total, self.stream, self.index, self.case = total, stream, 0, ""
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, file=stream, unit="case", dynamic_ncols=True) if tty else None

    def start(self, case: str) -> None:
        self.index, self.case = self.index + 1, case
        self.stage("read")

    def stage(self, name: str) -> None:
        """A stage of the current case starts: announced if it is a key of STAGES."""
        if name not in STAGES:
            return
        text = f"[{self.index}/{self.total}] {self.case}: {STAGES[name]}"
        with contextlib.suppress(OSError):  # a closed stream (a pipe's reader gone) loses the line, not the case
            if self.bar is not None:
                self.bar.set_description_str(text)
            else:
                print(text, file=self.stream, flush=True)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def message(self, line: str, stream: TextIO | None = None) -> None:
        """A line of output that does not break the bar (lost, not raised, where the stream is closed)."""
        stream = stream or self.stream
        with contextlib.suppress(OSError):
            if self.bar is not None:
                self.bar.write(line, file=stream)
            else:
                print(line, file=stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclass
class Plan:
    """The checked arguments: the inputs to segment, those whose output already exists (skipped
    with --continue) and the non-NIfTI files of the input folder (ignored)."""

    inputs: list[Path]
    skipped: list[Path]
    ignored: list[str]


def _device(requested: str) -> torch.device:
    import torch

    if requested == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available")
    if requested == "auto" and not torch.cuda.is_available():
        print("notice: no CUDA GPU found, running on the CPU (slow)", file=sys.stderr)
        return torch.device("cpu")
    return torch.device("cuda" if requested in ("auto", "cuda") else "cpu")


def _may_run_openvino(args: argparse.Namespace) -> bool:
    """Whether the networks may run in OpenVINO, known before torch is imported: not where torch
    is asked for, nor where the device may be a GPU (an NVIDIA driver's control device is there) or
    the precision is one OpenVINO does not run."""
    from inference import openvino_runtime

    gpu = args.device == "cuda" or (args.device == "auto" and os.path.exists("/dev/nvidiactl"))
    return args.backend != "torch" and not gpu and openvino_runtime.runs_on("cpu", args.precision)


def _backend(requested: str, weights: Path, models, device: torch.device, precision: str,
             ahead: Future | None = None) -> tuple[str, Networks | None]:
    """The backend that runs the networks and, for openvino, the compiled networks (those compiled
    `ahead` when given) at `precision` as asked for (auto: chosen by OpenVINO's probe); UsageError
    when openvino is asked for and cannot run."""
    from inference import openvino_runtime

    possible = openvino_runtime.runs_on(device.type, precision)
    if requested == "torch" or (requested == "auto" and not possible):
        return "torch", None
    problem = openvino_runtime.available(weights, models)
    if requested == "openvino" and not possible:
        problem = f"it runs on the CPU in fp32 or bf16, not on {device.type} in {precision}"
    if not problem:
        try:
            networks = openvino_runtime.compile_networks(weights, models, precision, ahead)
        except Exception as exc:  # a damaged export (e.g. a truncated .bin) or one this OpenVINO cannot compile
            problem = f"its export beside {weights.name} does not compile ({describe_error(exc)})"
    if problem:
        if requested == "openvino":
            raise UsageError(f"--backend openvino: {problem}")
        print(f"notice: networks run by PyTorch ({problem})", file=sys.stderr)
        return "torch", None
    if precision not in ("auto", networks.precision):
        print(f"notice: this CPU has no bf16 instructions: OpenVINO runs the networks in {networks.precision}",
              file=sys.stderr)
    if networks.probe_s:
        speed_up = networks.probe_s["fp32"] / networks.probe_s["bf16"]
        print(f"notice: networks run by OpenVINO in {networks.precision} (a probe convolution ran {speed_up:.1f}x "
              "as fast in bf16 as in fp32 on this CPU)", file=sys.stderr)
    return "openvino", networks


class Reader:
    """Reads the inputs in order, one case ahead, in a background thread: the first while torch
    is imported and the weights load, each next one while the case before it is segmented.
    Inflating and reorienting are zlib and numpy work that runs mostly outside the GIL, so on two
    cores they cost the run little wall time. At most one CT waits in memory besides the current one."""

    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="read")
        self.pending: dict[int, Future] = {}
        self.prefetch(0)

    def prefetch(self, index: int) -> None:
        """Start reading input `index` (if there is one and it is not already started)."""
        if index < len(self.paths) and index not in self.pending:
            self.pending[index] = self.pool.submit(_timed_read, self.paths[index])

    def get(self, path: Path) -> tuple[CT, float, float]:
        """An input as a CT (InputError if unreadable), the seconds its reading took and the
        seconds this call waited for it; the input after it starts reading."""
        index = self.paths.index(path)
        self.prefetch(index)
        start = time.perf_counter()
        try:
            ct, read_s = self.pending.pop(index).result()
        finally:
            waited = time.perf_counter() - start
            self.prefetch(index + 1)
        return ct, read_s, waited

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        """Forget what was not started; a read under way ends in its thread."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def _output_clashes(inputs: list[Path], output: Path) -> dict[Path, str]:
    """Inputs that cannot be written: another input before them writes the same output name, or
    their output would overwrite an input (themselves or another: scan.nii's output scan.nii.gz
    beside an input scan.nii.gz)."""
    clashes, seen = {}, set()
    resolved = {path.resolve() for path in inputs}
    for path in inputs:
        name = output_name(path)
        target = (output / name).resolve()
        if target == path.resolve():
            clashes[path] = f"its output {name} would overwrite it: choose another -o"
        elif target in resolved:
            clashes[path] = f"its output {name} would overwrite the input {name}: choose another -o"
        elif name in seen:
            clashes[path] = f"another input already writes {name}"
        else:
            seen.add(name)
    return clashes


def _timed_read(path: Path) -> tuple[CT, float]:
    from inference.imageio import read_ct

    start = time.perf_counter()
    ct = read_ct(path)
    return ct, time.perf_counter() - start


def segment_case(path: Path, read: tuple[CT, float, float], out_dir: Path, segmenter: Segmenter,
                 progress: Progress | None = None) -> dict:
    """Segment one case read by a Reader (`read`: its CT, the seconds reading took, the seconds
    waited for it) and write its output; returns the case's report entry (raises on failure).
    Seconds: read and reorient as they took (in the Reader, beside start-up or the case before),
    "waited" how long this case stood still for them, "total" from the wait to the written file."""
    from inference.imageio import write_labels

    start = time.perf_counter()
    ct, read_s, waited = read
    labels, result = segmenter.segment_ct(ct)
    if progress is not None:
        progress.stage("write")
    write_start = time.perf_counter()
    write_labels(labels, ct, out_dir / output_name(path))
    seconds = {"read": read_s - ct.reorient_s, "reorient": ct.reorient_s, "waited": waited, **result.seconds,
               "write": time.perf_counter() - write_start}
    seconds["total"] = waited + time.perf_counter() - start
    return {
        "input": path.name, "output": output_name(path), "status": "ok",
        "shape": list(ct.image.shape), "spacing_mm": [round(s, 4) for s in ct.spacing],
        "organs_found": [name for label, name in segmenter.models.labels.items() if (result.labels == label).any()],
        "canonical_shape": list(ct.data.shape),  # the crop's frame: x y z in RAS+, as spacing_mm
        "crop": [[s.start, s.stop] for s in result.box] if result.box else None,
        "crop_padding": [list(p) for p in result.padding] if result.box else None,
        "seconds": seconds, "warnings": result.warnings, **result.cuda_memory(),
    }


def _summary_line(case: dict) -> str:
    stages = ", ".join(f"{k} {v:.1f}" for k, v in case["seconds"].items() if k != "total")
    organs = ", ".join(case["organs_found"]) or "no organs"
    return (f"{case['input']} -> {case['output']}: {'x'.join(map(str, case['shape']))}, {organs}; "
            f"{case['seconds']['total']:.1f} s ({stages})")


def build_parser() -> argparse.ArgumentParser:
    parser = cli.parser("python -m inference.predict",
                        "Segment abdominal CTs (FLARE21 labels: 1 liver, 2 kidney, 3 spleen, 4 pancreas) with the "
                        "coarse-to-fine pipeline.", [
                            "flare-predict -i scans/ -o labels/                 # every CT of a folder",
                            "flare-predict -i scans/case_0000.nii.gz -o labels/  # one file",
                            "flare-predict -i scans/ -o labels/ --continue --report labels/report.json",
                            "sh predict.sh IN OUT --device cpu                   # the same, as the organisers run it"])
    parser.add_argument("-i", "--input", type=Path, default=Path("/workspace/inputs"), metavar="PATH",
                        help="a CT file, or a folder of CTs <case>_0000.nii.gz (default %(default)s)")
    parser.add_argument("-o", "--output", type=Path, default=Path("/workspace/outputs"), metavar="DIR",
                        help="folder for the label maps <case>.nii.gz, created if needed (default %(default)s)")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, metavar="FILE",
                        help="checkpoint (default: the project's weights/flare21_c2f.pt)")
    parser.add_argument("--device", choices=DEVICES, default="auto",
                        help="auto: the GPU when there is one, else the CPU (default %(default)s)")
    parser.add_argument("--precision", choices=("auto", *PRECISIONS), default="auto",
                        help="auto: fp16 on CUDA; on the CPU bf16 where OpenVINO runs the networks and a probe "
                             "finds bf16 faster on this CPU, else fp32 (default %(default)s)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="what runs the networks on the CPU in fp32 or bf16: openvino (the weights' OpenVINO export, "
                             "2-3x faster; see flare-checkpoint export-openvino) or torch; auto: openvino where the "
                             "export is there, else torch (default %(default)s)")
    parser.add_argument("--heap", choices=HEAPS, default="auto",
                        help="glibc's heap: kept (freed memory reused: faster, higher peak memory) or system (its "
                             "defaults); auto: kept where PyTorch runs the networks on the CPU (default %(default)s)")
    parser.add_argument("--report", type=Path, metavar="FILE.json",
                        help="write the device, the weights, the start-up times and per case the times of each stage "
                             "as JSON here (default: none)")
    parser.add_argument("--continue", dest="resume", action="store_true",
                        help="skip the cases whose output already exists (outputs are written whole or not at all; "
                             "default: segment every case again)")
    return parser


def plan(args: argparse.Namespace) -> Plan:
    """Check the paths before anything heavy (torch, the weights) is loaded; UsageError if unusable.
    Creates the output folder (and the report's folder)."""
    if args.input.is_file():
        if not is_nifti(args.input):
            raise UsageError(f"-i {args.input}: not a .nii.gz or .nii file")
        files, folder_files = [args.input], []
    elif args.input.is_dir():
        folder_files = sorted(p for p in args.input.iterdir() if p.is_file())
        files = [p for p in folder_files if is_nifti(p)]
        if not files:
            raise UsageError(f"-i {args.input}: no .nii.gz or .nii files in this folder")
    else:
        raise UsageError(f"-i {args.input}: no such file or folder")
    if not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: weights file not found; {WEIGHTS_HELP}")
    problem = folder_problem(args.output)
    if problem:
        raise UsageError(f"-o {args.output}: {problem}")
    if args.report is not None:
        problem = file_problem(args.report)
        if problem:
            raise UsageError(f"--report {args.report}: {problem}")
    ignored = [p.name for p in folder_files if not is_nifti(p)]
    skipped = [p for p in files if args.resume and (args.output / output_name(p)).is_file()]
    return Plan([p for p in files if p not in skipped], skipped, ignored)


def _process_age_s() -> float:
    """Seconds since this process started (the interpreter's start-up and the first imports), to
    the kernel's clock tick on Linux (psutil's create_time is only good to a second there)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())


class Terminated(KeyboardInterrupt):
    """SIGTERM (`docker stop`, a harness's timeout): the run stops as at Ctrl-C, the case being
    written leaving no file, with the shell's exit code for SIGTERM."""

    EXIT_CODE = 143


def _terminate(signum, frame) -> None:
    raise Terminated


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        return _main(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _main(argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _main(argv: list[str] | None) -> int:
    started_s = _process_age_s()
    args = build_parser().parse_args(argv)
    try:
        checked = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if checked.ignored:
        print(f"notice: ignoring {len(checked.ignored)} non-NIfTI file(s): {', '.join(checked.ignored)}", file=sys.stderr)
    if checked.skipped:
        print(f"notice: --continue: {len(checked.skipped)} case(s) already written to {args.output}: skipped",
              file=sys.stderr)
    cases: list[dict] = [{"input": p.name, "output": output_name(p), "status": "skipped"} for p in checked.skipped]
    if not checked.inputs:
        print(f"notice: every case is already written to {args.output}: nothing to do", file=sys.stderr)
        if args.report:  # this run's report, not an earlier run's left in place
            write_atomic(args.report, json.dumps({"cases": cases, "failed": 0}, indent=2) + "\n")
        return 0
    try:
        return _segment_all(args, checked.inputs, cases, started_s)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        written = sum(c["status"] == "ok" for c in cases)
        how = "terminated" if isinstance(exc, Terminated) else "interrupted"
        print(f"\n{how}: {written} case(s) written to {args.output}; run again with --continue to skip them",
              file=sys.stderr)
        return Terminated.EXIT_CODE if isinstance(exc, Terminated) else cli.INTERRUPTED


def _segment_all(args: argparse.Namespace, inputs: list[Path], cases: list[dict], started_s: float = 0.0) -> int:
    """Segment every input (each case's entry appended to `cases` when it ends), reading them
    ahead from the start; the exit code. `started_s`: how long the process ran before main."""
    clashes = _output_clashes(inputs, args.output)
    with Reader([p for p in inputs if p not in clashes]) as reader:  # reading starts now, beside the imports
        return _run(args, inputs, cases, started_s, reader, clashes)


def _run(args: argparse.Namespace, inputs: list[Path], cases: list[dict], started_s: float, reader: Reader,
         clashes: dict[Path, str]) -> int:
    """Load the weights, segment the inputs `reader` reads (those in `clashes` fail), write the
    report; the exit code."""
    start = time.perf_counter()
    from inference import openvino_runtime  # without torch: compiling starts before torch is imported

    ahead = openvino_runtime.compile_ahead(args.weights, args.precision) if _may_run_openvino(args) else None
    import torch

    from inference.checkpoint import CheckpointError, load
    from inference.pipeline import Segmenter, choose_precision

    startup = {"process": started_s, "imports": time.perf_counter() - start}
    start = time.perf_counter()
    device = _device(args.device)
    try:
        precision = choose_precision(args.precision, device)  # PyTorch's; OpenVINO's chooses its own for auto
        models = load(args.weights)
    except (ValueError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    if models.trained_on.startswith("untrained"):
        print(f"notice: {args.weights.name} holds untrained weights: the segmentations are meaningless",
              file=sys.stderr)
    else:
        print(f"notice: weights {args.weights.name}: {models.trained_on}", file=sys.stderr)

    backend, networks = _backend(args.backend, args.weights, models, device, args.precision, ahead)
    if networks is not None:
        precision = networks.precision
        for stage in networks.stages:  # OpenVINO holds its own copy of these weights: PyTorch's is let go
            models.network(stage).to("meta")
    heap = choose_heap(args.heap, device.type, backend)
    if heap == "kept" and not keep_freed_memory():
        heap = "system"
    progress = Progress(len(inputs))
    segmenter = Segmenter(models, device, precision, on_stage=progress.stage,
                          compiled=networks.stages if networks else None)
    startup["model_load"] = time.perf_counter() - start
    try:
        for path in inputs:
            progress.start(path.name)
            try:
                if path in clashes:
                    raise InputError(clashes[path])
                case = segment_case(path, reader.get(path), args.output, segmenter, progress)
                progress.message(_summary_line(case), sys.stdout)
                for warning in case["warnings"]:
                    progress.message(f"warning: {path.name}: {warning}")
            except Exception as exc:  # one case never stops the others
                reason = str(exc) if isinstance(exc, InputError) else describe_error(exc)
                progress.message(f"error: {path.name}: {reason}")
                case = {"input": path.name, "output": None, "status": "failed", "error": reason}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            cases.append(case)
            progress.done()
    finally:
        progress.close()

    failed, written = sum(c["status"] == "failed" for c in cases), sum(c["status"] == "ok" for c in cases)
    if args.report:
        report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
                  "device_type": device.type, "precision": precision, "backend": backend, "heap": heap,
                  "torch": torch.__version__,
                  "precision_probe_s": networks.probe_s if networks else {},
                  "weights": str(args.weights), "trained_on": models.trained_on,
                  "startup_s": startup, "cases": cases, "failed": failed}
        write_atomic(args.report, json.dumps(report, indent=2) + "\n")
    print(f"{written} of {len(inputs)} case(s) written to {args.output}" + (f"; {failed} failed" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.exit_at_once(cli.run(main))  # every output is written and closed when main returns
