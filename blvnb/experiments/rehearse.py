"""A rehearsal of a plan's runs on this machine: ``blvnb runs rehearse --profile paper``.

``blvnb runs execute --dry-run`` (:func:`blvnb.experiments.execute.dry_run`) checks the *order* of a
plan by writing placeholder records; it builds nothing. A rehearsal builds and **trains** every run of
the ``paper`` or ``gpu`` plan as a server would, briefly, so that what would fail after hours in a
queue (a loader that does not find a layout, a model that does not fit its crop, a strategy that asks
for a stream it was not given, an evaluation window larger than its image) fails here in minutes:

* **data**: toycity written once (cached under the work folder) in each real data set's layout and at
  its real resolution (:data:`REAL_SIZES`: Cityscapes 1024×2048, GTA5 1052×1914, SYNTHIA 760×1280,
  VOC 375×500, ScanNet 968×1296; the gpu profile: its own toycity size for all), :data:`N_TRAIN`
  training and :data:`N_VAL` validation images per data set (and :data:`N_EXTRA` Cityscapes
  ``train_extra`` images for DARS Table 8), read through the real loaders from a rehearsal data root;
* **the run**: the plan's :class:`~blvnb.experiments.runs.RunConfig` with only :data:`CHANGED` replaced
  (2 iterations, a batch of 2 — mean teacher and UDA 2 + 2, a DARS round 1 + 1 —, random weights
  because no weights are at hand offline, fp32, no loader workers, the CPU, no intermediate checkpoint,
  our nested splits of the rehearsal's images in place of the papers' released lists)
  and, where the plan asks for more extra images than the rehearsal wrote, that many; it is trained by
  :func:`blvnb.experiments.runs.run` itself (nothing here builds a model, a stream or an optimiser),
  into a results store of its own under the work folder, and evaluated on the one validation image
  with the run's own evaluation mode and window;
* **one run per seed group**: runs that differ only in their seed build the same thing, so only the
  lowest seed (0) of each is rehearsed. A DARS round's teacher comes before it in the plan's order
  (:func:`blvnb.experiments.execute.build_plan`) and is rehearsed first, so the round labels with it.

Each run trains in a child process of its own: a run that fails — even one that crashes the
interpreter or is killed for memory — does not stop the others, and ``resource.getrusage`` in the
child gives that run's own peak memory. The report gives per run the resolved recipe as the run used
it (the streams' batches and image sizes of the first step and the evaluation's mode, window and image
size, read by wrapping :func:`blvnb.engine.loop.train` and the evaluation while the run goes; the
optimiser and its parameter groups from the run's record: what ran, not what the config says), its seconds, its peak RSS, and ok or its error; the
command exits non-zero when any run failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from blvnb.errors import ConfigError
from blvnb.io import write_json_atomic

#: the profiles a rehearsal is for (smoke and quick already train for real in CI)
PROFILES = ("paper", "gpu")
#: images per data set in the rehearsal data root: enough for a batch of 2 and for the smallest labelled
#: fraction (1/16 of 8 is one image, nested_splits keeps at least one), one image to evaluate on
N_TRAIN, N_VAL, N_EXTRA = 8, 1, 2
#: data set kind → (toycity style, folder under the rehearsal root: one that runs.DATASETS looks in,
#: (H, W) of the real data set). VOC's images vary (at most 500 a side): the common 375×500 landscape;
#: ScanNet: the 1296×968 colour frames DARS crops (blvnb.data.scannet).
REAL_SIZES = {
    "cityscapes": ("cityscapes", "cityscapes", (1024, 2048)),
    "gta5": ("gta", "gta5", (1052, 1914)),
    "synthia": ("synthia", "synthia", (760, 1280)),
    "voc": ("voc", "voc", (375, 500)),
    "scannet": ("scannet", "scannet", (968, 1296)),
}
#: what a rehearsal changes in a planned run (everything else is the plan's). ``pretrained`` None: a
#: rehearsal has no weights offline (and a random start trains the same graph); ``ckpt_every`` 0: the
#: checkpoint is written at the end only (a DARS round's student reads its teacher's); ``splits`` "nested":
#: the papers' released lists name the real data sets' images, which the rehearsal's toycity trees are not
#: (tests/test_released_splits.py resolves them on a tree of the listed names)
CHANGED = dict(iters=2, batch_size=2, pretrained=None, amp=False, num_workers=0, device="cpu", ckpt_every=0,
               progress=False, splits="nested")


@dataclass
class Rehearsed:
    """One rehearsed run: its plan key, the config that ran, and what the child process reported."""

    key: str
    cfg: object
    tables: list[str]
    ok: bool = False
    error: str | None = None
    seconds: float = 0.0
    peak_rss_mib: float | None = None
    recipe: dict = field(default_factory=dict)
    log: str | None = None

    def row(self) -> dict:
        c = self.cfg
        return {"key": self.key, "tables": self.tables, "strategy": c.strategy, "model": c.model, "dataset": c.dataset,
                "target": c.target, "labeled_fraction": c.labeled_fraction, "loss": c.loss,
                "strategy_options": _plain(c.strategy_options), "ok": self.ok, "error": self.error,
                "seconds": round(self.seconds, 1), "peak_rss_mib": self.peak_rss_mib, "recipe": self.recipe,
                "log": self.log}


def _plain(v):
    from blvnb.experiments.profiles import thaw

    return thaw(v)


# --- checking what was asked ------------------------------------------------------------------------------

def check_request(profile: str, only: Iterable[str] | None, limit: int | None) -> None:
    """Bad input → :class:`ConfigError` naming it (before any data is written)."""
    from blvnb.experiments import tables

    if profile not in PROFILES:
        raise ConfigError(f"a rehearsal is for the profiles {' or '.join(PROFILES)} (the runs a GPU server trains); "
                          f"got --profile {profile!r} (smoke and quick train for real: blvnb runs execute)")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"--limit must be a whole number >= 1 (runs to rehearse), got {limit!r}")
    tables.resolve_tables(only)  # an unknown table id → ConfigError listing the known ones


# --- the data ---------------------------------------------------------------------------------------------

def data_sizes(profile: str, scale: float = 1.0) -> dict[str, tuple[int, int]]:
    """(H, W) of each data set's rehearsal images: the real data sets' for ``paper``, the profile's
    toycity size for ``gpu`` (whose runs train on toycity); ``scale`` < 1 shrinks them (tests only: a
    rehearsal's point is the real resolution)."""
    from blvnb.experiments.profiles import get_profile

    prof = get_profile(profile)
    sizes = {k: (hw if not prof.synthetic else tuple(prof.size)) for k, (_, _, hw) in REAL_SIZES.items()}
    return sizes if scale == 1.0 else {k: _scale_hw(hw, scale) for k, hw in sizes.items()}


def write_data(root: Path, kinds: Iterable[str], sizes: dict[str, tuple[int, int]], seed: int = 0,
               progress: bool = False) -> Path:
    """The rehearsal data root: one toycity tree per data set kind (``cityscapes-coarse``: a few
    Cityscapes-style ``leftImg8bit/train_extra`` images of another seed), each written once and kept
    (a folder per kind and size, so that another size is another tree)."""
    from blvnb.data import toycity, toycity_layouts

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        if kind == "cityscapes-coarse":
            continue  # below, into the Cityscapes tree
        style, sub, _ = REAL_SIZES[kind]
        H, W = sizes[kind]
        tree = root / "trees" / f"{sub}-{H}x{W}"
        if not (tree / "toycity.json").is_file():
            writer = toycity_layouts.write_tree if style in toycity_layouts.LAYOUT_STYLES else toycity.write_tree
            writer(tree, style, n_train=N_TRAIN, n_val=N_VAL, size=(H, W), seed=seed, progress=progress)
        _link(root / sub, tree)
    if "cityscapes-coarse" in kinds:
        city = root / "cityscapes"
        extra = city / "leftImg8bit" / "train_extra"
        if not extra.is_dir():
            H, W = sizes["cityscapes"]
            tmp = root / "trees" / f"coarse-{H}x{W}"
            toycity.write_tree(tmp, "cityscapes", n_train=N_EXTRA, n_val=0, size=(H, W), seed=seed + 1,
                               progress=progress)
            os.rename(tmp / "leftImg8bit" / "train", extra)
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _link(path: Path, target: Path) -> None:
    """``path`` → ``target`` (the rehearsal root names each data set as runs.DATASETS looks for it)."""
    if path.is_symlink() or path.exists():
        if path.is_symlink() and path.resolve() == target.resolve():
            return
        if path.is_symlink():
            path.unlink()
        else:
            raise ConfigError(f"the rehearsal work folder holds {path}, which is not its own link; give another --work")
    path.symlink_to(target.resolve(), target_is_directory=True)


def kinds_of(cfgs) -> list[str]:
    """The data set kinds ``cfgs`` read (each run's data set and target, Cityscapes val for evaluation
    outside VOC / ScanNet, the coarse extra images of DARS Table 8)."""
    from blvnb.experiments.runs import LABEL_SPACES

    kinds = set()
    for c in cfgs:
        kinds.add(c.dataset)
        if c.target:
            kinds.add(c.target)
        if c.evaluate and c.dataset not in LABEL_SPACES:
            kinds.add("cityscapes")
        if (c.strategy_options or {}).get("extra_unlabeled"):
            kinds.update(("cityscapes", "cityscapes-coarse"))
    return [k for k in (*REAL_SIZES, "cityscapes-coarse") if k in kinds]


# --- the runs ---------------------------------------------------------------------------------------------

def _scale_hw(hw, scale: float):
    """(H, W) (or one side) times ``scale``, in multiples of 8 (the models' smallest stride), at least 32."""
    if isinstance(hw, int):
        return max(32, int(round(hw * scale / 8)) * 8)
    return tuple(max(32, int(round(v * scale / 8)) * 8) for v in hw)


def scaled_settings(cfg, scale: float) -> dict:
    """Every pixel size of ``cfg`` times ``scale`` (tests only, with data written at that scale too):
    the crop, resize and evaluation window, and the strategies' own sizes — a DARS teacher's window, UDA's
    crop and source / target sizes (the paper's, from the UDA strategy, where the run leaves them to it)."""
    out = {name: _scale_hw(getattr(cfg, name), scale) for name in ("crop", "base_size", "eval_crop", "eval_size",
                                                                    "eval_stride")
           if getattr(cfg, name) is not None}
    so = dict(cfg.strategy_options or {})
    if cfg.strategy == "uda":
        from blvnb.engine.strategies import uda

        hrda = bool(so["hrda"]) if so.get("hrda") is not None else "hrda" in str(cfg.model).lower()
        paper = cfg.profile == "paper"
        defaults = {"crop": ((1024, 1024) if hrda else (512, 512)) if paper else (cfg.crop[0], cfg.crop[0]),
                    "source_size": uda.PAPER_SIZES[hrda][0] if paper else None,
                    "target_size": uda.PAPER_SIZES[hrda][1] if paper else None}
        for name, default in defaults.items():
            hw = so.get(name) or default
            if hw is not None:
                so[name] = _scale_hw(hw, scale)
    if cfg.strategy == "dars-rounds" and so.get("teacher_crop"):
        so["teacher_crop"] = _scale_hw(so["teacher_crop"], scale)
    if so != dict(cfg.strategy_options or {}):
        out["strategy_options"] = so
    return out


def rehearsal_config(cfg, data_root: Path, scale: float = 1.0):
    """``cfg`` as a rehearsal trains it: :data:`CHANGED`, the rehearsal data root, no more intra-op threads
    than this machine has cores (a run's thread count changes its arithmetic, never what it builds), and
    at most :data:`N_EXTRA` extra unlabeled images; ``scale`` < 1 (tests only) shrinks every pixel size
    (:func:`scaled_settings`). Returns (config, what was changed beyond CHANGED)."""
    changes = dict(CHANGED, data_root=str(data_root), threads=max(1, min(cfg.threads, os.cpu_count() or 1)))
    notes = []
    if scale != 1.0:
        changes.update(scaled_settings(cfg, scale))
        notes.append(f"every pixel size x {scale:g}")
    so = dict(changes.get("strategy_options", cfg.strategy_options) or {})
    if int(so.get("extra_unlabeled", 0) or 0) > N_EXTRA:
        notes.append(f"extra_unlabeled {so['extra_unlabeled']} -> {N_EXTRA}")
        so["extra_unlabeled"] = N_EXTRA
        changes["strategy_options"] = so
    if so.get("round_iters") is not None:  # a DARS round of the paper plan: each round its own length
        notes.append(f"round_iters {list(so['round_iters'])} -> {CHANGED['iters']} each")
        so["round_iters"] = [CHANGED["iters"]] * len(so["round_iters"])
        changes["strategy_options"] = so
    if changes["threads"] != cfg.threads:
        notes.append(f"threads {cfg.threads} -> {changes['threads']}")
    return cfg.with_(**changes), notes


def select(plan, limit: int | None = None, keys: Iterable[str] | None = None) -> list:
    """The plan's runs to rehearse, in plan order: one per group of runs that differ only in the seed (the
    lowest seed), then the first ``limit`` of them (or those of ``keys``) — and whatever those need first
    (a DARS round's teachers), so that a limited rehearsal still trains every round it starts."""
    groups: dict[str, object] = {}
    for r in plan.order():
        d = r.cfg.key_dict()
        d.pop("seed", None)
        g = json.dumps(d, sort_keys=True, default=str)
        if g not in groups or r.cfg.seed < groups[g].cfg.seed:
            groups[g] = r
    picked = [r for r in plan.order() if r in groups.values()]
    if keys is not None:
        keys = list(keys)
        unknown = [k for k in keys if k not in plan.runs]
        if unknown:
            raise ConfigError(f"run key(s) {unknown} are not in the plan")
        picked = [plan.runs[k] for k in keys]
    elif limit is None:
        return picked
    keep: set[str] = set()

    def need(r):
        keep.add(r.key)
        for d in r.deps:
            need(plan.runs[d])

    for r in picked[:limit]:
        need(r)
    return [r for r in plan.order() if r.key in keep]


@contextlib.contextmanager
def _watching(seen: dict):
    """Record what :func:`blvnb.experiments.runs.run` builds while it runs: each ``loop.train`` call's
    streams (batch, first batch's image size) and iterations, and each evaluation's mode, window and image
    size (the optimiser's groups are in the run's record). The run's own functions do the work; these wrappers only
    look (runs.py stays as a server runs it)."""
    from blvnb.engine import loop
    from blvnb.experiments import runs

    train, evaluate = loop.train, runs.evaluate

    def spy_train(model, streams, cfg, strategy, **kw):
        call = {"iters": cfg.iters, "strategy": strategy.name,
                "batch": {n: s.batch_size for n, s in streams.items()}, "images": {}}
        seen.setdefault("trains", []).append(call)
        step = strategy.step

        def first_step(net, batches, it):
            if not call["images"]:
                call["images"] = {n: list(b["image"].shape[-2:]) for n, b in batches.items()
                                  if isinstance(b, dict) and hasattr(b.get("image"), "shape")}
            return step(net, batches, it)

        strategy.step = first_step
        try:
            return train(model, streams, cfg, strategy, **kw)
        finally:
            del strategy.step  # the class's method again

    def spy_evaluate(model, loader, **kw):
        ds = loader.dataset
        image = ds[0]["image"] if len(ds) else None
        seen.setdefault("evals", []).append({
            "mode": kw.get("mode"), "window": list(kw["crop"]) if kw.get("crop") else None,
            "stride": kw.get("stride"), "images": len(ds),
            "size": list(image.shape[-2:]) if image is not None else None})
        return evaluate(model, loader, **kw)

    loop.train, runs.evaluate = spy_train, spy_evaluate
    try:
        yield
    finally:
        loop.train, runs.evaluate = train, evaluate


def recipe_of(cfg, seen: dict, notes: list[str], record: dict | None = None) -> dict:
    """The resolved recipe of a rehearsed run: the config's training settings, what the run built (the
    last train call is the run's own; an earlier one would be a dependency trained inside it) and the
    optimiser groups its record states."""
    train = (seen.get("trains") or [{}])[-1]
    opt = (record or {}).get("optimizer")
    out = {"crop": list(cfg.crop), "scale_range": list(cfg.scale_range),
           "base_size": list(cfg.base_size) if cfg.base_size else None, "iters": train.get("iters"),
           "batch": train.get("batch"), "train_images": train.get("images"),
           "optimizer": {"optimizer": opt["name"], "groups": opt["param_groups"]} if opt else None,
           "eval": (seen.get("evals") or [None])[-1],  # None: not evaluated (a toy pretraining run)
           "eval_config": {"mode": cfg.eval_mode, "window": list(cfg.eval_crop) if cfg.eval_crop else None},
           "changed": notes}
    if len(seen.get("trains") or []) > 1:
        out["trained_inside"] = len(seen["trains"]) - 1  # a dependency the plan did not train first
    return out


def child(payload: str, result: str) -> int:
    """A rehearsed run in this process (``python -m blvnb.experiments.rehearse PAYLOAD RESULT``): train it
    with :func:`runs.run`, write {ok, error, seconds, peak_rss_mib, recipe} to ``result``."""
    cfg, notes = pickle.loads(Path(payload).read_bytes())
    from blvnb.experiments import runs

    seen: dict = {}
    record = None
    t0 = time.perf_counter()
    out = {"ok": False, "error": None}
    try:
        with _watching(seen):
            record = runs.run(cfg, force=True)
        out["ok"] = True
    except BaseException as exc:  # noqa: BLE001 - reported, the rehearsal goes on
        traceback.print_exc()
        text = str(exc).strip()
        out["error"] = f"{type(exc).__name__}: {text.splitlines()[0] if text else repr(exc)}"
    out["seconds"] = time.perf_counter() - t0
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux
    try:
        out["recipe"] = recipe_of(cfg, seen, notes, record)
    except Exception as exc:  # noqa: BLE001
        out["recipe"] = {"error": repr(exc)}
    write_json_atomic(result, out)
    return 0


def rehearse(profile: str, only: Iterable[str] | None = None, limit: int | None = None, work: str | Path | None = None,
             *, keys: Iterable[str] | None = None, scale: float = 1.0, echo: Callable[[str], None] | None = print,
             keep: bool = False) -> list[Rehearsed]:
    """Rehearse the runs of the ``profile`` plan for the tables ``only`` (module docstring); returns one
    :class:`Rehearsed` per run, in plan order. ``work``: where the data (kept) and the run store
    (emptied first) go; default a temporary folder, deleted after (``keep``: kept). ``keys``: these runs of
    the plan (and their teachers) instead of the first ``limit``. ``scale``: tests only
    (every pixel size of the data and the runs times ``scale``; the command has none)."""
    from blvnb.experiments import execute

    check_request(profile, only, limit)
    tmp = work is None
    work = Path(work).expanduser().resolve() if work is not None else Path(tempfile.mkdtemp(prefix="blvnb-rehearse-"))
    try:
        data_root = work / "data"
        plan = execute.plan_for(profile, only, None, str(data_root))
        todo = select(plan, limit, keys)
        if not (isinstance(scale, int | float) and 0 < scale <= 1):
            raise ConfigError(f"scale must lie in (0, 1], got {scale!r}")
        cfgs = {r.key: rehearsal_config(r.cfg, data_root, scale) for r in todo}
        sizes = data_sizes(profile, scale)
        kinds = kinds_of(c for c, _ in cfgs.values())
        if echo:
            n_groups = len(select(plan))
            echo(f"rehearsing {len(todo)} of the {n_groups} runs of the {profile} plan that differ in more than the "
                 f"seed ({len(plan)} with the seeds; the lowest seed of each; "
                 f"{CHANGED['iters']} iterations, batch {CHANGED['batch_size']}, random weights, CPU); data: "
                 + ", ".join(f"{k} {sizes.get(k, sizes['cityscapes'])[0]}x{sizes.get(k, sizes['cityscapes'])[1]}"
                             for k in kinds) + f" under {data_root}")
        write_data(data_root, kinds, sizes, progress=False)
        store_root = work / "results"
        shutil.rmtree(store_root, ignore_errors=True)
        logs = work / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "BLVNB_RESULTS": str(store_root), "CUDA_VISIBLE_DEVICES": ""}
        done: list[Rehearsed] = []
        for i, r in enumerate(todo, 1):
            cfg, notes = cfgs[r.key]
            item = Rehearsed(r.key, cfg, sorted(set(r.tables) | set(r.needed_by), key=execute._table_order))
            failed_deps = [d for d in r.deps if any(x.key == d and not x.ok for x in done)]
            if failed_deps:
                item.error = f"not run: its teacher {failed_deps[0][:16]} failed"
            else:
                payload, result = logs / f"{r.key}.pkl", logs / f"{r.key}.result.json"
                payload.write_bytes(pickle.dumps((cfg, notes)))
                result.unlink(missing_ok=True)
                item.log = str(logs / f"{r.key}.log")
                t0 = time.perf_counter()
                with open(item.log, "wb") as fh:
                    proc = subprocess.run([sys.executable, "-m", "blvnb.experiments.rehearse", str(payload), str(result)],
                                          env=env, stdout=fh, stderr=subprocess.STDOUT)
                if result.is_file():
                    out = json.loads(result.read_text())
                    item.ok, item.error, item.recipe = out["ok"], out["error"], out.get("recipe", {})
                    item.seconds, item.peak_rss_mib = out["seconds"], out["peak_rss_mib"]
                else:  # killed (out of memory) or crashed: no report
                    item.seconds = time.perf_counter() - t0
                    item.error = f"the run's process ended with exit status {proc.returncode} and no report; log {item.log}"
            done.append(item)
            if echo:
                echo(f"[{i}/{len(todo)}] {format_row(item)}")
        return done
    finally:
        if tmp and not keep:
            shutil.rmtree(work, ignore_errors=True)


