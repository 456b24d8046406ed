"""The trunk and the arms: the muscle wall's outline varying along z, skin and subcutaneous fat, the
abdominal cavity, the retroperitoneum, the table; arms beside the body with their bones.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from training.phantom.atlas import (
    ARM_FAT_MM,
    ARM_GAP_MM,
    ARM_RADII_MM,
    ARM_SHADOW_GRAIN_MM,
    ARM_SHADOW_HU,
    ARM_SHADOW_NOISE_HU,
    ARM_SHADOW_WIDTH_MM,
    ARM_Y_MM,
    BONE_CORTEX_MM,
    BONE_OFFSET_MM,
    ELBOW_Z_MM,
    FOREARM_BONE_RADIUS_MM,
    FOREARM_SCALE,
    HIP_RAMP_MM,
    HUMERUS_RADIUS_MM,
    RETROPERITONEUM,
    SPINE_TO_BACK_MM,
)
from training.phantom.fields import Part, box_around, ellipse, open_axes, smax
from training.phantom.scan import Axes


@dataclass(frozen=True)
class Body:
    """The trunk. The outer surface of the muscle wall ('core') is an ellipse of half-axes a, b (mm)
    centred at (0, yc), its radius scaled by 1 + sum_m cos[m](z) cos(m t) + sin[m](z) sin(m t) (t: the
    elliptic angle; coefficients linear in z between knots). Outside it lie fat * (1 + fat_tilt *
    sin t) mm of fat and skin mm of skin, the back flattened at y = back; inside it muscle mm of
    muscle, plus rectus mm over the rectus bellies. Below z = hip_z the width grows towards the
    hips, by hip_gain from HIP_RAMP_MM below it down (0: no hips; only with the pelvic organs)."""

    a: float
    b: float
    yc: float
    knots: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    fat: float
    fat_tilt: float
    skin: float
    muscle: float
    rectus: float
    back: float
    hip_z: float = 0.0
    hip_gain: float = 0.0


def _shape_scale(body: Body, t: np.ndarray, z: np.ndarray) -> np.ndarray:
    """The Fourier scale of the core radius at elliptic angle t (rad) and height z (mm), broadcast."""
    scale = 1.0
    for m in range(body.cos.shape[1]):
        cm = np.interp(z, body.knots, body.cos[:, m]).astype(np.float32)
        sm = np.interp(z, body.knots, body.sin[:, m]).astype(np.float32)
        scale = scale + cm * np.cos(m * t) + sm * np.sin(m * t)
    if body.hip_gain:
        ramp = np.clip((body.hip_z - z) / HIP_RAMP_MM, 0.0, 1.0).astype(np.float32)
        scale = scale * (1.0 + body.hip_gain * ramp * ramp * (3.0 - 2.0 * ramp) * np.cos(t) ** 2)
    return scale


def _core(axes: Axes, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Elliptic angle t (rad, shape (nx, ny, 1)) and the radial signed distance (mm) to the core."""
    x, y, _ = open_axes(axes)
    t = np.arctan2((y - body.yc) / body.b, x / body.a)
    reach = np.hypot(body.a * np.cos(t), body.b * np.sin(t)) * _shape_scale(body, t, axes[2][None, None, :])
    return t, np.hypot(x, y - body.yc) - reach


def _skin_field(axes: Axes, body: Body) -> np.ndarray:
    """The outer surface of the body (mm), its back flattened against the table."""
    t, d = _core(axes, body)
    fat = np.maximum(body.fat * (1.0 + body.fat_tilt * np.sin(t)), 3.0)
    return smax(d - fat - body.skin, body.back - open_axes(axes)[1], 10.0)


def wall_field(axes: Axes, body: Body) -> np.ndarray:
    """The outer surface of the muscle wall (mm)."""
    return _core(axes, body)[1]


def cavity_field(axes: Axes, body: Body) -> np.ndarray:
    """The inner surface of the muscle wall (mm): the abdominal and thoracic cavity."""
    t, d = _core(axes, body)
    rectus = body.rectus * np.exp(-(((np.abs(t - np.pi / 2) - 0.25) / 0.12) ** 2))
    return d + body.muscle + rectus


def _wall_planes_field(axes: Axes, body: Body, top: float) -> np.ndarray:
    """Two thin fat planes (mm) splitting the lateral muscle wall below z = top into the external
    oblique, internal oblique and transversus muscles."""
    t, d = _core(axes, body)
    planes = np.minimum(np.abs(d + body.muscle / 3), np.abs(d + 2 * body.muscle / 3)) - 0.8
    lateral = (np.abs(np.sin(t)) - 0.75) * 40.0
    return np.maximum(np.maximum(planes, lateral), axes[2][None, None, :] - top)


def _retroperitoneum_field(axes: Axes, body: Body) -> np.ndarray:
    """The cavity behind the peritoneum (mm)."""
    x, y, z = open_axes(axes)
    (z0, z1), (a0, a1), b = RETROPERITONEUM
    back = np.interp(z, (z0, z1), (a0, a1)).astype(np.float32)
    return np.maximum(cavity_field(axes, body), y - (back - x ** 2 / b))


