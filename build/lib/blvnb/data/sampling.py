r"""Image re-sampling (RS): DAFormer's rare-class sampling, the "RS" baseline of BLV Table 5.

Instead of drawing training images uniformly, first draw a class $c$ with probability

$$P(c) = \frac{\exp((1 - f_c) / T)}{\sum_{c'} \exp((1 - f_{c'}) / T)}, \qquad T = 0.01,$$

$f_c$ the share of class $c$ among all valid pixels of the data set, then draw an image uniformly among
those that contain at least ``min_pixels`` pixels of $c$ (Hoyer et al., DAFormer, CVPR 2022; the
temperature 0.01 and ``min_pixels`` = 3000 are the values of DAFormer's released configs, where 3000 is
measured on full-size GTA5 labels — scale it with the label area, e.g. 3000 · 128·256 / (1914·1052)
≈ 49 for 128×256 toycity labels). Classes that no image holds with ``min_pixels`` are left out and the
others' probabilities renormalised (DAFormer refuses to start instead).

DAFormer also re-crops a sampled image up to ten times until the crop holds more than
``min_pixels · min_crop_ratio`` pixels of the sampled class (``min_crop_ratio`` 0.5 for DAFormer, 2.0
for HRDA, whose inputs have four times the pixels). That belongs to the crop, so the sampled class has
to reach the crop: :meth:`RareClassSampler.order` returns, for a stream's ``order(epoch, generator)``,
*encoded* indices that carry (image, sampled class, a random key) — :func:`encode_index` — and
:class:`SampledCrops`, a data set view around the un-augmented images, decodes them, crops (re-cropping
for the sampled class, DAFormer's ``cat_max_ratio`` rule first), flips, and draws all of it from a
generator seeded by (run seed, key). A sample is therefore a pure function of the run seed, the epoch
and its position in the epoch: a resumed stream yields the same crops. :func:`uniform_order` does the
same for a stream without rare-class sampling (UDA's target: an image uniformly at random, with
replacement, as DAFormer's ``np.random.choice``).

The sampler also still yields plain image indices for a ``DataLoader(sampler=...)``;
:meth:`RareClassSampler.image_probabilities` gives the resulting probability of each image (the same
distribution as a ``WeightedRandomSampler``).

Per-image pixel counts come from one pass over the labels with the data set's ``read_label(i)`` (no
image is decoded); the per-class totals are their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm.auto import tqdm

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


def image_class_pixels(dataset, num_classes: int = NUM_CLASSES, progress: bool = False) -> np.ndarray:
    """Pixels of each class in each image, int64 [N, C], from ``dataset.read_label(i)`` (255 not counted)."""
    if not hasattr(dataset, "__len__") or not (hasattr(dataset, "read_label") or hasattr(dataset, "__getitem__")):
        raise ConfigError("image_class_pixels needs a data set with len() and read_label(i) (or items with 'label')")
    out = np.zeros((len(dataset), num_classes), dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc="pixels per image", disable=not progress, leave=False):
        raw = dataset.read_label(i) if hasattr(dataset, "read_label") else dataset[i]["label"]
        raw = raw.numpy() if isinstance(raw, torch.Tensor) else raw
        label = np.asarray(raw).ravel().astype(np.int64, copy=False)
        if label.size and (label.min() < 0 or label.max() > IGNORE):
            raise DatasetError(f"label {i} holds values outside 0..{IGNORE}")
        counts = np.bincount(label, minlength=IGNORE + 1)
        if np.flatnonzero(counts[num_classes:IGNORE]).size:
            raise DatasetError(f"label {i} holds values other than train ids 0..{num_classes - 1} and {IGNORE}")
        out[i] = counts[:num_classes]
    return out


def rare_class_probabilities(class_pixels: np.ndarray, temperature: float = 0.01) -> np.ndarray:
    r"""$P(c) = \mathrm{softmax}_c((1 - f_c) / T)$ over the classes present (absent classes get 0), float64 [C].

    ``class_pixels``: [C] totals, or [N, C] per image (summed over images).
    """
    if not temperature > 0:
        raise ConfigError(f"rare-class temperature must be > 0, got {temperature}")
    totals = np.asarray(class_pixels, dtype=np.float64)
    totals = totals.sum(0) if totals.ndim == 2 else totals
    present = totals > 0
    if not present.any():
        raise DatasetError("rare-class sampling: the labels hold no valid pixel")
    # $f_c$: share of class c among valid pixels
    f = totals / totals.sum()
    # softmax of $(1 - f_c) / T$ over the present classes (shifted by the max for stability)
    logits = np.where(present, (1.0 - f) / temperature, -np.inf)
    p = np.exp(logits - logits[present].max())
    return p / p.sum()


class RareClassSampler(Sampler[int]):
    """Yields ``num_samples`` image indices per epoch: a class by :func:`rare_class_probabilities`, then an
    image uniformly among those holding more than ``min_pixels`` pixels of it.

    ``image_pixels``: [N, C] from :func:`image_class_pixels`. ``generator`` makes the draws repeatable;
    each epoch (each ``iter``) continues its stream.
    """

    def __init__(self, image_pixels: np.ndarray, *, temperature: float = 0.01, min_pixels: int = 3000,
                 num_samples: int | None = None, generator: torch.Generator | None = None):
        pixels = np.asarray(image_pixels, dtype=np.int64)
        if pixels.ndim != 2 or pixels.shape[0] == 0:
            raise ConfigError(f"image_pixels must be [N images, C classes], got shape {pixels.shape}")
        probs = rare_class_probabilities(pixels, temperature)
        holders = pixels > min_pixels  # [N, C]: image i holds enough of class c
        usable = (probs > 0) & holders.any(0)
        dropped = np.flatnonzero((probs > 0) & ~usable)
        if dropped.size:
            log.warning("rare-class sampling: no image holds more than %d pixels of classes %s; they are not "
                        "sampled", min_pixels, dropped.tolist())
        if not usable.any():
            raise DatasetError(f"rare-class sampling: no image holds more than min_pixels={min_pixels} pixels of "
                               "any class; lower min_pixels (DAFormer's 3000 is for full-size GTA5 labels)")
        probs = np.where(usable, probs, 0.0)
        self.class_probs = probs / probs.sum()
        self.images_of_class = {c: np.flatnonzero(holders[:, c]) for c in np.flatnonzero(usable)}
        self.num_images = pixels.shape[0]
        self.num_samples = int(num_samples) if num_samples is not None else self.num_images
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def sample(self, generator: torch.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's draws: ``(image indices, sampled classes)``, each int64 [num_samples], from
        ``generator`` (default: the sampler's own)."""
        g = generator if generator is not None else self.generator
        classes = torch.multinomial(torch.as_tensor(self.class_probs), self.num_samples, replacement=True,
                                    generator=g).numpy()
        u = torch.rand(self.num_samples, generator=g, dtype=torch.float64).numpy()
        images = np.empty(self.num_samples, dtype=np.int64)
        for c, members in self.images_of_class.items():
            hit = classes == c
            images[hit] = members[np.minimum((u[hit] * len(members)).astype(np.int64), len(members) - 1)]
        return images, classes

    def __iter__(self) -> Iterator[int]:
        images, _ = self.sample()
        return iter(images.tolist())

    def order(self, epoch: int, generator: torch.Generator) -> list[int]:
        """A stream's epoch order: ``num_samples`` encoded indices (image, sampled class, key) for
        :class:`SampledCrops`, drawn from ``generator`` only (``epoch`` is not used: the stream seeds the
        generator per epoch)."""
        images, classes = self.sample(generator)
        keys = torch.randint(0, KEY_RANGE, (self.num_samples,), generator=generator).numpy()
        n, c = self.num_images, len(self.class_probs)
        return [encode_index(int(i), int(k), int(key), n, c) for i, k, key in zip(images, classes, keys)]

    def image_probabilities(self) -> np.ndarray:
        """P(image i) = Σ_c P(c) · [i holds c] / #images holding c, float64 [N] (sums to 1)."""
        p = np.zeros(self.num_images)
        for c, members in self.images_of_class.items():
            p[members] += self.class_probs[c] / len(members)
        return p


