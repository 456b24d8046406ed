"""Validation of a stage being trained: the held-out cases through the pipeline, scored by the
project's own scorer (FLARE21 rules: DSC and NSD at 1 mm).

coarse: the coarse stage alone, its labels resampled to the CT's grid (Segmenter.coarse_only);
fine: the fine stage alone in the ground truth's organ box plus the checkpoint's margin
(Segmenter.fine_only), as if the coarse stage had found the organs exactly.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from evaluation.metrics import score_case
from inference.checkpoint import Models
from inference.pipeline import Segmenter
from inference.postprocessing import organ_region
from inference.torch_runtime import TorchNetworks
from training.data import Case, read_case


def score(models: Models, stage: str, cases: list[Case], device: torch.device, precision: str) -> dict[str, float]:
    """Mean DSC and NSD per organ over the cases ("dsc_liver", ..., "nsd_liver", ...) and their
    means over organs ("dsc_mean", "nsd_mean"), and for the coarse stage the mean fraction of the
    labelled voxels inside its box plus margin ("box_recall"); the models hold the stage's network."""
    segmenter = Segmenter(models.spec(), TorchNetworks(models, device, precision))
    per_organ: dict[str, list[float]] = {}
    for case in cases:
        ct, truth = read_case(case, models.labels)
        if stage == "coarse":
            result = segmenter.coarse_only(ct.data, ct.spacing)
            predicted = result.labels
            per_organ.setdefault("box_recall", []).append(box_recall(truth, result.box))
        else:
            region = organ_region(truth, truth.shape, ct.spacing, models.post.box_margin_mm, models.post.edge_padding)
            if region is None:  # no organ, so no box for the fine stage to see: the case says nothing of it
                continue
            predicted = segmenter.fine_only(ct.data, ct.spacing, *region).labels
        for label, organ in score_case(truth, predicted, ct.spacing, "flare21").items():
            name = models.labels[label]
            per_organ.setdefault(f"dsc_{name}", []).append(float(organ.dsc))
            per_organ.setdefault(f"nsd_{name}", []).append(float(organ.nsd))
    means = {key: _nanmean(values) for key, values in per_organ.items()}
    for metric in ("dsc", "nsd"):
        means[f"{metric}_mean"] = _nanmean([v for k, v in means.items() if k.startswith(f"{metric}_")])
    return means


def box_recall(truth: np.ndarray, box: tuple[slice, ...] | None) -> float:
    """The fraction of the labelled voxels inside a box (what the fine stage can see); NaN
    without labels."""
    total = int(np.count_nonzero(truth))
    if total == 0:
        return math.nan
    return int(np.count_nonzero(truth[box])) / total if box is not None else 0.0


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan
