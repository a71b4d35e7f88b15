"""Profiles: the same notebook and the same library calls at four sizes.

A profile is data, not code. ``smoke`` and ``quick`` run on a CPU on the synthetic *toycity* data that
the library generates itself (in the real datasets' file layouts); ``gpu`` is toycity at a larger
scale on one GPU; ``paper`` reads the real data sets from ``data_root`` with the papers' settings.
Every number the book shows carries the profile it came from.

Iterations: ``smoke``, ``quick`` and ``gpu`` train every run for the profile's own ``iters`` — the gpu profile's
4000 are its own scaled budget for toycity on one GPU, the same for every table, not the papers' per-table
lengths. ``paper`` trains each table for the papers' iterations (:mod:`blvnb.experiments.iterations`: 160k
SegFormer-B0, 80k K-Net and ViT-B, 200 epochs of BLV's semi-supervised runs, DARS's epochs per round …);
its ``iters`` (40k, the CNNs of BLV Table 1 and DAFormer's UDA) is the default of the rest.

A profile supplies *every* default of a run (:class:`blvnb.experiments.runs.RunConfig` takes each of
its fields that a profile has from the profile, by name). ``lr`` / ``weight_decay`` ``None`` mean the
model's recipe (:mod:`blvnb.engine.recipes`). ``pretrained`` is what runs start from by default:
``None`` (random initialisation), ``"toy"`` (the profile's toy pretraining: a supervised run on
disjoint toycity data described by ``pretraining``, toycity's "ImageNet"), ``"imagenet"`` (each backbone's
file in the run's weights folder, ``RunConfig.weights_dir`` / ``--weights DIR``; without a folder timm's
weights, downloaded — never in the paper profile) or the path of a local weights file.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from blvnb.errors import ConfigError


def freeze(value: Any) -> Any:
    """Mappings → :class:`FrozenDict`, lists and tuples → tuples, recursively (hashable configs)."""
    if isinstance(value, Mapping):
        return FrozenDict(value)
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    if isinstance(value, set):
        return tuple(sorted(freeze(v) for v in value))
    return value


def thaw(value: Any) -> Any:
    """The inverse of :func:`freeze` for JSON: FrozenDict → dict (sorted keys), tuples → lists."""
    if isinstance(value, Mapping):
        return {str(k): thaw(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


class FrozenDict(Mapping):
    """A read-only, hashable mapping with string keys, kept sorted (config options)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping | None = None, **kw):
        data = dict(items or {}, **kw)
        for k in data:
            if not isinstance(k, str):
                raise ConfigError(f"option names must be strings, got {k!r}")
        object.__setattr__(self, "_items", tuple(sorted((k, freeze(v)) for k, v in data.items())))

    def __getitem__(self, key):
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other) -> bool:
        return isinstance(other, Mapping) and dict(self.items()) == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenDict({dict(self._items)!r})"

    def __setattr__(self, name, value):
        raise AttributeError("FrozenDict is read-only")

    def __reduce__(self):
        return (FrozenDict, (dict(self._items),))


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    # data: toycity size and counts (ignored when a real data_root is given)
    size: tuple[int, int]
    n_train: int
    n_val: int
    data_seed: int = 0
    synthetic: bool = True
    # the labelled/unlabelled splits of semi-supervised runs: "nested" (ours, blvnb.data.splits.nested_splits)
    # or "released" (the papers' released lists where the run's paper has one: RunConfig.splits)
    splits: str = "nested"
    # training
    model: str = "r18-fpn"
    crop: tuple[int, int] = (128, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)
    base_size: tuple[int, int] | None = None  # resize every image to this (H, W) first
    batch_size: int = 8
    iters: int = 300
    lr: float | None = None  # None: the model's recipe (blvnb.engine.recipes)
    weight_decay: float | None = None
    amp: bool = False
    num_workers: int = 0
    # the intra-op CPU threads every run computes with (part of its key: on a CPU the count changes the
    # arithmetic, blvnb.devices.fixed_threads); a CPU pool keeps the cores busy with more runs at once
    threads: int = 1
    # PyTorch's deterministic algorithms where it has them (blvnb.devices.deterministic_algorithms): changes
    # nothing on a CPU, makes a GPU run repeatable up to the atomics of a few backward passes, costs GPU time
    deterministic: bool = False
    # initialisation: None | "toy" | "imagenet" | a weights file; the toy pretraining run's settings
    pretrained: str | None = None
    pretraining: FrozenDict = field(default_factory=FrozenDict)
    # evaluation
    eval_mode: str = "whole"  # whole | slide
    eval_crop: tuple[int, int] | None = None
    seeds: tuple[int, ...] = (0,)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def with_overrides(self, **kw) -> "Profile":
        unknown = set(kw) - set(self.to_dict())
        if unknown:
            raise ConfigError(f"unknown profile field(s) {sorted(unknown)}; known: {sorted(self.to_dict())}")
        return replace(self, **kw)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="toycity, a handful of tiny images, a few steps: checks that every notebook runs (CI)",
        size=(64, 128), n_train=32, n_val=6, model="r10t-fpn", crop=(64, 128),
        batch_size=4, iters=4, num_workers=0,
        pretraining=FrozenDict(dataset="gta5", data_seed=1000, n_train=16, iters=4, seed=0),
    ),
    "quick": Profile(
        name="quick",
        description="toycity at 128x256 on a CPU, 64x128 crops, 70 steps from the profile's toy pretraining, three "
                    "seeds: the direction of each claim at toy scale (book/quick_profile.md)",
        size=(128, 256), n_train=200, n_val=60, model="r10t-fpn", crop=(64, 128),
        batch_size=8, iters=70, num_workers=0, seeds=(0, 1, 2),
        # calibrated on the CE baseline only (book/quick_profile.md): 900 steps on 600 gta-style images of
        # another seed, and every run loads the whole pretrained model (a new decoder learns no tail class
        # in 70 steps). The calibration ran at lr 0.02; the profile keeps each model's recipe lr (0.01 for
        # the CNNs), because a profile-wide lr would also set the AdamW recipes' (SegFormer, UDA).
        pretrained="toy",
        # The pretraining runs alone (every other run waits for it), so it computes with both cores' threads.
        pretraining=FrozenDict(dataset="gta5", data_seed=1000, n_train=600, n_val=0, crop=(64, 128), iters=900,
                               batch_size=16, lr=0.05, seed=0, load="all", threads=2),
    ),
    "gpu": Profile(
        name="gpu",
        description="toycity at 256x512 on one GPU, three seeds, the papers' architectures",
        size=(256, 512), n_train=2000, n_val=300, model="r50-psp", crop=(256, 512),
        batch_size=16, iters=4000, amp=True, num_workers=8, seeds=(0, 1, 2), threads=4,
        pretraining=FrozenDict(dataset="gta5", data_seed=1000, n_train=4000, iters=8000, seed=0),
    ),
    "paper": Profile(
        name="paper",
        description="the real data sets from data_root with the papers' hyper-parameters (GPU servers)",
        size=(1024, 2048), n_train=0, n_val=0, synthetic=False, model="r50-psp", crop=(512, 1024),
        scale_range=(0.5, 2.0), batch_size=16, iters=40000, amp=True, num_workers=8, threads=4,
        eval_mode="slide", eval_crop=(512, 1024), seeds=(0, 1, 2), pretrained="imagenet", splits="released",
    ),
}


def get_profile(name: str, **overrides) -> Profile:
    """The named profile, optionally with fields overridden (``get_profile("quick", iters=50)``)."""
    try:
        prof = PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)} "
            "(e.g. papermill ... -p profile quick)"
        ) from None
    return prof.with_overrides(**overrides) if overrides else prof


PRETRAINED_CHOICES = ("toy", "imagenet")
