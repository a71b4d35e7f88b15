r"""Thresholds of the pseudo labellers: confidences as integer keys, the one exact threshold search,
the budgets :math:`n_j` (DARS Eq. 4) and the record of what the first pass decided.

A teacher gives every pixel a probability per class; its *confidence* is the largest, its *prediction*
the class that has it. Every labeller (:mod:`blvnb.pseudo.labelers`) keeps, per class :math:`j`, the
pixels predicted :math:`j` whose confidence is at least a threshold :math:`t_j`; this module finds the
:math:`t_j`.

Conventions, stated once
------------------------
* **Rounding.** :math:`n_j = \lfloor \alpha \cdot N_u H W \cdot r_j \rfloor` (floor, as the released
  code's ``int(...)``), computed in float64 with a relative allowance of :math:`10^{-12}` so that a
  product that is whole on paper (0.57 × 100 = 57) is not rounded down by binary arithmetic. CBST's
  count is :math:`\lfloor \alpha\, m_j \rfloor` with :math:`m_j` the pixels predicted :math:`j`
  (the released CBST takes the :math:`(\lfloor \alpha m_j \rfloor + 1)`-th value; we use one rule for
  CBST and DA). A class with :math:`n_j = 0` keeps nothing (:math:`t_j = +\infty`).
* **The released budgets.** The released code divides hard-coded percentages by a hard-coded valid
  share (Cityscapes 1/8: entries summing to 88.0549 against ``valid_ratio`` 88.04), so its budgets are
  0.017 % larger than those of a normalised prior. ``target_counts(..., prior_total=88.04)`` computes
  them as it does (:func:`target_counts`).
* **Ties.** A pixel passes when its confidence is *not smaller* than its class's threshold (Eq. 3).
* **Exactness.** Thresholds are exact order statistics of the confidences *as given* (float16,
  bfloat16, float32 or float64), found by a radix select over the IEEE bit patterns (below): the same
  pixels are kept as by sorting every confidence.

Exact thresholds in memory independent of the data set's size
-------------------------------------------------------------
For non-negative floats the IEEE bit pattern, read as an integer (the *key*), orders as the value.
A float16 confidence in [0, 1] is one of the 15,361 keys 0x0000 … 0x3C00, so a per-class histogram
over the keys (C × 15,361 counts) *is* the exact distribution of the confidences, whatever the number
of pixels: the :math:`n_j`-th largest is read off its cumulative sum. Wider floats are handled 16 bits
at a time (:class:`ThresholdSearch`): a first pass histograms the top 16 bits and finds, per class, the
bin that holds the :math:`n_j`-th largest; the next pass histograms the next 16 bits of only the keys
in that bin, and so on — 2 passes for float32, 4 for float64, each in C × 65,536 counts. The in-memory
labellers and the streaming :class:`~blvnb.pseudo.streaming.StreamingLabeler` use this one search; a
test checks they agree.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from blvnb.classes import IGNORE
from blvnb.errors import BlvnbError, ConfigError
from blvnb.pseudo.distribution import check_counts, prior_from_counts

log = logging.getLogger("blvnb.pseudo.labelers")  # one logger for the labellers and their parts

#: the labellers (:mod:`blvnb.pseudo.labelers`)
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
        check_range(float(conf.min()), float(conf.max()))
    return conf, pred


def check_range(lo: float, hi: float) -> None:
    if not (lo >= 0.0 and hi <= 1.0):
        raise BlvnbError(
            f"probabilities must lie in [0, 1] (found confidences from {lo} to {hi}); pass softmax "
            "outputs, not logits: probs = logits.softmax(1)"
        )


def bincount(x: torch.Tensor, minlength: int) -> torch.Tensor:
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


def floor_count(x: torch.Tensor) -> torch.Tensor:
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
                self._acc[0] += bincount(idx, self.num_classes * width)
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

def target_counts(prior, alpha: float, total_pixels: int, *, prior_total: float | None = None) -> torch.Tensor:
    r"""DARS Eq. (4): :math:`n_j = \lfloor \alpha \cdot N_u H W \cdot r_j \rfloor` (int64[C]).

    ``total_pixels`` is :math:`N_u H W`, every pixel of the unlabeled images; ``prior`` the shares
    :math:`r_j` among valid labeled pixels, normalised here (:func:`~blvnb.pseudo.distribution.prior_from_counts`).

    ``prior_total``: reproduce the released budgets. The released code divides its hard-coded class
    percentages by a hard-coded valid share instead of their sum (Cityscapes 1/8: percentages summing to
    88.0549 over ``valid_ratio`` 88.04), as ``int(α · r_j / prior_total · H·W · N_u)`` in float64. Given a
    number, ``prior`` is used as given (validated, not normalised) and that expression is evaluated in
    that order, without the floor allowance of the module docstring; with :math:`H W` a power of two (as
    1024 × 2048) ``total_pixels`` = :math:`N_u H W` gives the released integers exactly.
    """
    check_alpha(alpha)
    if prior_total is not None:
        r = check_counts(prior, name="the prior")
        if not (isinstance(prior_total, numbers.Real) and math.isfinite(prior_total) and prior_total > 0):
            raise ConfigError(f"prior_total must be a positive number (e.g. 88.04, the released valid_ratio), "
                              f"got {prior_total!r}")
        # the released int(float(α) · r_j / valid_ratio · H·W · N_u), term by term
        n = [int(float(alpha) * float(v) / float(prior_total) * float(total_pixels)) for v in r.tolist()]
        return torch.tensor(n, dtype=torch.int64)
    r = prior_from_counts(prior)
    # n_j = α · N_u·H·W · r_j, floored
    return floor_count(alpha * float(total_pixels) * r)


def rule_targets(method: str, prior: torch.Tensor | None, alpha: float, *,
                 prior_total: float | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """n_j as a function of the per-class predicted counts m_j (ST's "classes": one, all pixels)."""
    if method in ("da", "dars"):
        return lambda m: target_counts(prior, alpha, int(m.sum()), prior_total=prior_total)
    # CBST: ⌊α m_j⌋; ST with no threshold: ⌊α · all pixels⌋ (m has a single entry then)
    return lambda m: floor_count(alpha * m.to(torch.float64))


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


def from_search(method: str, search: ThresholdSearch, num_classes: int, alpha: float | None) -> Thresholds:
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
    threshold = check_threshold(threshold)
    key = threshold_key(threshold, dtype)
    return Thresholds(method="st", dtype=dtype, keys=torch.full((num_classes,), key, dtype=torch.int64),
                      threshold=float(threshold))


def class_thresholds(conf: torch.Tensor, pred: torch.Tensor, targets, num_classes: int | None = None,
                     *, method: str = "da", alpha: float | None = None) -> Thresholds:
    r"""Per class :math:`t_j` = the :math:`n_j`-th largest of ``conf`` among pixels with ``pred == j``.

    ``targets``: :math:`n_j` (int64[C]) or a function of the predicted counts. All pixels at once, in
    memory; :class:`~blvnb.pseudo.streaming.StreamingLabeler` runs the same :class:`ThresholdSearch` over a data set.
    """
    c = int(num_classes if num_classes is not None else (len(targets) if not callable(targets) else pred.max() + 1))
    search = ThresholdSearch(c, conf.dtype, conf.device)
    while not search.done:
        search.update(conf, pred)
        search.finish_pass(targets)
    return from_search(method, search, c, alpha)



# --- what a labeller accepts ---------------------------------------------------------------------------

def check_method(method: str) -> str:
    """A labeller's name, lower-cased; a :class:`~blvnb.errors.ConfigError` naming it when unknown."""
    m = str(method).lower()
    if m not in METHODS:
        raise ConfigError(f"unknown pseudo-labelling method {method!r}; expected one of {', '.join(METHODS)}")
    return m


def check_probs(probs: torch.Tensor) -> None:
    """N×C×H×W probabilities with at most 255 classes (pseudo labels are 8-bit, 255 = ignored), and at
    least one class and pixel (an empty map has no confidence to rank)."""
    if not isinstance(probs, torch.Tensor) or probs.ndim != 4:
        raise BlvnbError(f"probs must be an N×C×H×W tensor of class probabilities, got "
                         f"{getattr(probs, 'shape', type(probs))}")
    if 0 in probs.shape[1:]:
        raise BlvnbError(f"probs of shape {tuple(probs.shape)} (N×C×H×W) hold no pixel to label: every image "
                         "needs at least one class and a height and width >= 1")
    check_num_classes(probs.shape[1])


def check_num_classes(c: int) -> None:
    if c > IGNORE:
        raise BlvnbError(f"{c} classes: pseudo labels are 8-bit with {IGNORE} = ignored, so at most {IGNORE} classes")


def check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, numbers.Real) and 0 < alpha <= 1):
        raise ConfigError(f"the labeling ratio alpha must be in (0, 1], got {alpha!r} (the paper: 0.2, then 0.5)")


def check_threshold(threshold) -> float:
    """ST's confidence threshold: a number in [0, 1] (a ConfigError naming the value otherwise)."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real) or not 0.0 <= float(threshold) <= 1.0:
        raise ConfigError(f"ST's threshold must be a confidence in [0, 1], got {threshold!r} "
                          "(e.g. 0.9; or threshold=None for the threshold that keeps a share alpha of the pixels)")
    return float(threshold)



__all__ = [
    "METHODS", "ThresholdSearch", "Thresholds", "check_alpha", "check_method", "check_num_classes", "check_probs",
    "check_threshold", "class_thresholds", "confidence", "confidence_keys", "fixed_thresholds", "key_bits",
    "key_of_one", "keys_to_values", "rule_targets", "target_counts", "threshold_key",
]
