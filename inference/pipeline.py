"""The whole-volume coarse-to-fine pipeline on one CT in canonical orientation.

1. coarse: the whole volume resampled to the coarse input size (160^3), clipped and z-scored,
   the coarse network, per-organ largest components (>= 1000 mm^3);
2. the organs' bounding box on the original grid plus 20 mm on every side;
3. fine: that crop (original HU) resampled to the fine input size (192^3), clipped and z-scored
   on the crop, the fine network, its logits resampled back to the crop;
4. post-processing: labels from the logits, largest components again, pasted into an empty volume.

Resampling and normalisation run on the models' device; cached GPU memory is released after each
stage. Arrays and tensors are (x, y, z) as in inference/axes.py.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from evaluation.nvml import MB
from inference.checkpoint import Models
from inference.postprocessing import keep_largest_components, labels_at_size, logits_to_labels, organ_box
from inference.preprocessing import normalise, resize

PRECISIONS = ("fp16", "bf16", "fp32")


@dataclass
class Result:
    """Canonical-orientation labels (uint8, x y z), seconds per stage, on CUDA torch's peak
    allocated and reserved memory per stage (MB), and what was noticed."""

    labels: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    peak_allocated_mb: dict[str, float] = field(default_factory=dict)
    peak_reserved_mb: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    box: tuple[slice, slice, slice] | None = None

    def cuda_memory(self) -> dict:
        """The case's peak GPU memory (MB, the largest stage's) and that of each stage; empty
        off CUDA (never zeros that look measured)."""
        if not self.peak_allocated_mb:
            return {}
        return {"peak_allocated_mb": max(self.peak_allocated_mb.values()),
                "peak_reserved_mb": max(self.peak_reserved_mb.values()),
                "stage_peak_allocated_mb": self.peak_allocated_mb, "stage_peak_reserved_mb": self.peak_reserved_mb}


def choose_precision(requested: str, device: torch.device) -> str:
    """auto: fp16 on CUDA (the paper's setting), fp32 on the CPU; fp16 needs CUDA."""
    if requested == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if requested == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if requested not in PRECISIONS:
        raise ValueError(f"unknown precision {requested!r}")
    return requested


class Segmenter:
    """Both networks loaded once on a device at a precision; call it on each CT."""

    def __init__(self, models: Models, device: torch.device, precision: str):
        self.models, self.device, self.precision = models, device, precision
        for net in (models.coarse, models.fine):
            net.to(device).eval()
            if precision == "fp16":
                net.half()

    def _forward(self, net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Network logits as float32; fp16 runs the half-precision network, bf16 autocasts."""
        if self.precision == "fp16":
            return net(x.half()).float()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return net(x).float()

    @contextmanager
    def _stage(self, result: Result, name: str):
        """Time a stage (waiting for the GPU), record its peak GPU memory and release cached GPU
        memory after it."""
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        yield
        if cuda:
            torch.cuda.synchronize(self.device)
            result.peak_allocated_mb[name] = torch.cuda.max_memory_allocated(self.device) / MB
            result.peak_reserved_mb[name] = torch.cuda.max_memory_reserved(self.device) / MB
            torch.cuda.empty_cache()
        result.seconds[name] = time.perf_counter() - start

    @torch.inference_mode()
    def __call__(self, ct: np.ndarray, spacing: tuple[float, float, float]) -> Result:
        """Labels for a canonical CT (float32 HU, x y z) with voxel spacing in mm."""
        m = self.models
        result = Result(np.zeros(ct.shape, dtype=np.uint8))
        with self._stage(result, "coarse"):
            volume = torch.from_numpy(ct).to(self.device)[None, None]
            size = m.coarse.config.input_size
            logits = self._forward(m.coarse, normalise(resize(volume, size), m.clip_hu))[0]
            coarse = logits_to_labels(logits).cpu().numpy()
            del logits
            coarse_spacing = tuple(n * s / c for n, s, c in zip(ct.shape, spacing, size))
            coarse = keep_largest_components(coarse, coarse_spacing, m.labels)
            result.box = organ_box(coarse, ct.shape, spacing)
        if result.box is None:
            result.warnings.append("the coarse stage found no organ: the output is empty")
            return result
        with self._stage(result, "fine"):
            crop = volume[(..., *result.box)].clone()  # lets the whole volume go
            del volume
            logits = self._forward(m.fine, normalise(resize(crop, m.fine.config.input_size), m.clip_hu))
            fine = labels_at_size(logits, crop.shape[2:]).cpu().numpy()
            del logits, crop
        with self._stage(result, "post"):
            result.labels[result.box] = keep_largest_components(fine, spacing, m.labels)
            if not result.labels.any():
                result.warnings.append("no organ left after the fine stage: the output is empty")
        return result
