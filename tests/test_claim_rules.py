"""Every claim's rule against its own paper's numbers: a rule the paper itself fails is the wrong rule.

For each claim whose arms all have a cell in the paper's table (``paper_cells``), the rule is applied
to the paper's numbers (``blvnb.paper``, read from the text; nothing typed here):

* on the printed means, as if every seed gave the mean: every test of the rule must lie on the claimed
  side of its margin;
* where every arm prints a ± spread, at 3 seeds — the number the claims ask for — with each arm's seeds
  spread by its printed standard deviation, independently of the other arms (the papers do not say how
  their runs pair): the 95 % t-interval of each test is the mean ± t·sd/√3, the sd propagated through
  the test's (linear) combination of arms. A rule the paper's own runs would leave undecided at 3 seeds
  could not be reproduced by a faithful reproduction either.
"""

import json
import math

import numpy as np
import pytest
from scipy import stats

from blvnb import claims, paper
from blvnb.claims import PairedTest

LINEAR = {"greater", "not-worse", "within", "ordering", "best", "all-greater", "gain-greater", "less-than",
          "greater-than", "split", "saturating"}

#: claims whose rule holds on the paper's means but that the paper's own ± leave undecided at 3 seeds
#: (independent arms); each says why the rule is still the paper's
UNDECIDED_AT_3 = {
    # the IT gains (DARS 1.63, ST 0.89, CBST 0.91) differ by 0.7 while ST's ± 0.40 and CBST + IT's ± 0.38
    # alone spread the difference of gains by about 0.4: the paper's own runs, taken as independent, do not
    # decide the interaction at 3 seeds. Our arms are paired (a round-2 run continues the round-1 run of
    # its seed), which takes the round-1 spread out of each gain.
    "dars-t4-it",
    # round 1 with the wider scale range: −0.47 with ± 0.12 and ± 0.26
    "dars-t6-round1",
}


def _table(c) -> int | None:
    return int(c.table[1:]) if c.table.startswith("T") else None


def has_cells(c) -> bool:
    return _table(c) is not None and bool(c.arms) and set(c.paper_cells) == set(c.arms)


def paper_numbers(c):
    """{arm: (mean, std or 0)} from the claim's exact paper cells (None where an arm has no cell)."""
    if not has_cells(c):
        return None
    n = _table(c)
    out = {}
    for arm in c.arms:
        where = c.paper_cells[arm]
        cell = paper.cell(c.paper, n, where["row"], where["column"])  # exact labels: raises when a cell is misnamed
        assert cell["value"] is not None, (c.id, arm, cell)
        out[arm] = (float(cell["value"]), float(cell["std"] or 0.0))
    return out


def _x(c):
    """The other quantity of a correlation claim, from the paper (DARS Table 15: each arm's D_KL)."""
    if c.comparison != "correlation":
        return None
    return {a: paper.value(c.paper, _table(c), c.paper_cells[a]["row"], "D_KL") for a in c.arms}


T975_2 = float(stats.t.ppf(0.975, 2))


def outcomes_on_paper(c, nums, seeds: int | None):
    """The rule's test outcomes on the paper's numbers: on the means (``seeds`` None) or at ``seeds``
    seeds with independent per-arm spreads."""
    means = {a: np.array([m]) for a, (m, _) in nums.items()}
    base = c._tests(means, _x(c), 1)
    if c.comparison not in LINEAR:  # spread, correlation: on the means (3 equal seeds: a point interval)
        return [PairedTest.of(t.label, [t.differences[0]] * 3, t.threshold, t.direction).outcome for t in base]
    out = []
    for i, t in enumerate(base):
        var = 0.0
        for a, (m, s) in nums.items():
            bumped = dict(means, **{a: np.array([m + 1.0])})
            coef = c._tests(bumped, None, 1)[i].differences[0] - t.differences[0]
            var += (coef * s) ** 2
        mean = t.differences[0]
        half = 0.0 if seeds is None else T975_2 * math.sqrt(var) / math.sqrt(seeds)
        lo, hi = mean - half, mean + half
        if t.direction == "above":
            o = "reproduced" if lo > t.threshold else "not reproduced" if hi < t.threshold else "inconclusive"
        else:
            o = "reproduced" if hi < t.threshold else "not reproduced" if lo > t.threshold else "inconclusive"
        out.append(o)
    return out


WITH_CELLS = [c for c in claims.CLAIMS if has_cells(c)]


def test_most_claims_of_a_table_have_their_paper_cells():
    # a claim on a paper table names the cells of every arm, unless the paper prints no such cell
    # (a stand-in row, a derived quantity, a figure) — listed here with the reason
    no_cells = {
        "blv-t1-standin", "blv-t1-standin-tail",  # not a row of the paper
        "blv-t12",  # a ratio: checked from Table 12's hours below
        "dars-t7",  # three test sets in one claim: checked below
        "dars-t14",  # Table 14 prints no source-only row (Table 15's baseline is the one of this framework)
        "dars-fig4", "dars-fig4-alpha",
    }
    missing = [c.id for c in claims.CLAIMS if _table(c) is not None and c.kind == "reproduction"
               and c not in WITH_CELLS and c.id not in no_cells]
    assert missing == []


@pytest.mark.parametrize("c", WITH_CELLS, ids=lambda c: c.id)
def test_rule_holds_on_the_papers_means(c):
    got = outcomes_on_paper(c, paper_numbers(c), None)
    assert got and all(o == "reproduced" for o in got), (c.id, c.rule, paper_numbers(c), got)


