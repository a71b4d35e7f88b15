"""Class frequencies: where the long-tail losses get their per-class pixel counts, and the one rule for
classes that were never seen.

The losses take *counts* ``q_k`` (any non-negative numbers, one per class). BLV's weight
``c_k = log(Σ_j q_j / q_k)``, the prior ``π_k = q_k / Σ_j q_j`` of logit adjustment and the weights of
re-weighting depend only on the ratios of the counts, so pixel counts and shares (Eq. (4)'s normalised
``q_k``) are interchangeable everywhere.

Where the counts come from depends on the setting (BLV Sec. 3.2–3.4 and Table 13):

=====================================  ================================================================
setting                                source
=====================================  ================================================================
fully supervised (Sec. 3.2)            :func:`counts_from_labels` on the training labels
semi-supervised, "†" (Table 13)        :func:`counts_from_labeled_subset`: the labeled images only
semi-supervised, "‡" (Sec. 3.3)        :func:`counts_from_pseudo_labels` / the engine's
                                       :func:`blvnb.engine.teacher.counts_from_teacher`:
                                       Eq. (4) on the teacher's pseudo labels of the unlabeled set,
                                       re-estimated after every epoch (``BLVLoss.set_class_counts``)
domain adaptation (Sec. 3.4)           :func:`counts_from_source`: the labeled source domain
=====================================  ================================================================

The losses never call these functions: the engine does, and hands the counts to the loss.

**Classes with zero pixels.** ``log(Σq / 0)`` and ``log 0`` are infinite. Every loss in blvnb first
passes its counts through :func:`fill_zero_counts`, which gives a class with no pixel the smallest
positive count of the others: an unseen class is treated as exactly as rare as the rarest class that
was seen (BLV: the largest offset, scale 1; LA: the most negative log-prior; RW: the largest weight).
The rule depends only on ratios, so counts and shares give the same result. All-zero, negative or
non-finite counts are a :class:`~blvnb.errors.ConfigError`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence

import numpy as np
import torch

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.errors import ConfigError

Counts = Sequence[float] | np.ndarray | torch.Tensor


def as_counts(class_counts: Counts) -> torch.Tensor:
    """Validate per-class counts and return them as a float64 CPU tensor of shape [C] (zeros kept), by the
    one validation of counts (:func:`blvnb.pseudo.distribution.check_counts`); all zero is an error here."""
    from blvnb.pseudo.distribution import check_counts

    q = check_counts(class_counts, name="class_counts")
    if not (q > 0).any():
        raise ConfigError("class_counts are all zero: no pixel was counted. Count the classes of the training "
                          "labels, e.g. blvnb.losses.frequencies.counts_from_labels(train_set)")
    return q


def fill_zero_counts(class_counts: Counts) -> torch.Tensor:
    """Counts (float64 [C]) where every zero is replaced by the smallest positive count (see module doc)."""
    q = as_counts(class_counts)
    smallest = q[q > 0].min()
    return torch.where(q > 0, q, smallest)


def class_prior(class_counts: Counts) -> torch.Tensor:
    """π_k = q_k / Σ_j q_j (float64 [C]) after :func:`fill_zero_counts` — Eq. (4)'s normalisation, by the one
    counts → shares function (:func:`blvnb.pseudo.distribution.prior_from_counts`)."""
    from blvnb.pseudo.distribution import prior_from_counts

    return prior_from_counts(fill_zero_counts(class_counts), name="class_counts")


def class_vector(fn: Callable[..., torch.Tensor], class_counts: Counts, *args, device, dtype,
                 num_classes: int | None = None) -> torch.Tensor:
    """``fn(counts, *args)`` (a [C] CPU tensor) on ``device`` in ``dtype``, computed once per distinct counts;
    with ``num_classes`` (the logits' C), counts of another length are a ConfigError that says so.

    The losses call this every step; caching the device copy avoids a host-to-device copy (and, on a GPU,
    the host synchronisation that a copy from pageable memory implies) in every step. Treat the result as
    read-only. Pass the counts on the CPU.
    """
    try:  # a cheap key first; the counts are validated (by ``fn``) only when they are new
        if isinstance(class_counts, torch.Tensor):
            key = tuple(class_counts.detach().cpu().tolist()) if class_counts.ndim == 1 else None
        else:
            key = tuple(float(v) for v in class_counts)
    except (TypeError, ValueError):
        key = None
    if key is None:
        key = tuple(as_counts(class_counts).tolist())  # raises the ConfigError that explains
    if num_classes is not None and len(key) != int(num_classes):
        raise ConfigError(f"class_counts has {len(key)} classes but the logits have {int(num_classes)}")
    return _class_vector(fn, key, args, torch.device(device), dtype)


@functools.lru_cache(maxsize=256)
def _class_vector(fn, counts: tuple, args: tuple, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return fn(counts, *args).to(device=device, dtype=dtype)


# --- sources -----------------------------------------------------------------------------------------

def counts_from_labels(data, num_classes: int = NUM_CLASSES, progress: bool = False) -> np.ndarray:
    """Valid pixels per class (int64 [C]) of a data set's labels (``read_label``) or of label arrays.

    Fully supervised BLV (Sec. 3.2) counts the training labels it actually trains on; this is
    :func:`blvnb.data.stats.pixel_counts`, one streaming pass that never decodes an image.
    """
    from blvnb.data.stats import pixel_counts

    return pixel_counts(data, num_classes=num_classes, progress=progress)


def counts_from_labeled_subset(dataset, indices: Iterable[int] | None = None, num_classes: int = NUM_CLASSES,
                               progress: bool = False) -> np.ndarray:
    """Semi-supervised "†" (Table 13): counts from the labeled images only.

    ``dataset`` is the labeled split (or the full set with ``indices`` selecting the labeled images).
    Appendix H finds it too biased when few images are labeled; the paper's choice is Eq. (4).
    """
    if indices is None:
        return counts_from_labels(dataset, num_classes, progress)
    idx = list(indices)
    return counts_from_labels((dataset.read_label(i) for i in idx), num_classes, progress)


def counts_from_source(source_dataset, num_classes: int = NUM_CLASSES, progress: bool = False) -> np.ndarray:
    """Domain adaptation (Sec. 3.4): the source domain's label counts stand in for the target's."""
    return counts_from_labels(source_dataset, num_classes, progress)


def counts_from_pseudo_labels(pseudo_labels: Iterable, num_classes: int = NUM_CLASSES,
                              ignore_index: int = IGNORE) -> np.ndarray:
    """Eq. (4): pixels per class over the pseudo labels of the unlabeled set (int64 [C]).

    ``pseudo_labels`` is an iterable of label maps (numpy or torch, any shape, e.g. a batch N×H×W); pixels
    equal to ``ignore_index`` (a thresholded pseudo label) are not counted. Eq. (4)'s ``q_k`` is these
    counts divided by their sum; the losses accept either.
    """
    from blvnb.pseudo.distribution import PriorEstimator  # the one Eq. (4) counter

    est = PriorEstimator(num_classes)
    for lab in pseudo_labels:
        lab = torch.as_tensor(lab).reshape(-1)
        lab = lab[lab != ignore_index].long()
        if lab.numel() and (lab.min() < 0 or lab.max() >= num_classes):
            raise ConfigError(f"pseudo labels must be class ids 0..{num_classes - 1} or {ignore_index}; "
                              f"got values {int(lab.min())}..{int(lab.max())}")
        est.update(lab)
    return est.counts.numpy()


__all__ = [
    "as_counts",
    "class_prior",
    "class_vector",
    "counts_from_labeled_subset",
    "counts_from_labels",
    "counts_from_pseudo_labels",
    "counts_from_source",
    "fill_zero_counts",
]
