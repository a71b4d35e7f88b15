"""``build_model(name, num_classes)``: models by the name of the table row they reproduce.

A registry entry only chooses arguments (timm's pattern); the parts live in ``backbones.py``, ``mit.py``,
``heads.py``, ``knet.py`` and ``hrda.py``. Every entry has two sizes: ``variant="paper"`` (the paper's
architecture, the default) and ``variant="small"`` (a lighter backbone of the same family, fewer
channels: the quick and smoke profiles'). A name may carry its variant, ``"r50-psp@small"``, so that a
profile chooses it with one string; :func:`variant_for_profile` is the rule the profiles follow.

Forward contract (:class:`SegModel`, :class:`~blvnb.models.hrda.HRDA`):

* ``model(x)`` → logits N×C×h×w at the head's resolution (the engine upsamples to label size);
* ``model(x, return_features=True)`` → ``{"out", "features"}`` (penultimate map, for t-SNE);
* ``model(x, return_aux=True)`` → ``{"out", "aux"}``, ``aux`` a list of logits (each at its own
  resolution) weighted by ``model.aux_weights`` (same length): the training loss is
  ``L(out) + Σ_j aux_weights[j] · L(aux[j])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from blvnb.errors import ConfigError
from blvnb.models.backbones import TimmBackbone, ViTBackbone
from blvnb.models.heads import (ASPPV2Head, DAFormerHead, DeepLabV3PlusHead, FCNHead, FPNHead, OCRHead, PSPHead,
                                SegFormerHead, UperHead)
from blvnb.models.hrda import HRDA
from blvnb.models.knet import KNetHead
from blvnb.models.mit import MiT

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
VARIANTS = ("paper", "small")
PROFILE_VARIANT = {"smoke": "small", "quick": "small", "gpu": "paper", "paper": "paper"}


def register(name: str):
    def deco(fn):
        _REGISTRY[name] = fn
        return fn

    return deco


class SegModel(nn.Module):
    """backbone → decode head, plus auxiliary heads on backbone levels (training only)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, aux_heads: tuple[nn.Module, ...] = (),
                 aux_weights: tuple[float, ...] = ()):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.aux_heads = nn.ModuleList(aux_heads)
        self.aux_weights = tuple(getattr(head, "aux_weights", ())) + tuple(aux_weights)

    def decode(self, x: torch.Tensor, aux: bool = False) -> dict:
        feats = self.backbone(x)
        out = dict(self.head.decode(feats), backbone=feats)
        if aux:
            out["aux"] = out["aux"] + [h(feats) for h in self.aux_heads]
        return out

    def forward(self, x: torch.Tensor, return_features: bool = False, return_aux: bool = False):
        d = self.decode(x, aux=return_aux)
        if not (return_features or return_aux):
            return d["out"]
        res = {"out": d["out"]}
        if return_features:
            res["features"] = d["features"]
        if return_aux:
            res["aux"] = d["aux"]
        return res


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def variant_for_profile(profile: str) -> str:
    """Which size of each architecture a profile uses: small for smoke/quick, the paper's for gpu/paper."""
    try:
        return PROFILE_VARIANT[profile]
    except KeyError:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILE_VARIANT)}") from None


def model_for_profile(name: str, profile: str) -> str:
    """The registry name a profile trains for a table row: ``model_for_profile("hr18-ocr", "quick")`` →
    ``"hr18-ocr@small"``."""
    return f"{name.split('@')[0]}@{variant_for_profile(profile)}"


def build_model(name: str, num_classes: int = 19, pretrained: bool = False, **overrides) -> nn.Module:
    """Build a registered model (``name`` or ``name@variant``); unknown names raise a ConfigError that lists
    the known ones. ``variant="paper"|"small"``, ``weights=PATH`` (local ImageNet weights for the backbone; a folder: the backbone's file in it,
    :mod:`blvnb.models.weights`),
    ``hrda=True`` (wrap in HRDA) and any argument of the entry may be given as keywords."""
    if "@" in name:
        name, overrides["variant"] = name.split("@", 1)
    try:
        entry = _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; registered: {', '.join(list_models())}") from None
    variant = overrides.setdefault("variant", "paper")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r} of {name!r}; use one of {', '.join(VARIANTS)}")
    hrda = overrides.pop("hrda", False)
    model = entry(num_classes=num_classes, pretrained=pretrained, **overrides)
    return HRDA(model) if hrda else model


