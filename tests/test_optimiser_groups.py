"""A run trains with the lr and weight decay its record states, whatever the strategy (issue 18, item 1).

dars-rounds used to hand the loop only its schedule continuation, so a round configured with DARS Table 2's
DeepLab v2 settings (lr 0.002, weight decay 1e-4) trained at the loop's defaults (0.01, 5e-4) while its
record said 0.002 / 1e-4. Here every strategy runs end to end on the smoke profile with a lr and a weight
decay that no default has, and the optimiser groups its record reports (what ``torch.optim`` held) must be
``lr × lr_mult`` and ``weight_decay × decay_mult`` of the record's config.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from blvnb.engine import loop

LR, WD = 0.002, 1e-4  # DARS Table 2's DeepLab v2: neither is any strategy's or recipe's default


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("optim")
    mp = pytest.MonkeyPatch()
    mp.setenv("BLVNB_RESULTS", str(tmp / "results"))
    mp.setenv("BLVNB_RECORDS", str(tmp / "records"))
    mp.setenv("BLVNB_CACHE", os.environ.get("BLVNB_CACHE", str(tmp / "cache")))
    yield tmp
    mp.undo()


def _check_groups(rec: dict, lr: float, wd: float) -> list[dict]:
    groups = rec["optimizer"]["param_groups"]
    assert groups, "the record states no optimiser group"
    for g in groups:
        assert g["lr"] == pytest.approx(lr * g["lr_mult"], rel=1e-12), g
        assert g["weight_decay"] == pytest.approx(wd * g["decay_mult"], rel=1e-12, abs=0), g
    return groups


def _trainable(rec_cfg) -> int:
    from blvnb.experiments import runs

    model = runs.build_model(rec_cfg.model, num_classes=runs.num_classes_of(rec_cfg.dataset))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


CASES = {
    "supervised": dict(strategy="supervised"),
    "mean-teacher": dict(strategy="mean-teacher", labeled_fraction="1/8"),
    "dars-rounds 0": dict(strategy="dars-rounds", labeled_fraction="1/8", strategy_options={"round": 0}),
    "dars-rounds 1": dict(strategy="dars-rounds", labeled_fraction="1/8",
                          strategy_options={"round": 1, "labeler": "dars"}),
    "uda": dict(strategy="uda", dataset="gta5", target="cityscapes"),
}
#: the lr multipliers each strategy's groups must show (the heads' ×10 where the recipe has it)
MULTS = {"supervised": {1.0}, "mean-teacher": {1.0}, "dars-rounds 0": {1.0, 10.0}, "dars-rounds 1": {1.0, 10.0},
         "uda": {1.0, 10.0}}


@pytest.mark.parametrize("case", list(CASES))
def test_every_strategy_trains_with_the_lr_and_weight_decay_of_its_record(store, case):
    from blvnb.experiments import runs

    cfg = runs.RunConfig.from_profile("smoke", iters=2, lr=LR, weight_decay=WD, progress=False, **CASES[case])
    rec = runs.run(cfg)
    assert rec["config"]["lr"] == LR and rec["config"]["weight_decay"] == WD  # what the record says
    groups = _check_groups(rec, rec["config"]["lr"], rec["config"]["weight_decay"])
    assert {g["lr_mult"] for g in groups} == MULTS[case]
    assert sum(g["params"] for g in groups) == _trainable(cfg)  # every trainable parameter is in a group
    if case == "dars-rounds 1":
        # the student's first lr continues the teacher's schedule (recipes.md (c)) from the configured lr
        assert rec["history"]["lr"][0] == pytest.approx(LR * 0.5 ** 0.9, rel=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_the_plan_states_the_groups_the_run_trained_with(store, case):
    """``runs plan --json`` resolves each run's optimiser groups without training it
    (:mod:`blvnb.experiments.resolve`); they are the groups the run's record states it trained with."""
    from blvnb.experiments import resolve, runs

    cfg = runs.RunConfig.from_profile("smoke", iters=2, lr=LR, weight_decay=WD, progress=False, **CASES[case])
    rec = runs.run(cfg)
    planned = resolve.train_of(cfg)
    assert planned["optimizer"] == rec["optimizer"]["name"]
    trained = rec["optimizer"]["param_groups"]
    assert [{k: g[k] for k in ("lr", "weight_decay", "lr_mult", "decay_mult", "params")} for g in trained] == [
        {k: pytest.approx(g[k], rel=1e-12) for k in ("lr", "weight_decay", "lr_mult", "decay_mult", "params")}
        for g in planned["param_groups"]]


def test_dars_round_without_lr_states_the_recipe_it_used(store):
    # lr / weight_decay None: the model's recipe (SGD 0.01 / 5e-4 for the CNNs), and the record says so
    from blvnb.experiments import runs

    cfg = runs.RunConfig.from_profile("smoke", strategy="dars-rounds", labeled_fraction="1/8", iters=2,
                                      progress=False, strategy_options={"round": 0})
    rec = runs.run(cfg)
    assert rec["config"]["lr"] is None and rec["optimizer"]["name"] == "sgd"
    _check_groups(rec, 0.01, 5e-4)


def test_an_init_state_optimiser_keeps_its_moments_but_not_its_hyperparameters():
    # a DARS round k >= 1 starts from its teacher's optimiser state; torch's load_state_dict would also
    # restore the teacher's lr and weight decay: the student's own configuration must win
    torch.manual_seed(0)
    model = nn.Linear(3, 2)

    class S:
        name, streams, epoch_stream = "s", ("x",), "x"
        seed = 0

        def param_groups(self, m):
            return [{"params": list(m.parameters()), "lr_mult": 10.0, "decay_mult": 1.0}]

        def setup(self, m, d):
            pass

        def step(self, net, batches, it):
            return net(batches["x"]["image"]).pow(2).mean(), {}

        def after_step(self, m, it):
            pass

        def on_epoch_end(self, m, e):
            pass

        def state_dict(self):
            return {}

        def load_state_dict(self, s):
            pass

        def summary(self):
            return {}

    class Stream:
        epoch = 0

        def next(self):
            return {"image": torch.ones(2, 3)}

        def state_dict(self):
            return {}

    teacher_cfg = loop.TrainConfig(iters=1, lr=0.01, weight_decay=5e-4)
    opt = loop.build_optimizer(S().param_groups(model), teacher_cfg)
    model(torch.ones(2, 3)).sum().backward()
    opt.step()
    state = {"model": model.state_dict(), "optimizer": opt.state_dict()}
    cfg = loop.TrainConfig(iters=1, first_iter=1, schedule_iters=2, lr=LR, weight_decay=WD)
    out = loop.train(model, {"x": Stream()}, cfg, S(), device="cpu", init_state=state, progress=False)
    (g,) = out["optimizer"]["param_groups"]
    assert g["lr"] == pytest.approx(LR * 10) and g["weight_decay"] == pytest.approx(WD)
    assert out["history"]["lr"][0] == pytest.approx(LR * 10 * 0.5 ** 0.9)
