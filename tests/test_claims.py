"""Claims and verdicts: every comparison kind on hand-made per-seed numbers, the interval by hand."""

import json
import math
import re
from dataclasses import replace

import pytest

from blvnb import claims
from blvnb.claims import Claim, ClaimError, PairedTest, t_interval
from blvnb.errors import ConfigError

T975_2 = 4.302652729911275  # t_{0.975, 2}: the 95 % two-sided quantile with 3 seeds


def make(comparison, arms, **kw):
    base = dict(id="x", paper="blv", table="T1", statement="s", source="src", metric="mIoU")
    return Claim(**{**base, **kw, "comparison": comparison, "arms": tuple(arms)})


def test_t_interval_by_hand():
    mean, (lo, hi) = t_interval([1.0, 2.0, 3.0])
    half = T975_2 * 1.0 / math.sqrt(3)  # sd of (1, 2, 3) is 1
    assert mean == 2.0 and lo == pytest.approx(2 - half) and hi == pytest.approx(2 + half)
    assert lo == pytest.approx(-0.484138, abs=1e-6)
    mean, (lo, hi) = t_interval([5.0])
    assert mean == 5.0 and (lo, hi) == (-math.inf, math.inf)
    mean, (lo, hi) = t_interval([2.0, 2.0, 2.0])  # no spread: a point
    assert lo == hi == 2.0


def test_greater_reaches_every_outcome():
    c = make("greater", ["blv", "ce"])
    ce = [50.0, 51.0, 52.0]
    # differences 2, 2.5, 3: interval [1.258, 3.742] > 0
    v = c.evaluate({"BLV": [52.0, 53.5, 55.0], "CE": ce}, profile="quick")
    assert v.outcome == "reproduced" and v.tests[0].differences == (2.0, 2.5, 3.0)
    assert v.tests[0].interval[0] == pytest.approx(2.5 - T975_2 * 0.5 / math.sqrt(3))
    # differences 1, 2, 3: interval [−0.48, 4.48] straddles 0
    assert c.evaluate({"blv": [51.0, 53.0, 55.0], "ce": ce}, profile="quick").outcome == "inconclusive"
    # differences −3, −2.5, −2: wholly below 0
    assert c.evaluate({"blv": [47.0, 48.5, 50.0], "ce": ce}, profile="quick").outcome == "not reproduced"
    # the margin moves the line: differences 2, 2.5, 3 are not > 4
    assert replace(c, margin=4.0).evaluate({"blv": [52.0, 53.5, 55.0], "ce": ce}, profile="q").outcome == "not reproduced"


def test_too_few_seeds_is_inconclusive_and_says_so():
    c = make("greater", ["blv", "ce"])
    v = c.evaluate({"blv": [60.0], "ce": [50.0]}, profile="quick", seeds=[7])
    assert v.outcome == "inconclusive" and "at least 3" in v.note and v.seeds == (7,)
    # in a subset profile one seed is a sweep point's: the note points to why it ran once
    assert "extra points of a sweep run at 1 seed only" in v.note
    for profile in ("gpu", "somewhere"):  # elsewhere one seed is not the sweep rule: no such pointer
        assert "sweep" not in c.evaluate({"blv": [60.0], "ce": [50.0]}, profile=profile).note
    v = replace(c, min_seeds=2).evaluate({"blv": [60.0, 61.0], "ce": [50.0, 50.5]}, profile="quick")
    assert v.outcome == "reproduced"  # differences 10, 10.5: [3.4, 17.1]


def test_not_worse_within_and_spread():
    c = make("not-worse", ["gaussian", "uniform", "beta"], margin=0.5)
    g = [59.0, 59.2, 59.1]
    assert c.evaluate({"gaussian": g, "uniform": [58.0, 58.1, 58.2], "beta": [59.0, 59.2, 59.1]},
                      profile="q").outcome == "reproduced"  # diffs 0 exactly > −0.5
    assert c.evaluate({"gaussian": g, "uniform": [60.0, 60.2, 60.1], "beta": g}, profile="q").outcome == "not reproduced"
    w = make("within", ["a", "b"], margin=1.0)
    assert w.evaluate({"a": [1.0, 1.1, 1.2], "b": [1.0, 1.0, 1.0]}, profile="q").outcome == "reproduced"
    assert w.evaluate({"a": [5.0, 5.1, 5.2], "b": [1.0, 1.0, 1.0]}, profile="q").outcome == "not reproduced"
    s = make("spread", ["s3", "s4", "s5"], margin=1.0)
    # per-seed ranges 0.3, 0.4, 0.5 → interval [0.15, 0.65] < 1
    vals = {"s3": [58.0, 58.0, 58.0], "s4": [58.3, 58.4, 58.5], "s5": [58.1, 58.2, 58.3]}
    v = s.evaluate(vals, profile="q")
    assert v.outcome == "reproduced" and v.tests[0].differences == pytest.approx((0.3, 0.4, 0.5))
    vals["s5"] = [60.0, 61.0, 60.5]
    assert s.evaluate(vals, profile="q").outcome == "not reproduced"


