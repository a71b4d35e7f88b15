"""What the quick profile can detect: CE and BLV over seeds, the seed-to-seed spread, and the smallest
paired difference that three seeds detect. Prints the numbers and writes JSON.

    python bench/quick_calibration.py                  # quick profile, seeds 0-4, CE and BLV (σ 6, clamp "paper")
    python bench/quick_calibration.py --seeds 0 1 2 3 4 5 6 7 --force
    python bench/quick_calibration.py --prototype      # the same measurement on the pre-issue-9 code path
                                                       # (bench/quick_calibration_prototype.py)
    python bench/quick_calibration.py --prototype --pretraining short   # with the 3x cheaper pretraining

Every run is a supervised run of the profile (``RunConfig.from_profile(profile, strategy="supervised",
loss=...)``), paired by seed: CE and BLV of one seed share the initialisation (the profile's toy
pretraining for the backbone, the seed for the decoder), the data order and the augmentations, so the
per-seed difference BLV − CE carries the effect with less noise than either arm.

The detection rule (the one the book's verdicts use): with n seeds, a paired two-sided t-interval at 95 %
excludes 0 when |mean difference| > t_{0.975, n-1} · sd_diff / √n, where sd_diff is the standard
deviation of the per-seed differences. With the sd measured here this gives the smallest mean difference
three seeds detect: t_{0.975, 2} · sd_diff / √3 = 4.303 · sd_diff / 1.732 ≈ 2.48 · sd_diff.

Time: each run is timed by its record (``train_seconds``, wall) and by the CPU seconds of this process
around ``runs.run`` (``time.process_time()``; with ``--threads 1`` this is also the wall time of the run on
an otherwise idle core, a number that a loaded machine does not distort). The first run also builds the
data and, when missing, the profile's toy pretraining; its CPU time is reported separately.

Output: ``bench/out/quick_calibration.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

KEYS = ("mIoU", "mIoU_head_blv", "mIoU_tail_blv")
BLV_OPTIONS = {"sigma": 6.0, "clamp": "paper"}


def t_quantile(n: int, level: float = 0.975) -> float:
    """t_{level, n-1}: from scipy when present, else a table for small n."""
    try:
        from scipy.stats import t

        return float(t.ppf(level, n - 1))
    except ImportError:  # pragma: no cover - scipy is a dependency of the book
        table = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306, 10: 2.262}
        return table.get(n, 1.96)


def sd(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def detectable(sd_diff: float, n: int = 3) -> float:
    """The smallest |mean paired difference| that n seeds detect (paired t-interval at 95 % excludes 0)."""
    return t_quantile(n) * sd_diff / math.sqrt(n)


def analyse(rows: list[dict]) -> dict:
    """rows: one dict per seed with ``ce`` and ``blv`` metrics (points, 0-100). Returns the summary."""
    out: dict = {"n_seeds": len(rows), "per_seed": rows}
    for arm in ("ce", "blv"):
        for k in KEYS:
            v = [r[arm][k] for r in rows]
            out[f"{arm}_{k}_mean"], out[f"{arm}_{k}_sd"] = statistics.fmean(v), sd(v)
        gap = [r[arm]["mIoU_head_blv"] - r[arm]["mIoU_tail_blv"] for r in rows]
        out[f"{arm}_head_minus_tail_mean"] = statistics.fmean(gap)
    for k in ("mIoU", "mIoU_tail_blv", "mIoU_head_blv"):
        d = [r["blv"][k] - r["ce"][k] for r in rows]
        out[f"diff_{k}_mean"], out[f"diff_{k}_sd"] = statistics.fmean(d), sd(d)
        out[f"diff_{k}_detectable_at_3"] = detectable(sd(d), 3)
        n = len(d)
        half = t_quantile(n) * sd(d) / math.sqrt(n)
        out[f"diff_{k}_ci95_{n}seeds"] = (statistics.fmean(d) - half, statistics.fmean(d) + half)
    return out


def report(summary: dict, timings: dict) -> None:
    p = print
    p(f"{'seed':>4} | {'CE mIoU':>7} {'head':>5} {'tail':>5} | {'BLV mIoU':>8} {'head':>5} {'tail':>5} | "
      f"{'d mIoU':>6} {'d tail':>6}")
    for r in summary["per_seed"]:
        c, b = r["ce"], r["blv"]
        p(f"{r['seed']:>4} | {c['mIoU']:7.2f} {c['mIoU_head_blv']:5.1f} {c['mIoU_tail_blv']:5.1f} | "
          f"{b['mIoU']:8.2f} {b['mIoU_head_blv']:5.1f} {b['mIoU_tail_blv']:5.1f} | "
          f"{b['mIoU'] - c['mIoU']:+6.2f} {b['mIoU_tail_blv'] - c['mIoU_tail_blv']:+6.2f}")
    s = summary
    p(f"CE:  mIoU {s['ce_mIoU_mean']:.2f} ± {s['ce_mIoU_sd']:.2f} (sd), head {s['ce_mIoU_head_blv_mean']:.2f}, "
      f"tail {s['ce_mIoU_tail_blv_mean']:.2f} ± {s['ce_mIoU_tail_blv_sd']:.2f}, head - tail {s['ce_head_minus_tail_mean']:.1f}")
    p(f"BLV: mIoU {s['blv_mIoU_mean']:.2f} ± {s['blv_mIoU_sd']:.2f}, tail {s['blv_mIoU_tail_blv_mean']:.2f} ± "
      f"{s['blv_mIoU_tail_blv_sd']:.2f}")
    for k, label in (("mIoU", "mIoU"), ("mIoU_tail_blv", "tail mIoU")):
        p(f"BLV - CE {label}: mean {s[f'diff_{k}_mean']:+.2f}, sd {s[f'diff_{k}_sd']:.2f}; "
          f"3 seeds detect |mean| > {s[f'diff_{k}_detectable_at_3']:.2f} (t_0.975,2 * sd / sqrt 3)")
    p(f"time per run: CPU {timings['cpu_per_run_median']:.1f} s (median, one thread), record's train_seconds "
      f"{timings['train_seconds_median']:.1f} s; first run (data + pretraining if missing) CPU {timings['first_cpu']:.1f} s")


def measure_api(args) -> tuple[list[dict], dict]:
    """The measurement through the library's run API (RunConfig.from_profile + runs.run)."""
    from blvnb.experiments import runs

    rows, cpu, train_s = [], [], []
    first_cpu = None
    for seed in args.seeds:
        row = {"seed": seed}
        for loss in ("ce", "blv"):
            cfg = runs.RunConfig.from_profile(args.profile, strategy="supervised", loss=loss,
                                              loss_options=BLV_OPTIONS if loss == "blv" else None, seed=seed)
            t = time.process_time()
            rec = runs.run(cfg, force=args.force)
            dt = time.process_time() - t
            if first_cpu is None:
                first_cpu = dt
            else:
                cpu.append(dt)
            train_s.append(float(rec["train_seconds"]))
            row[loss] = {k: 100.0 * float(rec["metrics"][k]) for k in KEYS}
            row[loss]["iou"] = [round(100.0 * float(v), 2) for v in rec["metrics"]["iou"]]
            row[loss]["train_seconds"] = float(rec["train_seconds"])
            row[loss]["cpu_seconds"] = dt
        rows.append(row)
        print(f"seed {seed}: CE {row['ce']['mIoU']:.2f} / tail {row['ce']['mIoU_tail_blv']:.2f}, "
              f"BLV {row['blv']['mIoU']:.2f} / tail {row['blv']['mIoU_tail_blv']:.2f}", flush=True)
    timings = {"first_cpu": first_cpu or float("nan"),
               "cpu_per_run_median": statistics.median(cpu) if cpu else float("nan"),
               "train_seconds_median": statistics.median(train_s)}
    return rows, timings


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--force", action="store_true", help="re-run runs whose record exists")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time = idle-core wall time)")
    ap.add_argument("--prototype", action="store_true",
                    help="measure on the pre-issue-9 code path (bench/quick_calibration_prototype.py)")
    ap.add_argument("--pretraining", default="long", choices=("long", "short"),
                    help="with --prototype: the toy pretraining (long: 900 steps, recommended; short: 300)")
    ap.add_argument("--iters", type=int, default=None,
                    help="with --prototype: steps per run (default 100, the book's main table; 70 is the cheaper variant)")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "quick_calibration.json"))
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("need at least 2 seeds for a standard deviation")

    import torch

    torch.set_num_threads(args.threads)
    if args.prototype:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import quick_calibration_prototype as proto

        if args.iters:
            proto.PROFILE["iters"] = args.iters
        rows, timings = proto.measure(args.seeds, pretraining=args.pretraining)
    else:
        rows, timings = measure_api(args)
    summary = analyse(rows)
    report(summary, timings)
    out = {"bench": "quick_calibration", "profile": args.profile, "prototype": args.prototype,
           "pretraining": args.pretraining if args.prototype else None,
           "seeds": args.seeds, "threads": args.threads, "blv_options": BLV_OPTIONS, "timings": timings,
           "summary": summary, "machine": platform.machine(), "processor": platform.processor(),
           "torch": torch.__version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