def weights_report(model: nn.Module) -> dict | None:
    """What a model took from its weights file(s) (``weights=PATH``; :func:`~blvnb.models.backbones.load_weights`)
    and what is new by design: ``{"files", "loaded", "unused", "new"}``, ``new`` the parts that start from
    their initialisation — the decode head, the auxiliary heads, and what a backbone adds to the
    ImageNet model (Swin's per-level norms, ViT's neck) — as ``{part: tensors}``. None: no file was loaded."""
    loaded, files, unused, hashes, layouts = set(), [], 0, {}, {}
    for name, m in model.named_modules():
        rep = m.__dict__.get("weights_report")
        if rep is None:
            continue
        files.append(rep["file"])
        hashes[rep["file"]], layouts[rep["file"]] = rep["sha256"], rep["layout"]
        unused += len(rep["unexpected"])
        loaded.update(f"{name}.{k}" if name else k for k in rep["loaded"])
    if not files:
        return None
    new: dict[str, int] = {}
    for key in model.state_dict():
        if key in loaded or key.endswith("num_batches_tracked"):
            continue
        parts = key.split(".")  # the part: a head, or what a backbone adds (backbone.norms); HRDA: model.head
        depth = parts.index("backbone") + 2 if "backbone" in parts[:-1] else (2 if parts[0] == "model" else 1)
        part = ".".join(parts[:min(depth, len(parts) - 1)])
        new[part] = new.get(part, 0) + 1
    return {"files": sorted(set(files)), "sha256": hashes, "layout": layouts, "loaded": len(loaded), "unused": unused,
            "new": new}


def weights_targets(model: nn.Module) -> list[tuple[str, str | None, nn.Module]]:
    """The modules of ``model`` that load ImageNet weights: (their path in the model, their name in a weights
    folder — None for a backbone without ImageNet weights —, the module)."""
    return [(name, m.weights_name, m) for name, m in model.named_modules() if "weights_name" in m.__dict__]


def backbones_of(name: str) -> list[str | None]:
    """The weights-folder names of the backbone(s) model ``name`` (``name@variant``) loads, built on the meta
    device (no memory, no weights)."""
    with torch.device("meta"):
        model = build_model(name)
    return [w for _, w, _ in weights_targets(model)]


def known_backbones() -> dict[str, list[str]]:
    """Every backbone with a weights-folder name that a registered model builds, with the models using it
    (``name@variant``), in registry order."""
    out: dict[str, list[str]] = {}
    for name in list_models():
        for variant in VARIANTS:
            for w in backbones_of(f"{name}@{variant}"):
                if w is not None:
                    out.setdefault(w, []).append(f"{name}@{variant}")
    return out


# --- the parts an entry chooses between -------------------------------------------------------------

def _pick(variant: str, **sizes) -> dict:
    return dict(sizes[variant])


def _seg(backbone: nn.Module, head_cls, num_classes: int, head: dict | None = None, aux: dict | None = None):
    """SegModel with ``head_cls`` sized from the backbone; ``aux``: FCN aux head kwargs (weight 0.4)."""
    ch = backbone.feature_info.channels()
    aux_heads = (FCNHead(ch, num_classes, **aux),) if aux is not None else ()
    return SegModel(backbone, head_cls(ch, num_classes, **(head or {})), aux_heads, (0.4,) * len(aux_heads))


def _resnet(name: str, pretrained: bool, output_stride: int = 32, weights=None) -> TimmBackbone:
    return TimmBackbone(name, (1, 2, 3, 4), pretrained, weights, output_stride=output_stride)


RESNET50 = dict(paper=dict(bb="resnet50c", ch=512, aux=256), small=dict(bb="resnet10t", ch=64, aux=32))
RESNET101 = dict(paper=dict(bb="resnet101c", ch=512, aux=256), small=dict(bb="resnet14t", ch=64, aux=32))
MIT_B0 = dict(paper=dict(size="b0", ch=256), small=dict(size="small", ch=64))
MIT_B5 = dict(paper=dict(size="b5", ch=256), small=dict(size="small", ch=64))


# --- the registry: one entry per table row ---------------------------------------------------------

@register("r18-fpn")
def r18_fpn(num_classes=19, pretrained=False, variant="paper", weights=None, channels=64):
    """ResNet-18-D + light FPN head: the walking skeleton's baseline (one size)."""
    return _seg(_resnet("resnet18d", pretrained, weights=weights), FPNHead, num_classes, dict(channels=channels))


@register("r10t-fpn")
def r10t_fpn(num_classes=19, pretrained=False, variant="paper", weights=None, channels=64):
    """ResNet-10-T (one block per stage) + light FPN head: the smoke and quick profiles' CPU baseline."""
    return _seg(_resnet("resnet10t", pretrained, weights=weights), FPNHead, num_classes, dict(channels=channels))


