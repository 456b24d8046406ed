"""Signed distance-like fields (mm, negative inside) and how structures become a tissue map: smooth
random fields, ellipsoids and smooth unions, parts evaluated inside their boxes on a grid no finer
than they need, painting in anatomical order, and tubes along splines.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy.interpolate import CubicSpline

from training.phantom.priors import TISSUE
from training.phantom.scan import Axes, Geometry

Field = Callable[[Axes], np.ndarray]  # signed distance-like field (mm, negative inside) on a grid


BIG_MM = 1000.0  # the field value far from a structure


def open_axes(axes: Axes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The axes as broadcastable arrays of shapes (nx, 1, 1), (1, ny, 1), (1, 1, nz)."""
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


@dataclass(frozen=True)
class SmoothField:
    """A smooth random field of unit variance: random coefficients (..., cx, cy, cz) on control points
    lo + step * index (mm), interpolated by a Gaussian kernel of width step (separable)."""

    lo: tuple[float, float, float]
    step: float
    coef: np.ndarray


def draw_field(rng: np.random.Generator, lo: Sequence[float], hi: Sequence[float], step: float,
               components: int = 0) -> SmoothField:
    """A smooth random field over the box lo..hi (mm) with control points every step mm."""
    n = tuple(int(np.ceil((h - low) / step)) + 1 for low, h in zip(lo, hi))
    shape = (components, *n) if components else n
    return SmoothField(tuple(float(v) for v in lo), float(step), rng.standard_normal(shape, dtype=np.float32))


def _basis(coords: np.ndarray, lo: float, step: float, n: int) -> np.ndarray:
    """Kernel weights (len(coords), n) of the control points, rows of unit norm (unit variance), float64."""
    c = (np.clip(coords.astype(np.float64), lo, lo + (n - 1) * step) - lo) / step
    w = np.exp(-0.5 * (c[:, None] - np.arange(n)[None, :]) ** 2)
    return w / np.sqrt((w ** 2).sum(axis=1, keepdims=True))


FIELD_CHUNK = 1 << 23  # field_on's float64 values held at once (64 MB)


