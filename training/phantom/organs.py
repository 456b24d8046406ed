"""The labelled organs and their lesions: liver (lobes, fissures, gallbladder fossa), kidneys (cortex,
medulla, sinus, pelvis), spleen and pancreas, each with its own pose, size, displacement field
and lobulation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

from training.phantom.atlas import (
    FISSURE_WAVE_MM,
    FISSURE_WIDTH_MM,
    KIDNEY_CENTRE,
    KIDNEY_CORTEX_MM,
    KIDNEY_RADII,
    LARGE_SPLEEN_HOLLOW,
    LARGE_SPLEEN_KIDNEY_DROP_MM,
    LARGE_SPLEEN_SIZE,
    LESION_RADIUS_MM,
    LESIONS,
    LIVER_LOBES,
    LIVER_REACH_MM,
    PANCREAS_HEIGHT,
    PANCREAS_NECK_POINT,
    PANCREAS_NECK_X,
    PANCREAS_POINTS,
    PANCREAS_RADII,
    PORTA_FAT,
    SPLEEN_CENTRE,
    SPLEEN_RADII,
    SPLENOMEGALY,
    UMBILICAL_FISSURE,
    VENOSUM_FISSURE,
)
from training.phantom.body import Body, cavity_field
from training.phantom.chest import Diaphragm, diaphragm_z
from training.phantom.fields import (
    Field,
    Part,
    SmoothField,
    Tube,
    basis_from,
    box_around,
    draw_field,
    ellipsoid,
    field_on,
    open_axes,
    rotated,
    rotation_matrix,
    smax,
    smin,
    spline_tube,
    tube_box,
)
from training.phantom.priors import KIDNEY, LIVER
from training.phantom.scan import Axes
from training.phantom.skeleton import Spine, spine_zone


@dataclass(frozen=True)
class Frame:
    """An organ's pose and shape variation: centre (mm), rotation (columns: local axes in the
    world), size factors along the local axes, a smooth displacement field (warp_mm * unit field,
    3 components) and a lobulation field (lobes_mm * unit field, added to the distance)."""

    centre: np.ndarray
    rotation: np.ndarray
    size: np.ndarray
    warp: SmoothField
    warp_mm: float
    lobes: SmoothField
    lobes_mm: float

    def to_world(self, local: Sequence[Sequence[float]]) -> np.ndarray:
        """World points (n, 3) mm of points (n, 3) in the organ's local (unscaled) coordinates."""
        return self.centre + (np.asarray(local, float) * self.size) @ self.rotation.T

    def moved(self, offset: Sequence[float]) -> Frame:
        """The same organ, shape and texture, moved by offset (mm): its warp and lobulation fields move with it."""
        return replace(self, centre=self.centre + offset,
                       warp=replace(self.warp, lo=tuple(np.add(self.warp.lo, offset))),
                       lobes=replace(self.lobes, lo=tuple(np.add(self.lobes.lo, offset))))

    def box(self, lo: Sequence[float], hi: Sequence[float], margin: float) -> tuple:
        """The world box (mm) around the local box lo..hi, plus the warp, lobulation and margin mm."""
        corners = np.array(np.meshgrid(*zip(lo, hi), indexing="ij")).reshape(3, -1).T
        world = self.to_world(corners)
        pad = 3.0 * (self.warp_mm + self.lobes_mm) + margin
        return tuple(world.min(0) - pad), tuple(world.max(0) + pad)


