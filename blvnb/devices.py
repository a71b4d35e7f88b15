"""The one device helper: which device this process computes on.

Lives at the bottom of the package (beside ``errors``) so that every room — data, models, losses,
pseudo labels, the engine — can use it without importing upwards.
"""

from __future__ import annotations

import os

import torch

from blvnb.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → this process's CUDA device (``LOCAL_RANK`` under torchrun) when CUDA exists, else the CPU.

    ``"cuda"`` alone also means this process's device under torchrun, so that every rank evaluates and
    labels on its own GPU rather than all on GPU 0.
    """
    if isinstance(device, torch.device):
        return device
    if device in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if device == "cuda":
            raise ConfigError("device 'cuda' was asked for but this machine has no CUDA device; use 'auto' or 'cpu'")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but this machine has no CUDA device; use 'auto' or 'cpu'")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev
