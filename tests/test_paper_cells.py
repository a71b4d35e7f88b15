"""The papers' numbers as data (blvnb.paper), checked against the papers' own text.

* every stored cell is found, as printed and in reading order, in the line of the paper's text it is
  said to come from, and its float value, spread and gain are those its printed text says;
* each table has the rows × columns the paper prints (shapes typed here from reading the papers,
  independently of the data files);
* the inconsistencies flagged in the data are real (recomputed here) and every inconsistency of the
  kinds we look for is flagged: mean columns against their per-class columns, DARS Table 4's Tail mIoU
  against every subset of its classes, printed gains against their two values, and tables that repeat
  one another.
"""

from __future__ import annotations

import os
import re
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from blvnb import paper
from blvnb.errors import BlvnbError

# ------------------------------------------------------------------------------- the papers' texts
_HERE = Path(__file__).resolve()
_CANDIDATES = [Path(p) for p in [os.environ.get("BLVNB_PAPERS")] if p] + [
    _HERE.parents[1] / "shared" / "papers",  # a checkout that carries shared/
    _HERE.parents[2] / "shared" / "papers",  # the repository beside shared/ (the project layout)
]


def _papers_dir() -> Path | None:
    for d in _CANDIDATES:
        if d.is_dir() and any(d.glob("blv-*.txt")) and any(d.glob("dars-*.txt")):
            return d
    return None


