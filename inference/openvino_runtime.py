"""The networks compiled for the CPU by OpenVINO: the same weights, 2-3x faster than eager PyTorch
fp32 on a 2-core CPU (docs/benchmarks.md, "The whole submission on the CPU").

A checkpoint's networks are exported once to OpenVINO's intermediate representation, traced at
their input sizes, into a folder beside the checkpoint (weights/flare21_c2f.pt ->
weights/flare21_c2f.openvino/: coarse.xml/.bin, fine.xml/.bin and manifest.json, which names the
checkpoint's SHA-256, the input sizes and the OpenVINO version). The image builds it; elsewhere:

    flare-checkpoint export-openvino weights/flare21_c2f.pt     (about 1-2 min on 2 cores)

At run time on the CPU the pipeline uses it when it exists and was made from exactly this
checkpoint; otherwise eager PyTorch runs the networks (`available` says why). Inference runs in
f32 (OpenVINO's own bf16 was slower on a CPU with avx512_bf16 but no AMX, and changes more
labels); OpenVINO compiles the model for the CPU at hand when it loads (well under a second).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: compile_ahead runs beside `import torch`
    import torch

    from inference.checkpoint import Models

MANIFEST = "manifest.json"
PRECISION_HINT = "f32"


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


def runs_on(device_type: str, precision: str) -> bool:
    """Whether compiled networks can stand in for PyTorch's: on the CPU, in fp32."""
    return device_type == "cpu" and precision == "fp32"


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
    the checkpoint does."""
    import torch

    ov = _openvino()
    folder = folder_for(weights)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sizes = {}
    for stage in models.stages():
        net = models.network(stage)  # as loaded: float32, on the CPU, in eval mode
        size = tuple(net.config.input_size)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shapes are fixed: tracing at them is exact
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.trace's, inside OpenVINO's converter
            shape = (1, net.config.in_channels, *size)
            model = ov.convert_model(net, example_input=torch.zeros(shape), input=[shape])  # static: compiled once
        ov.save_model(model, partial / f"{stage}.xml", compress_to_fp16=False)
        sizes[stage] = list(size)
    manifest = {"checkpoint": Path(weights).name, "sha256": checksum(weights), "input_sizes": sizes,
                "openvino": ov.get_version()}
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(folder, ignore_errors=True)
    partial.replace(folder)
    return folder


def available(weights: Path, models: Models) -> str | None:
    """None when the export beside `weights` can run these models; else why not (one line)."""
    folder = folder_for(weights)
    if not installed():
        return "OpenVINO is not installed"
    if not (folder / MANIFEST).is_file():
        return f"no OpenVINO export of {Path(weights).name} (make it with: flare-checkpoint export-openvino {weights})"
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        sizes = {stage: tuple(models.network(stage).config.input_size) for stage in models.stages()}
        if manifest["sha256"] != checksum(weights):
            return f"{folder.name} was exported from another checkpoint (export again)"
        if {k: tuple(v) for k, v in manifest["input_sizes"].items()} != sizes:
            return f"{folder.name} holds other input sizes than the checkpoint (export again)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{folder / MANIFEST}: unreadable ({exc})"
    missing = [f"{stage}.xml" for stage in sizes if not (folder / f"{stage}.xml").is_file()]
    return f"{folder.name} lacks {', '.join(missing)} (export again)" if missing else None


class CompiledNetwork:
    """One network compiled for the CPU: (1, C, x, y, z) float32 tensor in, float32 logits out."""

    def __init__(self, path: Path):
        core = _openvino().Core()
        self.compiled = core.compile_model(core.read_model(path), "CPU",
                                           {"INFERENCE_PRECISION_HINT": PRECISION_HINT, "PERFORMANCE_HINT": "LATENCY"})
        self.request = self.compiled.create_infer_request()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The logits; the network's working memory is given back after each call (the fine net at
        192^3 holds about 2 GB of it: kept, it would sit beside the next stage's)."""
        import torch

        out = self.request.infer({0: np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)})[0]
        logits = torch.from_numpy(np.array(out, copy=True))
        self.compiled.release_memory()
        return logits


def compile_ahead(weights: Path) -> Future | None:
    """Start compiling the export beside `weights` in a background thread (None when there is no
    export to compile): started before torch is imported, OpenVINO's half-second of compiling runs
    beside that second of importing. Pass the result to compile_networks, which still checks the
    export against the checkpoint; unused, it is simply dropped."""
    folder = folder_for(weights)
    if not installed() or not (folder / MANIFEST).is_file():
        return None
    try:
        stages = list(json.loads((folder / MANIFEST).read_text())["input_sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # `available` will say what is wrong
    pool = ThreadPoolExecutor(1, thread_name_prefix="openvino")
    future = pool.submit(_compile, folder, stages)
    pool.shutdown(wait=False)
    return future


def compile_networks(weights: Path, models: Models, ahead: Future | None = None) -> dict[str, CompiledNetwork]:
    """Each stage's network compiled from the export beside `weights` (check `available` first);
    `ahead`: the same compiled by compile_ahead, used when it holds every stage."""
    folder = folder_for(weights)
    compiled = ahead.result() if ahead is not None else {}
    if set(compiled) != set(models.stages()):
        compiled = _compile(folder, models.stages())
    return compiled


def _compile(folder: Path, stages) -> dict[str, CompiledNetwork]:
    """The networks of these stages compiled from the export in `folder`."""
    return {stage: CompiledNetwork(folder / f"{stage}.xml") for stage in stages}

