"""The gut: oesophagus, stomach with an air-fluid level, duodenal C-loop, colon with haustra and
faeces, and small bowel filling the fat that is left.
"""
from __future__ import annotations

from functools import partial

import numpy as np

from training.phantom.atlas import COLON, GUT_TUBE, GUT_WALL_MM, RETROPERITONEUM, STOMACH_POINTS
from training.phantom.body import Body
from training.phantom.chest import curve_tubes, curve_tubes_field
from training.phantom.fields import Part, SmoothField, Tube, draw_field, field_on, open_axes, spline_tube, tube_box, tube_part
from training.phantom.priors import GUT_SPACE
from training.phantom.scan import Axes


def _gas_field(axes: Axes, field: SmoothField, threshold: float, level: float, gravity_mm: float) -> np.ndarray:
    """Where gas collects in the gut (negative): a smooth random field above a threshold, more
    towards the front (y above level; the patient lies on the back)."""
    y = open_axes(axes)[1]
    return threshold - field_on(field, axes) - (y - level) / gravity_mm


def _bowel_field(axes: Axes, a: SmoothField, b: SmoothField, length: float, radius: float,
                 top: float) -> np.ndarray:
    """Small-bowel loops (mm): curve_tubes_field below z = top - x / 4."""
    x, _, z = open_axes(axes)
    return np.maximum(curve_tubes_field(axes, a, b, length, radius), z - (top - x / 4.0))


def gut_parts(rng: np.random.Generator, body: Body) -> list[Part]:
    """Oesophagus, stomach (air-fluid level), duodenum, colon (haustra, faeces, gas) and small bowel,
    each only in the fat left over by the organs."""
    wall = ((0.0, "gut wall"), (GUT_WALL_MM, "gastric content"))
    points = np.array([p for p, _ in GUT_TUBE]) + rng.normal(0.0, 4.0, (len(GUT_TUBE), 3))
    radii = np.array([r for _, r in GUT_TUBE])
    radii[STOMACH_POINTS] *= rng.uniform(0.7, 1.25)
    stomach = spline_tube(points, radii, step=4.0)
    stomach_box = tube_box([stomach])
    level = rng.uniform(20.0, 75.0)
    parts = [tube_part([stomach], wall, into=GUT_SPACE),
             Part(partial(_level_field, level=level), stomach_box, ((0.0, "gas"),), resolution=(50.0, 0.5, 50.0),
                  into=("gastric content",))]

    cpoints = np.array([p for p, _ in COLON]) + rng.normal(0.0, 5.0, (len(COLON), 3))
    colon = spline_tube(cpoints, [r for _, r in COLON], step=3.0)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(colon.points, axis=0), axis=1))])
    haustra = 1.0 + 0.12 * np.cos(2 * np.pi * arc / rng.uniform(22.0, 32.0))
    colon = Tube(colon.points, colon.radii * haustra * rng.uniform(0.8, 1.15))
    colon_box = tube_box([colon])
    colon_gas = draw_field(rng, *colon_box, 18.0)
    parts += [tube_part([colon], ((0.0, "gut wall"), (GUT_WALL_MM, "faeces")), into=GUT_SPACE),
              Part(partial(_gas_field, field=colon_gas, threshold=rng.uniform(-0.3, 0.8), level=30.0,
                           gravity_mm=60.0), colon_box, ((0.0, "gas"),), into=("faeces",))]

    lo = (-body.a, min(RETROPERITONEUM[1]) - 40.0 - 0.3 * body.b, -420.0)
    hi = (body.a, body.yc + body.b, 60.0)
    step = rng.uniform(10.0, 13.0)
    loops = partial(_bowel_field, **curve_tubes(rng, lo, hi, step), radius=rng.uniform(9.0, 13.0),
                    top=rng.uniform(0.0, 25.0))
    bowel_gas = draw_field(rng, lo, hi, 15.0)
    parts += [Part(loops, (lo, hi), ((0.0, "gut wall"), (GUT_WALL_MM, "bowel fluid")), into=("visceral fat",)),
              Part(partial(_gas_field, field=bowel_gas, threshold=rng.uniform(0.8, 1.8), level=40.0,
                           gravity_mm=80.0), (lo, hi), ((0.0, "gas"),), into=("bowel fluid",))]
    return parts


def _level_field(axes: Axes, level: float) -> np.ndarray:
    """An air-fluid level (mm): negative in front of y = level (the patient lies on the back)."""
    return level - open_axes(axes)[1]
