"""A run: a frozen config → a stored result record.

``RunConfig.from_profile("quick", strategy="supervised", loss="blv", loss_options={"sigma": 6})`` takes
every default from the profile; ``run(cfg)`` resolves the data (toycity in the cache, or the real data
under ``data_root``), builds the model, hands the strategy's streams to the one loop, evaluates on
Cityscapes val and stores the record (:mod:`blvnb.experiments.store`). A second call with the same
config reads the record back; ``force=True`` trains again from scratch.

A strategy (``blvnb/engine/strategies/<name>.py``) sees the run through ``build(cfg, data)``: ``cfg``
is the :class:`RunConfig`, ``data`` a :class:`RunData` (data sets, splits, streams, class counts, the
run's work folder, other runs it depends on).
"""

from __future__ import annotations

import logging
import math
import os
import platform
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from blvnb.classes import NUM_CLASSES, SCANNET_CLASSES, VOC_CLASSES
from blvnb.data import build_dataset, toycity
from blvnb.data.base import read_index_png
from blvnb.data.check import batch_data_check
from blvnb.data.fingerprint import split_fingerprint
from blvnb.data.transforms import AugmentedDataset, eval_transform, train_transform
from blvnb.devices import deterministic_algorithms, fixed_threads, resolve_device
from blvnb.engine import loop, signals
from blvnb.engine.evaluate import evaluate
from blvnb.engine.streams import Stream
from blvnb.engine.strategies import STRATEGIES, get_builder
from blvnb.errors import BlvnbError, ConfigError, DatasetError
from blvnb.experiments import store
from blvnb.io import file_sha256
from blvnb.experiments.profiles import (PRETRAINED_CHOICES, FrozenDict, Profile, freeze, get_profile, profile_seeds,
                                       thaw)
from blvnb.losses.frequencies import counts_from_labels
from blvnb.models.registry import build_model, weights_report

log = logging.getLogger(__name__)

#: data-set kind → (toycity style, sub-folders of data_root that may hold the real data set)
DATASETS = {
    "cityscapes": ("cityscapes", ("cityscapes",)),
    "gta5": ("gta", ("gta5", "gta", "GTA5")),
    "synthia": ("synthia", ("synthia", "synthia/RAND_CITYSCAPES", "RAND_CITYSCAPES")),
    # DARS Tables 3, 12, 13: other label spaces; toycity writes them in their layouts (blvnb.data.toycity_layouts)
    "voc": ("voc", ("VOCdevkit/VOC2012", "VOCdevkit", "voc", "VOC2012")),
    "scannet": ("scannet", ("scannet", "ScanNet")),
}

#: data sets whose classes are not Cityscapes' 19: their class names, in train-id order
LABEL_SPACES = {"voc": VOC_CLASSES, "scannet": SCANNET_CLASSES}


def num_classes_of(kind: str) -> int:
    """The number of classes a model trained on data set ``kind`` predicts (19 unless another label space)."""
    return len(LABEL_SPACES[kind]) if kind in LABEL_SPACES else NUM_CLASSES


def split_dataset(kind: str) -> str:
    """The data set whose training images a run with labelled data ``kind`` splits: its own where it has its
    own label space (VOC, ScanNet), else Cityscapes (the semi-supervised setting)."""
    return kind if kind in LABEL_SPACES else "cityscapes"

#: fields that change where and how fast a run executes, not what it computes: not in the key
EXECUTION = ("device", "num_workers", "progress", "ckpt_every", "channels_last", "compile", "weights_dir")
#: the environment variable a run's ``weights_dir`` defaults to (``blvnb reproduce --weights DIR`` sets it for
#: the chapters' kernels, as ``BLVNB_RESULTS`` says where the store is)
WEIGHTS_ENV = "BLVNB_WEIGHTS"
#: fields added after records were made, which enter the key only when they differ from the value every
#: earlier run computed with (so that adding a setting does not retrain what it does not change)
OPTIONAL_IN_KEY: dict[str, Any] = {"deterministic": False, "photometric": False, "cat_max_ratio": None,
                                   "eval_size": None, "eval_stride": None, "splits": "nested"}
#: ``splits="released"``: the strategy whose paper's lists a run takes (DARS's for its rounds); every other
#: strategy takes U2PL's, BLV's semi-supervised lineage (recipes.md)
RELEASED_SOURCE = {"dars-rounds": "dars"}
RELEASED_DEFAULT_SOURCE = "u2pl"

_UNSET: Any = None  # a field left None is filled from the profile (where the profile has that field)


