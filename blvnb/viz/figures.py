"""The papers' result figures, drawn from our run records and models (static twins of the interactive
explorers). Every function returns a matplotlib Figure (shown once, when the notebook displays it) and
says in its docstring which figure of which paper it stands for. Helpers that compute what a figure
shows (:func:`separation`, :func:`pixel_logits`, :func:`accuracy_by_object_size`, :func:`predict_maps`)
return numbers, so a chapter can print them beside the picture and a verdict can use them.

Records are accepted in every form :func:`blvnb.viz.tables.items` takes; pairing across arms is by
seed. IoU numbers are shown in %.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from blvnb.classes import BLV_TAIL, CLASSES, COLORS, IGNORE, NUM_CLASSES, colorize
from blvnb.viz.style import HEAD_COLOR, TAIL_COLOR
from blvnb.viz.style import subplots as _subplots
from blvnb.viz.tables import ResultsError, items, metric_value

__all__ = ["per_class_gains", "plot_gain_vs_share", "plot_per_class_iou", "separation", "pixel_logits", "plot_tsne", "predict_maps",
           "plot_qualitative", "plot_sigma_curves", "plot_ablation", "plot_round_losses", "group_gains",
           "plot_group_gains", "accuracy_by_object_size", "plot_accuracy_vs_size"]


def _class_colors() -> list:
    return [tuple(c / 255.0) for c in COLORS]


def _iou_by_seed(records, what: str) -> dict[int, np.ndarray]:
    """{seed: per-class IoU in %} of one arm (all records must be one arm: one record per seed)."""
    its = items(records)
    arms = {(it.row, it.arm) for it in its}
    if len(arms) > 1:
        raise ResultsError(f"{what}: expected the records of one arm, got several {sorted(map(str, arms))}")
    return {it.seed: np.array([metric_value(it.record, f"iou:{c}") for c in CLASSES]) for it in its}


def per_class_gains(method, baseline) -> tuple[np.ndarray, list[int]]:
    """Per-seed per-class IoU gains (method − baseline, % points), paired by seed: (seeds × 19, seeds).

    Raises when the two arms share no seed or the profiles differ."""
    pm, pb = {it.profile for it in items(method)}, {it.profile for it in items(baseline)}
    if pm != pb:
        raise ResultsError(f"method records are of profile(s) {sorted(map(str, pm))} but baseline records of "
                           f"{sorted(map(str, pb))}: compare runs of one profile")
    m, b = _iou_by_seed(method, "method"), _iou_by_seed(baseline, "baseline")
    common = sorted(set(m) & set(b))
    if not common:
        raise ResultsError(f"method seeds {sorted(m)} and baseline seeds {sorted(b)} have none in common: "
                           "gains are paired by seed")
    return np.stack([m[s] - b[s] for s in common]), common


# ------------------------------------------------------------------------------------ BLV Fig. 3
def plot_gain_vs_share(method, baseline, shares: Sequence[float], *, tail: Sequence[int] = BLV_TAIL,
                       title: str = "Per-class IoU gain against pixel share", method_name: str = "BLV",
                       baseline_name: str = "baseline", annotate: bool = True):
    """BLV Fig. 3 (pixel-level class frequency against per-class improvement): x = each class's share
    of the training pixels (log), y = method − baseline IoU (% points), one small dot per seed (paired
    by seed), the mean as a large marker with a bar over the seeds' range; tail classes in orange.

    ``method``, ``baseline``: the records of one arm each; ``shares``: 19 pixel shares (fractions).
    """
    sh = np.asarray(shares, dtype=float)
    if sh.shape != (NUM_CLASSES,) or not np.all(sh >= 0):
        raise ResultsError(f"shares must be {NUM_CLASSES} non-negative fractions, got shape {sh.shape}")
    gains, seeds = per_class_gains(method, baseline)
    x = 100 * np.maximum(sh, 1e-6)
    is_tail = np.isin(np.arange(NUM_CLASSES), list(tail))
    fig, ax = _subplots(figsize=(7, 4.4))
    mean = np.nanmean(gains, axis=0) if len(seeds) else np.full(NUM_CLASSES, np.nan)
    lo, hi = np.nanmin(gains, axis=0), np.nanmax(gains, axis=0)
    for mask, color, name in ((~is_tail, HEAD_COLOR, "head"), (is_tail, TAIL_COLOR, "tail")):
        idx = np.flatnonzero(mask)
        ax.vlines(x[idx], lo[idx], hi[idx], color=color, lw=1, alpha=0.6)
        for g in gains:
            ax.scatter(x[idx], g[idx], s=10, color=color, alpha=0.45, zorder=2)
        ax.scatter(x[idx], mean[idx], s=60, color=color, edgecolors="k", zorder=3,
                   label=f"{name} classes (mean of {len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    if annotate:
        for i, name in enumerate(CLASSES):
            if not math.isnan(mean[i]):
                ax.annotate(name, (x[i], mean[i]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0, color="gray", lw=1, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("% of valid training pixels (log)")
    ax.set_ylabel(f"IoU {method_name} − {baseline_name} (% points)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_per_class_iou(records_by_arm, *, paper_rows: Mapping[str, Any] | None = None,
                       order: Sequence[str] | None = None, title: str = "Per-class IoU",
                       tail: Sequence[int] = BLV_TAIL):
    """The static twin of the chapters' interactive per-class IoU explorer (and of BLV Tables 3/4,
    DARS Tables 4/14 as a picture): per class, one bar per arm (mean over seeds) with a dot per seed,
    the paper's per-class values as horizontal ticks when ``paper_rows`` gives them (``{label: row of
    blvnb.paper.table(...)}``); tail classes' names in orange."""
    from blvnb.viz.tables import _by_arm, class_index

    arms = _by_arm(records_by_arm, None, None, order)
    fig, ax = _subplots(figsize=(12, 3.8))
    x = np.arange(NUM_CLASSES)
    w = 0.8 / len(arms)
    palette = ["#8da0cb", "#fc8d62", "#66c2a5", "#e78ac3", "#a6d854", "#ffd92f", "#b3b3b3"]
    for j, (arm, its) in enumerate(arms.items()):
        per = np.stack([[metric_value(it.record, f"iou:{c}") for c in CLASSES] for it in its])
        xs = x - 0.4 + (j + 0.5) * w
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(per, axis=0)
        ax.bar(xs, np.nan_to_num(mean), w, color=palette[j % len(palette)], edgecolor="k", linewidth=0.3,
               label=f"{arm} ({len(its)} seed{'s' if len(its) != 1 else ''})")
        for row in per:
            ax.scatter(xs, row, s=5, color="k", zorder=3)
    for k, (lbl, row) in enumerate((paper_rows or {}).items()):
        vals = np.full(NUM_CLASSES, np.nan)
        for name, v in dict(row).items():
            c = class_index(name)
            if c is not None and v is not None and not isinstance(v, str):
                vals[c] = float(v)
        if np.isnan(vals).all():
            raise ResultsError(f"paper row {lbl!r} has no per-class column (its labels: {list(dict(row))})")
        ax.scatter(x, vals, marker="_", s=200, linewidths=2, color=["k", "#7f7f7f", "#d62728"][k % 3], zorder=4,
                   label=f"paper: {lbl}")
    ax.set_xticks(x, list(CLASSES), rotation=60, ha="right")
    for i, t in enumerate(ax.get_xticklabels()):
        if i in tail:
            t.set_color(TAIL_COLOR)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ BLV Fig. 6
