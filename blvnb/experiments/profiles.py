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

Everything else that differs between the profiles is a field too, so that no code or notebook asks for a
profile by its name (``tests/test_profiles.py`` fails on such a comparison): ``machine`` (what the runs
are planned for), ``model_variant`` (the size of each table row's architecture), ``subset`` (the toy
profiles' share of each table), ``paper_recipes`` (the papers' settings at the real data's pixel sizes),
``where`` (a line for the book) and ``chapter`` (the sizes of what a chapter computes beside its runs).
None of these is a field of a run's config, so none enters a run's key: a run's key holds the settings
they lead to (its model, crop, evaluation, ...), not the flags.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
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


#: what a profile's runs are planned for: a CPU (time estimates at CPU rates, notebooks on the CPU) or a GPU
#: (GPU rates, the notebooks' ``-p device cuda``, the only profiles a CPU rehearsal is for)
MACHINES = ("cpu", "gpu")


@dataclass(frozen=True)
class ChapterSizes:
    """The sizes of what a chapter computes itself beside its tables' runs (never part of a run's key)."""

    synthetic_maps: int = 16  # dars_method: synthetic teacher probability maps per seed
    teacher_images: int = 48  # dars_pseudo: unlabeled images whose round-0 teacher confidences are counted (Fig. 3)
    layout_images: tuple[int, int] = (200, 60)  # dars_voc_scannet: (train, val) toycity images in VOC/ScanNet layouts
    toy_sigmas: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0, 6.0)  # blv_method: σ of the interactive BLV toy
    toy_steps: int = 200  # blv_method: optimisation steps of the toy per σ and seed

    def __post_init__(self):
        for name in ("synthetic_maps", "teacher_images", "toy_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"chapter size {name} must be an integer >= 1, got {v!r}")
        v = self.layout_images
        if not (isinstance(v, tuple) and len(v) == 2
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1 for x in v)):
            raise ConfigError(f"chapter size layout_images must be (train, val), two integers >= 1; got {v!r}")
        v = self.toy_sigmas
        if not (isinstance(v, tuple) and v and v[0] == 0 and 6 in v
                and all(isinstance(x, int | float) and not isinstance(x, bool) and x >= 0 for x in v)):
            raise ConfigError(f"chapter size toy_sigmas must be a tuple of σ >= 0 that starts at 0 (plain cross "
                              f"entropy) and holds 6 (the paper's value: the claim's two arms); got {v!r}")


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
    base_size: tuple[int, int] | None = None  # resize every training image to this (H, W) first (not the
    # evaluation's: a run is tested at eval_size, or at the images' own size)
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
    # what the profile's tables run and where (not run settings: none is in a run's key, see the module text)
    machine: str = "cpu"  # one of MACHINES: the machine its runs are planned for
    # the size of each table row's architecture (blvnb.models.registry.VARIANTS): "small" (a lighter backbone
    # of the same family) or "paper" (the paper's architecture)
    model_variant: str = "small"
    # the toy share of each table: arms marked "skip" left out, "sweep" arms at the first seed only, the
    # profile's one model for every row, and the profile's calibrated recipe in place of the papers' pipelines
    # (blvnb.experiments.tables: Arm.subset)
    subset: bool = False
    # the papers' recipes at the real data's pixel sizes: DARS's crops 361 and 713, the released evaluation
    # settings, DAFormer's and HRDA's crops and image sizes (what makes sense on the real data sets only)
    paper_recipes: bool = False
    where: str = ""  # a few words on the machine and time a chapter takes (the book's "Run this chapter" box)
    chapter: ChapterSizes = field(default_factory=ChapterSizes)

    def __post_init__(self):
        if self.machine not in MACHINES:
            raise ConfigError(f"profile {self.name!r}: machine={self.machine!r}; use one of {', '.join(MACHINES)}")
        for name in ("subset", "paper_recipes", "synthetic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"profile {self.name!r}: {name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.model_variant, str) or not self.model_variant:
            raise ConfigError(f"profile {self.name!r}: model_variant must be a variant name of the model "
                              f"registry ('small' or 'paper'), got {self.model_variant!r}")
        if not isinstance(self.chapter, ChapterSizes):
            raise ConfigError(f"profile {self.name!r}: chapter must be a ChapterSizes, got {self.chapter!r}")

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
        machine="cpu", model_variant="small", subset=True, paper_recipes=False,
        where="seconds on a CPU: checks that the chapter runs",
        chapter=ChapterSizes(synthetic_maps=8, teacher_images=16, layout_images=(24, 8), toy_sigmas=(0.0, 2.0, 6.0),
                             toy_steps=60),
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
        machine="cpu", model_variant="small", subset=True, paper_recipes=False,
        where="minutes on a CPU (toycity at 128×256)",
    ),
    "gpu": Profile(
        name="gpu",
        description="toycity at 256x512 on one GPU, three seeds, the papers' architectures",
        size=(256, 512), n_train=2000, n_val=300, model="r50-psp", crop=(256, 512),
        batch_size=16, iters=4000, amp=True, num_workers=8, seeds=(0, 1, 2), threads=4,
        pretraining=FrozenDict(dataset="gta5", data_seed=1000, n_train=4000, iters=8000, seed=0),
        machine="gpu", model_variant="paper", subset=False, paper_recipes=False,
        where="one GPU (toycity at 256×512, three seeds)",
    ),
    "paper": Profile(
        name="paper",
        description="the real data sets from data_root with the papers' hyper-parameters (GPU servers)",
        size=(1024, 2048), n_train=0, n_val=0, synthetic=False, model="r50-psp", crop=(512, 1024),
        scale_range=(0.5, 2.0), batch_size=16, iters=40000, amp=True, num_workers=8, threads=4,
        eval_mode="slide", eval_crop=(512, 1024), seeds=(0, 1, 2), pretrained="imagenet", splits="released",
        machine="gpu", model_variant="paper", subset=False, paper_recipes=True,
        where="GPU servers, the real data sets under data_root",
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


# --- seeds -------------------------------------------------------------------------------------------

_SEEDS_HOW = ("pass one seed as an integer (papermill ... -p seeds 0), several as a list "
              "(papermill ... -y 'seeds: [0, 1, 2]') or a string of them (-p seeds '0,1,2')")


def parse_seeds(seeds, what: str = "seeds") -> tuple[int, ...] | None:
    """A notebook's or caller's ``seeds`` as a tuple of ints: None stays None (the profile's seeds); one
    integer is that one seed (``papermill -p seeds 0`` passes an int); a string "0,1,2" or "0 1 2" (what
    ``-p`` gives for several) and a list or tuple are those seeds. Anything else, a bool, a float, a
    repeated seed, or none at all is a ConfigError that names the value and says how to pass
    seeds."""
    if seeds is None:
        return None
    if isinstance(seeds, str):
        parts = [p for p in seeds.replace(",", " ").split() if p]
        try:
            seeds = [int(p) for p in parts]
        except ValueError:
            raise ConfigError(f"{what}={seeds!r} is not a list of integer seeds; {_SEEDS_HOW}") from None
    elif isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    elif not isinstance(seeds, (list, tuple, range)):
        raise ConfigError(f"{what}={seeds!r} ({type(seeds).__name__}) is neither a seed nor a list of seeds; "
                          f"{_SEEDS_HOW}")
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)]
    if bad:
        raise ConfigError(f"{what}={seeds!r}: {bad[0]!r} is not a seed (an integer); {_SEEDS_HOW}")
    if not seeds:
        raise ConfigError(f"{what}={seeds!r} names no seed (seeds must name at least one seed); {_SEEDS_HOW}")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"{what}={seeds!r} names a seed twice; each seed is one run")
    return tuple(int(s) for s in seeds)


def profile_seeds(profile: str, seeds: Iterable[int] | int | str | None = None) -> tuple[int, ...]:
    """``seeds`` (:func:`parse_seeds`: one int is one seed), or the profile's when None."""
    prof = get_profile(profile)
    parsed = parse_seeds(seeds)
    return tuple(prof.seeds) if parsed is None else parsed