@dataclass(frozen=True)
class RunConfig:
    """What a run computes (every field but :data:`EXECUTION` is part of its key).

    Fields that a :class:`~blvnb.experiments.profiles.Profile` also has (model, iters, batch_size, crop,
    data sizes, …) default to the profile's value; ``seed`` to the profile's first seed.
    """

    profile: str
    strategy: str = "supervised"
    model: str = _UNSET
    loss: str = "ce"
    loss_options: FrozenDict = field(default_factory=FrozenDict)
    strategy_options: FrozenDict = field(default_factory=FrozenDict)
    dataset: str = "cityscapes"  # labeled / source data: cityscapes | gta5 | synthia
    target: str | None = None  # UDA target ("cityscapes") or None
    labeled_fraction: str | None = None  # None: all of the train split; else e.g. "1/8"
    # which images of the split are labelled: "nested" (ours, seeded: blvnb.data.splits.nested_splits), "dars"
    # or "u2pl" (that release's lists, blvnb/data/released_splits), or "released" (the profile's word: the
    # list of the run's paper where it released one — RELEASED_SOURCE — else "nested"; ScanNet has none)
    splits: str = _UNSET
    seed: int = _UNSET
    pretrained: str | None = "profile"  # None | "toy" | "imagenet" | a weights file | "profile" (its default)
    evaluate: bool = True  # False: no evaluation (a toy pretraining run)
    data_root: str | None = None
    # from the profile (see Profile for their meaning)
    iters: int = _UNSET
    batch_size: int = _UNSET
    lr: float | None = _UNSET
    weight_decay: float | None = _UNSET
    crop: tuple[int, int] = _UNSET
    scale_range: tuple[float, float] = _UNSET
    base_size: tuple[int, int] | None = _UNSET
    amp: bool = _UNSET
    threads: int = _UNSET  # intra-op CPU threads (blvnb.devices.fixed_threads): changes a CPU's arithmetic
    deterministic: bool = _UNSET  # deterministic algorithms (blvnb.devices.deterministic_algorithms): a GPU's
    photometric: bool = False  # PhotoMetricDistortion after the flip (mmseg's Cityscapes pipeline, BLV Table 1)
    cat_max_ratio: float | None = None  # redraw a crop where one class covers this share (mmseg: 0.75)
    eval_mode: str = _UNSET
    eval_crop: tuple[int, int] | None = _UNSET
    # not in the profiles (a table's recipe sets them): None leaves them out of the key (OPTIONAL_IN_KEY)
    eval_size: tuple[int, int] | None = None  # infer on the image resized to (H, W); scored at the label's size
    eval_stride: tuple[int, int] | None = None  # sliding-window step (None: ⌈2/3 · eval_crop⌉)
    size: tuple[int, int] = _UNSET
    n_train: int = _UNSET
    n_val: int = _UNSET
    data_seed: int = _UNSET
    # execution (not part of the key)
    device: str = "auto"
    num_workers: int = _UNSET
    progress: bool = True
    ckpt_every: int | None = None  # None: a tenth of the run, at least 50 iterations
    channels_last: bool = False
    compile: bool = False
    # the folder of ImageNet weights, one file per backbone (blvnb.models.weights), that pretrained="imagenet"
    # reads; None: $BLVNB_WEIGHTS, else timm's hub (the paper profile refuses that: no download)
    weights_dir: str | None = None

    def __post_init__(self):
        prof = get_profile(self.profile)
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        profile_fields = {f.name for f in fields(Profile)}
        for f in fields(self):
            if f.name in profile_fields and f.name != "pretrained" and getattr(self, f.name) is None \
                    and f.default is _UNSET:
                set_(f.name, getattr(prof, f.name))
        if self.seed is None:
            set_("seed", prof.seeds[0])
        if self.pretrained == "profile":
            set_("pretrained", prof.pretrained)
        if self.weights_dir is None and os.environ.get(WEIGHTS_ENV):
            set_("weights_dir", os.environ[WEIGHTS_ENV])
        for name in ("loss_options", "strategy_options"):
            value = getattr(self, name)
            if value is None:
                value = {}
            if not isinstance(value, Mapping):
                raise ConfigError(f"{name} must be a dict of option names to values, got {value!r}")
            set_(name, FrozenDict(value))
        for name in ("crop", "scale_range", "base_size", "eval_crop", "eval_size", "eval_stride", "size"):
            v = getattr(self, name)
            if v is not None:
                set_(name, freeze(v))
        self._validate(prof)

    def _validate(self, prof: Profile) -> None:
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; registered: {', '.join(STRATEGIES)}")
        for name in ("dataset",) + (("target",) if self.target is not None else ()):
            if getattr(self, name) not in DATASETS:
                raise ConfigError(f"unknown {name} {getattr(self, name)!r}; known: {', '.join(DATASETS)}")
        for name in ("iters", "batch_size", "threads"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "iters" else 1):
                raise ConfigError(f"{name} must be an integer >= {0 if name == 'iters' else 1}, got {v!r}")
        for name in ("deterministic", "photometric"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        r = self.cat_max_ratio
        if r is not None and (isinstance(r, bool) or not isinstance(r, int | float) or not 0 < r <= 1):
            raise ConfigError(f"cat_max_ratio must be a share in (0, 1] or None, got {r!r}")
        for name in ("crop", "size", "base_size", "eval_crop", "eval_size", "eval_stride"):
            v = getattr(self, name)
            if v is None and name in ("base_size", "eval_crop", "eval_size", "eval_stride"):
                continue
            if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and not isinstance(x, bool)
                                                                 and x > 0 for x in v)):
                raise ConfigError(f"{name} must be (height, width) in pixels, two positive integers; got {v!r}")
        lo_hi = self.scale_range
        if not (isinstance(lo_hi, tuple) and len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1]):
            raise ConfigError(f"scale_range must be (min, max) with 0 < min <= max; got {lo_hi!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        if self.labeled_fraction is not None:
            from blvnb.data.splits import fraction_text

            object.__setattr__(self, "labeled_fraction", fraction_text(self.labeled_fraction))
        self._resolve_splits()
        p = self.pretrained
        if p is not None and p not in PRETRAINED_CHOICES and not Path(str(p)).expanduser().is_file():
            raise ConfigError(f"pretrained={p!r} is neither one of {PRETRAINED_CHOICES} nor an existing weights "
                              "file; pass None (random initialisation), 'toy', 'imagenet' or a path")
        if self.weights_dir is not None:
            from blvnb.models.weights import check_folder

            if os.environ.get(WEIGHTS_ENV) == self.weights_dir and not Path(self.weights_dir).expanduser().is_dir():
                raise ConfigError(f"${WEIGHTS_ENV}={self.weights_dir} is not a folder: unset it, or point it at the "
                                  "folder of ImageNet weights")
            check_folder(self.weights_dir)
        if p == "toy" and not prof.pretraining:
            raise ConfigError(f"profile {prof.name!r} has no toy pretraining; use pretrained=None")
        if not prof.synthetic and self.data_root is None:
            raise ConfigError(
                f"profile {prof.name!r} trains on the real data sets: pass data_root "
                f"(papermill ... -p data_root /path/to/data, a folder holding cityscapes/, gta5/, synthia/)")

    def _resolve_splits(self) -> None:
        """``splits`` as the list the run reads: "released" becomes the run's paper's source where it has a
        list of this data set and fraction, else "nested"; a named source must have that list."""
        from blvnb.data.splits import RELEASED_SOURCES, released_folder

        choices = ("nested", "released") + RELEASED_SOURCES
        if self.splits not in choices:
            raise ConfigError(f"splits must be one of {', '.join(map(repr, choices))}, got {self.splits!r}")
        kind, fraction = split_dataset(self.dataset), self.labeled_fraction
        source = self.splits
        if source == "released":
            source = RELEASED_SOURCE.get(self.strategy, RELEASED_DEFAULT_SOURCE)
            if released_folder(source, kind, fraction) is None:
                source = "nested"
        elif source != "nested" and released_folder(source, kind, fraction) is None:
            from blvnb.data.splits import released_split

            released_split(source, kind, fraction)  # raises ConfigError naming the lists it has
        object.__setattr__(self, "splits", source)

    @classmethod
    def from_profile(cls, profile: str, *, strategy: str = "supervised", loss: str = "ce",
                     loss_options: dict | None = None, **overrides) -> RunConfig:
        """The run of ``strategy`` with ``loss`` in ``profile``; any field may be overridden by keyword."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown run setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(profile=profile, strategy=strategy, loss=loss, loss_options=loss_options or {}, **overrides)

    def with_(self, **kw) -> RunConfig:
        unknown = set(kw) - {f.name for f in fields(self)}
        if unknown:
            raise ConfigError(f"unknown run setting(s) {sorted(unknown)}")
        return replace(self, **kw)

    def key_dict(self) -> dict:
        """What the run computes, as JSON: the fields minus :data:`EXECUTION`, the real data's mount point
        replaced by "real", a weights file by its content hash, and toycity's generator version."""
        d = {f.name: thaw(getattr(self, f.name)) for f in fields(self) if f.name not in EXECUTION
             and not (f.name in OPTIONAL_IN_KEY and getattr(self, f.name) == OPTIONAL_IN_KEY[f.name])}
        if d["data_root"] is not None:  # the same real data set wherever it is mounted
            d["data_root"] = "real"
        else:  # a new toycity generator makes new data
            d["toycity_version"] = toycity.GENERATOR_VERSION
        if d["pretrained"] is not None and d["pretrained"] not in PRETRAINED_CHOICES:
            d["pretrained"] = "file:" + file_sha256(Path(d["pretrained"]).expanduser())[:16]
        if d["pretrained"] == "toy":
            d["pretraining"] = thaw(get_profile(self.profile).pretraining)
        return d

    def key(self) -> str:
        """The store key: a hash of :meth:`key_dict` and the library version."""
        return store.config_key(self.key_dict())


def pretraining_config(cfg: RunConfig) -> RunConfig:
    """The profile's toy pretraining run for ``cfg.model``: supervised CE on disjoint toycity data (another
    style and data seed), not evaluated; its backbone is the "ImageNet" of runs with ``pretrained="toy"``."""
    spec = dict(get_profile(cfg.profile).pretraining)
    spec.pop("load", None)  # what a run takes from it, not a setting of the pretraining run
    return RunConfig.from_profile(cfg.profile, **{**dict(model=cfg.model, data_root=cfg.data_root, device=cfg.device,
                                                         num_workers=cfg.num_workers, progress=cfg.progress),
                                                  **spec, "pretrained": None, "evaluate": False})


def dataset_root(kind: str, data_root: str | None, cfg: RunConfig | None = None, progress: bool = True,
                 n_train: int | None = None) -> Path:
    """The folder holding data set ``kind``: under ``data_root`` for real data, else toycity in the cache."""
    if kind not in DATASETS:
        raise ConfigError(f"unknown data set {kind!r}; known: {', '.join(DATASETS)}")
    style, subdirs = DATASETS[kind]
    if data_root is None:
        size, n, n_val, seed = (cfg.size, cfg.n_train, cfg.n_val, cfg.data_seed) if cfg else ((128, 256), 200, 60, 0)
        if kind in LABEL_SPACES:  # toycity relabelled into VOC's / ScanNet's classes and written in their layouts
            from blvnb.data import toycity_layouts

            return toycity_layouts.ensure(style, n_train=n_train if n_train is not None else n, n_val=n_val,
                                          size=tuple(size), seed=seed, progress=progress)
        return toycity.ensure(style, n_train=n_train if n_train is not None else n, n_val=n_val, size=tuple(size),
                              seed=seed, progress=progress)
    root = Path(data_root).expanduser()
    for sub in subdirs:
        if (root / sub).is_dir():
            return root / sub
    return root  # data_root may point at the data set itself; the loader explains what it expected


class PseudoLabeled(torch.utils.data.Dataset):
    """A data set whose labels are replaced by the PNGs ``<pseudo_dir>/<name>.png`` (train ids, 255 ignore)."""

    def __init__(self, base, pseudo_dir: str | Path):
        self.base, self.pseudo_dir = base, Path(pseudo_dir)
        if not self.pseudo_dir.is_dir():
            raise DatasetError(f"pseudo-label folder {self.pseudo_dir} does not exist")
        self.names = base.names
        self.labeled = True

    def __len__(self):
        return len(self.base)

    def label_file(self, i: int) -> Path:
        return self.pseudo_dir / f"{self.names[i]}.png"

    def read_label(self, i: int):
        path = self.label_file(i)
        if not path.is_file():
            raise DatasetError(f"pseudo label {path} of image {self.names[i]} is missing; regenerate the round's labels")
        return read_index_png(path)

    def __getitem__(self, i: int) -> dict:
        image = self.base.read_image(i)
        label = torch.from_numpy(self.read_label(i).astype(np.int64))
        if tuple(label.shape) != tuple(image.shape[-2:]):
            raise DatasetError(f"pseudo label {self.label_file(i)} is {tuple(label.shape)}, its image "
                               f"{tuple(image.shape[-2:])}")
        return {"image": image, "label": label, "name": self.names[i]}


class ImagePool(torch.utils.data.Dataset):
    """Data sets' images one after another, read without labels (an unlabeled pool): ``(prefix, data set)``
    parts, each image named ``prefix + name``. ``read_image``/``names`` are what :class:`PseudoLabeled` reads."""

    def __init__(self, parts):
        self.parts = [(str(prefix), ds) for prefix, ds in parts]
        self.names = [prefix + n for prefix, ds in self.parts for n in ds.names]
        self._where = [(j, i) for j, (_, ds) in enumerate(self.parts) for i in range(len(ds))]
        if len(set(self.names)) != len(self.names):
            raise DatasetError("an image pool holds two images of one name; give its parts distinct prefixes")
        self.labeled = False

    def __len__(self):
        return len(self.names)

    def read_image(self, i: int) -> torch.Tensor:
        j, k = self._where[i]
        return self.parts[j][1].read_image(k)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.read_image(i), "name": self.names[i]}