def draw_frame(rng: np.random.Generator, centre: Sequence[float], basis: np.ndarray, reach: float, *,
                shift_mm: float = 8.0, angle_deg: float = 8.0, size_sd: float = 0.07, axis_sd: float = 0.05,
                warp_mm: float = 5.0, lobe_step: float = 15.0, lobes_mm: float = 2.5) -> Frame:
    """A random pose, size and shape variation around a nominal centre (mm) and orientation."""
    c = np.asarray(centre, float) + rng.normal(0.0, shift_mm, 3)
    rotation = rotation_matrix(np.radians(rng.normal(0.0, angle_deg, 3))) @ basis
    size = np.clip(rng.normal(1.0, size_sd) * rng.normal(1.0, axis_sd, 3), 0.8, 1.22)
    lo, hi = c - reach, c + reach
    warp = draw_field(rng, lo, hi, reach / 2.5, components=3)
    return Frame(c, rotation, size, warp, warp_mm, draw_field(rng, lo, hi, lobe_step), lobes_mm)


def lobes_box(frame: Frame, lobes: Sequence[tuple]) -> tuple:
    """The world box (mm) of an organ made of (centre, half-axes, taper) lobes in its frame."""
    lo = np.min([np.subtract(c, r) for c, r, _ in lobes], axis=0)
    hi = np.max([np.add(c, r) for c, r, _ in lobes], axis=0)
    return frame.box(lo, hi, 5.0)


def _local(axes: Axes, frame: Frame) -> tuple[np.ndarray, ...]:
    """An organ's local coordinates (mm, divided by its size) of the grid points, displaced by its warp."""
    u = frame.warp_mm * field_on(frame.warp, axes)
    p = [g - c - ui for g, c, ui in zip(open_axes(axes), frame.centre, u)]
    r = frame.rotation
    return tuple((p[0] * r[0, i] + p[1] * r[1, i] + p[2] * r[2, i]) / frame.size[i] for i in range(3))


def _lobulation(axes: Axes, frame: Frame) -> np.ndarray:
    """The lobulation (mm) added to an organ's distance."""
    return frame.lobes_mm * field_on(frame.lobes, axes)


def _kidney_field(axes: Axes, frame: Frame) -> np.ndarray:
    """A kidney (mm): a bean whose hilum (local +x) is notched."""
    q = _local(axes, frame)
    rw, rt, rl = KIDNEY_RADII
    notch = ellipsoid(q, (1.0 * rw, 0.0, 0.0), (0.38 * rw, 0.45 * rt, 0.35 * rl))
    return smax(ellipsoid(q, (0.0, 0.0, 0.0), KIDNEY_RADII), -notch, 4.0) + _lobulation(axes, frame)


def _renal_sinus_field(axes: Axes, frame: Frame) -> np.ndarray:
    """The renal sinus (mm): fat around the pelvis, opening at the hilum."""
    rw, rt, rl = KIDNEY_RADII
    return ellipsoid(_local(axes, frame), (0.45 * rw, 0.0, 0.0), (0.45 * rw, 0.36 * rt, 0.55 * rl))


def _renal_pelvis_field(axes: Axes, frame: Frame) -> np.ndarray:
    """The renal pelvis (mm), in the sinus towards the hilum."""
    rw, rt, rl = KIDNEY_RADII
    return ellipsoid(_local(axes, frame), (0.6 * rw, 0.0, -0.1 * rl), (0.3 * rw, 0.28 * rt, 0.3 * rl))


def _medulla_field(axes: Axes, frame: Frame, offset: float) -> np.ndarray:
    """Medullary pyramids (mm): under the cortex, outside the sinus, split by columns of Bertin."""
    q = _local(axes, frame)
    rw, rt, rl = KIDNEY_RADII
    depth = ellipsoid(q, (0.0, 0.0, 0.0), KIDNEY_RADII) + KIDNEY_CORTEX_MM
    sinus = 2.0 - ellipsoid(q, (0.45 * rw, 0.0, 0.0), (0.45 * rw, 0.36 * rt, 0.55 * rl))
    columns = 5.0 * (0.1 - np.cos(2 * np.pi * q[2] / 26.0 + offset) * np.cos(3 * np.arctan2(q[1], q[0]) + offset))
    return np.maximum(np.maximum(depth, sinus), columns)


