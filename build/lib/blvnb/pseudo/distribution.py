r"""Class priors and how far a set of pseudo labels is from them.

A *prior* is a length-C float64 tensor of class shares summing to 1. DA and DARS ask for
:math:`n_j \propto r_j` pseudo-labelled pixels of class :math:`j`; where :math:`r` comes from is a
choice the papers make differently:

* **labeled** — the shares among the valid pixels of the labeled images (DARS Sec. 3.2, semi-supervised);
* **source domain (SD)** — the labels of the source data set, e.g. GTA5 (DARS Appendix C, "DARS (SD)";
  BLV Sec. 3.4 uses the source distribution for the target in UDA);
* **target-domain validation (TD)** — the target's validation labels (DARS Appendix C, "DARS (TD)": not a
  fair comparison, the paper says so, but it shows what a correct prior is worth);
* **re-estimated** — BLV Eq. (4): the shares of the classes in the current model's predictions on the
  unlabeled images, recomputed as training goes on.

All four are one computation (pixel counts → shares) on different labels; they have their own names
so that a notebook says which one it uses. :func:`kl_divergence` measures
:math:`D_\mathrm{KL}(\text{prior} \,\|\, \text{pseudo-label distribution})` as in DARS Table 5.

:func:`synthetic_probabilities` makes teacher-like probability maps for demonstrations and benchmarks:
predictions biased toward frequent classes and head-class confidences that saturate at exactly 1.0 in
float16 — the two facts DARS is built on — at any size, on any device, from a seed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from blvnb.classes import NUM_CLASSES
from blvnb.errors import ConfigError, DatasetError


def check_counts(counts, num_classes: int | None = None, *, name: str = "class counts") -> torch.Tensor:
    """Per-class counts or unnormalised shares (tensor, array or list) → a float64 CPU tensor [C], validated:
    one finite, non-negative number per class (``num_classes`` of them when given). Zeros are kept."""
    if counts is None:
        raise ConfigError(f"{name}: this method needs a class prior r (shares among valid labeled pixels), e.g. "
                          "blvnb.pseudo.distribution.labeled_prior(labeled_dataset)")
    try:
        c = torch.as_tensor(np.asarray(counts.detach().cpu() if isinstance(counts, torch.Tensor) else counts,
                                       dtype=np.float64))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name} must be a sequence of numbers, one per class; got {counts!r}") from exc
    if c.ndim > 1 and c.numel() == max(c.shape):  # a row or column vector
        c = c.reshape(-1)
    if c.ndim != 1 or c.numel() < 1:
        raise ConfigError(f"{name} must be one number per class (a 1-D sequence); got shape {tuple(c.shape)}")
    if num_classes is not None and c.numel() != num_classes:
        raise ConfigError(f"{name} has {c.numel()} entries but the probabilities have {num_classes} classes")
    if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
        raise ConfigError(f"{name} must be finite and non-negative; got {c.tolist()}")
    return c


def prior_from_counts(counts, num_classes: int | None = None, *, name: str = "the prior") -> torch.Tensor:
    """Pixel counts (or unnormalised shares) per class → float64 shares summing to 1 — the one place where
    counts become shares (:func:`check_counts` first; all zero is a ConfigError)."""
    c = check_counts(counts, num_classes, name=name)
    total = float(c.sum())
    if not total > 0:
        raise ConfigError(f"{name} is all zero (no valid pixel was counted): no class shares can be computed")
    return c / total


def labeled_prior(data, num_classes: int = NUM_CLASSES, progress: bool = False) -> torch.Tensor:
    r"""Shares :math:`r_j` of each class among the *valid* pixels of labeled data (255 excluded).

    ``data``: a data set with ``read_label(i)`` (labels are read without decoding images), or any
    iterable of H×W (or N×H×W) train-id label maps, numpy or torch.
    """
    counts = class_pixel_counts(data, num_classes, progress)
    if not int(counts.sum()) > 0:
        raise DatasetError("the labels have no valid (non-ignore) pixel: no class prior can be computed")
    return prior_from_counts(counts)


def source_domain_prior(source_data, num_classes: int = NUM_CLASSES, progress: bool = False) -> torch.Tensor:
    """DARS (SD): the prior counted on the *source* domain's labels (e.g. GTA5) — :func:`labeled_prior`."""
    return labeled_prior(source_data, num_classes, progress)


