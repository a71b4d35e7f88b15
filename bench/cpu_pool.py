"""Runs per minute on a CPU: one process whose runs compute with every core as torch threads (``--executor
local``, ``threads`` = cores) against one long-lived worker per core whose runs compute with one thread each
(``--executor cpus``, the quick profile's ``threads`` = 1), on the same plan, in one session. It is the
cost (or gain) of fixing the quick profile's runs at one thread so that their weights do not depend on the
schedule: before, the pool gave a run that started alone every core.

The plan is ``--runs`` supervised CE runs of the quick profile's model on its toycity data, shortened to
``--iters`` steps and started from random weights (no pretraining, so that nothing is shared between the two
halves). Each executor writes to its own fresh results folder; the data are generated once before timing.
The figure of merit is the ratio of wall times (local / cpus): above 1 means the pool is faster.

    python bench/cpu_pool.py [--runs 6] [--iters 20]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def plan(n_runs: int, iters: int, threads: int):
    from blvnb.experiments import execute, runs

    cfgs = [runs.RunConfig.from_profile("quick", seed=100 + s, iters=iters, pretrained=None, threads=threads)
            for s in range(n_runs)]
    return execute.build_plan([(c, "bench") for c in cfgs], "quick")


def timed(executor: str, n_runs: int, iters: int, threads: int, **kw) -> float:
    from blvnb.experiments import execute

    os.environ["BLVNB_RESULTS"] = tempfile.mkdtemp(prefix=f"bench-{executor}-")
    t0 = time.perf_counter()
    execute.execute(plan(n_runs, iters, threads), executor=executor, echo=lambda s: None, **kw)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=6)
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    from blvnb.experiments import runs
    from blvnb.experiments.profiles import get_profile

    runs.dataset_root("cityscapes", None, runs.RunConfig.from_profile("quick", pretrained=None), False)  # data once
    cores = os.cpu_count() or 1
    local = timed("local", a.runs, a.iters, cores, device="cpu")
    pool = timed("cpus", a.runs, a.iters, get_profile("quick").threads, jobs=cores)
    print(f"{a.runs} runs of {a.iters} steps, model {get_profile('quick').model}, {cores} cores")
    print(f"local (1 process, {cores} threads): {local:.1f} s")
    print(f"cpus  ({cores} workers, {get_profile('quick').threads} thread(s) per run): {pool:.1f} s")
    print(f"ratio local / cpus: {local / pool:.2f}")


if __name__ == "__main__":
    main()
