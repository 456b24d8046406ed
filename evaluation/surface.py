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

# The marching-cubes triangles of each neighbour code with at most four voxels inside (Lorensen's
# triangulation, vertices at the edge midpoints), summed by kind: counts of the area vectors in
# TRIANGLE_KINDS, in the order given there. A code with more voxels inside has the triangles of its
# complement (255 - code). Derived with scikit-image's marching_cubes(method="lorensen"); tests
# check all 256 codes' areas against DeepMind's lookup table.
TRIANGLE_COUNTS: dict[int, tuple[int, ...]] = {
    0b00000001: (1, 0, 0, 0, 0, 0, 0), 0b00000010: (1, 0, 0, 0, 0, 0, 0), 0b00000011: (0, 0, 0, 0, 0, 0, 2),
    0b00000100: (1, 0, 0, 0, 0, 0, 0), 0b00000101: (0, 0, 0, 0, 0, 2, 0), 0b00000110: (2, 0, 0, 0, 0, 0, 0),
    0b00000111: (3, 1, 0, 0, 0, 0, 0), 0b00001000: (1, 0, 0, 0, 0, 0, 0), 0b00001001: (2, 0, 0, 0, 0, 0, 0),
    0b00001010: (0, 0, 0, 0, 0, 2, 0), 0b00001011: (3, 1, 0, 0, 0, 0, 0), 0b00001100: (0, 0, 0, 0, 0, 0, 2),
    0b00001101: (3, 1, 0, 0, 0, 0, 0), 0b00001110: (3, 1, 0, 0, 0, 0, 0), 0b00001111: (0, 2, 0, 0, 0, 0, 0),
    0b00010000: (1, 0, 0, 0, 0, 0, 0), 0b00010001: (0, 0, 0, 0, 2, 0, 0), 0b00010010: (2, 0, 0, 0, 0, 0, 0),
    0b00010011: (3, 0, 1, 0, 0, 0, 0), 0b00010100: (2, 0, 0, 0, 0, 0, 0), 0b00010101: (3, 0, 0, 1, 0, 0, 0),
    0b00010110: (3, 0, 0, 0, 0, 0, 0), 0b00010111: (6, 0, 0, 0, 0, 0, 0), 0b00011000: (2, 0, 0, 0, 0, 0, 0),
    0b00011001: (1, 0, 0, 0, 2, 0, 0), 0b00011010: (1, 0, 0, 0, 0, 2, 0), 0b00011011: (4, 0, 0, 0, 1, 1, 0),
    0b00011100: (1, 0, 0, 0, 0, 0, 2), 0b00011101: (4, 0, 0, 0, 1, 0, 1), 0b00011110: (4, 1, 0, 0, 0, 0, 0),
    0b00100000: (1, 0, 0, 0, 0, 0, 0), 0b00100001: (2, 0, 0, 0, 0, 0, 0), 0b00100010: (0, 0, 0, 0, 2, 0, 0),
    0b00100011: (3, 0, 1, 0, 0, 0, 0), 0b00100100: (2, 0, 0, 0, 0, 0, 0), 0b00100101: (1, 0, 0, 0, 0, 2, 0),
    0b00100110: (1, 0, 0, 0, 2, 0, 0), 0b00100111: (4, 0, 0, 0, 1, 1, 0), 0b00101000: (2, 0, 0, 0, 0, 0, 0),
    0b00101001: (3, 0, 0, 0, 0, 0, 0), 0b00101010: (3, 0, 0, 1, 0, 0, 0), 0b00101011: (6, 0, 0, 0, 0, 0, 0),
    0b00101100: (1, 0, 0, 0, 0, 0, 2), 0b00101101: (4, 1, 0, 0, 0, 0, 0), 0b00101110: (4, 0, 0, 0, 1, 0, 1),
    0b00110000: (0, 0, 0, 0, 0, 0, 2), 0b00110001: (3, 0, 1, 0, 0, 0, 0), 0b00110010: (3, 0, 1, 0, 0, 0, 0),
    0b00110011: (0, 0, 2, 0, 0, 0, 0), 0b00110100: (1, 0, 0, 0, 0, 0, 2), 0b00110101: (4, 0, 0, 0, 0, 1, 1),
    0b00110110: (4, 0, 1, 0, 0, 0, 0), 0b00111000: (1, 0, 0, 0, 0, 0, 2), 0b00111001: (4, 0, 1, 0, 0, 0, 0),
    0b00111010: (4, 0, 0, 0, 0, 1, 1), 0b00111100: (0, 0, 0, 0, 0, 0, 4), 0b01000000: (1, 0, 0, 0, 0, 0, 0),
    0b01000001: (2, 0, 0, 0, 0, 0, 0), 0b01000010: (2, 0, 0, 0, 0, 0, 0), 0b01000011: (1, 0, 0, 0, 0, 0, 2),
    0b01000100: (0, 0, 0, 0, 2, 0, 0), 0b01000101: (3, 0, 0, 1, 0, 0, 0), 0b01000110: (1, 0, 0, 0, 2, 0, 0),
    0b01000111: (4, 0, 0, 0, 1, 0, 1), 0b01001000: (2, 0, 0, 0, 0, 0, 0), 0b01001001: (3, 0, 0, 0, 0, 0, 0),
    0b01001010: (1, 0, 0, 0, 0, 2, 0), 0b01001011: (4, 1, 0, 0, 0, 0, 0), 0b01001100: (3, 0, 1, 0, 0, 0, 0),
    0b01001101: (6, 0, 0, 0, 0, 0, 0), 0b01001110: (4, 0, 0, 0, 1, 1, 0), 0b01010000: (0, 0, 0, 0, 0, 2, 0),
    0b01010001: (3, 0, 0, 1, 0, 0, 0), 0b01010010: (1, 0, 0, 0, 0, 2, 0), 0b01010011: (4, 0, 0, 0, 0, 1, 1),
    0b01010100: (3, 0, 0, 1, 0, 0, 0), 0b01010101: (0, 0, 0, 2, 0, 0, 0), 0b01010110: (4, 0, 0, 1, 0, 0, 0),
    0b01011000: (1, 0, 0, 0, 0, 2, 0), 0b01011001: (4, 0, 0, 1, 0, 0, 0), 0b01011010: (0, 0, 0, 0, 0, 4, 0),
    0b01011100: (4, 0, 0, 0, 0, 1, 1), 0b01100000: (2, 0, 0, 0, 0, 0, 0), 0b01100001: (3, 0, 0, 0, 0, 0, 0),
    0b01100010: (1, 0, 0, 0, 2, 0, 0), 0b01100011: (4, 0, 1, 0, 0, 0, 0), 0b01100100: (1, 0, 0, 0, 2, 0, 0),
    0b01100101: (4, 0, 0, 1, 0, 0, 0), 0b01100110: (0, 0, 0, 0, 4, 0, 0), 0b01101000: (3, 0, 0, 0, 0, 0, 0),
    0b01101001: (4, 0, 0, 0, 0, 0, 0), 0b01101010: (4, 0, 0, 1, 0, 0, 0), 0b01101100: (4, 0, 1, 0, 0, 0, 0),
    0b01110000: (3, 1, 0, 0, 0, 0, 0), 0b01110001: (6, 0, 0, 0, 0, 0, 0), 0b01110010: (4, 0, 0, 0, 1, 1, 0),
    0b01110100: (4, 0, 0, 0, 1, 0, 1), 0b01111000: (4, 1, 0, 0, 0, 0, 0), 0b10000000: (1, 0, 0, 0, 0, 0, 0),
    0b10000001: (2, 0, 0, 0, 0, 0, 0), 0b10000010: (2, 0, 0, 0, 0, 0, 0), 0b10000011: (1, 0, 0, 0, 0, 0, 2),
    0b10000100: (2, 0, 0, 0, 0, 0, 0), 0b10000101: (1, 0, 0, 0, 0, 2, 0), 0b10000110: (3, 0, 0, 0, 0, 0, 0),
    0b10000111: (4, 1, 0, 0, 0, 0, 0), 0b10001000: (0, 0, 0, 0, 2, 0, 0), 0b10001001: (1, 0, 0, 0, 2, 0, 0),
    0b10001010: (3, 0, 0, 1, 0, 0, 0), 0b10001011: (4, 0, 0, 0, 1, 0, 1), 0b10001100: (3, 0, 1, 0, 0, 0, 0),
    0b10001101: (4, 0, 0, 0, 1, 1, 0), 0b10001110: (6, 0, 0, 0, 0, 0, 0), 0b10010000: (2, 0, 0, 0, 0, 0, 0),
    0b10010001: (1, 0, 0, 0, 2, 0, 0), 0b10010010: (3, 0, 0, 0, 0, 0, 0), 0b10010011: (4, 0, 1, 0, 0, 0, 0),
    0b10010100: (3, 0, 0, 0, 0, 0, 0), 0b10010101: (4, 0, 0, 1, 0, 0, 0), 0b10010110: (4, 0, 0, 0, 0, 0, 0),
    0b10011000: (1, 0, 0, 0, 2, 0, 0), 0b10011001: (0, 0, 0, 0, 4, 0, 0), 0b10011010: (4, 0, 0, 1, 0, 0, 0),
    0b10011100: (4, 0, 1, 0, 0, 0, 0), 0b10100000: (0, 0, 0, 0, 0, 2, 0), 0b10100001: (1, 0, 0, 0, 0, 2, 0),
    0b10100010: (3, 0, 0, 1, 0, 0, 0), 0b10100011: (4, 0, 0, 0, 0, 1, 1), 0b10100100: (1, 0, 0, 0, 0, 2, 0),
    0b10100101: (0, 0, 0, 0, 0, 4, 0), 0b10100110: (4, 0, 0, 1, 0, 0, 0), 0b10101000: (3, 0, 0, 1, 0, 0, 0),
    0b10101001: (4, 0, 0, 1, 0, 0, 0), 0b10101010: (0, 0, 0, 2, 0, 0, 0), 0b10101100: (4, 0, 0, 0, 0, 1, 1),
    0b10110000: (3, 1, 0, 0, 0, 0, 0), 0b10110001: (4, 0, 0, 0, 1, 1, 0), 0b10110010: (6, 0, 0, 0, 0, 0, 0),
    0b10110100: (4, 1, 0, 0, 0, 0, 0), 0b10111000: (4, 0, 0, 0, 1, 0, 1), 0b11000000: (0, 0, 0, 0, 0, 0, 2),
    0b11000001: (1, 0, 0, 0, 0, 0, 2), 0b11000010: (1, 0, 0, 0, 0, 0, 2), 0b11000011: (0, 0, 0, 0, 0, 0, 4),
    0b11000100: (3, 0, 1, 0, 0, 0, 0), 0b11000101: (4, 0, 0, 0, 0, 1, 1), 0b11000110: (4, 0, 1, 0, 0, 0, 0),
    0b11001000: (3, 0, 1, 0, 0, 0, 0), 0b11001001: (4, 0, 1, 0, 0, 0, 0), 0b11001010: (4, 0, 0, 0, 0, 1, 1),
    0b11001100: (0, 0, 2, 0, 0, 0, 0), 0b11010000: (3, 1, 0, 0, 0, 0, 0), 0b11010001: (4, 0, 0, 0, 1, 0, 1),
    0b11010010: (4, 1, 0, 0, 0, 0, 0), 0b11010100: (6, 0, 0, 0, 0, 0, 0), 0b11011000: (4, 0, 0, 0, 1, 1, 0),
    0b11100000: (3, 1, 0, 0, 0, 0, 0), 0b11100001: (4, 1, 0, 0, 0, 0, 0), 0b11100010: (4, 0, 0, 0, 1, 0, 1),
    0b11100100: (4, 0, 0, 0, 1, 1, 0), 0b11101000: (6, 0, 0, 0, 0, 0, 0), 0b11110000: (0, 2, 0, 0, 0, 0, 0),
}
# Area vectors (voxel units, i j k; up to sign, which an area does not need): a corner cut, half a
# face across i, j or k, and half a diagonal plane along i, j or k.
TRIANGLE_KINDS = np.array([(1, 1, 1), (4, 0, 0), (0, 4, 0), (0, 0, 4), (0, 2, 2), (2, 0, 2), (2, 2, 0)]) / 8


