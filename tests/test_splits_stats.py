"""Nested splits and label statistics, against hand-computed values."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blvnb.data.cityscapes import CityscapesDataset
from blvnb.data.splits import (
    fraction_text,
    labeled_count,
    load_split,
    nested_splits,
    parse_fraction,
    save_splits,
)
from blvnb.data.stats import (
    class_shares,
    image_occurrence,
    label_statistics,
    object_sizes,
    occurrence_size_groups,
    pixel_counts,
)
from blvnb.errors import ConfigError, DatasetError

# --- splits --------------------------------------------------------------------------------------

CS_TRAIN = [f"city_{i:06d}_000019" for i in range(2975)]


def test_fraction_text_and_parsing():
    assert parse_fraction("1/8") == Fraction(1, 8) == parse_fraction(0.125) == parse_fraction("1_8")
    assert parse_fraction("0.0625") == Fraction(1, 16)
    assert fraction_text(1 / 16) == "1/16" and fraction_text("2/4") == "1/2"
    for bad in ("abc", "1/0", 1.0, 0, "3/2"):
        with pytest.raises(ConfigError):
            parse_fraction(bad)


def test_labeled_counts_match_the_papers():
    assert [labeled_count(2975, f) for f in ("1/16", "1/8", "1/4", "1/2")] == [186, 372, 744, 1488]
    assert labeled_count(10, "1/4") == 3  # 2.5 rounds up
    assert labeled_count(6, "1/4") == 2  # 1.5 rounds up


def test_nested_splits_are_nested_and_deterministic():
    splits = nested_splits(reversed(CS_TRAIN), seed=0)
    assert list(splits) == ["1/16", "1/8", "1/4", "1/2"]
    assert [len(s["labeled"]) for s in splits.values()] == [186, 372, 744, 1488]
    keys = list(splits)
    for small, big in zip(keys, keys[1:]):
        assert set(splits[small]["labeled"]) < set(splits[big]["labeled"])
    for s in splits.values():
        assert s["labeled"] == sorted(s["labeled"]) and s["unlabeled"] == sorted(s["unlabeled"])
        assert not set(s["labeled"]) & set(s["unlabeled"])
        assert sorted(s["labeled"] + s["unlabeled"]) == CS_TRAIN
    assert nested_splits(CS_TRAIN, seed=0) == splits  # input order does not matter
    assert nested_splits(CS_TRAIN, seed=1)["1/8"]["labeled"] != splits["1/8"]["labeled"]
    # not simply the first names in sorted order
    assert splits["1/16"]["labeled"] != CS_TRAIN[:186]


def test_nested_splits_too_few_names():
    with pytest.raises(DatasetError, match="1/16 of 7 names would have 0 labelled"):
        nested_splits([f"n{i}" for i in range(7)])
    assert len(nested_splits([f"n{i}" for i in range(8)])["1/16"]["labeled"]) == 1  # 0.5 -> 1
    with pytest.raises(DatasetError, match="duplicates"):
        nested_splits(["a", "a", "b"], fractions=("1/2",))


def test_save_and_load_splits(tmp_path):
    splits = nested_splits(CS_TRAIN[:100], seed=3)
    save_splits(splits, tmp_path / "splits", seed=3)
    text = (tmp_path / "splits/1_8/labeled.txt").read_text().splitlines()
    assert text[0].startswith("#") and "seed 3" in text[0] and len(text) == 1 + 13
    assert json.loads((tmp_path / "splits/splits.json").read_text())["seed"] == 3
    for key in splits:
        assert load_split(tmp_path / "splits", key) == splits[key]
    assert load_split(tmp_path / "splits", 0.25) == splits["1/4"]
    with pytest.raises(DatasetError, match="1_32/labeled.txt is missing"):
        load_split(tmp_path / "splits", "1/32")
    (tmp_path / "splits/1_2/unlabeled.txt").write_text("# nothing\n\n")
    with pytest.raises(DatasetError, match="is empty"):
        load_split(tmp_path / "splits", "1/2")


# --- statistics ----------------------------------------------------------------------------------

I = 255
# class 2 forms ONE 8-connected component of 5 pixels (two 4-connected ones: 3 + 2)
L1 = np.array([[0, 0, 1, 1], [0, 0, I, 1], [2, I, 2, 2], [2, 2, I, I]], np.uint8)
# class 3 forms two components of 2 pixels
L2 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [3, I, 3, 3], [3, I, I, I]], np.uint8)


def test_statistics_by_hand():
    st = label_statistics([L1, torch.from_numpy(L2).long()], num_classes=4, progress=False)
    assert st.num_images == 2 and st.num_pixels == 32
    assert st.pixel_counts.dtype == np.int64 and st.pixel_counts.tolist() == [12, 3, 5, 4]
    np.testing.assert_allclose(st.shares, [12 / 24, 3 / 24, 5 / 24, 4 / 24])
    np.testing.assert_allclose(st.occurrence, [1.0, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(st.area_when_present, [(4 / 16 + 8 / 16) / 2, 3 / 16, 5 / 16, 4 / 16])
    assert {c: sorted(v.tolist()) for c, v in st.object_sizes.items()} == {0: [4, 8], 1: [3], 2: [5], 3: [2, 2]}
    assert st.groups(0.5, 0.2) == {1: [0], 2: [], 3: [2, 3], 4: [1]}


def test_single_purpose_functions_agree():
    labels = [L1, L2]
    assert pixel_counts(labels, num_classes=4, progress=False).tolist() == [12, 3, 5, 4]
    np.testing.assert_allclose(image_occurrence(labels, num_classes=4, progress=False), [1, 0.5, 0.5, 0.5])
    sizes, area = object_sizes(labels, num_classes=5, progress=False)
    assert sizes[4].size == 0 and np.isnan(area[4]) and sorted(sizes[0].tolist()) == [4, 8]
    np.testing.assert_allclose(class_shares([1, 3]), [0.25, 0.75])


def test_groups_thresholds_and_absent_classes():
    occ = np.array([0.9, 0.9, 0.2, 0.2, 0.0, 0.5])
    size = np.array([0.3, 0.05, 0.3, 0.05, np.nan, 0.1])
    # exactly 50 % is not "frequent", exactly 10 % is not "large"; class 4 never occurs: no group
    assert occurrence_size_groups(occ, size) == {1: [0], 2: [1], 3: [2], 4: [3, 5]}


def test_statistics_errors():
    with pytest.raises(DatasetError, match=r"values \[19\]"):
        pixel_counts([np.array([[0, 19]], np.uint8)], progress=False)
    with pytest.raises(DatasetError, match="range -1"):
        pixel_counts([np.array([[0, -1]])], progress=False)
    with pytest.raises(DatasetError, match="empty"):
        label_statistics([], progress=False)
    with pytest.raises(DatasetError, match="no valid"):
        class_shares(np.zeros(3))


def test_statistics_stream_over_a_dataset(tmp_path):
    # label ids: 7 road -> 0, 8 sidewalk -> 1, 0 -> ignore
    ids = [np.array([[7, 7], [8, 0]], np.uint8), np.array([[7, 7], [7, 7]], np.uint8)]
    for k, lab in enumerate(ids):
        name = f"x_000000_00000{k}"
        img = tmp_path / "leftImg8bit/train/x" / f"{name}_leftImg8bit.png"
        gt = tmp_path / "gtFine/train/x" / f"{name}_gtFine_labelIds.png"
        img.parent.mkdir(parents=True, exist_ok=True)
        gt.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(img)
        Image.fromarray(lab).save(gt)
    ds = CityscapesDataset(Path(tmp_path))
    counts = pixel_counts(ds, progress=False)
    assert counts.shape == (19,) and counts[0] == 6 and counts[1] == 1 and counts.sum() == 7
    assert image_occurrence(ds, progress=False)[:2].tolist() == [1.0, 0.5]
