"""The distinct runs the book needs, what they cost, and where they run.

:func:`plan_for` gathers the runs of the chosen tables (:mod:`blvnb.experiments.tables`), one per
``cfg.key()`` — a run that several tables show is listed once, with all of them — adds each run's
dependencies (a DARS round's teacher is the previous round; a pretraining run) and orders them so that a
teacher comes before its students. :func:`execute` runs what is missing:

* ``local``: one after the other in this process (a CPU, or one GPU);
* ``gpus``: one process per GPU of the server (a pool over ``CUDA_VISIBLE_DEVICES``; with
  ``gpus_per_run`` > 1 each run is a ``torchrun`` over that many GPUs);
* ``cpus``: the same pool on a machine without a GPU: ``jobs`` processes, as many runs at once as their
  thread counts fit in the cores. A run's thread count is part of the run (``cfg.threads``, the
  profile's: one in smoke and quick), never the pool's choice, since it changes a CPU's arithmetic; two
  one-thread processes also train small models faster than one two-thread process, and they overlap
  each other's single-threaded data loading and evaluation;
* ``slurm``: one job per run through `submitit <https://github.com/facebookincubator/submitit>`_
  (partition, GPUs per run, time limit as options). A run is submitted once its teacher's job has
  finished (or, with ``dependency="afterok"``, at once with Slurm ``afterok`` dependencies).
  ``cluster="local"`` uses submitit's local executor: the same submission, waiting and collection on
  this machine (the tests do this). A job warned of its time limit or preempted writes its checkpoint and
  is requeued, and resumes (:class:`SlurmJob`).

Records are read before anything is computed: a record committed under ``records/``
(:mod:`blvnb.experiments.records`) or present in the results store is never recomputed unless forced.
Whatever runs, its record ends in the results store, ``results/<profile>/runs/<key>.json``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import blvnb
from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments import records as records_mod
from blvnb.experiments.profiles import get_profile
from blvnb.io import write_json_atomic

log = logging.getLogger(__name__)

EXECUTORS = ("local", "gpus", "cpus", "slurm")


# --- dependencies ---------------------------------------------------------------------------------------

def _opts(cfg) -> dict:
    so = getattr(cfg, "strategy_options", None) or {}
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(so).items()}


#: dars-rounds options that change round 0 (the strategy's ROUND0_KEYS): the teacher of every round 1
ROUND0_KEYS = ("round", "schedule", "alphas", "scale_range", "betas", "head_lr_mult")


def dependencies(cfg) -> list:
    """The runs ``cfg`` starts from: the teacher of a DARS round (the strategy's ``round_config(cfg,
    k - 1)``: the same options with round k − 1; round 0 keeps only what changes it) and the profile's
    toy pretraining run (``runs.pretraining_config``) when ``cfg.pretrained == "toy"``. ``blvnb.experiments.runs.dependencies(cfg)``, where it exists, is the authority (runs.py is
    loaded wherever a real RunConfig exists; a job that only checks a placeholder need not import torch)."""
    runs = sys.modules.get("blvnb.experiments.runs")
    hook = getattr(runs, "dependencies", None)
    if hook is not None:
        return list(hook(cfg))
    deps = []
    so = _opts(cfg)
    k = int(so.get("round", 0) or 0)
    round_config = None
    if cfg.strategy == "dars-rounds" and k >= 1:
        try:  # the strategy's own rule: exactly the teacher its run will ask data.dependency for
            from blvnb.engine.strategies.dars_rounds import round_config
        except ImportError:
            pass
    if round_config is not None:
        deps.append(round_config(cfg, k - 1))
    elif cfg.strategy == "dars-rounds" and k >= 1:  # the same rule, while the strategy is not installed
        teacher = {**so, "round": k - 1}
        if k == 1:
            teacher = {n: v for n, v in teacher.items() if n in ROUND0_KEYS}
        deps.append(cfg.with_(strategy_options=teacher))
    if getattr(cfg, "pretrained", None) == "toy":
        pre = getattr(runs, "pretraining_config", None)  # the profile's toy "ImageNet" run
        if pre is not None:
            deps.append(pre(cfg))
    return deps


# --- the cost model --------------------------------------------------------------------------------------

#: CPU images/s of a full training step (forward with aux outputs, loss, backward, SGD step) of the small
#: variants at batch 8 × 128×256, fp32, on this project's 2-core machine shared with other work. Source:
#: ``python bench/model_throughput.py``, table "CPU, the quick profile" in book/models.md (swint-knet:
#: 0.71 × r10t-fpn after the K-Net change, the note under that table).
CPU_IMAGES_PER_S = {
    "hr18-ocr": 25.0, "mitb0-segformer": 111.6, "mitb5-daformer": 30.8, "mitb5-hrda": 47.4,
    "r101-deeplabv2": 17.2, "r101-deeplabv3p": 14.4, "r101-uper": 19.7, "r10t-fpn": 41.6, "r18-fpn": 28.1,
    "r50-psp": 17.8, "r50-uper": 29.1, "swint-knet": 0.71 * 41.6, "vitb16-uper": 24.3,
}
CPU_REF_PIXELS = 128 * 256
#: GPU images/s (paper variants, batch 4 × 512×1024, one H100): bf16 and fp32 columns of the GPU table in
#: book/models.md (``python bench/model_throughput.py --device cuda``).
GPU_IMAGES_PER_S_BF16 = {
    "hr18-ocr": 33.6, "mitb0-segformer": 133.7, "mitb5-daformer": 19.3, "mitb5-hrda": 15.6, "r101-deeplabv2": 57.4,
    "r101-deeplabv3p": 26.4, "r101-uper": 48.1, "r10t-fpn": 272.7, "r18-fpn": 235.0, "r50-psp": 25.9,
    "r50-uper": 54.1, "swint-knet": 41.1, "vitb16-uper": 41.1,
}
GPU_IMAGES_PER_S_FP32 = {
    "hr18-ocr": 34.1, "mitb0-segformer": 90.0, "mitb5-daformer": 13.7, "mitb5-hrda": 17.2, "r101-deeplabv2": 36.4,
    "r101-deeplabv3p": 19.9, "r101-uper": 35.2, "r10t-fpn": 271.5, "r18-fpn": 219.3, "r50-psp": 22.5,
    "r50-uper": 40.6, "swint-knet": 28.4, "vitb16-uper": 14.9,
}
GPU_REF_PIXELS = 512 * 1024
#: training images per iteration relative to a supervised step of ``batch_size`` images (estimates, not
#: measured: a forward is taken as 1/3 of a training step). mean teacher: labeled + unlabeled batches
#: through the student, teacher forward on the unlabeled; UDA: source + mixed batches through the
#: student, teacher forward on the target; a DARS round splits its batch half labeled, half pseudo.
STRATEGY_FACTOR = {"supervised": 1.0, "dars-rounds": 1.0, "mean-teacher": 2.0 + 1 / 3, "uda": 2.0 + 1 / 3}
FORWARD_SHARE = 1 / 3  # an evaluation or labelling forward, as a share of a training step
FIXED_SECONDS = {"cpu": 5.0, "gpu": 30.0}  # start-up: data, model build, first batches (estimate)
#: Cityscapes' real sizes for the paper profile: (train, val, H, W)
REAL_SIZES = {"cityscapes": (2975, 500, 1024, 2048)}


def _fraction(f) -> float:
    if f in (None, "", "all"):
        return 1.0
    if isinstance(f, (int, float)):
        return float(f)
    num, _, den = str(f).partition("/")
    return float(num) / float(den or 1)


def _model_rate(model: str, device: str, amp: bool) -> tuple[float, str]:
    base = model.split("@")[0]
    table = CPU_IMAGES_PER_S if device == "cpu" else (GPU_IMAGES_PER_S_BF16 if amp else GPU_IMAGES_PER_S_FP32)
    if base in table:
        return table[base], "book/models.md"
    return table["r10t-fpn" if device == "cpu" else "r50-psp"], "default (model not benchmarked)"


def est_seconds(cfg) -> float:
    """Estimated wall seconds of ``cfg`` on its profile's machine (``Profile.machine``: a CPU for
    smoke/quick, a GPU for gpu/paper): iterations × images per iteration × seconds per image of the model (scaled by crop area
    from the benchmark's size; UDA trains on square crops of the crop's height) × the strategy's factor,
    + evaluation on the val split (none for a pretraining run) + a DARS round's labelling of the unlabeled
    split (flip-averaged: 2 forwards) or the mean teacher's Eq. (4) pass over it each epoch, + a fixed
    start-up. The numbers are estimates for planning; ``train_seconds`` in the records is the truth."""
    prof = get_profile(cfg.profile)
    device = prof.machine
    amp = bool(getattr(cfg, "amp", prof.amp))
    rate, _ = _model_rate(str(getattr(cfg, "model", None) or prof.model), device, amp)
    ref = CPU_REF_PIXELS if device == "cpu" else GPU_REF_PIXELS
    crop = tuple(getattr(cfg, "crop", None) or prof.crop)
    if prof.synthetic:
        n_train, n_val, (h, w) = prof.n_train, prof.n_val, prof.size
    else:
        n_train, n_val, h, w = REAL_SIZES["cityscapes"]
    per_image = 1.0 / rate
    iters = int(getattr(cfg, "iters", prof.iters))
    batch = int(getattr(cfg, "batch_size", prof.batch_size))
    so = _opts(cfg)
    if cfg.strategy == "uda":  # square crops of the crop's height (DAFormer: 512² of 512×1024)
        side = 1024 if (not prof.synthetic and "hrda" in str(getattr(cfg, "model", ""))) else \
            (512 if not prof.synthetic else crop[0])
        crop = (side, side)
    train = iters * batch * per_image * crop[0] * crop[1] / ref * STRATEGY_FACTOR.get(cfg.strategy, 1.0)
    full_image = per_image * h * w / ref * FORWARD_SHARE
    evaluate = n_val * full_image if getattr(cfg, "evaluate", True) else 0.0
    label = 0.0
    n_unlabeled = n_train * (1.0 - _fraction(getattr(cfg, "labeled_fraction", None)))
    if cfg.strategy == "dars-rounds" and int(so.get("round", 0) or 0) >= 1:
        if getattr(cfg, "target", None):  # UDA: the whole target train split
            n_unlabeled = n_train
        label = 2 * (n_unlabeled + int(so.get("extra_unlabeled", 0) or 0)) * full_image  # flip-averaged
    if cfg.strategy == "mean-teacher" and so.get("counts") == "eq4" and n_unlabeled:
        epochs = iters * batch / n_unlabeled  # Eq. (4): the teacher predicts the unlabeled set each epoch
        label = epochs * n_unlabeled * full_image
    return round(train + evaluate + label + FIXED_SECONDS[device], 1)


# --- the plan -------------------------------------------------------------------------------------------

@dataclass
class PlannedRun:
    key: str
    cfg: object
    tables: list[str] = field(default_factory=list)  # tables that show this run
    needed_by: list[str] = field(default_factory=list)  # tables whose runs start from it (teacher, pretraining)
    deps: list[str] = field(default_factory=list)  # keys of the runs it starts from
    est_seconds: float = 0.0

    def row(self) -> dict:
        c = self.cfg
        return {"key": self.key, "strategy": c.strategy, "model": getattr(c, "model", None), "loss": c.loss,
                "loss_options": dict(getattr(c, "loss_options", None) or {}),
                "strategy_options": _opts(c), "dataset": getattr(c, "dataset", None),
                "labeled_fraction": getattr(c, "labeled_fraction", None), "seed": c.seed,
                "tables": sorted(set(self.tables) | set(self.needed_by), key=_table_order),
                "shown_in": sorted(self.tables, key=_table_order), "deps": list(self.deps),
                "est_seconds": self.est_seconds}


def _table_order(t: str):
    from blvnb.experiments.tables import TABLES

    ids = list(TABLES)
    return ids.index(t) if t in ids else len(ids)


@dataclass
class Plan:
    profile: str | None
    runs: dict[str, PlannedRun] = field(default_factory=dict)  # in dependency order
    unavailable: list[tuple[str, str, str, str]] = field(default_factory=list)  # (table, row, arm, why)

    def __len__(self) -> int:
        return len(self.runs)

    @property
    def est_seconds(self) -> float:
        return round(sum(r.est_seconds for r in self.runs.values()), 1)

    def to_json(self, resolved: bool = False, time_limit: float | None = None, memory: bool = False) -> list[dict]:
        """One object per run (:meth:`PlannedRun.row`); ``resolved``: with its whole resolved configuration
        (``"config"``, its key fields, and ``"train"`` / ``"eval"``: :func:`blvnb.experiments.resolve.resolved`);
        ``time_limit``: with ``"jobs"``, the jobs of that many minutes it takes (:func:`jobs_for`);
        ``memory``: with ``"memory"``, its peak GPU memory at its batch on one GPU, estimated on this CPU
        (:func:`blvnb.experiments.memory.estimate`)."""
        out = []
        for r in self.runs.values():
            row = r.row()
            if memory:
                from blvnb.experiments import memory as mem

                row["memory"] = mem.estimate(r.cfg)
            if resolved:
                from blvnb.experiments import resolve

                row = {**row, "config": r.cfg.key_dict(), **resolve.resolved(r.cfg)}
            if time_limit is not None:
                row["jobs"] = jobs_for(r.est_seconds, time_limit, self.profile)
            out.append(row)
        return out

    def order(self) -> list[PlannedRun]:
        return list(self.runs.values())


def build_plan(items: Iterable[tuple[object, str]], profile: str | None = None) -> Plan:
    """A plan from (cfg, table) pairs: one entry per key, dependencies first."""
    plan = Plan(profile)
    visiting: set[str] = set()

    def add(cfg, table: str | None, dep_of: str | None) -> str:
        key = cfg.key()
        if key not in plan.runs:
            if key in visiting:
                raise BlvnbError(f"run {key} depends on itself (a cycle in the runs' dependencies)")
            visiting.add(key)
            deps = [add(d, None, table or dep_of) for d in dependencies(cfg)]
            visiting.discard(key)
            plan.runs[key] = PlannedRun(key, cfg, deps=deps, est_seconds=est_seconds(cfg))
        run = plan.runs[key]
        if table and table not in run.tables:
            run.tables.append(table)
        if dep_of and dep_of not in run.needed_by and dep_of not in run.tables:
            run.needed_by.append(dep_of)
            for d in run.deps:  # the teacher's teacher is needed too
                add(plan.runs[d].cfg, None, dep_of)
        return key

    for cfg, table in items:
        add(cfg, table, None)
    return plan


def plan_for(profile: str, only: Iterable[str] | None = None, seeds: Iterable[int] | None = None,
             data_root: str | None = None) -> Plan:
    """The distinct runs that the tables ``only`` (default: every table of both papers) need."""
    from blvnb.experiments import tables

    get_profile(profile)  # unknown profile → ConfigError listing the known ones
    if data_root is None and not get_profile(profile).synthetic:
        data_root = "DATA_ROOT"  # planning only: a real data set's key does not depend on where it is mounted
    items, missing = [], []
    for t in tables.resolve_tables(only):
        items += [(e.cfg, t) for e in tables.entries(t, profile, seeds, data_root)]
        missing += [(t, *u) for u in tables.unavailable(t, profile)]
    plan = build_plan(items, profile)
    plan.unavailable = missing
    return plan


#: seconds of a job that train nothing: its start-up (:data:`FIXED_SECONDS`, paid again by every requeued job,
#: which builds its data and model and reads its checkpoint) and the warning before the time limit in which it
#: writes its checkpoint and stops (submitit asks Slurm for SIGUSR2 90 s before the limit)
SIGNAL_MARGIN_SECONDS = 90.0


def parse_time_limit(value) -> float:
    """A job's time limit in minutes (``--time-limit MIN``): a positive, finite number; anything else (0, a
    negative, not a number) is a ConfigError that names it."""
    import math

    given = value
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"--time-limit {value!r} is not a number of minutes (e.g. --time-limit 240)") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"--time-limit must be a positive number of minutes per job (e.g. 240), got {given!r}")
    return float(value)


def jobs_for(est: float, minutes, profile: str | None = None) -> int:
    """How many jobs of ``minutes`` minutes a run of ``est`` estimated seconds (:func:`est_seconds`: the
    throughput of ``book/models.md``'s benchmarks at the run's crop, batch and iterations) takes: each job
    resumes from the previous one's checkpoint and loses its start-up and the time-limit warning
    (:data:`SIGNAL_MARGIN_SECONDS`) to training."""
    import math

    minutes = parse_time_limit(minutes)
    fixed = FIXED_SECONDS[get_profile(profile).machine if profile is not None else "gpu"]
    usable = minutes * 60.0 - fixed - SIGNAL_MARGIN_SECONDS
    if usable <= 0:
        raise ConfigError(f"--time-limit {minutes:g} minutes leaves no time to train: a job spends "
                          f"{fixed + SIGNAL_MARGIN_SECONDS:.0f} s starting up and checkpointing before its limit")
    return max(1, math.ceil(max(0.0, float(est) - fixed) / usable))


def table_seconds(plan: Plan) -> dict[str, float]:
    """Estimated seconds per table: every run it shows or starts from (a teacher, a pretraining), each once
    per table; a run that several tables share counts in each of them (the plan's total counts it once)."""
    out: dict[str, float] = {}
    for r in plan.order():
        for t in set(r.tables) | set(r.needed_by):
            out[t] = out.get(t, 0.0) + r.est_seconds
    return {t: round(out[t], 1) for t in sorted(out, key=_table_order)}


#: where the GPU rates of :func:`est_seconds` come from (the card of book/models.md's GPU table)
GPU_RATES_SOURCE = ("one NVIDIA H100 80GB, bf16 (amp) or fp32 as the profile trains, paper-size models at batch 4 × "
                    "512×1024 (book/models.md, bench/model_throughput.py), scaled by each run's crop and batch")
#: a working day, for "how many GPUs finish the plan in a day"
DAY_HOURS = 8.0


def makespan(plan: Plan, gpus: int) -> float:
    """Estimated seconds until ``gpus`` GPUs have trained the whole plan, one run per GPU at a time, each run
    started as the ``gpus`` executor starts it: the first of the plan's order whose teachers are done, on the
    first free GPU."""
    import heapq

    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ConfigError(f"gpus must be a whole number >= 1, got {gpus!r}")
    pending = plan.order()
    done_at: dict[str, float] = {}
    running: list[tuple[float, str]] = []  # (end, key)
    now, free = 0.0, gpus
    while pending or running:
        started = True
        while free and started:
            started = False
            for r in pending:
                if all(d in done_at and done_at[d] <= now for d in r.deps):
                    heapq.heappush(running, (now + r.est_seconds, r.key))
                    pending.remove(r)
                    free -= 1
                    started = True
                    break
        if not running:  # nothing can start: a dependency outside the plan
            raise BlvnbError("the plan's runs wait on a dependency that is not in the plan")
        now, key = heapq.heappop(running)
        done_at[key] = now
        free += 1
    return now


def budget(plan: Plan, day_hours: float = DAY_HOURS) -> dict:
    """The plan's estimated cost (:func:`est_seconds`; the GPU rates of :data:`GPU_RATES_SOURCE`): seconds per
    table (:func:`table_seconds`) and in all (each run once), the longest chain of runs that must follow
    each other (a DARS round after its teacher), and the fewest GPUs that finish the plan within ``day_hours``
    (:func:`makespan`), None when its longest chain alone takes longer."""
    import math

    chain: dict[str, float] = {}
    for r in plan.order():  # teachers first
        chain[r.key] = r.est_seconds + max((chain[d] for d in r.deps), default=0.0)
    longest = max(chain.values(), default=0.0)
    day = float(day_hours) * 3600.0
    gpus = None
    if longest <= day and plan.runs:
        gpus = max(1, math.ceil(plan.est_seconds / day))
        while makespan(plan, gpus) > day:
            gpus += 1
    return {"profile": plan.profile, "runs": len(plan), "total_seconds": plan.est_seconds, "tables": table_seconds(plan),
            "longest_chain_seconds": round(longest, 1), "day_hours": float(day_hours), "gpus_for_day": gpus,
            "makespan_seconds": round(makespan(plan, gpus), 1) if gpus else None, "rates": GPU_RATES_SOURCE}


@functools.lru_cache(maxsize=None)
def sweep_cost(profile: str) -> dict:
    """What running every sweep point at every seed would cost in ``profile``: the plan's runs and estimated
    seconds as planned (a subset profile runs the extra points of a sweep at its first
    :data:`~blvnb.experiments.tables.QUICK_SWEEP_SEEDS` seeds) and with every arm at the profile's seeds."""
    now = plan_for(profile)
    full = plan_for(profile, seeds=get_profile(profile).seeds)
    return {"runs": len(now), "est_seconds": now.est_seconds, "runs_all_seeds": len(full),
            "est_seconds_all_seeds": full.est_seconds}


def format_plan(plan: Plan, time_limit: float | None = None) -> str:
    """The plan as a text table with totals; ``time_limit`` (minutes per job): with the jobs each run takes."""
    jobs_col = f"  {'jobs':>4s}" if time_limit is not None else ""
    lines = [f"{'key':16s}  {'strategy':12s}  {'model':22s}  {'loss':10s}  {'seed':>4s}  {'est s':>7s}{jobs_col}  tables"]
    n_jobs = 0
    for r in plan.order():
        c = r.cfg
        so = _opts(c)
        strat = c.strategy + (f" r{so['round']}" if "round" in so else "")
        loss = c.loss + ("*" if getattr(c, "loss_options", None) and c.loss != "blv" else "")
        tabs = ", ".join(sorted(r.tables, key=_table_order))
        if r.needed_by:
            tabs += (", " if tabs else "") + "(teacher for " + ", ".join(sorted(r.needed_by, key=_table_order)) + ")"
        jobs = ""
        if time_limit is not None:
            n = jobs_for(r.est_seconds, time_limit, plan.profile)
            n_jobs += n
            jobs = f"  {n:>4d}"
        lines.append(f"{r.key[:16]:16s}  {strat:12s}  {str(getattr(c, 'model', '')):22s}  {loss:10s}  {c.seed:>4d}  "
                     f"{r.est_seconds:7.0f}{jobs}  {tabs}")
    by = {}
    for r in plan.order():
        by[r.cfg.strategy] = by.get(r.cfg.strategy, 0) + 1
    for t, row, arm, why in plan.unavailable:
        lines.append(f"not run yet: {t} {row} / {arm}: {why}")
    lines.append(f"{len(plan)} distinct runs ({', '.join(f'{n} {s}' for s, n in sorted(by.items()))}); "
                 f"estimated {plan.est_seconds / 60:.1f} minutes one after the other "
                 f"(profile {plan.profile}; see blvnb.experiments.execute.est_seconds)")
    if time_limit is not None:
        lines.append(f"{n_jobs} jobs of {parse_time_limit(time_limit):g} minutes in all (a run that does not fit one "
                     "job resumes from its checkpoint in the next; blvnb.experiments.execute.jobs_for)")
    return "\n".join(lines)


# --- reading what exists --------------------------------------------------------------------------------

def store_path(profile: str, key: str) -> Path:
    """The results store's place for a run record: ``results/<profile>/runs/<key>.json``
    (:func:`blvnb.experiments.store.record_path`)."""
    from blvnb.experiments import store

    return store.record_path(profile, key)


def existing(profile: str, key: str) -> dict | None:
    """The record of ``key`` if it is committed (records/) or in the results store, else None."""
    rec = records_mod.committed(profile, key)
    if rec is not None:
        return rec
    path = store_path(profile, key)
    if path.is_file():
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except json.JSONDecodeError:
            log.warning("unreadable record %s: it will be computed again", path)
    return None


def fingerprint_conflicts(recs: dict[str, dict], tables_of: dict[str, Iterable[str]]) -> list[dict]:
    """Each (table, split) whose runs read that split with different data: ``recs`` are run records by key
    (their ``data_fingerprint``: split → fingerprint, :mod:`blvnb.data.fingerprint`), ``tables_of`` the
    tables each key belongs to. One dict per conflict: ``table``, ``split`` and ``versions``, a list of
    ``{"fingerprint", "runs"}`` (the keys that read that version), the most common first. Records without
    fingerprints (written before runs stated them) are left out of the comparison, as is a fingerprint
    without its hash in an unchecked store record (an imported one is checked: ``records.validate``)."""
    seen: dict[tuple[str, str], dict[str, dict]] = {}
    for key, rec in recs.items():
        fps = rec.get("data_fingerprint")
        for split, fp in (fps.items() if isinstance(fps, dict) else ()):
            if not (isinstance(fp, dict) and isinstance(fp.get("sha256"), str)):
                continue
            for table in tables_of.get(key, ()):
                version = seen.setdefault((table, split), {}).setdefault(fp["sha256"], {"fingerprint": fp, "runs": []})
                version["runs"].append(key)
    out = []
    for (table, split), versions in seen.items():
        if len(versions) > 1:
            ordered = sorted(versions.values(), key=lambda v: (-len(v["runs"]), v["fingerprint"]["sha256"]))
            out.append({"table": table, "split": split, "versions": ordered})
    return sorted(out, key=lambda c: (_table_order(c["table"]), c["split"]))


def data_conflicts(profile: str, results: Path | None = None) -> list[dict]:
    """:func:`fingerprint_conflicts` of the records the book renders for the tables of ``profile``
    (committed under ``records/``, else in the results store ``results``, default $BLVNB_RESULTS)."""
    from blvnb.experiments import store

    plan = plan_for(profile)
    recs = {}
    for key in plan.runs:
        rec = records_mod.committed(profile, key)
        path = store.record_path(profile, key, results)
        if rec is None and path.is_file():
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # an unreadable record is recomputed, and reported, where it is read
        if isinstance(rec, dict):
            recs[key] = rec
    tables_of = {k: set(r.tables) | set(r.needed_by) for k, r in plan.runs.items()}
    return fingerprint_conflicts(recs, tables_of)


def describe_conflict(c: dict, profile: str | None = None) -> str:
    """One line for a conflict of :func:`fingerprint_conflicts`."""
    from blvnb.data.fingerprint import describe

    where = f"table {c['table']}" + (f" (profile {profile})" if profile else "")
    versions = "; ".join(f"{describe(v['fingerprint'])} (run{'s' if len(v['runs']) > 1 else ''} "
                         f"{', '.join(k[:8] for k in v['runs'])})" for v in c["versions"])
    return f"{where}: its runs read {c['split']} in {len(c['versions'])} different versions: {versions}"


def _collect(profile: str, key: str, rec: dict) -> dict:
    """Make sure a run's record is in the results store (a run function normally writes it itself)."""
    if not isinstance(rec, dict):
        raise BlvnbError(f"run {key} returned {type(rec).__name__}, not a record")
    path = store_path(profile, key)
    if not path.is_file():
        write_json_atomic(path, {k: v for k, v in rec.items() if k != "cached"})
    return rec


# --- executors --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SlurmOptions:
    partition: str | None = None
    gpus_per_run: int = 1
    time_limit: int = 60  # minutes
    cpus_per_run: int | None = None
    cluster: str | None = None  # None: submitit picks (slurm where sbatch exists); "local": this machine
    dependency: str = "wait"  # "wait": submit after the teacher finished; "afterok": Slurm dependencies
    folder: str | None = None  # submitit's logs and pickles
    poll_seconds: float = 2.0
    # processes per run (one Slurm task each, in one process group): None = one per GPU (gpus_per_run, at
    # least 1); set it for CPU processes (gloo) on a node without GPUs
    tasks_per_run: int | None = None

    @property
    def tasks(self) -> int:
        return int(self.tasks_per_run) if self.tasks_per_run else max(1, int(self.gpus_per_run))


def check_executor_options(executor: str, *, partition=None, gpus_per_run=None, time_limit=None,
                           cpus_per_run=None, cluster=None, dependency=None) -> None:
    """Bad executor options raise a ConfigError that says what is accepted."""
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}")
    if gpus_per_run is not None and (not isinstance(gpus_per_run, int) or gpus_per_run < 0):
        raise ConfigError(f"--gpus-per-run must be a whole number >= 0, got {gpus_per_run!r}")
    if time_limit is not None and (not isinstance(time_limit, int) or time_limit <= 0):
        raise ConfigError(f"--time-limit must be a positive number of minutes, got {time_limit!r}")
    if cpus_per_run is not None and (not isinstance(cpus_per_run, int) or cpus_per_run <= 0):
        raise ConfigError(f"--cpus-per-run must be a positive whole number, got {cpus_per_run!r}")
    if executor != "slurm":
        given = [n for n, v in (("--partition", partition), ("--time-limit", time_limit),
                                ("--cpus-per-run", cpus_per_run), ("--cluster", cluster),
                                ("--dependency", dependency)) if v is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --executor slurm (got --executor {executor})")
    if executor in ("local", "cpus") and gpus_per_run is not None:
        raise ConfigError(f"--gpus-per-run applies to --executor gpus or slurm; --executor {executor} runs "
                          "on the CPU")
    if executor == "gpus" and gpus_per_run == 0:
        raise ConfigError("--executor gpus needs --gpus-per-run >= 1")
    if cluster is not None and cluster not in ("slurm", "local", "debug"):
        raise ConfigError(f"--cluster must be slurm, local or debug, got {cluster!r}")
    if dependency is not None and dependency not in ("wait", "afterok"):
        raise ConfigError(f"--dependency must be 'wait' or 'afterok', got {dependency!r}")
    if dependency == "afterok" and cluster in ("local", "debug"):
        raise ConfigError("--dependency afterok needs a Slurm cluster; the local executor has no dependencies "
                          "(use --dependency wait)")


def _default_run_fn() -> Callable:
    from blvnb.experiments import runs

    return runs.run


def _with_device(cfg, device: str | None):
    if device is None or not hasattr(cfg, "device"):
        return cfg
    return cfg.with_(device=device)


def _minutes(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class Progress:
    """The run phase as a person reads it: ``echo`` for each line, and when a run ends (or fails) the line
    carries a running summary: runs done out of the total, failed, elapsed, and the time left.

    The time left is the plan's own estimate of the runs still to do (:attr:`PlannedRun.est_seconds`),
    scaled by the pace measured so far: wall seconds elapsed per estimated second of the runs that have
    finished. It therefore corrects a cost model made on another machine, and counts the workers of a pool
    running side by side, and it improves as runs finish. Before the first run ends it says so."""

    def __init__(self, todo: list[PlannedRun], echo: Callable[[str], None], clock: Callable[[], float] = time.monotonic):
        self.echo, self.clock, self.t0 = echo, clock, clock()
        self.est = {r.key: r.est_seconds for r in todo}
        self.ok: set[str] = set()
        self.bad: set[str] = set()

    def __call__(self, line: str) -> None:
        self.echo(line)

    def ended(self, key: str, ok: bool, line: str | None = None) -> None:
        """Run ``key`` finished (``ok``) or failed / was not started; echo ``line`` with the summary."""
        (self.ok if ok else self.bad).add(key)
        self.echo(f"{line} · {self.summary()}" if line else self.summary())

    def summary(self) -> str:
        elapsed = self.clock() - self.t0
        finished = sum(self.est[k] for k in self.ok)
        left = sum(v for k, v in self.est.items() if k not in self.ok and k not in self.bad)
        if not left:
            eta = "none left"
        elif finished > 0 and elapsed > 0:
            eta = f"about {_minutes(left * elapsed / finished)} left"
        else:
            eta = "time left known after the first run"
        return (f"{len(self.ok)}/{len(self.est)} done, {len(self.bad)} failed, {_minutes(elapsed)} elapsed, {eta}")


def execute(plan: Plan, run_fn: Callable | None = None, executor: str = "local", *, force: bool = False,
            device: str | None = None, progress: bool = True, gpus: list[str] | None = None,
            gpus_per_run: int = 1, slurm: SlurmOptions | None = None, work_dir: str | Path | None = None,
            echo: Callable[[str], None] | None = None, jobs: int | None = None) -> dict[str, dict]:
    """Run the plan's missing runs (all of them with ``force``); return ``{key: record}`` for every run.

    ``run_fn(cfg, force=...)`` → record (default :func:`blvnb.experiments.runs.run`); it must be
    importable (or picklable) for the ``gpus``, ``cpus`` and ``slurm`` executors. ``jobs``: processes of
    the ``cpus`` executor (default: one per core). A run whose dependency failed is
    not started; if any run failed, a BlvnbError lists them after the others have finished.
    """
    check_executor_options(executor)
    run_fn = run_fn or _default_run_fn()
    echo = echo or (lambda s: log.info("%s", s))
    done: dict[str, dict] = {}
    todo = []
    for r in plan.order():
        rec = None if force else existing(r.cfg.profile, r.key)
        if rec is not None:
            done[r.key] = rec
        else:
            todo.append(r)
    echo(f"{len(done)} of {len(plan)} runs have records; {len(todo)} to run ({executor})")
    if not todo:
        return done
    work = Path(work_dir) if work_dir else _default_work_dir(plan)
    echo = Progress(todo, echo)
    if executor == "local":
        failed = _run_local(todo, run_fn, done, force, device, echo)
    elif executor == "gpus":
        failed = _run_gpus(todo, run_fn, done, force, gpus, gpus_per_run, work, echo)
    elif executor == "cpus":
        failed = _run_pool(todo, run_fn, done, force, cpu_slots(jobs), work, echo, device="cpu",
                           cores=os.cpu_count() or 1)
    else:
        failed = _run_slurm(todo, run_fn, done, force, device, slurm or SlurmOptions(), work, echo)
    if failed:
        lines = "; ".join(f"{k[:16]}: {msg}" for k, msg in failed.items())
        raise BlvnbError(f"{len(failed)} run(s) failed or were not started: {lines}")
    return done


def _default_work_dir(plan: Plan) -> Path:
    from blvnb.experiments import store

    return store.results_root() / (plan.profile or "mixed") / "jobs"


def _depends_on(r: PlannedRun, key: str, runs: dict[str, PlannedRun]) -> bool:
    """Whether ``r`` starts, directly or through its teachers, from run ``key``."""
    return any(d == key or (d in runs and _depends_on(runs[d], key, runs)) for d in r.deps)


def _blocked(r: PlannedRun, done: dict, failed: dict) -> str | None:
    bad = [d for d in r.deps if d in failed]
    return f"not started: its dependency {bad[0][:16]} failed" if bad else None


def _run_local(todo, run_fn, done, force, device, echo) -> dict[str, str]:
    failed: dict[str, str] = {}
    for i, r in enumerate(todo, 1):
        why = _blocked(r, done, failed)
        if why:
            failed[r.key] = why
            echo.ended(r.key, False, f"[{i}/{len(todo)}] {r.key[:16]} {why}")
            continue
        echo(f"[{i}/{len(todo)}] {r.key[:16]} {r.cfg.strategy} {getattr(r.cfg, 'model', '')} (est {r.est_seconds:.0f} s)")
        try:
            done[r.key] = _collect(r.cfg.profile, r.key, run_fn(_with_device(r.cfg, device), force=force))
            echo.ended(r.key, True, f"[{i}/{len(todo)}] {r.key[:16]} done")
        except BlvnbError as exc:
            failed[r.key] = str(exc)
            echo.ended(r.key, False, f"[{i}/{len(todo)}] {r.key[:16]} FAILED: {exc}")
    return failed


# one process per GPU ---------------------------------------------------------------------------------------

def visible_gpus() -> list[str]:
    """The GPUs this server shows: ``CUDA_VISIBLE_DEVICES`` if set, else every device torch sees."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # pragma: no cover
        return []


def _dumps(obj) -> bytes:
    try:
        import cloudpickle

        return cloudpickle.dumps(obj)
    except ImportError:  # pragma: no cover - cloudpickle comes with submitit
        return pickle.dumps(obj)


def cpu_slots(jobs: int | None = None) -> dict[str, dict[str, str]]:
    """The ``cpus`` executor's workers: ``jobs`` (default: one per core) slots, each with the environment
    that hides any GPU and gives the worker's own work ``cores // jobs`` threads (a run then computes with
    its own ``cfg.threads``)."""
    cores = os.cpu_count() or 1
    jobs = cores if jobs is None else jobs
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ConfigError(f"--jobs must be a whole number >= 1 for --executor cpus, got {jobs!r}")
    threads = str(max(1, cores // jobs))
    return {f"cpu{i}": {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
            for i in range(jobs)}


def _run_gpus(todo, run_fn, done, force, gpus, gpus_per_run, work: Path, echo) -> dict[str, str]:
    gpus = list(gpus) if gpus is not None else visible_gpus()
    if gpus_per_run < 1:
        raise ConfigError("--gpus-per-run must be >= 1 for --executor gpus")
    if len(gpus) < gpus_per_run:
        raise ConfigError(f"--executor gpus found {len(gpus)} GPU(s) (CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}) but each run needs {gpus_per_run}; "
                          "use --executor local or cpus on a CPU")
    slots = {",".join(gpus[i:i + gpus_per_run]): {"CUDA_VISIBLE_DEVICES": ",".join(gpus[i:i + gpus_per_run])}
             for i in range(0, len(gpus) - gpus_per_run + 1, gpus_per_run)}
    return _run_pool(todo, run_fn, done, force, slots, work, echo, nproc=gpus_per_run)


def _run_pool(todo, run_fn, done, force, slots: dict[str, dict[str, str]], work: Path, echo, nproc: int = 1,
              device: str | None = None, cores: int | None = None) -> dict[str, str]:
    """Run ``todo`` in other processes, one run per slot at a time (slot name → its environment), each run
    once its dependencies are done; ``nproc`` > 1 makes each a ``torchrun`` over that many processes.

    ``cores`` (CPU pools): each slot is one long-lived worker process (:func:`_worker`) that runs one run
    after the other. A run computes with its own thread count (``cfg.threads``, part of its key, so that
    its weights do not depend on what else runs beside it); the pool starts a run when its threads fit in
    the cores the running ones leave free (or when nothing runs), in plan order, so that a run that needs
    several cores (the toy pretraining) is not passed over for ever. GPU slots start one process per run,
    so that each run gets a fresh CUDA context."""
    work.mkdir(parents=True, exist_ok=True)
    failed: dict[str, str] = {}
    pending = list(todo)
    running: dict[str, tuple] = {}  # slot → (run, process, result path, log file or None)
    workers: dict[str, subprocess.Popen] = {}
    free = list(slots)

    def start(r, slot: str):
        payload = work / f"{r.key}.pkl"
        payload.write_bytes(_dumps((run_fn, _with_device(r.cfg, device), force)))
        result = work / f"{r.key}.result.json"
        result.unlink(missing_ok=True)
        Path(str(result) + ".error").unlink(missing_ok=True)
        log_path = work / f"{r.key}.log"
        env = {**os.environ, **slots[slot]}
        env.pop("LOCAL_RANK", None)
        if cores:  # a worker per slot, started once
            w = workers.get(slot)
            if w is None or w.poll() is not None:
                w = workers[slot] = subprocess.Popen([sys.executable, "-m", "blvnb.experiments.execute", "--worker"],
                                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            log_path.write_bytes(b"")
            w.stdin.write(f"{payload}\t{result}\t{log_path}\t{r.cfg.threads}\n")
            w.stdin.flush()
            return w, result, None
        cmd = [sys.executable, "-m", "blvnb.experiments.execute", str(payload), str(result)]
        if nproc > 1:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   "-m", "blvnb.experiments.execute", str(payload), str(result)]
        logf = open(log_path, "wb")
        return subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT), result, logf

    def finished(proc, result, logf) -> bool | None:
        """None while the run goes on; else whether it wrote its record."""
        if logf is not None:  # one process per run
            if proc.poll() is None:
                return None
            logf.close()
            return proc.returncode == 0 and result.is_file()
        if proc.poll() is not None:  # the worker died (killed, out of memory)
            return False
        if not (result.is_file() or Path(str(result) + ".error").is_file()):
            return None
        proc.stdout.readline()  # its "ready": the run's output is flushed
        return result.is_file()

    try:
        while pending or running:
            for r in list(pending):
                why = _blocked(r, done, failed)
                if why:
                    failed[r.key] = why
                    pending.remove(r)
                    echo.ended(r.key, False, f"[-] {r.key[:16]} {why}")
                elif free and all(d in done for d in r.deps):
                    if cores and running and sum(q.cfg.threads for q, *_ in running.values()) + r.cfg.threads > cores:
                        break  # its threads do not fit beside the running runs: it starts next, none before it
                    slot = free.pop(0)
                    running[slot] = (r, *start(r, slot))
                    pending.remove(r)
                    echo(f"[{slot}] {r.key[:16]} {r.cfg.strategy} {getattr(r.cfg, 'model', '')}; log {work / (r.key + '.log')}")
            for slot, (r, proc, result, logf) in list(running.items()):
                ok = finished(proc, result, logf)
                if ok is None:
                    continue
                del running[slot]
                free.append(slot)
                if ok:
                    done[r.key] = _collect(r.cfg.profile, r.key, json.loads(result.read_text()))
                    echo.ended(r.key, True, f"[{slot}] {r.key[:16]} done")
                else:
                    code = proc.returncode if proc.poll() is not None else "error"
                    failed[r.key] = f"exit {code}; log {work / (r.key + '.log')}"
                    echo.ended(r.key, False, f"[{slot}] {r.key[:16]} FAILED ({failed[r.key]})")
            if running:
                time.sleep(0.2)
            elif pending and not any(all(d in done for d in r.deps) for r in pending):
                for r in pending:  # nothing runs and nothing can start: the rest wait on failures
                    failed[r.key] = _blocked(r, done, failed) or "not started: a dependency did not finish"
                    echo.ended(r.key, False, f"[-] {r.key[:16]} {failed[r.key]}")
                pending = []
    finally:  # finished, or interrupted (Ctrl-C, an error here): no run is left training on its own
        for r, proc, result, logf in running.values():
            proc.terminate()
            proc.wait()
            if logf is not None:
                logf.close()
        for w in workers.values():
            if w.poll() is None:
                w.stdin.close()
                try:
                    w.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    w.kill()
                    w.wait()
    return failed


def _child(payload: str, result: str) -> int:
    """Entry point of a ``gpus`` executor process: load (run_fn, cfg, force), run, write the record."""
    run_fn, cfg, force = pickle.loads(Path(payload).read_bytes())
    rec = run_fn(cfg, force=force)
    if os.environ.get("RANK", "0") == "0":
        write_json_atomic(result, rec)
    return 0


def _worker() -> int:
    """A ``cpus`` executor's long-lived worker: one line per run on stdin (``payload result log threads``,
    the run's own thread count),
    the run's output to its log, its record (or ``result.error`` with the traceback) written, then one line
    on stdout. It saves each run the seconds of starting Python and importing torch."""
    import traceback

    import torch

    for line in sys.stdin:
        payload, result, logfile, threads = line.rstrip("\n").split("\t")
        torch.set_num_threads(int(threads))
        sys.stdout.flush(), sys.stderr.flush()
        saved = os.dup(1), os.dup(2)
        with open(logfile, "ab") as fh:
            os.dup2(fh.fileno(), 1), os.dup2(fh.fileno(), 2)
            try:
                _child(payload, result)
            except BaseException:  # noqa: BLE001 - reported to the pool, which marks the run failed
                Path(result + ".error").write_text(traceback.format_exc())
                traceback.print_exc()
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(saved[0], 1), os.dup2(saved[1], 2)
                os.close(saved[0]), os.close(saved[1])
        print("ready", flush=True)
    return 0


# Slurm through submitit ------------------------------------------------------------------------------------

class SlurmJob:
    """What one submitit job runs: ``run_fn(cfg, force=force)``, requeued when the cluster stops it.

    Slurm warns a job before its time limit (submitit asks for SIGUSR2 90 s before) or when it preempts
    it. The run catches the signal, ends its iteration and writes its checkpoint (:mod:`blvnb.engine.signals`),
    then hands over to submitit's handler, which calls :meth:`checkpoint` and requeues the job with the
    submission it returns: this job again, one requeue further, never forced (a requeued ``force`` run
    would delete the checkpoint it is meant to resume from). The requeued job resumes from the checkpoint;
    its record states ``requeues`` (how often Slurm requeued the job) beside the run's own ``restarts``
    (how often the training was resumed from its checkpoint).
    """

    def __init__(self, requeues: int = 0):
        self.requeues = int(requeues)

    def __call__(self, run_fn, cfg, force):
        distributed_from_job()
        if self.requeues:
            log.warning("job requeued %d time(s): resuming run %s from its checkpoint", self.requeues, cfg.key())
        rec = run_fn(cfg, force=force)
        if self.requeues and isinstance(rec, dict) and os.environ.get("RANK", "0") == "0":
            rec = {**rec, "requeues": self.requeues}
            path = store_path(cfg.profile, cfg.key())
            if path.is_file():  # the run wrote it before it knew it had been requeued
                stored = json.loads(path.read_text())
                write_json_atomic(path, {**stored, "requeues": self.requeues})
        return rec

    def checkpoint(self, run_fn, cfg, force):
        """submitit's checkpointing hook: the resubmission of this job (submitit requeues it)."""
        return _submitit().helpers.DelayedSubmission(SlurmJob(self.requeues + 1), run_fn, cfg, False)


def distributed_from_job() -> int:
    """In a job of several tasks (one per GPU), set the process group's environment (``RANK``,
    ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``) from Slurm's (or submitit's local
    executor's) task variables, so that the run joins one group (:func:`blvnb.engine.loop.init_distributed`:
    NCCL on GPUs, gloo on CPUs) and each task computes on its node's GPU ``LOCAL_RANK``. Returns the number
    of tasks (1: nothing set)."""
    tasks = int(os.environ.get("SLURM_NTASKS") or os.environ.get("SUBMITIT_LOCAL_NTASKS") or 1)
    if tasks > 1:
        _submitit().helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    return tasks


def _submitit():
    try:
        import submitit
    except ImportError:
        raise ConfigError("--executor slurm needs submitit: pip install 'blvnb[cluster]' (or pip install submitit)") \
            from None
    return submitit


def _run_slurm(todo, run_fn, done, force, device, opts: SlurmOptions, work: Path, echo) -> dict[str, str]:
    submitit = _submitit()
    check_executor_options("slurm", partition=opts.partition, gpus_per_run=opts.gpus_per_run,
                           time_limit=opts.time_limit, cpus_per_run=opts.cpus_per_run, cluster=opts.cluster,
                           dependency=opts.dependency)
    folder = Path(opts.folder) if opts.folder else work / "submitit"
    ex = submitit.AutoExecutor(folder=str(folder), cluster=opts.cluster)
    # one task per GPU (or per process: tasks_per_run), all in one process group on one node
    params = dict(timeout_min=opts.time_limit, gpus_per_node=opts.gpus_per_run, tasks_per_node=opts.tasks, nodes=1)
    if opts.cpus_per_run:
        params["cpus_per_task"] = opts.cpus_per_run
    if opts.partition:
        params["slurm_partition"] = opts.partition
    ex.update_parameters(**params)
    failed: dict[str, str] = {}
    jobs: dict[str, object] = {}  # key → submitit job
    pending = list(todo)
    todo_by_key = {r.key: r for r in todo}

    def submit(r, after: list[str] | None = None):
        ex.update_parameters(name=f"blvnb-{r.key[:8]}")
        if after:
            ex.update_parameters(slurm_additional_parameters={"dependency": "afterok:" + ":".join(after)})
        elif opts.dependency == "afterok":
            ex.update_parameters(slurm_additional_parameters={})
        job = ex.submit(SlurmJob(), run_fn, _with_device(r.cfg, device), force)
        jobs[r.key] = (r, job)
        echo(f"[submit] {r.key[:16]} {r.cfg.strategy} {getattr(r.cfg, 'model', '')} → job {job.job_id}")

    if opts.dependency == "afterok":  # everything at once; Slurm starts a student after its teacher succeeded
        for r in pending:
            submit(r, [jobs[d][1].job_id for d in r.deps if d in jobs])
        pending = []
    while pending or jobs:
        for r in list(pending):
            why = _blocked(r, done, failed)
            if why:
                failed[r.key] = why
                pending.remove(r)
                echo.ended(r.key, False, f"[-] {r.key[:16]} {why}")
            elif all(d in done for d in r.deps):
                submit(r)
                pending.remove(r)
        for key, (r, job) in list(jobs.items()):
            if not job.done():
                continue
            del jobs[key]
            try:
                done[key] = _collect(r.cfg.profile, key, job.results()[0])
                n = done[key].get("requeues", 0) if isinstance(done[key], dict) else 0
                echo.ended(key, True, f"[done] {key[:16]} (job {job.job_id}" + (f", requeued {n}×)" if n else ")"))
            except Exception as exc:  # a job's failure, with its traceback in the job's log
                failed[key] = f"job {job.job_id} failed: {str(exc).strip().splitlines()[-1] if str(exc).strip() else exc!r}" \
                              f" (logs in {folder})"
                echo.ended(key, False, f"[FAILED] {key[:16]} {failed[key]}")
                # afterok: Slurm would keep the students pending forever ("DependencyNeverSatisfied")
                for k2, (r2, job2) in list(jobs.items()):
                    if _depends_on(r2, key, todo_by_key):
                        job2.cancel(check=False)
                        del jobs[k2]
                        failed[k2] = f"cancelled: its dependency {key[:16]} failed"
                        echo.ended(k2, False, f"[-] {k2[:16]} {failed[k2]}")
        if jobs:
            time.sleep(opts.poll_seconds)
        elif pending and not any(all(d in done for d in r.deps) for r in pending):
            for r in pending:
                failed[r.key] = _blocked(r, done, failed) or "not started: a dependency did not finish"
                echo.ended(r.key, False, f"[-] {r.key[:16]} {failed[r.key]}")
            pending = []
    return failed


# a run that only writes a record: rehearse the executors ----------------------------------------------------


def dry_run(cfg, force: bool = False) -> dict:
    """Write a placeholder record for ``cfg`` into the results store without training (``blvnb runs
    execute --dry-run``, and the executors' tests). It checks that every dependency's record is already
    there, so a wrong order fails. Its records say ``"dry_run": true`` and cannot be imported."""
    import torch  # for the thread count it would have computed with

    from blvnb.experiments import store

    profile, key = cfg.profile, cfg.key()
    for dep in dependencies(cfg):
        if not store_path(profile, dep.key()).is_file():
            raise BlvnbError(f"dry run {key}: its dependency {dep.key()} has no record yet (ordering bug)")
    h = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    iou = [float((h >> (i % 24)) % 100) for i in range(19)]
    rec = {"key": key, "key_scheme": store.KEY_SCHEME, "profile": profile, "config": cfg.key_dict(),
           "metrics": {"mIoU": sum(iou) / 19, "mIoU_head_blv": 0.0, "mIoU_tail_blv": 0.0, "iou": iou},
           "train_seconds": 0.0, "version": blvnb.__version__, "git": None, "device": "dry-run",
           "dry_run": True, "pid": os.getpid(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "threads": torch.get_num_threads()}
    write_json_atomic(store_path(profile, key), rec)
    return rec


if __name__ == "__main__":  # a gpus executor's child process, or a cpus executor's worker
    sys.exit(_worker() if sys.argv[1:] == ["--worker"] else _child(*sys.argv[1:3]))
