"""Joint image + label transforms, and the augmented view of a data set.

Each transform is a callable ``(image, label, generator=None) -> (image, label)`` on tensors: the image
``uint8`` or ``float`` 3×H×W, the label ``int64`` H×W of train ids (255 = ignore) or ``None`` (unlabeled
images). Random transforms draw only from the ``generator`` they are given at the call (else the one
given at construction, else the global one), so that a training stream can derive each sample's
augmentation from (run seed, epoch, position) alone (:mod:`blvnb.engine.streams`): a resumed run then
replays exactly the crops and flips an uninterrupted run would have drawn, with no generator state to
checkpoint. Images are resized bilinearly, labels by nearest neighbour; crops pad the image with 0 and
the label with 255.

The supervised pipeline of the BLV configs (recipes.md (a), mmseg ``_base_/datasets/cityscapes.py``) is
random scale → random crop → flip → photometric distortion → normalise; DARS's (recipes.md (c)) adds a
±10° rotation and a 5×5 Gaussian blur before the flip. Photometric distortion and mmseg's
``cat_max_ratio`` crop retries are not implemented (a toy-scale simplification, said in the book).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from blvnb.classes import IGNORE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Pair = tuple[torch.Tensor, torch.Tensor | None]


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


class Transform:
    """Base: ``generator`` at the call wins over the one given at construction."""

    generator: torch.Generator | None = None

    def _g(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator

    def __call__(self, image, label, generator=None) -> Pair:
        raise NotImplementedError


class Compose(Transform):
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label, generator=None):
        for t in self.transforms:
            image, label = t(image, label, generator=generator)
        return image, label


class Resize(Transform):
    """Resize to a fixed (H, W) — e.g. the real data's 2048×1024 → the profile's training size."""

    def __init__(self, size: tuple[int, int]):
        self.size = tuple(size)

    def __call__(self, image, label, generator=None):
        if tuple(image.shape[-2:]) == self.size:
            return image, label
        return resize_pair(image, label, self.size)


class RandomScale(Transform):
    """Scale both by a factor drawn uniformly from ``scale_range`` (DARS's progressive strategy widens it)."""

    def __init__(self, scale_range: tuple[float, float], generator: torch.Generator | None = None):
        self.lo, self.hi = scale_range
        self.generator = generator

    def __call__(self, image, label, generator=None):
        s = _uniform(self._g(generator), self.lo, self.hi)
        h, w = image.shape[-2:]
        size = (max(1, int(round(h * s))), max(1, int(round(w * s))))
        return resize_pair(image, label, size)


class RandomCrop(Transform):
    """Crop ``size`` at a random place, padding first if the input is smaller (image 0, label 255)."""

    def __init__(self, size: tuple[int, int], generator: torch.Generator | None = None):
        self.size = tuple(size)
        self.generator = generator

    def __call__(self, image, label, generator=None):
        g = self._g(generator)
        ch, cw = self.size
        h, w = image.shape[-2:]
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        if ph or pw:
            image = F.pad(image, (0, pw, 0, ph), value=0)
            if label is not None:
                label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
            h, w = image.shape[-2:]
        y = int(torch.randint(0, h - ch + 1, (), generator=g))
        x = int(torch.randint(0, w - cw + 1, (), generator=g))
        image = image[:, y : y + ch, x : x + cw]
        return image, (label[y : y + ch, x : x + cw] if label is not None else None)


class RandomHFlip(Transform):
    def __init__(self, p: float = 0.5, generator: torch.Generator | None = None):
        self.p = p
        self.generator = generator

    def __call__(self, image, label, generator=None):
        if torch.rand((), generator=self._g(generator)).item() < self.p:
            return image.flip(-1), (label.flip(-1) if label is not None else None)
        return image, label


class RandomRotate(Transform):
    """DARS (recipes.md (c)): with probability ``p`` rotate by an angle uniform in ±``degrees``; the image
    is padded with the ImageNet mean (bilinear), the label with 255 (nearest)."""

    def __init__(self, degrees: float = 10.0, p: float = 0.5, generator: torch.Generator | None = None):
        self.degrees, self.p, self.generator = degrees, p, generator

    def __call__(self, image, label, generator=None):
        g = self._g(generator)
        if torch.rand((), generator=g).item() >= self.p:
            return image, label
        a = math.radians(_uniform(g, -self.degrees, self.degrees))
        theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])[None]
        h, w = image.shape[-2:]
        grid = F.affine_grid(theta, [1, 1, h, w], align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * (255.0 if image.dtype == torch.uint8 else 1.0)
        img = image.float() - mean  # pad with the mean: rotate the centred image, pad 0, add the mean back
        img = F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0] + mean
        if image.dtype == torch.uint8:
            img = img.round().clamp(0, 255).to(torch.uint8)
        if label is not None:
            lab = F.grid_sample((label[None, None].float() + 1), grid, mode="nearest", padding_mode="zeros",
                                align_corners=False)[0, 0].long() - 1
            label = torch.where(lab < 0, torch.full_like(lab, IGNORE), lab)
        return img, label


