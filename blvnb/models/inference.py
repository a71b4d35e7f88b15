"""Inference helpers shared by training, evaluation and pseudo-labelling.

``align_corners=False`` everywhere in blvnb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of N×C×h×w logits to ``size`` = (H, W) (a no-op when already that size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)
