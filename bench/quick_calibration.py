"""What the quick profile can detect: CE and BLV over seeds, the seed-to-seed spread, and the smallest
paired difference that three seeds detect. Prints the numbers and writes JSON.

    python bench/quick_calibration.py                       # quick profile, seeds 0-2, CE and BLV
    python bench/quick_calibration.py --seeds 0 1 2 3 4 5 --force
    python bench/quick_calibration.py --out bench/results/quick_calibration.json   # the file the book shows

The runs are the book's own: BLV Table 1's two arms of the profile's model (``tables.entries("blv-t1",
profile, seeds)``: CE, and BLV with σ = 6), each a :class:`~blvnb.experiments.runs.RunConfig` of the
profile, executed by :func:`blvnb.experiments.runs.run` with the profile's recipe (learning rate, steps,
pretraining, threads). A run already in the results store (``$BLVNB_RESULTS``) is read back unless
``--force``. CE and BLV of one seed share the initialisation (the profile's toy pretraining), the data
order and the augmentations, so the per-seed difference BLV − CE carries the effect with less noise than
either arm.

The detection rule (the one the book's verdicts use): with n seeds, a paired two-sided t-interval at 95 %
excludes 0 when |mean difference| > t_{0.975, n-1} · sd_diff / √n, where sd_diff is the standard
deviation of the per-seed differences. With the sd measured here this gives the smallest mean difference
three seeds detect: t_{0.975, 2} · sd_diff / √3 = 4.303 · sd_diff / 1.732 ≈ 2.48 · sd_diff.

Time: each run is timed by its record (``train_seconds``, wall) and by the CPU seconds of this process
around ``runs.run`` (``time.process_time()``; a run computes with the profile's threads, one in quick, so
its CPU time is also its wall time on an otherwise idle core, a number that a loaded machine does not
distort). The toy pretraining runs first, on its own, and is timed apart (it computes with its own
threads, two in quick); the data are drawn on the way and counted with it. A run stopped part-way (a
timeout) resumes from its last checkpoint when the bench is started again; its record's ``train_seconds``
then sums the attempts, and the JSON says from which iteration the pretraining resumed.

From scratch (``--from-scratch``, on by default): the same two arms once more from random initialisation,
trained as long as the toy pretraining (its steps, batch and learning rate) on the quick train set, seed-
paired the same way. The book shows their paired difference beside the fine-tuning one, so a reader can see
whether BLV's result at toy scale depends on starting from a fitted classifier. These runs are measured here
once; the book never trains them.

The JSON records the command, the commit of the code that ran (and whether the tree had uncommitted
changes), the machine and every run's store key. ``book/quick_profile.md`` shows its numbers from the
committed copy (``bench/results/quick_calibration.json``, rendered by :mod:`blvnb.pages`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("mIoU", "mIoU_head_blv", "mIoU_tail_blv")
ROOT = Path(__file__).resolve().parent.parent
TABLE = "blv-t1"  # its two arms on the profile's model: "baseline" (CE) and "blv" (σ = 6)
ARMS = {"baseline": "ce", "blv": "blv"}


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
        out[f"{arm}_head_minus_tail_mean"], out[f"{arm}_head_minus_tail_min"] = statistics.fmean(gap), min(gap)
        ious = [r[arm]["iou"] for r in rows]
        out[f"{arm}_iou_mean"] = [statistics.fmean(c) for c in zip(*ious)]
    for k in KEYS:
        d = [r["blv"][k] - r["ce"][k] for r in rows]
        out[f"diff_{k}_mean"], out[f"diff_{k}_sd"] = statistics.fmean(d), sd(d)
        out[f"diff_{k}_detectable_at_3"] = detectable(sd(d), 3)
        out[f"diff_{k}_negative_seeds"] = sum(x < 0 for x in d)
        n = len(d)
        half = t_quantile(n) * sd(d) / math.sqrt(n)
        out[f"diff_{k}_ci95"] = (statistics.fmean(d) - half, statistics.fmean(d) + half)
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
    p(f"time per run: CPU {timings['cpu_per_run_median']:.1f} s (median), record's train_seconds "
      f"{timings['train_seconds_median']:.1f} s; pretraining and data CPU {timings['pretraining_cpu']:.1f} s, "
      f"wall {timings['pretraining_wall']:.1f} s")


def measure(args) -> tuple[list[dict], dict, dict]:
    """The runs of :data:`TABLE`'s two arms at ``args.seeds`` through ``runs.run``; rows, timings, keys."""
    from blvnb.engine.recipes import recipe_for
    from blvnb.experiments import runs, tables

    entries = [e for e in tables.entries(TABLE, args.profile, args.seeds) if e.arm in ARMS]
    if len(entries) != len(ARMS) * len(args.seeds):
        sys.exit(f"{TABLE} in profile {args.profile!r} does not have one {' and one '.join(ARMS)} run per seed")
    configs = {}
    cpu_t, wall_t = time.process_time(), time.perf_counter()
    pre = runs.pretraining_config(entries[0].cfg) if entries[0].cfg.pretrained == "toy" else None
    timings: dict = {}
    if pre is not None:
        rec = runs.run(pre, force=args.force)
        configs["pretraining"] = {"key": pre.key(), "config": pre.key_dict()}
        # the record's training wall time sums every attempt of a resumed run; this process saw only its own part
        timings.update(pretraining_train_seconds=float(rec["train_seconds"]),
                       pretraining_resumed_from=rec.get("resumed_from"))
    timings.update(pretraining_cpu=time.process_time() - cpu_t, pretraining_wall=time.perf_counter() - wall_t)
    rows: dict[int, dict] = {}
    cpu, train_s = [], []
    for e in entries:
        loss = ARMS[e.arm]
        t = time.process_time()
        rec = runs.run(e.cfg, force=args.force)
        dt = time.process_time() - t
        cpu.append(dt)
        train_s.append(float(rec["train_seconds"]))
        m = rec["metrics"]
        row = rows.setdefault(e.seed, {"seed": e.seed})
        row[loss] = {k: 100.0 * float(m[k]) for k in KEYS}
        row[loss]["iou"] = [round(100.0 * float(v), 2) for v in m["iou"]]
        row[loss].update(train_seconds=float(rec["train_seconds"]), cpu_seconds=dt, key=e.key)
        if loss not in configs:  # lr / weight_decay None: the model's recipe, written out beside the config
            recipe = recipe_for(e.cfg.model)
            configs[loss] = {"config": {k: v for k, v in e.cfg.key_dict().items() if k != "seed"},
                             "recipe": {"optimizer": recipe.optimizer, "lr": recipe.lr,
                                        "weight_decay": recipe.weight_decay, "schedule": recipe.schedule}}
        print(f"seed {e.seed} {loss}: mIoU {row[loss]['mIoU']:.2f}, tail {row[loss]['mIoU_tail_blv']:.2f} "
              f"({dt:.0f} CPU s)", flush=True)
    timings.update(cpu_per_run_median=statistics.median(cpu), cpu_per_run_range=(min(cpu), max(cpu)),
                   train_seconds_median=statistics.median(train_s))
    return [rows[s] for s in args.seeds], timings, configs


