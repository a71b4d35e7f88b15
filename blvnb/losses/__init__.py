"""Losses by name: ``build_loss("blv", class_counts=counts, sigma=4.0)`` → an ``nn.Module`` called as
``loss(logits, target)``.

A run config names its loss with a string and its keywords; the model never sees it. Every loss takes
N×C×h×w logits (resized to the labels' size inside) and N×H×W train-id labels with 255 ignored.

=========  ===========================================  ================  =======================
name       loss                                         ``class_counts``  keywords (defaults)
=========  ===========================================  ================  =======================
``ce``     cross entropy                                —                 avg_non_ignore
``blv``    BLV, Eq. (3) (:mod:`.blv`); the released     required          sigma=6, clamp="paper",
           loss (e08cc6c) with ``**RELEASED_OPTIONS``                     distribution="gaussian",
                                                                          variation, balance, generator
``la``     logit adjustment                             required          tau=1
``lovasz`` Lovász-softmax                               —                 per_image=False, classes
``focal``  focal loss                                   —                 gamma=2
``gcl``    Gaussian clouded logits                      required          sigma=1/3, noise_mul=1, generator
``rw``     class re-weighted cross entropy              required          power=1
=========  ===========================================  ================  =======================

Where the counts come from (labels, labeled subset, pseudo labels by Eq. (4), source domain):
:mod:`blvnb.losses.frequencies`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from torch import nn

from blvnb.errors import ConfigError
from blvnb.losses.blv import RELEASED_OPTIONS, BLVLoss, SigmaSchedule, blv_logits, blv_loss, cross_entropy
from blvnb.losses.long_tail import (
    CrossEntropyLoss,
    FocalLoss,
    GCLLoss,
    LogitAdjustedLoss,
    LovaszSoftmaxLoss,
    ReweightedLoss,
)

#: name -> (constructor, needs class counts)
LOSSES: dict[str, tuple[Callable[..., nn.Module], bool]] = {
    "ce": (CrossEntropyLoss, False),
    "blv": (BLVLoss, True),
    "la": (LogitAdjustedLoss, True),
    "lovasz": (LovaszSoftmaxLoss, False),
    "focal": (FocalLoss, False),
    "gcl": (GCLLoss, True),
    "rw": (ReweightedLoss, True),
}


def list_losses() -> list[str]:
    return list(LOSSES)


def loss_keywords(name: str) -> list[str]:
    """The keywords loss ``name`` takes besides ``class_counts`` (an unknown name is a ConfigError)."""
    try:
        cls = LOSSES[name][0]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; registered: {', '.join(LOSSES)}") from None
    return [p for p in inspect.signature(cls).parameters if p != "class_counts"]


def build_loss(name: str, class_counts=None, **kw) -> nn.Module:
    """The loss registered as ``name``, built with ``class_counts`` (where it needs them) and ``kw``.

    Unknown names and keywords, and a missing ``class_counts``, raise a ConfigError that lists what is
    accepted. ``class_counts`` given to a loss that does not use them is ignored.
    """
    accepted = loss_keywords(name)
    cls, needs_counts = LOSSES[name]
    unknown = sorted(set(kw) - set(accepted))
    if unknown:
        raise ConfigError(f"loss {name!r} does not take {unknown}; it accepts {accepted}")
    if needs_counts:
        if class_counts is None:
            raise ConfigError(f"loss {name!r} needs class_counts (pixels per class), e.g. "
                              "blvnb.losses.frequencies.counts_from_labels(train_set)")
        return cls(class_counts, **kw)
    return cls(**kw)


__all__ = ["LOSSES", "RELEASED_OPTIONS", "BLVLoss", "SigmaSchedule", "blv_logits", "blv_loss", "build_loss", "cross_entropy",
           "list_losses", "loss_keywords"]
