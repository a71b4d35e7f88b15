r"""Balancing Logit Variation (BLV; Wang et al., CVPR 2023), Eq. (3) and Algorithm 1.

While training, every logit receives a random, non-negative offset whose size grows with the rarity
of its class:

$$\hat z_k = z_k + \frac{c_k}{\max_i c_i}\,|\delta|, \qquad c_k = \log\frac{\sum_j q_j}{q_k},
\qquad \delta \sim \mathcal N(0, \sigma),$$

with one draw of $\delta$ per element of the N×C×H×W logits and $q_k$ the pixel count of class $k$.
The loss is the cross entropy of $\hat z$. In evaluation and pseudo-labelling the logits are used as
they are: :class:`BLVLoss` perturbs only in ``training`` mode, and nothing else in blvnb calls
:func:`blv_logits`.

The three sources of the method do not agree in every detail; each difference is an option, and the
defaults follow the paper. The released loss is ``fully_sup/mmseg/models/losses/blv_loss.py`` of the
authors' repository ``grantword8/BLV``, which has had two versions: the first upload (commit ``494d428``,
June 2023) and the current release (commit ``e08cc6c``, July 2023, "Fix blv_loss.py bug"), which changed
only the class weight, to Eq. (3)'s:

============  =====================  ========================  =========================  ==============================
              Eq. (3)                Algorithm 1 / App. B      release ``e08cc6c``        first upload ``494d428``
============  =====================  ========================  =========================  ==============================
noise         $|\delta|$, unbounded  ``clamp(δ, 0, 1).abs()``  ``clamp(δ, -1, 1).abs()``  ``clamp(δ, -1, 1).abs()``
``clamp=``    —                      ``"paper"`` (default)     ``"released"``             ``"released"``
class weight  $c_k/\max c$           ``frequency_list / max``  $c_k/\max c$ (Eq. (3))     $(\log q_{max}-\log q_k)/\max$
``balance=``  ``"paper"`` (default)  ``"paper"``               ``"released"``             ``"first-upload"``
σ             6 (4 for SYNTHIA→CS)   6 (4 for SYNTHIA→CS)      4 in the configs           4 in the configs
mean over     —                      —                         all pixels (mmseg)         all pixels (mmseg)
============  =====================  ========================  =========================  ==============================

So the current release differs from the paper in the clamp, σ and the average only:
:data:`RELEASED_OPTIONS` gives all of them. ``balance="released"`` computes the same numbers as
``"paper"``; it is kept as its own name so that a run says which source it follows. The first upload's
weight is zero for the most frequent class, Eq. (3)'s is not. (As released, ``e08cc6c``'s new line
``torch.log(sum(cls_num_list))`` raises ``TypeError`` for the plain Python list of counts its configs pass:
``sum`` of a list of ints is an int, which ``torch.log`` does not take.)

**Resolution.** The logits are resized to the label size first (bilinear, ``align_corners=False``) and
the noise is drawn at the label size, after resizing, as in the released code (mmsegmentation resizes
the decoder's output to the label before its loss).

**Precision and randomness.** The noise is drawn in float32 on the logits' device and cast to the
logits' dtype before it is added, so bf16/fp16 logits under AMP get the same offsets as fp32 ones (to
their precision). With ``generator`` the draw is reproducible: same generator state, same noise.
(The released loss draws its noise on the CPU, through ``torch.distributions.Normal`` with Python
scalars, and copies it to the GPU in every step.)

**Cost.** One draw per logit at label resolution, one clamp and one fused multiply-add. On a GPU these
are three memory-bound kernels. On a CPU PyTorch's generator is sequential (about 3.4 ns per Gaussian,
17 ms for the quick profile's 8×19×128×256 logits), so large draws are split into chunks drawn in
parallel threads (:func:`draw_in_parallel`); see ``bench/blv_overhead.py``.
"""

from __future__ import annotations

import math
import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from blvnb.classes import IGNORE
from blvnb.errors import ConfigError, DatasetError
from blvnb.losses.frequencies import Counts, as_counts, class_vector, fill_zero_counts

