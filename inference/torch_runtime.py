"""The networks run by PyTorch (eager), on the CPU or a CUDA GPU: the pipeline's NetworkRunner
(inference.pipeline) for a checkpoint's loaded Models. NumPy arrays in and out; on CUDA each
stage's peak memory is measured and the cached memory released after it."""
from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from flare_common.units import MB
from inference.checkpoint import Models
from inference.defaults import PRECISIONS


def choose_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device PyTorch runs on for --device `requested` (auto, cuda, cpu): auto takes CUDA where
    a GPU is available, else the CPU; a process of several on one machine (`local_rank`) takes
    its own GPU. ValueError for cuda without a GPU."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA GPU is available")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def choose_precision(requested: str, device: torch.device) -> str:
    """The precision PyTorch runs the networks at. auto: fp16 on CUDA (the paper's setting), fp32
    on the CPU (networks compiled by OpenVINO choose their own: openvino_runtime.choose_precision);
    fp16 needs CUDA."""
    if requested == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}")
    return requested


class TorchNetworks:
    """Copies of the models' networks on a device at a precision (fp32; bf16 autocast; fp16, the
    networks in half precision, CUDA only): the Models given are never modified (a training loop
    may keep updating its own networks and build these for each validation). fp32 on CUDA sets
    PyTorch's convolutions and matrix products to IEEE float32 for the whole process (cuDNN runs
    float32 convolutions in TF32 by default on Ampere and later GPUs)."""

    def __init__(self, models: Models, device: torch.device | str, precision: str):
        self.device, self.precision = torch.device(device), precision
        if self.device.type == "cuda" and precision == "fp32":  # IEEE float32, not cuDNN's default TF32
            # the flags that set cuDNN's convolutions and RNNs alike (setting only the convolutions' new
            # fp32_precision leaves a mix that makes every later read of allow_tf32 raise)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        self.nets = {stage: self._prepared(models.network(stage)) for stage in models.stages()}

    def _prepared(self, net: torch.nn.Module) -> torch.nn.Module:
        net = copy.deepcopy(net).to(self.device).eval()
        return net.half() if self.precision == "fp16" else net

    @torch.inference_mode()
    def forward(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        """The stage's network on a normalised (1, 1, x, y, z) tensor on the device: float32 logits
        (1, organs, x, y, z) there."""
        net = self.nets[stage]
        if self.precision == "fp16":
            return net(x.half()).float()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return net(x).float()

    def __call__(self, stage: str, x: np.ndarray) -> np.ndarray:
        """The stage's float32 logits (organs, x, y, z) of a normalised float32 input (x, y, z)."""
        volume = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)[None, None]
        return self.forward(stage, volume)[0].cpu().numpy()

    @contextmanager
    def measured(self) -> Iterator[dict[str, float]]:
        """Around one stage: on CUDA its peak allocated and reserved memory (MB), and the cached
        memory released after it (after a failed one too); nothing elsewhere."""
        memory: dict[str, float] = {}
        if self.device.type != "cuda":
            yield memory
            return
        torch.cuda.reset_peak_memory_stats(self.device)
        try:
            yield memory
            torch.cuda.synchronize(self.device)
            memory["allocated"] = torch.cuda.max_memory_allocated(self.device) / MB
            memory["reserved"] = torch.cuda.max_memory_reserved(self.device) / MB
        finally:
            torch.cuda.empty_cache()