# --- the report -------------------------------------------------------------------------------------------

def _size(v) -> str:
    return "x".join(str(x) for x in v) if v else "-"


def format_row(r: Rehearsed) -> str:
    c, rc = r.cfg, r.recipe or {}
    so = dict(c.strategy_options or {})
    strat = c.strategy + (f" r{so['round']}" if "round" in so else "")
    loss = c.loss + ("*" if c.loss_options else "")
    head = f"{r.key[:12]}  {strat:15s} {c.model:24s} {loss:6s} {c.dataset:10s}"
    if not r.ok and not rc:
        return f"{head} FAILED {r.error}"
    batch = "+".join(f"{n}:{b}" for n, b in (rc.get("batch") or {}).items())
    imgs = ",".join(_size(v) for v in (rc.get("train_images") or {}).values())
    opt = rc.get("optimizer") or {}
    groups = "/".join(f"{g['lr']:.2g}:{g['weight_decay']:.2g}" for g in opt.get("groups", []))
    ev = rc.get("eval") or {}
    evtext = f"{ev.get('mode')} {_size(ev.get('window'))} on {_size(ev.get('size'))}" if ev.get("size") else "none"
    rss = f"{r.peak_rss_mib / 1024:.1f} GiB" if r.peak_rss_mib else "-"
    status = "ok" if r.ok else f"FAILED {r.error}"
    changed = f"; changed: {', '.join(rc['changed'])}" if rc.get("changed") else ""
    return (f"{head} crop {_size(rc.get('crop'))} batch {batch} ({imgs}) {opt.get('optimizer', '-')} lr:wd {groups}; "
            f"eval {evtext}; {r.seconds:.0f} s, {rss}: {status}{changed}")


def summary(results: list[Rehearsed]) -> str:
    failed = [r for r in results if not r.ok]
    total = sum(r.seconds for r in results)
    lines = [f"{len(results) - len(failed)} of {len(results)} runs rehearsed ok in {total:.0f} s"]
    if failed:
        lines.append(f"{len(failed)} failed:")
        lines += [f"  {r.key[:12]} {r.cfg.strategy} {r.cfg.model} {r.cfg.dataset} ({', '.join(r.tables)}): {r.error}"
                  for r in failed]
    return "\n".join(lines)


if __name__ == "__main__":  # one rehearsed run in its own process
    sys.exit(child(*sys.argv[1:3]))
