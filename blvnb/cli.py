"""Command line: ``blvnb data ...``, ``blvnb reproduce``, ``blvnb publish``, ``blvnb runs ...`` and ``blvnb weights``.

    blvnb data toycity --out DIR --style cityscapes --n-train N --n-val M --size HxW --seed S
    blvnb data toycity --out DIR --style voc|scannet --n-train N --n-val M --size HxW --seed S [--n-aug K]
    blvnb data check ROOT --dataset NAME        # every problem of a data root in one run (exit 1 if any)
    blvnb data prepare --profile quick          # the cached toycity trees a profile uses
    blvnb data prepare --profile paper --data-root D   # the real data sets its tables use, found and opened
    blvnb reproduce --profile quick [--only NB ...] [--jobs N|auto] [--force] [--data-root D [--skip-data-check]]
                    [--weights DIR] [--gpus-per-run N] [--no-build]
                                                # with --data-root: the root is checked before the first run
    blvnb publish [--remote origin] [--branch gh-pages]   # _build/html → gh-pages (ghp-import -n -p -f)
    blvnb runs plan --profile P [--only TABLE ...] [--seeds S ...] [--json] [--time-limit MIN] [--memory]
    blvnb runs execute --profile P [--only TABLE ...] [--executor local|gpus|slurm] [--partition X]
                       [--gpus-per-run N] [--time-limit MIN] [--cpus-per-run N] [--cluster slurm|local]
                       [--dependency wait|afterok] [--force] [--dry-run] [--data-root D [--skip-data-check]]
                       [--device D] [--weights DIR]   # ImageNet weights, one file per backbone, checked first
    blvnb runs rehearse --profile paper|gpu [--only TABLE ...] [--limit N] [--work DIR] [--json]
                                      # train every run 2 steps on the CPU on toycity at the real sizes
    blvnb runs import DIR [--profile P] [--overwrite]     # GPU-server records → records/ (committed)
    blvnb runs tables                                     # the table ids and what each runs
    blvnb weights check DIR [--profile paper [--only TABLE ...]] [--json]
                                      # which backbone each file serves, keys matched / missing / unused;
                                      # exit 1 if a file the plan needs is missing or partial
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time

from blvnb.errors import BlvnbError, ConfigError


def _data_toycity(a) -> None:
    from blvnb.data import toycity, toycity_layouts

    size = toycity.parse_size(a.size)
    if a.style in toycity_layouts.LAYOUT_STYLES:
        options = {"n_aug": a.n_aug} if a.style == "voc" and a.n_aug is not None else {}
        out = toycity_layouts.write_tree(a.out, a.style, n_train=a.n_train, n_val=a.n_val, size=size, seed=a.seed,
                                         progress=not a.quiet, **options)
    else:
        out = toycity.write_tree(a.out, a.style, n_train=a.n_train, n_val=a.n_val, size=size, seed=a.seed,
                                 progress=not a.quiet)
    print(f"wrote toycity ({a.style}) to {out}")


def _data_check(a) -> int:
    from blvnb.data.check import check_tree

    report = check_tree(a.root, a.dataset, splits=a.split or None, progress=not a.quiet)
    print(report.summary())
    return 0 if report.ok else 1


def _data_prepare(a) -> None:
    from blvnb.data import toycity
    from blvnb.experiments.profiles import get_profile

    p = get_profile(a.profile)
    if getattr(a, "data_root", None) is not None:  # real data: found and opened, nothing generated
        from blvnb import reproduce

        reproduce.check_data_root(p.name, a.data_root)
        return
    if not p.synthetic:
        raise ConfigError(f"profile {p.name} trains on the real data sets: pass --data-root D, a folder holding "
                          "cityscapes/, gta5/, synthia/ (and VOCdevkit/, scannet/ for DARS Tables 3, 12, 13)")
    for style in toycity.STYLES:
        path = toycity.ensure(style, n_train=p.n_train, n_val=p.n_val, size=p.size, seed=p.data_seed,
                              progress=not a.quiet)
        print(f"toycity {style:10s} {path}")


@contextlib.contextmanager
def _environ(name: str, value: str):
    """``$name`` set to ``value`` for a batch (its runs, workers, Slurm jobs and the chapters' kernels inherit
    it), and as it was again afterwards."""
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


@contextlib.contextmanager
def _batch_data_check(profile: str, data_root: str | None, skip: bool, plan=None):
    """A batch's data check, once before its first run: with ``--data-root``, check the root
    (:func:`blvnb.reproduce.check_data_root`, refusing missing or unreadable files) unless ``skip``; the
    outcome ("passed" / "skipped") is stated to every run the batch starts, which writes it in its record
    (``data_check``; :data:`blvnb.data.check.BATCH_CHECK_ENV`), and unset again after the batch."""
    from blvnb.data.check import BATCH_CHECK_ENV

    if data_root is None:
        yield
        return
    if skip:
        print(f"blvnb: data check of {data_root} skipped (--skip-data-check); each run's record says so",
              file=sys.stderr)
    else:
        from blvnb import reproduce

        reproduce.check_data_root(profile, data_root, plan=plan)
    with _environ(BATCH_CHECK_ENV, "skipped" if skip else "passed"):
        yield


def _check_skip_data_check(a) -> None:
    if a.skip_data_check and a.data_root is None:
        raise ConfigError("--skip-data-check applies to a batch on real data: pass it with --data-root D")


def _plan_weights(plan) -> list[str]:
    """The models a plan's runs start from ImageNet weights (what a weights folder must serve)."""
    return list(dict.fromkeys(r.cfg.model for r in plan.runs.values() if r.cfg.pretrained == "imagenet"))


