"""Data: real loaders (Cityscapes, GTA5, SYNTHIA), toycity, nested splits, label statistics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from blvnb.errors import ConfigError

#: kind -> "module:Class"; loaders are imported when asked for, so ``import blvnb.data`` stays light.
DATASETS: dict[str, str] = {
    "cityscapes": "blvnb.data.cityscapes:CityscapesDataset",
    "gta5": "blvnb.data.gta5:GTA5Dataset",
    "synthia": "blvnb.data.synthia:SynthiaDataset",
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
):
    """The loader for ``kind`` ("cityscapes" | "gta5" | "synthia"); other arguments as in its constructor.

    ``split`` for gta5/synthia is "all" or "train" (both: every image).
    """
    import importlib

    if kind not in DATASETS:
        raise ConfigError(f"unknown data set kind {kind!r}; expected one of {', '.join(DATASETS)}")
    module, cls = DATASETS[kind].split(":")
    loader = getattr(importlib.import_module(module), cls)
    return loader(root, split=split, names=names, transform=transform, check=check, labeled=labeled)


__all__ = ["DATASETS", "build_dataset"]
