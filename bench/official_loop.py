"""The organisers' scoring loop, run with DeepMind's surface-distance: the baseline and test oracle.

This follows the official FLARE evaluation scripts step by step (float read with get_fdata, each
year's cast: OFFICIAL_CASTS; one full-volume mask per organ, surface-distance per organ) so that
the project's scorer can be checked against it and timed against it. It needs the `surface-distance` package
(requirements-dev.txt), which still uses `np.Inf`; on NumPy 2 that name is restored here.
"""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

if not hasattr(np, "Inf"):  # surface-distance 0.1 uses the NumPy 1 alias
    np.Inf = np.inf

import surface_distance as sd  # noqa: E402

from evaluation.rules import Rules  # noqa: E402

# (ground truth, prediction) casts of the float64 volumes get_fdata returns, as each year's script
# has them: FLARE21 np.uint8(gt) and the prediction left as floats; FLARE22 np.uint8 of both;
# FLARE23 .astype(np.int8) of both. None: not cast.
OFFICIAL_CASTS = {"flare21": (np.uint8, None), "flare22": (np.uint8, np.uint8), "flare23": (np.int8, np.int8)}


def official_dice(gt: np.ndarray, pred: np.ndarray) -> float:
    total = gt.sum() + pred.sum()
    return float("nan") if total == 0 else 2 * (gt & pred).sum() / total


def official_nsd(gt: np.ndarray, pred: np.ndarray, spacing, tolerance_mm: float) -> float:
    distances = sd.compute_surface_distances(gt, pred, spacing)
    with np.errstate(invalid="ignore"):
        return float(sd.compute_surface_dice_at_tolerance(distances, tolerance_mm))


def official_case(gt: np.ndarray, pred: np.ndarray, spacing, rules: Rules,
                  fix_slab: bool = False) -> dict[int, tuple[float, float]]:
    """{label: (DSC, NSD)} of one case by the official per-organ loop (unrounded)."""
    out = {}
    for organ in rules.organs:
        i = organ.label
        gt_i, pred_i = gt == i, pred == i
        if gt_i.sum() == 0 and pred_i.sum() == 0:
            out[i] = (1.0, 1.0)
        elif gt_i.sum() == 0 or pred_i.sum() == 0:
            out[i] = (0.0, 0.0)
        else:
            if organ.slab:
                z = np.where(gt_i)[2]
                top = z.max() + 1 if fix_slab else z.max()
                gt_i, pred_i = gt[:, :, z.min():top] == i, pred[:, :, z.min():top] == i
                if gt_i.size == 0:  # one-slice GT: the official script stops here (ValueError); NaN instead
                    out[i] = (float("nan"), float("nan"))
                    continue
            dsc = official_dice(gt_i, pred_i)
            if rules.nsd_dsc_floor is not None and dsc < rules.nsd_dsc_floor:
                out[i] = (dsc, 0.0)
            else:
                out[i] = (dsc, official_nsd(gt_i, pred_i, spacing, organ.tolerance_mm))
    return out


def official_read(path: Path, cast) -> np.ndarray:
    """A label map as an official script reads it: get_fdata's float64, then `cast` (None: none)."""
    data = nib.load(path).get_fdata()
    return data if cast is None else data.astype(cast)


def official_files(gt_file: Path, pred_file: Path, rules: Rules) -> dict[int, tuple[float, float]]:
    """Score a file pair as that year's official script does: float64 read, the year's casts
    (OFFICIAL_CASTS), the ground truth's spacing (get_zooms()[:3], as FLARE23; the same for 3D)."""
    gt_cast, pred_cast = OFFICIAL_CASTS[rules.name]
    spacing = nib.load(gt_file).header.get_zooms()[:3]
    return official_case(official_read(gt_file, gt_cast), official_read(pred_file, pred_cast), spacing, rules)
