"""A phantom from a seed: `generate` draws its anatomy, grid, look and variations (`Mix`) from
independent streams of the seed, `save` writes it as a FLARE-layout pair.
"""
from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import IO

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from flare_common.files import atomic_output
from training.phantom.anatomy import draw_anatomy
from training.phantom.body import draw_arms
from training.phantom.ct import (
    arm_shadow,
    ct_image,
    draw_organ_enhancement,
    fatty_infiltration,
    liver_region_offset,
    randomised_image,
)
from training.phantom.fields import render
from training.phantom.metal import metal_implants
from training.phantom.priors import (
    ATROPHIC_PANCREAS,
    FATTY_LIVER_DROP_HU,
    FATTY_PANCREAS,
    FLUID_COLON_HU,
    FULL_STOMACH_HU,
    HU_STORED,
    LIVER_REGION_HU,
    LIVER_REGION_SHARE,
    METAL_KINDS,
    PANCREAS_FAT_PLANE_MM,
    PHASE_PROBABILITIES,
    PHASES,
    SHORT_PANCREAS_HEAD,
)
from training.phantom.scan import EXTRA_RANGES, ORIENTATION_P, ORIENTATIONS, Geometry, capped, draw_geometry


@dataclass
class Phantom:
    """A synthetic CT: image (float32 HU) and labels (uint8 LABELS) indexed (x, y, z) canonical
    (RAS+) on `geometry`'s grid; the contrast phase, whether the image is domain-randomised, how
    many lesions show, the storage orientation (axis codes) its files are written in, the name
    of its scan range (SCAN_RANGES, EXTRA_RANGES; "given" for a grid passed in) and the fraction
    of its pancreas replaced by fat (fatty_infiltration; 0: a lean gland), the factor on its
    pancreas's thickness (ATROPHIC_PANCREAS; 1: a full gland), the kind of metal in it
    (metal_implants; "": none), the thickness of the fat plane round its pancreas
    (PANCREAS_FAT_PLANE_MM; 0: none), the HU of its colon's fluid content (FLUID_COLON_HU;
    None: mottled faeces), whether it has pelvic organs and hips (pelvic_organ_parts), how many
    HU its liver is lowered by fat (FATTY_LIVER_DROP_HU; 0: a lean liver), whether its kidney
    label includes the renal sinus fat (kidney_parts) and the factor on its pancreatic head's
    length (SHORT_PANCREAS_HEAD; 1: a full head) and the common factor on its organs' enhancement
    (draw_organ_enhancement; None: the case's bolus, as its vessels), whether its liver has fat-filled
    fissures (UMBILICAL_FISSURE), whether its arms lie beside the body (Arms), whether its left
    lobe is long (LEFT_LOBE_TONGUE), the HU of its stomach's food (FULL_STOMACH_HU; None: the usual
    content), whether its spleen is large (LARGE_SPLEEN_SIZE) and how many HU a region of its liver
    is darker (LIVER_REGION_HU; 0: none), and whether its kidney label keeps the renal pelvis's urine
    (kidney_parts; False: the parenchyma alone)."""

    image: np.ndarray
    labels: np.ndarray
    geometry: Geometry
    phase: str
    randomised: bool
    lesions: int
    orientation: tuple[str, str, str]
    scan: str = "given"
    fatty: float = 0.0
    metal: str = ""
    pancreas_thickness: float = 1.0
    fat_plane_mm: float = 0.0
    colon_hu: float | None = None
    pelvis: bool = False
    liver_drop_hu: float = 0.0
    sinus_labelled: bool = False
    pancreas_head: float = 1.0
    organ_enhancement: float | None = None
    liver_fissures: bool = False
    arms: bool = False
    long_left_lobe: bool = False
    stomach_hu: float | None = None
    large_spleen: bool = False
    liver_region_hu: float = 0.0
    pelvis_labelled: bool = True

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size (mm) along x, y, z."""
        return self.geometry.spacing


def case_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of case `index` of a set made with `seed`: depends on nothing else."""
    return np.random.SeedSequence(seed, spawn_key=(index,))


