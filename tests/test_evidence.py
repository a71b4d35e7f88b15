"""blvnb.viz.evidence: per-seed arm values paired by seed, verdicts that say "not run", selectors that skip
arms a profile leaves out, class shares from a run's summary. Fake records, no training."""

import math

import numpy as np
import pytest

from blvnb.classes import NUM_CLASSES
from blvnb.viz import evidence
from blvnb.viz.tables import ResultsError


def rec(seed, miou, iou=None, seconds=10.0, summary=None, profile="quick"):
    iou = list(iou) if iou is not None else [miou / 100] * NUM_CLASSES
    return {"config": {"profile": profile, "seed": seed, "model": "r10t-fpn"}, "seed": seed, "profile": profile,
            "metrics": {"mIoU": miou / 100, "iou": iou}, "train_seconds": seconds, "summary": summary or {}}


def entries(spec):
    """spec: {(row, arm): {seed: record}} → TableRuns-like list of entries."""
    return [{"row": r, "arm": a, "seed": s, "record": x} for (r, a), by in spec.items() for s, x in by.items()]


@pytest.fixture
def res():
    return entries({
        ("R", "baseline"): {0: rec(0, 50), 1: rec(1, 51), 2: rec(2, 52)},
        ("R", "blv"): {0: rec(0, 51), 1: rec(1, 52.1), 2: rec(2, 53), 3: rec(3, 60)},
        ("R", "la"): {0: rec(0, 40)},
    })


def test_arm_values_are_paired_by_seed(res):
    vals, seeds = evidence.arm_values(res, {"blv": ("R", "blv"), "ce": ("R", "baseline")}, "mIoU")
    assert seeds == [0, 1, 2]  # seed 3 has no baseline: left out, never paired with another seed
    assert vals["blv"] == pytest.approx([51, 52.1, 53]) and vals["ce"] == pytest.approx([50, 51, 52])
    vals, seeds = evidence.arm_values(res, {"blv": ("R", "blv"), "la": ("R", "la")}, "mIoU")
    assert seeds == [0] and vals["la"] == pytest.approx([40])


def test_missing_arm_raises_with_what_there_is(res):
    with pytest.raises(ResultsError, match="no run") as e:
        evidence.arm_values(res, {"x": ("R", "lovasz")}, "mIoU")
    assert "blv" in str(e.value)


