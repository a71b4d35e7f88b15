"""``blvnb runs rehearse``: every strategy of the paper plan builds, trains 2 iterations and evaluates on
the CPU (blvnb.experiments.rehearse).

CI time: the paper runs train on 512×1024 crops of 1024×2048 images (UDA: 512² of 720×1280 / 512×1024),
minutes per run on this project's CPU; the test rehearses them with every pixel size × 1/8 (the
``scale`` of :func:`rehearse.rehearse`, which the command does not have: its default and only size
is the real one). Everything else is the paper plan's run.
"""

from __future__ import annotations

import json

import pytest

from blvnb import cli
from blvnb.errors import BlvnbError
from blvnb.experiments import execute, rehearse

SCALE = 1 / 8
#: the paper variants' training throughput (images/s, one GPU, fp32; execute.GPU_IMAGES_PER_S_FP32): the
#: cheapest model of each strategy is the one with the highest rate
RATE = execute.GPU_IMAGES_PER_S_FP32


def _cheapest(plan, strategy: str, want=lambda r: True):
    runs = [r for r in rehearse.select(plan) if r.cfg.strategy == strategy and want(r)]
    assert runs, f"the paper plan has no {strategy} run"
    return max(runs, key=lambda r: RATE.get(r.cfg.model.split("@")[0], 0.0))


@pytest.fixture(scope="module")
def paper_plan():
    return execute.plan_for("paper", None, None, "DATA_ROOT")


@pytest.fixture(scope="module")
def rehearsed(paper_plan, tmp_path_factory):
    round1 = lambda r: dict(r.cfg.strategy_options).get("round") == 1 and not \
        dict(r.cfg.strategy_options).get("extra_unlabeled")
    picked = [_cheapest(paper_plan, "supervised"), _cheapest(paper_plan, "mean-teacher"),
              _cheapest(paper_plan, "dars-rounds", round1), _cheapest(paper_plan, "uda")]
    tables = sorted({t for r in picked for t in r.tables + r.needed_by})
    work = tmp_path_factory.mktemp("rehearse")
    # the plan of these tables only: keys do not depend on which tables are planned
    results = rehearse.rehearse("paper", tables, keys=[r.key for r in picked], work=work, scale=SCALE, echo=print)
    return picked, results, work


def test_one_run_of_each_strategy_trains_and_evaluates(rehearsed):
    picked, results, work = rehearsed
    by_key = {r.key: r for r in results}
    assert {p.key for p in picked} <= set(by_key) and len(by_key) == len(results)  # each once, in plan order
    assert all(r.ok for r in results), rehearse.summary(results)
    expected_batch = {"supervised": {"labeled": 2}, "mean-teacher": {"labeled": 2, "unlabeled": 2},
                      "dars-rounds": {"labeled": 1, "pseudo": 1}, "uda": {"source": 2, "target": 2}}
    for p in picked:
        r = by_key[p.key]
        rc = r.recipe
        assert rc["iters"] == 2 and rc["batch"] == expected_batch[p.cfg.strategy], (p.cfg.strategy, rc)
        assert "trained_inside" not in rc, f"{p.cfg.strategy}: a dependency was trained inside the run"
        # the run's own evaluation: its mode and window (scaled as everything), on the one val image
        assert rc["eval"]["images"] == rehearse.N_VAL and rc["eval"]["mode"] == p.cfg.eval_mode
        window = rehearse._scale_hw(p.cfg.eval_crop, SCALE) if p.cfg.eval_crop else None
        assert rc["eval"]["window"] == (list(window) if window else None)
        assert rc["optimizer"]["groups"] and r.peak_rss_mib > 0 and r.seconds > 0
        assert r.cfg.pretrained is None and r.cfg.data_root == str(work / "data")
        # every other setting is the plan's
        changed = set(rehearse.CHANGED) | {"data_root", "threads", "crop", "base_size", "eval_crop", "eval_size",
                                         "eval_stride", "strategy_options"}
        a, b = r.cfg.key_dict(), p.cfg.key_dict()
        assert {k for k in a if a[k] != b.get(k)} <= changed
    uda = by_key[picked[3].key].recipe
    assert uda["train_images"]["source"] == [64, 64]  # the paper's 512² crop, × 1/8
    dars = picked[2]
    teacher = [r for r in results if r.key in dars.deps]
    assert teacher and teacher[0].ok and results.index(teacher[0]) < results.index(by_key[dars.key])
    # the data in the real layouts, at the real sizes × 1/8
    assert (work / "data" / "cityscapes" / "leftImg8bit" / "val").is_dir()
    sizes = rehearse.data_sizes("paper")
    assert sizes["cityscapes"] == (1024, 2048) and sizes["gta5"] == (1052, 1914) and sizes["synthia"] == (760, 1280)
    assert json.loads((work / "data" / "cityscapes" / "toycity.json").read_text())["size"] == [128, 256]


def test_a_failing_run_is_reported_and_the_rest_go_on(paper_plan, tmp_path):
    sup, uda = _cheapest(paper_plan, "supervised"), _cheapest(paper_plan, "uda")
    work = tmp_path / "w"
    H, W = rehearse.data_sizes("paper", SCALE)[uda.cfg.dataset]
    broken = work / "data" / "trees" / f"{rehearse.REAL_SIZES[uda.cfg.dataset][1]}-{H}x{W}"
    broken.mkdir(parents=True)
    (broken / "toycity.json").write_text("{}")  # a tree that holds no image: the UDA source fails to load
    results = rehearse.rehearse("paper", sorted(set(uda.tables + uda.needed_by) | set(sup.tables + sup.needed_by)), keys=[uda.key, sup.key],
                                work=work, scale=SCALE, echo=None)
    ok = {r.key: r for r in results}
    assert not ok[uda.key].ok and ok[sup.key].ok, rehearse.summary(results)
    assert ok[uda.key].error.startswith("DatasetError: GTA5") and "\n" not in ok[uda.key].error
    assert "1 failed" in rehearse.summary(results) and uda.key[:12] in rehearse.summary(results)


@pytest.mark.parametrize("argv, needle", [
    (["--profile", "quick"], "'quick'"),
    (["--profile", "paper", "--limit", "0"], "--limit"),
    (["--profile", "paper", "--only", "no-such-table"], "no-such-table"),
])
def test_bad_input_is_a_clear_error(argv, needle, capsys, tmp_path):
    with pytest.raises(BlvnbError, match=needle.replace("-", r"\-")):
        rehearse.check_request(*_parsed(argv))
    assert cli.main(["runs", "rehearse", "--work", str(tmp_path / "w"), *argv]) == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "w").exists()  # nothing written


def _parsed(argv):
    a = cli.build_parser().parse_args(["runs", "rehearse", *argv])
    return a.profile, a.only, a.limit
