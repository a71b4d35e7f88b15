"""Mean teacher (BLV Sec. 3.3, Tables 2 and 13): the EMA and its warm start, parameters only, one crop for
both networks, Eq. (4) counts from the teacher, the loss of a step, the state, the wiring; end to end and
resumed after SIGKILL through the run API."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from blvnb.engine.loop import step_generator
from blvnb.engine.strategies import mean_teacher as mt
from blvnb.engine.teacher import ema_momentum, ema_update
from blvnb.errors import BlvnbError, ConfigError
from blvnb.losses.blv import BLVLoss

C = 4


class TinySeg(nn.Module):
    """A 1×1-conv "segmentation model" with BN (buffers) and an optional auxiliary head."""

    def __init__(self, classes=C, aux=False, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.bn = nn.BatchNorm2d(3)
        self.head = nn.Conv2d(3, classes, 1)
        self.aux_head = nn.Conv2d(3, classes, 1) if aux else None
        self.aux_weights = (0.4,) if aux else ()

    def forward(self, x, return_aux=False):
        h = self.bn(x)
        out = self.head(h)
        if return_aux:
            return {"out": out, "aux": [self.aux_head(h)] if self.aux_head is not None else []}
        return out


class Scalar(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([float(v)]))
        self.register_buffer("stat", torch.tensor([0.0]))


def strategy(**kw):
    kw.setdefault("loss_name", "ce")
    return mt.MeanTeacher(**kw)


# --- the EMA -----------------------------------------------------------------------------------------

def test_ema_momentum_hand_values():
    assert ema_momentum(0) == 0.0
    assert ema_momentum(1) == 0.5
    assert ema_momentum(2) == pytest.approx(2 / 3)
    assert ema_momentum(999) == pytest.approx(0.999)  # 1 − 1/1000 = m0 exactly here
    assert ema_momentum(10**6) == 0.999
    assert ema_momentum(2, m0=0.6) == 0.6


def test_warm_start_then_ema_after_each_step_hand_computed():
    student = Scalar(5.0)
    s = strategy()
    s.setup(student, torch.device("cpu"))
    assert float(s.teacher.w) == 5.0  # warm start: a copy of the student before any step
    assert s.teacher.w is not student.w and not s.teacher.w.requires_grad
    # the student after step t, then after_step(t): θ_T ← m_t θ_T + (1 − m_t) θ_S
    for t, w, expected in [(0, 1.0, 1.0),  # m_0 = 0: the teacher becomes the student
                           (1, 3.0, 2.0),  # m_1 = 1/2: (1 + 3) / 2
                           (2, 6.0, 10 / 3)]:  # m_2 = 2/3: 2/3 · 2 + 1/3 · 6
        with torch.no_grad():
            student.w.fill_(w)
        s.after_step(student, t)
        assert float(s.teacher.w) == pytest.approx(expected, abs=1e-6), t
    # m0 caps the momentum: at t = 2 with m0 = 0.6, 0.6 · 2 + 0.4 · 6
    s2 = strategy(m0=0.6)
    s2.setup(Scalar(0.0), torch.device("cpu"))
    for t, w in [(0, 1.0), (1, 3.0)]:
        s2.after_step(Scalar(w), t)
    s2.after_step(Scalar(6.0), 2)
    assert float(s2.teacher.w) == pytest.approx(3.6, abs=1e-6)


def test_ema_touches_parameters_only_and_student_buffers_copy_is_an_option():
    student = TinySeg()
    s = strategy()
    s.setup(student, torch.device("cpu"))
    with torch.no_grad():
        student.bn.running_mean.fill_(7.0)
        student.bn.num_batches_tracked.fill_(3)
        student.head.weight.add_(1.0)
    s.after_step(student, 5)
    assert torch.equal(s.teacher.bn.running_mean, torch.zeros(3))  # buffers are not averaged
    assert int(s.teacher.bn.num_batches_tracked) == 0
    m = ema_momentum(5)
    assert not torch.equal(s.teacher.head.weight, student.head.weight)
    s_copy = strategy(ema_buffers="student")
    fresh = TinySeg()
    s_copy.setup(fresh, torch.device("cpu"))
    with torch.no_grad():
        fresh.bn.running_mean.fill_(7.0)
    s_copy.after_step(fresh, 5)
    assert torch.equal(s_copy.teacher.bn.running_mean, torch.full((3,), 7.0))
    assert m == pytest.approx(5 / 6)


def test_ema_works_through_a_ddp_like_wrapper():
    inner = Scalar(2.0)
    wrapped = SimpleNamespace(module=inner)
    s = strategy()
    s.setup(inner, torch.device("cpu"))
    with torch.no_grad():
        inner.w.fill_(4.0)
    ema_update(s.teacher, wrapped, 0.5)
    assert float(s.teacher.w) == 3.0


def test_scaled_horizon_is_the_papers_fraction_of_the_run():
    t_paper = mt.paper_iterations("1/8")
    assert t_paper == round(200 * (2975 - 372) / 16)
    assert mt.scaled_m0(t_paper) == pytest.approx(0.999, abs=1e-6)
    h = 300 * 1000 / t_paper  # 300 iterations: horizon ≈ 9.2 iterations
    assert mt.scaled_m0(300) == pytest.approx(1 - 1 / h)
    assert mt.scaled_m0(10) == 0.0  # a horizon under one iteration: the teacher is the student
    assert mt.resolve_m0({}, 300, "1/8") == 0.999
    assert mt.resolve_m0({"ema_horizon": "scaled"}, 300, "1/8") == pytest.approx(1 - 1 / h)
    assert mt.resolve_m0({"ema_horizon": 0.99}, 300, "1/8") == 0.99
    assert mt.resolve_m0({"ema": 0.9}, 300, "1/8") == 0.9
    for bad in (1.0, -0.1, "fast", True):
        with pytest.raises(ConfigError, match="ema_horizon"):
            mt.resolve_m0({"ema_horizon": bad}, 300, "1/8")


# --- one crop for both networks ----------------------------------------------------------------------

def reference_view(image, s, y0, x0, flip, crop):
    """Resize (F.interpolate, bilinear) → pad bottom/right with a black pixel → crop → flip, one image."""
    c, h, w = image.shape
    hs, ws = max(1, round(h * s)), max(1, round(w * s))
    x = F.interpolate(image[None], size=(hs, ws), mode="bilinear", align_corners=False)[0]
    ch, cw = crop
    black = torch.tensor([-m / sd for m, sd in zip(mt._IMAGENET_MEAN, mt._IMAGENET_STD)]).view(3, 1, 1)
    canvas = black.expand(3, max(hs, ch), max(ws, cw)).clone()
    valid = torch.zeros(max(hs, ch), max(ws, cw), dtype=torch.bool)
    canvas[:, :hs, :ws] = x
    valid[:hs, :ws] = True
    out, v = canvas[:, y0:y0 + ch, x0:x0 + cw], valid[y0:y0 + ch, x0:x0 + cw]
    return (out.flip(-1), v.flip(-1)) if flip else (out, v)


@pytest.mark.parametrize("scale_range", [(0.5, 0.7), (1.0, 1.0), (1.3, 2.0), (0.5, 2.0)])
def test_geometric_view_equals_resize_pad_crop_flip(scale_range):
    g = torch.Generator().manual_seed(3)
    images = torch.randn(4, 3, 20, 36, generator=g)
    crop = (16, 24)
    geometry = mt.draw_geometry(4, (20, 36), crop, scale_range, torch.Generator().manual_seed(1))
    assert {flip for *_, flip in mt.draw_geometry(64, (20, 36), crop, scale_range, g)} == {True, False}
    views, valid = mt.geometric_view(images, crop, geometry)
    assert views.shape == (4, 3, 16, 24) and valid.shape == (4, 16, 24)
    for k, (s, y0, x0, flip) in enumerate(geometry):
        assert scale_range[0] <= s <= scale_range[1]
        ref, ref_valid = reference_view(images[k], s, y0, x0, flip, crop)
        assert torch.equal(valid[k], ref_valid)
        assert torch.allclose(views[k], ref, atol=1e-5), (k, s, y0, x0, flip)
    if scale_range[1] < 0.8:  # smaller than the crop: padded, and the padding is not valid
        assert not valid.all()


def test_geometry_is_a_function_of_seed_and_iteration():
    a = mt.draw_geometry(3, (20, 36), (16, 24), (0.5, 2.0), step_generator(0, 7, "mt-geometry", "cpu"))
    b = mt.draw_geometry(3, (20, 36), (16, 24), (0.5, 2.0), step_generator(0, 7, "mt-geometry", "cpu"))
    c = mt.draw_geometry(3, (20, 36), (16, 24), (0.5, 2.0), step_generator(0, 8, "mt-geometry", "cpu"))
    assert a == b and a != c


# --- Eq. (4) from a hand-made teacher --------------------------------------------------------------------

class ArgmaxIsChannel0(nn.Module):
    """A 'teacher' whose arg-max is the integer in image channel 0."""

    def __init__(self, classes=C):
        super().__init__()
        self.register_buffer("k", torch.arange(classes, dtype=torch.float32).view(1, -1, 1, 1))
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return -((self.k - x[:, :1]) ** 2) + 0 * self.dummy


def block_image(ids):
    """3×H×W image whose channel 0 is ``ids`` repeated in 2×2 blocks."""
    t = torch.as_tensor(ids, dtype=torch.float32).repeat_interleave(2, 0).repeat_interleave(2, 1)
    return torch.stack([t, torch.zeros_like(t), torch.zeros_like(t)])


def test_eq4_counts_from_the_teacher_at_epoch_end_feed_blv():
    imgs = [block_image([[0, 0, 1], [3, 0, 1]]), block_image([[0, 0, 0], [0, 2, 2]]), block_image([[1, 1, 1], [1, 1, 1]])]
    loader = [{"image": torch.stack(imgs[:2])}, {"image": imgs[2][None]}]
    # by hand: class 0: (3 + 4) blocks, class 1: (2 + 0 + 6), class 2: 2, class 3: 1 — of 4 pixels each
    expected = [28, 32, 8, 4]
    s = mt.MeanTeacher(loss_name="blv", loss_options={"sigma": 4.0}, labeled_counts=[10, 10, 10, 10],
                       count_loader=loader, num_classes=C)
    s.setup(ArgmaxIsChannel0(), torch.device("cpu"))
    assert isinstance(s.sup_loss, BLVLoss) and isinstance(s.unsup_loss, BLVLoss)
    assert s.sup_loss.class_counts.tolist() == [10, 10, 10, 10]  # q before the first epoch end: the labeled images'
    assert s.eq4_counts().tolist() == expected
    s.on_epoch_end(None, 0)
    assert s.sup_loss.class_counts.tolist() == expected and s.unsup_loss.class_counts.tolist() == expected
    summ = s.summary()
    assert [h["counts"] for h in summ["counts"]] == [[10, 10, 10, 10], expected]
    assert summ["counts"][1]["epoch"] == 0 and summ["counts"][1]["source"] == "eq4"
    assert summ["q"][1] == pytest.approx([c / 72 for c in expected])
    assert summ["counts_mode"] == "eq4" and s.epoch == 1


def test_labeled_counts_mode_never_reestimates_and_ce_never_counts():
    loader = [{"image": block_image([[0, 1], [2, 3]])[None]}]
    s = mt.MeanTeacher(loss_name="blv", labeled_counts=[5, 4, 3, 2], count_loader=loader, counts="labeled",
                       num_classes=C)
    s.setup(ArgmaxIsChannel0(), torch.device("cpu"))
    s.on_epoch_end(None, 0)
    assert s.sup_loss.class_counts.tolist() == [5, 4, 3, 2] and len(s.summary()["counts"]) == 1

    class Boom(list):
        def __iter__(self):
            raise AssertionError("a CE run must not predict the unlabeled set")

    ce = mt.MeanTeacher(loss_name="ce", count_loader=Boom(), num_classes=C)
    ce.setup(ArgmaxIsChannel0(), torch.device("cpu"))
    ce.on_epoch_end(None, 0)
    assert ce.summary()["counts_mode"] is None


# --- the loss of a step ------------------------------------------------------------------------------------

def batches(seed=0, n=2, hw=(8, 12)):
    g = torch.Generator().manual_seed(seed)
    return {"labeled": {"image": torch.randn(n, 3, *hw, generator=g),
                        "label": torch.randint(0, C, (n, *hw), generator=g)},
            "unlabeled": {"image": torch.randn(n, 3, 10, 14, generator=g)}}


@pytest.mark.parametrize("aux", [False, True])
def test_step_loss_is_supervised_plus_aux_plus_unsupervised_ce_on_teacher_argmax(aux):
    student, teacher_init = TinySeg(aux=aux, seed=1), TinySeg(aux=aux, seed=2)
    s = strategy(unsup_weight=0.7, scale_range=(0.8, 1.2), ema_buffers="student", seed=5)
    s.setup(student, torch.device("cpu"))
    s.teacher.load_state_dict(teacher_init.state_dict())
    b = batches()
    it = 11
    loss, stats = s.step(student, b, it)
    # by hand, with the same crops
    geo = mt.draw_geometry(2, (10, 14), (8, 12), (0.8, 1.2), step_generator(5, it, "mt-geometry", "cpu"))
    x_u, valid = mt.geometric_view(b["unlabeled"]["image"], (8, 12), geo)
    teacher_init.eval()
    with torch.no_grad():
        y_u = teacher_init(x_u).argmax(1)
    y_u[~valid] = 255
    student_out = student(torch.cat([b["labeled"]["image"], x_u]), return_aux=True)
    z = student_out["out"]
    sup = F.cross_entropy(z[:2], b["labeled"]["label"])
    unsup = F.cross_entropy(z[2:], y_u, ignore_index=255)
    aux_term = 0.4 * F.cross_entropy(student_out["aux"][0][:2], b["labeled"]["label"]) if aux else 0.0
    assert float(loss.detach()) == pytest.approx(float(sup + aux_term + 0.7 * unsup), rel=1e-5)
    assert float(stats["sup_loss"]) == pytest.approx(float(sup), rel=1e-5)
    assert float(stats["unsup_loss"]) == pytest.approx(float(unsup), rel=1e-5)
    assert ("aux_loss" in stats) == aux
    assert stats["ema_m"] == pytest.approx(ema_momentum(it))
    loss.backward()
    assert student.head.weight.grad is not None
    assert all(p.grad is None for p in s.teacher.parameters())  # no gradient into the teacher


def test_teacher_predicts_in_eval_mode_and_its_bn_moves_by_its_own_forward():
    student = TinySeg(seed=1)
    s = strategy(scale_range=(1.0, 1.0))
    s.setup(student, torch.device("cpu"))
    b = batches()
    seen = []
    s.teacher.bn.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
    before = s.teacher.bn.running_mean.clone()
    s.step(student, b, 0)
    assert seen == [False, True]  # pseudo labels in eval mode, then the train-mode forward (U2PL†)
    assert not torch.equal(s.teacher.bn.running_mean, before) and not s.teacher.training
    s2 = strategy(scale_range=(1.0, 1.0), ema_buffers="student")
    s2.setup(TinySeg(seed=1), torch.device("cpu"))
    before = s2.teacher.bn.running_mean.clone()
    s2.step(TinySeg(seed=1), b, 0)
    assert torch.equal(s2.teacher.bn.running_mean, before)


def test_blv_noise_on_both_terms_drawn_per_iteration_and_term():
    counts = [1000, 100, 10, 1]
    student = TinySeg(seed=1)
    ce = strategy(scale_range=(1.0, 1.0), ema_buffers="student")
    blv = mt.MeanTeacher(loss_name="blv", loss_options={"sigma": 4.0}, labeled_counts=counts,
                         scale_range=(1.0, 1.0), ema_buffers="student", num_classes=C)
    for s in (ce, blv):
        s.setup(student, torch.device("cpu"))
    b = batches()
    _, st_ce = ce.step(student, b, 3)
    l1, st1 = blv.step(student, b, 3)
    l2, _ = blv.step(student, b, 3)
    l3, _ = blv.step(student, b, 4)
    assert float(st1["sup_loss"]) != pytest.approx(float(st_ce["sup_loss"]))
    assert float(st1["unsup_loss"]) != pytest.approx(float(st_ce["unsup_loss"]))
    assert float(l1) == float(l2)  # stateless: the same iteration draws the same noise
    assert float(l1) != float(l3)
    # the two terms draw different noise: salts differ
    g1 = step_generator(0, 3, "loss-sup/rank0", "cpu")
    g2 = step_generator(0, 3, "loss-unsup/rank0", "cpu")
    assert not torch.equal(torch.randn(5, generator=g1), torch.randn(5, generator=g2))


def test_state_dict_round_trip_restores_teacher_counts_and_history():
    loader = [{"image": block_image([[0, 1], [2, 3]])[None]}]
    a = mt.MeanTeacher(loss_name="blv", labeled_counts=[5, 4, 3, 2], count_loader=loader, num_classes=C)
    a.setup(ArgmaxIsChannel0(), torch.device("cpu"))
    with torch.no_grad():
        a.teacher.dummy.fill_(0.25)
    a.on_epoch_end(None, 0)
    state = a.state_dict()
    buf = __import__("io").BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    b = mt.MeanTeacher(loss_name="blv", labeled_counts=[5, 4, 3, 2], count_loader=loader, num_classes=C)
    b.setup(ArgmaxIsChannel0(), torch.device("cpu"))
    b.load_state_dict(state)
    assert float(b.teacher.dummy) == 0.25
    assert b.sup_loss.class_counts.tolist() == [4, 4, 4, 4] and b.summary() == a.summary()


def test_bad_options_are_config_errors_naming_the_value():
    for kw, bad in [({"counts": "pseudo"}, "pseudo"), ({"ema_buffers": "all"}, "all"), ({"m0": 1.0}, "1.0"),
                    ({"unsup_weight": -1}, "-1"), ({"scale_range": (2.0, 1.0)}, "2.0"),
                    ({"loss_name": "nope"}, "nope")]:
        with pytest.raises(ConfigError, match=bad):
            strategy(**kw)
    with pytest.raises(ConfigError, match="class counts"):
        mt.MeanTeacher(loss_name="blv")


# --- wiring (build) with a stand-in RunData --------------------------------------------------------------

class FakeData:
    device = torch.device("cpu")
    seed = 0

    def __init__(self):
        self.calls = []

    def split_indices(self, fraction):
        return [0, 1], [2, 3, 4]

    def dataset(self, kind, split, *, train=True, indices=None, **kw):
        self.calls.append((kind, split, train, tuple(indices)))
        return [{"image": torch.zeros(3, 8, 12), "label": torch.zeros(8, 12, dtype=torch.long)} for _ in indices]

    def class_counts(self, ds):
        return np.array([3] + [1] * 18)

    def stream(self, ds, batch_size, order=None):
        return ("stream", len(ds), batch_size)


def cfg(**kw):
    base = dict(strategy="mean-teacher", loss="blv", loss_options={"sigma": 6.0}, strategy_options={},
                labeled_fraction="1/8", dataset="cityscapes", seed=3, iters=300, batch_size=2, scale_range=(0.75, 1.5),
                model="r10t-fpn", lr=None, weight_decay=None, num_workers=0)
    base.update(kw)
    return SimpleNamespace(**base)


def test_build_wires_labeled_and_unaugmented_unlabeled_streams():
    data = FakeData()
    built = mt.build(cfg(strategy_options={"ema_horizon": "scaled"}), data)
    s = built.strategy
    assert isinstance(s, mt.MeanTeacher) and s.streams == ("labeled", "unlabeled") and s.epoch_stream == "unlabeled"
    assert built.streams == {"labeled": ("stream", 2, 2), "unlabeled": ("stream", 3, 2)}
    assert data.calls == [("cityscapes", "train", True, (0, 1)), ("cityscapes", "train", False, (2, 3, 4))]
    assert s.seed == 3 and s.m0 == pytest.approx(mt.scaled_m0(300, "1/8")) and s.scale_range == (0.75, 1.5)
    assert s.counts.tolist() == [3] + [1] * 18 and built.init_state is None
    # the model's recipe, as its supervised runs: SGD 0.01, wd 5e-4, poly 0.9 (the run's lr and wd when given)
    o = built.train_overrides
    assert (o["optimizer"], o["lr"], o["weight_decay"], o["power"]) == ("sgd", 0.01, 5e-4, 0.9)
    assert mt.build(cfg(lr=0.02, weight_decay=1e-4), FakeData()).train_overrides["lr"] == 0.02


def test_build_errors():
    with pytest.raises(ConfigError, match="labeled_fraction"):
        mt.build(cfg(labeled_fraction=None), FakeData())
    with pytest.raises(ConfigError, match="warmup"):
        mt.build(cfg(strategy_options={"warmup": 3}), FakeData())
    with pytest.raises(BlvnbError, match="eq5"):
        mt.build(cfg(strategy_options={"counts": "eq5"}), FakeData())


# --- end to end through the run API (needs the merged engine: runs.py, loop.py, streams.py) ---------------

def smoke_config(**kw):
    """Smoke profile: 16 toycity images, 1/4 labeled → 4 labeled + 12 unlabeled, batch 4: an epoch of the
    unlabeled stream is 3 iterations, so the run re-estimates the counts with Eq. (4) at least once."""
    from blvnb.experiments.runs import RunConfig

    kw.setdefault("loss", "blv")
    kw.setdefault("loss_options", {"sigma": 6.0})
    kw.setdefault("n_train", 16)
    return RunConfig.from_profile("smoke", strategy="mean-teacher", labeled_fraction="1/4",
                                  strategy_options={"ema_horizon": "scaled"}, device="cpu", progress=False, **kw)


def mean_teacher_resume_config():
    """For the SIGKILL test: 7 iterations, a checkpoint at 3 (after the first epoch end, at 2), killed before 5."""
    return smoke_config(iters=7, ckpt_every=3)


@pytest.mark.slow
def test_mean_teacher_smoke_run_writes_a_record_with_eq4_counts(monkeypatch, tmp_path):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    from blvnb.experiments.runs import run

    cfg_ = smoke_config()
    rec = run(cfg_)
    m = rec["metrics"]
    assert 0.0 <= m["mIoU"] <= 100.0 and len(m["iou"]) == 19
    summ = rec["summary"]
    assert summ["counts_mode"] == "eq4" and summ["counts"][0]["source"] == "labeled"
    # one pass over the 12 unlabeled images (3 iterations) ends in the 4-iteration run: one Eq. (4) estimate
    assert [h["source"] for h in summ["counts"]] == ["labeled", "eq4"], summ["counts"]
    assert sum(summ["counts"][1]["counts"]) == 12 * 64 * 128  # every pixel of every unlabeled image
    assert summ["ema_m0"] < 0.999  # the scaled horizon
    for stat in ("loss", "sup_loss", "unsup_loss", "pl_agree", "ema_m"):
        assert len(rec["history"][stat]) == 4, stat
    m0 = summ["ema_m0"]  # 4 iterations scaled: a horizon under one iteration, m0 = 0
    assert rec["history"]["ema_m"] == pytest.approx([min(m, m0) for m in (0.0, 0.5, 2 / 3, 3 / 4)])
    again = run(cfg_)  # read back, not retrained
    assert again["key"] == rec["key"] and again["train_seconds"] == rec["train_seconds"]


@pytest.mark.slow
def test_mean_teacher_resumes_bitwise_after_sigkill(tmp_path):
    """Issue 9/14: killed by SIGKILL mid-run and resumed, the run ends with the same weights, teacher, counts."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("_test_resume", Path(__file__).with_name("test_resume.py"))
    helper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helper)  # worker core's shared helper (tests/test_resume.py)
    res = helper.assert_resume_is_exact(f"{__file__}:mean_teacher_resume_config", tmp_path, kill_at=6)
    assert res["resumed_from"] == 3