def _in_ci() -> bool:
    """The ``CI`` variable that CI services set (``true``, ``1``); empty, ``0`` or ``false`` mean not CI."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def texts() -> dict[str, list[str]]:
    return _load_texts()


def _load_texts() -> dict[str, list[str]]:
    d = _papers_dir()
    if d is None:
        reason = f"the papers' texts are not here (looked in {[str(c) for c in _CANDIDATES]}; set BLVNB_PAPERS)"
        print(reason)
        if _in_ci():  # CI must check the cells against the papers: a missing text is a broken setup there
            pytest.fail(f"{reason}; CI={os.environ['CI']!r} is set, so this is an error, not a skip")
        pytest.skip(reason)
    out = {}
    for name in ("blv", "dars"):
        (path,) = sorted(d.glob(f"{name}-*.txt"))
        out[name] = path.read_text(encoding="utf-8").split("\n")
    return out


def test_missing_papers_skip_outside_ci_and_fail_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules[__name__], "_CANDIDATES", [tmp_path / "nowhere"])
    for value in (None, "", "0", "false"):
        if value is None:
            monkeypatch.delenv("CI", raising=False)
        else:
            monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match="not here"):
            _load_texts()
    for value in ("true", "1"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.fail.Exception, match=f"CI='{value}' is set"):
            _load_texts()


def _norm(s: str) -> str:
    """The printed text of a line without its markup (bold/italic tags, $, LaTeX ±, ↑ and %)."""
    s = re.sub(r"</?(?:b|i|u)>", "", s)
    s = s.replace("<math>\\pm</math>", "±").replace("\\pm", "±").replace("\\uparrow", "↑")
    s = s.replace("\\%", "%").replace("$", "")
    s = " ".join(s.split())
    return re.sub(r" ?± ?", "±", s)


_N = r"\d+(?:\.\d+)?"


def _read(text: str) -> tuple[float | None, float | None, float | None]:
    """(value, std, delta) that a printed cell says."""
    if text in ("-", "/"):
        return None, None, None
    m = re.fullmatch(rf"(\d+)h(\d+)m(?: \(\+({_N})%\))?", text)
    if m:
        return int(m[1]) + int(m[2]) / 60, None, m[3] and float(m[3])
    m = re.fullmatch(rf"\(([+-]{_N})\) ({_N})(?:±({_N}))?", text)
    if m:
        return float(m[2]), m[3] and float(m[3]), float(m[1])
    m = re.fullmatch(rf"([+-]?{_N})(k?)%?(?:±({_N}))?(?: ↑ ({_N}))?", text)
    if m:
        return float(m[1]) * (1000 if m[2] else 1), m[3] and float(m[3]), m[4] and float(m[4])
    return None, None, None  # a text cell (a backbone's name)


def _same(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= tol


def check_cells(cells: list[dict], texts: dict[str, list[str]]) -> list[str]:
    """Every problem found: a value its text does not say, a text not in its line (in reading order)."""
    errors = []
    by_line: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for c in cells:
        where = f"{c['paper']} {('T%s' % c['table']) if c['table'] else c['figure']} [{c['row']!r}, {c['column']!r}]"
        v, sd, d = _read(c["text"])
        if c["unit"] == "text":
            if c["value"] is not None:
                errors.append(f"{where}: a text cell {c['text']!r} holds the value {c['value']}")
        elif not (_same(v, c["value"], 1e-3 if c["unit"] == "hours" else 1e-9) and _same(sd, c["std"])
                  and _same(d, c["delta"])):
            errors.append(f"{where}: text {c['text']!r} says {(v, sd, d)}, stored {(c['value'], c['std'], c['delta'])}")
        by_line[(c["paper"], c["line"])].append(c)
    for (name, line), group in by_line.items():
        if not 1 <= line <= len(texts[name]):
            errors.append(f"{name} line {line}: no such line")
            continue
        text, pos = _norm(texts[name][line - 1]), 0
        for c in group:
            m = re.compile(r"(?<![\w.])" + re.escape(c["text"]) + r"(?![\w]|\.\d)").search(text, pos)
            if m is None:
                errors.append(f"{name} line {line}: {c['text']!r} ({c['row']!r}, {c['column']!r}) not found "
                              f"after position {pos} of {text!r}")
            else:
                pos = m.end()
    return errors


def _all_cells() -> list[dict]:
    return list(paper.cells())


# ------------------------------------------------------------------------------------- 1. the text
def test_every_cell_is_in_its_line(texts):
    cells = _all_cells()
    assert len(cells) > 1700
    errors = check_cells(cells, texts)
    assert not errors, "\n".join(errors[:20])


def test_the_check_catches_a_changed_digit(texts):
    cells = _all_cells()
    i = next(k for k, c in enumerate(cells) if c["paper"] == "blv" and c["table"] == 1 and c["text"].startswith("79.94"))
    # the value changed, the printed text kept
    bad = [dict(c) for c in cells]
    bad[i]["value"] = 79.95
    assert any("79.94" in e for e in check_cells(bad, texts))
    # the text and value changed together: the line does not print it
    bad = [dict(c) for c in cells]
    bad[i].update(value=79.95, text="79.95 ↑ 0.72")
    assert any("not found" in e for e in check_cells(bad, texts))
    # one digit of a per-class IoU
    j = next(k for k, c in enumerate(cells) if c["paper"] == "dars" and c["table"] == 4 and c["row"] == "DARS"
             and c["column"] == "truck")
    bad = [dict(c) for c in cells]
    bad[j].update(value=57.5, text="57.5")
    assert any("57.5" in e for e in check_cells(bad, texts))
    # a cell moved to another line, or two cells of a line swapped
    bad = [dict(c) for c in cells]
    bad[j]["line"] += 1
    assert check_cells(bad, texts)
    bad = [dict(c) for c in cells]
    bad[j], bad[j + 1] = bad[j + 1], bad[j]
    assert check_cells(bad, texts)
    # a spread or a gain changed
    k = next(k for k, c in enumerate(cells) if c["std"] is not None)
    bad = [dict(c) for c in cells]
    bad[k]["std"] += 0.01
    assert check_cells(bad, texts)


def test_rows_come_from_their_lines(texts):
    """A word of each row's label is in its line or in the two lines above (labels spanning rows)."""
    made_up = {("blv", 9), ("blv", 14), ("dars", 6), ("dars", 9), ("dars", 10)}  # rows printed without a label
    errors = []
    for c in paper.cells():
        if c["table"] is None or (c["paper"], c["table"]) in made_up:
            continue
        words = [w for w in re.findall(r"[A-Za-z][\w.\-]+|\d+/\d+", c["row"]) if w not in ("BLV", "w")]
        window = " ".join(_norm(texts[c["paper"]][i - 1]) for i in range(c["line"] - 2, c["line"] + 1))
        if not any(w in window for w in words):
            errors.append(f"{c['paper']} T{c['table']} {c['row']!r} line {c['line']}")
    assert not errors, errors[:10]


