"""The rehearsal of a whole plan on this CPU: per-run seconds and peak memory, and the total.

Runs :func:`blvnb.experiments.rehearse.rehearse` (``blvnb runs rehearse``) over the paper plan (or the
gpu plan, or ``--only`` some tables, or its first ``--limit`` runs and their teachers) at the real data
sets' sizes, and prints one line per run (the resolved recipe, seconds, peak RSS, ok / the error), the
seconds by strategy × model and the total, then writes them as JSON. The whole paper plan is hours of CPU
(124 runs at seed 0, each 2 iterations at 512×1024 and a 1024×2048 evaluation, a DARS round also its
labelling); on a shared machine run a small ``--limit``.

    python bench/rehearse_plan.py --limit 3                    # the first 3 runs of the paper plan
    python bench/rehearse_plan.py --profile gpu                # the whole gpu plan (toycity 256×512)
    python bench/rehearse_plan.py --only dars-t2 --work /tmp/r # one table, its data kept in /tmp/r

Output: ``bench/out/rehearse_plan_<profile>.json`` (``--out`` to change). Exit 1 when a run failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path

from blvnb.experiments import rehearse


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="paper", choices=rehearse.PROFILES)
    ap.add_argument("--only", nargs="+", default=None, metavar="TABLE")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--work", default=None, help="data and run store (default: a temporary folder)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = rehearse.rehearse(a.profile, a.only, a.limit, a.work, echo=lambda s: print(s, flush=True))
    wall = time.perf_counter() - t0
    by = defaultdict(list)
    for r in results:
        by[(r.cfg.strategy, r.cfg.model)].append(r.seconds)
    print(f"\n{'strategy':14s} {'model':24s} {'runs':>4s} {'s/run':>7s}")
    for (s, m), secs in sorted(by.items()):
        print(f"{s:14s} {m:24s} {len(secs):4d} {sum(secs) / len(secs):7.0f}")
    print(rehearse.summary(results))
    print(f"wall {wall:.0f} s (data writing and start-up included) on {platform.node()}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    out = Path(a.out or Path(__file__).parent / "out" / f"rehearse_plan_{a.profile}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"profile": a.profile, "only": a.only, "limit": a.limit, "wall_seconds": round(wall, 1),
                               "cores": os.cpu_count(), "runs": [r.row() for r in results]}, indent=1, default=str))
    print(f"wrote {out}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
