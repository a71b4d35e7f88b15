"""toycity: class shares, DARS groups, determinism, on-disk layouts, styles, the cache."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from blvnb import classes as C
from blvnb.data import toycity as T
from blvnb.errors import BlvnbError, ConfigError

_spec = importlib.util.spec_from_file_location("dars_release_labels",
                                               Path(__file__).parent / "vendor" / "dars_release_labels.py")
_REL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_REL)
#: Cityscapes' class shares of all pixels from a source independent of toycity: the percentages DARS's released
#: code uses as its prior (tests/vendor/dars_release_labels.py, measured on the labelled 1/8 split), in train-id
#: order; ignore is the rest (11.9 %)
RELEASED_SHARES = {name: p / 100 for name, p in zip(C.CLASSES, _REL.class_ratio_prior_list, strict=True)}
RELEASED_SHARES["ignore"] = 1 - math.fsum(_REL.class_ratio_prior_list) / 100

SMALL = (64, 128)
N_STATS = 300

# DARS Sec. 4.4 groups. "Frequent" = in more than half of the images, "rare" = in fewer than 20 %.
# "Large" = more than 10 % of a 713x713 training crop when present; such a crop is 24 % of a 1024x2048
# Cityscapes image, so in whole-image terms large means >= 2.42 % of the image.
FREQUENT, RARE = 0.5, 0.2
LARGE = 0.10 * 713 * 713 / (1024 * 2048)
GROUPS = {
    1: ("road", "sky"),  # frequent and large
    2: ("pole", "traffic light", "traffic sign"),  # frequent and small
    3: ("truck", "bus", "train"),  # rare and large
    4: ("motorcycle",),  # rare and small
}


def stats(style: str, n: int, seed: int, size=SMALL) -> dict:
    """Pixel shares (of all pixels), occurrence and mean size-when-present per train id (+ 255)."""
    counts = np.zeros(256)
    present = np.zeros(256)
    size_sum = np.zeros(256)
    for i in range(n):
        _, tid = T.render(style, i, seed, size)
        b = np.bincount(tid.ravel(), minlength=256).astype(float)
        counts += b
        present += b > 0
        size_sum += b / tid.size
    share = counts / counts.sum()
    return {
        "share": {name: share[i] for i, name in enumerate(C.CLASSES)} | {"ignore": share[C.IGNORE]},
        "occurrence": {name: present[i] / n for i, name in enumerate(C.CLASSES)},
        "size": {name: size_sum[i] / max(present[i], 1) for i, name in enumerate(C.CLASSES)},
    }


@pytest.fixture(scope="module")
def cs_stats():
    return {seed: stats("cityscapes", N_STATS, seed) for seed in (0, 1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_shares_match_cityscapes(cs_stats, seed):
    # Rule: every class within max(35 % of its target, 0.2 percentage points) of Cityscapes' share of
    # all pixels (the released DARS prior, not the generator's own table); ignore within 3 points of it.
    share = cs_stats[seed]["share"]
    bad = []
    for name in C.CLASSES:
        target = RELEASED_SHARES[name]
        if abs(share[name] - target) > max(0.35 * target, 0.002):
            bad.append(f"{name}: {share[name]:.4f} vs {target:.4f}")
    assert not bad, bad
    assert abs(share["ignore"] - RELEASED_SHARES["ignore"]) <= 0.03, share["ignore"]
    # the long tail: road is the largest class, motorcycle among the three smallest
    ordered = sorted(C.CLASSES, key=lambda n: share[n])
    assert ordered[-1] == "road"
    assert "motorcycle" in ordered[:3], ordered[:3]
    head = ("road", "building", "vegetation", "car")
    tail = ("rider", "motorcycle", "truck", "bus", "train", "traffic light")
    assert min(share[n] for n in head) > 10 * max(share[n] for n in tail)


def test_shares_table_is_complete():
    assert set(T.CITYSCAPES_SHARES) == set(C.CLASSES) | {"ignore"}
    assert abs(sum(T.CITYSCAPES_SHARES.values()) - 1.0) < 0.02
    # the table the module documents is Cityscapes' (the rule of test_shares_match_cityscapes)
    bad = [name for name, target in RELEASED_SHARES.items()
           if abs(T.CITYSCAPES_SHARES[name] - target) > max(0.35 * target, 0.002)]
    assert not bad, bad


def test_dars_groups(cs_stats):
    occ, size = cs_stats[0]["occurrence"], cs_stats[0]["size"]
    for group, names in GROUPS.items():
        for name in names:
            frequent = occ[name] > FREQUENT
            rare = occ[name] < RARE
            large = size[name] >= LARGE
            msg = f"{name}: occurrence {occ[name]:.3f}, size when present {size[name]:.4f}"
            assert (frequent if group in (1, 2) else rare), msg
            assert (large if group in (1, 3) else not large), msg
            assert occ[name] > 0, msg  # rare, but present


def test_deterministic_per_seed_and_index():
    a_img, a_lab = T.render("cityscapes", 5, seed=3, size=SMALL)
    b_img, b_lab = T.render("cityscapes", 5, seed=3, size=SMALL)
    assert a_img.dtype == np.uint8 and a_img.shape == (*SMALL, 3)
    assert a_lab.dtype == np.uint8 and a_lab.shape == SMALL
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, c_lab = T.render("cityscapes", 6, seed=3, size=SMALL)
    assert not np.array_equal(a_lab, c_lab) and not np.array_equal(a_img, c_img)
    d_img, d_lab = T.render("cityscapes", 5, seed=4, size=SMALL)
    assert not np.array_equal(a_lab, d_lab)
    # the label ids and the train ids agree
    _, lid = T.render_label_ids("cityscapes", 5, seed=3, size=SMALL)
    np.testing.assert_array_equal(C.label_id_to_train_id(lid), a_lab)


@pytest.mark.parametrize("size", [(32, 64), (48, 96), (128, 128), (96, 320)])
def test_other_sizes(size):
    img, lab = T.render("gta", 2, size=size)
    assert img.shape == (*size, 3) and lab.shape == size
    assert (lab == C.TRAIN_ID["road"]).mean() > 0.1


def test_cityscapes_layout(tmp_path):
    out = T.write_tree(tmp_path / "cs", "cityscapes", n_train=5, n_val=2, size=SMALL, progress=False)
    assert out == tmp_path / "cs"
    for split, stems in (("train", ["aachen_000000_000019", "aachen_000003_000019", "bochum_000000_000019"]),
                         ("val", ["frankfurt_000000_000019", "frankfurt_000001_000019"])):
        for stem in stems:
            city = stem.split("_")[0]
            img = Image.open(out / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            lab = Image.open(out / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
            assert img.mode == "RGB" and img.size == (SMALL[1], SMALL[0])
            assert lab.mode == "L" and lab.size == (SMALL[1], SMALL[0])
    assert len(list((out / "gtFine" / "train").rglob("*_gtFine_labelIds.png"))) == 5
    assert len(list((out / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))) == 2
    ids = set()
    for p in (out / "gtFine").rglob("*.png"):
        ids |= set(np.unique(np.asarray(Image.open(p))).tolist())
    assert ids <= C.VALID_LABEL_IDS
    assert _ID("road") in ids and _ID("ego vehicle") in ids  # road = 7, void ids kept on disk
    # the file holds exactly what render_label_ids returns (val images continue the index after train)
    _, lid = T.render_label_ids("cityscapes", 5, size=SMALL)
    np.testing.assert_array_equal(
        np.asarray(Image.open(out / "gtFine/val/frankfurt/frankfurt_000000_000019_gtFine_labelIds.png")), lid)
    assert json.loads((out / "toycity.json").read_text())["version"] == T.GENERATOR_VERSION


def _ID(name):
    return next(lab.id for lab in C.LABELS if lab.name == name)


def test_gta_layout(tmp_path):
    out = T.write_tree(tmp_path / "gta", "gta", n_train=3, n_val=1, size=SMALL, progress=False)
    for i in range(1, 5):
        assert (out / "images" / f"{i:05d}.png").is_file()
        lab = Image.open(out / "labels" / f"{i:05d}.png")
        assert lab.mode == "P"
    assert not (out / "images" / "00005.png").exists()
    lab = Image.open(out / "labels" / "00002.png")
    _, lid = T.render_label_ids("gta", 1, size=SMALL)
    np.testing.assert_array_equal(np.asarray(lab), lid)  # palette indices are Cityscapes label ids
    pal = lab.getpalette()
    assert tuple(pal[3 * 7: 3 * 7 + 3]) == (128, 64, 128)  # road's colour
    assert np.asarray(Image.open(out / "images" / "00001.png").convert("RGB")).shape == (*SMALL, 3)


def test_synthia_layout_reads_with_torchvision(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    import torch

    out = T.write_tree(tmp_path / "syn", "synthia", n_train=2, n_val=1, size=SMALL, progress=False)
    for i in range(3):
        assert (out / "RGB" / f"{i:07d}.png").is_file()
    p = out / "GT" / "LABELS" / "0000001.png"
    t = torchvision.io.decode_png(torchvision.io.read_file(str(p)), mode=torchvision.io.ImageReadMode.UNCHANGED)
    assert t.dtype == torch.uint16 and tuple(t.shape) == (3, *SMALL)
    a = t.to(torch.int32).numpy()
    _, lid, things = T.render_full("synthia", 1, size=SMALL)
    expected = C.train_id_to_synthia_id(C.label_id_to_train_id(lid))
    np.testing.assert_array_equal(a[0], expected)
    assert set(np.unique(a[0]).tolist()) <= {0} | set(C.SYNTHIA_ID_TO_TRAIN)
    assert C.TRAIN_ID["road"] in set(C.synthia_id_to_train_id(a[0]).ravel().tolist())
    np.testing.assert_array_equal(a[1], things)
    assert (a[2] == 0).all()


def test_write_png16_roundtrip(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    rng = np.random.default_rng(0)
    from blvnb.data.base import read_png_channel0

    for channels in (1, 3, 4):
        arr = rng.integers(0, 65536, (7, 11, channels), dtype=np.uint16)
        p = tmp_path / f"x{channels}.png"
        T.write_png16(p, arr)
        # an independent decoder (torchvision's) sees the channels in the order they were given
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            t = torchvision.io.decode_png(torchvision.io.read_file(str(p)), mode=torchvision.io.ImageReadMode.UNCHANGED)
        np.testing.assert_array_equal(t.numpy().transpose(1, 2, 0).astype(np.int64), arr.astype(np.int64))
        np.testing.assert_array_equal(read_png_channel0(p), arr[:, :, 0])  # the loaders' reader: channel 0
    with pytest.raises(ValueError):
        T.write_png16(tmp_path / "bad.png", np.zeros((4, 4, 3), np.uint8))
    from blvnb.errors import DatasetError

    for name, content in (("empty.png", b""), ("text.png", b"not a png")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DatasetError, match=name):
            read_png_channel0(tmp_path / name)
    with pytest.raises(DatasetError, match="missing.png"):
        read_png_channel0(tmp_path / "missing.png")


def test_synthia_has_only_its_16_classes():
    missing = {C.TRAIN_ID[n] for n in ("terrain", "truck", "train")}
    seen = set()
    for i in range(120):  # covers several images where truck and train are scheduled in other styles
        _, lab = T.render("synthia", i, size=(32, 64))
        seen |= set(np.unique(lab).tolist())
    assert not seen & missing
    assert C.TRAIN_ID["bus"] in seen and C.TRAIN_ID["vegetation"] in seen


def _appearance(style, n=30):
    sat, inner, edge = [], [], []
    for i in range(n):
        img, lab = T.render(style, i, size=SMALL)
        f = img.astype(np.float32)
        sat.append((f.max(2) - f.min(2)).mean())
        gx = np.abs(np.diff(f.mean(2), axis=1))
        boundary = lab[:, 1:] != lab[:, :-1]
        inner.append(np.median(gx[~boundary]))
        edge.append(gx[boundary].mean())
    return np.mean(sat), np.mean(inner), np.mean(edge)


def test_styles_look_different():
    cs_sat, cs_inner, cs_edge = _appearance("cityscapes")
    gta_sat, gta_inner, gta_edge = _appearance("gta")
    assert gta_sat > 1.3 * cs_sat  # saturated colours
    assert gta_inner < 0.6 * cs_inner  # flat shading, no sensor noise
    assert gta_edge / gta_inner > 2 * cs_edge / cs_inner  # sharp edges
    a, _ = T.render("gta", 0, size=SMALL)
    b, _ = T.render("cityscapes", 0, size=SMALL)
    assert not np.array_equal(a, b)


def test_source_distributions_close_but_not_equal(cs_stats):
    target = np.array([cs_stats[0]["share"][n] for n in (*C.CLASSES, "ignore")])
    for style in ("gta", "synthia"):
        s = stats(style, 150, 0)
        share = np.array([s["share"][n] for n in (*C.CLASSES, "ignore")])
        tv = 0.5 * np.abs(share - target).sum()  # total variation distance
        assert 0.02 < tv < 0.2, (style, tv)
        assert share[C.TRAIN_ID["road"]] == share.max()


def test_ensure_caches(tmp_path):
    kw = dict(n_train=2, n_val=1, size=(32, 64), seed=0, cache_dir=tmp_path, progress=False)
    root = T.ensure("gta", **kw)
    assert root == tmp_path / "toycity" / f"gta-32x64-n2+1-s0-v{T.GENERATOR_VERSION}"
    f = root / "images" / "00001.png"
    mtime = f.stat().st_mtime_ns
    assert T.ensure("gta", **kw) == root
    assert f.stat().st_mtime_ns == mtime
    assert not [p for p in (tmp_path / "toycity").iterdir() if p.name.startswith(".")]  # no temp dirs left
    keys = {T.ensure("gta", **(kw | change)).name for change in ({"seed": 1}, {"n_val": 2}, {"size": (32, 96)})}
    keys.add(root.name)
    assert len(keys) == 4
    assert T.ensure("cityscapes", **kw).name.startswith("cityscapes-")


def test_ensure_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "c"))
    root = T.ensure("synthia", 1, 0, size=(32, 64), progress=False)
    assert root.parent == tmp_path / "c" / "toycity"
    assert (root / "GT" / "LABELS" / "0000000.png").is_file()


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="cityscapes, gta, synthia"):
        T.render("mapillary", 0)
    with pytest.raises(ConfigError, match="too small"):
        T.render("gta", 0, size=(16, 32))
    with pytest.raises(ConfigError, match="n_train"):
        T.write_tree(tmp_path, "gta", -1, 0, progress=False)
    with pytest.raises(BlvnbError):
        T.ensure("gta", 1, -2, cache_dir=tmp_path, progress=False)
    assert T.parse_size("128x256") == (128, 256)
    assert T.parse_size(" 64 X 128 ") == (64, 128)
    for bad in ("128", "axb", "128x256x3", "16x32"):
        with pytest.raises(ConfigError, match="128x256|at least"):
            T.parse_size(bad)
    assert not os.listdir(tmp_path)


# --- writing over an older tree (issue 14 #3) --------------------------------------------------------------

def _images(root):
    return sorted(p.name for p in (root / "images").iterdir())


def test_an_older_toycity_tree_is_replaced_as_a_whole(tmp_path):
    out = tmp_path / "gta"
    T.write_tree(out, "gta", 4, 1, size=(32, 64), seed=0, progress=False)
    assert len(_images(out)) == 5
    T.write_tree(out, "gta", 2, 0, size=(32, 64), seed=1, progress=False)
    assert _images(out) == ["00001.png", "00002.png"]  # no image of the older tree is left
    assert json.loads((out / "toycity.json").read_text())["seed"] == 1
    assert sorted(os.listdir(tmp_path)) == ["gta"]  # no temporary folder left beside it
    new = np.asarray(Image.open(out / "images/00001.png"))
    assert np.array_equal(new, T.render("gta", 0, seed=1, size=(32, 64))[0])


def test_an_empty_folder_is_used_and_a_foreign_one_or_a_file_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    T.write_tree(empty, "gta", 1, 0, size=(32, 64), progress=False)
    assert (empty / "toycity.json").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(ConfigError, match=r"mine is not empty.*thesis.tex"):
        T.write_tree(mine, "gta", 1, 0, size=(32, 64), progress=False)
    assert os.listdir(mine) == ["thesis.tex"]
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ConfigError, match=r"afile exists and is not a folder"):
        T.write_tree(afile, "gta", 1, 0, size=(32, 64), progress=False)
    assert sorted(os.listdir(tmp_path)) == ["afile", "empty", "mine"]


def test_a_failed_write_keeps_the_older_tree_untouched(tmp_path, monkeypatch):
    out = tmp_path / "gta"
    T.write_tree(out, "gta", 3, 0, size=(32, 64), progress=False)
    before = {p.name: p.read_bytes() for p in (out / "images").iterdir()}
    calls = {"n": 0}
    real = T.render_full

    def dies_on_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "render_full", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        T.write_tree(out, "gta", 5, 0, size=(32, 64), seed=7, progress=False)
    assert {p.name: p.read_bytes() for p in (out / "images").iterdir()} == before
    assert json.loads((out / "toycity.json").read_text())["seed"] == 0
    assert sorted(os.listdir(tmp_path)) == ["gta"]


def test_sizes_and_counts_are_checked_before_any_work(tmp_path):
    for size in ((100_000, 100_000), (64, 9000), (4096, 4096)):
        with pytest.raises(ConfigError, match="too large"):
            T.write_tree(tmp_path / "x", "gta", 1, 0, size=size, progress=False)
    with pytest.raises(ConfigError, match="too large"):
        T.parse_size("100000x100000")
    with pytest.raises(ConfigError, match="nothing to write"):
        T.write_tree(tmp_path / "x", "gta", 0, 0, size=(32, 64), progress=False)
    assert not os.listdir(tmp_path)
