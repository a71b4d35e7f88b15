"""A teacher's predictions on a data set, for the pseudo labellers and the class counts of the losses.

The engine runs a model; the pseudo labellers (:mod:`blvnb.pseudo`) and the losses
(:mod:`blvnb.losses`) only receive what it produced, so that imports run one way (data, models, losses,
pseudo never import the engine):

* :class:`TeacherSource` — a labeller's *source*: the teacher's class probabilities on each image of a
  data set, whole image or sliding windows, optionally flip-averaged
  (:func:`blvnb.models.inference.predict_logits`), softmaxed in float16 as the released DARS code does.
* :func:`counts_from_teacher` — BLV's Eq. (4) counts (semi-supervised "‡"): the teacher's arg-max
  pixels per class over the unlabeled set, handed to ``BLVLoss.set_class_counts``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from blvnb.classes import NUM_CLASSES
from blvnb.devices import resolve_device
from blvnb.engine.strategies.base import unwrap
from blvnb.models.inference import predict_logits, resize_logits


#: how many bytes of probabilities a CPU TeacherSource keeps for a second pass (a quick run's 175 unlabeled
#: images at 128×256 in float16 take 218 MB)
KEEP_BYTES = 512 * 2**20


class TeacherSource:
    """Probabilities of a teacher on a data set's images, softmaxed in ``dtype`` (float16 as the released code).

    ``dataset[i]["image"]`` is uint8 3×H×W (normalised here with the ImageNet mean/std) or an already
    normalised float tensor. Inference by :func:`blvnb.models.inference.predict_logits` (``mode``,
    ``crop``, ``stride``, ``flip``, ``amp_dtype``) with the model in eval mode (set here). Output paths
    mirror the data set's label files (``dataset.label_path(i)`` relative to ``dataset.root``), so a
    pseudo label sits where its label would, under another root. ``num_classes``: the model's outputs
    (default: its ``num_classes`` attribute, else 19). ``device``: :func:`blvnb.devices.resolve_device`.
    ``calibrator``: a fitted calibrator of :mod:`blvnb.pseudo.calibration` (called on 1×C×H×W logits, it
    returns probabilities), applied before the cast to ``dtype``; None: the softmax in ``dtype``.
    ``out_size``: ``i → (H, W)``, the size the labels must have when the data set's view resizes the image
    (a ``base_size``): the logits are resized to it (:func:`~blvnb.models.inference.resize_logits`), as the
    released code resizes its logits to 1024×2048 before the softmax.
    ``size``: (H, W) to infer at — the image resized to it (bilinear), its logits resized back to the
    image's own size (or to ``out_size``): the release's ``base_size`` with labels at full resolution, as
    :func:`blvnb.engine.evaluate.evaluate`'s ``size``.
    ``keep_bytes``: on a CPU, keep the probabilities of the first images in memory up to this many bytes
    (default :data:`KEEP_BYTES`), so that a labeller's second pass over the same images (DARS: confidence
    histograms, then labels) reads them instead of running the teacher again; the values are the same
    either way. 0 keeps nothing. On a GPU nothing is kept: recomputing is cheaper than holding them.
    """

    def __init__(self, model, dataset, *, device="auto", dtype: torch.dtype = torch.float16, mode: str = "whole",
                 crop=None, stride=None, flip: bool = False, amp_dtype: torch.dtype | None = None,
                 num_classes: int | None = None, calibrator=None, out_size=None, keep_bytes: int | None = None,
                 size=None):
        self.device = resolve_device(device)
        self.size = None if size is None else tuple(int(v) for v in size)
        self.keep_bytes = KEEP_BYTES if keep_bytes is None else int(keep_bytes)
        self.calibrator, self.out_size = calibrator, out_size  # (setting the calibrator empties the kept ones)
        self.model, self.dataset = model.to(self.device).eval(), dataset
        self.dtype = dtype
        self.num_classes = int(num_classes if num_classes is not None else getattr(model, "num_classes", NUM_CLASSES))
        self.kw = dict(mode=mode, crop=crop, stride=stride, flip=flip, amp_dtype=amp_dtype)

    @property
    def calibrator(self):
        return self._calibrator

    @calibrator.setter
    def calibrator(self, value) -> None:  # other probabilities: forget the kept ones
        self._calibrator = value
        self._kept, self._kept_bytes = {}, 0

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def __getitem__(self, i: int) -> torch.Tensor:
        if i in self._kept:
            return self._kept[i]
        logits = self.logits(i)
        if self.calibrator is not None:
            probs = self.calibrator(logits[None], dim=1)[0].to(self.dtype)
        else:  # softmax in the confidence dtype (float16: head classes tie at exactly 1.0, as in the released code)
            probs = logits.to(self.dtype).softmax(0)
        size = probs.numel() * probs.element_size()
        if probs.device.type == "cpu" and self._kept_bytes + size <= self.keep_bytes:
            self._kept[i], self._kept_bytes = probs, self._kept_bytes + size
        return probs

    @torch.no_grad()
    def logits(self, i: int) -> torch.Tensor:
        """Image ``i``'s C×H×W float32 logits (for fitting a calibrator)."""
        from blvnb.data.transforms import Normalize

        image = self.dataset[i]["image"]
        if image.dtype == torch.uint8:
            image, _ = Normalize()(image, None)
        image, own = image[None].to(self.device), tuple(image.shape[-2:])
        if self.size is not None:
            image = torch.nn.functional.interpolate(image, size=self.size, mode="bilinear", align_corners=False)
        logits = predict_logits(self.model, image, num_classes=self.num_classes, **self.kw)
        if self.out_size is not None:
            logits = resize_logits(logits, tuple(self.out_size(i)))
        elif self.size is not None:
            logits = resize_logits(logits, own)
        return logits[0]

    def relpath(self, i: int) -> str:
        """Where image ``i``'s pseudo label goes, relative to the output folder: the data set's own
        ``relpath(i)`` if it has one, else its label file relative to its root (through a ``Subset``'s
        ``indices``), else ``<name>.png``, else ``<i>.png`` (six digits)."""
        return label_relpath(self.dataset, i)


