"""The submission's defaults and choices, importable without torch (the command checks its
arguments before it imports torch)."""
from __future__ import annotations

from pathlib import Path

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "flare21_c2f.pt"
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("fp16", "bf16", "fp32")
BACKENDS = ("auto", "torch", "openvino")  # what runs the networks (inference.openvino_runtime)
MAX_SEED = 2**63 - 1  # the largest seed torch.manual_seed takes
WEIGHTS_HELP = ("get weights: the project's repository ships demo weights as weights/flare21_c2f.pt "
                "(see weights/README.md), flare-train and flare-checkpoint combine make your own")
