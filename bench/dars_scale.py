"""DARS at the scale of a real data set: memory flat in the number of images, time near one read.

Streams synthetic float16 teacher outputs (generated on the fly from a seed, never stored) through the
two-pass :class:`~blvnb.pseudo.labelers.StreamingLabeler` at N and 10 N images and prints, in one run:

* peak memory at each size (above the process's baseline) and their ratio — goal ≤ 1.1: memory does not
  grow with the data set;
* throughput in pixels/s of both passes together;
* our labelling time over the time of one read of the probabilities (their arg max — the floor every
  method pays); goal ≤ 3×;
* at N, the released code's way — every confidence appended to per-class Python lists, then a full sort
  — with its time, peak memory, bytes per pixel (→ what Cityscapes' 5.5 × 10⁹ pixels would need) and a
  check that its thresholds equal ours;
* the fixed cost per image: time per image on many tiny images (``--overhead-size``, ``--overhead-n``),
  where the pixels cost next to nothing, with the labeler's batches (``--batch``) and one image at a time.

Time spent generating the probabilities is excluded everywhere (the labeler reports the time it waits
for its source separately). Each measurement runs in its own process, so peak memories are its own.

    python bench/dars_scale.py                                   # CPU, 4 and 40 images of 512×1024
    python bench/dars_scale.py --device cuda --n 26 --size 1024 2048   # GPU, 1 % and 10 % of Cityscapes
    python bench/dars_scale.py --size 64 128 --n 200                 # many small images: per-image costs

Output: ``bench/out/dars_scale.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from blvnb.pseudo import distribution as D
from blvnb.pseudo import labelers as L

#: Cityscapes train pixel shares (%) among valid pixels (the released code's 1/8-split prior, normalised).
PRIOR = [32.07, 5.71, 20.7, 0.564, 0.761, 1.054, 0.1696, 0.5014, 13.4993, 0.8981, 3.6445, 1.1458, 0.1393, 6.0,
         0.2949, 0.1954, 0.2341, 0.0818, 0.3917]
CITYSCAPES_PIXELS = 2603 * 1024 * 2048


class RandomTeacher:
    """``n`` images of teacher-like probabilities, image ``i`` generated from ``(seed, i)`` on ``device``."""

    def __init__(self, n: int, size: tuple[int, int], device: torch.device, dtype: torch.dtype, seed: int = 0):
        self.n, self.size, self.device, self.dtype, self.seed = n, size, device, dtype, seed

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + i)
        return D.synthetic_probabilities(1, self.size, PRIOR, generator=g, dtype=self.dtype, device=self.device)[0]


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(args) -> dict:
    """One measurement ("ours" or "released") on ``args.images`` images, in this process."""
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    L.ThresholdSearch.cuda_replicas = args.cuda_replicas
    src = RandomTeacher(args.images, tuple(args.size), device, dtype, args.seed)
    src[0]  # warm up allocators and kernels before the baseline
    _sync(device)
    base = _rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        gpu_base = torch.cuda.memory_allocated(device)
    pixels = args.images * args.size[0] * args.size[1]
    out = {"mode": args.worker, "images": args.images, "pixels": pixels}
    if args.worker == "ours":
        lab = L.StreamingLabeler(PRIOR, method="dars", alpha=args.alpha, device=device, progress=False,
                                 batch=args.batch)
        t0 = time.perf_counter()
        report = lab.run(src, None)
        wall = time.perf_counter() - t0
        ours = lab.seconds["pass1"] + lab.seconds["pass2"]
        # the floor: one read of every image's probabilities (max over classes gives the arg max too)
        floor = 0.0
        for i in range(args.images):
            probs = src[i]
            _sync(device)
            t0 = time.perf_counter()
            probs.max(0)
            _sync(device)
            floor += time.perf_counter() - t0
        out.update(seconds=ours, pass1=lab.seconds["pass1"], pass2=lab.seconds["pass2"], source=lab.seconds["source"],
                   wall=wall, floor=floor, keys=lab.thresholds.keys.tolist(), kept=report.kept.tolist(),
                   targets=lab.thresholds.targets.tolist(), kl=report.kl_from(PRIOR),
                   values=lab.thresholds.values.tolist(), batch=lab.batch_size(args.size))
    else:
        # the released way: every confidence in per-class Python lists, then a full sort per class
        lists: list[list[float]] = [[] for _ in PRIOR]
        seconds = 0.0
        for i in range(args.images):
            probs = src[i]
            _sync(device)
            t0 = time.perf_counter()
            conf, pred = probs.max(0)
            for j in range(len(PRIOR)):
                lists[j].extend(conf[pred == j].cpu().numpy().tolist())
            seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        n = L.target_counts(PRIOR, args.alpha, pixels).tolist()
        values = []
        for j in range(len(PRIOR)):
            arr = np.array(lists[j])
            arr.sort()
            arr = arr[::-1]
            values.append(float(arr[min(n[j], arr.size) - 1]) if arr.size and n[j] else float("inf"))
        seconds += time.perf_counter() - t0
        out.update(seconds=seconds, values=values)
    out["peak_mib"] = _peak_rss_mib() - base
    if device.type == "cuda":
        out["gpu_peak_mib"] = (torch.cuda.max_memory_allocated(device) - gpu_base) / 2**20
    return out


def run_worker(args, mode: str, images: int, *, memory: bool, size=None, batch="same") -> dict:
    size = args.size if size is None else size
    batch = args.batch if batch == "same" else batch
    cmd = [sys.executable, __file__, "--worker", mode, "--images", str(images), "--size", *map(str, size),
           "--device", args.device, "--dtype", args.dtype, "--alpha", str(args.alpha), "--seed", str(args.seed),
           "--threads", str(args.threads), "--cuda-replicas", str(args.cuda_replicas)]
    if batch is not None:
        cmd += ["--batch", str(batch)]
    env = dict(os.environ)
    if memory:
        # large buffers from mmap, returned at once: peak RSS then measures what is live, not what malloc
        # keeps for reuse (which grows with the run's length). It costs page faults, so times come from a
        # second run with the default allocator.
        env.update(MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"worker {mode} ({images} images) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(args, mode: str, images: int) -> dict:
    """Times from a run with the default allocator, peak memory from a run that returns freed memory."""
    timed = run_worker(args, mode, images, memory=False)
    mem = run_worker(args, mode, images, memory=True)
    timed["peak_mib"] = mem["peak_mib"]
    if "gpu_peak_mib" in mem:
        timed["gpu_peak_mib"] = mem["gpu_peak_mib"]
    return timed


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=4, help="images at the small size N (the large one is 10 N)")
    ap.add_argument("--factor", type=int, default=10)
    ap.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--dtype", default="float16", choices=("float16", "float32"),
                    help="confidence dtype (float16: one histogram pass, as the released code; float32: two)")
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--released-n", type=int, default=None, help="images for the released way (default: --n)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave as is)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cuda-replicas", type=int, default=L.ThresholdSearch.cuda_replicas,
                    help="histogram copies on a GPU (ThresholdSearch.cuda_replicas)")
    ap.add_argument("--batch", type=int, default=None,
                    help="images per step of the labeler (StreamingLabeler's batch; default: automatic)")
    ap.add_argument("--overhead-size", type=int, nargs=2, default=(16, 32), metavar=("H", "W"),
                    help="tiny images for the fixed cost per image")
    ap.add_argument("--overhead-n", type=int, default=500, help="images for the fixed cost per image (0: skip)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "dars_scale.json"))
    ap.add_argument("--worker", choices=("ours", "released"), help=argparse.SUPPRESS)
    ap.add_argument("--images", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.worker:
        print(json.dumps(worker(args)))
        return {}

    h, w = args.size
    small, large = args.n, args.n * args.factor
    a = measure(args, "ours", small)
    b = measure(args, "ours", large)
    rel = measure(args, "released", args.released_n or small)
    # fixed cost per image: many tiny images, with the labeler's batches and one image at a time
    tiny = {}
    if args.overhead_n > 0:
        for batch in dict.fromkeys([args.batch, 1]):
            tiny[batch] = run_worker(args, "ours", args.overhead_n, memory=False, size=args.overhead_size,
                                     batch=batch)
    gpu = args.device.startswith("cuda")
    mem_key = "gpu_peak_mib" if gpu else "peak_mib"
    ratio = b[mem_key] / max(a[mem_key], 1e-9)
    same = rel["values"] == a["values"] if (args.released_n or small) == small else None
    # the released way's memory beyond ours at the same size (both hold the same generated probabilities)
    base = a["peak_mib"] if rel["images"] == small else 0.0
    bytes_per_px = (rel["peak_mib"] - base) * 2**20 / rel["pixels"]
    dev = torch.cuda.get_device_name(0) if gpu else f"{platform.processor() or platform.machine()} CPU"
    print(f"DARS at scale — {args.dtype} teacher outputs, {len(PRIOR)} classes, {h}×{w}, alpha {args.alpha}, "
          f"{dev}, torch threads {torch.get_num_threads()}")
    print(f"labeler batch: up to {a['batch']} images a step ({'automatic' if args.batch is None else '--batch'})")
    print(f"{'':>4} {'images':>7} {'pixels':>10} {'peak MiB':>9} {'ours s':>8} {'px/s':>10} {'argmax s':>9} "
          f"{'ours/argmax':>11} {'KL':>8}")
    big = f"{args.factor}N"
    for name, r in (("N", a), (big, b)):
        print(f"{name:>4} {r['images']:>7} {r['pixels']:>10.3g} {r[mem_key]:>9.1f} {r['seconds']:>8.2f} "
              f"{r['pixels'] / r['seconds']:>10.3g} {r['floor']:>9.2f} {r['seconds'] / r['floor']:>11.2f} "
              f"{r['kl']:>8.1e}")
    per = 1e3 / b["images"]
    L.ThresholdSearch.cuda_replicas = args.cuda_replicas
    s = L.ThresholdSearch(len(PRIOR), getattr(torch, args.dtype), args.device)
    print(f"per image at {big}: pass 1 {b['pass1'] * per:.2f} ms, pass 2 {b['pass2'] * per:.2f} ms, one arg max "
          f"{b['floor'] * per:.2f} ms; histogram {s.replicas} × {len(PRIOR)} × {s._width} int64 = "
          f"{s._acc.numel() * 8 / 2**20:.1f} MiB")
    print(f"peak memory {big} / N: {ratio:.2f} (goal ≤ 1.1)   ours / argmax at {big}: {b['seconds'] / b['floor']:.2f} "
          f"(goal ≤ 3)")
    print(f"released way at {rel['images']} images: {rel['seconds']:.2f} s for pass 1 + sort (ours: pass 1 "
          f"{a['pass1']:.2f} s), peak {rel['peak_mib']:.1f} MiB, {bytes_per_px:.1f} bytes/pixel more than ours "
          f"→ Cityscapes "
          f"({CITYSCAPES_PIXELS:.2g} px): {bytes_per_px * CITYSCAPES_PIXELS / 1e9:.0f} GB; thresholds identical: "
          f"{same}")
    overhead = {}
    for batch, r in tiny.items():
        us = 1e6 / r["images"]
        overhead[str(r["batch"])] = {"us_per_image": r["seconds"] * us, "pass1_us": r["pass1"] * us,
                                     "pass2_us": r["pass2"] * us, "argmax_us": r["floor"] * us,
                                     "ours_over_argmax": r["seconds"] / r["floor"]}
        oh, ow = args.overhead_size
        print(f"fixed cost per image ({r['images']} images of {oh}×{ow}, batch {r['batch']}): ours "
              f"{r['seconds'] * us:.0f} µs (pass 1 {r['pass1'] * us:.0f}, pass 2 {r['pass2'] * us:.0f}), one arg max "
              f"{r['floor'] * us:.0f} µs, ours / argmax {r['seconds'] / r['floor']:.1f}")
    result = {"device": args.device, "device_name": dev, "dtype": args.dtype, "size": [h, w], "alpha": args.alpha,
              "threads": torch.get_num_threads(), "cuda_replicas": args.cuda_replicas, "factor": args.factor,
              "N": a, "10N": b, "released": rel, "memory_ratio": ratio,
              "ours_over_argmax_10N": b["seconds"] / b["floor"], "released_bytes_per_pixel": bytes_per_px,
              "thresholds_identical": same, "batch": args.batch, "batch_at_N": a["batch"],
              "overhead_size": list(args.overhead_size), "overhead": overhead,
              "torch": torch.__version__, "python": platform.python_version()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
