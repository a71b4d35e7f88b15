"""The paper profile's runs resolve to the papers' settings (issue 18, "silently wrong today" 3 and 6).

* UDA: DAFormer and HRDA train with 2 source + 2 target images per iteration (DAFormer's experiments.py
  ``batch_size = 2``; recipes.md (d)); the paper profile's default batch is 16.
* BLV Table 5's semi-supervised DARS number (72.8) is DARS Table 1's 1/8 result at crop 713.

The paper profile reads real data; the configs resolve without it (``data_root`` is only a path until a
run reads it), and the strategies build on toycity trees laid out as the real data sets under one root.
"""

from __future__ import annotations

import pytest
import torch

from blvnb.experiments import runs, tables

DATA = "/nonexistent/data"  # the configs of the paper profile name a data root; nothing here reads it


def _paper_configs():
    return [(t, e) for t in tables.list_tables() for e in tables.entries(t, "paper", data_root=DATA)]


def test_paper_uda_and_source_only_runs_train_two_images_per_stream():
    every = _paper_configs()
    uda = [e.cfg for _, e in every if e.cfg.strategy == "uda"]
    assert {c.model for c in uda} >= {"r101-deeplabv2-red@paper", "mitb5-daformer@paper", "mitb5-hrda@paper"}
    assert {c.batch_size for c in uda} == {2} == {tables.UDA_BATCH}
    # the source-only rows (BLV Tables 3, 4; DARS Tables 14, 15): DAFormer's source-only batch too
    source_only = [e.cfg for _, e in every if e.cfg.strategy == "supervised" and e.cfg.dataset in ("gta5", "synthia")]
    assert source_only and {c.batch_size for c in source_only} == {2}
    # everything else keeps the profile's 16 (Cityscapes supervised, mean teacher, DARS)
    others = [e.cfg for t, e in every if e.cfg.strategy not in ("uda",) and e.cfg.dataset not in ("gta5", "synthia")]
    assert others and 2 not in {c.batch_size for c in others if c.strategy != "dars-rounds"}
    # the gpu profile trains the papers' architectures at toy scale with the papers' batch too; quick keeps its
    # calibrated one, and gpu keeps its own evaluation (toycity at 256x512, not the real images' test sizes)
    gpu = [e.cfg for e in tables.entries("blv-t3", "gpu")]
    assert {c.batch_size for c in gpu} == {2} and {c.eval_size for c in gpu} == {None}
    assert {e.cfg.batch_size for e in tables.entries("blv-t3", "quick")} == {8}


def test_the_uda_strategy_draws_batch_size_images_from_each_stream(tmp_path, monkeypatch):
    # a paper-profile run built on toycity trees in the real data sets' layouts under one data root
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    from blvnb.data import toycity
    from blvnb.engine.strategies import uda

    root = tmp_path / "data"
    root.mkdir()
    for style, sub in (("cityscapes", "cityscapes"), ("gta", "gta5")):
        (root / sub).symlink_to(toycity.ensure(style, n_train=6, n_val=2, size=(64, 128), progress=False))
    cfgs = {e.cfg.model: e.cfg for e in tables.entries("blv-t3", "paper", seeds=(0,), data_root=str(root))
            if e.cfg.strategy == "uda" and e.cfg.loss == "ce"}
    for name in ("r101-deeplabv2-red@paper", "mitb5-hrda@paper"):
        cfg = cfgs[name]
        built = uda.build(cfg, runs.RunData(cfg, cfg.key(), torch.device("cpu")))
        assert {k: s.batch_size for k, s in built.streams.items()} == {"source": 2, "target": 2}
        assert built.strategy.summary()["batch"] == {"source": 2, "target": 2}