@register("r50-psp")
def r50_psp(num_classes=19, pretrained=False, variant="paper", weights=None):
    """PSPNet50 (DARS; BLV T1): ResNet-50 deep stem, dilated to output stride 8, PPM bins (1, 2, 3, 6),
    FCN aux on stage 3."""
    c = _pick(variant, **RESNET50)
    bb = _resnet(c["bb"], pretrained, 8, weights)
    return _seg(bb, PSPHead, num_classes, dict(channels=c["ch"]), dict(channels=c["aux"]))


@register("r50-uper")
def r50_uper(num_classes=19, pretrained=False, variant="paper", weights=None):
    """UperNet R-50 (BLV T1): ResNet-50 deep stem, output stride 32, UperHead, FCN aux on stage 3."""
    c = _pick(variant, **RESNET50)
    bb = _resnet(c["bb"], pretrained, 32, weights)
    return _seg(bb, UperHead, num_classes, dict(channels=c["ch"]), dict(channels=c["aux"]))


@register("r101-uper")
def r101_uper(num_classes=19, pretrained=False, variant="paper", weights=None):
    """UperNet R-101 (BLV T1): ResNet-101 deep stem, output stride 32, UperHead, FCN aux on stage 3."""
    c = _pick(variant, **RESNET101)
    bb = _resnet(c["bb"], pretrained, 32, weights)
    return _seg(bb, UperHead, num_classes, dict(channels=c["ch"]), dict(channels=c["aux"]))


@register("r101-deeplabv3p")
def r101_deeplabv3p(num_classes=19, pretrained=False, variant="paper", weights=None):
    """DeepLabV3+ R-101 (BLV semi-supervised, Sec. 4.2): dilated to output stride 8, FCN aux on stage 3."""
    c = _pick(variant, paper=dict(RESNET101["paper"], low=48), small=dict(RESNET50["small"], low=16))
    head = dict(channels=c["ch"], low_channels=c["low"])
    return _seg(_resnet(c["bb"], pretrained, 8, weights), DeepLabV3PlusHead, num_classes, head, dict(channels=c["aux"]))


@register("r101-deeplabv2")
def r101_deeplabv2(num_classes=19, pretrained=False, variant="paper", weights=None):
    """DeepLab v2 R-101 (DARS T2): dilated to output stride 8, ASPP classifier (dilations 6, 12, 18, 24), no aux."""
    c = _pick(variant, paper=RESNET101["paper"], small=RESNET50["small"])
    return _seg(_resnet(c["bb"], pretrained, 8, weights), ASPPV2Head, num_classes)


@register("r101-deeplabv2-red")
def r101_deeplabv2_red(num_classes=19, pretrained=False, variant="paper", weights=None):
    """DAFormer's CNN model (BLV UDA's DAFormer †): DeepLab v2 R-101 whose classifier keeps only dilations
    (6, 12) — DAFormer's ``experiments.py`` architecture ``dlv2red`` with backbone ``r101v1c`` (recipes.md (d))."""
    c = _pick(variant, paper=RESNET101["paper"], small=RESNET50["small"])
    return _seg(_resnet(c["bb"], pretrained, 8, weights), ASPPV2Head, num_classes, dict(rates=(6, 12)))


@register("hr18-ocr")
def hr18_ocr(num_classes=19, pretrained=False, variant="paper", weights=None):
    """HRNetV2-W18 + OCR (BLV T1): all four branches concatenated at 1/4; soft regions (aux 0.4) → OCR."""
    c = _pick(variant, paper=dict(bb="hrnet_w18", ch=512, key=256), small=dict(bb="hrnet_w18_small", ch=64, key=32))
    bb = TimmBackbone(c["bb"], (1, 2, 3, 4), pretrained, weights, feature_location="")
    return _seg(bb, OCRHead, num_classes, dict(channels=c["ch"], key_channels=c["key"]))


@register("mitb0-segformer")
def mitb0_segformer(num_classes=19, pretrained=False, variant="paper", weights=None):
    """SegFormer-B0 (BLV T1): MiT-b0 + all-MLP head (256 channels)."""
    c = _pick(variant, **MIT_B0)
    return _seg(MiT(c["size"], 0.1, pretrained, weights), SegFormerHead, num_classes, dict(channels=c["ch"]))


