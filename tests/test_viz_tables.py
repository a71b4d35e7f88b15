"""The chapters' tables (blvnb.viz.tables) on hand-made records: right cells, pairing by seed, bad inputs."""

import math
import random

import numpy as np
import pandas as pd
import pytest

from blvnb import paper
from blvnb.classes import CLASSES, NUM_CLASSES
from blvnb.errors import BlvnbError
from blvnb.viz import tables as T


def rec(seed, miou, tail=0.3, *, profile="quick", loss="ce", iou=None, **extra):
    iou = list(iou) if iou is not None else [miou] * NUM_CLASSES
    return {"profile": profile, "seed": seed, "key": f"k{seed}{loss}",
            "config": {"seed": seed, "loss": loss, "profile": profile, "strategy": "supervised",
                       "loss_options": {"sigma": 6.0} if loss == "blv" else {}},
            "metrics": {"mIoU": miou, "mIoU_tail_blv": tail, "mIoU_head_blv": miou, "mIoU_tail_dars": tail,
                        "iou": iou, "per_class_iou": dict(zip(CLASSES, iou))},
            "train_seconds": 10.0 + seed, **extra}


def entry(row, arm, seed, **kw):
    return {"row": row, "arm": arm, "seed": seed, "record": rec(seed, **kw)}


ROW = "ResNet50 PSPHead"
BASE = {0: 0.50, 1: 0.52, 2: 0.54}  # mean 52.00, sd 2.00
BLV = {0: 0.53, 1: 0.53, 2: 0.56}   # mean 54.00, sd 1.73


def t1_entries():
    out = [entry(ROW, "baseline", s, miou=v, tail=0.30 + 0.01 * s) for s, v in BASE.items()]
    out += [entry(ROW, "blv", s, miou=v, tail=0.40, loss="blv") for s, v in BLV.items()]
    return out


LABEL = "ours (quick, 3 seeds)"


def test_side_by_side_puts_mean_sd_in_the_right_cell():
    t = T.side_by_side(t1_entries(), paper.table("blv-t1"))
    f = t.frame
    assert t.label == LABEL
    assert f.loc["ResNet50 + PSPHead", ("mIoU", LABEL)] == "52.00 ± 2.00"
    assert f.loc["ResNet50 + PSPHead + BLV", ("mIoU", LABEL)] == "54.00 ± 1.73"
    assert f.loc["ResNet50 + PSPHead", ("mIoU (tail)", LABEL)] == "31.00 ± 1.00"
    assert f.loc["ResNet50 + PSPHead + BLV", ("mIoU (tail)", LABEL)] == "40.00 ± 0.00"
    # the paper's number beside ours, as printed
    assert f.loc["ResNet50 + PSPHead", ("mIoU", "paper")] == "77.98"
    assert f.loc["Swin-T + K-NeT", ("mIoU (tail)", "paper")] == "71.70"
    n = t.numbers
    assert n.loc["ResNet50 + PSPHead + BLV", ("mIoU", "mean")] == pytest.approx(54.0)
    assert n.loc["ResNet50 + PSPHead + BLV", ("mIoU", "sd")] == pytest.approx(np.std([53, 53, 56], ddof=1))
    assert n.loc["ResNet50 + PSPHead + BLV", ("mIoU", "n")] == 3
    assert n.loc["ResNet50 + PSPHead", ("mIoU", "paper")] == pytest.approx(77.98)


def test_rows_not_run_are_dashes_with_a_footnote():
    t = T.side_by_side(t1_entries(), paper.table("blv-t1"))
    for r in ("HRNet-18 + OCRHead", "HRNet-18 + OCRHead + BLV", "Vit-B16 + UperHead + BLV"):
        assert t.frame.loc[r, ("mIoU", LABEL)] == T.DASH
        assert math.isnan(t.numbers.loc[r, ("mIoU", "mean")])
    assert any(n.startswith(T.DASH) for n in t.notes)
    text = str(t)
    assert "BLV Table 1" in text and T.DASH in text and "quick" in text
    html = t._repr_html_()
    assert "<table" in html and LABEL in html and "not run" not in html.split("<table")[0]
    assert html == T.side_by_side(t1_entries(), paper.table("blv-t1"))._repr_html_()  # stable in a notebook


