"""The synthetic abdomen generator: determinism, anatomy, CT values, files and the command line."""
import csv
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from flare_common import cli
from training import phantom as ph
from training.phantom import anatomy as anatomy_module
from training.phantom import atlas, body, ct, priors

SMALL = 64  # max_side of the quick phantoms
# The whole abdomen, lung bases to pelvis, on a coarse grid: for volumes and positions.
ABDOMEN = ph.Geometry((134, 110, 150), (3.0, 3.0, 3.0), (-200.0, -150.0, -220.0))


def anatomy(seed: int, geometry: ph.Geometry = ABDOMEN) -> tuple[np.ndarray, np.ndarray, int]:
    """Tissue codes, labels and lesion count of the anatomy of `seed` on a geometry."""
    return ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(seed))), geometry)


def centroid(mask: np.ndarray, geometry: ph.Geometry) -> np.ndarray:
    """Patient-frame centroid (mm) of a mask."""
    return np.argwhere(mask).mean(axis=0) * geometry.spacing + geometry.origin


@pytest.fixture(scope="module")
def small_phantoms() -> list[ph.Phantom]:
    return [ph.generate(ph.case_seed(11, i), max_side=SMALL) for i in range(10)]


def test_same_seed_same_phantom_bit_for_bit():
    a, b = (ph.generate(ph.case_seed(3, 7), max_side=48) for _ in range(2))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert (a.phase, a.orientation, a.lesions, a.geometry) == (b.phase, b.orientation, b.lesions, b.geometry)
    other = ph.generate(ph.case_seed(4, 7), max_side=48)
    assert not np.array_equal(a.image, other.image)


def test_case_seed_depends_only_on_seed_and_index():
    s = ph.case_seed(5, 2)
    assert s.entropy == ph.case_seed(5, 2).entropy and s.spawn_key == ph.case_seed(5, 2).spawn_key
    keys = {(ph.case_seed(seed, i).entropy, ph.case_seed(seed, i).spawn_key) for seed in (0, 1) for i in range(3)}
    assert len(keys) == 6


def test_labels_and_organs_present(small_phantoms):
    for p in small_phantoms:
        assert p.image.dtype == np.float32 and p.labels.dtype == np.uint8
        assert p.image.shape == p.labels.shape == p.geometry.shape
        assert set(np.unique(p.labels)) <= {0, 1, 2, 3, 4}
        assert max(p.labels.shape) <= SMALL
    complete = sum(all((p.labels == k).any() for k in ph.LABELS) for p in small_phantoms)
    assert complete >= 9


def test_geometry_ranges_and_cap():
    rng = np.random.default_rng(0)
    for _ in range(200):
        g, scan = ph.draw_geometry(rng)
        assert scan in ph.SCAN_RANGES and g.shape[:2] == (ph.MATRIX, ph.MATRIX) and 1 <= g.shape[2] <= ph.MAX_SLICES
        assert 0.6 <= g.spacing[0] == g.spacing[1] <= 1.0 and 0.8 <= g.spacing[2] <= 5.0
        coverage = g.shape[2] * g.spacing[2]
        assert coverage <= 450.0 + g.spacing[2] and (coverage >= 150.0 - g.spacing[2] or g.shape[2] == ph.MAX_SLICES)
    g = ph.Geometry((512, 512, 300), (0.8, 0.8, 1.0), (-200.0, -190.0, -150.0))
    c = ph.capped(g, 192)
    assert c.shape == (192, 192, 192) and c.spacing[0] == pytest.approx(0.8 * 512 / 192)
    for axis in range(3):  # the field of view (first and last voxel edges) is kept
        lo_c, lo_g = (q.origin[axis] - q.spacing[axis] / 2 for q in (c, g))
        assert lo_c == pytest.approx(lo_g)
        assert lo_c + c.shape[axis] * c.spacing[axis] == pytest.approx(lo_g + g.shape[axis] * g.spacing[axis])


def test_anatomy_does_not_depend_on_the_grid():
    whole = ph.Geometry((60, 50, 40), (4.0, 4.0, 5.0), (-120.0, -100.0, -60.0))
    part = ph.Geometry((30, 50, 12), (4.0, 4.0, 5.0), (-40.0, -100.0, 0.0))  # a sub-block of the same grid
    _, labels, _ = anatomy(21, whole)
    _, sub, _ = anatomy(21, part)
    assert sub.any() and np.array_equal(sub, labels[20:50, :, 12:24])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_organ_volumes_and_positions(seed):
    tissue, labels, _ = anatomy(seed)
    ml = np.prod(ABDOMEN.spacing) / 1000.0
    assert 800 <= (labels == ph.LIVER).sum() * ml <= 2600
    assert 40 <= (labels == ph.SPLEEN).sum() * ml <= 600
    assert 30 <= (labels == ph.PANCREAS).sum() * ml <= 150
    parts, n = ndimage.label(labels == ph.KIDNEY)
    kidneys = sorted(range(1, n + 1), key=lambda i: -(parts == i).sum())[:2]
    assert all(60 <= (parts == i).sum() * ml <= 320 for i in kidneys)
    right, left = sorted((centroid(parts == i, ABDOMEN) for i in kidneys), key=lambda c: -c[0])
    liver, spleen = centroid(labels == ph.LIVER, ABDOMEN), centroid(labels == ph.SPLEEN, ABDOMEN)
    pancreas = centroid(labels == ph.PANCREAS, ABDOMEN)
    canal = centroid(tissue == ph.TISSUE["csf"], ABDOMEN)
    assert liver[0] > 0 > spleen[0] and right[0] > 0 > left[0]  # x grows towards the patient's right
    assert canal[1] < min(right[1], left[1]) < max(right[1], left[1]) < pancreas[1]  # y grows anteriorly
    assert abs(canal[0]) < 10 and liver[2] > pancreas[2]


def test_the_kidney_label_leaves_out_the_renal_sinus_fat_and_keeps_the_pelvis():
    """Real references draw the kidney as a C open at the hilum: the sinus fat inside the outline is
    not kidney; cortex, medulla and the pelvis's urine are."""
    tissue, labels, _ = anatomy(1)
    kidney = labels == ph.KIDNEY
    assert not (tissue[kidney] == ph.TISSUE["fat"]).any()
    assert (tissue[kidney] == ph.TISSUE["urine"]).any()
    outline = np.stack([ndimage.binary_fill_holes(ndimage.binary_closing(kidney[:, :, z], iterations=3))
                        for z in range(kidney.shape[2])], axis=2)
    sinus = outline & ~kidney & (tissue == ph.TISSUE["fat"])
    assert sinus.sum() * np.prod(ABDOMEN.spacing) / 1000.0 >= 2.0  # ml, both kidneys


def test_the_sinus_labelled_as_before_changes_only_the_kidney_label() -> None:
    """--kidney-sinus 1 labels the sinus fat kidney, as sets made before it was left out did: the
    same image (no tumour reaches this case's sinus), and the kidney label grown by fat voxels
    inside the kidney only."""
    seed = ph.case_seed(1000, 0)
    grid = ph.Geometry((60, 50, 50), (5.0, 5.0, 5.0), (-150.0, -110.0, -150.0))
    now, before = (ph.generate(seed, geometry=grid, mix=ph.Mix(kidney_sinus=p)) for p in (0.0, 1.0))
    assert (now.sinus_labelled, before.sinus_labelled) == (False, True)
    assert np.array_equal(now.image, before.image)
    changed = now.labels != before.labels
    assert changed.any() and (before.labels[changed] == ph.KIDNEY).all() and (now.labels[changed] == 0).all()
    assert changed.sum() < 0.2 * (before.labels == ph.KIDNEY).sum()
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(kidney_sinus=0.5), lambda p: p.sinus_labelled, seed=6, cases=5)