# --- DDP: two gloo processes, each with half of the global batches, match one process ---------------------

class _Conv(nn.Module):
    """No BatchNorm: on CPUs two ranks would normalise with their own half-batch statistics."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, C, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[..., ::2, ::2]  # half resolution, as a real head


class _Labeled(torch.utils.data.Dataset):
    def __init__(self, n=8):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=g)
        self.y = (self.x[:, 0] > 0).long() + 2 * (self.x[:, 1] > 0).long()
        self.y[:, :2] = 255  # the same number of valid pixels in every image: means of halves average to the mean

    def __len__(self):
        return len(self.x)

    def sample(self, i, generator):
        x, y = self.x[i], self.y[i]
        if torch.rand((), generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return {"image": x, "label": y, "index": i}


class _Unlabeled(torch.utils.data.Dataset):
    def __init__(self, n=12):
        self.x = torch.randn(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "index": i}


def _ddp_train(out: str, iters: int = 5):
    from blvnb.engine import loop
    from blvnb.engine.streams import Stream

    loop.init_distributed(torch.device("cpu"))  # before the streams: a stream takes its rank's share when built
    torch.manual_seed(0)
    model = _Conv()
    # scale ≥ 1 with the crop = the image: no padding, so every rank has as many valid pixels
    s = mt.MeanTeacher(loss_name="ce", m0=0.9, ema_buffers="student", scale_range=(1.0, 1.5), seed=3, num_classes=C)
    streams = {"labeled": Stream(_Labeled(), 4, seed=3), "unlabeled": Stream(_Unlabeled(), 4, seed=3)}
    loop.train(model, streams, loop.TrainConfig(iters=iters, lr=0.05, seed=3), s, device="cpu", progress=False)
    if loop.is_main_process():
        shares = [int(streams[k].next()["image"].shape[0]) for k in ("labeled", "unlabeled")]  # this rank's share
        torch.save({"model": model.state_dict(), "teacher": s.state_dict()["teacher"], "shares": shares}, out)


def _ddp_worker(rank: int, world: int, port: int, out: str):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        _ddp_train(out)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def test_two_gloo_processes_match_one_process(tmp_path):
    """Tolerance 1e-5 on every weight of the student and the teacher (float rounding of the gradient average).
    CE only: BLV's noise is drawn per rank, so with BLV the two runs differ by design."""
    import socket

    import torch.multiprocessing as tmp

    _ddp_train(str(tmp_path / "one.pt"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    tmp.start_processes(_ddp_worker, args=(2, port, str(tmp_path / "two.pt")), nprocs=2, start_method="spawn")
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert two["shares"] == [2, 2] and one["shares"] == [4, 4]  # each rank took half of each global batch
    for part in ("model", "teacher"):
        for k in one[part]:
            assert torch.allclose(one[part][k], two[part][k], atol=1e-5, rtol=0), (part, k)
    assert not torch.equal(one["model"]["conv.weight"], one["teacher"]["conv.weight"])  # the EMA lags
