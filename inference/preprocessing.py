"""Resampling and intensity normalisation: NumPy arrays in, float32 arrays out.

Volumes are arrays (x, y, z) (inference/axes.py); resize also takes leading axes (channels,
say) before the three spatial ones and resamples each of them alike.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ZSCORE_EPS = 1e-5


@dataclass(frozen=True)
class Normalisation:
    """How a stage's network expects its input: HU clipped to `clip_hu`, then either z-scored
    with the volume's own mean and (population) std + 1e-5 (`zscore`, the paper's choice), or
    mapped linearly from the window onto [-1, 1]."""

    clip_hu: tuple[float, float] = (-325.0, 325.0)
    zscore: bool = True

    def __call__(self, volume: np.ndarray) -> np.ndarray:
        """The normalised float32 copy of a HU array; statistics over the whole array (one volume
        per call), summed in float64."""
        low, high = self.clip_hu
        out = np.clip(volume, low, high, dtype=np.float32)
        if self.zscore:
            centre, scale = out.mean(dtype=np.float64), out.std(dtype=np.float64) + ZSCORE_EPS
        else:
            centre, scale = (low + high) / 2, (high - low) / 2
        out -= np.float32(centre)
        out *= np.float32(1 / scale)
        return out

    def to_dict(self) -> dict:
        return {"clip_hu": [float(v) for v in self.clip_hu], "zscore": bool(self.zscore)}

    @classmethod
    def from_dict(cls, raw: dict) -> Normalisation:
        window = raw["clip_hu"]
        if not (isinstance(window, (list, tuple)) and len(window) == 2
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in window)
                and window[0] < window[1]):
            raise ValueError(f"clip_hu must be an increasing pair of HU, e.g. [-325, 325], got {window!r}")
        low, high = float(window[0]), float(window[1])
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


def resize(volume: np.ndarray, size: tuple[int, int, int], antialias: bool = False) -> np.ndarray:
    """An array (..., x, y, z) resampled trilinearly to the spatial size `size`, as float32 (voxel
    centres at (i + 0.5) * old / new, i.e. PyTorch's align_corners=False; samples outside the
    outermost centres take the edge value). With antialias, an axis shrunk by a factor r >= 2 is
    first averaged over blocks of floor(r) voxels, so that a fine scan's noise and texture do not
    alias into the coarser grid, and the blocks are then sampled linearly at those same centres
    (a partial last block, averaged on its own, moves the outermost samples by less than half an
    input voxel). Separable: one axis at a time, the most shrunk first (the least work after it);
    an unresized array comes back as it is. A volume laid out x fastest (NIfTI's order, CT.data)
    is resampled as its transpose, whose last axis is then the fastest: 15x faster, and the
    result is laid out as the input."""
    size = tuple(int(n) for n in size)
    shape = volume.shape[-3:]
    if shape == size:
        return volume
    if x_fastest(volume):
        return resize(volume.T, size[::-1], antialias).T
    out = volume
    for axis in sorted(range(3), key=lambda k: size[k] / shape[k]):
        old, new = shape[axis], size[axis]
        if old == new:
            continue
        at = volume.ndim - 3 + axis
        block = max(1, old // new) if antialias else 1
        if block > 1:
            out = _block_means(out, at, block)
        out = _linear(out, at, sample_positions(old, new, block))
    return out.astype(np.float32, copy=False)


def sample_positions(old: int, new: int, block: int = 1) -> np.ndarray:
    """Where the centres of `new` voxels spanning an axis of `old` fall, in voxels of that axis
    averaged in blocks of `block` (float64): (i + 0.5) * old / new / block - 0.5, PyTorch's
    align_corners=False."""
    return (np.arange(new) + 0.5) * (old / new) / block - 0.5


def linear_neighbours(n: int, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For fractional positions along an axis of n voxels, clamped to its outermost voxels: the
    two voxels linear interpolation blends and the float32 weight of the second."""
    positions = np.clip(positions, 0, n - 1)
    first = positions.astype(np.intp)  # floor: positions >= 0
    return first, np.minimum(first + 1, n - 1), (positions - first).astype(np.float32)


def x_fastest(volume: np.ndarray) -> bool:
    """Whether a volume (x, y, z) is laid out with x fastest (Fortran-like, as NIfTI stores it)."""
    return volume.ndim == 3 and abs(volume.strides[0]) < abs(volume.strides[2])


def edge_padded(volume: np.ndarray, padding: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The volume continued by (before, after) voxels per axis, repeating its edge voxels, laid out
    in the volume's own memory order (x fastest stays x fastest); the volume itself where nothing
    is padded."""
    if not any(any(p) for p in padding):
        return volume
    if x_fastest(volume):
        return np.pad(volume.T, padding[::-1], mode="edge").T
    return np.pad(volume, padding, mode="edge")


def resize_for_stage(volume: np.ndarray, size: tuple[int, int, int], stage: str) -> np.ndarray:
    """resize for the input of a stage ("coarse" or "fine"): anti-aliased where the stage is one of
    ANTIALIASED_STAGES, the one rule training and inference share."""
    return resize(volume, size, antialias=stage in ANTIALIASED_STAGES)


def _along(axis: int, index) -> tuple:
    """An index that takes `index` along `axis` and everything along the others."""
    return (slice(None),) * axis + (index,)


def _block_means(volume: np.ndarray, axis: int, block: int) -> np.ndarray:
    """float32 means over consecutive blocks of `block` voxels along `axis` (a partial last block:
    the mean of what it has)."""
    n = volume.shape[axis]
    full, blocks = n // block, -(-n // block)
    out = np.empty(volume.shape[:axis] + (blocks,) + volume.shape[axis + 1:], np.float32)
    head = out[_along(axis, slice(0, full))]
    np.add(volume[_along(axis, slice(0, full * block, block))], volume[_along(axis, slice(1, full * block, block))],
           out=head, dtype=np.float32)
    for k in range(2, block):
        head += volume[_along(axis, slice(k, full * block, block))]
    head *= np.float32(1 / block)
    if blocks > full:
        out[_along(axis, slice(full, blocks))] = volume[_along(axis, slice(full * block, n))].mean(
            axis=axis, keepdims=True, dtype=np.float32)
    return out


def _linear(volume: np.ndarray, axis: int, positions: np.ndarray) -> np.ndarray:
    """float32 samples along `axis` at the given fractional voxel positions (float64), linear
    between the two nearest voxels, clamped to the outermost ones (linear_neighbours)."""
    first, second, weight = linear_neighbours(volume.shape[axis], positions)
    weight = weight.reshape((-1,) + (1,) * (volume.ndim - axis - 1))
    out = np.take(volume, first, axis=axis).astype(np.float32, copy=False)
    step = np.take(volume, second, axis=axis).astype(np.float32, copy=False)
    step -= out
    step *= weight
    out += step
    return out
