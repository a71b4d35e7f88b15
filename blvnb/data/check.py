"""``blvnb data check ROOT --dataset NAME``: validate a data root without training.

Every split of the data set is walked once, image by image, streaming (memory does not grow with the
number of images beyond the file names): each image is decoded in full (a truncated file fails), each
label is read and its stored ids counted, and every problem is collected rather than raised, so one run
lists them all:

* ``layout`` — a folder or split list the loader needs is missing (the loader's own message);
* ``missing-from-list`` — a split list names an image (or a scene) that does not exist;
* ``missing-label`` — an image without its label file; ``orphan-label`` — a label file without its image;
* ``unreadable`` — a file that cannot be opened (no permission, a folder or a broken link in its place) or
  decoded (truncated, empty, not an image);
* ``wrong-format`` — a file whose bytes are another format than its name says (a JPEG named ``.png``);
* ``unexpected-ids`` — label values outside the data set's table, with their pixel counts and a few files;
* ``size-mismatch`` — an image and its label of different sizes.

Alongside, the per-class pixel shares and image occurrence of the labels (in the data set's classes).

``decode=False`` is the check a batch of paper runs makes of its data root before the first run
(``blvnb reproduce`` / ``blvnb runs execute`` with ``--data-root``): every file a split names is opened and
its first bytes read (missing, unreadable, empty or of another format), nothing is decoded and no label
statistics are counted, so it costs one small read per file. The batch states its outcome to the runs it
starts in ``$BLVNB_DATA_CHECK`` (:data:`BATCH_CHECK_ENV`), and each run's record repeats it
(:func:`batch_data_check`).
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from blvnb import classes as C
from blvnb.errors import BlvnbError, ConfigError

#: kind -> (splits to check, class names, glob of label files relative to the label folder or None)
CHECKS: dict[str, tuple[tuple[str, ...], tuple[str, ...], str | None]] = {
    "cityscapes": (("train", "val"), C.CLASSES, "*/*_gtFine_labelIds.png"),
    "gta5": (("all",), C.CLASSES, "*.png"),
    "gta5-translated": (("all",), C.CLASSES, "*.png"),
    "synthia": (("all",), C.CLASSES, "*.png"),
    "voc": (("train", "val", "aug"), C.VOC_CLASSES, None),
    "scannet": (("train", "val"), C.SCANNET_CLASSES, None),
    "cityscapes-coarse": (("unlabeled",), (), None),
}
_MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".jpeg": b"\xff\xd8\xff"}
_FORMAT = {b"\x89PNG": "PNG", b"\xff\xd8\xff": "JPEG", b"GIF8": "GIF", b"BM": "BMP"}
EXAMPLES = 3
#: how a batch tells its runs (and their subprocesses, jobs, notebooks) what became of its data check:
#: "passed" or "skipped" (``--skip-data-check``); unset outside a batch
BATCH_CHECK_ENV = "BLVNB_DATA_CHECK"


def batch_data_check() -> str | None:
    """What the batch that started this run found of its data root ("passed", "skipped"), or None when
    no batch checked it (a run started on its own, or on toycity)."""
    return os.environ.get(BATCH_CHECK_ENV) or None


@dataclass
class Problem:
    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] {self.path}: {self.detail}"


@dataclass
class CheckReport:
    dataset: str
    root: str
    class_names: tuple[str, ...]
    images: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    pixels: np.ndarray | None = None  # per class, over all checked labels
    occurrence: np.ndarray | None = None  # images containing each class
    labeled_images: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def shares(self) -> np.ndarray:
        total = self.pixels.sum() if self.pixels is not None else 0
        return self.pixels / total if total else np.zeros(len(self.class_names))

    def summary(self) -> str:
        lines = [f"blvnb data check: {self.dataset} at {self.root}",
                 "images: " + ", ".join(f"{s} {n}" for s, n in self.images.items())]
        if self.pixels is not None and self.labeled_images:
            lines.append(f"classes ({self.labeled_images} labels): share of valid pixels / images containing it")
            share = self.shares()
            for name, s, o in zip(self.class_names, share, self.occurrence):
                lines.append(f"  {name:<16s} {100 * s:6.2f} %  {o / self.labeled_images:6.1%}")
        if self.ok:
            lines.append("OK: no problems found")
            return "\n".join(lines)
        by_kind: dict[str, int] = defaultdict(int)
        for p in self.problems:
            by_kind[p.kind] += 1
        lines.append(f"{len(self.problems)} problem(s): " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
        lines += [f"  {p}" for p in self.problems]
        lines.append("Fix or remove the files listed (or leave them out with a names list); "
                     "`blvnb data check` again should then print OK.")
        return "\n".join(lines)


def _format_of(head: bytes) -> str | None:
    """The format a file's first bytes say ("PNG", "JPEG", ...), None when unknown."""
    for magic, name in _FORMAT.items():
        if head.startswith(magic):
            return name
    return None