def test_lines_lie_inside_their_table(texts):
    for name in paper.PAPERS:
        for n in paper.tables(name):
            lines = paper.info(name, n)["lines"]
            assert texts[name][lines["caption"] - 1].startswith(f"Table {n}.")
            for c in paper.cells(name, n):
                assert lines["first"] <= c["line"] <= lines["last"], (name, n, c["row"], c["line"])


# --------------------------------------------------------------------------------------- 2. shapes
SHAPES = {
    "blv": {1: (14, 2), 2: (8, 2), 3: (7, 20), 4: (7, 18), 5: (2, 12), 6: (5, 1), 7: (2, 6), 8: (2, 4),
            9: (1, 3), 10: (17, 20), 11: (18, 18), 12: (2, 2), 13: (2, 3), 14: (1, 3)},
    "dars": {1: (14, 4), 2: (7, 1), 3: (4, 2), 4: (10, 22), 5: (6, 1), 6: (5, 5), 7: (2, 3), 8: (1, 4),
             9: (5, 2), 10: (7, 3), 11: (4, 1), 12: (4, 22), 13: (2, 4), 14: (11, 21), 15: (5, 3)},
}
# cells the paper leaves blank: an Oracle printed once for two splits
BLANK = {("dars", 1): 7, ("dars", 13): 1}
FIGURE_CELLS = {"blv": {"Fig. 3": 6, "Fig. 5": 3}, "dars": {"Fig. 3": 1, "Fig. 5": 7}}


@pytest.mark.parametrize("name", paper.PAPERS)
def test_shapes(name):
    assert paper.tables(name) == sorted(SHAPES[name])
    for n, shape in SHAPES[name].items():
        df = paper.table(name, n)
        assert df.shape == shape, (name, n)
        assert tuple(paper.info(name, n)["shape"]) == shape, (name, n)
        assert len(list(paper.cells(name, n))) == shape[0] * shape[1] - BLANK.get((name, n), 0), (name, n)
    for fig, count in FIGURE_CELLS[name].items():
        assert len(list(paper.cells(name, figure=fig))) == count
    total = sum(r * c for r, c in SHAPES[name].values()) - sum(v for (p, _), v in BLANK.items() if p == name)
    assert len(list(paper.cells(name))) == total + sum(FIGURE_CELLS[name].values())


def test_cell_fields():
    for c in paper.cells():
        assert c["paper"] in ("blv", "dars")
        assert (c["table"] is None) != (c["figure"] is None)
        assert isinstance(c["cited"], bool)
        assert c["value"] is None or isinstance(c["value"], float)
        assert isinstance(c["line"], int) and c["line"] in c["lines"]
        assert c["flag"] is None or c["flag"].split(":")[0] in ("inconsistent", "unsourced", "ambiguous")
        assert c["unit"]


def test_every_note_says_where_a_number_comes_from_in_the_text():
    """No cell rests on memory of another paper: the DAFormer ‡ / HRDA ‡ baselines of Tables 3 and 4 are printed
    there without a citation mark, and their notes name the table and the line of the text they are read from."""
    assert not [c for c in paper.cells() if "recall" in (c["note"] or "")]
    for n in (3, 4):
        for c in paper.cells("blv", n):
            if c["row"] in ("DAFormer‡", "HRDA‡"):
                assert not c["cited"] and f"Table {n} (line {c['line']})" in c["note"], c
    t9 = paper.cell("blv", 9, "DAFormer‡, GTA5 → Cityscapes", "Baseline")
    assert t9["value"] == paper.value("blv", 3, "DAFormer‡", "mIoU")
    assert f"Table 9 (line {t9['line']})" in paper.cell("blv", 3, "DAFormer‡", "mIoU")["note"]


