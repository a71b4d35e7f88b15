"""The DARS chapters' helpers (blvnb.viz.dars_results) on hand-made records: pairing by seed, verdicts
decided or "not run", selectors for the paper's rows, label spaces other than Cityscapes'."""

import math

import numpy as np
import pandas as pd
import pytest

from blvnb.classes import DARS_TAIL, NUM_CLASSES, SCANNET_CLASSES
from blvnb.viz import dars_results as dr
from blvnb.viz.tables import ResultsError


def rec(miou, seed, kl=None, iou=None, profile="smoke"):
    iou = iou if iou is not None else [miou] * NUM_CLASSES
    return {"metrics": {"mIoU": miou, "iou": iou}, "seed": seed, "profile": profile,
            "summary": {"kl_labeled_to_pseudo": kl}, "history": {"loss_pseudo": [3.0, 2.0, 1.0, 1.0]}}


class FakeRuns:
    """What tables.run returns, as far as the helpers read it."""

    note = "test runs"

    def __init__(self, rows):  # {row: {arm: {seed: record}}}
        self.grouped = rows
        self.records = [{"row": r, "arm": a, "seed": s, "key": f"{r}-{a}-{s}", "record": x}
                        for r, arms in rows.items() for a, by in arms.items() for s, x in by.items()]


def table4(seeds=(0, 1, 2)):
    return FakeRuns({
        "Baseline": {"baseline": {s: rec(0.50 + 0.01 * s, s) for s in seeds}},
        "ST": {"st": {s: rec(0.52 + 0.01 * s, s, kl=0.05) for s in seeds}},
        "DARS": {"dars": {s: rec(0.55 + 0.01 * s, s, kl=0.0004) for s in seeds}},
        "ST + TS": {"st+ts": {0: rec(0.53, 0)}},  # a sweep point: the first seed only
    })


def test_values_pair_by_seed_over_the_common_seeds():
    runs = table4()
    seeds, vals = dr.values(runs, {"dars": "DARS", "st": ("ST", "st")}, "mIoU")
    assert seeds == [0, 1, 2]
    assert np.allclose(vals["dars"], [55, 56, 57]) and np.allclose(vals["st"], [52, 53, 54])
    seeds, vals = dr.values(runs, {"dars": "DARS", "st-ts": "ST + TS"}, "mIoU")
    assert seeds == [0]  # only the seed both arms ran
    assert dr.values(runs, {"dars": "DARS", "cbst": "CBST"}, "mIoU") is None  # an arm that did not run


def test_values_read_the_strategy_summary():
    seeds, vals = dr.values(table4(), {"dars": "DARS"}, dr.summary_value("kl_labeled_to_pseudo"))
    assert vals["dars"] == [0.0004] * 3