def scratch_config(cfg):
    """``cfg`` trained from random initialisation for as long as the profile's toy pretraining: its steps,
    its batch and its learning rate, on ``cfg``'s own (the quick) train set."""
    from blvnb.experiments.profiles import get_profile

    pre = dict(get_profile(cfg.profile).pretraining)
    return cfg.with_(pretrained=None, iters=int(pre["iters"]), batch_size=int(pre["batch_size"]), lr=pre.get("lr"))


def measure_scratch(args) -> tuple[list[dict], dict]:
    """The two arms from scratch (:func:`scratch_config`) at ``args.seeds``: rows (as :func:`measure`) and the
    settings they trained with."""
    from blvnb.experiments import runs, tables

    rows: dict[int, dict] = {}
    settings = {}
    for e in (e for e in tables.entries(TABLE, args.profile, args.seeds) if e.arm in ARMS):
        cfg = scratch_config(e.cfg)
        loss = ARMS[e.arm]
        t = time.process_time()
        rec = runs.run(cfg, force=args.force)
        dt = time.process_time() - t
        m = rec["metrics"]
        row = rows.setdefault(e.seed, {"seed": e.seed})
        row[loss] = {k: 100.0 * float(m[k]) for k in KEYS}
        row[loss]["iou"] = [round(100.0 * float(v), 2) for v in m["iou"]]
        row[loss].update(train_seconds=float(rec["train_seconds"]), cpu_seconds=dt, key=cfg.key())
        settings = {"pretrained": None, "iters": cfg.iters, "batch_size": cfg.batch_size, "lr": cfg.lr}
        print(f"from scratch, seed {e.seed} {loss}: mIoU {row[loss]['mIoU']:.2f}, tail "
              f"{row[loss]['mIoU_tail_blv']:.2f} ({dt:.0f} CPU s)", flush=True)
    return [rows[s] for s in args.seeds], settings


def provenance(argv: list[str]) -> dict:
    """The command, the commit of the code that ran, and the machine."""
    import torch

    def git(*a) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {"command": "python bench/quick_calibration.py " + " ".join(shlex.quote(a) for a in argv),
            "commit": git("rev-parse", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                        "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}}


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--force", action="store_true", help="re-run runs whose record exists")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "quick_calibration.json"))
    ap.add_argument("--no-from-scratch", dest="from_scratch", action="store_false",
                    help="skip the two arms trained from random initialisation (about 12 CPU-minutes)")
    args = ap.parse_args(argv)
    if len(args.seeds) < 2:
        ap.error("need at least 2 seeds for a standard deviation")
    if len(set(args.seeds)) != len(args.seeds):
        ap.error(f"--seeds repeats a seed: {args.seeds}")
    start = provenance(argv)  # the commit as the runs start (a commit made meanwhile does not count)
    rows, timings, configs = measure(args)
    summary = analyse(rows)
    report(summary, timings)
    scratch = None
    if args.from_scratch:
        s_rows, s_settings = measure_scratch(args)
        s_sum = analyse(s_rows)
        scratch = {"settings": s_settings, "summary": s_sum}
        for k, label in (("mIoU", "mIoU"), ("mIoU_tail_blv", "tail mIoU")):
            lo, hi = s_sum[f"diff_{k}_ci95"]
            print(f"from scratch, BLV - CE {label}: mean {s_sum[f'diff_{k}_mean']:+.2f}, 95 % interval "
                  f"[{lo:+.2f}, {hi:+.2f}]; CE {s_sum[f'ce_{k}_mean']:.2f}, BLV {s_sum[f'blv_{k}_mean']:.2f}")
    from blvnb.classes import BLV_TAIL, CLASSES

    out = {"bench": "quick_calibration", **start, "profile": args.profile, "table": TABLE, "seeds": args.seeds,
           "classes": list(CLASSES), "tail_classes": [CLASSES[i] for i in BLV_TAIL], "configs": configs,
           "timings": timings, "summary": summary, "from_scratch": scratch}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