def _stream(root: np.random.SeedSequence, k: int) -> np.random.Generator:
    """Independent random stream k of a seed (anatomy, geometry, appearance, storage, extent, fat,
    metal, atrophy, fat plane, colon, pelvis, liver fat, kidney sinus, pancreatic head, phase, organ
    enhancement, liver fissures, arms, left lobe, stomach, spleen, liver region, kidney parenchyma)."""
    return np.random.default_rng(np.random.SeedSequence(root.entropy, spawn_key=(*root.spawn_key, k)))


# Mix's fractions that may not both be above 0, and why: a case drawing both would be labelled in
# neither of the two ways.
EXCLUSIVE_FRACTIONS = {
    ("kidney_sinus", "kidney_parenchyma"): "a kidney label with the sinus fat but without the renal pelvis "
                                           "is neither labelling",
}


def exclusive_pair(fractions: dict[str, float]) -> tuple[str, str] | None:
    """The first pair of EXCLUSIVE_FRACTIONS both above 0 among these fractions (Mix field -> P), or None."""
    return next((pair for pair in EXCLUSIVE_FRACTIONS if all(fractions.get(name, 0.0) > 0.0 for name in pair)), None)


@dataclass(frozen=True)
class Mix:
    """What fraction of a set's cases vary beyond the defaults: randomise, images domain-randomised
    (randomised_image); chest, slab, thin_slab, liver_cut and lower_abdomen, scans of EXTRA_RANGES' ranges of
    those names; fatty, a fatty pancreas (fatty_infiltration); metal, implants and their streaks (metal_implants);
    atrophic, a thinner pancreas (ATROPHIC_PANCREAS); fat_plane, fat round the pancreas's body and tail that the
    gut keeps out of (PANCREAS_FAT_PLANE_MM); fluid_colon, a colon of homogeneous fluid (FLUID_COLON_HU);
    pelvis, the pelvic organs, hip muscles and hips (pelvic_organ_parts); fatty_liver, a liver
    darkened by fat (FATTY_LIVER_DROP_HU); kidney_sinus, the renal sinus fat labelled kidney as in
    sets made before 2026-12-05 (kidney_parts); short_head, a short pancreatic head
    (SHORT_PANCREAS_HEAD); non_contrast, a non-contrast scan whatever phase PHASE_PROBABILITIES
    drew; organ_enhancement, organs enhancing apart from the vessels (draw_organ_enhancement);
    liver_fissures, fat-filled fissures in the liver (UMBILICAL_FISSURE); arms, the arms beside the
    body and their shadow across it (Arms, arm_shadow); long_left_lobe, a left lobe reaching down in
    front of the stomach (LEFT_LOBE_TONGUE); full_stomach, smooth food as dense as the organs in the
    stomach (FULL_STOMACH_HU); large_spleen, a large, bulky spleen with the left kidney below it
    (LARGE_SPLEEN_SIZE); liver_region, a darker region of the liver (liver_region_offset);
    kidney_parenchyma, a kidney label of the parenchyma alone, the renal pelvis's urine left out
    with the sinus fat (kidney_parts; not with kidney_sinus: EXCLUSIVE_FRACTIONS). Each is drawn from
    a stream of its own: a case that does not get a variation is the case of the plain set."""

    randomise: float = 0.0
    chest: float = 0.0
    slab: float = 0.0
    fatty: float = 0.0
    metal: float = 0.0
    atrophic: float = 0.0
    fat_plane: float = 0.0
    thin_slab: float = 0.0
    fluid_colon: float = 0.0
    liver_cut: float = 0.0
    pelvis: float = 0.0
    fatty_liver: float = 0.0
    kidney_sinus: float = 0.0
    short_head: float = 0.0
    non_contrast: float = 0.0
    organ_enhancement: float = 0.0
    liver_fissures: float = 0.0
    arms: float = 0.0
    long_left_lobe: float = 0.0
    full_stomach: float = 0.0
    large_spleen: float = 0.0
    liver_region: float = 0.0
    lower_abdomen: float = 0.0
    kidney_parenchyma: float = 0.0

    def __post_init__(self) -> None:
        if not all(0.0 <= p <= 1.0 for p in astuple(self)) or sum(p for _, p in self._extra_fractions()) > 1.0:
            raise ValueError(f"fractions must lie in [0, 1], {' + '.join(EXTRA_RANGES)} at most 1: {self}")
        if pair := exclusive_pair(vars(self)):
            raise ValueError(f"{pair[0]} and {pair[1]} exclude each other ({EXCLUSIVE_FRACTIONS[pair]}): {self}")

    def _extra_fractions(self) -> list[tuple[str, float]]:
        """(EXTRA_RANGES name, fraction) in EXTRA_RANGES' order."""
        return [(name, getattr(self, name.replace(" ", "_"))) for name in EXTRA_RANGES]

    def extra_range(self, u: float) -> str | None:
        """The EXTRA_RANGES entry of a case whose extent stream drew u in [0, 1), None for SCAN_RANGES."""
        edge = 0.0
        for name, p in self._extra_fractions():
            edge += p
            if u < edge:
                return name
        return None


