"""A phantom from a seed: `generate` draws its anatomy, grid, look and variations (`Mix`) from
independent streams of the seed, `save` writes it as a FLARE-layout pair.
"""
from __future__ import annotations

import gzip
from dataclasses import astuple, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.orientations import apply_orientation, axcodes2ornt, inv_ornt_aff, ornt_transform

from flare_common.files import atomic_output
from flare_common.nifti import image_name
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
    """A synthetic CT and what was drawn for it. image and labels are indexed (x, y, z) canonical
    (RAS+) on `geometry`'s grid; the other fields record the case's look and variations (each
    with the prior or function that defines it; the default is the plain case's value)."""

    image: np.ndarray  # float32 HU
    labels: np.ndarray  # uint8 LABELS
    geometry: Geometry
    phase: str  # contrast phase (PHASES)
    randomised: bool  # image domain-randomised (randomised_image)
    lesions: int  # how many lesions show
    orientation: tuple[str, str, str]  # axis codes the files are stored in
    scan: str = "given"  # scan range (SCAN_RANGES, EXTRA_RANGES); "given" for a grid passed in
    fatty: float = 0.0  # fraction of the pancreas replaced by fat (fatty_infiltration; 0: lean)
    metal: str = ""  # kind of metal (metal_implants; "": none)
    pancreas_thickness: float = 1.0  # factor on the pancreas's thickness (ATROPHIC_PANCREAS; 1: full)
    fat_plane_mm: float = 0.0  # fat round the pancreas (PANCREAS_FAT_PLANE_MM; 0: none)
    colon_hu: float | None = None  # the colon's fluid (FLUID_COLON_HU; None: mottled faeces)
    pelvis: bool = False  # pelvic organs, hip muscles and hips (pelvic_organ_parts)
    liver_drop_hu: float = 0.0  # the liver lowered by fat (FATTY_LIVER_DROP_HU; 0: lean)
    sinus_labelled: bool = False  # the kidney label includes the renal sinus fat (kidney_parts)
    pancreas_head: float = 1.0  # factor on the pancreatic head's length (SHORT_PANCREAS_HEAD; 1: full)
    organ_enhancement: float | None = None  # common factor (draw_organ_enhancement; None: the vessels' bolus)
    liver_fissures: bool = False  # fat-filled fissures in the liver (UMBILICAL_FISSURE)
    arms: bool = False  # arms beside the body (Arms)
    long_left_lobe: bool = False  # LEFT_LOBE_TONGUE
    stomach_hu: float | None = None  # the stomach's food (FULL_STOMACH_HU; None: the usual content)
    large_spleen: bool = False  # LARGE_SPLEEN_SIZE
    liver_region_hu: float = 0.0  # a darker region of the liver (LIVER_REGION_HU; 0: none)
    pelvis_labelled: bool = True  # the kidney label keeps the renal pelvis's urine (kidney_parts)

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
    """What fraction of a set's cases vary beyond the defaults, variation by variation (each with
    the prior or function that defines it). Each is drawn from a stream of its own: a case that
    does not get a variation is the case of the plain set. chest, slab, thin_slab, liver_cut and
    lower_abdomen are scans of EXTRA_RANGES' ranges of those names (together at most 1)."""

    randomise: float = 0.0  # images domain-randomised (randomised_image)
    chest: float = 0.0
    slab: float = 0.0
    fatty: float = 0.0  # a fatty pancreas (fatty_infiltration)
    metal: float = 0.0  # implants and their streaks (metal_implants)
    atrophic: float = 0.0  # a thinner pancreas (ATROPHIC_PANCREAS)
    fat_plane: float = 0.0  # fat round the pancreas's body and tail that the gut keeps out of (PANCREAS_FAT_PLANE_MM)
    thin_slab: float = 0.0
    fluid_colon: float = 0.0  # a colon of homogeneous fluid (FLUID_COLON_HU)
    liver_cut: float = 0.0
    pelvis: float = 0.0  # the pelvic organs, hip muscles and hips (pelvic_organ_parts)
    fatty_liver: float = 0.0  # a liver darkened by fat (FATTY_LIVER_DROP_HU)
    kidney_sinus: float = 0.0  # the renal sinus fat labelled kidney, as in sets made before 2026-12-05 (kidney_parts)
    short_head: float = 0.0  # a short pancreatic head (SHORT_PANCREAS_HEAD)
    non_contrast: float = 0.0  # a non-contrast scan whatever phase PHASE_PROBABILITIES drew
    organ_enhancement: float = 0.0  # organs enhancing apart from the vessels (draw_organ_enhancement)
    liver_fissures: float = 0.0  # fat-filled fissures in the liver (UMBILICAL_FISSURE)
    arms: float = 0.0  # the arms beside the body and their shadow across it (Arms, arm_shadow)
    long_left_lobe: float = 0.0  # a left lobe reaching down in front of the stomach (LEFT_LOBE_TONGUE)
    full_stomach: float = 0.0  # smooth food as dense as the organs in the stomach (FULL_STOMACH_HU)
    large_spleen: float = 0.0  # a large, bulky spleen with the left kidney below it (LARGE_SPLEEN_SIZE)
    liver_region: float = 0.0  # a darker region of the liver (liver_region_offset)
    lower_abdomen: float = 0.0
    # a kidney label of the parenchyma alone, the renal pelvis's urine left out with the sinus fat
    # (kidney_parts; not with kidney_sinus: EXCLUSIVE_FRACTIONS)
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
MIN_MAX_SIDE = 16  # generate's smallest max_side: fewer voxels a side are coarser than the 50 mm every reader accepts


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
    parts = draw_anatomy(anatomy, pancreas_thickness=thickness, fat_plane_mm=fat_plane_mm,
                         pelvic_organs=pelvic if pelvis else None, sinus_labelled=sinus_labelled,
                         pancreas_head=head_length, fissures=fissured if fissures else None, arms=arms,
                         tongue=lobed if long_left_lobe else None, spleen_growth=grown if large_spleen else None,
                         pelvis_labelled=pelvis_labelled)
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
    return Phantom(
        image, labels, geometry, phase, randomised, lesions, orientation, scan=scan_name, fatty=fatty, metal=metal,
        pancreas_thickness=thickness, fat_plane_mm=fat_plane_mm, colon_hu=None if randomised else colon_hu,
        pelvis=pelvis, liver_drop_hu=0.0 if randomised else liver_drop_hu, sinus_labelled=sinus_labelled,
        pancreas_head=head_length, organ_enhancement=organ_enhancement, liver_fissures=fissures,
        arms=arms is not None, long_left_lobe=long_left_lobe, stomach_hu=None if randomised else stomach_hu,
        large_spleen=large_spleen, liver_region_hu=region_hu, pelvis_labelled=pelvis_labelled)