def test_venous_phase_values_and_lesions():
    seed = next(s for s in range(40)
                if any(p.lesion for p in ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(s)))))
    tissue, labels, lesions = anatomy(seed)
    assert lesions >= 1
    image = ph.ct_image(tissue, ABDOMEN, "portal-venous", np.random.default_rng(0))
    for organ, (low, high) in {ph.LIVER: (90, 145), ph.SPLEEN: (90, 150), ph.KIDNEY: (110, 210),
                               ph.PANCREAS: (70, 130)}.items():
        assert low <= np.median(image[labels == organ]) <= high, ph.LABELS[organ]
    lesion = np.isin(tissue, [ph.TISSUE["cyst"], ph.TISSUE["tumour"]])
    assert (labels[lesion] > 0).all()  # lesions keep their organ's label
    liver = (labels == ph.LIVER) & (tissue == ph.TISSUE["liver"])
    in_liver = lesion & (labels == ph.LIVER)
    if in_liver.any():
        assert image[in_liver].mean() < image[liver].mean() - 15
    plain = ph.ct_image(tissue, ABDOMEN, "non-contrast", np.random.default_rng(0))
    assert 45 <= np.median(plain[labels == ph.LIVER]) <= 75
    assert np.median(image[labels == ph.LIVER]) > np.median(plain[labels == ph.LIVER]) + 25


def test_extra_scan_ranges_change_only_the_z_range():
    """A case drawn into the chest, slab, liver-cut or lower-abdomen range keeps its anatomy, in-plane
    grid and look; the chest scan starts above the heart's lower part, the slab is short, the liver
    cut starts in the liver, the lower abdomen below the spleen; a case of a mixed set that is not
    drawn into one is the plain set's case."""
    seed = ph.case_seed(6, 1)
    plain = ph.generate(seed, max_side=48)
    chest = ph.generate(seed, max_side=48, mix=ph.Mix(chest=1.0))
    slab = ph.generate(seed, max_side=48, mix=ph.Mix(slab=1.0))
    thin = ph.generate(seed, max_side=48, mix=ph.Mix(thin_slab=1.0))
    cut = ph.generate(seed, max_side=48, mix=ph.Mix(liver_cut=1.0))
    lower = ph.generate(seed, max_side=48, mix=ph.Mix(lower_abdomen=1.0))
    assert (plain.scan in ph.SCAN_RANGES, chest.scan, slab.scan, thin.scan, cut.scan, lower.scan) == (
        True, "chest", "slab", "thin slab", "liver cut", "lower abdomen")
    for other in (chest, slab, thin, cut, lower):
        assert other.geometry.spacing[:2] == plain.geometry.spacing[:2]
        assert other.geometry.origin[:2] == plain.geometry.origin[:2] and other.phase == plain.phase
    top = [g.origin[2] + (g.shape[2] - 1) * g.spacing[2] for g in (plain.geometry, chest.geometry)]
    assert top[1] >= ph.DOME_MM + ph.EXTRA_RANGES["chest"][0][0] - chest.geometry.spacing[2] > top[0]
    assert slab.geometry.shape[2] * slab.geometry.spacing[2] <= ph.EXTRA_RANGES["slab"][1][1] + 5.0
    assert thin.geometry.shape[2] * thin.geometry.spacing[2] <= ph.EXTRA_RANGES["thin slab"][1][1] + 5.0
    cut_top = cut.geometry.origin[2] + (cut.geometry.shape[2] - 1) * cut.geometry.spacing[2]
    low, high = (ph.DOME_MM + mm for mm in ph.EXTRA_RANGES["liver cut"][0])
    assert low - cut.geometry.spacing[2] <= cut_top <= high + cut.geometry.spacing[2]
    assert (cut.labels[:, :, -1] == ph.LIVER).sum() > (cut.labels[:, :, -1] == ph.SPLEEN).sum()
    lower_top = lower.geometry.origin[2] + (lower.geometry.shape[2] - 1) * lower.geometry.spacing[2]
    assert lower_top <= ph.DOME_MM + ph.EXTRA_RANGES["lower abdomen"][0][1] + lower.geometry.spacing[2]
    assert not (lower.labels == ph.SPLEEN).any()
    assert (lower.labels == ph.LIVER).sum() < 0.1 * (plain.labels == ph.LIVER).sum()
    top = chest.image[:, :, -1]
    assert (top < -600).mean() > 0.1 and (top > 150).any()  # lungs; ribs and contrast-filled vessels
    assert not chest.labels[:, :, -1].any()
    mixed = [(i, ph.generate(ph.case_seed(6, i), max_side=32, mix=ph.Mix(chest=0.3, slab=0.3))) for i in range(6)]
    kept = [(i, p) for i, p in mixed if p.scan in ph.SCAN_RANGES]  # not drawn into an extra range
    assert kept and len(kept) < len(mixed)
    for i, p in kept:  # the case of the plain set, voxel for voxel
        alone = ph.generate(ph.case_seed(6, i), max_side=32)
        assert np.array_equal(p.image, alone.image) and np.array_equal(p.labels, alone.labels)
    with pytest.raises(ValueError):
        ph.Mix(chest=0.7, slab=0.4)
    with pytest.raises(ValueError):
        ph.Mix(chest=0.4, slab=0.4, thin_slab=0.3)
    with pytest.raises(ValueError):
        ph.Mix(chest=0.5, liver_cut=0.6)


def test_pelvic_organs_change_only_the_pelvis() -> None:
    """--pelvis adds the hips, hip muscles, bladder and rectum below the iliac crest (beside L5, never
    above z = -60 mm): the image above is the plain case's voxel for voxel, the labels are
    unchanged, bone and urine appear low in the scan, the body is wider there; undrawn cases are
    the plain set's."""
    seed = ph.case_seed(8, 0)
    grid = ph.Geometry((40, 40, 50), (9.0, 9.0, 6.0), (-175.5, -170.0, -300.0))
    plain, pelvis = (ph.generate(seed, geometry=grid, mix=ph.Mix(pelvis=p)) for p in (0.0, 1.0))
    assert (plain.pelvis, pelvis.pelvis) == (False, True)
    assert np.array_equal(plain.labels, pelvis.labels)
    z = grid.origin[2] + grid.spacing[2] * np.arange(grid.shape[2])
    high, low = z > -60.0, z < -180.0
    assert np.array_equal(plain.image[:, :, high], pelvis.image[:, :, high])
    assert (pelvis.image[:, :, low] > 200).sum() > 1.25 * (plain.image[:, :, low] > 200).sum()  # the hips
    changed = np.abs(pelvis.image - plain.image) > 30
    assert changed[:, :, low].mean() > 0.02
    hips = ph.Geometry((100, 4, 3), (4.5, 6.0, 10.0), (-225.0, -30.0, -260.0))  # a band across the hips
    widths = [(ph.generate(seed, geometry=hips, mix=ph.Mix(pelvis=p)).image > -500).sum() for p in (0.0, 1.0)]
    assert widths[1] > 1.04 * widths[0]
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(pelvis=0.5), lambda p: p.pelvis, seed=6, cases=5)


def test_the_spine_ends_at_the_coccyx() -> None:
    """The vertebral column runs down through the sacrum and ends at the coccyx, about 7 vertebral
    pitches below z0 (at most about 300 mm below L1/L2): no vertebra continues past the hips."""
    grid = ph.Geometry((10, 13, 40), (6.0, 6.0, 8.0), (-30.0, -78.0, -400.0))  # round x = 0, in front of the table
    z = grid.origin[2] + grid.spacing[2] * np.arange(grid.shape[2])
    for case in range(3):
        bone = (ph.generate(ph.case_seed(8, case), geometry=grid).image > 300).any(axis=(0, 1))
        assert bone[(z > -180.0) & (z < -120.0)].mean() > 0.6  # L5 and the sacrum, a disc in some slices
        assert not bone[z < -310.0].any()


