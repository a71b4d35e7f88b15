"""toycity in the PASCAL VOC and ScanNet layouts, so that the VOC and ScanNet chapters (DARS Tables 3,
12, 13) run end to end on a CPU with the real loaders.

toycity draws street scenes labelled with Cityscapes ids; these writers relabel them into the 21 VOC
and the 20 ScanNet classes by a fixed, documented table. **The class names are placeholders**: a
"bottle" in toycity-VOC is a toycity pole, a "bed" in toycity-ScanNet is a toycity car. What carries
over is the structure the papers care about — a labelled set, a larger unlabelled set, a long tail of
classes, and the real file layouts and encodings — not the semantics of the classes.

* **VOC** (``--style voc``): object-centred 4:3 views around the largest vehicle or person of each scene
  (2.2 times its height, resized to the image height), as VOC photographs frame one object. Cityscapes classes with a VOC counterpart
  keep it (person and rider → person, car and truck → car, bus, train, motorcycle → motorbike,
  bicycle); three small toycity classes stand in for three rare VOC classes (pole → bottle, traffic
  light → tvmonitor, traffic sign → pottedplant); everything else is background. A one-pixel void band
  (255) is drawn along every class boundary, as in VOC's annotations. Eleven VOC classes never occur
  (aeroplane, bird, boat, cat, chair, cow, diningtable, dog, horse, sheep, sofa): the mean IoU is over
  the classes present, which the chapters say. Written: ``VOCdevkit/VOC2012/{JPEGImages,
  SegmentationClass (palette), SegmentationClassAug (grayscale), ImageSets/Segmentation/{train,val,
  trainval}.txt, ImageSets/SegmentationAug/train_aug.txt}``; the augmented set holds the training
  images plus ``n_aug`` more (DARS's 9k unlabelled images; default 3 × n_train).
* **ScanNet** (``--style scannet``): scenes of 10 frames each (consecutive toycity images), written as
  ``scene%04d_00/color/<frame>.jpg`` and ``label-filt/<frame>.png`` (8-bit NYU40 ids) with
  ``scannetv2_{train,val}.txt``. Seventeen toycity classes map to seventeen of the 20 benchmark classes
  (:data:`SCANNET_FROM_CITYSCAPES`); sky → ceiling (NYU40 22) and person → person (NYU40 31) are NYU40
  classes outside the benchmark, so the loader's "everything else is ignored" rule runs for real.
  picture, counter and desk never occur.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from PIL import Image

from blvnb import classes as C
from blvnb.data import toycity
from blvnb.errors import ConfigError

log = logging.getLogger(__name__)

LAYOUT_STYLES = ("voc", "scannet")
#: Bump when the written pixels change (part of the cache key of :func:`ensure`).
LAYOUT_VERSION = 1

_VOC = {name: i for i, name in enumerate(C.VOC_CLASSES)}
#: Cityscapes class name -> VOC class index (names not listed -> background).
VOC_FROM_CITYSCAPES: dict[str, int] = {
    "person": _VOC["person"], "rider": _VOC["person"], "car": _VOC["car"], "truck": _VOC["car"],
    "bus": _VOC["bus"], "train": _VOC["train"], "motorcycle": _VOC["motorbike"], "bicycle": _VOC["bicycle"],
    "pole": _VOC["bottle"], "traffic light": _VOC["tvmonitor"], "traffic sign": _VOC["pottedplant"],
}
#: Cityscapes class name -> NYU40 id (names not listed, i.e. void, -> 0 = unannotated).
SCANNET_FROM_CITYSCAPES: dict[str, int] = {
    "building": 1, "road": 2, "vegetation": 3, "car": 4, "terrain": 5, "bicycle": 6, "sidewalk": 7,
    "fence": 8, "wall": 9, "traffic sign": 10, "pole": 16, "bus": 24, "rider": 28, "motorcycle": 33,
    "traffic light": 34, "train": 36, "truck": 39, "sky": 22, "person": 31,
}
FRAMES_PER_SCENE = 10


def _lut(table: dict[str, int], fill: int) -> np.ndarray:
    lut = np.full(256, fill, dtype=np.uint8)
    for lab in C.LABELS:
        if lab.name in table:
            lut[lab.id] = table[lab.name]
    return lut


_VOC_LUT = _lut(VOC_FROM_CITYSCAPES, 0)
_NYU_LUT = _lut(SCANNET_FROM_CITYSCAPES, 0)


def voc_label(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids -> VOC indices with a one-pixel void band (255) along class boundaries."""
    lab = _VOC_LUT[label_ids]
    edge = np.zeros(lab.shape, dtype=bool)
    dv = lab[1:, :] != lab[:-1, :]
    dh = lab[:, 1:] != lab[:, :-1]
    edge[1:, :] |= dv
    edge[:, 1:] |= dh
    out = lab.copy()
    out[edge] = C.IGNORE
    return out