# --- encoded indices: the sampled class travels with the index to the crop -------------------------------

#: Keys are drawn in [0, KEY_RANGE); each seeds one sample's crop and flip.
KEY_RANGE = 1 << 31


def encode_index(image: int, cls: int, key: int, num_images: int, num_classes: int) -> int:
    """``((key · (C + 1)) + cls + 1) · N + image``; ``cls`` = −1 for "no class sampled"."""
    if not (0 <= image < num_images and -1 <= cls < num_classes and 0 <= key < KEY_RANGE):
        raise ConfigError(f"cannot encode image {image}, class {cls}, key {key} for {num_images} images and "
                          f"{num_classes} classes")
    return (key * (num_classes + 1) + cls + 1) * num_images + image


def decode_index(index: int, num_images: int, num_classes: int) -> tuple[int, int, int]:
    """The inverse of :func:`encode_index`: ``(image, cls or −1, key)``."""
    index = int(index)
    if index < 0:
        raise ConfigError(f"negative sample index {index}")
    rest, image = divmod(index, num_images)
    key, cls = divmod(rest, num_classes + 1)
    return image, cls - 1, key


def uniform_order(num_images: int, num_samples: int | None = None, num_classes: int = NUM_CLASSES):
    """``order(epoch, generator)`` → ``num_samples`` (default ``num_images``) encoded indices of images drawn
    uniformly *with replacement*, no class sampled (UDA's target stream)."""
    if num_images <= 0:
        raise DatasetError("uniform_order: the data set is empty")
    n = num_images if num_samples is None else int(num_samples)

    def order(epoch: int, generator: torch.Generator) -> list[int]:
        images = torch.randint(0, num_images, (n,), generator=generator).tolist()
        keys = torch.randint(0, KEY_RANGE, (n,), generator=generator).tolist()
        return [encode_index(i, -1, k, num_images, num_classes) for i, k in zip(images, keys)]

    return order