def test_extra_ranges_are_drawn_in_order_with_their_fractions() -> None:
    """One uniform draw picks chest, slab, thin slab, liver cut, lower abdomen or none by the mix's
    fractions, in that order, so adding a later fraction leaves the earlier ranges' cases of a set
    as they were."""
    mix = ph.Mix(chest=0.2, slab=0.25, thin_slab=0.1, liver_cut=0.15, lower_abdomen=0.2)
    assert [mix.extra_range(u) for u in (0.0, 0.19, 0.2, 0.44, 0.45, 0.54, 0.56, 0.69, 0.71, 0.89, 0.91)] == [
        "chest", "chest", "slab", "slab", "thin slab", "thin slab", "liver cut", "liver cut", "lower abdomen",
        "lower abdomen", None]
    assert ph.Mix(chest=0.2, slab=0.25).extra_range(0.5) is None


def test_a_kidney_of_parenchyma_alone_leaves_out_the_pelvis_and_nothing_else():
    """--kidney-parenchyma 1 labels the kidney as its cortex and medulla only: the renal pelvis's
    urine leaves the label as the sinus fat did, the image stays the same (no tumour reaches this
    case's hilum), and the cases that do not draw it are the plain set's."""
    geometry = ph.Geometry((60, 50, 50), (5.0, 5.0, 5.0), (-150.0, -110.0, -150.0))
    rendered = [ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(1)), pelvis_labelled=kept),
                          geometry)[:2] for kept in (True, False)]
    (tissue, with_pelvis), (same_tissue, parenchyma) = rendered
    assert np.array_equal(tissue, same_tissue)
    assert not (tissue[parenchyma == ph.KIDNEY] == ph.TISSUE["urine"]).any()
    removed = (with_pelvis == ph.KIDNEY) & (parenchyma != ph.KIDNEY)
    assert not ((parenchyma == ph.KIDNEY) & (with_pelvis != ph.KIDNEY)).any()
    # the urine, and a renal vessel painted over it afterwards
    assert removed.any() and (tissue[removed] == ph.TISSUE["urine"]).mean() > 0.95
    seed = ph.case_seed(1000, 0)
    now, parenchymal = (ph.generate(seed, geometry=geometry, mix=ph.Mix(kidney_parenchyma=p)) for p in (0.0, 1.0))
    assert (now.pelvis_labelled, parenchymal.pelvis_labelled) == (True, False)
    assert np.array_equal(now.image, parenchymal.image)
    changed = now.labels != parenchymal.labels
    assert changed.any() and (now.labels[changed] == ph.KIDNEY).all() and (parenchymal.labels[changed] == 0).all()
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(kidney_parenchyma=0.5), lambda p: not p.pelvis_labelled, seed=6,
                                            cases=5)


def assert_undrawn_cases_are_the_plain_sets(mix: ph.Mix, varied, seed: int, cases: int) -> None:
    """Of a set made with a mix, some cases get the variation (varied(phantom) is true) and some
    do not; those that do not are the plain set's cases, image and labels."""
    mixed = [(i, ph.generate(ph.case_seed(seed, i), max_side=32, mix=mix)) for i in range(cases)]
    kept = [(i, p) for i, p in mixed if not varied(p)]
    assert kept and len(kept) < len(mixed)
    for i, p in kept:
        alone = ph.generate(ph.case_seed(seed, i), max_side=32)
        assert np.array_equal(p.image, alone.image) and np.array_equal(p.labels, alone.labels)


def test_a_fatty_pancreas_is_darker_and_keeps_its_label_and_everything_else():
    """Fat replaces the asked-for share of the gland's parenchyma (its mean HU falls towards fat's),
    the labels and the rest of the anatomy stay; a case of a mixed set that is not drawn fatty is
    the plain set's case."""
    seed = ph.case_seed(5, 0)
    lean = ph.generate(seed, max_side=64)
    fatty = ph.generate(seed, max_side=64, mix=ph.Mix(fatty=1.0))
    assert lean.fatty == 0.0 and priors.FATTY_PANCREAS[0] <= fatty.fatty <= priors.FATTY_PANCREAS[1]
    assert np.array_equal(lean.labels, fatty.labels) and lean.phase == fatty.phase
    gland = lean.labels == ph.PANCREAS
    assert np.median(fatty.image[gland]) < np.median(lean.image[gland]) - 40
    far = ndimage.distance_transform_edt(~gland) > 6  # beyond the blur of the image's reconstruction
    assert np.array_equal(fatty.image[far], lean.image[far])
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(fatty=0.5), lambda p: p.fatty > 0.0, seed=6, cases=5)


def test_an_atrophic_pancreas_is_thinner_and_leaves_the_other_organs_and_cases():
    """An atrophic gland lies along the same course, thinner (its volume falls with about the
    square of the thickness factor); liver, kidneys and spleen keep their labels but for what the
    full gland covered and where the veins along it moved; a case of a mixed
    set drawn with a full gland is the plain set's case."""
    seed = ph.case_seed(5, 0)
    full = ph.generate(seed, max_side=96)
    thin = ph.generate(seed, max_side=96, mix=ph.Mix(atrophic=1.0))
    assert full.pancreas_thickness == 1.0
    assert priors.ATROPHIC_PANCREAS[0] <= thin.pancreas_thickness <= priors.ATROPHIC_PANCREAS[1]
    glands = [p.labels == ph.PANCREAS for p in (full, thin)]
    ratio = glands[1].sum() / glands[0].sum()
    assert 0.5 * thin.pancreas_thickness ** 2 < ratio < 1.5 * thin.pancreas_thickness
    assert (glands[1] & glands[0]).sum() > 0.8 * glands[1].sum()  # along the same course
    for organ in (ph.LIVER, ph.KIDNEY, ph.SPLEEN):  # what the full gland covered, and the veins behind it, aside
        others = [p.labels == organ for p in (full, thin)]
        assert ((others[0] ^ others[1]) & ~glands[0]).sum() <= 0.01 * others[0].sum()
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(atrophic=0.5), lambda p: p.pancreas_thickness < 1.0, seed=6, cases=5)


def test_a_short_pancreatic_head_ends_the_gland_nearer_the_midline_and_keeps_its_body_and_tail():
    """A short head leaves the gland's body and tail (left of the neck) where they were (the
    spline through the moved head points shifts them by a voxel at most) and takes away head
    right of the neck: the gland reaches less far right (patient's right: +x) and less far down;
    the other organs keep their labels but for what the full head covered; a case of a mixed set
    drawn with a full head is the plain set's case."""
    seed = ph.case_seed(5, 0)
    full = ph.generate(seed, max_side=96)
    short = ph.generate(seed, max_side=96, mix=ph.Mix(short_head=1.0))
    assert full.pancreas_head == 1.0 and priors.SHORT_PANCREAS_HEAD[0] <= short.pancreas_head <= priors.SHORT_PANCREAS_HEAD[1]
    glands = [p.labels == ph.PANCREAS for p in (full, short)]
    x = full.geometry.axes()[0][:, None, None]
    body_and_tail = x < atlas.PANCREAS_NECK_X - 10.0  # clear of the neck, where the two centre lines part
    kept = [g & body_and_tail for g in glands]
    assert 2 * (kept[0] & kept[1]).sum() > 0.97 * (kept[0].sum() + kept[1].sum())
    right = [np.argwhere(g)[:, 0].max() for g in glands]
    low = [np.argwhere(g)[:, 2].min() for g in glands]
    assert (right[0] - right[1]) * full.spacing[0] >= 10.0 and (low[1] - low[0]) * full.spacing[2] >= 10.0
    assert glands[1].sum() < 0.9 * glands[0].sum()
    for organ in (ph.LIVER, ph.KIDNEY, ph.SPLEEN):
        others = [p.labels == organ for p in (full, short)]
        assert ((others[0] ^ others[1]) & ~glands[0]).sum() <= 0.01 * others[0].sum()
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(short_head=0.5), lambda p: p.pancreas_head < 1.0, seed=6, cases=5)


