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
