"""Segment CTs: the submission's entry point (predict.sh runs this; installed as flare-predict).

    flare-predict -i INPUTS -o OUTPUTS [--weights PATH] [--device auto|cpu|cuda]
                  [--precision auto|fp16|bf16|fp32] [--backend auto|torch|openvino]
                  [--heap auto|kept|system] [--report FILE.json] [--continue]

INPUTS is a folder or a single file. Each <case>_0000.nii.gz (or any other .nii/.nii.gz) becomes
OUTPUTS/<case>.nii.gz: uint8 labels on exactly the input's grid (its geometry; the header's
description, display range and extensions are the CT's, not copied: inference.imageio.label_header).
The arguments are checked before torch is imported and the weights are loaded: a missing input, an
output folder or report that cannot be written, an input without NIfTI files or a missing weights
file end the run at once with one line and exit code 2. One line per case on stdout; on stderr
every problem (one line each) and the progress: each stage of each case (a bar on a terminal,
plain lines elsewhere). The report (--report) is rewritten after each case, so a stopped run's
report holds every finished case. Exit code: 0 every case written (or already there with
--continue), 1 some cases failed (the others are still written) or the report could not be
written, 2 usage error (paths, weights, device), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM,
as `docker stop` sends): in both the case being written leaves no file, and --continue resumes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from tqdm import tqdm

from flare_common import cli
from flare_common.errors import InputError, describe_error
from flare_common.files import file_problem, folder_problem, write_atomic
from flare_common.labels import label_names
from flare_common.nifti import MISCASED, is_miscased, is_nifti, miscased_hint, nifti_files, output_name
from inference.defaults import BACKENDS, DEFAULT_WEIGHTS, DEVICES, PRECISIONS, WEIGHTS_HELP
from inference.heap import HEAPS, choose_heap, keep_freed_memory

if TYPE_CHECKING:
    from inference.imageio import CT
    from inference.openvino_runtime import Networks
    from inference.pipeline import NetworkRunner, Segmenter
    from inference.spec import Spec

PROGRESS = {  # what the progress says as each step of a case starts: reading and writing, and every
    "read": "reading",  # stage of inference.pipeline.STAGES (a test checks that none is missing)
    "coarse": "coarse stage", "components": "coarse stage",
    "crop": "fine stage", "fine": "fine stage",
    "logits back": "post-processing", "paste": "post-processing",
    "write": "writing",
}


class UsageError(Exception):
    """A problem with the arguments: one line, exit code 2."""


class Progress:
    """Where the run is: on a terminal, a bar over the cases whose text names the case and its
    stage; elsewhere (a log, a pipe), one plain line as each stage of each case starts."""

    def __init__(self, total: int, stream: TextIO | None = None):
        stream = stream or sys.stderr
        self.total, self.stream, self.index, self.case, self.said = total, stream, 0, "", ""
        tty = hasattr(stream, "isatty") and stream.isatty()
        self.bar = tqdm(total=total, file=stream, unit="case", dynamic_ncols=True) if tty else None

    def start(self, case: str) -> None:
        self.index, self.case, self.said = self.index + 1, case, ""
        self.stage("read")

    def stage(self, name: str) -> None:
        """A step of the current case starts (a key of PROGRESS; another name is said as it is):
        announced where what it is called differs from the step before it."""
        words = PROGRESS.get(name, name)
        if words == self.said:
            return
        self.said = words
        text = f"[{self.index}/{self.total}] {self.case}: {words}"
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
    with --continue), the files of the input folder that are not images (ignored: hidden or not
    NIfTI) and the inputs that cannot be written (clashes: input -> why; they fail)."""

    inputs: list[Path]
    skipped: list[Path]
    ignored: list[str]
    clashes: dict[Path, str]


