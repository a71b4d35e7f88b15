"""Independent parameter counts of the paper-size models, and ours, part by part (millions).

Every reference comes from outside blvnb: ``published`` ones are printed in a paper table, a model-zoo page
or a maintained repository's README, for the number of classes they were counted with; ``derived`` ones are
a published part plus the parts no one publishes, counted layer by layer from the released configuration
(mmsegmentation's, DAFormer's) by the small functions below, which transcribe that configuration and use no
blvnb module. Where a reference covers only part of a model (an encoder; UperNet Swin-T without K-Net's kernel
updates), that part is counted. OCRNet's published counts are for HRNetV2-W48, so ``hr18-ocr`` is also built
with its backbone widened to W48 (``"hr18-ocr[hrnet_w48]"``).

``tests/test_model_params.py`` checks :func:`count` against every :data:`REFERENCES` row to within ±5 %;
``book/models.md`` shows both (:mod:`blvnb.pages` writes the table from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from unittest import mock

import torch


def _params(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def build_meta(name: str, num_classes: int = 19, variant: str = "paper"):
    """The registry entry on the meta device (no memory, no weights, no network). ``"hr18-ocr[hrnet_w48]"``:
    with its timm backbone swapped for the one in brackets."""
    from blvnb.models import registry

    base, _, swap = name.partition("[")
    with torch.device("meta"):
        if not swap:
            return registry.build_model(base, num_classes=num_classes, variant=variant)
        timm_backbone = registry.TimmBackbone
        with mock.patch.object(registry, "TimmBackbone", lambda _, *a, **kw: timm_backbone(swap[:-1], *a, **kw)):
            return registry.build_model(base, num_classes=num_classes, variant=variant)


PARTS = ("all", "backbone", "head", "vit", "kernel updates", "without kernel updates")


def part_count(model, part: str) -> float:
    """Millions of parameters in ``part`` of a built model (one of :data:`PARTS`)."""
    core = getattr(model, "model", model)  # HRDA wraps a SegModel
    if part == "all":
        return _params(model)
    if part == "backbone":
        return _params(core.backbone)
    if part == "head":
        return _params(core.head)
    if part == "vit":
        return _params(core.backbone.body)
    if part == "kernel updates":
        return _params(core.head.stages)
    if part == "without kernel updates":
        return _params(model) - _params(core.head.stages)
    raise ValueError(f"unknown part {part!r}; known: {PARTS}")


def count(name: str, num_classes: int = 19, part: str = "all", variant: str = "paper") -> float:
    """Our count of ``part`` of registry entry ``name`` built for ``num_classes`` classes (millions)."""
    return part_count(build_meta(name, num_classes, variant), part)


# --- layer counts from a released configuration (millions) -----------------------------------------
# conv(…, norm=True) is mmcv's ConvModule with BatchNorm (no bias, γ and β); linear is nn.Linear with bias.

def _conv(cin, cout, k=1, norm=True, groups=1):
    return (cin // groups * cout * k * k + (2 * cout if norm else cout)) / 1e6


def _linear(cin, cout, bias=True):
    return (cin * cout + (cout if bias else 0)) / 1e6


def _ln(c):
    return 2 * c / 1e6


def _ocr_head(cin, classes, channels=512, key=256):
    """mmsegmentation ``ocrnet_hr18.py``: FCNHead (1×1 conv, cin ch.) for the soft object regions, then
    OCRHead: 3×3 bottleneck, key and query projections of two 1×1 convs each, value and out projections,
    the 1×1 fusion of the concatenated 2×512 channels, and the classifier."""
    regions = _conv(cin, cin) + _conv(cin, classes, norm=False)
    attention = 2 * (_conv(channels, key) + _conv(key, key)) + _conv(channels, key) + _conv(key, channels)
    return regions + _conv(cin, channels, 3) + attention + _conv(2 * channels, channels) + _conv(
        channels, classes, norm=False)


def _uper_head(cin, classes, channels=512):
    """mmsegmentation ``UPerHead``: PPM (1, 2, 3, 6) on the last level, its 3×3 bottleneck, 1×1 laterals and
    3×3 FPN convs on the other levels, the 3×3 fusion of four levels, the classifier."""
    ppm = 4 * _conv(cin[-1], channels) + _conv(cin[-1] + 4 * channels, channels, 3)
    fpn = sum(_conv(c, channels) + _conv(channels, channels, 3) for c in cin[:-1])
    return ppm + fpn + _conv(4 * channels, channels, 3) + _conv(channels, classes, norm=False)


def _fcn_aux(cin, classes, channels=256):
    return _conv(cin, channels, 3) + _conv(channels, classes, norm=False)


def _kernel_update_head(c=512, ffn=2048, updator=256):
    """One mmsegmentation ``KernelUpdateHead`` as configured in ``knet-s3_*_upernet``: in/out channels 512,
    8-head attention, FFN 2048, one mask FC, a 1×1 feature transform, and a ``KernelUpdator`` whose in,
    feat and out channels are 256 (it is applied to each 256-channel half of a 512-channel kernel)."""
    u = updator
    kernel_updator = 2 * _linear(u, 2 * u) + 3 * _linear(u, u) + 5 * _ln(u)
    attention = 4 * _linear(c, c) + _ln(c)
    return (kernel_updator + attention + _conv(c, c, norm=False) + _linear(c, ffn) + _linear(ffn, c) + _ln(c)
            + _linear(c, c, bias=False) + _ln(c) + _linear(c, c))


def _daformer_head(classes, cin=(64, 128, 320, 512), c=256):
    """DAFormer ``daformer_sepaspp_mitb5.py``: a linear embedding per level to 256 channels, then ASPP-like
    fusion over their concatenation (1×1 conv for dilation 1; depthwise-separable 3×3 for 6, 12, 18; no
    pooling), its 3×3 bottleneck, the classifier."""
    cat = len(cin) * c
    separable = _conv(cat, cat, 3, groups=cat) + _conv(cat, c)
    return (sum(_linear(ci, c) for ci in cin) + _conv(cat, c) + 3 * separable + _conv(4 * c, c, 3)
            + _conv(c, classes, norm=False))


_MLN = 4 * (_conv(768, 768, norm=False) + _conv(768, 768, 3, norm=False))  # MultiLevelNeck, no norm, with bias
_SEGF_B2_C256 = 24.7 - 24.2  # SegFormer's MLP decoder, C=256, on MiT-B2/B5 widths (64, 128, 320, 512)


@dataclass(frozen=True)
class Reference:
    model: str  # registry name, optionally with a timm backbone swap in brackets
    classes: int  # the number of classes the reference was counted with
    part: str  # one of PARTS
    reference: float  # millions
    source: str  # where it comes from (published) or how it is made up (derived)
    kind: str  # "published" | "derived"
    label: str = ""  # how book/models.md names the row

    @property
    def name(self) -> str:
        return self.label or f"`{self.model}`" + ("" if self.part == "all" else f" ({self.part})")


def _pub(model, classes, part, ref, source, label=""):
    return Reference(model, classes, part, ref, source, "published", label)


def _der(model, classes, part, ref, source, label=""):
    return Reference(model, classes, part, ref, source, "derived", label)


REFERENCES: list[Reference] = [
    _pub("r50-psp", 19, "all", 48.98, "mmsegmentation `docs/useful_tools.md`, the `get_flops` example at 2048×1024 "
         "(PSPNet R-50-D8, Cityscapes; the page does not name the config)"),
    _pub("r50-uper", 21, "all", 66.0, "EasyCV segmentation model zoo, `upernet_r50` (mmseg-style UperNet with FCN aux, VOC)"),
    _pub("r101-uper", 21, "all", 66.0 + 44.549 - 25.557,
         "the line above + (ResNet-101 − ResNet-50) = 66 + 44.55 − 25.56, torchvision's counts"),
    _pub("r101-deeplabv2", 19, "all", 44.549 - 2.049 + 4 * (2048 * 9 * 19 + 19) / 1e6,
         "torchvision ResNet-101 less its classifier (44.55 − 2.05) + four 3×3 convs 2048 → 19 (1.40)"),
    _pub("r101-deeplabv2-red", 19, "all", 44.549 - 2.049 + 2 * (2048 * 9 * 19 + 19) / 1e6,
         "torchvision ResNet-101 less its classifier (44.55 − 2.05) + two 3×3 convs 2048 → 19 (0.70)"),
    _pub("r101-deeplabv3p", 150, "all", 62.7, "SegFormer, Table 2 (DeepLabV3+ ResNet-101, ADE20K)"),
    _pub("hr18-ocr[hrnet_w48]", 150, "all", 70.5, "SegFormer, Table 2 (OCRNet HRNet-W48, ADE20K)",
         "`hr18-ocr` with HRNetV2-W48"),
    _pub("hr18-ocr[hrnet_w48]", 19, "all", 70.47,
         "`docs/model_zoo_overview.md` in PaddlePaddle/PaddleSeg (OCRNet HRNet_W48, Cityscapes)",
         "`hr18-ocr` with HRNetV2-W48"),
    _pub("hr18-ocr", 19, "backbone", 9.3, "`README.md` in HRNet/HRNet-Facial-Landmark-Detection (HRNetV2-W18, whose "
         "landmark model adds a 1×1 head of 0.1)", "`hr18-ocr` (HRNetV2-W18 backbone)"),
    _pub("mitb0-segformer", 150, "all", 3.8, "SegFormer, Table 1 (B0 on ADE20K: encoder 3.4, decoder 0.4)"),
    _pub("mitb0-segformer", 150, "backbone", 3.4, "SegFormer, Table 1", "`mitb0-segformer` (MiT-b0)"),
    _pub("mitb5-daformer", 19, "backbone", 81.4, "SegFormer, Table 1", "`mitb5-daformer` (MiT-b5)"),
    _pub("mitb5-hrda", 19, "backbone", 81.4, "SegFormer, Table 1", "`mitb5-hrda` (MiT-b5)"),
    _pub("swint-knet", 150, "without kernel updates", 60.0,
         "Swin Transformer, Table 3 (UperNet Swin-T on ADE20K, with its FCN aux)", "`swint-knet` less its 3 kernel updates"),
    _pub("vitb16-uper", 19, "vit", 86.0, "ViT, Table 1 (ViT-Base). Ours has a 32×32 position table, for 512 crops",
         "`vitb16-uper` (ViT-B/16)"),
    _der("hr18-ocr", 19, "all", 9.3 + _ocr_head(270, 19),
         "HRNetV2-W18 9.3 (above) + soft-region FCN head and OCR head, from mmsegmentation "
         "`configs/_base_/models/ocrnet_hr18.py`"),
    _der("swint-knet", 150, "all", 60.0 + 3 * _kernel_update_head(),
         "UperNet Swin-T 60 (Swin, Table 3) + 3 `KernelUpdateHead`s, from mmsegmentation "
         "`configs/knet/knet-s3_r50-d8_upernet_8xb2-adamw-80k_ade20k-512x512.py` (its Swin-T config inherits the "
         "heads) and `mmseg/models/decode_heads/knet_head.py`"),
    _der("swint-knet", 150, "kernel updates", 3 * _kernel_update_head(),
         "as above: attention, kernel updater, 1×1 feature conv, FFN and mask MLP of each update",
         "`swint-knet` (3 kernel updates)"),
    _der("vitb16-uper", 150, "all", 86.0 + _MLN + _uper_head([768] * 4, 150) + _fcn_aux(768, 150),
         "ViT-B 86 (ViT, Table 1) + multi-level neck + UperHead + FCN aux, from mmsegmentation "
         "`configs/_base_/models/upernet_vit-b16_ln_mln.py`"),
    _der("mitb5-daformer", 19, "all", 81.4 + _daformer_head(19),
         "MiT-b5 81.4 (SegFormer, Table 1) + DAFormer decoder, from `configs/_base_/models/daformer_sepaspp_mitb5.py` "
         "and `mmseg/models/decode_heads/daformer_head.py` in lhoyer/DAFormer"),
    _der("mitb5-daformer", 19, "head", _daformer_head(19),
         "as above: embeddings, 1×1 + three separable convs, 3×3 fusion, classifier", "`mitb5-daformer` (decoder)"),
    _der("mitb5-hrda", 150, "all", 81.4 + _daformer_head(150) + _SEGF_B2_C256,
         "MiT-b5 81.4 + DAFormer decoder + scale attention 0.5. HRDA's attention (`mmseg/models/decode_heads/hrda_head.py` "
         "in lhoyer/HRDA) is the DAFormer head with a 1×1 fusion, i.e. SegFormer's MLP decoder with C = 256; "
         "SegFormer's Table 1 gives it as 24.7 (MiT-B2 with C = 256) − 24.2 (MiT-B2 encoder), on the same stage "
         "widths as MiT-b5"),
]

__all__ = ["PARTS", "REFERENCES", "Reference", "build_meta", "count", "part_count"]
