"""Resampling and intensity normalisation, on the tensors' own device (GPU when there is one).

Volumes are (batch, channel, x, y, z) tensors (inference/axes.py).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

ZSCORE_EPS = 1e-5


def resize(volume: torch.Tensor, size: tuple[int, int, int] | torch.Size) -> torch.Tensor:
    """Trilinear resampling of a (batch, channel, x, y, z) tensor to the given spatial size
    (voxel centres at (i + 0.5) * old / new, i.e. align_corners=False)."""
    if tuple(volume.shape[2:]) == tuple(size):
        return volume
    return F.interpolate(volume, size=tuple(size), mode="trilinear", align_corners=False)


def normalise(volume: torch.Tensor, clip_hu: tuple[float, float]) -> torch.Tensor:
    """Clip HU to clip_hu, then z-score with the volume's own mean and (population) std + 1e-5."""
    clipped = volume.clamp(*clip_hu)
    return (clipped - clipped.mean()) / (clipped.std(correction=0) + ZSCORE_EPS)