PLAIN = Mix()  # no variations: every case as drawn from SCAN_RANGES, in CT values


def generate(seed: int | np.random.SeedSequence, *, geometry: Geometry | None = None, max_side: int | None = None,
             mix: Mix = PLAIN) -> Phantom:
    """The phantom of a seed: its anatomy, on `geometry` (default: one drawn from the seed), capped
    to max_side voxels per axis; its image domain-randomised or without contrast and its scan
    range one of the extra ones, its pancreas fatty, atrophic, short-headed or in a fat plane, its
    colon fluid, its spleen large, its liver with a darker region, its arms beside it and metal in it
    with mix's probabilities. The anatomy depends only on the seed, on whether the pancreas is
    atrophic or short-headed, on its fat plane, on the liver's fissures, on its left lobe, on its
    spleen's size and on the arms, never on the grid; the labels never on mix.randomise,
    mix.non_contrast, mix.fatty, mix.metal, mix.fat_plane, mix.fluid_colon, mix.pelvis,
    mix.fatty_liver, mix.organ_enhancement, mix.arms, mix.full_stomach or mix.liver_region
    (mix.kidney_sinus changes the labels, and the image only where a kidney tumour reaches into the
    sinus: it stops at the unlabelled sinus fat; mix.kidney_parenchyma likewise, at the unlabelled
    urine)."""
    root = seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)
    (anatomy, scan, look, storage, extent, fat, implant, atrophy, plane, colon, pelvic, steatosis, sinus, head,
     unenhanced, enhancement, fissured, armed, lobed, fed, grown, patched, parenchymal) = (_stream(root, k) for k in range(23))
    thickness = float(atrophy.uniform(*ATROPHIC_PANCREAS)) if atrophy.random() < mix.atrophic else 1.0
    fat_plane_mm = float(plane.uniform(*PANCREAS_FAT_PLANE_MM)) if plane.random() < mix.fat_plane else 0.0
    pelvis = bool(pelvic.random() < mix.pelvis)
    sinus_labelled = bool(sinus.random() < mix.kidney_sinus)
    head_length = float(head.uniform(*SHORT_PANCREAS_HEAD)) if head.random() < mix.short_head else 1.0
    fissures = bool(fissured.random() < mix.liver_fissures)
    arms = draw_arms(armed) if armed.random() < mix.arms else None
    long_left_lobe = bool(lobed.random() < mix.long_left_lobe)
    large_spleen = bool(grown.random() < mix.large_spleen)
    pelvis_labelled = bool(parenchymal.random() >= mix.kidney_parenchyma)
    parts = draw_anatomy(anatomy, thickness, fat_plane_mm, pelvic if pelvis else None, sinus_labelled, head_length,
                         fissured if fissures else None, arms, lobed if long_left_lobe else None,
                         grown if large_spleen else None, pelvis_labelled)
    if geometry is not None:
        geometry, scan_name = capped(geometry, max_side), "given"
    else:
        geometry, scan_name = draw_geometry(scan, max_side, mix.extra_range(extent.random()))
    tissue, labels, lesions = render(parts, geometry)
    fatty = float(fat.uniform(*FATTY_PANCREAS)) if fat.random() < mix.fatty else 0.0
    if fatty:
        fatty_infiltration(tissue, labels, geometry, fat, fatty)
    colon_hu = float(colon.uniform(*FLUID_COLON_HU)) if colon.random() < mix.fluid_colon else None
    liver_drop_hu = float(steatosis.uniform(*FATTY_LIVER_DROP_HU)) if steatosis.random() < mix.fatty_liver else 0.0
    stomach_hu = float(fed.uniform(*FULL_STOMACH_HU)) if fed.random() < mix.full_stomach else None
    region_hu = float(patched.uniform(*LIVER_REGION_HU)) if patched.random() < mix.liver_region else 0.0
    randomised = bool(look.random() < mix.randomise)
    phase = PHASES[look.choice(len(PHASES), p=PHASE_PROBABILITIES)]
    if unenhanced.random() < mix.non_contrast:
        phase = PHASES[0]
    organ_enhancement, organ_factors = (draw_organ_enhancement(enhancement)
                                        if enhancement.random() < mix.organ_enhancement else (None, None))
    if randomised or phase == PHASES[0]:
        organ_enhancement, organ_factors = None, None  # no enhancement to scale
    if randomised:
        region_hu = 0.0  # no CT values to lower
    offset = (liver_region_offset(tissue, geometry, patched, region_hu, float(patched.uniform(*LIVER_REGION_SHARE)))
              if region_hu else None)
    image = (randomised_image(tissue, geometry, look) if randomised
             else ct_image(tissue, geometry, phase, look, colon_hu, liver_drop_hu, organ_factors, stomach_hu, offset))
    del offset
    if arms is not None and not randomised:
        arm_shadow(image, tissue, geometry, arms, armed)
    metal = ""
    if implant.random() < mix.metal:
        kind = METAL_KINDS[implant.integers(len(METAL_KINDS))]
        metal = kind if metal_implants(image, tissue, labels, geometry, implant, kind) else ""
    orientation = ORIENTATIONS[storage.choice(len(ORIENTATIONS), p=ORIENTATION_P)]
    return Phantom(image, labels, geometry, phase, randomised, lesions, orientation, scan_name, fatty, metal, thickness,
                   fat_plane_mm, None if randomised else colon_hu, pelvis, 0.0 if randomised else liver_drop_hu,
                   sinus_labelled, head_length, organ_enhancement, fissures, arms is not None, long_left_lobe,
                   None if randomised else stomach_hu, large_spleen, region_hu, pelvis_labelled)