def core_point(body: Body, t: np.ndarray, z: np.ndarray, inset: float) -> tuple[np.ndarray, np.ndarray]:
    """Points (x, y mm) inset mm inside the core at elliptic angles t (rad) and heights z (mm)."""
    reach = np.hypot(body.a * np.cos(t), body.b * np.sin(t)) * _shape_scale(body, t, z) - inset
    angle = np.arctan2(body.b * np.sin(t), body.a * np.cos(t))
    return reach * np.cos(angle), body.yc + reach * np.sin(angle)


def draw_body(rng: np.random.Generator) -> Body:
    """A trunk: width, depth and shape along z, fat (5-40 mm, some thin, some obese), muscle."""
    a, b = rng.uniform(132.0, 155.0), rng.uniform(88.0, 106.0)
    knots = np.arange(-500.0, 501.0, 100.0)
    sd = np.array([0.03, 0.012, 0.03, 0.015, 0.01])
    cos = rng.normal(0.0, sd, (len(knots), 5))
    sin = rng.normal(0.0, sd, (len(knots), 5)) * (np.arange(5) > 0)
    fat = 5.0 + 35.0 * rng.beta(1.3, 1.8)
    tilt = rng.uniform(-0.15, 0.45)
    skin = rng.uniform(1.5, 2.5)
    yc = b - SPINE_TO_BACK_MM - rng.uniform(0.0, 6.0)
    back = yc - b - fat * (1.0 - tilt) - skin + rng.uniform(1.0, 4.0)
    return Body(a, b, yc, knots, cos, sin, fat, tilt, skin, rng.uniform(8.0, 13.0), rng.uniform(3.0, 8.0), back)


def body_parts(body: Body, floor: float) -> list[Part]:
    """Skin and subcutaneous fat, the muscle wall (in three layers at the sides of the abdomen; the
    layers up to z = floor, mm: the diaphragm's lowest), the cavity (visceral fat) and the retroperitoneum."""
    reach = (body.a + 2 * body.fat + 30.0, body.b + 2 * body.fat + 30.0, 600.0)
    box = box_around((0.0, body.yc, 0.0), reach)
    coarse = (2.0, 2.0, 8.0)
    return [Part(partial(_skin_field, body=body), box, ((0.0, "skin"), (body.skin, "fat")), resolution=coarse),
            Part(partial(wall_field, body=body), box, ((0.0, "muscle"),), resolution=coarse),
            Part(partial(_wall_planes_field, body=body, top=floor), box, ((0.0, "fat"),),
                 resolution=(1.0, 1.0, 8.0), into=("muscle",)),
            Part(partial(cavity_field, body=body), box, ((0.0, "visceral fat"),), resolution=coarse),
            Part(partial(_retroperitoneum_field, body=body), box, ((0.0, "retroperitoneal fat"),),
                 resolution=coarse, into=("visceral fat",))]


def _table_field(axes: Axes, y_top: float, thickness: float, curvature: float, half_width: float) -> np.ndarray:
    """A curved plate under the patient (mm): its top at y_top on the midline, rising to the sides."""
    x, y, _ = open_axes(axes)
    centre = y_top - thickness / 2 + x ** 2 * curvature
    return np.maximum(np.abs(y - centre) - thickness / 2, np.abs(x) - half_width)


def table_part(rng: np.random.Generator, body: Body) -> list[Part]:
    """The scanner table under the back (in 80 % of cases)."""
    if rng.random() > 0.8:
        return []
    y_top = body.back - rng.uniform(0.0, 4.0)
    thickness, curvature, half_width = rng.uniform(4.0, 9.0), rng.uniform(0.0003, 0.0009), rng.uniform(200.0, 240.0)
    field = partial(_table_field, y_top=y_top, thickness=thickness, curvature=curvature, half_width=half_width)
    box = ((-half_width, y_top - thickness - 1, -600.0), (half_width, y_top + half_width ** 2 * curvature, 600.0))
    return [Part(field, box, ((0.0, "table"),), resolution=(1.0, 0.5, 50.0), into=("air",))]


# ------------------------------------------------------------------------------------ arms

@dataclass(frozen=True)
class Arms:
    """Both arms hanging beside the trunk, per side (+1 right, -1 left; indexed 0, 1): the centre's y
    (mm), the gap (mm) to the trunk at the widest, the upper arm's half-axes (x, y mm), the forearm's
    scale, the skin and fat (mm) over the muscle, the bones' radius and cortex (mm) and the bones'
    offset (x, y mm) from the arm's centre; the elbow's height z (mm) and the shadow between the
    arms (ARM_SHADOW_*: depth HU, width mm, noise HU, grain mm)."""

    y: tuple[float, float]
    gap: tuple[float, float]
    radii: tuple[tuple[float, float], tuple[float, float]]
    forearm: float
    skin: float
    fat: float
    humerus: float
    forearm_bone: float
    cortex: float
    offset: tuple[tuple[float, float], tuple[float, float]]
    elbow: float
    shadow_hu: float
    shadow_width: float
    shadow_noise: float
    shadow_grain: float