def _write_nifti(image: nib.Nifti1Image, path: Path) -> None:
    """Write a NIfTI image to path (gzip-compressed as nibabel writes .nii.gz: level 1, no name or
    time in the gzip header, so the same image gives the same bytes), whole or not at all."""
    with atomic_output(path) as f, gzip.GzipFile(filename="", mode="wb", compresslevel=1, fileobj=f, mtime=0) as gz:
        image.to_stream(gz)


def save(phantom: Phantom, images_dir: Path, labels_dir: Path, case: str) -> tuple[Path, Path]:
    """Write images_dir/<case>_0000.nii.gz (int16 HU, clipped to HU_STORED) and labels_dir/<case>.nii.gz
    (uint8) in the phantom's storage orientation, sharing one affine (qform and sform, code 1).
    Each file is written whole or not at all (atomic_output), and an earlier label file of the case is
    removed before the image is replaced, so that an interrupted write never leaves an image and
    labels of two different phantoms: at worst an image without labels. OSError naming the file."""
    ornt = ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(phantom.orientation))
    affine = phantom.geometry.affine @ inv_ornt_aff(ornt, phantom.labels.shape)
    image = np.clip(np.rint(phantom.image), *HU_STORED).astype(np.int16)
    paths = (Path(images_dir) / image_name(case), Path(labels_dir) / f"{case}.nii.gz")
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
