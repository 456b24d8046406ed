"""Per-case scores follow the official scripts of each year."""
import itertools
import math

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.ndimage import find_objects

from bench.official_loop import official_case, official_files
from evaluation.metrics import score_case
from evaluation.rules import RULES, get_rules
from evaluation.runs import LabelRuns, flat_nonzero, label_runs, runs_of_lines
from evaluation.synthetic import case_pair, degraded
from flare_common.errors import InputError


def assert_same(ours, official):
    for label, (dsc, nsd) in official.items():
        for got, want in ((ours[label].dsc, dsc), (ours[label].nsd, nsd)):
            if math.isnan(want):
                assert math.isnan(got), (label, got, want)
            else:
                assert abs(got - want) <= 1e-9, (label, got, want)


@st.composite
def label_cases(draw):
    rules = get_rules(draw(st.sampled_from(sorted(RULES))))
    shape = tuple(draw(st.integers(2, 12)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = rules.max_label
    # A few labels as blocks (slab organs included), plus speckle, so every rule path is hit.
    labels = rng.choice([1, 2, 4, 5, 6, 10, 14, n], size=4).clip(max=n)

    def label_map():
        m = np.zeros(shape, np.uint8)
        for label in labels:
            if rng.random() < 0.8:
                lo = [rng.integers(0, s) for s in shape]
                hi = [rng.integers(a + 1, s + 1) for a, s in zip(lo, shape)]
                m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = label
        noise = rng.random(shape) < 0.05
        m[noise] = rng.choice(labels, size=int(noise.sum()))
        return m

    gt = label_map()
    pred = label_map() if rng.random() < 0.5 else np.where(rng.random(shape) < 0.1, 0, gt).astype(np.uint8)
    if rng.random() < 0.5:
        gt, pred = np.asfortranarray(gt), np.asfortranarray(pred)  # nibabel's memory order
    spacing = tuple(float(np.float32(draw(st.floats(0.4, 4.0)))) for _ in range(3))
    return gt, pred, spacing, rules, draw(st.booleans())


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_cases())
def test_score_case_equals_official_loop(case):
    gt, pred, spacing, rules, fix_slab = case
    assert_same(score_case(gt, pred, spacing, rules, fix_slab), official_case(gt, pred, spacing, rules, fix_slab))


@pytest.mark.parametrize("rules", ["flare21", "flare22"])
def test_realistic_phantom_equals_official_loop(rules):
    spacing = (3.2, 2.4, 7.0)  # 307 x 230 x 280 mm: the whole of the four organs
    gt, pred = case_pair((96, 96, 40), spacing, np.random.default_rng(3))
    assert_same(score_case(gt, pred, spacing, rules), official_case(gt, pred, spacing, get_rules(rules)))


def test_degraded_predictions_have_the_quality_asked_for():
    spacing = (3.2, 2.4, 7.0)
    gt, _ = case_pair((96, 96, 40), spacing, np.random.default_rng(5))
    assert set(np.unique(gt)) == {0, 1, 2, 3, 4}
    assert np.array_equal(degraded(gt, spacing, np.random.default_rng(0), 0.0, 0.0, island=False), gt)

    def mean_dsc(**strength):
        pred = degraded(gt, spacing, np.random.default_rng(0), island=False, **strength)
        return np.mean([s.dsc for s in score_case(gt, pred, spacing, "flare21").values()])

    assert 0.85 < mean_dsc() < 0.97
    assert mean_dsc(shift_mm=6.0, scale=0.15) < mean_dsc() - 0.1
    plain = degraded(gt, spacing, np.random.default_rng(1), island=False)
    island = degraded(gt, spacing, np.random.default_rng(1)) != plain  # same organs, plus the island
    assert island.any() and not gt[island].any()


def _aorta_case(gt_slices, pred_slices):
    gt = np.zeros((8, 8, 10), np.uint8)
    pred = np.zeros_like(gt)
    gt[2:5, 2:5, gt_slices] = 5
    pred[2:5, 2:5, pred_slices] = 5
    return gt, pred


def test_slab_leaves_out_top_slice_by_default():
    # The prediction matches the GT on slices 2..5 and adds slice 6 (the GT's top slice) and 8.
    gt, pred = _aorta_case(slice(2, 7), slice(2, 9))
    official = score_case(gt, pred, (1, 1, 1), "flare22")[5]
    fixed = score_case(gt, pred, (1, 1, 1), "flare22", fix_slab=True)[5]
    assert official.dsc == 1.0  # only slices 2..5 are scored, where both agree
    assert fixed.dsc == 1.0  # slices 2..6 agree too; slices 7, 8 lie outside either slab
    gt, pred = _aorta_case(slice(2, 7), slice(2, 6))  # the prediction misses the top GT slice
    assert score_case(gt, pred, (1, 1, 1), "flare22")[5].dsc == 1.0
    assert score_case(gt, pred, (1, 1, 1), "flare22", fix_slab=True)[5].dsc == pytest.approx(2 * 36 / (45 + 36))


def test_one_slice_ground_truth_gives_empty_slab():
    gt, pred = _aorta_case(slice(4, 5), slice(4, 5))
    score = score_case(gt, pred, (1, 1, 1), "flare22")[5]
    assert math.isnan(score.dsc) and math.isnan(score.nsd) and "slab" in score.note
    fixed = score_case(gt, pred, (1, 1, 1), "flare22", fix_slab=True)[5]
    assert (fixed.dsc, fixed.nsd) == (1.0, 1.0)


def test_empty_rules():
    gt = np.zeros((6, 6, 6), np.uint8)
    pred = gt.copy()
    gt[1:3, 1:3, 1:3] = 1  # liver only in GT
    pred[3:5, 3:5, 3:5] = 3  # spleen only in prediction
    scores = score_case(gt, pred, (1, 1, 1), "flare21")
    assert (scores[1].dsc, scores[1].nsd) == (0.0, 0.0)
    assert (scores[3].dsc, scores[3].nsd) == (0.0, 0.0)
    assert (scores[2].dsc, scores[2].nsd) == (1.0, 1.0)  # absent in both


def test_low_dsc_sets_nsd_to_zero_from_2022_on():
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:10, 2:10, 2:10] = 1
    pred_small = np.zeros_like(gt)
    pred_small[2:10, 2:10, 9:10] = 1  # DSC = 2*64/(512+64) ~ 0.22: above the floor
    pred_tiny = np.zeros_like(gt)
    pred_tiny[2:4, 2:4, 9:10] = 1  # DSC ~ 0.015: below the floor, NSD forced to 0 in 2022+
    assert score_case(gt, pred_tiny, (1, 1, 1), "flare22")[1].nsd == 0.0
    assert score_case(gt, pred_tiny, (1, 1, 1), "flare21")[1].nsd > 0.0
    assert score_case(gt, pred_small, (1, 1, 1), "flare22")[1].nsd > 0.0