def test_shuffled_records_give_the_same_tables():
    es = t1_entries()
    ref = T.side_by_side(es, paper.table("blv-t1")).frame
    ref_seed = T.seed_table(es)
    for k in range(3):
        sh = es[:]
        random.Random(k).shuffle(sh)
        pd.testing.assert_frame_equal(T.side_by_side(sh, paper.table("blv-t1")).frame, ref)
        pd.testing.assert_frame_equal(T.seed_table(sh), ref_seed)


def test_seed_table_pairs_by_seed_not_by_position():
    base = [rec(s, BASE[s]) for s in (2, 0, 1)]
    blv = [rec(s, BLV[s], loss="blv") for s in (0, 1, 2)]
    st = T.seed_table({"baseline": base, "blv": blv})
    d = st["blv − baseline"]
    assert d["seed 0"] == pytest.approx(3.0) and d["seed 1"] == pytest.approx(1.0)
    assert d["seed 2"] == pytest.approx(2.0) and d["mean"] == pytest.approx(2.0)
    assert d["sd"] == pytest.approx(1.0)
    # a seed the baseline lacks is not paired with another seed
    st = T.seed_table({"baseline": base[:2], "blv": blv})  # baseline has seeds 2, 0
    assert math.isnan(st.loc["seed 1", "blv − baseline"])
    assert st.loc["seed 2", "blv − baseline"] == pytest.approx(2.0)


def test_grouped_forms_and_fewer_seeds_marked():
    ours = {"GTA5 → Cityscapes": {"baseline": {s: rec(s, 0.40) for s in range(3)},
                                  "blv": [rec(s, 0.45, loss="blv") for s in range(1)]}}
    t = T.side_by_side(ours, paper.table("blv-t8"))
    f = t.frame
    assert f.loc["GTA5 → Cityscapes", ("Baseline", LABEL)] == "40.0 ± 0.0"
    assert f.loc["GTA5 → Cityscapes", ("BLV", LABEL)] == "45.0 (n=1)"
    # a row we did not run is not filled from the one we ran
    assert f.loc["SYNTHIA → Cityscapes", ("Baseline", LABEL)] == T.DASH
    assert f.loc["GTA5 → Cityscapes", ("w/o variation", LABEL)] == T.DASH
    assert any("(n=k)" in n for n in t.notes)


def test_explicit_selectors_gain_column_and_seeds_filter():
    es = t1_entries()
    t = T.side_by_side(es, paper.table("dars-t4"), rows={"Baseline": (ROW, "baseline"), "DARS": (ROW, "blv")})
    f, n = t.frame, t.numbers
    assert f.loc["DARS", ("mIoU", LABEL)] == "54.00 ± 1.73"
    assert f.loc["DARS", ("road", LABEL)] == "54.0 ± 1.7"  # per-class IoU, the paper's precision
    assert n.loc["DARS", ("Gain", "mean")] == pytest.approx(2.0)  # paired: 3, 1, 2
    assert n.loc["DARS", ("Gain", "sd")] == pytest.approx(1.0)
    assert f.loc["ST", ("mIoU", LABEL)] == T.DASH
    assert any("⚑" in x for x in t.notes)  # the paper's flagged Tail mIoU column
    t2 = T.side_by_side(es, paper.table("dars-t4"), rows={"Baseline": (ROW, "baseline"), "DARS": (ROW, "blv")},
                        seeds=[0, 1])
    assert t2.label == "ours (quick, 2 seeds)"
    assert t2.numbers.loc["DARS", ("Gain", "mean")] == pytest.approx(2.0)
    assert t2.numbers.loc["DARS", ("mIoU", "n")] == 2


def test_columns_as_arms_and_metric_rows():
    es = [entry("fully", a, s, miou=0.5 + 0.01 * i, tail=0.2 + 0.01 * i) for i, a in enumerate(("baseline", "la", "blv"))
          for s in range(3)]
    cols = {"Fully: LA": ("fully", "la"), "Fully: BLV": ("fully", "blv")}
    t = T.side_by_side(es, paper.table("blv-t5"), columns=cols)
    assert t.frame.loc["mIoU", ("Fully: BLV", LABEL)] == "52.0 ± 0.0"  # the paper prints one decimal
    assert t.frame.loc["mIoU (tail)", ("Fully: LA", LABEL)] == "21.0 ± 0.0"
    assert t.frame.loc["mIoU", ("Semi: BLV", LABEL)] == T.DASH