def _balanced(labels: np.ndarray, n_per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = []
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        idx.append(rng.choice(where, size=min(n_per_class, where.size), replace=False))
    return np.sort(np.concatenate(idx)) if idx else np.zeros(0, dtype=np.int64)


def _check_features(features, labels) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ResultsError(f"features must be N×D and labels N, got {x.shape} and {y.shape}")
    if x.shape[0] == 0:
        raise ResultsError("no features: N = 0")
    if not np.isfinite(x).all():
        raise ResultsError("features hold NaN or inf values")
    return x, y.astype(np.int64)


def separation(features, labels, *, n_per_class: int = 200, k: int = 10, folds: int = 5, seed: int = 0) -> dict:
    """How well the classes separate in feature (logit) space: the number beside BLV Fig. 6's picture.

    The pixels are subsampled to at most ``n_per_class`` per class (seeded), then
    ``silhouette`` (scikit-learn, Euclidean; 1 = tight separated clusters, ~0 = mixed) and
    ``knn_accuracy`` (``k``-nearest-neighbour classification accuracy, ``folds``-fold stratified cross
    validation) are computed; ``chance`` is the accuracy of always guessing the largest class of the
    subsample. Classes with fewer than ``folds`` pixels are left out (``dropped_classes``).
    """
    from sklearn.metrics import silhouette_score
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    x, y = _check_features(features, labels)
    keep = _balanced(y, int(n_per_class), seed)
    x, y = x[keep], y[keep]
    classes, counts = np.unique(y, return_counts=True)
    dropped = classes[counts < folds].tolist()
    ok = np.isin(y, classes[counts >= folds])
    x, y = x[ok], y[ok]
    n_classes = int(np.unique(y).size)
    if n_classes < 2:
        raise ResultsError(f"separation needs at least 2 classes with ≥ {folds} pixels each; got {n_classes} "
                           f"(dropped: {dropped})")
    sil = float(silhouette_score(x, y, metric="euclidean"))
    knn = KNeighborsClassifier(n_neighbors=min(int(k), max(1, int(len(y) * (folds - 1) / folds) - 1)))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    acc = float(cross_val_score(knn, x, y, cv=cv).mean())
    chance = float(np.bincount(y).max() / len(y))
    return {"silhouette": sil, "knn_accuracy": acc, "chance": chance, "n_points": int(len(y)),
            "n_classes": n_classes, "k": int(knn.n_neighbors), "dropped_classes": dropped}


def _model_device(model, device):
    if device is not None:
        return device
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else "cpu"


def pixel_logits(model, dataset, n_pixels: int, seed: int = 0, *, device=None, max_images: int | None = None,
                 num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE) -> tuple[np.ndarray, np.ndarray]:
    """Logits of ``n_pixels`` validation pixels (the features of BLV Fig. 6): ``(features N×C, labels N)``.

    Runs ``model`` in eval mode (restored afterwards) on each item of ``dataset`` (dicts with a
    normalised ``image`` 3×H×W and a ``label`` H×W; the un-augmented evaluation view) through
    :func:`blvnb.engine.evaluate.predict_logits` (whole image, logits at the label's resolution), and
    draws the same number of valid (non-ignore) pixels from each image, seeded by ``seed``. Images go
    to ``device`` (default: the model's).
    """
    import torch

    from blvnb.engine.evaluate import predict_logits

    n_pixels = int(n_pixels)
    if n_pixels < 1:
        raise ResultsError(f"n_pixels must be ≥ 1, got {n_pixels}")
    n_images = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if n_images < 1:
        raise ResultsError("pixel_logits: the data set has no image")
    per_image = math.ceil(n_pixels / n_images)
    device = _model_device(model, device)
    rng = np.random.default_rng(seed)
    was_training = model.training
    model.eval()
    feats, labs = [], []
    try:
        for i in range(n_images):
            item = dataset[i]
            img, lab = item["image"], item["label"]
            img = torch.as_tensor(img).float().unsqueeze(0).to(device)
            lab = np.asarray(lab.cpu().numpy() if hasattr(lab, "cpu") else lab).astype(np.int64)
            logits = predict_logits(model, img, num_classes=num_classes)[0]  # C×H×W
            if tuple(logits.shape[-2:]) != lab.shape:
                raise ResultsError(f"image {i}: logits {tuple(logits.shape[-2:])} but label {lab.shape}; use the "
                                   "evaluation view of the data set (train=False)")
            valid = np.flatnonzero((lab.ravel() != ignore_index) & (lab.ravel() >= 0) & (lab.ravel() < num_classes))
            if valid.size == 0:
                continue
            pick = rng.choice(valid, size=min(per_image, valid.size), replace=False)
            flat = logits.reshape(logits.shape[0], -1).cpu().numpy()
            feats.append(flat[:, pick].T.astype(np.float32))
            labs.append(lab.ravel()[pick])
    finally:
        model.train(was_training)
    if not feats:
        raise ResultsError("pixel_logits: no valid (non-ignore) pixel in the images read")
    x, y = np.concatenate(feats), np.concatenate(labs)
    return x[:n_pixels], y[:n_pixels]


def plot_tsne(features: Mapping[str, tuple[Any, Any]], *, n_per_class: int = 60, seed: int = 0,
              perplexity: float = 30.0, max_iter: int = 500, title: str = "t-SNE of pixel logits (validation pixels)",
              class_names: Sequence[str] = CLASSES):
    """BLV Fig. 6 (t-SNE of the logit feature space without and with BLV): one panel per model, points
    coloured in the Cityscapes palette; each panel's title holds the separation numbers computed in
    logit space (not in the 2-D picture) by :func:`separation` on the same balanced subsample.

    ``features``: ``{model name: (features N×C, labels N)}`` (e.g. from :func:`pixel_logits`).
    Cost: t-SNE is the slow part (19 classes × 60 pixels, 500 iterations: ~10 s a panel on a loaded
    2-core machine; 150 per class and 1000 iterations: ~60 s); call :func:`separation` with a larger
    ``n_per_class`` for the number a verdict uses.
    """
    from sklearn.manifold import TSNE

    if not features:
        raise ResultsError("plot_tsne: no models given")
    colors = _class_colors()
    fig, axes = _subplots(1, len(features), figsize=(4.6 * len(features) + 1.6, 4.6), squeeze=False)
    present: set[int] = set()
    for ax, (name, (x, y)) in zip(axes[0], features.items()):
        x, y = _check_features(x, y)
        keep = _balanced(y, int(n_per_class), seed)
        x, y = x[keep], y[keep]
        sep = separation(x, y, n_per_class=n_per_class, seed=seed)
        perp = float(min(perplexity, max(2.0, (len(y) - 1) / 3.0)))
        emb = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed,
                   max_iter=max(250, int(max_iter))).fit_transform(x)
        for c in np.unique(y):
            m = y == c
            color = colors[c] if c < len(colors) else None
            ax.scatter(emb[m, 0], emb[m, 1], s=5, color=color, alpha=0.8, linewidths=0)
            present.add(int(c))
        ax.set_title(f"{name}\nsilhouette {sep['silhouette']:.2f}, {sep['k']}-NN acc. {100 * sep['knn_accuracy']:.1f} % "
                     f"(chance {100 * sep['chance']:.1f} %)", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=colors[c] if c < len(colors) else "k",
                      label=class_names[c] if c < len(class_names) else str(c)) for c in sorted(present)]
    fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1 - 1.4 / (4.6 * len(features) + 1.6), 1))
    return fig


