"""Evaluation: confusion matrix, IoU, whole-image / sliding-window inference, flip.

Conventions used throughout this module (said once, here):

* Labels are train ids ``0 .. C-1``; ``ignore_index`` (255) marks pixels that are not evaluated.
* The confusion matrix has **rows = ground truth, columns = prediction**, int64.
* Metrics are **fractions in [0, 1]**; the book multiplies by 100 when it prints percentages.
* Logits are resized by :func:`blvnb.models.inference.resize_logits` (bilinear, align_corners=False).
* Overlapping sliding windows and the horizontal-flip pass are combined by **averaging logits**
  (not softmax probabilities). The arg-max is what evaluation uses; averaging probabilities instead
  (as DARS's released ``semseg`` code does) changes it only where two classes are nearly tied.

**Predictions outside [0, C)** (e.g. 255 left in a pseudo-label map) are *misses*: a false negative of
the pixel's ground-truth class and a false positive of no class. This is what cityscapesScripts does
with a prediction of an ignored label id, and what mmsegmentation's ``intersect_and_union`` does. A
C×C matrix cannot hold such a pixel (every cell is some class's false positive), so misses live in an
optional extra column: :func:`confusion_matrix` returns ``C×C`` by default and logs a warning with the
number of misses it had to leave out, or ``C×(C+1)`` with ``misses=True``; :class:`Confusion` always
keeps the extra column. :func:`per_class_iou` and :func:`summarize` accept either shape.

Per-class IoU is ``TP / (TP + FP + FN)``. A class with ``TP + FP + FN = 0`` (absent from both ground
truth and prediction) gets NaN and is left out of every mean, as in cityscapesScripts.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.classes import BLV_TAIL, CLASSES, DARS_TAIL, HEAD_BLV, IGNORE, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16
from blvnb.devices import resolve_device
from blvnb.errors import BlvnbError, ConfigError
from blvnb.models.inference import _pair, predict_logits, resize_logits

log = logging.getLogger(__name__)

DATASETS = ("cityscapes", "synthia", "generic")


# --- confusion matrix ------------------------------------------------------------------------------

def _as_label_tensor(x, name: str, device: torch.device | None = None) -> torch.Tensor:
    """numpy / torch integer labels -> int64 tensor (on ``device`` when given)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    if x.is_floating_point() or x.is_complex():
        raise BlvnbError(
            f"{name} must hold integer class indices, got dtype {x.dtype}; "
            "pass logits.argmax(1) rather than the logits or probabilities"
        )
    if device is not None and x.device != device:
        x = x.to(device)
    return x.long()


def _confusion_full(pred, target, num_classes: int, ignore_index: int) -> torch.Tensor:
    """C×(C+1) counts; column C counts predictions outside [0, C) (misses)."""
    if isinstance(target, torch.Tensor):
        device = target.device
    elif isinstance(pred, torch.Tensor):
        device = pred.device
    else:
        device = None
    t = _as_label_tensor(target, "target", device)
    p = _as_label_tensor(pred, "pred", t.device)
    if p.shape != t.shape:
        raise BlvnbError(
            f"pred and target must have the same shape, got {tuple(p.shape)} and {tuple(t.shape)}; "
            "upsample the prediction to the label's resolution before computing the confusion matrix"
        )
    c = int(num_classes)
    if c < 1:
        raise BlvnbError(f"num_classes must be >= 1, got {num_classes}")
    t = t.reshape(-1)
    p = p.reshape(-1)
    # pixels whose ground truth is ignore_index (or any value outside [0, C)) are not evaluated
    keep = (t >= 0) & (t < c) & (t != ignore_index)
    t = t[keep]
    p = p[keep]
    # a prediction outside [0, C) goes to the extra column C
    p = torch.where((p >= 0) & (p < c), p, torch.full_like(p, c))
    counts = torch.bincount(t * (c + 1) + p, minlength=c * (c + 1))
    return counts.reshape(c, c + 1)


