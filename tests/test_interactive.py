"""Interactive figures: computed by the library, drawn by plotly from the book's own copy of plotly.js."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from blvnb import reproduce
from blvnb.errors import BlvnbError
from blvnb.viz import interactive


def test_plotly_js_is_copied_not_linked(tmp_path):
    dst = interactive.write_plotly_js(tmp_path / "_static")
    assert dst.read_bytes() == interactive.plotly_js_path().read_bytes() and dst.stat().st_size > 1_000_000
    # figures never point at a CDN: their HTML has no script src at all
    v = {"CE": [[0.5] * 19, [0.6] * 19, [0.55] * 19]}
    html = interactive.iou_explorer(v, title="t").html()
    assert "cdn" not in html.lower() and "<script src" not in html and "Plotly.newPlot" in html


def test_blv_toy_is_paired_and_deterministic():
    a = interactive.blv_toy((0.0, 6.0), seeds=(0, 1), steps=30, grid=20)
    b = interactive.blv_toy((0.0, 6.0), seeds=(0, 1), steps=30, grid=20)
    assert np.array_equal(a.accuracy, b.accuracy) and np.array_equal(a.regions, b.regions)
    assert a.accuracy.shape == (2, 2, 3) and a.regions.shape == (2, 20, 20) and a.rare == 2
    assert a.counts == (1000, 200, 20) and a.features.shape == (2, 1220, 2)
    assert not np.array_equal(a.features[0], a.features[1])  # σ changes what was learned
    fig = interactive.blv_toy_figure(a)
    layout = fig.plotly.layout
    steps = layout.sliders[0].steps
    assert len(steps) == 2 and steps[0].label == "CE"
    # each step shows only its own σ's traces (and the fixed ones)
    vis0, vis1 = steps[0].args[0]["visible"], steps[1].args[0]["visible"]
    assert vis0 != vis1 and len(vis0) == len(fig.plotly.data)
    bundle = fig._repr_mimebundle_()
    assert bundle["image/png"][:4] == b"\x89PNG" and "blvnb-interactive" in bundle["text/html"]
    with pytest.raises(BlvnbError):
        interactive.blv_toy((-1.0,), seeds=(0,))


def test_dars_ratio_sweep_keeps_dars_on_the_prior():
    from blvnb.pseudo import distribution

    prior = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    probs = distribution.synthetic_probabilities(2, (32, 32), prior, generator=torch.Generator().manual_seed(0))
    sw = interactive.dars_ratio_sweep(probs, prior, alphas=(0.2, 0.5), class_names=list("abcd"))
    assert sw.shares.shape == (2, 4, 4) and sw.methods == ("ST", "CBST", "DA", "DARS")
    assert np.allclose(sw.shares.sum(-1), 1.0)
    dars = sw.methods.index("DARS")
    assert (sw.kl[:, dars] < 1e-2).all()
    assert (sw.kl[:, dars] <= sw.kl[:, sw.methods.index("ST")]).all()
    fig = interactive.dars_ratio_figure(sw)
    assert [s.label for s in fig.plotly.layout.sliders[0].steps] == ["0.2", "0.5"]
    with pytest.raises(BlvnbError, match="ratio"):
        interactive.dars_ratio_sweep(probs, prior, alphas=(0.0,))


def test_iou_explorer_hover_lists_every_seed():
    rng = np.random.default_rng(0)
    v = {"CE": rng.uniform(0, 1, (3, 19)).tolist(), "BLV": rng.uniform(0, 1, (3, 19)).tolist()}
    fig = interactive.iou_explorer(v, seeds=[4, 5, 6], tail=[3], title="T1")
    bars = fig.plotly.data
    assert [b.name for b in bars] == ["CE", "BLV"] and bars[0].x[3] == "wall*"
    assert "seed 4:" in bars[0].customdata[0] and "seed 6:" in bars[0].customdata[0]
    assert bars[0].y[0] == pytest.approx(100 * np.mean([r[0] for r in v["CE"]]))
    with pytest.raises(BlvnbError, match="differ"):
        interactive.iou_explorer({"a": [[0.1] * 19], "b": [[0.1] * 19, [0.2] * 19]}, title="x")


def test_run_box_reads_the_parameters_cell(tmp_path):
    root = Path(__file__).resolve().parents[1]
    params = reproduce.read_parameters(root / "notebooks" / "long_tail_data.ipynb")
    assert [p[0] for p in params][:2] == ["profile", "data_root"]
    box = reproduce.run_box("long_tail_data", root, "smoke")
    for prof in ("smoke", "quick", "gpu", "paper"):
        assert f"--cwd . -p profile {prof}" in box
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "x.ipynb").write_text((root / "notebooks" / "long_tail_data.ipynb").read_text())
    (tmp_path / "_config.yml").write_text((root / "_config.yml").read_text())
    # no repository URL in _config.yml and no git origin (tmp_path is no checkout): no launch links
    assert "Binder" not in reproduce.run_box("x", tmp_path, "smoke")
    (tmp_path / "_config.yml").write_text("repository:\n  url: https://github.com/someone/blvnb\n  branch: dev\n")
    links = dict(reproduce.launch_links("x", tmp_path))
    assert links["Colab"].endswith("github/someone/blvnb/blob/dev/notebooks/x.ipynb")
    assert "v2/gh/someone/blvnb/dev?labpath=notebooks/x.ipynb" in links["Binder"]


def test_status_page_from_saved_verdicts(tmp_path, monkeypatch):
    from blvnb import claims

    monkeypatch.delenv("BLVNB_VERDICTS", raising=False)
    (tmp_path / "book").mkdir()
    v = claims.verdict("dars-t5-kl", {"dars": [1e-5, 2e-5, 1e-5]}, profile="quick", seeds=[0, 1, 2],
                       chapter="dars_tables")
    claims.save(v, tmp_path / "book" / "generated" / "verdicts")
    g = claims.verdict("dars-t5-kl", {"dars": [0.01, 0.02, 0.015]}, profile="gpu", seeds=[0, 1, 2])
    claims.save(g, tmp_path / "book" / "verdicts")  # a committed record of another profile
    page = reproduce.write_status(tmp_path, profile="quick")
    text = page.read_text()
    records = json.loads((tmp_path / "book" / "generated" / "reproduction.json").read_text())
    assert len(records) == len(claims.CLAIMS)
    rec = next(r for r in records if r["claim"] == "dars-t5-kl")
    assert rec["verdict"] == "reproduced" and rec["profile"] == "quick" and rec["seeds"] == [0, 1, 2]
    assert rec["profiles"]["gpu"]["verdict"] == "not reproduced"
    other = next(r for r in records if r["claim"] == "blv-t7/gta")
    assert other["verdict"] == "not run" and other["would_run"] == "gpu"
    assert {r["paper"] for r in records} == {"blv", "dars"} and all(r["table"] for r in records)
    assert "verdict (quick)" in text and "verdict (gpu)" in text
    assert 'href="generated/dars_tables.html#verdict-dars-t5-kl"' in text
    # every claim's row carries the id the chapters' verdicts link to (claims.status_link)
    assert all(f'<span id="{claims.status_anchor(c.id)}"></span>' in text for c in claims.CLAIMS)
    assert claims.status_link("dars-t5-kl").startswith('<a href="../reproduction.html#status-dars-t5-kl"')
    # the summary rows, computed from CLAIMS: in quick one DARS claim reproduced, the rest not run; in gpu
    # one DARS claim not reproduced; no BLV claim run in either (implementation checks are listed apart)
    n = {p: sum(c.paper == p and c.kind == "reproduction" for c in claims.CLAIMS) for p in ("blv", "dars")}

    def row(paper, prof, **counts):
        cells = [counts.get(o.replace(" ", "_"), 0) for o in claims.OUTCOMES]
        cells[claims.OUTCOMES.index("not run")] = n[paper] - sum(counts.values())
        return f"| {paper.upper()} | `{prof}` | " + " | ".join(map(str, cells)) + f" | {n[paper]} |"

    summary = [ln for ln in text.splitlines() if ln.startswith(("| BLV |", "| DARS |"))]
    assert summary == [row("blv", "quick"), row("blv", "gpu"), row("dars", "quick", reproduced=1),
                       row("dars", "gpu", not_reproduced=1)]


def test_paper_values_come_from_the_cells(monkeypatch):
    """The status page's paper column reads blvnb.paper.cells (a small made-up fixture here, not the paper's)."""
    import blvnb.paper
    from blvnb import claims

    fixture = [
        {"paper": "dars", "table": 4, "row": "ST", "column": "mIoU", "value": 1.0, "cited": False},
        {"paper": "dars", "table": 4, "row": "ST + TS", "column": "mIoU", "value": 2.0, "cited": False},
        {"paper": "dars", "table": 4, "row": "DARS", "column": "mIoU", "value": 3.0, "cited": False},
        {"paper": "dars", "table": 4, "row": "DARS", "column": "Tail mIoU", "value": 4.0, "cited": False},
        {"paper": "blv", "table": 1, "row": "ResNet50 + PSPHead", "column": "mIoU", "value": 5.0, "cited": False},
        {"paper": "blv", "table": 1, "row": "ResNet50 + PSPHead + BLV", "column": "mIoU", "value": 6.0, "cited": False},
    ]

    def cells(paper=None, table=None):
        return [c for c in fixture if paper in (None, c["paper"]) and table in (None, c["table"])]

    monkeypatch.setattr(blvnb.paper, "cells", cells, raising=False)
    got = reproduce.paper_values(claims.get("dars-t4-order"))
    assert got == {"st": 1.0, "st-ts": 2.0, "dars": 3.0}  # arms without a cell are left out, "ST" is not "ST + TS"
    assert reproduce.paper_values(claims.get("dars-t4-tail")) == {"dars": 4.0}
    assert reproduce.paper_values(claims.get("blv-t1/r50-psp")) == {"blv": 6.0, "ce": 5.0}
    assert reproduce.paper_values(claims.get("blv-fig3")) == {}
