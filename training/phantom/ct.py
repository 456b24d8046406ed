"""CT values: a tissue map becomes an image in HU for a contrast phase (priors, texture, blur,
correlated noise), with fatty infiltration, darker liver regions and the arms' shadow; or a
domain-randomised image (random value per tissue, bias field, resolution, noise, gamma).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from training.phantom.body import Arms
from training.phantom.fields import draw_field, field_on, tissue_mask
from training.phantom.priors import (
    ARTERIAL_MOTTLE_HU,
    BLUR_MM,
    BOLUS,
    COARSE_TEXTURE_MM,
    ENHANCING_ORGANS,
    FATTY_GRAIN_MM,
    FINE_TEXTURE_MM,
    FLUID_COLON_TEXTURE_HU,
    FULL_STOMACH_TEXTURE_HU,
    HU_PRIORS,
    LESION_DARKER_HU,
    LIVER_REGION_FADE,
    LIVER_REGION_STEP_MM,
    MOTTLE_THRESHOLD,
    MOTTLED,
    NOISE_GRAIN_MM,
    NOISE_HU,
    ORAL_CONTRAST,
    ORGAN_ENHANCEMENT,
    ORGAN_ENHANCEMENT_SPREAD,
    PANCREAS,
    PHASES,
    RANDOM_BIAS,
    RANDOM_BIAS_MM,
    RANDOM_DOWNSAMPLE,
    RANDOM_GAMMA_SD,
    RANDOM_HU,
    RANDOM_NOISE_HU,
    RANDOM_TEXTURE_HU,
    SLICE_BLUR,
    TISSUE,
)
from training.phantom.scan import Geometry


def draw_organ_enhancement(rng: np.random.Generator) -> tuple[float, dict[str, float]]:
    """The common factor on the organs' enhancement (ORGAN_ENHANCEMENT) and each enhancing
    tissue's factor (that times its organ's ORGAN_ENHANCEMENT_SPREAD draw), keyed by tissue name."""
    common = float(rng.uniform(*ORGAN_ENHANCEMENT))
    factors = {}
    for tissues in ENHANCING_ORGANS.values():
        own = common * float(rng.uniform(*ORGAN_ENHANCEMENT_SPREAD))
        factors.update((name, own) for name in tissues)
    return common, factors


def _tissue_values(rng: np.random.Generator, phase: str, organ_factors: Mapping[str, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tissue code: this case's mean HU (its prior for the phase, the enhancement scaled by the
    case's bolus or, for the tissues organ_factors names, by their factor; plus its sd) and its fine
    and coarse texture amplitudes (HU). rng's draws do not depend on organ_factors."""
    k = PHASES.index(phase)
    means = np.array([p[0] for p in HU_PRIORS.values()])
    sd, fine, coarse = (np.array([p[i] for p in HU_PRIORS.values()]) for i in (1, 2, 3))
    bolus = np.full(len(HU_PRIORS), rng.uniform(*BOLUS))
    for name, factor in (organ_factors or {}).items():
        bolus[TISSUE[name]] = factor
    mean = means[:, 0] + bolus * (means[:, k] - means[:, 0]) + rng.normal(0.0, sd)
    if rng.random() < ORAL_CONTRAST[0]:
        mean[TISSUE["bowel fluid"]] = rng.uniform(*ORAL_CONTRAST[1])
    mean[TISSUE["tumour"]] = min(mean[TISSUE["tumour"]], mean[TISSUE["liver"]] - LESION_DARKER_HU)
    if phase == "arterial":
        for name, amplitude in ARTERIAL_MOTTLE_HU.items():
            coarse[TISSUE[name]] += amplitude
    return mean.astype(np.float32), fine.astype(np.float32), coarse.astype(np.float32)


def _texture(rng: np.random.Generator, geometry: Geometry, step: float) -> np.ndarray:
    """A smooth random field of unit variance (features about step mm) on the geometry's grid."""
    axes = geometry.axes()
    return field_on(draw_field(rng, [a[0] for a in axes], [a[-1] for a in axes], step), axes)


def _blur(image: np.ndarray, spacing: Sequence[float], sigma_mm: Sequence[float]) -> np.ndarray:
    """Gaussian blur of sigma mm along x, y, z (axes whose sigma is under 0.2 voxel are left alone)."""
    sigma = [s / d if s / d >= 0.2 else 0.0 for s, d in zip(sigma_mm, spacing)]
    return ndimage.gaussian_filter(image, sigma, truncate=3.0) if any(sigma) else image


