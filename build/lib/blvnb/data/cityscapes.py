"""Cityscapes (fine annotations).

Layout (the official one)::

    ROOT/leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    ROOT/gtFine/{train,val,test}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png   (8-bit label ids 0..33)

Sample name: ``<city>_<seq>_<frame>``. The other files beside the labels (``_gtFine_color.png``,
``_instanceIds.png``, ``_labelTrainIds.png``) are not read: train ids are computed from the label ids
with :func:`blvnb.classes.label_id_to_train_id`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blvnb.classes import VALID_LABEL_IDS, label_id_to_train_id
from blvnb.data.base import SegmentationDataset, check_split_choice, read_index_png


class CityscapesDataset(SegmentationDataset):
    """Cityscapes, ``split`` in ``train`` | ``val`` | ``test`` (the test labels are not public)."""

    kind = "cityscapes"
    title = "Cityscapes"
    toycity_style = "cityscapes"
    valid_ids = VALID_LABEL_IDS
    image_pattern = "ROOT/leftImg8bit/{split}/<city>/<city>_<seq>_<frame>_leftImg8bit.png"
    label_pattern = "ROOT/gtFine/{split}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png"
    image_glob = "*/*_leftImg8bit.png"
    image_suffix = "_leftImg8bit.png"
    download_hint = "The real data: https://www.cityscapes-dataset.com (leftImg8bit_trainvaltest.zip, gtFine_trainvaltest.zip)."

    def _check_split(self, split: str) -> str:
        return check_split_choice(self.title, split, ("train", "val", "test"))

    def _image_dir(self) -> Path:
        return self.root / "leftImg8bit" / self.split

    def _label_dir(self) -> Path:
        return self.root / "gtFine" / self.split

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        return self._label_dir() / image_path.parent.name / f"{name}_gtFine_labelIds.png"

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        return label_id_to_train_id(raw)


class CityscapesCoarseDataset(CityscapesDataset):
    """Cityscapes' coarse ``train_extra`` images (DARS Table 8), always read **without** labels.

    Layout: ``ROOT/leftImg8bit/train_extra/<city>/<city>_<seq>_<frame>_leftImg8bit.png`` (19,998 images).
    DARS ignores the coarse annotations and pseudo-labels these images, so no label folder is needed.
    ``split`` is ``"unlabeled"`` or ``"train_extra"`` (the same images). ``max_images`` caps how many are
    used (DARS Table 8: N_p = 3k, 6k, 9k): an evenly spaced selection over the sorted names, so every city
    contributes and a larger cap's images include a smaller cap's only when it is a multiple.
    """

    kind = "cityscapes-coarse"
    title = "Cityscapes coarse (train_extra)"
    image_pattern = "ROOT/leftImg8bit/train_extra/<city>/<city>_<seq>_<frame>_leftImg8bit.png"
    label_pattern = "(none read: the coarse labels are ignored)"
    download_hint = "The real data: https://www.cityscapes-dataset.com (leftImg8bit_trainextra.zip)."

    def __init__(self, root, split: str = "unlabeled", names=None, transform=None, check: bool = True,
                 labeled: bool = False, max_images: int | None = None):
        from blvnb.errors import ConfigError

        if max_images is not None and (not isinstance(max_images, int) or isinstance(max_images, bool) or max_images < 1):
            raise ConfigError(f"max_images must be a positive integer or None, got {max_images!r}")
        self.max_images = max_images
        super().__init__(root, split, names, transform, check, labeled=False)

    def _check_split(self, split: str) -> str:
        check_split_choice(self.title, split, ("unlabeled", "train_extra"))
        return "train_extra"

    def _split_has_labels(self) -> bool:
        return False

    def _find_images(self, image_dir: Path):
        found = super()._find_images(image_dir)
        if self.max_images is not None and self.max_images < len(found):
            step = len(found) / self.max_images
            found = [found[int(i * step)] for i in range(self.max_images)]
        return found
