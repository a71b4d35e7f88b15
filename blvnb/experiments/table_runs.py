"""A table's runs executed (or read back) and its records by row, arm and seed: what the chapters read.

Above both the tables (:mod:`blvnb.experiments.tables`, what a table needs, as data) and the executors
(:mod:`blvnb.experiments.execute`, how runs are run), so that neither imports the other's upper half::

    from blvnb.experiments import table_runs
    res = table_runs.run("blv-t1", "quick")
    res.grouped["ResNet50 PSPHead"]["blv"][0]["metrics"]["mIoU_tail_blv"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from blvnb.experiments import execute
from blvnb.experiments.tables import entries, get_table


@dataclass
class TableRuns:
    """The records of a table: ``records`` (one dict per row/arm/seed: ``row``, ``arm``, ``seed``,
    ``key``, ``record``) and ``grouped[row][arm][seed] → record``."""

    table: str
    profile: str
    note: str
    records: list[dict]

    @property
    def grouped(self) -> dict:
        out: dict = {}
        for r in self.records:
            out.setdefault(r["row"], {}).setdefault(r["arm"], {})[r["seed"]] = r["record"]
        return out

    def frame(self):
        """A pandas DataFrame: one line per row/arm/seed with mIoU, head and tail mIoU and the key."""
        import pandas as pd

        rows = []
        for r in self.records:
            m = r["record"].get("metrics", {})
            rows.append({"row": r["row"], "arm": r["arm"], "seed": r["seed"], "key": r["key"],
                         **{k: m.get(k) for k in ("mIoU", "mIoU_head_blv", "mIoU_tail_blv", "mIoU_tail_dars")},
                         "train_seconds": r["record"].get("train_seconds")})
        return pd.DataFrame(rows)


def run(table: str, profile: str = "quick", seeds: Iterable[int] | None = None, *, data_root: str | None = None,
        device: str | None = None, force: bool = False, run_fn: Callable | None = None,
        progress: bool = True) -> TableRuns:
    """Execute (or read back) every run of ``table`` and return the records grouped by row, arm, seed.

    A record committed under ``records/`` (:mod:`blvnb.experiments.records`) or already in the results
    store is read, not recomputed (unless ``force``). Dependencies run first (a DARS round's teacher).
    ``run_fn`` replaces :func:`blvnb.experiments.runs.run` (tests).
    """
    es = entries(table, profile, seeds, data_root)
    plan = execute.build_plan([(e.cfg, table) for e in es])
    done = execute.execute(plan, run_fn=run_fn, executor="local", force=force, device=device, progress=progress)
    records = [{"row": e.row, "arm": e.arm, "seed": e.seed, "key": e.key, "record": done[e.key]} for e in es]
    return TableRuns(table, profile, get_table(table).note, records)


__all__ = ["TableRuns", "run"]
