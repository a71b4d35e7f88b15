"""The one device helper: which device this process computes on.

Lives at the bottom of the package (beside ``errors``) so that every room — data, models, losses,
pseudo labels, the engine — can use it without importing upwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

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


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Compute the enclosed block with ``threads`` intra-op CPU threads, and give the caller back its own.

    On a CPU the thread count changes the arithmetic: a convolution or a matrix product sums its terms
    in blocks split between the threads, so one thread and two give weights that differ in the last bits
    after the first step, and a few points of mIoU after a short run. A run therefore fixes its own count
    (its ``threads`` setting, part of its key) rather than inheriting whatever the process, the executor
    or the rest of the machine left behind. Inter-op threads (``torch.set_num_interop_threads``) only run
    independent operators side by side and do not change any result.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"threads must be a whole number >= 1, got {threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
