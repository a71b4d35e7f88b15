"""Two builds of the book from the same commit give the same verdicts and values.

Copies the repository's book sources twice into a temporary folder and runs ``blvnb reproduce --no-build``
in each from nothing (its own results store and toycity cache): the first with ``--jobs 1`` (every run in
one process) and the caller's torch left at 2 threads, the second with ``--jobs 2`` (a pool of worker
processes, runs started in whatever order they become ready) and the caller at 1 thread. It then compares
the two ``book/generated/reproduction.json`` files record by record: each claim's verdict, our value and
its interval (for a claim decided on measured time, such as BLV Table 12's overhead, only the verdict: a
clock reading differs between any two builds). The figure of merit is the number of records that differ
(0 means the schedule does not reach the numbers); it also prints how many verdicts each build gave and the two builds' wall times.

    python bench/same_numbers.py [--profile smoke|quick] [--only NB ...] [--out bench/results/same_numbers.json]

The quick profile takes two whole quick builds (about an hour on 2 cores); ``--profile smoke`` (a few
minutes each) exercises every notebook and every run path with the same code.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPIED = ("_config.yml", "_toc.yml", "book", "notebooks", "blvnb")


def copy_sources(work: Path) -> None:
    """The book's sources as they are now (both builds' copies are made before either starts)."""
    for name in COPIED:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("generated", "__pycache__"))
        else:
            shutil.copy(src, work / name)


def build(work: Path, profile: str, jobs: int, caller_threads: int, only: list[str]) -> tuple[list[dict], float]:
    env = dict(os.environ, BLVNB_CACHE=str(work / "cache"), BLVNB_RESULTS=str(work / "results"),
               OMP_NUM_THREADS=str(caller_threads), MKL_NUM_THREADS=str(caller_threads), PYTHONPATH=str(work))
    cmd = [sys.executable, "-m", "blvnb", "reproduce", "--profile", profile, "--jobs", str(jobs), "--no-build"]
    if only:
        cmd += ["--only", *only]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"build in {work} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads((work / "book" / "generated" / "reproduction.json").read_text()), secs


def on_the_clock(rec: dict | None) -> bool:
    """A claim decided on measured time (BLV Table 12's overhead): a clock reading differs between any two
    builds, so only its verdict is compared."""
    return bool(rec) and "time" in str(rec.get("metric", "")).lower()


def compared(a: list[dict], b: list[dict]) -> list[dict]:
    """The records (by claim id) whose verdict, value or interval differ between the builds (for a claim on
    the clock, whose verdict differs)."""
    ra, rb = ({r["claim"]: r for r in recs} for recs in (a, b))
    diffs = []
    for cid in sorted(set(ra) | set(rb), key=str):
        x, y = ra.get(cid), rb.get(cid)
        if on_the_clock(x) and on_the_clock(y):
            x, y = ({"verdict": r["verdict"]} for r in (x, y))
        if x != y:
            fields = sorted(k for k in set(x or {}) | set(y or {}) if (x or {}).get(k) != (y or {}).get(k))
            diffs.append({"claim": cid, "fields": fields,
                          "first": {k: (x or {}).get(k) for k in fields}, "second": {k: (y or {}).get(k) for k in fields}})
    return diffs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--only", nargs="*", default=[])
    ap.add_argument("--out", type=Path, default=None, help="write the comparison as JSON here")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="same-numbers-"))
    git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", *COPIED], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip())
    for half in ("a", "b"):  # the sources as they are now, at commit `git`
        (tmp / half).mkdir()
        copy_sources(tmp / half)
    first, t1 = build(tmp / "a", a.profile, jobs=1, caller_threads=2, only=a.only)
    second, t2 = build(tmp / "b", a.profile, jobs=2, caller_threads=1, only=a.only)
    diffs = compared(first, second)
    verdicts = [dict(Counter(str(r.get("verdict")) for r in recs)) for recs in (first, second)]
    print(f"profile {a.profile}: {len(first)} records; build 1 (--jobs 1, caller 2 threads) {t1:.0f} s, "
          f"build 2 (--jobs 2, caller 1 thread) {t2:.0f} s")
    print(f"verdicts: build 1 {verdicts[0]}; build 2 {verdicts[1]}")
    clock = sorted(r["claim"] for r in first if on_the_clock(r))
    print(f"records that differ: {len(diffs)} (of claims on the clock, {', '.join(clock) or 'none'}, only the "
          "verdict is compared)")
    for d in diffs[:20]:
        print(f"  {d['claim']}: {d['first']} vs {d['second']}")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps({"profile": a.profile, "only": a.only, "commit": git,
                                     "uncommitted_changes": dirty, "machine": platform.node(),
                                     "cores": os.cpu_count(), "command": " ".join(sys.argv), "records": len(first),
                                     "seconds": [round(t1), round(t2)], "verdicts": verdicts, "on_the_clock": clock,
                                     "differ": diffs},
                                    indent=1) + "\n")
    shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
