"""The chapters' figures (blvnb.viz.figures): draw without error, expected axes/artists, numbers right."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from blvnb.classes import BLV_TAIL, NUM_CLASSES  # noqa: E402
from blvnb.errors import BlvnbError  # noqa: E402
from blvnb.viz import figures as F  # noqa: E402


def rec(seed, iou, *, profile="quick", loss="ce", history=None, every=1):
    iou = list(iou)
    return {"profile": profile, "seed": seed, "config": {"seed": seed, "loss": loss},
            "metrics": {"mIoU": float(np.nanmean(np.array(iou, dtype=float))), "iou": iou},
            "history": history or {}, "history_every": every}


def arms(gain_per_seed=(1.0, 2.0, 3.0), base=0.4):
    """Baseline IoU 0.4 + 0.05 · seed everywhere (so that pairing by position would be wrong); the method
    gains g % points on tail classes only, per seed."""
    b = [rec(s, [base + 0.05 * s] * NUM_CLASSES) for s in range(len(gain_per_seed))]
    m = [rec(s, [base + 0.05 * s + (g / 100 if i in BLV_TAIL else 0) for i in range(NUM_CLASSES)], loss="blv")
         for s, g in enumerate(gain_per_seed)]
    return m, b


def test_gain_vs_share_draws_per_seed_dots_and_means():
    m, b = arms()
    shares = np.linspace(1, 19, NUM_CLASSES)
    shares /= shares.sum()
    fig = F.plot_gain_vs_share(m[::-1], b, shares)  # record order does not matter: paired by seed
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    # per group (head, tail): one range line collection, 3 per-seed scatters, 1 mean scatter
    assert len(ax.collections) == 2 * (1 + 3 + 1)
    means = [c for c in ax.collections if c.get_label().startswith(("head", "tail"))]
    head, tail = sorted(means, key=lambda c: c.get_label())
    assert np.allclose(tail.get_offsets()[:, 1], 2.0) and np.allclose(head.get_offsets()[:, 1], 0.0)
    assert ax.get_xscale() == "log"
    gains, seeds = F.per_class_gains(m[::-1], b)
    assert seeds == [0, 1, 2] and np.allclose(gains[:, BLV_TAIL[0]], [1, 2, 3]) and np.allclose(gains[:, 0], 0)
    # the per-seed dots of the figure are the paired gains
    seed_dots = [c for c in ax.collections if not c.get_label().startswith(("head", "tail"))
                 and c.get_offsets().shape[0] == len(BLV_TAIL)]
    assert sorted(round(float(c.get_offsets()[0, 1]), 6) for c in seed_dots) == [1.0, 2.0, 3.0]


def test_gain_vs_share_bad_inputs():
    m, b = arms()
    with pytest.raises(BlvnbError, match="shares"):
        F.plot_gain_vs_share(m, b, [0.5, 0.5])
    gpu = [dict(r, profile="gpu") for r in b]
    with pytest.raises(BlvnbError, match="gpu"):
        F.plot_gain_vs_share(m, gpu, np.full(NUM_CLASSES, 1 / NUM_CLASSES))
    with pytest.raises(BlvnbError, match="none in common"):
        F.per_class_gains(m[:1], b[1:])
    with pytest.raises(BlvnbError, match="no results"):
        F.per_class_gains([], b)


def blobs(n_classes=4, n=60, spread=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 10, size=(n_classes, 8))
    y = np.repeat(np.arange(n_classes), n)
    return centres[y] + rng.normal(0, spread, size=(y.size, 8)), y


def test_separation_high_for_separated_and_near_chance_for_mixed():
    x, y = blobs()
    sep = F.separation(x, y, n_per_class=50, seed=0)
    assert sep["silhouette"] > 0.8 and sep["knn_accuracy"] > 0.95
    assert sep["n_points"] == 200 and sep["n_classes"] == 4 and sep["chance"] == pytest.approx(0.25)
    rng = np.random.default_rng(1)
    mixed = rng.normal(size=(240, 8))
    y_mixed = rng.permutation(np.repeat(np.arange(4), 60))
    sep = F.separation(mixed, y_mixed, seed=0)
    assert abs(sep["silhouette"]) < 0.1
    assert abs(sep["knn_accuracy"] - sep["chance"]) < 0.12
    # seeded subsampling: the same numbers twice
    assert F.separation(mixed, y_mixed, n_per_class=30, seed=3) == F.separation(mixed, y_mixed, n_per_class=30, seed=3)
    with pytest.raises(BlvnbError, match="2 classes"):
        F.separation(x[:60], y[:60])
    with pytest.raises(BlvnbError, match="N×D"):
        F.separation(x[:, 0], y)


class TinyData:
    """Three 3×16×20 images with labels 0..3 in stripes and an ignored band."""

    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.items = []
        for i in range(3):
            lab = (torch.arange(20).expand(16, 20) // 5).clone()
            lab[:2] = 255
            self.items.append({"image": torch.randn(3, 16, 20, generator=g), "label": lab})

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, NUM_CLASSES, 1))


def test_pixel_logits_draws_valid_pixels_of_the_models_logits():
    model, data = tiny_model(), TinyData()
    model.train()
    x, y = F.pixel_logits(model, data, 50, seed=0)
    assert x.shape == (50, NUM_CLASSES) and y.shape == (50,) and x.dtype == np.float32
    assert set(np.unique(y)) <= {0, 1, 2, 3}
    assert model.training  # mode restored
    with torch.no_grad():
        model.eval()
        full = torch.cat([model(it["image"][None])[0].reshape(NUM_CLASSES, -1).T for it in data.items]).numpy()
    # every drawn feature is the logit vector of some pixel, and of a pixel of its label
    labels = torch.cat([it["label"].reshape(-1) for it in data.items]).numpy()
    for row, lab in zip(x, y):
        hit = np.flatnonzero(np.abs(full - row).max(1) < 1e-5)
        assert hit.size and lab in labels[hit]
    x2, y2 = F.pixel_logits(model, data, 50, seed=0)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    x3, _ = F.pixel_logits(model, data, 50, seed=1)
    assert not np.array_equal(x, x3)
    with pytest.raises(BlvnbError, match="n_pixels"):
        F.pixel_logits(model, data, 0)


def test_tsne_panels_with_separation_titles():
    xa, ya = blobs(3, 20)
    xb, yb = blobs(3, 20, spread=20.0)
    fig = F.plot_tsne({"CE": (xa, ya), "BLV": (xb, yb)}, n_per_class=20, perplexity=5)
    assert len(fig.axes) == 2
    assert all("silhouette" in ax.get_title() for ax in fig.axes)
    assert all(len(ax.collections) == 3 for ax in fig.axes)  # one scatter per class
    with pytest.raises(BlvnbError, match="no models"):
        F.plot_tsne({})


def test_qualitative_maps_and_predict_maps():
    data = TinyData()
    maps = F.predict_maps({"baseline": tiny_model(), "BLV": tiny_model()}, data, [0, 2])
    assert len(maps["images"]) == 2 and maps["predictions"]["BLV"][0].shape == (16, 20)
    fig = F.plot_qualitative(maps["images"], maps["truth"], maps["predictions"], title="t")
    assert len(fig.axes) == 2 * 4
    assert [ax.get_title() for ax in fig.axes[:4]] == ["input", "ground truth", "baseline", "BLV"]
    with pytest.raises(BlvnbError, match="outside"):
        F.predict_maps({"m": tiny_model()}, data, [5])
    with pytest.raises(BlvnbError, match="2 images"):
        F.plot_qualitative(maps["images"], maps["truth"][:1], maps["predictions"])


def test_sigma_curves_round_losses_and_ablation_bars():
    r = rec(0, [0.4] * NUM_CLASSES, history={"sigma": [0, 2, 4, 6, 4], "loss": [3, 2, 1.5, 1.2, 1.0]}, every=10)
    fig = F.plot_sigma_curves({"BLV + tv": r, "released": lambda t: 4.0, "constant": 6.0}, t_end=40)
    ax = fig.axes[0]
    assert len(ax.lines) == 3
    assert np.array_equal(ax.lines[0].get_xdata(), [0, 10, 20, 30, 40])
    with pytest.raises(BlvnbError, match="t_end"):
        F.plot_sigma_curves({"f": lambda t: 1.0})
    fig = F.plot_round_losses({"k=1": r, "k=2": r}, smooth=2)
    assert len(fig.axes[0].lines) == 2 and len(fig.axes[0].lines[0].get_ydata()) == 4
    with pytest.raises(BlvnbError, match="'nope'"):
        F.plot_round_losses({"k=1": r}, stat="nope")

    by_arm = {"baseline": [rec(s, [0.40] * NUM_CLASSES) for s in range(3)],
              "blv": [rec(s, [0.42] * NUM_CLASSES, loss="blv") for s in range(3)],
              "uniform": [rec(0, [0.41] * NUM_CLASSES, loss="blv-u")]}
    fig = F.plot_ablation(by_arm, paper={"baseline": 55.9, "blv": 59.0, "uniform": 57.0})
    assert len(fig.axes) == 2
    assert len(fig.axes[0].patches) == 3                # one bar per arm
    assert len(fig.axes[1].patches) == 2 + 2            # ours and the paper's gain per non-baseline arm
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[1].patches)
    assert heights == sorted([2.0, 1.0, 3.1, 1.1])
    assert len(F.plot_ablation({"a": by_arm["blv"]}).axes) == 1
    with pytest.raises(BlvnbError, match="'nope'"):
        F.plot_ablation(by_arm, baseline="nope")
    with pytest.raises(BlvnbError, match="mIoU_x"):
        F.plot_ablation(by_arm, metric="mIoU_x")


def test_group_gains_and_accuracy_by_size():
    m, b = arms()
    groups = {1: [0, 1], 2: [5, 6], 3: [14, 15], 4: [17, 18]}  # 6, 14, 15, 17, 18 are BLV tail classes
    g = F.group_gains(m, b, groups)
    assert np.allclose(g[1], 0) and np.allclose(g[2], [0.5, 1.0, 1.5]) and np.allclose(g[3], [1, 2, 3])
    fig = F.plot_group_gains({"1/8": (m, b), "1/4": (m, b)}, groups)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) == 4 * 2
    with pytest.raises(BlvnbError, match="outside"):
        F.group_gains(m, b, {1: [25]})

    lab = np.full((10, 10), 255)
    lab[0:2, 0:2] = 1       # an object of 4 pixels
    lab[5:10, 0:10] = 2     # an object of 50 pixels
    pred = lab.copy()
    pred[5:10, 0:5] = 0     # half of the large object wrong
    df = F.accuracy_by_object_size([pred], [lab], bins=[0, 10, 100])
    assert df["objects"].tolist() == [1, 1]
    assert df["accuracy"].tolist() == pytest.approx([100.0, 50.0])
    fig = F.plot_accuracy_vs_size({"baseline": df, "DARS": df})
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(BlvnbError, match="bins"):
        F.accuracy_by_object_size([pred], [lab], bins=[10, 0])
    with pytest.raises(BlvnbError, match="no images"):
        F.accuracy_by_object_size([], [])


def test_per_class_iou_static_twin():
    from blvnb import paper

    m, b = arms()
    row = paper.table("blv-t3").loc["DAFormer†"]
    fig = F.plot_per_class_iou({"baseline": b, "blv": m}, paper_rows={"DAFormer†": row})
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * NUM_CLASSES
    assert len(ax.collections) == 2 * 3 + 1  # a dot series per seed and arm, the paper's ticks
    assert np.allclose(ax.collections[-1].get_offsets()[0], [0, row["Road"]])
    with pytest.raises(BlvnbError, match="no per-class column"):
        F.plot_per_class_iou({"baseline": b}, paper_rows={"x": {"mIoU": 3.0}})