SIDES = (1.0, -1.0)


def draw_arms(rng: np.random.Generator) -> Arms:
    """Arms beside the body within ARM_*'s ranges, and their shadow."""
    def pair(bounds: Sequence[float]) -> tuple[float, float]:
        return float(rng.uniform(*bounds)), float(rng.uniform(*bounds))

    y = float(rng.uniform(*ARM_Y_MM))
    radii = tuple((float(rng.uniform(*ARM_RADII_MM[0])), float(rng.uniform(*ARM_RADII_MM[1]))) for _ in SIDES)
    offset = tuple(tuple(float(v) for v in rng.uniform(-BONE_OFFSET_MM, BONE_OFFSET_MM, 2)) for _ in SIDES)
    return Arms((y + float(rng.normal(0.0, 4.0)), y + float(rng.normal(0.0, 4.0))), pair(ARM_GAP_MM), radii,
                float(rng.uniform(*FOREARM_SCALE)), float(rng.uniform(1.5, 2.5)), float(rng.uniform(*ARM_FAT_MM)),
                float(rng.uniform(*HUMERUS_RADIUS_MM)), float(rng.uniform(*FOREARM_BONE_RADIUS_MM)),
                float(rng.uniform(*BONE_CORTEX_MM)), offset, float(rng.uniform(*ELBOW_Z_MM)),
                float(rng.uniform(*ARM_SHADOW_HU)), float(rng.uniform(*ARM_SHADOW_WIDTH_MM)),
                float(rng.uniform(*ARM_SHADOW_NOISE_HU)), float(rng.uniform(*ARM_SHADOW_GRAIN_MM)))


def _arm_section(arms: Arms, body: Body, k: int, z: np.ndarray) -> tuple[np.ndarray, ...]:
    """Side k's arm at heights z (mm): centre x, y and half-axes rx, ry (mm), each (1, 1, nz); the
    forearm (below the elbow, blended over 30 mm) narrower, the arm against the trunk's widest
    point plus its gap."""
    side = SIDES[k]
    t = np.float32(0.0 if side > 0 else np.pi)
    trunk = body.a * _shape_scale(body, t, z) + body.fat + body.skin
    scale = np.interp(z, (arms.elbow - 15.0, arms.elbow + 15.0), (arms.forearm, 1.0)).astype(np.float32)
    rx, ry = (r * scale for r in arms.radii[k])
    x = side * (trunk + arms.gap[k] + rx)
    return tuple(v[None, None, :] for v in (x, np.full_like(x, arms.y[k]), rx, ry))


def _arm_field(axes: Axes, arms: Arms, body: Body, k: int) -> np.ndarray:
    """Side k's arm (mm)."""
    x, y, _ = open_axes(axes)
    cx, cy, rx, ry = _arm_section(arms, body, k, axes[2])
    return ellipse(x - cx, y - cy, rx, ry)


def _arm_bones_field(axes: Axes, arms: Arms, body: Body, k: int) -> np.ndarray:
    """Side k's bones (mm): the humerus above the elbow, the radius and ulna side by side below it."""
    x, y, z = open_axes(axes)
    cx, cy, _, _ = _arm_section(arms, body, k, axes[2])
    bx, by = cx + arms.offset[k][0], cy + arms.offset[k][1]
    humerus = np.maximum(np.hypot(x - bx, y - by) - arms.humerus, arms.elbow - z)
    spread = 1.5 * arms.forearm_bone
    forearm = np.minimum(np.hypot(x - bx - spread, y - by), np.hypot(x - bx + spread, y - by)) - arms.forearm_bone
    return np.minimum(humerus, np.maximum(forearm, z - arms.elbow))


def arm_parts(arms: Arms, body: Body) -> list[Part]:
    """Both arms beside the trunk: skin, fat and muscle painted into air only, the bones (cortex,
    fatty marrow) into the arms' muscle."""
    parts = []
    for k, side in enumerate(SIDES):
        reach = max(arms.radii[k])
        x_far = body.a * 1.3 + body.fat + body.skin + arms.gap[k] + 2 * reach + 5.0
        lo, hi = sorted((side * 100.0, side * x_far))
        box = ((lo, arms.y[k] - reach - 5.0, -600.0), (hi, arms.y[k] + reach + 5.0, 600.0))
        parts += [Part(partial(_arm_field, arms=arms, body=body, k=k), box,
                       ((0.0, "skin"), (arms.skin, "fat"), (arms.skin + arms.fat, "muscle")),
                       resolution=(1.5, 1.5, 8.0), into=("air",)),
                  Part(partial(_arm_bones_field, arms=arms, body=body, k=k), box,
                       ((0.0, "cortical bone"), (arms.cortex, "fat")), resolution=(1.0, 1.0, 4.0), into=("muscle",))]
    return parts