def test_non_contrast_scans_change_the_phase_and_the_image_only():
    """A case drawn without contrast is the same patient on the same grid, labels identical, in
    the non-contrast phase (its kidneys far darker than the enhanced scan's); a case of a mixed set
    not drawn so is the plain set's case."""
    seed, enhanced = next((s, p) for s in (ph.case_seed(7, i) for i in range(10))
                          if (p := ph.generate(s, max_side=48)).phase != "non-contrast")
    plain = ph.generate(seed, max_side=48, mix=ph.Mix(non_contrast=1.0))
    assert plain.phase == "non-contrast" and plain.geometry == enhanced.geometry
    assert np.array_equal(plain.labels, enhanced.labels)
    kidney = enhanced.labels == ph.KIDNEY
    assert np.median(plain.image[kidney]) < np.median(enhanced.image[kidney]) - 50
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(non_contrast=0.5), lambda p: p.phase == "non-contrast", seed=6, cases=5)


def test_organs_enhancing_apart_from_the_vessels_change_those_organs_only():
    """organ_factors set the named tissues' share of their enhancement in place of the case's bolus:
    at 0 the liver and spleen keep their non-contrast value while the arteries stay enhanced, and
    tissue away from the four organs is unchanged. Each organ's tissues share one factor within
    the spread of the common one. A drawn case is the same patient, labels and phase; a
    non-contrast case has nothing to scale, and undrawn cases are the plain set's."""
    common, factors = ct.draw_organ_enhancement(np.random.default_rng(3))
    assert priors.ORGAN_ENHANCEMENT[0] <= common <= priors.ORGAN_ENHANCEMENT[1]
    assert set(factors) == {name for names in priors.ENHANCING_ORGANS.values() for name in names}
    assert factors["kidney cortex"] == factors["kidney medulla"]
    assert all(priors.ORGAN_ENHANCEMENT_SPREAD[0] <= f / common <= priors.ORGAN_ENHANCEMENT_SPREAD[1] for f in factors.values())

    tissue, labels, _ = anatomy(4)
    usual, apart = (ph.ct_image(tissue, ABDOMEN, "portal-venous", np.random.default_rng(0), organ_factors=f)
                    for f in (None, dict.fromkeys(factors, 0.0)))
    for organ, name in ((ph.LIVER, "liver"), (ph.SPLEEN, "spleen")):
        core = ndimage.binary_erosion((labels == organ) & (tissue == ph.TISSUE[name]), iterations=2)
        unenhanced = ph.HU_PRIORS[name][0][0]
        assert abs(np.median(apart[core]) - unenhanced) < 10 < 40 < np.median(usual[core]) - unenhanced, name
    organs = np.isin(tissue, [ph.TISSUE[name] for name in factors]) | (labels > 0)
    far = ndimage.distance_transform_edt(~organs) > 6
    assert (far & (tissue == ph.TISSUE["artery"])).sum() > 100
    assert np.array_equal(usual[far], apart[far])

    seed, usual_case = next((s, p) for s in (ph.case_seed(7, i) for i in range(10))
                            if (p := ph.generate(s, max_side=48)).phase != "non-contrast")
    drawn = ph.generate(seed, max_side=48, mix=ph.Mix(organ_enhancement=1.0))
    assert usual_case.organ_enhancement is None
    assert priors.ORGAN_ENHANCEMENT[0] <= drawn.organ_enhancement <= priors.ORGAN_ENHANCEMENT[1]
    assert np.array_equal(drawn.labels, usual_case.labels) and drawn.phase == usual_case.phase
    spleen = drawn.labels == ph.SPLEEN
    assert abs(np.median(drawn.image[spleen]) - np.median(usual_case.image[spleen])) > 1.0
    unenhanced_cases = [ph.generate(seed, max_side=48, mix=ph.Mix(non_contrast=1.0, organ_enhancement=p))
                        for p in (0.0, 1.0)]
    assert unenhanced_cases[1].organ_enhancement is None
    assert np.array_equal(unenhanced_cases[0].image, unenhanced_cases[1].image)
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(organ_enhancement=0.5), lambda p: p.organ_enhancement is not None,
                                            seed=6, cases=5)


def test_a_fat_plane_keeps_the_gut_off_the_pancreas_body_and_tail_and_the_labels_as_they_were():
    """With an 8 mm fat plane no gut lies within 3 mm of the gland's body and tail (left of the
    neck), where without it some does; labels and the tissue beyond the plane are unchanged, and a
    case of a mixed set drawn without a plane is the plain set's case."""
    gut = [ph.TISSUE[n] for n in ("gut wall", "gastric content", "faeces", "bowel fluid", "gas")]
    geometry = ph.Geometry((100, 80, 60), (2.0, 2.0, 2.0), (-130.0, -40.0, -60.0))
    rendered = {mm: ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(4)), fat_plane_mm=mm),
                              geometry)[:2] for mm in (0.0, 8.0)}
    (tissue, labels), (planed, planed_labels) = rendered[0.0], rendered[8.0]
    assert np.array_equal(labels, planed_labels)
    x = geometry.axes()[0]
    gland = (labels == ph.PANCREAS) & (x[:, None, None] < atlas.PANCREAS_NECK_X - 10.0)
    near = ndimage.distance_transform_edt(~gland, sampling=geometry.spacing) <= 3.0
    assert np.isin(tissue[near], gut).any() and not np.isin(planed[near], gut).any()
    far = ndimage.distance_transform_edt(labels != ph.PANCREAS, sampling=geometry.spacing) > 30.0
    assert np.array_equal(tissue[far], planed[far])
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(fat_plane=0.5), lambda p: p.fat_plane_mm > 0.0, seed=6, cases=5)


def test_a_fatty_liver_is_darker_by_the_drop_and_changes_nothing_else():
    """liver_drop_hu lowers the liver by that many HU; tissue beyond the blur around it is
    unchanged; labels unchanged; a case of a mixed set drawn lean is the plain set's case."""
    geometry = ph.Geometry((100, 70, 40), (3.0, 3.0, 3.0), (-150.0, -90.0, 10.0))
    tissue = ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(4))), geometry)[0]
    liver = tissue == ph.TISSUE["liver"]
    core = ndimage.binary_erosion(liver, iterations=3)
    assert core.sum() > 500
    lean, fatty = (ph.ct_image(tissue, geometry, "portal-venous", np.random.default_rng(7), liver_drop_hu=d)
                   for d in (0.0, 30.0))
    assert abs(np.median(lean[core] - fatty[core]) - 30.0) < 1.0
    far = ndimage.distance_transform_edt(~liver) > 6
    assert np.array_equal(lean[far], fatty[far])
    seed = ph.case_seed(5, 0)
    plain, drawn = (ph.generate(seed, max_side=48, mix=ph.Mix(fatty_liver=p)) for p in (0.0, 1.0))
    assert plain.liver_drop_hu == 0.0 and priors.FATTY_LIVER_DROP_HU[0] <= drawn.liver_drop_hu <= priors.FATTY_LIVER_DROP_HU[1]
    assert np.array_equal(plain.labels, drawn.labels) and plain.phase == drawn.phase
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(fatty_liver=0.5), lambda p: p.liver_drop_hu > 0.0, seed=6, cases=5)