def confusion_matrix(pred, target, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE, *,
                     misses: bool = False) -> torch.Tensor:
    """Confusion matrix of integer predictions against integer ground truth.

    Args:
        pred, target: integer tensors (or numpy arrays) of the same, arbitrary shape. The counting
            happens on ``target``'s device (numpy inputs follow the other argument, else CPU) with
            ``torch.bincount(C * t + p, minlength=C * C)``.
        num_classes: C.
        ignore_index: ground-truth value that is not evaluated. Ground truth outside [0, C) is dropped too.
        misses: if True, return ``C×(C+1)`` whose last column counts predictions outside [0, C) per
            ground-truth class (false negatives of that class, false positives of none).

    Returns:
        int64 ``C×C`` (rows = ground truth, columns = prediction), or ``C×(C+1)`` with ``misses=True``.
        Without ``misses`` a prediction outside [0, C) cannot be represented; such pixels are left
        out of the C×C matrix and a warning says how many (use ``misses=True`` or :class:`Confusion`).

    Raises:
        BlvnbError: shapes differ, the inputs are not integers, ``num_classes`` is not a positive integer, or
        ``target`` holds values other than 0..C-1 and ``ignore_index`` (they would be dropped silently).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r} ({type(num_classes).__name__})")
    t = _as_label_tensor(target, "target", pred.device if isinstance(pred, torch.Tensor) and
                         not isinstance(target, torch.Tensor) else None)
    bad = (t != ignore_index) & ((t < 0) | (t >= num_classes))
    if bool(bad.any()):
        values = torch.unique(t[bad]).tolist()
        raise BlvnbError(f"target holds {', '.join(str(v) for v in values[:5])}{' ...' if len(values) > 5 else ''}: "
                         f"outside the class ids 0..{num_classes - 1} and the ignore index {ignore_index}; map the "
                         "ground truth to train ids first (blvnb.classes.label_id_to_train_id)")
    full = _confusion_full(pred, t, num_classes, ignore_index)
    if misses:
        return full
    n_miss = int(full[:, -1].sum())
    if n_miss:
        log.warning(
            "%d predicted pixels are outside [0, %d) and cannot be stored in a C×C confusion matrix; "
            "they are left out of it. Pass misses=True (or use Confusion) to count them as false negatives",
            n_miss, num_classes,
        )
    return full[:, :-1].contiguous()


class Confusion:
    """Streaming confusion matrix: ``update`` per batch, read ``matrix`` / ``summary()`` at the end.

    Keeps the ``C×(C+1)`` form (see the module docstring): ``matrix`` is the C×C part, ``misses`` the
    per-class count of predictions outside [0, C), ``full`` both. The counts live on the device of
    ``device`` if given, else of the first batch.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE,
                 device: torch.device | str | None = None):
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self._device = torch.device(device) if device is not None else None
        self._full: torch.Tensor | None = None

    def _empty(self, device) -> torch.Tensor:
        return torch.zeros(self.num_classes, self.num_classes + 1, dtype=torch.int64, device=device)

    def update(self, pred, target) -> "Confusion":
        """Add one batch of integer predictions and ground truth (same shape)."""
        counts = _confusion_full(pred, target, self.num_classes, self.ignore_index)
        if self._full is None:
            self._full = self._empty(self._device if self._device is not None else counts.device)
        self._full += counts.to(self._full.device)
        return self

    def reset(self) -> "Confusion":
        self._full = None
        return self

    @property
    def full(self) -> torch.Tensor:
        """int64 ``C×(C+1)``; the last column counts predictions outside [0, C)."""
        if self._full is None:
            self._full = self._empty(self._device)
        return self._full

    @property
    def matrix(self) -> torch.Tensor:
        """int64 ``C×C``, rows = ground truth, columns = prediction."""
        return self.full[:, :-1]

    @property
    def misses(self) -> torch.Tensor:
        """int64 ``C``: per ground-truth class, pixels predicted outside [0, C)."""
        return self.full[:, -1]

    def all_reduce(self) -> "Confusion":
        """Sum the counts over ``torch.distributed`` ranks (no-op unless a process group is initialised).

        Every rank must call it. With NCCL the counts must be on the rank's GPU.
        """
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.full, op=torch.distributed.ReduceOp.SUM)
        return self

    def iou(self) -> torch.Tensor:
        return per_class_iou(self.full)

    def summary(self, dataset: str = "cityscapes", class_names: Sequence[str] | None = None) -> dict:
        return summarize(self.full, dataset=dataset, class_names=class_names)


# --- metrics ---------------------------------------------------------------------------------------