#: the prefix of the extra unlabeled images' names (:meth:`RunData.extra_images`): toycity's extra tree
#: reuses the train split's file names
EXTRA_PREFIX = "extra_"
#: toycity's extra unlabeled images are drawn with data seed ``cfg.data_seed + EXTRA_DATA_SEED_OFFSET``
EXTRA_DATA_SEED_OFFSET = 1


class RunData:
    """What a strategy's ``build(cfg, data)`` may ask of the run: its data sets and views, splits, streams,
    class counts, work folder and dependencies (``blvnb/engine/strategies/base.py`` says what a strategy
    returns)."""

    def __init__(self, cfg: RunConfig, key: str, device: torch.device):
        self.cfg, self.key, self.device = cfg, key, device
        self.seed, self.progress = cfg.seed, cfg.progress
        self.profile = get_profile(cfg.profile)
        #: "kind/split" → the fingerprint of each split the run opened (the record's ``data_fingerprint``)
        self.fingerprints: dict[str, dict] = {}

    def _fingerprint(self, name: str, ds) -> None:
        if name not in self.fingerprints:
            self.fingerprints[name] = split_fingerprint(ds)

    @cached_property
    def work_dir(self) -> Path:
        """A folder beside the run's record for the run's own files (a round's pseudo labels)."""
        path = store.work_dir(self.cfg.profile, self.key)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def root(self, kind: str) -> Path:
        return dataset_root(kind, self.cfg.data_root, self.cfg, self.cfg.progress)

    def base_dataset(self, kind: str, split: str, *, labeled: bool = True):
        ds = build_dataset(kind, self.root(kind), split=split, labeled=labeled)
        self._fingerprint(f"{kind}/{split}", ds)
        return ds

    @staticmethod
    def _split(kind: str, split: str) -> str:
        """VOC's training images are its SBD-augmented set ("aug": the official train list and the rest,
        DARS's labeled and unlabeled images; :meth:`split_indices`)."""
        return "aug" if kind == "voc" and split == "train" else split

    def extra_images(self, n: int):
        """``n`` unlabeled Cityscapes images outside every split (DARS Table 8's N_p), named
        ``EXTRA_PREFIX + name``: the first ``n`` by name of Cityscapes' coarse ``train_extra`` images
        (real data; their coarse labels are not read), or on toycity ``n`` Cityscapes-style images drawn
        with another data seed (``cfg.data_seed + EXTRA_DATA_SEED_OFFSET``; cached as any toycity tree)."""
        cfg = self.cfg
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"the number of extra unlabeled images must be an integer >= 1, got {n!r}")
        if cfg.data_root is None:
            root = toycity.ensure("cityscapes", n_train=n, n_val=0, size=tuple(cfg.size),
                                  seed=cfg.data_seed + EXTRA_DATA_SEED_OFFSET, progress=cfg.progress)
            images = build_dataset("cityscapes", root, split="train", labeled=False)
        else:
            root = self.root("cityscapes")
            every = build_dataset("cityscapes-coarse", root, split="unlabeled", labeled=False)
            if len(every) < n:
                raise DatasetError(f"{n} extra unlabeled images asked for, but Cityscapes' train_extra under {root} "
                                   f"holds {len(every)}")
            images = build_dataset("cityscapes-coarse", root, split="unlabeled", names=every.names[:n], labeled=False)
        self._fingerprint("cityscapes-coarse/unlabeled", every if cfg.data_root is not None else images)
        return ImagePool([(EXTRA_PREFIX, images)])

    def dataset(self, kind: str, split: str, *, train: bool = True, indices=None, scale_range=None, crop=None,
                pseudo_dir=None, labeled: bool = True, rotate: float | None = None, blur: bool = False,
                augment: str | None = None, extra_unlabeled: int = 0):
        """Data set ``kind``/``split`` seen through the run's training augmentation (``train=True``: random
        scale ``scale_range`` or the run's, crop ``crop`` or the run's, flip; DARS's ``rotate``/``blur``;
        ``augment``: one augmentation alone, :func:`~blvnb.data.transforms.train_transform`), or
        un-augmented (``train=False``). ``indices`` select images of the split; ``extra_unlabeled``
        appends that many images of :meth:`extra_images` (the pool is then read without labels, unless
        ``pseudo_dir`` gives them); ``pseudo_dir`` replaces the labels by that folder's PNGs;
        ``labeled=False`` reads images only."""
        if extra_unlabeled and kind != "cityscapes":
            raise ConfigError(f"extra unlabeled images are Cityscapes images (DARS Table 8); data set {kind!r} has none")
        split = self._split(kind, split)
        read_labels = labeled and pseudo_dir is None and not extra_unlabeled
        base = None
        if indices is None or len(indices) or not extra_unlabeled:
            base = self.base_dataset(kind, split, labeled=read_labels)
            if indices is not None:
                names = [base.names[int(i)] for i in indices]
                base = build_dataset(kind, self.root(kind), split=split, names=names, labeled=read_labels)
        if extra_unlabeled:
            extra = self.extra_images(extra_unlabeled)
            base = extra if base is None else ImagePool([("", base)] + extra.parts)
        if pseudo_dir is not None:
            base = PseudoLabeled(base, pseudo_dir)
        cfg = self.cfg
        if train:
            tf = train_transform(tuple(crop or cfg.crop), tuple(scale_range or cfg.scale_range), cfg.base_size,
                                 rotate=rotate, blur=blur, augment=augment, photometric=cfg.photometric,
                                 cat_max_ratio=cfg.cat_max_ratio)
        else:  # images as stored: a run is tested (and a DARS teacher labels) at eval_size, scored at full size
            tf = eval_transform()
        return AugmentedDataset(base, tf)

    def split_indices(self, fraction) -> tuple[list[int], list[int]]:
        """(labeled, unlabeled) indices of the training images for the split ``fraction`` (e.g. "1/8"): of
        Cityscapes-train, or of the run's data set when it has its own label space (ScanNet: frames; VOC:
        its augmented set). ``fraction=None``: every training image labeled — except VOC, whose official
        train list is labeled and the rest of the augmented set unlabeled (DARS Table 3).

        With ``cfg.splits`` "dars" or "u2pl" the images are that release's lists, found on disk by name
        (:meth:`_released_indices`); with "nested", our seeded nested split of the names on disk."""
        from blvnb.data.splits import fraction_text, nested_splits

        kind = split_dataset(self.cfg.dataset)
        names = self.base_dataset(kind, self._split(kind, "train")).names
        if self.cfg.splits != "nested":
            return self._released_indices(kind, names, fraction)
        if fraction is None:
            if kind != "voc":
                return list(range(len(names))), []
            official = set(self.base_dataset("voc", "train").names)
            return ([i for i, n in enumerate(names) if n in official],
                    [i for i, n in enumerate(names) if n not in official])
        key = fraction_text(fraction)
        split = nested_splits(names, seed=0, fractions=[key])[key]
        pos = {n: i for i, n in enumerate(names)}
        return [pos[n] for n in split["labeled"]], [pos[n] for n in split["unlabeled"]]

    def _released_indices(self, kind: str, names: list[str], fraction) -> tuple[list[int], list[int]]:
        """The released list ``cfg.splits`` of ``kind`` at ``fraction`` as indices of ``names`` (the training
        images on disk). A listed image that is not on disk is a DatasetError naming it and its list;
        images on disk in neither list are left out (logged)."""
        from blvnb.data.splits import released_folder, released_split

        source = self.cfg.splits
        lists = released_split(source, kind, fraction)
        pos = {n: i for i, n in enumerate(names)}
        for part, items in lists.items():
            missing = [n for n in items if n not in pos]
            if missing:
                listed = released_folder(source, kind, fraction) / f"{part}.txt"
                raise DatasetError(
                    f"{len(missing)} of the {len(items)} {part} images of {source}'s released {kind} split "
                    f"{fraction or '(official train)'} are not among the {len(names)} training images under "
                    f"{self.root(kind)}: {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''} (list {listed}). "
                    "Give the whole training set, or splits='nested' for our own split of the images present")
        left = len(names) - sum(len(v) for v in lists.values())
        if left:
            log.info("%d training images of %s are in neither of %s's released lists: not used", left, kind, source)
        return [pos[n] for n in lists["labeled"]], [pos[n] for n in lists["unlabeled"]]

    def stream(self, dataset, batch_size: int, order=None) -> Stream:
        return Stream(dataset, batch_size, seed=self.seed, order=order, num_workers=self.cfg.num_workers)

    def class_counts(self, dataset) -> np.ndarray:
        """Valid pixels per class of ``dataset``'s labels (int64 [C]: 19, or the run's label space's)."""
        return counts_from_labels(dataset, num_classes_of(self.cfg.dataset), progress=False)

    def build_model(self) -> torch.nn.Module:
        """A fresh model of the run's architecture with its data set's classes (a DARS round's teacher)."""
        return build_model(self.cfg.model, num_classes=num_classes_of(self.cfg.dataset))

    def dependency(self, cfg2: RunConfig) -> dict:
        """The record of another run (run first when missing), with its ``checkpoint`` path."""
        return run(cfg2)