def test_metric_map_hours_and_no_metric_columns():
    es = [entry("HRNet-18 OCRHead", a, s, miou=0.5) for a in ("baseline", "blv") for s in range(3)]
    t = T.side_by_side(es, paper.table("blv-t12"), rows={"HRNet-18 + OCRHead": {"row": "HRNet-18 OCRHead"}},
                       columns={"w/o BLV": "baseline", "w/ BLV": "blv"},
                       metric_map={"w/o BLV": lambda r: r["train_seconds"] / 3600,
                                   "w/ BLV": lambda r: r["train_seconds"] / 3600})
    assert t.numbers.loc["HRNet-18 + OCRHead", ("w/ BLV", "mean")] == pytest.approx(11 / 3600)
    # DARS Table 6: the settings columns (round, α, β) get no column of ours
    t6 = T.side_by_side([entry("x", "round 1", s, miou=0.5) for s in range(3)], paper.table("dars-t6"),
                        rows={"k=1, α=20%, β_min=0, β_max=0": ("x", "round 1")})
    assert ("Round", LABEL) not in t6.frame.columns and ("mIoU", LABEL) in t6.frame.columns
    assert t6.frame.loc["k=1, α=20%, β_min=0, β_max=0", ("mIoU", LABEL)] == "50.00 ± 0.00"


def test_bad_inputs_raise_blvnb_errors_naming_the_value():
    es = t1_entries()
    with pytest.raises(BlvnbError, match="no results"):
        T.side_by_side([], paper.table("blv-t1"))
    with pytest.raises(BlvnbError, match="no results"):
        T.seed_table({})
    mixed = es + [entry("other", "baseline", 0, miou=0.5, profile="gpu")]
    with pytest.raises(BlvnbError, match="'gpu'.*'quick'|'quick'.*'gpu'"):
        T.side_by_side(mixed, paper.table("blv-t1"))
    with pytest.raises(BlvnbError, match="'gpu'"):
        T.side_by_side(es, paper.table("blv-t1"), profile="gpu")
    with pytest.raises(BlvnbError, match="mIoU_nope"):
        T.side_by_side(es, paper.table("blv-t1"), metric_map={"mIoU": "mIoU_nope"})
    with pytest.raises(BlvnbError, match="mIoU_nope"):
        T.seed_table(es, "mIoU_nope")
    with pytest.raises(BlvnbError, match="No such row"):
        T.side_by_side(es, paper.table("blv-t1"), rows={"No such row": (ROW, "blv")})
    with pytest.raises(BlvnbError, match="'nope'"):
        T.side_by_side(es, paper.table("blv-t1"), rows={"ResNet50 + PSPHead": (ROW, "nope")})
    with pytest.raises(BlvnbError, match="seed 1 appears twice"):
        T.seed_table(es + [entry(ROW, "blv", 1, miou=0.1)])
    with pytest.raises(BlvnbError, match="not a run record"):
        T.seed_table([{"seed": 0}])
    with pytest.raises(BlvnbError, match="'nope'"):
        T.seed_table(es, baseline="nope")
    with pytest.raises(BlvnbError, match="seeds \\[7\\]"):
        T.seed_table(es, seeds=[7])


def test_metric_value_and_class_names():
    iou = [i / 100 for i in range(NUM_CLASSES)]
    iou[5] = None
    r = rec(0, 0.5, iou=iou)
    assert T.metric_value(r, "S.walk") == pytest.approx(1.0)
    assert T.metric_value(r, "iou:traffic light") == pytest.approx(6.0)
    assert T.metric_value(r, "mbike") == pytest.approx(17.0)
    assert math.isnan(T.metric_value(r, "pole"))
    assert T.metric_value(r, "train_seconds") == 10.0
    with pytest.raises(BlvnbError, match="'iou'"):
        T.metric_value(r, "iou")
    with pytest.raises(BlvnbError, match="'unicorn'"):
        T.metric_value(r, "iou:unicorn")
    # every class column of the papers' Cityscapes tables names a distinct class
    for key in ("blv-t3", "blv-t10", "dars-t4", "dars-t14"):
        cols = [c for c in paper.table(key).columns if T.class_index(c) is not None]
        assert sorted(T.class_index(c) for c in cols) == list(range(NUM_CLASSES)), key
    assert sorted(T.class_index(c) for c in paper.table("blv-t4").columns if T.class_index(c) is not None) == \
        [i for i in range(NUM_CLASSES) if CLASSES[i] not in ("terrain", "truck", "train")]
    assert T.class_index("mIoU") is None and T.class_index("Backbone") is None


