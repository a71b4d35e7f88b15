"""DARS self-training rounds (blvnb.engine.strategies.dars_rounds), piece by piece, and end to end.

"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from blvnb.engine.strategies import STRATEGIES
from blvnb.engine.strategies import dars_rounds as DR
from blvnb.errors import BlvnbError, ConfigError
from blvnb.pseudo import labelers as L

ROOT = Path(__file__).resolve().parents[1]


# --- a tiny segmentation model and hand-made batches -------------------------------------------------------

class Tiny(nn.Module):
    """backbone (1/2 resolution) → head, plus one auxiliary head weighted 0.4 (a SegModel in miniature)."""

    def __init__(self, c: int = 3, aux: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.head = nn.Conv2d(4, c, 1)
        self.aux_heads = nn.ModuleList([nn.Conv2d(4, c, 1)] if aux else [])
        self.aux_weights = (0.4,) if aux else ()
        self.num_classes = c
        self.calls = 0

    def forward(self, x, return_aux: bool = False):
        self.calls += 1
        f = torch.relu(self.backbone(x))
        out = self.head(f)
        if return_aux:
            return {"out": out, "aux": [h(f) for h in self.aux_heads]}
        return out


def _batch(seed: int, n: int = 2, size=(8, 12), c: int = 3, ignore_share: float = 0.3) -> dict:
    g = torch.Generator().manual_seed(seed)
    label = torch.randint(0, c, (n, *size), generator=g)
    label[torch.rand(n, *size, generator=g) < ignore_share] = 255
    return {"image": torch.randn(n, 3, *size, generator=g), "label": label}


def _ce(logits, label):
    """Reference: nn.CrossEntropyLoss(ignore_index=255) on logits upsampled to the label (mean over valid)."""
    z = nn.functional.interpolate(logits, size=label.shape[-2:], mode="bilinear", align_corners=False)
    return nn.functional.cross_entropy(z, label, ignore_index=255)


def test_step_is_labeled_plus_pseudo_each_main_plus_0_4_aux_over_valid_pixels():
    model = Tiny()
    s = DR.DarsRounds(1, pseudo_weight=1.0)
    assert s.streams == ("labeled", "pseudo") and s.epoch_stream == "pseudo"
    lab, pse = _batch(1), _batch(2, ignore_share=0.8)
    loss, stats = s.step(model, {"labeled": lab, "pseudo": pse}, it=5)
    assert model.calls == 2  # two separate forwards
    with torch.no_grad():
        ref = 0.0
        for b in (lab, pse):
            out = model(b["image"], return_aux=True)
            ref = ref + _ce(out["out"], b["label"]) + 0.4 * _ce(out["aux"][0], b["label"])
    torch.testing.assert_close(loss.detach(), ref, rtol=1e-6, atol=1e-6)
    assert float(stats["pseudo_kept"]) == pytest.approx(float((pse["label"] != 255).float().mean()))
    # weight w of the pseudo term
    loss2, _ = DR.DarsRounds(1, pseudo_weight=0.5).step(model, {"labeled": lab, "pseudo": pse}, it=5)
    torch.testing.assert_close(loss2.detach(), stats["loss_labeled"] + 0.5 * stats["loss_pseudo"], rtol=1e-6, atol=1e-6)


def test_an_all_ignored_pseudo_batch_adds_nothing_and_stays_finite():
    model = Tiny()
    lab, pse = _batch(3), _batch(4)
    pse["label"][:] = 255
    s = DR.DarsRounds(2)
    loss, stats = s.step(model, {"labeled": lab, "pseudo": pse}, it=0)
    assert torch.isfinite(loss) and float(stats["loss_pseudo"]) == 0.0
    loss.backward()
    g_mixed = model.head.weight.grad.clone()
    model.zero_grad()
    DR.DarsRounds(0).step(model, {"labeled": lab}, it=0)[0].backward()
    torch.testing.assert_close(g_mixed, model.head.weight.grad)


def test_round_zero_is_supervised_on_the_labeled_stream_only():
    model = Tiny(aux=False)
    s = DR.DarsRounds(0)
    assert s.streams == ("labeled",) and s.epoch_stream == "labeled"
    lab = _batch(5)
    loss, _ = s.step(model, {"labeled": lab}, it=0)
    torch.testing.assert_close(loss.detach(), _ce(model(lab["image"]), lab["label"]).detach())


def test_param_groups_backbone_times_one_heads_times_ten():
    model = Tiny()
    groups = DR.DarsRounds(1).param_groups(model)
    assert [g["lr_mult"] for g in groups] == [1.0, 10.0]
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # every parameter exactly once
    assert {id(p) for p in groups[0]["params"]} == {id(p) for p in model.backbone.parameters()}
    with pytest.raises(ConfigError, match="no backbone"):  # the heads' ×10 needs a backbone to tell them apart
        DR.DarsRounds(1).param_groups(nn.Conv2d(3, 3, 1))
    from blvnb.engine.recipes import dars_recipe

    one = DR.DarsRounds(1, recipe=dars_recipe("r50-psp", head_lr_mult=1.0)).param_groups(model)
    assert [g["lr_mult"] for g in one] == [1.0]  # head_lr_mult 1: one group, every parameter at the run's lr


def test_state_dict_refuses_another_rounds_checkpoint():
    s = DR.DarsRounds(2)
    s.load_state_dict(s.state_dict())
    with pytest.raises(BlvnbError, match="round 1"):
        s.load_state_dict({"round": 1})


# --- the schedule: α, scales, lr continuation ----------------------------------------------------------------

def test_round_settings_follow_the_released_schedule():
    o = DR.round_options({})
    assert DR.round_settings({**o, "round": 0}) == (None, (0.25, 1.0))
    assert DR.round_settings({**o, "round": 1}) == (0.2, (0.25, 1.0))
    assert DR.round_settings({**o, "round": 2}) == (0.5, (0.2, 1.5))
    o713 = DR.round_options({"schedule": "cityscapes-1/8-crop713", "round": 2})
    assert DR.round_settings(o713) == (0.65, (0.5, 3.0))
    own = DR.round_options({"alphas": [0.3, 0.6], "scale_range": [0.5, 1.0], "round": 2})
    assert DR.round_settings(own) == (0.6, (0.4, 1.5))
    with pytest.raises(ConfigError, match="round 3"):
        DR.round_settings({**o, "round": 3})
    # without scale_range: the run's (profile's) range for rounds 0 and 1, widened by the schedule's β after
    assert DR.round_settings({**o, "round": 0}, (0.5, 1.0)) == (None, (0.5, 1.0))
    assert DR.round_settings({**o, "round": 1}, (0.5, 1.0)) == (0.2, (0.5, 1.0))
    assert DR.round_settings({**o, "round": 2}, (0.5, 1.0)) == (0.5, (0.4, 1.5))
    with pytest.raises(ConfigError, match="scale_range"):
        DR.schedule({"alphas": [0.2]})


def _poly(base, it, T, power=0.9):
    return base * (1 - it / T) ** power


def test_lr_continues_the_poly_schedule_over_the_rounds():
    iters = 100
    assert DR.lr_continuation(0, iters) == {"first_iter": 0, "schedule_iters": 100}
    assert DR.lr_continuation(1, iters) == {"first_iter": 100, "schedule_iters": 200}
    assert DR.lr_continuation(2, iters) == {"first_iter": 200, "schedule_iters": 300}
    # round 1 starts at 0.01 · 0.5^0.9 ≈ 0.0054, round 2 at 0.01 · (1/3)^0.9 ≈ 0.0037 (recipes.md (c)), then → 0
    r1, r2 = DR.lr_continuation(1, iters), DR.lr_continuation(2, iters)
    assert _poly(0.01, r1["first_iter"], r1["schedule_iters"]) == pytest.approx(0.00536, abs=1e-5)
    assert _poly(0.01, r2["first_iter"], r2["schedule_iters"]) == pytest.approx(0.00372, abs=1e-5)
    # the released resume: epoch counter restored, epochs = 200 (k + 1); same arithmetic in epochs
    assert _poly(0.01, 200, 400) == pytest.approx(_poly(0.01, r1["first_iter"], r1["schedule_iters"]))


def test_lr_continuation_through_the_loop_schedule():
    from blvnb.engine import loop

    cfg = loop.TrainConfig(iters=100, lr=0.01, power=0.9, **DR.lr_continuation(1, 100))
    lrs = [loop.scheduled_lr(0.01, it, cfg) for it in range(cfg.first_iter, cfg.end_iter)]
    assert lrs[0] == pytest.approx(0.01 * 0.5 ** 0.9) and lrs[-1] == pytest.approx(0.01 * (1 / 200) ** 0.9)


# --- options and the configs of the rounds --------------------------------------------------------------------

@dataclass(frozen=True)
class FakeCfg:
    strategy: str = "dars-rounds"
    strategy_options: dict = field(default_factory=dict)
    model: str = "tiny"
    seed: int = 0
    scale_range: tuple | None = None

    def with_(self, **kw):
        return replace(self, **kw)


def test_round_config_shares_round_zero_between_labellers():
    a = FakeCfg(strategy_options={"round": 2, "labeler": "dars", "calibration": "ts"})
    b = FakeCfg(strategy_options={"round": 2, "labeler": "st", "threshold": 0.9})
    assert DR.round_config(a, 1).strategy_options == {"round": 1, "labeler": "dars", "calibration": "ts"}
    assert DR.round_config(a, 0) == DR.round_config(b, 0) == FakeCfg(strategy_options={"round": 0})
    # round 0 trains with the run's own scale range: the schedule (α, β of later rounds) does not change it
    c = FakeCfg(strategy_options={"round": 1, "schedule": "cityscapes-1/8-crop713"})
    assert DR.round_config(c, 0).strategy_options == {"round": 0}
    # a sweep over round 2's α or β shares rounds 0 and 1
    d = FakeCfg(strategy_options={"round": 2, "alphas": [0.2, 0.5], "betas": [[0, 0], [0.2, 0.5]],
                                  "scale_range": [0.5, 1.5]})
    e = FakeCfg(strategy_options={"round": 2, "alphas": [0.2, 0.3], "betas": [[0, 0], [0.1, 0.1]],
                                  "scale_range": [0.5, 1.5]})
    assert DR.round_config(d, 1) == DR.round_config(e, 1)
    assert DR.round_config(d, 1).strategy_options["alphas"] == [0.2]
    assert DR.round_config(d, 2) != DR.round_config(e, 2)


@pytest.mark.parametrize("opts, match", [
    ({"round": -1}, "round"), ({"round": 1.5}, "round"), ({"labeler": "fixmatch"}, "fixmatch"),
    ({"labeler": "dars", "threshold": 0.9}, "threshold"), ({"labeler": "st", "threshold": 1.2}, "1.2"),
    ({"calibration": "platt"}, "platt"), ({"teacher_mode": "tiles"}, "tiles"), ({"teacher_mode": "slide"}, "crop"),
    ({"confidence_dtype": "int8"}, "int8"), ({"pseudo_weight": -1}, "pseudo_weight"), ({"alpha": 0.2}, "alpha"),
    ({"schedule": "voc"}, "voc"), ({"rotate": -5}, "rotate"), ({"prior_total": 88.04}, "give prior"),
    ({"prior": [1.0] * 19, "prior_total": 0}, "prior_total"), ({"prior": [1.0] * 5}, "5 entries"),
    ({"extra_unlabeled": -3}, "extra_unlabeled.*-3"), ({"extra_unlabeled": 2.5}, "extra_unlabeled.*2.5"),
    ({"extra_unlabeled": True}, "extra_unlabeled.*True"), ({"extra_unlabeled": "3k"}, "extra_unlabeled.*3k"),
])
def test_bad_round_options_are_named(opts, match):
    with pytest.raises(ConfigError, match=match):
        DR.round_options(opts)


def test_registered_under_its_name():
    from blvnb.engine import strategies

    entry = STRATEGIES["dars-rounds"]  # the builder, or its "module:function" name (resolved by get_builder)
    builder = strategies.get_builder("dars-rounds") if hasattr(strategies, "get_builder") else entry
    assert builder is DR.build


# --- labelling a round: manifest, reuse, resume --------------------------------------------------------------

class ImageSet:
    """Un-augmented images with names (the labeller writes <name>.png)."""

    def __init__(self, n: int = 5, size=(16, 24), seed: int = 0, labels: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.images = [torch.randint(0, 256, (3, *size), generator=g, dtype=torch.uint8) for _ in range(n)]
        self.labels = [torch.randint(0, 3, size, generator=g) for _ in range(n)] if labels else None
        self.names = [f"img{i:03d}" for i in range(n)]

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        d = {"image": self.images[i]}
        if self.labels is not None:
            d["label"] = self.labels[i]
        return d


def _opts(**kw):
    return DR.round_options({"round": 1, **kw})


PRIOR = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def _label(tmp, model=None, manifest=None, alpha=0.3, **kw):
    model = model if model is not None else Tiny().eval()
    return DR.label_round(model, ImageSet(), tmp, manifest=manifest or {"teacher_sha256": "abc"}, prior=PRIOR,
                          alpha=alpha, options=_opts(**kw), seed=3, device="cpu")


def _read_all(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: L.read_pseudo_label(p).numpy() for p in sorted(folder.rglob("*.png"))}


def test_labels_are_reused_when_teacher_and_settings_are_unchanged(tmp_path):
    first = _label(tmp_path)
    assert not first.reused and len(_read_all(first.labels_dir)) == 5
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["complete"] and manifest["labeler"] == "dars" and manifest["alpha"] == 0.3
    model = Tiny().eval()
    again = _label(tmp_path, model=model)
    assert again.reused and model.calls == 0 and again.report == first.report
    # another ratio, labeller or teacher: labelled again, the old PNGs replaced
    for change in ({"alpha": 0.5}, {"labeler": "cbst"}, {"manifest": {"teacher_sha256": "other"}}):
        model = Tiny().eval()
        out = _label(tmp_path, model=model, **change)
        assert not out.reused and model.calls > 0
    assert json.loads((tmp_path / "manifest.json").read_text())["teacher_sha256"] == "other"


def test_labelling_report_feeds_the_summary(tmp_path):
    rl = _label(tmp_path)
    summ = DR._labeling_summary(rl, PRIOR)
    assert sum(summ["pseudo_distribution"]) == pytest.approx(1.0)
    assert 0 < summ["kept_share"] <= 0.3 + 1e-9  # DARS keeps α of the pixels (or fewer)
    assert summ["kl_labeled_to_pseudo"] >= 0 and summ["labeling_seconds"] >= 0
    json.dumps(summ, allow_nan=False)  # strict JSON, for the run record


def test_calibration_first_is_fitted_and_used(tmp_path):
    model = Tiny().eval()
    rl = DR.label_round(model, ImageSet(), tmp_path, manifest={"teacher_sha256": "abc"}, prior=PRIOR, alpha=0.3,
                        options=_opts(calibration="ts"), seed=3, device="cpu",
                        calibration_data=ImageSet(3, seed=1, labels=True))
    assert not rl.reused and len(_read_all(rl.labels_dir)) == 5


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_dars_rounds import ImageSet, PRIOR, Tiny, _opts
    from blvnb.engine.strategies import dars_rounds as DR
    from blvnb.pseudo import streaming

    kill_at, phase = int(sys.argv[2]), sys.argv[3]
    count = [0]
    if phase == "pass2":
        save = streaming._save_png
        def dying_save(path, labels):
            save(path, labels)
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        streaming._save_png = dying_save
    elif phase == "pass1":
        put = streaming.ThresholdSearch.update
        def dying_update(self, conf, pred):
            put(self, conf, pred)
            count[0] += 1
            if count[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        streaming.ThresholdSearch.update = dying_update
    torch.manual_seed(0)
    DR.label_round(Tiny().eval(), ImageSet(9), sys.argv[1], manifest={{"teacher_sha256": "abc"}}, prior=PRIOR,
                   alpha=0.3, options=_opts(confidence_dtype=sys.argv[4]), seed=3, device="cpu", batch=1)
""")