@contextlib.contextmanager
def _weights_folder(folder: str | None, plan_of):
    """With ``--weights DIR``: the folder checked for every backbone the plan (``plan_of()``) needs, before
    the first run, and given to every run (``$BLVNB_WEIGHTS``: runs, workers and the chapters' kernels)."""
    if folder is None:
        yield
        return
    from blvnb.experiments.runs import WEIGHTS_ENV
    from blvnb.models.registry import check_weights
    from blvnb.models.weights import check_folder

    root = str(check_folder(folder).resolve())
    with _environ(WEIGHTS_ENV, root):
        report = check_weights(root, _plan_weights(plan_of()))
        if not report.ok:
            raise ConfigError(f"the weights folder {root} cannot serve this plan (nothing was run):\n"
                              + report.summary())
        print(report.summary().splitlines()[-1])
        yield


def _reproduce(a) -> None:
    from blvnb import reproduce
    from blvnb.experiments import execute

    _check_skip_data_check(a)
    t0 = time.perf_counter()
    reproduce.workers_for(a.jobs)  # a bad --jobs, --gpus-per-run or --only fails before anything runs
    reproduce.check_gpus_per_run(a.gpus_per_run, a.jobs)
    root = reproduce.repo_root()
    reproduce.chapter_sources(root, a.only)
    if a.data_root is None:
        _data_prepare(argparse.Namespace(profile=a.profile, data_root=None, quiet=False))
    # the weights folder first (cheap: file headers), then the data root (every file opened)
    with _weights_folder(a.weights, lambda: execute.plan_for(a.profile, None, None, a.data_root)), \
            _batch_data_check(a.profile, a.data_root, a.skip_data_check):
        if not a.only:  # every table's runs first, in parallel; the chapters then read their records
            reproduce.prepare_runs(a.profile, a.data_root, a.jobs, root, gpus_per_run=a.gpus_per_run)
        reproduce.run_notebooks(profile=a.profile, data_root=a.data_root, only=a.only, jobs=a.jobs, force=a.force,
                                root=root, weights_dir=a.weights)
    if a.no_build:
        return
    index = reproduce.build_book(root)
    print(f"\nThe book is at {index}  (open file://{index}); {time.perf_counter() - t0:.0f} s in all")


def _publish(a) -> None:
    from blvnb import publish, reproduce

    publish.publish(reproduce.repo_root(), remote=a.remote, branch=a.branch)


def _runs_plan(a) -> None:
    import json

    from blvnb.experiments import execute

    limit = execute.parse_time_limit(a.time_limit) if a.time_limit is not None else None  # before any work
    plan = execute.plan_for(a.profile, a.only, a.seeds, a.data_root)
    if a.json:
        print(json.dumps(plan.to_json(resolved=True, time_limit=limit, memory=a.memory), indent=1, default=str))
        for t, row, arm, why in plan.unavailable:
            print(f"blvnb: not run yet: {t} {row} / {arm}: {why}", file=sys.stderr)
    else:
        print(execute.format_plan(plan, limit))
        if a.memory:
            print(_memory_lines(plan))