def test_blv_table5_compares_with_the_crop713_dars_run():
    arms = {(e.row, e.arm): e.cfg for e in tables.entries("blv-t5", "paper", seeds=(0,), data_root=DATA)}
    comparand = arms[("semi", "dars")]
    assert comparand.crop == (713, 713) and comparand.strategy_options["schedule"] == "cityscapes-1/8-crop713"
    assert comparand.strategy_options["round"] == 2 and comparand.labeled_fraction == "1/8"
    # it is DARS Table 1's crop-713 1/8 round-2 run: one record for both tables
    t1 = {(e.row, e.arm): e.cfg for e in tables.entries("dars-t1", "paper", seeds=(0,), data_root=DATA)}
    assert comparand.key() == t1[("DARS (crop 713) 1/8", "dars")].key()
    assert comparand.key() != t1[("DARS (crop 361) 1/8", "dars")].key()
    # the toy profiles have one DARS row (crop 361's schedule): Table 5 shows it
    for profile in ("quick", "gpu"):
        t5 = {(e.row, e.arm): e.key for e in tables.entries("blv-t5", profile, seeds=(0,))}
        t1 = {(e.row, e.arm): e.key for e in tables.entries("dars-t1", profile, seeds=(0,))}
        assert t5[("semi", "dars")] == t1[("DARS 1/8", "dars")]


# --- evaluation at the released test settings (issue 18, item 4) ---------------------------------------------

def test_daformer_hrda_and_segformer_evaluate_with_their_released_test_settings():
    t3 = {(e.row, e.arm): e.cfg for e in tables.entries("blv-t3", "paper", seeds=(0,), data_root=DATA)}
    for row in ("DAFormer †", "DAFormer ‡", "source only †"):
        for (r, _), cfg in t3.items():
            if r == row:  # DAFormer trains on Cityscapes at 1024×512 and tests whole images of that size
                assert (cfg.eval_mode, cfg.eval_size, cfg.eval_stride) == ("whole", (512, 1024), None), row
    hrda = t3[("HRDA ‡", "baseline")]
    assert (hrda.eval_mode, hrda.eval_crop, hrda.eval_stride, hrda.eval_size) == ("slide", (1024, 1024), (512, 512), None)
    t1 = {(e.row, e.arm): e.cfg for e in tables.entries("blv-t1", "paper", seeds=(0,), data_root=DATA)}
    for arm in ("baseline", "blv"):
        seg = t1[("MiT-b0 SegformerHead", arm)]
        assert (seg.eval_mode, seg.eval_crop, seg.eval_stride) == ("slide", (1024, 1024), (768, 768))
        for row, cfg in t1.items():  # the other rows: whole 2048×1024 images (their configs' test_cfg)
            if row[0] != "MiT-b0 SegformerHead":
                assert (cfg.eval_mode, cfg.eval_size, cfg.eval_stride) == ("whole", None, None), row
    # Table 5's fully supervised baseline and BLV are Table 1's ViT runs (one record each)
    t5 = {(e.row, e.arm): e.key for e in tables.entries("blv-t5", "paper", seeds=(0,), data_root=DATA)}
    for arm in ("baseline", "blv"):
        assert t5[("fully", arm)] == t1[("ViT-B16 UperHead", arm)].key()
    # DARS's PSPNet50 on the uda strategy trains on DAFormer's 1024×512 Cityscapes too
    assert {e.cfg.eval_size for e in tables.entries("dars-t15", "paper", seeds=(0,), data_root=DATA)} == {(512, 1024)}
    # the toy profiles: their own evaluation
    assert {e.cfg.eval_size for t in ("blv-t1", "blv-t3") for e in tables.entries(t, "gpu", seeds=(0,))} == {None}


def test_unset_eval_size_and_stride_leave_a_runs_key_as_it_was():
    cfg = runs.RunConfig.from_profile("quick")
    assert not {"eval_size", "eval_stride"} & set(cfg.key_dict())
    assert cfg.with_(eval_size=(64, 128)).key() != cfg.key() != cfg.with_(eval_stride=(32, 32)).key()


