"""What BLV costs in training time (BLV Table 12), measured in one process.

Two runs timed apart compare two schedules, two machine loads and possibly two thread counts as much as
two losses; a ratio of their ``train_seconds`` says little about BLV. Here one model, one input and one
optimiser take training steps with cross entropy and with BLV *interleaved* (CE, BLV | BLV, CE | CE, BLV …),
so that whatever slows the machine down hits both losses alike, and the ratio of the median step times
is BLV's own cost. A step is what the training loop does per iteration: forward, upsampling to the label
size, the loss, backward and an SGD step.

``bench/blv_overhead.py`` prints and stores this measurement; the ``blv_fully`` chapter decides the claim
``blv-t12`` on it, one measurement per seed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch

from blvnb.devices import fixed_threads, resolve_device
from blvnb.errors import ConfigError

__all__ = ["interleaved_step_times", "blv_step_overhead"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_step_times(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                           losses: Mapping[str, Callable], *, iters: int = 20, warmup: int = 3, amp: bool = False,
                           lr: float = 1e-3) -> dict[str, list[float]]:
    """Seconds of each timed training step per loss, the losses taking turns on one model and optimiser.

    ``losses``: two losses ``{name: loss(logits, labels)}``; their order alternates every iteration. The
    first ``warmup`` iterations are not timed (allocator, kernels, caches)."""
    from blvnb.models.inference import resize_logits

    if len(losses) != 2:
        raise ConfigError(f"interleaved_step_times compares two losses, got {list(losses)}")
    if iters < 1 or warmup < 0:
        raise ConfigError(f"iters must be >= 1 and warmup >= 0, got iters={iters}, warmup={warmup}")
    device = x.device
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    model.train()

    def step(loss_fn) -> float:
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = resize_logits(model(x), y.shape[-2:])
            loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    names = list(losses)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(warmup + iters):
        for name in (names if i % 2 == 0 else names[::-1]):  # A B | B A | A B …
            t = step(losses[name])
            if i >= warmup:
                times[name].append(t)
    return times


def blv_step_overhead(model: str, class_counts: Sequence[float], *, device: str = "cpu", batch: int = 8,
                      size: tuple[int, int] = (128, 256), iters: int = 20, warmup: int = 3, sigma: float = 6.0,
                      clamp: str = "paper", amp: bool = False, seed: int = 0, threads: int | None = None) -> dict:
    """BLV / CE of the median training-step time of registry ``model`` (random weights, a random batch of
    ``batch`` images of ``size``, labels drawn from ``class_counts``' shares), the two losses interleaved.

    Returns ``ratio`` (median BLV step / median CE step), ``median_paired_ratio`` (each BLV step against
    its neighbouring CE step), ``median_step_s`` and every ``step_s``, with the settings. ``threads``: the
    intra-op CPU threads to time with (None: the caller's)."""
    from blvnb.losses import build_loss
    from blvnb.models.registry import build_model

    counts = torch.as_tensor([float(c) for c in class_counts], dtype=torch.float64)
    if counts.ndim != 1 or counts.numel() < 2 or bool((counts < 0).any()) or float(counts.sum()) <= 0:
        raise ConfigError(f"class_counts must be non-negative numbers with a positive sum, one per class; got {list(class_counts)}")
    dev = resolve_device(device)
    h, w = (int(s) for s in size)
    threads = torch.get_num_threads() if threads is None else threads
    with fixed_threads(threads):
        torch.manual_seed(seed)
        g = torch.Generator(device=dev).manual_seed(seed)
        losses = {"ce": build_loss("ce"),
                  "blv": build_loss("blv", class_counts=counts.tolist(), sigma=sigma, clamp=clamp, generator=g)}
        net = build_model(model, num_classes=counts.numel()).to(dev)
        cpu = torch.Generator().manual_seed(seed)
        x = torch.randn(batch, 3, h, w, generator=cpu).to(dev)
        p = (counts / counts.sum()).float()
        y = torch.multinomial(p, batch * h * w, replacement=True, generator=cpu).view(batch, h, w)
        y[:, :, : max(1, w // 16)] = 255  # some ignored pixels, as real labels have
        times = interleaved_step_times(net, x, y.to(dev), losses, iters=iters, warmup=warmup, amp=amp)
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = [b / a for a, b in zip(times["ce"], times["blv"])]
    return {"ratio": med["blv"] / med["ce"], "median_paired_ratio": statistics.median(paired), "median_step_s": med,
            "step_s": times, "model": model, "device": str(dev), "batch": batch, "size": [h, w], "iters": iters,
            "warmup": warmup, "sigma": sigma, "clamp": clamp, "amp": amp, "seed": seed, "threads": threads}
