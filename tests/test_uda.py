"""The UDA strategy (DAFormer / HRDA) against recipes.md (d): EMA, quality weight, FD, HRDA, the step, wiring."""

import copy
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blvnb.data.sampling import decode_index
from blvnb.engine.strategies import uda as U
from blvnb.engine.strategies.parts import teacher_train_mode
from blvnb.engine.teacher import ema_momentum
from blvnb.errors import ConfigError
from blvnb.experiments.profiles import get_profile
from blvnb.losses import build_loss
from blvnb.models.hrda import HRDA, slide_windows
from blvnb.models.registry import SegModel

C = 19


# --- a tiny model with BN, dropout and a backbone, as the registry's models ---------------------------------

class TinyBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)

    def forward(self, x):
        f1 = F.relu(self.bn(self.conv1(x)))
        return [f1, self.conv2(f1)]


class TinyHead(nn.Module):
    def __init__(self, classes=C):
        super().__init__()
        self.dropout = nn.Dropout2d(0.5)
        self.cls = nn.Conv2d(8, classes, 1)

    def decode(self, feats):
        f = feats[-1]
        return {"out": self.cls(self.dropout(f)), "features": f, "aux": []}

    def forward(self, feats):
        return self.decode(feats)["out"]


def tiny(seed=0):
    torch.manual_seed(seed)
    return SegModel(TinyBackbone(), TinyHead())


def tiny_hrda(seed=0):
    torch.manual_seed(seed)
    return HRDA(SegModel(TinyBackbone(), TinyHead()), attention=TinyHead(), size_align=8)


