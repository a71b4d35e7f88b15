"""The paper profile's runs resolve to the papers' settings (issue 18, "silently wrong today" 3 and 6).

* UDA: DAFormer and HRDA train with 2 source + 2 target images per iteration (DAFormer's experiments.py
  ``batch_size = 2``; recipes.md (d)); the paper profile's default batch is 16.
* BLV Table 5's semi-supervised DARS number (72.8) is DARS Table 1's 1/8 result at crop 713.

The paper profile reads real data; the configs resolve without it (``data_root`` is only a path until a
run reads it), and the strategies build on toycity trees laid out as the real data sets under one root.
"""

from __future__ import annotations

import torch

from blvnb.experiments import runs, tables

DATA = "/nonexistent/data"  # the configs of the paper profile name a data root; nothing here reads it


def _paper_configs():
    return [(t, e) for t in tables.list_tables() for e in tables.entries(t, "paper", data_root=DATA)]


def test_paper_uda_and_source_only_runs_train_two_images_per_stream():
    every = _paper_configs()
    uda = [e.cfg for _, e in every if e.cfg.strategy == "uda"]
    assert {c.model for c in uda} >= {"r101-deeplabv2@paper", "mitb5-daformer@paper", "mitb5-hrda@paper"}
    assert {c.batch_size for c in uda} == {2} == {tables.UDA_BATCH}
    # the source-only rows (BLV Tables 3, 4; DARS Tables 14, 15): DAFormer's source-only batch too
    source_only = [e.cfg for _, e in every if e.cfg.strategy == "supervised" and e.cfg.dataset in ("gta5", "synthia")]
    assert source_only and {c.batch_size for c in source_only} == {2}
    # everything else keeps the profile's 16 (Cityscapes supervised, mean teacher, DARS)
    others = [e.cfg for t, e in every if e.cfg.strategy not in ("uda",) and e.cfg.dataset not in ("gta5", "synthia")]
    assert others and 2 not in {c.batch_size for c in others if c.strategy != "dars-rounds"}
    # the toy profiles keep their own batch
    assert {e.cfg.batch_size for e in tables.entries("blv-t3", "gpu")} == {16}


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
    for name in ("r101-deeplabv2@paper", "mitb5-hrda@paper"):
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
