"""The paper's two networks: the coarse residual U-Net and efficientSegNet (the fine network).

Tensors are (batch, channel, x, y, z) as defined in `inference.axes`. Both networks take one CT
channel, normalised as in the pipeline, and return one logit channel per organ: the outputs are
per-organ sigmoids, as the authors trained them (organs may overlap; the pipeline resolves
overlaps by the highest probability). Input sides must be divisible by 16 (and not all 16).

    python -m inference.networks     # parameters and multiply-adds at the paper's sizes, as JSON

Layer by layer as in docs/networks.md (from the paper and the authors' model sizes). With the
default widths both have exactly the authors' parameter counts.
"""
from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from flare_common import cli
from inference.axes import IN_PLANE_KERNEL, THROUGH_PLANE_KERNEL

Size3 = tuple[int, int, int]
OUTPUT_ACTIVATION = "sigmoid"  # one independent probability per organ channel
SIDE_MULTIPLE = 16  # four halvings of the input size


@dataclass(frozen=True)
class CoarseConfig:
    """Coarse residual U-Net: widths per level (the input is max-pooled between levels)."""

    in_channels: int = 1
    out_channels: int = 4
    widths: tuple[int, ...] = (8, 16, 32, 64, 128)
    dropout: float = 0.2
    input_size: Size3 = (160, 160, 160)


@dataclass(frozen=True)
class FineConfig:
    """efficientSegNet: encoder widths per level, and the inner width of the context block."""

    in_channels: int = 1
    out_channels: int = 4
    widths: tuple[int, ...] = (16, 32, 64, 128, 256)
    context_width: int = 64
    dropout: float = 0.2
    input_size: Size3 = (192, 192, 192)


def _padding(kernel: Size3) -> Size3:
    return tuple(k // 2 for k in kernel)


def _as_size3(kernel: int | Size3) -> Size3:
    return (kernel,) * 3 if isinstance(kernel, int) else tuple(kernel)


class InstanceNorm(nn.InstanceNorm3d):
    """Instance norm (no affine) computed in float32 whatever the input's precision, returned in
    the input's: statistics in bf16 or fp16 lose too much (a channel of equal values gave NaN
    gradients in bf16)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        autocast = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
        if x.dtype == torch.float32 and not autocast:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False) if autocast else nullcontext():
            return super().forward(x.float()).to(x.dtype)


def conv_norm(c_in: int, c_out: int, kernel: int | Size3 = 3, stride: int = 1) -> nn.Sequential:
    """Convolution (no bias, 'same' padding) followed by instance norm (no affine, in float32)."""
    kernel = _as_size3(kernel)
    return nn.Sequential(nn.Conv3d(c_in, c_out, kernel, stride, _padding(kernel), bias=False), InstanceNorm(c_out))


def conv_unit(c_in: int, c_out: int, kernel: int | Size3 = 3, stride: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """The conv unit: conv - instance norm - Dropout3d - ReLU."""
    layers = [*conv_norm(c_in, c_out, kernel, stride)]
    if dropout > 0:
        layers.append(nn.Dropout3d(dropout))
    return nn.Sequential(*layers, nn.ReLU(inplace=True))


class ResidualBlock(nn.Module):
    """[conv unit, conv-IN] + shortcut, then ReLU; the shortcut is a strided 1x1x1 conv-IN when
    `project`, the identity otherwise."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, dropout: float = 0.0, project: bool = True,
                 kernels: tuple[int | Size3, int | Size3] = (3, 3)):
        super().__init__()
        self.main = nn.Sequential(conv_unit(c_in, c_out, kernels[0], stride, dropout),
                                  *conv_norm(c_out, c_out, kernels[1]))
        if not project and (c_in != c_out or stride != 1):
            raise ValueError("an identity shortcut needs equal widths and stride 1")
        self.shortcut = conv_norm(c_in, c_out, 1, stride) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.main(x).add_(self.shortcut(x)), inplace=True)  # in place: one full-size map less


def _resize(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="trilinear", align_corners=True)


def _has_spread(x: torch.Tensor) -> bool:
    """Whether instance norm is defined on x: more than one spatial element. A single element
    normalises to exactly 0, so a conv-IN of it adds nothing and is skipped (small inputs only;
    at the paper's sizes every pooled map has several elements)."""
    return x.shape[2:].numel() > 1