class RandomGaussianBlur(Transform):
    """DARS (recipes.md (c)): with probability ``p`` blur the image with a ``kernel``×``kernel`` Gaussian
    (σ from OpenCV's rule for the kernel size, 0.3·((k−1)/2 − 1) + 0.8). The label is unchanged."""

    def __init__(self, kernel: int = 5, p: float = 0.5, generator: torch.Generator | None = None):
        self.kernel, self.p, self.generator = kernel, p, generator

    def __call__(self, image, label, generator=None):
        if torch.rand((), generator=self._g(generator)).item() >= self.p:
            return image, label
        k = self.kernel
        sigma = 0.3 * ((k - 1) / 2 - 1) + 0.8
        x = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
        w = torch.exp(-(x**2) / (2 * sigma**2))
        w = w / w.sum()
        img = image.float()[None]
        img = F.pad(img, (k // 2,) * 4, mode="reflect")
        img = F.conv2d(img, w.view(1, 1, 1, k).expand(3, 1, 1, k).contiguous(), groups=3)
        img = F.conv2d(img, w.view(1, 1, k, 1).expand(3, 1, k, 1).contiguous(), groups=3)[0]
        if image.dtype == torch.uint8:
            img = img.round().clamp(0, 255).to(torch.uint8)
        return img, label


class Normalize(Transform):
    """uint8 0..255 → float, standardised with the ImageNet mean and std (what timm backbones expect)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, label, generator=None):
        return (image.float() / 255.0 - self.mean) / self.std, label


def train_transform(
    crop: tuple[int, int],
    scale_range: tuple[float, float] = (0.75, 1.5),
    base_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    *,
    rotate: float | None = None,
    blur: bool = False,
) -> Compose:
    """The training pipeline: [resize to base] → random scale → [rotate ±``rotate``° p 0.5] → [5×5 blur
    p 0.5] → crop → flip → normalise (the rotate and blur steps are DARS's, recipes.md (c))."""
    steps: list = [Resize(base_size)] if base_size else []
    steps.append(RandomScale(scale_range, generator))
    if rotate:
        steps.append(RandomRotate(rotate, 0.5, generator))
    if blur:
        steps.append(RandomGaussianBlur(5, 0.5, generator))
    steps += [RandomCrop(crop, generator), RandomHFlip(0.5, generator), Normalize()]
    return Compose(steps)


def eval_transform(base_size: tuple[int, int] | None = None) -> Compose:
    """Evaluation: [resize to base] → normalise. Labels keep their resolution unless resized."""
    return Compose(([Resize(base_size)] if base_size else []) + [Normalize()])


class AugmentedDataset(Dataset):
    """A data set (its own ``transform`` unset) seen through ``transform``, one sample per index.

    ``ds.sample(i, generator)`` applies the transform with ``generator`` (the training stream passes one
    derived from (seed, epoch, position)); ``ds[i]`` uses a generator seeded with ``i``, so that even a
    plain DataLoader gets a repeatable view. Samples are ``{"image", "label" (if labeled), "name",
    "index"}``. ``read_label`` / ``names`` / ``labeled`` are those of the wrapped data set.
    """

    def __init__(self, base, transform: Callable | None):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getattr__(self, name):  # read_label, names, labeled, root, ... of the wrapped data set
        if name in ("base", "transform"):
            raise AttributeError(name)
        return getattr(self.base, name)

    def raw(self, i: int) -> dict:
        return self.base[i]

    def sample(self, i: int, generator: torch.Generator | None) -> dict:
        item = dict(self.raw(i))
        label = item.get("label")
        if self.transform is not None:
            item["image"], label = self.transform(item["image"], label, generator=generator)
        if label is not None:
            item["label"] = label
        item["index"] = i
        return item

    def __getitem__(self, i: int) -> dict:
        return self.sample(i, torch.Generator().manual_seed(int(i)))


def denormalize(image: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Inverse of :class:`Normalize`, to uint8 3×H×W (for figures)."""
    m = torch.tensor(mean, device=image.device).view(3, 1, 1)
    s = torch.tensor(std, device=image.device).view(3, 1, 1)
    return ((image * s + m) * 255).round().clamp(0, 255).to(torch.uint8)
