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

Each case's stages (STAGES; not the checkpoint's two networks, inference.spec.NETWORK_STAGES)
are timed one by one in Result.seconds.

    >>> models = load("weights/flare21_c2f.pt")
    >>> segmenter = Segmenter(models.spec(), TorchNetworks(models, "cpu", "fp32"))
    >>> labels_img, result = segmenter.segment(nib.load("case_0000.nii.gz"))   # any orientation
    >>> result = segmenter(ct_ras, spacing)        # float32 HU array (x, y, z) in RAS+, spacing in mm

Every size, window, margin and component rule comes from the checkpoint's Spec (inference.spec).
The pipeline itself is NumPy: the networks are whatever runs them (NetworkRunner: eager PyTorch on
the CPU or a GPU, inference.torch_runtime; OpenVINO on the CPU, inference.openvino_runtime), so a
run through OpenVINO never imports torch. Arrays are (x, y, z) as in inference/axes.py.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import nibabel as nib
import numpy as np

from flare_common.errors import InputError
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
from inference.preprocessing import edge_padded, resize_for_stage, x_fastest
from inference.spec import Spec

Spacing = tuple[float, float, float]
STAGES = {  # the stages of a case, timed one by one (Result.seconds), and what each does
    "coarse": "the whole volume resampled to the coarse size, normalised, the coarse network, its labels",
    "components": "the coarse labels' largest components and the organs' box plus the margin",
    "crop": "the box cut from the CT (a view), continued past the scan's edge where padded",
    "fine": "the crop resampled to the fine size, normalised, the fine network",
    "logits back": "the fine logits turned into labels at the crop's size (labels_at_size)",
    "paste": "the fine labels' largest components pasted into the empty volume",
}


@dataclass
class Result:
    """Canonical-orientation labels (uint8, x y z), seconds per stage, on a GPU the peak
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


class NetworkRunner(Protocol):
    """Runs a checkpoint's networks: `precision` names what they run in."""

    precision: str

    def __call__(self, stage: str, x: np.ndarray) -> np.ndarray:
        """The stage's float32 logits (organs, x, y, z) of a normalised float32 input (x, y, z)
        of the stage's input size."""

    def measured(self) -> AbstractContextManager[dict[str, float]]:
        """A context around one stage of a case that yields a dict, filled on exit with the
        stage's peak GPU memory (MB: "allocated", "reserved") where the networks run on a GPU and
        left empty elsewhere; cached GPU memory is released on exit."""


def _check_array_input(ct: np.ndarray, spacing: Spacing) -> None:
    """ValueError, in one line, for what the array API cannot segment (Segmenter.__call__)."""
    if ct.ndim != 3:
        raise ValueError(f"the CT must be a 3D array (x, y, z), not of shape {ct.shape}")
    sides = np.asarray(spacing, dtype=np.float64).ravel()
    if sides.size != 3 or not (np.isfinite(sides) & (sides > 0)).all():
        raise ValueError(f"spacing must be three positive numbers of mm (x, y, z), not {spacing}")
    if ct.size and ct.dtype.kind == "f" and not (np.isfinite(ct.min()) and np.isfinite(ct.max())):
        raise ValueError("the CT holds NaN or infinite voxels (a file's are set to air when it is read: "
                         "inference.imageio.to_canonical)")


