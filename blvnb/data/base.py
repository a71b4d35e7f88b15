"""The shared part of the data set loaders: listing samples, reading images and labels, checking them.

A loader (``cityscapes.py``, ``gta5.py``, ``synthia.py``) only says where its files are and how its
label ids map to train ids; everything else is here. Every problem a user's data can have (a missing
folder, an image without its label, unknown label ids, an image and label of different sizes, an
empty selection) raises :class:`~blvnb.errors.DatasetError` with the file, what was expected and the
command that makes a synthetic data set of the same layout.
"""

from __future__ import annotations

import fnmatch
import logging
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from blvnb.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

Transform = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]

#: How many missing/bad items an error message lists before "... and N more".
_SHOW = 5


def _few(items: Sequence[str], show: int = _SHOW) -> str:
    """``a, b, c ... and 7 more`` for error messages."""
    head = ", ".join(str(x) for x in items[:show])
    return head + (f" ... and {len(items) - show} more" if len(items) > show else "")


def _link_target(path: Path) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return "?"


def broken_links(root: Path, pattern: str) -> list[Path]:
    """Symbolic links on the way of the relative glob ``pattern`` under ``root`` whose target cannot be
    reached — dangling, or a loop. ``Path.glob`` skips a broken link to a folder and returns a broken link
    to a file that ``is_file()`` then rejects: either way the sample would vanish without a word.
    """
    parts = pattern.split("/")
    found: list[Path] = []
    dirs = [root]
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        nxt: list[Path] = []
        for d in dirs:
            try:
                with os.scandir(d) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError:
                continue
            for e in entries:
                if not fnmatch.fnmatchcase(e.name, part):
                    continue
                path = Path(e.path)
                if e.is_symlink() and not path.exists():  # exists() is False for a dangling link and a loop
                    found.append(path)
                elif not last and path.is_dir():
                    nxt.append(path)
        dirs = nxt
    return found


def describe_links(paths: Sequence[Path]) -> list[str]:
    """``path -> target`` for each link, for error messages."""
    return [f"{p} -> {_link_target(p)}" for p in paths]


def png_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image from its header only (PNG parsed directly, other formats via PIL)."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            width, height = struct.unpack(">II", head[16:24])
            return int(height), int(width)
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError, struct.error) as e:
        raise DatasetError(f"cannot read the header of {path}: {e}") from e


