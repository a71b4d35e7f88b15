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

import logging
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from blvnb.errors import ConfigError

log = logging.getLogger(__name__)


class Features:
    """The part of timm's ``FeatureInfo`` the heads use: channels and reduction per output level."""

    def __init__(self, channels: list[int], reductions: list[int]):
        self._channels, self._reductions = list(channels), list(reductions)

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


#: how many key names an error or a log line shows of each list
EXAMPLES = 5


def _source_key(key: str, state) -> str | None:
    """The key of ``state`` that holds a backbone's tensor ``key``: the same name, or the name it has in timm's
    classification model when the backbone is timm's ``features_only`` wrapper of it — ``FeatureListNet``
    writes ``layers.0`` as ``layers_0`` (Swin), ``FeatureGetterNet`` puts the model under ``model.`` (ViT)."""
    if key in state:
        return key
    head, _, rest = key.partition(".")
    candidates = [key[len("model."):]] if key.startswith("model.") else []
    if "_" in head and rest:
        candidates.append(head.replace("_", ".") + "." + rest)
    return next((c for c in candidates if c in state), None)


def _examples(keys) -> str:
    keys = list(keys)
    more = f", … ({len(keys) - EXAMPLES} more)" if len(keys) > EXAMPLES else ""
    return ", ".join(keys[:EXAMPLES]) + more


def load_weights(module: nn.Module, path: str | Path) -> dict:
    """Load a local state_dict (or a checkpoint with a ``state_dict``/``model`` entry) into a backbone.

    Every tensor of the backbone must come from the file (timm's classification layout is matched to its
    ``features_only`` names, :func:`_source_key`), with its shape: a file that covers the backbone only
    in part — another layout, another architecture — is refused with a :class:`ConfigError` naming the
    file, the counts and examples of the missing keys. Only BatchNorm's ``num_batches_tracked`` counters
    may be absent (older checkpoints have none). Keys of the file that the backbone has no place for are
    left out by design and reported: the ImageNet classifier (``fc``, ``head``, ``classifier``) and the
    layers a features-only model drops. What is not in the backbone (the decode and auxiliary heads) is
    new by design: :func:`blvnb.models.registry.weights_report` says so for a whole model.

    Returns (and keeps as ``module.weights_report``) ``{"file", "loaded", "missing", "unexpected"}``:
    the backbone keys loaded, those left at their initial values, the file's keys not used.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist; pass weights=PATH to a torch state_dict file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects beyond tensors
        raise ConfigError(f"weights file {path} is not a readable torch state_dict ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from exc
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state_dict (a dict of tensor names to tensors)")
    own = module.state_dict()
    picked, missing, wrong_shape = {}, [], []
    for key, tensor in own.items():
        src = _source_key(key, state)
        if src is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
        elif tuple(state[src].shape) != tuple(tensor.shape):
            wrong_shape.append(f"{key} {tuple(state[src].shape)} (the backbone's {tuple(tensor.shape)})")
        else:
            picked[key] = state[src]
    used = {_source_key(k, state) for k in picked}
    unexpected = [k for k in state if k not in used]
    n = sum(1 for k in own if not k.endswith("num_batches_tracked"))
    if not picked and not wrong_shape:
        raise ConfigError(f"no tensor in {path} matches the backbone's ({type(module).__name__}) parameters "
                          f"(its keys: {_examples(state)}; the backbone's: {_examples(own)})")
    if missing or wrong_shape:
        what = []
        if missing:
            what.append(f"{len(missing)} of the backbone's {n} tensors are missing (e.g. {_examples(missing)})")
        if wrong_shape:
            what.append(f"{len(wrong_shape)} have another shape ({_examples(wrong_shape)})")
        raise ConfigError(
            f"the weights in {path} do not fit this backbone ({type(module).__name__}): " + "; ".join(what)
            + f". The file has {len(state)} tensors, {len(unexpected)} of them unused (e.g. {_examples(unexpected)}). "
            "A partial load would train a half-initialised backbone: give the ImageNet checkpoint of this "
            "architecture, in timm's layout or this backbone's own")
    module.load_state_dict(picked, strict=False)
    report = {"file": str(path), "loaded": sorted(picked), "missing": [], "unexpected": unexpected}
    log.info("weights %s: %d of %d backbone tensors loaded; %d tensors of the file unused by design "
             "(the ImageNet classifier and layers a features-only model drops: %s)", path, len(picked), n,
             len(unexpected), _examples(unexpected) or "none")
    module.weights_report = report
    return report


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
