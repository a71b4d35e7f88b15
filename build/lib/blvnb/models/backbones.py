"""Backbones: timm models in ``features_only`` mode, plus the two wrappers timm does not give us as such.

A backbone returns a list of NCHW feature maps, finest first, and declares their channels and reductions
in ``feature_info`` (timm's convention): heads size themselves from ``feature_info.channels()``, never
from a model's name.

* :class:`TimmBackbone` — any timm model with ``features_only`` (ResNet-C/D, HRNet, Swin); dilation comes
  from timm's ``output_stride`` (8: strides (1, 2, 1, 1), dilations (1, 1, 2, 4) in the last two stages).
  Channels-last outputs (Swin) are normalised per level and turned NCHW.
* :class:`ViTBackbone` — a plain ViT read at four blocks, all at 1/16, then a multi-level neck that
  resamples them to 1/4, 1/8, 1/16, 1/32 (as mmsegmentation's ``MultiLevelNeck``).
* The Mix Transformer (MiT, SegFormer's encoder) lives in ``mit.py``: timm has none.

Weights: ``pretrained=True`` asks timm for ImageNet weights (a download, or timm's local cache) unless a
local file is given with ``weights=PATH``; with neither — offline, nothing cached — a :class:`ConfigError`
says how to provide them. The quick profile trains from scratch.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from blvnb.errors import ConfigError


class Features:
    """The part of timm's ``FeatureInfo`` the heads use: channels and reduction per output level."""

    def __init__(self, channels: list[int], reductions: list[int]):
        self._channels, self._reductions = list(channels), list(reductions)

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a local state_dict (or a checkpoint with a ``state_dict``/``model`` entry) non-strictly."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist; pass weights=PATH to a torch state_dict file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    own = module.state_dict()
    if not any(k in own and not k.endswith("num_batches_tracked") for k in state):
        raise ConfigError(f"no tensor in {path} matches the backbone's parameters (its keys: {list(state)[:5]})")
    try:
        module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # same names, other shapes: another architecture's weights
        raise ConfigError(f"the weights in {path} do not fit this backbone: {exc}") from exc


def no_weights_error(name: str, exc: Exception | None = None) -> ConfigError:
    why = f" ({exc.__class__.__name__}: {exc})" if exc is not None else ""
    return ConfigError(
        f"could not load ImageNet weights for {name!r}{why}. Either download them once on a machine with "
        f"internet (timm caches them under ~/.cache/huggingface; copy that folder over), or pass "
        f"weights=PATH to a local state_dict file (build_model(..., weights='mit_b0.pth')), or use "
        f"pretrained=False (the quick profile trains from scratch)."
    )


def create_timm(name: str, pretrained: bool, weights, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)`` with blvnb's rules for weights."""
    if pretrained and weights is None:
        try:
            return timm.create_model(name, features_only=True, pretrained=True, **kwargs)
        except Exception as exc:  # no network and nothing cached
            raise no_weights_error(name, exc) from exc
    body = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    if weights is not None:
        load_weights(body, weights)
    return body


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model; channels-last (NHWC) outputs get a LayerNorm each and become NCHW."""

    def __init__(self, name: str, out_indices: tuple[int, ...] = (1, 2, 3, 4), pretrained: bool = False,
                 weights: str | Path | None = None, **kwargs):
        super().__init__()
        self.body = create_timm(name, pretrained, weights, out_indices=out_indices, **kwargs)
        self.feature_info = self.body.feature_info
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        # Swin: mmsegmentation normalises every output level (timm only the last, in its classifier)
        self.norms = nn.ModuleList(nn.LayerNorm(c) for c in self.feature_info.channels()) if self.nhwc else None

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        if self.nhwc:
            feats = [n(f).permute(0, 3, 1, 2) for n, f in zip(self.norms, feats)]
        return feats


class ViTBackbone(nn.Module):
    """ViT read at four blocks (1/16 each), resampled by a multi-level neck to four scales.

    ``# [1/16] * 4 -> [1/4, 1/8, 1/16, 1/32]``: per level a 1×1 conv, bilinear resampling by
    ``scales`` (4, 2, 1, 0.5) and a 3×3 conv, as mmsegmentation's ``MultiLevelNeck``.
    """

    def __init__(self, name: str = "vit_base_patch16_224", blocks: tuple[int, ...] = (3, 5, 7, 11),
                 scales: tuple[float, ...] = (4, 2, 1, 0.5), pretrained: bool = False, weights=None, **kwargs):
        super().__init__()
        self.body = create_timm(name, pretrained, weights, out_indices=blocks, dynamic_img_size=True, **kwargs)
        c = self.body.feature_info.channels()[0]
        patch = self.body.feature_info.reduction()[0]
        self.scales = tuple(scales)
        self.lateral = nn.ModuleList(nn.Conv2d(c, c, 1) for _ in scales)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, 3, padding=1) for _ in scales)
        self.feature_info = Features([c] * len(scales), [int(patch / s) for s in scales])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for f, lat, conv, s in zip(self.body(x), self.lateral, self.convs, self.scales):
            f = lat(f)
            if s != 1:
                f = F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
            outs.append(conv(f))
        return outs