def _load_pretraining(model: torch.nn.Module, ckpt: Path, load: str = "backbone") -> None:
    """Copy the toy pretraining's weights (checkpoint ``ckpt``) into ``model``: the backbone (keys with a
    ``backbone`` part, as ImageNet weights would be), or with ``load="all"`` every weight of the same name
    and shape (the pretraining trains the same architecture, so everything but a classifier of another
    label space). The quick profile loads all: its calibration (book/quick_profile.md) found that a
    decoder trained from scratch in a quick run's few steps learns no tail class at all."""
    if load not in ("backbone", "all"):
        raise ConfigError(f"the profile's pretraining load={load!r}; use 'backbone' or 'all'")
    state = loop.load_checkpoint(ckpt)["model"]
    own = model.state_dict()
    picked = {k: v for k, v in state.items() if "backbone" in k.split(".")}
    wanted = [k for k in own if "backbone" in k.split(".")]
    if not picked or set(wanted) - set(picked):
        raise BlvnbError(f"checkpoint {ckpt} does not hold this model's backbone; delete it, or run with force=True")
    if load == "all":
        picked = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    loop.load_model_state(model, {**own, **picked}, ckpt)


def build_run_model(cfg: RunConfig, data: RunData | None = None) -> torch.nn.Module:
    """The model of ``cfg`` (seeded), from random weights, timm's ImageNet weights, a local file, or the
    profile's toy pretraining."""
    torch.manual_seed(cfg.seed)
    kw: dict = {}
    if cfg.pretrained == "imagenet" and cfg.weights_dir is not None:  # the backbone's file in the folder
        kw["weights"] = str(Path(cfg.weights_dir).expanduser())
    elif cfg.pretrained == "imagenet":
        if not get_profile(cfg.profile).synthetic:  # a GPU cluster: never a download
            raise ConfigError(f"profile {cfg.profile!r} starts {cfg.model} from ImageNet weights read from a weights "
                              "folder, one file per backbone: pass --weights DIR (papermill ... -p weights_dir DIR, "
                              f"or ${WEIGHTS_ENV}); check it with `blvnb weights check DIR --profile {cfg.profile}`")
        kw["pretrained"] = True
    elif cfg.pretrained not in (None, "toy"):
        kw["weights"] = str(Path(cfg.pretrained).expanduser())
    try:
        model = build_model(cfg.model, num_classes=num_classes_of(cfg.dataset), **kw)
    except ConfigError as exc:
        if "weights" not in kw:
            raise
        raise ConfigError(f"model {cfg.model!r}: {exc}") from exc
    report = weights_report(model)
    if report is not None:  # a file's tensors load whole or not at all (load_weights); the rest is new by design
        log.info("%s: %d tensors from %s; new by design (initialised here): %s", cfg.model, report["loaded"],
                 ", ".join(report["files"]), ", ".join(f"{k} ({v})" for k, v in report["new"].items()) or "nothing")
    if cfg.pretrained == "toy":
        rec = run(pretraining_config(cfg))
        _load_pretraining(model, Path(rec["checkpoint"]), get_profile(cfg.profile).pretraining.get("load", "backbone"))
    return model