def test_a_fluid_colon_is_homogeneous_and_changes_nothing_else():
    """With colon_hu the faeces become a homogeneous fluid of that value (no gas bubbles), the rest
    of the image is unchanged beyond the reconstruction's blur; the labels do not change, and a case
    of a mixed set drawn with faeces is the plain set's case."""
    geometry = ph.Geometry((100, 80, 60), (2.0, 2.0, 2.0), (-100.0, -60.0, -150.0))
    tissue = ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(4))), geometry)[0]
    faeces = tissue == ph.TISSUE["faeces"]
    core = ndimage.binary_erosion(faeces, iterations=3)
    assert core.sum() > 300
    mottled, fluid = (ph.ct_image(tissue, geometry, "non-contrast", np.random.default_rng(7), colon_hu=hu)
                      for hu in (None, 20.0))
    assert abs(np.median(fluid[core]) - 20.0) < 5.0 and np.std(fluid[core]) < 0.5 * np.std(mottled[core])
    assert (mottled[core] < -500).mean() > 0.02 and not (fluid[core] < -500).any()
    far = ndimage.distance_transform_edt(~faeces) > 6
    assert np.array_equal(fluid[far], mottled[far])
    seed = ph.case_seed(5, 0)
    plain, drawn = (ph.generate(seed, max_side=48, mix=ph.Mix(fluid_colon=p)) for p in (0.0, 1.0))
    assert plain.colon_hu is None and priors.FLUID_COLON_HU[0] <= drawn.colon_hu <= priors.FLUID_COLON_HU[1]
    assert np.array_equal(plain.labels, drawn.labels) and plain.phase == drawn.phase
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(fluid_colon=0.5), lambda p: p.colon_hu is not None, seed=6, cases=5)


def test_a_darker_liver_region_lowers_the_drawn_share_of_the_parenchyma_and_nothing_else():
    """liver_region_offset lowers the asked-for share of the liver's parenchyma by the drop (fading at
    its edge), never a vessel or anything outside the liver; through ct_image the rest of the image
    is unchanged beyond the reconstruction's blur; the labels do not change, and a case of a mixed set
    drawn without a region is the plain set's case."""
    geometry = ph.Geometry((100, 80, 60), (2.0, 2.0, 2.0), (-100.0, -60.0, -100.0))
    tissue = ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(4))), geometry)[0]
    liver = tissue == ph.TISSUE["liver"]
    offset = ct.liver_region_offset(tissue, geometry, np.random.default_rng(3), 30.0, 0.25)
    assert not offset[~liver].any() and offset.min() == -30.0 and offset.max() == 0.0
    assert 0.25 <= (offset[liver] == -30.0).mean() <= 0.26  # the share at the full drop, then a fade
    assert 0.26 < (offset[liver] < 0).mean() < 0.6
    usual, darker = (ph.ct_image(tissue, geometry, "portal-venous", np.random.default_rng(7), hu_offset=o)
                     for o in (None, offset))
    region = ndimage.binary_erosion(offset == -30.0, iterations=2)
    assert region.sum() > 200 and abs(np.median(darker[region] - usual[region]) + 30.0) < 1.0
    far = ndimage.distance_transform_edt(offset == 0) > 6
    assert np.array_equal(darker[far], usual[far])
    seed = ph.case_seed(5, 0)
    plain, drawn = (ph.generate(seed, max_side=48, mix=ph.Mix(liver_region=p)) for p in (0.0, 1.0))
    assert plain.liver_region_hu == 0.0 and priors.LIVER_REGION_HU[0] <= drawn.liver_region_hu <= priors.LIVER_REGION_HU[1]
    assert np.array_equal(plain.labels, drawn.labels) and plain.phase == drawn.phase
    assert not np.array_equal(plain.image, drawn.image)
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(liver_region=0.5), lambda p: p.liver_region_hu > 0, seed=6,
                                            cases=5)


def test_a_full_stomach_is_as_dense_as_drawn_and_changes_nothing_else():
    """With stomach_hu the gastric content is food of that value without gas bubbles (the gas above
    its fluid level kept), the rest of the image is unchanged beyond the reconstruction's blur; the
    labels do not change, and a case of a mixed set drawn without food is the plain set's case."""
    geometry = ph.Geometry((100, 80, 60), (2.0, 2.0, 2.0), (-100.0, -60.0, -100.0))
    tissue = ph.render(ph.draw_anatomy(np.random.default_rng(np.random.SeedSequence(4))), geometry)[0]
    content = tissue == ph.TISSUE["gastric content"]
    core = ndimage.binary_erosion(content, iterations=3)
    assert core.sum() > 500
    usual, fed = (ph.ct_image(tissue, geometry, "non-contrast", np.random.default_rng(7), stomach_hu=hu)
                  for hu in (None, 55.0))
    assert (usual[core] < -500).mean() > 0.02 and not (fed[core] < -500).any()  # the bubbles gone
    assert abs(np.median(fed[core]) - 55.0) < 3.0 and np.std(fed[core]) < np.std(usual[core])
    far = ndimage.distance_transform_edt(~content) > 6
    assert np.array_equal(fed[far], usual[far])
    seed = ph.case_seed(5, 0)
    plain, drawn = (ph.generate(seed, max_side=48, mix=ph.Mix(full_stomach=p)) for p in (0.0, 1.0))
    assert plain.stomach_hu is None and priors.FULL_STOMACH_HU[0] <= drawn.stomach_hu <= priors.FULL_STOMACH_HU[1]
    assert np.array_equal(plain.labels, drawn.labels) and plain.phase == drawn.phase
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(full_stomach=0.5), lambda p: p.stomach_hu is not None, seed=6,
                                            cases=5)


@pytest.mark.parametrize("index, kind", [(1, "spinal screws"), (3, "clips")])
def test_metal_implants_streak_only_their_slices_and_keep_the_labels(index, kind):
    """Metal saturates outside the organs, streaks change only the slices that hold metal (and the
    edge blur's neighbours), the labels stay; a case of a mixed set drawn without metal is the
    plain set's case."""
    seed = ph.case_seed(7, index)
    plain = ph.generate(seed, max_side=96)
    metal = ph.generate(seed, max_side=96, mix=ph.Mix(metal=1.0))
    assert plain.metal == "" and metal.metal == kind
    assert np.array_equal(plain.labels, metal.labels) and plain.phase == metal.phase
    bright = metal.image >= priors.METAL_HU - 1
    assert bright.any() and not metal.labels[bright].any()
    with_metal = np.nonzero(bright.any(axis=(0, 1)))[0]
    changed = np.nonzero((metal.image != plain.image).any(axis=(0, 1)))[0]
    assert set(with_metal) <= set(changed) and all(np.abs(with_metal - k).min() <= 3 for k in changed)
    streaks = (metal.image - plain.image)[:, :, with_metal][~bright[:, :, with_metal]]
    assert streaks.min() < -30 and streaks.max() > 30  # dark and bright
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(metal=0.5), lambda p: p.metal != "", seed=7, cases=6)


def test_randomised_mode_same_labels_other_intensities():
    ct = ph.generate(9, max_side=48)
    dr = ph.generate(9, max_side=48, mix=ph.Mix(randomise=1.0))
    assert not ct.randomised and dr.randomised
    assert np.array_equal(ct.labels, dr.labels) and ct.geometry == dr.geometry
    assert not np.allclose(ct.image, dr.image)
    assert priors.RANDOM_HU[0] - 1 <= dr.image.min() and dr.image.max() <= priors.RANDOM_HU[1] + 1


