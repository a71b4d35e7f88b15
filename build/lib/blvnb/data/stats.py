"""Label statistics: pixel counts and shares (BLV's class frequencies, DARS's priors), how often each
class appears, and how large its objects are (DARS Sec. 4.4's four groups).

Everything streams over the labels once, one image at a time (memory flat in the data set's size).
The input is a data set with ``read_label(i)`` (labels are read without decoding images) or any
iterable of H×W train-id label arrays (numpy or torch; 255 = ignore).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.errors import DatasetError

log = logging.getLogger(__name__)

#: DARS Sec. 4.4 calls a class "large" when it covers more than 10 % of a 713×713 training crop. Our
#: sizes are fractions of the whole (1024×2048) image, of which such a crop is 24 %: the same cut-off
#: in whole-image terms is 10 % × 713² / (1024 × 2048) ≈ 2.4 %.
WHOLE_IMAGE_SIZE_THRESHOLD = 0.1 * 713**2 / (1024 * 2048)

#: 8-connectivity for connected components.
_EIGHT = np.ones((3, 3), dtype=bool)


def _iter_labels(data, progress: bool, desc: str) -> Iterator[np.ndarray]:
    """Yield H×W integer numpy label arrays from a data set (``read_label``) or an iterable of arrays."""
    if hasattr(data, "read_label") and hasattr(data, "__len__"):
        for i in tqdm(range(len(data)), desc=desc, disable=not progress, leave=False):
            yield data.read_label(i)
        return
    total = len(data) if hasattr(data, "__len__") else None
    for item in tqdm(data, desc=desc, total=total, disable=not progress, leave=False):
        if isinstance(item, dict):
            item = item["label"]
        if hasattr(item, "detach"):  # torch tensor
            item = item.detach().cpu().numpy()
        yield np.asarray(item)


def _class_pixels(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class (int64[C]) of one train-id label; values other than 0..C-1 and 255 are an error."""
    if label.ndim != 2:
        raise DatasetError(f"a label must be H×W, got shape {label.shape}")
    flat = label.ravel()
    if flat.size and (flat.dtype.kind not in "ui" or flat.min() < 0 or flat.max() > IGNORE):
        raise DatasetError(f"label values must be train ids 0..{num_classes - 1} or {IGNORE}; got dtype {label.dtype}, "
                           f"range {flat.min()}..{flat.max()}")
    counts = np.bincount(flat, minlength=IGNORE + 1)
    stray = np.flatnonzero(counts[num_classes:IGNORE]) + num_classes
    if stray.size:
        raise DatasetError(
            f"label contains values {stray[:5].tolist()} that are neither train ids 0..{num_classes - 1} nor {IGNORE}"
        )
    return counts[:num_classes].astype(np.int64)