def _check_file(path: Path, problems: list[Problem], decode: bool = True) -> tuple[int, int] | bool | None:
    """Readability, format and (``decode``) full decode of one file; its (H, W) (True without
    ``decode``), or None after recording the problem."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        what = f"a broken link to {os.readlink(path)}" if path.is_symlink() else "gone (deleted while checked?)"
        problems.append(Problem("unreadable", str(path), f"the file is {what}"))
        return None
    except OSError as e:  # no permission, a folder in its place, an I/O error
        problems.append(Problem("unreadable", str(path), f"cannot open it ({e.strerror or e})"))
        return None
    if not head:
        problems.append(Problem("unreadable", str(path), "empty file (0 bytes)"))
        return None
    if path.suffix.lower() in _MAGIC:
        fmt = _format_of(head)
        expected = "PNG" if path.suffix.lower() == ".png" else "JPEG"
        if fmt != expected:
            problems.append(Problem("wrong-format", str(path),
                                    f"named {path.suffix} but its bytes are {fmt or 'not a known image format'}"))
            return None
    if not decode:
        return True
    try:
        with Image.open(path) as im:
            im.load()
            return im.size[1], im.size[0]
    except (OSError, ValueError, SyntaxError) as e:
        problems.append(Problem("unreadable", str(path), f"cannot decode it ({e})"))
        return None


def check_tree(root, dataset: str, *, splits=None, progress: bool = True, decode: bool = True) -> CheckReport:
    """Check every split of ``dataset`` under ``root``; returns a :class:`CheckReport` (never raises for
    problems in the data — only for a bad ``dataset`` or ``splits`` argument). ``decode=False``: each file
    opened and its first bytes read only (no decode, no label statistics, no orphan labels)."""
    from blvnb.data import build_dataset

    if dataset not in CHECKS:
        raise ConfigError(f"unknown data set {dataset!r} for `data check`; expected one of {', '.join(CHECKS)}")
    default_splits, names, label_glob = CHECKS[dataset]
    splits = tuple(default_splits if splits is None else ([splits] if isinstance(splits, str) else splits))
    root = Path(root).expanduser()
    report = CheckReport(dataset, str(root), tuple(names))
    if not root.is_dir():
        report.problems.append(Problem("layout", str(root), "the data root does not exist or is not a folder"))
        return report
    nc = len(names)
    report.pixels = np.zeros(nc, dtype=np.int64)
    report.occurrence = np.zeros(nc, dtype=np.int64)
    bad_ids: dict[int, list] = {}  # id -> [pixels, files, example files]
    seen_labels: set[str] = set()
    label_dirs: set[Path] = set()
    from tqdm import tqdm

    for split in splits:
        try:
            ds = build_dataset(dataset, root, split=split, check=False)
        except BlvnbError as e:
            report.problems.append(Problem("layout", f"{root} ({split})", str(e).splitlines()[0]))
            report.images[split] = 0
            continue
        report.images[split] = len(ds)
        report.problems += [Problem("missing-from-list", f"{root} ({split} list)", f"names {e!r}, which does not exist")
                            for e in ds.missing_entries]
        if ds.labeled:
            label_dirs.add(ds._label_dir())
        for i in tqdm(range(len(ds)), desc=f"check {dataset} {split}", unit="img", disable=not progress, leave=False):
            image_path = ds.image_path(i)
            hw = _check_file(image_path, report.problems, decode)
            if not ds.labeled:
                continue
            label_path = ds.label_path(i)
            seen_labels.add(str(label_path))
            if not (label_path.exists() or label_path.is_symlink()):
                report.problems.append(Problem("missing-label", str(image_path), f"its label {label_path} is missing"))
                continue
            if _check_file(label_path, report.problems, decode) is None or not decode:
                continue
            try:
                raw = ds._read_raw_label(label_path)
            except BlvnbError as e:
                report.problems.append(Problem("unreadable", str(label_path), str(e)))
                continue
            counts = np.bincount(raw.ravel().astype(np.int64))
            present = np.flatnonzero(counts)
            invalid = [int(v) for v in present if v not in ds.valid_ids]
            for v in invalid:
                entry = bad_ids.setdefault(v, [0, 0, []])
                entry[0] += int(counts[v])
                entry[1] += 1
                if len(entry[2]) < EXAMPLES:
                    entry[2].append(str(label_path))
            if hw is not None and tuple(hw) != tuple(raw.shape):
                report.problems.append(Problem("size-mismatch", str(label_path),
                                               f"label is {raw.shape[0]}x{raw.shape[1]} but its image {image_path.name} "
                                               f"is {hw[0]}x{hw[1]} (HxW)"))
            if invalid:
                continue
            train = np.asarray(ds._to_train_ids(raw)).ravel()
            per_class = np.bincount(train[train < nc].astype(np.int64), minlength=nc)
            report.pixels += per_class
            report.occurrence += per_class > 0
            report.labeled_images += 1
    for v, (pixels, files, examples) in sorted(bad_ids.items()):
        report.problems.append(Problem("unexpected-ids", ", ".join(examples) + (" ..." if files > len(examples) else ""),
                                       f"label value {v} is not in the {dataset} label table: {pixels} pixels in {files} file(s)"))
    if label_glob is not None and decode:
        for d in sorted(label_dirs):
            for p in sorted(d.glob(label_glob)):
                if str(p) not in seen_labels:
                    report.problems.append(Problem("orphan-label", str(p), "a label file with no image"))
    return report