def test_cited_rows():
    def cited(name, n):
        return {c["row"] if name != "blv" or n != 5 else c["column"] for c in paper.cells(name, n) if c["cited"]}
    assert cited("dars", 1) == {f"{m} {s}" for m in ("Hung et al.", "Mittal et al.", "CutMix", "DST-CBC",
                                                     "Mendel et al.") for s in ("1/8", "1/4")}
    assert cited("dars", 2) == {"Deeplabv2", "Hung et al.", "Mittal et al.", "CutMix", "DST-CBC", "Mendel et al."}
    assert cited("dars", 3) == {"GANSeg", "AdvSemSeg", "CCT"}
    assert cited("blv", 5) == {"Semi: DARS", "Domain Adaptive: CLAN", "Domain Adaptive: CBST"}
    assert not cited("blv", 3) and not cited("blv", 4)  # their ‡ baselines carry no citation mark (next test)
    assert len(cited("blv", 10)) == 15 and len(cited("blv", 11)) == 16
    assert "BLV (ours)" not in cited("blv", 10) | cited("blv", 11)
    assert cited("dars", 14) == set(paper.table("dars", 14).index) - {"CyCADA*", "DARS (TD)"}
    for name, n in (("blv", 1), ("blv", 2), ("blv", 6), ("dars", 4), ("dars", 6), ("dars", 15)):
        assert not cited(name, n)


# ------------------------------------------------------------------------------ 3. inconsistencies
AGGREGATES = {"mIoU", "mIoU*", "Tail mIoU", "Gain", "Backbone"}
MEAN_COLUMNS = [  # (paper, table, mean column, which per-class columns it averages)
    ("blv", 3, "mIoU", "all"), ("blv", 4, "mIoU", "all"), ("blv", 4, "mIoU*", "unstarred"),
    ("blv", 10, "mIoU", "all"), ("blv", 11, "mIoU", "all"), ("blv", 11, "mIoU*", "unstarred"),
    ("dars", 4, "mIoU", "all"), ("dars", 12, "mIoU", "all"), ("dars", 14, "mIoU", "all"),
]
MEAN_MISMATCHES = {("blv", 4, "HRDA‡", "mIoU*"), ("blv", 10, "AdaptSeg", "mIoU"), ("blv", 10, "CAG", "mIoU"),
                   ("dars", 14, "CAG-UDA", "mIoU")}


def test_mean_columns_against_their_classes():
    """A printed mean may differ from the mean of its printed per-class values by rounding only (≤ 0.1)."""
    found = set()
    for name, n, col, which in MEAN_COLUMNS:
        df = paper.table(name, n)
        classes = [c for c in df.columns if c not in AGGREGATES and (which == "all" or not c.endswith("*"))]
        assert len(classes) == {("blv", 3): 19, ("blv", 10): 19, ("dars", 4): 19, ("dars", 14): 19,
                                ("dars", 12): 20}.get((name, n), 16 if which == "all" else 13)
        for row in df.index:
            per_class = df.loc[row, classes].astype(float)
            if per_class.isna().any():
                continue
            if abs(per_class.mean() - float(df.loc[row, col])) > 0.1 + 1e-9:
                found.add((name, n, row, col))
    assert found == MEAN_MISMATCHES
    for name, n, row, col in found:
        assert paper.cell(name, n, row, col)["flag"].startswith("inconsistent")


def test_dars_table4_tail_miou_is_no_subset_of_its_classes():
    df = paper.table("dars", 4)
    classes = [c for c in df.columns if c not in AGGREGATES]
    assert len(classes) == 19 and len(df) == 10
    # exact integer arithmetic in tenths of a point: a subset of k classes with IoU sum S reproduces the
    # printed tail T when |S/k − T| ≤ 1 tenth (what rounding allows), and rounds to it when |S/k − T| ≤ ½
    iou = np.rint(df[classes].to_numpy(float) * 10).astype(np.int64)  # 10 rows × 19 classes
    tail = np.rint(df["Tail mIoU"].to_numpy(float) * 10).astype(np.int64)
    subsets = np.arange(1, 2 ** 19, dtype=np.int64)  # all 2^19 − 1 non-empty subsets, as bit masks
    masks = ((subsets[:, None] >> np.arange(19)) & 1).astype(np.int64)
    k = masks.sum(1, keepdims=True)
    gap = masks @ iou.T - tail * k  # k · (mean − T), in tenths
    within = np.abs(gap) <= k
    rounds = 2 * np.abs(gap) <= k
    assert within.all(1).sum() == 0 and rounds.all(1).sum() == 0
    assert within.sum(1).max() == 7  # the best subsets reproduce 7 of the 10 rows
    assert within[k[:, 0] == 13].sum(1).max() <= 1  # a subset of 13 classes: at most one row
    for c in paper.cells("dars", 4):
        assert (c["column"] == "Tail mIoU") == bool(c["flag"]), (c["row"], c["column"])
    # the mIoU column, by contrast, is the mean of the 19 classes
    assert np.abs(df[classes].to_numpy(float).mean(1) - df["mIoU"].to_numpy(float)).max() < 0.02


