"""Per-organ DSC and NSD of one case under a year's rules: the Python API behind the CLI.

    >>> from evaluation.metrics import score_case
    >>> scores = score_case(gt, pred, spacing=(0.8, 0.8, 2.5), rules="flare22")
    >>> scores[1].dsc, scores[1].nsd          # liver

`gt` and `pred` are integer label maps of the same 3D shape, axes (i, j, k) as nibabel returns
them (x, y, z voxel axes); `spacing` is the voxel size in mm along those axes. The axial slab of
aorta, IVC and oesophagus is taken along the third axis, as the official scripts do.

Semantics are those of the official scripts (docs/scoring.md): both empty -> DSC 1, NSD 1; only
one empty -> 0, 0; DSC below the year's floor -> NSD 0; the slab is the official
`[z_min:z_max]`, which leaves out the top ground-truth slice unless `fix_slab=True`. An empty slab
(a one-slice ground truth) gives NaN, NaN, with a note; the official script stops there with a
ValueError (surface-distance on an empty volume).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from evaluation.rules import Organ, Rules, get_rules
from evaluation.surface import Spacing, surface_dice


@dataclass(frozen=True)
class OrganScore:
    """DSC and NSD (in [0, 1], NaN where undefined) of one organ; note says why a value is special.

    A value set by a rule rather than computed is the int 0 or 1, as in the official scripts
    (their CSV files show such columns as integers).
    """

    dsc: float
    nsd: float
    note: str | None = None


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Dice of two bool masks: 2 |A and B| / (|A| + |B|); NaN when both are empty."""
    total = int(np.count_nonzero(gt)) + int(np.count_nonzero(pred))
    if total == 0:
        return float("nan")
    return 2 * int(np.count_nonzero(gt & pred)) / total


Box = tuple[slice, slice, slice]


def flat_nonzero(flat: np.ndarray) -> np.ndarray:
    """Indices of the non-zero elements of a contiguous 1D integer or bool array, ascending.

    Same result as np.flatnonzero, several times faster on sparse data: it first finds the
    non-zero 8-byte words and only then looks at the elements inside them.
    """
    per_word = 8 // flat.itemsize
    n_words = flat.size // per_word
    words = flat[: n_words * per_word].view(np.uint64)
    candidates = (np.flatnonzero(words)[:, None] * per_word + np.arange(per_word)).ravel()
    tail = np.flatnonzero(flat[n_words * per_word :]) + n_words * per_word
    return np.concatenate([candidates[flat[candidates] != 0], tail])


