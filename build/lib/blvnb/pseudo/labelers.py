r"""Pseudo labels from a teacher's class probabilities: ST, CBST, DA and DARS (DARS Sec. 3.2, Algorithm 1).

A teacher gives every pixel of the :math:`N_u` unlabeled images a probability per class. Its
*confidence* is the largest probability, its *prediction* the class that has it. Each method keeps some
pixels as pseudo labels and marks the rest ignored (255):

* **ST** — one confidence threshold for every class (``threshold``, in [0, 1]); without one, the single
  threshold that keeps a share :math:`\alpha` of all pixels.
* **CBST** — per class, the top :math:`\alpha` of the pixels predicted as that class (the class-balanced
  thresholds of Zou et al. and Feng et al.).
* **DA** — per class the threshold :math:`t_j` of DARS Eq. (3)–(4): class :math:`j` should receive
  :math:`n_j = \alpha \cdot N_u H W \cdot r_j` pixels, :math:`r_j` its share among the *valid* labeled
  pixels; :math:`t_j` is the :math:`n_j`-th largest confidence among pixels predicted :math:`j` (all of
  them when there are fewer).
* **DARS** — DA, then random sampling: of the :math:`\tilde n_j \ge n_j` pixels that pass :math:`t_j`
  (more than :math:`n_j` when confidences tie at :math:`t_j`, which they do massively in float16, where
  most road pixels are exactly 1.0), keep :math:`s_j = n_j / \tilde n_j`, chosen uniformly at random.

This module holds the four labellers on probabilities held in memory, to be read against Algorithm 1.
Their parts live beside it: :mod:`blvnb.pseudo.thresholds` (confidence keys, the one exact threshold
search, the budgets :math:`n_j`, rounding and ties), :mod:`blvnb.pseudo.sampling` (applying thresholds,
DARS's integer quotas and seeded random subsets) and :mod:`blvnb.pseudo.streaming` (the same labellers
over a whole data set, resumable, with the same results). The names of those modules are re-exported
here, so that ``labelers.StreamingLabeler`` and the like keep working.
"""

from __future__ import annotations

import logging

import torch

from blvnb.pseudo.distribution import prior_from_counts
from blvnb.pseudo.sampling import apply_thresholds, random_sampling, seed_from
from blvnb.pseudo.thresholds import (METHODS, Thresholds, check_alpha, check_method, check_probs, class_thresholds,
                                     confidence, fixed_thresholds, rule_targets, target_counts)

log = logging.getLogger(__name__)


def self_training(probs: torch.Tensor, *, threshold: float | None = None,
                  alpha: float = 0.2) -> tuple[torch.Tensor, Thresholds]:
    """ST: one confidence threshold for all classes — ``threshold`` (in [0, 1]), or the one that keeps a
    share α of pixels."""
    check_probs(probs)
    conf, pred = confidence(probs)
    if threshold is not None:
        th = fixed_thresholds(threshold, probs.shape[1], conf.dtype)
    else:
        check_alpha(alpha)
        # every pixel in one "class": the threshold at rank ⌊α · N_u·H·W⌋ of all confidences
        th = class_thresholds(conf, torch.zeros_like(pred), rule_targets("st", None, alpha), 1, method="st",
                              alpha=alpha)
        th.keys = th.keys.expand(probs.shape[1]).clone()
    return apply_thresholds(conf, pred, th), th


def cbst(probs: torch.Tensor, *, alpha: float = 0.2) -> tuple[torch.Tensor, Thresholds]:
    r"""CBST: per class, the top :math:`\lfloor \alpha m_j \rfloor` confidences of the :math:`m_j` pixels
    predicted :math:`j` (ties at the threshold kept)."""
    check_probs(probs)
    check_alpha(alpha)
    conf, pred = confidence(probs)
    th = class_thresholds(conf, pred, rule_targets("cbst", None, alpha), probs.shape[1], method="cbst", alpha=alpha)
    return apply_thresholds(conf, pred, th), th


def distribution_alignment(probs: torch.Tensor, prior, *, alpha: float = 0.2,
                           prior_total: float | None = None) -> tuple[torch.Tensor, Thresholds]:
    r"""DA: DARS Algorithm 1 lines 2–3 only — per-class thresholds :math:`t_j` from Eq. (3)–(4), ties kept.
    ``prior_total``: the released budgets (:func:`~blvnb.pseudo.thresholds.target_counts`)."""
    check_probs(probs)
    prior = prior_from_counts(prior, probs.shape[1]) if prior_total is None else prior
    conf, pred = confidence(probs)
    n = target_counts(prior, alpha, pred.numel(), prior_total=prior_total)
    th = class_thresholds(conf, pred, n, probs.shape[1], method="da", alpha=alpha)
    return apply_thresholds(conf, pred, th), th


