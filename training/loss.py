"""The training loss: soft Dice plus focal loss over per-organ sigmoid channels (the paper's).

Logits are (batch, organs, x, y, z); labels (batch, x, y, z) integers, organ k+1 for channel k,
0 for background. Computed in float32 whatever the forward pass ran in.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DICE_SMOOTH = 1e-5


def one_hot(labels: torch.Tensor, channels: int) -> torch.Tensor:
    """(batch, x, y, z) labels -> (batch, channels, x, y, z) float targets: channel k is label k+1."""
    organs = torch.arange(1, channels + 1, device=labels.device).view(1, -1, 1, 1, 1)
    return (labels.unsqueeze(1).long() == organs).float()


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1 - soft Dice per organ channel over the whole batch (so a case without an organ does not
    count as a failure), averaged over channels."""
    probs = torch.sigmoid(logits.float())
    dims = (0, 2, 3, 4)
    overlap = (probs * targets).sum(dims)
    total = probs.sum(dims) + targets.sum(dims)
    return (1 - (2 * overlap + DICE_SMOOTH) / (total + DICE_SMOOTH)).mean()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017) per voxel and channel, averaged: alpha weighs the
    organ voxels, 1 - alpha the rest; (1 - p_t)^gamma down-weighs the easy ones."""
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)  # the probability given to the true class
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def dice_focal_loss(logits: torch.Tensor, labels: torch.Tensor, dice_weight: float = 1.0, focal_weight: float = 1.0,
                    alpha: float = 0.5, gamma: float = 2.0) -> torch.Tensor:
    """dice_weight * soft Dice loss + focal_weight * focal loss."""
    targets = one_hot(labels, logits.shape[1])
    return dice_weight * soft_dice_loss(logits, targets) + focal_weight * focal_loss(logits, targets, alpha, gamma)