def test_axis_order_and_spacing_matter():
    gt = np.zeros((12, 12, 12), np.uint8)
    gt[3:9, 3:9, 3:9] = 1
    pred = np.roll(gt, 1, axis=2)
    # A one-voxel shift along the third axis is 1 mm at (1, 1, 1) but 3 mm at (1, 1, 3).
    assert score_case(gt, pred, (1, 1, 1), "flare21")[1].nsd == 1.0
    assert score_case(gt, pred, (1, 1, 3), "flare21")[1].nsd < 1.0
    assert score_case(gt, pred, (3, 1, 1), "flare21")[1].nsd == 1.0


def test_bad_arguments():
    a = np.zeros((4, 4, 4), np.uint8)
    with pytest.raises(ValueError, match="one shape"):
        score_case(a, np.zeros((4, 4, 5), np.uint8), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        score_case(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="unknown rules"):
        score_case(a, a, (1, 1, 1), "flare99")


def test_label_boxes_and_labels_present_equal_scipy_and_numpy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(rng.integers(1, 9, 3))
        labels = ((rng.random(shape) < rng.random()) * rng.integers(0, 7, shape)).astype(
            rng.choice([np.uint8, np.uint16, np.int32]))
        if rng.random() < 0.5:
            labels = np.asfortranarray(labels)
        if rng.random() < 0.2:
            labels = labels[::2]  # not contiguous
        max_label = int(rng.integers(1, 8))
        assert label_runs(labels).boxes(max_label) == list(find_objects(labels, max_label))
        assert label_runs(labels).present() == tuple(int(v) for v in np.unique(labels) if v)


@pytest.mark.parametrize("dtype", [np.bool_, np.uint8, np.uint16, np.int32, np.int64])
def test_flat_nonzero_equals_numpy(dtype):
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 8, 9, 1001):
        values = ((rng.random(n) < 0.2) * rng.integers(1, 5, n)).astype(dtype)
        np.testing.assert_array_equal(flat_nonzero(values), np.flatnonzero(values))


