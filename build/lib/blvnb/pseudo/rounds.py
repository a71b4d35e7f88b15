r"""DARS's progressive strategy (Sec. 3.3, Tables 6, 9, 10): each self-training round labels more of the
unlabeled pixels and trains with a wider random-scale range.

Round :math:`k = 0` trains on the labeled images only; every round :math:`k \ge 1` pseudo-labels the
unlabeled images with the model of round :math:`k-1` at labeling ratio :math:`\alpha_k`, then trains
(resuming from that model) with random scales drawn from a range that the round widens:

.. math:: [s_{\min}, s_{\max}] \;\to\; [(1 - \beta_{\min})\, s_{\min},\; (1 + \beta_{\max})\, s_{\max}]

applied to the previous round's range. A schedule is data (a tuple of :class:`Round`); the engine's
self-training strategy reads it. :data:`RELEASED_SCHEDULES` holds the settings of the authors'
released configs (files ``config/cityscapes/gen_pseudo_label_psp50_cityscapes_split8_crop{361,713}_for_round{1,2}.yaml``
for :math:`\alpha` and ``train_psp50_cityscapes_split8_crop{361,713}_round{1,2}.yaml`` for the scales).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from blvnb.errors import ConfigError


@dataclass(frozen=True)
class Round:
    """Self-training round ``k`` (≥ 1): pseudo-label at ratio ``alpha``, train with ``scale_range``.

    ``beta_min``/``beta_max`` are the widening this round applied to the previous round's range.
    """

    k: int
    alpha: float
    scale_range: tuple[float, float]
    beta_min: float = 0.0
    beta_max: float = 0.0


def widen_scale_range(scale_range: Sequence[float], beta_min: float, beta_max: float) -> tuple[float, float]:
    r"""DARS Sec. 3.3: :math:`[(1 - \beta_{\min}) s_{\min}, (1 + \beta_{\max}) s_{\max}]`."""
    s_min, s_max = (float(v) for v in scale_range)
    if not 0 < s_min <= s_max:
        raise ConfigError(f"a random-scale range needs 0 < min <= max, got {tuple(scale_range)}")
    if not (0 <= beta_min < 1 and beta_max >= 0):
        raise ConfigError(f"need 0 <= beta_min < 1 and beta_max >= 0, got beta_min={beta_min}, beta_max={beta_max}")
    # lower bound: (1 − β_min) s_min ; upper bound: (1 + β_max) s_max
    return (round((1 - beta_min) * s_min, 10), round((1 + beta_max) * s_max, 10))


def progressive_schedule(alphas: Sequence[float], base_scale: Sequence[float],
                         betas: Sequence[tuple[float, float]] | None = None) -> tuple[Round, ...]:
    """Rounds 1 … K from their labeling ratios, the first round's scale range and each round's
    (β_min, β_max) (default: (0, 0) for round 1, the paper's (0.2, 0.5) for every later round)."""
    if not alphas:
        raise ConfigError("a schedule needs at least one round (one labeling ratio)")
    if betas is None:
        betas = [(0.0, 0.0)] + [(0.2, 0.5)] * (len(alphas) - 1)
    if len(betas) != len(alphas):
        raise ConfigError(f"{len(alphas)} labeling ratios but {len(betas)} (beta_min, beta_max) pairs")
    rounds, scale = [], tuple(float(v) for v in base_scale)
    for k, (alpha, (bmin, bmax)) in enumerate(zip(alphas, betas), start=1):
        if not 0 < alpha <= 1:
            raise ConfigError(f"round {k}: labeling ratio {alpha} is not in (0, 1]")
        scale = widen_scale_range(scale, bmin, bmax)
        rounds.append(Round(k=k, alpha=float(alpha), scale_range=scale, beta_min=float(bmin), beta_max=float(bmax)))
    return tuple(rounds)


#: The released configs' schedules (PSPNet-50, Cityscapes, 1/8 labeled split). Crop 361: α 0.2 → 0.5,
#: scales [0.25, 1.0] → [0.2, 1.5], i.e. β_min = 0.2, β_max = 0.5 (Tables 6 and 10). Crop 713: α 0.4 → 0.65,
#: scales [0.5, 2.0] → [0.5, 3.0] (β_min = 0, β_max = 0.5).
RELEASED_SCHEDULES: dict[str, tuple[Round, ...]] = {
    "cityscapes-1/8-crop361": progressive_schedule((0.2, 0.5), (0.25, 1.0), [(0.0, 0.0), (0.2, 0.5)]),
    "cityscapes-1/8-crop713": progressive_schedule((0.4, 0.65), (0.5, 2.0), [(0.0, 0.0), (0.0, 0.5)]),
}


def released_schedule(name: str = "cityscapes-1/8-crop361") -> tuple[Round, ...]:
    """One of :data:`RELEASED_SCHEDULES`."""
    try:
        return RELEASED_SCHEDULES[name]
    except KeyError:
        raise ConfigError(f"unknown schedule {name!r}; known: {', '.join(RELEASED_SCHEDULES)}") from None


__all__ = ["RELEASED_SCHEDULES", "Round", "progressive_schedule", "released_schedule", "widen_scale_range"]
