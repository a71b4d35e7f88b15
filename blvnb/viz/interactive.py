"""Interactive figures that work offline, each with a static matplotlib twin for print.

The book is static HTML, read without a kernel and often without a network. The explorers here are
computed by the library (small real trainings, the real pseudo-labellers, real run records) and drawn
with **plotly**: a well-kept library (MIT, released several times a year) whose Python wheel carries the
complete ``plotly.min.js`` — nothing is fetched at build or read time. ``blvnb reproduce`` copies that
file into the book's ``_static/`` (:func:`write_plotly_js`) and ``_config.yml`` loads it on every page
(``html_js_files``), so the figures draw from the book itself, never from a CDN.

An :class:`Interactive` shows as the plotly figure in HTML (``text/html``) and as its matplotlib twin
in print and PDF (``image/png``): myst-nb picks the richer one per output format.

* :func:`blv_toy` + :func:`blv_toy_figure` — BLV Fig. 1 as a toy: a 2-D long-tailed problem, a tiny MLP
  trained per σ with Eq. (3)'s logit variation (σ = 0: plain cross entropy); a slider over σ shows the
  decision regions, the learned 2-D features and the rare class's accuracy.
* :func:`dars_ratio_sweep` + :func:`dars_ratio_figure` — DARS's labelling ratio: a slider over α shows
  the class distribution of ST, CBST, DA and DARS pseudo labels against the prior, and their KL.
* :func:`iou_explorer` — per-class IoU of the arms of a results table, per-seed values on hover.
"""

from __future__ import annotations

import hashlib
import html as _html
import io
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from blvnb.errors import ConfigError

PALETTE = ("#4c72b0", "#dd8452", "#c44e52", "#55a868", "#8172b3", "#937860")
METHOD_COLORS = {"prior": "#222222", "ST": "#c44e52", "CBST": "#dd8452", "DA": "#55a868", "DARS": "#4c72b0"}


# --- serving plotly.js -----------------------------------------------------------------------------

def plotly_js_path() -> Path:
    """The ``plotly.min.js`` shipped inside the installed plotly wheel."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():  # pragma: no cover - every plotly wheel ships it
        raise ConfigError(f"plotly {plotly.__version__} has no {path}: reinstall plotly (pip install plotly)")
    return path


def write_plotly_js(static_dir: str | Path) -> Path:
    """Copy ``plotly.min.js`` into the book's static folder (when it differs); returns the copy's path."""
    src, dst = plotly_js_path(), Path(static_dir) / "plotly.min.js"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.is_file() or dst.stat().st_size != src.stat().st_size or dst.read_bytes() != src.read_bytes():
        shutil.copyfile(src, dst)
    return dst


# --- the figure object -------------------------------------------------------------------------------

@dataclass
class Interactive:
    """A plotly figure (``plotly``) and its static twin (``static``, a matplotlib figure)."""

    plotly: object
    static: object
    name: str

    def html(self) -> str:
        """A ``<div>`` and the script that draws it; plotly.js itself comes from the page (``_static``)."""
        import plotly.io as pio

        div_id = "blvnb-" + hashlib.sha1(self.name.encode()).hexdigest()[:10]
        body = pio.to_html(self.plotly, include_plotlyjs=False, full_html=False, div_id=div_id,
                           config={"displaylogo": False, "responsive": True})
        note = (f'<p class="blvnb-nojs" id="{div_id}-nojs" style="display:none">This interactive figure needs '
                'plotly.js, which the built book serves from its <code>_static/</code> folder.</p>'
                f'<script>if (typeof Plotly === "undefined") {{ document.getElementById("{div_id}-nojs")'
                '.style.display = "block"; }</script>')
        return f'<div class="blvnb-interactive" data-name="{_html.escape(self.name)}">{body}{note}</div>'

    def png(self) -> bytes:
        buf = io.BytesIO()
        self.static.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        return buf.getvalue()

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/html": self.html(), "image/png": self.png(), "text/plain": f"<interactive figure: {self.name}>"}


def _subplots(*args, **kw):
    from blvnb.viz.style import subplots as sub

    return sub(*args, **kw)


# --- (1) BLV Fig. 1 as a toy -------------------------------------------------------------------------

#: The toy's classes: (name, mean, standard deviation, training points). One class is rare.
TOY_CLASSES = (("head", (0.0, 0.0), 1.0, 1000), ("middle", (2.6, 0.4), 0.8, 200), ("rare", (1.3, 2.3), 0.6, 20))


@dataclass
class ToyResult:
    sigmas: tuple[float, ...]
    seeds: tuple[int, ...]
    class_names: tuple[str, ...]
    counts: tuple[int, ...]
    accuracy: np.ndarray          # sigmas × seeds × classes, on a balanced test set
    x_train: np.ndarray           # N×2 (seed 0)
    y_train: np.ndarray
    grid: tuple[np.ndarray, np.ndarray]  # the x and y coordinates of the decision-region grid
    regions: np.ndarray           # sigmas × G × G predicted class (seed 0)
    features: np.ndarray          # sigmas × N × 2 learned features of the training points (seed 0)
    steps: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def rare(self) -> int:
        return int(np.argmin(self.counts))

    def rare_accuracy(self) -> np.ndarray:
        """sigmas × seeds: the rare class's accuracy (recall) on the balanced test set."""
        return self.accuracy[:, :, self.rare]


