"""What a training *strategy* is: everything that differs between settings, and nothing else.

The one loop (:func:`blvnb.engine.loop.train`) owns what all settings share — parameter groups turned
into an optimiser, the warmup + poly / linear / step schedule, AMP, channels_last, DDP, checkpoints,
logging and the loss history. A strategy supplies the rest:

* ``streams``: the named batch streams it needs, e.g. ``("labeled",)`` (supervised),
  ``("labeled", "unlabeled")`` (mean teacher), ``("labeled", "pseudo")`` (a DARS round),
  ``("source", "target")`` (UDA). The loop draws one batch from each stream per iteration, moves it to
  the device and hands ``{stream: batch}`` to :meth:`step`.
* ``epoch_stream``: the stream whose passes count as epochs (``on_epoch_end`` is called when it wraps).
* ``recipe``: the run's :class:`~blvnb.engine.recipes.Recipe`; :meth:`param_groups` splits the model's
  parameters by it (:func:`~blvnb.engine.recipes.param_groups`: each group a dict with ``params``,
  ``lr_mult`` and ``decay_mult``, e.g. head ×10, no decay on norms and position embeddings), the one way
  every strategy's groups are made.
* :meth:`setup`: called once with the model on its device, before a checkpoint is restored
  (build the EMA teacher, move the loss's buffers).
* :meth:`step`: ``(model, batches, it) → (loss, stats)``; ``model`` may be DDP-wrapped; ``stats`` is
  a dict of floats the loop keeps in its history (``"loss"`` at least).
* :meth:`after_step`: after the optimiser step (EMA update, σ(t) for the next iteration).
* :meth:`on_epoch_end`: at the end of each pass over ``epoch_stream`` (BLV Eq. (4) re-estimation).
* :meth:`state_dict` / :meth:`load_state_dict`: its own state for checkpoints (teacher weights, class
  counts, …) — tensors and plain Python values only, so that checkpoints load with ``weights_only``.
* :meth:`summary`: JSON-able extras for the run record (per-epoch class counts, pseudo-label KL, …).
* ``seed``: the run seed, set by the builder; every random draw of a step comes from
  ``blvnb.engine.loop.step_generator(self.seed, it, salt, device)`` (stateless, so resume is exact).

A strategy module ``blvnb/engine/strategies/<name>.py`` exposes ``build(cfg, data) -> Built`` and is
registered by one line in ``strategies/__init__.py``'s ``STRATEGIES``. The parts they share (options,
losses and σ(t), main + auxiliary outputs, the EMA teacher) are in :mod:`.parts`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blvnb.engine.recipes import Recipe, param_groups


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or compiled) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


@dataclass
class Built:
    """What a strategy's ``build(cfg, data)`` returns to the run.

    ``streams``: name → :class:`~blvnb.engine.streams.Stream`; ``train_overrides``: fields of
    :class:`~blvnb.engine.loop.TrainConfig` (the optimiser recipe, and ``first_iter`` /
    ``schedule_iters`` for a DARS round); ``init_state``: a checkpoint path or dict to start from when the
    run has no checkpoint of its own (a DARS round's teacher), else None.
    """

    strategy: "Strategy"
    streams: Mapping[str, Any]
    train_overrides: dict = field(default_factory=dict)
    init_state: str | Path | Mapping | None = None


class Strategy:
    """Base class; the defaults are those of plain supervised training."""

    name: str = "base"
    streams: tuple[str, ...] = ("labeled",)
    epoch_stream: str = "labeled"
    seed: int = 0
    recipe: Recipe = Recipe()

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(unwrap(model), self.recipe)

    def setup(self, model: nn.Module, device: torch.device) -> None:
        pass

    def step(self, model: nn.Module, batches: dict[str, dict], it: int) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    def after_step(self, model: nn.Module, it: int) -> None:
        pass

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def summary(self) -> dict:
        """JSON-able extras for the run record."""
        return {}

    def modules(self) -> Iterable[nn.Module]:
        """Extra modules the strategy owns (an EMA teacher), for device moves and DDP broadcasts."""
        return ()
