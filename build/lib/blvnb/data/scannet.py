"""ScanNet 2-D frames (DARS Appendix B, Tables 12–13).

Layout (frames exported from ScanNet's ``.sens`` files with the benchmark's 2-D helpers)::

    ROOT/<scene>/color/<frame>.jpg
    ROOT/<scene>/label-filt/<frame>.png     NYU40 ids (8- or 16-bit PNG; 0 = unannotated)
    ROOT/scannetv2_train.txt, ROOT/scannetv2_val.txt   the scenes of each split, one per line

``ROOT`` may also be the folder holding ``scans/`` (then ``ROOT/scans`` is used). Sample name:
``<scene>/<frame>``. NYU40 ids map to the 20 benchmark classes (:data:`blvnb.classes.SCANNET_CLASSES`);
0 and the 20 other NYU40 classes are ignored (255). DARS labels 1/8 and 1/4 of the training *images*
(not scenes): :func:`blvnb.data.splits.make_splits` on ``dataset.names`` does that. DARS trains on
481 × 481 crops of the 1296 × 968 frames.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from blvnb.classes import SCANNET_VALID_IDS, nyu40_to_train_id
from blvnb.data.base import SegmentationDataset, check_split_choice
from blvnb.errors import DatasetError

SPLITS = ("train", "val")


def scannet_root(root: Path) -> Path:
    return root / "scans" if (root / "scans").is_dir() and not (root / "scannetv2_train.txt").is_file() else root


def read_label_png(path: Path) -> np.ndarray:
    """An 8- or 16-bit single-channel label PNG -> its stored values (H×W, uint16)."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P", "I;16", "I;16B", "I"):
                raise DatasetError(f"label {path} has PIL mode {im.mode!r}; expected a single-channel PNG of NYU40 ids")
            return np.array(im).astype(np.uint16)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read label {path}: {e}") from e


class ScanNetDataset(SegmentationDataset):
    """ScanNet 2-D frames, ``split`` in ``train`` | ``val`` (scene lists ``scannetv2_{split}.txt``)."""

    kind = "scannet"
    title = "ScanNet"
    toycity_style = "scannet"
    valid_ids = SCANNET_VALID_IDS
    image_pattern = "ROOT/<scene>/color/<frame>.jpg   with ROOT/scannetv2_{split}.txt listing the scenes"
    label_pattern = "ROOT/<scene>/label-filt/<frame>.png   (NYU40 ids, 0 = unannotated)"
    image_glob = "*/color/*.jpg"
    image_suffix = ".jpg"
    download_hint = "The real data: http://www.scan-net.org (terms of use), exported with BenchmarkScripts/2d_helpers."

    def __init__(self, root, split: str = "train", *args, **kw):
        super().__init__(scannet_root(Path(root).expanduser()), split, *args, **kw)

    def _check_split(self, split: str) -> str:
        return check_split_choice(self.title, split, SPLITS)

    def _image_dir(self) -> Path:
        return self.root

    def _label_dir(self) -> Path:
        return self.root

    def list_path(self) -> Path:
        path = self.root / f"scannetv2_{self.split}.txt"
        if not path.is_file():
            raise DatasetError(f"{self.title}: the scene list {path} is missing.\n" + self._layout())
        return path

    def _find_images(self, image_dir: Path) -> list[tuple[str, Path]]:
        scenes = [s.strip() for s in self.list_path().read_text().splitlines() if s.strip()]
        found = []
        for scene in dict.fromkeys(scenes):
            color = image_dir / scene / "color"
            frames = sorted(color.glob("*.jpg"), key=lambda p: (len(p.stem), p.stem)) if color.is_dir() else []
            if not frames:
                self.missing_entries.append(scene)
            found += [(f"{scene}/{p.stem}", p) for p in frames if p.is_file()]
        return found

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        return image_path.parent.parent / "label-filt" / f"{image_path.stem}.png"

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_label_png(path)

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        return nyu40_to_train_id(raw)