def _toy_data(rng: np.random.Generator, per_class: Sequence[int]):
    xs, ys = [], []
    for k, ((_, mean, sd, _), n) in enumerate(zip(TOY_CLASSES, per_class)):
        xs.append(rng.normal(mean, sd, size=(n, 2)))
        ys.append(np.full(n, k))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def _toy_model(seed: int):
    import torch
    from torch import nn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        body = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 2))
        head = nn.Linear(2, len(TOY_CLASSES))
    return body, head


def blv_toy(sigmas: Sequence[float] = (0.0, 0.5, 1.0, 2.0, 4.0, 6.0), seeds: Sequence[int] = (0, 1, 2), *,
            steps: int = 200, lr: float = 0.03, grid: int = 60, clamp: str = "paper") -> ToyResult:
    """Train the toy MLP once per (σ, seed): 2 inputs → 32 → 32 → a 2-D feature → 3 logits, full batch,
    Adam. σ = 0 is plain cross entropy; σ > 0 is :func:`blvnb.losses.blv.blv_loss` (Eq. 3, the class
    counts of the training set, Algorithm 1's clamp unless ``clamp="released"``). For one seed, every σ
    sees the same data, initial weights and order (paired by seed). Seconds on a CPU.
    """
    import torch

    from blvnb.losses.blv import blv_loss

    sigmas = tuple(float(s) for s in sigmas)
    seeds = tuple(int(s) for s in seeds)
    if not sigmas or min(sigmas) < 0:
        raise ConfigError(f"blv_toy: sigmas must be non-negative and not empty, got {sigmas}")
    if not seeds:
        raise ConfigError("blv_toy: give at least one seed")
    counts = tuple(c[3] for c in TOY_CLASSES)
    x_test, y_test = _toy_data(np.random.default_rng(12345), [300] * len(TOY_CLASSES))
    lo, hi = -3.5, 5.0
    gx = np.linspace(lo, hi, grid, dtype=np.float32)
    gy = np.linspace(-3.5, 5.0, grid, dtype=np.float32)
    grid_pts = torch.from_numpy(np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2))
    acc = np.zeros((len(sigmas), len(seeds), len(TOY_CLASSES)))
    regions = np.zeros((len(sigmas), grid, grid), dtype=np.int64)
    feats = None
    x0 = y0 = None
    for j, seed in enumerate(seeds):
        x, y = _toy_data(np.random.default_rng(seed), counts)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        class_counts = torch.bincount(yt, minlength=len(TOY_CLASSES)).double()
        if j == 0:
            x0, y0 = x, y
            feats = np.zeros((len(sigmas), len(x), 2), dtype=np.float32)
        for i, sigma in enumerate(sigmas):
            body, head = _toy_model(seed)
            params = list(body.parameters()) + list(head.parameters())
            opt = torch.optim.Adam(params, lr=lr)
            gen = torch.Generator().manual_seed(10_000 + seed)
            for _ in range(steps):
                logits = head(body(xt))
                if sigma > 0:
                    loss = blv_loss(logits, yt, class_counts, sigma=sigma, clamp=clamp, generator=gen)
                else:
                    loss = torch.nn.functional.cross_entropy(logits, yt)
                opt.zero_grad()
                loss.backward()
                opt.step()
            with torch.no_grad():
                pred = head(body(torch.from_numpy(x_test))).argmax(1).numpy()
                acc[i, j] = [(pred[y_test == k] == k).mean() for k in range(len(TOY_CLASSES))]
                if j == 0:
                    regions[i] = head(body(grid_pts)).argmax(1).numpy().reshape(grid, grid)
                    feats[i] = body(xt).numpy()
    return ToyResult(sigmas=sigmas, seeds=seeds, class_names=tuple(c[0] for c in TOY_CLASSES), counts=counts,
                     accuracy=acc, x_train=x0, y_train=y0, grid=(gx, gy), regions=regions, features=feats,
                     steps=steps)


