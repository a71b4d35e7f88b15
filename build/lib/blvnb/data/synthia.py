"""SYNTHIA-RAND-CITYSCAPES (Ros et al., 2016), the source domain of SYNTHIA -> Cityscapes.

Layout (as downloaded)::

    ROOT/RGB/NNNNNNN.png
    ROOT/GT/LABELS/NNNNNNN.png   16-bit 3-channel PNG; channel 0 = SYNTHIA class id (0 void .. 22)

Sample name: ``NNNNNNN``. Class ids map to Cityscapes train ids with
:func:`blvnb.classes.synthia_id_to_train_id` (16 shared classes; terrain, truck and train never occur).
SYNTHIA has no official split: ``split`` is ``"all"`` or ``"train"``, both meaning every image.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blvnb.classes import SYNTHIA_VALID_IDS, synthia_id_to_train_id
from blvnb.data.base import SegmentationDataset, check_split_choice, read_png_channel0


class SynthiaDataset(SegmentationDataset):
    """SYNTHIA-RAND-CITYSCAPES, ``split`` in ``all`` | ``train`` (both: every image)."""

    kind = "synthia"
    title = "SYNTHIA"
    toycity_style = "synthia"
    valid_ids = SYNTHIA_VALID_IDS
    image_pattern = "ROOT/RGB/NNNNNNN.png"
    label_pattern = "ROOT/GT/LABELS/NNNNNNN.png   (16-bit RGB PNG, channel 0 = SYNTHIA class id)"
    image_glob = "*.png"
    image_suffix = ".png"
    download_hint = "The real data: https://synthia-dataset.net (SYNTHIA-RAND-CITYSCAPES)."

    def _check_split(self, split: str) -> str:
        return check_split_choice(
            self.title, split, ("all", "train"), "SYNTHIA has no official split (both mean every image); use names= for a subset."
        )

    def _image_dir(self) -> Path:
        return self.root / "RGB"

    def _label_dir(self) -> Path:
        return self.root / "GT" / "LABELS"

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        return self._label_dir() / f"{name}.png"

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_png_channel0(path)

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        return synthia_id_to_train_id(raw)
