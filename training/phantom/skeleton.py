"""The skeleton: vertebrae with discs, arches and processes along a lordotic spine, a tilted sacrum,
ribs with their costal cartilages, the iliac wings, and below the iliac crest the hips with the
gluteal and hip muscles, the bladder and the rectum.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from training.phantom.atlas import GUT_WALL_MM, RIB_START, RIBS, SACRUM_LEVELS
from training.phantom.body import Body, core_point, wall_field
from training.phantom.fields import (
    Part,
    SmoothField,
    Tube,
    box_around,
    draw_field,
    ellipse,
    ellipsoid,
    field_on,
    open_axes,
    smax,
    smin,
    spline_tube,
    tube_part,
)
from training.phantom.priors import GUT_SPACE
from training.phantom.scan import Axes


@dataclass(frozen=True)
class Spine:
    """Vertebrae stacked along z: level k (0: L1, 1: T12, -1: L2 ...) centred at z0 + (k + 0.5) * pitch;
    discs of disc mm; the column's centre at y = spine_y; canal radius mm."""

    z0: float
    pitch: float
    disc: float
    lordosis: float
    canal: float


def spine_y(spine: Spine, z: np.ndarray | float) -> np.ndarray:
    """y (mm) of the vertebral bodies' centre: a lumbar lordosis, the sacrum tilting back."""
    sacrum = spine.z0 - 4.5 * spine.pitch
    lordosis = spine.lordosis * np.exp(-(((z - (spine.z0 - 2.0 * spine.pitch)) / (2.5 * spine.pitch)) ** 2))
    return lordosis - 0.55 * np.maximum(sacrum - z, 0.0)