@dataclass
class LabelStatistics:
    """What one pass over a set of labels gives.

    ``pixel_counts[c]``: pixels of class c; ``image_counts[c]``: images containing c;
    ``area_sum[c]``: sum over those images of the fraction of the image (H·W, ignore included) c covers;
    ``object_sizes[c]``: pixel sizes of c's 8-connected components (empty when not computed).
    """

    num_classes: int
    num_images: int
    num_pixels: int
    pixel_counts: np.ndarray
    image_counts: np.ndarray
    area_sum: np.ndarray
    object_sizes: dict[int, np.ndarray] = field(default_factory=dict)

    @property
    def shares(self) -> np.ndarray:
        """Class shares among valid (non-ignore) pixels, float64[C] summing to 1."""
        return class_shares(self.pixel_counts)

    @property
    def occurrence(self) -> np.ndarray:
        """Fraction of images containing each class, float64[C]."""
        return self.image_counts / max(self.num_images, 1)

    @property
    def area_when_present(self) -> np.ndarray:
        """Mean fraction of the image a class covers, over the images containing it; NaN if never present."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.image_counts > 0, self.area_sum / np.maximum(self.image_counts, 1), np.nan)

    def groups(self, freq_thresh: float = 0.5, size_thresh: float = WHOLE_IMAGE_SIZE_THRESHOLD) -> dict[int, list[int]]:
        """DARS Sec. 4.4's four groups from these statistics (see :func:`occurrence_size_groups`); sizes
        here are fractions of the whole image, hence the default :data:`WHOLE_IMAGE_SIZE_THRESHOLD`."""
        return occurrence_size_groups(self.occurrence, self.area_when_present, freq_thresh, size_thresh)


def label_statistics(
    data, num_classes: int = NUM_CLASSES, components: bool = True, progress: bool = True
) -> LabelStatistics:
    """All statistics in one pass over the labels (``components=False`` skips the connected components)."""
    pixels = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    area = np.zeros(num_classes, dtype=np.float64)
    sizes: dict[int, list[np.ndarray]] = {c: [] for c in range(num_classes)}
    n_images = n_pixels = 0
    for label in _iter_labels(data, progress, "label statistics"):
        counts = _class_pixels(label, num_classes)
        n_images += 1
        n_pixels += label.size
        pixels += counts
        present = np.flatnonzero(counts)
        images[present] += 1
        area[present] += counts[present] / label.size
        if components:
            for c in present:
                comp, n = ndimage.label(label == c, structure=_EIGHT)
                sizes[int(c)].append(np.bincount(comp.ravel(), minlength=n + 1)[1:])
    if n_images == 0:
        raise DatasetError("label statistics: no labels to count (the data set is empty)")
    stats = LabelStatistics(
        num_classes=num_classes,
        num_images=n_images,
        num_pixels=n_pixels,
        pixel_counts=pixels,
        image_counts=images,
        area_sum=area,
        object_sizes=(
            {c: (np.concatenate(v) if v else np.zeros(0, np.int64)).astype(np.int64) for c, v in sizes.items()}
            if components
            else {}
        ),
    )
    log.info("label statistics: %d images, %d valid of %d pixels", n_images, int(pixels.sum()), n_pixels)
    return stats


def pixel_counts(data, num_classes: int = NUM_CLASSES, progress: bool = True) -> np.ndarray:
    """Valid pixels per class, int64[C] (ignore excluded)."""
    return label_statistics(data, num_classes, components=False, progress=progress).pixel_counts


def class_shares(counts: Iterable[int] | np.ndarray) -> np.ndarray:
    """``counts / counts.sum()`` as float64; DatasetError when there are no valid pixels."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum()
    if total <= 0:
        raise DatasetError("class shares: the labels have no valid (non-ignore) pixel")
    return counts / total


def image_occurrence(data, num_classes: int = NUM_CLASSES, progress: bool = True) -> np.ndarray:
    """Fraction of images containing each class, float64[C]."""
    return label_statistics(data, num_classes, components=False, progress=progress).occurrence


def object_sizes(
    data, num_classes: int = NUM_CLASSES, progress: bool = True
) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``(sizes, area_when_present)``: per class the pixel sizes of its 8-connected components (int64
    array, empty if absent), and the mean fraction of the image it covers when present (NaN if never)."""
    stats = label_statistics(data, num_classes, components=True, progress=progress)
    return stats.object_sizes, stats.area_when_present


def occurrence_size_groups(
    occurrence: np.ndarray, size_when_present: np.ndarray, freq_thresh: float = 0.5, size_thresh: float = 0.1
) -> dict[int, list[int]]:
    """DARS Sec. 4.4: 1 frequent & large, 2 frequent & small, 3 rare & large, 4 rare & small.

    Frequent: ``occurrence > freq_thresh`` (the paper: appears in more than 50 % of images). Large:
    ``size_when_present > size_thresh`` (the paper: more than 10 % of the crop area; pass sizes as
    fractions of the crop, e.g. :attr:`LabelStatistics.area_when_present` of labels at crop size).
    Classes that never occur (occurrence 0) are in no group.
    """
    occ = np.asarray(occurrence, dtype=np.float64)
    size = np.asarray(size_when_present, dtype=np.float64)
    if occ.shape != size.shape:
        raise ValueError(f"occurrence {occ.shape} and sizes {size.shape} differ in shape")
    groups: dict[int, list[int]] = {1: [], 2: [], 3: [], 4: []}
    for c in range(occ.size):
        if not occ[c] > 0:
            continue
        frequent = occ[c] > freq_thresh
        large = bool(size[c] > size_thresh)  # NaN -> small
        groups[{(True, True): 1, (True, False): 2, (False, True): 3, (False, False): 4}[(frequent, large)]].append(c)
    return groups


__all__ = [
    "LabelStatistics",
    "WHOLE_IMAGE_SIZE_THRESHOLD",
    "class_shares",
    "image_occurrence",
    "label_statistics",
    "object_sizes",
    "occurrence_size_groups",
    "pixel_counts",
]
