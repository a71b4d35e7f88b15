"""GTA5 (Richter et al., 2016), the synthetic source domain of GTA5 -> Cityscapes.

Layout (as downloaded)::

    ROOT/images/NNNNN.png
    ROOT/labels/NNNNN.png     palette ('P') PNGs whose indices are Cityscapes label ids

Sample name: ``NNNNN``. GTA5 has no official split: ``split`` is ``"all"`` or ``"train"``, both meaning
every image (UDA trains on all of them); select a subset with ``names``. A few real GTA5 images have a
label of another size than the image: reading one raises :class:`~blvnb.errors.DatasetError`
(leave them out with ``names``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blvnb.classes import VALID_LABEL_IDS, label_id_to_train_id
from blvnb.data.base import SegmentationDataset, check_split_choice, read_index_png


class GTA5Dataset(SegmentationDataset):
    """GTA5, ``split`` in ``all`` | ``train`` (both: every image)."""

    kind = "gta5"
    title = "GTA5"
    toycity_style = "gta"
    valid_ids = VALID_LABEL_IDS
    image_pattern = "ROOT/images/NNNNN.png"
    label_pattern = "ROOT/labels/NNNNN.png   (palette PNG, index = Cityscapes label id)"
    image_glob = "*.png"
    image_suffix = ".png"
    download_hint = "The real data: https://download.visinf.tu-darmstadt.de/data/from_games/"

    def _check_split(self, split: str) -> str:
        return check_split_choice(
            self.title, split, ("all", "train"), "GTA5 has no official split (both mean every image); use names= for a subset."
        )

    #: the image folder under ROOT ("images"; CyCADA-translated images live in another folder)
    image_folder = "images"

    def _image_dir(self) -> Path:
        return self.root / self.image_folder

    def _label_dir(self) -> Path:
        return self.root / "labels"

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        return self._label_dir() / f"{name}.png"

    def _read_raw_label(self, path: Path) -> np.ndarray:
        return read_index_png(path)

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        return label_id_to_train_id(raw)


class GTA5TranslatedDataset(GTA5Dataset):
    """GTA5 with CyCADA-translated images (DARS Appendix C): the same labels, images from another folder.

    Layout: ``ROOT/<image_folder>/NNNNN.png`` (default ``images_translated``) beside ``ROOT/labels``;
    pass ``image_folder=`` for another name (e.g. the folder the translated set was unpacked to).
    """

    kind = "gta5-translated"
    title = "GTA5 (translated images)"
    image_folder = "images_translated"
    image_pattern = "ROOT/images_translated/NNNNN.png   (or image_folder=...)"

    def __init__(self, root, split: str = "all", names=None, transform=None, check: bool = True,
                 labeled: bool = True, image_folder: str | None = None):
        if image_folder is not None:
            from blvnb.errors import ConfigError

            if not isinstance(image_folder, str) or not image_folder or "/" in image_folder or image_folder in (".", ".."):
                raise ConfigError(f"image_folder must be a folder name under the GTA5 root, got {image_folder!r}")
            self.image_folder = image_folder
        super().__init__(root, split, names, transform, check, labeled)
