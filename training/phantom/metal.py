"""Metal implants (clips, spinal screws) and the streaks and beam hardening they leave in the image."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.phantom.fields import Tube, spline_tube, tube_field
from training.phantom.priors import (
    BEAM_HARDENING_HU,
    CLIP_COUNT,
    CLIP_LENGTH_MM,
    CLIP_RADIUS_MM,
    CLIP_SPREAD_MM,
    LEVEL_STEP_MM,
    LIVER,
    METAL_HU,
    ROD_RADIUS_MM,
    SCREW_LEVELS,
    SCREW_RADIUS_MM,
    STREAK_HU,
    STREAK_LIMIT_HU,
    STREAK_NEAR_MM,
    STREAK_WIDTH_DEG,
    TISSUE,
)
from training.phantom.scan import Axes, Geometry


def _clip_tubes(tissue: np.ndarray, labels: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> list[Tube]:
    """Surgical clips (short thin rods, mm) scattered around a point of the gallbladder, or of the
    liver's lowest third where no gallbladder shows; none where neither does."""
    site = np.argwhere(tissue == TISSUE["bile"])
    if not len(site):
        liver = np.argwhere(labels == LIVER)
        site = liver[liver[:, 2] <= np.quantile(liver[:, 2], 1 / 3)] if len(liver) else liver
    if not len(site):
        return []
    axes = geometry.axes()
    centre = np.array([a[i] for a, i in zip(axes, site[rng.integers(len(site))])], float)
    tubes = []
    for _ in range(rng.integers(CLIP_COUNT[0], CLIP_COUNT[1] + 1)):
        middle = centre + rng.uniform(-CLIP_SPREAD_MM, CLIP_SPREAD_MM, 3)
        half = rng.uniform(*CLIP_LENGTH_MM) / 2 * _unit(rng.standard_normal(3))
        tubes.append(spline_tube([middle - half, middle + half], [rng.uniform(*CLIP_RADIUS_MM)] * 2))
    return tubes


def _unit(v: np.ndarray) -> np.ndarray:
    return v / max(float(np.linalg.norm(v)), 1e-9)


def _vertebral_body(tissue: np.ndarray, axes: Axes, k: int) -> tuple[float, float, float] | None:
    """In axial slice k: the centre (x, y mm) of the vertebral body (the cancellous bone near the
    midline in front of the spinal canal) and the canal's centre y (mm); None where either is missing."""
    near = np.abs(axes[0]) < 30.0
    canal = np.argwhere(tissue[near, :, k] == TISSUE["csf"])
    if not len(canal):
        return None
    canal_y = float(axes[1][canal[:, 1]].mean())
    body = np.argwhere(tissue[near, :, k] == TISSUE["cancellous bone"])
    body = body[axes[1][body[:, 1]] > canal_y + 5.0]
    if len(body) < 10:
        return None
    return float(axes[0][near][body[:, 0]].mean()), float(axes[1][body[:, 1]].mean()), canal_y


