"""The paper plan trains each table for the papers' iterations; ``runs plan --json`` states each run's resolved
recipe; ``runs plan --time-limit`` counts the jobs a run takes (issues 18, 22)."""

from __future__ import annotations

import json

import pytest

from blvnb.engine import recipes
from blvnb.engine.strategies import dars_rounds as DR
from blvnb.errors import ConfigError
from blvnb.experiments import execute, iterations, tables


@pytest.fixture(scope="module")
def paper_plan():
    return execute.plan_for("paper")


def _runs(plan, **want):
    out = []
    for r in plan.order():
        c = r.cfg
        so = dict(c.strategy_options)
        got = {"strategy": c.strategy, "model": c.model.split("@")[0], "dataset": c.dataset,
               "fraction": c.labeled_fraction, "round": so.get("round"), "tables": r.tables}
        if all((v in got["tables"]) if k == "table" else got[k] == v for k, v in want.items()):
            out.append(r)
    assert out, f"no run of the paper plan with {want}"
    return out


# --- iterations ---------------------------------------------------------------------------------------------

def test_epoch_iterations_is_the_one_rule():
    assert recipes.epoch_iterations(200, 372, 16, drop_last=True) == 4600  # DARS round 0 at 1/8
    assert recipes.epoch_iterations(200, 2603, 8, drop_last=True) == 65000  # DARS rounds 1-2 at 1/8
    assert recipes.epoch_iterations(200, 2975 - 372, 16) == 32538  # U2PL's count at 1/8
    from blvnb.engine.strategies.mean_teacher import paper_iterations

    assert paper_iterations("1/16") == recipes.epoch_iterations(200, 2975 - 186, 16)


@pytest.mark.parametrize("args, match", [((0, 10, 2), "epochs"), ((5, -1, 2), "images"), ((5, 10, 0), "batch"),
                                         ((5, 10, 2.5), "batch"), ((True, 10, 2), "epochs"),
                                         ((5, "10", 2), "images")])
def test_epoch_iterations_refuses_bad_values(args, match):
    with pytest.raises(ConfigError, match=match):
        recipes.epoch_iterations(*args)
    with pytest.raises(ConfigError, match="no whole batch"):
        recipes.epoch_iterations(5, 3, 4, drop_last=True)


@pytest.mark.parametrize("model, iters", [("mitb0-segformer", 160_000), ("swint-knet", 80_000),
                                          ("vitb16-uper", 80_000), ("hr18-ocr", 40_000), ("r50-uper", 40_000),
                                          ("r50-psp", 40_000), ("r101-uper", 40_000)])
def test_blv_table1_rows_train_the_released_iterations(paper_plan, model, iters):
    for r in _runs(paper_plan, strategy="supervised", model=model, table="blv-t1"):
        assert r.cfg.iters == iters


@pytest.mark.parametrize("fraction, iters", [("1/16", 34_862), ("1/8", 32_538), ("1/4", 27_888), ("1/2", 18_588)])
def test_blv_semi_supervised_runs_200_epochs(paper_plan, fraction, iters):
    for r in _runs(paper_plan, strategy="mean-teacher", fraction=fraction):
        assert r.cfg.iters == iters


@pytest.mark.parametrize("dataset, fraction, its", [
    ("cityscapes", "1/8", [4600, 65000, 65000]), ("cityscapes", "1/4", [9200, 55600, 55600]),
    ("voc", None, [4550, 56950, 56950]), ("scannet", "1/8", [3040, 42580, 42580])])
def test_dars_rounds_each_train_their_own_epochs(paper_plan, dataset, fraction, its):
    for k in (0, 1, 2):
        runs = [r for r in _runs(paper_plan, strategy="dars-rounds", dataset=dataset, fraction=fraction, round=k)
                if r.cfg.model.startswith("r50-psp")]
        for r in runs:
            assert r.cfg.iters == its[k], (k, r.key)
            if k:  # its teacher is the previous round, at the previous round's length
                teacher = paper_plan.runs[r.deps[0]].cfg
                assert teacher.iters == its[k - 1]
                assert dict(teacher.strategy_options).get("round") == k - 1