def _subsample(history: dict[str, list[float]], max_points: int = 1000) -> tuple[dict, int]:
    n = max((len(v) for v in history.values()), default=0)
    every = max(1, math.ceil(n / max_points))
    return {k: v[::every] for k, v in history.items()}, every


def out_of_memory(cfg: RunConfig, device: torch.device, phase: str, exc: BaseException) -> BlvnbError:
    """The error for a run that ran out of GPU memory while ``phase`` ("training" or "evaluation"): the
    model, the batch (global and per GPU), the crop, and what to change — never a bare CUDA traceback."""
    world = loop.world_size()
    h, w = cfg.crop
    if phase == "labelling":
        size = "the round's teacher predicting its unlabeled images"
        change = ("free the GPU of other processes or use one with more memory; the labels written so far are "
                  "kept and the labelling resumes from them")
    elif phase == "evaluation":
        size = f"eval_mode {cfg.eval_mode!r}, eval_crop {cfg.eval_crop}" + (f", eval_size {cfg.eval_size}"
                                                                           if cfg.eval_size else "")
        change = ("evaluate with sliding windows (eval_mode='slide') or a smaller eval_crop; the trained "
                  "checkpoint is kept, so only the evaluation runs again")
    else:
        size = f"batch {cfg.batch_size} ({cfg.batch_size / world:g} per GPU over {world}), crop {h}×{w}"
        change = ("a smaller batch per GPU keeps the recipe: the same batch_size over more GPUs (torchrun, "
                  "--gpus-per-run N; each takes batch_size / N), or with gradient accumulation where the "
                  "recipe allows it; amp=True (bf16) roughly halves the activations; a smaller batch_size or "
                  "crop changes the run (another key). The last checkpoint is kept: the run resumes from it")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return BlvnbError(f"out of GPU memory during {phase} of model {cfg.model!r} ({cfg.strategy}, {cfg.loss}) on "
                      f"{_device_name(device)}: {size}, amp={bool(cfg.amp)}. {change}. ({first})")


