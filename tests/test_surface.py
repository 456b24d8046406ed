"""The surface Dice equals DeepMind's surface-distance definition."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.official_loop import official_nsd, sd
from evaluation.surface import neighbour_codes, surface_dice, surfel_area_table

SPACINGS = [(1.0, 1.0, 1.0), (0.8, 0.8, 2.5), (0.7, 1.3, 3.1), (2.0, 0.5, 0.5), (0.9765625, 0.9765625, 5.0)]


@pytest.mark.parametrize("spacing", SPACINGS)
def test_area_table_matches_reference_for_all_256_codes(spacing):
    spacing = tuple(float(np.float32(s)) for s in spacing)
    ours = surfel_area_table(spacing)
    ref = sd.lookup_tables.create_table_neighbour_code_to_surface_area(spacing)
    np.testing.assert_allclose(ours, ref, rtol=1e-14, atol=0)


def test_neighbour_codes_match_reference_encoding():
    rng = np.random.default_rng(0)
    mask = rng.random((6, 7, 5)) < 0.5
    from scipy.ndimage import correlate

    padded = np.zeros(np.array(mask.shape) + 1, np.uint8)
    padded[:-1, :-1, :-1] = mask
    ref = correlate(padded, sd.lookup_tables.ENCODE_NEIGHBOURHOOD_3D_KERNEL, mode="constant", cval=0)
    np.testing.assert_array_equal(neighbour_codes(mask), ref)


def test_distance_equal_to_tolerance_counts():
    gt = np.zeros((12, 12, 12), bool)
    gt[3:8, 3:8, 3:8] = True
    pred = np.roll(gt, 1, axis=0)  # every surfel is 0 or exactly 1 mm from the other surface
    assert surface_dice(gt, pred, (1.0, 1.0, 1.0), 1.0) == 1.0
    assert surface_dice(gt, pred, (1.0, 1.0, 1.0), 0.999) < 1.0


def test_empty_masks():
    empty = np.zeros((5, 5, 5), bool)
    full = empty.copy()
    full[1:3, 1:3, 1:3] = True
    assert math.isnan(surface_dice(empty, empty, (1, 1, 1), 1))
    assert surface_dice(full, empty, (1, 1, 1), 1) == 0.0
    assert surface_dice(empty, full, (1, 1, 1), 1) == 0.0


@st.composite
def mask_pairs(draw):
    """Two masks of one shape built from boxes, noise, border-touching blocks and far islands."""
    shape = tuple(draw(st.integers(2, 14)) for _ in range(3))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)

    def mask():
        kind = draw(st.sampled_from(["empty", "box", "noise", "border", "box+island"]))
        m = np.zeros(shape, bool)
        if kind == "empty":
            return m
        if kind == "noise":
            return rng.random(shape) < rng.uniform(0.05, 0.95)
        lo = [rng.integers(0, n) for n in shape]
        hi = [rng.integers(a + 1, n + 1) for a, n in zip(lo, shape)]
        if kind == "border":
            lo = [0, lo[1], lo[2]]
        m[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
        if kind == "box+island":
            m[-1, -1, -1] = True
            m[0, 0, 0] = True
        return m

    gt = mask()
    pred = mask() if draw(st.booleans()) else (np.roll(gt, draw(st.integers(-2, 2)), axis=draw(st.integers(0, 2)))
                                                ^ (rng.random(shape) < 0.03))
    spacing = tuple(float(np.float32(draw(st.floats(0.3, 5.0)))) for _ in range(3))
    tolerance = draw(st.one_of(st.sampled_from([0.0, 1.0, 2.0, 3.0, 5.0, 7.0]), st.floats(0.0, 10.0)))
    return gt, pred, spacing, tolerance


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mask_pairs())
def test_surface_dice_equals_surface_distance(case):
    gt, pred, spacing, tolerance = case
    ours = surface_dice(gt, pred, spacing, tolerance)
    ref = official_nsd(gt, pred, spacing, tolerance)
    if math.isnan(ref):
        assert math.isnan(ours)
    else:
        assert abs(ours - ref) <= 1e-9


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.5, 0.5, 1.0), (2.0, 2.0, 2.0)])
def test_ties_on_lattice_spacings(spacing):
    """Spacings where many distances hit the tolerance exactly: ties must count like the reference."""
    rng = np.random.default_rng(7)
    for _ in range(30):
        gt = rng.random((9, 9, 9)) < 0.3
        pred = np.roll(gt, int(rng.integers(1, 3)), axis=int(rng.integers(0, 3)))
        for tol in (0.5, 1.0, 2.0, 2.5, 3.0):
            assert abs(surface_dice(gt, pred, spacing, tol) - official_nsd(gt, pred, spacing, tol)) <= 1e-9


@pytest.mark.parametrize("spacing,tolerance", [((0.8, 0.8, 2.5), 1.0), ((0.8, 0.8, 2.5), 7.0),
                                               ((1.0, 1.0, 1.0), 2.0), ((0.3, 0.7, 1.1), 2.4),
                                               ((0.1, 0.1, 0.1), 7.0)])  # ball too large to build: tree only
def test_direct_and_tree_lookups_agree(monkeypatch, spacing, tolerance):
    """Small balls are checked offset by offset, large ones partly by k-d tree: same answer."""
    import evaluation.surface as surface

    rng = np.random.default_rng(5)
    gt = rng.random((20, 18, 9)) < 0.3
    pred = np.roll(gt, 2, axis=0) & (rng.random(gt.shape) < 0.9)
    results = []
    for direct in (0, 10**9):
        monkeypatch.setattr(surface, "DIRECT_OFFSETS", direct)
        results.append(surface_dice(gt, pred, spacing, tolerance))
    assert results[0] == pytest.approx(results[1], abs=1e-15)
    assert results[0] == pytest.approx(official_nsd(gt, pred, spacing, tolerance), abs=1e-9)


def test_ball_offsets_are_exactly_the_offsets_within_tolerance():
    from evaluation.surface import ball_offsets, edt_distance

    spacing, tolerance = (0.8, 0.8, 2.4), 2.4  # 3 x 0.8 is just above 2.4 in floating point
    ball = ball_offsets(spacing, tolerance)
    grid = np.stack(np.meshgrid(*[np.arange(-6, 7)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    expected = {tuple(o) for o in grid[edt_distance(grid, spacing) <= tolerance]}
    assert {tuple(o) for o in ball} == expected
    assert (0, 0, 1) in expected and (3, 0, 0) not in expected
    distances = edt_distance(ball, spacing)
    assert np.all(np.diff(distances) >= 0) and tuple(ball[0]) == (0, 0, 0)


@pytest.mark.parametrize(("spacing", "tolerance"), [((0.6, 0.6, 0.6), 0.6 * 3), ((1.1, 2.2, 3.3), 5.5)])
def test_a_near_tie_in_the_k_d_tree_is_decided_as_the_reference_decides_it(spacing, tolerance):
    """The tree's nearest surfel (in its own arithmetic) lies just beyond the tolerance while another
    lies exactly at it: the other one counts, as in surface-distance."""
    gt = np.zeros((12, 12, 12), bool)
    gt[7, 4, 6] = gt[8, 6, 8] = True
    pred = np.zeros((12, 12, 12), bool)
    pred[4, 6, 8] = True
    assert surface_dice(gt, pred, spacing, tolerance) == pytest.approx(official_nsd(gt, pred, spacing, tolerance),
                                                                      abs=1e-12)


def test_masks_that_are_not_bool_and_tolerances_that_are_not_finite_are_refused():
    mask = np.zeros((6, 6, 6), bool)
    mask[2:4, 2:4, 2:4] = True
    with pytest.raises(ValueError, match="bool"):
        surface_dice(mask * np.uint8(255), mask * np.uint8(255), (1.0, 1.0, 1.0), 1.0)
    for tolerance in (math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="tolerance"):
            surface_dice(mask, mask, (1.0, 1.0, 1.0), tolerance)