def blv_toy_static(res: ToyResult, sigmas: Sequence[float] | None = None):
    """The print twin: decision regions at the smallest and largest σ, and rare-class accuracy against σ."""
    from matplotlib.colors import ListedColormap

    show = list(sigmas) if sigmas is not None else [res.sigmas[0], res.sigmas[-1]]
    fig, axes = _subplots(1, len(show) + 1, figsize=(4.2 * (len(show) + 1), 3.8))
    cmap = ListedColormap([c + "55" for c in PALETTE[:len(res.class_names)]])
    gx, gy = res.grid
    for ax, s in zip(axes, show):
        i = res.sigmas.index(float(s))
        ax.pcolormesh(gx, gy, res.regions[i], cmap=cmap, shading="auto", vmin=0, vmax=len(res.class_names) - 1)
        for k, name in enumerate(res.class_names):
            m = res.y_train == k
            ax.scatter(res.x_train[m, 0], res.x_train[m, 1], s=6 if name != "rare" else 22, c=PALETTE[k],
                       edgecolors="k" if name == "rare" else "none", linewidths=0.4, label=f"{name} ({res.counts[k]})")
        ax.set_title(f"σ = {s:g}" + (" (cross entropy)" if s == 0 else " (BLV)") +
                     f": rare acc. {100 * res.rare_accuracy()[i].mean():.0f} %", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(fontsize=7, loc="lower left")
    ax = axes[-1]
    ra = 100 * res.rare_accuracy()
    ax.errorbar(res.sigmas, ra.mean(1), yerr=[ra.mean(1) - ra.min(1), ra.max(1) - ra.mean(1)], marker="o",
                color=PALETTE[res.rare], capsize=3)
    ax.set_xlabel("σ")
    ax.set_ylabel("rare-class accuracy % (min–max over seeds)")
    ax.set_title(f"{len(res.seeds)} seed{'s' if len(res.seeds) != 1 else ''}, balanced test set", fontsize=10)
    fig.tight_layout()
    return fig


def blv_toy_figure(res: ToyResult, *, title: str = "BLV Fig. 1 as a toy") -> Interactive:
    """Slider over σ: decision regions with the training points (left), the learned 2-D features
    (middle), and the rare class's accuracy against σ with the chosen σ marked (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names, k = res.class_names, len(res.class_names)
    ra = 100 * res.rare_accuracy()
    fig = make_subplots(rows=1, cols=3, column_widths=[0.36, 0.36, 0.28], horizontal_spacing=0.06,
                        subplot_titles=("input space: decision regions", "learned 2-D features",
                                        "rare-class accuracy vs σ"))
    colorscale = [[i / max(k - 1, 1), PALETTE[i]] for i in range(k)]
    per_sigma = []
    for i, s in enumerate(res.sigmas):
        traces = [go.Heatmap(x=res.grid[0], y=res.grid[1], z=res.regions[i], colorscale=colorscale, zmin=0,
                             zmax=k - 1, opacity=0.35, showscale=False, hoverinfo="skip", visible=i == 0)]
        for c in range(k):
            m = res.y_train == c
            traces.append(go.Scattergl(x=res.features[i, m, 0], y=res.features[i, m, 1], mode="markers",
                                       marker=dict(color=PALETTE[c], size=4 if names[c] != "rare" else 8),
                                       name=names[c], legendgroup=names[c], showlegend=False, visible=i == 0,
                                       hovertemplate=f"{names[c]}<extra>σ = {s:g}</extra>"))
        traces.append(go.Scatter(x=[s], y=[ra[i].mean()], mode="markers", marker=dict(size=14, color="black",
                                 symbol="circle-open", line=dict(width=3)), showlegend=False, visible=i == 0,
                                 hovertemplate="σ = %{x}: %{y:.1f} %<extra></extra>"))
        per_sigma.append(traces)
        for t in traces[:1]:
            fig.add_trace(t, row=1, col=1)
        for t in traces[1:-1]:
            fig.add_trace(t, row=1, col=2)
        fig.add_trace(traces[-1], row=1, col=3)
    n_var = len(per_sigma[0])
    # the training points (same for every σ) and the accuracy curve: always visible
    for c in range(k):
        m = res.y_train == c
        fig.add_trace(go.Scatter(x=res.x_train[m, 0], y=res.x_train[m, 1], mode="markers", name=f"{names[c]} "
                                 f"({res.counts[c]} points)", legendgroup=names[c],
                                 marker=dict(color=PALETTE[c], size=4 if names[c] != "rare" else 8,
                                             line=dict(width=0.5 if names[c] == "rare" else 0, color="black"))),
                      row=1, col=1)
    fig.add_trace(go.Scatter(x=list(res.sigmas), y=ra.mean(1), mode="lines+markers", name="rare-class accuracy",
                             line=dict(color=PALETTE[res.rare]), error_y=dict(type="data", symmetric=False,
                             array=ra.max(1) - ra.mean(1), arrayminus=ra.mean(1) - ra.min(1)),
                             customdata=np.round(ra, 1), hovertemplate="σ = %{x}: mean %{y:.1f} %, per seed "
                             "%{customdata}<extra></extra>"), row=1, col=3)
    n_fixed = k + 1
    steps = []
    for i, s in enumerate(res.sigmas):
        vis = [j == i for j in range(len(res.sigmas)) for _ in range(n_var)] + [True] * n_fixed
        label = "CE" if s == 0 else f"{s:g}"
        steps.append(dict(method="update", label=label, args=[
            {"visible": vis},
            {"title.text": f"{title}: σ = {s:g}{' (plain cross entropy)' if s == 0 else ''}<br><sub>rare-class "
                           f"accuracy {ra[i].mean():.1f} % (mean of {len(res.seeds)} "
                           f"seed{'s' if len(res.seeds) != 1 else ''})</sub>"}]))
    fig.update_layout(
        title=dict(text=steps[0]["args"][1]["title.text"], font=dict(size=13)), height=580, margin=dict(t=90, b=170),
        sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="σ = "), pad=dict(t=50))],
        legend=dict(orientation="h", y=-0.45, yanchor="top", x=0.0), template="plotly_white")
    fig.update_xaxes(showticklabels=False, row=1, col=1)
    fig.update_yaxes(showticklabels=False, row=1, col=1)
    fig.update_xaxes(title_text="σ", row=1, col=3)
    fig.update_yaxes(title_text="%", row=1, col=3)
    return Interactive(fig, blv_toy_static(res), name=f"blv-toy-{len(res.sigmas)}-{res.seeds}")


# --- (2) DARS: the labelling ratio ------------------------------------------------------------------

@dataclass
class RatioSweep:
    alphas: tuple[float, ...]
    methods: tuple[str, ...]
    prior: np.ndarray            # C
    shares: np.ndarray           # alphas × methods × C: class shares of the pseudo labels
    kl: np.ndarray               # alphas × methods: KL(prior ‖ pseudo labels)
    labeled: np.ndarray          # alphas × methods: share of pixels pseudo-labelled
    class_names: tuple[str, ...]


def dars_ratio_sweep(probs, prior, *, alphas: Sequence[float] = tuple(np.round(np.arange(0.1, 0.91, 0.1), 2)),
                     methods: Sequence[str] = ("st", "cbst", "da", "dars"), seed: int = 0,
                     class_names: Sequence[str] | None = None) -> RatioSweep:
    """Label one set of teacher outputs (N×C×H×W probabilities) with each method at each α."""
    import torch

    from blvnb.classes import CLASSES
    from blvnb.pseudo import distribution, labelers

    alphas = tuple(float(a) for a in alphas)
    if not alphas or not all(0 < a <= 1 for a in alphas):
        raise ConfigError(f"labelling ratios must lie in (0, 1], got {alphas}")
    c = probs.shape[1]
    prior_t = distribution.prior_from_counts(prior)
    names = tuple(class_names) if class_names is not None else (tuple(CLASSES) if c == len(CLASSES) else
                                                                 tuple(f"class {j}" for j in range(c)))
    shares = np.zeros((len(alphas), len(methods), c))
    kl = np.zeros((len(alphas), len(methods)))
    lab = np.zeros((len(alphas), len(methods)))
    for i, a in enumerate(alphas):
        for j, m in enumerate(methods):
            labels, _ = labelers.pseudo_label_with_thresholds(
                probs, prior_t, method=m, alpha=a, generator=torch.Generator(device=probs.device).manual_seed(seed))
            sh = distribution.label_distribution(labels, c)
            shares[i, j] = sh.numpy()
            kl[i, j] = distribution.kl_divergence(prior_t, sh) if float(sh.sum()) > 0 else np.nan
            lab[i, j] = float((labels != 255).float().mean())
    return RatioSweep(alphas=alphas, methods=tuple(m.upper() for m in methods), prior=prior_t.numpy(),
                      shares=shares, kl=kl, labeled=lab, class_names=names)


def dars_ratio_static(sw: RatioSweep, alpha: float | None = None):
    """The print twin: class shares at one α (log scale), and KL against α for every method."""
    alpha = sw.alphas[len(sw.alphas) // 2] if alpha is None else alpha
    i = int(np.argmin(np.abs(np.asarray(sw.alphas) - alpha)))
    order = np.argsort(-sw.prior)
    fig, (a1, a2) = _subplots(1, 2, figsize=(13, 3.8), gridspec_kw={"width_ratios": [2.2, 1]})
    x = np.arange(len(order))
    w = 0.8 / (len(sw.methods) + 1)
    a1.bar(x - 0.4 + w / 2, 100 * sw.prior[order], w, color=METHOD_COLORS["prior"], label="prior")
    for j, m in enumerate(sw.methods):
        a1.bar(x - 0.4 + w * (j + 1.5), 100 * sw.shares[i, j, order], w, color=METHOD_COLORS.get(m), label=m)
    a1.set_yscale("log")
    a1.set_xticks(x, [sw.class_names[o] for o in order], rotation=60, ha="right", fontsize=8)
    a1.set_ylabel("% of pseudo-labelled pixels")
    a1.set_title(f"class shares at α = {sw.alphas[i]:g}", fontsize=10)
    a1.legend(fontsize=8, ncol=5)
    for j, m in enumerate(sw.methods):
        a2.plot(sw.alphas, np.maximum(sw.kl[:, j], 1e-7), marker="o", color=METHOD_COLORS.get(m), label=m)
    a2.set_yscale("log")
    a2.set_xlabel("labelling ratio α")
    a2.set_ylabel("KL(prior ‖ pseudo labels)")
    a2.legend(fontsize=8)
    fig.tight_layout()
    return fig


def dars_ratio_figure(sw: RatioSweep, *, title: str = "Pseudo-label class shares against the prior") -> Interactive:
    """Slider over α: the class shares of each method's pseudo labels beside the prior (log scale),
    and KL against α with the chosen α marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    order = np.argsort(-sw.prior)
    names = [sw.class_names[o] for o in order]
    fig = make_subplots(rows=1, cols=2, column_widths=[0.66, 0.34], horizontal_spacing=0.1,
                        subplot_titles=("class shares, % of pseudo-labelled pixels (black: the prior)",
                                        "KL(prior ‖ pseudo labels)"))
    n_var = len(sw.methods) + 1
    for i, a in enumerate(sw.alphas):
        for j, m in enumerate(sw.methods):
            fig.add_trace(go.Bar(x=names, y=100 * sw.shares[i, j, order], name=m, marker_color=METHOD_COLORS.get(m),
                                 legendgroup=m, showlegend=False, visible=i == 0,
                                 hovertemplate=f"{m}, α = {a:g}: %{{x}} %{{y:.3g}} %<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=[a] * len(sw.methods), y=np.maximum(sw.kl[i], 1e-7), mode="markers",
                                 marker=dict(size=13, symbol="circle-open", color="black", line=dict(width=2)),
                                 showlegend=False, visible=i == 0, hoverinfo="skip"), row=1, col=2)
    fig.add_trace(go.Bar(x=names, y=100 * sw.prior[order], name="prior (labeled)", marker_color=METHOD_COLORS["prior"],
                         showlegend=False,
                         hovertemplate="prior: %{x} %{y:.3g} %<extra></extra>"), row=1, col=1)
    for j, m in enumerate(sw.methods):
        fig.add_trace(go.Scatter(x=list(sw.alphas), y=np.maximum(sw.kl[:, j], 1e-7), mode="lines+markers+text", name=m,
                                 text=[""] * (len(sw.alphas) - 1) + [m], textposition="middle right",
                                 textfont=dict(color=METHOD_COLORS.get(m), size=11),
                                 cliponaxis=False,
                                 legendgroup=m, showlegend=False, line=dict(color=METHOD_COLORS.get(m)),
                                 customdata=100 * sw.labeled[:, j],
                                 hovertemplate=f"{m}: α = %{{x}}, KL %{{y:.2e}}, %{{customdata:.1f}} % of pixels "
                                               "labelled<extra></extra>"), row=1, col=2)
    n_fixed = 1 + len(sw.methods)
    steps = []
    for i, a in enumerate(sw.alphas):
        vis = [t == i for t in range(len(sw.alphas)) for _ in range(n_var)] + [True] * n_fixed
        kl_text = ", ".join(f"{m} {sw.kl[i, j]:.1e}" for j, m in enumerate(sw.methods))
        steps.append(dict(method="update", label=f"{a:g}", args=[{"visible": vis},
                                                                  {"title.text": f"{title}, α = {a:g}<br>"
                                                                                 f"<sub>KL: {kl_text}</sub>"}]))
    fig.update_layout(title=dict(text=steps[0]["args"][1]["title.text"], font=dict(size=13)), barmode="group",
                      height=520, margin=dict(t=100, b=40, r=50), template="plotly_white", showlegend=False,
                      sliders=[dict(active=0, steps=steps, currentvalue=dict(prefix="α = "), pad=dict(t=90))])
    fig.update_yaxes(type="log", row=1, col=1)
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="α", range=[min(sw.alphas) - 0.05, max(sw.alphas) + 0.18], row=1, col=2)
    return Interactive(fig, dars_ratio_static(sw), name=f"dars-ratio-{sw.alphas}-{sw.methods}")