def _split(confusion) -> tuple[torch.Tensor, torch.Tensor]:
    """(C×C float64 matrix, per-class misses float64[C]) from a C×C or C×(C+1) confusion."""
    m = confusion if isinstance(confusion, torch.Tensor) else torch.as_tensor(np.asarray(confusion))
    m = m.detach().to("cpu", torch.float64)
    if m.ndim != 2 or m.shape[1] not in (m.shape[0], m.shape[0] + 1):
        raise BlvnbError(f"a confusion matrix must be C×C or C×(C+1), got shape {tuple(m.shape)}")
    if not torch.isfinite(m).all() or (m < 0).any():
        i, j = [int(v) for v in torch.nonzero(~torch.isfinite(m) | (m < 0))[0]]
        raise BlvnbError(f"a confusion matrix holds pixel counts (finite, >= 0); entry [{i}, {j}] of this "
                         f"{tuple(m.shape)} matrix is {float(m[i, j])!r}")
    c = m.shape[0]
    miss = m[:, c] if m.shape[1] == c + 1 else torch.zeros(c, dtype=torch.float64)
    return m[:, :c], miss


def per_class_iou(confusion) -> torch.Tensor:
    """float64[C]: ``IoU_k = TP_k / (TP_k + FP_k + FN_k)``; NaN where the denominator is 0.

    ``TP_k = M[k, k]``, ``FN_k = Σ_j M[k, j] − TP_k`` (+ misses of class k), ``FP_k = Σ_i M[i, k] − TP_k``.
    """
    m, miss = _split(confusion)
    tp = torch.diagonal(m)
    # FN_k: ground truth k, predicted anything else (misses included)
    fn = m.sum(1) + miss - tp
    # FP_k: predicted k, ground truth anything else
    fp = m.sum(0) - tp
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, math.nan))


def per_class_accuracy(confusion) -> torch.Tensor:
    """float64[C]: ``TP_k / (pixels whose ground truth is k)``; NaN for a class absent from the ground truth."""
    m, miss = _split(confusion)
    tp = torch.diagonal(m)
    gt = m.sum(1) + miss
    return torch.where(gt > 0, tp / gt.clamp_min(1), torch.full_like(tp, math.nan))


def pixel_accuracy(confusion) -> float:
    """Correct pixels / evaluated pixels (NaN if none was evaluated)."""
    m, miss = _split(confusion)
    total = float(m.sum() + miss.sum())
    return float(torch.diagonal(m).sum()) / total if total > 0 else math.nan


def mean_iou(iou, classes: Sequence[int] | None = None) -> float:
    """NaN-mean of ``iou`` over the class indices ``classes`` (all classes when None).

    Classes whose IoU is NaN (absent from ground truth and prediction) are left out; NaN if all are.
    """
    v = iou.detach().to("cpu", torch.float64) if isinstance(iou, torch.Tensor) else torch.as_tensor(
        np.asarray(iou, dtype=np.float64))
    if classes is not None:
        idx = list(classes)
        if any(not 0 <= i < v.numel() for i in idx):
            raise BlvnbError(f"class indices must lie in [0, {v.numel()}), got {idx}")
        v = v[idx]
    v = v[~torch.isnan(v)]
    return float(v.mean()) if v.numel() else math.nan


