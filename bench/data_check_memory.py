"""Peak memory of `blvnb data check` at N and 10 N images: it streams, so the ratio should stay ≤ 1.1.

Each size is checked in a fresh subprocess (toycity GTA5-layout trees, written once to bench/out/).
Two figures per size: the process's peak resident memory (ru_maxrss, what the issue asks for; it
includes the interpreter and the imported libraries) and the peak of Python/numpy allocations made by
the check itself (tracemalloc, the part that would grow if the check kept per-image data).

    python bench/data_check_memory.py [--n 200] [--size 32x64]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, tracemalloc
from blvnb.data.check import check_tree
tracemalloc.start()
report = check_tree(sys.argv[1], "gta5", progress=False)
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"ok": report.ok, "images": sum(report.images.values()), "traced_peak_mb": peak / 2**20,
                  "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--size", default="32x64")
    a = ap.parse_args()
    from blvnb.data import toycity

    out = Path(__file__).resolve().parent / "out"
    size = toycity.parse_size(a.size)
    rows = {}
    for n in (a.n, 10 * a.n):
        root = toycity.ensure("gta", n_train=n, n_val=0, size=size, seed=7, cache_dir=out / "cache", progress=False)
        res = subprocess.run([sys.executable, "-c", CHILD, str(root)], capture_output=True, text=True, check=True)
        rows[n] = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"N={n:6d}: {rows[n]}")
    small, big = rows[a.n], rows[10 * a.n]
    result = {"n": a.n, "size": list(size), "rows": rows,
              "maxrss_ratio": big["maxrss_mb"] / small["maxrss_mb"],
              "traced_ratio": big["traced_peak_mb"] / small["traced_peak_mb"]}
    print(f"peak RSS 10N/N = {result['maxrss_ratio']:.3f} (goal <= 1.1); "
          f"peak traced allocations 10N/N = {result['traced_ratio']:.3f}")
    out.mkdir(exist_ok=True)
    (out / "data_check_memory.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
