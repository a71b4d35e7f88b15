"""Loaders for Cityscapes, GTA5 and SYNTHIA on tiny hand-written fixture trees."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from blvnb.classes import LABELS
from blvnb.data import build_dataset
from blvnb.data.cityscapes import CityscapesDataset
from blvnb.data.gta5 import GTA5Dataset
from blvnb.data.synthia import SynthiaDataset
from blvnb.errors import BlvnbError, ConfigError, DatasetError

H, W = 4, 6


def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write_rgb(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _write_gray(path: Path, ids: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(ids.astype(np.uint8)).save(path)


def _write_palette(path: Path, ids: np.ndarray) -> None:
    """A 'P' PNG whose indices are label ids and whose palette holds the Cityscapes colours (as GTA5's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8))
    palette = np.zeros((256, 3), np.uint8)
    for lab in LABELS:
        palette[lab.id] = lab.color
    im.putpalette(palette.ravel().tolist())
    assert im.mode == "P"
    im.save(path)


def _write_png16(path: Path, arr: np.ndarray) -> None:
    """Minimal 16-bit RGB PNG encoder (Pillow cannot write these): H×W×3 uint16, big-endian, filter 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    path.write_bytes(png)


# label ids 7 road -> 0, 26 car -> 13, 0 unlabeled -> 255, 33 bicycle -> 18
CS_IDS = np.array([[7, 7, 7, 26, 26, 0], [7, 7, 7, 26, 26, 0], [8, 8, 11, 11, 33, 33], [8, 8, 11, 11, 33, 4]], np.uint8)
CS_TRAIN = np.array(
    [[0, 0, 0, 13, 13, 255], [0, 0, 0, 13, 13, 255], [1, 1, 2, 2, 18, 18], [1, 1, 2, 2, 18, 255]], np.uint8
)

CS_NAMES = {"train": ["aachen_000000_000019", "aachen_000001_000019", "bremen_000000_000019"],
            "val": ["frankfurt_000000_000294"]}


def _cs_tree(root: Path, labels: bool = True) -> Path:
    k = 0
    for split, names in CS_NAMES.items():
        for name in names:
            city = name.split("_")[0]
            _write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", _rgb(k))
            if labels:
                lab = root / "gtFine" / split / city
                _write_gray(lab / f"{name}_gtFine_labelIds.png", CS_IDS)
                # files the loader must ignore
                _write_gray(lab / f"{name}_gtFine_labelTrainIds.png", np.full((H, W), 200, np.uint8))
                _write_rgb(lab / f"{name}_gtFine_color.png", _rgb(99))
            k += 1
    return root


@pytest.fixture
def cs(tmp_path) -> Path:
    return _cs_tree(tmp_path / "cityscapes")


# --- Cityscapes --------------------------------------------------------------------------------------

def test_cityscapes_reads_sorted_samples_and_maps_ids(cs):
    ds = CityscapesDataset(cs, "train")
    assert ds.kind == "cityscapes" and ds.root == cs and len(ds) == 3
    assert ds.names == sorted(CS_NAMES["train"])
    item = ds[1]
    assert item["name"] == "aachen_000001_000019"
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (3, H, W)
    assert torch.equal(item["image"], torch.from_numpy(_rgb(1)).permute(2, 0, 1))
    assert item["label"].dtype == torch.int64
    assert np.array_equal(item["label"].numpy(), CS_TRAIN)
    assert ds.read_label(1).dtype == np.uint8 and np.array_equal(ds.read_label(1), CS_TRAIN)
    assert ds.label_path(1) == cs / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    assert ds.image_path(2) == cs / "leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png"
    assert CityscapesDataset(cs, "val").names == CS_NAMES["val"]


def test_names_restrict_and_unknown_names_fail(cs):
    ds = CityscapesDataset(cs, names=["bremen_000000_000019", "aachen_000000_000019"])
    assert ds.names == ["aachen_000000_000019", "bremen_000000_000019"]
    with pytest.raises(DatasetError, match="berlin_000000_000001"):
        CityscapesDataset(cs, names=["aachen_000000_000019", "berlin_000000_000001"])
    with pytest.raises(DatasetError, match="selects nothing"):
        CityscapesDataset(cs, names=[])


def test_missing_root_says_layout_and_toycity_command(tmp_path):
    with pytest.raises(DatasetError) as e:
        CityscapesDataset(tmp_path / "nowhere")
    msg = str(e.value)
    assert "leftImg8bit/train/<city>/<city>_<seq>_<frame>_leftImg8bit.png" in msg
    assert "gtFine/train/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png" in msg
    assert "blvnb data toycity --out DIR --style cityscapes" in msg
    with pytest.raises(DatasetError, match="--style gta "):
        GTA5Dataset(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="GT/LABELS"):
        SynthiaDataset(tmp_path / "nowhere")


def test_missing_label_folder_and_unlabeled_view(tmp_path):
    root = _cs_tree(tmp_path / "cs", labels=False)
    with pytest.raises(DatasetError, match="label folder .*gtFine.* is missing"):
        CityscapesDataset(root)
    ds = CityscapesDataset(root, labeled=False)
    item = ds[0]
    assert set(item) == {"image", "name"} and item["image"].shape == (3, H, W)


def test_image_without_label(cs):
    missing = cs / "gtFine/train/bremen/bremen_000000_000019_gtFine_labelIds.png"
    missing.unlink()
    with pytest.raises(DatasetError, match="1 of 3 images have no label file: .*bremen_000000_000019"):
        CityscapesDataset(cs)
    ds = CityscapesDataset(cs, check=False)  # construction skips the check, reading still reports it
    with pytest.raises(DatasetError, match="is missing"):
        ds[2]


def test_label_ids_outside_table(cs):
    bad = CS_IDS.copy()
    bad[0, 0], bad[1, 1] = 40, 250
    path = cs / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    _write_gray(path, bad)
    ds = CityscapesDataset(cs)
    with pytest.raises(DatasetError) as e:
        ds.read_label(0)
    assert str(path) in str(e.value) and "40, 250" in str(e.value)
    with pytest.raises(BlvnbError):
        ds[0]


def test_size_mismatch(cs):
    path = cs / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelIds.png"
    _write_gray(path, np.full((H + 1, W), 7, np.uint8))
    ds = CityscapesDataset(cs)
    for read in (lambda: ds[0], lambda: ds.read_label(0)):
        with pytest.raises(DatasetError, match=r"is 4x6 \(HxW\) but its label .* is 5x6"):
            read()
    assert ds.read_label(0, check_size=False).shape == (H + 1, W)


def test_empty_split_and_unknown_split(tmp_path):
    (tmp_path / "leftImg8bit/val").mkdir(parents=True)
    (tmp_path / "gtFine/val").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images"):
        CityscapesDataset(tmp_path, "val")
    with pytest.raises(DatasetError, match="image folder .* is missing"):
        CityscapesDataset(tmp_path, "train")
    with pytest.raises(ConfigError, match="train, val, test"):
        CityscapesDataset(tmp_path, "training")


def test_transform_is_applied(cs):
    calls = []

    def flip(image, label):
        calls.append(label is None)
        return image.flip(-1), (None if label is None else label.flip(-1))

    item = CityscapesDataset(cs, transform=flip)[0]
    assert np.array_equal(item["label"].numpy(), CS_TRAIN[:, ::-1])
    CityscapesDataset(cs, transform=flip, labeled=False)[0]
    assert calls == [False, True]


# --- GTA5 ----------------------------------------------------------------------------------------

def _gta_tree(root: Path, n: int = 3) -> Path:
    for k in range(n):
        _write_rgb(root / "images" / f"{k + 1:05d}.png", _rgb(k))
        _write_palette(root / "labels" / f"{k + 1:05d}.png", CS_IDS)
    return root


def test_gta5_reads_palette_indices_not_colours(tmp_path):
    root = _gta_tree(tmp_path / "gta")
    ds = GTA5Dataset(root, split="all")
    assert ds.kind == "gta5" and ds.names == ["00001", "00002", "00003"]
    assert GTA5Dataset(root).names == ds.names  # "train" = all
    assert np.array_equal(ds[2]["label"].numpy(), CS_TRAIN)
    assert np.array_equal(ds.read_label(0), CS_TRAIN)
    with pytest.raises(ConfigError, match="no official split"):
        GTA5Dataset(root, split="val")


def test_gta5_size_mismatch_and_bad_ids(tmp_path):
    root = _gta_tree(tmp_path / "gta")
    _write_palette(root / "labels/00002.png", np.full((H, W + 2), 7, np.uint8))
    bad = CS_IDS.copy()
    bad[0, 0] = 34
    _write_palette(root / "labels/00003.png", bad)
    ds = GTA5Dataset(root)
    ds[0]
    with pytest.raises(DatasetError, match=r"00002.png is 4x6 \(HxW\) but its label .*00002.png is 4x8"):
        ds[1]
    with pytest.raises(DatasetError, match=r"00003.png contains ids 34 "):
        ds.read_label(2)


def test_gta5_rgb_label_is_refused(tmp_path):
    root = _gta_tree(tmp_path / "gta", n=1)
    _write_rgb(root / "labels/00001.png", _rgb(5))
    with pytest.raises(DatasetError, match="mode 'RGB'"):
        GTA5Dataset(root).read_label(0)


# --- SYNTHIA -------------------------------------------------------------------------------------

# SYNTHIA ids: 3 road -> 0, 8 car -> 13, 0 void -> 255, 12 motorcycle -> 17, 13 (not shared) -> 255
SY_IDS = np.array([[3, 3, 8, 8, 0, 12], [3, 3, 8, 8, 13, 12], [3, 3, 3, 3, 3, 3], [1, 1, 1, 1, 1, 1]], np.uint16)
SY_TRAIN = np.array(
    [[0, 0, 13, 13, 255, 17], [0, 0, 13, 13, 255, 17], [0] * 6, [10] * 6], np.uint8
)


def _synthia_label(ids: np.ndarray) -> np.ndarray:
    # channel 1 holds instance ids in the real data: large 16-bit values the loader must not look at
    return np.stack([ids, np.full(ids.shape, 1000, np.uint16), np.zeros(ids.shape, np.uint16)], -1)


def _synthia_tree(root: Path, n: int = 2) -> Path:
    for k in range(n):
        _write_rgb(root / "RGB" / f"{k:07d}.png", _rgb(k))
        _write_png16(root / "GT/LABELS" / f"{k:07d}.png", _synthia_label(SY_IDS))
    return root


def test_synthia_reads_16bit_channel0(tmp_path):
    root = _synthia_tree(tmp_path / "syn")
    ds = SynthiaDataset(root)
    assert ds.kind == "synthia" and ds.names == ["0000000", "0000001"]
    item = ds[1]
    assert item["image"].shape == (3, H, W) and np.array_equal(item["label"].numpy(), SY_TRAIN)
    assert np.array_equal(ds.read_label(0), SY_TRAIN)


def test_synthia_bad_ids_need_16_bits(tmp_path):
    root = _synthia_tree(tmp_path / "syn", n=1)
    bad = SY_IDS.copy()
    bad[0, 0] = 256 + 3  # would read as 3 (or 1) if the loader dropped a byte
    _write_png16(root / "GT/LABELS/0000000.png", _synthia_label(bad))
    with pytest.raises(DatasetError, match=r"0000000.png contains ids 259 .*expected 0..22"):
        SynthiaDataset(root).read_label(0)


def test_synthia_size_mismatch(tmp_path):
    root = _synthia_tree(tmp_path / "syn", n=1)
    _write_png16(root / "GT/LABELS/0000000.png", _synthia_label(SY_IDS[:3]))
    with pytest.raises(DatasetError, match=r"is 4x6 \(HxW\) but its label .* is 3x6"):
        SynthiaDataset(root)[0]


# --- build_dataset -------------------------------------------------------------------------------

def test_build_dataset(tmp_path, cs):
    assert isinstance(build_dataset("cityscapes", cs, "val"), CityscapesDataset)
    gta = build_dataset("gta5", _gta_tree(tmp_path / "gta"), "all", names=["00002"])
    assert isinstance(gta, GTA5Dataset) and gta.names == ["00002"]
    syn = build_dataset("synthia", _synthia_tree(tmp_path / "syn"), labeled=False)
    assert isinstance(syn, SynthiaDataset) and "label" not in syn[0]
    with pytest.raises(ConfigError, match="cityscapes, gta5, synthia"):
        build_dataset("kitti", cs)


def test_dataloader_collates(cs):
    batch = next(iter(torch.utils.data.DataLoader(CityscapesDataset(cs), batch_size=2)))
    assert batch["image"].shape == (2, 3, H, W) and batch["label"].shape == (2, H, W)
    assert batch["name"] == ["aachen_000000_000019", "aachen_000001_000019"]


# --- broken symbolic links are reported, never dropped (issue 14 #4) -------------------------------------

def test_dangling_image_link_is_reported_with_its_target(cs):
    link = cs / "leftImg8bit/train/aachen/aachen_000009_000019_leftImg8bit.png"
    link.symlink_to(cs / "nowhere.png")
    with pytest.raises(DatasetError, match=r"broken.*aachen_000009_000019_leftImg8bit.png -> .*nowhere.png"):
        CityscapesDataset(cs, "train")


def test_image_link_loop_is_reported(tmp_path):
    root = _gta_tree(tmp_path / "gta")
    (root / "images/00008.png").symlink_to("00009.png")
    (root / "images/00009.png").symlink_to("00008.png")
    with pytest.raises(DatasetError, match=r"00008.png -> 00009.png.*00009.png -> 00008.png"):
        GTA5Dataset(root)


def test_broken_link_to_a_city_folder_is_reported(cs):
    (cs / "leftImg8bit/train/zurich").symlink_to(cs / "no-such-city")
    with pytest.raises(DatasetError, match=r"train/zurich -> .*no-such-city"):
        CityscapesDataset(cs, "train")


def test_working_links_are_read_and_broken_label_links_are_named(cs, tmp_path):
    # a link that resolves is an ordinary sample
    elsewhere = tmp_path / "elsewhere.png"
    _write_rgb(elsewhere, _rgb(5))
    (cs / "leftImg8bit/train/bremen/bremen_000001_000019_leftImg8bit.png").symlink_to(elsewhere)
    lab = cs / "gtFine/train/bremen/bremen_000001_000019_gtFine_labelIds.png"
    lab.symlink_to(tmp_path / "gone.png")
    with pytest.raises(DatasetError, match=r"bremen_000001_000019_gtFine_labelIds.png \(a broken link to .*gone.png\)"):
        CityscapesDataset(cs, "train")
    ds = CityscapesDataset(cs, "train", check=False)
    assert "bremen_000001_000019" in ds.names and len(ds) == 4
    with pytest.raises(DatasetError, match=r"is a broken link to .*gone.png"):
        ds[ds.names.index("bremen_000001_000019")]
    _write_gray(tmp_path / "gone.png", CS_IDS)
    assert np.array_equal(CityscapesDataset(cs, "train")[3]["label"].numpy(), CS_TRAIN)


def test_names_given_as_a_string_is_a_config_error_naming_it(cs):
    with pytest.raises(ConfigError, match=r"names must be a list.*'aachen_000000_000019'"):
        CityscapesDataset(cs, names="aachen_000000_000019")