class Report:
    """The --report file (nothing without one): the run's facts, every case's entry and the count
    of failed cases, rewritten whole and atomically after each case and when the run ends or is
    stopped, so that a stopped run's report holds every finished case ("complete" says whether the
    run ended; "stopped", how it was stopped). A write that fails is said once, in one line
    (`say`), and the run goes on; `problem` is then why."""

    def __init__(self, path: Path | None, cases: list[dict]):
        self.path, self.cases, self.facts = path, cases, {}
        self.problem: str | None = None
        self.say: Callable[[str], None] = _to_stderr

    def write(self, complete: bool = False, stopped: str | None = None) -> None:
        """Write the report as it stands (`complete` at the run's end, `stopped` when stopped)."""
        if self.path is None:
            return
        failed = sum(case["status"] == "failed" for case in self.cases)
        document = {**self.facts, "cases": self.cases, "failed": failed, "complete": complete}
        if stopped:
            document["stopped"] = stopped
        try:
            write_atomic(self.path, json.dumps(document, indent=2) + "\n")
        except OSError as exc:  # a full disk, say: the cases go on, the run's exit code says so
            if self.problem is None:
                self.problem = exc.strerror or describe_error(exc)
                self.say(f"error: --report {self.path}: {self.problem}")


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


MAYBE_GPU = "the device may be a GPU"


def _openvino_refused(args: argparse.Namespace) -> str | None:
    """Why the networks may not run in OpenVINO, known before anything is loaded; None where they
    may: OpenVINO runs them on the CPU in fp32 or bf16, and with --backend auto and --device auto
    not where the device may be a GPU (an NVIDIA driver's control device is there: MAYBE_GPU, which
    only PyTorch can settle)."""
    from inference import openvino_runtime

    if args.backend == "torch":
        return "--backend torch"
    if args.device == "cuda":
        return "it runs on the CPU, not on --device cuda"
    if not openvino_runtime.runs_on("cpu", args.precision):
        return f"it runs in fp32 or bf16, not in {args.precision}"
    if args.backend == "auto" and args.device == "auto" and os.path.exists("/dev/nvidiactl"):
        return MAYBE_GPU
    return None


def _networks(args: argparse.Namespace) -> tuple[Spec, NetworkRunner, dict]:
    """The checkpoint's Spec, the networks that run it and the report's facts about them: the
    weights' OpenVINO export where it may and can run them (torch is then never imported), else
    PyTorch; UsageError where --backend openvino cannot run or the weights are unusable."""
    refused, fallback = _openvino_refused(args), None
    if refused == MAYBE_GPU and not _cuda_available():  # a GPU machine whose GPUs this process may not use
        refused = None
    if refused is None:
        loaded = _openvino_networks(args)
        if not isinstance(loaded, str):
            return loaded
        refused = fallback = loaded  # why the export could not run them
    if args.backend == "openvino":
        raise UsageError(f"--backend openvino: {refused}")
    return _torch_networks(args, fallback)


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _openvino_networks(args: argparse.Namespace) -> tuple[Spec, Networks, dict] | str:
    """The Spec and the compiled networks of the export beside the weights with the report's facts,
    or why they cannot run (one line). Compiling starts first, beside the checks."""
    from inference import openvino_runtime

    ahead = openvino_runtime.compile_ahead(args.weights, args.precision)
    spec, problem = openvino_runtime.read_export(args.weights)
    if spec is None:
        return problem
    try:
        networks = openvino_runtime.compile_networks(args.weights, spec.stages(), args.precision, ahead)
    except Exception as exc:  # a damaged export (e.g. a truncated .bin) or one this OpenVINO cannot compile
        return f"its export beside {args.weights.name} does not compile ({openvino_runtime.failure_reason(exc)})"
    if args.precision not in ("auto", networks.precision):
        print(f"notice: this CPU has no bf16 instructions: OpenVINO runs the networks in {networks.precision}",
              file=sys.stderr)
    if networks.probe_s:
        speed_up = networks.probe_s["fp32"] / networks.probe_s["bf16"]
        print(f"notice: networks run by OpenVINO on the CPU in {networks.precision} (a probe convolution ran "
              f"{speed_up:.1f}x as fast in bf16 as in fp32 on this CPU)", file=sys.stderr)
    else:
        print(f"notice: networks run by OpenVINO on the CPU in {networks.precision}", file=sys.stderr)
    return spec, networks, {"device": platform.processor() or "cpu", "device_type": "cpu", "backend": "openvino",
                            "precision": networks.precision, "precision_probe_s": networks.probe_s,
                            "openvino": openvino_runtime.version(), "torch": None}