@dataclass(frozen=True)
class LabelRuns:
    """The labelled voxels of a 3D label map as runs: stretches of one non-zero value along the
    fastest-varying axis in memory (no run continues onto the next line). starts and ends are flat
    indices in memory order (inclusive), values the label of each run, ascending by start."""

    starts: np.ndarray
    ends: np.ndarray
    values: np.ndarray
    shape: tuple[int, int, int]
    fortran: bool  # memory order: x fastest (nibabel's usual) or z fastest

    def present(self) -> tuple[int, ...]:
        """The label values other than 0, ascending."""
        return tuple(int(v) for v in np.unique(self.values))

    def boxes(self, max_label: int) -> list[Box | None]:
        """Bounding box of each label 1..max_label (None where absent)."""
        fast_axis, mid_axis, slow_axis = (0, 1, 2) if self.fortran else (2, 1, 0)
        n_fast, n_mid = self.shape[fast_axis], self.shape[mid_axis]
        boxes: list[Box | None] = [None] * max_label
        keep = self.values <= max_label
        by_label = np.argsort(self.values[keep], kind="stable")  # each label's runs stay in memory order
        starts, ends, values = self.starts[keep][by_label], self.ends[keep][by_label], self.values[keep][by_label]
        if values.size == 0:
            return boxes
        first = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
        last = np.r_[first[1:], values.size] - 1
        lines = starts // n_fast
        mid = lines % n_mid
        ranges = {
            fast_axis: (np.minimum.reduceat(starts - lines * n_fast, first),
                        np.maximum.reduceat(ends - lines * n_fast, first)),
            mid_axis: (np.minimum.reduceat(mid, first), np.maximum.reduceat(mid, first)),
            slow_axis: (lines[first] // n_mid, lines[last] // n_mid),
        }
        for n, label in enumerate(values[first]):
            boxes[int(label) - 1] = tuple(slice(int(ranges[a][0][n]), int(ranges[a][1][n]) + 1) for a in range(3))
        return boxes


def label_runs(labels: np.ndarray) -> LabelRuns:
    """The runs of a 3D label map. Reads the volume once in memory order (no copy for C- or
    Fortran-ordered data) to find the labelled voxels; the rest costs in proportion to those."""
    if not (labels.flags.c_contiguous or labels.flags.f_contiguous):
        labels = np.ascontiguousarray(labels)
    fortran = labels.flags.f_contiguous and not labels.flags.c_contiguous
    n_fast = labels.shape[0 if fortran else 2]
    flat = labels.ravel(order="K")  # memory order, no copy
    where = flat_nonzero(flat.view(np.uint8) if flat.dtype == np.bool_ else flat)
    values = flat[where]
    new_run = np.r_[where.size > 0, (np.diff(where) != 1) | (values[1:] != values[:-1]) | (where[1:] % n_fast == 0)]
    first = np.flatnonzero(new_run)
    last = np.append(first[1:], where.size)[: first.size] - 1  # empty when nothing is labelled
    return LabelRuns(where[first], where[last], values[first], labels.shape, fortran)


def _union_box(
    a: Box, b: Box, limit: Box
) -> Box | None:
    """The box covering a and b, clipped to limit; None when the clipped box is empty."""
    box = []
    for sa, sb, sl in zip(a, b, limit):
        lo = max(min(sa.start, sb.start), sl.start)
        hi = min(max(sa.stop, sb.stop), sl.stop)
        if hi <= lo:
            return None
        box.append(slice(lo, hi))
    return tuple(box)


def _scored_region(organ: Organ, gt_box: Box, shape: tuple[int, ...], fix_slab: bool):
    """The part of the volume an organ is scored in: all of it, or its ground-truth axial slab."""
    region = tuple(slice(0, n) for n in shape)
    if not organ.slab:
        return region
    z = gt_box[2]
    return region[:2] + (slice(z.start, z.stop if fix_slab else z.stop - 1),)


def score_organ(
    gt: np.ndarray,
    pred: np.ndarray,
    organ: Organ,
    spacing: Spacing,
    gt_box: Box | None,
    pred_box: Box | None,
    nsd_dsc_floor: float | None,
    fix_slab: bool = False,
) -> OrganScore:
    """Score one organ given the label maps and the bounding boxes of its label in each."""
    if gt_box is None and pred_box is None:
        return OrganScore(1, 1)
    if gt_box is None or pred_box is None:
        return OrganScore(0, 0)
    region = _scored_region(organ, gt_box, gt.shape, fix_slab)
    box = _union_box(gt_box, pred_box, region)
    if box is None:
        return OrganScore(float("nan"), float("nan"),
                          "empty axial slab (one-slice ground truth; the official script stops here)")
    g, p = gt[box] == organ.label, pred[box] == organ.label
    dsc = dice(g, p)
    if nsd_dsc_floor is not None and dsc < nsd_dsc_floor:
        return OrganScore(dsc, 0)
    return OrganScore(dsc, surface_dice(g, p, spacing, organ.tolerance_mm))


def score_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Spacing,
    rules: Rules | str = "flare21",
    fix_slab: bool = False,
    gt_runs: LabelRuns | None = None,
    pred_runs: LabelRuns | None = None,
) -> dict[int, OrganScore]:
    """Per-organ scores of one case, keyed by label value, in the rules' organ order; gt_runs and
    pred_runs (label_runs of gt and pred) save the pass over each volume when already made."""
    rules = get_rules(rules) if isinstance(rules, str) else rules
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ValueError(f"need two 3D label maps of one shape, got {gt.shape} and {pred.shape}")
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    spacing = tuple(float(s) for s in spacing)
    gt_boxes = (gt_runs or label_runs(gt)).boxes(rules.max_label)
    pred_boxes = (pred_runs or label_runs(pred)).boxes(rules.max_label)
    return {
        o.label: score_organ(
            gt, pred, o, spacing, gt_boxes[o.label - 1], pred_boxes[o.label - 1],
            rules.nsd_dsc_floor, fix_slab,
        )
        for o in rules.organs
    }