@pytest.mark.parametrize("orientation", [("L", "P", "S"), ("S", "L", "P")])
def test_files_round_trip_to_canonical(tmp_path, orientation):
    p = replace(ph.generate(2, max_side=40), orientation=orientation)
    image_file, label_file = ph.save(p, tmp_path / "images", tmp_path / "labels", "case")
    assert image_file.name == "case_0000.nii.gz" and label_file.name == "case.nii.gz"
    image, labels = nib.load(image_file), nib.load(label_file)
    assert image.get_data_dtype() == np.int16 and labels.get_data_dtype() == np.uint8
    assert np.array_equal(image.affine, labels.affine)
    assert nib.aff2axcodes(image.affine) == orientation
    assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
    stored = nib.orientations.io_orientation(image.affine)[:, 0].astype(int)
    assert np.allclose(image.header.get_zooms(), np.asarray(p.spacing)[stored])
    canonical_image, canonical_labels = nib.as_closest_canonical(image), nib.as_closest_canonical(labels)
    assert np.array_equal(np.asarray(canonical_labels.dataobj), p.labels)
    expected = np.clip(np.rint(p.image), -1024, 3071).astype(np.int16)
    assert np.array_equal(np.asarray(canonical_image.dataobj), expected)
    assert np.allclose(canonical_image.affine, p.geometry.affine)


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_cli_writes_pairs_and_cases_csv(tmp_path, capsys):
    out = tmp_path / "set"
    assert ph.main(["--out", str(out), "--cases", "3", "--seed", "5", "--max-side", "40", "--randomise", "0.5"]) == 0
    assert "wrote 3 phantom(s)" in capsys.readouterr().out
    names = [f"phantom_{i:04d}" for i in range(3)]
    assert sorted(p.name for p in (out / "images").iterdir()) == [n + "_0000.nii.gz" for n in names]
    assert sorted(p.name for p in (out / "labels").iterdir()) == [n + ".nii.gz" for n in names]
    rows = read_rows(out / "cases.csv")
    assert [r["case"] for r in rows] == names and [r["index"] for r in rows] == ["0", "1", "2"]
    assert set(rows[0]) == {"case", "seed", "index", "phase", "randomised", "lesions", "shape", "spacing",
                            "orientation", "scan", "fatty_pancreas", "pancreas_thickness",
                            "pancreas_fat_plane_mm", "colon_fluid_hu", "pelvis", "liver_fat_drop_hu",
                            "kidney_sinus_labelled", "pancreas_head", "organ_enhancement", "liver_fissures", "arms",
                            "long_left_lobe", "stomach_food_hu", "large_spleen", "liver_region_hu",
                            "kidney_pelvis_labelled", "metal", "organs"}
    assert all(r["phase"] in ph.PHASES and r["seed"] == "5" for r in rows)
    for name, row in zip(names, rows):  # shape and spacing along canonical x, y, z, whatever the stored order
        canonical = nib.as_closest_canonical(nib.load(out / "labels" / f"{name}.nii.gz"))
        assert row["shape"] == "x".join(str(n) for n in canonical.shape)
        assert row["spacing"] == "x".join(f"{z:.4f}" for z in canonical.header.get_zooms())

    again = tmp_path / "one"  # case 2 alone is the same case 2
    assert ph.main(["--out", str(again), "--cases", "1", "--start", "2", "--seed", "5", "--max-side", "40",
                    "--randomise", "0.5", "--prefix", "p"]) == 0
    first = nib.load(out / "labels" / "phantom_0002.nii.gz")
    alone = nib.load(again / "labels" / "p_0002.nii.gz")
    assert np.array_equal(np.asarray(first.dataobj), np.asarray(alone.dataobj))
    assert np.array_equal(np.asarray(nib.load(out / "images" / "phantom_0002_0000.nii.gz").dataobj),
                          np.asarray(nib.load(again / "images" / "p_0002_0000.nii.gz").dataobj))
    assert read_rows(again / "cases.csv")[0] == {**rows[2], "case": "p_0002"}
    # another set into the same folder: refused (training would read both, cases.csv list one), nothing written
    with pytest.raises(SystemExit) as refused:
        ph.main(["--out", str(again), "--cases", "1", "--seed", "6", "--max-side", "40", "--prefix", "p"])
    assert refused.value.code == 2 and sorted(p.name for p in (again / "labels").iterdir()) == ["p_0002.nii.gz"]


