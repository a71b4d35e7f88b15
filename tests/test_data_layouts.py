"""The remaining real data sets (issue 13): VOC 2012 + SBD, ScanNet 2-D, Cityscapes coarse, translated
GTA5 — their class tables against the official definitions, the loaders on hand-made trees in the
exact layouts, toycity written in those layouts, and `blvnb data check` on planted faults."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from blvnb import classes as C
from blvnb.cli import main
from blvnb.data import build_dataset, toycity_layouts
from blvnb.data.check import check_tree
from blvnb.data.splits import nested_splits
from blvnb.errors import BlvnbError, ConfigError, DatasetError

H, W = 6, 8


# --- class tables against their official definitions ---------------------------------------------------

#: VOC devkit (VOClabelcolormap.m) colours, written out by hand from the devkit's documentation.
VOC_OFFICIAL = {
    "background": (0, 0, 0), "aeroplane": (128, 0, 0), "bicycle": (0, 128, 0), "bird": (128, 128, 0),
    "boat": (0, 0, 128), "bottle": (128, 0, 128), "bus": (0, 128, 128), "car": (128, 128, 128),
    "cat": (64, 0, 0), "chair": (192, 0, 0), "cow": (64, 128, 0), "diningtable": (192, 128, 0),
    "dog": (64, 0, 128), "horse": (192, 0, 128), "motorbike": (64, 128, 128), "person": (192, 128, 128),
    "pottedplant": (0, 64, 0), "sheep": (128, 64, 0), "sofa": (0, 192, 0), "train": (128, 192, 0),
    "tvmonitor": (0, 64, 128),
}
#: ScanNet BenchmarkScripts: CLASS_LABELS / VALID_CLASS_IDS of evalPixelLevelSemanticLabeling.py and
#: create_color_palette() of util.py (the NYU40 palette), for the 20 benchmark classes.
SCANNET_OFFICIAL = [
    ("wall", 1, (174, 199, 232)), ("floor", 2, (152, 223, 138)), ("cabinet", 3, (31, 119, 180)),
    ("bed", 4, (255, 187, 120)), ("chair", 5, (188, 189, 34)), ("sofa", 6, (140, 86, 75)),
    ("table", 7, (255, 152, 150)), ("door", 8, (214, 39, 40)), ("window", 9, (197, 176, 213)),
    ("bookshelf", 10, (148, 103, 189)), ("picture", 11, (196, 156, 148)), ("counter", 12, (23, 190, 207)),
    ("desk", 14, (247, 182, 210)), ("curtain", 16, (219, 219, 141)), ("refrigerator", 24, (255, 127, 14)),
    ("shower curtain", 28, (158, 218, 229)), ("toilet", 33, (44, 160, 44)), ("sink", 34, (112, 128, 144)),
    ("bathtub", 36, (227, 119, 194)), ("otherfurniture", 39, (82, 84, 163)),
]


def test_voc_class_table_matches_the_devkit():
    assert C.VOC_CLASSES == tuple(VOC_OFFICIAL)
    assert [tuple(int(v) for v in c) for c in C.VOC_COLORS] == list(VOC_OFFICIAL.values())
    assert tuple(int(v) for v in C.voc_colormap()[255]) == (224, 224, 192)  # the void band's colour


def test_scannet_class_table_matches_the_benchmark():
    assert C.SCANNET_CLASSES == tuple(n for n, _, _ in SCANNET_OFFICIAL)
    assert C.SCANNET_NYU40_IDS == tuple(i for _, i, _ in SCANNET_OFFICIAL)
    assert [tuple(int(v) for v in c) for c in C.SCANNET_COLORS] == [c for _, _, c in SCANNET_OFFICIAL]
    ids = np.arange(41)
    train = C.nyu40_to_train_id(ids)
    for t, (_, nyu, _) in enumerate(SCANNET_OFFICIAL):
        assert train[nyu] == t
    others = [i for i in ids if i not in C.SCANNET_NYU40_IDS]
    assert (train[others] == 255).all() and len(others) == 21  # 0 and the 20 other NYU40 classes
    assert (C.train_id_to_nyu40(train[C.SCANNET_NYU40_IDS,]) == C.SCANNET_NYU40_IDS).all()


# --- hand-made trees in the exact layouts ---------------------------------------------------------------

def _rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _palette_png(path, ids):
    im = Image.fromarray(ids.astype(np.uint8), "P")
    im.putpalette(C.voc_colormap().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)


def _voc_tree(root, train=("a1", "a2"), val=("v1",), extra=("x1", "x2", "x3"), pairs=True):
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "SegmentationAug").mkdir(parents=True)
    labels = {}
    for k, name in enumerate((*train, *val, *extra)):
        Image.fromarray(_rgb(k)).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        ids = np.random.default_rng(100 + k).integers(0, 21, (H, W)).astype(np.uint8)
        ids[0, :3] = 255
        labels[name] = ids
        if name not in extra:
            _palette_png(voc / "SegmentationClass" / f"{name}.png", ids)
        if name not in val:
            (voc / "SegmentationClassAug").mkdir(exist_ok=True)
            Image.fromarray(ids, "L").save(voc / "SegmentationClassAug" / f"{name}.png")
    (voc / "ImageSets/Segmentation/train.txt").write_text("".join(f"{n}\n" for n in train))
    (voc / "ImageSets/Segmentation/val.txt").write_text("".join(f"{n}\n" for n in val))
    aug = (*train, *extra)
    line = (lambda n: f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n") if pairs else (lambda n: f"{n}\n")
    (voc / "ImageSets/SegmentationAug/train_aug.txt").write_text("".join(line(n) for n in aug))
    return root, labels


def test_voc_splits_and_palette_indices_pixel_by_pixel(tmp_path):
    root, labels = _voc_tree(tmp_path)
    for split, expect in (("train", ["a1", "a2"]), ("val", ["v1"]), ("aug", ["a1", "a2", "x1", "x2", "x3"])):
        ds = build_dataset("voc", root, split=split)  # the parent of VOCdevkit is accepted
        assert ds.names == expect
        for i, name in enumerate(ds.names):
            item = ds[i]
            assert item["label"].dtype.is_floating_point is False
            np.testing.assert_array_equal(item["label"].numpy(), labels[name])  # index = class, 255 kept
            assert tuple(item["image"].shape) == (3, H, W)
    unl = build_dataset("voc", root / "VOCdevkit" / "VOC2012", split="unlabeled")
    assert unl.names == ["x1", "x2", "x3"] and not unl.labeled and "label" not in unl[0]
    # plain-name lists work as well as "image label" pairs
    root2, _ = _voc_tree(tmp_path / "plain", pairs=False)
    assert build_dataset("voc", root2, split="aug").names == ["a1", "a2", "x1", "x2", "x3"]


def test_voc_list_naming_a_missing_image(tmp_path):
    root, _ = _voc_tree(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets/Segmentation/train.txt").write_text("a1\nghost_01\na2\n")
    with pytest.raises(DatasetError, match="ghost_01"):
        build_dataset("voc", root, split="train")
    ds = build_dataset("voc", root, split="train", check=False)  # data check's view: kept, not raised
    assert ds.missing_entries == ["ghost_01"] and ds.names == ["a1", "a2"]


def test_voc_palette_index_outside_table_names_the_file(tmp_path):
    root, labels = _voc_tree(tmp_path)
    bad = labels["a2"].copy()
    bad[2, 2] = 40
    _palette_png(root / "VOCdevkit/VOC2012/SegmentationClass/a2.png", bad)
    ds = build_dataset("voc", root, split="train")
    with pytest.raises(DatasetError, match=r"a2\.png.*40"):
        ds[1]


def _scannet_tree(root, scenes=(("scene0000_00", 3, "train"), ("scene0001_00", 2, "val")), bits16=False):
    labels = {}
    for s, (scene, n, split) in enumerate(scenes):
        (root / scene / "color").mkdir(parents=True)
        (root / scene / "label-filt").mkdir(parents=True)
        for f in range(n):
            name = f"{scene}/{100 * f}"
            Image.fromarray(_rgb(10 * s + f)).save(root / scene / "color" / f"{100 * f}.jpg", quality=95)
            ids = np.random.default_rng(10 * s + f).integers(0, 41, (H, W)).astype(np.uint16)
            labels[name] = ids
            if bits16:
                Image.fromarray(ids.astype(np.uint16)).save(root / scene / "label-filt" / f"{100 * f}.png")
            else:
                Image.fromarray(ids.astype(np.uint8), "L").save(root / scene / "label-filt" / f"{100 * f}.png")
    for split in ("train", "val"):
        (root / f"scannetv2_{split}.txt").write_text("".join(f"{sc}\n" for sc, _, sp in scenes if sp == split))
    return root, labels


@pytest.mark.parametrize("bits16", [False, True])
def test_scannet_nyu40_to_benchmark_ids_pixel_by_pixel(tmp_path, bits16):
    root, labels = _scannet_tree(tmp_path, bits16=bits16)
    ds = build_dataset("scannet", root, split="train")
    assert ds.names == ["scene0000_00/0", "scene0000_00/100", "scene0000_00/200"]
    for i, name in enumerate(ds.names):
        got = ds[i]["label"].numpy()
        raw = labels[name]
        want = np.full(raw.shape, 255)
        for t, nyu in enumerate(C.SCANNET_NYU40_IDS):
            want[raw == nyu] = t
        np.testing.assert_array_equal(got, want)
    assert build_dataset("scannet", root, split="val").names == ["scene0001_00/0", "scene0001_00/100"]
    # 1/8 ... 1/4 labelled splits are made by image, nested
    sp = nested_splits(ds.names, seed=0, fractions=("1/2",))
    assert len(sp["1/2"]["labeled"]) == 2


def test_scannet_bad_ids_and_missing_scene(tmp_path):
    root, labels = _scannet_tree(tmp_path, bits16=True)
    raw = labels["scene0000_00/0"].copy()
    raw[0, 0] = 41
    Image.fromarray(raw).save(root / "scene0000_00" / "label-filt" / "0.png")
    with pytest.raises(DatasetError, match=r"scene0000_00/label-filt/0\.png.*41"):
        build_dataset("scannet", root, split="train")[0]
    (root / "scannetv2_val.txt").write_text("scene0001_00\nscene0099_00\n")
    with pytest.raises(DatasetError, match="scene0099_00"):
        build_dataset("scannet", root, split="val")


def _coarse_tree(root, n=6):
    for k in range(n):
        city = ("bad", "erlangen")[k % 2]
        d = root / "leftImg8bit" / "train_extra" / city
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_rgb(k)).save(d / f"{city}_{k:06d}_000019_leftImg8bit.png")
    return root


def test_cityscapes_coarse_is_unlabeled_and_capped(tmp_path):
    root = _coarse_tree(tmp_path)
    ds = build_dataset("cityscapes-coarse", root, split="unlabeled")
    assert len(ds) == 6 and not ds.labeled and set(ds[0]) == {"image", "name"}
    capped = build_dataset("cityscapes-coarse", root, split="unlabeled", max_images=3)
    assert len(capped) == 3 and set(capped.names) < set(ds.names)
    assert {n.split("_")[0] for n in capped.names} == {"bad", "erlangen"}  # evenly spread, every city
    for bad in (0, -2, 1.5, "3"):
        with pytest.raises(ConfigError, match="max_images"):
            build_dataset("cityscapes-coarse", root, split="unlabeled", max_images=bad)
    with pytest.raises(ConfigError, match="does not take"):
        build_dataset("cityscapes-coarse", root, split="unlabeled", cap=3)


def test_gta5_translated_reads_another_image_folder(tmp_path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "cycada").mkdir()
    ids = np.full((H, W), 7, np.uint8)
    for k in (1, 2):
        Image.fromarray(_rgb(k)).save(tmp_path / "cycada" / f"{k:05d}.png")
        Image.fromarray(ids, "L").convert("P").save(tmp_path / "labels" / f"{k:05d}.png")
    ds = build_dataset("gta5-translated", tmp_path, split="all", image_folder="cycada")
    assert ds.names == ["00001", "00002"] and int(ds[0]["label"][0, 0]) == 0  # road
    with pytest.raises(DatasetError, match="images_translated"):
        build_dataset("gta5-translated", tmp_path, split="all")
    with pytest.raises(ConfigError, match="image_folder"):
        build_dataset("gta5-translated", tmp_path, split="all", image_folder="../x")


# --- toycity in these layouts ---------------------------------------------------------------------------

def test_toycity_voc_and_scannet_trees_load_with_the_real_loaders(tmp_path):
    assert main(["data", "toycity", "--out", str(tmp_path / "voc"), "--style", "voc", "--n-train", "6",
                 "--n-val", "2", "--n-aug", "4", "--size", "32x64", "--seed", "1", "--quiet"]) == 0
    sizes = {s: len(build_dataset("voc", tmp_path / "voc", split=s)) for s in ("train", "val", "aug", "unlabeled")}
    assert sizes == {"train": 6, "val": 2, "aug": 10, "unlabeled": 4}
    voc = build_dataset("voc", tmp_path / "voc", split="aug")
    present = set(np.unique(np.concatenate([voc.read_label(i).ravel() for i in range(len(voc))])).tolist())
    assert 255 in present and 0 in present and present - {0, 255} <= set(toycity_layouts.VOC_FROM_CITYSCAPES.values())
    assert len(present - {0, 255}) >= 3  # objects, not only background
    toycity_layouts.write_tree(tmp_path / "scan", "scannet", 12, 5, (32, 64), 1, progress=False)
    tr = build_dataset("scannet", tmp_path / "scan", split="train")
    va = build_dataset("scannet", tmp_path / "scan", split="val")
    assert (len(tr), len(va)) == (12, 5) and tr.names[10].startswith("scene0001_00/")
    raw = np.asarray(Image.open(tr.label_path(0)))
    assert {22, 31} & set(np.unique(raw).tolist())  # ceiling / person: NYU40 classes outside the benchmark
    assert (tr[0]["label"].numpy()[np.isin(raw, (22, 31))] == 255).all()
    assert check_tree(tmp_path / "voc", "voc", progress=False).ok
    assert check_tree(tmp_path / "scan", "scannet", progress=False).ok


def test_toycity_layout_bad_arguments(tmp_path):
    for kw in ({"n_train": -1, "n_val": 1}, {"n_train": 0, "n_val": 0}, {"n_train": 2, "n_val": 1, "n_aug": -3}):
        with pytest.raises(ConfigError):
            toycity_layouts.write_voc_tree(tmp_path / "v", progress=False, **kw)
    with pytest.raises(ConfigError, match="layout"):
        toycity_layouts.write_tree(tmp_path / "x", "kitti", 1, 1)
    assert not (tmp_path / "x").exists()


# --- data check: every planted fault in one run --------------------------------------------------------

def test_data_check_lists_every_planted_fault(tmp_path, capsys):
    root, labels = _voc_tree(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    # 1. a truncated PNG label
    data = (voc / "SegmentationClass" / "a1.png").read_bytes()
    (voc / "SegmentationClass" / "a1.png").write_bytes(data[: len(data) // 2])
    # 2. a JPEG renamed .png where a PNG label is expected
    Image.fromarray(_rgb(5)).save(voc / "SegmentationClassAug" / "x1.png", format="JPEG")
    # 3. a palette index outside the class table
    bad = labels["a2"].copy()
    bad[1, 1] = 77
    _palette_png(voc / "SegmentationClass" / "a2.png", bad)
    # 4. a split list naming a missing file
    (voc / "ImageSets/Segmentation/val.txt").write_text("v1\nnot_there\n")
    # 5. a label of the wrong size
    Image.fromarray(np.zeros((H + 2, W), np.uint8), "L").save(voc / "SegmentationClassAug" / "x2.png")
    # 6. an image without its label
    (voc / "SegmentationClassAug" / "x3.png").unlink()
    report = check_tree(root, "voc", progress=False)
    kinds = sorted(p.kind for p in report.problems)
    assert kinds == ["missing-from-list", "missing-label", "size-mismatch", "unexpected-ids", "unreadable",
                     "wrong-format"], report.summary()
    text = report.summary()
    for needle in ("a1.png", "x1.png", "a2.png", "77", "not_there", "x2.png", "x3"):
        assert needle in text
    assert main(["data", "check", str(root), "--dataset", "voc", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "6 problem(s)" in out and "not_there" in out
    # an empty directory is a layout problem, reported, not raised
    (tmp_path / "empty").mkdir()
    rep = check_tree(tmp_path / "empty", "gta5", progress=False)
    assert [p.kind for p in rep.problems] == ["layout"] and "no images" not in rep.problems[0].path


def test_data_check_cityscapes_orphans_and_clean_exit(tmp_path, capsys):
    from blvnb.data import toycity

    root = toycity.write_tree(tmp_path / "cs", "cityscapes", 3, 2, (32, 64), 0, progress=False)
    assert main(["data", "check", str(root), "--dataset", "cityscapes", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "road" in out
    img = next((root / "leftImg8bit" / "train").rglob("*.png"))
    img.unlink()
    rep = check_tree(root, "cityscapes", progress=False)
    assert [p.kind for p in rep.problems] == ["orphan-label"]


def test_data_check_bad_arguments(tmp_path, capsys):
    with pytest.raises(ConfigError, match="kitti"):
        check_tree(tmp_path, "kitti")
    assert main(["data", "check", str(tmp_path / "nope"), "--dataset", "voc", "--quiet"]) == 1
    assert "does not exist" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["data", "check", str(tmp_path), "--dataset", "kitti"])


def test_loader_errors_name_the_file(tmp_path):
    """The same faults raise a BlvnbError naming the file when a training run reads them."""
    root, labels = _voc_tree(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    data = (voc / "SegmentationClass" / "a1.png").read_bytes()
    (voc / "SegmentationClass" / "a1.png").write_bytes(data[:40])
    with pytest.raises(BlvnbError, match=r"a1\.png"):
        build_dataset("voc", root, split="train")[0]
    Image.fromarray(_rgb(5)).save(voc / "SegmentationClassAug" / "x1.png", format="JPEG")
    with pytest.raises(BlvnbError, match=r"x1\.png"):
        build_dataset("voc", root, split="aug")[2]
    Image.fromarray(np.zeros((H + 2, W), np.uint8), "L").save(voc / "SegmentationClassAug" / "x2.png")
    with pytest.raises(BlvnbError, match=r"x2\.png"):
        build_dataset("voc", root, split="aug")[3]
    (voc / "JPEGImages").rename(voc / "gone")
    (voc / "JPEGImages").mkdir()
    with pytest.raises(BlvnbError):
        build_dataset("voc", root, split="train")
