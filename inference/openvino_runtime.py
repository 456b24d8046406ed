"""The networks compiled for the CPU by OpenVINO: the same weights, 2-3x faster than eager PyTorch
fp32 on a 2-core CPU (docs/benchmarks.md, "The whole submission on the CPU").

A checkpoint's networks are exported once to OpenVINO's intermediate representation, traced at
their input sizes, into a folder beside the checkpoint (weights/flare21_c2f.pt ->
weights/flare21_c2f.openvino/: coarse.xml/.bin, fine.xml/.bin and manifest.json, which names the
checkpoint's SHA-256 and the OpenVINO version and holds the checkpoint's Spec: inference.spec).
The image builds it; elsewhere:

    flare-checkpoint export-openvino weights/flare21_c2f.pt     (about 1-2 min on 2 cores)

At run time on the CPU the pipeline uses it when it exists and was made from exactly this
checkpoint (`read_export`), without importing torch: the export holds all the pipeline needs;
otherwise eager PyTorch runs the networks. OpenVINO compiles
the model for the CPU at hand when it loads (well under a second), in fp32 or bf16: asked for
"auto", bf16 only where the CPU has bf16 instructions and a probe (two 3-D convolutions like the
fine network's first level at 48^3, about 0.15 s beside reading the input) runs in bf16 at least
BF16_SPEED_UP times faster than in fp32. Both were measured: bf16 ran the networks 2x faster on
an AMD EPYC with avx512_bf16 and 1.4x slower on an Intel Xeon with avx512_bf16 but no AMX, with
labels agreeing with eager fp32 at DSC >= 0.998 per organ (docs/benchmarks.md).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from flare_common.files import temporary_name
from inference.spec import NETWORK_STAGES, Spec

if TYPE_CHECKING:  # torch is imported only to export: a run with an export never imports it
    from inference.checkpoint import Models

MANIFEST = "manifest.json"
HINTS = {"fp32": "f32", "bf16": "bf16"}  # the precisions compiled networks run in: OpenVINO's names
BF16_SPEED_UP = 1.25  # "auto" takes bf16 when the probe runs at least this much faster in it
# The probe's input: the fine network's first level, at 48^3. On the Xeon with AMX both 64^3 and
# 48^3 found bf16 2.0-2.1x faster, 48^3 in 0.15 s instead of 0.31 s (it runs before the networks
# compile, on the start-up's critical path).
PROBE_SHAPE = (1, 16, 48, 48, 48)


def failure_reason(exc: BaseException) -> str:
    """One line for an OpenVINO error: its type and the message's last line, which says what went
    wrong (the first lines name the C++ source files the exception passed through)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else 'no detail'}"


def folder_for(weights: Path) -> Path:
    """Where a checkpoint's OpenVINO export lives: beside it, named after it."""
    return Path(weights).with_suffix(".openvino")


def checksum(path: Path) -> str:
    """SHA-256 of a file (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def version() -> str:
    """OpenVINO's version."""
    return _openvino().get_version()


def runs_on(device_type: str, precision: str) -> bool:
    """Whether compiled networks can stand in for PyTorch's: on the CPU, in fp32 or bf16
    ("auto" resolves to one of them)."""
    return device_type == "cpu" and (precision == "auto" or precision in HINTS)


