"""HRDA's multi-resolution wrapper (Hoyer et al., ECCV 2022) around any :class:`SegModel`.

The model sees the input twice: a *context* view downscaled by ``scale`` (0.5) and a *detail* view at
full resolution. A scale-attention head on the context features predicts, per class and pixel, how much
to trust the detail prediction:

    ŷ_F = (1 − a) ⊙ up(ŷ_C) + a ⊙ ŷ_D,   a = σ(h_A(f(x_C))), set to 0 outside the detail crop.

(HRDA computes ``up((1 − a) ŷ_C) + up(a) ŷ_D`` with ``a`` at the context's resolution; we upsample ``a``
and ``ŷ_C`` first and multiply at the detail's resolution, which differs only by the interpolation of a
product against the product of interpolations.)

**Training**: the detail view is one random crop of ``crop`` (0.5) of each side — HRDA's 512 detail crop
of a 1024 training crop — with its sides rounded down to multiples of ``size_align`` (32, what the
backbones need) and its corner on multiples of ``align`` (8: HRDA's ``crop_coord_divisible``, so that
the corner falls on whole pixels of the context's output at 1/8 of the input). Pass ``box`` (from
:meth:`crop_box` with a generator the caller seeds) to choose it; without one it is drawn from
``self.generator``. ``return_parts=True`` gives what HRDA's loss needs: the fused frame, the raw
detail logits of the crop and the box (UDA: 0.9 · CE(fused) + 0.1 · CE(detail, cropped label)).

**Inference** (eval mode, and :meth:`predict` in any mode — HRDA's teacher makes pseudo labels in train
mode): the detail prediction of the whole input by *overlapping* sliding windows of the training detail
size (``crop`` of each side), stride half a window, logits averaged where windows overlap (HRDA's
``hr_slide_inference`` with ``hr_slide_overlapping``); the attention is not masked.

**The loop's supervised loss** sees ``out`` = ŷ_F (weight 1) and one aux output: ŷ_D pasted into the
frame, with the context prediction, detached, outside the crop (no gradient there). Mean cross entropy
over the frame is the crop's mean × the crop's share of the frame, so the aux weight
λ_D / (1 − λ_D) / crop² gives HRDA's gradients up to the constant factor 1 − λ_D, which the learning
rate absorbs. (The UDA strategy computes HRDA's loss itself, from ``return_parts``.)
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from blvnb.errors import ConfigError
from blvnb.models.heads import resize


def slide_windows(h: int, w: int, wh: int, ww: int, sh: int, sw: int) -> list[tuple[int, int, int, int]]:
    """Windows (y0, x0, wh, ww) covering an h×w frame with stride (sh, sw), the last ones flush with the
    border (mmsegmentation's / HRDA's grid)."""
    wh, ww = min(wh, h), min(ww, w)
    gh = max(h - wh + sh - 1, 0) // sh + 1
    gw = max(w - ww + sw - 1, 0) // sw + 1
    boxes = []
    for i in range(gh):
        for j in range(gw):
            y1, x1 = min(i * sh + wh, h), min(j * sw + ww, w)
            boxes.append((max(y1 - wh, 0), max(x1 - ww, 0), wh, ww))
    return boxes


class HRDA(nn.Module):
    def __init__(self, model: nn.Module, attention: nn.Module | None = None, scale: float = 0.5, crop: float = 0.5,
                 detail_weight: float = 0.1, align: int = 8, size_align: int = 32,
                 generator: torch.Generator | None = None, slide: bool = True):
        super().__init__()
        self.model = model
        if attention is None:  # a fresh copy of the decode head: class-wise attention, HRDA's default
            attention = copy.deepcopy(model.head)
            for m in attention.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
        self.attention = attention
        self.scale, self.crop, self.align, self.size_align = scale, crop, align, size_align
        self.generator, self.slide, self.detail_weight = generator, slide, detail_weight
        self.aux_weights = (detail_weight / (1 - detail_weight) / crop ** 2,) + tuple(model.aux_weights)

    # --- geometry --------------------------------------------------------------------------------------

    def detail_size(self, h: int, w: int) -> tuple[int, int]:
        """The detail crop's (height, width) for an h×w input: ``crop`` of each side, multiples of ``size_align``."""
        a = self.size_align
        return min(h, max(a, int(h * self.crop) // a * a)), min(w, max(a, int(w * self.crop) // a * a))

    def crop_box(self, h: int, w: int, generator: torch.Generator | None = None) -> tuple[int, int, int, int]:
        """A random detail crop (y0, x0, height, width) of an h×w input, corners on multiples of ``align``
        (uniform over {0, a, 2a, …} up to the last position that fits)."""
        a = self.align
        ch, cw = self.detail_size(h, w)
        g = generator if generator is not None else self.generator
        dev = g.device if g is not None else torch.device("cpu")
        y0 = int(torch.randint(0, (h - ch) // a + 1, (1,), generator=g, device=dev)) * a
        x0 = int(torch.randint(0, (w - cw) // a + 1, (1,), generator=g, device=dev)) * a
        return y0, x0, ch, cw

    _crop_box = crop_box  # the name before the UDA strategy chose boxes itself

    # --- the two views ---------------------------------------------------------------------------------

    def _context(self, x: torch.Tensor, aux: bool = False) -> dict:
        lr = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.model.decode(lr, aux=aux)

    def _slide_detail(self, x: torch.Tensor, want_features: bool = False) -> dict:
        """Detail logits (and features) of the whole input by overlapping windows, averaged."""
        h, w = x.shape[-2:]
        wh, ww = self.detail_size(h, w)
        boxes = slide_windows(h, w, wh, ww, max(1, wh // 2), max(1, ww // 2))
        n = x.shape[0]
        crops = torch.cat([x[..., y0:y0 + bh, x0:x0 + bw] for y0, x0, bh, bw in boxes])
        d = self.model.decode(crops, aux=False)
        r = wh // d["out"].shape[-2]  # the head's output stride
        size = (h // r, w // r)
        res = {}
        keys = ("out", "features") if want_features else ("out",)
        count = x.new_zeros(1, 1, *size)
        for y0, x0, bh, bw in boxes:
            count[..., y0 // r:y0 // r + bh // r, x0 // r:x0 // r + bw // r] += 1
        for k in keys:
            t = d[k]
            acc = t.new_zeros(n, t.shape[1], *size)
            for b, (y0, x0, bh, bw) in enumerate(boxes):
                part = t[b * n:(b + 1) * n]
                top, left = y0 // r, x0 // r
                acc = acc + F.pad(part, (left, size[1] - left - part.shape[-1], top, size[0] - top - part.shape[-2]))
            res[k] = acc / count.to(acc.dtype)
        return res

    def _infer(self, x: torch.Tensor, features: bool = False, aux: bool = False) -> dict:
        ctx = self._context(x, aux=aux)
        if self.slide:
            det = self._slide_detail(x, features)
        else:
            det = self.model.decode(x, aux=False)
        size = det["out"].shape[-2:]
        up = resize(ctx["out"], size)
        att = torch.sigmoid(resize(self.attention(ctx["backbone"]), size))
        # ŷ_F = (1 − a) ⊙ up(ŷ_C) + a ⊙ ŷ_D
        res = {"out": (1 - att) * up + att * det["out"]}
        if features:
            res["features"] = det["features"]
        if aux:
            res["aux"] = [det["out"]] + ctx["aux"]
        return res

    def predict(self, x: torch.Tensor, return_features: bool = False):
        """The inference path in any mode (module docstring): fused logits at the head's grid of the input
        (``{"out", "features"}`` with ``return_features``)."""
        res = self._infer(x, return_features)
        return res if return_features else res["out"]

    def forward(self, x: torch.Tensor, return_features: bool = False, return_aux: bool = False,
                box: tuple[int, int, int, int] | None = None, return_parts: bool = False):
        if not self.training:
            if return_parts:
                raise ConfigError("HRDA: return_parts is for training mode (the detail crop); use predict()")
            res = self._infer(x, return_features, return_aux)
            return res if (return_features or return_aux) else res["out"]
        h, w = x.shape[-2:]
        ctx = self._context(x, aux=return_aux)
        y0, x0, ch, cw = box if box is not None else self.crop_box(h, w)
        if y0 % self.align or x0 % self.align or y0 + ch > h or x0 + cw > w:
            raise ConfigError(f"HRDA: detail box {(y0, x0, ch, cw)} is not inside {h}×{w} on multiples of {self.align}")
        det = self.model.decode(x[..., y0:y0 + ch, x0:x0 + cw], aux=False)
        r = ch // det["out"].shape[-2]  # the head's output stride
        size = (h // r, w // r)
        top, left = y0 // r, x0 // r
        dh, dw = det["out"].shape[-2:]
        detail = F.pad(det["out"], (left, size[1] - left - dw, top, size[0] - top - dh))
        inside = torch.zeros(1, 1, *size, device=x.device, dtype=detail.dtype)
        inside[..., top:top + dh, left:left + dw] = 1
        up = resize(ctx["out"], size)
        att = torch.sigmoid(resize(self.attention(ctx["backbone"]), size)) * inside
        # ŷ_F = (1 − a) ⊙ up(ŷ_C) + a ⊙ ŷ_D, a = 0 outside the detail crop
        out = (1 - att) * up + att * detail
        if return_parts:
            return {"out": out, "detail": det["out"], "box": (y0, x0, ch, cw), "context": ctx["out"],
                    "context_features": ctx["backbone"], "features": det["features"]}
        if not (return_features or return_aux):
            return out
        res = {"out": out}
        if return_features:
            res["features"] = det["features"]
        if return_aux:
            d = torch.where(inside.bool(), detail, up.detach())
            res["aux"] = [d] + ctx["aux"]
        return res
