"""What data a run read, cheaply: a fingerprint per split, from the file system's metadata only.

A split's fingerprint is the number of its files (images, and labels where the split has them), their
total size in bytes and a SHA-256 of their sorted relative names and sizes (``name<TAB>size`` lines).
Nothing is read but ``stat``: a fingerprint of Cityscapes' train split costs about 6000 ``stat`` calls.
Two copies of a data set with the same files of the same sizes have the same fingerprint wherever they
are mounted; a partial copy, or one where a file was re-encoded, has another. A file the split names that
does not exist counts in ``missing`` (and in the hash, with size -1), so a partial copy differs too.

Runs put the fingerprints of the splits they read in their record (``data_fingerprint``, beside the key,
never in it: the key says what a run computes, the fingerprint what data it found).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path

from blvnb.errors import DatasetError


def fingerprint(root: str | Path, files: Iterable[str | Path]) -> dict:
    """``{"files", "bytes", "missing", "sha256"}`` of ``files`` (paths under ``root``), named relative to
    ``root``; a path outside ``root`` is a :class:`~blvnb.errors.DatasetError` naming it."""
    root = Path(root)
    rows, total, missing = [], 0, 0
    for path in files:
        path = Path(path)
        try:
            name = path.relative_to(root).as_posix()
        except ValueError:
            raise DatasetError(f"cannot fingerprint {path}: it is not under the data set's folder {root}") from None
        try:
            size = os.stat(path).st_size
        except OSError:  # missing, or a broken link: what this copy lacks
            size, missing = -1, missing + 1
        else:
            total += size
        rows.append(f"{name}\t{size}\n")
    h = hashlib.sha256()
    for row in sorted(rows):
        h.update(row.encode())
    return {"files": len(rows), "bytes": total, "missing": missing, "sha256": h.hexdigest()}


def split_fingerprint(ds) -> dict:
    """The fingerprint of a loader's split (:class:`~blvnb.data.base.SegmentationDataset`): its images and,
    where the split has labels, their label files — whether or not the loader was built to read them, so
    that a run that reads only the images of a split and one that reads its labels too agree."""
    files = [ds.image_path(i) for i in range(len(ds))]
    if ds._split_has_labels():
        files += [ds.label_path(i) for i in range(len(ds))]
    return fingerprint(ds.root, files)


def describe(fp: dict) -> str:
    """``2975 files, 11.3 GB, sha256 1a2b3c4d5e6f`` for messages."""
    size, unit = float(fp["bytes"]), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            break
        size /= 1000
    extra = f", {fp['missing']} missing" if fp.get("missing") else ""
    return f"{fp['files']} files, {size:.3g} {unit}{extra}, sha256 {fp['sha256'][:12]}"


__all__ = ["describe", "fingerprint", "split_fingerprint"]