# --- (3) per-class IoU explorer -----------------------------------------------------------------------

def _iou_matrix(name: str, per_seed) -> np.ndarray:
    arr = np.asarray([[np.nan if v is None else float(v) for v in row] for row in per_seed], dtype=float)
    if arr.ndim != 2:
        raise ConfigError(f"iou_explorer: arm {name!r} needs a list of per-seed per-class IoU vectors, got shape "
                          f"{arr.shape}")
    return arr


def iou_explorer(values: Mapping[str, Sequence[Sequence[float]]], *, seeds: Sequence[int] | None = None,
                 class_names: Sequence[str] | None = None, tail: Sequence[int] | None = None, title: str,
                 percent: bool | None = None) -> Interactive:
    """Bars per class for each arm (mean over seeds, min–max as error bars); hovering shows every seed.

    ``values``: ``{arm: [per-seed vectors of per-class IoU]}`` (fractions or percent; fractions ≤ 1 are
    shown in percent). Classes in ``tail`` are marked with ``*``.
    """
    import plotly.graph_objects as go

    from blvnb.classes import CLASSES

    if not values:
        raise ConfigError("iou_explorer: no arms given")
    mats = {a: _iou_matrix(a, v) for a, v in values.items()}
    shapes = {m.shape for m in mats.values()}
    if len(shapes) != 1:
        raise ConfigError(f"iou_explorer: arms differ in seeds or classes: { {a: m.shape for a, m in mats.items()} }")
    n_seeds, c = shapes.pop()
    names = list(class_names) if class_names is not None else (list(CLASSES) if c == len(CLASSES) else
                                                               [f"class {j}" for j in range(c)])
    if len(names) != c:
        raise ConfigError(f"iou_explorer: {len(names)} class names for {c} classes")
    seeds = list(seeds) if seeds is not None else list(range(n_seeds))
    if len(seeds) != n_seeds:
        raise ConfigError(f"iou_explorer: {len(seeds)} seeds for {n_seeds} per-seed vectors")
    scale = 100.0 if percent or (percent is None and np.nanmax([np.nanmax(m) for m in mats.values()]) <= 1.0) else 1.0
    tail = set(tail or ())
    labels = [f"{n}*" if j in tail else n for j, n in enumerate(names)]
    fig = go.Figure()
    for k, (arm, m) in enumerate(mats.items()):
        v = scale * m
        mean = np.nanmean(v, 0)
        per = ["<br>".join(f"seed {s}: {x:.1f}" for s, x in zip(seeds, v[:, j])) for j in range(c)]
        fig.add_trace(go.Bar(x=labels, y=mean, name=arm, marker_color=PALETTE[k % len(PALETTE)], customdata=per,
                             error_y=dict(type="data", symmetric=False, array=np.nanmax(v, 0) - mean,
                                          arrayminus=mean - np.nanmin(v, 0), thickness=1),
                             hovertemplate=f"<b>{arm}</b> — %{{x}}: mean %{{y:.1f}}<br>%{{customdata}}<extra></extra>"))
    fig.update_layout(title=dict(text=title, font=dict(size=13)), barmode="group", height=420, template="plotly_white",
                      yaxis_title="IoU %", margin=dict(t=60, b=110), legend=dict(orientation="h", y=1.08))
    # the static twin
    fig_s, ax = _subplots(figsize=(11, 3.6))
    x = np.arange(c)
    w = 0.8 / len(mats)
    for k, (arm, m) in enumerate(mats.items()):
        v = scale * m
        mean = np.nanmean(v, 0)
        ax.bar(x - 0.4 + w * (k + 0.5), mean, w, label=arm, color=PALETTE[k % len(PALETTE)],
               yerr=[mean - np.nanmin(v, 0), np.nanmax(v, 0) - mean], capsize=2, error_kw=dict(lw=0.6))
    ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("IoU % (min–max over seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig_s.tight_layout()
    return Interactive(fig, fig_s, name=f"iou-{title}-{list(mats)}")


def records_to_iou(records_by_arm: Mapping[str, Sequence[dict]]) -> dict[str, list[list[float]]]:
    """``{arm: [run records]}`` → ``{arm: [per-seed IoU vectors]}`` (the records' ``metrics["iou"]``)."""
    out = {}
    for arm, recs in records_by_arm.items():
        out[arm] = [list(r["metrics"]["iou"]) for r in recs]
    return out


__all__ = ["Interactive", "RatioSweep", "ToyResult", "blv_toy", "blv_toy_figure", "blv_toy_static",
           "dars_ratio_figure", "dars_ratio_static", "dars_ratio_sweep", "iou_explorer", "plotly_js_path",
           "records_to_iou", "write_plotly_js"]