def _memory_lines(plan) -> str:
    """Per distinct (model, strategy, batch, crop): the estimated peak GPU memory on one GPU; flagged above
    an 80 GB card."""
    from blvnb.experiments import memory

    rows, over = {}, 0
    for r in plan.order():
        m = memory.estimate(r.cfg)
        key = (str(r.cfg.model), r.cfg.strategy, m["images"], tuple(m["crop"]))
        rows.setdefault(key, [m, 0])[1] += 1
    lines = [f"peak GPU memory at the run's batch on one GPU (estimated on this CPU; an 80 GB card holds "
             f"{memory.GPU_GIB:.1f} GiB):"]
    for (model, strategy, images, crop), (m, n) in sorted(rows.items(), key=lambda kv: -kv[1][0]["peak_gib"]):
        flag = "  OVER: split the batch, --gpus-per-run N" if m["over_gpu"] else ""
        over += n if m["over_gpu"] else 0
        lines.append(f"  {m['peak_gib']:6.1f} GiB  {model:26s} {strategy:12s} {images:3d} images {crop[0]}x{crop[1]}"
                     f"  ({n} runs){flag}")
    lines.append(f"{over} of {len(plan)} runs exceed one card at their batch")
    return "\n".join(lines)


def _runs_execute(a) -> None:
    from blvnb.experiments import execute

    execute.check_executor_options(a.executor, partition=a.partition, gpus_per_run=a.gpus_per_run,
                                   time_limit=a.time_limit, cpus_per_run=a.cpus_per_run, cluster=a.cluster,
                                   dependency=a.dependency)
    if a.jobs is not None and a.executor != "cpus":
        raise ConfigError(f"--jobs applies to --executor cpus (got --executor {a.executor})")
    _check_skip_data_check(a)
    run_fn = None
    if a.dry_run:  # placeholders in a separate store: never mistaken for computed runs
        from blvnb.experiments import store

        os.environ["BLVNB_RESULTS"] = str(store.results_root() / "_dry_run")
        run_fn = execute.dry_run
    with _weights_folder(a.weights, lambda: execute.plan_for(a.profile, a.only, a.seeds, a.data_root)):
        _execute_plan(a, execute, run_fn)


def _execute_plan(a, execute, run_fn) -> None:
    plan = execute.plan_for(a.profile, a.only, a.seeds, a.data_root)
    print(execute.format_plan(plan).splitlines()[-1])
    slurm = None
    if a.executor == "slurm":
        slurm = execute.SlurmOptions(partition=a.partition, gpus_per_run=1 if a.gpus_per_run is None else a.gpus_per_run,
                                     time_limit=a.time_limit or 60, cpus_per_run=a.cpus_per_run, cluster=a.cluster,
                                     dependency=a.dependency or "wait")
    with _batch_data_check(a.profile, a.data_root, a.skip_data_check, plan):  # once, before the first run
        t0 = time.perf_counter()
        done = execute.execute(plan, run_fn, a.executor, force=a.force, device=a.device, slurm=slurm,
                               gpus_per_run=a.gpus_per_run or 1, echo=print, jobs=a.jobs)
    print(f"{len(done)} run records in the store; {time.perf_counter() - t0:.0f} s")


def _runs_rehearse(a) -> int:
    import json

    from blvnb.experiments import rehearse

    rehearse.check_request(a.profile, a.only, a.limit)  # bad input fails before any data is written
    results = rehearse.rehearse(a.profile, a.only, a.limit, a.work, echo=None if a.json else print)
    if a.json:
        print(json.dumps([r.row() for r in results], indent=1, default=str))
    print(rehearse.summary(results), file=sys.stderr if a.json else sys.stdout)
    return 0 if all(r.ok for r in results) else 1


def _runs_import(a) -> None:
    from blvnb.experiments import records

    written = records.import_records(a.src, profile=a.profile, overwrite=a.overwrite)
    for p in written:
        print(f"committed {p}")
    print(f"{len(written)} record(s) written to {records.records_root()} (add them with git add records/)")
    from blvnb.experiments import execute
    from blvnb.experiments.profiles import PROFILES

    for profile in sorted({p.parent.parent.name for p in written} & set(PROFILES)):  # <profile>/runs/<key>.json
        for c in execute.data_conflicts(profile):
            print(f"blvnb: warning: {execute.describe_conflict(c, profile)}; its verdicts would compare runs on "
                  "different data: re-run those on the full data set, or import records of one copy",
                  file=sys.stderr)


def _runs_tables(a) -> None:
    from blvnb.experiments import tables

    for t in tables.list_tables():
        spec = tables.get_table(t)
        print(f"{t:10s}  {spec.title}\n{'':12s}{spec.note}")


