r"""The long-tail baselines BLV is compared with (BLV Table 5, Table 14; DARS Table 5).

Every loss takes N×C×h×w logits and N×H×W train-id labels, resizes the logits to the label size
(bilinear, ``align_corners=False``), ignores ``ignore_index`` (255) and averages over the *valid*
pixels; ``avg_non_ignore=False`` averages over all pixels instead, as mmsegmentation does by default
(see :func:`~blvnb.losses.blv.reduce_pixels`). A batch without valid pixels gives 0, not NaN.
Lovász-softmax is the exception: it averages over classes, not pixels.

* **Logit adjustment** (LA; Menon et al., ICLR 2021): cross entropy of $z_k + \tau \log \pi_k$, τ = 1,
  with $\pi$ the class prior. The adjustment lives only in the loss: predictions use $z$.
* **Lovász-softmax** (Berman et al., CVPR 2018): the Lovász extension of the Jaccard loss per class,
  on softmax probabilities, over the batch's pixels or per image.
* **Focal loss** (Lin et al., ICCV 2017), γ = 2: $-(1 - p_t)^\gamma \log p_t$ (DARS Table 5).
* **GCL** (Li et al., CVPR 2022) moved from cosine classifiers to segmentation logits, as BLV's Table 14
  compares it: a Gaussian "cloud" $z_k - m\,\frac{\log q_{max} - \log q_k}{\max}\,|\mathrm{clamp}(\delta, -1, 1)|$,
  $\delta \sim \mathcal N(0, 1/3)$, in training only. This is the released GCL loss without its
  cosine scale ``s`` = 30 and target-class margin ``m`` = 0.5, which belong to its normalised classifier;
  its second stage (class-balanced classifier re-training) is approximated, as in BLV Appendix I, by
  re-sampling (:mod:`blvnb.data.sampling`). BLV does not give its GCL settings; ``noise_mul`` is GCL's.
* **Class re-weighting** (RW): cross entropy with per-class weights $\propto q_k^{-1}$, normalised to
  mean 1 over the classes. Image re-sampling (RS) is a sampler: :mod:`blvnb.data.sampling`.

Zero-count classes follow :func:`~blvnb.losses.frequencies.fill_zero_counts` everywhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from blvnb.classes import IGNORE
from blvnb.errors import ConfigError
from blvnb.losses.blv import (
    _cross_entropy,
    balance_scale,
    check_inputs,
    check_number,
    cross_entropy,
    reduce_pixels,
    sample_variation,
    to_label_size,
)
from blvnb.losses.frequencies import Counts, as_counts, class_prior, class_vector, fill_zero_counts


class _PixelLoss(nn.Module):
    """Shared keywords: ``ignore_index`` and ``avg_non_ignore``."""

    def __init__(self, ignore_index: int = IGNORE, avg_non_ignore: bool = True):
        super().__init__()
        self.ignore_index, self.avg_non_ignore = ignore_index, avg_non_ignore


class CrossEntropyLoss(_PixelLoss):
    """Plain cross entropy (the baseline every table starts from)."""

    def forward(self, logits, target):
        return cross_entropy(logits, target, ignore_index=self.ignore_index, avg_non_ignore=self.avg_non_ignore)


# --- logit adjustment --------------------------------------------------------------------------------

def logit_adjusted_logits(logits: torch.Tensor, class_counts: Counts, tau: float = 1.0) -> torch.Tensor:
    r"""$z_k + \tau \log \pi_k$ with $\pi_k = q_k / \sum_j q_j$, the logit-adjusted loss's logits (Menon et al.)."""
    shape = (1, -1) + (1,) * (logits.ndim - 2)
    # $\tau \log \pi_k$
    log_prior = class_vector(_log_prior, class_counts, float(tau), device=logits.device, dtype=logits.dtype,
                             num_classes=logits.shape[1])
    return logits + log_prior.view(shape)


def _log_prior(class_counts: Counts, tau: float) -> torch.Tensor:
    return tau * torch.log(class_prior(class_counts))


def logit_adjusted_loss(logits, target, class_counts: Counts, *, tau: float = 1.0, ignore_index: int = IGNORE,
                        avg_non_ignore: bool = True) -> torch.Tensor:
    """Cross entropy of :func:`logit_adjusted_logits` (the logit-adjusted loss)."""
    check_inputs(logits, target, ignore_index)
    z = logit_adjusted_logits(to_label_size(logits, target), class_counts, tau)
    return _cross_entropy(z, target, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)


