"""What the quick book's runs cost on this machine, in its own units: CPU-seconds by phase, and the same as a
multiple of a fixed matrix product timed in the same process, so that two machines can be compared.

1. **Reference.** A float32 GEMM of ``--gemm`` × ``--gemm`` matrices on the quick profile's thread count
   (best of several), giving this CPU's sustained rate in GFLOP/s and the seconds of one reference GEMM.
2. **One run of each kind.** From the quick plan (``blvnb runs plan --profile quick``): the toy pretraining,
   a supervised run, a mean-teacher run, a UDA run, and one DARS chain (rounds 0, 1, 2), each trained
   exactly as the book trains it, into a temporary results store. While they run, every phase is timed in
   CPU-seconds (``time.process_time``, all threads of this process): start-up (a fresh Python importing
   torch and the library, timed apart), data (the streams' batches), forward + loss (the strategy's step),
   backward, optimiser, teacher update (EMA), evaluation, the DARS labelling pass, and the rest (building
   data sets and models, checkpoints).
3. **The plan.** Each of the plan's runs is costed by the measured run of its kind (strategy and round);
   summed by phase, in CPU-seconds and in reference GEMMs.
4. **How close a step is to the machine.** Per strategy, the FLOPs of one training step (forward and
   backward, ``torch.utils.flop_counter``) over its measured CPU time, as a share of the GEMM rate.

    python bench/quick_cost.py [--gemm 1024] [--out bench/results/quick_cost.json]

It costs about as much as the seven runs it trains (a few CPU-minutes, the pretraining most of it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PHASES = ("data", "forward + loss", "backward", "optimiser", "teacher update", "evaluation", "labelling", "rest")


def gemm_reference(n: int, threads: int, repeats: int = 7) -> tuple[float, float]:
    """(seconds of one n×n float32 GEMM, GFLOP/s) on ``threads`` threads: the best of ``repeats``."""
    from blvnb.devices import fixed_threads

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    with fixed_threads(threads):
        torch.mm(a, b)  # warm up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - t0)
    return best, 2 * n ** 3 / best / 1e9


class Phases:
    """CPU-seconds per phase; only the outermost timed call counts (a step's data fetch is not forward)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.active: str | None = None

    def wrap(self, owner, name: str, phase: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kw):
            if self.active is not None:
                return original(*args, **kw)
            self.active, t0 = phase, time.process_time()
            try:
                return original(*args, **kw)
            finally:
                self.seconds[phase] += time.process_time() - t0
                self.active = None

        setattr(owner, name, timed)

    def snapshot(self) -> dict[str, float]:
        return dict(self.seconds)


def instrument() -> Phases:
    from blvnb.engine.strategies import dars_rounds
    from blvnb.engine.strategies.base import Strategy
    from blvnb.engine.streams import Stream
    from blvnb.experiments import runs

    p = Phases()
    p.wrap(Stream, "next", "data")
    p.wrap(torch.Tensor, "backward", "backward")
    p.wrap(torch.amp.GradScaler, "step", "optimiser")
    p.wrap(runs, "evaluate", "evaluation")
    p.wrap(dars_rounds, "label_round", "labelling")

    def subclasses(c):
        for s in c.__subclasses__():
            yield s
            yield from subclasses(s)

    for cls in {Strategy, *subclasses(Strategy)}:
        if "step" in vars(cls):
            p.wrap(cls, "step", "forward + loss")
        if "after_step" in vars(cls):
            p.wrap(cls, "after_step", "teacher update")
    return p


def kind(cfg) -> str:
    if cfg.strategy == "supervised" and not cfg.evaluate:
        return "pretraining"
    if cfg.strategy == "dars-rounds":
        return f"dars-rounds round {dict(cfg.strategy_options).get('round', 0)}"
    return cfg.strategy


def representatives(plan, profile: str):
    """The plan's first run of each kind, a DARS chain (round 2 and its teachers) standing for the rounds."""
    from blvnb.experiments import execute as ex

    first: dict[str, object] = {}
    for r in plan.order():
        first.setdefault(kind(r.cfg), r)
    chosen = [first[k] for k in ("supervised", "mean-teacher", "uda", "dars-rounds round 2") if k in first]
    return ex.build_plan([(r.cfg, "bench") for r in chosen], profile)


def startup_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, blvnb.experiments.runs"], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    return time.perf_counter() - t0


def step_flops(cfg) -> tuple[float, float, int]:
    """(FLOPs of one training step, its CPU-seconds, images in it) of ``cfg``'s strategy on the quick data."""
    from torch.utils.flop_counter import FlopCounterMode

    from train_step import StepBench

    from blvnb.devices import fixed_threads

    with fixed_threads(cfg.threads):
        bench = StepBench(cfg.with_(pretrained=None), torch.device("cpu"), amp=False, channels_last=False)
        bench.step()
        with FlopCounterMode(display=False) as fc:
            bench.step()
        t0 = time.process_time()
        for _ in range(3):
            bench.step()
        cpu = (time.process_time() - t0) / 3
    return float(fc.get_total_flops()), cpu, bench.images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gemm", type=int, default=1024, help="size of the reference GEMM")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--profile", default="quick", help="another profile's plan (smoke: a check of the bench)")
    a = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    os.environ["BLVNB_RESULTS"] = tempfile.mkdtemp(prefix="bench-cost-")
    from blvnb.experiments import execute as ex
    from blvnb.experiments.profiles import get_profile

    threads = get_profile(a.profile).threads
    gemm_s, gflops = gemm_reference(a.gemm, threads)
    print(f"reference: {a.gemm}x{a.gemm} float32 GEMM on {threads} thread(s): {gemm_s * 1e3:.1f} ms, "
          f"{gflops:.1f} GFLOP/s")
    plan = ex.plan_for(a.profile, None, None, None)
    reps = representatives(plan, a.profile)
    phases = instrument()
    measured: dict[str, dict[str, float]] = {}

    def timed_run(cfg, force=False):
        from blvnb.experiments import runs

        before, t0 = phases.snapshot(), time.process_time()
        rec = runs.run(cfg, force=force)
        total = time.process_time() - t0
        after = phases.snapshot()
        per = {ph: after.get(ph, 0.0) - before.get(ph, 0.0) for ph in PHASES[:-1]}
        per["rest"] = max(0.0, total - sum(per.values()))
        measured[kind(cfg)] = per
        print(f"  {kind(cfg):22s} {total:6.1f} CPU-s  " + ", ".join(f"{k} {v:.1f}" for k, v in per.items() if v >= 0.05))
        return rec

    print(f"training {len(reps)} runs of the quick plan, one of each kind:")
    ex.execute(reps, timed_run, "local", device="cpu", echo=lambda s: None)
    start = startup_seconds()
    counts = Counter(kind(r.cfg) for r in plan.runs.values())
    missing = sorted(set(counts) - set(measured))
    plan_phase = defaultdict(float)
    for k, n in counts.items():
        if k in measured:
            for ph, v in measured[k].items():
                plan_phase[ph] += n * v
    total = sum(plan_phase.values())
    print(f"\nthe {a.profile} plan: {len(plan)} runs ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})")
    for ph in PHASES:
        print(f"  {ph:16s} {plan_phase[ph]:8.0f} CPU-s  {plan_phase[ph] / max(total, 1e-9):6.1%}  "
              f"{plan_phase[ph] / gemm_s:10.0f} reference GEMMs")
    print(f"  {'total':16s} {total:8.0f} CPU-s  = {total / gemm_s:.0f} reference GEMMs "
          f"({total / 60:.1f} CPU-minutes; over 2 cores at best {total / 120:.1f} min)")
    print(f"  start-up of a fresh Python with torch and blvnb: {start:.1f} s (once per pool worker and per chapter)")
    if missing:
        print(f"  not costed (no run of that kind measured): {missing}")

    flops = {}
    for k in ("supervised", "mean-teacher", "uda"):
        r = next((r for r in plan.order() if kind(r.cfg) == k), None)
        if r is None:
            continue
        f, cpu, images = step_flops(r.cfg)
        flops[k] = {"gflop_per_step": f / 1e9, "cpu_seconds_per_step": cpu, "images": images,
                    "achieved_gflops": f / cpu / 1e9, "share_of_gemm": f / cpu / 1e9 / gflops}
        print(f"  {k:14s} step: {f / 1e9:6.2f} GFLOP in {cpu:.3f} CPU-s = {f / cpu / 1e9:5.1f} GFLOP/s, "
              f"{flops[k]['share_of_gemm']:.0%} of the GEMM rate")
    if a.out:
        git = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({
            "command": " ".join(["python", *sys.argv]), "commit": git, "machine": platform.node(),
            "profile": a.profile, "cores": os.cpu_count(), "torch": torch.__version__, "threads": threads,
            "gemm": {"n": a.gemm, "seconds": gemm_s, "gflops": gflops}, "startup_seconds": start,
            "per_run": measured, "plan_counts": dict(counts),
            "plan_cpu_seconds": dict(plan_phase), "plan_total_cpu_seconds": total,
            "plan_total_in_gemms": total / gemm_s, "step_flops": flops}, indent=1) + "\n")


if __name__ == "__main__":
    main()
