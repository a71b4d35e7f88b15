r"""Pseudo labels from a teacher's class probabilities: ST, CBST, DA and DARS (DARS Sec. 3.2, Algorithm 1).

A teacher gives every pixel of the :math:`N_u` unlabeled images a probability per class. Its
*confidence* is the largest probability, its *prediction* the class that has it. Each method keeps some
pixels as pseudo labels and marks the rest ignored (255):

* **ST** — one confidence threshold for every class (``threshold``); without one, the single threshold
  that keeps a share :math:`\alpha` of all pixels.
* **CBST** — per class, the top :math:`\alpha` of the pixels predicted as that class (the class-balanced
  thresholds of Zou et al. and Feng et al.).
* **DA** — per class the threshold :math:`t_j` of DARS Eq. (3)–(4): class :math:`j` should receive
  :math:`n_j = \alpha \cdot N_u H W \cdot r_j` pixels, :math:`r_j` its share among the *valid* labeled
  pixels; :math:`t_j` is the :math:`n_j`-th largest confidence among pixels predicted :math:`j` (all of
  them when there are fewer).
* **DARS** — DA, then random sampling: of the :math:`\tilde n_j \ge n_j` pixels that pass :math:`t_j`
  (more than :math:`n_j` when confidences tie at :math:`t_j`, which they do massively in float16, where
  most road pixels are exactly 1.0), keep :math:`s_j = n_j / \tilde n_j`, chosen uniformly at random.

Conventions, stated once
------------------------
* **Rounding.** :math:`n_j = \lfloor \alpha \cdot N_u H W \cdot r_j \rfloor` (floor, as the released
  code's ``int(...)``), computed in float64 with a relative allowance of :math:`10^{-12}` so that a
  product that is whole on paper (0.57 × 100 = 57) is not rounded down by binary arithmetic. CBST's
  count is :math:`\lfloor \alpha\, m_j \rfloor` with :math:`m_j` the pixels predicted :math:`j`
  (the released CBST takes the :math:`(\lfloor \alpha m_j \rfloor + 1)`-th value; we use one rule for
  CBST and DA). A class with :math:`n_j = 0` keeps nothing (:math:`t_j = +\infty`).
* **Ties.** A pixel passes when its confidence is *not smaller* than its class's threshold (Eq. 3).
  DA and CBST keep every tied pixel; DARS keeps exactly :math:`n_j` of class :math:`j` in all.
* **Exactness.** Thresholds are exact order statistics of the confidences *as given* (float16,
  bfloat16, float32 or float64), found by a radix select over the IEEE bit patterns (below): the same
  pixels are kept as by sorting every confidence.
* **Random sampling.** Images are visited in order; image :math:`i` keeps
  :math:`k_{ij} = \lfloor n_j S_{ij} / \tilde n_j \rfloor - \lfloor n_j S_{i-1,j} / \tilde n_j \rfloor`
  of its :math:`c_{ij}` passing pixels of class :math:`j` (:math:`S_{ij} = c_{1j} + \dots + c_{ij}`),
  i.e. its share :math:`s_j c_{ij}` to within one pixel, and :math:`\sum_i k_{ij} = n_j` exactly. Which
  pixels are kept is a uniformly random subset drawn from a generator seeded by :func:`image_seed`
  ``(seed, i)``: NumPy's ``choice`` on the CPU; on a GPU the :math:`k_{ij}` pixels with the smallest of a
  40-bit random key per pixel (torch's generator; equal keys, which matter with probability about
  :math:`c_{ij} / 2^{40}`, go to the first pixel) — the same seed gives the same labels on the same kind
  of device, however many images are handled at once. (The released code keeps
  :math:`c_{ij} - \lfloor c_{ij} (1 - s_j) \rfloor` per image with an unseeded ``randperm``, which
  overshoots :math:`n_j` by up to one pixel per image.)

Exact thresholds in memory independent of the data set's size
-------------------------------------------------------------
For non-negative floats the IEEE bit pattern, read as an integer (the *key*), orders as the value.
A float16 confidence in [0, 1] is one of the 15,361 keys 0x0000 … 0x3C00, so a per-class histogram
over the keys (C × 15,361 counts) *is* the exact distribution of the confidences, whatever the number
of pixels: the :math:`n_j`-th largest is read off its cumulative sum. Wider floats are handled 16 bits
at a time (:class:`ThresholdSearch`): a first pass histograms the top 16 bits and finds, per class, the
bin that holds the :math:`n_j`-th largest; the next pass histograms the next 16 bits of only the keys
in that bin, and so on — 2 passes for float32, 4 for float64, each in C × 65,536 counts. The in-memory
functions (:func:`pseudo_label`, :func:`dars`, …) and the streaming :class:`StreamingLabeler` use this
one search; a test checks they agree.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import numbers
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.classes import IGNORE
from blvnb.errors import BlvnbError, ConfigError

log = logging.getLogger(__name__)

METHODS = ("st", "cbst", "da", "dars")

#: Relative allowance when flooring a pixel count computed in float64 (see "Rounding" above).
_FLOOR_ALLOWANCE = 1e-12

_INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
             torch.float64: torch.int64}
_SIGN_MASK = {16: 0x7FFF, 32: 0x7FFFFFFF, 64: 0x7FFFFFFFFFFFFFFF}


# --- confidences as integer keys ---------------------------------------------------------------------

def key_bits(dtype: torch.dtype) -> int:
    """Bits of a confidence key: 16 (float16, bfloat16), 32 (float32) or 64 (float64)."""
    if dtype not in _INT_VIEW:
        raise ConfigError(f"confidences must be float16, bfloat16, float32 or float64, got {dtype}")
    return torch.finfo(dtype).bits


def confidence_keys(conf: torch.Tensor) -> torch.Tensor:
    """Confidences in [0, 1] → their IEEE bit patterns as int64 (sign cleared: -0.0 is 0), same order."""
    bits = key_bits(conf.dtype)
    return conf.contiguous().view(_INT_VIEW[conf.dtype]).to(torch.int64) & _SIGN_MASK[bits]


def key_of_one(dtype: torch.dtype) -> int:
    """The key of 1.0, the largest key a confidence can have (0x3C00 for float16)."""
    return int(confidence_keys(torch.ones((), dtype=dtype)))


def keys_to_values(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Keys → float64 values; keys above :func:`key_of_one` (the "keep nothing" mark) → +inf."""
    keys = torch.as_tensor(keys, dtype=torch.int64).cpu()
    one = key_of_one(dtype)
    vals = keys.clamp(max=one).to(_INT_VIEW[dtype]).view(dtype).to(torch.float64)
    return torch.where(keys > one, torch.full_like(vals, math.inf), vals)


def threshold_key(threshold: float, dtype: torch.dtype) -> int:
    """The smallest key whose value is ≥ ``threshold``: ``conf >= threshold`` ⇔ ``key(conf) >= this``."""
    if not threshold > 0:
        return 0
    if threshold > 1:
        return key_of_one(dtype) + 1
    v = torch.tensor(float(threshold), dtype=torch.float64).to(dtype)
    k = int(confidence_keys(v))
    return k + 1 if float(v) < threshold else k


def confidence(probs: torch.Tensor, dim: int = 1, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence, prediction): the largest probability over ``dim`` and its class; checks [0, 1]."""
    if not probs.is_floating_point():
        raise BlvnbError(f"probabilities must be a float tensor, got dtype {probs.dtype}")
    if probs.shape[dim] < 1:
        raise BlvnbError(f"probabilities have no class dimension (shape {tuple(probs.shape)})")
    conf, pred = probs.max(dim)
    if check and conf.numel():
        _check_range(float(conf.min()), float(conf.max()))
    return conf, pred


def _check_range(lo: float, hi: float) -> None:
    if not (lo >= 0.0 and hi <= 1.0):
        raise BlvnbError(
            f"probabilities must lie in [0, 1] (found confidences from {lo} to {hi}); pass softmax "
            "outputs, not logits: probs = logits.softmax(1)"
        )


def _bincount(x: torch.Tensor, minlength: int) -> torch.Tensor:
    """Counts of the values 0 … ``minlength``−1 in int64 ``x``. CPU: NumPy's ``bincount`` (several times
    faster than torch's there). GPU, without host synchronisation: for a few bins a comparison with each
    value (no atomics: pseudo labels put most pixels in a few classes), else an atomic ``scatter_add_``."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.bincount(x.numpy(), minlength=minlength).astype(np.int64, copy=False))
    if minlength <= 64:
        return (x.view(1, -1) == torch.arange(minlength, device=x.device).view(-1, 1)).sum(1)
    return _spread_count(x.reshape(-1), minlength, _CUDA_COUNT_REPLICAS)


