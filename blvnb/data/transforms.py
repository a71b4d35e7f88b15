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
±10° rotation and a 5×5 Gaussian blur before the flip. The default pipeline leaves photometric
distortion out, and mmseg's ``cat_max_ratio`` crop retries are not implemented (a toy-scale
simplification, said in the book); :class:`PhotoMetricDistortion` is one of the single augmentations
that DARS Table 11 compares (``train_transform(augment=...)``, :data:`AUGMENTATIONS`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from blvnb.classes import IGNORE
from blvnb.errors import ConfigError

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
    """Crop ``size`` at a random place, padding first if the input is smaller (image 0, label 255).

    ``cat_max_ratio`` (mmseg's ``RandomCrop``, BLV Table 1's Cityscapes pipeline: 0.75): draw up to ten
    crops and keep the first in which no class covers ``cat_max_ratio`` or more of the labelled pixels
    (a crop with a single class does not pass, as in mmseg); after ten the last one drawn is kept."""

    TRIES = 10

    def __init__(self, size: tuple[int, int], generator: torch.Generator | None = None,
                 cat_max_ratio: float | None = None):
        if cat_max_ratio is not None and (isinstance(cat_max_ratio, bool) or not isinstance(cat_max_ratio, int | float)
                                          or not 0 < cat_max_ratio <= 1):
            raise ConfigError(f"cat_max_ratio must be a share in (0, 1] or None, got {cat_max_ratio!r}")
        self.size = tuple(size)
        self.generator = generator
        self.cat_max_ratio = cat_max_ratio

    def _corner(self, h: int, w: int, g) -> tuple[int, int]:
        ch, cw = self.size
        return int(torch.randint(0, h - ch + 1, (), generator=g)), int(torch.randint(0, w - cw + 1, (), generator=g))

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
        y, x = self._corner(h, w, g)
        if self.cat_max_ratio is not None and self.cat_max_ratio < 1 and label is not None:
            for _ in range(self.TRIES - 1):
                counts = torch.bincount(label[y : y + ch, x : x + cw].flatten().long(), minlength=IGNORE + 1)
                counts = torch.cat([counts[:IGNORE], counts[IGNORE + 1:]])
                counts = counts[counts > 0]
                if len(counts) > 1 and counts.max() < self.cat_max_ratio * counts.sum():
                    break
                y, x = self._corner(h, w, g)
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


def _rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """float 3×H×W RGB in [0, 1] → HSV, each channel in [0, 1] (hue as a fraction of the circle)."""
    r, g, b = rgb
    v, _ = rgb.max(0)
    delta = v - rgb.min(0)[0]
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    d = delta.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / d, torch.where(v == g, 2.0 + (b - r) / d, 4.0 + (r - g) / d))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v])