def test_ordering_best_all_greater():
    o = make("ordering", ["dars", "da-ts", "st"])
    vals = {"DARS": [68.0, 68.1, 68.2], "DA + TS": [67.0, 67.3, 67.2], "ST": [65.0, 65.5, 65.7]}
    v = o.evaluate(vals, profile="q")
    assert v.outcome == "reproduced" and len(v.tests) == 2 and v.tests[0].label == "dars − da-ts"
    vals["ST"] = [67.5, 67.6, 67.7]  # ST above DA+TS in every seed
    assert o.evaluate(vals, profile="q").outcome == "not reproduced"
    vals["ST"] = [66.0, 67.9, 65.0]  # noisy: one step undecided, none refuted
    assert o.evaluate(vals, profile="q").outcome == "inconclusive"
    b = make("best", ["blv", "la", "lovasz"])
    assert b.evaluate({"blv": [3.0, 3.1, 3.2], "la": [1.0, 1.0, 1.1], "lovasz": [2.0, 2.1, 2.0]},
                      profile="q").outcome == "reproduced"
    assert b.evaluate({"blv": [3.0, 3.1, 3.2], "la": [1.0, 1.0, 1.1], "lovasz": [4.0, 4.1, 4.0]},
                      profile="q").outcome == "not reproduced"
    a = make("all-greater", ["none", "gauss", "unif"])
    assert a.evaluate({"none": [1.0, 1.0, 1.0], "gauss": [2.0, 2.1, 2.2], "unif": [1.5, 1.6, 1.7]},
                      profile="q").outcome == "reproduced"
    assert a.evaluate({"none": [1.0, 1.0, 1.0], "gauss": [2.0, 2.1, 2.2], "unif": [0.5, 0.6, 0.7]},
                      profile="q").outcome == "not reproduced"


def test_gain_greater_and_saturating():
    g = make("gain-greater", ["dars-it", "dars", "st-it", "st"])
    vals = {"dars-it": [70.0, 70.2, 70.1], "dars": [68.0, 68.0, 68.0], "st-it": [66.5, 66.6, 66.4], "st": [66.0, 66.0, 66.0]}
    v = g.evaluate(vals, profile="q")  # (2, 2.2, 2.1) − (0.5, 0.6, 0.4) = (1.5, 1.6, 1.7)
    assert v.outcome == "reproduced" and v.tests[0].differences == pytest.approx((1.5, 1.6, 1.7))
    vals["st-it"] = [69.0, 69.0, 69.0]
    assert g.evaluate(vals, profile="q").outcome == "not reproduced"
    s = make("saturating", ["n0", "n1", "n2", "n3"])
    sat = {"n0": [76.6, 76.5, 76.7], "n1": [78.4, 78.3, 78.5], "n2": [78.6, 78.6, 78.7], "n3": [78.7, 78.7, 78.75]}
    assert s.evaluate(sat, profile="q").outcome == "reproduced"
    lin = {"n0": [1.0, 1.0, 1.0], "n1": [2.0, 2.0, 2.1], "n2": [3.0, 3.1, 3.0], "n3": [5.0, 5.1, 5.0]}  # accelerating
    assert s.evaluate(lin, profile="q").outcome == "not reproduced"