@register("mitb5-daformer")
def mitb5_daformer(num_classes=19, pretrained=False, variant="paper", weights=None):
    """DAFormer (BLV UDA): MiT-b5 + context-aware fusion head (256 channels, dilations 1, 6, 12, 18)."""
    c = _pick(variant, **MIT_B5)
    return _seg(MiT(c["size"], 0.1, pretrained, weights), DAFormerHead, num_classes, dict(channels=c["ch"]))


@register("mitb5-hrda")
def mitb5_hrda(num_classes=19, pretrained=False, variant="paper", weights=None):
    """HRDA (BLV UDA): DAFormer inside the multi-resolution wrapper; the scale attention is a SegFormer-style
    MLP head (HRDA replaces the attention head's ASPP fusion by a 1×1 conv)."""
    model = mitb5_daformer(num_classes, pretrained, variant, weights)
    ch = model.backbone.feature_info.channels()
    return HRDA(model, SegFormerHead(ch, num_classes, _pick(variant, **MIT_B5)["ch"]))


@register("swint-knet")
def swint_knet(num_classes=19, pretrained=False, variant="paper", weights=None):
    """K-Net + UperNet, Swin-T (BLV T1): UperHead kernel generator, 3 kernel updates, FCN aux on stage 3."""
    tiny_swin = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))
    c = _pick(variant, paper=dict(swin={}, ch=512, heads=8, ffn=2048, aux=256),
              small=dict(swin=tiny_swin, ch=64, heads=2, ffn=128, aux=32))
    bb = TimmBackbone("swin_tiny_patch4_window7_224", (0, 1, 2, 3), pretrained, weights,
                      "" if variant == "paper" else None, strict_img_size=False, drop_path_rate=0.3, **c["swin"])
    head = dict(channels=c["ch"], heads=c["heads"], ffn=c["ffn"])
    return _seg(bb, KNetHead, num_classes, head, dict(channels=c["aux"]))


@register("vitb16-uper")
def vitb16_uper(num_classes=19, pretrained=False, variant="paper", weights=None):
    """UperNet ViT-B/16 (BLV T1): blocks 3, 5, 7, 11 → multi-level neck (1/4 … 1/32), UperHead, FCN aux on
    level 3."""
    c = _pick(variant,
              paper=dict(vit="vit_base_patch16_224", kw=dict(img_size=512), blocks=(3, 5, 7, 11), ch=512, aux=256),
              small=dict(vit="vit_tiny_patch16_224", kw=dict(img_size=128, depth=4), blocks=(0, 1, 2, 3), ch=64, aux=32))
    bb = ViTBackbone(c["vit"], c["blocks"], pretrained=pretrained, weights=weights, drop_path_rate=0.1,
                     arch="" if variant == "paper" else None, **c["kw"])
    return _seg(bb, UperHead, num_classes, dict(channels=c["ch"]), dict(channels=c["aux"]))


# --- a weights folder, checked before the first run ----------------------------------------------------

@dataclass
class WeightsCheck:
    """What :func:`check_weights` found in a weights folder: ``files`` (one dict per file: ``file``,
    ``backbone``, ``status`` — ok | partial | unreadable | ambiguous | unknown name —, ``needed``, ``layout``,
    ``matched``, ``missing``, ``wrong_shape``, ``unexpected``, ``resampled``, ``sha256``, ``error``),
    ``needed`` (backbone → the models that load it; None: every file the folder names is checked) and
    ``absent`` (needed backbones without a file, or whose model has no ImageNet weights)."""

    folder: str
    files: list[dict]
    needed: dict[str, list[str]] | None
    absent: dict[str, str]

    @property
    def problems(self) -> list[str]:
        """Why the folder cannot serve the plan: a needed (or, with no plan, any recognised) file that is
        partial, unreadable or ambiguous, and every needed backbone without a file."""
        out = [f"{f['file']}: {f['status']} — {f['error']}" for f in self.files
               if f["status"] not in ("ok", "unknown name") and (self.needed is None or f["needed"])]
        return out + [f"{b}: {why}" for b, why in self.absent.items()]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {"folder": self.folder, "ok": self.ok, "files": self.files, "needed": self.needed,
                "absent": self.absent, "problems": self.problems}

    def summary(self) -> str:
        lines = [f"weights folder {self.folder}: {len(self.files)} file(s)"]
        for f in self.files:
            head = f"  {f['file']:28s} {f['status']:12s}"
            if f["backbone"] is None:
                lines.append(f"{head} {f['error']}")
                continue
            use = "; needed" if f["needed"] else ("; not needed by the plan" if self.needed is not None else "")
            counts = (f"{f['matched']}/{f['tensors']} tensors matched, {len(f['missing'])} missing, "
                      f"{len(f['wrong_shape'])} of another shape, {len(f['unexpected'])} unused in the file"
                      + (f", resampled to the backbone's grid: {', '.join(f['resampled'])}" if f["resampled"] else "")
                      if f["tensors"] is not None else "")
            lines.append(f"{head} backbone {f['backbone']} ({', '.join(f['models'])}{use}) "
                         + (f"layout {f['layout']}: {counts}" if counts else ""))
            if f["status"] != "ok":
                lines.append(f"  {'':28s} {f['error']}")
        for b, why in self.absent.items():
            lines.append(f"  {'(missing)':28s} {'missing':12s} backbone {b}: {why}")
        if self.needed is not None and not self.needed:
            lines.append("  the plan loads no ImageNet weights")
        if not self.ok:
            lines.append(f"{len(self.problems)} problem(s)")
        elif self.needed:
            lines.append("ok: every backbone the plan needs loads whole")
        else:
            lines.append("ok" + (": the plan needs no file" if self.needed is not None else ""))
        return "\n".join(lines)


