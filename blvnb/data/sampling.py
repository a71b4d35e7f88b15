r"""Image re-sampling (RS): DAFormer's rare-class sampling, the "RS" baseline of BLV Table 5.

Instead of drawing training images uniformly, first draw a class $c$ with probability

$$P(c) = \frac{\exp((1 - f_c) / T)}{\sum_{c'} \exp((1 - f_{c'}) / T)}, \qquad T = 0.01,$$

$f_c$ the share of class $c$ among all valid pixels of the data set, then draw an image uniformly among
those that contain at least ``min_pixels`` pixels of $c$ (Hoyer et al., DAFormer, CVPR 2022; the
temperature 0.01 and ``min_pixels`` = 3000 are the values of DAFormer's released configs, where 3000 is
measured on full-size GTA5 labels — scale it with the label area, e.g. 3000 · 128·256 / (1914·1052)
≈ 49 for 128×256 toycity labels). Classes that no image holds with ``min_pixels`` are left out and the
others' probabilities renormalised (DAFormer refuses to start instead).

DAFormer also re-crops a sampled image up to ten times until the crop holds enough pixels of the
sampled class; that belongs to the crop transform and is not done here. The sampler yields image
indices for a ``DataLoader(sampler=...)``; :meth:`RareClassSampler.image_probabilities` gives the
resulting probability of each image (the same distribution as a ``WeightedRandomSampler``).

Per-image pixel counts come from one pass over the labels with the data set's ``read_label(i)`` (no
image is decoded); the per-class totals are their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import Sampler
from tqdm.auto import tqdm

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


def image_class_pixels(dataset, num_classes: int = NUM_CLASSES, progress: bool = False) -> np.ndarray:
    """Pixels of each class in each image, int64 [N, C], from ``dataset.read_label(i)`` (255 not counted)."""
    if not (hasattr(dataset, "read_label") and hasattr(dataset, "__len__")):
        raise ConfigError("image_class_pixels needs a data set with read_label(i) and len()")
    out = np.zeros((len(dataset), num_classes), dtype=np.int64)
    for i in tqdm(range(len(dataset)), desc="pixels per image", disable=not progress, leave=False):
        label = np.asarray(dataset.read_label(i)).ravel().astype(np.int64, copy=False)
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

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        """One epoch's draws: ``(image indices, sampled classes)``, each int64 [num_samples]."""
        classes = torch.multinomial(torch.as_tensor(self.class_probs), self.num_samples, replacement=True,
                                    generator=self.generator).numpy()
        u = torch.rand(self.num_samples, generator=self.generator, dtype=torch.float64).numpy()
        images = np.empty(self.num_samples, dtype=np.int64)
        for c, members in self.images_of_class.items():
            hit = classes == c
            images[hit] = members[np.minimum((u[hit] * len(members)).astype(np.int64), len(members) - 1)]
        return images, classes

    def __iter__(self) -> Iterator[int]:
        images, _ = self.sample()
        return iter(images.tolist())

    def image_probabilities(self) -> np.ndarray:
        """P(image i) = Σ_c P(c) · [i holds c] / #images holding c, float64 [N] (sums to 1)."""
        p = np.zeros(self.num_images)
        for c, members in self.images_of_class.items():
            p[members] += self.class_probs[c] / len(members)
        return p


__all__ = ["RareClassSampler", "image_class_pixels", "rare_class_probabilities"]