@contextmanager
def output_file(path: Path, mode: str = "wb") -> Iterator[IO]:
    """atomic_output(path, mode): the file appears whole or not at all; an OSError names path itself
    (not the temporary file beside it) in its filename."""
    try:
        with atomic_output(path, mode) as f:
            yield f
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def _write_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Write a NIfTI image to path (gzip-compressed as nibabel writes .nii.gz: level 1, no name or
    time in the gzip header, so the same image gives the same bytes) through output_file."""
    with output_file(path) as f, gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=f, mtime=0) as gz:
        image.to_stream(gz)


def save(phantom: Phantom, images_dir: Path, labels_dir: Path, case: str) -> tuple[Path, Path]:
    """Write images_dir/<case>_0000.nii.gz (int16 HU, clipped to HU_STORED) and labels_dir/<case>.nii.gz
    (uint8) in the phantom's storage orientation, sharing one affine (qform and sform, code 1).
    Each file is written whole or not at all (output_file), and an earlier label file of the case is
    removed before the image is replaced, so that an interrupted write never leaves an image and
    labels of two different phantoms: at worst an image without labels. OSError naming the file."""
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(phantom.orientation))
    affine = phantom.geometry.affine @ inv_ornt_aff(ornt, phantom.labels.shape)
    image = np.clip(np.rint(phantom.image), *HU_STORED).astype(np.int16)
    paths = (Path(images_dir) / f"{case}_0000.nii.gz", Path(labels_dir) / f"{case}.nii.gz")
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    paths[1].unlink(missing_ok=True)
    for data, path in zip((image, phantom.labels), paths):
        img = nib.Nifti1Image(np.ascontiguousarray(apply_orientation(data, ornt)), affine)
        img.set_qform(affine, code=1)
        img.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        _write_nifti(img, path)
    return paths