def summarize(confusion, dataset: str = "cityscapes", class_names: Sequence[str] | None = None) -> dict:
    """The metrics the book reports, as plain Python floats in [0, 1] (NaN where undefined).

    Keys, for ``dataset="cityscapes"`` (the 19 Cityscapes train classes):
        ``per_class_iou`` {class name: IoU}, ``iou`` [IoU in class order], ``mIoU``,
        ``mIoU_tail_blv`` (BLV's 9 tail classes), ``mIoU_head_blv`` (the other 10),
        ``mIoU_tail_dars`` (DARS's 13 tail classes), ``pixel_acc``, ``mAcc`` (mean class accuracy).
    ``dataset="synthia"`` adds ``mIoU16`` (SYNTHIA's 16 classes) and ``mIoU13`` (its 13-class subset);
        ``mIoU`` is then ``mIoU16``, and the tail/head means are over their intersection with the 16.
    ``dataset="generic"``: any C; only ``per_class_iou``, ``iou``, ``mIoU``, ``pixel_acc``, ``mAcc``.

    ``confusion``: C×C or C×(C+1) (see the module docstring), tensor, numpy array or nested list.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"unknown dataset {dataset!r} for evaluation; expected one of {DATASETS}")
    iou = per_class_iou(confusion)
    c = iou.numel()
    if dataset != "generic" and c != NUM_CLASSES:
        raise BlvnbError(
            f"dataset={dataset!r} expects the {NUM_CLASSES} Cityscapes train classes, got a {c}-class confusion "
            "matrix; use dataset='generic' for other label sets"
        )
    if class_names is None:
        class_names = CLASSES if c == NUM_CLASSES else tuple(f"class_{i}" for i in range(c))
    if len(class_names) != c:
        raise BlvnbError(f"class_names has {len(class_names)} names for {c} classes")
    out: dict = {
        "per_class_iou": {name: float(v) for name, v in zip(class_names, iou.tolist())},
        "iou": [float(v) for v in iou.tolist()],
        "pixel_acc": pixel_accuracy(confusion),
        "mAcc": mean_iou(per_class_accuracy(confusion)),
    }
    if dataset == "generic":
        out["mIoU"] = mean_iou(iou)
        return out
    evaluated = SYNTHIA_16 if dataset == "synthia" else tuple(range(NUM_CLASSES))

    def over(subset):
        return mean_iou(iou, [k for k in subset if k in evaluated])

    out["mIoU"] = over(evaluated)
    out["mIoU_tail_blv"] = over(BLV_TAIL)
    out["mIoU_head_blv"] = over(HEAD_BLV)
    out["mIoU_tail_dars"] = over(DARS_TAIL)
    if dataset == "synthia":
        out["mIoU16"] = over(SYNTHIA_16)
        out["mIoU13"] = over(SYNTHIA_13)
    return out


def _uses_channels_last(model) -> bool:
    """True if some 4-D parameter is stored channels_last (and not also plain contiguous)."""
    return any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in model.parameters())


def evaluate(model, loader, *, device, mode: str = "whole", crop=None, stride=None, flip: bool = False,
             num_classes: int = NUM_CLASSES, dataset: str = "cityscapes", progress: bool = True,
             amp_dtype: torch.dtype | None = None, ignore_index: int = IGNORE, window_batch: int = 8,
             size=None) -> dict:
    """Evaluate ``model`` on ``loader`` and return :func:`summarize`'s dict plus ``"confusion"``.

    ``loader`` yields dicts ``{"image": float N×3×H×W (normalised), "label": int64 N×H×W}`` (or
    ``(image, label)`` pairs). Predictions are the arg-max of :func:`predict_logits` (same ``mode``,
    ``crop``, ``stride``, ``flip``, ``amp_dtype``) and must come out at the label's resolution. ``size``
    (h, w): infer on the image resized bilinearly to that size (DAFormer: Cityscapes at 512×1024, the size
    it trains on) and upsample the logits to the label's resolution, as mmseg scores a resized test
    image against its original labels; labels are never resized here. The
    confusion matrix is accumulated on ``device`` and summed over ``torch.distributed`` ranks when a
    process group is initialised (with a DistributedSampler, padded duplicates are counted twice).
    ``"confusion"`` is the C×C matrix as a nested list. The model's device, mode (call ``model.eval()``)
    and memory format are the caller's; a channels_last model gets channels_last inputs. ``device``:
    :func:`blvnb.devices.resolve_device` ("auto" / "cuda" = this process's GPU, ``LOCAL_RANK`` under torchrun).
    """
    device = resolve_device(device)
    size = None if size is None else _pair(size, "size")
    conf = Confusion(num_classes, ignore_index, device=device)
    conf.full  # allocate the counts outside inference mode, so they stay ordinary tensors
    channels_last = _uses_channels_last(model)
    with torch.inference_mode():
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            if isinstance(batch, dict):
                images, labels = batch["image"], batch["label"]
            else:
                images, labels = batch[0], batch[1]
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            if labels.ndim == 4 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if size is not None and tuple(images.shape[-2:]) != size:
                # bilinear on the normalised image equals resizing before normalising (an affine map per channel)
                images = torch.nn.functional.interpolate(images, size=size, mode="bilinear", align_corners=False)
            logits = predict_logits(model, images, mode=mode, crop=crop, stride=stride, flip=flip,
                                    num_classes=num_classes, amp_dtype=amp_dtype, window_batch=window_batch)
            if size is not None:
                logits = resize_logits(logits, labels.shape[-2:])
            if logits.shape[-2:] != labels.shape[-2:]:
                raise BlvnbError(
                    f"images are {tuple(logits.shape[-2:])} but labels are {tuple(labels.shape[-2:])}; "
                    "evaluate at the label's resolution (the eval transform must resize both or neither)"
                )
            conf.update(logits.argmax(1), labels)
        conf.all_reduce()
    out = conf.summary(dataset)
    out["confusion"] = conf.matrix.cpu().tolist()
    return out


__all__ = [
    "Confusion", "confusion_matrix", "per_class_iou", "per_class_accuracy", "pixel_accuracy", "mean_iou",
    "summarize", "evaluate",
]