def _object_window(label_ids: np.ndarray, things: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a 4:3 window around the largest instance that maps to a VOC object,
    2.2 times its height (at least a third of the image), as VOC photographs frame one object; the
    whole-height centre window when the scene has none."""
    H, W = label_ids.shape
    mapped = (_VOC_LUT[label_ids] > 0) & (things > 0)
    h = H
    cy, cx = H // 2, W // 2
    if mapped.any():
        ids, counts = np.unique(things[mapped], return_counts=True)
        rows, cols = np.nonzero(things == ids[np.argmax(counts)])
        h = int(np.clip(round(2.2 * (rows.max() - rows.min() + 1)), H // 3, H))
        cy, cx = (rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2
    w = min(W, round(h * 4 / 3))
    top = int(np.clip(cy - h // 2, 0, H - h))
    left = int(np.clip(cx - w // 2, 0, W - w))
    return top, left, h, w


def voc_view(image: np.ndarray, label_ids: np.ndarray, things: np.ndarray, out_hw: tuple[int, int]):
    """The object-centred window of a scene, resized to ``out_hw`` (bilinear image, nearest labels),
    with VOC labels and their void band."""
    top, left, h, w = _object_window(label_ids, things)
    size = (out_hw[1], out_hw[0])
    img = Image.fromarray(np.ascontiguousarray(image[top:top + h, left:left + w])).resize(size, Image.BILINEAR)
    ids = Image.fromarray(np.ascontiguousarray(label_ids[top:top + h, left:left + w])).resize(size, Image.NEAREST)
    return np.asarray(img), voc_label(np.asarray(ids))


def _check_counts(**counts) -> None:
    for name, n in counts.items():
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ConfigError(f"{name} must be an integer >= 0, got {n!r}")


def write_voc_tree(out, n_train: int, n_val: int, size=(128, 256), seed: int = 0, n_aug: int | None = None,
                   progress: bool = True) -> Path:
    """Write toycity as a VOC 2012 + SBD tree under ``out/VOCdevkit/VOC2012`` (into the new folder ``out``:
    :func:`write_tree` writes it beside its destination and renames it); returns ``out``."""
    H, W = toycity._check("cityscapes", size, seed=seed)
    n_aug = 3 * n_train if n_aug is None else n_aug
    _check_counts(n_train=n_train, n_val=n_val, n_aug=n_aug)
    if n_train + n_val == 0:
        raise ConfigError("n_train and n_val are both 0: nothing to write")
    root = Path(out) / "VOCdevkit" / "VOC2012"
    dirs = {k: root / k for k in ("JPEGImages", "SegmentationClass", "SegmentationClassAug",
                                  "ImageSets/Segmentation", "ImageSets/SegmentationAug")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    width = min(W, round(H * 4 / 3))
    palette = C.voc_colormap().reshape(-1).tolist()
    jobs = ([("train", i, f"2007_{i:06d}") for i in range(n_train)]
            + [("val", n_train + j, f"2011_{j:06d}") for j in range(n_val)]
            + [("aug", n_train + n_val + k, f"2008_{k:06d}") for k in range(n_aug)])
    bar = toycity._progress(len(jobs), f"toycity voc {H}x{width}", progress)
    lists: dict[str, list[str]] = {"train": [], "val": [], "aug": []}
    for split, index, name in jobs:
        image, label_ids, things = toycity.render_full("cityscapes", index, seed, (H, W))
        image, label = voc_view(image, label_ids, things, (H, width))
        Image.fromarray(np.ascontiguousarray(image), "RGB").save(dirs["JPEGImages"] / f"{name}.jpg", quality=92)
        if split in ("train", "val"):
            pal = Image.fromarray(label, "P")
            pal.putpalette(palette)
            pal.save(dirs["SegmentationClass"] / f"{name}.png")
        if split in ("train", "aug"):
            Image.fromarray(label, "L").save(dirs["SegmentationClassAug"] / f"{name}.png")
        lists[split].append(name)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seg = dirs["ImageSets/Segmentation"]
    (seg / "train.txt").write_text("".join(f"{n}\n" for n in lists["train"]))
    (seg / "val.txt").write_text("".join(f"{n}\n" for n in lists["val"]))
    (seg / "trainval.txt").write_text("".join(f"{n}\n" for n in lists["train"] + lists["val"]))
    aug = lists["train"] + lists["aug"]
    (dirs["ImageSets/SegmentationAug"] / "train_aug.txt").write_text(
        "".join(f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png\n" for n in aug))
    _manifest(out, "voc", (H, W), n_train, n_val, seed, n_aug=n_aug)
    return Path(out)


def write_scannet_tree(out, n_train: int, n_val: int, size=(128, 256), seed: int = 0, progress: bool = True) -> Path:
    """Write toycity as ScanNet 2-D frames (scenes of 10 frames, NYU40 labels) into the new folder ``out``
    (:func:`write_tree` writes it beside its destination and renames it); returns ``out``."""
    H, W = toycity._check("cityscapes", size, seed=seed)
    _check_counts(n_train=n_train, n_val=n_val)
    if n_train + n_val == 0:
        raise ConfigError("n_train and n_val are both 0: nothing to write")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bar = toycity._progress(n_train + n_val, f"toycity scannet {H}x{W}", progress)
    scenes: dict[str, list[str]] = {"train": [], "val": []}
    scene_no = 0
    for split, first, n in (("train", 0, n_train), ("val", n_train, n_val)):
        for start in range(0, n, FRAMES_PER_SCENE):
            scene = f"scene{scene_no:04d}_00"
            scene_no += 1
            scenes[split].append(scene)
            (out / scene / "color").mkdir(parents=True, exist_ok=True)
            (out / scene / "label-filt").mkdir(parents=True, exist_ok=True)
            for k in range(min(FRAMES_PER_SCENE, n - start)):
                image, label_ids, _ = toycity.render_full("cityscapes", first + start + k, seed, (H, W))
                Image.fromarray(image, "RGB").save(out / scene / "color" / f"{20 * k}.jpg", quality=92)
                Image.fromarray(_NYU_LUT[label_ids], "L").save(out / scene / "label-filt" / f"{20 * k}.png")
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()
    for split, names in scenes.items():
        (out / f"scannetv2_{split}.txt").write_text("".join(f"{s}\n" for s in names))
    _manifest(out, "scannet", (H, W), n_train, n_val, seed)
    return out


def _manifest(out, style: str, size, n_train: int, n_val: int, seed: int, **extra) -> None:
    manifest = {"generator": "blvnb.data.toycity_layouts", "version": LAYOUT_VERSION,
                "toycity_version": toycity.GENERATOR_VERSION, "style": style, "size": list(size),
                "n_train": n_train, "n_val": n_val, "seed": seed, **extra}
    (Path(out) / "toycity.json").write_text(json.dumps(manifest, indent=1))


def _writer(style: str):
    if style == "voc":
        return write_voc_tree
    if style == "scannet":
        return write_scannet_tree
    raise ConfigError(f"unknown toycity layout {style!r}; expected one of {', '.join(LAYOUT_STYLES)}")


def _check_args(style: str, n_train, n_val, size, seed, n_aug=None):
    """Every argument checked before a folder is made or an image drawn."""
    writer = _writer(style)
    H, W = toycity._check("cityscapes", size, seed=seed)
    _check_counts(n_train=n_train, n_val=n_val, **({"n_aug": n_aug} if n_aug is not None else {}))
    if n_train + n_val == 0:
        raise ConfigError("n_train and n_val are both 0: nothing to write")
    return writer, (H, W)


def write_tree(out, style: str, n_train: int, n_val: int, size=(128, 256), seed: int = 0, progress: bool = True,
               **options) -> Path:
    """``--style voc|scannet`` of ``blvnb data toycity``: written beside ``out`` and renamed into place, with
    :func:`blvnb.data.toycity.write_tree`'s rules (an older toycity tree is replaced whole, a foreign folder
    refused)."""
    writer, hw = _check_args(style, n_train, n_val, size, seed, options.get("n_aug"))
    return toycity.write_atomically(out, lambda tmp: writer(tmp, n_train, n_val, hw, seed, progress=progress, **options))


def ensure(style: str, n_train: int, n_val: int, size=(128, 256), seed: int = 0, cache_dir=None,
           progress: bool = True, **options) -> Path:
    """A cached VOC/ScanNet tree (:func:`blvnb.data.toycity.cached`)."""
    writer, (H, W) = _check_args(style, n_train, n_val, size, seed, options.get("n_aug"))
    extra = "".join(f"-{k}{v}" for k, v in sorted(options.items()))
    name = f"{style}-{H}x{W}-n{n_train}+{n_val}{extra}-s{seed}-v{toycity.GENERATOR_VERSION}.{LAYOUT_VERSION}"
    return toycity.cached(name, lambda tmp: writer(tmp, n_train, n_val, (H, W), seed, progress=progress, **options),
                          cache_dir)