def test_decide_reproduces_fails_and_says_not_run(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_VERDICTS", str(tmp_path))
    runs = table4()
    v = dr.decide("dars-t5-kl", runs, {"dars": "DARS"}, dr.summary_value("kl_labeled_to_pseudo"), profile="smoke")
    assert v.outcome == "reproduced" and v.seeds == (0, 1, 2)
    assert (tmp_path / "smoke" / "dars-t5-kl.json").is_file()  # saved for the status page
    v = dr.decide("dars-t5-st", runs, {"st": "DARS", "dars": "ST"}, dr.summary_value("kl_labeled_to_pseudo"),
                  profile="smoke")  # arms swapped on purpose: the claim must fail
    assert v.outcome == "not reproduced"
    v = dr.decide("dars-t4-tail", runs, {"dars": "DARS", "cbst": "CBST"}, "mIoU_tail_dars", profile="smoke")
    assert v.outcome == "not run" and "CBST" in v.note


def test_ran_without_runs_is_not_ok_and_side_by_side_shows_the_paper_alone():
    from blvnb import paper

    ran = dr.Ran("dars-t3", "smoke", None, [], "unknown dataset 'voc'")
    assert not ran.ok and ran.grouped == {}
    assert "cannot run" in ran._repr_markdown_()
    styler = dr.side_by_side(ran, paper.table("dars", 3))
    assert "no runs of ours" in styler.caption
    assert dr.decide("dars-t3", ran, {"dars": "DARS", "baseline": "baseline"}, profile="smoke",
                     why_not=ran.error).outcome == "not run"


def test_row_map_dashes_rows_we_did_not_run():
    m = dr.row_map(table4(), {"a": "DARS", "b": "DARS 1/4"})
    assert m == {"a": {"row": "DARS"}, "b": None}


def test_arm_records_needs_the_arm_when_a_row_has_several():
    runs = FakeRuns({"DARS 1/8": {"baseline": {0: rec(0.5, 0)}, "dars": {0: rec(0.6, 0)}}})
    assert set(dr.arm_records(runs, "DARS 1/8", "dars")) == {0}
    with pytest.raises(ResultsError, match="name one"):
        dr.arm_records(runs, "DARS 1/8")


def test_head_share_counts_the_six_head_classes():
    shares = np.zeros(NUM_CLASSES)
    shares[0] = 3.0  # road: head
    shares[DARS_TAIL[0]] = 1.0
    assert dr.head_share(shares) == pytest.approx(75.0)


def test_first_losses_is_the_start_of_the_round():
    assert dr.first_losses({"history": {"loss_pseudo": [4.0] + [1.0] * 19}}) == pytest.approx(2.5)  # first 2 of 20
    assert math.isnan(dr.first_losses({"history": {}}))


def test_size_inputs_keep_bins_with_objects_in_every_seed():
    def curve(acc, objects):
        return pd.DataFrame({"size_from": [0, 10, 20, 30], "size_to": [10, 20, 30, 40], "objects": objects,
                             "accuracy": acc})
    got, x = dr.size_inputs({0: curve([10, 20, 30, 40], [5, 5, 0, 5]), 1: curve([11, 21, 31, 41], [5, 5, 5, 5])})
    seeds, vals = got
    assert seeds == [0, 1] and len(vals) == 3  # the third bin is empty in seed 0
    assert list(x.values()) == [5.0, 15.0, 35.0]
    assert dr.size_inputs({0: curve([1, 2, 3, 4], [0, 0, 5, 5])}) == (None, {})  # fewer than three bins


def test_label_space_metrics_never_read_cityscapes_records():
    from blvnb import paper

    p12 = paper.table("dars", 12)
    mm = dr.label_space_metrics(p12, SCANNET_CLASSES)
    assert list(mm) == list(p12.columns)[:20]
    scannet = {"metrics": {"iou": [0.01 * j for j in range(20)]}}
    assert mm["floor"](scannet) == pytest.approx(1.0)
    assert math.isnan(mm["wall"]({"metrics": {"iou": [0.5] * NUM_CLASSES}}))  # a 19-class record


def test_explorer_keeps_the_arms_run_at_every_seed():
    ex = dr.explorer(table4(), {"baseline": "Baseline", "DARS": "DARS", "ST + TS": "ST + TS"}, title="t")
    names = [t.name for t in ex.plotly.data]
    assert names == ["baseline", "DARS"]  # the one-seed sweep point is left out, not mispaired
    assert dr.explorer(table4(), {"CBST": "CBST"}, title="t") is None
    with pytest.raises(ResultsError, match="label space"):
        dr.explorer(table4(), {"DARS": "DARS"}, title="t", class_names=SCANNET_CLASSES)


def test_paper_values_after_a_printed_gain():
    # DARS Table 6 prints "(+0.26) 68.27±0.12": the value is 68.27, not the gain before it
    from blvnb.viz.tables import _first_number

    assert _first_number("(+0.26) 68.27±0.12") == "68.27"
    assert _first_number("(-0.47) 67.54±0.26") == "67.54"
    assert _first_number("68.01±0.12") == "68.01" and _first_number("−0.5") == "-0.5"


def test_ran_is_short_in_plain_text():
    ran = dr.Ran("dars-t4", "smoke", table4(), [("ST + IT", "st+it", "why")])
    assert repr(ran) == "Ran('dars-t4', 'smoke': 10 records, 1 rows left out)"
