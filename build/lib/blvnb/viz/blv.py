"""Figures of BLV's method page: what the offset looks like under each clamping mode and distribution,
how the per-class weight differs between Eq. (3) and the released code, and σ(t) of Appendix C.

The draws come from the library's own sampler (:func:`blvnb.losses.blv.sample_variation`), so the
figures show what training uses; the exact values beside them come from
:func:`blvnb.losses.blv.variation_moments`. Functions return figures or DataFrames; they never save.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from blvnb.losses.blv import DISTRIBUTIONS, SigmaSchedule, balance_scale, sample_variation, variation_moments

#: The per-class pixel counts hard-coded in the released configs (Cityscapes train-id order). Their shares
#: are GTA5's, not Cityscapes' (see DESIGN); they serve here only as a realistic long tail.
RELEASED_CONFIG_COUNTS: tuple[int, ...] = (
    16099193283, 4155428633, 8478285320, 925367586, 317481282, 531401266, 67288808, 40463971, 3810296251,
    1074861777, 6784666433, 181828023, 15321782, 259269812, 564950248, 184638969, 32522117, 15799033, 2718199,
)

_MODES = {"paper": "#4c72b0", "released": "#dd8452"}
_DIST_COLORS = {"gaussian": "#4c72b0", "uniform": "#55a868", "beta": "#c44e52", "exponential": "#8172b2"}


def _draws(distribution: str, clamp: str, sigma: float, n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return sample_variation((n,), sigma=sigma, clamp=clamp, distribution=distribution, generator=g).numpy()


def _ecdf(ax, x: np.ndarray, **kw):
    xs = np.sort(x)
    ys = np.arange(1, xs.size + 1) / xs.size
    # start at (0, P(x < 0) = 0) and finish at (1, 1), so the jumps at 0 and 1 show as vertical steps
    ax.step(np.concatenate([[-0.02, 0.0], xs, [1.02]]), np.concatenate([[0.0, 0.0], ys, [1.0]]), where="post", **kw)


def offset_table(sigma: float = 6.0, n: int = 200_000, seed: int = 0):
    """Per distribution and clamping mode: the exact mean and atoms of the clipped |δ|, and the same from
    ``n`` draws of the library's sampler (a DataFrame)."""
    import pandas as pd

    rows, index = [], []
    for dist in DISTRIBUTIONS:
        for clamp in ("paper", "released"):
            x = _draws(dist, clamp, sigma, n, seed)
            m = variation_moments(dist, clamp, sigma)
            rows.append([m["mean"], x.mean(), m["p0"], (x == 0).mean(), m["p1"], (x == 1).mean()])
            index.append((dist + (f" (σ = {sigma:g})" if dist == "gaussian" else ""), clamp))
    columns = pd.MultiIndex.from_product([["mean", "P(offset = 0)", "P(offset = 1)"], ["exact", f"{n:,} draws"]])
    return pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["distribution", "clamp"]),
                        columns=columns).round(4)