def test_verdict_not_run_when_an_arm_did_not_run(res, tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_VERDICTS", str(tmp_path))
    v = evidence.verdict("blv-t5-fully", res, {"blv": ("R", "blv"), "la": ("R", "la"), "lovasz": ("R", "lovasz")},
                         profile="quick")
    assert v.outcome == "not run" and "lovasz" in v.note
    assert not list(tmp_path.rglob("*.json"))  # not-run verdicts are not saved
    v = evidence.verdict("blv-t1/r50-psp", res, {"blv": ("R", "blv"), "ce": ("R", "baseline")}, profile="quick")
    assert v.outcome == "reproduced" and list(v.seeds) == [0, 1, 2]
    assert list(tmp_path.rglob("*.json"))


def test_verdict_decides_against_the_paper_too(res, tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_VERDICTS", str(tmp_path))
    worse = entries({("R", "baseline"): {s: rec(s, 50 + s) for s in range(3)},
                     ("R", "blv"): {s: rec(s, 48 + s + 0.1 * s) for s in range(3)}})
    v = evidence.verdict("blv-t1/r50-psp", worse, {"blv": ("R", "blv"), "ce": ("R", "baseline")}, profile="quick")
    assert v.outcome == "not reproduced"


def test_present_turns_missing_arms_into_dashes(res):
    sel = evidence.present(res, {"A": ("R", "blv"), "B": ("R", "gcl"), "C": None})
    assert sel == {"A": {"row": "R", "arm": "blv"}, "B": None, "C": None}


def test_ratios_and_by_arm(res):
    r, seeds = evidence.ratios(res, ("R", "blv"), ("R", "baseline"))
    assert r == pytest.approx([1.0, 1.0, 1.0]) and seeds == [0, 1, 2]  # train_seconds
    r, _ = evidence.ratios(res, ("R", "blv"), ("R", "baseline"), metric="mIoU")
    assert r == pytest.approx([51 / 50, 52.1 / 51, 53 / 52])
    arms = evidence.by_arm(res, {"CE": ("R", "baseline"), "GCL": ("R", "gcl")})
    assert list(arms) == ["CE"] and [x["seed"] for x in arms["CE"]] == [0, 1, 2]


def test_gain_share_values_drop_undefined_and_never_segmented_classes():
    base = [0.5] * NUM_CLASSES
    base[3], base[5] = math.nan, 0.0
    meth = [0.6] * NUM_CLASSES
    meth[3], meth[5] = 0.7, 0.0
    res = entries({("R", "baseline"): {0: rec(0, 50, base)}, ("R", "blv"): {0: rec(0, 60, meth)}})
    shares = np.full(NUM_CLASSES, 1.0 / NUM_CLASSES)
    gains, x, seeds = evidence.gain_share_values(res, ("R", "blv"), ("R", "baseline"), shares)
    assert len(gains) == NUM_CLASSES - 2 and seeds == [0]
    assert gains["road"] == pytest.approx([10.0]) and x["road"] == pytest.approx(np.log10(1 / NUM_CLASSES))
    with pytest.raises(ResultsError, match="shares"):
        evidence.gain_share_values(res, ("R", "blv"), ("R", "baseline"), shares[:5])


def test_fig3_verdict_reports_the_correlation_with_and_without_the_classes_at_iou_0(tmp_path, monkeypatch):
    """The verdict leaves out the classes at IoU 0 in both arms in every seed; its note names them and gives
    the correlation with them kept."""
    from blvnb.classes import CLASSES

    monkeypatch.setenv("BLVNB_VERDICTS", str(tmp_path))
    shares = np.linspace(1.0, 19.0, NUM_CLASSES)[::-1] / np.linspace(1.0, 19.0, NUM_CLASSES).sum()  # class 0 largest
    by = {"baseline": {}, "blv": {}}
    for s in range(3):
        base, meth = [0.5] * NUM_CLASSES, [0.5] * NUM_CLASSES
        for c in range(NUM_CLASSES - 3):  # gain grows with rarity: a negative correlation
            meth[c] = 0.5 + 0.01 * c + 0.001 * s
        for c in range(NUM_CLASSES - 3, NUM_CLASSES):  # the three rarest: never segmented, gain 0
            base[c] = meth[c] = 0.0
        by["baseline"][s], by["blv"][s] = rec(s, 50, base), rec(s, 50, meth)
    res = entries({("R", a): x for a, x in by.items()})
    v = evidence.gain_share_verdict("blv-fig3", res, ("R", "blv"), ("R", "baseline"), shares, profile="quick")
    assert v.outcome == "reproduced" and len(v.values) == NUM_CLASSES - 3
    dropped = ", ".join(CLASSES[c] for c in range(NUM_CLASSES - 3, NUM_CLASSES))
    assert f"Left out, at IoU 0 in both arms in every seed: {dropped}." in v.note
    assert f"With them kept ({NUM_CLASSES} classes): Spearman ρ per seed" in v.note
    assert v.tests[0].differences == pytest.approx((-1.0, -1.0, -1.0))  # without them: a perfect negative rank order
    kept = v.note.split("With them kept")[1]
    assert "−1.000" not in kept and "−0.2" in kept  # with them (gain 0 at the smallest shares) it is much weaker
    # nothing at IoU 0 in both arms: the note says nothing is left out
    for s in range(3):
        for c in range(NUM_CLASSES - 3, NUM_CLASSES):
            by["blv"][s]["metrics"]["iou"][c] = 0.5 + 0.01 * c
            by["baseline"][s]["metrics"]["iou"][c] = 0.5
    v = evidence.gain_share_verdict("blv-fig3", entries({("R", a): x for a, x in by.items()}), ("R", "blv"),
                                    ("R", "baseline"), shares, profile="quick")
    assert "nothing is left out" in v.note and len(v.values) == NUM_CLASSES


def test_class_shares_from_a_summary():
    counts = list(range(1, NUM_CLASSES + 1))
    sh = evidence.class_shares(rec(0, 50, summary={"class_counts": counts}))
    assert sh.sum() == pytest.approx(1.0) and sh[-1] == pytest.approx(NUM_CLASSES / sum(counts))
    assert evidence.class_shares(rec(0, 50, summary={"source_counts": counts}))[0] == pytest.approx(1 / sum(counts))
    with pytest.raises(ResultsError, match="class counts"):
        evidence.class_shares(rec(0, 50))


def test_count_estimates_kl_is_zero_for_the_truth():
    truth = np.arange(1, NUM_CLASSES + 1, dtype=float)
    r = rec(0, 50, summary={"counts": [{"source": "labeled", "epoch": None, "counts": list(truth)},
                                       {"source": "eq4", "epoch": 0, "counts": [1.0] * NUM_CLASSES}]})
    df = evidence.count_estimates(r, truth)
    assert df["KL(truth ‖ estimate)"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert df["KL(truth ‖ estimate)"].iloc[1] > 0.1


def test_load_model_without_checkpoint_is_none():
    assert evidence.load_model(rec(0, 50)) is None


def test_verdicts_markdown_links_each_claim_to_the_status_page():
    from blvnb import claims

    done = claims.verdict("blv-t1/r50-psp", {"blv": [52.0, 53.5, 55.0], "ce": [50.0, 51.0, 52.0]}, profile="quick",
                          seeds=[0, 1, 2])
    md = evidence.verdicts_markdown([done, claims.get("blv-t7/gta").not_run("quick")])
    assert 'href="../reproduction.html#status-blv-t1-r50-psp"' in md  # in the evaluated verdict's text
    assert '<a href="../reproduction.html#status-blv-t7-gta"><code>blv-t7/gta</code></a>' in md  # the not-run line
