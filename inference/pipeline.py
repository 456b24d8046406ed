"""The whole-volume coarse-to-fine pipeline: the image-in, labels-out Python API.

1. coarse: the whole volume resampled to the coarse input size (160^3 in the paper),
   normalised (the checkpoint's window and z-score), the coarse network, per-organ largest
   components (>= 1000 mm^3 by default);
2. the organs' bounding box on the original grid plus a margin (20 mm) on every side;
3. fine: that crop (original HU; where the organs reach the scan's edge, continued past it by
   the margin, repeating the edge voxels) resampled to the fine input size (192^3), normalised
   on the crop, the fine network;
4. post-processing: labels from the fine logits at the crop's size, decided on the network's
   grid and carried to the crop's voxels, only the voxels between two labels getting their
   logits resampled (postprocessing.labels_at_size: no float map of the crop's size), then the
   largest components again, pasted into an empty volume.

Each case's stages (STAGES; not the checkpoint's two networks, inference.checkpoint.NETWORK_STAGES)
are timed one by one in Result.seconds.

    >>> segmenter = Segmenter(load("weights/flare21_c2f.pt"), torch.device("cpu"), "fp32")
    >>> labels_img, result = segmenter.segment(nib.load("case_0000.nii.gz"))   # any orientation
    >>> result = segmenter(ct_ras, spacing)        # float32 HU array (x, y, z) in RAS+, spacing in mm

Every size, window, margin and component rule comes from the checkpoint (inference.checkpoint).
Resampling and normalisation run on the models' device; cached GPU memory is released after each
stage. Arrays and tensors are (x, y, z) as in inference/axes.py.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

from flare_common.units import MB
from inference import openvino_runtime
from inference.checkpoint import Models
from inference.defaults import PRECISIONS
from inference.imageio import CT, labels_image, to_canonical
from inference.postprocessing import (
    NO_PADDING,
    Box,
    Padding,
    keep_largest_components,
    labels_at_size,
    logits_to_labels,
    organ_box,
    organ_region,
)
from inference.preprocessing import resize_for_stage

Spacing = tuple[float, float, float]
STAGES = {  # the stages of a case, timed one by one (Result.seconds), and what each does
    "coarse": "the whole volume resampled to the coarse size, normalised, the coarse network, its labels",
    "components": "the coarse labels' largest components and the organs' box plus the margin",
    "crop": "the box cut from the CT onto the device",
    "fine": "the crop resampled to the fine size, normalised, the fine network",
    "logits back": "the fine logits turned into labels at the crop's size (labels_at_size)",
    "paste": "the fine labels' largest components pasted into the empty volume",
}


@dataclass
class Result:
    """Canonical-orientation labels (uint8, x y z), seconds per stage, on CUDA torch's peak
    allocated and reserved memory per stage (MB), what was noticed, the fine stage's box on the
    CT's grid and the voxels (before, after) per axis its crop continued past the scan's edge."""

    labels: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    peak_allocated_mb: dict[str, float] = field(default_factory=dict)
    peak_reserved_mb: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    box: Box | None = None
    padding: Padding = NO_PADDING

    def cuda_memory(self) -> dict:
        """The case's peak GPU memory (MB, the largest stage's) and that of each stage; empty
        off CUDA (never zeros that look measured)."""
        if not self.peak_allocated_mb:
            return {}
        return {"peak_allocated_mb": max(self.peak_allocated_mb.values()),
                "peak_reserved_mb": max(self.peak_reserved_mb.values()),
                "stage_peak_allocated_mb": self.peak_allocated_mb, "stage_peak_reserved_mb": self.peak_reserved_mb}


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


class Segmenter:
    """The checkpoint's networks on a device at a precision; call it on each CT.

    The networks are copied: the Models given are never modified (a training loop may keep
    updating its own networks and build a Segmenter for each validation). `on_stage`, when
    given, is called with each stage's name (a key of STAGES) as the stage starts. `compiled`
    maps stages to compiled versions of their networks (inference.openvino_runtime: fp32 or bf16,
    `precision`, on the CPU), which then run instead of eager PyTorch. fp32 on CUDA sets PyTorch's
    convolutions and matrix products to IEEE float32 for the whole process (cuDNN runs float32
    convolutions in TF32 by default on Ampere and later GPUs)."""

    def __init__(self, models: Models, device: torch.device, precision: str,
                 on_stage: Callable[[str], None] | None = None,
                 compiled: dict[str, Callable[[torch.Tensor], torch.Tensor]] | None = None):
        self.models, self.device, self.precision, self.on_stage = models, device, precision, on_stage
        if device.type == "cuda" and precision == "fp32":  # IEEE float32, not cuDNN's default TF32 for convolutions
            # the flags that set cuDNN's convolutions and RNNs alike (setting only the convolutions' new
            # fp32_precision leaves a mix that makes every later read of allow_tf32 raise)
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        self.compiled = compiled or {}
        if self.compiled and (precision == "auto" or not openvino_runtime.runs_on(device.type, precision)):
            raise ValueError("compiled networks run in fp32 or bf16 on the CPU")
        self.nets = {stage: self._prepared(models.network(stage)) for stage in models.stages()
                     if stage not in self.compiled}

    def _prepared(self, net: torch.nn.Module) -> torch.nn.Module:
        net = copy.deepcopy(net).to(self.device).eval()
        return net.half() if self.precision == "fp16" else net

    def _input(self, stage: str, volume: torch.Tensor) -> torch.Tensor:
        """The stage's network input for a (1, 1, x, y, z) HU tensor: resampled to the input size
        (anti-aliased for ANTIALIASED_STAGES) and normalised as the checkpoint says."""
        return self.models.normalisation[stage](
            resize_for_stage(volume, self.models.network(stage).config.input_size, stage))

    def _logits(self, stage: str, volume: torch.Tensor) -> torch.Tensor:
        """The stage's float32 logits for a (1, 1, x, y, z) HU tensor."""
        return self.forward(stage, self._input(stage, volume))

    def forward(self, stage: str, x: torch.Tensor) -> torch.Tensor:
        """The stage's network alone: float32 logits (1, organs, x, y, z) of a normalised input
        (1, 1, x, y, z) of its input size on the device; fp16 runs the half-precision network,
        bf16 autocasts, a compiled network runs where there is one."""
        if stage in self.compiled:
            return self.compiled[stage](x)
        net = self.nets[stage]
        if self.precision == "fp16":
            return net(x.half()).float()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return net(x).float()

    @contextmanager
    def _stage(self, result: Result, name: str):
        """Time a stage (waiting for the GPU), record its peak GPU memory and release cached GPU
        memory after it."""
        if self.on_stage is not None:
            self.on_stage(name)
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

    def _components(self, labels: np.ndarray, spacing: Spacing) -> np.ndarray:
        return keep_largest_components(labels, spacing, self.models.labels, self.models.post)

    def _volume(self, ct: np.ndarray) -> torch.Tensor:
        """A (1, 1, x, y, z) float32 tensor of an array on the device."""
        return torch.from_numpy(np.ascontiguousarray(ct, dtype=np.float32)).to(self.device)[None, None]

    def _coarse_box(self, ct: np.ndarray, spacing: Spacing, result: Result) -> Box | None:
        """Coarse stage: the organs' box (plus margin) on the CT's grid, None if none found."""
        with self._stage(result, "coarse"):
            coarse = logits_to_labels(self._logits("coarse", self._volume(ct))[0]).cpu().numpy()
        with self._stage(result, "components"):
            coarse_spacing = tuple(n * s / c for n, s, c in zip(ct.shape, spacing, coarse.shape))
            coarse = self._components(coarse, coarse_spacing)
            region = organ_region(coarse, ct.shape, spacing, self.models.post.box_margin_mm, self.models.post.edge_padding)
            if region is not None:
                result.box, result.padding = region
        if result.box is None:
            result.warnings.append("the coarse stage found no organ: the output is empty")
        return result.box

    def _fine(self, ct: np.ndarray, spacing: Spacing, result: Result) -> None:
        """Fine stage on the crop result.box of the CT, then post-processing into result.labels.
        Each tensor is dropped as soon as the next stage has its successor."""
        with self._stage(result, "crop"):
            crop = self._volume(ct[result.box])
            if any(any(p) for p in result.padding):  # F.pad takes the last axis first
                crop = F.pad(crop, [n for p in reversed(result.padding) for n in p], mode="replicate")
        with self._stage(result, "fine"):
            size = crop.shape[2:]
            x = self._input("fine", crop)
            del crop  # the crop at the CT's resolution (up to the whole CT in float32) is not kept beside the network's memory
            logits = self.forward("fine", x)
            del x
        with self._stage(result, "logits back"):
            inside = tuple(slice(lo, n - hi) for (lo, hi), n in zip(result.padding, size))
            fine = np.ascontiguousarray(labels_at_size(logits, size).cpu().numpy()[inside])
            del logits
        with self._stage(result, "paste"):
            result.labels[result.box] = self._components(fine, spacing)
            if not result.labels.any():
                result.warnings.append("no organ left after the fine stage: the output is empty")

    @torch.inference_mode()
    def __call__(self, ct: np.ndarray, spacing: Spacing) -> Result:
        """Labels for a canonical CT (HU, x y z in RAS+) with voxel spacing in mm: both stages."""
        result = Result(np.zeros(ct.shape, dtype=np.uint8))
        if self._coarse_box(ct, spacing, result) is not None:
            self._fine(ct, spacing, result)
        return result

    @torch.inference_mode()
    def coarse_only(self, ct: np.ndarray, spacing: Spacing) -> Result:
        """The coarse stage alone as a label map on the CT's grid: its logits resampled to the
        full grid, then the largest components, and their box plus the margin (how the coarse
        network is validated)."""
        result = Result(np.zeros(ct.shape, dtype=np.uint8))
        with self._stage(result, "coarse"):
            volume = self._volume(ct)
            labels = labels_at_size(self._logits("coarse", volume), volume.shape[2:]).cpu().numpy()
            result.labels = self._components(labels, spacing)
            result.box = organ_box(result.labels, ct.shape, spacing, self.models.post.box_margin_mm)
        return result

    @torch.inference_mode()
    def fine_only(self, ct: np.ndarray, spacing: Spacing, box: Box, padding: Padding = NO_PADDING) -> Result:
        """The fine stage alone in a given box of the CT's grid, its crop continued past the
        scan's edge by `padding` (e.g. the ground truth's organ_region with the checkpoint's
        margin and edge padding: how the fine network is validated)."""
        result = Result(np.zeros(ct.shape, dtype=np.uint8), box=box, padding=padding)
        self._fine(ct, spacing, result)
        return result

    def segment_ct(self, ct: CT) -> tuple[np.ndarray, Result]:
        """Labels of a CT read by inference.imageio, on the CT's own stored grid."""
        result = self(ct.data, ct.spacing)
        result.warnings[:0] = ct.warnings
        return ct.from_canonical(result.labels), result

    def segment(self, image: nib.spatialimages.SpatialImage) -> tuple[nib.spatialimages.SpatialImage, Result]:
        """A nibabel CT image (any storage orientation) in, its label image out: uint8 on exactly
        the input's grid, with its geometry (inference.imageio.labels_image; InputError for an
        unusable image)."""
        ct = to_canonical(image)
        labels, result = self.segment_ct(ct)
        return labels_image(labels, ct), result