def label_relpath(ds, i: int) -> str:
    """Image ``i``'s label path relative to the data set's root (see :meth:`TeacherSource.relpath`)."""
    if hasattr(ds, "relpath"):
        return str(ds.relpath(i))
    if hasattr(ds, "indices") and hasattr(ds, "dataset") and not hasattr(ds, "label_path"):  # torch Subset
        return label_relpath(ds.dataset, int(ds.indices[i]))
    try:
        return Path(ds.label_path(i)).relative_to(ds.root).as_posix()
    except (AttributeError, ValueError, TypeError):
        pass
    names = getattr(ds, "names", None)
    return f"{names[i]}.png" if names is not None else f"{i:06d}.png"


@torch.no_grad()
def counts_from_teacher(model: nn.Module, loader: Iterable[dict], num_classes: int = NUM_CLASSES,
                        device: str | torch.device = "cpu", progress: bool = False) -> np.ndarray:
    """Semi-supervised "‡" (BLV Sec. 3.3): Eq. (4) on the teacher's arg-max predictions over ``loader``.

    ``loader`` yields batches ``{"image": N×3×H×W, ...}`` of the unlabeled set; the logits are resized
    to the image size (:func:`blvnb.models.inference.resize_logits`) before the arg-max, as a pseudo label
    is. Counting happens on the device; only C integers come back. The model's train/eval mode is restored
    afterwards. The engine calls this after every epoch and passes the result to ``BLVLoss.set_class_counts``.
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    was_training = model.training
    model.eval()
    counts = torch.zeros(num_classes, dtype=torch.int64, device=device)
    try:
        for batch in tqdm(loader, desc="Eq. (4) counts", disable=not progress, leave=False):
            image = batch["image"].to(device)
            logits = resize_logits(model(image), image.shape[-2:])
            counts += torch.bincount(logits.argmax(1).reshape(-1), minlength=num_classes)[:num_classes]
    finally:
        model.train(was_training)
    return counts.cpu().numpy()



# --- the EMA teacher (mean teacher, BLV Sec. 3.3; DAFormer/HRDA's UDA teacher) ----------------------

def ema_momentum(t: int, m0: float = 0.999) -> float:
    r"""$m_t = \min(1 - 1/(t+1), m_0)$: 0 at $t = 0$ (the teacher becomes the student), 1/2, 2/3, … then $m_0$."""
    return min(1.0 - 1.0 / (int(t) + 1), float(m0))


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, m: float) -> None:
    r"""$\theta_T \leftarrow m\,\theta_T + (1 - m)\,\theta_S$ for every *parameter*; buffers are left alone."""
    tp = dict(teacher.named_parameters())
    for name, ps in unwrap(student).named_parameters():
        pt = tp[name]
        # $m\,\theta_T + (1 - m)\,\theta_S$
        pt.mul_(m).add_(ps.detach().to(pt.dtype), alpha=1.0 - m)


__all__ = ["TeacherSource", "counts_from_teacher", "ema_momentum", "ema_update", "label_relpath"]
