"""Decode heads: plain modules that take the backbone's list of feature maps (finest first).

Every head is sized from the backbone's ``feature_info.channels()`` and has one method that matters,
``decode(feats) -> {"out": logits, "features": penultimate map, "aux": [extra logits]}``;
``head(feats)`` is ``decode(feats)["out"]``. Logits come at the head's own resolution (comments give it,
``# [1/4, 1/8, 1/16, 1/32] -> 1/4``); the engine upsamples to label size. ``aux_weights`` weighs the
head's own extra outputs (OCR's soft object regions); auxiliary heads on a backbone level are separate
modules (:class:`FCNHead`) that the registry attaches.

Interpolation is bilinear with ``align_corners=False`` everywhere in blvnb (:func:`resize`).
Convolutions followed by BatchNorm carry no bias; ``conv_bn_relu`` is mmsegmentation's ``ConvModule``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, groups=groups,
                                   bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def sep_conv(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (dilated) then pointwise 1×1, each with BN and ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, dilation, groups=cin), conv_bn_relu(cin, cout, 1))


class DecodeHead(nn.Module):
    """A head is ``features`` (the penultimate map) then dropout and a 1×1 classifier."""

    aux_weights: tuple[float, ...] = ()

    def __init__(self, channels: int, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, feats: list[torch.Tensor]) -> dict:
        f = self.features(feats)
        return {"out": self.classifier(self.dropout(f)), "features": f, "aux": []}

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.decode(feats)["out"]


class FCNHead(DecodeHead):
    """One level, one 3×3 conv, the classifier: the auxiliary head of PSPNet, UperNet, DeepLabV3+ and K-Net
    (mmsegmentation's ``FCNHead`` with one conv), on "stage 3" (``index=2``).

    ``# [.., 1/r at index, ..] -> 1/r``
    """

    def __init__(self, in_channels: list[int], num_classes: int, index: int = 2, channels: int = 256,
                 dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.index = index
        self.conv = conv_bn_relu(in_channels[index], channels, 3)

    def features(self, feats):
        return self.conv(feats[self.index])


class FPNHead(DecodeHead):
    """A light semantic-FPN head: lateral 1×1 convs, top-down sum, a 3×3 conv per level, all levels
    upsampled to the finest and summed. The walking skeleton's baseline (r18-fpn, r10t-fpn).

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 64, dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels)

    def features(self, feats):
        lat = [l(f) for l, f in zip(self.lateral, feats)]
        for i in range(len(lat) - 1, 0, -1):  # top-down pathway
            lat[i - 1] = lat[i - 1] + resize(lat[i], lat[i - 1].shape[-2:])
        size = lat[0].shape[-2:]
        return sum(resize(s(x), size) for s, x in zip(self.smooth, lat))


class PPM(nn.Module):
    """Pyramid pooling (PSPNet): average-pool to b×b for each bin, 1×1 conv, upsample back; returns the
    input followed by the pooled maps, ready to concatenate."""

    def __init__(self, cin: int, channels: int, bins=(1, 2, 3, 6)):
        super().__init__()
        self.stages = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), conv_bn_relu(cin, channels, 1))
                                    for b in bins)

    def forward(self, x):
        return [x] + [resize(s(x), x.shape[-2:]) for s in self.stages]


class PSPHead(DecodeHead):
    """PSPNet: pyramid pooling on the last level, concatenated with it, a 3×3 conv.

    ``# [.., 1/8] -> 1/8`` (dilated backbone, output stride 8)
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, bins=(1, 2, 3, 6),
                 dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.ppm = PPM(in_channels[-1], channels, bins)
        self.bottleneck = conv_bn_relu(in_channels[-1] + len(bins) * channels, channels, 3)

    def features(self, feats):
        return self.bottleneck(torch.cat(self.ppm(feats[-1]), 1))


class UperHead(DecodeHead):
    """UperNet: PPM on the coarsest level, an FPN (lateral 1×1, top-down sum, 3×3 per level), all levels
    upsampled to the finest, concatenated and fused by a 3×3 conv.

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, bins=(1, 2, 3, 6),
                 dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.ppm = PPM(in_channels[-1], channels, bins)
        self.ppm_out = conv_bn_relu(in_channels[-1] + len(bins) * channels, channels, 3)
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1) for c in in_channels[:-1])
        self.smooth = nn.ModuleList(conv_bn_relu(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels, 3)

    def features(self, feats):
        lat = [l(f) for l, f in zip(self.lateral, feats)] + [self.ppm_out(torch.cat(self.ppm(feats[-1]), 1))]
        for i in range(len(lat) - 1, 0, -1):  # top-down pathway
            lat[i - 1] = lat[i - 1] + resize(lat[i], lat[i - 1].shape[-2:])
        outs = [s(x) for s, x in zip(self.smooth, lat[:-1])] + [lat[-1]]
        return self.fuse(torch.cat([outs[0]] + [resize(o, outs[0].shape[-2:]) for o in outs[1:]], 1))


class ASPPV2Head(DecodeHead):
    """DeepLab v2's classifier: the sum of four 3×3 convs with dilations (6, 12, 18, 24), each straight to
    class scores. There is no penultimate layer: ``features`` is the backbone's last map.

    ``# [.., 1/8] -> 1/8``
    """

    def __init__(self, in_channels: list[int], num_classes: int, rates=(6, 12, 18, 24)):
        nn.Module.__init__(self)
        self.branches = nn.ModuleList(nn.Conv2d(in_channels[-1], num_classes, 3, padding=r, dilation=r) for r in rates)
        for b in self.branches:
            nn.init.normal_(b.weight, std=0.01)

    def decode(self, feats):
        x = feats[-1]
        return {"out": sum(b(x) for b in self.branches), "features": x, "aux": []}


class DeepLabV3PlusHead(DecodeHead):
    """DeepLabV3+: ASPP (image pooling, 1×1, three separable 3×3 with dilations 12/24/36) on the last level,
    a 3×3 projection, upsampled to 1/4 and joined with a 48-channel reduction of the 1/4 level, refined by
    two separable 3×3 convs.

    ``# [1/4, .., 1/8] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, low_channels: int = 48,
                 rates=(12, 24, 36), dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        cin = in_channels[-1]
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), conv_bn_relu(cin, channels, 1))
        self.aspp = nn.ModuleList([conv_bn_relu(cin, channels, 1)] + [sep_conv(cin, channels, r) for r in rates])
        self.project = conv_bn_relu((len(rates) + 2) * channels, channels, 3)
        self.low = conv_bn_relu(in_channels[0], low_channels, 1)
        self.refine = nn.Sequential(sep_conv(channels + low_channels, channels), sep_conv(channels, channels))

    def features(self, feats):
        x = feats[-1]
        aspp = [resize(self.pool(x), x.shape[-2:])] + [b(x) for b in self.aspp]
        y = resize(self.project(torch.cat(aspp, 1)), feats[0].shape[-2:])
        return self.refine(torch.cat([y, self.low(feats[0])], 1))


class SegFormerHead(DecodeHead):
    """SegFormer's all-MLP head: a linear layer per level to C channels, upsampled to 1/4, concatenated,
    fused by a 1×1 conv (SegFormer Eq. 4).

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256, dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)  # per-pixel linear layers
        self.fuse = conv_bn_relu(len(in_channels) * channels, channels, 1)

    def features(self, feats):
        size = feats[0].shape[-2:]
        return self.fuse(torch.cat([resize(e(f), size) for e, f in zip(self.embed, feats)], 1))