def test_dars_table4_top2_on_10_of_13_tail_classes():
    """The text's count holds for the 13 classes that are not road, sidewalk, building, vegetation, sky, car."""
    df = paper.table("dars", 4)
    upper = df.loc[["Baseline", "ST", "ST + TS", "CBST", "CBST + TS", "DA + TS", "DARS"]]
    tail = [c for c in df.columns if c not in AGGREGATES | {"road", "sidewalk", "building", "veg", "sky", "car"}]
    assert len(tail) == 13
    top2 = [c for c in tail if upper.loc["DARS", c] >= sorted(set(upper[c]), reverse=True)[1]]
    assert len(top2) == 10
    # … but its mean gives the Tail mIoU of the DARS row only
    close = (df[tail].mean(axis=1) - df["Tail mIoU"]).abs() <= 0.1
    assert list(df.index[close]) == ["DARS"]


# printed gains: (paper, table) → how to find the reference of each cell with a delta
def _reference(name, n, row, column, df):
    if (name, n) in (("blv", 1), ("blv", 2)):
        return df.loc[row.removesuffix(" + BLV"), column]
    if (name, n) == ("blv", 6):
        return df.loc["None-Variation", column]
    if (name, n) in (("blv", 9), ("blv", 14)):
        return df.loc[row, "Baseline"]
    if (name, n) == ("blv", 13):
        return df.loc[row, "ST"]
    if (name, n) == ("dars", 6):
        return df.iloc[0][column]
    if (name, n) == ("dars", 7):
        return df.loc["baseline", column]
    raise AssertionError(f"a delta in {name} table {n} with no known reference")


def test_printed_gains_are_differences_of_their_values():
    checked = 0
    for c in paper.cells():
        if c["delta"] is None:
            continue
        name, n = c["paper"], c["table"]
        df = paper.table(name, n)
        if (name, n) == ("blv", 12):  # a relative increase of the training time, in %
            gain = (c["value"] / df.loc[c["row"], "w/o BLV"] - 1) * 100
            assert abs(gain - c["delta"]) <= 0.05 + 1e-6, c
        else:
            ref = float(_reference(name, n, c["row"], c["column"], df))
            assert abs(c["value"] - ref - c["delta"]) <= 1e-6, c  # exactly the difference of the printed values
        checked += 1
    assert checked == 14 + 8 + 4 + 2 + 2 + 4 + 2 + 4 + 3  # BLV T1 T2 T6 T9 T12 T13 T14, DARS T6 T7
    # the Gain columns of DARS
    for n, ref in ((1, "Baseline"), (13, "Baseline")):
        df = paper.table("dars", n)
        assert np.allclose(df["Result"] - df[ref], df["Gain"], rtol=0, atol=1e-6)
    for n, col in ((4, "mIoU"), (12, "mIoU"), (15, "mIoU (%)")):
        df = paper.table("dars", n)
        gain = "Gain (%)" if n == 15 else "Gain"
        assert np.allclose(df[col] - df.loc["Baseline", col], df[gain], rtol=0, atol=1e-6)


def _tail9(df, row):
    cols = [c for c in df.columns if c.rstrip("*").lower() in
            {"wall", "t.light", "light", "sign", "rider", "truck", "bus", "train", "m.bike", "mbike", "bike"}]
    assert len(cols) == 9
    return float(df.loc[row, cols].mean())


