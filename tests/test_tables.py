"""Which runs each table needs: every table of both papers declared, runs shared across tables by key,
quick subsets stated, dependencies ordered, committed records read instead of recomputed."""

import json
import os
import re

import pytest

from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments import execute, profiles, records, table_runs, tables



@pytest.fixture(autouse=True)
def runconfig(monkeypatch, tmp_path):
    """Private stores for the plans and executors."""
    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    return runs.RunConfig


def keys(cfgs):
    return [c.key() for c in cfgs]


def test_every_table_of_both_papers_is_declared_with_a_note():
    want = {f"blv-t{i}" for i in range(1, 15)} | {f"dars-t{i}" for i in range(1, 16)}
    assert want <= set(tables.TABLES)
    for t, spec in tables.TABLES.items():
        assert re.fullmatch(r"(blv|dars)-(t|fig)\d+", t)
        assert spec.paper == t.split("-")[0] and spec.note, t


def test_runs_are_deduplicated_and_shared_across_tables():
    t1 = tables.runs_for("blv-t1", "quick")
    assert len(set(keys(t1))) == len(t1)
    # BLV T1's CE run is DARS T1's fully supervised oracle: one record
    t1_ce = [e for e in tables.entries("blv-t1", "quick") if e.arm == "baseline"][0]
    oracle = [e for e in tables.entries("dars-t1", "quick") if e.arm == "oracle"][0]
    assert t1_ce.key == oracle.key
    # DAFormer † GTA5 baseline and BLV serve Tables 3, 5, 6, 7, 8, 9 (quick), 14
    t3 = {(e.arm): e.key for e in tables.entries("blv-t3", "quick") if e.row == "DAFormer †" and e.seed == 0}
    for t in ("blv-t5", "blv-t6", "blv-t7", "blv-t8", "blv-t9", "blv-t14"):
        ks = set(keys(tables.runs_for(t, "quick")))
        assert t3["baseline"] in ks and t3["blv"] in ks, t
    # the cited tables add nothing of their own
    assert set(keys(tables.runs_for("blv-t10", "quick"))) <= set(keys(tables.runs_for("blv-t3", "quick")))
    # DARS T6, T9, T10 share their round-2 runs
    t6 = set(keys(tables.runs_for("dars-t6", "quick")))
    assert set(keys(tables.runs_for("dars-t9", "quick"))) <= t6
    assert set(keys(tables.runs_for("dars-t10", "quick"))) <= t6 | set(keys(tables.runs_for("dars-t4", "quick")))


def test_dars_fig4_plans_the_round_2_variants_its_claims_compare():
    """Fig. 4's claims compare round 2 at α 50 % with and without the wider scale range (dars-fig4) and α 50 %
    against 20 % without it (dars-fig4-alpha): the figure's plan holds those three runs of Table 6."""
    t6 = {e.row: e.key for e in tables.entries("dars-t6", "quick") if e.seed == 0}
    fig4 = {e.row: e.key for e in tables.entries("dars-fig4", "quick") if e.seed == 0}
    assert fig4 == {r: t6[r] for r in ("2 / 20 / 0 / 0", "2 / 50 / 0 / 0", "2 / 50 / 0.2 / 0.5")}


def test_quick_runs_a_stated_subset_gpu_and_paper_every_row():
    quick_rows = {e.row for e in tables.entries("blv-t1", "quick")}
    assert quick_rows == {tables.T1_QUICK_LABEL} and tables.T1_QUICK_LABEL not in tables.T1_ROWS.values()
    gpu = tables.entries("blv-t1", "gpu")
    assert {e.row for e in gpu} == set(tables.T1_ROWS.values())
    assert len(gpu) == 7 * 2 * len(profiles.get_profile("gpu").seeds)
    # gpu trains the paper's variant of each architecture row; smoke and quick train their one model in
    # every table, so that one toy pretraining serves every run
    assert all(e.cfg.model.endswith("@paper") for e in gpu)
    for p in [name for name, prof in profiles.PROFILES.items() if prof.subset]:
        models = {e.cfg.model for t in tables.TABLES for e in tables.entries(t, p)}
        assert models == {profiles.get_profile(p).model}, (p, models)
    assert {e.cfg.model for e in tables.entries("dars-t2", "gpu")} == {"r101-deeplabv2@paper"}
    # sweeps: every point in gpu, a subset in quick
    assert len(tables.runs_for("blv-t7", "gpu", seeds=[0])) == 12
    assert len(tables.runs_for("blv-t7", "quick", seeds=[0])) == 6


