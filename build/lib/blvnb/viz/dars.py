"""Figures for DARS: confidence overlapping (Fig. 3), the share of exact-1.0 confidences, pseudo-label
distributions against the prior, and pseudo-label maps. Functions return figures; they never save or print.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from blvnb.classes import CLASSES, colorize
from blvnb.viz import _subplots

#: One colour per labelling method, the same in every figure.
METHOD_COLORS = {"prior": "#222222", "ST": "#c44e52", "CBST": "#dd8452", "DA": "#55a868", "DARS": "#4c72b0"}


def _names(num_classes: int, class_names: Sequence[str] | None) -> list[str]:
    if class_names is not None:
        return list(class_names)
    return list(CLASSES) if num_classes == len(CLASSES) else [f"class {j}" for j in range(num_classes)]


def _index(c, names: list[str]) -> int:
    return names.index(c) if isinstance(c, str) else int(c)


def plot_confidence_histograms(hist, classes: Sequence[str | int] = ("road", "pole"), *, title: str, bins: int = 40,
                               class_names: Sequence[str] | None = None):
    """DARS Fig. 3: per class, how the confidences of the pixels predicted as that class are spread.

    ``hist``: a :class:`blvnb.pseudo.labelers.ConfidenceHistogram` (exact float16 counts, from
    :func:`~blvnb.pseudo.labelers.confidence_histogram` or a streaming pass). Confidences below 1 are
    grouped into ``bins`` equal-width bins from the class's smallest confidence; pixels at *exactly*
    1.0 get their own bar, labelled with their share.
    """
    counts = np.asarray(hist.counts.cpu().numpy(), dtype=np.float64)
    values = np.asarray(hist.values.cpu().numpy(), dtype=np.float64)
    names = _names(counts.shape[0], class_names)
    fig, axes = _subplots(1, len(classes), figsize=(4.6 * len(classes), 3.4), squeeze=False)
    for ax, c in zip(axes[0], classes):
        j = _index(c, names)
        row = counts[j]
        total = row.sum()
        ax.set_title(f"{names[j]} ({int(total):,} predicted pixels)", fontsize=10)
        if total == 0:
            ax.text(0.5, 0.5, "never predicted", ha="center", va="center", transform=ax.transAxes)
            continue
        below = row[:-1]
        lo = values[np.flatnonzero(row)[0]]
        edges = np.linspace(lo, 1.0, bins + 1)
        idx = np.clip(np.digitize(values[:-1], edges) - 1, 0, bins - 1)
        binned = np.bincount(idx, weights=below, minlength=bins)
        width = edges[1] - edges[0]
        ax.bar(edges[:-1], 100 * binned / total, width=width, align="edge", color="#8da0cb", edgecolor="k",
               linewidth=0.3, label="confidence < 1")
        ax.bar([1.0], [100 * row[-1] / total], width=max(width, 0.01), color="#e78ac3", edgecolor="k", linewidth=0.5,
               label="exactly 1.0")
        ax.annotate(f"{100 * row[-1] / total:.1f} % at exactly 1.0", (1.0, 100 * row[-1] / total),
                    xytext=(-6, 4), textcoords="offset points", ha="right", fontsize=8)
        ax.set_ylim(0, 1.18 * 100 * max(binned.max(), row[-1]) / total)
        ax.set_xlabel("confidence (float16)")
        ax.set_ylabel("% of the class's predicted pixels")
        ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def plot_exact_one_share(shares: Sequence[float], *, title: str, class_names: Sequence[str] | None = None):
    """Per class, the share (%) of its predicted pixels whose float16 confidence is exactly 1.0."""
    s = np.asarray([float(v) for v in shares], dtype=np.float64)
    names = _names(s.size, class_names)
    order = np.argsort(-np.nan_to_num(s, nan=-1))
    fig, ax = _subplots(figsize=(9, 3.2))
    x = np.arange(s.size)
    ax.bar(x, 100 * np.nan_to_num(s[order]), color="#e78ac3", edgecolor="k", linewidth=0.4)
    ax.set_xticks(x, [names[i] for i in order], rotation=60, ha="right")
    ax.set_ylabel("% at exactly 1.0")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_pseudo_distributions(prior: Sequence[float], distributions: Mapping[str, Sequence[float]], *, title: str,
                              kl: Mapping[str, float] | None = None, class_names: Sequence[str] | None = None):
    """Class shares of each method's pseudo labels beside the prior (log scale), classes by prior share."""
    p = np.asarray([float(v) for v in prior], dtype=np.float64)
    p = p / p.sum()
    names = _names(p.size, class_names)
    order = np.argsort(-p)
    fig, ax = _subplots(figsize=(11, 3.8))
    x = np.arange(p.size)
    k = len(distributions)
    w = 0.8 / max(k, 1)
    for m, (name, shares) in enumerate(distributions.items()):
        q = np.asarray([float(v) for v in shares], dtype=np.float64)
        label = name if kl is None or name not in kl else f"{name} (KL {kl[name]:.1e})"
        ax.bar(x - 0.4 + (m + 0.5) * w, 100 * q[order], w, label=label, color=METHOD_COLORS.get(name),
               edgecolor="k", linewidth=0.3)
    ax.scatter(x, 100 * p[order], marker="_", s=260, color=METHOD_COLORS["prior"], zorder=4, linewidths=2,
               label="prior (labeled)")
    ax.set_yscale("log")
    ax.set_xticks(x, [names[i] for i in order], rotation=60, ha="right")
    ax.set_ylabel("% of pseudo-labelled pixels")
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    return fig


def plot_kept_over_target(kept: Mapping[str, Sequence[int]], targets: Sequence[int], *, title: str,
                          class_names: Sequence[str] | None = None):
    """Per class, pixels kept over the target n_j (1 = aligned): DA keeps every tie, DARS exactly n_j."""
    n = np.asarray([float(v) for v in targets], dtype=np.float64)
    names = _names(n.size, class_names)
    order = np.argsort(-n)
    fig, ax = _subplots(figsize=(11, 3.4))
    x = np.arange(n.size)
    w = 0.8 / max(len(kept), 1)
    for m, (name, counts) in enumerate(kept.items()):
        c = np.asarray([float(v) for v in counts], dtype=np.float64)
        ratio = np.divide(c, n, out=np.full_like(c, np.nan), where=n > 0)
        ax.bar(x - 0.4 + (m + 0.5) * w, ratio[order], w, label=name, color=METHOD_COLORS.get(name), edgecolor="k",
               linewidth=0.3)
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_yscale("log")
    ax.set_xticks(x, [names[i] for i in order], rotation=60, ha="right")
    ax.set_ylabel("kept / n_j")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_label_maps(maps: Mapping[str, object], n: int = 2, *, title: str = ""):
    """A grid: one column per entry (e.g. "truth", "ST", "DARS"), ``n`` images; ignored pixels black."""
    fig, axes = _subplots(n, len(maps), figsize=(2.6 * len(maps), 1.5 * n + 0.5), squeeze=False)
    for col, (name, labels) in enumerate(maps.items()):
        arr = labels.cpu().numpy() if hasattr(labels, "cpu") else np.asarray(labels)
        for r in range(n):
            axes[r, col].imshow(colorize(arr[r]), interpolation="nearest")
            axes[r, col].set_xticks([])
            axes[r, col].set_yticks([])
        axes[0, col].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["METHOD_COLORS", "plot_confidence_histograms", "plot_exact_one_share", "plot_kept_over_target",
           "plot_pseudo_distributions", "show_label_maps"]