def test_tables_that_repeat_each_other():
    blv = {n: paper.table("blv", n) for n in paper.tables("blv")}
    same = lambda a, b: np.array_equal(np.asarray(a, float), np.asarray(b, float))  # noqa: E731
    assert same(blv[10].loc["BLV (ours)"], blv[3].loc["DAFormer† (w/ BLV)"])
    assert same(blv[11].loc["BLV (ours)"], blv[4].loc["DAFormer† (w/ BLV)"])
    assert same(blv[10].loc["source only"], blv[3].loc["source only†"])
    assert same(blv[11].loc["source only†"], blv[4].loc["source only†"])
    assert blv[6].loc["None-Variation", "mIoU"] == blv[7].loc["GTA5 → Cityscapes", "Baseline"] == 55.9
    assert blv[6].loc["Gaussian", "mIoU"] == blv[7].loc["GTA5 → Cityscapes", "σ=6"] == blv[8].iloc[0]["BLV"] == 59.0
    assert blv[7].loc["SYNTHIA → Cityscapes", "σ=4"] == blv[8].iloc[1]["BLV"] == blv[4].loc["DAFormer† (w/ BLV)", "mIoU"]
    assert blv[9].iloc[0]["Baseline"] == blv[3].loc["DAFormer‡", "mIoU"]
    assert blv[9].iloc[0]["BLV"] == blv[3].loc["DAFormer‡ (w/ BLV)", "mIoU"]
    assert same(blv[13]["ST"], blv[2].loc[["1/16 (186) Self-Training", "1/8 (372) Self-Training"], "mIoU"])
    assert same(blv[13]["ST+BLV‡"], blv[2].loc[["1/16 (186) Self-Training + BLV", "1/8 (372) Self-Training + BLV"], "mIoU"])
    # Table 5 against the tables its numbers come from
    t5 = blv[5]
    assert t5.loc["mIoU", "Domain Adaptive: BLV"] == blv[3].loc["DAFormer† (w/ BLV)", "mIoU"]
    assert round(_tail9(blv[3], "DAFormer† (w/ BLV)"), 1) == t5.loc["mIoU (tail)", "Domain Adaptive: BLV"]
    assert t5.loc["mIoU", "Domain Adaptive: CBST"] == blv[10].loc["CBST", "mIoU"]
    assert round(_tail9(blv[10], "CBST"), 1) == t5.loc["mIoU (tail)", "Domain Adaptive: CBST"]
    assert round(blv[1].loc["Vit-B16 + UperHead + BLV", "mIoU"], 1) == t5.loc["mIoU", "Fully: BLV"]
    # … and where they disagree (flagged)
    assert blv[1].loc["Vit-B16 + UperHead + BLV", "mIoU (tail)"] == 70.63 != t5.loc["mIoU (tail)", "Fully: BLV"]
    dars = {n: paper.table("dars", n) for n in paper.tables("dars")}
    clan = _tail9(dars[14], "CLAN")
    assert dars[14].loc["CLAN", "mIoU"] == t5.loc["mIoU", "Domain Adaptive: CLAN"]
    assert abs(clan - t5.loc["mIoU (tail)", "Domain Adaptive: CLAN"]) > 2
    assert round(dars[1].loc["DARS (crop 713) 1/8", "Result"], 1) == t5.loc["mIoU", "Semi: DARS"]
    for col in ("Fully: BLV", "Semi: DARS", "Domain Adaptive: CLAN"):
        assert paper.cell("blv", 5, "mIoU (tail)", col)["flag"]
    assert sum(1 for c in paper.cells("blv", 5) if c["flag"]) == 3
    # DARS
    assert dars[1].loc["DARS (crop 361) 1/8", "Baseline"] == dars[4].loc["Baseline", "mIoU"]
    assert dars[1].loc["DARS (crop 361) 1/8", "Result"] == dars[4].loc["DARS + IT", "mIoU"] == 69.64
    assert dars[6]["mIoU"].iloc[0] == dars[4].loc["DARS", "mIoU"]
    assert dars[6]["mIoU"].iloc[2] == dars[9].loc["α=20%", "mIoU (%)"]
    assert dars[6]["mIoU"].iloc[3] == dars[9].loc["α=50%", "mIoU (%)"] == dars[10].loc["β_min=0.0, β_max=0.0", "mIoU (%)"]
    assert dars[6]["mIoU"].iloc[4] == dars[10].loc["β_min=0.2, β_max=0.5", "mIoU (%)"] == 69.64
    assert dars[8].loc["mIoU", "N_p=0"] == dars[1].loc["DARS (crop 713) 1/8", "Oracle"]
    for m in ("Mittal et al.", "CutMix", "DST-CBC", "Mendel et al."):
        assert dars[1].loc[f"{m} 1/8", "Result"] == dars[2].loc[m, "mIoU"]
    assert dars[1].loc["Hung et al. 1/8", "Result"] == 58.8 and dars[2].loc["Hung et al.", "mIoU"] == 57.1
    assert paper.cell("dars", 1, "Hung et al. 1/8", "Result")["flag"].startswith("inconsistent")
    assert paper.cell("dars", 2, "Hung et al.", "mIoU")["flag"].startswith("inconsistent")
    assert same(dars[14].loc["CAG-UDA"].iloc[1:], blv[10].loc["CAG"])  # the two papers cite the same rows
    assert same(dars[14].loc["ADVENT"].iloc[1:], blv[10].loc["ADVENT"])


