"""Surface elements (surfels) and the normalised surface Dice (NSD), as DeepMind's surface-distance.

Conventions, all identical to `surface_distance.compute_surface_distances` and
`compute_surface_dice_at_tolerance`:

- A mask is a 3D bool array indexed (i, j, k); `spacing` is the voxel size in mm along those same
  axes (for NIfTI read by nibabel: the voxel axes x, y, z and `header.get_zooms()`).
- Surfaces live on the grid of 2x2x2 neighbourhoods, shifted by half a voxel: grid point p
  (0..n along an axis of n voxels) sees voxels p-1 and p. Its neighbour code is the 8-bit pattern
  of those voxels; the voxel at offset (a, b, c) in {0, 1}^3 has bit value 128 >> (4a + 2b + c).
- A grid point is a surfel when its code is neither 0 (all outside) nor 255 (all inside).
- A surfel's area (mm^2) is the area of the marching-cubes triangles of its code, with vertices
  at the edge midpoints: Lorensen's triangulation for codes with at most four set voxels, the
  triangulation of the complementary code for codes with more (this reproduces DeepMind's
  lookup table entry by entry; tests check all 256 codes against it).
- The distance between surfels is the Euclidean distance in mm between their grid points,
  computed as scipy's distance transform computes it:
  sqrt((di * s_i)^2 + (dj * s_j)^2 + (dk * s_k)^2) in float64.
- A surfel is within tolerance when its distance to the other surface is <= tolerance
  (ties count); a surfel facing an empty surface has distance infinity.
- NSD = (GT area within tolerance + predicted area within tolerance) / (GT area + predicted area).

Speed: instead of two distance transforms over the bounding box, only "is there a surfel of the
other surface within the tolerance?" is asked. The grid offsets within the tolerance (the ball,
built with the distance arithmetic above, so ties are decided exactly) are checked one by one,
nearest first, when the ball is small; for a large ball the nearest offsets are checked first and
the surfels left undecided go to a k-d tree bounded by the tolerance, whose candidate's distance
is recomputed with the same arithmetic.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from evaluation.runs import flat_nonzero

Spacing = tuple[float, float, float]

# Bit value of each 2x2x2 neighbour in the neighbour code, in the order of the offsets
# (a, b, c) = (0, 0, 0), (0, 0, 1), ..., (1, 1, 1): 128 >> (4a + 2b + c).
_BITS = [128 >> n for n in range(8)]


@lru_cache(maxsize=1)
def _triangle_area_vectors() -> tuple[np.ndarray, np.ndarray]:
    """Area vectors (voxel units) of the marching-cubes triangles of every neighbour code.

    Returns (codes, vectors): vectors[t] is the area vector (half the cross product) of
    triangle t, which belongs to neighbour code codes[t].
    """
    from skimage.measure import marching_cubes  # only needed to build the table once

    codes, vectors = [], []
    for code in range(1, 255):
        set_voxels = bin(code).count("1")
        shape_code = code if set_voxels <= 4 else 255 - code
        cube = np.array([(shape_code & bit) > 0 for bit in _BITS], dtype=np.float64).reshape(2, 2, 2)
        verts, faces, _, _ = marching_cubes(cube, 0.5, method="lorensen", allow_degenerate=True)
        tri = verts[faces]
        vec = 0.5 * np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        codes.extend([code] * len(vec))
        vectors.append(vec)
    return np.asarray(codes), np.concatenate(vectors)


@lru_cache(maxsize=64)
def surfel_area_table(spacing: Spacing) -> np.ndarray:
    """Area in mm^2 of the surfel of each of the 256 neighbour codes at this spacing (mm)."""
    codes, vec = _triangle_area_vectors()
    s0, s1, s2 = (np.float64(s) for s in spacing)
    scaled = np.stack([vec[:, 0] * s1 * s2, vec[:, 1] * s0 * s2, vec[:, 2] * s0 * s1], axis=1)
    areas = np.sqrt(np.einsum("ij,ij->i", scaled, scaled))
    return np.bincount(codes, weights=areas, minlength=256)


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbour code (uint8) of every grid point; shape = mask.shape + 1 along each axis.

    Built one axis at a time: pairs along k give 2 bits, pairs of those along j 4, along i 8.
    """
    padded = np.pad(mask.astype(np.uint8, copy=False), 1)
    codes = padded[:, :, :-1] * np.uint8(2) + padded[:, :, 1:]
    codes = codes[:, :-1, :] * np.uint8(4) + codes[:, 1:, :]
    return codes[:-1, :, :] * np.uint8(16) + codes[1:, :, :]


def is_surfel(codes: np.ndarray) -> np.ndarray:
    """Which grid points carry a surface element (code neither 0 nor 255)."""
    return (codes != 0) & (codes != 255)