def _run_labelling(out: Path, kill_at: int, phase: str, dtype: str) -> int:
    script = _KILL_SCRIPT.format(tests=str(ROOT / "tests"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", script, str(out), str(kill_at), phase, dtype], env=env,
                          capture_output=True, text=True, timeout=300)
    if proc.returncode not in (0, -signal.SIGKILL):
        raise AssertionError(proc.stderr[-3000:])
    return proc.returncode


@pytest.mark.parametrize("phase, kill_at, dtype", [("pass2", 4, "float16"), ("pass1", 5, "float32")])
def test_a_round_killed_while_labelling_resumes_to_the_same_labels(tmp_path, phase, kill_at, dtype):
    """SIGKILL in the middle of the labelling pass (a subprocess), started again: the same PNGs, the same
    report, as one uninterrupted labelling (in this process), resuming from the saved progress."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    torch.manual_seed(0)
    DR.label_round(Tiny().eval(), ImageSet(9), whole, manifest={"teacher_sha256": "abc"}, prior=PRIOR, alpha=0.3,
                   options=_opts(confidence_dtype=dtype), seed=3, device="cpu", batch=1)
    assert _run_labelling(killed, kill_at, phase, dtype) == -signal.SIGKILL
    m = json.loads((killed / "manifest.json").read_text())
    assert m["complete"] is False
    if phase == "pass2":  # stopped half way, its progress saved: it resumes at the image it was writing
        assert len(list((killed / "labels").rglob("*.png"))) == kill_at
        assert json.loads((killed / "state" / "pass2.json").read_text())["next"] == kill_at - 1
    else:
        assert (killed / "state" / "pass1.pt").is_file() and not (killed / "labels").exists()
    assert _run_labelling(killed, 0, "none", dtype) == 0
    a, b = _read_all(whole / "labels"), _read_all(killed / "labels")
    assert a.keys() == b.keys() and len(a) == 9
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    ra = json.loads((whole / "manifest.json").read_text())["report"]
    rb = json.loads((killed / "manifest.json").read_text())["report"]
    assert ra["kept"] == rb["kept"] and ra["thresholds"] == rb["thresholds"]


# --- end to end through the run wiring ------------------------------------------------------------------------

def test_round_zero_then_round_one_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_CACHE", str(os.environ.get("BLVNB_CACHE", tmp_path / "cache")))
    from blvnb.experiments import runs

    # an lr of its own (not the loop's default 0.01): the run's lr must reach the optimiser
    cfg = runs.RunConfig.from_profile("smoke", strategy="dars-rounds", labeled_fraction="1/8", lr=0.02,
                                      strategy_options={"round": 1, "labeler": "dars"})
    rec = runs.run(cfg)
    assert math.isfinite(rec["metrics"]["mIoU"]) and len(rec["metrics"]["iou"]) == 19
    summ = rec["summary"]
    assert summ["round"] == 1 and summ["alpha"] == 0.2 and not summ["labels_reused"]
    assert sum(summ["pseudo_distribution"]) == pytest.approx(1.0) and summ["kl_labeled_to_pseudo"] >= 0
    assert 0 < summ["kept_share"] <= 0.2 + 1e-9
    # round 0 ran first as the teacher, and is one record shared by every labeller
    r0 = runs.run(DR.round_config(cfg, 0))
    assert r0["summary"]["round"] == 0 and Path(r0["checkpoint"]).is_file()
    st = runs.run(cfg.with_(strategy_options={"round": 1, "labeler": "st", "threshold": 0.9}))
    assert st["summary"]["labeler"] == "st"
    # the student continued the teacher's schedule: its first lr (the backbone group's) is lr0 · (1/2)^0.9
    assert rec["history"]["lr"][0] == pytest.approx(0.02 * 0.5 ** 0.9, rel=1e-6)
    assert r0["history"]["lr"][0] == pytest.approx(0.02, rel=1e-6)


# --- build(cfg, data) against a stand-in RunData ----------------------------------------------

@dataclass(frozen=True)
class BuildCfg(FakeCfg):
    dataset: str = "cityscapes"
    labeled_fraction: str = "1/8"
    iters: int = 10
    batch_size: int = 4
    loss: str = "ce"
    loss_options: dict = field(default_factory=dict)
    lr: float | None = None
    weight_decay: float | None = None
    eval_size: tuple | None = None  # RunConfig.eval_size: the teacher infers at it


class FakeData:
    """What build() may use of RunData: split_indices, dataset, stream, class_counts, work_dir, dependency."""

    def __init__(self, tmp: Path):
        self.work_dir, self.device, self.progress, self.seed = tmp / "work", "cpu", False, 0
        self.images = ImageSet(8, labels=True)
        self.asked, self.deps = [], []
        self.ckpt = tmp / "teacher.pt"
        torch.save({"model": Tiny().state_dict(), "optimizer": None}, self.ckpt)

    def split_indices(self, fraction):
        assert fraction in ("1/8", None)
        return ([0, 1], [2, 3, 4, 5, 6, 7]) if fraction else (list(range(8)), [])

    def dataset(self, kind, split, *, train=True, indices=None, scale_range=None, crop=None, pseudo_dir=None,
                rotate=None, blur=False, **pool):
        indices = range(len(self.images)) if indices is None else indices
        extra = pool.pop("extra_unlabeled", 0)  # RunData's: n images outside the split, after the selected ones
        assert not pool
        self.asked.append(dict(kind=kind, split=split, train=train, indices=list(indices), scale_range=scale_range,
                               pseudo_dir=pseudo_dir, rotate=rotate, blur=blur, extra_unlabeled=extra))
        sub = ImageSet(0)
        more = ImageSet(extra, seed=1, labels=True)
        sub.images = [self.images.images[i] for i in indices] + more.images
        sub.labels = [self.images.labels[i] for i in indices] + more.labels
        sub.names = [self.images.names[i] for i in indices] + [f"extra_{n}" for n in more.names]
        return sub

    def stream(self, dataset, batch_size, order=None):
        return ("stream", len(dataset), batch_size)

    def class_counts(self, dataset):
        return torch.tensor([50, 30, 20])

    def dependency(self, cfg):
        self.deps.append(cfg)
        return {"checkpoint": str(self.ckpt)}

    def build_model(self):
        return Tiny()


def test_build_round_zero_trains_the_labeled_split_alone(tmp_path):
    data = FakeData(tmp_path)
    built = DR.build(BuildCfg(strategy_options={"round": 0}), data)
    assert built.strategy.streams == ("labeled",) and built.init_state is None and not data.deps
    assert built.streams == {"labeled": ("stream", 2, 4)}
    assert {k: built.train_overrides[k] for k in ("first_iter", "schedule_iters")} == {"first_iter": 0,
                                                                                 "schedule_iters": 10}
    assert data.asked[-1]["indices"] == [0, 1] and data.asked[-1]["scale_range"] == (0.25, 1.0)
    assert data.asked[-1]["rotate"] == 10.0 and data.asked[-1]["blur"]  # DARS's augmentation
    assert built.strategy.summary()["round"] == 0


def test_build_passes_the_runs_lr_and_weight_decay_to_every_round(tmp_path):
    # DARS Table 2's DeepLab v2 recipe (lr 0.002) and the released weight decay 1e-4 (tables.dars_recipe)
    for k, first in ((0, 0), (1, 10)):
        opts = {"round": k, "labeler": "dars"} if k else {"round": 0}
        built = DR.build(BuildCfg(strategy_options=opts, lr=0.002, weight_decay=1e-4), FakeData(tmp_path))
        o = built.train_overrides
        assert {k: o[k] for k in ("first_iter", "schedule_iters", "lr", "weight_decay")} == {
            "first_iter": first, "schedule_iters": first + 10, "lr": 0.002, "weight_decay": 1e-4}


def test_build_round_zero_with_every_label(tmp_path):
    # DARS Table 8: the fully supervised model is round 0 on the whole training split; no later round
    # can run without unlabeled images
    data = FakeData(tmp_path)
    built = DR.build(BuildCfg(strategy_options={"round": 0}, labeled_fraction=None), data)
    assert built.streams == {"labeled": ("stream", 8, 4)} and data.asked[-1]["indices"] == list(range(8))
    assert built.strategy.summary()["unlabeled_images"] == 0
    with pytest.raises(ConfigError, match="needs unlabeled images"):
        DR.build(BuildCfg(strategy_options={"round": 1, "labeler": "dars"}, labeled_fraction=None), data)


def test_build_round_two_labels_with_round_one_and_continues_it(tmp_path):
    data = FakeData(tmp_path)
    cfg = BuildCfg(strategy_options={"round": 2, "labeler": "dars"})
    built = DR.build(cfg, data)
    assert data.deps == [DR.round_config(cfg, 1)]
    assert built.init_state == str(data.ckpt)  # weights and optimiser state of the teacher
    assert {k: built.train_overrides[k] for k in ("first_iter", "schedule_iters")} == {"first_iter": 20,
                                                                                 "schedule_iters": 30}
    assert built.streams == {"labeled": ("stream", 2, 2), "pseudo": ("stream", 6, 2)}  # half and half
    pseudo = data.asked[-1]
    assert pseudo["indices"] == [2, 3, 4, 5, 6, 7] and pseudo["scale_range"] == (0.2, 1.5)
    assert pseudo["rotate"] == 10.0 and pseudo["blur"]
    pngs = sorted(Path(pseudo["pseudo_dir"]).rglob("*.png"))
    assert [p.stem for p in pngs] == [f"img{i:03d}" for i in range(2, 8)]
    summ = built.strategy.summary()
    assert summ["round"] == 2 and summ["alpha"] == 0.5 and summ["labeler"] == "dars" and not summ["labels_reused"]
    assert 0 < summ["kept_share"] <= 0.5 + 1e-9
    again = DR.build(cfg, FakeData(tmp_path))  # same teacher file, same settings: the labels are reused
    assert again.strategy.summary()["labels_reused"]
    with pytest.raises(ConfigError, match="batch_size"):
        DR.build(replace(cfg, batch_size=1), FakeData(tmp_path))


def test_build_extra_unlabeled_grows_the_pool_of_rounds_one_on_only(tmp_path):
    # DARS Table 8: every label in round 0, N_p extra images pseudo-labeled and trained on from round 1
    data = FakeData(tmp_path)
    cfg = BuildCfg(strategy_options={"round": 1, "labeler": "dars", "extra_unlabeled": 3}, labeled_fraction=None)
    built = DR.build(cfg, data)
    assert data.deps == [DR.round_config(cfg, 0)]
    assert "extra_unlabeled" not in data.deps[0].strategy_options  # the teacher is the plain round 0
    assert built.streams == {"labeled": ("stream", 8, 2), "pseudo": ("stream", 3, 2)}
    pseudo = data.asked[-1]
    assert pseudo["indices"] == [] and pseudo["extra_unlabeled"] == 3
    assert sorted(p.stem for p in Path(pseudo["pseudo_dir"]).rglob("*.png")) == [f"extra_img{i:03d}" for i in range(3)]
    summ = built.strategy.summary()
    assert summ["unlabeled_images"] == 3 and summ["extra_unlabeled_images"] == 3
    # with a split: the split's unlabeled images, then exactly n more
    (tmp_path / "split").mkdir()
    data = FakeData(tmp_path / "split")
    built = DR.build(BuildCfg(strategy_options={"round": 1, "labeler": "dars", "extra_unlabeled": 2}), data)
    assert built.streams["pseudo"] == ("stream", 6 + 2, 2) and data.asked[-1]["indices"] == [2, 3, 4, 5, 6, 7]
    # round 0 does not use them, even when asked directly
    (tmp_path / "r0").mkdir()
    data = FakeData(tmp_path / "r0")
    built = DR.build(BuildCfg(strategy_options={"round": 0, "extra_unlabeled": 5}), data)
    assert built.streams == {"labeled": ("stream", 2, 4)} and all(a["extra_unlabeled"] == 0 for a in data.asked)
    assert built.strategy.summary()["unlabeled_images"] == 6
    with pytest.raises(ConfigError, match="extra_unlabeled.*scannet"):
        DR.build(BuildCfg(strategy_options={"round": 1, "extra_unlabeled": 2}, dataset="scannet"), FakeData(tmp_path))


def test_extra_unlabeled_images_are_new_toycity_images_outside_the_train_split(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_CACHE", str(os.environ.get("BLVNB_CACHE", tmp_path / "cache")))
    from blvnb.experiments import runs

    cfg = runs.RunConfig.from_profile("smoke", strategy="dars-rounds", device="cpu", progress=False)
    data = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    _, unlabeled = data.split_indices("1/8")
    plain = data.dataset("cityscapes", "train", train=False, indices=unlabeled)
    pool = data.dataset("cityscapes", "train", train=False, indices=unlabeled, extra_unlabeled=5)
    assert len(pool) == len(plain) + 5 and pool.names[:len(plain)] == plain.names
    train = data.dataset("cityscapes", "train", train=False)
    extra = [pool[i] for i in range(len(plain), len(pool))]
    assert all(e["name"].startswith(runs.EXTRA_PREFIX) and e["name"] not in train.names and "label" not in e
               for e in extra)
    train_images = [train[i]["image"] for i in range(len(train))]
    assert not any(torch.equal(e["image"], t) for e in extra for t in train_images)
    only = data.dataset("cityscapes", "train", train=False, indices=[], extra_unlabeled=5)  # every image labeled
    assert only.names == pool.names[len(plain):]
    with pytest.raises(ConfigError, match="-1"):
        data.extra_images(-1)
    with pytest.raises(ConfigError, match="'scannet'"):
        data.dataset("scannet", "train", extra_unlabeled=2)


def test_extra_unlabeled_images_of_the_real_data_are_the_first_coarse_ones_by_name(tmp_path, monkeypatch):
    from PIL import Image

    from blvnb.errors import DatasetError
    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    names = ["bamberg_000000_000441", "augsburg_000000_000001", "augsburg_000000_000000", "bad-honnef_000000_000000"]
    for n in names:
        folder = tmp_path / "cityscapes" / "leftImg8bit" / "train_extra" / n.split("_")[0]
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (8, 4), (len(n), 0, 0)).save(folder / f"{n}_leftImg8bit.png")
    cfg = runs.RunConfig.from_profile("smoke", strategy="dars-rounds", device="cpu", progress=False,
                                      data_root=str(tmp_path))
    data = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    extra = data.extra_images(3)
    assert extra.names == ["extra_" + n for n in sorted(names)[:3]] and extra[0]["image"].shape == (3, 4, 8)
    with pytest.raises(DatasetError, match="5 extra .* holds 4"):
        data.extra_images(5)


# --- a round killed while training resumes bitwise ----------------------------------------------------------

_TRAIN_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import torch
    sys.path.insert(0, {tests!r})
    from test_dars_rounds import Tiny, _batch
    from blvnb.engine import loop
    from blvnb.engine.streams import Stream
    from blvnb.engine.strategies import dars_rounds as DR

    class DS:
        def __init__(self, seed, n=6, ignore=0.3):
            self.items = [{{k: v[0] for k, v in _batch(seed + i, n=1, ignore_share=ignore).items()}} for i in range(n)]
        def __len__(self):
            return len(self.items)
        def __getitem__(self, i):
            return dict(self.items[i], index=i)

    class Dying(DR.DarsRounds):
        def after_step(self, model, it):
            if it == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)

    out, teacher = sys.argv[1], sys.argv[2]
    if not os.path.exists(teacher):  # round 0: the teacher
        cfg0 = loop.TrainConfig(iters=4, lr=0.01, seed=0, **DR.lr_continuation(0, 4))
        loop.train(Tiny(), {{"labeled": Stream(DS(0), 2, seed=0)}}, cfg0, DR.DarsRounds(0), device="cpu",
                   checkpoint=teacher, progress=False)
    cfg = loop.TrainConfig(iters=4, lr=0.01, seed=0, ckpt_every=1, **DR.lr_continuation(1, 4))
    streams = {{"labeled": Stream(DS(0), 1, seed=0), "pseudo": Stream(DS(100, ignore=0.8), 1, seed=0)}}
    loop.train(Tiny(), streams, cfg, Dying(1), device="cpu", checkpoint=out, init_state=teacher, progress=False)
""")


