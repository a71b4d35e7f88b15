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


@contextmanager
def deterministic_algorithms(enabled: bool) -> Iterator[None]:
    """Compute the enclosed block with PyTorch's deterministic algorithms where it has them (``enabled``),
    and give the caller back its own settings.

    **What is deterministic, and where.** On a CPU every kernel a run uses is deterministic once the
    thread count is fixed (:func:`fixed_threads`): the same commit gives bitwise the same weights, which
    ``tests/test_determinism.py`` checks. On a GPU, by default, it is not:

    * cuDNN chooses convolution algorithms by heuristics (``torch.backends.cudnn.benchmark`` stays off, so
      not by timing), and some of its backward algorithms add partial gradients with atomics, in an order
      that changes from one launch to the next;
    * the backward passes of bilinear ``interpolate`` (every decoder's upsampling of logits and features),
      of ``AdaptiveAvgPool2d`` (PSP's pyramid), and ``NLLLoss`` (cross-entropy's last step) on CUDA add with
      atomics too, and PyTorch has no deterministic CUDA version of them;
    * cuBLAS needs a fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``) for reproducible products;
    * under DDP the gradients are all-reduced in an order fixed by the number of GPUs: the same count gives
      the same sums, another count (or another card, driver or library version) other numbers.

    ``enabled`` makes the first and third deterministic (``torch.use_deterministic_algorithms(True,
    warn_only=True)``, ``cudnn.deterministic``, the cuBLAS workspace when the process has not set one) and
    warns once per operator of the second kind instead of failing, because they are in every model here.
    A GPU run is therefore repeatable only up to those atomics' rounding, which grows over a long training
    and can end as large as a change of seed (so verdicts are decided over seeds); a CPU run is repeatable
    exactly. The cost on a CPU is
    nil (no CPU kernel a run uses changes); on a GPU the deterministic cuDNN algorithms are slower, so the
    profiles leave it off unless asked (``deterministic=True``).
    """
    if not isinstance(enabled, bool):
        raise ConfigError(f"deterministic must be True or False, got {enabled!r}")
    if not enabled:
        yield
        return
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before the first product
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic = before[2]