def test_cli_preview_writes_png(tmp_path):
    png = tmp_path / "preview.png"
    assert ph.main(["--preview", str(png), "--cases", "1", "--max-side", "48"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_preview_shows_the_hips_of_a_scan_that_runs_into_the_pelvis():
    """Where a scan runs 80 mm or more below its organs, the second axial plane is the one with the
    most bone down there (the hips) instead of the kidneys' largest section."""
    labels = np.zeros((8, 8, 40), np.uint8)
    labels[2:5, 2:5, 30:] = ph.LIVER
    labels[2:4, 2:4, 32] = ph.KIDNEY
    image = np.full(labels.shape, -100.0, np.float32)
    image[1:7, 1:7, 5] = 900.0
    image[3, 3, 25] = 900.0
    into_pelvis = ph.preview_planes(image, labels, (1.0, 1.0, 4.0))  # 120 mm below the organs
    assert [v[0] for v in into_pelvis] == ["axial, liver level", "axial, pelvis level", "coronal"]
    assert np.array_equal(into_pelvis[1][1], image[:, :, 5])
    short = ph.preview_planes(image, labels, (1.0, 1.0, 2.0))  # 60 mm below them
    assert short[1][0] == "axial, kidney level" and np.array_equal(short[1][2], labels[:, :, 32])


def test_cli_preview_sets_a_real_ct_beside_the_phantoms(tmp_path, capsys):
    """A CT and its labels on disk (here a saved phantom, stored in another orientation) become the
    first row; a broken labels file is one line naming it and exit code 2."""
    phantom = ph.generate(ph.case_seed(5, 0), max_side=48)
    ph.save(phantom, tmp_path / "images", tmp_path / "labels", "scan")
    ct, labels = tmp_path / "images" / "scan_0000.nii.gz", tmp_path / "labels" / "scan.nii.gz"
    png = tmp_path / "beside.png"
    assert ph.main(["--preview", str(png), "--cases", "1", "--max-side", "48", "--real", str(ct), str(labels)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a NIfTI file")
    assert ph.main(["--preview", str(png), "--real", str(ct), str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {broken}: ") and len(err.splitlines()) == 1


@pytest.mark.parametrize("argv", [[], ["--out", "x"], ["--out", "x", "--cases", "0"],
                                  ["--out", "x", "--cases", "2", "--randomise", "1.5"], ["--cases", "x"],
                                  ["--out", "x", "--cases", "2", "--chest", "0.6", "--slab", "0.6"],
                                  ["--out", "x", "--cases", "2", "--fatty", "-0.1"],
                                  ["--out", "x", "--cases", "2", "--atrophic", "1.5"],
                                  ["--out", "x", "--cases", "2", "--fat-plane", "2"],
                                  ["--out", "x", "--cases", "1", "--real", "a", "b"]])
def test_cli_usage_errors_exit_2(argv):
    with pytest.raises(SystemExit) as exc:
        ph.main(argv)
    assert exc.value.code == 2


def test_a_fraction_out_of_range_is_named(capsys):
    for argv, message in ((["--chest", "1.5", "--fatty", "-0.1"], "--chest 1.5, --fatty -0.1: a fraction must lie in [0, 1]"),
                          (["--chest", "0.6", "--slab", "0.6"], "--chest plus --slab plus")):
        with pytest.raises(SystemExit) as exc:
            ph.main(["--out", "x", "--cases", "1", *argv])
        assert exc.value.code == 2 and message in capsys.readouterr().err


def test_outputs_that_cannot_be_written_are_usage_errors(tmp_path, capsys):
    """Before any phantom is made: an --out that is a file, a preview without an image suffix or
    onto a folder, and a synthetic set into a folder holding another set's cases."""
    from evaluation import synthetic

    (tmp_path / "afile").write_text("")
    (tmp_path / "folder").mkdir()
    for argv, message in ((["--out", str(tmp_path / "afile"), "--cases", "1"], "exists and is not a folder"),
                          (["--preview", str(tmp_path / "noext")], "name a .png"),
                          (["--preview", str(tmp_path / "folder")], "name a .png")):
        with pytest.raises(SystemExit) as exc:
            ph.main(argv)
        assert exc.value.code == 2 and message in capsys.readouterr().err
    assert synthetic.main(["-o", str(tmp_path / "s"), "--cases", "2", "--max-side", "32"]) == 0
    with pytest.raises(SystemExit) as exc:
        synthetic.main(["-o", str(tmp_path / "s"), "--cases", "1", "--seed", "9", "--max-side", "32"])
    assert exc.value.code == 2 and "holds 1 case(s) of another set (synthetic_001)" in capsys.readouterr().err


def test_no_torch_import():
    code = "import sys, training.phantom; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]).returncode == 0


def test_liver_fissures_take_fat_clefts_out_of_the_liver_only() -> None:
    """--liver-fissures cuts fat-filled clefts into the liver: a few per cent of its voxels become
    unlabelled fat, every other label and the image away from the liver stay the plain case's;
    undrawn cases are the plain set's."""
    seed = ph.case_seed(2, 3)
    plain, cleft = (ph.generate(seed, max_side=128, mix=ph.Mix(liver_fissures=p)) for p in (0.0, 1.0))
    assert (plain.liver_fissures, cleft.liver_fissures) == (False, True)
    liver = plain.labels == ph.LIVER
    taken = liver & (cleft.labels != ph.LIVER)
    assert 0.002 < taken.sum() / liver.sum() < 0.05
    assert not cleft.labels[taken].any() and np.array_equal(cleft.labels[~taken], plain.labels[~taken])
    assert np.median(cleft.image[taken]) < np.median(plain.image[liver]) - 60  # fat, blurred by the grid
    far = ndimage.distance_transform_edt(~liver) > 6
    assert np.array_equal(cleft.image[far], plain.image[far])
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(liver_fissures=0.5), lambda p: p.liver_fissures, seed=6, cases=5)


def test_arms_lie_beside_the_body_in_air_and_darken_a_band_across_it() -> None:
    """--arms adds both arms (skin, fat, muscle, a bone) where the plain case has air, well out from
    the midline, and darkens the body in a band between them; labels stay, undrawn cases are the
    plain set's."""
    seed = ph.case_seed(2, 5)
    plain, armed = (ph.generate(seed, max_side=128, mix=ph.Mix(arms=p)) for p in (0.0, 1.0))
    assert (plain.arms, armed.arms) == (False, True)
    assert np.array_equal(plain.labels, armed.labels)
    grown = (plain.image < -900) & (armed.image > -200)
    x = plain.geometry.axes()[0]
    for side in (x > 0, x < 0):
        arm = grown[side]
        assert arm.sum() > 1000 and (armed.image[side][arm] > 500).any()  # soft tissue round a bone
    assert np.abs(x[np.nonzero(grown)[0]]).min() > 100.0
    liver = plain.labels == ph.LIVER
    assert (armed.image - plain.image)[liver].mean() < -3.0
    outside = ndimage.label(plain.image < -900)[0]
    outside = outside == outside[0, 0, 0]  # the air round the body (not the lungs)
    still_air = ~ndimage.binary_dilation(~outside | grown, iterations=3)  # beyond any tissue's blur
    assert np.array_equal(armed.image[still_air], plain.image[still_air])
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(arms=0.5), lambda p: p.arms, seed=6, cases=5)


def test_arm_shadow_darkens_the_body_along_the_line_through_the_arms() -> None:
    """The shadow is shadow_hu deep on the line through both arms' bones, fades across it over
    shadow_width mm and leaves air alone."""
    geometry = ph.Geometry((64, 64, 3), (5.0, 5.0, 5.0), (-157.5, -157.5, 0.0))
    arms = replace(body.draw_arms(np.random.default_rng(0)), y=(20.0, 20.0), offset=((0.0, 0.0), (0.0, 0.0)),
                   shadow_hu=30.0, shadow_width=15.0, shadow_noise=0.0)
    tissue = np.full(geometry.shape, ph.TISSUE["muscle"], np.uint8)
    tissue[:8] = ph.TISSUE["air"]
    image = np.zeros(geometry.shape, np.float32)
    ct.arm_shadow(image, tissue, geometry, arms, np.random.default_rng(1))
    y = geometry.axes()[1]
    on, off = int(np.argmin(np.abs(y - 20.0))), int(np.argmin(np.abs(y - 80.0)))
    assert np.allclose(image[8:, on], -30.0, atol=1.0) and np.abs(image[8:, off]).max() < 0.01
    assert not image[:8].any()


def test_a_long_left_lobe_adds_liver_in_front_and_below_only() -> None:
    """--long-left-lobe adds liver (a tongue of the left lobe) in front of the spine, mostly left of
    the liver's centre and reaching lower than the plain left lobe; the plain liver stays liver, every
    other label stays; undrawn cases are the plain set's."""
    seed = ph.case_seed(2, 5)
    plain, long = (ph.generate(seed, max_side=128, mix=ph.Mix(long_left_lobe=p)) for p in (0.0, 1.0))
    assert (plain.long_left_lobe, long.long_left_lobe) == (False, True)
    liver = plain.labels == ph.LIVER
    assert (long.labels[liver] == ph.LIVER).all()
    added = (long.labels == ph.LIVER) & ~liver
    assert added.sum() > 0.01 * liver.sum()
    assert np.array_equal(long.labels[~added], plain.labels[~added])
    x, y, z = (a[np.nonzero(added)[k]] for k, a in enumerate(plain.geometry.axes()))
    assert y.min() > 10.0 and np.median(x) < atlas.LIVER_CENTRE[0] - 25.0
    left_lobe = liver & (plain.geometry.axes()[0] < 0.0)[:, None, None]
    assert z.min() < plain.geometry.axes()[2][np.nonzero(left_lobe.any(axis=(0, 1)))[0].min()]
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(long_left_lobe=0.5), lambda p: p.long_left_lobe, seed=6, cases=5)


def test_a_large_spleen_fills_the_back_of_the_left_upper_abdomen_above_a_lower_left_kidney() -> None:
    """--large-spleen grows the spleen and makes it bulkier (its back nearer the spine), pushes the
    left kidney down whole (the same shape, lower) and leaves the right kidney alone; undrawn cases
    are the plain set's."""
    seed = ph.case_seed(5, 2)
    plain, large = (ph.generate(seed, max_side=128, mix=ph.Mix(large_spleen=p)) for p in (0.0, 1.0))
    assert (plain.large_spleen, large.large_spleen) == (False, True)
    assert plain.geometry == large.geometry
    x, _, z = plain.geometry.axes()
    spleens = [p.labels == ph.SPLEEN for p in (plain, large)]
    assert spleens[1].sum() > 1.5 * spleens[0].sum()
    medial = [x[np.nonzero(s.any(axis=(1, 2)))[0]].max() for s in spleens]  # x < 0 is the left
    assert medial[1] > medial[0] + 5.0
    left, right = (x < 0)[:, None, None], (x > 0)[:, None, None]
    kidneys = [(p.labels == ph.KIDNEY) & left for p in (plain, large)]
    tops = [z[np.nonzero(k.any(axis=(0, 1)))[0]].max() for k in kidneys]
    step = z[1] - z[0]
    low, high = atlas.LARGE_SPLEEN_KIDNEY_DROP_MM
    assert low - 2 * step <= tops[0] - tops[1] <= high + 2 * step
    assert abs(int(kidneys[1].sum()) - int(kidneys[0].sum())) < 0.1 * kidneys[0].sum()
    assert np.array_equal((plain.labels == ph.KIDNEY) & right, (large.labels == ph.KIDNEY) & right)
    assert_undrawn_cases_are_the_plain_sets(ph.Mix(large_spleen=0.5), lambda p: p.large_spleen, seed=6, cases=5)


def test_renal_vessels_leave_every_organ_label(monkeypatch) -> None:
    """The renal veins and arteries clear the labels they run through, as the other vessels outside
    the liver do: no vein or artery voxel is kidney, spleen or pancreas (the left renal vein
    crosses the pancreas, both end in a kidney's hilum); the tissue is the same as with them
    labelled."""
    around_the_kidneys = ph.Geometry((70, 56, 60), (3.0, 3.0, 3.0), (-105.0, -90.0, -120.0))
    tissue, labels, _ = anatomy(1, around_the_kidneys)
    vessel = np.isin(tissue, [ph.TISSUE["vein"], ph.TISSUE["artery"]])
    assert vessel.any() and not np.isin(labels[vessel], [ph.KIDNEY, ph.SPLEEN, ph.PANCREAS]).any()

    vessel_parts = anatomy_module.vessel_parts

    def renal_vessels_labelled(*args, **kwargs) -> list:  # vessel_parts lists them third and fourth
        parts = vessel_parts(*args, **kwargs)
        return [replace(part, label=None) if k in (2, 3) else part for k, part in enumerate(parts)]

    monkeypatch.setattr(anatomy_module, "vessel_parts", renal_vessels_labelled)
    same_tissue, labelled, _ = anatomy(1, around_the_kidneys)
    assert np.array_equal(tissue, same_tissue)
    changed = labels != labelled
    assert np.isin(labelled[changed], [ph.KIDNEY, ph.PANCREAS]).any() and vessel[changed].all()


def openblas_kernels_to_compare() -> tuple[str, str]:
    """Two OpenBLAS kernels every x86-64 CPU runs (SSE3's and SSE4.2's), or a skip saying why none."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    if "openblas" not in str(blas.get("name", "")).lower() or "DYNAMIC_ARCH" not in str(
            blas.get("openblas configuration", "")):
        pytest.skip("numpy's BLAS is not an OpenBLAS with kernels for several CPUs (DYNAMIC_ARCH)")
    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip(f"the kernels compared are x86-64 ones, this is {platform.machine()}")
    return "Prescott", "Nehalem"


def test_a_phantom_is_the_same_bit_for_bit_whatever_blas_kernel_and_threads() -> None:
    """BLAS kernels (chosen for the CPU) and thread counts sum in different orders; a phantom made
    under two forced kernels and thread counts, in fresh processes, is the same bit for bit."""
    code = ("import hashlib; from training.phantom import case_seed, generate; "
            "p = generate(case_seed(7, 0), max_side=32); "
            "print(hashlib.sha256(p.image.tobytes() + p.labels.tobytes()).hexdigest())")
    hashes = set()
    for kernel, threads in zip(openblas_kernels_to_compare(), ("1", "2")):
        env = {**os.environ, "OPENBLAS_CORETYPE": kernel, "OPENBLAS_NUM_THREADS": threads}
        run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
        assert run.returncode == 0, run.stderr
        hashes.add(run.stdout.strip())
    assert len(hashes) == 1


@pytest.mark.parametrize("prefix", ["../escape", "a/b", ".hidden", "-p", ""])
def test_a_prefix_that_is_not_a_plain_name_is_refused(tmp_path, capsys, prefix) -> None:
    """--prefix becomes part of file names: a path or a hidden name is a usage error, nothing written."""
    out = tmp_path / "set"
    with pytest.raises(SystemExit) as exc:
        ph.main(["--out", str(out), "--cases", "1", "--max-side", "16", f"--prefix={prefix}"])
    assert exc.value.code == 2 and "--prefix" in capsys.readouterr().err.splitlines()[-1]
    assert not [path for path in tmp_path.rglob("*") if path.is_file()]
    with pytest.raises(ValueError):
        ph.set_case_name(prefix, 0)


def test_the_smallest_phantoms_allowed_are_ones_every_reader_accepts(tmp_path, capsys) -> None:
    """Below 16 voxels a side a large field of view makes voxels coarser than the readers' 50 mm."""
    with pytest.raises(SystemExit) as exc:
        ph.main(["--out", str(tmp_path / "tiny"), "--cases", "1", "--max-side", "15"])
    assert exc.value.code == 2 and "argument --max-side: 15: must be at least 16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        ph.main(["--out", str(tmp_path / "many"), "--cases", "100000000"])  # refused before any name is made
    assert exc.value.code == 2 and "argument --cases: 100000000: must be from 1 to 1000000" in capsys.readouterr().err
    largest = max(max(ph.generate(ph.case_seed(seed, 0), max_side=16).spacing) for seed in range(12))
    assert largest <= 50


def test_the_kidney_sinus_and_parenchyma_labellings_exclude_each_other(tmp_path, capsys) -> None:
    """A kidney labelled with its sinus fat but without its pelvis would be neither labelling: both
    fractions above 0 are refused, by Mix and by the command line, before anything is written."""
    with pytest.raises(ValueError, match="exclude each other"):
        ph.Mix(kidney_sinus=0.5, kidney_parenchyma=0.5)
    with pytest.raises(SystemExit) as exc:
        ph.main(["--out", str(tmp_path / "set"), "--cases", "1", "--max-side", "16", "--kidney-sinus", "1",
                 "--kidney-parenchyma", "0.2"])
    error = capsys.readouterr().err.splitlines()[-1]
    assert exc.value.code == 2 and "--kidney-sinus and --kidney-parenchyma exclude each other" in error
    assert not (tmp_path / "set").exists()


def test_an_interrupted_run_into_an_earlier_set_leaves_no_mismatched_pair_or_stale_list(tmp_path, monkeypatch) -> None:
    """Run again into a folder with another seed and stopped while writing case 1's labels: case 0
    is the new one, case 1 has the new image and no labels (not the earlier labels), cases.csv and
    pathological.txt are gone (they listed the earlier set), and no partial file is left."""
    out = tmp_path / "set"
    assert ph.main(["--out", str(out), "--cases", "2", "--seed", "5", "--max-side", "24"]) == 0
    to_file_map = nib.Nifti1Image.to_file_map
    written = []

    def stopped_at_the_fourth_file(self, *args, **kwargs):
        written.append(self)
        if len(written) == 4:  # image 0, labels 0, image 1, labels 1
            raise KeyboardInterrupt
        return to_file_map(self, *args, **kwargs)

    monkeypatch.setattr(nib.Nifti1Image, "to_file_map", stopped_at_the_fourth_file)
    with pytest.raises(KeyboardInterrupt):
        ph.main(["--out", str(out), "--cases", "2", "--seed", "6", "--max-side", "24"])
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["phantom_0000_0000.nii.gz", "phantom_0001_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labels").iterdir()) == ["phantom_0000.nii.gz"]
    for index in (0, 1):
        new = ph.generate(ph.case_seed(6, index), max_side=24)
        image = nib.as_closest_canonical(nib.load(out / "images" / f"phantom_{index:04d}_0000.nii.gz"))
        assert np.array_equal(np.asarray(image.dataobj), np.clip(np.rint(new.image), *ph.HU_STORED))
    labels = nib.as_closest_canonical(nib.load(out / "labels" / "phantom_0000.nii.gz"))
    assert np.array_equal(np.asarray(labels.dataobj), ph.generate(ph.case_seed(6, 0), max_side=24).labels)


def test_a_file_that_cannot_be_written_is_one_line_and_exit_code_1(tmp_path, capsys) -> None:
    """A folder where case 1's label file should go: one line naming that file, exit code 1, and no
    cases.csv (the set is not complete)."""
    out = tmp_path / "set"
    blocked = out / "labels" / "phantom_0001.nii.gz"
    blocked.mkdir(parents=True)
    assert cli.run(ph.main, ["--out", str(out), "--cases", "2", "--max-side", "16"]) == 1
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith(f"error: {blocked}: ")
    assert not (out / "cases.csv").exists()
