"""Profiles: the same notebook and the same library calls at four sizes.

A profile is data, not code. ``smoke`` and ``quick`` run on a CPU on the synthetic *toycity* data that
the library generates itself (in the real datasets' file layouts); ``gpu`` is toycity at a larger
scale on one GPU; ``paper`` reads the real data sets from ``data_root`` with the papers' settings.
Every number the book shows carries the profile it came from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from blvnb.errors import ConfigError


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
    # training
    model: str = "r18-fpn"
    crop: tuple[int, int] = (128, 256)
    scale_range: tuple[float, float] = (0.75, 1.5)
    batch_size: int = 8
    iters: int = 300
    lr: float = 0.01
    weight_decay: float = 5e-4
    amp: bool = False
    num_workers: int = 0
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
        size=(64, 128), n_train=16, n_val=6, model="r10t-fpn", crop=(64, 128),
        batch_size=4, iters=4, num_workers=0,
    ),
    "quick": Profile(
        name="quick",
        description="toycity at 128x256 on a CPU: minutes per notebook; shows the direction of each claim at toy scale",
        size=(128, 256), n_train=200, n_val=60, model="r10t-fpn", crop=(128, 256),
        batch_size=8, iters=300, num_workers=0,
    ),
    "gpu": Profile(
        name="gpu",
        description="toycity at 256x512 on one GPU, three seeds, the papers' architectures",
        size=(256, 512), n_train=2000, n_val=300, model="r50-psp", crop=(256, 512),
        batch_size=16, iters=4000, amp=True, num_workers=8, seeds=(0, 1, 2),
    ),
    "paper": Profile(
        name="paper",
        description="the real data sets from data_root with the papers' hyper-parameters (GPU servers)",
        size=(1024, 2048), n_train=0, n_val=0, synthetic=False, model="r50-psp", crop=(512, 1024),
        scale_range=(0.5, 2.0), batch_size=16, iters=40000, amp=True, num_workers=8,
        eval_mode="slide", eval_crop=(512, 1024), seeds=(0, 1, 2),
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