@pytest.mark.parametrize("huge", [np.uint64(2**64 - 1), np.float32(1e20)])
def test_label_values_beyond_int64_are_ignored_as_every_other_unknown_label(huge, tmp_path):
    """A stray voxel of 2**64-1 (uint64) or 1e20 (float) is no organ: it must neither wrap to a
    negative label (refused, or taken for another organ's box) nor change any organ's score."""
    gt = np.zeros((10, 10, 10), np.uint8)
    gt[2:6, 2:6, 2:6] = 1
    pred = gt.astype(huge.dtype)
    pred[8, 8, 8] = huge
    scores = score_case(gt, pred, (1.0, 1.0, 1.0), "flare21")
    assert {label: (s.dsc, s.nsd) for label, s in scores.items()} == {1: (1, 1), 2: (1, 1), 3: (1, 1), 4: (1, 1)}
    nib.save(nib.Nifti1Image(pred, np.eye(4), dtype=pred.dtype), str(tmp_path / "pred.nii.gz"))
    from evaluation.imageio import read_label_runs
    assert read_label_runs(tmp_path / "pred.nii.gz").runs.present() == (1, 2**62)


def test_the_official_loop_reads_files_with_each_years_casts(tmp_path):
    """FLARE21 leaves the prediction as get_fdata's floats (1.5 is no label there), FLARE22 casts
    it to uint8 (1.5 becomes liver) and FLARE23 to int8."""
    gt = np.zeros((8, 8, 6), np.uint8)
    gt[2:6, 2:6, 1:5] = 1
    nib.save(nib.Nifti1Image(gt, np.eye(4)), str(tmp_path / "gt.nii.gz"))
    nib.save(nib.Nifti1Image(gt * np.float32(1.5), np.eye(4)), str(tmp_path / "pred.nii.gz"))  # stored as floats
    scores = {year: official_files(tmp_path / "gt.nii.gz", tmp_path / "pred.nii.gz", get_rules(year))[1]
              for year in ("flare21", "flare22", "flare23")}
    assert scores == {"flare21": (0.0, 0.0), "flare22": (1.0, 1.0), "flare23": (1.0, 1.0)}


def random_label_map(rng: np.random.Generator) -> np.ndarray:
    shape = tuple(int(n) for n in rng.integers(1, 11, 3))
    labels = ((rng.random(shape) < rng.random()) * rng.integers(0, 5, shape)).astype(
        rng.choice([np.uint8, np.uint16, np.int32]))
    labels[tuple(slice(int(a), int(a) + 4) for a in rng.integers(0, 8, 3))] = rng.integers(1, 5)  # a block: long runs
    return np.asfortranarray(labels) if rng.random() < 0.5 else labels


