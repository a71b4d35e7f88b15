"""``build_model(name, num_classes)``: models by the name of the table row they reproduce.

A registry entry only chooses arguments (timm's pattern); the parts live in ``backbones.py`` and
``heads.py``. ``SegModel.forward`` returns logits at the head's resolution, or a dict with the
penultimate features too when asked (for t-SNE plots).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from blvnb.errors import ConfigError
from blvnb.models.backbones import TimmBackbone
from blvnb.models.heads import FPNHead

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


class SegModel(nn.Module):
    """backbone → decode head. ``forward(x)`` → logits (N×C×h×w at the head's resolution)."""

    def __init__(self, backbone: nn.Module, head: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.backbone(x)
        if not return_features:
            return self.head(feats)
        penult = self.head.features(feats)
        return {"out": self.head.classifier(penult), "features": penult}


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def build_model(name: str, num_classes: int = 19, pretrained: bool = False, **overrides) -> nn.Module:
    """Build a registered model; unknown names raise a ConfigError that lists the known ones."""
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None
    return entry(num_classes=num_classes, pretrained=pretrained, **overrides)


def _timm_fpn(backbone: str, num_classes: int, pretrained: bool, channels: int = 64, weights=None, **kw) -> SegModel:
    bb = TimmBackbone(backbone, out_indices=(1, 2, 3, 4), pretrained=pretrained, weights=weights, **kw)
    return SegModel(bb, FPNHead(bb.feature_info.channels(), num_classes, channels=channels))


@register("r18-fpn")
def r18_fpn(num_classes=19, pretrained=False, **kw):
    """ResNet-18-D + light FPN head: the first baseline (walking skeleton), gpu profile."""
    return _timm_fpn("resnet18d", num_classes, pretrained, **kw)


@register("r10t-fpn")
def r10t_fpn(num_classes=19, pretrained=False, **kw):
    """ResNet-10-T (one block per stage) + light FPN head: the quick/smoke profiles' CPU baseline."""
    return _timm_fpn("resnet10t", num_classes, pretrained, **kw)
