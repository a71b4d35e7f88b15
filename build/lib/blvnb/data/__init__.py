"""Data: real loaders (Cityscapes, GTA5, SYNTHIA, VOC, ScanNet, Cityscapes coarse, translated GTA5), toycity, nested splits, label statistics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from blvnb.errors import ConfigError

#: kind -> "module:Class"; loaders are imported when asked for, so ``import blvnb.data`` stays light.
DATASETS: dict[str, str] = {
    "cityscapes": "blvnb.data.cityscapes:CityscapesDataset",
    "gta5": "blvnb.data.gta5:GTA5Dataset",
    "synthia": "blvnb.data.synthia:SynthiaDataset",
    "voc": "blvnb.data.voc:VOCDataset",
    "scannet": "blvnb.data.scannet:ScanNetDataset",
    "cityscapes-coarse": "blvnb.data.cityscapes:CityscapesCoarseDataset",
    "gta5-translated": "blvnb.data.gta5:GTA5TranslatedDataset",
}


def build_dataset(
    kind: str,
    root: str | Path,
    split: str = "train",
    names: Iterable[str] | None = None,
    transform=None,
    *,
    labeled: bool = True,
    check: bool = True,
    **options,
):
    """The loader for ``kind`` (see :data:`DATASETS`); other arguments as in its constructor.

    ``split`` for gta5/synthia is "all" or "train" (both: every image); voc: "train", "val", "aug",
    "unlabeled"; scannet: "train", "val"; cityscapes-coarse: "unlabeled". ``options`` are the loader's own
    keywords (``max_images`` for cityscapes-coarse, ``image_folder`` for gta5-translated).
    """
    import importlib

    if kind not in DATASETS:
        raise ConfigError(f"unknown data set kind {kind!r}; expected one of {', '.join(DATASETS)}")
    module, cls = DATASETS[kind].split(":")
    loader = getattr(importlib.import_module(module), cls)
    import inspect

    accepted = set(inspect.signature(loader).parameters) - {"root", "split", "names", "transform", "check", "labeled", "args", "kw"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise ConfigError(f"data set {kind!r} does not take {unknown}; its own options: {sorted(accepted) or 'none'}")
    return loader(root, split=split, names=names, transform=transform, check=check, labeled=labeled, **options)


__all__ = ["DATASETS", "build_dataset"]