#: copies of a GPU count (:func:`_spread_count`); also :class:`ThresholdSearch`'s default
_CUDA_COUNT_REPLICAS = 16


@functools.lru_cache(maxsize=32)
def _steps(n: int, step: int, device: torch.device) -> torch.Tensor:
    """``[0, step, 2 step, …]`` (n values, int64) on ``device``, made once."""
    return torch.arange(n, device=device) * step


@functools.lru_cache(maxsize=8)
def _one(device: torch.device) -> torch.Tensor:
    """int64 1 on ``device`` (expanded, the weights of a count), made once."""
    return torch.ones((), dtype=torch.int64, device=device)


def _spread_lanes(idx: torch.Tensor, stride: int, replicas: int) -> torch.Tensor:
    """``idx`` (flat int64) moved to copy ``p mod replicas`` of a ``replicas`` × ``stride`` array, ``p`` the
    element's position — neighbours (one GPU warp) then add to different addresses."""
    n = idx.numel()
    lane = _steps(replicas, stride, idx.device)
    if n % replicas == 0:
        return (idx.view(-1, replicas) + lane).view(-1)
    return idx + lane.repeat(-(-n // replicas))[:n]


def _spread_count(idx: torch.Tensor, nbins: int, replicas: int,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """GPU counts of 0 … ``nbins``−1 in flat int64 ``idx`` (``weights``: int64 to add instead of 1), without
    host synchronisation; spread over ``replicas`` copies (:func:`_spread_lanes`) against atomic contention
    on tied values, then summed."""
    acc = torch.zeros(replicas * nbins, dtype=torch.int64, device=idx.device)
    if weights is None:
        weights = _one(idx.device).expand(idx.numel())
    acc.scatter_add_(0, _spread_lanes(idx, nbins, replicas), weights)
    return acc.view(replicas, nbins).sum(0)


def _floor_count(x: torch.Tensor) -> torch.Tensor:
    """⌊x⌋ of non-negative float64 pixel counts, with the relative allowance of the module docstring."""
    return torch.floor(x.to(torch.float64) * (1.0 + _FLOOR_ALLOWANCE)).to(torch.int64)


# --- the one threshold routine --------------------------------------------------------------------------

class ThresholdSearch:
    """Per class, the exact :math:`n_j`-th largest confidence of a stream of (confidence, class) pixels.

    Use: ``while not s.done: [s.update(conf, pred) for each chunk]; s.finish_pass(targets)``. The targets
    :math:`n_j` are needed only when the first pass ends (a tensor, or a function of the per-class counts
    of predicted pixels, for rules such as CBST that depend on them). One pass for 16-bit confidences,
    two for float32, four for float64 (module docstring); memory C × 15,361 … 65,536 int64 counts.

    The result (:attr:`result`, a dict) holds per class ``keys`` (the threshold's key; ``key_of_one + 1``
    where nothing is kept), ``targets`` :math:`n_j`, ``predicted`` :math:`m_j` and ``passed``
    :math:`\\tilde n_j` (pixels with confidence ≥ :math:`t_j`).

    On a GPU the counts are accumulated in :attr:`cuda_replicas` copies, pixel ``p`` adding to copy
    ``p mod R``: tied confidences (a road region at exactly 1.0) would otherwise make every thread of a
    warp add to one address. The copies are summed when a pass ends. :meth:`update` never waits for the
    device (no host synchronisation): a chunk may be a whole batch of images.
    """

    #: accumulator copies on a GPU (1: a single histogram)
    cuda_replicas = _CUDA_COUNT_REPLICAS

    def __init__(self, num_classes: int, dtype: torch.dtype, device: torch.device | str = "cpu", *,
                 replicas: int | None = None, compact: bool | None = None):
        """``replicas`` (default: :attr:`cuda_replicas` on a GPU, 1 elsewhere) and ``compact`` (select the
        pixels inside the previous pass's bin, a host synchronisation; default: on the CPU only) choose the
        GPU's strategies; they never change the result, and a test runs the GPU's on the CPU."""
        self.num_classes = int(num_classes)
        self.dtype = dtype
        self.bits = key_bits(dtype)
        self.levels = self.bits // 16
        self.level = 0
        self.one = key_of_one(dtype)
        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        self.replicas = max(1, int(replicas if replicas is not None else self.cuda_replicas if cuda else 1))
        self.compact = (not cuda) if compact is None else bool(compact)
        self._new_hist((self.one >> self._shift()) + 1)
        self.predicted: torch.Tensor | None = None
        self.targets: torch.Tensor | None = None
        self._prefix = self._rank = self._above = None
        self.result: dict[str, torch.Tensor] | None = None
        #: the first pass's histogram (for 16-bit keys: the exact per-class distribution of confidences)
        self.first_histogram: torch.Tensor | None = None

    def _shift(self) -> int:
        return 16 * (self.levels - 1 - self.level)

    @property
    def done(self) -> bool:
        return self.result is not None

    @property
    def passes(self) -> int:
        """Passes over the data this search needs at most."""
        return self.levels

    def _new_hist(self, width: int) -> None:
        self._acc = torch.zeros(self.replicas, self.num_classes * width, dtype=torch.int64, device=self.device)
        self._width = width

    @property
    def hist(self) -> torch.Tensor:
        """The current pass's counts, C × bins (the replicas summed)."""
        return self._acc.sum(0).view(self.num_classes, self._width)

    def update(self, conf: torch.Tensor, pred: torch.Tensor) -> None:
        """Count one chunk: ``conf`` (any shape, this search's dtype) and its predicted classes ``pred``."""
        if self.done:
            raise BlvnbError("ThresholdSearch.update after the search finished")
        if conf.dtype != self.dtype:
            raise BlvnbError(f"confidences changed dtype from {self.dtype} to {conf.dtype} within one search")
        key = confidence_keys(conf).reshape(-1).to(self.device)
        rows = pred.reshape(-1).to(self.device, torch.int64)
        shift, width = self._shift(), self._width
        weights = None  # None: every pixel adds 1
        if self.level == 0:
            digit = key >> shift if shift else key
        else:
            # only keys inside the bin found by the previous pass: their top bits equal the class's prefix
            inside = (key >> (shift + 16)) == self._prefix[rows]
            digit = (key >> shift) & 0xFFFF
            if self.compact:
                rows, digit = rows[inside], digit[inside]
            else:  # no compaction (a host synchronisation): the pixels outside add 0
                weights = inside.to(torch.int64)
        # column of (class, digit) in the C × bins histogram
        idx = torch.add(digit, rows, alpha=width)
        if self.replicas == 1:
            if weights is None:
                self._acc[0] += _bincount(idx, self.num_classes * width)
            else:
                self._acc[0].scatter_add_(0, idx, weights)
            return
        if weights is None:
            weights = _one(self.device).expand(idx.numel())
        self._acc.view(-1).scatter_add_(0, _spread_lanes(idx, self.num_classes * width, self.replicas), weights)

    def finish_pass(self, targets: torch.Tensor | Sequence[int] | Callable[[torch.Tensor], torch.Tensor]) -> None:
        """End a pass over the data. ``targets`` (:math:`n_j`) is read at the end of the first pass only."""
        h = self.hist
        if self.level == 0:
            self.first_histogram = h
            self.predicted = h.sum(1)
            n = targets(self.predicted.cpu()) if callable(targets) else targets
            n = torch.as_tensor(n, dtype=torch.int64).reshape(-1).to(self.device)
            if n.numel() != self.num_classes:
                raise BlvnbError(f"{n.numel()} targets for {self.num_classes} classes")
            self.targets = n.clamp(min=0)
            # rank of the wanted value among the class's keys: n_j, or all of them when fewer exist
            self._rank = torch.minimum(self.targets, self.predicted)
            self._above = torch.zeros_like(self._rank)
            self._prefix = torch.where(self._rank > 0, torch.zeros_like(self._rank), torch.full_like(self._rank, -1))
        active = self._rank > 0
        # ge[j, d]: keys of class j in the current bin whose next 16 bits are ≥ d
        ge = h.flip(1).cumsum(1).flip(1)
        # d*: the largest d with ge[j, d] ≥ rank_j — the bin holding the rank-th largest key
        d = ((ge >= self._rank[:, None]).sum(1) - 1).clamp(min=0)
        ge_d = ge.gather(1, d[:, None]).squeeze(1)
        gt_d = ge_d - h.gather(1, d[:, None]).squeeze(1)
        passed = self._above + ge_d
        self._above = torch.where(active, self._above + gt_d, self._above)
        self._rank = torch.where(active, self._rank - gt_d, self._rank)
        self._prefix = torch.where(active, (self._prefix << 16) | d, self._prefix)
        if self.level == self.levels - 1 or not bool(active.any()):
            none = torch.full_like(self._prefix, self.one + 1)
            full = self.level == self.levels - 1
            self.result = {
                "keys": torch.where(active, self._prefix, none) if full else none,
                "targets": self.targets,
                "predicted": self.predicted,
                "passed": torch.where(active, passed, torch.zeros_like(passed)),
            }
            self.result = {k: v.cpu() for k, v in self.result.items()}
            return
        self.level += 1
        self._new_hist(1 << 16)

    # resumable state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"num_classes": self.num_classes, "dtype": str(self.dtype).removeprefix("torch."), "level": self.level,
                "hist": self.hist.cpu(), "predicted": _cpu(self.predicted), "targets": _cpu(self.targets),
                "prefix": _cpu(self._prefix), "rank": _cpu(self._rank), "above": _cpu(self._above),
                "first_histogram": _cpu(self.first_histogram),
                "result": None if self.result is None else {k: v.cpu() for k, v in self.result.items()}}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], device: torch.device | str = "cpu") -> ThresholdSearch:
        s = cls(state["num_classes"], getattr(torch, state["dtype"]), device)
        s.level = state["level"]
        s._new_hist(state["hist"].shape[1])
        s._acc[0] = state["hist"].reshape(-1).to(s.device)

        def dev(x):
            return None if x is None else x.to(s.device)

        s.predicted, s.targets = dev(state["predicted"]), dev(state["targets"])
        s._prefix, s._rank, s._above = dev(state["prefix"]), dev(state["rank"]), dev(state["above"])
        s.first_histogram = dev(state["first_histogram"])
        s.result = state["result"]
        return s