def _screw_tubes(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> list[Tube]:
    """Pedicle screws (mm) into 1-3 vertebral bodies LEVEL_STEP_MM apart, two per level from behind
    the canal's sides forwards and inwards, joined by a rod on each side; none where the scan
    shows no vertebral body."""
    axes = geometry.axes()
    z = axes[2]
    bodies = {k: body for k in range(len(z)) if (body := _vertebral_body(tissue, axes, k)) is not None}
    if not bodies:
        return []
    start = z[list(bodies)[rng.integers(len(bodies))]]
    radius = rng.uniform(*SCREW_RADIUS_MM)
    tubes, entries = [], {-1.0: [], 1.0: []}
    for level in start + LEVEL_STEP_MM * np.arange(rng.integers(SCREW_LEVELS[0], SCREW_LEVELS[1] + 1)) * rng.choice((-1.0, 1.0)):
        k = int(np.argmin(np.abs(z - level)))
        centre = bodies.get(k)
        if centre is None:
            continue
        cx, cy, canal_y = centre
        for side in (-1.0, 1.0):
            tip = np.array([cx + side * rng.uniform(3.0, 8.0), cy + rng.uniform(0.0, 8.0), z[k]])
            entry = np.array([cx + side * rng.uniform(20.0, 26.0), canal_y - rng.uniform(6.0, 12.0), z[k]])
            tubes.append(spline_tube([entry, tip], [radius * 1.5, radius]))
            entries[side].append(entry)
    for points in entries.values():
        if len(points) > 1:
            ends = np.array(sorted(points, key=lambda p: p[2]))
            ends[0, 2] -= 10.0
            ends[-1, 2] += 10.0
            tubes.append(spline_tube(ends + (0.0, -4.0, 0.0), [ROD_RADIUS_MM] * len(ends)))
    return tubes


def _streak_profile(rng: np.random.Generator, bins: int) -> np.ndarray:
    """A random pattern over ray angles [0, pi) (bins): smooth over STREAK_WIDTH_DEG, heavy-tailed
    (a few strong streaks among many faint ones), peaks at +-1."""
    sigma = rng.uniform(*STREAK_WIDTH_DEG) * bins / 180.0
    g = ndimage.gaussian_filter1d(rng.standard_normal(bins), sigma, mode="wrap") ** 3
    return (g / max(float(np.abs(g).max()), 1e-9)).astype(np.float32)


@dataclass(frozen=True)
class MetalPiece:
    """A piece of metal in an axial slice: centre (x, y) mm, area mm^2, the ends (x, y) mm of its
    long axis and its half-width (mm) across it."""

    centre: np.ndarray
    area: float
    ends: tuple[np.ndarray, np.ndarray]
    half_width: float

    @classmethod
    def of(cls, points: np.ndarray, pixel_area: float) -> MetalPiece:
        """From the (x, y) positions (mm) of its pixels: the axes from their covariance."""
        centre = points.mean(axis=0)
        values, vectors = np.linalg.eigh(np.cov(points.T) if len(points) > 2 else np.eye(2) * 1e-3)
        half = np.sqrt(3.0 * np.maximum(values, 0.0))  # half-extents of a uniform bar
        return cls(centre, len(points) * pixel_area, (centre - half[1] * vectors[:, 1], centre + half[1] * vectors[:, 1]),
                   max(float(half[0]), 0.5))

    def weight(self) -> float:
        """How strongly it streaks: grows with the metal's section, 1 from 20 mm^2 up."""
        return min(1.0, float(np.sqrt(self.area / 20.0)))


def _band(x: np.ndarray, y: np.ndarray, p: np.ndarray, q: np.ndarray, width: float) -> np.ndarray:
    """1 along the segment p-q (mm) on an (x, y) grid (mm), falling off across the line as a
    Gaussian of sd `width` and beyond the ends as STREAK_NEAR_MM / (distance + STREAK_NEAR_MM)."""
    length = float(np.linalg.norm(q - p))
    u = (q - p) / length if length > 1e-6 else np.array([1.0, 0.0])
    dx, dy = x[:, None] - p[0], y[None, :] - p[1]
    along, across = dx * u[0] + dy * u[1], np.abs(dx * u[1] - dy * u[0])
    beyond = np.maximum(np.maximum(-along, along - length), 0.0)
    return (np.exp(-0.5 * (across / width) ** 2) * (STREAK_NEAR_MM / (beyond + STREAK_NEAR_MM))).astype(np.float32)


def _slice_streaks(pieces: list[MetalPiece], x: np.ndarray, y: np.ndarray, amplitude: float,
                   rng: np.random.Generator) -> np.ndarray:
    """Streaks (HU, x y) in one axial slice from the metal pieces in it, on a grid of x and y
    coordinates (mm): along every ray through a piece a random pattern falling off as 1/r, and
    dark bands (beam hardening) along the rays through a piece's length and through two pieces."""
    bins = 720
    out = np.zeros((len(x), len(y)), np.float32)
    for piece in pieces:
        dx, dy = x[:, None] - piece.centre[0], y[None, :] - piece.centre[1]
        angle = ((np.arctan2(dy, dx) % np.pi) * (bins / np.pi)).astype(np.int64) % bins
        falloff = STREAK_NEAR_MM / (np.hypot(dx, dy) + STREAK_NEAR_MM)
        out += amplitude * piece.weight() * _streak_profile(rng, bins)[angle] * falloff
        if np.linalg.norm(piece.ends[1] - piece.ends[0]) > 4 * piece.half_width:  # elongated
            out -= rng.uniform(*BEAM_HARDENING_HU) * amplitude * piece.weight() * _band(x, y, *piece.ends, piece.half_width)
    for i, a in enumerate(pieces):
        for b in pieces[i + 1:]:
            weight = min(a.weight(), b.weight())
            width = min(a.half_width, b.half_width)
            out -= rng.uniform(*BEAM_HARDENING_HU) * amplitude * weight * _band(x, y, a.centre, b.centre, width)
    return np.clip(out, -STREAK_LIMIT_HU, STREAK_LIMIT_HU)


def _at_least_a_voxel(tube: Tube, spacing: Sequence[float]) -> Tube:
    """The tube thickened to half a voxel where it is thinner (a thin clip on a coarse grid shows
    as a bright voxel, not as nothing): radius at least half the in-plane spacing, its reach
    along z at least half the slice spacing."""
    radii = np.maximum(tube.radii, 0.5 * max(spacing[:2]))
    return Tube(tube.points, radii, (1.0, 1.0, max(1.0, 0.5 * spacing[2] / float(radii.min()))))


def metal_implants(image: np.ndarray, tissue: np.ndarray, labels: np.ndarray, geometry: Geometry,
                   rng: np.random.Generator, kind: str) -> bool:
    """Add metal of a kind (METAL_KINDS) and its streaks to the image (float32 HU, x y z), in place:
    the metal only in the body outside the organ labels, the streaks only in the body, slice by
    slice; the labels stay. False (the image untouched) where the scan shows no site for it."""
    tubes = (_clip_tubes(tissue, labels, geometry, rng) if kind == "clips" else _screw_tubes(tissue, geometry, rng))
    if not tubes:
        return False
    axes = geometry.axes()
    metal = (tube_field(axes, [_at_least_a_voxel(t, geometry.spacing) for t in tubes]) <= 0)
    metal &= (labels == 0) & (tissue != TISSUE["air"])
    if not metal.any():
        return False
    x, y, _ = axes
    amplitude = rng.uniform(*STREAK_HU[kind])
    pixel = geometry.spacing[0] * geometry.spacing[1]
    body = tissue != TISSUE["air"]
    for k in np.nonzero(metal.any(axis=(0, 1)))[0]:
        parts, n = ndimage.label(metal[:, :, k], structure=np.ones((3, 3)))
        pieces = [MetalPiece.of(np.stack([x[i], y[j]], axis=1), pixel)
                  for i, j in (np.nonzero(parts == m) for m in range(1, n + 1))]
        image[:, :, k] += _slice_streaks(pieces, x, y, amplitude, rng) * body[:, :, k]
    box = tuple(slice(max(int(i.min()) - 3, 0), int(i.max()) + 4) for i in np.nonzero(metal))
    share = np.minimum(1.0, 2.0 * ndimage.gaussian_filter(metal[box].astype(np.float32), [0.5 / s for s in geometry.spacing]))
    image[box] += share * (METAL_HU - image[box])  # the metal, with partial volume at its edge
    return True
