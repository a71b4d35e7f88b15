"""Parameter counts of the paper-size models against independent references (±5 %); book/models.md lists them.

Built on the meta device: no memory, no weights, no network. Every reference comes from outside blvnb:

* ``PUBLISHED``: a count printed in a paper table, a model-zoo page or a maintained repository's README,
  for the number of classes it was counted with. Where it covers only part of a model (an encoder;
  UperNet Swin-T without K-Net's kernel updates), that part is checked. OCRNet's published counts are for
  HRNetV2-W48, so ``hr18-ocr`` is also built with its backbone widened to W48 (``[hrnet_w48]``).
* ``DERIVED``: where no published count of the whole model was found, a sum of published parts and of
  the parts no one publishes, counted layer by layer from the released configuration (mmsegmentation's,
  DAFormer's) by the small functions below, which transcribe that configuration and use no blvnb module.

No reference is a number blvnb itself produced.
"""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from blvnb.models import registry
from blvnb.models.registry import build_model


def _count(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _meta(name: str, num_classes: int = 19):
    """``"hr18-ocr[hrnet_w48]"``: the registry entry, with its timm backbone swapped for the one in brackets."""
    base, _, swap = name.partition("[")
    with torch.device("meta"):
        if not swap:
            return build_model(base, num_classes=num_classes)
        timm_backbone = registry.TimmBackbone
        with mock.patch.object(registry, "TimmBackbone", lambda _, *a, **kw: timm_backbone(swap[:-1], *a, **kw)):
            return build_model(base, num_classes=num_classes)


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


# (model, classes the reference was counted with, what is counted, reference in millions, source)
PUBLISHED = [
    ("r50-psp", 19, "all", 48.98, "mmsegmentation docs/useful_tools.md, get_flops example at 2048×1024"),
    ("r50-uper", 21, "all", 66.0, "EasyCV segmentation model zoo, upernet_r50 (mmseg-style, VOC)"),
    ("r101-uper", 21, "all", 66.0 + 44.549 - 25.557, "EasyCV upernet_r50 + (ResNet-101 − ResNet-50), torchvision"),
    ("r101-deeplabv2", 19, "all", 44.549 - 2.049 + 4 * (2048 * 9 * 19 + 19) / 1e6,
     "torchvision ResNet-101 without its fc + four 3×3 ASPP classifiers"),
    ("r101-deeplabv3p", 150, "all", 62.7, "SegFormer Table 2 (DeepLabV3+ ResNet-101, ADE20K)"),
    ("hr18-ocr[hrnet_w48]", 150, "all", 70.5, "SegFormer Table 2 (OCRNet HRNet-W48, ADE20K)"),
    ("hr18-ocr[hrnet_w48]", 19, "all", 70.47,
     "PaddlePaddle/PaddleSeg docs/model_zoo_overview.md (OCRNet HRNet_W48, Cityscapes)"),
    ("hr18-ocr", 19, "backbone", 9.3,
     "HRNet/HRNet-Facial-Landmark-Detection README.md (HRNetV2-W18; with its 1×1 landmark head, 0.1 M)"),
    ("mitb0-segformer", 150, "all", 3.8, "SegFormer Table 1 (B0, ADE20K)"),
    ("mitb0-segformer", 150, "backbone", 3.4, "SegFormer Table 1 (MiT-B0 encoder)"),
    ("mitb5-daformer", 19, "backbone", 81.4, "SegFormer Table 1 (MiT-B5 encoder)"),
    ("mitb5-hrda", 19, "backbone", 81.4, "SegFormer Table 1 (MiT-B5 encoder)"),
    ("swint-knet", 150, "without kernel updates", 60.0, "Swin Transformer Table 3 (UperNet Swin-T, ADE20K)"),
    ("vitb16-uper", 19, "vit", 86.0, "ViT Table 1 (ViT-Base)"),
]

# published parts + the parts no one publishes, counted from the released configuration
DERIVED = [
    ("hr18-ocr", 19, "all", 9.3 + _ocr_head(270, 19),
     "HRNetV2-W18 9.3 (HRNet-Facial-Landmark-Detection README) + mmseg ocrnet_hr18 heads (config)"),
    ("swint-knet", 150, "all", 60.0 + 3 * _kernel_update_head(),
     "UperNet Swin-T 60 (Swin Table 3) + 3 mmseg KernelUpdateHeads (config knet-s3_swin-t_upernet)"),
    ("swint-knet", 150, "kernel updates", 3 * _kernel_update_head(),
     "3 mmseg KernelUpdateHeads (config knet-s3_swin-t_upernet)"),
    ("vitb16-uper", 150, "all", 86.0 + _MLN + _uper_head([768] * 4, 150) + _fcn_aux(768, 150),
     "ViT-B 86 (ViT Table 1) + mmseg MultiLevelNeck, UPerHead and FCN aux (config upernet_vit-b16_mln)"),
    ("mitb5-daformer", 19, "all", 81.4 + _daformer_head(19),
     "MiT-B5 81.4 (SegFormer Table 1) + DAFormer decoder (config daformer_sepaspp_mitb5)"),
    ("mitb5-daformer", 19, "head", _daformer_head(19), "DAFormer decoder (config daformer_sepaspp_mitb5)"),
    ("mitb5-hrda", 150, "all", 81.4 + _daformer_head(150) + _SEGF_B2_C256,
     "MiT-B5 81.4 + DAFormer decoder (config) + scale attention = SegFormer MLP decoder C=256: "
     "24.7 − 24.2 (SegFormer Table 1, MiT-B2 with C=256 − MiT-B2 encoder)"),
]


def _part(model, what: str) -> float:
    core = getattr(model, "model", model)  # HRDA wraps a SegModel
    if what == "all":
        return _count(model)
    if what == "backbone":
        return _count(core.backbone)
    if what == "head":
        return _count(core.head)
    if what == "vit":
        return _count(core.backbone.body)
    if what == "kernel updates":
        return _count(core.head.stages)
    if what == "without kernel updates":
        return _count(model) - _count(core.head.stages)
    raise ValueError(what)


@pytest.mark.parametrize("name,classes,what,ref,source", PUBLISHED + DERIVED,
                         ids=[f"{r[0]}-{r[2]}-{r[1]}" for r in PUBLISHED + DERIVED])
def test_counts(name, classes, what, ref, source):
    ours = _part(_meta(name, classes), what)
    assert abs(ours / ref - 1) <= 0.05, f"{name} ({what}, {classes} classes): {ours:.2f}M vs {ref:.2f}M ({source})"


def test_every_paper_row_has_a_whole_model_reference():
    whole = {r[0] for r in PUBLISHED + DERIVED if r[2] == "all"}
    rows = {"hr18-ocr", "r50-uper", "r101-uper", "r50-psp", "mitb0-segformer", "swint-knet", "vitb16-uper",
            "r101-deeplabv3p", "r101-deeplabv2", "mitb5-daformer", "mitb5-hrda"}
    assert rows <= whole, rows - whole


def test_small_variants_are_small():
    """The quick profile trains on a CPU: every small variant below 12 M parameters."""
    from blvnb.models.registry import list_models

    for name in list_models():
        with torch.device("meta"):
            assert _count(build_model(name, variant="small")) < 12, name
