"""What one training example is: a random crop of a cached sample, resized to the network's
input, with its brightness varied, normalised as the checkpoint will say.

coarse: a crop keeping a random fraction of each axis (as scans differ in field of view);
fine: the organs' box with a random margin on each side (as the coarse stage's box varies);
brightness: every organ's HU shifted by its own random amount, then the whole crop by one.
Arrays and tensors are (x, y, z) / (channel, x, y, z); HU before normalisation.
"""
from __future__ import annotations

import numpy as np
import torch

from inference.preprocessing import Normalisation, resize_for_stage
from training.cache import Sample, resize_labels
from training.config import TrainConfig

Box = tuple[slice, slice, slice]


def coarse_window(shape: tuple[int, ...], keep: tuple[float, float], rng: np.random.Generator) -> Box:
    """A random box keeping a fraction in [keep[0], keep[1]] of each axis, anywhere along it."""
    box = []
    for n in shape:
        length = max(1, int(round(n * rng.uniform(*keep))))
        start = int(rng.integers(0, n - length + 1))
        box.append(slice(start, start + length))
    return tuple(box)


def fine_window(sample: Sample, margin_mm: tuple[float, float], rng: np.random.Generator) -> Box:
    """The organs' box widened on each side by its own random margin in [margin_mm] (mm),
    clipped to the cached region."""
    box = []
    for (lo, hi), spacing, n in zip(sample.organs, sample.spacing, sample.labels.shape):
        before, after = rng.uniform(*margin_mm, size=2) / spacing
        start = min(max(0, int(np.floor(lo - before))), n - 1)
        box.append(slice(start, max(start + 1, min(n, int(np.ceil(hi + after))))))
    return tuple(box)


def shift_brightness(image: np.ndarray, labels: np.ndarray, organ_shift: float, global_shift: float,
                     n_labels: int, rng: np.random.Generator) -> np.ndarray:
    """HU plus a uniform random shift in [-organ_shift, organ_shift] per organ label (inside
    that organ) and one in [-global_shift, global_shift] everywhere."""
    shifts = np.concatenate([[0.0], rng.uniform(-organ_shift, organ_shift, n_labels)]) if organ_shift else np.zeros(n_labels + 1)
    shifts += rng.uniform(-global_shift, global_shift) if global_shift else 0.0
    return image + shifts.astype(image.dtype)[labels]


def example(sample: Sample, config: TrainConfig, normalisation: Normalisation, n_labels: int,
            rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One training pair: the normalised image (1, x, y, z) float32 and the labels (x, y, z)
    uint8, both at the input size."""
    if config.stage == "fine" and sample.organs is not None:
        box = fine_window(sample, config.margin_mm, rng)
    else:
        box = coarse_window(sample.image.shape, config.coarse_crop, rng)
    image = resize_for_stage(np.asarray(sample.image[box], dtype=np.float32), config.input_size, config.stage)
    labels = resize_labels(np.array(sample.labels[box]), config.input_size)  # a copy: the cache is read-only
    image = shift_brightness(image, labels, config.organ_hu_shift, config.global_hu_shift, n_labels, rng)
    return torch.from_numpy(normalisation(image))[None], torch.from_numpy(labels)