def test_group_by_fields():
    es = t1_entries()
    g = T.group(es)
    assert list(g) == ["baseline", "blv"] and [r["seed"] for r in g["blv"]] == [0, 1, 2]
    g = T.group([e["record"] for e in es], by="loss")
    assert set(g) == {"ce", "blv"}
    g = T.group([e for e in es if e["arm"] == "blv"], by=("arm", "sigma"))  # sigma: from loss_options
    assert list(g) == [("blv", 6.0)] and len(g[("blv", 6.0)]) == 3
    with pytest.raises(BlvnbError, match="'nope'"):
        T.group(es, by=("nope",))


def test_per_class_table_with_the_papers_row():
    base = [rec(s, 0.5, iou=[0.5] * NUM_CLASSES) for s in range(3)]
    blv = [rec(s, 0.5, iou=[0.5 + 0.01 * (i % 2) + 0.01 * s for i in range(NUM_CLASSES)], loss="blv") for s in range(3)]
    row = paper.table("blv-t3").loc["DAFormer† (w/ BLV)"]
    t = T.per_class_table({"baseline": base, "blv": blv}, paper_rows={"DAFormer† (w/ BLV)": row},
                          shares=np.full(NUM_CLASSES, 1 / NUM_CLASSES))
    assert t.loc["road", "blv − baseline"] == pytest.approx(1.0)  # seeds 0, 1, 2: +0, +1, +2
    assert t.loc["sidewalk", "blv − baseline"] == pytest.approx(2.0)
    assert t.loc["road", "paper: DAFormer† (w/ BLV)"] == pytest.approx(row["Road"])
    assert t.loc["motorcycle", "paper: DAFormer† (w/ BLV)"] == pytest.approx(row["M.bike"])
    assert t.loc["wall", "BLV tail"] == "yes" and t.loc["road", "BLV tail"] == ""
    assert t.loc["mIoU (19)", "paper: DAFormer† (w/ BLV)"] == pytest.approx(np.mean([row[c] for c in row.index
                                                                                     if c != "mIoU"]), abs=0.01)
    with pytest.raises(BlvnbError, match="shares"):
        T.per_class_table({"baseline": base}, shares=[0.5, 0.5])


def test_dagger_rows_are_not_confused():
    """BLV Table 3: our DAFormer † (CNN) runs must not fill the paper's DAFormer ‡ (Transformer) rows."""
    es = [entry(r, a, s, miou=v) for r, a, v in (("source only †", "source only", 0.2), ("DAFormer †", "baseline", 0.4),
                                                  ("DAFormer †", "blv", 0.45)) for s in range(3)]
    t = T.side_by_side(es, paper.table("blv-t3"))
    f = t.frame
    assert f.loc["source only†", ("mIoU", LABEL)] == "20.0 ± 0.0"
    assert f.loc["DAFormer†", ("mIoU", LABEL)] == "40.0 ± 0.0"
    assert f.loc["DAFormer† (w/ BLV)", ("mIoU", LABEL)] == "45.0 ± 0.0"
    assert f.loc["DAFormer† (w/ BLV)", ("Road", LABEL)] == "45.0 ± 0.0"
    for r in ("DAFormer‡", "DAFormer‡ (w/ BLV)", "HRDA‡", "HRDA‡ (w/ BLV)"):
        assert f.loc[r, ("mIoU", LABEL)] == T.DASH


def test_gain_against_the_tables_baseline_row():
    """DARS Table 4: Gain of each method row over the Baseline row, paired by seed."""
    es = [entry("Baseline", "baseline", s, miou=v) for s, v in BASE.items()]
    es += [entry("DARS", "dars", s, miou=v) for s, v in BLV.items()]
    t = T.side_by_side(es, paper.table("dars-t4"))
    assert t.numbers.loc["DARS", ("Gain", "mean")] == pytest.approx(2.0)
    assert t.numbers.loc["DARS", ("Gain", "sd")] == pytest.approx(1.0)
    assert t.frame.loc["CBST", ("Gain", LABEL)] == T.DASH
    # BLV Table 5's columns, Lovász included, found by name
    es = [entry("fully", a, s, miou=0.5) for a in ("baseline", "lovasz") for s in range(3)]
    assert T.side_by_side(es, paper.table("blv-t5")).frame.loc["mIoU", ("Fully: Lovász", LABEL)] == "50.0 ± 0.0"