class LogitAdjustedLoss(_PixelLoss):
    """``loss(logits, target)`` = :func:`logit_adjusted_loss`; the same in train and eval mode (the
    adjustment is part of the loss; the model's predictions are never adjusted)."""

    def __init__(self, class_counts: Counts, *, tau: float = 1.0, ignore_index: int = IGNORE,
                 avg_non_ignore: bool = True):
        super().__init__(ignore_index, avg_non_ignore)
        self.class_counts, self.tau = as_counts(class_counts), check_number("tau", tau)

    def forward(self, logits, target):
        return logit_adjusted_loss(logits, target, self.class_counts, tau=self.tau, ignore_index=self.ignore_index,
                                   avg_non_ignore=self.avg_non_ignore)


# --- focal loss --------------------------------------------------------------------------------------

def focal_loss(logits, target, *, gamma: float = 2.0, ignore_index: int = IGNORE,
               avg_non_ignore: bool = True) -> torch.Tensor:
    r"""$-(1 - p_t)^\gamma \log p_t$ per valid pixel, $p_t$ the softmax probability of the true class."""
    check_inputs(logits, target, ignore_index)
    gamma = check_number("gamma", gamma, minimum=0.0)
    logits = to_label_size(logits, target)
    valid = target != ignore_index
    t = torch.where(valid, target, torch.zeros_like(target))
    # $\log p_t$
    logp_t = F.log_softmax(logits.float(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
    # $-(1 - p_t)^\gamma \log p_t$, 0 where ignored
    loss = -((1.0 - logp_t.exp()).clamp_min(0.0) ** gamma) * logp_t * valid
    return reduce_pixels(loss, target, ignore_index, avg_non_ignore)


class FocalLoss(_PixelLoss):
    def __init__(self, *, gamma: float = 2.0, ignore_index: int = IGNORE, avg_non_ignore: bool = True):
        super().__init__(ignore_index, avg_non_ignore)
        self.gamma = check_number("gamma", gamma, minimum=0.0)

    def forward(self, logits, target):
        return focal_loss(logits, target, gamma=self.gamma, ignore_index=self.ignore_index,
                          avg_non_ignore=self.avg_non_ignore)


# --- Lovász-softmax ----------------------------------------------------------------------------------

def _lovasz_flat(probs: torch.Tensor, labels: torch.Tensor, classes: str) -> torch.Tensor:
    r"""Lovász-softmax of P pixels: ``probs`` [P, C], ``labels`` [P] (valid only) → mean over classes.

    Per class c, with errors $m_i = |[y_i = c] - p_{i,c}|$ sorted in decreasing order, the loss is
    $\sum_i m_{(i)}\, g_i$, $g_i$ the increments of the Jaccard loss $1 - |I|/|U|$ as the sorted pixels
    are added one by one (the gradient of the Lovász extension). All classes at once, column-wise.
    """
    num_classes = probs.shape[1]
    if labels.numel() == 0:
        return probs.sum() * 0.0
    fg = F.one_hot(labels, num_classes).to(probs.dtype)  # [P, C]
    # $m_i$, sorted per class
    errors, order = (fg - probs).abs().sort(dim=0, descending=True)
    fg_sorted = fg.gather(0, order)
    gts = fg_sorted.sum(0)
    # Jaccard loss of the first i sorted pixels: 1 - |I| / |U|
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    # $g_i$: its increments
    grad = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]], dim=0)
    per_class = (errors * grad).sum(0)
    if classes == "present":
        # mean over the classes present in the labels (0 if none; no host sync)
        present = (gts > 0).to(per_class.dtype)
        return (per_class * present).sum() / present.sum().clamp_min(1.0)
    return per_class.mean()


def lovasz_softmax(logits, target, *, per_image: bool = False, classes: str = "present",
                   ignore_index: int = IGNORE) -> torch.Tensor:
    """Lovász-softmax on the softmax of ``logits``; ignored pixels are dropped.

    ``classes="present"`` (Berman et al.'s default) averages over the classes present in the labels,
    ``"all"`` over every class. ``per_image=True``: the loss of each image, averaged over the images
    (an image without valid pixels counts as 0, as in the reference implementation).
    """
    if classes not in ("present", "all"):
        raise ConfigError(f"lovasz classes must be 'present' or 'all', got {classes!r}")
    check_inputs(logits, target, ignore_index)
    logits = to_label_size(logits, target)
    probs = F.softmax(logits.float(), dim=1)
    num_classes = probs.shape[1]

    def flat(p, y):  # N×C×H×W probabilities, N×H×W labels -> the valid pixels, [P, C] and [P]
        p, y = p.movedim(1, -1).reshape(-1, num_classes), y.reshape(-1)
        keep = y != ignore_index
        return _lovasz_flat(p[keep], y[keep], classes)

    if per_image:
        return torch.stack([flat(probs[i : i + 1], target[i : i + 1]) for i in range(len(probs))]).mean()
    return flat(probs, target)