def scaled_min_pixels(min_pixels: float, area: float, reference_area: float) -> int:
    """``min_pixels`` measured on images of ``reference_area`` pixels, scaled to images of ``area`` (≥ 1)."""
    if not (area > 0 and reference_area > 0):
        raise ConfigError(f"areas must be > 0, got {area} and {reference_area}")
    return max(1, int(round(min_pixels * area / reference_area)))


def _mix_seed(seed: int, key: int) -> int:
    """One 32-bit seed from (run seed, key) by SplitMix64's finaliser (torch's CPU generator keeps 32 bits)."""
    m = (1 << 64) - 1
    z = (int(seed) * 0x9E3779B97F4A7C15 + int(key) + 0x632BE59BD9B4E019) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return (z ^ (z >> 31)) & 0xFFFFFFFF


class SampledCrops(Dataset):
    """Random crops of a data set's un-augmented view, the sample chosen by an encoded index.

    ``base[i]`` gives ``{"image": float 3×H×W (normalised), "label": int64 H×W, …}``. ``view[idx]``, with
    ``idx`` from :meth:`RareClassSampler.order` or :func:`uniform_order`, decodes (image, class c, key),
    optionally resizes to ``size`` (H, W) (bilinear image, nearest label), then with a generator seeded by
    (``seed``, key):

    1. draws a ``crop`` box (mmsegmentation's RandomCrop: offsets uniform in [0, H − h] × [0, W − w]); with
       ``cat_max_ratio`` < 1 it redraws up to 10 times until the crop holds ≥ 2 valid classes and none
       has ``cat_max_ratio`` of its valid pixels;
    2. when a class c was sampled, repeats 1 up to ``recrop_tries`` (10) more times until the crop holds
       more than ``min_class_pixels`` pixels of c (DAFormer's ``min_pixels · min_crop_ratio``, scaled to
       this resolution by the caller);
    3. pads to ``crop`` (image 0, label 255) when the image is smaller, then flips horizontally with
       probability ``flip``.

    ``view.sample(idx, generator)`` does the same with the stream's generator (what
    :class:`~blvnb.engine.streams.Stream` calls). Returns ``{"image", "label", "rcs_class", "index"}`` and, with ``pseudo_margins`` = (top, bottom, left, right)
    as fractions of the *full* frame, ``"valid"`` (uint8 H×W: 0 on the margins, HRDA's
    ``crop_pseudo_margins``, cropped and flipped with the image; all ones with margins (0, 0, 0, 0)).
    """

    def __init__(self, base, crop: tuple[int, int], *, seed: int, num_classes: int = NUM_CLASSES,
                 flip: float = 0.5, cat_max_ratio: float | None = None, min_class_pixels: int = 0,
                 recrop_tries: int = 10, size: tuple[int, int] | None = None,
                 pseudo_margins: tuple[float, float, float, float] | None = None):
        if len(crop) != 2 or min(crop) <= 0:
            raise ConfigError(f"crop must be (H, W) > 0, got {crop}")
        if pseudo_margins is not None and (len(pseudo_margins) != 4 or not all(0 <= m < 1 for m in pseudo_margins)):
            raise ConfigError(f"pseudo_margins must be 4 fractions in [0, 1), got {pseudo_margins}")
        self.base, self.crop, self.seed, self.num_classes = base, tuple(int(c) for c in crop), int(seed), num_classes
        self.flip, self.cat_max_ratio, self.min_class_pixels = flip, cat_max_ratio, int(min_class_pixels)
        self.recrop_tries, self.size, self.pseudo_margins = int(recrop_tries), size, pseudo_margins

    def __len__(self) -> int:
        return len(self.base)

    def _box(self, h: int, w: int, g: torch.Generator) -> tuple[int, int]:
        ch, cw = self.crop
        y = int(torch.randint(0, max(h - ch, 0) + 1, (), generator=g))
        x = int(torch.randint(0, max(w - cw, 0) + 1, (), generator=g))
        return y, x

    def _crop_box(self, label, h: int, w: int, g: torch.Generator) -> tuple[int, int]:
        y, x = self._box(h, w, g)
        if label is None or self.cat_max_ratio is None or self.cat_max_ratio >= 1:
            return y, x
        ch, cw = self.crop
        for _ in range(10):  # mmsegmentation's RandomCrop(cat_max_ratio): at most 10 redraws
            part = label[y:y + ch, x:x + cw]
            cnt = torch.bincount(part[part != IGNORE].reshape(-1), minlength=1)
            cnt = cnt[cnt > 0]
            if cnt.numel() > 1 and float(cnt.max()) / float(cnt.sum()) < self.cat_max_ratio:
                break
            y, x = self._box(h, w, g)
        return y, x

    def __getitem__(self, index: int) -> dict:
        """The sample of encoded ``index``, its crop drawn from a generator seeded by (``seed``, key)."""
        key = decode_index(index, len(self.base), self.num_classes)[2]
        return self.sample(index, torch.Generator().manual_seed(_mix_seed(self.seed, key)))

    def sample(self, index: int, generator: torch.Generator) -> dict:
        """The sample of encoded ``index`` with its crop and flip drawn from ``generator`` (a
        :class:`~blvnb.engine.streams.Stream` passes one seeded from (seed, epoch, position))."""
        i, c, _ = decode_index(index, len(self.base), self.num_classes)
        item = self.base[i]
        image, label = item["image"], item.get("label")
        if self.size is not None and tuple(image.shape[-2:]) != tuple(self.size):
            from blvnb.data.transforms import resize_pair

            image, label = resize_pair(image, label, tuple(self.size))
        h, w = image.shape[-2:]
        g = generator
        ch, cw = self.crop
        y, x = self._crop_box(label, h, w, g)
        if c >= 0 and label is not None and self.min_class_pixels > 0:
            # DAFormer: re-crop until the crop holds more than min_pixels · min_crop_ratio pixels of c
            for _ in range(self.recrop_tries):
                if int((label[y:y + ch, x:x + cw] == c).sum()) > self.min_class_pixels:
                    break
                y, x = self._crop_box(label, h, w, g)
        flip = bool(torch.rand((), generator=g) < self.flip)
        out = {"image": self._cut(image, y, x, 0.0, flip)}
        if label is not None:
            out["label"] = self._cut(label, y, x, IGNORE, flip)
        if self.pseudo_margins is not None:
            valid = torch.ones(h, w, dtype=torch.uint8)
            t, b, le, r = (int(round(m * s)) for m, s in zip(self.pseudo_margins, (h, h, w, w)))
            if t:
                valid[:t] = 0
            if b:
                valid[h - b:] = 0
            if le:
                valid[:, :le] = 0
            if r:
                valid[:, w - r:] = 0
            out["valid"] = self._cut(valid, y, x, 0, flip)
        out["rcs_class"] = c
        out["index"] = i
        return out

    def _cut(self, t: torch.Tensor, y: int, x: int, fill, flip: bool) -> torch.Tensor:
        ch, cw = self.crop
        part = t[..., y:y + ch, x:x + cw]
        ph, pw = ch - part.shape[-2], cw - part.shape[-1]
        if ph or pw:
            part = torch.nn.functional.pad(part, (0, pw, 0, ph), value=fill)
        return part.flip(-1) if flip else part.contiguous()


__all__ = ["KEY_RANGE", "RareClassSampler", "SampledCrops", "decode_index", "encode_index", "image_class_pixels",
           "rare_class_probabilities", "scaled_min_pixels", "uniform_order"]
