"""The one training loop.

Every setting (supervised, self-training rounds, mean teacher, UDA) is a *step function* handed to
:func:`train`; the loop itself owns what they share: the optimiser and its poly schedule, AMP, DDP
under ``torchrun``, checkpoint/resume, progress bars and the loss history. A step function takes
``(model, batch, it)`` and returns the loss tensor and a dict of floats to log.

Checkpoints are written atomically and loaded with ``torch.load(..., weights_only=True)``; a run that
is interrupted resumes from its last checkpoint at the same iteration (weights, optimiser, scaler and
RNG state restored; the data loader starts a new pass over the data).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.classes import IGNORE
from blvnb.errors import ConfigError

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, dict, int], tuple[torch.Tensor, dict]]


@dataclass(frozen=True)
class TrainConfig:
    iters: int
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    power: float = 0.9  # poly schedule exponent
    optimizer: str = "sgd"  # sgd | adamw
    amp: bool = False
    amp_dtype: str = "bfloat16"
    channels_last: bool = False
    ckpt_every: int = 0  # 0: only at the end
    log_every: int = 10


# --- devices and processes ---------------------------------------------------------------------------

def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" → this process's CUDA device when there is one, else the CPU."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc


def init_distributed() -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns whether distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return True


def is_main_process() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def poly_lr(base_lr: float, it: int, max_iters: int, power: float = 0.9) -> float:
    """Polynomial decay (DeepLab): lr = base · (1 − it / max_iters)^power."""
    return base_lr * math.pow(1.0 - min(it, max_iters) / max(1, max_iters), power)


def upsample_to(logits: torch.Tensor, size) -> torch.Tensor:
    """Bilinear upsampling of logits to the label size (align_corners=False, as everywhere in blvnb)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def forever(loader: Iterable, sampler=None) -> Iterator:
    """Iterate a DataLoader epoch after epoch (telling a DistributedSampler the epoch)."""
    epoch = 0
    while True:
        if sampler is not None and hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


# --- step functions ----------------------------------------------------------------------------------

def supervised_step(loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> StepFn:
    """Cross entropy (or ``loss_fn``) on logits upsampled to the label size; mean over valid pixels.

    Models with auxiliary heads (``model.aux_weights`` non-empty, e.g. PSPNet's FCN head at 0.4) add
    ``Σ_j w_j · L(aux_j)``, each auxiliary output upsampled to the label size too.
    """
    loss_fn = loss_fn or (lambda logits, y: F.cross_entropy(logits, y, ignore_index=IGNORE))

    def step(model: nn.Module, batch: dict, it: int):
        size = batch["label"].shape[-2:]
        weights = getattr(getattr(model, "module", model), "aux_weights", ())
        if not weights:
            loss = loss_fn(upsample_to(model(batch["image"]), size).float(), batch["label"])
            return loss, {"loss": float(loss.detach())}
        out = model(batch["image"], return_aux=True)
        main = loss_fn(upsample_to(out["out"], size).float(), batch["label"])
        aux = sum(w * loss_fn(upsample_to(a, size).float(), batch["label"]) for w, a in zip(weights, out["aux"]))
        return main + aux, {"loss": float(main.detach()), "aux_loss": float(aux.detach())}

    return step


# --- the loop ----------------------------------------------------------------------------------------

def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer {cfg.optimizer!r}; use 'sgd' or 'adamw'")


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    loader: Iterable[dict],
    cfg: TrainConfig,
    *,
    step: StepFn | None = None,
    device: str | torch.device = "auto",
    checkpoint: str | Path | None = None,
    sampler=None,
    progress: bool = True,
    desc: str = "train",
) -> dict:
    """Train ``model`` for ``cfg.iters`` iterations over ``loader`` (re-iterated as needed).

    Returns ``{"loss": [...], "seconds": float, "iters": int, "resumed_from": int}``; the model is
    trained in place (and unwrapped from DDP at the end). With ``checkpoint`` set, the state is saved
    every ``cfg.ckpt_every`` iterations and at the end, and an existing checkpoint is resumed from.
    """
    device = resolve_device(device)
    step = step or supervised_step()
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = _make_optimizer(model, cfg)
    amp_dtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[cfg.amp_dtype]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and amp_dtype == torch.float16)

    start, history = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        start, history = int(state["iter"]), list(state["loss"])
        torch.set_rng_state(state["rng"])
        log.info("resumed %s from iteration %d", ckpt, start)

    distributed = dist.is_initialized()
    net = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    net.train()

    def save(it: int):
        if ckpt is not None and is_main_process():
            _save_atomic(
                {"model": model.state_dict(), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                 "iter": it, "loss": history, "rng": torch.get_rng_state()},
                ckpt,
            )

    batches = forever(loader, sampler)
    bar = tqdm(total=cfg.iters, initial=start, desc=desc, disable=not (progress and is_main_process()), leave=False)
    t0 = time.perf_counter()
    for it in range(start, cfg.iters):
        lr = poly_lr(cfg.lr, it, cfg.iters, cfg.power)
        for group in opt.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
        batch = _to_device(next(batches), device, cfg.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp):
            loss, stats = step(net, batch, it)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {float(loss)} at iteration {it}")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        history.append(stats.get("loss", float(loss.detach())))
        bar.update(1)
        if it % cfg.log_every == 0:
            bar.set_postfix(loss=f"{history[-1]:.3f}", lr=f"{lr:.2e}")
            log.debug("it %d loss %.4f lr %.3e", it, history[-1], lr)
        if cfg.ckpt_every and (it + 1) % cfg.ckpt_every == 0 and it + 1 < cfg.iters:
            save(it + 1)
    bar.close()
    save(cfg.iters)
    return {"loss": history, "seconds": time.perf_counter() - t0, "iters": cfg.iters, "resumed_from": start}