def test_dars_round0_arm_is_the_teacher_of_round1(paper_plan):
    """Table 4's baseline (round 0) is the run its round-1 rows start from: one key."""
    base = [e for e in tables.entries("dars-t4", "paper", (0,), "DATA_ROOT") if e.arm == "baseline"][0]
    r1 = [e for e in tables.entries("dars-t4", "paper", (0,), "DATA_ROOT") if e.arm == "dars"][0]
    assert paper_plan.runs[r1.key].deps == [base.key]
    assert "round_iters" not in dict(base.cfg.strategy_options)


def test_uda_and_deeplab_rounds(paper_plan):
    for r in _runs(paper_plan, strategy="uda"):
        assert r.cfg.iters == iterations.UDA_ITERS
    r2 = _runs(paper_plan, strategy="dars-rounds", model="r101-deeplabv2", round=2)[0]
    assert r2.cfg.batch_size == 8 and r2.cfg.iters == 130_000  # 200 epochs of 2603 at 4 + 4


def test_gpu_profile_keeps_its_own_iterations():
    plan = execute.plan_for("gpu", ["blv-t1", "dars-t1"])
    assert {r.cfg.iters for r in plan.order()} == {4000}
    assert not any("round_iters" in dict(r.cfg.strategy_options) for r in plan.order())


@pytest.mark.parametrize("its", [[0, 5], [4600], "65k", [4600, 2.5], [True, 3]])
def test_bad_round_iters_are_named(its):
    with pytest.raises(ConfigError, match="round_iters"):
        DR.round_options({"round": 1, "round_iters": its})


def test_a_round_whose_iters_disagree_with_round_iters_is_refused():
    from blvnb.experiments.runs import RunConfig

    cfg = RunConfig.from_profile("smoke", strategy="dars-rounds", labeled_fraction="1/8", iters=7,
                                 strategy_options={"round": 1, "round_iters": [3, 5]})
    with pytest.raises(ConfigError, match="round_iters"):
        DR.build(cfg, data=None)
    assert DR.round_config(cfg, 1).iters == 5 and DR.round_config(cfg, 0).iters == 3
    assert "round_iters" not in DR.round_config(cfg, 0).strategy_options


@pytest.mark.parametrize("call, match", [(lambda: iterations.semi_iters("1/3"), "1/3"),
                                         (lambda: iterations.dars_lists("kitti", "1/8"), "kitti"),
                                         (lambda: iterations.dars_supervised_iters("kitti", 16), "kitti")])