def _cpu(x):
    return None if x is None else x.cpu()


# --- targets (Eq. 4) and the threshold record --------------------------------------------------------

def as_prior(prior, num_classes: int | None = None) -> torch.Tensor:
    """A class prior (shares or counts; tensor, array or list) → float64 CPU tensor summing to 1."""
    if prior is None:
        raise ConfigError("this method needs a class prior r (shares among valid labeled pixels), e.g. "
                          "blvnb.pseudo.distribution.labeled_prior(labeled_dataset)")
    r = torch.as_tensor(np.asarray(prior.cpu() if isinstance(prior, torch.Tensor) else prior, dtype=np.float64))
    r = r.reshape(-1)
    if num_classes is not None and r.numel() != num_classes:
        raise ConfigError(f"the prior has {r.numel()} entries but the probabilities have {num_classes} classes")
    if not bool(torch.isfinite(r).all()) or bool((r < 0).any()) or not float(r.sum()) > 0:
        raise ConfigError(f"a prior must be finite, non-negative and not all zero; got {r.tolist()}")
    return r / r.sum()


def target_counts(prior, alpha: float, total_pixels: int) -> torch.Tensor:
    r"""DARS Eq. (4): :math:`n_j = \lfloor \alpha \cdot N_u H W \cdot r_j \rfloor` (int64[C]).

    ``total_pixels`` is :math:`N_u H W`, every pixel of the unlabeled images; ``prior`` the shares
    :math:`r_j` among valid labeled pixels (normalised here).
    """
    _check_alpha(alpha)
    r = as_prior(prior)
    # n_j = α · N_u·H·W · r_j, floored
    return _floor_count(alpha * float(total_pixels) * r)


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha <= 1):
        raise ConfigError(f"the labeling ratio alpha must be in (0, 1], got {alpha!r} (the paper: 0.2, then 0.5)")


