"""The arithmetic a training step runs in: fp16 mixed precision on CUDA (the paper's), and on
the CPU whichever of bf16 autocast and fp32 a measured step at the input size is faster in. CPUs
differ (one with AVX-512 bf16 ran a step 1.3-2x faster in bf16, one with AVX2 only about 12x
slower), and so do sizes (on the former, the fine network at 64^3 ran as fast in either)."""
from __future__ import annotations

import copy
import time

import torch

from inference.torch_runtime import choose_precision
from training.config import TrainConfig
from training.loss import dice_focal_loss


def step_seconds(net: torch.nn.Module, size: tuple[int, int, int], dtype: torch.dtype | None,
                 device: torch.device) -> float:
    """Seconds of one forward + loss + backward pass of a copy of the network on a random
    (1, 1, *size) input, autocast to dtype (None: fp32), after a warm-up pass."""
    net = copy.deepcopy(net).train()
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, net.config.in_channels, *size, generator=generator).to(device)
    labels = torch.randint(0, net.config.out_channels + 1, (1, *size), generator=generator).to(device)
    seconds = 0.0
    for _ in range(2):  # the first pass warms up; the second is timed
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = net(x)
        dice_focal_loss(logits, labels).backward()
        seconds = time.perf_counter() - start
    return seconds


def precision_problem(requested: str, device: torch.device) -> str | None:
    """Why the requested precision cannot train on the device (fp16 off CUDA), None where it can."""
    try:
        choose_precision(requested, device)
    except ValueError as exc:
        return f"--precision {exc}"
    return None


def choose_training_precision(requested: str, net: torch.nn.Module, config: TrainConfig,
                              device: torch.device) -> tuple[str, str]:
    """(precision, how it was chosen); ValueError for fp16 off CUDA (precision_problem)."""
    if problem := precision_problem(requested, device):
        raise ValueError(problem)
    if requested != "auto":
        return requested, " (as requested)"
    if device.type == "cuda":
        return "fp16", " (mixed precision on CUDA)"
    fp32 = step_seconds(net, config.input_size, None, device)
    bf16 = step_seconds(net, config.input_size, torch.bfloat16, device)
    choice = "bf16" if bf16 < fp32 else "fp32"
    return choice, (f" (measured here at the input size: a step took {fp32:.2f} s in fp32, {bf16:.2f} s in bf16; "
                    f"the ratio depends on the size, e.g. nearly 1 for the fine network at 64^3)")
