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
local file is given with ``weights=PATH``, or a weights folder with ``weights=DIR`` (the backbone's file in
it by :data:`blvnb.models.weights.WEIGHTS_FILES`, never a download); with neither — offline, nothing
cached — a :class:`ConfigError` says how to provide them. The quick profile trains from scratch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed
from torch import nn

from blvnb.errors import ConfigError
from blvnb.models.weights import find_weights, layouts, read_state, sha256

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


def _resampled_pos_embed(key: str, t: torch.Tensor, shape) -> torch.Tensor | None:
    """A ViT's position embedding trained at another image size, resampled to this one's token grid (timm's
    bicubic resampling; the class token kept), or None where ``t`` is not that."""
    shape = tuple(shape)
    if not (key.endswith("pos_embed") and t.dim() == 3 and len(shape) == 3 and t.shape[0] == shape[0]
            and t.shape[2] == shape[2]):
        return None
    for prefix in (1, 0):
        gs, gd = math.isqrt(max(t.shape[1] - prefix, 0)), math.isqrt(max(shape[1] - prefix, 0))
        if gs and gd and gs * gs == t.shape[1] - prefix and gd * gd == shape[1] - prefix:
            return resample_abs_pos_embed(t.float(), [gd, gd], [gs, gs], num_prefix_tokens=prefix).to(t.dtype)
    return None


def _fit(own: dict, view: dict) -> dict:
    """How the tensors of one layout's view fit a backbone's state dict (only shapes are read from ``own``)."""
    picked, missing, wrong_shape, resampled, used = {}, [], [], [], set()
    for key, tensor in own.items():
        src = _source_key(key, view)
        if src is None:
            if not key.endswith("num_batches_tracked"):
                missing.append(key)
            continue
        origin, t = view[src]
        if tuple(t.shape) != tuple(tensor.shape):
            t2 = _resampled_pos_embed(key, t, tensor.shape)
            if t2 is None:
                wrong_shape.append(f"{key} {tuple(t.shape)} (the backbone's {tuple(tensor.shape)})")
                continue
            resampled.append(key)
            t = t2
        picked[key] = t
        used.update(origin)
    return dict(picked=picked, missing=missing, wrong_shape=wrong_shape, resampled=resampled, used=used)


def fit_weights(module: nn.Module, path: str | Path) -> dict:
    """How a weights file fits ``module`` (a backbone), loading nothing: the layout of the file that covers
    the most of the backbone (:func:`blvnb.models.weights.layouts`) and, in it, ``picked`` (backbone key →
    tensor), ``missing`` and ``wrong_shape`` backbone keys, ``resampled`` (ViT position embeddings),
    ``unexpected`` (the file's keys not used), ``tensors`` (the backbone's, without BatchNorm counters).
    ``module`` may live on the meta device (a check of a folder builds no weights)."""
    path = Path(path)
    state = read_state(path)
    own = module.state_dict()
    best, best_layout = None, None
    for layout, view in layouts(state):
        fit = _fit(own, view)
        score = (len(fit["picked"]), -len(fit["wrong_shape"]))
        if best is None or score > (len(best["picked"]), -len(best["wrong_shape"])):
            best, best_layout = fit, layout
    used = best.pop("used")
    n = sum(1 for k in own if not k.endswith("num_batches_tracked"))
    return dict(best, file=str(path), layout=best_layout, unexpected=[k for k in state if k not in used], tensors=n,
                file_tensors=len(state), own=own)


def partial_error(module: nn.Module, fit: dict) -> ConfigError | None:
    """The refusal of a file that covers the backbone only in part (None: it covers all of it)."""
    path, own, missing, wrong_shape = fit["file"], fit["own"], fit["missing"], fit["wrong_shape"]
    unexpected = fit["unexpected"]
    if not fit["picked"] and not wrong_shape:
        return ConfigError(f"no tensor in {path} matches the backbone's ({type(module).__name__}) parameters "
                           f"(its keys: {_examples(unexpected)}; the backbone's: {_examples(own)})")
    if not (missing or wrong_shape):
        return None
    what = []
    if missing:
        what.append(f"{len(missing)} of the backbone's {fit['tensors']} tensors are missing "
                    f"(e.g. {_examples(missing)})")
    if wrong_shape:
        what.append(f"{len(wrong_shape)} have another shape ({_examples(wrong_shape)})")
    return ConfigError(
        f"the weights in {path} do not fit this backbone ({type(module).__name__}"
        + (f", {module.weights_name}" if getattr(module, "weights_name", None) else "") + "): " + "; ".join(what)
        + f". The file has {fit['file_tensors']} tensors, {len(unexpected)} of them unused "
        f"(e.g. {_examples(unexpected)}); best layout: {fit['layout']}. A partial load would train a half-initialised backbone: give the ImageNet "
        "checkpoint of this architecture, in timm's layout, the original release's or this backbone's own")


