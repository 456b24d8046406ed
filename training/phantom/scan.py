"""Scan geometry: a scan's voxel grid (`Geometry`, canonical RAS+ axes, mm) and how a case's grid is drawn
(matrix, spacing, z range and field of view) or capped to a size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MATRIX = 512
INPLANE_SPACING_MM = (0.6, 1.0)
SLICE_SPACINGS_MM = (0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 5.0)
SLICE_SPACING_P = (0.08, 0.12, 0.1, 0.1, 0.15, 0.15, 0.15, 0.15)
MAX_SLICES = 300
DOME_MM = 140.0  # nominal z of the right diaphragm dome
# Scan ranges: name: probability, top of the scan relative to the nominal dome (mm), z coverage (mm).
SCAN_RANGES = {"lung bases down": (0.65, (5.0, 50.0), (250.0, 450.0)),  # lung bases to the pelvis
               "upper abdomen": (0.20, (-5.0, 40.0), (150.0, 250.0)),
               "below the dome": (0.15, (-50.0, -10.0), (180.0, 400.0))}  # starting below the liver dome
# Ranges a set may mix in (Mix.chest, Mix.slab, Mix.thin_slab, Mix.liver_cut, Mix.lower_abdomen), drawn from a
# stream of their own: top (mm) and coverage (mm). New ranges go last (Mix.extra_range keeps sets as they were).
EXTRA_RANGES = {"chest": ((80.0, 250.0), (250.0, 600.0)),  # from the upper chest (heart, lungs) down
                "slab": ((-70.0, 10.0), (50.0, 140.0)),  # a short slab through the upper abdomen
                "thin slab": ((-60.0, 0.0), (20.0, 50.0)),  # a few slices below the dome, often above the kidneys
                "liver cut": ((-110.0, -45.0), (150.0, 400.0)),  # from the liver's widest part down
                # below the spleen, through the liver's lowest part or below it (the liver ends 110-210 mm
                # below the dome, the kidneys 190-230 mm), down into the pelvis: an abdomen-pelvis scan's lower part
                "lower abdomen": ((-210.0, -110.0), (150.0, 350.0))}
FOV_CENTRE_MM = ((0.0, 8.0), (0.0, 25.0))  # x: normal (mean, sd); y: uniform (low, high)
ABDOMEN_CENTRE_MM = (0.0, 15.0, 10.0)  # the middle of the organs' region in the patient frame
ORIENTATIONS = (("R", "A", "S"), ("L", "P", "S"), ("L", "A", "S"), ("S", "L", "P"), ("P", "S", "R"))
ORIENTATION_P = (0.3, 0.35, 0.2, 0.1, 0.05)


Axes = tuple[np.ndarray, np.ndarray, np.ndarray]  # world coordinates (mm) of a grid along x, y, z


@dataclass(frozen=True)
class Geometry:
    """A scan's voxel grid in the canonical orientation: shape (x, y, z) voxels, spacing (x, y, z) mm,
    origin the patient-frame position (mm) of voxel (0, 0, 0); the z range and field of view follow."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]

    def axes(self) -> Axes:
        """Patient-frame coordinates (mm, float32) of the voxel centres along x, y and z."""
        return tuple((o + s * np.arange(n)).astype(np.float32)
                     for n, s, o in zip(self.shape, self.spacing, self.origin))

    @property
    def affine(self) -> np.ndarray:
        """The canonical (RAS+) voxel-to-world affine."""
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine


def capped(geometry: Geometry, max_side: int | None) -> Geometry:
    """The same field of view with at most max_side voxels along each axis (spacing scaled up)."""
    if max_side is None:
        return geometry
    shape = tuple(min(n, max_side) for n in geometry.shape)
    spacing = tuple(s * n / m for s, n, m in zip(geometry.spacing, geometry.shape, shape))
    origin = tuple(o + (t - s) / 2 for o, s, t in zip(geometry.origin, geometry.spacing, spacing))
    return Geometry(shape, spacing, origin)


def centred(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Geometry:
    """A grid of the given shape (x, y, z) and spacing (mm) centred on the abdomen (ABDOMEN_CENTRE_MM):
    for tests and benchmarks that need a fixed size."""
    origin = tuple(c - (n - 1) * s / 2 for c, n, s in zip(ABDOMEN_CENTRE_MM, shape, spacing))
    return Geometry(tuple(int(n) for n in shape), tuple(float(s) for s in spacing), origin)


def draw_geometry(rng: np.random.Generator, max_side: int | None = None, scan: str | None = None
                  ) -> tuple[Geometry, str]:
    """A scan's grid and the name of its range: MATRIX x MATRIX pixels of 0.6-1.0 mm, slices of
    0.8-5 mm covering 150-450 mm (at most MAX_SLICES) from the lung bases (most), the upper abdomen
    or below the liver dome down, or the EXTRA_RANGES entry `scan`; then capped to max_side voxels
    per axis, keeping the field of view. A scan of EXTRA_RANGES takes the same draws from rng, so
    the rest of the grid is the one the case has without it."""
    inplane = rng.uniform(*INPLANE_SPACING_MM)
    slice_mm = float(rng.choice(SLICE_SPACINGS_MM, p=SLICE_SPACING_P))
    names = list(SCAN_RANGES)
    drawn = names[rng.choice(len(names), p=[SCAN_RANGES[n][0] for n in names])]
    top, coverage = EXTRA_RANGES[scan] if scan is not None else SCAN_RANGES[drawn][1:]
    top_z = DOME_MM + rng.uniform(*top)
    slices = max(1, min(MAX_SLICES, int(round(rng.uniform(*coverage) / slice_mm))))
    centre = (rng.normal(*FOV_CENTRE_MM[0]), rng.uniform(*FOV_CENTRE_MM[1]))
    half = (MATRIX - 1) / 2 * inplane
    origin = (centre[0] - half, centre[1] - half, top_z - (slices - 1) * slice_mm)
    geometry = Geometry((MATRIX, MATRIX, slices), (inplane, inplane, slice_mm), origin)
    return capped(geometry, max_side), scan or drawn
