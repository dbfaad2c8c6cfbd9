"""Multi-label classification loss: binary cross-entropy with a focal term and label smoothing.

HPA labels are imbalanced (nucleoplasm in half the images, aggresome in 1%) and noisy (image
labels do not say which cells carry them). The focal term (Lin et al. 2017) down-weights the
easy, confidently right outputs; label smoothing keeps the model from chasing noisy 0/1 targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def smooth_targets(targets: torch.Tensor, smoothing: float) -> torch.Tensor:
    """0/1 targets -> smoothing/2 and 1 - smoothing/2 (two-class smoothing per output)."""
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"label smoothing must be in [0, 1), got {smoothing}")
    return targets * (1.0 - smoothing) + 0.5 * smoothing


def focal_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 0.0,
                          smoothing: float = 0.0) -> torch.Tensor:
    """Element-wise focal BCE, same shape as `logits`; gamma=0 and smoothing=0 is plain BCE.

    The modulating factor is (1 - p_t)^gamma with p_t the probability given to the target,
    computed in float32 for stability under mixed precision.
    """
    if gamma < 0:
        raise ValueError(f"focal gamma must be >= 0, got {gamma}")
    logits = logits.float()
    targets = smooth_targets(targets.float(), smoothing) if smoothing else targets.float()
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma == 0:
        return bce
    probs = torch.sigmoid(logits)
    p_t = probs * targets + (1.0 - probs) * (1.0 - targets)
    return bce * (1.0 - p_t).clamp(min=0.0).pow(gamma)
