r"""Calibration of a teacher's probabilities, and DARS Table 5: does calibration align pseudo labels?

DARS (Sec. 4.3.1, Table 5) asks whether calibrating the teacher — so that a confidence of 0.9 means
right 90 % of the time — would by itself make a single-threshold labeller (ST) produce pseudo labels with
the labeled class distribution. Three calibrators (Guo et al., 2017), each fit on held-out labeled
pixels by minimising the negative log-likelihood (NLL) of their labels:

* **temperature scaling** — :math:`\mathrm{softmax}(z / T)`, one scalar :math:`T > 0` (the paper:
  :math:`T = 1.27`);
* **matrix scaling** — :math:`\mathrm{softmax}(W z + b)`, :math:`W` C×C and :math:`b` C (started at the
  identity; optional L2 on :math:`W`'s off-diagonal and :math:`b`, Kull et al.'s ODIR);
* **histogram binning** — one-vs-rest per class: the softmax probability :math:`p_k` falls in one of
  ``bins`` equal-width bins; the bin's calibrated value is the fraction of its pixels whose label is
  :math:`k` — the value that maximises the bin's Bernoulli likelihood, i.e. the NLL fit, in closed
  form; the C values of a pixel are then renormalised to sum to 1.

Pixels are N×C×H×W logits and N×H×W labels (255 = ignore); :func:`flatten_pixels` samples at most
``max_pixels`` of them for fitting. :func:`distribution_table` labels the unlabeled set with each
variant and reports :math:`D_\mathrm{KL}(\text{prior} \,\|\, \text{pseudo labels})`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from blvnb.classes import IGNORE
from blvnb.errors import BlvnbError, ConfigError

log = logging.getLogger(__name__)


def flatten_pixels(logits: torch.Tensor, labels: torch.Tensor, *, max_pixels: int | None = 1_000_000,
                   generator: torch.Generator | None = None,
                   ignore_index: int = IGNORE) -> tuple[torch.Tensor, torch.Tensor]:
    """N×C×H×W logits and N×H×W labels → (P×C float32 logits, P int64 labels) of the valid pixels,
    at most ``max_pixels`` of them drawn uniformly without replacement (``generator``)."""
    if (logits.ndim != 4 or labels.ndim != 3 or logits.shape[0] != labels.shape[0]
            or logits.shape[2:] != labels.shape[1:]):
        raise BlvnbError(f"expected N×C×H×W logits and N×H×W labels, got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    c = logits.shape[1]
    z = logits.permute(0, 2, 3, 1).reshape(-1, c)
    y = labels.reshape(-1).to(torch.int64)
    valid = (y != ignore_index)
    bad = valid & ((y < 0) | (y >= c))
    if bool(bad.any()):
        raise BlvnbError(f"labels hold values outside 0..{c - 1} and {ignore_index}")
    idx = torch.nonzero(valid.cpu()).squeeze(1)
    if idx.numel() == 0:
        raise BlvnbError("no labeled (non-ignore) pixel to fit a calibrator on")
    if max_pixels is not None and idx.numel() > max_pixels:
        idx = idx[torch.randperm(idx.numel(), generator=generator)[:max_pixels]]
    idx = idx.to(z.device)
    return z[idx].float(), y[idx]


def _nll(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(z, y)


def _lbfgs(params: Sequence[torch.Tensor], closure, max_iter: int) -> None:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")
    opt.step(closure)


class TemperatureScaling:
    r""":math:`q = \mathrm{softmax}(z / T)`; :math:`T` minimises the NLL of held-out labels."""

    name = "temperature scaling"

    def __init__(self):
        self.temperature = 1.0

    def fit(self, logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> TemperatureScaling:
        """``logits`` P×C and ``labels`` P (see :func:`flatten_pixels`)."""
        z, y = logits.detach().float(), labels.detach()
        log_t = torch.zeros((), device=z.device, requires_grad=True)  # T = e^{log T} > 0

        def closure():
            if torch.is_grad_enabled():
                log_t.grad = None
            # NLL of softmax(z / T)
            loss = _nll(z / log_t.exp(), y)
            if loss.requires_grad:
                loss.backward()
            return loss

        _lbfgs([log_t], closure, max_iter)
        self.temperature = float(log_t.detach().exp())
        return self

    def logits(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return logits.float() / self.temperature

    def __call__(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        """Calibrated probabilities (float32), classes along ``dim``."""
        return self.logits(logits, dim).softmax(dim)


class MatrixScaling:
    r""":math:`q = \mathrm{softmax}(W z + b)`; :math:`W, b` minimise the NLL (+ ``l2`` × ODIR penalty)."""

    name = "matrix scaling"

    def __init__(self, l2: float = 0.0):
        self.l2 = float(l2)
        self.weight: torch.Tensor | None = None
        self.bias: torch.Tensor | None = None

    def fit(self, logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 200) -> MatrixScaling:
        z, y = logits.detach().float(), labels.detach()
        c = z.shape[1]
        w = torch.eye(c, device=z.device).requires_grad_(True)
        b = torch.zeros(c, device=z.device, requires_grad=True)
        off = 1 - torch.eye(c, device=z.device)

        def closure():
            if torch.is_grad_enabled():
                w.grad = b.grad = None
            # NLL of softmax(W z + b)
            loss = _nll(z @ w.T + b, y)
            if self.l2 > 0:
                # ODIR: λ (Σ_{i≠j} W_ij² / (C(C−1)) + Σ_j b_j² / C)
                loss = loss + self.l2 * (((w * off) ** 2).sum() / (c * (c - 1)) + (b**2).sum() / c)
            if loss.requires_grad:
                loss.backward()
            return loss

        _lbfgs([w, b], closure, max_iter)
        self.weight, self.bias = w.detach(), b.detach()
        return self

    def logits(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        if self.weight is None:
            raise BlvnbError("MatrixScaling is not fitted: call fit(logits, labels) first")
        z = logits.float().movedim(dim, -1)
        return (z @ self.weight.T.to(z.device) + self.bias.to(z.device)).movedim(-1, dim)

    def __call__(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        return self.logits(logits, dim).softmax(dim)


class HistogramBinning:
    r"""One-vs-rest histogram binning: class :math:`k`'s probability in bin :math:`m` becomes
    :math:`\theta_{km} = \#\{y = k\} / \#\{\text{pixels in bin}\}` (the bin's maximum-likelihood value);
    then each pixel's C values are renormalised. Empty bins keep their centre value."""

    name = "histogram binning"

    def __init__(self, bins: int = 15):
        if bins < 1:
            raise ConfigError(f"histogram binning needs at least one bin, got {bins}")
        self.bins = int(bins)
        self.values: torch.Tensor | None = None  # C × bins

    def _bin(self, p: torch.Tensor) -> torch.Tensor:
        return (p * self.bins).floor().clamp(0, self.bins - 1).to(torch.int64)

    def fit(self, logits: torch.Tensor, labels: torch.Tensor) -> HistogramBinning:
        p = logits.detach().float().softmax(1)
        c = p.shape[1]
        bins = self._bin(p)  # P × C
        onehot = F.one_hot(labels, c).to(torch.float64)
        rows = torch.arange(c, device=p.device).expand_as(bins)
        flat = (rows * self.bins + bins).reshape(-1)
        total = torch.bincount(flat, minlength=c * self.bins).view(c, self.bins).to(torch.float64)
        hits = torch.bincount(flat, weights=onehot.reshape(-1), minlength=c * self.bins).view(c, self.bins)
        centre = (torch.arange(self.bins, dtype=torch.float64, device=p.device) + 0.5) / self.bins
        # θ_km = hits / total, the Bernoulli MLE of bin m of class k
        self.values = torch.where(total > 0, hits / total.clamp(min=1), centre.expand(c, -1)).float()
        return self

    def __call__(self, logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
        if self.values is None:
            raise BlvnbError("HistogramBinning is not fitted: call fit(logits, labels) first")
        p = logits.float().softmax(dim).movedim(dim, -1)
        c = p.shape[-1]
        vals = self.values.to(p.device)
        q = vals[torch.arange(c, device=p.device).expand_as(p), self._bin(p)]
        s = q.sum(-1, keepdim=True)
        q = torch.where(s > 0, q / s.clamp(min=1e-12), torch.full_like(q, 1.0 / c))
        return q.movedim(-1, dim)


CALIBRATORS = {"ts": TemperatureScaling, "matrix": MatrixScaling, "histogram": HistogramBinning}


def fit_calibrator(name: str, logits: torch.Tensor, labels: torch.Tensor, *, max_pixels: int | None = 1_000_000,
                   generator: torch.Generator | None = None, **kw):
    """Fit calibrator ``name`` ("ts" | "matrix" | "histogram") on N×C×H×W logits and N×H×W labels."""
    if name not in CALIBRATORS:
        raise ConfigError(f"unknown calibrator {name!r}; expected one of {', '.join(CALIBRATORS)}")
    z, y = flatten_pixels(logits, labels, max_pixels=max_pixels, generator=generator)
    cal = CALIBRATORS[name](**kw).fit(z, y)
    log.info("fitted %s on %d pixels", cal.name, y.numel())
    return cal


def nll(probs: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE) -> float:
    """Mean negative log-likelihood of ``labels`` (N×H×W) under ``probs`` (N×C×H×W), ignoring 255."""
    y = labels.to(torch.int64)
    valid = y != ignore_index
    p = probs.float().clamp(min=1e-12).gather(1, y.clamp(0, probs.shape[1] - 1)[:, None])[:, 0]
    return float(-(p.log()[valid]).mean())


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, bins: int = 15,
                               ignore_index: int = IGNORE) -> float:
    """ECE of the arg-max confidence over valid pixels, ``bins`` equal-width bins."""
    conf, pred = probs.float().max(1)
    valid = labels != ignore_index
    conf, correct = conf[valid], (pred[valid] == labels[valid]).float()
    b = (conf * bins).floor().clamp(0, bins - 1).to(torch.int64)
    n = torch.bincount(b, minlength=bins).float()
    gap = (torch.bincount(b, weights=conf, minlength=bins) - torch.bincount(b, weights=correct, minlength=bins)).abs()
    return float(gap.sum() / n.sum().clamp(min=1))


@dataclass(frozen=True)
class DistributionRow:
    """One row of DARS Table 5: a labelling variant, its pseudo-label shares and KL from the prior."""

    name: str
    method: str
    kl: float
    shares: tuple[float, ...]
    labeled_fraction: float


def distribution_table(prior, variants: Mapping[str, tuple[torch.Tensor, str]], *, alpha: float = 0.2,
                       threshold: float | None = None, generator: torch.Generator | None = None,
                       dtype: torch.dtype = torch.float16) -> list[DistributionRow]:
    """DARS Table 5: for each ``name → (probs, method)`` label the unlabeled set and measure
    KL(prior ‖ pseudo-label distribution).

    ``probs`` N×C×H×W (cast to ``dtype`` — float16, as the released code); ``method`` "st", "cbst",
    "da" or "dars". ST uses ``threshold`` when given, else the threshold that labels a share ``alpha``.
    """
    from blvnb.pseudo.distribution import kl_divergence, label_distribution
    from blvnb.pseudo.labelers import pseudo_label

    rows = []
    for name, (probs, method) in variants.items():
        labels = pseudo_label(probs.to(dtype), prior, method=method, alpha=alpha, threshold=threshold,
                              generator=generator)
        shares = label_distribution(labels, probs.shape[1])
        rows.append(DistributionRow(name=name, method=method, kl=kl_divergence(prior, shares),
                                    shares=tuple(float(v) for v in shares),
                                    labeled_fraction=float((labels != IGNORE).float().mean())))
    return rows


def table5_variants(logits: torch.Tensor, held_out_logits: torch.Tensor, held_out_labels: torch.Tensor, *,
                    focal_logits: torch.Tensor | None = None, bins: int = 15, max_pixels: int | None = 1_000_000,
                    generator: torch.Generator | None = None) -> dict[str, tuple[torch.Tensor, str]]:
    """The rows of DARS Table 5 as ``name → (probs, method)`` for :func:`distribution_table`: ST on the
    plain softmax, on each calibrator's probabilities (fit on the held-out pixels), on a focal-loss
    teacher's softmax (``focal_logits``, when given), and DARS on the plain softmax."""
    plain = logits.float().softmax(1)
    out: dict[str, tuple[torch.Tensor, str]] = {"ST": (plain, "st")}
    for key, label in (("ts", "ST + TS"), ("matrix", "ST + matrix scaling"), ("histogram", "ST + histogram binning")):
        kw = {"bins": bins} if key == "histogram" else {}
        cal = fit_calibrator(key, held_out_logits, held_out_labels, max_pixels=max_pixels, generator=generator, **kw)
        out[label] = (cal(logits), "st")
    if focal_logits is not None:
        out["ST + focal loss"] = (focal_logits.float().softmax(1), "st")
    out["DARS"] = (plain, "dars")
    return out


__all__ = [
    "CALIBRATORS", "DistributionRow", "HistogramBinning", "MatrixScaling", "TemperatureScaling",
    "distribution_table", "expected_calibration_error", "fit_calibrator", "flatten_pixels", "nll",
    "table5_variants",
]