def test_blv_fig3_gains_match_no_pair_of_rows():
    gains = {c["row"]: c["value"] for c in paper.cells("blv", figure="Fig. 3")}
    assert gains == {"wall": 3.1, "truck": 14.3, "traffic light": 2.3, "trailer": 4.7, "motorcycle": 32.7,
                     "bicycle": 17.6}
    columns = {"wall": "Wall", "truck": "Truck", "traffic light": "T.light", "motorcycle": "M.bike", "bicycle": "Bike"}
    for n in (3, 4):
        df = paper.table("blv", n)
        df.columns = [c.rstrip("*") for c in df.columns]
        assert not any("trailer" in c.lower() for c in df.columns)
        for base in ("DAFormer†", "DAFormer‡", "HRDA‡"):
            for cls, col in columns.items():
                if col in df.columns:
                    assert abs(df.loc[f"{base} (w/ BLV)", col] - df.loc[base, col] - gains[cls]) > 0.05
    assert all(c["flag"].startswith("inconsistent") for c in paper.cells("blv", figure="Fig. 3"))


def test_dars_fig3_road_confidence():
    (c,) = paper.cells("dars", figure="Fig. 3")
    assert (c["row"], c["value"], c["unit"]) == ("road", 81.3, "%")


def test_flags_are_the_ones_we_found():
    found = {(c["paper"], c["table"] or c["figure"], c["row"], c["column"]) for c in paper.flagged()}
    expected = {
        ("blv", 4, "HRDA‡", "mIoU*"), ("blv", 10, "AdaptSeg", "mIoU"), ("blv", 10, "CAG", "mIoU"),
        ("blv", 5, "mIoU (tail)", "Fully: BLV"), ("blv", 5, "mIoU (tail)", "Semi: DARS"),
        ("blv", 5, "mIoU (tail)", "Domain Adaptive: CLAN"),
        ("dars", 1, "Hung et al. 1/8", "Result"), ("dars", 2, "Hung et al.", "mIoU"),
        ("dars", 2, "Deeplabv2", "mIoU"), ("dars", 14, "CAG-UDA", "mIoU"),
    }
    expected |= {("blv", "Fig. 3", c, "IoU gain") for c in
                 ("wall", "truck", "traffic light", "trailer", "motorcycle", "bicycle")}
    expected |= {("dars", 4, r, "Tail mIoU") for r in paper.table("dars", 4).index}
    assert found == expected
    assert paper.cell("blv", 5, "mIoU (tail)", "Semi: DARS")["flag"].startswith("unsourced")
    assert paper.cell("dars", 2, "Deeplabv2", "mIoU")["flag"].startswith("ambiguous")