def field_on(field: SmoothField, axes: Axes) -> np.ndarray:
    """The field on a grid: shape (..., nx, ny, nz), float32. Summed in float64, a few x planes at a
    time, and rounded once to float32, so that a phantom is the same bit for bit on any CPU: BLAS
    kernels sum in an order that depends on the CPU, which shows in a float32 sum's last bits but
    practically never survives rounding a float64 one to float32."""
    if field.coef.ndim == 4:
        return np.stack([field_on(SmoothField(field.lo, field.step, c), axes) for c in field.coef])
    wx, wy, wz = (_basis(a, lo, field.step, n) for a, lo, n in zip(axes, field.lo, field.coef.shape))
    coef = field.coef.astype(np.float64)
    out = np.empty((len(wx), len(wy), len(wz)), np.float32)
    rows = max(1, FIELD_CHUNK // max(1, len(wy) * len(wz)))
    for i in range(0, len(wx), rows):
        part = np.tensordot(wx[i:i + rows], coef, axes=([1], [0]))  # (rows, cy, cz)
        part = np.tensordot(part, wy, axes=([1], [1]))  # (rows, cz, ny)
        out[i:i + rows] = np.tensordot(part, wz, axes=([1], [1]))  # (rows, ny, nz), rounded to float32
    return out


def ellipsoid(q: Sequence[np.ndarray], centre: Sequence[float], radii: Sequence[float],
               taper: float = 0.0) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid in local coordinates q; taper thins its
    second and third half-axes linearly towards -q[0] (0: none, 1: to nothing at -radii[0])."""
    d = [qi - ci for qi, ci in zip(q, centre)]
    if taper:
        thin = np.clip(1.0 + taper * d[0] / radii[0], 0.25, 1.5)
        d = [d[0], d[1] / thin, d[2] / thin]
    k0 = np.sqrt(sum((di / r) ** 2 for di, r in zip(d, radii)))
    k1 = np.sqrt(sum((di / r ** 2) ** 2 for di, r in zip(d, radii)))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def ellipse(dx: np.ndarray, dy: np.ndarray, rx: np.ndarray | float, ry: np.ndarray | float) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipse centred at the origin."""
    k0 = np.sqrt((dx / rx) ** 2 + (dy / ry) ** 2)
    k1 = np.sqrt((dx / rx ** 2) ** 2 + (dy / ry ** 2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth union of two fields, blending over k mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def smax(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Smooth intersection of two fields, blending over k mm."""
    return -smin(-a, -b, k)


def rotation_matrix(angles: Sequence[float]) -> np.ndarray:
    """Rotation matrix of angles (rad) about x, then y, then z."""
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def basis_from(first: Sequence[float], third: Sequence[float]) -> np.ndarray:
    """Rotation (columns: local axes in the world) whose third axis is `third` and whose first is
    `first` made orthogonal to it."""
    c = np.asarray(third, float) / np.linalg.norm(third)
    a = np.asarray(first, float) - np.dot(first, c) * c
    a /= np.linalg.norm(a)
    return np.stack([a, np.cross(c, a), c], axis=1)


def rotated(axes: Axes, centre: Sequence[float], rotation: np.ndarray) -> tuple[np.ndarray, ...]:
    """Local coordinates (mm) of the grid points in a frame with this centre and rotation."""
    p = [g - c for g, c in zip(open_axes(axes), centre)]
    return tuple(p[0] * rotation[0, i] + p[1] * rotation[1, i] + p[2] * rotation[2, i] for i in range(3))


# ------------------------------------------------------------------------------------ parts and painting

@dataclass(frozen=True)
class Part:
    """One structure to paint: its field, its world bounding box (lo, hi mm), the grid resolution
    (mm per axis) it needs, and what it paints. Voxels with field < -depth get each layer's tissue
    (in order); `label` is set where field < 0 (None: labels untouched); `into` limits painting to
    voxels of those tissues and `within` to voxels of that label; `lesion` counts it as a lesion."""

    field: Field
    box: tuple[tuple[float, float, float], tuple[float, float, float]]
    layers: tuple[tuple[float, str], ...]
    label: int | None = None
    resolution: tuple[float, float, float] = (2.0, 2.0, 2.0)
    into: tuple[str, ...] = ()
    within: int | None = None
    lesion: bool = False


def box_around(centre: Sequence[float], reach: Sequence[float] | float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The box centre +- reach (mm)."""
    c, r = np.asarray(centre, float), np.broadcast_to(np.asarray(reach, float), (3,))
    return tuple(c - r), tuple(c + r)


def _block(axes: Axes, box: tuple) -> tuple[slice, slice, slice] | None:
    """The voxel index ranges of the grid inside the box; None if it misses the grid."""
    block = []
    for a, lo, hi in zip(axes, *box):
        i, j = int(np.searchsorted(a, lo)), int(np.searchsorted(a, hi, side="right"))
        if j <= i:
            return None
        block.append(slice(i, j))
    return tuple(block)


def _grid_axis(target: np.ndarray, spacing: float, resolution: float) -> np.ndarray:
    """The axis to evaluate a field on: the target axis, or a coarser one spanning it (resolution mm)."""
    if spacing >= 0.99 * resolution or len(target) < 3:
        return target
    n = int(np.ceil((target[-1] - target[0]) / resolution)) + 1
    return np.linspace(target[0], target[-1], n, dtype=np.float32)


def _resample(f: np.ndarray, src: np.ndarray, dst: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of f along one axis from coordinates src (uniform, spanning dst) to dst."""
    pos = (dst.astype(np.float64) - src[0]) * ((len(src) - 1) / (float(src[-1]) - float(src[0])))
    i = np.minimum(pos.astype(np.intp), len(src) - 2)
    w = (pos - i).astype(np.float32).reshape([-1 if k == axis else 1 for k in range(3)])
    lo = np.take(f, i, axis=axis)
    hi = np.take(f, i + 1, axis=axis)
    hi -= lo
    hi *= w
    hi += lo
    return hi


def _evaluate(part: Part, target: Axes, spacing: Sequence[float]) -> np.ndarray:
    """The part's field on the target grid, computed on its own (coarser) grid and upsampled."""
    grid = tuple(_grid_axis(t, s, r) for t, s, r in zip(target, spacing, part.resolution))
    f = np.broadcast_to(part.field(grid), tuple(len(g) for g in grid))
    growth = [len(t) / len(g) for t, g in zip(target, grid)]
    for axis in sorted(range(3), key=growth.__getitem__):
        if grid[axis] is not target[axis]:
            f = _resample(f, grid[axis], target[axis], axis)
    return f


def tissue_mask(names: Sequence[str]) -> np.ndarray:
    """A lookup table (256,) that is True for the codes of these tissues."""
    lut = np.zeros(256, bool)
    lut[[TISSUE[n] for n in names]] = True
    return lut


def _paint(tissue: np.ndarray, labels: np.ndarray, f: np.ndarray, part: Part) -> bool:
    """Paint one part into tissue and label blocks (in place); whether it painted anything."""
    inside = f < 0
    if part.into:
        inside &= tissue_mask(part.into)[tissue]
    if part.within is not None:
        inside &= labels == part.within
    for depth, name in part.layers:
        tissue[inside & (f < -depth) if depth else inside] = TISSUE[name]
    if part.label is not None:
        labels[inside] = part.label
    return bool(part.lesion and inside.any())


def render(parts: Sequence[Part], geometry: Geometry) -> tuple[np.ndarray, np.ndarray, int]:
    """Tissue codes and labels (uint8, x y z) of the parts painted in order on the geometry's grid,
    and the number of lesions that show in it."""
    axes = geometry.axes()
    tissue = np.full(geometry.shape, TISSUE["air"], np.uint8)
    labels = np.zeros(geometry.shape, np.uint8)
    lesions = 0
    for part in parts:
        block = _block(axes, part.box)
        if block is not None:
            f = _evaluate(part, tuple(a[s] for a, s in zip(axes, block)), geometry.spacing)
            lesions += _paint(tissue[block], labels[block], f, part)
    return tissue, labels, lesions


# ------------------------------------------------------------------------------------ tubes

@dataclass(frozen=True)
class Tube:
    """A tube along a polyline: points (n, 3) mm, radius (n,) mm at each, and a stretch of its cross
    section along the world axes (the half-axis along axis k is radius * stretch[k])."""

    points: np.ndarray
    radii: np.ndarray
    stretch: tuple[float, float, float] = (1.0, 1.0, 1.0)


def spline_tube(points: Sequence[Sequence[float]], radii: Sequence[float], step: float = 4.0,
                stretch: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Tube:
    """A tube along the cubic spline through the points (mm), sampled about every step mm."""
    p = np.asarray(points, float)
    s = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(p, axis=0), axis=1))])
    t = np.linspace(0.0, s[-1], max(int(s[-1] / step), 1) + 1)
    curve = CubicSpline(s, p, axis=0)(t) if len(p) > 2 else p[0] + (p[-1] - p[0]) * (t / s[-1])[:, None]
    return Tube(curve, np.interp(t, s, radii), stretch)


def _capsule(axes: Axes, a: np.ndarray, b: np.ndarray, ra: float, rb: float, stretch: np.ndarray) -> np.ndarray:
    """Signed distance (stretched mm) to the segment a-b with radius ra at a and rb at b."""
    x, y, z = ((g - c) / s for g, c, s in zip(open_axes(axes), a, stretch))
    e = (b - a) / stretch
    t = np.clip((x * e[0] + y * e[1] + z * e[2]) / max(float(e @ e), 1e-9), 0.0, 1.0)
    return np.sqrt((x - t * e[0]) ** 2 + (y - t * e[1]) ** 2 + (z - t * e[2]) ** 2) - (ra + t * (rb - ra))


def tube_field(axes: Axes, tubes: Sequence[Tube], pad: float = 0.0) -> np.ndarray:
    """Distance to the nearest of the tubes, evaluated segment by segment within each one's box;
    BIG_MM beyond pad mm (plus two grid steps) outside them."""
    out = np.full(tuple(len(a) for a in axes), BIG_MM, np.float32)
    step = max(float(a[1] - a[0]) if len(a) > 1 else 0.0 for a in axes)
    for tube in tubes:
        stretch = np.asarray(tube.stretch)
        for k in range(len(tube.points) - 1):
            a, b = tube.points[k], tube.points[k + 1]
            reach = max(tube.radii[k], tube.radii[k + 1]) * stretch + pad + 2 * step
            block = _block(axes, (np.minimum(a, b) - reach, np.maximum(a, b) + reach))
            if block is not None:
                sub = tuple(x[s] for x, s in zip(axes, block))
                view = out[block]
                np.minimum(view, _capsule(sub, a, b, tube.radii[k], tube.radii[k + 1], stretch), out=view)
    return out


def tube_box(tubes: Sequence[Tube], pad: float = 0.0) -> tuple:
    """The bounding box (mm) of tubes, padded."""
    lo = np.min([t.points.min(0) - t.radii.max() * np.asarray(t.stretch) for t in tubes], axis=0) - pad - 3
    hi = np.max([t.points.max(0) + t.radii.max() * np.asarray(t.stretch) for t in tubes], axis=0) + pad + 3
    return tuple(lo), tuple(hi)


def tube_part(tubes: Sequence[Tube], layers: tuple[tuple[float, str], ...], **kwargs) -> Part:
    """A part made of tubes, evaluated on the scan's own grid."""
    return Part(partial(tube_field, tubes=tuple(tubes)), tube_box(tubes), layers,
                resolution=(0.0, 0.0, 0.0), **kwargs)


def lobulated_tube_field(axes: Axes, tube: Tube, lobes: SmoothField, amplitude: float, grow: float = 0.0) -> np.ndarray:
    """A tube whose surface is moved by amplitude mm times a smooth random field, then out by grow mm."""
    return tube_field(axes, (tube,), pad=2 * amplitude + grow) + amplitude * field_on(lobes, axes) - grow