def batches(n=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ys = torch.randint(0, 4, (n, h, w), generator=g)
    ys[:, :, : w // 4] = 12  # a thing class (car), for the feature distance
    ys[0, 0, :3] = 255
    src = {"image": torch.randn(n, 3, h, w, generator=g), "label": ys}
    tgt = {"image": torch.randn(n, 3, h, w, generator=g), "label": torch.randint(0, C, (n, h, w), generator=g),
           "valid": torch.ones(n, h, w, dtype=torch.uint8)}
    return {"source": src, "target": tgt}


def strategy(loss="ce", options=None, prior=None, fd=False, **loss_kw):
    counts = torch.arange(1, C + 1, dtype=torch.int64) * 100
    lf = build_loss(loss, class_counts=counts, **loss_kw)
    return U.UDAStrategy(lf, counts, seed=7, options=options, prior=prior, fd_enabled=fd, fd_reason="test")


def step(strat, model, b, it):
    """``strat.step`` with its statistics as floats (the strategy returns tensors: no device sync)."""
    loss, stats = strat.step(model, b, it)
    assert all(isinstance(v, float) or (isinstance(v, torch.Tensor) and v.ndim == 0 and not v.requires_grad)
               for v in stats.values())
    return loss, {k: float(v) for k, v in stats.items()}


def sgd_step(model, strat, b, it, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    loss, stats = step(strat, model, b, it)
    loss.backward()
    opt.step()
    strat.after_step(model, it)
    return loss, stats


# --- EMA --------------------------------------------------------------------------------------------

def test_ema_alpha_and_warm_start_by_hand():
    assert [ema_momentum(t) for t in (0, 1, 2, 3)] == [0.0, 0.5, pytest.approx(2 / 3), 0.75]
    assert ema_momentum(10_000) == 0.999 and ema_momentum(999) == 0.999 and ema_momentum(997) == pytest.approx(1 - 1 / 998) and ema_momentum(997) < 0.999
    model = tiny()
    strat = strategy()
    strat.setup(model, torch.device("cpu"))
    s = []
    b = batches()
    for it in range(3):
        w = model.head.cls.weight.detach().clone()
        s.append(w)
        if it == 0:
            strat.step(model, b, 0)  # t = 0: the teacher is a copy of the student
            torch.testing.assert_close(strat.teacher.head.cls.weight, s[0], rtol=0, atol=0)
        with torch.no_grad():
            model.head.cls.weight.add_(1.0 + it)  # a "step": the student moves by hand
        strat.after_step(model, it)
    s.append(model.head.cls.weight.detach().clone())
    # t = 1: α = 0.5 → (s0 + s1)/2; t = 2: α = 2/3 → (2/3)(s0 + s1)/2 + s2/3 = (s0 + s1 + s2)/3; t = 3: α = 3/4
    t1 = 0.5 * s[0] + 0.5 * s[1]
    t2 = (2 / 3) * t1 + (1 / 3) * s[2]
    t3 = 0.75 * t2 + 0.25 * s[3]
    torch.testing.assert_close(t2, (s[0] + s[1] + s[2]) / 3)
    torch.testing.assert_close(strat.teacher.head.cls.weight, t3)


def test_teacher_mode_turns_dropout_off_and_keeps_batch_norm_training():
    strat = strategy()
    model = tiny()
    strat.setup(model, torch.device("cpu"))
    t = strat.teacher
    assert t.backbone.bn.training and not t.head.dropout.training
    assert all(not p.requires_grad for p in t.parameters())


# --- quality weight, margins, feature distance ----------------------------------------------------------

def test_quality_weight_is_the_share_at_or_above_tau():
    conf = torch.tensor([[[0.5, 0.968], [0.97, 0.2]]])
    assert float(U.quality_weight(conf, 0.968)) == 0.5
    assert float(U.quality_weight(torch.full((2, 3, 3), 0.99))) == 1.0


def test_quality_weight_in_the_step_matches_the_teacher():
    model, strat = tiny(), strategy()
    strat.setup(model, torch.device("cpu"))
    b = batches()
    with torch.no_grad():  # the teacher at t = 0: the student, in train mode without dropout
        logits = teacher_train_mode(copy.deepcopy(model))(b["target"]["image"])
        conf = torch.softmax(F.interpolate(logits, size=(32, 32), mode="bilinear", align_corners=False), 1).max(1).values
    tau = float(conf.median())
    strat.o["quality_threshold"] = tau
    _, stats = step(strat, model, b, 0)
    expect = float((conf >= tau).float().mean())
    assert stats["quality"] == pytest.approx(expect, abs=1e-6) and 0.3 < expect < 0.7


def test_daformer_margins_scale_with_the_crop():
    m = U.daformer_margin_mask(1, 512, 4)
    assert m[0, :15].eq(0).all() and m[0, 15:392].eq(1).all() and m[0, 392:].eq(0).all()
    m = U.daformer_margin_mask(2, 128, 4)  # 15·128/512 = 3.75 → 4 rows, 120·128/512 = 30 rows
    assert m[:, :4].eq(0).all() and m[:, 4:98].eq(1).all() and m[:, 98:].eq(0).all()


def test_downscale_label_ratio_and_feature_distance():
    y = torch.zeros(1, 4, 4, dtype=torch.int64)
    y[0, :2, :2] = 12  # a whole cell of car
    y[0, :2, 2:] = torch.tensor([[12, 12], [12, 0]])  # 3/4 car: ≥ 0.75 keeps it
    y[0, 2:, :2] = torch.tensor([[12, 12], [0, 0]])  # 1/2: below the ratio → 255
    y[0, 2:, 2:] = 255
    small = U.downscale_label_ratio(y, 2, 0.75)
    assert small.tolist() == [[[12, 12], [255, 255]]]
    fs = torch.zeros(1, 5, 2, 2, requires_grad=True)
    fi = torch.zeros(1, 5, 2, 2)
    fi[0, :, 0, 0] = 3.0  # distance 3·√5 at the first car cell, 0 at the second
    fd, n = U.feature_distance(fs, fi, y)
    assert int(n) == 2 and float(fd.detach()) == pytest.approx(3 * math.sqrt(5) / 2)
    fd.backward()
    assert fs.grad.abs().sum() > 0
    fd0, n0 = U.feature_distance(fs, fi, torch.zeros(1, 4, 4, dtype=torch.int64))  # no thing class: guarded
    assert int(n0) == 0 and float(fd0.detach()) == 0.0 and not torch.isnan(fd0)


# --- the step ---------------------------------------------------------------------------------------

def test_step_gives_a_finite_loss_and_moves_the_weights():
    model, strat = tiny(), strategy(fd=True)
    strat.setup(model, torch.device("cpu"))
    before = copy.deepcopy(model.state_dict())
    loss, stats = sgd_step(model, strat, batches(), 0)
    assert torch.isfinite(loss) and loss.requires_grad
    assert {"loss", "loss_source", "loss_mix", "loss_fd", "quality", "mix_share", "pl_kept"} <= set(stats)
    assert stats["loss"] == pytest.approx(stats["loss_source"] + stats["loss_mix"] + stats["loss_fd"], rel=1e-5)
    moved = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert "head.cls.weight" in moved and "backbone.conv1.weight" in moved
    # the teacher followed: after it = 0 the teacher is the mean of the initial and the stepped student
    torch.testing.assert_close(strat.teacher.head.cls.weight,
                               0.5 * before["head.cls.weight"] + 0.5 * model.head.cls.weight.detach())
    s = strat.summary()
    assert s["feature_distance"]["enabled"] and len(s["pseudo_label_counts"]) == C
    assert s["quality_weight_mean"] == pytest.approx(stats["quality"])
    assert s["kl_pseudo_to_source_prior"] >= 0 and 0 <= s["pseudo_label_accuracy"] <= 1


def test_step_is_deterministic_and_ignores_target_labels():
    b = batches()
    out = []
    for shuffle in (False, False, True):
        model, strat = tiny(), strategy("blv", sigma=4.0)
        strat.setup(model, torch.device("cpu"))
        bb = copy.deepcopy(b)
        if shuffle:  # the target labels never enter a loss
            bb["target"]["label"] = bb["target"]["label"].flip(-1)
        loss, stats = step(strat, model, bb, 5)
        out.append(float(loss.detach()))
    assert out[0] == out[1] == out[2]
    model, strat = tiny(), strategy("blv", sigma=4.0)
    strat.setup(model, torch.device("cpu"))
    assert float(strat.step(model, copy.deepcopy(b), 6)[0].detach()) != out[0]  # another iteration, other draws


def test_blv_placement_and_source_only():
    b = batches()
    losses = {}
    for place in ("both", "source", "mix"):
        model, strat = tiny(), strategy("blv", options={"blv_on": place}, sigma=6.0)
        strat.setup(model, torch.device("cpu"))
        _, st = step(strat, model, copy.deepcopy(b), 0)
        losses[place] = st
    ce_model, ce = tiny(), strategy("ce")
    ce.setup(ce_model, torch.device("cpu"))
    _, st_ce = step(ce, ce_model, copy.deepcopy(b), 0)
    # BLV's offsets change the loss where they apply, and only there
    assert losses["source"]["loss_source"] != pytest.approx(st_ce["loss_source"])
    assert losses["mix"]["loss_source"] == pytest.approx(st_ce["loss_source"])
    assert losses["mix"]["loss_mix"] != pytest.approx(st_ce["loss_mix"])
    assert losses["source"]["loss_mix"] == pytest.approx(st_ce["loss_mix"])
    assert losses["both"]["loss_source"] == pytest.approx(losses["source"]["loss_source"])
    model, strat = tiny(), strategy(options={"source_only": True})
    strat.setup(model, torch.device("cpu"))
    assert strat.streams == ("source",) and strat.teacher is None
    loss, st = step(strat, model, {"source": b["source"]}, 0)
    assert set(st) == {"loss", "loss_source"} and st["loss"] == pytest.approx(st_ce["loss_source"])


def test_dars_pseudo_labels_keep_alpha_of_the_target():
    prior = torch.ones(C)
    model, strat = tiny(), strategy(options={"pseudo": "dars-sd", "pseudo_alpha": 0.3, "pl_crop": False}, prior=prior)
    strat.setup(model, torch.device("cpu"))
    _, st = step(strat, model, batches(), 0)
    # DARS keeps n_j = ⌊α N H W r_j⌋ pixels in all (fewer where a class has fewer predictions)
    assert 0 < st["pl_kept"] <= 0.3 + 1e-6
    assert strat.summary()["pseudo"] == "dars-sd"
    with pytest.raises(ConfigError, match="prior"):
        strategy(options={"pseudo": "dars-td"})
    with pytest.raises(ConfigError, match="unknown UDA pseudo-labelling 'cbst2'"):
        strategy(options={"pseudo": "cbst2"})


def long_tailed_probs():
    """100 pixels (1×19×10×10): 90 predicted road (class 0) at confidences 0.90 … 0.99, 10 predicted
    sidewalk (class 1) at 0.50 … 0.59; the rest of each pixel's mass spread over the other classes."""
    conf = torch.cat([torch.linspace(0.90, 0.99, 90), torch.linspace(0.50, 0.59, 10)])
    pred = torch.cat([torch.zeros(90, dtype=torch.long), torch.ones(10, dtype=torch.long)])
    p = ((1 - conf) / (C - 1))[:, None].repeat(1, C)
    p[torch.arange(100), pred] = conf
    return p.T.reshape(1, C, 10, 10), conf, pred


def test_st_keeps_the_global_top_alpha_and_cbst_each_class_top_alpha():
    probs, conf, pred = long_tailed_probs()
    st = U.select_pseudo_labels(probs, "st", alpha=0.4).reshape(-1)
    cb = U.select_pseudo_labels(probs, "cbst", alpha=0.4).reshape(-1)
    # ST: one threshold, the 40 most confident pixels of the batch, all road: the tail class gets nothing
    assert set(torch.nonzero(st != 255).reshape(-1).tolist()) == set(conf.argsort(descending=True)[:40].tolist())
    assert torch.equal(st[st != 255], pred[st != 255]) and int((st == 1).sum()) == 0
    # CBST: per predicted class its top 40 %: 36 of the 90 road pixels, 4 of the 10 sidewalk ones
    assert int((cb == 0).sum()) == 36 and int((cb == 1).sum()) == 4
    assert set(torch.nonzero(cb == 1).reshape(-1).tolist()) == {96, 97, 98, 99}  # the most confident sidewalk
    assert set(torch.nonzero(cb == 0).reshape(-1).tolist()) == set(range(54, 90))
    assert not torch.equal(st, cb)
    # neither needs a prior; DARS does, and argmax is not a selection
    with pytest.raises(ConfigError, match="'dars-sd' needs a class prior"):
        U.select_pseudo_labels(probs, "dars-sd")
    with pytest.raises(ConfigError, match="'argmax'"):
        U.select_pseudo_labels(probs, "argmax")
    with pytest.raises(ConfigError, match="'cbst2'"):
        U.select_pseudo_labels(probs, "cbst2")


@pytest.mark.parametrize("method", ["st", "cbst"])
def test_st_and_cbst_in_the_step_keep_alpha_and_resume_from_their_state(method):
    opts = {"pseudo": method, "pseudo_alpha": 0.3, "pl_crop": False}
    model, strat = tiny(), strategy(options=opts)  # no prior needed
    strat.setup(model, torch.device("cpu"))
    sgd_step(model, strat, batches(seed=0), 0)
    _, st = sgd_step(model, strat, batches(seed=1), 1)
    assert 0 < st["pl_kept"] <= 0.3 + 1e-6
    s = strat.summary()
    assert s["pseudo"] == method and 0 < sum(s["pseudo_label_counts"]) <= 0.3 * 2 * 2 * 32 * 32
    # a checkpoint after iteration 1 (student, teacher, totals) gives the same iteration 2
    saved_model, saved_state = copy.deepcopy(model.state_dict()), copy.deepcopy(strat.state_dict())
    torch.manual_seed(11)  # the student's dropout draws from the global generator (the loop seeds it per step)
    loss_a, st_a = sgd_step(model, strat, batches(seed=2), 2)
    model_b, strat_b = tiny(seed=5), strategy(options=opts)
    strat_b.setup(model_b, torch.device("cpu"))
    model_b.load_state_dict(saved_model)
    strat_b.load_state_dict(saved_state)
    torch.manual_seed(11)
    loss_b, st_b = sgd_step(model_b, strat_b, batches(seed=2), 2)
    assert float(loss_a.detach()) == float(loss_b.detach()) and st_a == st_b
    assert strat.summary() == strat_b.summary()


def test_param_groups_head_times_ten_and_no_decay_on_transformer_norms():
    from blvnb.models.registry import build_model

    from blvnb.engine.recipes import uda_recipe

    # DAFormer's recipe for the run's model: a CNN backbone (DeepLab v2's ResNet) decays its batch norms
    cnn = U.UDAStrategy(build_loss("ce"), torch.ones(C), recipe=uda_recipe("r101-deeplabv2"))
    groups = cnn.param_groups(tiny())
    by = {(g["lr_mult"], g["decay_mult"]): sum(p.numel() for p in g["params"]) for g in groups}
    head = sum(p.numel() for p in TinyHead().parameters())
    assert by[(10.0, 1.0)] == head and (1.0, 0.0) not in by  # a CNN backbone decays everything
    mit = build_model("mitb5-daformer@small", num_classes=C)
    groups = U.UDAStrategy(build_loss("ce"), torch.ones(C), recipe=uda_recipe("mitb5-daformer")).param_groups(mit)
    by = {(g["lr_mult"], g["decay_mult"]): g["params"] for g in groups}
    norms = [p for n, p in mit.backbone.named_parameters() if "norm" in n]
    assert norms and all(any(p is q for q in by[(1.0, 0.0)]) for p in norms)
    assert sum(p.numel() for p in by[(10.0, 1.0)]) == sum(p.numel() for p in mit.head.parameters())


# --- HRDA ---------------------------------------------------------------------------------------------

def test_hrda_crop_geometry():
    m = tiny_hrda()
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(50):
        y0, x0, h, w = m.crop_box(64, 128, g)
        assert (h, w) == (32, 64)  # the detail crop is half the context crop's side
        assert y0 % 8 == 0 and x0 % 8 == 0 and y0 + h <= 64 and x0 + w <= 128
        seen.add((y0, x0))
    assert max(y for y, _ in seen) == 32 and max(x for _, x in seen) == 64  # the last position is reachable
    boxes = slide_windows(64, 128, 32, 64, 16, 32)
    assert len(boxes) == 9 and {(b[0], b[1]) for b in boxes} == {(y, x) for y in (0, 16, 32) for x in (0, 32, 64)}
    x = torch.randn(2, 3, 64, 128)
    m.train()
    parts = m(x, box=(8, 16, 32, 64), return_parts=True)
    assert parts["box"] == (8, 16, 32, 64) and parts["detail"].shape == (2, C, 8, 16)
    assert parts["out"].shape == (2, C, 16, 32) and parts["context"].shape == (2, C, 8, 16)
    with pytest.raises(ConfigError, match="multiples of 8"):
        m(x, box=(4, 0, 32, 64), return_parts=True)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m.predict(x))
        # a window as large as the input: the slide is the one-pass detail prediction
        whole = copy.deepcopy(m)
        whole.crop = 1.0
        one_pass = copy.deepcopy(whole)
        one_pass.slide = False
        torch.testing.assert_close(whole.predict(x), one_pass.predict(x))
        assert not torch.allclose(m.predict(x), one_pass.predict(x))  # half-size windows see less context


def test_hrda_slide_averages_overlapping_windows():
    m = tiny_hrda().eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        got = m._slide_detail(x)["out"]
        # by hand: 3×3 windows of 32 with stride 16, each window's logits pasted, summed and divided by counts
        acc, cnt = torch.zeros(1, C, 16, 16), torch.zeros(1, 1, 16, 16)
        for y0 in (0, 16, 32):
            for x0 in (0, 16, 32):
                out = m.model.decode(x[..., y0:y0 + 32, x0:x0 + 32])["out"]
                acc[..., y0 // 4:y0 // 4 + 8, x0 // 4:x0 // 4 + 8] += out
                cnt[..., y0 // 4:y0 // 4 + 8, x0 // 4:x0 // 4 + 8] += 1
    torch.testing.assert_close(got, acc / cnt)


def test_hrda_loss_is_point_nine_fused_plus_point_one_detail():
    model, strat = tiny_hrda(), strategy()
    strat.setup(model, torch.device("cpu"))
    assert strat.hrda
    x = torch.randn(2, 3, 32, 32)
    y = torch.randint(0, 4, (2, 32, 32))
    w = torch.rand(2, 32, 32)
    box = (8, 8, 16, 16)
    pred = strat._forward(model, x, box)
    got = strat._loss(model, pred, y, w, source=False)
    fused = U.weighted_cross_entropy(pred["out"], y, w)
    detail = U.weighted_cross_entropy(pred["detail"], y[:, 8:24, 8:24], w[:, 8:24, 8:24])
    torch.testing.assert_close(got, 0.9 * fused + 0.1 * detail)
    loss, stats = sgd_step(model, strat, batches(), 0)
    assert torch.isfinite(loss) and stats["loss_mix"] > 0


# --- wiring: build() with a stand-in RunData ------------------------------------------------------------

class FakeSet:
    def __init__(self, n, h=32, w=64, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.labels = [torch.randint(0, 3, (h, w), generator=g) for _ in range(n)]
        for i, y in enumerate(self.labels):
            if i % 3 == 0:
                y[4:10, 40:50] = 18  # bicycle, rare
        self.images = [torch.randn(3, h, w, generator=g) for _ in range(n)]

    def __len__(self):
        return len(self.labels)

    def read_label(self, i):
        return self.labels[i].numpy().astype(np.uint8)

    def __getitem__(self, i):
        return {"image": self.images[i], "label": self.labels[i], "name": str(i)}


class FakeData:
    seed, device, progress, profile = 3, "cpu", False, get_profile("smoke")

    def __init__(self):
        self.sets = {("gta5", "all"): FakeSet(9, seed=1), ("cityscapes", "train"): FakeSet(6, seed=2),
                     ("cityscapes", "val"): FakeSet(4, seed=3)}
        self.streams = []

    def dataset(self, kind, split, *, train=True, **kw):
        assert not train  # UDA crops the un-augmented view itself
        return self.sets[(kind, split)]

    def class_counts(self, ds):
        return np.stack([np.bincount(ds.read_label(i).ravel(), minlength=256)[:C] for i in range(len(ds))]).sum(0)

    def stream(self, ds, batch_size, order=None):
        s = SimpleNamespace(dataset=ds, batch_size=batch_size, order=order)
        self.streams.append(s)
        return s


def cfg(**kw):
    base = dict(profile="smoke", strategy="uda", model="r10t-fpn@small", loss="ce", loss_options={},
                strategy_options={}, dataset="gta5", target="cityscapes", seed=3, iters=400, batch_size=2,
                pretrained=None, crop=(32, 64), lr=None, weight_decay=None)
    base.update(kw)
    return SimpleNamespace(**base)


def collate(stream, epoch=0, seed=0):
    idx = stream.order(epoch, torch.Generator().manual_seed(seed))[: stream.batch_size]
    items = [stream.dataset[i] for i in idx]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in items[0]}


def test_build_wires_streams_overrides_and_feature_distance():
    data = FakeData()
    built = U.build(cfg(), data)
    strat = built.strategy
    assert set(built.streams) == {"source", "target"} and built.init_state is None
    o = built.train_overrides
    assert o["optimizer"] == "adamw" and o["lr"] == 6e-5 and o["weight_decay"] == 0.01
    assert o["warmup_iters"] == 15 and o["power"] == 1.0  # 3.75 % of 400
    assert not strat.fd_enabled and "random initialisation" in strat.fd_reason
    s = strat.summary()
    assert s["crop"] == [32, 32] and s["rcs"]["min_crop_ratio"] == 0.5
    # the rarest class (bicycle) is drawn almost always, and its crop holds it
    src = built.streams["source"]
    order = src.order(0, torch.Generator().manual_seed(0))
    assert len(order) == 9
    drawn = [decode_index(i, 9, C) for i in order]
    assert sum(c == 18 for _, c, _ in drawn) >= 8 and all(img % 3 == 0 for img, c, _ in drawn if c == 18)
    b = {"source": collate(src), "target": collate(built.streams["target"])}
    assert b["source"]["image"].shape == (2, 3, 32, 32) and b["target"]["label"].shape == (2, 32, 32)
    model = tiny()
    strat.setup(model, torch.device("cpu"))
    loss, _ = strat.step(model, b, 0)
    assert torch.isfinite(loss)
    # ImageNet weights switch it on; a toy pretraining keeps it off with the reason
    assert U.build(cfg(pretrained="imagenet"), FakeData()).strategy.fd_enabled
    off = U.build(cfg(pretrained="toy"), FakeData()).strategy
    assert U.build(cfg(pretrained="/weights/mit_b5.pth"), FakeData()).strategy.fd_enabled  # local ImageNet file
    assert not off.fd_enabled and "toy" in off.fd_reason and off.summary()["feature_distance"]["reason"]


def test_build_hrda_dars_and_errors():
    data = FakeData()
    built = U.build(cfg(model="mitb5-hrda@small", strategy_options={"pseudo": "dars-td"}), data)
    strat = built.strategy
    assert strat.summary()["rcs"]["min_crop_ratio"] == 2.0
    val = data.class_counts(data.sets[("cityscapes", "val")])
    torch.testing.assert_close(strat.prior, torch.as_tensor(val / val.sum(), dtype=torch.float64))
    tgt = collate(built.streams["target"])
    assert "valid" in tgt  # HRDA's frame margins travel with the target crops
    sd = U.build(cfg(strategy_options={"pseudo": "dars-sd"}), FakeData()).strategy
    torch.testing.assert_close(sd.prior, sd.source_counts / sd.source_counts.sum())
    only = U.build(cfg(target=None, strategy_options={"source_only": True}), FakeData())
    assert set(only.streams) == {"source"}
    with pytest.raises(ConfigError, match="unknown strategy option"):
        U.build(cfg(strategy_options={"tau": 0.9}), FakeData())
    with pytest.raises(ConfigError, match="cfg.target"):
        U.build(cfg(target=None), FakeData())


def test_build_st_and_cbst_need_no_prior():
    for method in ("st", "cbst"):
        strat = U.build(cfg(strategy_options={"pseudo": method}), FakeData()).strategy
        assert strat.prior is None and strat.summary()["pseudo"] == method


def test_build_rs_resamples_source_images_by_their_rare_classes():
    data = FakeData()
    built = U.build(cfg(loss="rs"), data)
    strat = built.strategy
    s = strat.summary()
    # cross entropy (mean over all pixels, as DAFormer's) on both losses; no DAFormer RCS on top
    assert type(strat.loss_fn).__name__ == type(build_loss("ce")).__name__ and "rcs" not in s
    assert s["rs"]["rcs_min_pixels"] == U.scaled_min_pixels(3000, 32 * 64, U.REFERENCE_LABEL_AREA["gta5"])
    probs = np.array(s["rs"]["rcs_class_probs"])
    assert probs.sum() == pytest.approx(1.0) and probs.argmax() == 18  # bicycle, the rarest class
    # the order: plain image indices (no class to re-crop around), images holding bicycle (0, 3, 6) favoured
    src = built.streams["source"]
    draws = [i for e in range(20) for i in src.order(e, torch.Generator().manual_seed(e))]
    assert all(0 <= i < 9 for i in draws) and all(decode_index(i, 9, C)[1] == -1 for i in draws)
    rare = sum(i % 3 == 0 for i in draws) / len(draws)
    assert rare > 0.9  # uniform drawing gives 1/3
    assert src.order(0, torch.Generator().manual_seed(0)) == src.order(0, torch.Generator().manual_seed(0))
    b = {"source": collate(src), "target": collate(built.streams["target"])}
    model = tiny()
    strat.setup(model, torch.device("cpu"))
    loss, stats = strat.step(model, b, 0)
    assert torch.isfinite(loss) and "loss_mix" in stats
    # the options go to the sampler: min_pixels above every image's bicycle count leaves the common classes
    high = U.build(cfg(loss="rs", loss_options={"min_pixels": 100, "temperature": 0.5}), FakeData()).strategy
    assert high.summary()["rs"]["rcs_min_pixels"] == 100 and high.summary()["rs"]["rcs_class_probs"][18] == 0


@pytest.mark.parametrize("kw, pattern", [
    ({"loss_options": {"tau": 2}}, r"not \['tau'\]"),
    ({"loss_options": {"min_pixels": "many"}}, r"got 'many'"),
    ({"loss_options": {"min_pixels": -3}}, r"got -3"),
    ({"loss_options": {"temperature": "warm"}}, r"got 'warm'"),
    ({"loss_options": {"temperature": 0.0}}, r"got 0.0"),
    ({"strategy_options": {"rcs": True}}, r"rcs=True"),
])
def test_build_rs_bad_options_name_the_value(kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        U.build(cfg(loss="rs", **kw), FakeData())


# --- end to end and resume through the run wiring -----------------------------------------------------------

def test_smoke_run_end_to_end(tmp_path, monkeypatch):
    from blvnb.experiments.runs import RunConfig, run

    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    rec = run(RunConfig.from_profile("smoke", strategy="uda", dataset="gta5", target="cityscapes", progress=False))
    assert math.isfinite(rec["metrics"]["mIoU"]) and len(rec["metrics"]["iou"]) == 19
    s = rec["summary"]
    assert s["pseudo"] == "argmax" and 0 <= s["quality_weight_mean"] <= 1
    assert s["feature_distance"]["enabled"] is False and s["feature_distance"]["reason"]
    src_only = run(RunConfig.from_profile("smoke", strategy="uda", dataset="gta5", target="cityscapes",
                                          strategy_options={"source_only": True}, progress=False))
    assert src_only["summary"]["source_only"] and src_only["key"] != rec["key"]
    # BLV Table 9 (a UDA table): σ(t) rises with the loop's iteration
    tv = run(RunConfig.from_profile("smoke", strategy="uda", dataset="gta5", target="cityscapes", loss="blv",
                                    loss_options={"sigma_schedule": 6.0}, progress=False))
    sig = tv["history"]["sigma"]
    assert sig == sorted(sig) and sig[0] < sig[-1] <= 6.0 and tv["summary"]["blv_on"] == "both"


def uda_resume_config():
    from blvnb.experiments.runs import RunConfig

    # smoke: 32 source images, batch 4 → 8 iterations per epoch; checkpoint at 3 (mid-epoch), killed before 5
    return RunConfig.from_profile("smoke", strategy="uda", dataset="gta5", target="cityscapes", loss="blv",
                                  loss_options={"sigma": 6.0}, iters=7, ckpt_every=3, device="cpu", progress=False)


def test_sigkill_resume_is_bitwise(tmp_path):
    """A UDA run (BLV noise, ClassMix, jitter, blur, EMA teacher, rare-class crops) killed with SIGKILL after
    a mid-epoch checkpoint and started again ends bitwise identical to an uninterrupted run: weights,
    teacher, summary totals, stream positions, history and metrics (core's helper, tests/test_resume.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from test_resume import assert_resume_is_exact

    res = assert_resume_is_exact(f"{__file__}:uda_resume_config", tmp_path, kill_at=6)
    assert res["resumed_from"] == 3


# --- DDP: a batch split over two gloo processes draws what one process draws ---------------------------------

def _ddp_worker(rank, world, init, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        y = torch.randint(0, 5, (4, 8, 8))
        y[3] = 17  # only in the second half
        conf = torch.rand(4, 8, 8)
        half = slice(2 * rank, 2 * rank + 2)
        torch.save({"classes": U.batch_classes(y[half]), "q": U.quality_weight(conf[half], 0.5)}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_class_set_and_quality_weight_are_global_under_ddp(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "res")), nprocs=2)
    torch.manual_seed(0)
    y = torch.randint(0, 5, (4, 8, 8))
    y[3] = 17
    conf = torch.rand(4, 8, 8)
    for r in range(2):
        got = torch.load(f"{tmp_path / 'res'}.{r}", weights_only=True)
        assert got["classes"].tolist() == torch.unique(y).tolist()
        assert float(got["q"]) == pytest.approx(float((conf >= 0.5).float().mean()))


def test_hrda_margins_from_the_batch_zero_the_target_weight():
    model, strat = tiny_hrda(), strategy()
    strat.setup(model, torch.device("cpu"))
    b = batches()
    b["target"]["valid"][:, :, :] = 0
    b["target"]["valid"][:, :8] = 1  # only the top quarter of the crops may carry pseudo labels
    _, st = step(strat, model, b, 0)
    assert st["pl_kept"] == pytest.approx(0.25)


def test_summary_counts_pseudo_labels_inside_the_margins():
    strat = strategy()
    pl = torch.tensor([[[0, 1], [255, 18]]])
    keep = (pl != 255) & torch.tensor([[[True, True], [True, False]]])
    truth = torch.tensor([[[0, 2], [3, 255]]])
    strat._record_pseudo(pl, keep, truth, torch.tensor(0.25))
    a = strat._acc
    assert a["pl_counts"].tolist() == [1, 1] + [0] * 17  # class 18 lies in the margin: not counted
    assert a["truth_counts"].tolist() == [1, 0, 1] + [0] * 16
    assert int(a["agree"]) == 1 and int(a["compared"]) == 2 and float(a["quality_sum"]) == 0.25