def load_weights(module: nn.Module, path: str | Path) -> dict:
    """Load a local weights file (a state_dict, or a checkpoint wrapping one; ``.pth``/``.pt`` or
    ``.safetensors``: :func:`blvnb.models.weights.read_state`) into a backbone.

    Every tensor of the backbone must come from the file (timm's classification layout is matched to its
    ``features_only`` names, :func:`_source_key`; the original releases' layouts are renamed,
    :func:`blvnb.models.weights.layouts`), with its shape (a ViT's position embedding is resampled to the
    backbone's token grid): a file that covers the backbone only in part — another layout, another
    architecture — is refused with a :class:`ConfigError` naming the file, the counts and examples of the
    missing keys. Only BatchNorm's ``num_batches_tracked`` counters may be absent (older checkpoints have
    none). Keys of the file that the backbone has no place for are left out by design and reported: the
    ImageNet classifier (``fc``, ``head``, ``classifier``), the layers a features-only model drops, a
    segmentor checkpoint's decode head. What is not in the backbone (the decode and auxiliary heads) is
    new by design: :func:`blvnb.models.registry.weights_report` says so for a whole model.

    Returns (and keeps as ``module.weights_report``) ``{"file", "sha256", "layout", "loaded", "missing",
    "unexpected", "resampled"}``: the backbone keys loaded, those left at their initial values, the file's
    keys not used.
    """
    fit = fit_weights(module, path)
    refusal = partial_error(module, fit)
    if refusal is not None:
        raise refusal
    picked, unexpected = fit["picked"], fit["unexpected"]
    module.load_state_dict(picked, strict=False)
    report = {"file": fit["file"], "sha256": sha256(fit["file"]), "layout": fit["layout"], "loaded": sorted(picked),
              "missing": [], "unexpected": unexpected, "resampled": fit["resampled"]}
    log.info("weights %s (%s): %d of %d backbone tensors loaded; %d tensors of the file unused by design "
             "(the ImageNet classifier and layers a features-only model drops: %s)", fit["file"], fit["layout"],
             len(picked), fit["tensors"], len(unexpected), _examples(unexpected) or "none")
    module.weights_report = report
    return report


def no_weights_error(name: str, exc: Exception | None = None) -> ConfigError:
    why = f" ({exc.__class__.__name__}: {exc})" if exc is not None else ""
    return ConfigError(
        f"could not load ImageNet weights for {name!r}{why}. Either give a weights folder with one file per "
        f"backbone (--weights DIR, papermill -p weights_dir DIR, build_model(..., weights=DIR); the names: "
        f"blvnb.models.weights.WEIGHTS_FILES; check it with `blvnb weights check DIR`), or pass weights=PATH "
        f"to one local state_dict file (build_model(..., weights='mit_b0.pth')), or download them once on a "
        f"machine with internet (timm caches them under ~/.cache/huggingface; copy that folder over), or use "
        f"pretrained=False (the quick profile trains from scratch)."
    )


def weights_file(weights: str | Path | None, backbone: str | None) -> Path | None:
    """The file a backbone loads: ``weights`` itself, or, where it is a weights folder, the backbone's file in
    it (:func:`blvnb.models.weights.find_weights`; ``backbone`` None: one without ImageNet weights)."""
    if weights is None:
        return None
    path = Path(weights).expanduser()
    if path.is_dir():
        if backbone is None:
            raise ConfigError(f"this backbone has no ImageNet weights (a small variant): it cannot load from the "
                              f"weights folder {path}")
        return find_weights(path, backbone)
    return path


def create_timm(name: str, pretrained: bool, weights, arch: str | None = "", **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, ...)`` with blvnb's rules for weights. ``arch``: the
    backbone's name in a weights folder (:data:`blvnb.models.weights.WEIGHTS_FILES`; default ``name``;
    None where the kwargs make another architecture than timm's ``name``); kept as ``weights_name``."""
    arch = name if arch == "" else arch
    if pretrained and weights is None:
        try:
            body = timm.create_model(name, features_only=True, pretrained=True, **kwargs)
        except Exception as exc:  # no network and nothing cached
            raise no_weights_error(name, exc) from exc
        body.weights_name = arch
        return body
    body = timm.create_model(name, features_only=True, pretrained=False, **kwargs)
    body.weights_name = arch
    if weights is not None:
        load_weights(body, weights_file(weights, arch))
    return body


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model; channels-last (NHWC) outputs get a LayerNorm each and become NCHW."""

    def __init__(self, name: str, out_indices: tuple[int, ...] = (1, 2, 3, 4), pretrained: bool = False,
                 weights: str | Path | None = None, arch: str | None = "", **kwargs):
        super().__init__()
        self.body = create_timm(name, pretrained, weights, arch, out_indices=out_indices, **kwargs)
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
                 scales: tuple[float, ...] = (4, 2, 1, 0.5), pretrained: bool = False, weights=None,
                 arch: str | None = "", **kwargs):
        super().__init__()
        self.body = create_timm(name, pretrained, weights, arch, out_indices=blocks, dynamic_img_size=True, **kwargs)
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