def dars(probs: torch.Tensor, prior, *, alpha: float = 0.2, generator: torch.Generator | None = None,
         prior_total: float | None = None) -> tuple[torch.Tensor, Thresholds]:
    r"""DARS (Algorithm 1) on :math:`N_u` images held in memory.

    Input: ``probs`` :math:`\{p_i^u\}`, N×C×H×W teacher probabilities; ``prior`` :math:`r`, the class
    shares among valid labeled pixels; the labeling ratio ``alpha`` :math:`\alpha`. Output: N×H×W
    int64 pseudo labels :math:`\{\tilde y_i^u\}` (255 = ignored) and the thresholds with their counts.
    ``prior_total``: the released budgets (:func:`~blvnb.pseudo.thresholds.target_counts`).

    .. math::
        n_j = \alpha \cdot N_u H W \cdot r_j, \qquad
        t_j = \text{the } n_j\text{-th largest confidence among pixels predicted } j, \qquad
        s_j = n_j / \tilde n_j
    """
    check_probs(probs)
    prior = prior_from_counts(prior, probs.shape[1]) if prior_total is None else prior
    # Input: confidence max_c p_i^u and prediction arg max_c p_i^u of every pixel
    conf, pred = confidence(probs)
    # line 1: --- Distribution Alignment ---
    # line 2: n_j = ⌊α · N_u·H·W · r_j⌋ (Eq. 4)
    n = target_counts(prior, alpha, pred.numel(), prior_total=prior_total)
    # line 2: t_j = the n_j-th largest confidence among pixels predicted j (Eq. 3)
    t = class_thresholds(conf, pred, n, probs.shape[1], method="dars", alpha=alpha)
    # line 3: initial pseudo labels: arg max, ignored where the confidence is below t_j
    labels = apply_thresholds(conf, pred, t)
    # line 4: --- Random Sampling ---
    # line 5: s_j = n_j / ñ_j, ñ_j = pixels of class j that passed t_j (ñ_j > n_j where confidences tie)
    s = t.keep_ratio
    log.debug("DARS keep ratios s_j: %s", s.tolist())
    # line 6: randomly ignore 1 − s_j of the pixels labelled j — as integer quotas: image i keeps
    # ⌊n_j S_i / ñ_j⌋ − ⌊n_j S_{i−1} / ñ_j⌋ of its passing pixels (S_i: those of images 1 … i), so that
    # exactly n_j are kept in all (blvnb.pseudo.sampling.Quota), a random subset seeded by (seed, image)
    labels = random_sampling(labels, t, seed_from(generator))
    return labels, t


def pseudo_label(probs: torch.Tensor, prior, *, method: str = "dars", alpha: float = 0.2,
                 threshold: float | None = None, generator: torch.Generator | None = None,
                 prior_total: float | None = None) -> torch.Tensor:
    """Pseudo labels (N×H×W int64, 255 = ignored) from N×C×H×W class probabilities held in memory.

    ``method``: "st" (one ``threshold`` in [0, 1]; without one, the threshold keeping a share ``alpha``
    of all pixels), "cbst" (top ``alpha`` of each predicted class), "da" (DARS Eq. 3–4 thresholds from
    ``prior``), "dars" (DA + random sampling with ``generator``). ``prior``: length-C class shares
    among valid labeled pixels (unused by ST and CBST; may be None for them); ``prior_total``: DA and
    DARS with the released budgets. Conventions (rounding, ties, exactness, sampling) in
    :mod:`blvnb.pseudo.thresholds` and :mod:`blvnb.pseudo.sampling`.
    :func:`pseudo_label_with_thresholds` also returns the thresholds and counts.
    """
    return pseudo_label_with_thresholds(probs, prior, method=method, alpha=alpha, threshold=threshold,
                                        generator=generator, prior_total=prior_total)[0]


def pseudo_label_with_thresholds(probs: torch.Tensor, prior, *, method: str = "dars", alpha: float = 0.2,
                                 threshold: float | None = None, generator: torch.Generator | None = None,
                                 prior_total: float | None = None) -> tuple[torch.Tensor, Thresholds]:
    """:func:`pseudo_label` and the :class:`~blvnb.pseudo.thresholds.Thresholds` it used."""
    method = check_method(method)
    if method == "st":
        return self_training(probs, threshold=threshold, alpha=alpha)
    if method == "cbst":
        return cbst(probs, alpha=alpha)
    if method == "da":
        return distribution_alignment(probs, prior, alpha=alpha, prior_total=prior_total)
    return dars(probs, prior, alpha=alpha, generator=generator, prior_total=prior_total)


# The labellers' parts, re-exported under their old names (code written against the one-module layout).
from blvnb.pseudo.sampling import (Quota, group_counts, image_seed, kept_counts,  # noqa: E402
                                   thin)
from blvnb.pseudo.streaming import (ConfidenceHistogram, LabelingReport, StreamingLabeler,  # noqa: E402
                                    TensorSource, confidence_histogram, read_pseudo_label)
from blvnb.pseudo.thresholds import (ThresholdSearch, confidence_keys, key_bits, key_of_one,  # noqa: E402
                                     keys_to_values, threshold_key)

__all__ = [
    "METHODS", "ConfidenceHistogram", "LabelingReport", "Quota", "StreamingLabeler", "TensorSource",
    "ThresholdSearch", "Thresholds", "apply_thresholds", "cbst", "class_thresholds", "confidence",
    "confidence_histogram", "confidence_keys", "dars", "distribution_alignment", "fixed_thresholds", "group_counts",
    "image_seed", "key_bits", "key_of_one", "kept_counts", "keys_to_values", "pseudo_label",
    "pseudo_label_with_thresholds", "random_sampling", "read_pseudo_label", "self_training", "target_counts", "thin",
    "threshold_key",
]