def kidney_frame(rng: np.random.Generator, side: float, breath: float) -> Frame:
    """A kidney's pose: long axis tilted (upper pole medial and posterior), hilum anteromedial."""
    angle = np.radians(rng.uniform(28.0, 45.0))
    hilum = (-side * np.cos(angle), np.sin(angle), 0.0)
    basis = basis_from(hilum, (-side * 0.2, -0.15, 1.0))
    centre = np.asarray(KIDNEY_CENTRE[side]) + (0.0, 0.0, 0.6 * breath)
    return draw_frame(rng, centre, basis, 90.0, shift_mm=6.0, size_sd=0.05, warp_mm=3.0, lobe_step=20.0,
                       lobes_mm=1.0)


def kidney_parts(rng: np.random.Generator, frame: Frame, sinus_labelled: bool = False,
                 pelvis_labelled: bool = True) -> list[Part]:
    """A kidney: cortex, medulla, sinus fat and pelvis inside it. The label covers cortex, medulla
    and pelvis but not the sinus fat, as real references draw the kidney (a C open at the hilum):
    the part after the pelvis only unlabels the sinus's fat and paints nothing. sinus_labelled
    leaves that part out (Mix.kidney_sinus); without pelvis_labelled a last one unlabels the
    pelvis's urine too, so that the label is the parenchyma alone (Mix.kidney_parenchyma)."""
    box = frame.box(np.negative(KIDNEY_RADII), KIDNEY_RADII, 5.0)
    inside = dict(within=KIDNEY, resolution=(1.5, 1.5, 1.5))
    sinus = partial(_renal_sinus_field, frame=frame)
    pelvis = partial(_renal_pelvis_field, frame=frame)
    parts = [Part(partial(_kidney_field, frame=frame), box, ((0.0, "kidney cortex"),), label=KIDNEY,
                  resolution=(1.5, 1.5, 1.5)),
             Part(partial(_medulla_field, frame=frame, offset=rng.uniform(0, 2 * np.pi)), box,
                  ((0.0, "kidney medulla"),), **inside),
             Part(sinus, box, ((0.0, "fat"),), **inside),
             Part(pelvis, box, ((0.0, "urine"),), **inside)]
    if not sinus_labelled:
        parts.append(Part(sinus, box, (), label=0, into=("fat",), **inside))
    if not pelvis_labelled:
        parts.append(Part(pelvis, box, (), label=0, into=("urine",), **inside))
    return parts


def kidney_hilum(frame: Frame) -> np.ndarray:
    """World point (mm) of a kidney's hilum."""
    return frame.to_world([[0.75 * KIDNEY_RADII[0], 0.0, 0.0]])[0]