def test_a_mask_from_runs_equals_the_label_in_any_box():
    rng = np.random.default_rng(2)
    for _ in range(300):
        labels = random_label_map(rng)
        runs = label_runs(labels)
        lo = [int(rng.integers(0, n)) for n in labels.shape]
        box = tuple(slice(a, int(rng.integers(a + 1, n + 1))) for a, n in zip(lo, labels.shape))
        label = int(rng.integers(0, 5))
        mask = runs.mask(label, box)
        np.testing.assert_array_equal(mask, labels[box] == label if label else np.zeros(mask.shape, bool))
        assert mask.dtype == bool and (mask.flags.f_contiguous if runs.fortran else mask.flags.c_contiguous)


def plain_runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end, value) of every run, line by line in memory order (Fortran): the definition."""
    flat, line = labels.ravel(order="F"), labels.shape[0]
    runs = []
    for first in range(0, flat.size, line):
        i = first
        for value, group in itertools.groupby(flat[first:first + line].tolist()):
            n = len(list(group))
            if value:
                runs.append((i, i + n - 1, value))
            i += n
    return runs


@pytest.mark.parametrize("dtype", [np.uint8, ">i2", np.uint16, np.int32, np.int64])
def test_runs_are_the_lines_stretches_of_one_label(dtype):
    """Runs crossing the 8-byte words the finder looks at, ending at a line's end and going on
    with the same label on the next line, in lines of any length, in either byte order."""
    rng = np.random.default_rng(4)
    for _ in range(200):
        shape = tuple(int(n) for n in rng.integers(1, 20, 3))
        labels = np.zeros(shape, dtype, order="F")
        for _ in range(int(rng.integers(0, 6))):
            lo = [int(rng.integers(0, n)) for n in shape]
            labels[tuple(slice(a, a + int(rng.integers(1, 12))) for a in lo)] = rng.integers(1, 4)
        runs = label_runs(labels)
        assert list(zip(runs.starts.tolist(), runs.ends.tolist(), runs.values.tolist())) == plain_runs(labels)


def test_runs_found_a_few_lines_at_a_time_equal_those_of_the_whole_map():
    rng = np.random.default_rng(3)
    for _ in range(100):
        labels = np.asfortranarray(random_label_map(rng))
        flat, line = labels.ravel(order="F"), labels.shape[0]
        lines = flat.size // line
        cuts = np.unique(np.r_[0, rng.integers(0, lines + 1, int(rng.integers(0, 4))), lines]) * line
        chunks = [flat[a:b] for a, b in zip(cuts[:-1], cuts[1:])]
        got, want = runs_of_lines(chunks, labels.shape), label_runs(labels)
        for a, b in ((got.starts, want.starts), (got.ends, want.ends), (got.values, want.values)):
            np.testing.assert_array_equal(a, b)
        assert got.boxes(4) == want.boxes(4)
    with pytest.raises(ValueError, match="voxels given"):
        runs_of_lines([np.zeros(6, np.uint8)], (2, 2, 2))
    assert LabelRuns.empty((2, 3, 4)).boxes(2) == [None, None]


def test_arrays_are_read_as_files_are_float_noise_rounded_fractions_and_negatives_refused():
    """score_case's arrays follow the file reader's rule: a liver stored as 0.99999994 is the liver;
    a value of 0.5 or -1 is no label and is refused (it once scored another organ as present)."""
    gt = np.zeros((20, 20, 10), np.float32)
    gt[5:10, 5:10, 3:6] = np.float32(0.99999994)
    pred = (gt > 0).astype(np.uint8)
    liver = score_case(gt, pred, (1.0, 1.0, 1.0))[1]
    assert (liver.dsc, liver.nsd) == (1.0, 1.0)
    for value, message in ((0.5, "not whole numbers"), (-1.0, "negative")):
        bad = gt.copy()
        bad[0, 0, 0] = value
        with pytest.raises(InputError, match=message):
            score_case(bad, pred, (1.0, 1.0, 1.0))
