"""The muscles of the back and the posterior abdominal wall: erector spinae, psoas and quadratus
lumborum, as columns along the spine.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from training.phantom.body import Body, wall_field
from training.phantom.fields import Part, ellipse, open_axes
from training.phantom.scan import Axes
from training.phantom.skeleton import Spine, spine_y


@dataclass(frozen=True)
class Column:
    """A structure along z with an elliptic cross-section: at heights z (mm, increasing) its centre
    (x, y) and half-axes (rx, ry), linear in between; nothing beyond the first and last z."""

    z: tuple[float, ...]
    x: tuple[float, ...]
    y: tuple[float, ...]
    rx: tuple[float, ...]
    ry: tuple[float, ...]


def _column_field(axes: Axes, column: Column) -> np.ndarray:
    """Signed distance (mm) to a column."""
    x, y, _ = open_axes(axes)
    z = axes[2]
    cx, cy, rx, ry = (np.interp(z, column.z, v).astype(np.float32)[None, None, :]
                      for v in (column.x, column.y, column.rx, column.ry))
    ends = np.maximum(column.z[0] - z, z - column.z[-1])[None, None, :]
    return np.maximum(ellipse(x - cx, y - cy, rx, ry), ends)


def _column_part(column: Column, layers: tuple[tuple[float, str], ...], **kwargs) -> Part:
    """A part made of one column."""
    lo = (min(column.x) - max(column.rx) - 2, min(column.y) - max(column.ry) - 2, column.z[0])
    hi = (max(column.x) + max(column.rx) + 2, max(column.y) + max(column.ry) + 2, column.z[-1])
    return Part(partial(_column_field, column=column), (lo, hi), layers, resolution=(1.5, 1.5, 4.0), **kwargs)


def _paraspinal_field(axes: Axes, spine: Spine, body: Body, size: float) -> np.ndarray:
    """The erector spinae and multifidus (mm): one mass behind the spine, widest in the lumbar
    region, inside the muscle wall."""
    x, y, _ = open_axes(axes)
    z = axes[2]
    levels = spine.z0 + spine.pitch * np.array([-6.0, -2.0, 0.0, 4.0])
    width, depth = ((size * np.interp(z, levels, v)).astype(np.float32)[None, None, :]
                    for v in ((42.0, 55.0, 52.0, 44.0), (34.0, 38.0, 36.0, 30.0)))
    ys = spine_y(spine, z).astype(np.float32)[None, None, :]
    return np.maximum(ellipse(x, y - ys + 22.0 + depth, width, depth), wall_field(axes, body))


def muscle_parts(rng: np.random.Generator, spine: Spine, body: Body) -> list[Part]:
    """Erector spinae, and on both sides psoas (growing towards the pelvis) and quadratus lumborum."""
    z0, p = spine.z0, spine.pitch
    size = rng.uniform(0.8, 1.2)
    parts = [Part(partial(_paraspinal_field, spine=spine, body=body, size=size),
                  ((-80.0, -160.0, -600.0), (80.0, 20.0, 600.0)), ((0.0, "muscle"),), resolution=(1.5, 1.5, 4.0))]
    for side in (1.0, -1.0):
        zs = (z0 + 1.5 * p, z0, z0 - 2.2 * p, z0 - 4.5 * p, z0 - 7.0 * p)
        ys = [float(spine_y(spine, z)) for z in zs]
        psoas = Column(zs[::-1], tuple(side * v for v in (30.0, 38.0, 46.0, 54.0, 60.0))[::-1],
                       tuple(y + d for y, d in zip(ys, (-2.0, 0.0, 3.0, 10.0, 18.0)))[::-1],
                       tuple(size * v for v in (6.0, 13.0, 19.0, 23.0, 21.0))[::-1],
                       tuple(size * v for v in (5.0, 11.0, 16.0, 20.0, 20.0))[::-1])
        zq = (z0 - 3.3 * p, z0 - 0.5 * p, z0 + 1.4 * p)
        quadratus = Column(zq, (side * 70.0, side * 65.0, side * 55.0), (-42.0, -40.0, -35.0),
                           (14.0 * size, 16.0 * size, 8.0), (8.0, 9.0, 6.0))
        parts += [_column_part(m, ((0.0, "muscle"),)) for m in (quadratus, psoas)]
    return parts
