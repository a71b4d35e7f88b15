"""A stand-in for ``blvnb.experiments.runs.RunConfig`` with the interface of CONTRACT.md, used by the
plan and executor tests only while the installed runs.py predates that interface (no ``key()``).

It carries the fields the plans read and keys a run by all of them, as the real one does.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields, replace

from blvnb.errors import ConfigError
from blvnb.experiments.profiles import get_profile


@dataclass(frozen=True)
class FakeRunConfig:
    profile: str
    strategy: str = "supervised"
    model: str = "r10t-fpn"
    loss: str = "ce"
    loss_options: str = "{}"  # JSON (a frozen mapping in the real one)
    strategy_options: str = "{}"
    dataset: str = "cityscapes"
    target: str | None = None
    labeled_fraction: str | None = None
    seed: int = 0
    iters: int = 300
    batch_size: int = 8
    crop: tuple = (128, 256)
    pretrained: str | None = None
    data_root: str | None = None
    device: str = "auto"

    STRATEGIES = ("supervised", "dars-rounds", "mean-teacher", "uda")

    @classmethod
    def from_profile(cls, profile, *, strategy="supervised", loss="ce", loss_options=None, **overrides):
        p = get_profile(profile)
        if strategy not in cls.STRATEGIES:
            raise ConfigError(f"unknown strategy {strategy!r}")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"unknown run setting(s) {sorted(unknown)}")
        if "strategy_options" in overrides:
            overrides["strategy_options"] = json.dumps(overrides["strategy_options"] or {}, sort_keys=True)
        base = dict(profile=p.name, model=p.model, iters=p.iters, batch_size=p.batch_size, crop=tuple(p.crop),
                    seed=p.seeds[0])
        return cls(**{**base, "strategy": strategy, "loss": loss,
                      "loss_options": json.dumps(loss_options or {}, sort_keys=True), **overrides})

    def __getattribute__(self, name):
        v = object.__getattribute__(self, name)
        if name in ("loss_options", "strategy_options") and isinstance(v, str):
            return json.loads(v)
        return v

    def with_(self, **kw):
        for k in ("loss_options", "strategy_options"):
            if k in kw and not isinstance(kw[k], str):
                kw[k] = json.dumps(kw[k] or {}, sort_keys=True)
            kw.setdefault(k, object.__getattribute__(self, k))  # replace() would read the decoded value
        return replace(self, **kw)

    def key(self) -> str:
        d = {f.name: object.__getattribute__(self, f.name) for f in fields(self) if f.name != "device"}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def needs_fake() -> bool:
    from blvnb.experiments import runs

    return not hasattr(runs.RunConfig, "key")


__all__ = ["FakeRunConfig", "asdict", "needs_fake"]