#: How the sample is clipped before its absolute value: Algorithm 1 ("paper") or the released loss.
CLAMPS = ("paper", "released")
#: Table 6's variation forms; every one is clipped to [0, 1].
DISTRIBUTIONS = ("gaussian", "uniform", "beta", "exponential")
#: The class weight: Eq. (3) ("paper"), the current released loss (commit e08cc6c, "released": the same
#: weight as Eq. (3)), the first upload of the released loss (commit 494d428, "first-upload"), Table 8's
#: "w/o balance" ("none").
BALANCES = ("paper", "released", "first-upload", "none")
#: The options that reproduce the current released loss (commit e08cc6c) with its configs' σ.
RELEASED_OPTIONS = {"sigma": 4.0, "clamp": "released", "balance": "released", "avg_non_ignore": False}


# --- input checks (every loss in blvnb calls these first) -----------------------------------------------

def check_number(name: str, value, *, minimum: float | None = None) -> float:
    """``value`` as a float if it is a finite real number (not a bool, not a string) ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value!r} ({type(value).__name__})")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum:g}, got {value!r}")
    return float(value)


def check_inputs(logits, target, ignore_index: int = IGNORE) -> None:
    """Validate a loss's inputs: N×C×… float logits and N×… integer train ids in 0..C-1 or ``ignore_index``.

    Spatial sizes may differ for N×C×h×w logits (they are resized to the labels). Shapes, dtypes and empty
    inputs raise :class:`ConfigError`, label values outside the classes :class:`DatasetError`; each message
    names what it found. The value check is one pass over the labels (and, on a GPU, one synchronisation).
    """
    if not isinstance(logits, torch.Tensor) or not (logits.is_floating_point() or logits.is_complex()):
        what = f"a tensor of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ConfigError(f"logits must be a float tensor N×C×H×W, got {what}")
    if not isinstance(target, torch.Tensor):
        raise ConfigError(f"labels must be a tensor of integer train ids N×H×W, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ConfigError(f"labels must hold integer train ids, got dtype {target.dtype}; convert class ids with "
                          ".long() (and pass labels, not probabilities or one-hot maps)")
    if logits.ndim < 2 or target.ndim != logits.ndim - 1 or logits.shape[0] != target.shape[0] or (
            logits.ndim != 4 and tuple(logits.shape[2:]) != tuple(target.shape[1:])):
        raise ConfigError(f"logits of shape {tuple(logits.shape)} do not fit labels of shape {tuple(target.shape)}; "
                          "expected logits N×C×H×W (or N×C×h×w, resized) and labels N×H×W")
    if logits.numel() == 0 or target.numel() == 0:
        raise ConfigError(f"empty input: logits of shape {tuple(logits.shape)}, labels of shape {tuple(target.shape)}; "
                          "every dimension must be at least 1")
    num_classes = logits.shape[1]
    bad = (target != ignore_index) & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        values = torch.unique(target[bad]).tolist()
        shown = ", ".join(str(v) for v in values[:5]) + (f" ... ({len(values)} values)" if len(values) > 5 else "")
        raise DatasetError(f"labels hold {shown}: outside the class ids 0..{num_classes - 1} of the logits and the "
                           f"ignore index {ignore_index}")


# --- the pieces of Eq. (3) ---------------------------------------------------------------------------

def balance_scale(class_counts: Counts, balance: str | bool = "paper") -> torch.Tensor:
    r"""The per-class weight of the offset, float32 [C] in [0, 1] (CPU).

    ``"paper"``: $c_k / \max_i c_i$ with $c_k = \log(\sum_j q_j / q_k)$ (Eq. (3)).
    ``"released"``: the current released loss (commit ``e08cc6c``), $(\log \sum_j q_j - \log q_k) / \max$:
    Eq. (3)'s weight, the same numbers as ``"paper"``.
    ``"first-upload"``: the released loss as first uploaded (commit ``494d428``),
    $(\log q_{max} - \log q_k) / \max$ (0 for the largest class; GCL's weight too).
    ``"none"`` (or ``False``): 1 for every class, Table 8's "w/o balance". ``True`` means ``"paper"``.
    A class with zero pixels counts as the rarest class (:func:`~blvnb.losses.frequencies.fill_zero_counts`).
    When every weight is 0 (a single class; equal counts with ``"first-upload"``) the scale is 0.
    """
    balance = {True: "paper", False: "none"}.get(balance, balance)
    if balance not in BALANCES:
        raise ConfigError(f"unknown balance {balance!r}; expected one of {BALANCES} (or True/False)")
    q = fill_zero_counts(class_counts)
    if balance == "none":
        return torch.ones(q.numel(), dtype=torch.float32)
    if balance in ("paper", "released"):
        # $c_k = \log(\sum_j q_j / q_k)$ (Eq. (3); the release since e08cc6c: log Σq − log q_k)
        c = torch.log(q.sum() / q)
    else:
        # first upload (494d428): $c_k = \log q_{max} - \log q_k$
        c = torch.log(q.max()) - torch.log(q)
    # $c_k / \max_i c_i$
    return (c / c.max() if c.max() > 0 else torch.zeros_like(c)).float()


def sample_variation(shape, *, sigma: float = 6.0, clamp: str = "paper", distribution: str = "gaussian",
                     generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    r"""$|\delta|$ clipped to [0, 1], one independent draw per element of ``shape`` (float32 on ``device``).

    ``clamp="paper"`` (Algorithm 1): ``δ.clamp(0, 1).abs()`` — a negative Gaussian draw becomes exactly 0
    (probability 1/2) and one above 1 becomes 1. ``clamp="released"``: ``δ.clamp(-1, 1).abs()`` =
    $\min(|\delta|, 1)$, never 0 — twice the paper's mean offset for a Gaussian. Uniform[0, 1],
    Beta(0.5, 0.5) and Exponential(1) are non-negative, so both modes give $\min(\delta, 1)$ for them.
    ``sigma`` is used by the Gaussian only. A generator on another device than ``device`` draws there first.
    """
    if clamp not in CLAMPS:
        raise ConfigError(f"unknown clamp {clamp!r}; expected one of {CLAMPS}")
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}")
    sigma = check_number("sigma", sigma, minimum=0.0)
    # Algorithm 1 clamps to [0, 1], the released loss to [-1, 1]; both then take the absolute value
    low = 0.0 if clamp == "paper" else -1.0

    # draw where the generator lives (a CPU generator for CUDA logits draws on the CPU, then copies)
    where = generator.device if generator is not None else torch.device(device)

    delta = torch.empty(shape, dtype=torch.float32, device=where)
    if distribution == "gaussian":
        # $\delta \sim \mathcal N(0, \sigma)$
        draw_in_parallel(delta, lambda part, gen: part.normal_(0.0, sigma, generator=gen), generator)
    else:
        # $u \sim U[0, 1)$, then the distribution by inversion
        draw_in_parallel(delta, lambda part, gen: part.uniform_(0.0, 1.0, generator=gen), generator)
    if distribution == "beta":
        # $\delta \sim \mathrm{Beta}(1/2, 1/2)$, the arcsine law: $\sin^2(\pi u / 2)$
        delta.mul_(math.pi / 2).sin_().square_()
    elif distribution == "exponential":
        # $\delta \sim \mathrm{Exp}(1)$: $-\log(1 - u)$
        delta.neg_().log1p_().neg_()
    # $\mathrm{clamp}(\delta, \text{low}, 1)$ ...
    delta.clamp_(low, 1.0)
    # ... then $|\cdot|$ (a no-op after Algorithm 1's clamp to [0, 1])
    if low < 0:
        delta.abs_()
    return delta.to(device)


#: On a CPU, noise for more elements than this is drawn in chunks of this size, in parallel.
CPU_CHUNK = 1 << 20


def draw_in_parallel(out: torch.Tensor, draw, generator: torch.Generator | None = None) -> None:
    """Fill ``out`` (contiguous) with ``draw(part, generator)``, a call of one of the generator's fills.

    On a GPU, in one call: its generator is parallel. On a CPU PyTorch's generator is sequential (about
    3 ns per Gaussian, which made the noise most of BLV's cost), so a tensor of more than
    :data:`CPU_CHUNK` elements is cut into chunks of that size, drawn by ``torch.get_num_threads()``
    threads, chunk *i* from its own generator seeded with *s + i*, where *s* is one draw from
    ``generator`` (or the global generator). The result depends on the generator's state and the
    tensor's size only, not on the number of threads. ``draw`` should only fill (``normal_``,
    ``uniform_``: serial kernels): element-wise work belongs after it, on the whole tensor, where PyTorch's
    own thread pool does it (inside these threads it would start a second pool on the same cores).
    """
    if out.device.type != "cpu" or out.numel() <= CPU_CHUNK:
        draw(out, generator)
        return
    seed = int(torch.randint(0, 2**62, (), generator=generator))
    parts = out.view(-1).split(CPU_CHUNK)
    gens = [torch.Generator().manual_seed(seed + i) for i in range(len(parts))]
    with ThreadPoolExecutor(max_workers=min(torch.get_num_threads(), len(parts))) as pool:
        list(pool.map(draw, parts, gens))


# --- Eq. (3) -----------------------------------------------------------------------------------------

def blv_logits(logits: torch.Tensor, class_counts: Counts, *, sigma: float = 6.0, clamp: str = "paper",
               distribution: str = "gaussian", generator: torch.Generator | None = None,
               variation: bool = True, balance: str | bool = "paper") -> torch.Tensor:
    r"""Eq. (3): $\hat z_k = z_k + \frac{c_k}{\max_i c_i}|\delta|$ for every pixel and class.

    ``logits``: N×C×H×W (or N×C×…), any float dtype; returns the perturbed logits, same shape and dtype.
    ``class_counts``: [C] pixel counts (or shares) $q_k$. ``variation=False`` is Table 8's
    "w/o variation" (the constant $c_k/\max c$ instead of $\frac{c_k}{\max c}|\delta|$);
    ``balance="none"`` its "w/o balance" (the same scale, 1, for every class). Draw the noise only
    while training; the gradient with respect to ``logits`` passes through unchanged.
    """
    shape = (1, -1) + (1,) * (logits.ndim - 2)  # one weight per class, broadcast over N, H, W
    # $c_k / \max_i c_i$ (computed once per counts and device)
    scale = class_vector(balance_scale, class_counts, balance, device=logits.device, dtype=logits.dtype).view(shape)
    if scale.numel() != logits.shape[1]:
        raise ConfigError(f"class_counts has {scale.numel()} classes but the logits have {logits.shape[1]}")
    if not variation:
        # Table 8, "w/o variation": $\hat z_k = z_k + c_k / \max_i c_i$
        return logits + scale
    # $|\delta|$, one draw per element of the logits, clipped to [0, 1]
    delta = sample_variation(logits.shape, sigma=sigma, clamp=clamp, distribution=distribution,
                             generator=generator, device=logits.device).to(logits.dtype)
    # $\hat z_k = z_k + \frac{c_k}{\max_i c_i} |\delta|$ (one fused multiply-add)
    return torch.addcmul(logits, delta, scale)


def to_label_size(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of N×C×h×w logits to the N×H×W labels' size (``align_corners=False``); as is if equal."""
    if logits.ndim == 4 and tuple(logits.shape[-2:]) != tuple(target.shape[-2:]):
        return F.interpolate(logits, size=tuple(target.shape[-2:]), mode="bilinear", align_corners=False)
    return logits