def plot_offset_distributions(sigma: float = 6.0, n: int = 200_000, seed: int = 0):
    """Two panels of cumulative distributions of the clipped |δ| on [0, 1] (a jump is an atom).

    Left: the Gaussian under Algorithm 1's clamp (half the offsets exactly 0, most of the rest exactly 1),
    under the released clamp (no zeros, most at 1), and Eq. (3) taken literally (no clipping).
    Right: Table 6's variation forms, each clipped to [0, 1].
    """
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.0), sharey=True)
    for clamp, color in _MODES.items():
        x = _draws("gaussian", clamp, sigma, n, seed)
        m = variation_moments("gaussian", clamp, sigma)
        label = {"paper": "Algorithm 1: clamp(δ, 0, 1).abs()", "released": "released: clamp(δ, −1, 1).abs()"}[clamp]
        stats = f"mean {m['mean']:.3f}, P(0) = {m['p0']:.2f}, P(1) = {m['p1']:.2f}"
        _ecdf(a, x, color=color, lw=2, label=f"{label}\n{stats}")
        a.axvline(m["mean"], color=color, ls=":", lw=1)
    grid = np.linspace(0, 1.02, 200)
    half_normal = np.array([math.erf(v / (sigma * math.sqrt(2))) for v in grid])
    unclipped_mean = sigma * math.sqrt(2 / math.pi)
    a.plot(grid, half_normal, color="gray", ls="--",
           label=f"Eq. (3) as written: |δ| unclipped\n(mean σ√(2/π) = {unclipped_mean:.2f}; shown up to 1)")
    a.set_title(f"Gaussian δ ~ N(0, σ = {sigma:g})")
    a.set_xlabel("offset |δ| before the class weight")
    a.set_ylabel("P(offset ≤ x)")
    a.legend(fontsize=7.5, loc="upper left")
    for dist in DISTRIBUTIONS:
        x = _draws(dist, "paper", sigma, n, seed)
        m = variation_moments(dist, "paper", sigma)
        name = {"gaussian": f"Gaussian σ = {sigma:g} (Algorithm 1)", "uniform": "Uniform[0, 1]",
                "beta": "Beta(0.5, 0.5)", "exponential": "Exponential(λ = 1), clipped"}[dist]
        _ecdf(b, x, color=_DIST_COLORS[dist], lw=2, label=f"{name}: mean {m['mean']:.3f}")
    b.set_title("Table 6: variation forms, clipped to [0, 1]")
    b.set_xlabel("offset before the class weight")
    b.legend(fontsize=7.5, loc="lower right")
    for ax in (a, b):
        ax.set_xlim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_class_scales(class_counts: Sequence[float] = RELEASED_CONFIG_COUNTS, names: Sequence[str] | None = None,
                      *, title: str = "Per-class weight of the offset"):
    """The weight each class's offset gets: Eq. (3)'s c_k / max c (also the current released loss's, commit
    e08cc6c) against the first upload's (log q_max − log q_k) / max (commit 494d428), classes sorted from
    most to least frequent."""
    import matplotlib.pyplot as plt

    from blvnb.classes import CLASSES

    names = list(names) if names is not None else list(CLASSES[: len(class_counts)])
    counts = np.asarray(class_counts, dtype=np.float64)
    order = np.argsort(-counts)
    paper = balance_scale(counts, "paper").numpy()[order]
    released = balance_scale(counts, "first-upload").numpy()[order]
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(10, 3.6))
    ax.bar(x - 0.2, paper, 0.4, color=_MODES["paper"], label="Eq. (3) and release e08cc6c: log(Σq / q_k) / max")
    ax.bar(x + 0.2, released, 0.4, color=_MODES["released"], label="first upload 494d428: (log q_max − log q_k) / max")
    ax.set_xticks(x, [names[i] for i in order], rotation=60, ha="right")
    ax.set_ylabel("c_k / max c")
    ax.set_ylim(0, 1.05)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_sigma_schedule(schedule: SigmaSchedule | None = None, constant: float | None = 6.0):
    """σ(t) of Appendix C (Fig. 5): up to σ₀ at t_mid, back down by t_end; the constant σ for comparison."""
    import matplotlib.pyplot as plt

    s = schedule or SigmaSchedule()
    t = np.linspace(0, s.t_end, 401)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.plot(t, [s(int(v)) for v in t], lw=2, color=_MODES["paper"], label="σ(t), BLV + tv")
    if constant is not None:
        ax.axhline(constant, color="gray", ls="--", lw=1, label=f"constant σ = {constant:g}, BLV")
    ax.axvline(s.t_mid, color="k", ls=":", lw=1)
    ax.annotate(f"t_mid = {s.t_mid:,}", (s.t_mid, s.sigma0), xytext=(-70, -25), textcoords="offset points",
                fontsize=8)
    ax.set_xlabel("iteration t (t_end = {:,})".format(s.t_end))
    ax.set_ylabel("σ")
    ax.set_ylim(0, max(s.sigma0, constant or 0) * 1.15)
    ax.set_title("Appendix C: σ as a function of the iteration")
    ax.legend(fontsize=8, loc="lower center")
    fig.tight_layout()
    return fig


def plot_offset_vs_sigma(sigmas: Sequence[float] | None = None, marks: Sequence[float] = (3, 4, 5, 6, 7)):
    """Mean offset E|δ| (exact) against σ for both clamping modes: once σ passes ~2 the clip at 1 decides
    the offset, so σ between 3 and 7 (Table 7's range) changes the mean offset by only a few percent."""
    import matplotlib.pyplot as plt

    sigmas = np.linspace(0.0, 10.0, 201) if sigmas is None else np.asarray(sigmas, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for clamp, color in _MODES.items():
        mean = [variation_moments("gaussian", clamp, float(s))["mean"] for s in sigmas]
        ax.plot(sigmas, mean, color=color, lw=2, label={"paper": "Algorithm 1 (clamp to [0, 1])",
                                                       "released": "released (clamp to [−1, 1])"}[clamp])
        for s in marks:
            ax.plot([s], [variation_moments("gaussian", clamp, float(s))["mean"]], "o", color=color, ms=4)
    ax.set_xlabel("σ")
    ax.set_ylabel("mean offset E|δ| (weight 1)")
    ax.set_ylim(0, 1.05)
    ax.set_title("The clip at 1 saturates the offset (dots: Table 7's σ)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


__all__ = ["RELEASED_CONFIG_COUNTS", "offset_table", "plot_class_scales", "plot_offset_distributions",
           "plot_offset_vs_sigma", "plot_sigma_schedule"]