def test_gain_greater_against_each_other_pair():
    g = make("gain-greater", ["dars-it", "dars", "st-it", "st", "cbst-it", "cbst"])
    vals = {"dars-it": [70.0, 70.2, 70.1], "dars": [68.0, 68.0, 68.0], "st-it": [66.5, 66.6, 66.4], "st": [66.0, 66.0, 66.0],
            "cbst-it": [67.0, 67.1, 67.0], "cbst": [66.5, 66.5, 66.5]}
    v = g.evaluate(vals, profile="q")
    assert [t.label for t in v.tests] == ["(dars-it − dars) − (st-it − st)", "(dars-it − dars) − (cbst-it − cbst)"]
    assert v.outcome == "reproduced" and " and " in g.rule
    vals["cbst-it"] = [69.0, 69.1, 69.0]  # CBST gains 2.5 > DARS's 2.1: the second test fails
    assert g.evaluate(vals, profile="q").outcome == "not reproduced"
    with pytest.raises(ClaimError, match="pairs"):
        make("gain-greater", ["a", "b", "c"]).evaluate({"a": [1], "b": [1], "c": [1]}, profile="q")


def test_kind_check_is_labelled_and_has_no_paper_cells(tmp_path):
    c = claims.get("dars-alignment-synthetic")
    assert c.kind == "check" and not c.paper_cells
    v = claims.alignment_verdict({"DARS": [1e-5, 2e-5, 1e-5], "ST": [0.05, 0.04, 0.06]}, profile="quick")
    assert v.to_dict()["kind"] == "check" and "**Implementation check" in v._repr_markdown_()
    assert claims.get("blv-t1/r50-psp").kind == "reproduction"
    assert "**Verdict" in claims.get("blv-t1/r50-psp").not_run("quick")._repr_markdown_()
    bad = tmp_path / "claims.yaml"
    base = "claims:\n- {id: x, paper: dars, table: T5, statement: s, source: s, metric: m, comparison: greater, arms: [a, b]"
    bad.write_text(base + ", kind: checks}\n")
    with pytest.raises(ConfigError, match="kind"):
        claims.load(str(bad))
    bad.write_text(base + ", kind: check, paper_cells: {a: {row: DARS, column: D_KL}}}\n")
    with pytest.raises(ConfigError, match="paper cells"):
        claims.load(str(bad))


def test_constants_and_split():
    lt = make("less-than", ["dars"], constant=1e-3)
    assert lt.evaluate({"dars": [1e-5, 2e-5, 1.5e-5]}, profile="q").outcome == "reproduced"
    assert lt.evaluate({"dars": [0.01, 0.02, 0.015]}, profile="q").outcome == "not reproduced"
    assert lt.evaluate({"dars": [1e-5, 0.01, 0.002]}, profile="q").outcome == "inconclusive"
    gt = make("greater-than", ["road"], constant=0.5)
    assert gt.evaluate({"road": [0.8, 0.81, 0.83]}, profile="q").outcome == "reproduced"
    sp = make("split", ["dars", "st"], constant=1e-3)
    assert sp.evaluate({"dars": [1e-5, 2e-5, 1e-5], "st": [0.05, 0.04, 0.06]}, profile="q").outcome == "reproduced"
    assert sp.evaluate({"dars": [1e-5, 2e-5, 1e-5], "st": [1e-5, 1e-5, 2e-5]}, profile="q").outcome == "not reproduced"
    v = claims.alignment_verdict({"DARS": [1e-5, 2e-5, 1e-5], "ST": [0.05, 0.04, 0.06], "CBST": [1, 1, 1]},
                                 profile="quick", seeds=(0, 1, 2))
    assert v.outcome == "reproduced" and v.claim.id == "dars-alignment-synthetic"


def test_correlation_sign():
    c = make("correlation", ["st", "cbst", "sd", "td"], sign="negative")
    kl = {"st": 0.07, "cbst": 0.02, "sd": 0.15, "td": 0.0006}
    miou = {"st": [48.0, 48.5, 47.9], "cbst": [48.7, 48.9, 48.6], "sd": [47.0, 47.2, 46.8], "td": [51.0, 51.1, 50.9]}
    v = c.evaluate(miou, profile="q", x=kl)
    assert v.outcome == "reproduced" and v.tests[0].differences == (-1.0, -1.0, -1.0)
    assert replace(c, sign="positive").evaluate(miou, profile="q", x=kl).outcome == "not reproduced"
    with pytest.raises(ClaimError, match="x="):
        c.evaluate(miou, profile="q")


def test_wrong_inputs_raise_with_names():
    c = make("greater", ["blv", "ce"])
    with pytest.raises(ClaimError, match=r"\['ce'\]"):
        c.evaluate({"blv": [1, 2, 3]}, profile="q")
    with pytest.raises(ClaimError, match="paired by seed"):
        c.evaluate({"blv": [1, 2, 3], "ce": [1, 2]}, profile="q")
    with pytest.raises(ClaimError, match="seeds"):
        c.evaluate({"blv": [1, 2, 3], "ce": [1, 2, 3]}, profile="q", seeds=[0, 1])
    with pytest.raises(ClaimError, match="no claim"):
        claims.get("blv-t99")


