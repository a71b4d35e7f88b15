"""Training throughput of every registered model: images per second of a full training step.

    python bench/model_throughput.py                     # CPU: the quick profile's crop, batch and variant
    python bench/model_throughput.py --device cuda       # GPU: 512×1024, the papers' sizes, fp32 | bf16 | bf16 + channels_last

A step is what the training loop does per iteration: forward with the aux outputs, bilinear upsampling
of every output to the label size, cross entropy (aux terms weighted by ``model.aux_weights``),
backward and an SGD step. The modes of one model are timed in the same process, interleaved round by
round (fp32, bf16, bf16+cl, fp32, …), so slow drifts of the machine hit all alike; the table reports
the median step and the ratios bf16 / fp32 and channels_last / contiguous (under bf16) of images per
second. ``--modes ... compiled`` adds torch.compile (inductor, bf16, channels_last), timed after the
others (a change of memory format would recompile), with its compile time. Output: ``bench/out/model_throughput_<device>.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from blvnb.devices import resolve_device
from blvnb.models.inference import resize_logits as upsample_to
from blvnb.experiments.profiles import get_profile
from blvnb.models.registry import build_model, list_models


MODES = {"fp32": (False, False), "bf16": (True, False), "bf16-cl": (True, True), "compiled": (True, True)}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_model(name: str, args, device) -> dict:
    torch.manual_seed(0)
    model = build_model(name, num_classes=19, variant=args.variant).to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    h, w = args.size
    x = torch.randn(args.batch, 3, h, w, device=device)
    y = torch.randint(0, 19, (args.batch, h, w), device=device)
    weights = model.aux_weights

    def step(amp: bool, cl: bool, fn=model) -> float:
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xi = x.contiguous(memory_format=torch.channels_last) if cl else x.contiguous()
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = fn(xi, return_aux=True)
            loss = F.cross_entropy(upsample_to(out["out"], (h, w)).float(), y)
            for wt, a in zip(weights, out["aux"]):
                loss = loss + wt * F.cross_entropy(upsample_to(a, (h, w)).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        return time.perf_counter() - t0

    modes = [m for m in args.modes if m != "compiled"]
    for m in modes:  # warm-up: kernels chosen, caches filled
        for _ in range(args.warmup):
            step(*MODES[m])
    if device.type == "cuda":  # steady state only: cuDNN's algorithm search allocates large workspaces
        torch.cuda.reset_peak_memory_stats(device)
    times = {m: [] for m in modes}
    for _ in range(args.iters):  # interleaved rounds
        for m in modes:
            times[m].append(step(*MODES[m]))
    if "compiled" in args.modes:  # after the others: switching memory formats would recompile
        model.to(memory_format=torch.channels_last)
        compiled = torch.compile(model)
        t0 = time.perf_counter()
        step(True, True, compiled)
        compile_s = time.perf_counter() - t0
        for _ in range(args.warmup):
            step(True, True, compiled)
        times["compiled"] = [step(True, True, compiled) for _ in range(args.iters)]
        modes.append("compiled")
    res = {"model": name, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    for m in modes:
        res[f"{m}_img_s"] = round(args.batch / statistics.median(times[m]), 2)
    if "fp32" in modes and "bf16" in modes:
        res["bf16/fp32"] = round(res["bf16_img_s"] / res["fp32_img_s"], 2)
    if "bf16" in modes and "bf16-cl" in modes:
        res["cl/contig"] = round(res["bf16-cl_img_s"] / res["bf16_img_s"], 2)
    if "compiled" in modes and "bf16-cl" in modes:
        res["compiled/eager"] = round(res["compiled_img_s"] / res["bf16-cl_img_s"], 2)
        res["compile_s"] = round(compile_s, 1)
    if device.type == "cuda":
        res["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 1)
        torch.cuda.reset_peak_memory_stats(device)
    del model, opt
    return res


def main(argv=None) -> dict:
    quick = get_profile("quick")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    ap.add_argument("--variant", default=None, help="paper | small (default: small on CPU, paper on GPU)")
    ap.add_argument("--size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help=f"default: quick profile's crop {quick.crop} on CPU, 512 1024 on GPU")
    ap.add_argument("--batch", type=int, default=None, help=f"default: {quick.batch_size} on CPU, 4 on GPU")
    ap.add_argument("--modes", nargs="*", default=None, choices=list(MODES),
                    help="default: fp32 on CPU; fp32 bf16 bf16-cl on GPU")
    ap.add_argument("--iters", type=int, default=None, help="timed rounds (default: 3 CPU, 10 GPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per mode (default: 1 CPU, 3 GPU)")
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: leave as is)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    args.variant = args.variant or ("paper" if gpu else "small")
    args.size = tuple(args.size or ((512, 1024) if gpu else quick.crop))
    args.batch = args.batch or (4 if gpu else quick.batch_size)
    args.modes = args.modes or (["fp32", "bf16", "bf16-cl"] if gpu else ["fp32"])
    args.iters = args.iters or (10 if gpu else 3)
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore", category=UserWarning)

    rows = []
    for name in args.models or list_models():
        try:
            rows.append(bench_model(name, args, device))
        except torch.OutOfMemoryError:
            rows.append({"model": name, "error": "out of memory"})
            torch.cuda.empty_cache()
        print(json.dumps(rows[-1]), flush=True)

    cols = [c for c in ["params_m", *(f"{m}_img_s" for m in args.modes), "bf16/fp32", "cl/contig", "compiled/eager",
                         "compile_s", "peak_mem_gib"]
            if any(c in r for r in rows)]
    print(f"\n{device} ({torch.cuda.get_device_name(device) if gpu else platform.processor() or 'cpu'}), "
          f"{args.variant} variants, batch {args.batch} × {args.size[0]}×{args.size[1]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |")

    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if gpu else platform.processor(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "variant": args.variant,
              "size": list(args.size), "batch": args.batch, "modes": args.modes, "iters": args.iters, "rows": rows}
    out = Path(args.out or Path(__file__).resolve().parent / "out" / f"model_throughput_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
