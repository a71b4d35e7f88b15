"""A run: a frozen config → a stored result record.

``RunConfig.from_profile("quick", table="data-baseline")`` fills every field from the profile;
``run(cfg)`` resolves the data (toycity in the cache, or the real data under ``data_root``), builds the
model, trains it with the one loop, evaluates it and stores the record. A second call with the same
config reads the record back.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from blvnb.classes import NUM_CLASSES
from blvnb.data import build_dataset, toycity
from blvnb.data.transforms import eval_transform, train_transform
from blvnb.engine import loop
from blvnb.engine.evaluate import evaluate
from blvnb.errors import ConfigError
from blvnb.experiments import store
from blvnb.experiments.profiles import get_profile
from blvnb.models.registry import build_model

log = logging.getLogger(__name__)

#: data-set kind → (toycity style, sub-folders of data_root that may hold the real data set)
DATASETS = {
    "cityscapes": ("cityscapes", ("cityscapes",)),
    "gta5": ("gta", ("gta5", "gta", "GTA5")),
    "synthia": ("synthia", ("synthia", "synthia/RAND_CITYSCAPES", "RAND_CITYSCAPES")),
}

#: fields that do not change the result (where and how fast it runs) and so stay out of the key
_NOT_KEYED = {"device", "num_workers", "progress"}


@dataclass(frozen=True)
class RunConfig:
    table: str
    profile: str
    dataset: str = "cityscapes"
    data_root: str | None = None
    model: str = "r10t-fpn"
    loss: str = "ce"
    seed: int = 0
    iters: int = 300
    batch_size: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    optimizer: str = "sgd"
    crop: tuple[int, int] = (128, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)
    base_size: tuple[int, int] | None = None
    amp: bool = False
    eval_mode: str = "whole"
    eval_crop: tuple[int, int] | None = None
    # toycity (only used when data_root is None)
    size: tuple[int, int] = (128, 256)
    n_train: int = 200
    n_val: int = 60
    data_seed: int = 0
    # execution (not part of the key)
    device: str = "auto"
    num_workers: int = 0
    progress: bool = True

    @classmethod
    def from_profile(cls, profile: str, table: str, **overrides) -> "RunConfig":
        p = get_profile(profile)
        base = dict(
            table=table, profile=p.name, model=p.model, iters=p.iters, batch_size=p.batch_size, lr=p.lr,
            weight_decay=p.weight_decay, crop=p.crop, scale_range=p.scale_range, amp=p.amp,
            eval_mode=p.eval_mode, eval_crop=p.eval_crop, size=p.size, n_train=p.n_train, n_val=p.n_val,
            data_seed=p.data_seed, num_workers=p.num_workers, seed=p.seeds[0],
        )
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown run setting(s) {sorted(unknown)}; known: {sorted(known)}")
        cfg = cls(**{**base, **overrides})
        if not p.synthetic and cfg.data_root is None:
            raise ConfigError(
                f"profile {p.name!r} trains on the real data sets: pass data_root "
                f"(papermill ... -p data_root /path/to/data, a folder holding cityscapes/, gta5/, synthia/)"
            )
        return cfg

    def key_dict(self) -> dict:
        d = asdict(self)
        for k in _NOT_KEYED:
            d.pop(k)
        if d["data_root"] is not None:  # the same real data set wherever it is mounted
            d["data_root"] = "real"
        else:  # a new toycity generator makes new data
            d["toycity_version"] = toycity.GENERATOR_VERSION
        return d

    def with_(self, **kw) -> "RunConfig":
        return replace(self, **kw)


def dataset_root(kind: str, data_root: str | None, cfg: RunConfig | None = None, progress: bool = True) -> Path:
    """The folder holding data set ``kind``: under ``data_root`` for real data, else toycity in the cache."""
    if kind not in DATASETS:
        raise ConfigError(f"unknown data set {kind!r}; known: {', '.join(DATASETS)}")
    style, subdirs = DATASETS[kind]
    if data_root is None:
        size, n_train, n_val, seed = (cfg.size, cfg.n_train, cfg.n_val, cfg.data_seed) if cfg else ((128, 256), 200, 60, 0)
        return toycity.ensure(style, n_train=n_train, n_val=n_val, size=tuple(size), seed=seed, progress=progress)
    root = Path(data_root).expanduser()
    for sub in subdirs:
        if (root / sub).is_dir():
            return root / sub
    return root  # data_root may point at the data set itself; the loader explains what it expected


def _loader(ds, batch_size: int, shuffle: bool, seed: int, num_workers: int, drop_last: bool) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g, num_workers=num_workers,
                      drop_last=drop_last, persistent_workers=num_workers > 0)


def train_and_evaluate(cfg: RunConfig) -> dict:
    """Supervised training on ``cfg.dataset``'s train split, evaluation on Cityscapes val."""
    if cfg.loss != "ce":
        raise ConfigError(f"loss {cfg.loss!r} is not available yet; known: 'ce'")
    torch.manual_seed(cfg.seed)
    device = loop.resolve_device(cfg.device)
    g = torch.Generator().manual_seed(cfg.seed)
    train_root = dataset_root(cfg.dataset, cfg.data_root, cfg, cfg.progress)
    val_root = dataset_root("cityscapes", cfg.data_root, cfg, cfg.progress)
    train_split = "train" if cfg.dataset == "cityscapes" else "all"
    train_set = build_dataset(cfg.dataset, train_root, split=train_split,
                              transform=train_transform(cfg.crop, cfg.scale_range, cfg.base_size, g))
    val_set = build_dataset("cityscapes", val_root, split="val", transform=eval_transform(cfg.base_size))
    model = build_model(cfg.model, num_classes=NUM_CLASSES)
    tcfg = loop.TrainConfig(iters=cfg.iters, lr=cfg.lr, weight_decay=cfg.weight_decay, optimizer=cfg.optimizer,
                            amp=cfg.amp and device.type == "cuda", ckpt_every=max(50, cfg.iters // 10))
    # next to the record: an interrupted run resumes from here, and later rounds can load the weights
    ckpt = store.record_path(cfg.profile, cfg.table, cfg.key_dict()).with_suffix(".ckpt.pt")
    history = loop.train(model, _loader(train_set, cfg.batch_size, True, cfg.seed, cfg.num_workers, True), tcfg,
                         device=device, progress=cfg.progress, desc=f"{cfg.table} seed {cfg.seed}", checkpoint=ckpt)
    model.eval()
    metrics = evaluate(model, _loader(val_set, 1, False, 0, cfg.num_workers, False), device=device,
                       mode=cfg.eval_mode, crop=cfg.eval_crop, progress=cfg.progress)
    return {"metrics": metrics, "train_seconds": history["seconds"], "checkpoint": str(ckpt), "loss": history["loss"][:: max(1, cfg.iters // 100)],
            "seed": cfg.seed, "n_train_images": len(train_set), "n_val_images": len(val_set), "device": str(device)}


def run(cfg: RunConfig, force: bool = False) -> dict:
    """The stored record for ``cfg`` (see :mod:`blvnb.experiments.store`), training it if needed."""
    log.info("run %s/%s seed %d", cfg.profile, cfg.table, cfg.seed)
    return store.get_or_run(cfg.profile, cfg.table, cfg.key_dict(), lambda: train_and_evaluate(cfg), force=force)


def run_seeds(cfg: RunConfig, seeds: tuple[int, ...] | None = None, force: bool = False) -> list[dict]:
    """``run`` once per seed (the profile's seeds when ``seeds`` is None)."""
    seeds = seeds or get_profile(cfg.profile).seeds
    return [run(cfg.with_(seed=s), force=force) for s in seeds]

