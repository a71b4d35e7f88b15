"""Decode heads: plain modules, ``forward(features: list[Tensor]) -> logits``.

Each head takes the backbone's ``feature_info.channels()`` and returns logits at the resolution of its
finest input (1/4 for a four-level backbone); the engine upsamples to label size. Interpolation is
bilinear with ``align_corners=False`` everywhere in blvnb.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FPNHead(nn.Module):
    """A light semantic-FPN head: lateral 1×1 convs, top-down sum, a 3×3 conv per level, all levels
    upsampled to the finest and summed, then a 1×1 classifier.

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 64, dropout: float = 0.1):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels) for _ in in_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):  # top-down pathway
            lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear", align_corners=False)
        size = lat[0].shape[-2:]
        out = 0
        for s, x in zip(self.smooth, lat):
            out = out + F.interpolate(s(x), size=size, mode="bilinear", align_corners=False)
        return out

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.classifier(self.dropout(self.features(feats)))
