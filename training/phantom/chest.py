"""The chest above the abdomen: the diaphragm's domes, the lung bases, mediastinal fat and the
heart, and above CHEST_FROM_MM the upper ribs, airways, great vessels and the lungs' vessels.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from training.phantom.atlas import (
    BRONCHI,
    CHEST_FROM_MM,
    GREAT_VESSELS,
    LUNG_VESSEL_RADIUS_MM,
    LUNG_VESSEL_STEP_MM,
    TRACHEA,
    UPPER_RIB_LEVEL,
    UPPER_RIBS,
)
from training.phantom.body import Body, cavity_field
from training.phantom.fields import (
    Part,
    SmoothField,
    box_around,
    draw_field,
    ellipse,
    ellipsoid,
    field_on,
    open_axes,
    rotated,
    rotation_matrix,
    spline_tube,
    tube_part,
)
from training.phantom.scan import DOME_MM, Axes
from training.phantom.skeleton import Spine, only_above, rib_parts, rib_tubes


@dataclass(frozen=True)
class Diaphragm:
    """Three paraboloid caps: the right and left domes and the central tendon under the heart, each
    (x, y, z) of its apex (mm); fall: mm the domes fall over 70 mm from their apex (sideways and
    backwards; they fall less towards the front, where the diaphragm meets the costal margin);
    nowhere lower than floor (mm), the bottom of the posterior recesses."""

    right: tuple[float, float, float]
    left: tuple[float, float, float]
    centre: tuple[float, float, float]
    fall: float
    floor: float


def diaphragm_z(d: Diaphragm, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Height (mm) of the diaphragm above (x, y)."""
    def cap(apex: tuple[float, float, float], wx: float, wy: float) -> np.ndarray:
        wy = np.where(y > apex[1], 1.6 * wy, wy)
        return apex[2] - d.fall * (((x - apex[0]) / wx) ** 2 + ((y - apex[1]) / wy) ** 2)
    domes = np.maximum(np.maximum(cap(d.right, 70.0, 70.0), cap(d.left, 70.0, 70.0)), cap(d.centre, 90.0, 60.0))
    return np.maximum(domes, d.floor)


def draw_diaphragm(rng: np.random.Generator, spine: Spine) -> Diaphragm:
    """Domes at a random height (breathing), the left 10-25 mm below the right; the posterior
    recesses down to about T12/L1."""
    right = DOME_MM + rng.normal(0.0, 12.0)
    return Diaphragm((70.0 + rng.normal(0, 8), rng.normal(0, 8), right),
                     (-70.0 + rng.normal(0, 8), rng.normal(0, 8), right - rng.uniform(10.0, 25.0)),
                     (-5.0, 40.0, right - rng.uniform(20.0, 35.0)), rng.uniform(60.0, 80.0),
                     spine.z0 + rng.uniform(0.7, 1.5) * spine.pitch)


def _lung_field(axes: Axes, body: Body, diaphragm: Diaphragm) -> np.ndarray:
    """The cavity above the diaphragm (mm)."""
    x, y, z = open_axes(axes)
    return np.maximum(cavity_field(axes, body), diaphragm_z(diaphragm, x, y) - z)


def _mediastinum_field(axes: Axes, diaphragm: Diaphragm) -> np.ndarray:
    """The mediastinum above the diaphragm (mm): between the lungs, in front of the spine; half as
    wide 60 mm above CHEST_FROM_MM, above the heart."""
    x, y, z = open_axes(axes)
    width = 75.0 - 37.0 * np.clip((z - CHEST_FROM_MM) / 60.0, 0.0, 1.0)
    return np.maximum(ellipse(x + 15.0, y - 30.0, width, 70.0), diaphragm_z(diaphragm, x, y) - z)


def _heart_field(axes: Axes, centre: np.ndarray, rotation: np.ndarray, radii: np.ndarray,
                 diaphragm: Diaphragm) -> np.ndarray:
    """The heart (mm): an ellipsoid resting on the diaphragm."""
    x, y, z = open_axes(axes)
    q = rotated(axes, centre, rotation)
    return np.maximum(ellipsoid(q, (0.0, 0.0, 0.0), radii), diaphragm_z(diaphragm, x, y) + 1.0 - z)


