"""Backbones: timm models in ``features_only`` mode.

A backbone returns a list of feature maps, coarsest last, and declares their channels and reductions in
``feature_info`` (timm's convention): heads size themselves from it, never from a model's name.
Weights: ``pretrained=True`` asks timm for ImageNet weights (a download, which fails offline) unless a
local file is given with ``weights=PATH``; the quick profile trains from scratch.
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn

from blvnb.errors import ConfigError


class TimmBackbone(nn.Module):
    def __init__(
        self,
        name: str,
        out_indices: tuple[int, ...] = (1, 2, 3, 4),
        pretrained: bool = False,
        weights: str | Path | None = None,
        **kwargs,
    ):
        super().__init__()
        if pretrained and weights is None:
            try:
                self.body = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=True, **kwargs)
            except Exception as exc:  # no network, no cached weights
                raise ConfigError(
                    f"could not load ImageNet weights for timm model {name!r} ({exc.__class__.__name__}: {exc}). "
                    f"Download them once on a machine with internet (timm caches them under ~/.cache/huggingface), "
                    f"or pass weights=PATH to a local state_dict file, or use pretrained=False."
                ) from exc
        else:
            self.body = timm.create_model(name, features_only=True, out_indices=out_indices, pretrained=False, **kwargs)
            if weights is not None:
                self.load_weights(weights)
        self.feature_info = self.body.feature_info

    def load_weights(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"weights file {path} does not exist; pass weights=PATH to a timm/torch state_dict")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        missing, unexpected = self.body.load_state_dict(state, strict=False)
        matched = len(self.body.state_dict()) - len(missing)
        if matched == 0:
            raise ConfigError(f"no tensor in {path} matches the backbone's parameters (unexpected keys: {unexpected[:5]})")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)