# ---------------------------------------------------------------------------------------- the API
def test_table_frame():
    df = paper.table("dars", 5)
    assert df.loc["DARS", "D_KL"] == 0.0005 and df.attrs["unit"] == "KL"
    assert "KL divergence" in df.attrs["caption"]
    assert paper.table("blv-t8").equals(paper.table("blv", 8))
    t14 = paper.table("dars", 14)
    assert t14.loc["CyCADA", "Backbone"] == "VGG-16" and t14.loc["DARS (TD)", "mIoU"] == 55.0
    t11 = paper.table("blv", 11)
    assert np.isnan(t11.loc["AdaptSeg", "mIoU"]) and t11.loc["AdaptSeg", "mIoU*"] == 45.9
    assert paper.table("dars", 1, "std").loc["CutMix 1/8", "Result"] == 1.24
    assert paper.table("blv", 1, "delta").loc["Vit-B16 + UperHead + BLV", "mIoU"] == 1.20
    assert paper.table("blv", 12).loc["HRNet-18 + OCRHead", "w/o BLV"] == pytest.approx(20 + 11 / 60, abs=1e-4)
    assert paper.table("blv", 3).attrs["flags"] == []
    assert len(paper.table("dars", 4).attrs["flags"]) == 10
    assert paper.value("blv", 6, "Gaussian", "mIoU") == 59.0
    info = paper.info("blv", 1)
    assert info["methods"][0] == "HRNet-18 + OCRHead + BLV" and info["baselines"][0] == "HRNet-18 + OCRHead"
    for name in paper.PAPERS:
        for n in paper.tables(name):
            meta, df = paper.info(name, n), paper.table(name, n)
            axis = set(df.index) if meta["compare"] == "rows" else set(df.columns)
            assert set(meta["baselines"]) <= axis and set(meta["methods"]) <= axis, (name, n)


@pytest.mark.parametrize("call, named", [
    (lambda: paper.table("x", 1), "'x'"),
    (lambda: paper.table(None, 1), "None"),
    (lambda: paper.table(3, 1), "3"),
    (lambda: paper.table("blv", 0), "0"),
    (lambda: paper.table("blv", 99), "99"),
    (lambda: paper.table("dars", 16), "16"),
    (lambda: paper.table("blv", 15), "15"),
    (lambda: paper.table("blv", "4"), "'4'"),
    (lambda: paper.table("blv", 4.0), "4.0"),
    (lambda: paper.table("blv", True), "True"),
    (lambda: paper.table("blv", None), "None"),
    (lambda: paper.table("blv-t99"), "99"),
    (lambda: paper.table("blv", 4, field="values"), "'values'"),
    (lambda: paper.tables("BLV"), "'BLV'"),
    (lambda: list(paper.cells("x")), "'x'"),
    (lambda: list(paper.cells("blv", 0)), "0"),
    (lambda: list(paper.cells(table=99)), "99"),
    (lambda: list(paper.cells(table="3")), "'3'"),
    (lambda: list(paper.cells("dars", figure="Fig. 9")), "Fig. 9"),
    (lambda: list(paper.cells("dars", 3, figure="Fig. 3")), "Fig. 3"),
    (lambda: paper.cell("dars", 4, "DARZ", "mIoU"), "'DARZ'"),
    (lambda: paper.cell("dars", 4, "DARS", "lorry"), "'lorry'"),
    (lambda: paper.info("dars", 0), "0"),
])
def test_bad_inputs(call, named):
    with pytest.raises(BlvnbError) as err:
        call()
    assert isinstance(err.value, paper.PaperDataError)
    assert named in str(err.value)


def test_errors_list_what_exists():
    with pytest.raises(paper.PaperDataError, match=r"'blv', 'dars'"):
        paper.table("voc", 1)
    with pytest.raises(paper.PaperDataError, match=r"\[1, 2, 3, .*15\]"):
        paper.table("dars", 0)
    with pytest.raises(paper.PaperDataError, match="DARS \\+ IT"):
        paper.cell("dars", 4, "DARZ", "mIoU")


def test_cells_are_copies():
    c = paper.cells("blv", 1)[0]
    c["value"] = -1.0
    assert paper.cells("blv", 1)[0]["value"] == 79.22
