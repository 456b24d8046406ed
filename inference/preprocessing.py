"""Resampling and intensity normalisation, on the tensors' own device (GPU when there is one).

Volumes are (batch, channel, x, y, z) tensors (inference/axes.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

ZSCORE_EPS = 1e-5


@dataclass(frozen=True)
class Normalisation:
    """How a stage's network expects its input: HU clipped to `clip_hu`, then either z-scored
    with the volume's own mean and (population) std + 1e-5 (`zscore`, the paper's choice), or
    mapped linearly from the window onto [-1, 1]."""

    clip_hu: tuple[float, float] = (-325.0, 325.0)
    zscore: bool = True

    def __call__(self, volume: torch.Tensor) -> torch.Tensor:
        """The normalised copy of a (batch, channel, x, y, z) HU tensor; statistics over the
        whole tensor (one volume per call)."""
        low, high = self.clip_hu
        clipped = volume.clamp(low, high)
        if self.zscore:
            return (clipped - clipped.mean()) / (clipped.std(correction=0) + ZSCORE_EPS)
        return (clipped - (low + high) / 2) / ((high - low) / 2)

    def to_dict(self) -> dict:
        return {"clip_hu": [float(v) for v in self.clip_hu], "zscore": bool(self.zscore)}

    @classmethod
    def from_dict(cls, raw: dict) -> Normalisation:
        low, high = (float(v) for v in raw["clip_hu"])
        if not low < high:
            raise ValueError(f"clip_hu must be an increasing pair, got {raw['clip_hu']}")
        zscore = raw["zscore"]
        if not isinstance(zscore, bool):
            raise ValueError(f"zscore must be true or false, got {zscore!r}")
        return cls((low, high), zscore)


def resize(volume: torch.Tensor, size: tuple[int, int, int] | torch.Size) -> torch.Tensor:
    """Trilinear resampling of a (batch, channel, x, y, z) tensor to the given spatial size
    (voxel centres at (i + 0.5) * old / new, i.e. align_corners=False)."""
    if tuple(volume.shape[2:]) == tuple(size):
        return volume
    return F.interpolate(volume, size=tuple(size), mode="trilinear", align_corners=False)