def test_paired_values_for_verdicts():
    base = [rec(s, BASE[s]) for s in (2, 0, 1)]
    blv = [rec(s, BLV[s], loss="blv") for s in (1, 2, 0, 3)[:3]]
    seeds, a, b = T.paired(blv, base)
    assert seeds == [0, 1, 2] and a == pytest.approx([53, 53, 56]) and b == pytest.approx([50, 52, 54])
    with pytest.raises(BlvnbError, match="none in common"):
        T.paired(blv[:1], [rec(7, 0.5)])
    with pytest.raises(BlvnbError, match="gpu"):
        T.paired(blv, [rec(s, 0.5, profile="gpu") for s in range(3)])
    with pytest.raises(BlvnbError, match="one arm"):
        T.paired(t1_entries(), base)


def test_accepts_what_tables_run_returns():
    class TableRunsLike:  # blvnb.experiments.table_runs.TableRuns: .records = [{row, arm, seed, key, record}]
        def __init__(self, records):
            self.records = records

    es = t1_entries()
    t = T.side_by_side(TableRunsLike(es), paper.table("blv-t1"))
    pd.testing.assert_frame_equal(t.frame, T.side_by_side(es, paper.table("blv-t1")).frame)
    assert list(T.seed_table(TableRunsLike(es)).columns) == ["baseline", "blv", "blv − baseline"]
    with pytest.raises(BlvnbError, match="no results"):
        T.side_by_side(TableRunsLike([]), paper.table("blv-t1"))


def test_synthia_tables_use_16_and_13_class_means():
    from blvnb.classes import DARS_TAIL, SYNTHIA_13, SYNTHIA_16

    iou = [0.5] * NUM_CLASSES
    for c in range(NUM_CLASSES):
        if c not in SYNTHIA_16:
            iou[c] = 0.0  # terrain, truck, train: never learnt from SYNTHIA
        elif c not in SYNTHIA_13:
            iou[c] = 0.2  # wall, fence, pole
    es = [entry("DAFormer †", a, s, miou=float(np.mean(iou)), iou=iou) for a in ("baseline", "blv") for s in range(3)]
    for e in es:  # the record stores the 19-class summary only
        e["record"]["metrics"].pop("mIoU_tail_dars")
    t = T.side_by_side(es, paper.table("blv-t4"))
    assert t.numbers.loc["DAFormer†", ("mIoU", "mean")] == pytest.approx(100 * (13 * 0.5 + 3 * 0.2) / 16)
    assert t.numbers.loc["DAFormer†", ("mIoU*", "mean")] == pytest.approx(50.0)
    assert T.metric_value(es[0]["record"], "mIoU_tail_dars") == pytest.approx(
        100 * np.mean([iou[c] for c in DARS_TAIL]))


def test_runs_table_names_columns_and_keeps_the_raw_frame_behind_a_toggle():
    from blvnb.experiments.table_runs import TableRuns

    recs = [{"row": "R50", "arm": a, "seed": s, "key": f"{a}{s}" * 8,
             "record": {"metrics": {"mIoU": 0.5 + s / 100, "mIoU_head_blv": 0.6, "mIoU_tail_blv": 0.3},
                        "train_seconds": 12.4}} for a in ("CE", "BLV") for s in (0, 1)]
    rt = T.runs_table(TableRuns("blv-t1", "quick", "", recs))
    assert list(rt.frame.columns) == ["row", "arm", "seed", "mIoU %", "head mIoU % (BLV's 10)",
                                      "tail mIoU % (BLV's 9)", "training s"]  # the DARS tail has no value: dropped
    assert rt.frame["mIoU %"].tolist() == pytest.approx([50, 51, 50, 51])
    page = rt._repr_html_()
    visible, hidden = page.split("<details>")
    assert "CE0CE0" not in visible and "mIoU_head_blv" not in visible  # keys and raw names only behind the toggle
    assert "CE0CE0" in hidden and "mIoU_head_blv" in hidden and "blv-t1" in hidden
    assert "50.0" in str(rt)


def test_runs_table_bad_inputs():
    with pytest.raises(BlvnbError, match="list"):
        T.runs_table([1, 2])
    with pytest.raises(BlvnbError, match="seed"):
        T.runs_table(pd.DataFrame({"row": ["a"], "arm": ["b"]}))
