"""HRDA's multi-resolution wrapper (Hoyer et al., ECCV 2022) around any :class:`SegModel`.

The model sees the input twice: a *context* view downscaled by ``scale`` (0.5) and a *detail* view at
full resolution — during training a random crop of ``crop`` (0.5) of each side, at inference the whole
image (HRDA slides detail crops; one pass over the whole image is the same computation without the
crop borders). A scale-attention head on the context features predicts, per class and pixel, how much
to trust the detail prediction:

    ŷ_F = (1 − a) ⊙ up(ŷ_C) + a ⊙ ŷ_D,   a = σ(h_A(f(x_C))), set to 0 outside the detail crop.

HRDA's loss is (1 − λ_D) CE(ŷ_F) + λ_D CE(ŷ_D) on the crop, λ_D = 0.1. The loop sees ``out`` = ŷ_F (weight 1)
and one aux output: ŷ_D pasted into the frame, with the context prediction, detached, outside the crop
(no gradient there). Mean cross entropy over the frame is the crop's mean × the crop's share of the frame,
so the aux weight λ_D / (1 − λ_D) / crop² gives HRDA's gradients up to the constant factor 1 − λ_D,
which the learning rate absorbs.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from blvnb.models.heads import resize


class HRDA(nn.Module):
    def __init__(self, model: nn.Module, attention: nn.Module | None = None, scale: float = 0.5, crop: float = 0.5,
                 detail_weight: float = 0.1, align: int = 32, generator: torch.Generator | None = None):
        super().__init__()
        self.model = model
        if attention is None:  # a fresh copy of the decode head: class-wise attention, HRDA's default
            attention = copy.deepcopy(model.head)
            for m in attention.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.attention = attention
        self.scale, self.crop, self.align, self.generator = scale, crop, align, generator
        self.aux_weights = (detail_weight / (1 - detail_weight) / crop ** 2,) + tuple(model.aux_weights)

    def _crop_box(self, h: int, w: int) -> tuple[int, int, int, int]:
        """A random crop of ``crop`` of each side, corners on multiples of ``align`` pixels."""
        a = self.align
        ch, cw = max(a, int(h * self.crop) // a * a), max(a, int(w * self.crop) // a * a)
        y0 = int(torch.randint(0, max(1, (h - ch) // a + 1), (1,), generator=self.generator)) * a
        x0 = int(torch.randint(0, max(1, (w - cw) // a + 1), (1,), generator=self.generator)) * a
        return y0, x0, min(ch, h - y0), min(cw, w - x0)

    def forward(self, x: torch.Tensor, return_features: bool = False, return_aux: bool = False):
        h, w = x.shape[-2:]
        lr = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        ctx = self.model.decode(lr, aux=return_aux)
        if self.training:
            y0, x0, ch, cw = self._crop_box(h, w)
            det = self.model.decode(x[..., y0:y0 + ch, x0:x0 + cw], aux=False)
            r = ch // det["out"].shape[-2]  # the head's output stride
            size = (h // r, w // r)
            top, left = y0 // r, x0 // r
            dh, dw = det["out"].shape[-2:]
            detail = F.pad(det["out"], (left, size[1] - left - dw, top, size[0] - top - dh))
            inside = torch.zeros(1, 1, *size, device=x.device, dtype=detail.dtype)
            inside[..., top:top + dh, left:left + dw] = 1
        else:
            det = self.model.decode(x, aux=False)
            detail, size, inside = det["out"], det["out"].shape[-2:], None
        up = resize(ctx["out"], size)
        att = torch.sigmoid(resize(self.attention(ctx["backbone"]), size))
        if inside is not None:
            att = att * inside
        # ŷ_F = (1 − a) ⊙ up(ŷ_C) + a ⊙ ŷ_D
        out = (1 - att) * up + att * detail
        if not (return_features or return_aux):
            return out
        res = {"out": out}
        if return_features:
            res["features"] = det["features"]
        if return_aux:
            d = detail if inside is None else torch.where(inside.bool(), detail, up.detach())
            res["aux"] = [d] + ctx["aux"]
        return res
