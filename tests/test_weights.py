"""The shipped weights: what they are and that they segment a phantom no training run has seen."""
from pathlib import Path

import torch

from evaluation.metrics import score_case
from inference.checkpoint import load
from inference.pipeline import Segmenter
from training import phantom

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "flare21_c2f.pt"
UNSEEN_SEED = 4242  # the demo weights were trained on seed 1


def test_shipped_weights_are_the_phantom_trained_demo():
    models = load(WEIGHTS)
    assert models.trained_on.startswith("phantom-trained demo weights")
    assert models.labels == {1: "liver", 2: "kidney", 3: "spleen", 4: "pancreas"}
    for stage in ("coarse", "fine"):
        record = models.training[stage]
        assert record["steps"] > 0 and record["config"]["stage"] == stage
        assert tuple(record["config"]["input_size"]) == models.network(stage).config.input_size
    assert WEIGHTS.stat().st_size < 30e6  # float16: small enough for the repository


# Floors for one unseen case, below what 20 unseen full-size phantoms scored on average (liver 0.975,
# kidney 0.955, spleen 0.949, pancreas 0.912 DSC; docs/training.md): a guard against broken weights
# or a broken pipeline, not the weights' measure.
DSC_FLOOR = {1: 0.9, 2: 0.8, 3: 0.8, 4: 0.7}


def test_shipped_weights_segment_an_unseen_phantom():
    case = phantom.generate(phantom.case_seed(UNSEEN_SEED, 0), max_side=160)
    result = Segmenter(load(WEIGHTS), torch.device("cpu"), "fp32")(case.image, case.spacing)
    scores = score_case(case.labels, result.labels, case.spacing, "flare21")
    assert all(scores[label].dsc > DSC_FLOOR[label] for label in phantom.LABELS), {
        k: round(s.dsc, 3) for k, s in scores.items()}