class Segmenter:
    """A checkpoint's pipeline (its Spec) with the networks that run it; call it on each CT.

    `on_stage`, when given, is called with each stage's name (a key of STAGES) as the stage
    starts."""

    def __init__(self, spec: Spec, networks: NetworkRunner, on_stage: Callable[[str], None] | None = None):
        self.spec, self.networks, self.on_stage = spec, networks, on_stage

    def _logits(self, stage: str, volume: np.ndarray) -> np.ndarray:
        """The stage's float32 logits (organs, x, y, z) for a HU array (x, y, z): resampled to the
        input size (anti-aliased for ANTIALIASED_STAGES), normalised as the checkpoint says, run."""
        x = self.spec.normalisation[stage](resize_for_stage(volume, self.spec.input_sizes[stage], stage))
        return self.networks(stage, x)

    @contextmanager
    def _stage(self, result: Result, name: str):
        """Time a stage and record its peak GPU memory (NetworkRunner.measured)."""
        if self.on_stage is not None:
            self.on_stage(name)
        start = time.perf_counter()
        with self.networks.measured() as memory:
            yield
        if memory:
            result.peak_allocated_mb[name], result.peak_reserved_mb[name] = memory["allocated"], memory["reserved"]
        result.seconds[name] = time.perf_counter() - start

    def _components(self, labels: np.ndarray, spacing: Spacing) -> np.ndarray:
        return keep_largest_components(labels, spacing, self.spec.labels, self.spec.post)

    def _coarse_box(self, ct: np.ndarray, spacing: Spacing, result: Result) -> Box | None:
        """Coarse stage: the organs' box (plus margin) on the CT's grid, None if none found."""
        with self._stage(result, "coarse"):
            coarse = logits_to_labels(self._logits("coarse", ct))
        with self._stage(result, "components"):
            coarse_spacing = tuple(n * s / c for n, s, c in zip(ct.shape, spacing, coarse.shape))
            coarse = self._components(coarse, coarse_spacing)
            region = organ_region(coarse, ct.shape, spacing, self.spec.post.box_margin_mm, self.spec.post.edge_padding)
            if region is not None:
                result.box, result.padding = region
        if result.box is None:
            result.warnings.append("the coarse stage found no organ: the output is empty")
        return result.box

    def _fine(self, ct: np.ndarray, spacing: Spacing, result: Result) -> None:
        """Fine stage on the crop result.box of the CT, then post-processing into result.labels."""
        with self._stage(result, "crop"):
            crop = edge_padded(ct[result.box], result.padding)  # a view of the CT where nothing is padded
        with self._stage(result, "fine"):
            size = crop.shape
            logits = self._logits("fine", crop)
            del crop
        with self._stage(result, "logits back"):
            inside = tuple(slice(lo, n - hi) for (lo, hi), n in zip(result.padding, size))
            fine = np.ascontiguousarray(labels_at_size(logits, size)[inside])
            del logits
        with self._stage(result, "paste"):
            result.labels[result.box] = self._components(fine, spacing)
            if not result.labels.any():
                result.warnings.append("no organ left after the fine stage: the output is empty")

    def __call__(self, ct: np.ndarray, spacing: Spacing) -> Result:
        """Labels for a canonical CT (HU, x y z in RAS+) with voxel spacing in mm: both stages.
        ValueError for an array that is not 3D, a spacing that is not three positive numbers, or
        NaN or infinite voxels (inference.imageio.to_canonical sets those of a file to air)."""
        _check_array_input(ct, spacing)
        result = Result(np.zeros(ct.shape, dtype=np.uint8, order="F" if x_fastest(ct) else "C"))  # as CT.data
        if self._coarse_box(ct, spacing, result) is not None:
            self._fine(ct, spacing, result)
        return result

    def coarse_only(self, ct: np.ndarray, spacing: Spacing) -> Result:
        """The coarse stage alone as a label map on the CT's grid: its logits resampled to the
        full grid, then the largest components, and their box plus the margin (how the coarse
        network is validated)."""
        result = Result(np.zeros(ct.shape, dtype=np.uint8))
        with self._stage(result, "coarse"):
            labels = labels_at_size(self._logits("coarse", ct), ct.shape)
            result.labels = self._components(labels, spacing)
            result.box = organ_box(result.labels, ct.shape, spacing, self.spec.post.box_margin_mm)
        return result

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
        """A nibabel NIfTI CT image (any storage orientation) in, its label image out: uint8 on
        exactly the input's grid, with its geometry (inference.imageio.labels_image; InputError for
        an unusable image, or one of another format, whose header could not describe labels)."""
        if not isinstance(image.header, nib.Nifti1Header):  # NIfTI-2's header is one too
            raise InputError(f"a NIfTI image is needed, not a {type(image).__name__} (e.g. nibabel.Nifti1Image("
                             "image.get_fdata(), image.affine))")
        ct = to_canonical(image)
        labels, result = self.segment_ct(ct)
        return labels_image(labels, ct), result