def _weights_check(a) -> int:
    import json

    from blvnb.models.registry import check_weights

    models = None
    if a.profile is not None:
        from blvnb.experiments import execute

        models = _plan_weights(execute.plan_for(a.profile, a.only, None, None))
    elif a.only:
        raise ConfigError("--only selects tables of a plan: give --profile too (blvnb weights check DIR "
                          "--profile paper --only blv-t1)")
    report = check_weights(a.folder, models)
    print(json.dumps(report.to_json(), indent=1) if a.json else report.summary())
    return 0 if report.ok else 1


def _int_list(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="blvnb", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = ap.add_subparsers(dest="cmd", required=True)

    data = sub.add_parser("data", help="synthetic data sets").add_subparsers(dest="data_cmd", required=True)
    t = data.add_parser("toycity", help="write a toycity tree in a real data set's layout")
    t.add_argument("--out", required=True)
    t.add_argument("--style", default="cityscapes", choices=("cityscapes", "gta", "synthia", "voc", "scannet"))
    t.add_argument("--n-train", type=int, default=200)
    t.add_argument("--n-val", type=int, default=60)
    t.add_argument("--size", default="128x256", help="HxW, e.g. 128x256")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--n-aug", type=int, default=None, help="voc: extra unlabeled images of the augmented set (default 3 x n-train)")
    t.add_argument("--quiet", action="store_true")
    t.set_defaults(fn=_data_toycity)
    from blvnb.data.check import CHECKS

    c = data.add_parser("check", help="validate a data root: every image, label and split list, all problems at once")
    c.add_argument("root")
    c.add_argument("--dataset", required=True, choices=tuple(CHECKS))
    c.add_argument("--split", nargs="*", help="only these splits (default: all of the data set's)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(fn=_data_check)
    p = data.add_parser("prepare", help="generate (once) the cached toycity trees a profile uses")
    p.add_argument("--profile", default="quick")
    p.add_argument("--data-root", default=None, help="folder with the real data sets: find and open each one the "
                   "profile's tables use (nothing is generated)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=_data_prepare)

    r = sub.add_parser("reproduce", help="run the notebooks with papermill and build the book")
    r.add_argument("--profile", default="quick")
    r.add_argument("--data-root", default=None, help="folder with the real data sets (paper profile)")
    r.add_argument("--only", nargs="*", help="notebook names (without .ipynb)")
    r.add_argument("--jobs", default="1", help="runs and notebooks at once; 'auto' = one per GPU, or one per "
                   "CPU core without a GPU")
    r.add_argument("--force", action="store_true", help="re-run notebooks even when fresh")
    r.add_argument("--gpus-per-run", type=int, default=1, help="GPUs per run (a torchrun over them; --jobs counts "
                   "GPUs, so --jobs // N runs train at once; default 1)")
    r.add_argument("--no-build", action="store_true", help="run the notebooks, do not build the book")
    r.add_argument("--skip-data-check", action="store_true", help="with --data-root: do not check the data root "
                   "before the first run (each record then says the check was skipped)")
    r.add_argument("--weights", default=None, metavar="DIR", help="folder of ImageNet weights, one file per "
                   "backbone (paper profile; checked before the first run: blvnb weights check)")
    r.set_defaults(fn=_reproduce)

    pub = sub.add_parser("publish", help="push the built book (_build/html) to the gh-pages branch of a remote "
                         "with ghp-import; refuses a missing, stale or dirty build")
    pub.add_argument("--remote", default="origin", help="the git remote to push to (default origin)")
    pub.add_argument("--branch", default="gh-pages", help="the branch GitHub Pages serves (default gh-pages)")
    pub.set_defaults(fn=_publish)

    runs = sub.add_parser("runs", help="the runs the book needs: plan, execute (CPU, GPUs, Slurm), import")
    rs = runs.add_subparsers(dest="runs_cmd", required=True)
    for name, fn, hlp in (("plan", _runs_plan, "list the distinct runs the tables need, with estimated cost"),
                          ("execute", _runs_execute, "run the missing runs")):
        q = rs.add_parser(name, help=hlp)
        q.add_argument("--profile", default="quick")
        q.add_argument("--only", nargs="+", metavar="TABLE", help="table ids or prefixes (blv-t1, dars, blv-fig)")
        q.add_argument("--seeds", nargs="+", type=_int_list, help="seeds (default: the profile's)")
        q.add_argument("--data-root", default=None, help="folder with the real data sets (paper profile)")
        q.set_defaults(fn=fn)
        if name == "plan":
            q.add_argument("--json", action="store_true", help="a JSON list, one object per run, with its whole "
                           "resolved configuration (\"config\", \"train\", \"eval\")")
            q.add_argument("--time-limit", default=None, metavar="MIN", help="minutes per job (a Slurm time limit): "
                           "how many jobs each run takes at its estimated time, and in all")
            q.add_argument("--memory", action="store_true", help="each run's peak GPU memory at its batch on one GPU, "
                           "estimated on this CPU (no GPU needed; a paper plan takes about a minute)")
            continue
        q.add_argument("--executor", default="local", help="local (this process) | gpus (one process per GPU) | "
                       "cpus (--jobs processes sharing the cores) | slurm (one job per run, submitit)")
        q.add_argument("--jobs", type=int, default=None, help="processes of --executor cpus (default: one per core)")
        q.add_argument("--partition", default=None, help="Slurm partition")
        q.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per run (gpus, slurm; default 1)")
        q.add_argument("--time-limit", type=int, default=None, help="minutes per Slurm job (default 60)")
        q.add_argument("--cpus-per-run", type=int, default=None, help="CPUs per Slurm job")
        q.add_argument("--cluster", default=None, help="submitit cluster: slurm (default where sbatch exists) | local")
        q.add_argument("--dependency", default=None, help="wait (submit a round after its teacher finished, "
                       "default) | afterok (submit all at once with Slurm dependencies)")
        q.add_argument("--device", default=None, help="device for --executor local (default: auto)")
        q.add_argument("--force", action="store_true", help="run again even where a record exists")
        q.add_argument("--dry-run", action="store_true", help="write placeholder records to results/_dry_run "
                       "instead of training (rehearse a cluster submission)")
        q.add_argument("--skip-data-check", action="store_true", help="with --data-root: do not check the data "
                       "root before the first run (each record then says the check was skipped)")
        q.add_argument("--weights", default=None, metavar="DIR", help="folder of ImageNet weights, one file per "
                       "backbone (paper profile; checked before the first run: blvnb weights check)")
    h = rs.add_parser("rehearse", help="build and train every run of the paper or gpu plan for 2 iterations on the "
                      "CPU, on toycity at the real data sets' sizes and layouts, and report each run's recipe")
    h.add_argument("--profile", required=True, help="paper | gpu")
    h.add_argument("--only", nargs="+", metavar="TABLE", help="table ids or prefixes (blv-t1, dars, blv-fig)")
    h.add_argument("--limit", type=int, default=None, help="the first N runs of the plan (and the teachers they need)")
    h.add_argument("--work", default=None, help="folder for the rehearsal's data (kept, reused) and run store "
                   "(default: a temporary folder, deleted after)")
    h.add_argument("--json", action="store_true", help="one JSON object per run on stdout")
    h.set_defaults(fn=_runs_rehearse)
    i = rs.add_parser("import", help="validate records from a GPU server and copy them to records/ (committed)")
    i.add_argument("src", help="a results folder (results/, results/gpu/runs/) or record files")
    i.add_argument("--profile", default=None, help="import only this profile's records")
    i.add_argument("--overwrite", action="store_true", help="replace committed records that differ")
    i.set_defaults(fn=_runs_import)
    t = rs.add_parser("tables", help="the table ids and what each runs")
    t.set_defaults(fn=_runs_tables)

    w = sub.add_parser("weights", help="folders of ImageNet weights (one file per backbone)").add_subparsers(
        dest="weights_cmd", required=True)
    wc = w.add_parser("check", help="per file: the backbone it serves, keys matched / missing / unused, refused "
                      "partial matches; exit 1 if a file the plan needs is missing or partial")
    wc.add_argument("folder")
    wc.add_argument("--profile", default=None, help="the plan whose backbones must be served (e.g. paper); "
                    "default: check every file the folder names")
    wc.add_argument("--only", nargs="+", metavar="TABLE", help="only these tables' runs (with --profile)")
    wc.add_argument("--json", action="store_true", help="the report as JSON")
    wc.set_defaults(fn=_weights_check)
    return ap


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if a.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = a.fn(a)
    except BlvnbError as exc:
        print(f"blvnb: error: {exc}", file=sys.stderr)
        signum = getattr(exc, "signum", None)  # a run stopped on a signal (blvnb.engine.signals.Interrupted)
        return 128 + signum if isinstance(signum, int) else 2  # the shell's convention: torchrun, Slurm see it
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
