"""The organisers' scoring loop, run with DeepMind's surface-distance: the baseline and test oracle.

This follows the official FLARE evaluation scripts step by step (float read with get_fdata, a
uint8 copy, one full-volume mask per organ, surface-distance per organ) so that the project's
scorer can be checked against it and timed against it. It needs the `surface-distance` package
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
                if gt_i.size == 0:  # one-slice GT: the official script stops with a ValueError here
                    out[i] = (float("nan"), float("nan"))
                    continue
            dsc = official_dice(gt_i, pred_i)
            if rules.nsd_dsc_floor is not None and dsc < rules.nsd_dsc_floor:
                out[i] = (dsc, 0.0)
            else:
                out[i] = (dsc, official_nsd(gt_i, pred_i, spacing, organ.tolerance_mm))
    return out


def official_files(gt_file: Path, pred_file: Path, rules: Rules) -> dict[int, tuple[float, float]]:
    """Score a file pair as the official script does: float64 read, uint8 cast, GT spacing."""
    gt_img = nib.load(gt_file)
    spacing = gt_img.header.get_zooms()
    gt = np.uint8(gt_img.get_fdata())
    pred = np.uint8(nib.load(pred_file).get_fdata())
    return official_case(gt, pred, spacing, rules)