# ------------------------------------------------------------------------------ BLV Fig. 4 / DARS Fig. 7
def predict_maps(models: Mapping[str, Any], dataset, indices: Sequence[int], *, device=None,
                 num_classes: int = NUM_CLASSES) -> dict:
    """Arg-max predictions of several models on the same images: ``{"images": [H×W×3 float in [0, 1]],
    "truth": [H×W], "predictions": {name: [H×W]}}`` for :func:`plot_qualitative`."""
    import torch

    from blvnb.engine.evaluate import predict_logits

    if not models:
        raise ResultsError("predict_maps: no models given")
    bad = [i for i in indices if not 0 <= int(i) < len(dataset)]
    if bad:
        raise ResultsError(f"predict_maps: indices {bad} are outside the data set (0..{len(dataset) - 1})")
    out: dict = {"images": [], "truth": [], "predictions": {n: [] for n in models}}
    items_ = [dataset[int(i)] for i in indices]
    for it in items_:
        out["images"].append(_display_image(it["image"]))
        lab = it["label"]
        out["truth"].append(np.asarray(lab.cpu().numpy() if hasattr(lab, "cpu") else lab))
    for name, model in models.items():
        was = model.training
        model.eval()
        try:
            for it in items_:
                img = torch.as_tensor(it["image"]).float().unsqueeze(0).to(_model_device(model, device))
                out["predictions"][name].append(predict_logits(model, img, num_classes=num_classes)[0].argmax(0).cpu().numpy())
        finally:
            model.train(was)
    return out


