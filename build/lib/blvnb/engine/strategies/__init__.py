"""The strategies the one loop runs, by name: ``STRATEGIES[name]`` is ``"module:build"``.

Each strategy module exposes ``build(cfg, data) -> Built`` (see :mod:`.base`); a new strategy is one
line here. Modules are imported when a run asks for them, so importing the engine stays light.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from blvnb.engine.strategies.base import Built, Strategy, unwrap
from blvnb.errors import ConfigError

STRATEGIES: dict[str, str] = {
    "supervised": "blvnb.engine.strategies.supervised:build",
    "mean-teacher": "blvnb.engine.strategies.mean_teacher:build",
    "dars-rounds": "blvnb.engine.strategies.dars_rounds:build",
    "uda": "blvnb.engine.strategies.uda:build",
}


def get_builder(name: str) -> Callable:
    """The ``build(cfg, data)`` function of strategy ``name``."""
    try:
        module, fn = STRATEGIES[name].split(":")
    except (KeyError, TypeError):
        raise ConfigError(f"unknown strategy {name!r}; registered: {', '.join(STRATEGIES)}") from None
    return getattr(importlib.import_module(module), fn)


__all__ = ["STRATEGIES", "Built", "Strategy", "get_builder", "unwrap"]
