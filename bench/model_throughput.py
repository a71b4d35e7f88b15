"""Training throughput of every registered model, as a ratio to one reference model timed in the same rounds.

    python bench/model_throughput.py                     # CPU: the quick profile's crop, batch and variant
    python bench/model_throughput.py --device cuda       # GPU: 512×1024, the papers' sizes, fp32 | bf16 | bf16 + channels_last

A step is what the training loop does per iteration: forward with the aux outputs, bilinear upsampling
of every output to the label size, cross entropy (aux terms weighted by ``model.aux_weights``),
backward and an SGD step. Every model is built first; then each timed round steps every model in every
mode once (r10t-fpn fp32, r10t-fpn bf16, …, r18-fpn fp32, …), so that a slow drift of the machine, or
another job sharing its cores, hits all models alike. A model's speed is reported as the median over the
rounds of its images/s divided by the reference model's (``--reference``; default r10t-fpn on a CPU,
r50-psp on a GPU) **in the same round and mode**: a ratio that a busy machine does not change much, where
absolute images/s do. The reference's own median images/s is given once, as what this machine did at that
moment; a cost model multiplies the ratios by its own measured reference rate. Also per model: bf16 / fp32
and channels_last / contiguous (under bf16). ``--modes ... compiled`` adds torch.compile (inductor, bf16,
channels_last), timed per model after the interleaved rounds (a change of memory format would recompile),
with its compile time. On a GPU, ``peak_mem_gib`` is a model's own peak: its step's allocations above what was
resident before it, plus its parameters and optimiser state. Output: ``bench/out/model_throughput_<device>.json``
(``--out`` to change).
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


class ModelBench:
    """One model, its optimiser and its batch, ready to time a training step in each mode."""

    def __init__(self, name: str, args, device):
        torch.manual_seed(0)
        self.name, self.device, self.args = name, device, args
        self.model = build_model(name, num_classes=19, variant=args.variant).to(device).train()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=1e-4, momentum=0.9)
        h, w = args.size
        self.x = torch.randn(args.batch, 3, h, w, device=device)
        self.y = torch.randint(0, 19, (args.batch, h, w), device=device)
        self.peak = 0  # bytes a step allocates above what was resident before it (GPU)

    def step(self, amp: bool, cl: bool, fn=None) -> float:
        model, device, (h, w) = self.model, self.device, self.args.size
        fn = fn or model
        model.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
        xi = self.x.contiguous(memory_format=torch.channels_last) if cl else self.x.contiguous()
        _sync(device)
        if device.type == "cuda":
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            out = fn(xi, return_aux=True)
            loss = F.cross_entropy(upsample_to(out["out"], (h, w)).float(), self.y)
            for wt, a in zip(model.aux_weights, out["aux"]):
                loss = loss + wt * F.cross_entropy(upsample_to(a, (h, w)).float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        _sync(device)
        dt = time.perf_counter() - t0
        if device.type == "cuda":
            self.peak = max(self.peak, torch.cuda.max_memory_allocated(device) - before)
        return dt

    def resident_bytes(self) -> int:
        tensors = [*self.model.parameters(), *self.model.buffers(),
                   *(t for st in self.opt.state.values() for t in st.values() if torch.is_tensor(t))]
        return sum(t.numel() * t.element_size() for t in tensors)

    def close(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        del self.model, self.opt, self.x, self.y


def bench_models(names: list[str], args, device) -> list[dict]:
    """Interleaved rounds over every model and mode (module docstring); one row per model."""
    benches, rows = {}, {}
    for name in names:
        try:
            benches[name] = ModelBench(name, args, device)
        except torch.OutOfMemoryError:
            rows[name] = {"model": name, "error": "out of memory"}
            torch.cuda.empty_cache()
    ref = args.reference
    if ref not in benches:
        raise SystemExit(f"the reference model {ref!r} is not among the benchmarked models {list(benches)}")
    modes = [m for m in args.modes if m != "compiled"]

    def guarded(b: ModelBench, mode: str):
        try:
            return b.step(*MODES[mode])
        except torch.OutOfMemoryError:
            rows[b.name] = {"model": b.name, "error": f"out of memory ({mode})"}
            torch.cuda.empty_cache()
            return None

    for b in list(benches.values()):  # warm-up: kernels chosen, caches filled
        for m in modes:
            for _ in range(args.warmup):
                if b.name in benches and guarded(b, m) is None:
                    benches.pop(b.name).close()
                    break
    if ref not in benches:
        raise SystemExit(f"the reference model {ref!r} failed: {rows[ref]['error']}")
    for b in benches.values():
        b.peak = 0  # steady state only: cuDNN's algorithm search allocates large workspaces
    times = {name: {m: [] for m in modes} for name in benches}
    for _ in range(args.iters):  # interleaved rounds: every model, every mode, then again
        for name, b in list(benches.items()):
            for m in modes:
                t = guarded(b, m)
                if t is None:
                    benches.pop(name).close()
                    del times[name]
                    break
                times[name][m].append(t)
        if ref not in benches:
            raise SystemExit(f"the reference model {ref!r} failed: {rows[ref]['error']}")
    for name, b in benches.items():
        res = {"model": name, "params_m": round(sum(p.numel() for p in b.model.parameters()) / 1e6, 2)}
        for m in modes:
            # per round: the reference's step time over this model's (images/s ratio at equal batch)
            res[f"{m}_vs_ref"] = round(statistics.median(r / t for r, t in zip(times[ref][m], times[name][m])), 3)
            res[f"{m}_img_s"] = round(args.batch / statistics.median(times[name][m]), 2)
        if "fp32" in modes and "bf16" in modes:
            res["bf16/fp32"] = round(statistics.median(a / b_ for a, b_ in zip(times[name]["fp32"], times[name]["bf16"])), 2)
        if "bf16" in modes and "bf16-cl" in modes:
            res["cl/contig"] = round(statistics.median(a / b_ for a, b_ in zip(times[name]["bf16"], times[name]["bf16-cl"])), 2)
        if device.type == "cuda":
            res["peak_mem_gib"] = round((b.peak + b.resident_bytes()) / 2**30, 1)
        rows[name] = res
    if "compiled" in args.modes:  # per model, after the rounds: switching memory formats would recompile
        for name, b in benches.items():
            b.model.to(memory_format=torch.channels_last)
            compiled = torch.compile(b.model)
            t0 = time.perf_counter()
            b.step(True, True, compiled)
            compile_s = time.perf_counter() - t0
            for _ in range(args.warmup):
                b.step(True, True, compiled)
            eager = [b.step(True, True) for _ in range(args.iters)]  # adjacent in time to the compiled steps
            comp = [b.step(True, True, compiled) for _ in range(args.iters)]
            rows[name]["compiled_img_s"] = round(args.batch / statistics.median(comp), 2)
            rows[name]["compiled/eager"] = round(statistics.median(eager) / statistics.median(comp), 2)
            rows[name]["compile_s"] = round(compile_s, 1)
    for b in benches.values():
        b.close()
    return [rows[n] for n in names]


def main(argv=None) -> dict:
    quick = get_profile("quick")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--models", nargs="*", default=None, help="registry names (default: all)")
    ap.add_argument("--reference", default=None, help="the model every other is a ratio to (default: r10t-fpn on "
                    "a CPU, r50-psp on a GPU, as the cost model of blvnb.experiments.execute); always timed")
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
    args.reference = args.reference or ("r50-psp" if gpu else "r10t-fpn")
    names = list(dict.fromkeys([args.reference, *(args.models or list_models())]))
    if args.threads:
        torch.set_num_threads(args.threads)
    if gpu:
        torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore", category=UserWarning)

    rows = bench_models(names, args, device)
    for r in rows:
        print(json.dumps(r), flush=True)
    ref = next(r for r in rows if r["model"] == args.reference)
    eager = [m for m in args.modes if m != "compiled"]
    cols = [c for c in ["params_m", *(f"{m}_vs_ref" for m in eager), "bf16/fp32", "cl/contig", "compiled/eager",
                         "compile_s", "peak_mem_gib"]
            if any(c in r for r in rows)]
    print(f"\n{device} ({torch.cuda.get_device_name(device) if gpu else platform.processor() or 'cpu'}), "
          f"{args.variant} variants, batch {args.batch} × {args.size[0]}×{args.size[1]}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {len(rows)} models interleaved over {args.iters} rounds.\n"
          f"Images/s as a ratio to {args.reference} in the same round; {args.reference} itself did "
          + ", ".join(f"{ref[f'{m}_img_s']} images/s ({m})" for m in eager) + " here and now.\n")
    print("| model | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for r in rows:
        print(f"| {r['model']} | " + " | ".join(str(r.get(c, r.get("error", ""))) for c in cols) + " |")

    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if gpu else platform.processor(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "variant": args.variant,
              "size": list(args.size), "batch": args.batch, "modes": args.modes, "iters": args.iters,
              "reference": args.reference, "rows": rows}
    out = Path(args.out or Path(__file__).resolve().parent / "out" / f"model_throughput_{device.type}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