def read_rgb(path: Path) -> torch.Tensor:
    """An image file -> uint8 tensor 3×H×W (RGB)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_index_png(path: Path) -> np.ndarray:
    """An 8-bit grayscale or palette label PNG -> its stored values (H×W uint8), never via RGB."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("L", "P"):
                raise DatasetError(
                    f"label {path} has PIL mode {im.mode!r}; expected a single-channel ('L') or palette ('P') "
                    "image whose values are label ids (a colour-coded label cannot be read as ids)"
                )
            return np.array(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise DatasetError(f"cannot read label {path}: {e}") from e


def read_png_channel0(path: Path) -> np.ndarray:
    """First channel of a PNG at its stored bit depth (16-bit RGB too, which Pillow cannot read) -> H×W,
    read with OpenCV (which orders colour channels BGR(A): the file's first channel is OpenCV's third)."""
    import cv2

    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as e:
        raise DatasetError(f"cannot read label {path}: {e}") from e
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise DatasetError(f"cannot read label {path}: not a PNG image OpenCV can decode")
    return img if img.ndim == 2 else img[:, :, 2]


class SegmentationDataset(Dataset):
    """A labelled (or unlabelled) segmentation data set on disk, one sample per image.

    ``ds[i]`` is ``{"image": uint8 3×H×W, "label": int64 H×W train ids (255 ignore), "name": str}``,
    after ``transform(image, label) -> (image, label)``. With ``labeled=False`` it is
    ``{"image", "name"}`` only, labels need not exist, and ``transform`` is called as
    ``transform(image, None)`` (its second output is dropped).

    Samples are sorted by name; ``names`` restricts them to a list of names (e.g. a labelled split),
    each of which must exist. ``check=True`` verifies at construction that every image has its label.
    Label ids and image/label sizes are checked whenever a label is read.
    """

    #: "cityscapes" | "gta5" | "synthia"
    kind: ClassVar[str]
    #: The data set's name in messages.
    title: ClassVar[str]
    #: ``--style`` of ``blvnb data toycity`` that writes this layout.
    toycity_style: ClassVar[str]
    #: Values allowed in a label file (before mapping to train ids).
    valid_ids: ClassVar[frozenset[int]]
    #: Path patterns shown when the layout is wrong; ``{split}`` is filled in.
    image_pattern: ClassVar[str]
    label_pattern: ClassVar[str]
    #: Glob (relative to the image folder) and file-name suffix of images; name = file name minus suffix.
    image_glob: ClassVar[str]
    image_suffix: ClassVar[str]
    #: Where to get the real data.
    download_hint: ClassVar[str] = ""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        names: Iterable[str] | None = None,
        transform: Transform | None = None,
        check: bool = True,
        labeled: bool = True,
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = self._check_split(split)
        self.transform = transform
        # a split without labels (VOC's "unlabeled", Cityscapes' coarse train_extra) is always read unlabeled
        self.labeled = labeled = labeled and self._split_has_labels()
        self._valid = np.zeros(1 << 16, dtype=bool)
        self._valid[sorted(self.valid_ids)] = True

        if not self.root.is_dir():
            raise DatasetError(f"{self.title} root {self.root} does not exist or is not a folder.\n" + self._layout())
        image_dir = self._image_dir()
        if not image_dir.is_dir():
            raise DatasetError(f"{self.title}: image folder {image_dir} is missing.\n" + self._layout())
        # broken image links would vanish from the glob below without a word (issue 14 #4)
        broken = broken_links(image_dir, self.image_glob)
        if broken:
            raise DatasetError(
                f"{self.title}: {len(broken)} symbolic link(s) among the images under {image_dir} are broken "
                f"(their target is missing, or the links form a loop), so those samples cannot be read: "
                f"{_few(describe_links(broken))}. Restore the targets, or remove the links to leave the "
                "samples out."
            )
        if labeled and not self._label_dir().is_dir():
            raise DatasetError(
                f"{self.title}: label folder {self._label_dir()} is missing (build the data set with "
                "labeled=False to read images only).\n" + self._layout()
            )

        #: entries of a split list (VOC, ScanNet) that name no image; with check=False they are kept here
        #: (for ``blvnb data check``) instead of raising
        self.missing_entries: list[str] = []
        found = self._find_images(image_dir)
        if self.missing_entries and check:
            raise DatasetError(
                f"{self.title}: the split list of '{self.split}' names {len(self.missing_entries)} image(s) that do "
                f"not exist under {image_dir}: {_few(self.missing_entries)}.\n" + self._layout()
            )
        if not found:
            raise DatasetError(
                f"{self.title}: no images matching {image_dir / self.image_glob} (empty split '{self.split}').\n"
                + self._layout()
            )
        by_name = dict(found)
        if len(by_name) != len(found):
            raise DatasetError(f"{self.title}: several images share a sample name under {image_dir}")

        if names is not None:
            if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
                raise ConfigError(
                    f"{self.title}: names must be a list of sample names, got {type(names).__name__} {names!r} "
                    f"(for one sample write names=[{names!r}])"
                )
            wanted = list(dict.fromkeys(str(n) for n in names))
            if not wanted:
                raise DatasetError(f"{self.title}: the list of names selects nothing (it is empty)")
            missing = [n for n in wanted if n not in by_name]
            if missing:
                raise DatasetError(
                    f"{self.title}: {len(missing)} of {len(wanted)} requested names have no image under "
                    f"{image_dir}: {_few(missing)} (split '{self.split}' has {len(by_name)} images, "
                    f"e.g. {found[0][0]})"
                )
            keep = set(wanted)
            found = [(n, p) for n, p in found if n in keep]

        self.names: list[str] = [n for n, _ in found]
        self._images: list[Path] = [p for _, p in found]
        self._labels: list[Path] = [self._label_path_for(n, p) for n, p in found]

        if check and labeled:
            missing = [f"{lp} (a broken link to {_link_target(lp)})" if lp.is_symlink() else str(lp)
                       for lp in self._labels if not lp.is_file()]
            if missing:
                raise DatasetError(
                    f"{self.title}: {len(missing)} of {len(self.names)} images have no label file: "
                    f"{_few(missing)}.\n" + self._layout()
                )
        log.info("%s %s: %d images (%s)", self.title, self.split, len(self.names), "labeled" if labeled else "unlabeled")

    # --- hooks for the loaders -----------------------------------------------------------------------

    def _find_images(self, image_dir: Path) -> list[tuple[str, Path]]:
        """Sorted (sample name, image path) of the split. Default: every file matching ``image_glob``;
        loaders whose splits are text lists (VOC, ScanNet) override it and record list entries without
        an image in ``self.missing_entries``."""
        return sorted((p.name[: -len(self.image_suffix)], p) for p in image_dir.glob(self.image_glob) if p.is_file())

    def _check_split(self, split: str) -> str:
        """Validate ``split`` and return it (loaders override)."""
        return split

    def _split_has_labels(self) -> bool:
        """Whether ``self.split`` has labels to read (loaders with image-only splits override)."""
        return True

    def _image_dir(self) -> Path:
        raise NotImplementedError

    def _label_dir(self) -> Path:
        raise NotImplementedError

    def _label_path_for(self, name: str, image_path: Path) -> Path:
        raise NotImplementedError

    def _read_raw_label(self, path: Path) -> np.ndarray:
        """The label file's stored ids, H×W integers."""
        raise NotImplementedError

    def _to_train_ids(self, raw: np.ndarray) -> np.ndarray:
        """Stored ids -> train ids (uint8, 255 ignore)."""
        raise NotImplementedError

    # --- public interface ----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.names)

    def image_path(self, i: int) -> Path:
        return self._images[i]

    def label_path(self, i: int) -> Path:
        return self._labels[i]

    def read_label(self, i: int, check_size: bool = True) -> np.ndarray:
        """Label of sample ``i`` as train ids, uint8 H×W (no image decode; the size check reads its header)."""
        raw = self._read_checked(i)
        if check_size:
            self._check_size(i, png_size(self._images[i]), raw.shape)
        return self._to_train_ids(raw)

    def read_image(self, i: int) -> torch.Tensor:
        """Image of sample ``i``, uint8 3×H×W."""
        return read_rgb(self._images[i])

    def __getitem__(self, i: int) -> dict[str, Any]:
        image = self.read_image(i)
        if not self.labeled:
            if self.transform is not None:
                image, _ = self.transform(image, None)
            return {"image": image, "name": self.names[i]}
        raw = self._read_checked(i)
        self._check_size(i, tuple(image.shape[1:]), raw.shape)
        label = torch.from_numpy(self._to_train_ids(raw)).long()
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "name": self.names[i]}

    def __repr__(self) -> str:
        view = "labeled" if self.labeled else "unlabeled"
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, {len(self)} images, {view})"

    # --- checks --------------------------------------------------------------------------------------

    def _read_checked(self, i: int) -> np.ndarray:
        path = self._labels[i]
        if not path.is_file():
            what = f"is a broken link to {_link_target(path)}" if path.is_symlink() else "is missing"
            raise DatasetError(f"{self.title}: label file {path} of image {self._images[i]} {what}")
        raw = self._read_raw_label(path)
        if raw.ndim != 2:
            raise DatasetError(f"{self.title}: label {path} has shape {raw.shape}; expected H×W")
        present = np.flatnonzero(np.bincount(raw.ravel()))
        bad = present[(present >= self._valid.size) | ~self._valid[np.minimum(present, self._valid.size - 1)]]
        if bad.size:
            lo, hi = min(self.valid_ids), max(self.valid_ids)
            raise DatasetError(
                f"{self.title}: label {path} contains ids {_few([int(b) for b in bad])} that are not in the "
                f"label table (expected {lo}..{hi})"
            )
        return raw

    def _check_size(self, i: int, image_hw: tuple[int, ...], label_hw: tuple[int, ...]) -> None:
        if tuple(image_hw) != tuple(label_hw):
            raise DatasetError(
                f"{self.title}: image {self._images[i]} is {image_hw[0]}x{image_hw[1]} (HxW) but its label "
                f"{self._labels[i]} is {label_hw[0]}x{label_hw[1]}"
            )

    def _layout(self) -> str:
        """The expected layout and how to make a synthetic one, for error messages."""
        split = self.split if self.split not in ("all",) else "train"
        lines = [
            f"Expected layout (ROOT = {self.root}):",
            "  " + self.image_pattern.format(split=split),
            "  " + self.label_pattern.format(split=split),
        ]
        if self.download_hint:
            lines.append(self.download_hint)
        lines.append(
            "A synthetic data set with this layout is made by:\n"
            f"  blvnb data toycity --out DIR --style {self.toycity_style} --n-train N --n-val M --size HxW --seed S"
        )
        return "\n".join(lines)


def check_split_choice(title: str, split: str, choices: Sequence[str], note: str = "") -> str:
    """Raise ConfigError unless ``split`` is one of ``choices``."""
    if split not in choices:
        raise ConfigError(f"{title}: unknown split {split!r}; expected one of {', '.join(choices)}. {note}".rstrip())
    return split


__all__ = [
    "SegmentationDataset",
    "broken_links",
    "check_split_choice",
    "png_size",
    "read_index_png",
    "read_png_channel0",
    "read_rgb",
]