def test_sweep_arms_get_the_first_seed_in_quick_unless_seeds_are_given(monkeypatch):
    monkeypatch.setitem(profiles.PROFILES, "quick", profiles.PROFILES["quick"].with_overrides(seeds=(0, 1, 2)))
    es = tables.entries("blv-t6", "quick")
    seeds = {}
    for e in es:
        seeds.setdefault(e.row, set()).add(e.seed)
    assert seeds["None-Variation"] == seeds["Gaussian"] == {0, 1, 2}
    assert seeds["Uniform"] == {0}
    es = tables.entries("blv-t6", "quick", seeds=[3, 4])
    assert {e.seed for e in es if e.row == "Uniform"} == {3, 4}


def test_every_table_with_runs_in_gpu_has_some_in_quick():
    for t, spec in tables.TABLES.items():
        if tables.runs_for(t, "gpu", seeds=[0]):
            assert tables.runs_for(t, "quick"), f"{t} renders nothing from quick results"


def test_plan_orders_teachers_first_and_lists_every_table():
    plan = execute.plan_for("quick")
    order = list(plan.runs)
    assert len(order) == len(set(order))
    for r in plan.order():
        for d in r.deps:
            assert order.index(d) < order.index(r.key)
    r2 = [r for r in plan.order() if r.cfg.strategy == "dars-rounds" and r.cfg.strategy_options["round"] == 2][0]
    r1 = plan.runs[r2.deps[0]]
    assert dict(r1.cfg.strategy_options) == {"round": 1, "labeler": "dars"}
    r0 = plan.runs[r1.deps[0]]
    assert dict(r0.cfg.strategy_options) == {"round": 0}  # one teacher for every labeller
    rows = plan.to_json()
    for row in rows:
        assert {"key", "strategy", "tables", "est_seconds"} <= set(row) and row["tables"]
    shared = [row for row in rows if len(row["tables"]) >= 5]
    assert shared, "a baseline shared by many tables is one run"
    assert plan.est_seconds == pytest.approx(sum(r["est_seconds"] for r in rows), abs=1)


def test_only_and_bad_inputs():
    assert tables.resolve_tables(["blv-fig"]) == [t for t in tables.TABLES if t.startswith("blv-fig")]
    assert tables.resolve_tables(["dars-t1"]) == ["dars-t1"]
    with pytest.raises(ConfigError, match="names no table.*blv-t1"):
        tables.resolve_tables(["blv-t99"])
    with pytest.raises(ConfigError, match="unknown table 'nope'; known: blv-t1"):
        tables.runs_for("nope", "quick")
    with pytest.raises(ConfigError, match="unknown profile 'fast'"):
        tables.runs_for("blv-t1", "fast")
    with pytest.raises(ConfigError, match="unknown profile"):
        execute.plan_for("fast")
    with pytest.raises(ConfigError, match="at least one seed"):
        tables.runs_for("blv-t1", "quick", seeds=[])


def test_uda_takes_st_cbst_and_rs_and_still_refuses_what_it_lacks():
    """DARS Table 15's ST / CBST and BLV Table 5's UDA RS are runnable arms; unknown names are still named."""
    arms = {(a.table, a.arm): a for t in ("dars-t15", "blv-t5") for a in tables.entries(t, "quick")}
    for key in (("dars-t15", "st"), ("dars-t15", "cbst"), ("blv-t5", "rs")):
        assert key in arms
    assert {a for (t, a) in arms if t == "dars-t15"} >= {"st", "cbst"}
    for table in ("dars-t15", "blv-t5"):
        assert tables.unavailable(table, "quick") == []
    assert tables.unsupported(tables.uda("quick", "daformer-cnn", loss="rs")) is None
    assert tables.unsupported(tables.sup("quick", "r10t-fpn", "rs")) is None
    assert "no loss 'rss' for strategy 'uda'" in tables.unsupported(tables.uda("quick", "daformer-cnn", loss="rss"))
    why = tables.unsupported(tables.uda("quick", "r50-psp", pseudo="cbst2"))
    assert "no pseudo-labelling 'cbst2'" in why and "'st'" in why
    assert "no loss 'rs' for strategy 'mean-teacher'" in tables.unsupported(tables.mt("quick", "1/8", "rs"))