def test_a_round_killed_while_training_resumes_bitwise(tmp_path):
    script = _TRAIN_SCRIPT.format(tests=str(ROOT / "tests"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    teacher = tmp_path / "round0.pt"

    def run(out, kill_at):
        p = subprocess.run([sys.executable, "-c", script, str(out), str(teacher), str(kill_at)], env=env,
                           capture_output=True, text=True, timeout=300)
        if p.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(p.stderr[-3000:])
        return p.returncode

    assert run(tmp_path / "whole.pt", -1) == 0
    assert run(tmp_path / "killed.pt", 6) == -signal.SIGKILL  # global iteration 6: the 3rd of round 1
    assert run(tmp_path / "killed.pt", -1) == 0
    a = torch.load(tmp_path / "whole.pt", weights_only=True)
    b = torch.load(tmp_path / "killed.pt", weights_only=True)
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    assert a["iter"] == b["iter"] == 8


@dataclass(frozen=True)
class ScaledCfg(FakeCfg):
    scale_range: tuple = (0.75, 1.5)


def test_round_config_shares_teachers_across_schedule_variants():
    # DARS Tables 6/9/10: variants that differ from round 2 on share rounds 0 and 1 with the default
    dflt = ScaledCfg(strategy_options={"round": 2, "labeler": "dars"})
    same_r1 = ScaledCfg(strategy_options={"round": 2, "labeler": "dars", "alphas": [0.2, 0.2],
                                          "betas": [[0.0, 0.0], [0.0, 0.0]]})  # base range: the run's
    assert DR.round_config(same_r1, 1) == DR.round_config(dflt, 1) == ScaledCfg(
        strategy_options={"round": 1, "labeler": "dars"})
    assert DR.round_config(same_r1, 0) == DR.round_config(dflt, 0) == ScaledCfg(strategy_options={"round": 0})
    # round 1 widened already: its round 0 is the default's, its round 1 is not
    wide_r1 = ScaledCfg(strategy_options={"round": 1, "labeler": "dars", "alphas": [0.2], "betas": [[0.2, 0.5]]})
    assert DR.round_config(wide_r1, 0) == DR.round_config(dflt, 0)
    # another base range is another round 0; later rounds' α and β are dropped from the teacher
    other = ScaledCfg(strategy_options={"round": 2, "labeler": "dars", "alphas": [0.3, 0.5],
                                        "betas": [[0.0, 0.0], [0.2, 0.5]], "scale_range": [0.25, 1.0]})
    t1 = DR.round_config(other, 1).strategy_options
    assert t1 == {"round": 1, "labeler": "dars", "alphas": [0.3], "betas": [[0.0, 0.0]], "scale_range": [0.25, 1.0]}
    assert DR.round_config(other, 0).strategy_options == {"round": 0, "scale_range": [0.25, 1.0]}
    assert DR.round_config(other, 0) != DR.round_config(dflt, 0)


def test_round_config_with_betas_alone():
    # only round 2's widening differs from the released schedule: rounds 0 and 1 are the default's
    cfg = ScaledCfg(strategy_options={"round": 2, "labeler": "dars", "betas": [[0.0, 0.0], [0.0, 0.0]]})
    assert DR.round_config(cfg, 1) == ScaledCfg(strategy_options={"round": 1, "labeler": "dars"})
    assert DR.round_config(cfg, 0) == ScaledCfg(strategy_options={"round": 0})
    # round 1 widened: its teacher (round 0) is the default's, it itself keeps its β
    wide = ScaledCfg(strategy_options={"round": 2, "labeler": "dars", "betas": [[0.2, 0.5], [0.2, 0.5]]})
    assert DR.round_config(wide, 1).strategy_options == {"round": 1, "labeler": "dars", "alphas": [0.2],
                                                         "betas": [[0.2, 0.5]]}
    DR.round_options(DR.round_config(wide, 1).strategy_options)  # a valid schedule of one round
    assert DR.round_config(wide, 0) == ScaledCfg(strategy_options={"round": 0})