def _rule_targets(method: str, prior: torch.Tensor | None, alpha: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """n_j as a function of the per-class predicted counts m_j (ST's "classes": one, all pixels)."""
    if method in ("da", "dars"):
        return lambda m: target_counts(prior, alpha, int(m.sum()))
    # CBST: ⌊α m_j⌋; ST with no threshold: ⌊α · all pixels⌋ (m has a single entry then)
    return lambda m: _floor_count(alpha * m.to(torch.float64))


@dataclass
class Thresholds:
    r"""What the first pass decides: per class the threshold :math:`t_j` and the counts behind it.

    ``keys``: int64[C] threshold keys (compare :func:`confidence_keys` ≥ key); ``values``: float64[C]
    :math:`t_j` (+inf: class keeps nothing). ``targets`` :math:`n_j`, ``predicted`` :math:`m_j`
    (pixels predicted :math:`j`), ``passed`` :math:`\tilde n_j` (pixels predicted :math:`j` with
    confidence ≥ :math:`t_j`) — per class, or ``None`` for ST with a given threshold (no first pass).
    For ST without a threshold they hold one entry (all classes together).
    """

    method: str
    dtype: torch.dtype
    keys: torch.Tensor
    targets: torch.Tensor | None = None
    predicted: torch.Tensor | None = None
    passed: torch.Tensor | None = None
    total_pixels: int | None = None
    alpha: float | None = None
    threshold: float | None = None

    @property
    def values(self) -> torch.Tensor:
        return keys_to_values(self.keys, self.dtype)

    @property
    def num_classes(self) -> int:
        return int(self.keys.numel())

    @property
    def keep_ratio(self) -> torch.Tensor | None:
        r"""DARS Algorithm 1 line 5: :math:`s_j = n_j / \tilde n_j`, capped at 1 (1 where nothing passed)."""
        if self.targets is None or self.passed is None:
            return None
        n, p = self.targets.to(torch.float64), self.passed.to(torch.float64)
        return torch.where(p > 0, (n / p.clamp(min=1)).clamp(max=1.0), torch.ones_like(p))

    @property
    def never_predicted(self) -> list[int]:
        """Classes the teacher predicts for no pixel (they get no pseudo label, whatever their prior)."""
        if self.predicted is None or self.predicted.numel() != self.num_classes:
            return []
        return [int(j) for j in torch.nonzero(self.predicted == 0).flatten()]

    @property
    def short(self) -> list[int]:
        """Classes with fewer predicted pixels than their target :math:`n_j` (all of them are kept)."""
        if self.targets is None or self.predicted is None or self.targets.numel() != self.num_classes:
            return []
        return [int(j) for j in torch.nonzero(self.predicted < self.targets).flatten()]

    def to_dict(self) -> dict[str, Any]:
        def lst(x):
            return None if x is None else [int(v) for v in x.tolist()]

        return {"method": self.method, "dtype": str(self.dtype).removeprefix("torch."), "keys": lst(self.keys),
                "values": [float(v) for v in self.values.tolist()], "targets": lst(self.targets),
                "predicted": lst(self.predicted), "passed": lst(self.passed), "total_pixels": self.total_pixels,
                "alpha": self.alpha, "threshold": self.threshold,
                "keep_ratio": None if self.keep_ratio is None else [float(v) for v in self.keep_ratio.tolist()],
                "never_predicted": self.never_predicted, "short": self.short}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Thresholds:
        def t(x):
            return None if x is None else torch.tensor(x, dtype=torch.int64)

        return cls(method=d["method"], dtype=getattr(torch, d["dtype"]), keys=t(d["keys"]), targets=t(d["targets"]),
                   predicted=t(d["predicted"]), passed=t(d["passed"]), total_pixels=d["total_pixels"],
                   alpha=d["alpha"], threshold=d["threshold"])


def _from_search(method: str, search: ThresholdSearch, num_classes: int, alpha: float | None) -> Thresholds:
    res = search.result
    keys = res["keys"]
    if keys.numel() == 1 and num_classes != 1:  # ST: one threshold shared by every class
        keys = keys.expand(num_classes).clone()
    th = Thresholds(method=method, dtype=search.dtype, keys=keys, targets=res["targets"],
                    predicted=res["predicted"], passed=res["passed"], total_pixels=int(res["predicted"].sum()),
                    alpha=alpha)
    _warn_missing(th)
    return th


def _warn_missing(th: Thresholds) -> None:
    if th.never_predicted:
        log.warning("%s: the teacher predicts no pixel of class(es) %s; they get no pseudo label",
                    th.method.upper(), th.never_predicted)
    short = [j for j in th.short if j not in th.never_predicted]
    if short:
        log.info("%s: class(es) %s have fewer predicted pixels than their target n_j; all of them are kept",
                 th.method.upper(), short)


def fixed_thresholds(threshold: float, num_classes: int, dtype: torch.dtype) -> Thresholds:
    """ST with a given threshold: every class keeps the pixels with confidence ≥ ``threshold``."""
    if not isinstance(threshold, (int, float)) or math.isnan(threshold):
        raise ConfigError(f"ST's threshold must be a number in [0, 1], got {threshold!r}")
    key = threshold_key(float(threshold), dtype)
    return Thresholds(method="st", dtype=dtype, keys=torch.full((num_classes,), key, dtype=torch.int64),
                      threshold=float(threshold))


def class_thresholds(conf: torch.Tensor, pred: torch.Tensor, targets, num_classes: int | None = None,
                     *, method: str = "da", alpha: float | None = None) -> Thresholds:
    r"""Per class :math:`t_j` = the :math:`n_j`-th largest of ``conf`` among pixels with ``pred == j``.

    ``targets``: :math:`n_j` (int64[C]) or a function of the predicted counts. All pixels at once, in
    memory; :class:`StreamingLabeler` runs the same :class:`ThresholdSearch` over a data set.
    """
    c = int(num_classes if num_classes is not None else (len(targets) if not callable(targets) else pred.max() + 1))
    search = ThresholdSearch(c, conf.dtype, conf.device)
    while not search.done:
        search.update(conf, pred)
        search.finish_pass(targets)
    return _from_search(method, search, c, alpha)


# --- applying thresholds and random sampling ----------------------------------------------------------

def apply_thresholds(conf: torch.Tensor, pred: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """Arg-max labels (int64, shape of ``conf``), ignored (255) where the confidence is below :math:`t_j`."""
    keys_t = thresholds.keys.to(pred.device)
    keep = confidence_keys(conf) >= keys_t[pred]
    return torch.where(keep, pred, torch.full_like(pred, IGNORE))


class _Quota:
    r"""DARS's sampling budget, spread over images in order: exactly :math:`n_j` kept per class (module
    docstring), kept on the labels' device so that a batch of images needs no host synchronisation.

    With :math:`S` the passing pixels of class :math:`j` seen so far, the state is
    :math:`n_j S = q_j \tilde n_j + r_j` (:math:`0 \le r_j < \tilde n_j`), so that
    :math:`\lfloor n_j S / \tilde n_j \rfloor = q_j` is exact in int64 however large :math:`n_j S`
    grows; the cap :math:`\min(S, \tilde n_j)` of the formula (for a source that is not deterministic)
    becomes :math:`\min(q_j, n_j)`."""

    def __init__(self, targets: Sequence[int], passed: Sequence[int], seen: Sequence[int] | None = None,
                 device: torch.device | str = "cpu"):
        n = [int(v) for v in targets]
        tot = [int(v) for v in passed]
        seen = [0] * len(n) if seen is None else [int(v) for v in seen]
        # (q, r) from Python integers (exact), then on the device
        q = [nj * s // t if t > 0 else 0 for nj, s, t in zip(n, seen, tot)]
        r = [nj * s % t if t > 0 else 0 for nj, s, t in zip(n, seen, tot)]

        def dev(x):
            return torch.tensor(x, dtype=torch.int64, device=device)

        self.n, self.tot, self.q, self.r = dev(n), dev(tot).clamp(min=1), dev(q), dev(r)
        # s_j = 1 (nothing passed, or at most n_j did): every passing pixel is kept
        self.all = dev([t <= 0 or nj >= t for nj, t in zip(n, tot)]).bool()

    def take(self, counts: torch.Tensor) -> torch.Tensor:
        r"""Pixels to keep per class in the next images (int64 B×C), given their passing counts
        :math:`c_{ij}` (B×C, images in order): :math:`k_{ij} = \lfloor n_j S_{ij} / \tilde n_j \rfloor -
        \lfloor n_j S_{i-1,j} / \tilde n_j \rfloor`, at most :math:`c_{ij}`."""
        # n_j S_ij = (q_j + ⌊t / ñ_j⌋) ñ_j + t mod ñ_j, with t = r_j + n_j (c_1j + … + c_ij) (fits int64:
        # n_j times a batch's pixels)
        t = self.r + self.n * counts.cumsum(0)
        q = self.q + t // self.tot
        done = torch.minimum(q, self.n)  # ⌊n_j min(S_ij, ñ_j) / ñ_j⌋
        before = torch.cat([torch.minimum(self.q, self.n)[None], done[:-1]])
        keep = torch.where(self.all, counts, torch.minimum(done - before, counts))
        self.q, self.r = q[-1], t[-1] % self.tot
        return keep


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s random sampling: a function of (stream seed, index) only."""
    ss = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index)])
    return int(ss.generate_state(1, np.uint64)[0]) & (2**63 - 1)


def _group_counts(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B×… labels (0 … C−1, 255 ignored) → (group of every pixel, int64 B×P: ``b (C+1) + class``, class C
    for "not labelled"; pixels per group, int64 B×(C+1)), on the labels' device, no host synchronisation."""
    b, c = labels.shape[0], num_classes
    groups = labels.reshape(b, -1).clamp(max=c).to(torch.int64) + _steps(b, c + 1, labels.device).view(b, 1)
    return groups, _bincount(groups.view(-1), b * (c + 1)).view(b, c + 1)


def _dars_quota(thresholds: Thresholds, seen: Sequence[int] | None, device: torch.device | str) -> _Quota:
    """DARS's budget (:class:`_Quota`) for counts of :func:`_group_counts`: the C classes and a last column,
    the pixels not labelled (:math:`\\tilde n = 0`: all "kept", never sampled)."""
    return _Quota([*thresholds.targets.tolist(), 0], [*thresholds.passed.tolist(), 0],
                  None if seen is None else [*seen, 0], device)


#: random bits per pixel of the GPU sampling (:func:`_thin_torch`); the rest of an int64 holds the group
_RAND_BITS = 40


def _thin_numpy(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
                seed: int, first: int) -> None:
    """:func:`_thin` on the CPU: per image a NumPy generator seeded by :func:`image_seed` ``(seed, first + b)``
    picks, class by class, which ``counts − keep`` of the class's pixels to ignore."""
    arr = labels.numpy()
    for b, (cs, ks) in enumerate(zip(counts.tolist(), keep.tolist())):
        if all(k >= c for c, k in zip(cs, ks)):
            continue
        rng = np.random.default_rng(image_seed(seed, first + b))
        row = arr[b]
        for j, (c, k) in enumerate(zip(cs, ks)):
            if k < c:
                members = np.flatnonzero(row == j)
                row[members[rng.choice(members.size, size=c - k, replace=False)]] = IGNORE


def _thin_torch(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
                seed: int, first: int) -> None:
    """:func:`_thin` with batched tensor operations (a GPU): every pixel of image ``b`` draws a
    :data:`_RAND_BITS`-bit random key from torch's generator seeded by :func:`image_seed` ``(seed, first + b)``;
    in each (image, class) to thin, the ``keep`` candidates with the smallest keys stay (equal keys:
    the first in the image). One sort of all candidates of the batch, keyed by (image, class, random key);
    one host synchronisation (the number of candidates)."""
    bsz, dev = counts.shape[0], labels.device
    if groups is None:
        groups = _group_counts(labels, counts.shape[1] - 1)[0]
    # random keys, image by image from its own seed (so the same whatever the batch)
    rand = torch.empty(labels.shape, dtype=torch.int64, device=dev)
    g = torch.Generator(device=dev)
    for b in range(bsz):
        rand[b].random_(0, 1 << _RAND_BITS, generator=g.manual_seed(image_seed(seed, first + b)))
    need = keep < counts  # groups with pixels to drop
    idx = torch.nonzero(need.view(-1)[groups.view(-1)]).squeeze(1)  # the candidates (host synchronisation)
    if idx.numel() == 0:
        return
    # candidates sorted by group, then random key; the sort is stable: equal keys stay in pixel order
    key, order = torch.sort((groups.view(-1)[idx] << _RAND_BITS) | rand.view(-1)[idx], stable=True)
    group = key >> _RAND_BITS
    # a group's candidates sit at [start, start + size): the first `keep` of them stay
    size = (counts * need).view(-1)
    stop = size.cumsum(0) - size + keep.view(-1)
    drop = torch.arange(idx.numel(), device=dev) >= stop[group]
    flat, pos = labels.view(-1), idx[order]
    flat[pos] = torch.where(drop, IGNORE, flat[pos])


def _thin(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
          seed: int, first: int) -> None:
    """DARS's random drop, in place, on B×P labels (images ``first`` … ``first``+B−1, 255 = ignored): in
    image ``b`` ignore a uniformly random ``counts[b, j] − keep[b, j]`` of the pixels labelled ``j``
    (module docstring). ``groups``, ``counts``: from :func:`_group_counts` (``groups`` None: made here);
    ``keep``: the same B×(C+1) shape. NumPy on the CPU, batched tensor operations on a GPU."""
    if labels.device.type == "cpu":
        _thin_numpy(labels, groups, counts, keep, seed, first)
    else:
        _thin_torch(labels, groups, counts, keep, seed, first)


def random_sampling(labels: torch.Tensor, thresholds: Thresholds, seed: int) -> torch.Tensor:
    r"""DARS Algorithm 1 line 6 on N×H×W labels (after :func:`apply_thresholds`): keep :math:`s_j` of each
    class's pseudo-labelled pixels at random — :math:`n_j` in all, image by image (module docstring)."""
    c = thresholds.num_classes
    quota = _dars_quota(thresholds, None, labels.device)
    out = labels.to(torch.uint8, copy=True)  # 0 … C−1 and 255
    pixels = math.prod(labels.shape[1:])
    step = max(1, _BATCH_PIXELS[labels.device.type == "cuda"] // max(1, pixels))  # images at once
    for first in range(0, labels.shape[0], step):
        part = out[first:first + step].view(-1, pixels)
        groups, counts = _group_counts(part, c)
        _thin(part, groups, counts, quota.take(counts), seed, first)
    return out.to(torch.int64)


def _seed_from(generator: torch.Generator | None) -> int:
    """A 62-bit stream seed drawn from ``generator`` (or torch's global generator)."""
    if generator is None:
        return int(torch.randint(0, 2**62, ()).item())
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device).item())


# --- the four methods, in memory ----------------------------------------------------------------------

def _check_probs(probs: torch.Tensor) -> None:
    if not isinstance(probs, torch.Tensor) or probs.ndim != 4:
        raise BlvnbError(f"probs must be an N×C×H×W tensor of class probabilities, got "
                         f"{getattr(probs, 'shape', type(probs))}")
    _check_num_classes(probs.shape[1])


def _check_num_classes(c: int) -> None:
    if c > IGNORE:
        raise BlvnbError(f"{c} classes: pseudo labels are 8-bit with {IGNORE} = ignored, so at most {IGNORE} classes")


def self_training(probs: torch.Tensor, *, threshold: float | None = None,
                  alpha: float = 0.2) -> tuple[torch.Tensor, Thresholds]:
    """ST: one confidence threshold for all classes — ``threshold``, or the one that keeps a share α of pixels."""
    _check_probs(probs)
    conf, pred = confidence(probs)
    if threshold is not None:
        th = fixed_thresholds(threshold, probs.shape[1], conf.dtype)
    else:
        _check_alpha(alpha)
        # every pixel in one "class": the threshold at rank ⌊α · N_u·H·W⌋ of all confidences
        th = class_thresholds(conf, torch.zeros_like(pred), _rule_targets("st", None, alpha), 1, method="st",
                              alpha=alpha)
        th.keys = th.keys.expand(probs.shape[1]).clone()
    return apply_thresholds(conf, pred, th), th


def cbst(probs: torch.Tensor, *, alpha: float = 0.2) -> tuple[torch.Tensor, Thresholds]:
    r"""CBST: per class, the top :math:`\lfloor \alpha m_j \rfloor` confidences of the :math:`m_j` pixels
    predicted :math:`j` (ties at the threshold kept)."""
    _check_probs(probs)
    _check_alpha(alpha)
    conf, pred = confidence(probs)
    th = class_thresholds(conf, pred, _rule_targets("cbst", None, alpha), probs.shape[1], method="cbst", alpha=alpha)
    return apply_thresholds(conf, pred, th), th


def distribution_alignment(probs: torch.Tensor, prior, *, alpha: float = 0.2) -> tuple[torch.Tensor, Thresholds]:
    r"""DA: DARS Algorithm 1 lines 2–3 only — per-class thresholds :math:`t_j` from Eq. (3)–(4), ties kept."""
    _check_probs(probs)
    prior = as_prior(prior, probs.shape[1])
    conf, pred = confidence(probs)
    n = target_counts(prior, alpha, pred.numel())
    th = class_thresholds(conf, pred, n, probs.shape[1], method="da", alpha=alpha)
    return apply_thresholds(conf, pred, th), th


def dars(probs: torch.Tensor, prior, *, alpha: float = 0.2,
         generator: torch.Generator | None = None) -> tuple[torch.Tensor, Thresholds]:
    r"""DARS (Algorithm 1) on :math:`N_u` images held in memory.

    Input: ``probs`` :math:`\{p_i^u\}`, N×C×H×W teacher probabilities; ``prior`` :math:`r`, the class
    shares among valid labeled pixels; the labeling ratio ``alpha`` :math:`\alpha`. Output: N×H×W
    int64 pseudo labels :math:`\{\tilde y_i^u\}` (255 = ignored) and the thresholds with their counts.

    .. math::
        n_j = \alpha \cdot N_u H W \cdot r_j, \qquad
        t_j = \text{the } n_j\text{-th largest confidence among pixels predicted } j, \qquad
        s_j = n_j / \tilde n_j
    """
    _check_probs(probs)
    prior = as_prior(prior, probs.shape[1])
    # confidence max_c p_i^u and prediction arg max_c p_i^u of every pixel
    conf, pred = confidence(probs)
    # --- Distribution Alignment ---
    # line 2: n_j = ⌊α · N_u·H·W · r_j⌋ (Eq. 4)
    n = target_counts(prior, alpha, pred.numel())
    # line 2: t_j = the n_j-th largest confidence among pixels predicted j (Eq. 3)
    t = class_thresholds(conf, pred, n, probs.shape[1], method="dars", alpha=alpha)
    # line 3: initial pseudo labels: arg max, ignored where the confidence is below t_j
    labels = apply_thresholds(conf, pred, t)
    # --- Random Sampling ---
    # line 5: s_j = n_j / ñ_j, ñ_j = pixels of class j that passed t_j (ñ_j > n_j where confidences tie)
    s = t.keep_ratio
    log.debug("DARS keep ratios s_j: %s", s.tolist())
    # line 6: randomly ignore 1 − s_j of the pixels labelled j (n_j are kept, spread over the images)
    labels = random_sampling(labels, t, _seed_from(generator))
    return labels, t


def pseudo_label(probs: torch.Tensor, prior, *, method: str = "dars", alpha: float = 0.2,
                 threshold: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pseudo labels (N×H×W int64, 255 = ignored) from N×C×H×W class probabilities held in memory.

    ``method``: "st" (one ``threshold``; without one, the threshold keeping a share ``alpha`` of all
    pixels), "cbst" (top ``alpha`` of each predicted class), "da" (DARS Eq. 3–4 thresholds from
    ``prior``), "dars" (DA + random sampling with ``generator``). ``prior``: length-C class shares
    among valid labeled pixels (unused by ST and CBST; may be None for them). Conventions (rounding,
    ties, exactness, sampling) in the module docstring. :func:`pseudo_label_with_thresholds` also
    returns the thresholds and counts.
    """
    return pseudo_label_with_thresholds(probs, prior, method=method, alpha=alpha, threshold=threshold,
                                        generator=generator)[0]


def pseudo_label_with_thresholds(probs: torch.Tensor, prior, *, method: str = "dars", alpha: float = 0.2,
                                 threshold: float | None = None,
                                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, Thresholds]:
    """:func:`pseudo_label` and the :class:`Thresholds` it used."""
    method = _check_method(method)
    if method == "st":
        return self_training(probs, threshold=threshold, alpha=alpha)
    if method == "cbst":
        return cbst(probs, alpha=alpha)
    if method == "da":
        return distribution_alignment(probs, prior, alpha=alpha)
    return dars(probs, prior, alpha=alpha, generator=generator)


def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise ConfigError(f"unknown pseudo-labelling method {method!r}; expected one of {', '.join(METHODS)}")
    return m


def kept_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pseudo-labelled pixels per class (int64[C]); 255 and other values are not counted."""
    flat = labels.reshape(-1)
    flat = flat[(flat >= 0) & (flat < num_classes)].to(torch.int64).cpu()
    return _bincount(flat, num_classes)


# --- confidence histograms (DARS Fig. 3) -----------------------------------------------------------

@dataclass
class ConfidenceHistogram:
    """Per class, how many predicted pixels have each float16 confidence: ``counts`` int64 C×15,361,
    ``values`` float64[15,361] (the confidence of each column; the last is exactly 1.0)."""

    counts: torch.Tensor
    values: torch.Tensor

    @property
    def exact_one_share(self) -> torch.Tensor:
        """Per class, the share of its predicted pixels whose confidence is exactly 1.0 (NaN: none predicted)."""
        total = self.counts.sum(1).to(torch.float64)
        ones = self.counts[:, -1].to(torch.float64)
        return torch.where(total > 0, ones / total.clamp(min=1), torch.full_like(total, math.nan))

    def update(self, conf: torch.Tensor, pred: torch.Tensor) -> ConfidenceHistogram:
        """Add a chunk (confidences of any float dtype are rounded to float16 first)."""
        c, width = self.counts.shape
        key = confidence_keys(conf.to(torch.float16)).reshape(-1).cpu()
        rows = pred.reshape(-1).cpu().to(torch.int64)
        self.counts += _bincount(rows * width + key, c * width).view(c, width)
        return self

    @classmethod
    def empty(cls, num_classes: int) -> ConfidenceHistogram:
        width = key_of_one(torch.float16) + 1
        values = keys_to_values(torch.arange(width), torch.float16)
        return cls(torch.zeros(num_classes, width, dtype=torch.int64), values)


def confidence_histogram(probs: torch.Tensor, dim: int = 1) -> ConfidenceHistogram:
    """The float16 confidence histogram of class probabilities (any shape; classes along ``dim``)."""
    conf, pred = confidence(probs, dim)
    return ConfidenceHistogram.empty(probs.shape[dim]).update(conf, pred)


# --- streaming over a data set ------------------------------------------------------------------------

class TensorSource:
    """A source of per-image probabilities from an N×C×H×W tensor (tests, small demonstrations)."""

    def __init__(self, probs: torch.Tensor, names: Sequence[str] | None = None):
        _check_probs(probs)
        self.probs = probs
        self.names = list(names) if names is not None else [f"{i:06d}" for i in range(probs.shape[0])]

    def __len__(self) -> int:
        return self.probs.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.probs[i]

    def relpath(self, i: int) -> str:
        return f"{self.names[i]}.png"


class TeacherSource:
    """Probabilities of a teacher on a data set's images, softmaxed in ``dtype`` (float16 as the released code).

    ``dataset[i]["image"]`` is uint8 3×H×W (normalised here with the ImageNet mean/std) or an already
    normalised float tensor. Inference by :func:`blvnb.engine.evaluate.predict_logits` (``mode``,
    ``crop``, ``stride``, ``flip``, ``amp_dtype``) with the model in eval mode (set here). Output paths
    mirror the data set's label files (``dataset.label_path(i)`` relative to ``dataset.root``), so a
    pseudo label sits where its label would, under another root. ``num_classes``: the model's outputs
    (default: its ``num_classes`` attribute, else 19).
    """

    def __init__(self, model, dataset, *, device="auto", dtype: torch.dtype = torch.float16, mode: str = "whole",
                 crop=None, stride=None, flip: bool = False, amp_dtype: torch.dtype | None = None,
                 num_classes: int | None = None):
        from blvnb.engine.loop import resolve_device

        self.device = resolve_device(device)
        self.model, self.dataset = model.to(self.device).eval(), dataset
        self.dtype = dtype
        self.num_classes = int(num_classes if num_classes is not None else getattr(model, "num_classes", 19))
        self.kw = dict(mode=mode, crop=crop, stride=stride, flip=flip, amp_dtype=amp_dtype)

    def __len__(self) -> int:
        return len(self.dataset)

    @torch.no_grad()
    def __getitem__(self, i: int) -> torch.Tensor:
        from blvnb.data.transforms import Normalize
        from blvnb.engine.evaluate import predict_logits

        image = self.dataset[i]["image"]
        if image.dtype == torch.uint8:
            image, _ = Normalize()(image, None)
        logits = predict_logits(self.model, image[None].to(self.device), num_classes=self.num_classes, **self.kw)[0]
        # softmax in the confidence dtype (float16: head classes tie at exactly 1.0, as in the released code)
        return logits.to(self.dtype).softmax(0)

    def relpath(self, i: int) -> str:
        ds = self.dataset
        try:
            return Path(ds.label_path(i)).relative_to(ds.root).as_posix()
        except (AttributeError, ValueError):
            return f"{ds.names[i]}.png"


def _relpath(source, i: int) -> str:
    return source.relpath(i) if hasattr(source, "relpath") else f"{i:06d}.png"


def read_pseudo_label(path: str | Path) -> torch.Tensor:
    """A pseudo-label PNG written by :class:`StreamingLabeler` → int64 H×W train ids (255 ignored)."""
    from blvnb.data.base import read_index_png

    return torch.from_numpy(read_index_png(Path(path)).astype(np.int64))


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _save_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    _atomic_write(path, lambda p: Image.fromarray(labels, mode="L").save(p, format="PNG", compress_level=1))


@dataclass
class LabelingReport:
    """What the second pass wrote: per-class kept pixels, their distribution, and where the PNGs are."""

    thresholds: Thresholds
    kept: torch.Tensor
    passed_seen: torch.Tensor
    images: int
    out_dir: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def distribution(self) -> torch.Tensor:
        """Shares of the kept pseudo labels per class (float64[C]; zeros when nothing was kept)."""
        k = self.kept.to(torch.float64)
        return k / k.sum() if float(k.sum()) > 0 else k

    def kl_from(self, prior) -> float:
        """KL(prior ‖ pseudo-label distribution), the quantity of DARS Table 5."""
        from blvnb.pseudo.distribution import kl_divergence

        return kl_divergence(prior, self.distribution)

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.to_dict(), "kept": [int(v) for v in self.kept.tolist()],
                "passed_seen": [int(v) for v in self.passed_seen.tolist()], "images": self.images,
                "out_dir": self.out_dir, "distribution": [float(v) for v in self.distribution.tolist()],
                "seconds": self.seconds}


#: pixels of one step when :class:`StreamingLabeler`'s ``batch`` is None: (CPU, GPU)
_BATCH_PIXELS = (1 << 19, 1 << 23)


def _threshold_values(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Threshold keys → values in the confidences' own dtype, so that ``conf >= value`` ⇔
    ``confidence_keys(conf) >= key`` for confidences in [0, 1] (the "keep nothing" key, one above
    :func:`key_of_one`, is the next number above 1.0). Saves making keys of every pixel in pass 2."""
    return keys.clamp(0, key_of_one(dtype) + 1).to(_INT_VIEW[dtype]).view(dtype)


class _Clock:
    """Splits elapsed time into :attr:`StreamingLabeler.seconds` buckets without waiting for the device.

    ``lap(name)``: the time since the previous lap went to ``name`` (None: to nothing). On the CPU a
    ``perf_counter``; on a GPU a CUDA event recorded in the stream, so that a span is the device's timeline
    between two laps — the kernels queued in between, and any time the device waited for the host — read
    when the pass ends (:meth:`flush`, one synchronisation)."""

    def __init__(self, seconds: dict[str, float], device: torch.device):
        self.seconds, self.device = seconds, device
        self.cuda = device.type == "cuda"
        self._last: Any = None
        self._pending: list[tuple[str, Any, Any]] = []

    def lap(self, name: str | None) -> None:
        if self.cuda:
            now = torch.cuda.Event(enable_timing=True)
            now.record(torch.cuda.current_stream(self.device))
        else:
            now = time.perf_counter()
        if name is not None and self._last is not None:
            if self.cuda:
                self._pending.append((name, self._last, now))
            else:
                self.seconds[name] += now - self._last
        self._last = now
        if len(self._pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pending[-1][2].synchronize()
            for name, a, b in self._pending:
                self.seconds[name] += a.elapsed_time(b) / 1e3
            self._pending = []


class StreamingLabeler:
    r"""ST / CBST / DA / DARS over a data set, in memory independent of its size; resumable.

    ``source``: ``len(source)`` images, ``source[i]`` → C×H×W probabilities (any float dtype; the
    exactness rule of the module docstring applies to that dtype), optionally ``source.relpath(i)`` → the
    PNG's path relative to ``out_dir`` (e.g. :class:`TeacherSource`, :class:`TensorSource`).

    * :meth:`fit` — pass 1: per-class confidence histograms → thresholds (float32 needs a second pass,
      float64 four: :class:`ThresholdSearch`). ST with a given threshold skips it.
    * :meth:`write` — pass 2: labels each image (threshold, then DARS's sampling seeded by
      ``(seed, i)``) and writes 8-bit PNGs of train ids (255 ignored) to ``out_dir / relpath(i)``.
      :meth:`labels` yields them instead.

    ``state_dir``: where progress is kept (histogram every ``checkpoint_every`` images, the thresholds,
    and after every written batch of PNGs the sampling counters); rerunning with the same settings resumes
    without redoing finished images, a change of settings starts over. ``cache_dir``: pass 1 stores each
    image's confidence (its dtype) and prediction (uint8) — 3 bytes a pixel in float16 instead of 2·C — and
    later passes read them instead of asking the source again. ``device``: where the histograms and
    thresholds live ("auto": the GPU when there is one). :attr:`seconds` splits time into the source's and
    ours.

    ``batch``: images handled per step (consecutive images of one size): the arg max of each goes into one
    B×H×W tensor and every other step runs once per batch; None: as many as fill 2¹⁹ pixels on the CPU,
    2²³ on a GPU (one image of 1024×2048 on the CPU, four on a GPU). Results do not depend on it. Progress
    is saved at batch boundaries (an interrupted batch is redone). On a GPU nothing waits for the device
    within a batch, except DARS's sampling once (the number of pixels to sample from); times are read from
    CUDA events when a pass ends.
    """

    def __init__(self, prior=None, *, method: str = "dars", alpha: float = 0.2, threshold: float | None = None,
                 num_classes: int | None = None, seed: int = 0, device: str | torch.device = "auto",
                 state_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 checkpoint_every: int = 1, progress: bool = True, batch: int | None = None):
        from blvnb.engine.loop import resolve_device

        self.method = _check_method(method)
        if self.method != "st" or threshold is None:
            _check_alpha(alpha)
        if self.method in ("da", "dars"):
            prior = as_prior(prior, num_classes)
            num_classes = prior.numel()
        elif prior is not None:
            prior = as_prior(prior, num_classes)
        if batch is not None and not (isinstance(batch, numbers.Integral) and batch >= 1):
            raise ConfigError(f"batch must be a positive number of images or None (automatic), got {batch!r}")
        self.prior, self.alpha, self.threshold = prior, float(alpha), threshold
        self.num_classes = num_classes
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.progress = progress
        self.batch = None if batch is None else int(batch)
        self.thresholds: Thresholds | None = None
        self.histogram: ConfidenceHistogram | None = None
        self.seconds = {"source": 0.0, "pass1": 0.0, "pass2": 0.0, "write": 0.0}
        self.calls = 0  # images asked of the source
        self._clock = _Clock(self.seconds, self.device)
        self._range: tuple[torch.Tensor, torch.Tensor] | None = None  # smallest, largest confidence, on the device
        self._values: torch.Tensor | None = None  # threshold values on the device (pass 2)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None  # a batch's (conf, pred), reused

    # settings → digest: a state written under other settings is not resumed ----------------------
    def _digest(self, source) -> str:
        h = hashlib.sha256()
        h.update(json.dumps({"method": self.method, "alpha": self.alpha, "threshold": self.threshold,
                             "prior": None if self.prior is None else [round(float(v), 15) for v in self.prior],
                             "seed": self.seed, "n": len(source)}, sort_keys=True).encode())
        for i in range(len(source)):
            h.update(_relpath(source, i).encode() + b"\0")
        return h.hexdigest()[:16]

    # reading: images → batches of (confidence, prediction) on the device ------------------------------
    def batch_size(self, size: Sequence[int]) -> int:
        """Images per step for images of ``size`` (H, W): :attr:`batch`, else by the pixel budget."""
        if self.batch is not None:
            return self.batch
        return max(1, _BATCH_PIXELS[self.device.type == "cuda"] // max(1, math.prod(size)))

    def _fetch(self, source, i: int, bucket: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Image ``i``: its (confidence, prediction) from the cache when there, else its C×H×W probabilities
        from the source (time in ``source[i]`` goes to the source, what came before to ``bucket``)."""
        cached = self.cache_dir / f"{i:07d}.pt" if self.cache_dir is not None else None
        if cached is not None and cached.is_file():
            d = torch.load(cached, weights_only=True)
            return d["conf"], d["pred"]
        self._clock.lap(bucket)
        probs = source[i]
        if probs.is_cuda and self.device.type != "cuda":
            torch.cuda.synchronize(probs.device)  # the source's kernels are its own time
        self._clock.lap("source")
        self.calls += 1
        if probs.ndim == 4 and probs.shape[0] == 1:
            probs = probs[0]
        if probs.ndim != 3:
            raise BlvnbError(f"source[{i}] must be C×H×W probabilities, got shape {tuple(probs.shape)}")
        if not probs.is_floating_point():
            raise BlvnbError(f"probabilities must be a float tensor, got dtype {probs.dtype}")
        if self.num_classes is None:
            _check_num_classes(probs.shape[0])
            self.num_classes = probs.shape[0]
        elif probs.shape[0] != self.num_classes:
            raise BlvnbError(f"source[{i}] has {probs.shape[0]} classes, expected {self.num_classes}")
        return probs

    def _batch_buffers(self, cap: int, size: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        buf = self._buffers
        if buf is None or buf[0].shape[0] < cap or buf[0].shape[1:] != size or buf[0].dtype != dtype:
            buf = (torch.empty(cap, *size, dtype=dtype, device=self.device),
                   torch.empty(cap, *size, dtype=torch.int64, device=self.device))
            self._buffers = buf
        return buf

    def _images(self, source, start: int, *, bucket: str,
                store: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Images ``start`` … in batches: ``(first index, conf B×H×W, pred B×H×W int64)`` on the device,
        B ≤ :meth:`batch_size` consecutive images of one size and dtype. The arg max of each image is
        written straight into the batch, whose tensors the next batch reuses. ``store``: write what came
        from the source to ``cache_dir``."""
        n = len(source)

        def size_of(item):
            return tuple(item[0].shape) if isinstance(item, tuple) else tuple(item.shape[1:])

        def dtype_of(item):
            return item[0].dtype if isinstance(item, tuple) else item.dtype

        def put(item, conf, pred):
            if isinstance(item, tuple):  # from the cache
                conf.copy_(item[0])
                pred.copy_(item[1])
            elif item.device == conf.device:
                torch.max(item, 0, out=(conf, pred))
            else:
                c, p = item.max(0)
                conf.copy_(c)
                pred.copy_(p)

        i, held = start, None
        while i < n:
            item = held if held is not None else self._fetch(source, i, bucket)
            held = None
            size, dtype = size_of(item), dtype_of(item)
            cap = min(self.batch_size(size[-2:]), n - i)
            conf, pred = self._batch_buffers(cap, size, dtype)
            fresh = []  # slots that came from the source
            b = 0
            while True:
                put(item, conf[b], pred[b])
                if not isinstance(item, tuple):
                    fresh.append(b)
                b += 1
                if b == cap:
                    break
                item = self._fetch(source, i + b, bucket)
                if size_of(item) != size or dtype_of(item) != dtype:
                    held = item  # starts the next batch
                    break
            conf, pred = conf[:b], pred[:b]
            # the [0, 1] check, kept on the device and read once a pass ends
            lo, hi = torch.aminmax(conf)
            self._range = (lo, hi) if self._range is None else (torch.minimum(self._range[0], lo),
                                                                torch.maximum(self._range[1], hi))
            if store and fresh and self.cache_dir is not None:
                cc, pp = conf.cpu(), pred.to(torch.uint8).cpu()
                for k in fresh:
                    payload = {"conf": cc[k].clone(), "pred": pp[k].clone()}
                    _atomic_write(self.cache_dir / f"{i + k:07d}.pt", lambda p, x=payload: torch.save(x, p))
            yield i, conf, pred
            i += b

    def _check_range(self) -> None:
        if self._range is not None:
            lo, hi = torch.stack(self._range).tolist()
            _check_range(lo, hi)

    def _state(self, name: str) -> Path | None:
        return self.state_dir / name if self.state_dir is not None else None

    # pass 1 -------------------------------------------------------------------------------------------
    def fit(self, source) -> Thresholds | None:
        """Pass 1: the thresholds of every class (resumed from ``state_dir`` when possible). ST with a
        given threshold has no first pass: None, and pass 2 makes the thresholds."""
        n = len(source)
        if n == 0:
            raise BlvnbError("the unlabeled set is empty: nothing to pseudo-label")
        digest = self._digest(source)
        done = self._state("thresholds.json")
        if done is not None and done.is_file():
            saved = json.loads(done.read_text())
            if saved.get("digest") == digest:
                self.thresholds = Thresholds.from_dict(saved["thresholds"])
                self.num_classes = self.thresholds.num_classes
                log.info("pass 1 already done (%s): thresholds read back", done)
                return self.thresholds
        if self.method == "st" and self.threshold is not None:
            return None  # no first pass: the thresholds are made when pass 2 sees the confidences' dtype

        search, start, hist = None, 0, None
        ckpt = self._state("pass1.pt")
        if ckpt is not None and ckpt.is_file():
            st = torch.load(ckpt, weights_only=True)
            if st.get("digest") == digest:
                search = ThresholdSearch.from_state_dict(st["search"], self.device)
                start = int(st["next"])
                self.num_classes = st["num_classes"]
                if st.get("hist_counts") is not None:
                    hist = ConfidenceHistogram(st["hist_counts"], ConfidenceHistogram.empty(1).values)
                log.info("pass 1: resuming at image %d of %d (pass %d)", start, n, search.level + 1)
            else:
                log.warning("pass 1: %s was written with other settings; starting over", ckpt)
        merged = self.method == "st"
        targets = _rule_targets(self.method, self.prior, self.alpha)

        def save(next_i: int) -> None:
            if ckpt is not None and search is not None:
                payload = {"digest": digest, "next": next_i, "search": search.state_dict(),
                           "num_classes": self.num_classes, "hist_counts": None if hist is None else hist.counts}
                _atomic_write(ckpt, lambda p: torch.save(payload, p))

        every = self.checkpoint_every
        while search is None or not search.done:
            level = 0 if search is None else search.level
            bar = tqdm(desc=f"{self.method.upper()} pass 1.{level + 1}: confidence histogram",
                       disable=not self.progress, leave=False, total=n, initial=start)
            self._clock.lap(None)
            for first, conf, pred in self._images(source, start, bucket="pass1", store=level == 0):
                if search is None:
                    search = ThresholdSearch(1 if merged else self.num_classes, conf.dtype, self.device)
                    if merged and conf.dtype == torch.float16:  # ST's search merges the classes: count them apart
                        hist = ConfidenceHistogram.empty(self.num_classes)
                if hist is not None and search.level == 0:
                    hist.update(conf, pred)
                search.update(conf, torch.zeros_like(pred) if merged else pred)
                self._clock.lap("pass1")
                after = first + conf.shape[0]
                bar.update(conf.shape[0])
                if after < n and after // every > first // every:  # a multiple of checkpoint_every passed
                    save(after)
                    self._clock.lap(None)
            bar.close()
            self._clock.flush()
            self._check_range()
            search.finish_pass(targets)
            start = 0
            save(0)
        self.thresholds = _from_search(self.method, search, self.num_classes, self.alpha)
        if search.dtype == torch.float16:
            counts = hist.counts if hist is not None else search.first_histogram.cpu()
            self.histogram = ConfidenceHistogram(counts, ConfidenceHistogram.empty(1).values)
        return self._save_thresholds(digest)

    def _save_thresholds(self, digest: str) -> Thresholds:
        path = self._state("thresholds.json")
        if path is not None:
            text = json.dumps({"digest": digest, "thresholds": self.thresholds.to_dict()}, indent=1)
            _atomic_write(path, lambda p: p.write_text(text))
        return self.thresholds

    # pass 2 -------------------------------------------------------------------------------------------
    def label_batch(self, conf: torch.Tensor, pred: torch.Tensor, first: int,
                    quota: _Quota | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``first`` … ``first``+B−1 (``conf``, ``pred``: B×H×W): their labels (uint8 B×H×W, 255
        ignored), passing and kept pixels per class (int64 B×C), all on the device. DARS's ``quota``
        (:func:`_dars_quota`, the counts of the images before) decides how many of each class to keep;
        without one, all."""
        c = self.num_classes
        if self.thresholds is None:  # ST with a given threshold: now the dtype is known
            self.thresholds = fixed_thresholds(self.threshold, c, conf.dtype)
        if conf.dtype != self.thresholds.dtype:
            raise BlvnbError(f"confidences changed dtype from {self.thresholds.dtype} (pass 1) to {conf.dtype}")
        if self._values is None:
            self._values = _threshold_values(self.thresholds.keys, conf.dtype).to(self.device)
        # Algorithm 1 line 3: the arg max where the confidence is ≥ t_j of its class, else ignored
        below = conf < self._values.index_select(0, pred.reshape(-1)).view(pred.shape)
        # j | 255 = 255 (j < C ≤ 255); on the CPU much faster than where / masked_fill with a ragged mask
        labels = pred.to(torch.uint8).bitwise_or_(below.to(torch.uint8).mul_(IGNORE))
        groups, counts = _group_counts(labels, c)  # counts[:, c]: pixels not labelled
        if quota is None:
            return labels, counts[:, :c], counts[:, :c]
        # line 6: per class keep k_ij of the c_ij passing pixels, at random
        keep = quota.take(counts)
        _thin(labels.view(labels.shape[0], -1), groups, counts, keep, self.seed, first)
        return labels, counts[:, :c], keep[:, :c]

    def label_image(self, conf: torch.Tensor, pred: torch.Tensor, index: int,
                    quota: _Quota | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image (:meth:`label_batch` of one): labels int64 H×W, passing and kept counts int64[C]."""
        labels, counts, kept = self.label_batch(conf[None], pred[None], index, quota)
        return labels[0].to(torch.int64), counts[0], kept[0]

    def _label_batches(self, source, start: int = 0, seen: Sequence[int] | None = None
                       ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Pass 2 in batches: ``(first index, labels, passing counts, kept counts)`` as :meth:`label_batch`."""
        if self.thresholds is None:
            self.fit(source)
        th = self.thresholds
        quota = _dars_quota(th, seen, self.device) if self.method == "dars" else None
        self._values = None
        self._clock.lap(None)
        for first, conf, pred in self._images(source, start, bucket="pass2"):
            out = self.label_batch(conf, pred, first, quota)
            self._clock.lap("pass2")
            yield (first, *out)
            self._clock.lap(None)  # the consumer's time is not ours
        self._clock.flush()

    def labels(self, source, start: int = 0,
               seen: Sequence[int] | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Pass 2 without writing: ``(i, labels, passing counts, kept counts)`` in order from ``start``
        (labels: int64 H×W on the labeler's device; counts: int64[C] there). ``seen``: per class the
        passing pixels of images 0 … ``start``−1 (to resume DARS's sampling)."""
        for first, labels, counts, kept in self._label_batches(source, start, seen):
            for b in range(labels.shape[0]):
                yield first + b, labels[b].to(torch.int64), counts[b], kept[b]

    def write(self, source, out_dir: str | Path | None) -> LabelingReport:
        """Pass 2: label every image and write its PNG under ``out_dir`` (None: count only)."""
        if self.thresholds is None:
            self.fit(source)
        n = len(source)
        digest = self._digest(source)
        out = Path(out_dir) if out_dir is not None else None
        start, seen, kept_sum, passed_sum = 0, None, None, None
        state_path = self._state("pass2.json")
        if state_path is not None and state_path.is_file():
            st = json.loads(state_path.read_text())
            if st.get("digest") == digest:
                start, seen = int(st["next"]), st["seen"]
                kept_sum, passed_sum = torch.tensor(st["kept"]), torch.tensor(st["passed"])
                log.info("pass 2: resuming at image %d of %d", start, n)
        bar = tqdm(desc=f"{self.method.upper()} pass 2: pseudo labels", disable=not self.progress, leave=False,
                   total=n, initial=start)
        # the sums stay on the device: read when a state is written (once a batch) and at the end
        for first, labels, counts, kept in self._label_batches(source, start, seen):
            passed_sum = counts.sum(0) if passed_sum is None else passed_sum.to(self.device) + counts.sum(0)
            kept_sum = kept.sum(0) if kept_sum is None else kept_sum.to(self.device) + kept.sum(0)
            if out is not None:
                arr = labels.cpu().numpy()
                for b in range(arr.shape[0]):
                    _save_png(out / _relpath(source, first + b), arr[b])
            if state_path is not None:
                text = json.dumps({"digest": digest, "next": first + labels.shape[0], "seen": passed_sum.tolist(),
                                   "kept": kept_sum.tolist(), "passed": passed_sum.tolist()})
                _atomic_write(state_path, lambda p: p.write_text(text))
            self._clock.lap("write")
            bar.update(labels.shape[0])
        bar.close()
        self._clock.flush()
        self._check_range()
        th = self.thresholds
        c = self.num_classes
        kept_sum = torch.zeros(c, dtype=torch.int64) if kept_sum is None else kept_sum.cpu()
        passed_sum = torch.zeros(c, dtype=torch.int64) if passed_sum is None else passed_sum.cpu()
        if th.passed is not None and th.passed.numel() == c and not torch.equal(passed_sum, th.passed):
            log.warning("pass 2 saw other passing counts than pass 1 (%s vs %s): the source is not deterministic "
                        "(use cache_dir to label from stored confidences)", passed_sum.tolist(), th.passed.tolist())
        report = LabelingReport(thresholds=th, kept=kept_sum, passed_seen=passed_sum, images=n,
                                out_dir=None if out is None else str(out), seconds=dict(self.seconds))
        if self.state_dir is not None:
            text = json.dumps(report.to_dict(), indent=1)
            _atomic_write(self.state_dir / "report.json", lambda p: p.write_text(text))
        return report

    def run(self, source, out_dir: str | Path | None) -> LabelingReport:
        """:meth:`fit` then :meth:`write`."""
        self.fit(source)
        return self.write(source, out_dir)


__all__ = [
    "METHODS", "ConfidenceHistogram", "LabelingReport", "StreamingLabeler", "TeacherSource", "TensorSource",
    "ThresholdSearch", "Thresholds", "apply_thresholds", "as_prior", "cbst", "class_thresholds", "confidence",
    "confidence_histogram", "confidence_keys", "dars", "distribution_alignment", "fixed_thresholds", "image_seed",
    "key_bits", "key_of_one", "kept_counts", "keys_to_values", "pseudo_label", "pseudo_label_with_thresholds",
    "random_sampling", "read_pseudo_label", "self_training", "target_counts", "threshold_key",
]