@lru_cache(maxsize=64)
def surfel_area_table(spacing: Spacing) -> np.ndarray:
    """Area in mm^2 of the surfel of each of the 256 neighbour codes at this spacing (mm)."""
    s0, s1, s2 = (np.float64(s) for s in spacing)
    kinds = TRIANGLE_KINDS * np.array([s1 * s2, s0 * s2, s0 * s1])
    kind_areas = np.sqrt(np.einsum("ij,ij->i", kinds, kinds))
    counts = np.zeros((256, len(TRIANGLE_KINDS)))
    for code, n in TRIANGLE_COUNTS.items():
        counts[code] = counts[255 - code] = n
    return counts @ kind_areas


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
    # the exact test is done below on the candidates' recomputed distances.
    bound = tolerance_mm * (1 + 1e-9) + 1e-9
    _, nearest = tree.query(points * scale, k=1, distance_upper_bound=bound)
    found = nearest < len(targets)
    within = np.zeros(len(points), dtype=bool)
    within[found] = edt_distance(points[found] - targets[nearest[found]], spacing) <= tolerance_mm
    # A near tie: the tree's nearest (in its own arithmetic) is just beyond the tolerance, while
    # another candidate inside the bound may be exactly at it. Those few points check them all.
    for i in np.flatnonzero(found & ~within):
        candidates = targets[tree.query_ball_point(points[i] * scale, r=bound)]
        within[i] = bool((edt_distance(candidates - points[i], spacing) <= tolerance_mm).any())
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
    if gt.dtype != bool or pred.dtype != bool:
        raise ValueError(f"masks must be bool arrays, not {gt.dtype} and {pred.dtype}")
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance must be a finite number of mm, 0 or more, not {tolerance_mm}")
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