def _execute(cfg: RunConfig, key: str, device: torch.device, force: bool) -> dict:
    ckpt = store.checkpoint_path(cfg.profile, key)
    if force:  # train again from scratch (issue 14 #2), not from the final checkpoint
        if loop.is_main_process():
            ckpt.unlink(missing_ok=True)
        if loop.world_size() > 1:
            torch.distributed.barrier()  # no rank may read the old checkpoint
    data = RunData(cfg, key, device)
    model = build_run_model(cfg, data)
    weights = weights_report(model)
    try:
        built = get_builder(cfg.strategy)(cfg, data)
    except torch.cuda.OutOfMemoryError as exc:  # a DARS round labels its images with its teacher here
        raise out_of_memory(cfg, device, "labelling", exc) from exc
    built.strategy.seed = cfg.seed
    ckpt_every = cfg.ckpt_every if cfg.ckpt_every is not None else max(50, cfg.iters // 10)
    settings = dict(iters=cfg.iters, seed=cfg.seed, amp=bool(cfg.amp and device.type == "cuda"),
                    channels_last=cfg.channels_last, compile=cfg.compile, ckpt_every=ckpt_every, sync_bn=True)
    tcfg = loop.TrainConfig(**{**settings, **built.train_overrides})
    try:
        result = loop.train(model, built.streams, tcfg, built.strategy, device=device, checkpoint=ckpt,
                            init_state=built.init_state, progress=cfg.progress,
                            desc=f"{cfg.strategy} {cfg.loss} seed {cfg.seed}")
    except torch.cuda.OutOfMemoryError as exc:
        raise out_of_memory(cfg, device, "training", exc) from exc
    metrics: dict = {"evaluated": False}
    n_val = 0
    if cfg.evaluate:
        kind = cfg.dataset if cfg.dataset in LABEL_SPACES else "cityscapes"  # UDA and the rest: Cityscapes val
        val = data.dataset(kind, "val", train=False)
        n_val = len(val)
        part = Subset(val, range(loop.rank(), len(val), loop.world_size()))  # ranks share the val set
        model.eval()
        space = {"num_classes": num_classes_of(kind), "dataset": "generic"} if kind in LABEL_SPACES else {}
        try:
            metrics = evaluate(model, DataLoader(part, batch_size=1, num_workers=cfg.num_workers), device=device,
                               mode=cfg.eval_mode, crop=cfg.eval_crop, stride=cfg.eval_stride, size=cfg.eval_size,
                               progress=cfg.progress, **space,
                               amp_dtype=torch.bfloat16 if (cfg.amp and device.type == "cuda") else None)
        except torch.cuda.OutOfMemoryError as exc:
            raise out_of_memory(cfg, device, "evaluation", exc) from exc
        metrics.pop("confusion", None)
    history, every = _subsample(result["history"])
    return {"train_seconds": result["seconds"], "metrics": metrics, "history": history, "history_every": every,
            "loss": history.get("loss", []), "summary": built.strategy.summary(), "checkpoint": str(ckpt),
            "resumed": result["resumed"], "resumed_from": result["resumed_from"], "restarts": result["restarts"],
            "seed": cfg.seed, "optimizer": result["optimizer"], "weights": weights,
            "strategy": cfg.strategy, "n_val_images": n_val, "device": _device_name(device),
            "data_fingerprint": data.fingerprints, "data_check": batch_data_check(),
            "world_size": loop.world_size(),
            # the global batch of each stream split over the processes (DDP: one per GPU), as each computes it
            "batch_per_process": {k: int(s.batch_size) // loop.world_size() for k, s in built.streams.items()},
            "torch": torch.__version__, "host": platform.node()}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def run(cfg: RunConfig, force: bool = False) -> dict:
    """The stored record for ``cfg`` (see :mod:`blvnb.experiments.store`), training it if needed.

    ``force=True`` deletes the run's checkpoint and trains again from scratch. Under torchrun every
    rank calls this; rank 0 holds the lock and writes the record.

    SIGTERM / SIGUSR1 / SIGUSR2 (a cluster's warning before it kills the job) stop the run cleanly: the loop
    writes its checkpoint and :class:`~blvnb.engine.signals.Interrupted` (a BlvnbError) says where it
    stopped; no record is written, and the same call later resumes it (:mod:`blvnb.engine.signals`).
    """
    if not isinstance(cfg, RunConfig):
        raise ConfigError(f"run() takes a RunConfig (RunConfig.from_profile(...)), got {type(cfg).__name__}")
    key = cfg.key()
    if not force:  # a record computed elsewhere (a GPU server) and committed under records/ is rendered as is
        from blvnb.experiments import records

        committed = records.committed(cfg.profile, key)
        if committed is not None:
            return committed
    device = resolve_device(cfg.device)
    loop.init_distributed(device)
    main = loop.is_main_process()
    log.info("run %s/%s (%s, %s, %s, seed %d)", cfg.profile, key, cfg.strategy, cfg.model, cfg.loss, cfg.seed)
    def compute() -> dict:
        # the run's own arithmetic, not the caller's: the same weights whoever runs it
        with fixed_threads(cfg.threads), deterministic_algorithms(cfg.deterministic):
            return _execute(cfg, key, device, force)

    with signals.catching_stop_signals():  # the whole run: a signal while a DARS round labels is kept too
        return store.get_or_run(cfg.profile, key, cfg.key_dict(), compute, force=force, lock=main, write=main)


def run_seeds(cfg: RunConfig, seeds: tuple[int, ...] | None = None, force: bool = False) -> list[dict]:
    """``run`` once per seed (the profile's seeds when ``seeds`` is None; one int is one seed)."""
    seeds = profile_seeds(cfg.profile, seeds)
    return [run(cfg.with_(seed=int(s)), force=force) for s in seeds]


__all__ = ["DATASETS", "EXECUTION", "EXTRA_PREFIX", "ImagePool", "PseudoLabeled", "RunConfig", "RunData", "build_run_model", "dataset_root",
           "pretraining_config", "run", "run_seeds"]