def _openvino():
    """The openvino module, its usage telemetry kept off: with the openvino-telemetry package
    importable, `import openvino` writes ~/intel/ and tries to send usage data, which a submission
    must not do (it writes only its outputs, often with no network). Blocking that package makes
    OpenVINO use its own no-op stand-in."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def export(weights: Path, models: Models) -> Path:
    """Trace each network at its input size into OpenVINO's IR beside the checkpoint (replacing
    an older export); the folder. The weights are kept in float32 so the export computes what
    the checkpoint does. The export is made in a hidden folder beside it and moved in whole
    (replace_folder): a failed export leaves the older one as it was, and nothing else."""
    folder = folder_for(weights)
    building = temporary_name(folder)
    try:
        building.mkdir(parents=True)
        _write_export(weights, models, building)
        replace_folder(building, folder)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return folder


def _write_export(weights: Path, models: Models, folder: Path) -> None:
    """Each network's IR and the manifest, written into `folder`."""
    import torch

    ov = _openvino()
    for stage in models.stages():
        net = models.network(stage)  # as loaded: float32, on the CPU, in eval mode
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed: tracing at them is exact
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's, inside OpenVINO's converter
            shape = (1, net.config.in_channels, *net.config.input_size)
            model = ov.convert_model(net, example_input=torch.zeros(shape), input=[shape])  # static: compiled once
        ov.save_model(model, folder / f"{stage}.xml", compress_to_fp16=False)
    manifest = {"checkpoint": Path(weights).name, "sha256": checksum(weights), "openvino": version(),
                "spec": models.spec().to_dict()}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def replace_folder(new: Path, folder: Path) -> None:
    """Move the complete folder `new` to `folder`, an older one there set aside by a rename first
    and removed only once the new one is in place: at every moment one whole export is there but
    for the instant between the two renames (and the older one comes back if the second fails)."""
    old = temporary_name(folder) if folder.exists() else None
    if old is not None:
        folder.replace(old)
    try:
        new.replace(folder)
    except BaseException:
        if old is not None:
            old.replace(folder)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_export(weights: Path) -> tuple[Spec | None, str | None]:
    """The checkpoint's Spec from the export beside `weights` when that export can run it, and None;
    else None and why not (one line)."""
    folder = folder_for(weights)
    if not installed():
        return None, "OpenVINO is not installed"
    if not (folder / MANIFEST).is_file():
        return None, f"no OpenVINO export of {Path(weights).name} (make it with: flare-checkpoint export-openvino {weights})"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest["sha256"] != checksum(weights):
            return None, f"{folder.name} was exported from another checkpoint (export again)"
        if "spec" not in manifest:
            return None, f"{folder.name} was exported by an older version of this project (export again)"
        spec = Spec.from_dict(manifest["spec"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return None, f"{folder / MANIFEST}: unreadable ({exc})"
    if absent := [stage for stage in NETWORK_STAGES if stage not in spec.stages()]:
        return None, f"{folder.name} holds no {' and no '.join(absent)} network (exported from a stage checkpoint)"
    missing = [f"{stage}.xml" for stage in spec.stages() if not (folder / f"{stage}.xml").is_file()]
    if missing:
        return None, f"{folder.name} lacks {', '.join(missing)} (export again)"
    return spec, None


class CompiledNetwork:
    """One network compiled for the CPU at a precision (a key of HINTS): a normalised float32
    array (x, y, z) in, float32 logits (organs, x, y, z) out."""

    def __init__(self, path: Path, precision: str, core=None):
        core = core or _openvino().Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU",
                                           {"INFERENCE_PRECISION_HINT": HINTS[precision], "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The logits; the network's working memory is given back after each call (the fine net at
        192^3 holds about 2 GB of it: kept, it would sit beside the next stage's). The network
        reads the input where it lies and writes the logits into an array of our own, so neither
        is copied (at 192^3 the four logit maps are 113 MB, at the stage's peak of memory)."""
        logits = np.empty(tuple(self.compiled.output(0).shape), dtype=np.float32)
        self.request.set_output_tensor(0, _openvino().Tensor(logits, shared_memory=True))
        self.request.infer({0: np.ascontiguousarray(x, dtype=np.float32)[None, None]}, share_inputs=True)
        self.compiled.release_memory()
        return logits[0]


@dataclass
class Networks:
    """A checkpoint's networks compiled at one precision; `probe_s`: the probe's seconds per
    precision when "auto" chose it by measuring (empty otherwise)."""

    precision: str
    stages: dict[str, CompiledNetwork]
    probe_s: dict[str, float] = field(default_factory=dict)

    def __call__(self, stage: str, x: np.ndarray) -> np.ndarray:
        """The stage's logits (the pipeline's NetworkRunner)."""
        return self.stages[stage](x)

    @contextmanager
    def measured(self) -> Iterator[dict[str, float]]:
        """No GPU memory to measure: an empty dict."""
        yield {}


def _probe_model(ov):
    """Two 3x3x3 convolutions with ReLU at PROBE_SHAPE (fixed random weights): the kind of layer
    where the networks spend their time."""
    from openvino import opset13 as ops

    rng = np.random.default_rng(0)
    channels = PROBE_SHAPE[1]
    x = ops.parameter(list(PROBE_SHAPE), np.float32)
    y = x
    for _ in range(2):
        w = ops.constant((rng.standard_normal((channels, channels, 3, 3, 3)) * 0.1).astype(np.float32))
        y = ops.relu(ops.convolution(y, w, [1, 1, 1], [1, 1, 1], [1, 1, 1], [1, 1, 1]))
    return ov.Model([y], [x])


def probe(core) -> dict[str, float]:
    """Seconds of the probe in each precision of HINTS (the best of two runs after a warm-up)."""
    ov = _openvino()
    model = _probe_model(ov)
    x = np.random.default_rng(1).standard_normal(PROBE_SHAPE, dtype=np.float32)
    seconds = {}
    for precision, hint in HINTS.items():
        request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint,
                                                    "PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
        times = []
        for _ in range(3):
            start = time.perf_counter()
            request.infer({0: x})
            times.append(time.perf_counter() - start)
        seconds[precision] = min(times[1:])
    return seconds


def choose_precision(requested: str, core=None) -> tuple[str, dict[str, float]]:
    """The precision to compile at and the probe's seconds (empty when none ran): fp32 where the
    CPU has no bf16 instructions (OpenVINO lists no BF16 among its capabilities: it would ignore
    the hint); else `requested` itself, or for "auto" bf16 where the probe runs BF16_SPEED_UP times
    faster in it, else fp32."""
    if requested == "fp32":
        return requested, {}
    core = core or _openvino().Core()
    if "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return "fp32", {}
    if requested != "auto":
        return requested, {}
    seconds = probe(core)
    return ("bf16" if seconds["fp32"] >= BF16_SPEED_UP * seconds["bf16"] else "fp32"), seconds


def compile_ahead(weights: Path, precision: str) -> Future | None:
    """Start compiling the export beside `weights` at `precision` (fp32, bf16 or auto) in a
    background thread (None when there is no export to compile): started first thing, OpenVINO's
    half-second of compiling (and the probe, for auto) runs beside the imports and the reading of
    the input. Pass the result to compile_networks once read_export has checked the export against
    the checkpoint; unused, it is simply dropped."""
    folder = folder_for(weights)
    if not installed() or not (folder / MANIFEST).is_file():
        return None
    try:
        stages = list(json.loads((folder / MANIFEST).read_text())["spec"]["input_sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # read_export will say what is wrong
    pool = ThreadPoolExecutor(1, thread_name_prefix="openvino")
    future = pool.submit(_compile, folder, stages, precision)
    pool.shutdown(wait=False)
    return future


def compile_networks(weights: Path, stages: list[str], precision: str, ahead: Future | None = None) -> Networks:
    """The networks of these stages compiled from the export beside `weights` (check it with
    read_export first) at `precision` (fp32, bf16 or auto); `ahead`: the same compiled by
    compile_ahead, used when it holds every stage."""
    networks = ahead.result() if ahead is not None else None
    if networks is None or set(networks.stages) != set(stages):
        networks = _compile(folder_for(weights), stages, precision)
    return networks


def _compile(folder: Path, stages, precision: str) -> Networks:
    """The networks of these stages compiled from the export in `folder`."""
    core = _openvino().Core()
    chosen, probe_s = choose_precision(precision, core)
    return Networks(chosen, {stage: CompiledNetwork(folder / f"{stage}.xml", chosen, core) for stage in stages}, probe_s)