def _display_image(img) -> np.ndarray:
    """An image as H×W×3 floats in [0, 1]: uint8 H×W×3 as is; a normalised 3×H×W tensor min-max scaled."""
    a = img.detach().cpu().numpy() if hasattr(img, "detach") else np.asarray(img)
    if a.ndim == 3 and a.shape[0] == 3 and a.shape[-1] != 3:
        a = a.transpose(1, 2, 0)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ResultsError(f"an image must be H×W×3 or 3×H×W, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a.astype(np.float64) / 255.0
    a = a.astype(np.float64)
    lo, hi = a.min(), a.max()
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def plot_qualitative(images: Sequence[Any], truth: Sequence[Any], predictions: Mapping[str, Sequence[Any]], *,
                     title: str = "", row_titles: Sequence[str] | None = None):
    """BLV Fig. 4 (input, ground truth, DAFormer baseline, + BLV) and DARS Fig. 7 (input, ground truth,
    ST, CBST, DARS): one row per image, columns input, ground truth, then each model's prediction in
    the Cityscapes palette (ignored pixels black). ``predictions``: ``{name: [H×W maps]}``, one map per
    image, in the order of ``images``."""
    n = len(images)
    if n == 0:
        raise ResultsError("plot_qualitative: no images")
    if len(truth) != n or any(len(v) != n for v in predictions.values()):
        raise ResultsError(f"plot_qualitative: {n} images but {len(truth)} labels and prediction counts "
                           f"{ {k: len(v) for k, v in predictions.items()} }")
    cols = ["input", "ground truth", *predictions]
    fig, axes = _subplots(n, len(cols), figsize=(2.8 * len(cols), 1.6 * n + 0.6), squeeze=False)
    for r in range(n):
        panels = [_display_image(images[r]), colorize(np.asarray(truth[r]))]
        panels += [colorize(np.asarray(v[r].cpu().numpy() if hasattr(v[r], "cpu") else v[r])) for v in predictions.values()]
        for c, p in enumerate(panels):
            axes[r, c].imshow(p, interpolation="nearest")
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
        if row_titles is not None:
            axes[r, 0].set_ylabel(row_titles[r], fontsize=8)
    for c, name in enumerate(cols):
        axes[0, c].set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ BLV Fig. 5
def _history(rec: Mapping, stat: str, what: str) -> tuple[np.ndarray, np.ndarray]:
    hist = dict(rec.get("history") or {})
    if stat not in hist and isinstance(rec.get(stat), list):  # older records keep the loss at the top level
        hist[stat] = rec[stat]
    if stat not in hist:
        raise ResultsError(f"{what}: the record's history has no {stat!r}; it has {sorted(hist)}")
    y = np.asarray(hist[stat], dtype=float)
    every = int(rec.get("history_every", 1) or 1)
    return np.arange(y.size) * every, y


def plot_sigma_curves(curves: Mapping[str, Any], *, t_end: int | None = None, stat: str = "sigma",
                      title: str = "σ(t) during training"):
    """BLV Fig. 5 (σ as a function of the iteration, Appendix C's temporal variation): one line per
    entry of ``curves``, each a run record (its ``history[stat]``, iterations from ``history_every``),
    a callable ``t -> σ`` (drawn on 0..``t_end``), a constant σ, or a pair of arrays ``(t, σ)``."""
    if not curves:
        raise ResultsError("plot_sigma_curves: no curves given")
    fig, ax = _subplots(figsize=(6, 3.4))
    for name, c in curves.items():
        if isinstance(c, Mapping):
            t, s = _history(c, stat, f"curve {name!r}")
            ax.plot(t, s, lw=2, label=name)
        elif callable(c):
            if t_end is None:
                raise ResultsError(f"curve {name!r} is a function: pass t_end to draw it")
            t = np.linspace(0, t_end, 401)
            ax.plot(t, [float(c(int(v))) for v in t], lw=2, label=name)
        elif isinstance(c, (int, float)):
            ax.axhline(float(c), ls="--", lw=1, color="gray", label=name)
        elif isinstance(c, (tuple, list)) and len(c) == 2:
            ax.plot(np.asarray(c[0], dtype=float), np.asarray(c[1], dtype=float), lw=2, label=name)
        else:
            raise ResultsError(f"curve {name!r}: expected a record, a function, a number or (t, σ), "
                               f"got {type(c).__name__}")
    ax.set_xlabel("iteration t")
    ax.set_ylabel("σ")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------- BLV Tables 6/7/8 as bar charts
def plot_ablation(records_by_arm, metric="mIoU", *, paper: Mapping[str, float] | None = None,
                  baseline: str | None = None, order: Sequence[str] | None = None, title: str = "",
                  ylabel: str | None = None):
    """BLV Tables 6 (variation forms), 7 (σ) and 8 (components) as bars: left, our value per arm (bar =
    mean, one dot per seed); right (when there is a baseline arm), each arm's gain over it, paired by
    seed (dots per seed), beside the paper's gain (hatched) when ``paper`` gives the paper's value per
    arm (keys as our arms). ``order`` fixes the arms' order (default: as given)."""
    from blvnb.viz.tables import _by_arm, _values

    arms = _by_arm(records_by_arm, None, None)
    names = list(order) if order is not None else list(arms)
    missing = [a for a in names if a not in arms]
    if missing:
        raise ResultsError(f"order names arms {missing} that the records do not have; they have {list(arms)}")
    if baseline is None and "baseline" in arms:
        baseline = "baseline"
    if baseline is not None and baseline not in arms:
        raise ResultsError(f"baseline arm {baseline!r} is not among the arms {list(arms)}")
    if paper is not None:
        unknown = [a for a in paper if a not in arms]
        if unknown:
            raise ResultsError(f"paper values for arms {unknown} that the records do not have ({list(arms)})")
    vals = {a: _values(arms[a], metric) for a in names}
    ncols = 2 if baseline is not None and len(names) > 1 else 1
    fig, axes = _subplots(1, ncols, figsize=(1.1 * len(names) * ncols + 3, 3.6), squeeze=False)
    ax = axes[0, 0]
    x = np.arange(len(names))
    means = [np.nanmean(list(vals[a].values())) for a in names]
    ax.bar(x, means, 0.6, color="#8da0cb", edgecolor="k", linewidth=0.5)
    for i, a in enumerate(names):
        v = list(vals[a].values())
        ax.scatter(np.full(len(v), x[i]) + np.linspace(-0.12, 0.12, len(v)), v, s=14, color="k", zorder=3)
    lo = np.nanmin([min(v.values()) for v in vals.values()])
    hi = np.nanmax([max(v.values()) for v in vals.values()])
    pad = max(1.0, 0.25 * (hi - lo))
    ax.set_ylim(lo - pad, hi + pad)
    ax.set_xticks(x, [str(a) for a in names], rotation=30, ha="right")
    ax.set_ylabel(ylabel or f"{metric if isinstance(metric, str) else 'value'} (ours)")
    ax.set_title("ours: mean (bar) and seeds (dots)", fontsize=9)
    if ncols == 2:
        ax2 = axes[0, 1]
        others = [a for a in names if a != baseline]
        xo = np.arange(len(others))
        b = vals[baseline]
        w = 0.38 if paper else 0.6
        for i, a in enumerate(others):
            d = [vals[a][s] - b[s] for s in sorted(set(vals[a]) & set(b))]
            if d:
                ax2.bar(xo[i] - (w / 2 if paper else 0), np.mean(d), w, color="#8da0cb", edgecolor="k", linewidth=0.5,
                        label="ours (paired by seed)" if i == 0 else None)
                ax2.scatter(np.full(len(d), xo[i] - (w / 2 if paper else 0)), d, s=14, color="k", zorder=3)
            if paper and a in paper and baseline in paper:
                ax2.bar(xo[i] + w / 2, paper[a] - paper[baseline], w, color="white", edgecolor="k", hatch="//",
                        linewidth=0.5, label="paper" if i == 0 else None)
        ax2.axhline(0, color="gray", lw=1)
        ax2.set_xticks(xo, [str(a) for a in others], rotation=30, ha="right")
        ax2.set_ylabel(f"gain over {baseline} (points)")
        ax2.set_title(f"gain over {baseline}", fontsize=9)
        if others:
            ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- DARS Fig. 4
def plot_round_losses(rounds: Mapping[str, Mapping], *, stat: str = "loss", smooth: int = 1,
                      title: str = "Training loss on pseudo labels, per round"):
    """DARS Fig. 4 (training loss of pseudo labels in iterative training, k = 2, for the settings of α
    and β): one line per entry of ``rounds`` (``{label: run record}``), the record's ``history[stat]``
    against the iteration of that round, smoothed by a moving mean over ``smooth`` logged points."""
    if not rounds:
        raise ResultsError("plot_round_losses: no rounds given")
    smooth = max(1, int(smooth))
    fig, ax = _subplots(figsize=(6.4, 3.6))
    for name, rec in rounds.items():
        if not isinstance(rec, Mapping):
            raise ResultsError(f"round {name!r}: expected a run record, got {type(rec).__name__}")
        t, y = _history(rec, stat, f"round {name!r}")
        if smooth > 1 and y.size >= smooth:
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid")
            t = t[smooth - 1:]
        ax.plot(t, y, lw=1.6, label=name)
    ax.set_xlabel("iteration of the round")
    ax.set_ylabel(stat)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------- DARS Fig. 5
def group_gains(method, baseline, groups: Mapping[int, Sequence[int]]) -> dict[int, np.ndarray]:
    """Per group, the per-seed gain (% points) of the mean IoU over the group's classes, paired by seed
    (classes whose IoU is undefined in a seed are left out of that seed's mean)."""
    gains, _ = per_class_gains(method, baseline)
    out = {}
    for g, classes in groups.items():
        cl = [int(c) for c in classes]
        bad = [c for c in cl if not 0 <= c < NUM_CLASSES]
        if bad:
            raise ResultsError(f"group {g}: class indices {bad} outside 0..{NUM_CLASSES - 1}")
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[g] = np.nanmean(gains[:, cl], axis=1) if cl else np.full(gains.shape[0], np.nan)
    return out


_GROUP_NAMES = {1: "1 frequent & large", 2: "2 frequent & small", 3: "3 rare & large", 4: "4 rare & small"}


def plot_group_gains(pairs: Mapping[str, tuple[Any, Any]], groups: Mapping[int, Sequence[int]], *,
                     title: str = "Gain per occurrence/size group"):
    """DARS Fig. 5 (a) (performance gains of the four occurrence/size groups in low- and high-data
    regimes): bars per group, one bar per regime (``pairs = {regime: (method records, baseline
    records)}``), height = mean over seeds of the gain in the group's mean IoU, dots = seeds.
    ``groups``: ``{1: [class ids], …, 4: […]}`` from :func:`blvnb.data.stats.occurrence_size_groups`
    (or ``LabelStatistics.groups()``)."""
    if not pairs:
        raise ResultsError("plot_group_gains: no (method, baseline) pairs given")
    if not groups:
        raise ResultsError("plot_group_gains: no groups given")
    per = {name: group_gains(m, b, groups) for name, (m, b) in pairs.items()}
    gs = list(groups)
    fig, ax = _subplots(figsize=(1.6 * len(gs) * max(1, len(pairs)) / 2 + 3, 3.6))
    w = 0.8 / len(per)
    for j, (name, gg) in enumerate(per.items()):
        xs = np.arange(len(gs)) - 0.4 + (j + 0.5) * w
        ax.bar(xs, [np.nanmean(gg[g]) if np.isfinite(gg[g]).any() else 0 for g in gs], w, label=name,
               edgecolor="k", linewidth=0.5)
        for x, g in zip(xs, gs):
            ax.scatter(np.full(gg[g].size, x), gg[g], s=12, color="k", zorder=3)
    ax.axhline(0, color="gray", lw=1)
    ax.set_xticks(np.arange(len(gs)), [f"{_GROUP_NAMES.get(g, g)}\n({len(groups[g])} classes)" for g in gs], fontsize=8)
    ax.set_ylabel("gain in the group's mIoU (points)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def accuracy_by_object_size(predictions: Iterable[Any], labels: Iterable[Any], bins: int | Sequence[float] = 10, *,
                            num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE):
    """DARS Fig. 5 (b)'s numbers: objects = 8-connected components of each class in the ground truth;
    an object's accuracy = the share of its pixels predicted as its class. Returns a DataFrame, one line
    per size bin (``bins``: edges in pixels, or a count of equal-width bins up to the largest object):
    ``size_from``, ``size_to``, ``objects``, ``accuracy`` (mean over the bin's objects, in %) and
    ``pixel_accuracy`` (pixel-weighted, in %)."""
    import pandas as pd
    from scipy import ndimage

    sizes, correct = [], []
    n = 0
    for pred, lab in zip(predictions, labels):
        p = np.asarray(pred.cpu().numpy() if hasattr(pred, "cpu") else pred)
        t = np.asarray(lab.cpu().numpy() if hasattr(lab, "cpu") else lab)
        if p.shape != t.shape or t.ndim != 2:
            raise ResultsError(f"image {n}: prediction {p.shape} and label {t.shape} must be the same H×W")
        n += 1
        for c in np.unique(t):
            if c == ignore_index or not 0 <= c < num_classes:
                continue
            comp, k = ndimage.label(t == c, structure=np.ones((3, 3), dtype=bool))
            if k == 0:
                continue
            size = np.bincount(comp.ravel(), minlength=k + 1)[1:]
            hit = np.bincount(comp.ravel(), weights=(p == c).ravel(), minlength=k + 1)[1:]
            sizes.append(size)
            correct.append(hit)
    if n == 0:
        raise ResultsError("accuracy_by_object_size: no images")
    if not sizes:
        raise ResultsError("accuracy_by_object_size: the labels hold no object (all ignored)")
    size, hit = np.concatenate(sizes).astype(float), np.concatenate(correct)
    edges = (np.linspace(0, size.max(), int(bins) + 1) if isinstance(bins, (int, np.integer))
             else np.asarray(bins, dtype=float))
    if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
        raise ResultsError(f"bins must be a count ≥ 1 or increasing edges, got {bins!r}")
    which = np.clip(np.searchsorted(edges, size, side="right") - 1, 0, edges.size - 2)
    inside = (size >= edges[0]) & (size <= edges[-1])
    rows = []
    for b in range(edges.size - 1):
        m = inside & (which == b)
        rows.append({"size_from": edges[b], "size_to": edges[b + 1], "objects": int(m.sum()),
                     "accuracy": 100 * float(np.mean(hit[m] / size[m])) if m.any() else np.nan,
                     "pixel_accuracy": 100 * float(hit[m].sum() / size[m].sum()) if m.any() else np.nan})
    return pd.DataFrame(rows)


def plot_accuracy_vs_size(curves: Mapping[str, Any], *, title: str = "Accuracy against object size"):
    """DARS Fig. 5 (b) (accuracy as a function of object size on the validation set): one line per
    model, ``curves = {name: accuracy_by_object_size(...)}``; x = bin centre (pixels), y = mean object
    accuracy, marker size growing with the number of objects in the bin."""
    if not curves:
        raise ResultsError("plot_accuracy_vs_size: no curves given")
    fig, ax = _subplots(figsize=(6, 3.6))
    for name, df in curves.items():
        need = {"size_from", "size_to", "objects", "accuracy"}
        if not need <= set(getattr(df, "columns", [])):
            raise ResultsError(f"curve {name!r}: expected a DataFrame from accuracy_by_object_size, with {sorted(need)}")
        centre = (df["size_from"].to_numpy() + df["size_to"].to_numpy()) / 2
        ax.plot(centre, df["accuracy"].to_numpy(), marker="o", lw=1.5, label=name, ms=3)
    ax.set_xlabel("object size (pixels, bin centre)")
    ax.set_ylabel("mean object accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