def _spread_everywhere(c) -> bool:
    try:
        return all(s > 0 for _, s in paper_numbers(c).values())
    except paper.PaperDataError:
        return True  # a misnamed cell: let the test below fail on it


@pytest.mark.parametrize("c", [c for c in WITH_CELLS if _spread_everywhere(c)], ids=lambda c: c.id)
def test_rule_decides_the_papers_runs_at_three_seeds(c):
    got = outcomes_on_paper(c, paper_numbers(c), 3)
    if c.id.split("/")[0] in UNDECIDED_AT_3:
        assert "not reproduced" not in got and "inconclusive" in got, (c.id, got)
    else:
        assert all(o == "reproduced" for o in got), (c.id, c.rule, paper_numbers(c), got)


def test_blv_t12_holds_on_table_12():
    c = claims.get("blv-t12")
    for row in ("HRNet-18 + OCRHead", "ResNet50 + UperHead"):
        ratio = paper.value("blv", 12, row, "w/ BLV") / paper.value("blv", 12, row, "w/o BLV")
        assert c.evaluate({"ratio": [ratio] * 3}, profile="paper").outcome == "reproduced", (row, ratio)


def test_dars_t7_holds_on_table_7():
    c = claims.get("dars-t7")
    for col in ("cs (crop 361)", "cs (crop 713)", "voc (crop 321)"):
        vals = {"dars": [paper.value("dars", 7, "DARS", col)] * 3, "baseline": [paper.value("dars", 7, "baseline", col)] * 3}
        assert c.evaluate(vals, profile="paper").outcome == "reproduced", col


def test_the_issue_examples_are_caught():
    """The rules issue 24 names: the paper's numbers decide them as the paper's text does."""
    g = claims.get("blv-t6-gaussian")  # Gaussian 59.0 beats 58.5 / 58.2 / 57.9: a form below Gaussian fails it
    nums = paper_numbers(g)
    assert outcomes_on_paper(g, {**nums, "uniform": (59.5, 0.0)}, None).count("not reproduced") == 1
    assert g.comparison == "best" and g.margin == 0.0
    # blv-t7: the paper's GTA5 spread is 1.0 exactly (58.0 … 59.0), "within 1 %" in its text
    assert outcomes_on_paper(claims.get("blv-t7/gta"), paper_numbers(claims.get("blv-t7/gta")), None) == ["reproduced"]
    # dars-t3: Table 3 has no baseline row; the claim is DARS over CCT
    t3 = claims.get("dars-t3")
    assert "baseline" not in t3.arms and "CCT" in t3.statement and t3.constant == paper.value("dars", 3, "CCT", "mIoU")
    # dars-t4-it includes CBST
    assert {"cbst-it", "cbst"} <= set(claims.get("dars-t4-it").arms)
    # dars-fig4 compares round 2 with and without the strong augmentation at the same α
    assert claims.get("dars-fig4").arms == ("r2-a50-b", "r2-a50")
    assert claims.get("dars-fig4-alpha").arms == ("r2-a50", "r2-a20")


def test_checks_are_not_reproductions():
    assert {c.kind for c in claims.CLAIMS} == {"reproduction", "check"}
    checks = [c for c in claims.CLAIMS if c.kind == "check"]
    assert [c.id for c in checks] == ["dars-alignment-synthetic"]
    assert all(not c.paper_cells for c in checks)  # a check shows no paper cell beside its verdict


def test_status_page_shows_checks_apart(tmp_path, monkeypatch):
    from blvnb import reproduce

    monkeypatch.delenv("BLVNB_VERDICTS", raising=False)
    (tmp_path / "book").mkdir()
    out = tmp_path / "book" / "generated" / "verdicts"
    claims.save(claims.alignment_verdict({"DARS": [1e-5, 2e-5, 1e-5], "ST": [0.05, 0.04, 0.06]}, profile="quick",
                                         seeds=[0, 1, 2]), out)
    claims.save(claims.verdict("dars-t5-kl", {"dars": [1e-5, 2e-5, 1e-5]}, profile="quick", seeds=[0, 1, 2]), out)
    text = reproduce.write_status(tmp_path, profile="quick").read_text()
    summary, checks = text.split("## Summary")[1].split("## BLV")[0], text.split("## Implementation checks")[1]
    n_dars = sum(c.paper == "dars" and c.kind == "reproduction" for c in claims.CLAIMS)
    n_blv = sum(c.paper == "blv" and c.kind == "reproduction" for c in claims.CLAIMS)
    # the check's ✔ is not a reproduction: DARS's row counts one reproduced claim (dars-t5-kl) of its reproductions
    assert f"| DARS | `quick` | 1 | 0 | 0 | {n_dars - 1} | {n_dars} |" in summary
    assert f"| BLV | `quick` | 0 | 0 | 0 | {n_blv} | {n_blv} |" in summary
    assert "`dars-alignment-synthetic`" in checks and "✔ reproduced" in checks
    assert "`dars-alignment-synthetic`" not in text.split("## Implementation checks")[0]
    records = json.loads((tmp_path / "book" / "generated" / "reproduction.json").read_text())
    rec = next(r for r in records if r["claim"] == "dars-alignment-synthetic")
    assert rec["kind"] == "check" and rec["paper_values"] == {}