def _torch_networks(args: argparse.Namespace, fallback: str | None = None) -> tuple[Spec, NetworkRunner, dict]:
    """The checkpoint loaded by PyTorch and its networks run eagerly, with the report's facts; a
    notice says so (`fallback`: why the OpenVINO export could not run them, where it was tried)."""
    import torch

    from inference.checkpoint import CheckpointError, load
    from inference.torch_runtime import TorchNetworks, choose_device, choose_precision

    try:
        device = choose_device(args.device)
        precision = choose_precision(args.precision, device)
        models = load(args.weights)
    except (ValueError, CheckpointError) as exc:
        raise UsageError(str(exc)) from None
    if args.device == "auto" and device.type == "cpu":
        print("notice: no CUDA GPU found, running on the CPU (slow)", file=sys.stderr)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    print(f"notice: networks run by PyTorch on {name or 'the CPU'} in {precision}"
          + (f": {fallback}" if fallback else ""), file=sys.stderr)
    return models.spec(), TorchNetworks(models, device, precision), {
        "device": name or platform.processor() or "cpu",
        "device_type": device.type, "backend": "torch", "precision": precision, "precision_probe_s": {},
        "openvino": None, "torch": torch.__version__}


class Reader:
    """Reads the inputs in order, one case ahead, in a background thread: the first while the
    networks load (OpenVINO compiling its export, or torch imported and the weights loaded), each
    next one while the case before it is segmented.
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
    beside an input scan.nii.gz) or a file there that is no label map (a CT beside the one file
    `-i` names)."""
    clashes, seen = {}, set()
    resolved = {path.resolve() for path in inputs}
    for path in inputs:
        name = output_name(path)
        target = (output / name).resolve()
        if target == path.resolve():
            clashes[path] = f"its output {name} would overwrite it: choose another -o"
        elif target in resolved:
            clashes[path] = f"its output {name} would overwrite the input {name}: choose another -o"
        elif (held := _not_labels(target)) is not None:
            clashes[path] = f"its output {name} would overwrite {target}, no label map ({held}): choose another -o"
        elif name in seen:
            clashes[path] = f"another input already writes {name}"
        else:
            seen.add(name)
    return clashes


