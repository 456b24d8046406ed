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


# Stages whose input is anti-aliased when it is shrunk (resize(antialias=True)), in training and
# inference alike. The fine stage: trilinear sampling of a 0.6-1 mm scan shrunk 2-3x into its crop
# keeps the scan's full per-voxel noise, which the networks never saw at that voxel size (a
# sharp-kernel chest CT had its heart labelled liver). The coarse stage stays trilinear: the shipped
# one was trained so, and averaging its input too cost the full-length real CT's liver 0.029
# (docs/pipeline.md).
ANTIALIASED_STAGES = ("fine",)


def resize(volume: torch.Tensor, size: tuple[int, int, int] | torch.Size, antialias: bool = False) -> torch.Tensor:
    """A (batch, channel, x, y, z) tensor resampled trilinearly to the given spatial size (voxel
    centres at (i + 0.5) * old / new, i.e. align_corners=False). With antialias, an axis shrunk by
    a factor r >= 2 is first averaged over blocks of floor(r) voxels, so that a fine scan's noise
    and texture do not alias into the coarser grid, and the blocks are then sampled trilinearly
    at those same centres (the plain resize's geometry; a partial last block, averaged on its own,
    moves the outermost samples by less than half an input voxel)."""
    size = tuple(int(n) for n in size)
    shape = tuple(volume.shape[2:])
    if shape == size:
        return volume
    blocks = tuple(max(1, old // new) for old, new in zip(shape, size))
    if not antialias or blocks == (1, 1, 1):
        return F.interpolate(volume, size=size, mode="trilinear", align_corners=False)
    pooled = F.avg_pool3d(volume, blocks, stride=blocks, ceil_mode=True)  # a partial last block: its own mean
    axes = []
    for old, new, block, n_pooled in zip(shape, size, blocks, pooled.shape[2:]):
        centres = (torch.arange(new, dtype=torch.float32, device=volume.device) + 0.5) * (old / new)
        axes.append(2.0 * centres / (block * n_pooled) - 1.0)  # grid_sample's [-1, 1] over the pooled extent
    x, y, z = torch.meshgrid(*axes, indexing="ij")
    grid = torch.stack([z, y, x], dim=-1)[None].expand(volume.shape[0], -1, -1, -1, -1).to(volume.dtype)
    return F.grid_sample(pooled, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_for_stage(volume: torch.Tensor, size: tuple[int, int, int] | torch.Size, stage: str) -> torch.Tensor:
    """resize for the input of a stage ("coarse" or "fine"): anti-aliased where the stage is one of
    ANTIALIASED_STAGES, the one rule training and inference share."""
    return resize(volume, size, antialias=stage in ANTIALIASED_STAGES)