def test_cost_model_scales_with_the_work():
    ce = tables.runs_for("blv-t1", "quick")[0]
    base = execute.est_seconds(ce)
    assert base > 0
    assert execute.est_seconds(ce.with_(iters=ce.iters * 2)) > 1.8 * base - execute.FIXED_SECONDS["cpu"]
    es = {e.arm: e.cfg for e in tables.entries("dars-t4", "quick")}
    r0, r1 = execute.est_seconds(es["baseline"]), execute.est_seconds(es["dars"])
    assert r1 > r0  # a round labels the unlabeled split before training
    uda = [e.cfg for e in tables.entries("blv-t3", "quick") if e.arm == "baseline"][0]
    assert execute.est_seconds(uda) > execute.est_seconds(uda.with_(strategy="supervised"))


def _fake_run(calls):
    def run_fn(cfg, force=False):
        calls.append(cfg.key())
        for d in execute.dependencies(cfg):
            assert d.key() in calls, "a teacher must run before its student"
        iou = [float(len(calls))] * 19
        import blvnb

        return {"key": cfg.key(), "profile": cfg.profile, "config": cfg.key_dict(), "metrics": {
            "mIoU": 50.0, "mIoU_head_blv": 60.0, "mIoU_tail_blv": 30.0, "iou": iou}, "train_seconds": 1.0,
            "version": blvnb.__version__, "git": None, "device": "cpu"}
    return run_fn


def test_table_run_groups_records_and_runs_each_key_once():
    calls = []
    res = table_runs.run("dars-t6", "quick", run_fn=_fake_run(calls), progress=False)
    assert len(calls) == len(set(calls))  # shared round-1 teacher once
    g = res.grouped
    assert set(g) == {"1 / 20 / 0 / 0", "1 / 20 / 0.2 / 0.5", "2 / 20 / 0 / 0", "2 / 50 / 0 / 0", "2 / 50 / 0.2 / 0.5"}
    assert g["2 / 50 / 0.2 / 0.5"]["round 2"][0]["metrics"]["mIoU"] == 50.0
    # a second call reads the store: nothing runs again
    before = len(calls)
    table_runs.run("dars-t6", "quick", run_fn=_fake_run(calls), progress=False)
    assert len(calls) == before
    df = res.frame()
    assert list(df.columns[:4]) == ["row", "arm", "seed", "key"]


def test_two_tables_asking_for_the_same_run_make_one_record():
    calls = []
    t3 = table_runs.run("blv-t3", "quick", run_fn=_fake_run(calls), progress=False)
    t14 = table_runs.run("blv-t14", "quick", run_fn=_fake_run(calls), progress=False)
    assert len(calls) == len(set(calls))
    a = t3.grouped["DAFormer †"]["baseline"][0]
    b = t14.grouped["Baseline"]["baseline"][0]
    assert a["key"] == b["key"] and b["cached"]
    assert calls.count(a["key"]) == 1
    store = execute.store_path("quick", a["key"]).parent
    assert len(list(store.glob("*.json"))) == len(set(calls))


def test_committed_records_are_read_never_recomputed(tmp_path):
    cfg = tables.runs_for("blv-t1", "quick")[0]
    rec = _fake_run([d.key() for d in execute.dependencies(cfg)])(cfg)  # its teacher / pretraining "ran" first
    rec.update(device="NVIDIA H200", git="abc123", profile="quick")
    path = records.record_path("quick", cfg.key())
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(rec))
    calls = []
    res = table_runs.run("blv-t1", "quick", run_fn=_fake_run(calls), progress=False)
    planned = execute.build_plan([(c, "blv-t1") for c in tables.runs_for("blv-t1", "quick")]).runs
    assert cfg.key() not in calls and len(calls) == len(planned) - 1
    got = res.grouped[tables.T1_QUICK_LABEL]["baseline"][0]
    assert got["committed"] and got["device"] == "NVIDIA H200"
    calls.clear()
    table_runs.run("blv-t1", "quick", run_fn=_fake_run(calls), force=True, progress=False)
    assert cfg.key() in calls  # forced


