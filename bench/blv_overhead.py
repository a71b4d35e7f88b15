"""BLV's training-time overhead: the same model, input and optimiser step with cross entropy and with
BLV, interleaved in one process; prints BLV/CE of the median step time and writes JSON.

The paper (Table 12, 8 V100s) reports +2.8 % (ResNet-50 + UperHead) and +4.6 % (HRNet-18 + OCR) of
training time. Our goal: at most +1 % on a GPU and +3 % on a CPU with the quick profile's model.

    python bench/blv_overhead.py                       # quick profile's model, batch 8, 128×256, CPU
    python bench/blv_overhead.py --device cuda --amp   # on a GPU, bf16 autocast

A "step" is what the training loop does per iteration: forward, upsampling to the label size, the loss,
backward and an SGD step; both losses share one model and optimiser and alternate (CE, BLV, BLV, CE, …)
so that slow drifts of the machine hit both alike (:func:`blvnb.engine.overhead.interleaved_step_times`,
the measurement the book's claim ``blv-t12`` is decided on). The loss alone (on fixed logits, forward +
backward) is timed as well. Output: ``bench/out/blv_overhead.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from blvnb.devices import resolve_device
from blvnb.engine.overhead import interleaved_step_times
from blvnb.models.inference import resize_logits as upsample_to
from blvnb.losses import build_loss
from blvnb.models.registry import build_model

# Cityscapes-like pixel shares (%), so the class weights are those of a real long tail.
SHARES = [36.9, 6.1, 22.8, 0.66, 0.88, 1.23, 0.21, 0.55, 15.9, 1.16, 4.0, 1.22, 0.14, 7.0, 0.27, 0.24, 0.23, 0.1,
          0.41]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="r10t-fpn")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=(128, 256), metavar=("H", "W"))
    ap.add_argument("--iters", type=int, default=40, help="timed steps per loss")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per loss")
    ap.add_argument("--sigma", type=float, default=6.0)
    ap.add_argument("--clamp", default="paper", choices=("paper", "released"))
    ap.add_argument("--amp", action="store_true", help="bf16 autocast (as the loop's amp=True)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "blv_overhead.json"))
    args = ap.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    g = torch.Generator(device=device).manual_seed(args.seed)
    counts = [s * 1e6 for s in SHARES]
    losses = {"ce": build_loss("ce"),
              "blv": build_loss("blv", class_counts=counts, sigma=args.sigma, clamp=args.clamp, generator=g)}
    model = build_model(args.model).to(device).train()
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w, device=device)
    y = torch.multinomial(torch.tensor(SHARES), args.batch * h * w, replacement=True).view(args.batch, h, w)
    y[:, :, : w // 16] = 255  # some ignored pixels
    y = y.to(device)

    def loss_only(loss_fn, z) -> float:
        _sync(device)
        t0 = time.perf_counter()
        loss_fn(z, y).backward()
        _sync(device)
        return time.perf_counter() - t0

    times = interleaved_step_times(model, x, y, losses, iters=args.iters, warmup=args.warmup, amp=args.amp)
    paired = [b / a for a, b in zip(times["ce"], times["blv"])]  # each BLV step against its neighbouring CE step

    with torch.no_grad():
        z0 = upsample_to(model(x), y.shape[-2:]).float()
    loss_times: dict[str, list[float]] = {"ce": [], "blv": []}
    for i in range(args.warmup + args.iters):
        for name in (("ce", "blv") if i % 2 == 0 else ("blv", "ce")):
            z = z0.clone().requires_grad_()
            t = loss_only(losses[name], z)
            if i >= args.warmup:
                loss_times[name].append(t)

    med = {k: statistics.median(v) for k, v in times.items()}
    loss_med = {k: statistics.median(v) for k, v in loss_times.items()}
    ratio = med["blv"] / med["ce"]
    result = {
        "ratio_blv_over_ce": ratio,
        "median_paired_ratio": statistics.median(paired),
        "median_step_s": med,
        "step_s": times,
        "median_loss_only_s": loss_med,
        "loss_only_extra_s": loss_med["blv"] - loss_med["ce"],
        "paper_table12": {"HRNet-18 + OCRHead": 1.046, "ResNet-50 + UperHead": 1.028},
        "goal": 1.01 if device.type == "cuda" else 1.03,
        "config": {**vars(args), "size": list(args.size), "logits_elements": int(z0.numel())},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"BLV/CE median step time: {ratio:.4f} (median of paired ratios {result['median_paired_ratio']:.4f}; CE {1e3 * med['ce']:.1f} ms, BLV {1e3 * med['blv']:.1f} ms; "
          f"loss alone +{1e3 * result['loss_only_extra_s']:.2f} ms; {args.model}, batch {args.batch}, "
          f"{h}×{w}, {device}, {torch.get_num_threads()} threads) -> {out}")
    return result


if __name__ == "__main__":
    main()