class _Halves(torch.nn.Module):
    """Class 0 on the left half of its input, class 1 on the right; remembers the input sizes it saw."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:]))
        w = x.shape[-1]
        left = (torch.arange(w, device=x.device) < w // 2).float()
        z = torch.stack([left, 1 - left]).view(1, 2, 1, w).expand(x.shape[0], 2, x.shape[-2], w)
        return 10 * z


def test_evaluate_infers_at_eval_size_and_scores_at_the_labels_resolution():
    from blvnb.engine.evaluate import evaluate

    label = torch.zeros(1, 8, 16, dtype=torch.int64)
    label[..., 8:] = 1
    batch = [{"image": torch.randn(1, 3, 8, 16), "label": label}]
    model = _Halves()
    out = evaluate(model, batch, device="cpu", size=(4, 8), num_classes=2, dataset="generic", progress=False)
    assert model.seen == [(4, 8)] and out["mIoU"] == 1.0
    assert sum(map(sum, out["confusion"])) == 8 * 16  # every label pixel, at the label's resolution
    model = _Halves()
    evaluate(model, batch, device="cpu", mode="slide", crop=(8, 8), stride=(8, 4), num_classes=2,
             dataset="generic", progress=False, window_batch=1)
    assert model.seen == [(8, 8)] * 3  # windows at 0, 4, 8 with stride 4


def test_a_run_evaluates_with_its_eval_size_and_stride(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    seen = {}
    real = runs.evaluate

    def spy(model, loader, **kw):
        seen.update(kw)
        return real(model, loader, **kw)

    monkeypatch.setattr(runs, "evaluate", spy)
    cfg = runs.RunConfig.from_profile("smoke", iters=1, eval_mode="slide", eval_crop=(32, 32), eval_stride=(16, 16),
                                      eval_size=(32, 64), progress=False)
    rec = runs.run(cfg)
    assert (seen["size"], seen["stride"], seen["crop"], seen["mode"]) == ((32, 64), (16, 16), (32, 32), "slide")
    assert rec["config"]["eval_size"] == [32, 64] and rec["n_val_images"] > 0


# --- DARS at the released resolutions (issue 18, item 5) -----------------------------------------------------

def test_dars_crop361_runs_scale_the_full_image_and_test_and_label_at_half_resolution():
    t1 = {(e.row, e.arm): e.cfg for e in tables.entries("dars-t1", "paper", seeds=(0,), data_root=DATA)}
    c361, c713 = t1[("DARS (crop 361) 1/8", "dars")], t1[("DARS (crop 713) 1/8", "dars")]
    # the random scale [0.25, 1] is drawn on the 1024×2048 image (no resize to 512×1024 first)
    assert c361.base_size is None and c361.scale_range == (0.25, 1.0) and c361.crop == (361, 361)
    # tested as released: the image at long side 1024, 361² windows; scored against full-resolution labels
    assert (c361.eval_mode, c361.eval_crop, c361.eval_size) == ("slide", (361, 361), (512, 1024))
    assert (c713.eval_mode, c713.eval_crop, c713.eval_size, c713.base_size) == ("slide", (713, 713), None, None)
    # the teacher labels with sliding windows of the crop (flip-averaged by default), not the whole image
    for cfg, crop in ((c361, 361), (c713, 713)):
        assert cfg.strategy_options["teacher_mode"] == "slide" and cfg.strategy_options["teacher_crop"] == crop
    # round 0 (the teacher) carries none of the labelling options: one teacher for every labeller
    r0 = t1[("DARS (crop 361) 1/8", "baseline")]
    assert "teacher_mode" not in r0.strategy_options


def test_dars_voc_and_scannet_keep_their_aspect_at_their_own_crops():
    for table, dataset, crop in (("dars-t3", "voc", 321), ("dars-t12", "scannet", 481)):
        cfgs = [e.cfg for e in tables.entries(table, "paper", seeds=(0,), data_root=DATA)]
        assert cfgs and {c.dataset for c in cfgs} == {dataset}
        assert {c.crop for c in cfgs} == {(crop, crop)} and {c.base_size for c in cfgs} == {None}
        assert {c.eval_size for c in cfgs} == {None} and {c.eval_crop for c in cfgs} == {(crop, crop)}


def test_the_teacher_labels_at_the_runs_eval_size(tmp_path, monkeypatch):
    """dars-rounds hands cfg.eval_size to the labelling, and it is part of the labels' manifest."""
    from blvnb.engine.strategies import dars_rounds

    got = {}

    def fake_label_round(teacher, dataset, out_dir, **kw):
        got.update(kw)
        raise RuntimeError("stop here")

    monkeypatch.setattr(dars_rounds, "label_round", fake_label_round)
    t1 = {(e.row, e.arm): e.cfg for e in tables.entries("dars-t1", "smoke", seeds=(0,))}
    cfg = t1[("DARS 1/8", "dars")].with_(eval_size=(32, 64))
    assert cfg.strategy_options["round"] == 2
    teacher_rec = {"checkpoint": str(tmp_path / "t.pt")}
    torch.save({"model": {}}, tmp_path / "t.pt")
    real = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    monkeypatch.setattr(real, "dependency", lambda c: teacher_rec)
    monkeypatch.setattr(dars_rounds, "_teacher_model", lambda cfg, data, ckpt: torch.nn.Conv2d(3, 19, 1))
    with pytest.raises(RuntimeError, match="stop here"):
        dars_rounds.build(cfg, real)
    assert got["size"] == (32, 64) and got["manifest"]["size"] == [32, 64]