def _not_labels(path: Path) -> str | None:
    """What a NIfTI file holds where it is no label map ("int16 data from -1024 to 3071"), None
    where there is no such file, it cannot be read (nothing worth keeping) or it holds labels:
    uint8, or whole numbers from 0 to 255 stored as another type (another tool's label map, or an
    earlier image's). Only files that are not uint8 are read whole."""
    if not path.is_file():
        return None
    import nibabel as nib  # here: a first run, into an empty folder, never needs it before the networks load
    import numpy as np

    try:
        image = nib.load(path)
        if image.get_data_dtype() == np.uint8:
            return None
        data = np.asanyarray(image.dataobj)
    except Exception:  # nibabel raises many kinds for broken files
        return None
    low, high = (data.min(), data.max()) if data.size else (0, 0)
    if low >= 0 and high <= 255 and np.array_equal(data, np.round(data)):
        return None
    return f"{image.get_data_dtype()} data from {low:g} to {high:g}"


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
        "organs_found": [name for label, name in segmenter.spec.labels.items() if (result.labels == label).any()],
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
    labels = ", ".join(f"{label} {name}" for label, name in label_names("flare21").items())
    parser = cli.parser("python -m inference.predict",
                        f"Segment abdominal CTs (FLARE21 labels: {labels}) with the coarse-to-fine pipeline.", [
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
    files, ignored = _inputs(args.input)
    if not args.weights.is_file():
        raise UsageError(f"--weights {args.weights}: weights file not found; {WEIGHTS_HELP}")
    problem = folder_problem(args.output)
    if problem:
        raise UsageError(f"-o {args.output}: {problem}")
    if args.input.is_dir() and _same_folder(args.output, args.input):
        raise UsageError(f"-o {args.output}: the input folder itself (a run's outputs would be the next run's inputs): "
                         "choose another -o")
    if args.report is not None:
        problem = file_problem(args.report)
        if problem:
            raise UsageError(f"--report {args.report}: {problem}")
    clashes = _output_clashes(files, args.output) | {path: MISCASED for path in files if is_miscased(path.name)}
    skipped = [p for p in files if args.resume and _already_written(p, args.output, clashes)]
    return Plan([p for p in files if p not in skipped], skipped, ignored, clashes)


def _inputs(path: Path) -> tuple[list[Path], list[str]]:
    """The CTs `-i` names (a file, or a folder's NIfTI files: flare_common.nifti.nifti_files, with
    those named in upper case, which plan() fails) and the names of the folder's other files
    (hidden ones, such as macOS's ._ files, or not NIfTI) and subfolders (named with a /)."""
    if path.is_file():
        if not is_nifti(path):
            raise UsageError(f"-i {path}: not a .nii.gz or .nii file")
        return [path], []
    if not path.is_dir():
        raise UsageError(f"-i {path}: no such file or folder")
    try:
        files = nifti_files(path)
        ignored = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p not in files)
    except OSError as exc:
        raise UsageError(f"-i {path}: {exc.strerror or exc}") from None
    if not files:
        hidden = [name for name in ignored if name.startswith(".") and is_nifti(Path(name))]
        raise UsageError(f"-i {path}: no .nii.gz or .nii files in this folder"
                         + (f" (hidden files are not images: {', '.join(hidden)})" if hidden else "") + miscased_hint(path))
    miscased = [name for name in ignored if is_miscased(name)]  # cases of the folder that fail, each saying why
    return sorted(files + [path / name for name in miscased]), [name for name in ignored if name not in miscased]


def _same_folder(a: Path, b: Path) -> bool:
    """Whether two paths are one folder, also where they resolve apart (one host folder mounted
    at two places in a container)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _already_written(path: Path, output: Path, clashes: dict[Path, str]) -> bool:
    """Whether --continue skips an input: its output exists and no clash involves that output
    name (an input claiming it as well, or an input lying there: that file is no output)."""
    name = output_name(path)
    contested = path in clashes or any(output_name(other) == name for other in clashes)
    return not contested and (output / name).is_file()


PROC_STAT = Path("/proc/self/stat")  # Linux's record of this process, its start time included


def _process_age_s(stat: Path | None = None) -> float | None:
    """Seconds since this process started (the interpreter's start-up and the first imports), to
    the kernel's clock tick from Linux's `stat` (PROC_STAT; psutil's create_time is only good to a
    second there); where that cannot tell, psutil's where it is installed (the submission does not
    need it), else None: the figure feeds one report field, never the run."""
    try:
        ticks = int((stat or PROC_STAT).read_text().rsplit(")", 1)[1].split()[19])
        return max(0.0, time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil

        return max(0.0, time.time() - psutil.Process().create_time())
    except Exception:  # not installed, or it cannot tell either: the report says null
        return None


def main(argv: list[str] | None = None) -> int:
    started_s = _process_age_s()
    args = build_parser().parse_args(argv)
    try:
        checked = plan(args)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if checked.ignored:
        print(f"notice: ignoring {len(checked.ignored)} item(s) that are hidden, not NIfTI or subfolders: "
              f"{', '.join(checked.ignored)}", file=sys.stderr)
    if checked.skipped:
        print(f"notice: --continue: {len(checked.skipped)} case(s) already written to {args.output}: skipped",
              file=sys.stderr)
    cases: list[dict] = [{"input": p.name, "output": output_name(p), "status": "skipped"} for p in checked.skipped]
    report = Report(args.report, cases)
    if not checked.inputs:
        print(f"notice: every case is already written to {args.output}: nothing to do", file=sys.stderr)
        report.write(complete=True)  # this run's report, not an earlier run's left in place
        return 1 if report.problem else 0
    try:
        code = _segment_all(args, checked, report, started_s)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, cli.Terminated)
        report.write(stopped="terminated" if terminated else "interrupted")
        written = sum(c["status"] == "ok" for c in cases)
        print(f"\n{'terminated' if terminated else 'interrupted'}: {written} case(s) written to {args.output}; "
              "run again with --continue to skip them", file=sys.stderr)
        return cli.Terminated.EXIT_CODE if terminated else cli.INTERRUPTED
    return 1 if report.problem else code


def _segment_all(args: argparse.Namespace, checked: Plan, report: Report, started_s: float | None = None) -> int:
    """Segment every input (each case's entry appended to the report's cases when it ends),
    reading them ahead from the start; 1 where a case failed, else 0. `started_s`: how long the
    process ran before main."""
    with Reader([p for p in checked.inputs if p not in checked.clashes]) as reader:  # reading starts now
        return _run(args, checked.inputs, report, started_s, reader, checked.clashes)


def _run(args: argparse.Namespace, inputs: list[Path], report: Report, started_s: float | None, reader: Reader,
         clashes: dict[Path, str]) -> int:
    """Load the weights, segment the inputs `reader` reads (those in `clashes` fail), write the
    report after each case and at the end; 1 where a case failed, else 0."""
    start = time.perf_counter()
    spec, networks, facts = _networks(args)
    from inference.pipeline import Segmenter

    if spec.trained_on.startswith("untrained"):
        print(f"notice: {args.weights.name} holds untrained weights: the segmentations are meaningless",
              file=sys.stderr)
    else:
        print(f"notice: weights {args.weights.name}: {spec.trained_on}", file=sys.stderr)
    heap = choose_heap(args.heap, facts["device_type"], facts["backend"])
    if heap == "kept" and not keep_freed_memory():
        heap = "system"
    progress = Progress(len(inputs))
    segmenter = Segmenter(spec, networks, on_stage=progress.stage)
    report.facts = {**facts, "heap": heap, "weights": str(args.weights), "trained_on": spec.trained_on,
                    "startup_s": {"process": started_s, "loading": time.perf_counter() - start}}
    report.say = progress.message
    try:
        for path in inputs:
            report.cases.append(_case(path, args.output, segmenter, reader, clashes, progress))
            progress.done()
            report.write()
    finally:
        progress.close()
        report.say = _to_stderr

    failed, written = sum(c["status"] == "failed" for c in report.cases), sum(c["status"] == "ok" for c in report.cases)
    report.write(complete=True)
    print(f"{written} of {len(inputs)} case(s) written to {args.output}" + (f"; {failed} failed" if failed else ""),
          file=sys.stderr)
    return 1 if failed else 0


def _case(path: Path, output: Path, segmenter: Segmenter, reader: Reader, clashes: dict[Path, str],
          progress: Progress) -> dict:
    """One case segmented and written, or failed (one line on stderr): its report entry. Any error
    of the case is its own: the next case runs."""
    progress.start(path.name)
    try:
        if path in clashes:
            raise InputError(clashes[path])
        case = segment_case(path, reader.get(path), output, segmenter, progress)
    except Exception as exc:  # one case never stops the others
        reason = str(exc) if isinstance(exc, InputError) else describe_error(exc)
        progress.message(f"error: {path.name}: {reason}")
        return {"input": path.name, "output": None, "status": "failed", "error": reason}
    progress.message(_summary_line(case), sys.stdout)
    for warning in case["warnings"]:
        progress.message(f"warning: {path.name}: {warning}")
    return case


if __name__ == "__main__":
    cli.exit_at_once(cli.run(main))  # every output is written and closed when main returns
