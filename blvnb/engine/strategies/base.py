"""What a training *strategy* is: everything that differs between settings, and nothing else.

The one loop (:func:`blvnb.engine.loop.train`) owns what all settings share — parameter groups turned
into an optimiser, the warmup + poly / linear / step schedule, AMP, channels_last, DDP, checkpoints,
logging and the loss history. A strategy supplies the rest:

* ``streams``: the named batch streams it needs, e.g. ``("labeled",)`` (supervised),
  ``("labeled", "unlabeled")`` (mean teacher), ``("labeled", "pseudo")`` (a DARS round),
  ``("source", "target")`` (UDA). The loop draws one batch from each stream per iteration, moves it to
  the device and hands ``{stream: batch}`` to :meth:`step`.
* ``epoch_stream``: the stream whose passes count as epochs (``on_epoch_end`` is called when it wraps).
* :meth:`param_groups`: the model's parameters split into groups, each a dict with ``params``,
  ``lr_mult`` and ``decay_mult`` (e.g. head ×10, no decay on norms and position embeddings).
* :meth:`setup`: called once with the model on its device, before a checkpoint is restored
  (build the EMA teacher, move the loss's buffers).
* :meth:`step`: ``(model, batches, it) → (loss, stats)``; ``model`` may be DDP-wrapped; ``stats`` is
  a dict of floats the loop keeps in its history (``"loss"`` at least).
* :meth:`after_step`: after the optimiser step (EMA update, σ(t) for the next iteration).
* :meth:`on_epoch_end`: at the end of each pass over ``epoch_stream`` (BLV Eq. (4) re-estimation).
* :meth:`state_dict` / :meth:`load_state_dict`: its own state for checkpoints (teacher weights, class
  counts, …) — tensors and plain Python values only, so that checkpoints load with ``weights_only``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or compiled) wrapper."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


class Strategy:
    """Base class; the defaults are those of plain supervised training."""

    name: str = "base"
    streams: tuple[str, ...] = ("labeled",)
    epoch_stream: str = "labeled"

    def param_groups(self, model: nn.Module) -> list[dict]:
        return [{"params": [p for p in unwrap(model).parameters() if p.requires_grad], "lr_mult": 1.0,
                 "decay_mult": 1.0}]

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

    def modules(self) -> Iterable[nn.Module]:
        """Extra modules the strategy owns (an EMA teacher), for device moves and DDP broadcasts."""
        return ()