def _noise(rng: np.random.Generator, shape: tuple[int, ...], spacing: Sequence[float], sd: float,
           grain_mm: float) -> np.ndarray:
    """Gaussian noise of sd HU, correlated in-plane over grain_mm (Gaussian sigma), float32."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    sigma = grain_mm / spacing[0]
    if sigma >= 0.2:
        noise = ndimage.gaussian_filter(noise, (sigma, sigma, 0.0), truncate=3.0)
        delta = np.zeros((31, 31), np.float32)
        delta[15, 15] = 1.0
        noise *= 1.0 / np.sqrt((ndimage.gaussian_filter(delta, sigma, truncate=3.0) ** 2).sum())
    noise *= sd
    return noise


def ct_image(tissue: np.ndarray, geometry: Geometry, phase: str, rng: np.random.Generator,
             colon_hu: float | None = None, liver_drop_hu: float = 0.0,
             organ_factors: Mapping[str, float] | None = None, stomach_hu: float | None = None,
             hu_offset: np.ndarray | None = None) -> np.ndarray:
    """A CT (float32 HU, x y z) of the tissue codes in a contrast phase: tissue values and texture,
    gas bubbles in faeces and food, reconstruction and slice blur, correlated noise. With colon_hu
    the faeces are instead a homogeneous fluid of that value (FLUID_COLON_TEXTURE_HU, no bubbles);
    liver_drop_hu lowers the liver (FATTY_LIVER_DROP_HU); organ_factors scale the named tissues'
    enhancement instead of the bolus (draw_organ_enhancement); with stomach_hu the gastric content is
    food of that value (FULL_STOMACH_TEXTURE_HU, no bubbles); hu_offset (HU, the tissue's shape) is
    added before the blur (liver_region_offset); rng's draws are the same either way."""
    mean, fine, coarse = _tissue_values(rng, phase, organ_factors)
    if liver_drop_hu:
        mean[TISSUE["liver"]] -= liver_drop_hu
        mean[TISSUE["tumour"]] = min(mean[TISSUE["tumour"]], mean[TISSUE["liver"]] - LESION_DARKER_HU)
    fills = {"faeces": (colon_hu, FLUID_COLON_TEXTURE_HU), "gastric content": (stomach_hu, FULL_STOMACH_TEXTURE_HU)}
    for name, (hu, texture_hu) in fills.items():  # a value given: that homogeneous fill, without bubbles
        if hu is not None:
            mean[TISSUE[name]], fine[TISSUE[name]] = hu, texture_hu
    mottled = tuple(name for name in MOTTLED if fills[name][0] is None)
    texture = _texture(rng, geometry, FINE_TEXTURE_MM)
    image = mean[tissue]
    image += fine[tissue] * texture
    image[tissue_mask(mottled)[tissue] & (texture > MOTTLE_THRESHOLD)] = mean[TISSUE["gas"]]
    del texture
    image += coarse[tissue] * _texture(rng, geometry, COARSE_TEXTURE_MM)
    if hu_offset is not None:
        image += hu_offset
    blur = rng.uniform(*BLUR_MM)
    image = _blur(image, geometry.spacing, (blur, blur, rng.uniform(*SLICE_BLUR) * geometry.spacing[2]))
    image += _noise(rng, image.shape, geometry.spacing, rng.uniform(*NOISE_HU), rng.uniform(*NOISE_GRAIN_MM))
    return image


def _field_in_box(mask: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                  step: float) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """The bounding box (voxel slices) of a non-empty mask (x y z) and a smooth random field with
    control points every step mm on the grid inside it."""
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(mask))
    axes = tuple(a[b] for a, b in zip(geometry.axes(), box))
    return box, field_on(draw_field(rng, [a[0] for a in axes], [a[-1] for a in axes], step), axes)


def fatty_infiltration(tissue: np.ndarray, labels: np.ndarray, geometry: Geometry, rng: np.random.Generator,
                       fraction: float) -> None:
    """Replace `fraction` of the pancreas's parenchyma (tissue codes, x y z) by visceral fat, in
    lobules about FATTY_GRAIN_MM across (where a smooth random field is lowest), in place; the
    labels stay."""
    present = labels == PANCREAS
    if not present.any():
        return
    box, lobules = _field_in_box(present, geometry, rng, FATTY_GRAIN_MM)
    block = tissue[box]  # a view: painted in place
    gland = present[box] & (block == TISSUE["pancreas"])
    if gland.any():
        block[gland & (lobules < np.quantile(lobules[gland], fraction))] = TISSUE["visceral fat"]


