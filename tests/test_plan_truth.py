"""The paper plan trains each table for the papers' iterations; ``runs plan --json`` states each run's resolved
recipe; ``runs plan --time-limit`` counts the jobs a run takes (issues 18, 22)."""

from __future__ import annotations

import json

import pytest

from blvnb.engine import recipes
from blvnb.engine.strategies import dars_rounds as DR
from blvnb.errors import BlvnbError, ConfigError
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