def chest_parts(rng: np.random.Generator, body: Body, diaphragm: Diaphragm) -> list[Part]:
    """Lung bases (with the diaphragm's muscle under them), mediastinal fat and the heart."""
    lungs = Part(partial(_lung_field, body=body, diaphragm=diaphragm),
                 ((-body.a, body.yc - body.b, diaphragm.floor), (body.a, body.yc + body.b, 600.0)),
                 ((0.0, "muscle"), (4.0, "lung")), resolution=(2.0, 2.0, 2.0))
    mediastinum = Part(partial(_mediastinum_field, diaphragm=diaphragm),
                       ((-90.0, -40.0, diaphragm.centre[2] - 60), (60.0, 100.0, 600.0)), ((0.0, "fat"),))
    centre = np.array([-25.0, 45.0, diaphragm.centre[2] + 45.0]) + rng.normal(0.0, 5.0, 3)
    radii = np.array([65.0, 50.0, 50.0]) * rng.uniform(0.9, 1.1)
    rotation = rotation_matrix((0.0, 0.0, np.radians(-30.0 + rng.normal(0.0, 8.0))))
    heart = Part(partial(_heart_field, centre=centre, rotation=rotation, radii=radii, diaphragm=diaphragm),
                 box_around(centre, radii.max() + 5.0), ((0.0, "myocardium"), (9.0, "blood")), label=0)
    return [lungs, mediastinum, heart]


def curve_tubes(rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], step: float) -> dict:
    """Two smooth random fields (features about step mm) over the box lo..hi and the mm per unit of
    field that makes tubes along their common zero curves (curve_tubes_field's a, b, length)."""
    return {"a": draw_field(rng, lo, hi, step), "b": draw_field(rng, lo, hi, step), "length": np.sqrt(2.0) * step / 1.3}


def curve_tubes_field(axes: Axes, a: SmoothField, b: SmoothField, length: float, radius: float) -> np.ndarray:
    """Tubes (mm) of the given radius along the curves where the two smooth fields are both zero
    (length: mm per unit of field): small-bowel loops, vessels in the lungs."""
    return np.sqrt(field_on(a, axes) ** 2 + field_on(b, axes) ** 2) * length - radius


def upper_chest_parts(rng: np.random.Generator, body: Body, spine: Spine) -> list[Part]:
    """Above CHEST_FROM_MM only: the upper ribs, trachea and main bronchi, great vessels and the
    vessels in the lungs (drawn after everything else, so the rest of a patient does not change)."""
    floor = CHEST_FROM_MM
    parts = rib_parts(rib_tubes(body, spine, rng, UPPER_RIBS, UPPER_RIB_LEVEL), floor)
    shift = rng.normal(0.0, 5.0, 3)
    points, radius = TRACHEA
    airway = [spline_tube(np.add(points, shift), [radius] * len(points), step=5.0)]
    airway += [spline_tube(np.add(p, shift), [radius * 0.8, radius * 0.65, radius * 0.5], step=5.0) for p in BRONCHI]
    parts.append(only_above(tube_part(airway, ((0.0, "gut wall"), (2.0, "gas"))), floor))
    carina = np.add(points[-1], shift)
    for vessel, r in GREAT_VESSELS:
        tube = spline_tube(carina + np.asarray(vessel) + rng.normal(0.0, 4.0, (len(vessel), 3)),
                           [r * rng.uniform(0.85, 1.15)] * len(vessel), step=5.0)
        parts.append(only_above(tube_part([tube], ((0.0, "blood"),)), floor))
    lo, hi = (-body.a, body.yc - body.b, floor), (body.a, body.yc + body.b, 600.0)
    step = rng.uniform(*LUNG_VESSEL_STEP_MM)
    vessels = partial(curve_tubes_field, **curve_tubes(rng, lo, hi, step), radius=rng.uniform(*LUNG_VESSEL_RADIUS_MM))
    parts.append(Part(vessels, (lo, hi), ((0.0, "blood"),), resolution=(1.5, 1.5, 1.5), into=("lung",)))
    return parts
