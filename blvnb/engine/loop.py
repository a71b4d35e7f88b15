"""The one training loop.

Every setting (supervised, DARS rounds, mean teacher, UDA) is a :class:`~blvnb.engine.strategies.base.Strategy`
handed to :func:`train`; the loop owns what they share:

* the optimiser (SGD or AdamW) built from the strategy's parameter groups (``lr_mult``, ``decay_mult``),
  and the learning-rate schedule as mmcv's ``LrUpdaterHook`` computes it (recipes.md (a), "LR (mmcv)"),
  set before every iteration ``t`` (global, 0-based) for a schedule of length ``T``:

  - poly: ``lr = (base − min_lr) · (1 − t/T)^power + min_lr`` ("linear" is power 1);
  - step: ``lr = base · gamma^(number of milestones ≤ t)`` (never below ``min_lr`` when it is set);
  - linear warmup for ``t < W``: ``lr ← lr · (1 − (1 − t/W)(1 − warmup_ratio))``;

  ``base`` is ``cfg.lr · lr_mult`` of each group (min_lr is absolute, as in mmcv). ``first_iter`` and
  ``schedule_iters`` let a DARS round continue the schedule of the rounds before it (recipes.md (c)).
* AMP (bf16, or fp16 with a GradScaler), channels_last, optional ``torch.compile``, gradient clipping;
* one batch per iteration from every stream the strategy names, moved to the device;
* DDP under ``torchrun`` (gloo on CPU, NCCL on GPU; SyncBatchNorm when asked, on GPUs): every rank
  takes its share of the same global batch (:mod:`blvnb.engine.streams`), so one config gives the same
  global batch on 1 or N processes;
* checkpoints (atomic, loaded with ``weights_only=True``) holding the model, optimiser, scaler, the
  global iteration, the history, every stream's position and the strategy's state, so that a run killed
  at any iteration and started again ends bitwise identical to an uninterrupted one (issue 14 #1);
* a stop signal (SIGTERM / SIGUSR1 / SIGUSR2, what Slurm, submitit and torchrun send before a kill) ends
  the current iteration, writes the checkpoint and raises :class:`~blvnb.engine.signals.Interrupted`
  saying where it stopped (:mod:`blvnb.engine.signals`); started again, the run resumes from there;
* the history of every statistic the strategy returns, a progress bar on a terminal and otherwise a
  log line (INFO) with the loss, lr, images/s and the ETA every ``log_every`` iterations.

**Randomness.** Nothing in an iteration may depend on generator state carried across iterations. A
strategy draws from :func:`step_generator` (seeded by the run seed, the global iteration and a salt);
the loop also re-seeds the global generators at every iteration from (seed, iteration, rank), so that
dropout and drop-path (ViT, Swin, MiT) are repeatable too.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.devices import resolve_device
from blvnb.engine import signals
from blvnb.engine.streams import Stream, derive_seed, seeded_generator
from blvnb.errors import BlvnbError, ConfigError
from blvnb.io import atomic_write

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "linear", "step")
AMP_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
CHECKPOINT_FORMAT = 2


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs besides the model, the streams and the strategy."""

    iters: int  # iterations of this call
    first_iter: int = 0  # the global iteration this call starts at
    schedule_iters: int | None = None  # length T of the lr schedule (default first_iter + iters)
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9  # SGD
    betas: tuple[float, float] = (0.9, 0.999)  # AdamW
    weight_decay: float = 5e-4
    schedule: str = "poly"  # poly | linear | step
    power: float = 0.9
    min_lr: float = 0.0
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # mmcv's default; the transformer configs use 1e-6 (K-Net 1e-3)
    milestones: tuple[int, ...] = ()  # step schedule, global iterations
    gamma: float = 0.1
    grad_clip: float | None = None  # max global L2 norm of the gradients
    amp: bool = False
    amp_dtype: str = "bfloat16"  # bfloat16 | float16 (with a GradScaler)
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False  # SyncBatchNorm under DDP on GPUs
    ckpt_every: int = 0  # 0: only at the end
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        def bad(msg):
            raise ConfigError(f"TrainConfig: {msg}")

        for name in ("iters", "first_iter", "warmup_iters", "ckpt_every", "log_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                bad(f"{name} must be an integer >= 0, got {v!r}")
        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r}; use one of {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            bad(f"unknown schedule {self.schedule!r}; use one of {', '.join(SCHEDULES)}")
        if self.amp_dtype not in AMP_DTYPES:
            bad(f"unknown amp_dtype {self.amp_dtype!r}; use one of {', '.join(AMP_DTYPES)}")
        if not (isinstance(self.lr, (int, float)) and self.lr >= 0 and math.isfinite(self.lr)):
            bad(f"lr must be a finite number >= 0, got {self.lr!r}")
        if self.schedule_iters is not None and self.schedule_iters < self.first_iter + self.iters:
            bad(f"schedule_iters={self.schedule_iters} is shorter than first_iter + iters = "
                f"{self.first_iter + self.iters}")
        if not 0 <= self.warmup_ratio <= 1:
            bad(f"warmup_ratio must lie in [0, 1], got {self.warmup_ratio}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            bad(f"grad_clip must be > 0 or None, got {self.grad_clip}")

    @property
    def end_iter(self) -> int:
        return self.first_iter + self.iters

    @property
    def total_iters(self) -> int:
        """T, the length of the lr schedule."""
        return self.schedule_iters if self.schedule_iters is not None else self.end_iter


# --- schedules ---------------------------------------------------------------------------------------

def scheduled_lr(base_lr: float, it: int, cfg: TrainConfig) -> float:
    """The learning rate of a group with base ``base_lr`` before global iteration ``it`` (mmcv's rules)."""
    T = max(1, cfg.total_iters)
    if cfg.schedule in ("poly", "linear"):
        power = cfg.power if cfg.schedule == "poly" else 1.0
        # mmcv PolyLrUpdaterHook: (base − min) · (1 − t/T)^p + min
        lr = (base_lr - cfg.min_lr) * (1.0 - min(it, T) / T) ** power + cfg.min_lr
    else:
        # mmcv StepLrUpdaterHook: base · γ^(#milestones passed)
        lr = base_lr * cfg.gamma ** sum(it >= m for m in cfg.milestones)
        if cfg.min_lr:
            lr = max(lr, cfg.min_lr)
    if it < cfg.warmup_iters:
        # mmcv linear warmup: lr · (1 − (1 − t/W)(1 − ratio))
        lr *= 1.0 - (1.0 - it / cfg.warmup_iters) * (1.0 - cfg.warmup_ratio)
    return lr


def poly_lr(base_lr: float, it: int, max_iters: int, power: float = 0.9) -> float:
    """Polynomial decay without floor or warmup: base · (1 − it / max_iters)^power."""
    return base_lr * math.pow(1.0 - min(it, max_iters) / max(1, max_iters), power)


# --- randomness --------------------------------------------------------------------------------------

def step_generator(seed: int, it: int, salt: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator on ``device`` seeded from (run seed, global iteration, salt): the only source of a
    step's random draws (ClassMix, jitter, BLV's noise), so that a resumed run draws the same numbers."""
    return seeded_generator(int(seed), "step", int(it), str(salt), device=device)


def _seed_globals(seed: int, it: int, rank: int, device: torch.device) -> None:
    s = derive_seed(int(seed), "global", int(it), int(rank))
    torch.manual_seed(s)  # also seeds every CUDA device


# --- processes ---------------------------------------------------------------------------------------

def init_distributed(device: torch.device | None = None) -> bool:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns whether distributed.

    NCCL when this process computes on a GPU, gloo on the CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return dist.is_available() and dist.is_initialized()
    if not dist.is_initialized():
        device = device or resolve_device("auto")
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


# --- checkpoints -------------------------------------------------------------------------------------

def save_checkpoint(path: str | Path, state: dict) -> None:
    """``torch.save`` to a temporary name unique to this process, then rename (atomic). A failed write
    (disk full: torch's writer reports it as a RuntimeError) leaves the previous checkpoint as it was and
    raises a :class:`~blvnb.errors.WriteError` naming the file (:func:`blvnb.io.atomic_write`)."""
    def write(tmp: Path) -> None:
        try:
            torch.save(state, tmp)
        except RuntimeError as exc:  # "PytorchStreamWriter failed writing file ...": an I/O failure
            raise OSError(f"torch.save failed: {str(exc)[:300]}") from exc

    atomic_write(path, write)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """``torch.load(weights_only=True)``; an unreadable file is a BlvnbError that names it."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise BlvnbError(f"checkpoint {path} does not exist") from None
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, AttributeError, KeyError,
            IndexError, TypeError) as exc:
        raise BlvnbError(f"checkpoint {path} is unreadable (truncated, corrupt or not a checkpoint: "
                         f"{type(exc).__name__}: {str(exc)[:200]}); delete it, or run with force=True, "
                         "to train from scratch") from exc
    if not isinstance(state, dict) or "model" not in state:
        raise BlvnbError(f"checkpoint {path} holds no model weights; delete it, or run with force=True")
    return state


def load_model_state(model: nn.Module, state: Mapping, path) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise BlvnbError(f"checkpoint {path} holds the weights of another model ({str(exc)[:300]}); "
                         "delete it, or run with force=True") from exc


# --- the loop ----------------------------------------------------------------------------------------

def build_optimizer(groups: list[dict], cfg: TrainConfig) -> torch.optim.Optimizer:
    """One optimiser group per strategy group: base lr ``cfg.lr · lr_mult``, weight decay
    ``cfg.weight_decay · decay_mult``; the multipliers stay in the group."""
    out = []
    for g in groups:
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        lr_mult, decay_mult = float(g.get("lr_mult", 1.0)), float(g.get("decay_mult", 1.0))
        out.append({"params": params, "lr": cfg.lr * lr_mult, "base_lr": cfg.lr * lr_mult, "lr_mult": lr_mult,
                    "decay_mult": decay_mult, "weight_decay": cfg.weight_decay * decay_mult})
    if not out:
        raise ConfigError("the strategy's parameter groups hold no trainable parameter")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(out, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(out, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)


def _reapply_hyperparameters(opt: torch.optim.Optimizer, configured: list[dict]) -> None:
    """After loading another run's optimiser state (a DARS round's teacher): keep its moments and momentum
    buffers, but set every group's lr, weight decay and multipliers back to this run's configuration —
    ``load_state_dict`` restores the saved run's hyper-parameters, which may not be this run's."""
    for group, want in zip(opt.param_groups, configured):
        for k in ("lr", "base_lr", "lr_mult", "decay_mult", "weight_decay", "momentum", "betas"):
            if k in want:
                group[k] = want[k]


def param_group_summary(opt: torch.optim.Optimizer) -> list[dict]:
    """What each optimiser group trained with: its base lr (``cfg.lr × lr_mult``, before the schedule),
    weight decay, multipliers and number of parameters (a run's record states them)."""
    return [{"lr": float(g["base_lr"]), "weight_decay": float(g["weight_decay"]), "lr_mult": float(g["lr_mult"]),
             "decay_mult": float(g["decay_mult"]), "params": int(sum(p.numel() for p in g["params"]))}
            for g in opt.param_groups]


def to_device(batch, device: torch.device, channels_last: bool = False):
    """Tensors of a (nested) batch to ``device``; 4-D float tensors channels_last when asked."""
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        if channels_last and batch.ndim == 4 and batch.is_floating_point():
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch
    if isinstance(batch, Mapping):
        return {k: to_device(v, device, channels_last) for k, v in batch.items()}
    return batch


def _batch_images(batch) -> int:
    img = batch.get("image") if isinstance(batch, Mapping) else None
    return int(img.shape[0]) if isinstance(img, torch.Tensor) else 0


@dataclass
class _History:
    """Per-iteration statistics; tensors are turned into floats in bulk (one device sync per flush)."""

    values: dict[str, list[float]] = field(default_factory=dict)
    pending: list[dict] = field(default_factory=list)

    def add(self, stats: dict) -> None:
        self.pending.append({k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in stats.items()})

    def flush(self, desc: str = "train", first_iter: int = 0) -> dict[str, list[float]]:
        """Floats of the pending statistics; a non-finite loss among them is an error (checked here, in
        bulk, rather than with a device sync every iteration)."""
        for stats in self.pending:
            for k, v in stats.items():
                self.values.setdefault(k, []).append(float(v))
        n = len(self.pending)
        self.pending.clear()
        losses = self.values.get("loss", [])[-n:] if n else []
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        if bad:
            it = first_iter + len(self.values["loss"]) - n + bad[0]
            raise BlvnbError(f"{desc}: the loss became {losses[bad[0]]} at iteration {it}; lower the learning rate "
                             "(or turn AMP off)")
        return self.values


def train(model: nn.Module, streams: Mapping[str, Stream], cfg: TrainConfig, strategy, *,
          device: str | torch.device = "auto", checkpoint: str | Path | None = None,
          init_state: str | Path | Mapping | None = None, progress: bool = True, desc: str = "train") -> dict:
    """Train ``model`` in place with ``strategy`` for iterations ``cfg.first_iter … cfg.end_iter − 1``.

    ``streams`` maps the names in ``strategy.streams`` to :class:`Stream` objects. With ``checkpoint``
    set, the state is saved every ``cfg.ckpt_every`` iterations and at the end, and an existing
    checkpoint is resumed from (exactly). Otherwise ``init_state`` (a checkpoint path or a dict with
    ``model`` and optionally ``optimizer``) gives the starting weights (and optimiser state).

    A stop signal (:mod:`blvnb.engine.signals`) ends the iteration under way; the checkpoint is written at
    the iteration reached and :class:`~blvnb.engine.signals.Interrupted` raised (before the first iteration
    when the signal came earlier: nothing new to save).

    Returns ``{"history": {stat: [values]}, "loss": [...], "seconds": float (the whole run's training
    time, restarts included), "iters": int, "resumed_from": int, "resumed": bool, "restarts": int (how
    many times this run was started again from its checkpoint), "optimizer": {"name", "param_groups":
    [{"lr", "weight_decay", "lr_mult", "decay_mult", "params"}]}}`` (:func:`param_group_summary`).
    """
    with signals.catching_stop_signals():
        return _train(model, streams, cfg, strategy, device=device, checkpoint=checkpoint, init_state=init_state,
                      progress=progress, desc=desc)


def _train(model, streams, cfg: TrainConfig, strategy, *, device, checkpoint, init_state, progress, desc) -> dict:
    device = resolve_device(device)
    distributed = init_distributed(device)
    missing = [s for s in strategy.streams if s not in streams]
    if missing:
        raise ConfigError(f"strategy {strategy.name!r} needs the stream(s) {missing}; got {sorted(streams)}")
    if strategy.epoch_stream not in strategy.streams:
        raise ConfigError(f"strategy {strategy.name!r}: epoch_stream {strategy.epoch_stream!r} is not one of its streams")

    if distributed and cfg.sync_bn:
        if device.type == "cuda":
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        else:
            log.warning("SyncBatchNorm needs GPUs; on the CPU every rank normalises with its own batch statistics")
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    strategy.setup(model, device)
    opt = build_optimizer(strategy.param_groups(model), cfg)
    amp_dtype = AMP_DTYPES[cfg.amp_dtype]
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp and amp_dtype == torch.float16)

    start, history, seconds_before, restarts = cfg.first_iter, _History(), 0.0, 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.is_file():
        state = load_checkpoint(ckpt, device)
        load_model_state(model, state["model"], ckpt)
        try:
            opt.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            start, seconds_before = int(state["iter"]), float(state.get("seconds", 0.0))
            restarts = int(state.get("restarts", 0)) + (start < cfg.end_iter)  # a finished run is only read
            history.values = {k: list(v) for k, v in state["history"].items()}
            for name, st in state["streams"].items():
                if name in streams:
                    streams[name].load_state_dict(st)
            strategy.load_state_dict(state.get("strategy", {}))
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise BlvnbError(f"checkpoint {ckpt} does not match this run ({type(exc).__name__}: {str(exc)[:200]}); "
                             "delete it, or run with force=True") from exc
        if not cfg.first_iter <= start <= cfg.end_iter:
            raise BlvnbError(f"checkpoint {ckpt} is at iteration {start}, outside this run's iterations "
                             f"{cfg.first_iter}..{cfg.end_iter}; delete it, or run with force=True")
        log.info("resumed %s from iteration %d", ckpt, start)
    elif init_state is not None:
        state = init_state if isinstance(init_state, Mapping) else load_checkpoint(init_state, device)
        where = init_state if not isinstance(init_state, Mapping) else "init_state"
        load_model_state(model, state["model"], where)
        if state.get("optimizer") is not None:
            configured = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            try:
                opt.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as exc:
                raise BlvnbError(f"the optimiser state of {where} does not fit this run's parameter groups: {exc}") from exc
            _reapply_hyperparameters(opt, configured)
    resumed = start > cfg.first_iter
    hist0 = start - len(history.values.get("loss", []))  # global iteration of the history's first entry

    net = model
    if distributed:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        net = torch.compile(net)
    net.train()
    params = [p for g in opt.param_groups for p in g["params"]]
    r = rank()

    def save(it: int, seconds: float):
        if ckpt is not None and is_main_process():
            save_checkpoint(ckpt, {
                "format": CHECKPOINT_FORMAT, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scaler": scaler.state_dict(), "iter": it, "history": history.flush(desc, hist0), "seconds": seconds,
                "streams": {n: s.state_dict() for n, s in streams.items()}, "strategy": strategy.state_dict(),
                "restarts": restarts})

    def stop(it: int, saved: bool):
        """A stop signal at the end of iteration ``it − 1``: checkpoint (unless just written), then raise."""
        if not saved and it > start:
            save(it, seconds_before + time.perf_counter() - t0)
        if distributed:
            dist.barrier()  # rank 0's checkpoint is complete before any rank exits
        bar.close()
        if ckpt is None:
            where = "no checkpoint (train() was given none)"
        elif it > start or ckpt.is_file():
            where = f"checkpoint {ckpt} holds iteration {it}"
        else:
            where = "no checkpoint yet (nothing trained)"
        raise signals.interrupted(f"{desc} stopped at iteration {it} of {cfg.first_iter}..{cfg.end_iter}; {where}; "
                                  "run the same command again to resume from there")

    tty = sys.stderr.isatty()
    show = progress and is_main_process()
    bar = tqdm(total=cfg.end_iter, initial=start, desc=desc, disable=not (show and tty), leave=False)
    t0 = time.perf_counter()
    images, t_log, it_log = 0, t0, start
    epoch_stream = streams[strategy.epoch_stream]
    if start < cfg.end_iter and signals.requested(distributed, device):  # came before training (a DARS labelling)
        stop(start, saved=True)
    for it in range(start, cfg.end_iter):
        for group in opt.param_groups:
            group["lr"] = scheduled_lr(group["base_lr"], it, cfg)
        epoch_before = epoch_stream.epoch
        batches = {name: to_device(streams[name].next(), device, cfg.channels_last) for name in strategy.streams}
        _seed_globals(cfg.seed, it, r, device)  # after loading: a new epoch's loader must not shift dropout draws
        images += sum(_batch_images(b) for b in batches.values()) * world_size()
        with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp):
            loss, stats = strategy.step(net, batches, it)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        strategy.after_step(model, it)
        stats = dict(stats)
        stats.setdefault("loss", loss.detach())
        stats["lr"] = opt.param_groups[0]["lr"]
        history.add(stats)
        if epoch_stream.epoch != epoch_before:
            strategy.on_epoch_end(model, epoch_before)
        bar.update(1)
        done = it + 1
        if cfg.log_every and done % cfg.log_every == 0 or done == cfg.end_iter or device.type != "cuda":
            values = history.flush(desc, hist0)
        if cfg.log_every and done % cfg.log_every == 0 or done == cfg.end_iter:
            now = time.perf_counter()
            rate = images / max(now - t_log, 1e-9)
            eta = (now - t_log) / max(done - it_log, 1) * (cfg.end_iter - done)
            bar.set_postfix(loss=f"{values['loss'][-1]:.3f}", lr=f"{values['lr'][-1]:.2e}")
            if is_main_process() and not (show and tty):  # a log line wherever no bar is drawn
                log.info("%s: iteration %d/%d loss %.4f lr %.2e %.1f images/s ETA %.0f s", desc, done, cfg.end_iter,
                         values["loss"][-1], values["lr"][-1], rate, eta)
            images, t_log, it_log = 0, now, done
        saved = bool(cfg.ckpt_every and done % cfg.ckpt_every == 0 and done < cfg.end_iter)
        if saved:
            save(done, seconds_before + time.perf_counter() - t0)
        if done < cfg.end_iter and signals.requested(distributed, device):
            stop(done, saved)
    bar.close()
    seconds = seconds_before + time.perf_counter() - t0
    if start < cfg.end_iter or (ckpt is not None and not ckpt.is_file()):
        save(cfg.end_iter, seconds)
    if distributed:
        dist.barrier()
    values = history.flush(desc, hist0)
    optimizer = {"name": cfg.optimizer, "param_groups": param_group_summary(opt)}
    return {"history": values, "loss": values.get("loss", []), "seconds": seconds, "iters": cfg.iters,
            "resumed_from": start, "resumed": resumed, "restarts": restarts, "optimizer": optimizer}


__all__ = ["TrainConfig", "build_optimizer", "init_distributed", "is_main_process", "load_checkpoint",
           "param_group_summary", "poly_lr", "resolve_device", "save_checkpoint", "scheduled_lr", "step_generator", "train"]
