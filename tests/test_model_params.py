"""Parameter counts of the paper-size models against the counts cited in book/models.md (±5 %).

Built on the meta device: no memory, no weights, no network. Where a published count covers only part
of a model (an encoder; UperNet Swin-T without K-Net's kernel updates), that part is checked against it;
``OURS`` rows are our own arithmetic from the configuration the paper used (book/models.md shows the
sums), checked so that a change to an architecture cannot go unnoticed.
"""

from __future__ import annotations

import pytest
import torch

from blvnb.models.registry import build_model


def _count(module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def _meta(name: str, num_classes: int = 19):
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes)


# (model, classes the reference was counted with, what is counted, reference in millions, source)
PUBLISHED = [
    ("r50-psp", 19, "all", 48.98, "mmsegmentation docs/useful_tools.md, get_flops example at 2048×1024"),
    ("r50-uper", 21, "all", 66.0, "EasyCV segmentation model zoo, upernet_r50 (mmseg-style, VOC)"),
    ("r101-uper", 21, "all", 66.0 + 44.549 - 25.557, "EasyCV upernet_r50 + (ResNet-101 − ResNet-50), torchvision"),
    ("r101-deeplabv2", 19, "all", 44.549 - 2.049 + 4 * (2048 * 9 * 19 + 19) / 1e6,
     "torchvision ResNet-101 without its fc + four 3×3 ASPP classifiers"),
    ("mitb0-segformer", 150, "all", 3.8, "SegFormer Table 1 (B0, ADE20K)"),
    ("mitb0-segformer", 150, "backbone", 3.4, "SegFormer Table 1 (MiT-B0 encoder)"),
    ("mitb5-daformer", 19, "backbone", 81.4, "SegFormer Table 1 (MiT-B5 encoder)"),
    ("swint-knet", 150, "without kernel updates", 60.0, "Swin Transformer Table 3 (UperNet Swin-T, ADE20K)"),
    ("vitb16-uper", 19, "vit", 86.0, "ViT Table 1 (ViT-Base)"),
]

# our own counts from the configurations (book/models.md, "Parameter counts"), 19 classes
OURS = {"hr18-ocr": 12.08, "r101-deeplabv3p": 62.58, "swint-knet": 77.20, "vitb16-uper": 144.07,
        "mitb5-daformer": 85.16, "mitb5-hrda": 85.69}


def _part(model, what: str) -> float:
    core = getattr(model, "model", model)
    if what == "all":
        return _count(model)
    if what == "backbone":
        return _count(core.backbone)
    if what == "vit":
        return _count(core.backbone.body)
    if what == "without kernel updates":
        return _count(model) - _count(core.head.stages)
    raise ValueError(what)


@pytest.mark.parametrize("name,classes,what,ref,source", PUBLISHED, ids=[f"{r[0]}-{r[2]}" for r in PUBLISHED])
def test_published_counts(name, classes, what, ref, source):
    ours = _part(_meta(name, classes), what)
    assert abs(ours / ref - 1) <= 0.05, f"{name} ({what}): {ours:.2f}M vs {ref:.2f}M ({source})"


@pytest.mark.parametrize("name", sorted(OURS))
def test_our_counts(name):
    ours = _count(_meta(name))
    assert abs(ours / OURS[name] - 1) <= 0.05, f"{name}: {ours:.2f}M vs {OURS[name]:.2f}M"


def test_small_variants_are_small():
    """The quick profile trains on a CPU: every small variant below 12 M parameters."""
    from blvnb.models.registry import list_models

    for name in list_models():
        with torch.device("meta"):
            assert _count(build_model(name, variant="small")) < 12, name