def reduce_pixels(loss: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE,
                  avg_non_ignore: bool = True) -> torch.Tensor:
    """Per-pixel losses (0 at ignored pixels) → their mean.

    ``avg_non_ignore=True`` (blvnb's default): the sum over valid pixels divided by their number; a
    batch with no valid pixel gives 0 (and zero gradient), not NaN. ``False``: divided by *all* pixels,
    ignored ones included — mmsegmentation's default (its ``avg_non_ignore=False``), which the released
    BLV loss inherits; it scales the loss down by the share of ignored pixels.
    """
    denom = (target != ignore_index).sum().clamp_min(1) if avg_non_ignore else max(target.numel(), 1)
    return loss.sum() / denom


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, *, weight: torch.Tensor | None = None,
                  ignore_index: int = IGNORE, avg_non_ignore: bool = True) -> torch.Tensor:
    """Cross entropy, ignoring ``ignore_index``, averaged as :func:`reduce_pixels` says.

    With ``weight`` (per class) the weighted sum is still divided by the number of pixels (as
    mmsegmentation does), not by the sum of the weights (as ``F.cross_entropy(reduction="mean")`` does).
    """
    check_inputs(logits, target, ignore_index)
    return _cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)


def _cross_entropy(logits, target, *, weight=None, ignore_index: int = IGNORE, avg_non_ignore: bool = True):
    """:func:`cross_entropy` without the input checks (for losses that made them already)."""
    logits = to_label_size(logits, target)
    loss = F.cross_entropy(logits, target, weight=weight, ignore_index=ignore_index, reduction="none")
    return reduce_pixels(loss, target, ignore_index, avg_non_ignore)