def test_iterations_refuse_unknown_settings(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


# --- runs plan --json: the whole resolved configuration ---------------------------------------------------

@pytest.fixture(scope="module")
def paper_rows(paper_plan):
    from blvnb.experiments import resolve

    def row(r):
        return {**r.row(), "config": r.cfg.key_dict(), **resolve.resolved(r.cfg)}
    return row


TRAIN_NAMES = {"iters", "optimizer", "lr", "weight_decay", "param_groups", "batch", "crop", "resize", "scale_range"}
EVAL_NAMES = {"mode", "size", "window", "stride"}


def _groups(row):
    return sorted((g["lr"], g["weight_decay"]) for g in row["train"]["param_groups"])


def test_resolved_dars_deeplab_round_states_its_released_optimiser(paper_plan, paper_rows):
    """DARS Table 2's DeepLab v2 round 2: lr 0.002 (heads ×10), wd 1e-4, 4 + 4 images, the round's scale range."""
    r = paper_rows(_runs(paper_plan, strategy="dars-rounds", model="r101-deeplabv2", round=2)[0])
    t = r["train"]
    assert TRAIN_NAMES <= set(t) and EVAL_NAMES <= set(r["eval"])
    assert t["optimizer"] == "sgd" and t["iters"] == 130_000
    assert _groups(r) == [(pytest.approx(0.002), 1e-4), (pytest.approx(0.02), 1e-4)]
    assert t["first_iter"] == 2 * 130_000 and t["schedule_iters"] == 3 * 130_000  # the released lr resume
    assert t["batch"] == {"labeled": 4, "pseudo": 4}
    # the random scale on the 1024×2048 image (no resize first); tested at half resolution in 361² windows
    assert t["crop"] == [361, 361] and t["resize"] is None
    assert {k: r["eval"][k] for k in ("mode", "size", "window")} == {"mode": "slide", "size": [512, 1024],
                                                                     "window": [361, 361]}
    assert t["scale_range"] == [pytest.approx(0.2), pytest.approx(1.5)]  # round 2: [0.25, 1] widened by β (0.2, 0.5)
    assert sum(g["params"] for g in t["param_groups"]) == sum(
        p.numel() for p in __import__("blvnb.experiments.resolve", fromlist=["x"]).model_of(
            paper_plan.runs[r["key"]].cfg).parameters())


def test_resolved_supervised_segformer(paper_plan, paper_rows):
    r = paper_rows(_runs(paper_plan, strategy="supervised", model="mitb0-segformer")[0])
    t = r["train"]
    assert t["optimizer"] == "adamw" and t["iters"] == 160_000 and t["warmup_iters"] == 1500
    assert {(g["lr_mult"], g["decay_mult"]) for g in t["param_groups"]} == {(1, 1), (1, 0), (10, 1), (10, 0)}
    for g in t["param_groups"]:
        assert g["lr"] == pytest.approx(6e-5 * g["lr_mult"]) and g["weight_decay"] == pytest.approx(0.01 * g["decay_mult"])
    assert t["batch"] == {"labeled": 16}
    assert r["eval"] == {"mode": "slide", "size": None, "window": [1024, 1024], "stride": [768, 768]}
    assert r["config"]["iters"] == 160_000 and r["config"]["model"] == "mitb0-segformer@paper"


def test_resolved_mean_teacher_and_uda(paper_plan, paper_rows):
    mt = paper_rows(_runs(paper_plan, strategy="mean-teacher", fraction="1/8", model="r101-deeplabv3p")[0])
    assert mt["train"]["batch"] == {"labeled": 16, "unlabeled": 16} and _groups(mt) == [(0.01, 5e-4)]
    assert mt["eval"]["mode"] == "slide" and mt["eval"]["stride"] == [342, 683]  # ⌈2/3 · 512×1024⌉
    daf = paper_rows(_runs(paper_plan, strategy="uda", model="mitb5-daformer")[0])
    t = daf["train"]
    assert t["batch"] == {"source": 2, "target": 2} and t["crop"] == [512, 512] and t["scale_range"] is None
    assert t["resize"] == {"source": [720, 1280], "target": [512, 1024]}
    assert sorted({round(g["lr"], 12) for g in t["param_groups"]}) == [6e-5, 6e-4]
    assert daf["eval"] == {"mode": "whole", "size": [512, 1024], "window": None, "stride": None}
    hrda = paper_rows(_runs(paper_plan, strategy="uda", model="mitb5-hrda")[0])
    assert hrda["eval"] == {"mode": "slide", "size": None, "window": [1024, 1024], "stride": [512, 512]}
    assert hrda["train"]["crop"] == [1024, 1024]


def test_cli_plan_json_carries_the_resolved_recipe(capsys):
    from blvnb.cli import main

    assert main(["runs", "plan", "--profile", "smoke", "--only", "dars-t4", "--json", "--time-limit", "10"]) == 0
    rows = json.loads(capsys.readouterr().out)
    for r in rows:
        assert TRAIN_NAMES <= set(r["train"]) and "config" in r and r["jobs"] >= 1
        assert r["eval"] is None or EVAL_NAMES <= set(r["eval"])
        assert r["config"]["strategy"] == r["strategy"]


# --- runs plan --time-limit --------------------------------------------------------------------------------

def test_jobs_for_counts_the_jobs_a_run_takes():
    # a GPU job of 30 min trains 1800 − 30 (start-up) − 90 (the limit's warning) = 1680 s
    assert execute.jobs_for(30 + 1680, 30, "paper") == 1
    assert execute.jobs_for(30 + 1681, 30, "paper") == 2
    assert execute.jobs_for(30 + 3 * 1680, "30", "gpu") == 3
    assert execute.jobs_for(10, 30, "paper") == 1


@pytest.mark.parametrize("value, match", [("0", "positive"), (0, "positive"), ("-5", "positive"), ("abc", "'abc'"),
                                          ("nan", "positive"), ("inf", "positive"), (True, "True"), ([4], r"\[4\]"),
                                          ("1", "leaves no time")])
def test_bad_time_limits_are_named(value, match):
    with pytest.raises(ConfigError, match=match):
        execute.jobs_for(100, value, "paper")


@pytest.mark.parametrize("value, msg", [("0", "--time-limit must be a positive number"),
                                        ("-3", "got '-3'"), ("soon", "'soon' is not a number of minutes")])
def test_cli_time_limit_errors_exit_2(capsys, value, msg):
    from blvnb.cli import main

    assert main(["runs", "plan", "--profile", "smoke", "--time-limit", value]) == 2
    assert msg in capsys.readouterr().err


def test_cli_plan_time_limit_text(capsys):
    from blvnb.cli import main

    assert main(["runs", "plan", "--profile", "paper", "--only", "blv-t1", "--time-limit", "240"]) == 0
    out = capsys.readouterr().out
    plan = execute.plan_for("paper", ["blv-t1"])
    total = sum(execute.jobs_for(r.est_seconds, 240, "paper") for r in plan.order())
    assert f"{total} jobs of 240 minutes in all" in out and total > len(plan)  # SegFormer's 160k needs several


def test_table_seconds_count_every_run_a_table_needs(paper_plan):
    per = execute.table_seconds(paper_plan)
    t4 = {r.key for r in paper_plan.order() if "dars-t4" in r.tables or "dars-t4" in r.needed_by}
    assert per["dars-t4"] == pytest.approx(sum(paper_plan.runs[k].est_seconds for k in t4), abs=1)
    assert max(per.values()) <= paper_plan.est_seconds <= sum(per.values())


# --- the GPU-hours per table and the GPUs for a working day -------------------------------------------------

def _toy_plan():
    from types import SimpleNamespace

    plan = execute.Plan("paper")
    for key, secs, deps, table in (("a", 10.0, [], "t1"), ("b", 10.0, ["a"], "t1"), ("c", 15.0, [], "t2")):
        plan.runs[key] = execute.PlannedRun(key, SimpleNamespace(strategy="supervised"), tables=[table], deps=deps,
                                            est_seconds=secs)
    plan.runs["a"].needed_by = ["t1"]
    return plan


def test_makespan_and_budget_follow_the_teachers():
    plan = _toy_plan()
    assert execute.makespan(plan, 1) == 35.0
    assert execute.makespan(plan, 2) == 20.0  # b waits for its teacher a; c runs beside them
    b = execute.budget(plan, day_hours=25 / 3600)
    assert b["gpus_for_day"] == 2 and b["longest_chain_seconds"] == 20.0 and b["total_seconds"] == 35.0
    assert execute.budget(plan, day_hours=19 / 3600)["gpus_for_day"] is None  # the chain alone is longer
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="gpus"):
            execute.makespan(plan, bad)


def test_the_book_budget_is_computed_from_the_estimate():
    from pathlib import Path

    from blvnb import pages

    frag = pages.budget_fragments(("smoke",))
    b = execute.budget(execute.plan_for("smoke"))
    assert f"**{pages._hours(b['total_seconds'])} GPU-hours**" in frag["smoke"]
    assert f"**{b['gpus_for_day']} GPUs**" in frag["smoke"]
    assert all(f"`{t}`" in frag["tables"] for t in b["tables"])
    intro = (Path(__file__).resolve().parents[1] / "book" / "intro.md").read_text()
    assert "about an hour" not in intro
    for name in ("gpu", "paper", "source", "tables"):
        assert f"generated/includes/plan_budget_{name}.md" in intro