def _hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_rgb_to_hsv`."""
    h, s, v = hsv
    h6 = (h % 1.0) * 6.0
    i = h6.floor()
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    sector = i.long() % 6
    table = {0: (v, t, p), 1: (q, v, p), 2: (p, v, t), 3: (p, q, v), 4: (t, p, v), 5: (v, p, q)}
    out = torch.zeros_like(hsv)
    for k, rgb in table.items():
        m = sector == k
        for c in range(3):
            out[c][m] = rgb[c][m]
    return out


class PhotoMetricDistortion(Transform):
    """mmseg's ``PhotoMetricDistortion`` with its defaults (recipes.md (a); DARS Table 11's "brightness,
    contrast, saturation, and hue"): each step with probability 0.5 — brightness + U(−32, 32), contrast
    × U(0.5, 1.5) (before the colour steps or after them, by a coin), saturation × U(0.5, 1.5), hue + an
    integer in [−18, 18) on OpenCV's 0–180 hue scale (up to ±36°) — on a uint8 image, clipped to 0–255
    and truncated to uint8 after every step as mmseg does. The colour steps go through HSV in float
    (OpenCV quantises HSV to uint8: not bit-exact with mmseg, the same distribution). The label is
    unchanged."""

    def __init__(self, brightness_delta: float = 32, contrast_range=(0.5, 1.5), saturation_range=(0.5, 1.5),
                 hue_delta: int = 18, generator: torch.Generator | None = None):
        self.brightness_delta, self.hue_delta = brightness_delta, int(hue_delta)
        self.contrast_range, self.saturation_range = tuple(contrast_range), tuple(saturation_range)
        self.generator = generator

    @staticmethod
    def _to_uint8_range(img: torch.Tensor) -> torch.Tensor:
        return img.clamp(0, 255).floor()  # mmseg: np.clip, then .astype(np.uint8)

    def __call__(self, image, label, generator=None):
        g = self._g(generator)
        coin = lambda: torch.rand((), generator=g).item() < 0.5  # noqa: E731 (mmseg's random.randint(2))
        scale = 255.0 if image.dtype == torch.uint8 else 1.0
        img = image.float() * (255.0 / scale)

        def contrast(x):
            return self._to_uint8_range(x * _uniform(g, *self.contrast_range)) if coin() else x

        if coin():
            img = self._to_uint8_range(img + _uniform(g, -self.brightness_delta, self.brightness_delta))
        contrast_first = coin()
        if contrast_first:
            img = contrast(img)
        if coin():
            hsv = _rgb_to_hsv(img / 255.0)
            hsv[1] = self._to_uint8_range(hsv[1] * 255.0 * _uniform(g, *self.saturation_range)) / 255.0
            img = self._to_uint8_range(_hsv_to_rgb(hsv) * 255.0)
        if coin():
            hsv = _rgb_to_hsv(img / 255.0)
            shift = int(torch.randint(-self.hue_delta, self.hue_delta, (), generator=g))
            hsv[0] = (hsv[0] + shift / 180.0) % 1.0
            img = self._to_uint8_range(_hsv_to_rgb(hsv) * 255.0)
        if not contrast_first:
            img = contrast(img)
        img = img * (scale / 255.0)
        return (img.to(torch.uint8) if image.dtype == torch.uint8 else img), label


class Normalize(Transform):
    """uint8 0..255 → float, standardised with the ImageNet mean and std (what timm backbones expect)."""

    def __init__(self, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        self.mean = torch.tensor(mean).view(3, 1, 1)
        self.std = torch.tensor(std).view(3, 1, 1)

    def __call__(self, image, label, generator=None):
        return (image.float() / 255.0 - self.mean) / self.std, label


#: the single augmentations of DARS Table 11 (``train_transform(augment=...)``)
AUGMENTATIONS = ("none", "photometric", "rotation", "scale")


def train_transform(
    crop: tuple[int, int],
    scale_range: tuple[float, float] = (0.75, 1.5),
    base_size: tuple[int, int] | None = None,
    generator: torch.Generator | None = None,
    *,
    rotate: float | None = None,
    blur: bool = False,
    augment: str | None = None,
    photometric: bool = False,
    cat_max_ratio: float | None = None,
) -> Compose:
    """The training pipeline: [resize to base] → random scale → [rotate ±``rotate``° p 0.5] → [5×5 blur
    p 0.5] → crop → flip → normalise (the rotate and blur steps are DARS's, recipes.md (c)).

    ``augment`` (DARS Table 11, one augmentation alone; None: the pipeline above) keeps the resize to
    base, the random crop and the flip, and adds only: ``"none"`` nothing (no random scale);
    ``"photometric"`` :class:`PhotoMetricDistortion` after the flip (mmseg's place); ``"rotation"``
    :class:`RandomRotate` ±10° with probability 0.5 before the crop (DARS's released ``RandRotate``,
    recipes.md (c)); ``"scale"`` the random scale ``scale_range`` (the default pipeline itself).

    ``photometric`` and ``cat_max_ratio`` complete the default pipeline into mmseg's Cityscapes one (BLV
    Table 1, recipes.md (a)): the crop redrawn while one class covers ``cat_max_ratio`` of it, and
    :class:`PhotoMetricDistortion` after the flip."""
    if augment is not None:
        if augment not in AUGMENTATIONS:
            raise ConfigError(f"unknown augment {augment!r}; use one of {', '.join(AUGMENTATIONS)} (or None: the "
                              "default pipeline)")
        if rotate or blur or photometric or cat_max_ratio is not None:
            raise ConfigError(f"augment={augment!r} is one augmentation alone; it takes no rotate, blur, "
                              "photometric or cat_max_ratio")
        steps = [Resize(base_size)] if base_size else []
        if augment == "scale":
            steps.append(RandomScale(scale_range, generator))
        if augment == "rotation":
            steps.append(RandomRotate(10.0, 0.5, generator))
        steps += [RandomCrop(crop, generator), RandomHFlip(0.5, generator)]
        if augment == "photometric":
            steps.append(PhotoMetricDistortion(generator=generator))
        return Compose(steps + [Normalize()])
    steps: list = [Resize(base_size)] if base_size else []
    steps.append(RandomScale(scale_range, generator))
    if rotate:
        steps.append(RandomRotate(rotate, 0.5, generator))
    if blur:
        steps.append(RandomGaussianBlur(5, 0.5, generator))
    steps += [RandomCrop(crop, generator, cat_max_ratio), RandomHFlip(0.5, generator)]
    if photometric:
        steps.append(PhotoMetricDistortion(generator=generator))
    return Compose(steps + [Normalize()])


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
