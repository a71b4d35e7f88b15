"""Joint image + label transforms.

Each transform is a callable ``(image, label) -> (image, label)`` on tensors: the image ``uint8`` or
``float`` 3×H×W, the label ``int64`` H×W of train ids (255 = ignore). Random transforms draw from a
``torch.Generator`` so that a seeded run is repeatable. Images are resized bilinearly, labels by
nearest neighbour; crops pad the image with 0 and the label with 255.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from blvnb.classes import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor]


def _uniform(g: torch.Generator | None, lo: float, hi: float) -> float:
    return lo + (hi - lo) * torch.rand((), generator=g).item()


def resize_pair(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]) -> Pair:
    """Resize to ``size`` = (H, W): bilinear for the image, nearest for the label."""
    dtype = image.dtype
    img = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
    if dtype == torch.uint8:
        img = img.round().clamp(0, 255).to(torch.uint8)
    if label is not None:
        label = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return img, label


class Compose:
    def __init__(self, transforms: Sequence[Callable[[torch.Tensor, torch.Tensor], Pair]]):
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label


class Resize:
    """Resize to a fixed (H, W) — e.g. the real data's 2048×1024 → the profile's training size."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image, label):
        if tuple(image.shape[-2:]) == self.size:
            return image, label
        return resize_pair(image, label, self.size)


class RandomScale:
    """Scale both by a factor drawn uniformly from ``scale_range`` (DARS's progressive strategy widens it)."""

    def __init__(self, scale_range: tuple[float, float], generator: torch.Generator | None = None):
        self.lo, self.hi = scale_range
        self.generator = generator

    def __call__(self, image, label):
        s = _uniform(self.generator, self.lo, self.hi)
        h, w = image.shape[-2:]
        size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
        return resize_pair(image, label, size)


class RandomCrop:
    """Crop ``size`` at a random place, padding first if the input is smaller (image 0, label 255)."""

    def __init__(self, size: tuple[int, int], generator: torch.Generator | None = None):
        self.size = tuple(size)
        self.generator = generator

    def __call__(self, image, label):
        ch, cw = self.size
        h, w = image.shape[-2:]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0)
            label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
            h, w = image.shape[-2:]
        y = int(torch.randint(0, h - ch + 1, (), generator=self.generator))
        x = int(torch.randint(0, w - cw + 1, (), generator=self.generator))
        return image[:, y : y + ch, x : x + cw], label[y : y + ch, x : x + cw]


class RandomHFlip:
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = p
        self.generator = generator

    def __call__(self, image, label):
        if torch.rand((), generator=self.generator).item() < self.p:
            return image.flip(-1), label.flip(-1)
        return image, label


class Normalize:
    """uint8 0..255 → float, standardised with the ImageNet mean and std (what timm backbones expect)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, label):
        return (image.float() / 255.0 - self.mean) / self.std, label


def train_transform(
    crop: tuple[int, int],
    scale_range: tuple[float, float] = (0.75, 1.5),
    base_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
) -> Compose:
    """The supervised training pipeline: [resize to base] → random scale → crop → flip → normalise."""
    steps: list = [Resize(base_size)] if base_size else []
    steps += [RandomScale(scale_range, generator), RandomCrop(crop, generator), RandomHFlip(0.5, generator), Normalize()]
    return Compose(steps)


def eval_transform(base_size: tuple[int, int] | None = None) -> Compose:
    """Evaluation: [resize to base] → normalise. Labels keep their resolution unless resized."""
    return Compose(([Resize(base_size)] if base_size else []) + [Normalize()])


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :class:`Normalize`, to uint8 3×H×W (for figures)."""
    m = torch.tensor(mean, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, device=image.device).view(3, 1, 1)
    return ((image * s + m) * 255).round().clamp(0, 255).to(torch.uint8)