def gallbladder_field(axes: Axes, frame: Frame, centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """The gallbladder (mm): an ellipsoid in the liver's frame, long axis tilted forward."""
    q = rotated(axes, frame.to_world([centre])[0], frame.rotation @ rotation_matrix((np.radians(-40.0), 0.0, 0.0)))
    return ellipsoid(q, (0.0, 0.0, 0.0), radii)


def liver_field(axes: Axes, frame: Frame, body: Body, diaphragm: Diaphragm, spine: Spine, kidney: Frame,
                 gallbladder: Field | None, lobes: Sequence[tuple] = LIVER_LOBES) -> np.ndarray:
    """The liver (mm): its lobes (LIVER_LOBES' form) smoothly joined, inside the body wall, under the
    diaphragm, off the spine, with the impressions of the right kidney and the gallbladder."""
    q = _local(axes, frame)
    f = None
    for centre, radii, taper in lobes:
        lobe = ellipsoid(q, centre, radii, taper)
        f = lobe if f is None else smin(f, lobe, 12.0)
    x, y, z = open_axes(axes)
    f = smax(f, cavity_field(axes, body) + 1.0, 4.0)
    f = np.maximum(f, z - diaphragm_z(diaphragm, x, y))
    f = smax(f, -spine_zone(axes, spine), 3.0)
    f = smax(f, 3.0 - _kidney_field(axes, kidney), 3.0)
    if gallbladder is not None:
        f = np.maximum(f, 1.5 - gallbladder(axes))
    return f + _lobulation(axes, frame)


@dataclass(frozen=True)
class Fissures:
    """One liver's fissures (UMBILICAL_FISSURE, VENOSUM_FISSURE, PORTA_FAT) in its frame (mm): the
    umbilical sheet's point, unit normal, back edge (y) and top (z); the venosum sheet's y, or None;
    the porta's fat half-axes, or None; the sheets' widths, and the field waving them."""

    umbilical: tuple[np.ndarray, np.ndarray, float, float]
    venosum_y: float | None
    porta_radii: np.ndarray | None
    widths: tuple[float, float]
    wave: SmoothField


def draw_fissures(rng: np.random.Generator, liver: Frame) -> Fissures:
    """Random fissures for this liver (see UMBILICAL_FISSURE)."""
    u = UMBILICAL_FISSURE
    angle = np.radians(rng.uniform(-u["angle_deg"], u["angle_deg"]))
    umbilical = (np.array([rng.uniform(*u["x"]), 0.0, 0.0]), np.array([np.cos(angle), np.sin(angle), 0.0]),
                 float(rng.uniform(*u["y"])), float(rng.uniform(*u["z"])))
    venosum_y = float(rng.uniform(*VENOSUM_FISSURE[1]["y"])) if rng.random() < VENOSUM_FISSURE[0] else None
    porta = np.array([rng.uniform(*r) for r in PORTA_FAT[2]]) if rng.random() < PORTA_FAT[0] else None
    widths = (float(rng.uniform(*FISSURE_WIDTH_MM)), float(rng.uniform(*FISSURE_WIDTH_MM)))
    lo, hi = liver.centre - LIVER_REACH_MM, liver.centre + LIVER_REACH_MM
    return Fissures(umbilical, venosum_y, porta, widths, draw_field(rng, lo, hi, 30.0))


def fissure_field(axes: Axes, frame: Frame, fissures: Fissures) -> np.ndarray:
    """The liver's fissures (mm, negative inside): the union of its sheets and the porta's fat."""
    q = _local(axes, frame)
    wave = FISSURE_WAVE_MM * field_on(fissures.wave, axes)
    point, normal, back, top = fissures.umbilical
    along = sum((qi - pi) * ni for qi, pi, ni in zip(q, point, normal)) + wave
    f = np.maximum(np.maximum(np.abs(along) - fissures.widths[0] / 2, back - q[1]), q[2] - top)
    if fissures.venosum_y is not None:
        v = VENOSUM_FISSURE[1]
        sheet = np.abs(q[1] - fissures.venosum_y + 0.3 * (q[0] - v["x"][1]) + wave) - fissures.widths[1] / 2
        span = np.maximum(np.abs(q[0] - np.mean(v["x"])) - np.ptp(v["x"]) / 2,
                          np.abs(q[2] - np.mean(v["z"])) - np.ptp(v["z"]) / 2)
        f = np.minimum(f, np.maximum(sheet, span))
    if fissures.porta_radii is not None:
        f = np.minimum(f, ellipsoid(q, PORTA_FAT[1], fissures.porta_radii) + wave)
    return f


def spleen_field(axes: Axes, frame: Frame, body: Body, diaphragm: Diaphragm, spine: Spine,
                  hollow: float) -> np.ndarray:
    """The spleen (mm): a crescent, its concave hilum facing the body's centre, against the wall; the
    hilum's hollow moved out by `hollow` times its thickness (shallower: a bulkier spleen)."""
    q = _local(axes, frame)
    t, w, length = SPLEEN_RADII
    f = smax(ellipsoid(q, (0.0, 0.0, 0.0), SPLEEN_RADII),
              -ellipsoid(q, (-(1.4 + hollow) * t, 0.0, 0.0), (1.1 * t, 0.85 * w, 0.8 * length)), 6.0)
    x, y, z = open_axes(axes)
    f = smax(f, cavity_field(axes, body) + 1.0, 4.0)
    f = np.maximum(f, z - diaphragm_z(diaphragm, x, y))
    return smax(f, -spine_zone(axes, spine), 3.0) + _lobulation(axes, frame)


def spleen_frame(rng: np.random.Generator, breath: float) -> Frame:
    """The spleen's pose: posterolateral on the left, long axis along the ribs (lower pole forward)."""
    outward = (-np.cos(np.radians(24.0)), -np.sin(np.radians(24.0)), 0.0)
    centre = np.asarray(SPLEEN_CENTRE) + (0.0, 0.0, 0.7 * breath)
    frame = draw_frame(rng, centre, basis_from(outward, (0.1, -0.5, 1.0)), 110.0, size_sd=0.08,
                        lobe_step=14.0, lobes_mm=3.0)
    if rng.random() < SPLENOMEGALY[0]:
        return replace(frame, size=frame.size * SPLENOMEGALY[1])
    return frame


def grow_spleen(rng: np.random.Generator, spleen: Frame, left_kidney: Frame) -> tuple[Frame, float, Frame]:
    """A large spleen (LARGE_SPLEEN_*): the spleen's frame grown, its hilum's hollow (as
    spleen_field takes it) and the left kidney's frame pushed down below it."""
    grown = replace(spleen, size=spleen.size * rng.uniform(*LARGE_SPLEEN_SIZE))
    kidney = left_kidney.moved((0.0, 0.0, -rng.uniform(*LARGE_SPLEEN_KIDNEY_DROP_MM)))
    return grown, float(rng.uniform(*LARGE_SPLEEN_HOLLOW)), kidney


def draw_pancreas(rng: np.random.Generator, breath: float, thickness: float = 1.0,
              head: float = 1.0) -> tuple[Tube, SmoothField, float]:
    """The pancreas's centre line and thickness (a tube of elliptic cross-section, taller than
    thick), its lobulation field and amplitude (mm); its thickness and lobulation scaled by
    `thickness` (an atrophic gland), its head `head` times as long (SHORT_PANCREAS_HEAD; 1: a
    full head). The random draws are the same whatever the two factors."""
    points = np.asarray(PANCREAS_POINTS) + rng.normal(0.0, 4.0, (len(PANCREAS_POINTS), 3))
    neck = points[PANCREAS_NECK_POINT].copy()
    points = neck + (points - neck) * rng.uniform(0.9, 1.1)
    points += rng.normal(0.0, 6.0, 3) + (0.0, 0.0, 0.5 * breath)
    radii = np.asarray(PANCREAS_RADII) * rng.uniform(0.85, 1.15) * rng.uniform(0.9, 1.1, len(PANCREAS_RADII))
    stretch = (1.0, 1.0, rng.uniform(*PANCREAS_HEIGHT))
    full = spline_tube(points, thickness * radii, step=3.0, stretch=stretch)
    lo, hi = tube_box([full], 10.0)  # the short head lies inside the full one's box
    lobes, amplitude = draw_field(rng, lo, hi, 5.0), thickness * rng.uniform(1.5, 2.5)
    if head == 1.0:
        return full, lobes, amplitude
    head_points = slice(0, PANCREAS_NECK_POINT)
    neck = points[PANCREAS_NECK_POINT]
    points[head_points] = neck + (points[head_points] - neck) * head
    radii[head_points] *= (1.0 + head) / 2.0
    return spline_tube(points, thickness * radii, step=3.0, stretch=stretch), lobes, amplitude


def pancreas_body_and_tail(pancreas: Tube) -> Tube:
    """The pancreas's centre line from its neck (PANCREAS_NECK_X) to the tail."""
    start = int(np.argmin(np.abs(pancreas.points[:, 0] - PANCREAS_NECK_X)))
    return Tube(pancreas.points[start:], pancreas.radii[start:], pancreas.stretch)


def spleen_hilum_point(spleen: Frame, hollow: float, along: float) -> np.ndarray:
    """A point (mm) of the splenic hilum, in the hollow of a spleen drawn with `hollow`
    (spleen_field), `along` times the spleen's half-length above its centre."""
    return spleen.to_world([[-(0.9 + hollow) * SPLEEN_RADII[0], 0.0, along * SPLEEN_RADII[2]]])[0]


def splenic_vein(pancreas: Tube, confluence: np.ndarray, spleen: Frame, hollow: float) -> Tube:
    """The splenic vein: from the splenic hilum along the back of the pancreas to the confluence."""
    p = pancreas.points
    tangent = np.gradient(p[:, :2], axis=0)
    normal = np.stack([tangent[:, 1], -tangent[:, 0]], axis=1)
    normal *= np.sign(-normal[:, 1:2] + 1e-9) / np.linalg.norm(normal, axis=1, keepdims=True)  # posterior
    behind = p.copy()
    behind[:, :2] += normal * (pancreas.radii[:, None] + 4.0)
    start = int(np.argmin(np.abs(p[:, 0] - confluence[0])))
    hilum = spleen_hilum_point(spleen, hollow, -0.2)
    path = np.concatenate([[confluence], behind[start + 2::4], [hilum]])
    return spline_tube(path, np.linspace(5.0, 4.0, len(path)), step=4.0)


# ------------------------------------------------------------------------------------ lesions

def _lesion_field(axes: Axes, centre: np.ndarray, radii: np.ndarray, lobes: SmoothField,
                  amplitude: float) -> np.ndarray:
    """A lesion (mm): an ellipsoid with an irregular outline."""
    q = tuple(g - c for g, c in zip(open_axes(axes), centre))
    return ellipsoid(q, (0.0, 0.0, 0.0), radii) + amplitude * field_on(lobes, axes)


def _lesion_part(rng: np.random.Generator, centre: np.ndarray, organ: int) -> Part:
    """A cyst or hypodense tumour (5-40 mm across) at centre (mm), painted only inside the organ."""
    r = np.exp(rng.uniform(*np.log(LESION_RADIUS_MM)))
    radii = r * rng.uniform(0.8, 1.2, 3)
    cyst = rng.random() < LESIONS[3]
    amplitude = 0.05 * r if cyst else 0.15 * r
    reach = radii.max() + amplitude + 2.0
    lobes = draw_field(rng, centre - reach, centre + reach, max(r / 2, 2.0))
    return Part(partial(_lesion_field, centre=centre, radii=radii, lobes=lobes, amplitude=amplitude),
                box_around(centre, reach), ((0.0, "cyst" if cyst else "tumour"),), resolution=(1.0, 1.0, 1.0),
                within=organ, lesion=True)


def lesion_parts(rng: np.random.Generator, liver: Frame, kidneys: list[Frame]) -> list[Part]:
    """Lesions of the cases that have them: in the liver, sometimes a kidney."""
    if rng.random() >= LESIONS[0]:
        return []
    parts = []
    for _ in range(1 + min(rng.poisson(LESIONS[1]), 4)):
        centre, radii, _ = LIVER_LOBES[0] if rng.random() < 0.75 else LIVER_LOBES[2]
        local = np.asarray(centre) + rng.uniform(-0.45, 0.45, 3) * np.asarray(radii)
        parts.append(_lesion_part(rng, liver.to_world([local])[0], LIVER))
    if rng.random() < LESIONS[2]:
        frame = kidneys[rng.integers(2)]
        local = rng.uniform(-0.6, 0.6, 3) * np.asarray(KIDNEY_RADII) * (0.6, 1.0, 1.0)
        parts.append(_lesion_part(rng, frame.to_world([local])[0], KIDNEY))
    return parts
