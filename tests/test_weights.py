"""The shipped weights: what they are and that they segment a phantom no training run has seen."""
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.metrics import score_case
from inference.checkpoint import load
from inference.pipeline import Segmenter
from inference.postprocessing import logits_to_labels
from inference.preprocessing import resize_for_stage
from inference.torch_runtime import TorchNetworks
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


@pytest.fixture(scope="module")
def unseen_run():
    """An unseen phantom, the shipped weights' result on it (fp32, CPU) and the largest magnitude
    each convolution of either network put out."""
    case = phantom.generate(phantom.case_seed(UNSEEN_SEED, 0), max_side=160)
    models = load(WEIGHTS)
    networks = TorchNetworks(models, "cpu", "fp32")
    largest: dict[str, float] = {}

    def record(name):
        def hook(module, inputs, output):
            largest[name] = max(largest.get(name, 0.0), float(output.abs().max()))
        return hook

    for stage, net in networks.nets.items():
        for name, module in net.named_modules():
            if isinstance(module, torch.nn.Conv3d):
                module.register_forward_hook(record(f"{stage}.{name}"))
    return case, Segmenter(models.spec(), networks)(case.image, case.spacing), largest


def test_shipped_weights_segment_an_unseen_phantom(unseen_run):
    case, result, _ = unseen_run
    scores = score_case(case.labels, result.labels, case.spacing, "flare21")
    assert all(scores[label].dsc > DSC_FLOOR[label] for label in phantom.LABELS), {
        k: round(s.dsc, 3) for k, s in scores.items()}


FP16_MAX = 65504.0  # the largest finite float16


def test_shipped_weights_stay_far_inside_float16_on_a_phantom(unseen_run):
    """The image runs the networks in FP16 on the GPU: no convolution of either stage may come
    near float16's largest value on an unseen phantom at the checkpoint's own sizes (measured: at
    most about 145; 64x headroom asked for other scans and other GPUs' kernels)."""
    _, _, largest = unseen_run
    assert {name.split(".")[0] for name in largest} == {"coarse", "fine"}
    worst = max(largest, key=largest.get)
    assert largest[worst] < FP16_MAX / 64, (worst, largest[worst])


def test_fp16_networks_give_the_fp32_logits_of_the_shipped_weights():
    """The FP16 path (half networks, instance norm in float32, float32 logits out) on the
    coarse network at a small input, run on the CPU, which emulates float16 slowly."""
    case = phantom.generate(phantom.case_seed(UNSEEN_SEED, 0), max_side=96)
    models = load(WEIGHTS)
    fp32, fp16 = (TorchNetworks(models, "cpu", precision) for precision in ("fp32", "fp16"))
    x = models.normalisation["coarse"](resize_for_stage(case.image, (32, 32, 32), "coarse"))
    a, b = fp32("coarse", x), fp16("coarse", x)
    assert b.dtype == np.float32 and a.shape == b.shape
    assert float(np.abs(a - b).max()) < 0.25
    labels_32, labels_16 = logits_to_labels(a), logits_to_labels(b)
    assert labels_32.any() and float((labels_32 == labels_16).mean()) > 0.99