def test_daformer_cnn_is_deeplab_v2_with_dilations_6_and_12_and_dars_t2_keeps_four():
    """DAFormer † is DAFormer's ``dlv2red`` (recipes.md (d)); DARS Table 2's DeepLab v2 has the four rates."""
    from blvnb.models.registry import build_model

    t3 = {e.cfg.model for e in tables.entries("blv-t3", "paper", seeds=(0,), data_root=DATA)
          if e.row.startswith("DAFormer †") or e.row.startswith("source only †")}
    assert t3 == {"r101-deeplabv2-red@paper"}
    assert {e.cfg.model for e in tables.entries("dars-t2", "paper", seeds=(0,), data_root=DATA)} == {
        "r101-deeplabv2@paper"}
    rates = {name: [b.dilation[0] for b in build_model(name, num_classes=19, variant="small").head.branches]
             for name in ("r101-deeplabv2-red", "r101-deeplabv2")}
    assert rates == {"r101-deeplabv2-red": [6, 12], "r101-deeplabv2": [6, 12, 18, 24]}


def test_blv_semi_supervised_runs_crop_769_with_16_plus_16_and_slide_in_769_windows():
    cfgs = [e.cfg for e in tables.entries("blv-t2", "paper", seeds=(0,), data_root=DATA)]
    assert cfgs and {c.strategy for c in cfgs} == {"mean-teacher"}
    for c in cfgs:
        assert (c.crop, c.scale_range, c.batch_size, c.base_size) == ((769, 769), (0.5, 2.0), 16, None)
        assert (c.eval_mode, c.eval_crop, c.eval_size) == ("slide", (769, 769), None)


def test_uda_source_only_runs_train_on_the_uda_source_pipeline_and_test_as_daformer():
    t3 = {(e.row, e.arm): e.cfg for e in tables.entries("blv-t3", "paper", seeds=(0,), data_root=DATA)}
    so = t3[("source only †", "source only")]
    assert so.strategy == "supervised" and so.dataset == "gta5" and so.batch_size == 2
    assert (so.base_size, so.scale_range, so.crop, so.cat_max_ratio) == ((720, 1280), (1.0, 1.0), (512, 512), 0.75)
    assert (so.eval_mode, so.eval_size) == ("whole", (512, 1024))  # Cityscapes at 1024×512, as DAFormer tests
    # DAFormer's optimiser (AdamW 6e-5, head ×10, warmup 1500/40k), as the UDA runs it is compared with
    from blvnb.engine.strategies import supervised
    from blvnb.experiments import resolve

    assert so.strategy_options == {"optimiser": "daformer"}
    rec = supervised.recipe_of(so)
    assert (rec.optimizer, rec.lr, rec.weight_decay, rec.head_lr_mult) == ("adamw", 6e-5, 0.01, 10.0)
    settings, groups = resolve.optimiser(so)
    assert settings["optimizer"] == "adamw" and settings["warmup_iters"] == 1500
    assert {g.get("lr_mult", 1.0) for g in groups} == {1.0, 10.0}
    from blvnb.errors import ConfigError

    with pytest.raises(ConfigError, match="optimiser must be one of daformer"):
        supervised.recipe_of(so.with_(strategy_options={"optimiser": "adam"}))


def test_the_evaluation_view_keeps_the_images_as_stored(tmp_path):
    """base_size resizes training images only; the val view is the stored image (eval_size resizes it at
    test time, scored against full-resolution labels)."""
    from blvnb.data.toycity import write_tree

    root = write_tree(tmp_path / "cs", "cityscapes", n_train=2, n_val=1, size=(32, 64), seed=0, progress=False)
    cfg = runs.RunConfig.from_profile("smoke", base_size=(16, 32), data_root=str(tmp_path), device="cpu")
    data = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    monkey = {"cityscapes": root}
    data.root = lambda kind: monkey[kind]
    val = data.dataset("cityscapes", "val", train=False)[0]
    assert tuple(val["image"].shape[-2:]) == tuple(val["label"].shape[-2:]) == (32, 64)
