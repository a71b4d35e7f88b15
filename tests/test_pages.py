"""The generated includes of the hand-written pages (blvnb.pages): numbers from the benchmark JSON and the
registry, never typed into book/*.md."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import pytest

from blvnb import pages
from blvnb.errors import BlvnbError

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"```\{include\}\s+generated/includes/(\S+)\.md")


def _bench():
    spec = importlib.util.spec_from_file_location("quick_calibration", ROOT / "bench" / "quick_calibration.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake(diffs: list[float]) -> dict:
    """A JSON as bench/quick_calibration.py writes it, with BLV − CE mIoU = ``diffs`` per seed."""
    from blvnb.classes import BLV_TAIL, CLASSES

    rows = []
    for seed, d in enumerate(diffs):
        iou = [50.0 + j for j in range(len(CLASSES))]
        iou[CLASSES.index("rider")] = 0.0
        ce = {"mIoU": 40.0 + seed, "mIoU_head_blv": 60.0 + seed, "mIoU_tail_blv": 12.0 + seed, "iou": iou}
        blv = {"mIoU": ce["mIoU"] + d, "mIoU_head_blv": ce["mIoU_head_blv"] + d / 2,
               "mIoU_tail_blv": ce["mIoU_tail_blv"] + 2 * d, "iou": [v + d if v else 0.0 for v in iou]}
        rows.append({"seed": seed, "ce": ce, "blv": blv})
    cfg = {"size": [128, 256], "n_train": 200, "n_val": 60, "data_seed": 0, "model": "r10t-fpn", "crop": [64, 128],
           "scale_range": [0.75, 1.5], "batch_size": 8, "iters": 70, "lr": None, "weight_decay": None, "threads": 1,
           "eval_mode": "whole", "pretrained": None, "loss_options": {}}
    return {"bench": "quick_calibration", "command": "python bench/quick_calibration.py", "commit": "0" * 40,
            "uncommitted_changes": False, "date": "2026-12-07 23:00 UTC", "machine": {"cpu_count": 2}, "profile": "quick",
            "seeds": list(range(len(diffs))), "classes": list(CLASSES), "tail_classes": [CLASSES[i] for i in BLV_TAIL],
            "configs": {"ce": {"config": cfg, "recipe": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5e-4,
                                                          "schedule": "poly"}},
                        "blv": {"config": {**cfg, "loss_options": {"sigma": 6.0}}}},
            "timings": {"pretraining_cpu": 0.0, "pretraining_wall": 0.0, "cpu_per_run_median": 20.0,
                        "cpu_per_run_range": [19.0, 23.0], "train_seconds_median": 18.0},
            "summary": _bench().analyse(rows)}


def test_fragments_show_the_json_numbers():
    fr = pages.calibration_fragments(_fake([-1.0, -1.2, -0.8]))
    assert "| 1 | 41.00 | 61.00 | 13.00 | 39.80 | 60.40 | 10.60 | −1.20 | −0.60 | −2.40 |" in fr["pairs"]
    assert "| mean | 41.00 |" in fr["pairs"]
    assert "BLV − CE mIoU is −1.00" in fr["pairs_text"] and "which excludes 0" in fr["pairs_text"]
    assert "below cross entropy in 3 of the 3 seeds" in fr["pairs_text"]
    assert "At 0 in every seed: rider." in fr["per_class"]
    assert "lr 0.01 (the model's recipe)" in fr["settings"] and "70 iterations" in fr["settings"]
    assert "commit `0000000000`" in fr["provenance"]
    # a mixed sign: the interval includes 0, and the sentence says so
    mixed = pages.calibration_fragments(_fake([-1.0, 0.5, 0.1]))
    assert "which includes 0" in mixed["pairs_text"] and "in 1 of the 3 seeds" in mixed["pairs_text"]


def test_missing_or_foreign_json_is_a_clear_error(tmp_path):
    with pytest.raises(BlvnbError, match="missing.*quick_calibration.py"):
        pages.read_calibration(tmp_path / "none.json")
    (tmp_path / "other.json").write_text(json.dumps({"bench": "something else"}))
    with pytest.raises(BlvnbError, match="other.json has no 'summary'"):
        pages.read_calibration(tmp_path / "other.json")


def test_committed_calibration_names_a_real_commit_and_the_book_runs():
    data = pages.read_calibration(ROOT / pages.CALIBRATION)
    assert data["command"].startswith("python bench/quick_calibration.py")
    assert data["table"] == "blv-t1" and data["profile"] == "quick"
    assert len(data["seeds"]) >= 3
    known = subprocess.run(["git", "cat-file", "-e", f"{data['commit']}^{{commit}}"], cwd=ROOT, capture_output=True)
    assert known.returncode == 0, f"{data['commit']} is not a commit of this repository"
    # the runs measured are the quick book's own (BLV Table 1's arms: the same store keys)
    from blvnb.experiments import tables

    keys = {e.key for e in tables.entries("blv-t1", "quick", data["seeds"])}
    measured = {r[a]["key"] for r in data["summary"]["per_seed"] for a in ("ce", "blv")}
    assert measured <= keys, "the JSON was measured on other runs than the book's (re-run the bench)"


def test_every_include_of_the_pages_is_generated(tmp_path):
    (tmp_path / pages.CALIBRATION).parent.mkdir(parents=True)
    (tmp_path / pages.CALIBRATION).write_text((ROOT / pages.CALIBRATION).read_text())
    written = {p.stem for p in pages.write_includes(tmp_path)}
    wanted = {m for page in (ROOT / "book").glob("*.md") for m in INCLUDE.findall(page.read_text())}
    assert wanted, "no page includes a generated fragment"
    assert wanted <= written, wanted - written


def test_pages_type_no_measured_table():
    """quick_profile.md's measured sections and models.md's "ours" columns come from includes only."""
    text = (ROOT / "book" / "quick_profile.md").read_text()
    measured = text[:text.index("## The whole quick book, measured")]  # the dated section after it is typed
    prose = re.sub(r"\$\$.*?\$\$", "", measured, flags=re.S)  # the t-quantile formula
    assert not re.findall(r"\d+\.\d+", prose), re.findall(r".{30}\d+\.\d+.{10}", prose)
    models = (ROOT / "book" / "models.md").read_text()
    assert not re.findall(r"^\|.*\bours\b.*\|$", models, flags=re.M)
    assert not re.findall(r"^\| model \| params", models, flags=re.M)


def test_the_from_scratch_start_is_shown_beside_the_fine_tuning_one():
    fine = _fake([-1.0, -1.2, -0.8])  # BLV below CE in every seed: the interval is below 0
    assert "no from-scratch runs" in pages.calibration_fragments(fine)["scratch"]
    scratch_rows = _fake([1.0, 1.5, 1.2])["summary"]  # from scratch BLV above CE in every seed
    fine["from_scratch"] = {"settings": {"pretrained": None, "iters": 900, "batch_size": 16, "lr": 0.05},
                            "summary": scratch_rows}
    text = pages.calibration_fragments(fine)["scratch"]
    assert "| fine-tuned from the toy pretraining | 41.00 → 40.00 | −1.00 [" in text
    assert "from random initialisation (900 steps, batch 16, lr 0.05) | 41.00 → 42.23 | +1.23 [" in text
    assert "the interval is below 0 fine-tuned and above 0 from scratch" in text
    assert "opposite directions for mIoU and tail mIoU" in text and "depends on where training starts" in text
    fine["from_scratch"]["summary"] = _fake([-0.5, -0.9, -0.7])["summary"]
    assert "The two starts agree on both" in pages.calibration_fragments(fine)["scratch"]
    fine["from_scratch"]["summary"] = _fake([-2.0, 0.5, -0.3])["summary"]  # an interval across 0
    text = pages.calibration_fragments(fine)["scratch"]
    assert "do not contradict each other" in text and "straddles 0" in text


def test_the_quick_page_says_why_sweep_points_run_once_from_the_plans_own_counts():
    from blvnb.experiments import execute

    text = pages.sweep_fragment("quick")
    now, full = execute.plan_for("quick"), execute.plan_for("quick", seeds=(0, 1, 2))
    assert len(full) > len(now)
    assert f"**{len(full)} runs instead of {len(now)}**" in text and "first seed only" in text
    assert "every arm of every table runs at each of its 3 seeds" in pages.sweep_fragment("gpu")