def vertebra_size(spine: Spine, z: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Half-width and half-depth (mm) of the vertebral bodies: larger down to L5, the sacrum widest
    at its alae (S1) and narrowing to the coccyx."""
    levels = spine.z0 + spine.pitch * np.array([SACRUM_LEVELS[1], -5.1, -4.6, -2.0, 0.0, 3.0, 8.0])
    return (np.interp(z, levels, (12.0, 46.0, 26.0, 25.0, 22.0, 19.0, 16.0)),
            np.interp(z, levels, (7.0, 15.0, 17.0, 17.0, 16.0, 14.0, 13.0)))


def _level_z(spine: Spine, z: np.ndarray) -> np.ndarray:
    """z (mm) relative to the centre of the nearest vertebra."""
    return (z - spine.z0) % spine.pitch - spine.pitch / 2


def _canal_y(spine: Spine, z: np.ndarray) -> np.ndarray:
    """y (mm) of the spinal canal's centre."""
    return spine_y(spine, z) - 0.75 * vertebra_size(spine, z)[1] - spine.canal - 1.0


def _vertebral_section(axes: Axes, spine: Spine) -> np.ndarray:
    """The cross-section of the vertebral bodies (mm), flat at the back, at every z."""
    x, y, _ = open_axes(axes)
    z = axes[2]
    w, d = (v.astype(np.float32)[None, None, :] for v in vertebra_size(spine, z))
    ys = spine_y(spine, z).astype(np.float32)[None, None, :]
    return smax(ellipse(x, y - ys, w, d), ys - 0.75 * d - y, 3.0)


def spine_zone(axes: Axes, spine: Spine) -> np.ndarray:
    """Where organs must not reach (mm): the vertebral bodies plus 6 mm and the paravertebral
    space behind them."""
    x, y, _ = open_axes(axes)
    ys = spine_y(spine, axes[2]).astype(np.float32)[None, None, :]
    return smin(_vertebral_section(axes, spine) - 6.0, ellipse(x, y - ys + 45.0, 48.0, 50.0), 6.0)


def _vertebral_bodies_field(axes: Axes, spine: Spine) -> np.ndarray:
    """Vertebral bodies (mm): the cross-section cut into levels by the discs, down to the sacrum,
    whose vertebrae are fused."""
    z = axes[2]
    height = np.abs(_level_z(spine, z)) - (spine.pitch - spine.disc) / 2
    height = np.where(z < spine.z0 + (SACRUM_LEVELS[0] - 0.5) * spine.pitch, -spine.disc, height)
    return smax(_vertebral_section(axes, spine), height.astype(np.float32)[None, None, :], 1.5)


def _arch_field(axes: Axes, spine: Spine) -> np.ndarray:
    """Vertebral arches (mm): a 5 mm ring around the canal at each level."""
    x, y, _ = open_axes(axes)
    z = axes[2]
    r = np.hypot(x, y - _canal_y(spine, z).astype(np.float32)[None, None, :])
    height = np.abs(_level_z(spine, z)) - (spine.pitch - spine.disc) / 2 + 2.0
    return smax(np.abs(r - spine.canal - 2.5) - 2.5, height.astype(np.float32)[None, None, :], 1.5)


def _canal_field(axes: Axes, spine: Spine) -> np.ndarray:
    """The spinal canal (mm)."""
    x, y, _ = open_axes(axes)
    return np.hypot(x, y - _canal_y(spine, axes[2]).astype(np.float32)[None, None, :]) - spine.canal


def draw_spine(rng: np.random.Generator) -> Spine:
    """Vertebral pitch, disc height, lordosis and canal of one patient."""
    return Spine(rng.normal(0.0, 8.0), rng.uniform(33.0, 38.0), rng.uniform(7.0, 10.0),
                 rng.uniform(3.0, 12.0), rng.uniform(8.0, 10.5))


def _level_centre(spine: Spine, k: int) -> float:
    """z (mm) of the centre of vertebra k."""
    return spine.z0 + (k + 0.5) * spine.pitch


def _process_tubes(spine: Spine) -> tuple[list[Tube], list[Tube]]:
    """Spinous processes (pointing back and down) and transverse processes (long in the lumbar
    spine) of the levels from the sacrum to T4."""
    spinous, transverse = [], []
    for k in range(-5, 10):
        zc = _level_centre(spine, k)
        yk = float(_canal_y(spine, zc))
        back = yk - spine.canal - 3.0
        fall = 10.0 if k <= 0 else 20.0
        spinous.append(Tube(np.array([[0.0, back, zc], [0.0, back - 28.0, zc - fall]]), np.array([5.0, 4.0]),
                            (0.6, 1.0, 1.5)))
        length = 26.0 if -4 <= k <= 0 else 14.0
        for side in (1.0, -1.0):
            root = [side * (spine.canal + 3.0), yk, zc]
            tip = [side * (spine.canal + 3.0 + length), yk - 6.0, zc]
            transverse.append(Tube(np.array([root, tip]), np.array([4.5, 3.5]), (1.0, 0.8, 1.3)))
    return spinous, transverse


def spine_parts(spine: Spine) -> list[Part]:
    """Discs, vertebral bodies, arches, canal and processes."""
    bone = ((0.0, "cortical bone"), (1.5, "cancellous bone"))
    fine = (1.0, 1.0, 1.0)
    tip = spine.z0 + SACRUM_LEVELS[1] * spine.pitch
    column_box = ((-50.0, -70.0, tip), (50.0, 40.0, 600.0))
    canal_box = ((-22.0, -80.0, tip), (22.0, 0.0, 600.0))
    spinous, transverse = _process_tubes(spine)
    return [Part(partial(_vertebral_section, spine=spine), column_box, ((0.0, "disc"),), resolution=fine),
            Part(partial(_vertebral_bodies_field, spine=spine), column_box, bone, resolution=fine),
            Part(partial(_arch_field, spine=spine), canal_box, bone, resolution=fine),
            tube_part(spinous, bone), tube_part(transverse, bone),
            Part(partial(_canal_field, spine=spine), canal_box, ((0.0, "csf"),), resolution=fine)]


def rib_tubes(body: Body, spine: Spine, rng: np.random.Generator, table: Sequence[tuple] = RIBS,
               first_level: int = 1) -> list[tuple[Tube, Tube | None]]:
    """Ribs of `table` (default 12 to 7) on both sides, from vertebra level first_level up, each with
    its costal cartilage (None for floating ribs): from the vertebra along the inside of the muscle
    wall, falling towards the front."""
    ribs = []
    inset = body.muscle / 2 + 1.0
    for k, (end, cartilage_end, fall, rise) in enumerate(table, start=first_level):
        zc = _level_centre(spine, k)
        w = float(vertebra_size(spine, zc)[0])
        fall *= rng.uniform(0.85, 1.15)
        for side in (1.0, -1.0):
            t = np.linspace(RIB_START, end, 10)
            z = zc - 8.0 - fall * ((t - RIB_START) / (end - RIB_START)) ** 1.3
            x, y = core_point(body, t if side > 0 else np.pi - t, z, inset)
            head = [[side * (w + 2.0), float(spine_y(spine, zc)) - 4.0, zc],
                    [side * (spine.canal + 20.0), float(_canal_y(spine, zc)) - 4.0, zc - 3.0]]
            rib = spline_tube(np.concatenate([head, np.stack([x, y, z], axis=1)]), [3.5] * (len(t) + 2),
                              step=5.0, stretch=(1.0, 1.0, 1.5))
            cartilage = None
            if cartilage_end is not None:
                tc = np.linspace(end, cartilage_end, 6)
                zk = z[-1] + rise * (tc - end) / (cartilage_end - end)
                xk, yk = core_point(body, tc if side > 0 else np.pi - tc, zk, inset)
                cartilage = spline_tube(np.stack([xk, yk, zk], axis=1), [4.5] * len(tc), step=5.0,
                                        stretch=(1.0, 1.0, 1.4))
            ribs.append((rib, cartilage))
    return ribs


def rib_parts(ribs: Sequence[tuple[Tube, Tube | None]], floor: float | None = None) -> list[Part]:
    """Ribs (cortical shell, marrow) and their cartilages, one part each; above z = floor (mm) only."""
    parts = []
    for rib, cartilage in ribs:
        parts.append(only_above(tube_part([rib], ((0.0, "cortical bone"), (1.2, "cancellous bone"))), floor))
        if cartilage is not None:
            parts.append(only_above(tube_part([cartilage], ((0.0, "cartilage"),)), floor))
    return parts


def only_above(part: Part, floor: float | None) -> Part:
    """The part painted only above z = floor (mm; None: everywhere)."""
    if floor is None:
        return part
    lo, hi = part.box
    return replace(part, box=((lo[0], lo[1], max(lo[2], floor)), hi))


PELVIS_CREST_LEVEL = -3.5  # the iliac crest's mean height, in vertebral pitches from z0 (beside L5)
# The iliac wing: an arc of an elliptic cone around a vertical axis in front of it, at x = +-5 mm,
# y = 55 mm, from the posterior superior iliac spine by the sacrum (angle WING_ARC_RAD[0] about the
# axis, 0 pointing outwards, positive forwards) to the anterior superior spine (WING_ARC_RAD[1]),
# bulging backwards and outwards, the iliac fossa facing forwards and inwards.
WING_AXIS_MM = (5.0, 55.0)
WING_DEPTH = 0.95  # the cone's depth (y) over its width (x)
WING_ARC_RAD = (-1.3, -0.1)
WING_HEIGHT_MM = 100.0  # from the crest down to the acetabulum's roof
# The gluteal muscles reach GLUTEAL_ABOVE_CREST_MM above the iliac crest, outside the wing, their
# top a dome falling away from their centre line (a paraboloid of this radius of curvature, mm).
GLUTEAL_ABOVE_CREST_MM = 10.0
GLUTEAL_DOME_MM = 70.0


def _wing_cone(axes: Axes, side: float, crest: float, radius: float, flare: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One side's iliac cone (mm): offsets dx (outwards) and dy (forwards) from its axis, the
    elliptic distance from the axis, and the cone's radius at each z (`radius` at the crest,
    `flare` mm less per mm down)."""
    x, y, z = open_axes(axes)
    dx, dy = side * x - WING_AXIS_MM[0], y - WING_AXIS_MM[1]
    return dx, dy, np.hypot(dx, dy / WING_DEPTH), radius - flare * (crest - z)


def _iliac_field(axes: Axes, side: float, crest: float, radius: float, flare: float, thickness: float,
                 body: Body) -> np.ndarray:
    """One iliac wing (mm): a curved plate flaring outwards from the acetabulum up to the crest (part
    of the elliptic cone of _wing_cone), open anteromedially, inside the muscle wall."""
    z = open_axes(axes)[2]
    dx, dy, reach, r = _wing_cone(axes, side, crest, radius, flare)
    shell = np.abs(reach - r) - thickness / 2
    angle = np.arctan2(dy, dx)
    wedge = np.maximum(angle - WING_ARC_RAD[1], WING_ARC_RAD[0] - angle) * 60.0
    return np.maximum(np.maximum(shell, wedge), np.maximum(z - crest, wall_field(axes, body) + 4.0))


@dataclass(frozen=True)
class Pelvis:
    """The iliac wings: z of the crest (mm), the wing's radius there (mm), how many mm it narrows
    per mm down (flare) and its thickness (mm)."""

    crest: float
    radius: float
    flare: float
    thickness: float


def mean_crest(spine: Spine) -> float:
    """z (mm) of the iliac crest before its case-to-case scatter: beside L5 (PELVIS_CREST_LEVEL)."""
    return spine.z0 + PELVIS_CREST_LEVEL * spine.pitch


def draw_pelvis(rng: np.random.Generator, spine: Spine) -> Pelvis:
    """The iliac crest beside L5 (mean_crest, scattered) and the wings' size."""
    crest = mean_crest(spine) + rng.normal(0.0, 8.0)
    return Pelvis(crest, rng.uniform(105.0, 120.0), rng.uniform(0.3, 0.4), rng.uniform(6.0, 9.0))


def pelvis_parts(pelvis: Pelvis, body: Body) -> list[Part]:
    """Iliac wings, each with the iliacus muscle lining its fossa."""
    radius, crest = pelvis.radius, pelvis.crest
    parts = []
    for side in (1.0, -1.0):
        (ax, ay), depth = WING_AXIS_MM, WING_DEPTH
        box = ((side * ax - radius - 10, ay - depth * radius - 10, crest - WING_HEIGHT_MM),
               (side * ax + radius + 10, ay + depth * radius + 10, crest + 1.0))
        wing = partial(_iliac_field, side=side, crest=crest, flare=pelvis.flare, body=body)
        parts += [Part(partial(wing, radius=radius - 12.0, thickness=24.0), box, ((0.0, "muscle"),),
                       resolution=(1.5, 1.5, 3.0)),
                  Part(partial(wing, radius=radius, thickness=pelvis.thickness), box,
                       ((0.0, "cortical bone"), (2.0, "cancellous bone")), resolution=(1.0, 1.0, 2.0))]
    return parts


def _gluteal_field(axes: Axes, side: float, centre: Sequence[float], radii: Sequence[float], pelvis: Pelvis,
                   sidewall: float, planes: SmoothField) -> np.ndarray:
    """One side's gluteal and hip muscles (mm): an ellipsoid of muscle under a dome just above the
    iliac crest, outside the iliac wing's cone and lateral to the pelvic sidewall (|x| > sidewall
    mm), split by thin planes where the smooth random field `planes` crosses zero (positive there:
    left as fat)."""
    x, y, z = open_axes(axes)
    _, _, reach, r = _wing_cone(axes, side, pelvis.crest, pelvis.radius, pelvis.flare)
    inside_wing = np.maximum(r, 0.0) - reach
    mass = np.maximum(np.maximum(ellipsoid((x, y, z), centre, radii), inside_wing), sidewall - side * x)
    dome = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2) / (2.0 * GLUTEAL_DOME_MM)
    mass = np.maximum(mass, z - pelvis.crest - GLUTEAL_ABOVE_CREST_MM + dome)
    return np.maximum(mass, 1.2 - 25.0 * np.abs(field_on(planes, axes)))