def surfels(codes: np.ndarray, on: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The grid points (N, 3) where `on` (is_surfel(codes)) holds, in memory order, and their codes."""
    order = "F" if on.flags.f_contiguous and not on.flags.c_contiguous else "C"
    where = flat_nonzero(on.ravel(order=order))
    points = np.stack(np.unravel_index(where, on.shape, order=order), axis=1)
    return points, codes.ravel(order=order)[where]


def edt_distance(delta: np.ndarray, spacing: Spacing) -> np.ndarray:
    """Distance in mm of integer grid offsets (N, 3), with scipy's distance-transform arithmetic."""
    sq = (delta.astype(np.float64) * np.asarray(spacing, dtype=np.float64)) ** 2
    return np.sqrt((sq[:, 0] + sq[:, 1]) + sq[:, 2])


@lru_cache(maxsize=256)
def ball_offsets(spacing: Spacing, tolerance_mm: float) -> np.ndarray:
    """Integer grid offsets (K, 3) whose distance (edt_distance) is <= tolerance_mm, nearest first.

    Empty when the ball would have more than MAX_BALL_GRID candidate offsets (tiny voxels).
    """
    radius = [int(tolerance_mm // s) + 1 for s in spacing]  # one spare layer against rounding
    if np.prod([2 * r + 1 for r in radius], dtype=np.float64) > MAX_BALL_GRID:
        return np.zeros((0, 3), dtype=np.int64)
    axes = [np.arange(-r, r + 1) for r in radius]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    distance = edt_distance(grid, spacing)
    inside = distance <= tolerance_mm
    return grid[inside][np.argsort(distance[inside], kind="stable")]


MAX_BALL_GRID = 2_000_000  # candidate offsets examined when building a ball
DIRECT_OFFSETS = 64  # balls up to this size are checked offset by offset, larger ones by k-d tree


def _hits_at_offsets(points: np.ndarray, grid: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """For each grid point (N, 3), whether grid (3D bool) is True at the point plus any offset."""
    reach = np.abs(offsets).max(axis=0)
    padded = np.pad(grid, [(r, r) for r in reach])
    strides = np.array(padded.strides) // padded.itemsize  # of either memory order
    flat = padded.ravel(order="K")  # memory order: no copy
    base = (points + reach) @ strides
    hit = np.zeros(len(points), dtype=bool)
    todo = np.arange(len(points))
    for delta in offsets @ strides:
        found = flat[base[todo] + delta]
        hit[todo[found]] = True
        todo = todo[~found]
        if todo.size == 0:
            break
    return hit


def _tree_within(points: np.ndarray, targets: np.ndarray, spacing: Spacing, tolerance_mm: float) -> np.ndarray:
    """For each grid point (N, 3), whether some target point (M, 3) lies within tolerance_mm."""
    if len(points) == 0 or len(targets) == 0:
        return np.zeros(len(points), dtype=bool)
    from scipy.spatial import cKDTree  # imported here: only large balls need it, and it is slow to import

    scale = np.asarray(spacing, dtype=np.float64)
    tree = cKDTree(targets * scale, balanced_tree=False, compact_nodes=False)
    # A slightly looser bound so that distances equal to the tolerance are never lost to rounding;
    # the exact test is done below on the candidate's recomputed distance.
    bound = tolerance_mm * (1 + 1e-9) + 1e-9
    _, nearest = tree.query(points * scale, k=1, distance_upper_bound=bound)
    found = nearest < len(targets)
    within = np.zeros(len(points), dtype=bool)
    within[found] = edt_distance(points[found] - targets[nearest[found]], spacing) <= tolerance_mm
    return within


def within_tolerance(points: np.ndarray, surface: np.ndarray, spacing: Spacing, tolerance_mm: float) -> np.ndarray:
    """For each grid point (N, 3), whether the other surface (3D bool surfel map) has a surfel
    within tolerance_mm. Small balls of offsets are checked directly; for large ones the nearest
    offsets are checked first and only the points left undecided go to a k-d tree."""
    offsets = ball_offsets(spacing, float(tolerance_mm))
    direct = offsets if len(offsets) <= DIRECT_OFFSETS else offsets[:27]
    near = _hits_at_offsets(points, surface, direct) if len(direct) else np.zeros(len(points), bool)
    if len(direct) < len(offsets) or len(offsets) == 0:
        undecided = ~near
        near[undecided] = _tree_within(points[undecided], np.argwhere(surface), spacing, tolerance_mm)
    return near


def surface_dice(gt: np.ndarray, pred: np.ndarray, spacing: Spacing, tolerance_mm: float) -> float:
    """Normalised surface Dice of two 3D bool masks of the same shape (NaN when both are empty)."""
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: {gt.shape} vs {pred.shape}")
    spacing = tuple(spacing)
    table = surfel_area_table(spacing)
    codes_gt, codes_pred = neighbour_codes(gt), neighbour_codes(pred)
    on_gt, on_pred = is_surfel(codes_gt), is_surfel(codes_pred)
    (at_gt, of_gt), (at_pred, of_pred) = surfels(codes_gt, on_gt), surfels(codes_pred, on_pred)
    area_gt, area_pred = table[of_gt], table[of_pred]
    total = area_gt.sum() + area_pred.sum()
    if total == 0:
        return float("nan")
    near_gt = within_tolerance(at_gt, on_pred, spacing, tolerance_mm)
    near_pred = within_tolerance(at_pred, on_gt, spacing, tolerance_mm)
    return float((area_gt[near_gt].sum() + area_pred[near_pred].sum()) / total)