class DAFormerHead(DecodeHead):
    """DAFormer's context-aware fusion: levels embedded as in SegFormer and concatenated at 1/4, then fused
    by an ASPP-like bank of depthwise-separable 3×3 convs with dilations (1, 6, 12, 18) — the dilation-1
    branch is a 1×1 conv — and a 3×3 conv over their concatenation (DAFormer Sec. 3.2).

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 256, rates=(1, 6, 12, 18),
                 dropout: float = 0.1):
        super().__init__(channels, num_classes, dropout)
        cat = len(in_channels) * channels
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.context = nn.ModuleList(conv_bn_relu(cat, channels, 1) if r == 1 else sep_conv(cat, channels, r)
                                     for r in rates)
        self.fuse = conv_bn_relu(len(rates) * channels, channels, 3)

    def features(self, feats):
        size = feats[0].shape[-2:]
        x = torch.cat([resize(e(f), size) for e, f in zip(self.embed, feats)], 1)
        return self.fuse(torch.cat([c(x) for c in self.context], 1))


class OCRHead(DecodeHead):
    """HRNet + OCR (Yuan et al., ECCV 2020): all levels upsampled to 1/4 and concatenated; an FCN layer
    predicts soft object regions (supervised: the aux output, weight 0.4); each pixel is augmented with
    the representation of the object regions it relates to.

    ``# [1/4, 1/8, 1/16, 1/32] -> 1/4``
    """

    aux_weights = (0.4,)

    def __init__(self, in_channels: list[int], num_classes: int, channels: int = 512, key_channels: int = 256,
                 dropout: float = 0.0):
        super().__init__(channels, num_classes, dropout)
        c = sum(in_channels)
        self.regions = nn.Sequential(conv_bn_relu(c, c, 1), nn.Conv2d(c, num_classes, 1))  # soft object regions M
        self.pixel = conv_bn_relu(c, channels, 3)  # pixel representations x_i
        self.query = nn.Sequential(conv_bn_relu(channels, key_channels), conv_bn_relu(key_channels, key_channels))
        self.key = nn.Sequential(conv_bn_relu(channels, key_channels), conv_bn_relu(key_channels, key_channels))
        self.value = conv_bn_relu(channels, key_channels)
        self.out = conv_bn_relu(key_channels, channels)
        self.fuse = conv_bn_relu(2 * channels, channels)
        self.scale = key_channels ** -0.5

    def decode(self, feats):
        x = torch.cat([feats[0]] + [resize(f, feats[0].shape[-2:]) for f in feats[1:]], 1)
        regions = self.regions(x)  # N×K×h×w
        pix = self.pixel(x)  # N×C×h×w
        n, c, h, w = pix.shape
        # f_k = Σ_i softmax_i(m_ki) x_i  (object region representations), laid out as a K×1 map
        obj = torch.bmm(regions.flatten(2).softmax(-1), pix.flatten(2).transpose(1, 2))  # N×K×C
        obj = obj.transpose(1, 2).unsqueeze(-1)  # N×C×K×1
        q = self.query(pix).flatten(2).transpose(1, 2)  # N×hw×d
        k = self.key(obj).flatten(2)  # N×d×K
        v = self.value(obj).flatten(2).transpose(1, 2)  # N×K×d
        # w_ik = softmax_k(φ(x_i)ᵀ ψ(f_k) / √d)  (pixel-region relation)
        rel = torch.softmax(torch.bmm(q, k) * self.scale, -1)
        # y_i = ρ(Σ_k w_ik δ(f_k))  (object contextual representation)
        ctx = self.out(torch.bmm(rel, v).transpose(1, 2).reshape(n, -1, h, w))
        # z_i = g([y_i, x_i])  (augmented representation)
        z = self.fuse(torch.cat([ctx, pix], 1))
        return {"out": self.classifier(self.dropout(z)), "features": z, "aux": [regions]}