def _ellipsoid_field(axes: Axes, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Approximate signed distance (mm) to an axis-aligned ellipsoid."""
    return ellipsoid(open_axes(axes), centre, radii)


def _cup_field(axes: Axes, centre: np.ndarray, inner: float, outer: float, opening: np.ndarray) -> np.ndarray:
    """A spherical shell (mm) between radii inner and outer around centre, open towards the unit
    vector `opening` (the acetabulum's cup over the femoral head)."""
    d = [g - c for g, c in zip(open_axes(axes), centre)]
    distance = np.sqrt(sum(di ** 2 for di in d))
    facing = sum(di * oi for di, oi in zip(d, opening))
    return np.maximum(np.maximum(distance - outer, inner - distance), facing - 0.25 * inner)


def pelvic_organ_parts(rng: np.random.Generator, body: Body, spine: Spine, pelvis: Pelvis) -> list[Part]:
    """The true pelvis and the hips below the iliac crest: gluteal and hip muscles with fat planes
    between them, the urinary bladder (urine behind a thin wall), the rectum against the sacrum,
    and the bones: femoral heads in their acetabula, necks, trochanters and shafts, the pubic rami
    meeting at the symphysis and the ischia. Painted before the organs and the gut, which fill only
    the fat left over."""
    head_z = pelvis.crest - rng.uniform(95.0, 115.0)
    head_x, head_y, head_r = rng.uniform(85.0, 100.0), rng.uniform(15.0, 35.0), rng.uniform(21.0, 26.0)
    front = body.yc + body.b - body.muscle
    parts = []
    for side in (1.0, -1.0):
        centre = (side * body.a * rng.uniform(0.55, 0.7), body.yc - body.b * rng.uniform(0.35, 0.55),
                  pelvis.crest - rng.uniform(45.0, 75.0))
        radii = (body.a * rng.uniform(0.5, 0.65), body.b * rng.uniform(0.6, 0.8), rng.uniform(110.0, 150.0))
        lo, hi = box_around(centre, radii)
        planes = draw_field(rng, lo, hi, 30.0)
        parts.append(Part(partial(_gluteal_field, side=side, centre=centre, radii=radii, pelvis=pelvis,
                                  sidewall=head_x - rng.uniform(25.0, 40.0), planes=planes), (lo, hi),
                          ((0.0, "muscle"),), into=GUT_SPACE, resolution=(1.5, 1.5, 3.0)))

    bladder_r = np.array([rng.uniform(30.0, 65.0), rng.uniform(25.0, 50.0), rng.uniform(25.0, 55.0)])
    bladder_c = (rng.normal(0.0, 8.0), front - bladder_r[1] - rng.uniform(8.0, 25.0), head_z + rng.uniform(0.0, 30.0))
    parts.append(Part(partial(_ellipsoid_field, centre=bladder_c, radii=bladder_r),
                      box_around(bladder_c, bladder_r + 5.0), ((0.0, "gut wall"), (GUT_WALL_MM, "urine")),
                      into=(*GUT_SPACE, "muscle"), resolution=(1.5, 1.5, 1.5)))

    zs = np.linspace(pelvis.crest - 40.0, head_z - 90.0, 6)
    rectum = spline_tube([(rng.normal(0.0, 6.0), float(spine_y(spine, z)) + 38.0, z) for z in zs],
                         rng.uniform(12.0, 20.0) * np.array([0.8, 1.0, 1.1, 1.2, 1.0, 0.7]), step=4.0)
    parts.append(tube_part([rectum], ((0.0, "gut wall"), (GUT_WALL_MM, "faeces")), into=(*GUT_SPACE, "muscle")))

    bone = ((0.0, "cortical bone"), (2.0, "cancellous bone"))
    symphysis = np.array([0.0, front - rng.uniform(8.0, 15.0), head_z - rng.uniform(20.0, 35.0)])
    for side in (1.0, -1.0):
        head = np.array([side * head_x, head_y, head_z])
        trochanter = head + (side * rng.uniform(40.0, 50.0), -rng.uniform(0.0, 10.0), -rng.uniform(20.0, 30.0))
        knee = trochanter + (-side * rng.uniform(15.0, 30.0), rng.uniform(0.0, 20.0), -400.0)
        tuberosity = head + (-side * rng.uniform(15.0, 25.0), -rng.uniform(35.0, 45.0), -rng.uniform(50.0, 65.0))
        opening = np.array([side, 0.0, -1.0]) / np.sqrt(2.0)
        parts += [Part(partial(_cup_field, centre=head, inner=head_r + 2.0, outer=head_r + 10.0, opening=opening),
                       box_around(head, head_r + 12.0), bone, resolution=(1.0, 1.0, 1.0)),
                  Part(partial(_cup_field, centre=head, inner=0.0, outer=head_r + 2.0, opening=-opening),
                       box_around(head, head_r + 4.0), ((0.0, "cartilage"),), resolution=(1.0, 1.0, 1.0)),
                  tube_part([Tube(np.array([head, trochanter]), np.array([head_r, 16.0])),
                             Tube(np.array([trochanter + (-side * 10.0, 0.0, 0.0), knee]), np.array([17.0, 13.0])),
                             Tube(np.array([head + (-side * 5.0, head_r, -8.0), symphysis + (side * 6.0, 0.0, 0.0)]),
                                  np.array([9.0, 8.0])),
                             Tube(np.array([head + (-side * 5.0, -head_r, -10.0), tuberosity]), np.array([11.0, 13.0])),
                             Tube(np.array([tuberosity, symphysis + (side * 6.0, 0.0, -15.0)]), np.array([8.0, 7.0]))],
                            bone)]
    return parts