def test_a_broken_committed_record_stops_with_its_name():
    cfg = tables.runs_for("blv-t1", "quick")[0]
    path = records.record_path("quick", cfg.key())
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    with pytest.raises(BlvnbError, match=re.escape(str(path))):
        table_runs.run("blv-t1", "quick", run_fn=_fake_run([]), progress=False)


def test_dars_sweep_points_share_their_teachers():
    """One round-0 teacher per split and seed serves every DARS table that starts from it; Table 6's
    round-2 variants share round 1 with Table 4 (only their round 2 differs)."""
    from blvnb.engine.strategies.dars_rounds import round_config
    from blvnb.experiments import table_runs, tables

    def keys(table, row):
        return {e.cfg.key() for e in tables.entries(table, "quick", [0]) if e.row == row}

    base = keys("dars-t4", "Baseline")
    assert len(base) == 1
    for table, row in (("dars-t6", "2 / 20 / 0 / 0"), ("dars-t6", "2 / 50 / 0 / 0"), ("dars-t2", "DARS")):
        e = next(e for e in tables.entries(table, "quick", [0]) if e.row == row)
        r1 = round_config(e.cfg, 1)
        if table == "dars-t6":  # round 1 at α = 20 %, β = 0: Table 4's DARS run
            assert r1.key() in keys("dars-t4", "DARS")
            assert round_config(e.cfg, 0).key() in base
    d2 = next(e for e in tables.entries("dars-t2", "quick", [0]) if e.row == "DARS").cfg
    assert round_config(d2, 0).key() in keys("dars-t2", "Deeplabv2")  # the declared baseline is its teacher


def test_blv_t1_trains_mmsegs_cityscapes_pipeline_where_the_papers_architectures_run():
    from blvnb.experiments import runs

    for prof in ("gpu", "paper"):
        cfgs = tables.runs_for("blv-t1", prof, data_root="/data" if prof == "paper" else None)
        assert cfgs and all(c.photometric and c.cat_max_ratio == 0.75 for c in cfgs)
        assert all(c.key_dict()["photometric"] is True and c.key_dict()["cat_max_ratio"] == 0.75 for c in cfgs)
        fully = [c for c in tables.runs_for("blv-t5", prof, data_root="/data" if prof == "paper" else None)
                 if c.strategy == "supervised"]
        assert fully and all(c.photometric and c.cat_max_ratio == 0.75 for c in fully)
    # the toy profiles keep their calibrated pipeline, and their keys do not name the new settings at all
    for c in tables.runs_for("blv-t1", "quick"):
        assert not c.photometric and c.cat_max_ratio is None
        assert not {"photometric", "cat_max_ratio", "deterministic"} & set(c.key_dict())
    for bad, msg in ((dict(photometric="yes"), "photometric must be True or False, got 'yes'"),
                     (dict(cat_max_ratio=0.0), r"cat_max_ratio must be a share in \(0, 1\] or None, got 0.0"),
                     (dict(cat_max_ratio=2), r"cat_max_ratio must be a share in \(0, 1\] or None, got 2")):
        with pytest.raises(ConfigError, match=msg):
            runs.RunConfig.from_profile("smoke", **bad)


def test_a_runs_training_data_goes_through_the_pipeline_its_config_names(tmp_path, monkeypatch):
    import torch

    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    for photometric, ratio in ((False, None), (True, 0.75)):
        cfg = runs.RunConfig.from_profile("smoke", photometric=photometric, cat_max_ratio=ratio, device="cpu",
                                          progress=False)
        ds = runs.RunData(cfg, cfg.key(), torch.device("cpu")).dataset("cityscapes", "train")
        steps = ds.transform.transforms
        assert ("PhotoMetricDistortion" in [type(t).__name__ for t in steps]) == photometric
        assert next(t for t in steps if type(t).__name__ == "RandomCrop").cat_max_ratio == ratio