class LovaszSoftmaxLoss(nn.Module):
    def __init__(self, *, per_image: bool = False, classes: str = "present", ignore_index: int = IGNORE):
        super().__init__()
        if classes not in ("present", "all"):
            raise ConfigError(f"lovasz classes must be 'present' or 'all', got {classes!r}")
        self.per_image, self.classes, self.ignore_index = per_image, classes, ignore_index

    def forward(self, logits, target):
        return lovasz_softmax(logits, target, per_image=self.per_image, classes=self.classes,
                              ignore_index=self.ignore_index)


# --- GCL ---------------------------------------------------------------------------------------------

def gcl_logits(logits: torch.Tensor, class_counts: Counts, *, sigma: float = 1.0 / 3.0, noise_mul: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    r"""$z_k - m\,\frac{\log q_{max} - \log q_k}{\max_i(\log q_{max} - \log q_i)}\,|\mathrm{clamp}(\delta, -1, 1)|$,
    $\delta \sim \mathcal N(0, \sigma)$ per element, $m$ = ``noise_mul``: the released GCL cloud.

    Its weight is BLV's ``balance="first-upload"`` (the weight of BLV's released loss as first uploaded,
    commit 494d428) and its noise BLV's ``clamp="released"`` at σ = 1/3; the sign is the opposite (GCL
    subtracts, BLV adds).
    """
    shape = (1, -1) + (1,) * (logits.ndim - 2)
    # $(\log q_{max} - \log q_k) / \max$
    scale = class_vector(balance_scale, class_counts, "first-upload", device=logits.device, dtype=logits.dtype,
                         num_classes=logits.shape[1])
    # $|\mathrm{clamp}(\delta, -1, 1)|$, $\delta \sim \mathcal N(0, \sigma)$
    delta = sample_variation(logits.shape, sigma=sigma, clamp="released", generator=generator, device=logits.device)
    # $z_k - m \cdot \mathrm{scale}_k \cdot |\delta|$
    return torch.addcmul(logits, delta.to(logits.dtype), scale.view(shape), value=-float(noise_mul))


class GCLLoss(_PixelLoss):
    """Cross entropy of :func:`gcl_logits` in training mode, plain cross entropy in eval mode."""

    def __init__(self, class_counts: Counts, *, sigma: float = 1.0 / 3.0, noise_mul: float = 1.0,
                 generator: torch.Generator | None = None, ignore_index: int = IGNORE, avg_non_ignore: bool = True):
        super().__init__(ignore_index, avg_non_ignore)
        self.class_counts = as_counts(class_counts)
        self.sigma = check_number("sigma", sigma, minimum=0.0)
        self.noise_mul, self.generator = check_number("noise_mul", noise_mul), generator

    def forward(self, logits, target):
        check_inputs(logits, target, self.ignore_index)
        logits = to_label_size(logits, target)
        if self.training:
            logits = gcl_logits(logits, self.class_counts, sigma=self.sigma, noise_mul=self.noise_mul,
                                generator=self.generator)
        return _cross_entropy(logits, target, ignore_index=self.ignore_index, avg_non_ignore=self.avg_non_ignore)


# --- class re-weighting ------------------------------------------------------------------------------

def class_weights(class_counts: Counts, power: float = 1.0) -> torch.Tensor:
    r"""$w_k \propto q_k^{-\text{power}}$, normalised to mean 1 over the classes (float32 [C])."""
    q = fill_zero_counts(class_counts)
    w = q.pow(-float(power))
    return (w * (w.numel() / w.sum())).float()


def reweighted_loss(logits, target, class_counts: Counts, *, power: float = 1.0, ignore_index: int = IGNORE,
                    avg_non_ignore: bool = True) -> torch.Tensor:
    r"""Σ over valid pixels of $w_y \cdot \mathrm{CE}$, divided by the number of pixels (not by Σ w)."""
    check_inputs(logits, target, ignore_index)
    w = class_vector(class_weights, class_counts, check_number("power", power), device=logits.device,
                     dtype=torch.float32, num_classes=logits.shape[1])
    return _cross_entropy(logits.float(), target, weight=w, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)


class ReweightedLoss(_PixelLoss):
    def __init__(self, class_counts: Counts, *, power: float = 1.0, ignore_index: int = IGNORE,
                 avg_non_ignore: bool = True):
        super().__init__(ignore_index, avg_non_ignore)
        self.class_counts, self.power = as_counts(class_counts), check_number("power", power)

    def forward(self, logits, target):
        return reweighted_loss(logits, target, self.class_counts, power=self.power, ignore_index=self.ignore_index,
                               avg_non_ignore=self.avg_non_ignore)


__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "GCLLoss",
    "LogitAdjustedLoss",
    "LovaszSoftmaxLoss",
    "ReweightedLoss",
    "class_weights",
    "focal_loss",
    "gcl_logits",
    "logit_adjusted_logits",
    "logit_adjusted_loss",
    "lovasz_softmax",
    "reweighted_loss",
]