def target_validation_prior(val_data, num_classes: int = NUM_CLASSES, progress: bool = False) -> torch.Tensor:
    """DARS (TD): the prior counted on the target domain's *validation* labels — :func:`labeled_prior`."""
    return labeled_prior(val_data, num_classes, progress)


def class_pixel_counts(data, num_classes: int = NUM_CLASSES, progress: bool = False) -> torch.Tensor:
    """Pixels per class (int64[C]) over a data set with ``read_label`` or an iterable of label maps."""
    if hasattr(data, "read_label") and hasattr(data, "__len__"):
        from blvnb.data.stats import pixel_counts

        return torch.from_numpy(pixel_counts(data, num_classes, progress=progress))
    est = PriorEstimator(num_classes)
    for item in ([data] if isinstance(data, (torch.Tensor, np.ndarray)) else data):
        est.update(item["label"] if isinstance(item, dict) else item)
    return est.counts


def label_counts(labels, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Pixels per class (int64[C], CPU) in integer label maps of any shape, numpy or torch, on any device —
    the one per-label class count. 255 and any other value outside 0 … C−1 are not counted."""
    flat = torch.as_tensor(labels).reshape(-1)
    if flat.is_floating_point():
        raise ConfigError(f"labels must be integer class ids, got dtype {flat.dtype}")
    flat = flat.to(torch.int64)
    flat = flat[(flat >= 0) & (flat < num_classes)].cpu()
    # NumPy's bincount: several times faster than torch's on the CPU
    return torch.from_numpy(np.bincount(flat.numpy(), minlength=num_classes).astype(np.int64, copy=False))


class PriorEstimator:
    r"""BLV Eq. (4), accumulated over a stream of predicted (or pseudo) label maps:

    .. math:: q_k = \frac{\sum_n \sum_m \mathbb 1[\hat y^u_{nm} = k]}{\sum_i \sum_n \sum_m \mathbb 1[\hat y^u_{nm} = i]}

    ``update`` takes integer label maps of any shape (255 and values outside 0..C-1 are not counted) or
    class probabilities/logits with the class dimension given (``class_dim``), which are arg-maxed.
    """

    def __init__(self, num_classes: int = NUM_CLASSES):
        self.num_classes = int(num_classes)
        self.counts = torch.zeros(self.num_classes, dtype=torch.int64)

    def update(self, labels, class_dim: int | None = None) -> PriorEstimator:
        t = torch.as_tensor(labels)
        if t.is_floating_point():
            if class_dim is None:
                raise ConfigError("PriorEstimator.update got float values: pass integer labels, or probabilities "
                                  "with class_dim (e.g. class_dim=1 for N×C×H×W) to arg-max them")
            t = t.argmax(class_dim)
        # numerator of Eq. (4): Σ_n Σ_m 1[ŷ_nm = k]
        self.counts += label_counts(t, self.num_classes)
        return self

    @property
    def prior(self) -> torch.Tensor:
        """:math:`q_k` — the counts divided by their sum (the denominator of Eq. 4)."""
        return prior_from_counts(self.counts)


def reestimated_prior(labels: Iterable | torch.Tensor, num_classes: int = NUM_CLASSES,
                      class_dim: int | None = None) -> torch.Tensor:
    """BLV Eq. (4) over predictions on the unlabeled images: an N×H×W tensor or an iterable of label maps
    (or of probabilities with ``class_dim``); see :class:`PriorEstimator`."""
    est = PriorEstimator(num_classes)
    items = [labels] if isinstance(labels, (torch.Tensor, np.ndarray)) else labels
    for item in items:
        est.update(item, class_dim)
    return est.prior


def label_distribution(labels: torch.Tensor | np.ndarray, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """Shares of each class among the pseudo-labelled (non-ignored) pixels; zeros if none is labelled."""
    est = PriorEstimator(num_classes).update(labels)
    total = int(est.counts.sum())
    return est.counts.to(torch.float64) / total if total else est.counts.to(torch.float64)


def kl_divergence(p, q, eps: float = 1e-12) -> float:
    r""":math:`D_\mathrm{KL}(p \,\|\, q) = \sum_j p_j \log(p_j / q_j)` in nats, both normalised first.

    Terms with :math:`p_j = 0` are 0. Where :math:`q_j = 0 < p_j` the divergence is infinite; ``eps``
    (> 0) floors :math:`q` there to keep it finite (``eps=0``: return ``inf``).
    """
    p = torch.as_tensor(np.asarray(p.cpu() if isinstance(p, torch.Tensor) else p, dtype=np.float64)).reshape(-1)
    q = torch.as_tensor(np.asarray(q.cpu() if isinstance(q, torch.Tensor) else q, dtype=np.float64)).reshape(-1)
    if p.shape != q.shape:
        raise ConfigError(f"KL divergence of distributions of different lengths: {p.numel()} and {q.numel()}")
    if not float(p.sum()) > 0:
        raise ConfigError("KL divergence: p has no mass")
    p = p / p.sum()
    q = q / q.sum() if float(q.sum()) > 0 else q
    mask = p > 0
    qm = q[mask].clamp(min=eps) if eps > 0 else q[mask]
    if bool((qm <= 0).any()):
        return math.inf
    # Σ_j p_j log(p_j / q_j) over classes with p_j > 0
    return float((p[mask] * (p[mask] / qm).log()).sum())


# --- synthetic teacher outputs ------------------------------------------------------------------------

def synthetic_probabilities(n: int, size: tuple[int, int], prior, *, generator: torch.Generator | None = None,
                            dtype: torch.dtype = torch.float16, block: int = 8, noise: float = 1.5,
                            margin: tuple[float, float] = (2.0, 13.0), head_bias: float = 0.6,
                            device: str | torch.device | None = None) -> torch.Tensor:
    r"""N×C×H×W teacher-like probabilities (softmax computed in ``dtype``), for demonstrations and benchmarks.

    The scene: true classes drawn from ``prior`` in ``block``×``block`` squares. The teacher's logits:
    Gaussian noise (``noise``), plus a margin on the true class that grows with the class's log share
    from ``margin[0]`` (rarest) to ``margin[1]`` (most common), each pixel's margin scaled by a uniform
    factor in [0.5, 1.5) — frequent classes are predicted confidently, rare ones less so — plus
    ``head_bias`` × log share on every class's logit: the teacher leans toward frequent classes, so
    a single threshold keeps too many head pixels. In float16 the softmax of a head-class pixel is
    often exactly 1.0 (DARS Fig. 3).
    """
    r = torch.as_tensor(np.asarray(prior.cpu() if isinstance(prior, torch.Tensor) else prior, dtype=np.float64))
    r = (r / r.sum()).to(torch.float32)
    c = r.numel()
    h, w = size
    if device is not None:
        dev = torch.device(device)
    else:
        dev = generator.device if generator is not None else torch.device("cpu")
    g = generator
    bh, bw = -(-h // block), -(-w // block)
    # true classes, block by block, drawn from the prior
    y = torch.multinomial(r.to(dev), n * bh * bw, replacement=True, generator=g).view(n, bh, bw)
    y = y.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :h, :w]
    logr = r.clamp(min=1e-8).log().to(dev)
    span = (logr - logr.min()) / (logr.max() - logr.min()).clamp(min=1e-8)
    # per-class margin: rarest class margin[0] … most common margin[1]
    m = margin[0] + (margin[1] - margin[0]) * span
    logits = torch.randn(n, c, h, w, generator=g, device=dev) * noise
    scale = 0.5 + torch.rand(n, 1, h, w, generator=g, device=dev)
    logits.scatter_add_(1, y[:, None], m[y][:, None] * scale)
    # the teacher's bias toward frequent classes
    logits += head_bias * logr.view(1, c, 1, 1)
    return logits.to(dtype).softmax(1)


__all__ = [
    "PriorEstimator", "check_counts", "class_pixel_counts", "kl_divergence", "label_counts",
    "label_distribution", "labeled_prior", "prior_from_counts", "reestimated_prior", "source_domain_prior",
    "synthetic_probabilities", "target_validation_prior",
]