def blv_loss(logits: torch.Tensor, target: torch.Tensor, class_counts: Counts, *, sigma: float = 6.0,
             clamp: str = "paper", distribution: str = "gaussian", generator: torch.Generator | None = None,
             ignore_index: int = IGNORE, variation: bool = True, balance: str | bool = "paper",
             avg_non_ignore: bool = True) -> torch.Tensor:
    """BLV loss: the cross entropy of :func:`blv_logits`, at the label size (noise added after resizing).

    ``logits`` N×C×h×w, ``target`` N×H×W train ids (``ignore_index`` = 255 is ignored); returns a scalar,
    the mean over valid pixels (see :func:`reduce_pixels`). Always perturbs: use :class:`BLVLoss` in a
    model's training loop, which perturbs only in training mode.
    """
    check_inputs(logits, target, ignore_index)
    z = blv_logits(to_label_size(logits, target), class_counts, sigma=sigma, clamp=clamp,
                   distribution=distribution, generator=generator, variation=variation, balance=balance)
    return _cross_entropy(z, target, ignore_index=ignore_index, avg_non_ignore=avg_non_ignore)


# --- σ over time (Appendix C) ------------------------------------------------------------------------

@dataclass(frozen=True)
class SigmaSchedule:
    """σ(t) of Appendix C / Fig. 5: rises linearly from ``sigma_start`` to ``sigma0`` at ``t_mid``, then
    falls linearly back to ``sigma_end`` (default ``sigma_start``) at ``t_end``, and stays there.

    The paper gives t_end = 40k, t_mid = 30k, σ₀ = 6 (GTA5→Cityscapes, DAFormer‡) and a figure, not a
    formula: the straight segments and the start/end value 0 are our reading of Fig. 5.
    """

    sigma0: float = 6.0
    t_mid: int = 30_000
    t_end: int = 40_000
    sigma_start: float = 0.0
    sigma_end: float | None = None

    def __post_init__(self):
        if not 0 < self.t_mid < self.t_end:
            raise ConfigError(f"SigmaSchedule needs 0 < t_mid < t_end; got t_mid={self.t_mid}, t_end={self.t_end}")
        if min(self.sigma0, self.sigma_start, self.end) < 0:
            raise ConfigError("SigmaSchedule: every sigma must be >= 0")

    @property
    def end(self) -> float:
        return self.sigma_start if self.sigma_end is None else self.sigma_end

    @classmethod
    def for_run(cls, iters: int, sigma0: float = 6.0, mid_fraction: float = 0.75, **kw) -> SigmaSchedule:
        """The paper's shape (t_mid = 3/4 of t_end) stretched to a run of ``iters`` iterations."""
        return cls(sigma0=sigma0, t_mid=max(1, round(mid_fraction * iters)), t_end=max(2, iters), **kw)

    def __call__(self, t: int) -> float:
        if t <= self.t_mid:
            return self.sigma_start + (self.sigma0 - self.sigma_start) * max(t, 0) / self.t_mid
        if t >= self.t_end:
            return self.end
        return self.sigma0 + (self.end - self.sigma0) * (t - self.t_mid) / (self.t_end - self.t_mid)


