"""Inference helpers shared by training, evaluation and pseudo-labelling: the one logits resize, and a
model's logits for whole images or sliding windows, optionally flip-averaged (:func:`predict_logits`).

``align_corners=False`` everywhere in blvnb. Overlapping windows and the flipped pass are combined by
averaging logits (not probabilities).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from blvnb.classes import NUM_CLASSES
from blvnb.errors import BlvnbError, ConfigError


def resize_logits(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize of N×C×h×w logits to ``size`` = (H, W) (a no-op when already that size)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _forward(model, x: torch.Tensor, size: tuple[int, int], num_classes: int, amp_dtype) -> torch.Tensor:
    """Model logits for ``x``, resized to ``size`` (:func:`resize_logits`), float32."""
    with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        out = model(x)
    if isinstance(out, dict):
        if "out" not in out:
            raise BlvnbError(f"the model returned a dict without an 'out' key (keys: {sorted(out)})")
        out = out["out"]
    if not isinstance(out, torch.Tensor) or out.ndim != 4:
        raise BlvnbError("the model must return N×C×h×w logits, or a dict with them under 'out'")
    if out.shape[1] != num_classes:
        raise BlvnbError(f"the model returned {out.shape[1]} channels, expected num_classes={num_classes}")
    return resize_logits(out.float(), size)


def _starts(length: int, window: int, stride: int) -> list[int]:
    """Window start offsets covering [0, length); the last window ends at the border."""
    if length <= window:
        return [0]
    n = math.ceil((length - window) / stride) + 1
    return sorted({min(i * stride, length - window) for i in range(n)})


def _pair(v, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        v = (v, v)
    try:
        h, w = (int(a) for a in v)
    except (TypeError, ValueError):
        raise BlvnbError(f"{name} must be an int or a pair (h, w), got {v!r}") from None
    if h < 1 or w < 1:
        raise BlvnbError(f"{name} must be positive, got {v!r}")
    return h, w


def _slide(model, images, crop, stride, num_classes, amp_dtype, window_batch) -> torch.Tensor:
    n, _, h, w = images.shape
    ch, cw = crop
    sh, sw = stride
    # an image smaller than the crop is padded bottom/right with 0 (the input as given, i.e. after
    # normalisation), and the logits are cropped back at the end
    ph, pw = max(h, ch), max(w, cw)
    if (ph, pw) != (h, w):
        images = F.pad(images, (0, pw - w, 0, ph - h), value=0.0)
    wins = [(y, x) for y in _starts(ph, ch, sh) for x in _starts(pw, cw, sw)]
    logits = images.new_zeros((n, num_classes, ph, pw), dtype=torch.float32)
    count = images.new_zeros((1, 1, ph, pw), dtype=torch.float32)
    for i in range(0, len(wins), window_batch):
        chunk = wins[i:i + window_batch]
        # k windows of every image, stacked: (k·N)×3×ch×cw, window-major
        crops = torch.cat([images[:, :, y:y + ch, x:x + cw] for y, x in chunk])
        out = _forward(model, crops, (ch, cw), num_classes, amp_dtype)
        for j, (y, x) in enumerate(chunk):
            logits[:, :, y:y + ch, x:x + cw] += out[j * n:(j + 1) * n]
            count[:, :, y:y + ch, x:x + cw] += 1
    # average overlapping windows
    logits /= count
    return logits[:, :, :h, :w]


@torch.no_grad()
def predict_logits(model, images: torch.Tensor, *, mode: str = "whole", crop=None, stride=None,
                   flip: bool = False, num_classes: int = NUM_CLASSES, amp_dtype: torch.dtype | None = None,
                   window_batch: int = 8) -> torch.Tensor:
    """Logits N×C×H×W at the resolution of ``images`` (N×3×H×W, already normalised).

    ``model(x)`` may return logits at any resolution, or a dict holding them under ``"out"``; they are
    upsampled bilinearly (align_corners=False) to the size of the input or window.

    Args:
        mode: ``"whole"`` — one forward pass on the full image; ``"slide"`` — ``crop``-sized windows
            with step ``stride`` (default ⌈2/3 · crop⌉, as DARS's released evaluation), covering the image
            with the last window snapped to the border; logits of overlapping windows are averaged. An
            image smaller than the crop is zero-padded bottom/right, then the logits are cropped back.
        crop, stride: int or (h, w); ``crop`` is required for ``"slide"``.
        flip: also run the horizontally flipped input and average its logits, flipped back, with the
            plain ones.
        amp_dtype: None (float32) or torch.bfloat16 / torch.float16 — autocast on the input's device type
            around the model's forward; logits are accumulated in float32.
        window_batch: windows per forward pass in ``"slide"`` mode (each with all N images).

    Runs under ``torch.no_grad()``; does not change the model's train/eval mode (call ``model.eval()``).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise BlvnbError(f"images must be an N×3×H×W tensor, got {getattr(images, 'shape', type(images))}")
    if not images.is_floating_point():
        raise BlvnbError(f"images must be a float tensor (normalised), got dtype {images.dtype}")
    h, w = images.shape[-2:]
    if mode == "whole":
        def run(x):
            return _forward(model, x, (h, w), num_classes, amp_dtype)
    elif mode == "slide":
        if crop is None:
            raise BlvnbError("mode='slide' needs crop=(h, w), e.g. crop=(769, 769) for Cityscapes")
        crop_hw = _pair(crop, "crop")
        stride_hw = _pair(stride, "stride") if stride is not None else tuple(math.ceil(c * 2 / 3) for c in crop_hw)

        def run(x):
            return _slide(model, x, crop_hw, stride_hw, num_classes, amp_dtype, max(1, int(window_batch)))
    else:
        raise ConfigError(f"unknown inference mode {mode!r}; expected 'whole' or 'slide'")
    logits = run(images)
    if flip:
        # not in place: in "whole" mode ``logits`` may be the model's own output tensor
        logits = (logits + run(images.flip(-1)).flip(-1)) / 2
    return logits


__all__ = ["predict_logits", "resize_logits"]
