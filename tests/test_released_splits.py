"""The papers' released split lists (DARS, U2PL): the shipped files, and the paper profile's runs reading them."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from blvnb.data import splits
from blvnb.data.splits import RELEASED_DIR, RELEASED_SPLITS, released_folder, released_split
from blvnb.errors import ConfigError, DatasetError
from blvnb.experiments import tables
from blvnb.experiments.runs import RunConfig, RunData

EXPECTED = {  # (source, data set, fraction) → (labelled, unlabelled), counted from the released files
    ("dars", "cityscapes", "1/8"): (372, 2603),
    ("dars", "cityscapes", "1/4"): (744, 2231),
    ("dars", "voc", None): (1464, 9118),
    ("u2pl", "cityscapes", "1/16"): (186, 2789),
    ("u2pl", "cityscapes", "1/8"): (372, 2603),
    ("u2pl", "cityscapes", "1/4"): (744, 2231),
    ("u2pl", "cityscapes", "1/2"): (1488, 1487),
}


def test_shipped_lists_have_the_released_counts_and_are_disjoint():
    assert set(RELEASED_SPLITS) == set(EXPECTED)
    train = None
    for key, (n_l, n_u) in EXPECTED.items():
        s = released_split(*key)
        assert (len(s["labeled"]), len(s["unlabeled"])) == (n_l, n_u), key
        assert not set(s["labeled"]) & set(s["unlabeled"]), key
        assert s["labeled"] == sorted(set(s["labeled"])) and s["unlabeled"] == sorted(set(s["unlabeled"]))
        if key[1] == "cityscapes":  # each pair covers the same 2975 training images
            every = set(s["labeled"]) | set(s["unlabeled"])
            train = every if train is None else train
            assert every == train and len(every) == 2975, key
            assert all(n.count("_") == 2 and not n.endswith(".png") for n in every)  # image stems
    voc = released_split("dars", "voc", None)
    assert voc["labeled"][0] == "2007_000032" and len(set(voc["labeled"]) | set(voc["unlabeled"])) == 10582
    # DARS's splits nest (1/8 ⊂ 1/4); U2PL's 1/8 is another draw than DARS's
    labeled = {(src, f): released_split(src, "cityscapes", f)["labeled"] for src, d, f in EXPECTED if d == "cityscapes"}
    assert set(labeled["dars", "1/8"]) < set(labeled["dars", "1/4"])
    assert len(set(labeled["u2pl", "1/8"]) & set(labeled["dars", "1/8"])) < 372


def test_each_file_names_its_source_and_ships_as_package_data():
    files = sorted(p for p in RELEASED_DIR.rglob("*") if p.is_file())
    assert len(files) == 2 * len(RELEASED_SPLITS) + 1  # the lists and the README
    readme = (RELEASED_DIR / "README.md").read_text()
    for key, folder in RELEASED_SPLITS.items():
        for part in ("labeled", "unlabeled"):
            head = (RELEASED_DIR / folder / f"{part}.txt").read_text().splitlines()[0]
            repo = "CVMI-Lab/DARS" if key[0] == "dars" else "Haochen-Wang409/U2PL"
            assert head.startswith("#") and repo in head and "@" in head, head
        assert f"`{folder}`" in readme
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["blvnb.data"]
    data_dir = RELEASED_DIR.parent
    for f in files:
        rel = f.relative_to(data_dir).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not package data"


def test_wrong_sources_and_fractions_are_config_errors():
    with pytest.raises(ConfigError, match="unknown source"):
        released_split("semseg", "cityscapes", "1/8")
    with pytest.raises(ConfigError, match=r"dars released no split list for cityscapes at labelled fraction '1/16'"):
        released_split("dars", "cityscapes", "1/16")
    with pytest.raises(ConfigError, match="released no split list for scannet"):
        released_split("u2pl", "scannet", "1/8")
    assert released_folder("dars", "scannet", "1/8") is None
    with pytest.raises(ConfigError, match="splits must be one of"):
        RunConfig.from_profile("paper", data_root="/x", splits="ours")
    with pytest.raises(ConfigError, match="dars released no split list for cityscapes at labelled fraction '1/16'"):
        RunConfig.from_profile("paper", strategy="mean-teacher", data_root="/x", labeled_fraction="1/16",
                               splits="dars")
    with pytest.raises(ConfigError, match="u2pl released no split list"):
        RunConfig.from_profile("quick", strategy="dars-rounds", dataset="scannet", labeled_fraction="1/8",
                               splits="u2pl")


def test_broken_shipped_list_is_a_dataset_error(tmp_path, monkeypatch):
    folder = tmp_path / "dars" / "cityscapes_1_8"
    folder.mkdir(parents=True)
    monkeypatch.setattr(splits, "RELEASED_DIR", tmp_path)
    (folder / "labeled.txt").write_text("# header\na_000000_000019\n")
    with pytest.raises(DatasetError, match="unlabeled.txt is missing; it ships with blvnb"):
        released_split("dars", "cityscapes", "1/8")
    (folder / "unlabeled.txt").write_text("a_000000_000019\n")
    with pytest.raises(DatasetError, match="both labelled and unlabelled, e.g. a_000000_000019"):
        released_split("dars", "cityscapes", "1/8")


def test_which_list_each_profile_and_table_uses():
    """paper: the released list of the run's paper (DARS's for its rounds, U2PL's for BLV's mean teacher),
    ours where none was released (ScanNet, fully labelled runs); every other profile: ours, not in the key."""
    def used(table, profile):
        return {(e.cfg.strategy, e.cfg.dataset, e.cfg.labeled_fraction, e.cfg.splits)
                for e in tables.entries(table, profile, seeds=[0], data_root="/data" if profile == "paper" else None)}

    assert ("dars-rounds", "cityscapes", "1/8", "dars") in used("dars-t1", "paper")
    assert ("dars-rounds", "cityscapes", "1/4", "dars") in used("dars-t1", "paper")
    assert ("supervised", "cityscapes", None, "nested") in used("dars-t1", "paper")  # the oracle
    assert {s for *_, s in used("blv-t2", "paper")} == {"u2pl"}
    assert {f for _, _, f, _ in used("blv-t2", "paper")} == {"1/16", "1/8", "1/4", "1/2"}
    assert used("dars-t3", "paper") == {("dars-rounds", "voc", None, "dars")}
    assert {s for *_, s in used("dars-t13", "paper")} == {"nested"}  # ScanNet: no released list
    assert ("dars-rounds", "cityscapes", "1/8", "dars") in used("blv-t5", "paper")
    assert ("mean-teacher", "cityscapes", "1/8", "u2pl") in used("blv-t5", "paper")
    for profile in ("quick", "gpu"):
        assert {s for t in ("dars-t1", "blv-t2") for *_, s in used(t, profile)} == {"nested"}
    cfg = tables.entries("dars-t1", "paper", seeds=[0], data_root="/data")[0].cfg
    assert cfg.key_dict()["splits"] == "dars"
    quick = tables.entries("dars-t1", "quick", seeds=[0])[0].cfg
    assert "splits" not in quick.key_dict()
    assert RunConfig.from_profile("paper", data_root="/d", splits="nested").key() == \
        RunConfig.from_profile("paper", data_root="/d").key()  # fully labelled: no list, no key change


def _tree(root: Path, names) -> Path:
    """A Cityscapes-layout training set of tiny images with the given stems (labels alongside)."""
    ok, png = cv2.imencode(".png", np.zeros((2, 4, 3), np.uint8))
    ok2, lab = cv2.imencode(".png", np.full((2, 4), 7, np.uint8))
    assert ok and ok2
    for n in names:
        city = n.rsplit("_", 2)[0]
        for sub, suffix, data in (("leftImg8bit", "_leftImg8bit.png", png), ("gtFine", "_gtFine_labelIds.png", lab)):
            d = root / "cityscapes" / sub / "train" / city
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{n}{suffix}").write_bytes(data.tobytes())
    return root


@pytest.fixture(scope="module")
def cityscapes_train(tmp_path_factory):
    s = released_split("dars", "cityscapes", "1/8")
    return _tree(tmp_path_factory.mktemp("real"), s["labeled"] + s["unlabeled"])


def _indices(cfg):
    data = RunData(cfg, cfg.key(), torch.device("cpu"))
    names = data.base_dataset("cityscapes", "train").names
    lab, unl = data.split_indices(cfg.labeled_fraction)
    return [names[i] for i in lab], [names[i] for i in unl]


def test_paper_runs_read_the_released_lists_from_disk(cityscapes_train):
    """DARS Table 1 (1/8, 1/4) and BLV Table 2 (1/16 … 1/2) on a Cityscapes tree of the listed images."""
    seen = set()
    for table in ("dars-t1", "blv-t2"):
        for e in tables.entries(table, "paper", seeds=[0], data_root=str(cityscapes_train)):
            c = e.cfg
            if c.splits == "nested" or (c.splits, c.labeled_fraction) in seen:
                continue
            seen.add((c.splits, c.labeled_fraction))
            lab, unl = _indices(c)
            want = released_split(c.splits, "cityscapes", c.labeled_fraction)
            assert (lab, unl) == (want["labeled"], want["unlabeled"]), (table, c.labeled_fraction)
            assert (len(lab), len(unl)) == EXPECTED[(c.splits, "cityscapes", c.labeled_fraction)]
    assert seen == {("dars", "1/8"), ("dars", "1/4"), ("u2pl", "1/16"), ("u2pl", "1/8"), ("u2pl", "1/4"),
                    ("u2pl", "1/2")}
    # splits="nested" on the same images: our own seeded draw, another labelled set
    own = RunConfig.from_profile("paper", strategy="dars-rounds", data_root=str(cityscapes_train),
                                 labeled_fraction="1/8", splits="nested")
    lab, _ = _indices(own)
    assert len(lab) == 372 and lab != released_split("dars", "cityscapes", "1/8")["labeled"]


def test_a_listed_image_missing_on_disk_is_a_dataset_error(tmp_path, monkeypatch):
    folder = tmp_path / "lists" / "dars" / "cityscapes_1_8"
    folder.mkdir(parents=True)
    (folder / "labeled.txt").write_text("aachen_000000_000019\naachen_000009_000019\n")
    (folder / "unlabeled.txt").write_text("aachen_000001_000019\n")
    monkeypatch.setattr(splits, "RELEASED_DIR", tmp_path / "lists")
    root = _tree(tmp_path / "data", ["aachen_000000_000019", "aachen_000001_000019", "aachen_000002_000019"])
    cfg = RunConfig.from_profile("paper", strategy="dars-rounds", data_root=str(root), labeled_fraction="1/8")
    assert cfg.splits == "dars"
    with pytest.raises(DatasetError, match=r"1 of the 2 labeled images .*aachen_000009_000019 \(list .*labeled.txt\)"):
        _indices(cfg)
    (folder / "labeled.txt").write_text("aachen_000000_000019\n")  # the image on disk in neither list is left out
    assert _indices(cfg) == (["aachen_000000_000019"], ["aachen_000001_000019"])