# --- the module the engine uses ----------------------------------------------------------------------

class BLVLoss(nn.Module):
    """``loss(logits, target)``: :func:`blv_loss` in training mode, plain :func:`cross_entropy` in eval mode.

    ``sigma`` is a number or a :class:`SigmaSchedule`; with a schedule, the trainer calls
    :meth:`set_iteration` every iteration. :meth:`set_class_counts` replaces the counts (the "‡"
    strategy re-estimates them after every epoch with Eq. (4)). Other keywords as :func:`blv_loss`.
    """

    def __init__(self, class_counts: Counts, *, sigma: float | SigmaSchedule = 6.0, clamp: str = "paper",
                 distribution: str = "gaussian", generator: torch.Generator | None = None,
                 ignore_index: int = IGNORE, variation: bool = True, balance: str | bool = "paper",
                 avg_non_ignore: bool = True):
        super().__init__()
        self.schedule = sigma if isinstance(sigma, SigmaSchedule) else None
        self.sigma = self.schedule(0) if self.schedule else check_number("sigma", sigma, minimum=0.0)
        self.clamp, self.distribution, self.generator = clamp, distribution, generator
        self.ignore_index, self.variation, self.balance = ignore_index, variation, balance
        self.avg_non_ignore = avg_non_ignore
        sample_variation((0,), sigma=self.sigma, clamp=clamp, distribution=distribution)  # validate now
        self.set_class_counts(class_counts)

    def set_class_counts(self, class_counts: Counts) -> None:
        """Use new per-class counts from the next call on (validated now)."""
        counts = as_counts(class_counts)
        balance_scale(counts, self.balance)  # fail here, not in the training loop
        self.class_counts = counts

    def set_iteration(self, it: int) -> float:
        """Set σ = schedule(it) when σ follows a schedule; returns the σ in use."""
        if self.schedule is not None:
            self.sigma = float(self.schedule(it))
        return self.sigma

    def perturb(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r"""Eq. (3)'s logits $\hat z$ for ``target`` (the logits resized to its size), with this loss's counts,
        σ, options and generator — for a loss of another form on them (UDA's pixel-weighted mixed loss). In
        eval mode the (resized) logits as they are."""
        check_inputs(logits, target, self.ignore_index)
        logits = to_label_size(logits, target)
        if not self.training:
            return logits
        return blv_logits(logits, self.class_counts, sigma=self.sigma, clamp=self.clamp, distribution=self.distribution,
                          generator=self.generator, variation=self.variation, balance=self.balance)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return cross_entropy(logits, target, ignore_index=self.ignore_index, avg_non_ignore=self.avg_non_ignore)
        return blv_loss(logits, target, self.class_counts, sigma=self.sigma, clamp=self.clamp,
                        distribution=self.distribution, generator=self.generator, ignore_index=self.ignore_index,
                        variation=self.variation, balance=self.balance, avg_non_ignore=self.avg_non_ignore)

    def extra_repr(self) -> str:
        return (f"sigma={self.sigma}, clamp={self.clamp!r}, distribution={self.distribution!r}, "
                f"variation={self.variation}, balance={self.balance!r}")


# --- what the offsets should average to (for the book and the tests) -----------------------------------

def variation_moments(distribution: str = "gaussian", clamp: str = "paper", sigma: float = 6.0) -> dict[str, float]:
    r"""Exact ``{"mean", "p0", "p1"}`` of the clipped $|\delta|$: its mean and the probabilities that it is
    exactly 0 or exactly 1. For the Gaussian in the paper's mode
    $E = \int_0^1 x\,\varphi_\sigma(x)\,dx + P(\delta > 1) = \frac{\sigma}{\sqrt{2\pi}}(1 - e^{-1/(2\sigma^2)})
    + 1 - \Phi(1/\sigma)$; the released mode folds the negative half over, doubling both terms.
    """
    if distribution == "gaussian":
        if sigma == 0:
            return {"mean": 0.0, "p0": 1.0, "p1": 0.0}
        tail = 0.5 * math.erfc(1.0 / (sigma * math.sqrt(2.0)))  # P(δ > 1)
        body = sigma / math.sqrt(2.0 * math.pi) * (1.0 - math.exp(-1.0 / (2.0 * sigma**2)))  # ∫_0^1 x φ_σ
        k = 1.0 if clamp == "paper" else 2.0
        return {"mean": k * (body + tail), "p0": 0.5 if clamp == "paper" else 0.0, "p1": k * tail}
    if distribution in ("uniform", "beta"):
        return {"mean": 0.5, "p0": 0.0, "p1": 0.0}
    if distribution == "exponential":
        return {"mean": 1.0 - math.exp(-1.0), "p0": 0.0, "p1": math.exp(-1.0)}
    raise ConfigError(f"unknown distribution {distribution!r}; expected one of {DISTRIBUTIONS}")


__all__ = [
    "BALANCES",
    "BLVLoss",
    "CLAMPS",
    "DISTRIBUTIONS",
    "RELEASED_OPTIONS",
    "SigmaSchedule",
    "balance_scale",
    "check_inputs",
    "check_number",
    "blv_logits",
    "blv_loss",
    "cross_entropy",
    "reduce_pixels",
    "sample_variation",
    "to_label_size",
    "variation_moments",
]
