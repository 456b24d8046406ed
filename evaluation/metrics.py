"""Per-organ DSC and NSD of one case under a year's rules: the Python API behind the CLI.

    >>> from evaluation.metrics import score_case
    >>> scores = score_case(gt, pred, spacing=(0.8, 0.8, 2.5), rules="flare22")
    >>> scores[1].dsc, scores[1].nsd          # liver

`gt` and `pred` are integer label maps of the same 3D shape, axes (i, j, k) as nibabel returns
them (x, y, z voxel axes); `spacing` is the voxel size in mm along those axes. The axial slab of
aorta, IVC and oesophagus is taken along the third axis, as the official scripts do.
`score_runs` scores two label maps given as their runs (`evaluation.runs`), as the CLI reads them
from files; `score_case` is it for arrays.

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
from evaluation.runs import Box, LabelRuns, as_labels, label_runs
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
    gt: LabelRuns,
    pred: LabelRuns,
    organ: Organ,
    spacing: Spacing,
    gt_box: Box | None,
    pred_box: Box | None,
    nsd_dsc_floor: float | None,
    fix_slab: bool = False,
) -> OrganScore:
    """Score one organ given the label maps' runs and the bounding boxes of its label in each."""
    if gt_box is None and pred_box is None:
        return OrganScore(1, 1)
    if gt_box is None or pred_box is None:
        return OrganScore(0, 0)
    region = _scored_region(organ, gt_box, gt.shape, fix_slab)
    box = _union_box(gt_box, pred_box, region)
    if box is None:
        return OrganScore(float("nan"), float("nan"),
                          "empty axial slab (one-slice ground truth; the official script stops here)")
    g, p = gt.mask(organ.label, box), pred.mask(organ.label, box)
    dsc = dice(g, p)
    if nsd_dsc_floor is not None and dsc < nsd_dsc_floor:
        return OrganScore(dsc, 0)
    return OrganScore(dsc, surface_dice(g, p, spacing, organ.tolerance_mm))


def _check_shapes(gt: tuple[int, ...], pred: tuple[int, ...]) -> None:
    if len(gt) != 3 or gt != pred:
        raise ValueError(f"need two 3D label maps of one shape, got {gt} and {pred}")


def _checked_spacing(spacing: Spacing) -> Spacing:
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (mm), got {tuple(spacing)}")
    return tuple(float(s) for s in spacing)


def score_runs(gt: LabelRuns, pred: LabelRuns, spacing: Spacing, rules: Rules | str = "flare21",
               fix_slab: bool = False) -> dict[int, OrganScore]:
    """score_case of two label maps given as their runs (evaluation.runs)."""
    rules = get_rules(rules) if isinstance(rules, str) else rules
    _check_shapes(gt.shape, pred.shape)
    spacing = _checked_spacing(spacing)
    gt_boxes, pred_boxes = gt.boxes(rules.max_label), pred.boxes(rules.max_label)
    return {
        o.label: score_organ(
            gt, pred, o, spacing, gt_boxes[o.label - 1], pred_boxes[o.label - 1],
            rules.nsd_dsc_floor, fix_slab,
        )
        for o in rules.organs
    }


def score_case(
    gt: np.ndarray,
    pred: np.ndarray,
    spacing: Spacing,
    rules: Rules | str = "flare21",
    fix_slab: bool = False,
) -> dict[int, OrganScore]:
    """Per-organ scores of one case, keyed by label value, in the rules' organ order. The label
    maps are read as files are (evaluation.runs.as_labels): floats within 0.001 of whole numbers
    are those numbers; other fractions and negative values raise InputError."""
    _check_shapes(gt.shape, pred.shape)
    return score_runs(label_runs(as_labels(gt)), label_runs(as_labels(pred)), spacing, rules, fix_slab)