def liver_region_offset(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator, drop_hu: float,
                        share: float) -> np.ndarray:
    """HU to add to a CT of the tissue codes (x y z) for a darker region of the liver: -drop_hu over
    `share` of the liver's parenchyma where a smooth random field (LIVER_REGION_STEP_MM) is lowest,
    fading to 0 over the field's next LIVER_REGION_FADE sd; 0 elsewhere (vessels and lesions too)."""
    offset = np.zeros(tissue.shape, np.float32)
    liver = tissue == TISSUE["liver"]
    if not liver.any():
        return offset
    box, field = _field_in_box(liver, geometry, rng, LIVER_REGION_STEP_MM)
    inside = liver[box]
    values = field[inside]
    threshold = np.quantile(values, share)
    fade = LIVER_REGION_FADE * float(values.std()) + 1e-6
    weight = np.clip((threshold + fade - field) / fade, 0.0, 1.0)
    offset[box] = np.where(inside, -drop_hu * weight, 0.0)
    return offset


def arm_shadow(image: np.ndarray, tissue: np.ndarray, geometry: Geometry, arms: Arms,
               rng: np.random.Generator) -> None:
    """The rays through both arms in each axial slice (photon starvation, beam hardening): the
    image (float32 HU, x y z) made arms.shadow_hu darker, with extra noise of sd arms.shadow_noise
    correlated along the band over arms.shadow_grain mm, in a Gaussian band of sd arms.shadow_width
    mm round the line through both arms' bones; in the body only (tissue not air), in place."""
    x, y, _ = geometry.axes()
    (y_right, y_left) = (arms.y[k] + arms.offset[k][1] for k in range(2))
    slope = (y_right - y_left) / 400.0  # the line through both bones, 200 mm either side of the midline
    across = (y[None, :] - 0.5 * (y_right + y_left) - slope * x[:, None]) / np.hypot(1.0, slope)
    band = np.exp(-0.5 * (across / arms.shadow_width) ** 2).astype(np.float32)
    rows = np.nonzero(band.max(axis=0) > 0.01)[0]
    if not len(rows):
        return
    block = (slice(None), slice(int(rows[0]), int(rows[-1]) + 1))
    sx, sy, _ = geometry.spacing
    shadow = rng.standard_normal((len(x), block[1].stop - block[1].start, image.shape[2]), dtype=np.float32)
    shadow = ndimage.gaussian_filter(shadow, (arms.shadow_grain / sx, 0.5 / sy, 0.0), truncate=3.0)
    shadow *= arms.shadow_noise / max(float(shadow.std()), 1e-6)  # the noise, then the darkening
    shadow -= arms.shadow_hu
    shadow *= band[block][:, :, None]
    shadow *= tissue[block] != TISSUE["air"]
    image[block] += shadow


def randomised_image(tissue: np.ndarray, geometry: Geometry, rng: np.random.Generator) -> np.ndarray:
    """A domain-randomised image (float32, x y z) of the tissue codes: every tissue a random mean
    and texture in RANDOM_HU, a multiplicative smooth bias field, a random resolution (blur,
    downsampling and back), noise and a gamma."""
    n = len(TISSUE)
    mean = rng.uniform(*RANDOM_HU, n).astype(np.float32)
    texture = rng.uniform(*RANDOM_TEXTURE_HU, n).astype(np.float32)
    image = mean[tissue] + texture[tissue] * _texture(rng, geometry, FINE_TEXTURE_MM)
    low = RANDOM_HU[0]
    image -= low
    image *= np.exp(rng.uniform(*RANDOM_BIAS) * _texture(rng, geometry, RANDOM_BIAS_MM))
    image += low
    factor = rng.uniform(*RANDOM_DOWNSAMPLE, 3)
    image = _blur(image, geometry.spacing, 0.4 * factor * np.asarray(geometry.spacing))
    small = ndimage.zoom(image, 1.0 / factor, order=1)
    image = ndimage.zoom(small, np.asarray(image.shape) / small.shape, order=1)
    image += _noise(rng, image.shape, geometry.spacing, rng.uniform(*RANDOM_NOISE_HU), 0.0)
    lo, hi = float(image.min()), float(image.max())
    scaled = np.clip((image - lo) / max(hi - lo, 1e-6), 0.0, 1.0) ** np.exp(rng.normal(0.0, RANDOM_GAMMA_SD))
    return (RANDOM_HU[0] + (RANDOM_HU[1] - RANDOM_HU[0]) * scaled).astype(np.float32)