def _target(model_name: str, backbone: str) -> nn.Module:
    with torch.device("meta"):
        model = build_model(model_name)
    return next(m for _, w, m in weights_targets(model) if w == backbone)


def check_weights(folder, models=None) -> WeightsCheck:
    """Check every file of a weights folder against the backbone its name says it serves
    (:data:`blvnb.models.weights.WEIGHTS_FILES`), loading nothing into a model: the layout found, the
    tensors matched, missing, of another shape and unused, and whether it would be refused as partial.
    ``models``: the registry names a plan starts from ImageNet weights (None: check every file the folder
    names); a needed backbone without a file is a problem, a file of an unknown name is reported, not one.
    A folder that does not exist is a :class:`ConfigError`."""
    from blvnb.models.backbones import fit_weights, partial_error
    from blvnb.models.weights import SUFFIXES, WEIGHTS_FILES, backbone_of_file, check_folder, sha256

    root = check_folder(folder)
    known = known_backbones()
    needed: dict[str, list[str]] | None = None
    absent: dict[str, str] = {}
    if models is not None:
        needed = {}
        for m in dict.fromkeys(models):
            for b in backbones_of(m):
                if b is None:
                    absent[m] = "its backbone has no ImageNet weights (a small variant)"
                else:
                    needed.setdefault(b, []).append(m)
    paths = sorted(p for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    by_backbone: dict[str, list[Path]] = {}
    for p in paths:
        b = backbone_of_file(p)
        if b is not None:
            by_backbone.setdefault(b, []).append(p)
    files = []
    for p in paths:
        b = backbone_of_file(p)
        row = dict(file=p.name, backbone=b, status="ok", needed=bool(needed and b in needed), models=[], layout=None,
                   tensors=None, matched=0, missing=[], wrong_shape=[], unexpected=[], resampled=[], sha256=None,
                   error=None)
        files.append(row)
        if b is None:
            row.update(status="unknown name", error="not a backbone's file name, not used (the names: "
                       + ", ".join(sorted(set(WEIGHTS_FILES.values()))) + f"; each {' | '.join(SUFFIXES)})")
            continue
        row["models"] = (needed or {}).get(b) or known.get(b, [])
        if not row["models"]:
            row.update(status="unknown name", error=f"backbone {b}: no registered model builds it, not used")
            continue
        if len(by_backbone[b]) > 1:
            row.update(status="ambiguous", error=f"{len(by_backbone[b])} files for backbone {b} "
                       f"({', '.join(q.name for q in by_backbone[b])}): keep one")
            continue
        target = _target(row["models"][0], b)
        try:
            fit = fit_weights(target, p)
        except ConfigError as exc:
            row.update(status="unreadable", error=str(exc))
            continue
        refusal = partial_error(target, fit)
        matched = sum(1 for k in fit["picked"] if not k.endswith("num_batches_tracked"))
        row.update(layout=fit["layout"], tensors=fit["tensors"], matched=matched, missing=fit["missing"],
                   wrong_shape=fit["wrong_shape"], unexpected=fit["unexpected"], resampled=fit["resampled"],
                   sha256=sha256(p))
        if refusal is not None:
            row.update(status="partial", error=str(refusal))
    for b, users in (needed or {}).items():
        if b not in by_backbone:
            stem = WEIGHTS_FILES.get(b, b)
            absent[b] = (f"no file for it (needed by {', '.join(users)}): expected {root / (stem + '.pth')} "
                         f"(or {stem}.safetensors, {stem}.pt)")
    return WeightsCheck(str(root), files, needed, absent)