def _bad_sides(sides) -> bool:
    """Whether the networks cannot take these spatial sides: each must be a multiple of 16, and the
    bottom feature map (sides / 16) must have more than one voxel for instance norm to be defined.
    (Arithmetic only: the sides may be a traced tensor's, when a network is exported.)"""
    return any(s % SIDE_MULTIPLE for s in sides) or torch.Size([s // SIDE_MULTIPLE for s in sides]).numel() < 2


def input_size_problem(size) -> str | None:
    """Why the networks cannot take inputs of this (x, y, z) size (a checkpoint's or a recipe's),
    None when they can: three positive whole sides that _bad_sides accepts."""
    if len(size) != 3 or any(not isinstance(s, int) or s < 1 for s in size) or _bad_sides(size):
        return f"input size {tuple(size)}: three sides, each a multiple of {SIDE_MULTIPLE}, not all {SIDE_MULTIPLE}"
    return None


def _check_input(x: torch.Tensor, in_channels: int) -> None:
    """Refuse tensors the networks cannot take (_bad_sides, and the channels)."""
    if x.dim() != 5 or x.shape[1] != in_channels or _bad_sides(x.shape[2:]):
        raise ValueError(f"expected a (batch, {in_channels}, x, y, z) tensor with sides divisible by "
                         f"{SIDE_MULTIPLE}, not all 16, got {tuple(x.shape)}")


class CoarseUNet(nn.Module):
    """Residual U-Net: per level two residual blocks (the first with a projection shortcut);
    max-pool (kernel 3, stride 2, pad 1) between levels; decoder levels concatenate the skip
    and the trilinearly upsampled features and apply one residual block; 1x1x1 head."""

    def __init__(self, config: CoarseConfig = CoarseConfig()):
        super().__init__()
        self.config = config
        w, p = config.widths, config.dropout
        self.encoder = nn.ModuleList(
            nn.Sequential(ResidualBlock(c_in, c_out, dropout=p), ResidualBlock(c_out, c_out, dropout=p, project=False))
            for c_in, c_out in zip((config.in_channels, *w[:-1]), w))
        self.pool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
        self.decoder = nn.ModuleList(ResidualBlock(w[i] + w[i + 1], w[i], dropout=p) for i in range(len(w) - 1))
        self.head = nn.Conv3d(w[0], config.out_channels, 1, bias=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels)
        skips = []
        for level, block in enumerate(self.encoder):
            x = block(x if level == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for block in reversed(self.decoder):
            size = skips[-1].shape[2:]
            x = torch.cat([skips.pop(), _resize(x, size)], dim=1)  # the skip is let go here
            x = block(x)
        return self.head(x)


class ContextBlock(nn.Module):
    """Mixed pyramid and strip pooling at the bottom of efficientSegNet.

    A 1x1x1 conv unit reduces the features to `width`; each branch starts with its own 1x1x1
    conv unit. Pyramid branch: 3x3x3 conv-IN of the features plus 3x3x3 conv-IN of their 2x2x2-
    and 4x4x4-average-pooled versions, upsampled back. Strip branch: the features averaged over
    whole planes (pooling kernels 1xNxN, Nx1xN, NxNx1 with N the current size), each followed by
    a conv-IN along the remaining axis (3x1x1, 1x3x1, 1x1x3) and broadcast back. Each branch ends
    in ReLU and a 3x3x3 conv unit; both are concatenated, reduced by a 1x1x1 conv-IN, added to the
    reduction, ReLU, a 3x3x3 conv unit and a plain 1x1x1 conv restore the input width.
    """

    def __init__(self, channels: int, width: int, dropout: float = 0.0):
        super().__init__()
        self.reduce = conv_unit(channels, width, 1, dropout=dropout)
        self.pyramid_in = conv_unit(width, width, 1, dropout=dropout)
        self.strip_in = conv_unit(width, width, 1, dropout=dropout)
        self.pyramid = nn.ModuleList(conv_norm(width, width, 3) for _ in range(3))  # full, /2, /4
        self.strips = nn.ModuleList(conv_norm(width, width, k) for k in ((3, 1, 1), (1, 3, 1), (1, 1, 3)))
        self.pyramid_out = conv_unit(width, width, 3, dropout=dropout)
        self.strip_out = conv_unit(width, width, 3, dropout=dropout)
        self.merge = conv_norm(2 * width, width, 1)
        self.out = nn.Sequential(conv_unit(width, width, 3, dropout=dropout), nn.Conv3d(width, channels, 1, bias=False))

    def pyramid_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the 3x3x3 conv-IN of x and of x average-pooled by 2 and by 4 (upsampled back)."""
        size = x.shape[2:]
        out = self.pyramid[0](x)
        for conv, factor in zip(self.pyramid[1:], (2, 4)):
            pooled = F.adaptive_avg_pool3d(x, [max(1, n // factor) for n in size])
            if _has_spread(pooled):
                out = out + _resize(conv(pooled), size)
        return out

    def strip_branch(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the strip-pooled features: x averaged over the (y, z), (x, z) and (x, y) planes,
        each convolved along the axis that remains and broadcast back over the plane."""
        out = torch.zeros_like(x)
        for conv, planes in zip(self.strips, ((3, 4), (2, 4), (2, 3))):
            strip = x.mean(dim=planes, keepdim=True)
            if _has_spread(strip):
                out = out + conv(strip)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.reduce(x)
        pyramid = self.pyramid_out(F.relu(self.pyramid_branch(self.pyramid_in(reduced))))
        strip = self.strip_out(F.relu(self.strip_branch(self.strip_in(reduced))))
        merged = self.merge(torch.cat([pyramid, strip], dim=1))
        return self.out(F.relu(reduced + merged))


class DecoderLevel(nn.Module):
    """1x1x1 conv unit halving the width, trilinear upsampling to the skip's size, addition of
    the skip, then an anisotropic residual block: in-plane 3x3x1 conv unit, through-plane 1x1x3
    conv-IN, with a 1x1x1 conv-IN projection shortcut."""

    def __init__(self, c_in: int, c_out: int, dropout: float = 0.0):
        super().__init__()
        self.reduce = conv_unit(c_in, c_out, 1, dropout=dropout)
        self.block = ResidualBlock(c_out, c_out, dropout=dropout, kernels=(IN_PLANE_KERNEL, THROUGH_PLANE_KERNEL))

    def join(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """The lower level's features reduced, upsampled to the skip's size and added to it."""
        return _resize(self.reduce(x), skip.shape[2:]).add_(skip)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.block(self.join(x, skip))


class EfficientSegNet(nn.Module):
    """efficientSegNet: residual encoder (strided convs), context block, slim decoder with
    additive skips and anisotropic convolutions, 1x1x1 head. No deep supervision."""

    def __init__(self, config: FineConfig = FineConfig()):
        super().__init__()
        self.config = config
        w, p = config.widths, config.dropout
        self.encoder = nn.ModuleList(
            nn.Sequential(ResidualBlock(c_in, c_out, stride=1 if level == 0 else 2, dropout=p),
                          ResidualBlock(c_out, c_out, dropout=p, project=False))
            for level, (c_in, c_out) in enumerate(zip((config.in_channels, *w[:-1]), w)))
        self.context = ContextBlock(w[-1], config.context_width, dropout=p)
        self.decoder = nn.ModuleList(DecoderLevel(w[i + 1], w[i], dropout=p) for i in range(len(w) - 1))
        self.head = nn.Conv3d(w[0], config.out_channels, 1, bias=False)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_input(x, self.config.in_channels)
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
        x = self.context(skips.pop())
        for level in reversed(self.decoder):
            x = level.join(x, skips.pop())  # the skip is let go before the block runs
            x = level.block(x)
        return self.head(x)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal initialisation of every convolution (fan-in, ReLU gain)."""
    for module in model.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_multiply_adds(model: nn.Module, input_size: Size3, in_channels: int = 1) -> int:
    """Multiply-adds of one forward pass of a batch of one, counted by torch's FLOP counter on
    meta tensors (shapes only, no computation): convolutions, 2 FLOPs per multiply-add."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        meta_model = type(model)(model.config).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta_model(torch.empty(1, in_channels, *input_size, device="meta"))
    return counter.get_total_flops() // 2


def describe(model: nn.Module) -> dict:
    """Parameters and multiply-adds of a network at its configured input size."""
    size = model.config.input_size
    return {"parameters": count_parameters(model),
            "multiply_adds": count_multiply_adds(model, size, model.config.in_channels),
            "input_size": list(size)}


def main(argv: list[str] | None = None) -> int:
    cli.parser("python -m inference.networks",
               "Print the parameters and multiply-adds of both networks at the paper's input sizes as JSON, counted "
               "from the built models.", ["python -m inference.networks"]).parse_args(argv)
    print(json.dumps({"coarse": describe(CoarseUNet()), "fine": describe(EfficientSegNet())}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