def test_catalogue_covers_the_papers():
    ids = {c.id for c in claims.CLAIMS}
    assert len(ids) == len(claims.CLAIMS)
    for c in claims.CLAIMS:
        assert c["paper"] in ("blv", "dars") and c["id"] == c.id
        assert re.fullmatch(r"T\d+|Fig\. \d+", c.table), c.table
        assert c.comparison in claims.COMPARISONS and c.runs_in in claims.PROFILE_ORDER
        assert "{row}" not in c.statement and c.rule
    tables = {(c.paper, c.table) for c in claims.CLAIMS}
    for t in range(1, 10):  # BLV tables with a comparison of its own (10, 11 are cited-only)
        assert ("blv", f"T{t}") in tables, t
    for t in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15):
        assert ("dars", f"T{t}") in tables, t
    # the claims the issue names
    for cid in ("blv-t1/r50-psp", "blv-t2/1/8", "blv-t3/hrda", "blv-t4/daformer-cnn", "blv-t5-fully", "blv-t5-semi",
                "blv-t5-uda", "blv-t6-gaussian", "blv-t7/gta", "blv-t8/synthia", "blv-t9", "blv-t13/1/16", "blv-t14",
                "dars-t4-order", "dars-t4-it", "dars-t5-kl", "dars-t5-st", "dars-t6-alpha", "dars-t6-beta",
                "dars-t11", "dars-t8", "dars-fig5", "dars-t15", "blv-fig3"):
        assert claims.get(cid).id == cid
    assert claims.get("dars-t4-order").arms == ("dars", "da-ts", "cbst-ts", "cbst", "st-ts", "st")
    assert claims.get("blv-t7/gta").margin == 1.05 and claims.get("dars-t5-kl").constant == 1e-3


def test_verdict_renders_and_saves(tmp_path):
    v = claims.verdict("blv-t1/r50-psp", {"blv": [52.0, 53.5, 55.0], "ce": [50.0, 51.0, 52.0]}, profile="quick",
                       seeds=[0, 1, 2])
    md = v._repr_markdown_()
    assert "reproduced" in md and "+2.5" in md and 'id="verdict-blv-t1-r50-psp"' in md and "quick" in md
    assert '<a href="../reproduction.html#status-blv-t1-r50-psp">' in md  # its row on the status page
    d = json.loads(json.dumps(v.to_dict()))
    assert d["claim"] == "blv-t1/r50-psp" and d["paper"] == "blv" and d["table"] == "T1"
    assert d["verdict"] == "reproduced" and d["profile"] == "quick" and d["seeds"] == [0, 1, 2]
    assert d["tests"][0]["differences"] == [2.0, 2.5, 3.0] and d["version"]
    path = claims.save(v, tmp_path)
    assert path == tmp_path / "quick" / "blv-t1__r50-psp.json" and json.loads(path.read_text()) == d
    nr = claims.get("blv-t7/gta").not_run("quick")
    assert nr.outcome == "not run" and nr.to_dict()["would_run"] == "gpu" and "`gpu`" in nr._repr_markdown_()
    one = claims.verdict("blv-t1/r50-psp", {"blv": [60.0], "ce": [50.0]}, profile="smoke")
    assert json.loads(json.dumps(one.to_dict()))["tests"][0]["interval"] == [None, None]


def test_every_seed_greater_keeps_its_rule():
    v = claims.every_seed_greater("head beats tail", [60.0], [40.0], profile="quick", a_name="head mIoU",
                                  b_name="tail mIoU", margin=10.0)
    assert v.outcome == "reproduced" and "every seed" in v.claim.rule and v.tests[0].outcome == "reproduced"
    assert claims.every_seed_greater("x", [60.0, 45.0], [40.0, 40.0], profile="q", a_name="a", b_name="b",
                                     margin=10.0).outcome == "not reproduced"
    assert claims.save(v) is None  # an observation, not a paper claim: not on the status page


def test_test_direction_below():
    t = PairedTest.of("kl", [0.5, 0.6, 0.7], 1.0, "below")
    assert t.outcome == "reproduced" and t.interval[1] < 1.0
