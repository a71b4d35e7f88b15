"""PASCAL VOC 2012 with the SBD augmented set (DARS Table 3, Table 7).

Layout (the devkit's, plus the common "SegmentationClassAug" labels of the 10,582-image augmented set)::

    ROOT/JPEGImages/<name>.jpg
    ROOT/SegmentationClass/<name>.png          palette PNG, index = class (0..20), 255 = void band
    ROOT/ImageSets/Segmentation/{train,val}.txt
    ROOT/SegmentationClassAug/<name>.png       grayscale or palette PNG, same values
    ROOT/ImageSets/SegmentationAug/train_aug.txt   (also found as ImageSets/Segmentation/train_aug.txt
                                                    or ROOT/train_aug.txt)

``ROOT`` is ``VOCdevkit/VOC2012``; a folder holding ``VOCdevkit/VOC2012`` or ``VOC2012`` is accepted too.
List lines are image names (``2007_000032``) or the common "``/JPEGImages/x.jpg /SegmentationClassAug/x.png``"
pairs, of which the image name is used.

Splits (the DARS setting: the official 1,464 training images labeled, the rest of the augmented set
unlabeled, 1,449 validation images):

* ``train`` — ``train.txt`` with ``SegmentationClass`` labels;
* ``val`` — ``val.txt`` with ``SegmentationClass`` labels;
* ``aug`` — ``train_aug.txt`` with ``SegmentationClassAug`` labels (the common 1/16 … 1/2 protocol splits
  this list with :mod:`blvnb.data.splits`);
* ``unlabeled`` — the ``aug`` images that are in neither ``train`` nor ``val``, read without labels.

Labels are the 21 classes of :data:`blvnb.classes.VOC_CLASSES`; train id = stored index, 255 ignored.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blvnb.classes import VOC_VALID_IDS
from blvnb.data.base import SegmentationDataset, check_split_choice, read_index_png

SPLITS = ("train", "val", "aug", "unlabeled")
_AUG_LISTS = ("ImageSets/SegmentationAug/train_aug.txt", "ImageSets/Segmentation/train_aug.txt", "train_aug.txt")


def voc_root(root: Path) -> Path:
    """``root`` itself, or its ``VOCdevkit/VOC2012`` / ``VOC2012`` sub-folder when that is where the data are."""
    for sub in ("", "VOC2012", "VOCdevkit/VOC2012"):
        cand = root / sub if sub else root
        if (cand / "JPEGImages").is_dir():
            return cand
    return root


def read_list(path: Path) -> list[str]:
    """Image names of a VOC split list (plain names or "image label" path pairs), in file order."""
    names = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            names.append(Path(line.split()[0]).stem)
    return names


class VOCDataset(SegmentationDataset):
    """PASCAL VOC 2012 (+ SBD), ``split`` in ``train`` | ``val`` | ``aug`` | ``unlabeled``."""

    kind = "voc"
    title = "PASCAL VOC 2012"
    toycity_style = "voc"
    valid_ids = VOC_VALID_IDS
    image_pattern = "ROOT/JPEGImages/<name>.jpg   with ROOT/ImageSets/Segmentation/{split}.txt"
    label_pattern = "ROOT/SegmentationClass/<name>.png   (palette PNG, index = class 0..20, 255 void)"
    image_glob = "*.jpg"
    image_suffix = ".jpg"
    download_hint = ("The real data: the VOC 2012 devkit (VOCtrainval_11-May-2012.tar) and the SBD-augmented labels "
                     "'SegmentationClassAug' with train_aug.txt.")

    def __init__(self, root, split: str = "train", *args, **kw):
        super().__init__(voc_root(Path(root).expanduser()), split, *args, **kw)

    def _check_split(self, split: str) -> str:
        return check_split_choice(self.title, split, SPLITS)

    def _split_has_labels(self) -> bool:
        return self.split != "unlabeled"

    def _image_dir(self) -> Path:
        return self.root / "JPEGImages"

    def _label_dir(self) -> Path:
        return self.root / ("SegmentationClassAug" if self.split == "aug" else "SegmentationClass")

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        return self._label_dir() / f"{name}.png"

    def list_path(self, split: str | None = None) -> Path:
        """The text list that defines ``split`` (a DatasetError naming the candidates when it is missing)."""
        from blvnb.errors import DatasetError

        split = split or self.split
        if split in ("train", "val"):
            cands = (f"ImageSets/Segmentation/{split}.txt",)
        else:
            cands = _AUG_LISTS
        for c in cands:
            if (self.root / c).is_file():
                return self.root / c
        raise DatasetError(f"{self.title}: the list of split '{split}' is missing: expected "
                           + " or ".join(str(self.root / c) for c in cands) + ".\n" + self._layout())

    def _find_images(self, image_dir: Path) -> list[tuple[str, Path]]:
        names = read_list(self.list_path())
        if self.split == "unlabeled":
            taken = set(read_list(self.list_path("train"))) | set(read_list(self.list_path("val")))
            names = [n for n in names if n not in taken]
        found, seen = [], set()
        for n in names:
            if n in seen:
                continue
            seen.add(n)
            p = image_dir / f"{n}.jpg"
            if p.is_file():
                found.append((n, p))
            else:
                self.missing_entries.append(n)
        return sorted(found)

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        return raw.astype(np.uint8, copy=False)
