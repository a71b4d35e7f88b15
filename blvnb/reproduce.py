"""Run the notebooks with papermill and build the book.

``blvnb reproduce --profile quick`` executes every ``notebooks/*.ipynb`` into ``book/generated/``
(skipping those whose notebook, library source and parameters are unchanged since their last successful
run), in parallel over GPUs when there are several, then builds ``_build/html`` with Jupyter Book,
warnings as errors. A notebook that fails stops the build: the other chapters still run (and are fresh
next time), its partial output stays in ``book/generated/`` for inspection, the error names its log, and
the command exits non-zero.

Before every build it writes the pages the book generates:

* ``book/reproduction.md`` and ``book/generated/reproduction.json`` — the reproduction status of every
  claim of :data:`blvnb.claims.CLAIMS`, built from the verdicts the chapters saved
  (:func:`blvnb.claims.save`); a claim no chapter evaluated is "not run", with the profile that would run it.
  Verdicts of several profiles (fresh ones in ``book/generated/verdicts/<profile>/``, committed ones in
  ``book/verdicts/<profile>/``) appear side by side.
* a "Run this chapter" box at the top of each executed chapter (:func:`run_box`): the notebook's
  parameters, read from its ``parameters`` cell, and the exact command for each profile; launch links
  (Binder, Colab, JupyterHub) when ``_config.yml`` names a repository URL.
* ``_static/plotly.min.js`` — the plotting library of the interactive figures, served by the book itself.
* ``book/generated/includes/*.md`` — the measured numbers that the hand-written pages include rather than type
  (:mod:`blvnb.pages`: the committed benchmark JSON of the quick profile's calibration, parameter counts).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments.profiles import get_profile
from blvnb.paths import repo_root  # noqa: F401  (blvnb.reproduce.repo_root, as before)

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).resolve().parent


def library_digest() -> str:
    h = hashlib.sha256()
    for p in sorted(LIBRARY.rglob("*")):
        if p.suffix in {".py", ".csv", ".yaml"} and "__pycache__" not in p.parts:
            h.update(p.relative_to(LIBRARY).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


@dataclass
class Job:
    source: Path
    output: Path
    parameters: dict

    @property
    def stamp(self) -> Path:
        return self.output.with_suffix(".stamp.json")

    def digest(self) -> str:
        blob = json.dumps({"nb": hashlib.sha256(self.source.read_bytes()).hexdigest(), "lib": library_digest(),
                           "params": self.parameters}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def fresh(self) -> bool:
        if not (self.output.is_file() and self.stamp.is_file()):
            return False
        return json.loads(self.stamp.read_text()).get("digest") == self.digest()


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch always importable in our env
        return 0


def workers_for(jobs: int | str) -> int:
    """How many processes ``--jobs`` means: a whole number as given; ``auto`` = one per GPU, or one per core
    on a machine without a GPU."""
    if jobs == "auto":
        return gpu_count() or max(1, os.cpu_count() or 1)
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1 or str(jobs).strip() != str(n):
        raise ConfigError(f"--jobs must be a whole number >= 1 or 'auto', got {jobs!r}")
    return n


def data_sets_of(plan) -> list[str]:
    """The data sets (``blvnb.data.DATASETS`` kinds) that the runs of ``plan`` train or evaluate on: each
    run's data set and UDA target, Cityscapes for every evaluated run outside VOC / ScanNet (their val
    split is Cityscapes'), and Cityscapes' coarse ``train_extra`` where a round takes extra images."""
    from blvnb.experiments.runs import DATASETS, LABEL_SPACES

    kinds = set()
    for run in plan.runs.values():
        c = run.cfg
        kinds.add(c.dataset)
        if c.target:
            kinds.add(c.target)
        if c.evaluate and c.dataset not in LABEL_SPACES:
            kinds.add("cityscapes")
        if (c.strategy_options or {}).get("extra_unlabeled"):
            kinds.add("cityscapes-coarse")
    return [k for k in (*DATASETS, "cityscapes-coarse") if k in kinds]


#: problems of one data set the batch's data check lists before "... and N more"
SHOW_PROBLEMS = 20


def check_data_root(profile: str, data_root: str, echo=print, plan=None) -> dict[str, Path]:
    """The data check of a batch (``blvnb reproduce`` / ``blvnb runs execute`` with ``--data-root D``, and
    ``blvnb data prepare --data-root D``), before any training starts: find under ``D`` each data set the
    runs of ``plan`` (default: every table of ``profile``) use (:func:`data_sets_of`; the sub-folders of
    :data:`blvnb.experiments.runs.DATASETS`); open every file of the splits a run reads and read its first
    bytes (``blvnb data check`` with ``decode=False``: a missing, unreadable, empty or mis-named file, an
    image without its label, is named); then open each split with its loader and decode one label of each
    (the id encoding, the size). Every problem of every data set is reported at once, in a
    :class:`~blvnb.errors.DatasetError`; ``blvnb data check`` then decodes every file of one data set.
    Returns kind → folder.
    """
    from blvnb.data import build_dataset
    from blvnb.data.check import CHECKS, check_tree
    from blvnb.errors import DatasetError
    from blvnb.experiments import execute as ex
    from blvnb.experiments.runs import DATASETS, dataset_root

    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"--data-root {root} does not exist or is not a folder")
    kinds = data_sets_of(plan if plan is not None else ex.plan_for(profile, None, None, str(root)))
    found, problems = {}, []
    for kind in kinds:
        where = dataset_root("cityscapes" if kind == "cityscapes-coarse" else kind, str(root))
        # every file of its splits opened, its first bytes read; a split that does not open at all (a
        # "layout" problem alone) is told below by its loader, with where it looked
        files = check_tree(where, kind, progress=False, decode=False).problems
        if any(p.kind != "layout" for p in files):
            shown = [f"{kind} ({where}): {p}" for p in files[:SHOW_PROBLEMS]]
            problems += shown + ([f"{kind} ({where}): ... and {len(files) - len(shown)} more (`blvnb data check "
                                  f"{where} --dataset {kind}` lists them all)"] if len(files) > len(shown) else [])
            continue
        splits, classes, _ = CHECKS[kind]
        counts = {}
        try:
            for split in splits:
                ds = build_dataset(kind, where, split=split, labeled=bool(classes))
                if not len(ds):
                    raise DatasetError(f"its {split} split holds no image")
                if ds.labeled:
                    ds.read_label(0)  # the id encoding and the size of one label
                counts[split] = len(ds)
        except BlvnbError as e:
            subdirs = DATASETS["cityscapes" if kind == "cityscapes-coarse" else kind][1]
            looked = (f" (no {', '.join(d + '/' for d in subdirs)} under it either)" if where == root else "")
            problems.append(f"{kind} ({where}{looked}): {str(e).splitlines()[0]}")
            continue
        found[kind] = where
        echo(f"{kind:18s} {where}: " + ", ".join(f"{n} {split}" for split, n in counts.items()))
    if problems:
        raise DatasetError(f"the data root {root} cannot run the tables of profile {profile}:\n  "
                           + "\n  ".join(problems) + "\n`blvnb data check PATH --dataset NAME` lists every "
                           "problem of one data set")
    return found


def prepare_runs(profile: str, data_root: str | None, jobs: int | str, root: Path, force: bool = False,
                 echo=print) -> int:
    """Train (or find) every run that the tables of ``profile`` need before any notebook starts, so that the
    chapters only read records: in parallel over ``jobs`` workers (one per GPU with ``gpus``, else CPU
    processes sharing the cores with ``cpus``; one worker runs them in this process). Returns the number
    of runs the plan holds. Runs a chapter adds of its own (an extra arm beside a table) still run there."""
    from blvnb.experiments import execute as ex

    os.environ.setdefault("BLVNB_RESULTS", str(root / "results"))
    plan = ex.plan_for(profile, None, None, data_root)
    workers = workers_for(jobs)
    n_gpu = gpu_count()
    if workers == 1:
        executor, kw = "local", {}
    elif n_gpu:
        executor, kw = "gpus", {"gpus": ex.visible_gpus()[:workers]}
    else:
        executor, kw = "cpus", {"jobs": workers}
    t0 = time.perf_counter()
    echo(f"[runs] {len(plan)} distinct runs for the tables of profile {profile} ({executor}, {workers} at once)")
    ex.execute(plan, executor=executor, force=force, echo=echo, **kw)
    echo(f"[runs] done in {time.perf_counter() - t0:.0f} s")
    return len(plan)


def execute(job: Job, root: Path, gpu: int | None, log_dir: Path, stream: bool = False,
            threads: int | None = None) -> tuple[Job, bool, float]:
    """Execute one notebook in a papermill subprocess (so notebooks on different GPUs share no process).

    Its output (papermill's cell progress and the notebook's own progress bars) goes to a log file, and
    also to this console when ``stream`` is set (one notebook at a time).
    """
    env = dict(os.environ)
    env.setdefault("BLVNB_RESULTS", str(root / "results"))
    env["BLVNB_NOTEBOOK"] = job.source.stem  # verdicts saved by the chapter link back to it
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads is not None:  # what the chapter computes itself (features, pseudo-label maps) is the same anywhere
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    args = [sys.executable, "-m", "papermill", str(job.source), str(job.output), "--cwd", str(root),
            "--log-output", "--request-save-on-cell-execute", "--kernel", "python3"]
    for k, v in job.parameters.items():
        args += ["-p", k, "None" if v is None else str(v)]
    job.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log_dir / f"{job.source.stem}.log", "wb") as fh:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for chunk in iter(lambda: proc.stdout.read1(4096), b""):
            fh.write(chunk)
            if stream:
                sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
        proc.wait()
    ok = proc.returncode == 0
    if ok:
        inject_run_box(job.output, job.source, root)
        job.stamp.write_text(json.dumps({"digest": job.digest(), "parameters": job.parameters}, indent=1))
    elif job.stamp.exists():
        job.stamp.unlink()
    return job, ok, time.perf_counter() - t0


def chapter_sources(root: Path, only: list[str] | None = None) -> list[Path]:
    """The notebooks ``notebooks/*.ipynb`` of ``root``, or those ``only`` names (``blv_method``,
    ``blv_method.ipynb`` or ``notebooks/blv_method.ipynb``); a name of no notebook is a ConfigError that
    lists the chapters (``blvnb reproduce`` checks this before it prepares data or trains anything)."""
    sources = sorted((root / "notebooks").glob("*.ipynb"))
    if not only:
        return sources
    wanted = {Path(n).stem for n in only}
    unknown = sorted(wanted - {s.stem for s in sources})
    if unknown:
        raise ConfigError(f"--only: no notebook named {', '.join(map(repr, unknown))} in {root / 'notebooks'}; "
                          f"the chapters are {', '.join(s.stem for s in sources) or 'none'}")
    return [s for s in sources if s.stem in wanted]


def run_notebooks(profile: str = "quick", data_root: str | None = None, only: list[str] | None = None,
                  jobs: int | str = 1, force: bool = False, root: Path | None = None,
                  out_dir: Path | None = None, echo=print, weights_dir: str | None = None) -> list[Path]:
    """Execute the notebooks; returns the executed outputs. Raises BlvnbError if any notebook failed.
    ``weights_dir``: the folder of ImageNet weights (papermill ``-p weights_dir``; the kernels also inherit
    ``$BLVNB_WEIGHTS``), a parameter only where given, so that the quick book's outputs stay fresh."""
    root = root or repo_root()
    out_dir = out_dir or root / "book" / "generated"
    sources = chapter_sources(root, only)
    params = {"profile": profile, "data_root": data_root}
    if weights_dir is not None:
        params["weights_dir"] = weights_dir
    todo = [Job(s, out_dir / s.name, params) for s in sources]
    n_gpu = gpu_count()
    workers = workers_for(jobs)
    # A chapter computes some of its values itself (logit separation, pseudo-label maps, the BLV toy): its
    # kernel gets the profile's fixed thread count, as every run does, never the machine's or the schedule's.
    threads = get_profile(profile).threads
    log_dir = out_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    pending = []
    for i, job in enumerate(todo, 1):
        if job.fresh() and not force:
            echo(f"[{i}/{len(todo)}] {job.source.name}: fresh, skipped")
        else:
            pending.append(job)
    failed = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = []
        for k, job in enumerate(pending):
            gpu = (k % n_gpu) if (n_gpu > 1 and workers > 1) else None
            echo(f"[run] {job.source.name} (profile {profile}{'' if gpu is None else f', GPU {gpu}'}); log: {log_dir / (job.source.stem + '.log')}")
            futures.append(pool.submit(execute, job, root, gpu, log_dir, workers == 1, threads))
        for f in futures:
            job, ok, secs = f.result()
            echo(f"[{'done' if ok else 'FAILED'}] {job.source.name} in {secs:.0f} s")
            if not ok:
                failed.append(job)
                if workers > 1:  # its output was not on the console: show how it ended
                    tail = (log_dir / f"{job.source.stem}.log").read_text(errors="replace").splitlines()[-15:]
                    echo("\n".join(f"    {line}" for line in tail))
    if failed:
        names = ", ".join(f"{j.source.name} (log: {log_dir / (j.source.stem + '.log')})" for j in failed)
        raise BlvnbError(f"notebook(s) failed: {names}. The other chapters ran; partial outputs are in {out_dir}; "
                         "the book was not built.")
    if out_dir == root / "book" / "generated":
        page = write_status(root, profile=profile)
        echo(f"[status] {page.relative_to(root)} and book/generated/reproduction.json")
    return [j.output for j in todo]


def build_book(root: Path | None = None, echo=print, profile: str | None = None) -> Path:
    """Write the generated pages (status page, static files), then ``jupyter-book build`` with warnings
    as errors; returns the path of index.html."""
    root = root or repo_root()
    page = write_status(root, profile=profile)
    from blvnb import pages

    includes = pages.write_includes(root)  # the numbers the hand-written pages show (benchmarks, the registry)
    copy_static(root)
    echo(f"[book] {len(includes)} generated includes in {pages.INCLUDES}")
    echo(f"[book] {page.relative_to(root)}: the reproduction status of {len(_claims().CLAIMS)} claims")
    config = build_config(root)
    args = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root), "-W",
            "--keep-going", "--config", str(config)]
    echo("[book] jupyter-book build (warnings are errors)")
    proc = subprocess.run(args, cwd=root)
    index = root / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.is_file():
        raise BlvnbError("the book build failed (see the warnings above); nothing in _build/html is current")
    from blvnb import publish

    publish.write_stamp(root)  # what `blvnb publish` checks: the commit, a clean tree, what the pages show
    return index


def repository_url(root: Path) -> str:
    """The GitHub repository of the book: ``repository: url:`` of ``_config.yml``, else the checkout's
    ``origin`` remote when it is on GitHub (a fork's book links to the fork; on GitHub Actions the
    checkout's origin is the repository being built); "" when neither names one."""
    url = ((_book_config(root).get("repository") or {}).get("url") or "").strip()
    if url:
        return url
    from blvnb.publish import is_checkout

    if not is_checkout(root):  # a copy inside another repository's folder has none of its own
        return ""
    proc = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    origin = proc.stdout.strip() if proc.returncode == 0 else ""
    for prefix in ("git@github.com:", "ssh://git@github.com/", "https://github.com/", "http://github.com/"):
        if origin.startswith(prefix):
            path = origin[len(prefix):].split("@")[-1].rstrip("/").removesuffix(".git")
            return f"https://github.com/{path}" if path.count("/") == 1 else ""
    return ""


def build_config(root: Path) -> Path:
    """``_build/_config.yml``: the book's ``_config.yml`` with its repository URL resolved
    (:func:`repository_url`). The repository and issue buttons need one (Jupyter Book refuses them without):
    where no URL is known they are left out, as are the launch links."""
    import yaml

    cfg = _book_config(root)
    url = repository_url(root)
    cfg["repository"] = {**(cfg.get("repository") or {}), "url": url}
    if not url:
        cfg["html"] = {**(cfg.get("html") or {}), "use_repository_button": False, "use_issues_button": False}
    path = root / "_build" / "_config.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by blvnb reproduce from ../_config.yml (the repository URL resolved): do not edit\n"
                    + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


# --- "Run this chapter" ------------------------------------------------------------------------------

#: What each profile needs on the command line beyond ``-p profile NAME``.
PROFILE_ARGS = {"smoke": [], "quick": [], "gpu": ["-p", "device", "cuda"],
                "paper": ["-p", "device", "cuda", "-p", "data_root", "/path/to/data"]}
PROFILE_WHERE = {"smoke": "seconds on a CPU: checks that the chapter runs",
                 "quick": "minutes on a CPU (toycity at 128×256)",
                 "gpu": "one GPU (toycity at 256×512, three seeds)",
                 "paper": "GPU servers, the real data sets under data_root"}
RUN_BOX_TAG = "run-this-chapter"


def read_parameters(notebook: Path) -> list[tuple[str, str, str]]:
    """``(name, default as written, comment)`` for each assignment of the notebook's ``parameters`` cell."""
    import ast

    nb = json.loads(Path(notebook).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            break
    else:
        raise BlvnbError(f"{notebook}: no code cell tagged 'parameters' (papermill needs one)")
    lines = src.splitlines()
    out = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            line = lines[node.lineno - 1]
            comment = line.split("#", 1)[1].strip() if "#" in line[node.value.end_col_offset:] else ""
            out.append((node.targets[0].id, ast.get_source_segment(src, node.value), comment))
    return out


def _book_config(root: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load((root / "_config.yml").read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        return {}


def launch_links(stem: str, root: Path) -> list[tuple[str, str]]:
    """(label, URL) to open ``notebooks/<stem>.ipynb`` on Binder, Colab or a JupyterHub — only when the
    book's repository (:func:`repository_url`) is on GitHub (``_config.yml``'s ``branch`` and
    ``launch_buttons:`` URLs are honoured)."""
    cfg = _book_config(root)
    repo = repository_url(root)
    if "github.com/" not in repo:
        return []
    org_repo = repo.rstrip("/").removesuffix(".git").split("github.com/", 1)[1]
    branch = (cfg.get("repository") or {}).get("branch") or "main"
    lb = cfg.get("launch_buttons") or {}
    path = f"notebooks/{stem}.ipynb"
    binder = (lb.get("binderhub_url") or "https://mybinder.org").rstrip("/")
    colab = (lb.get("colab_url") or "https://colab.research.google.com").rstrip("/")
    links = [("Binder", f"{binder}/v2/gh/{org_repo}/{branch}?labpath={path}"),
             ("Colab", f"{colab}/github/{org_repo}/blob/{branch}/{path}")]
    hub = (lb.get("jupyterhub_url") or "").rstrip("/")
    if hub:
        name = org_repo.split("/")[-1]
        links.append(("JupyterHub", f"{hub}/hub/user-redirect/git-pull?repo={repo}&branch={branch}"
                                    f"&urlpath=lab/tree/{name}/{path}"))
    return links


def papermill_command(stem: str, profile: str) -> str:
    """The exact command that executes one chapter in one profile, from the repository root."""
    args = ["papermill", f"notebooks/{stem}.ipynb", f"book/generated/{stem}.ipynb", "--cwd", ".",
            "-p", "profile", profile, *PROFILE_ARGS[profile]]
    return " ".join(args)


def _wrapped(command: str) -> str:
    """The command over two lines (shell continuation) so that it reads without scrolling."""
    head, sep, tail = command.partition(" --cwd ")
    return f"{head} \\\n    --cwd {tail}" if sep else command


def run_box(stem: str, root: Path | None = None, executed_profile: str | None = None) -> str:
    """Markdown (MyST) for the "Run this chapter" box of ``notebooks/<stem>.ipynb``."""
    root = root or repo_root()
    params = read_parameters(root / "notebooks" / f"{stem}.ipynb")
    rows = "\n".join(f"| `{n}` | `{v}` | {c.replace('|', '/')} |" for n, v, c in params)
    cmds = "\n".join(f"# {p}: {PROFILE_WHERE[p]}\n{_wrapped(papermill_command(stem, p))}\n" for p in PROFILE_ARGS)
    shown = f" This page was executed in the `{executed_profile}` profile." if executed_profile else ""
    links = launch_links(stem, root)
    launch = ("\n\nOpen the notebook on: " + " · ".join(f"[{label}]({url})" for label, url in links)
              if links else "")
    return (f"````{{admonition}} Run this chapter\n:class: tip dropdown\n\n"
            f"The notebook `notebooks/{stem}.ipynb` takes these parameters (its `parameters` cell; papermill "
            f"overrides them with `-p name value`).{shown}\n\n"
            f"| parameter | default | meaning |\n| --- | --- | --- |\n{rows}\n\n"
            f"One command per profile, run from the repository root (or `blvnb reproduce --profile NAME "
            f"--only {stem}`, which also rebuilds the book):\n\n```bash\n{cmds}```{launch}\n````\n")


def inject_run_box(output: Path, source: Path, root: Path) -> None:
    """Insert the run box as the second cell (after the title) of an executed notebook, once."""
    nb = json.loads(Path(output).read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if RUN_BOX_TAG not in c.get("metadata", {}).get("tags", [])]
    profile = None
    for c in cells:  # papermill's injected cell says which profile ran; the box shows it, the page hides it
        tags = c.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            if "remove-cell" not in tags:
                c["metadata"]["tags"] = [*tags, "remove-cell"]
            for line in "".join(c["source"]).splitlines():
                if line.replace(" ", "").startswith("profile="):
                    profile = line.split("=", 1)[1].strip().strip("\"'")
    box = {"cell_type": "markdown", "id": "run-this-chapter", "metadata": {"tags": [RUN_BOX_TAG]},
           "source": run_box(source.stem, root, profile).splitlines(keepends=True)}
    first = next((i for i, c in enumerate(cells) if c["cell_type"] == "markdown"), -1)
    cells.insert(first + 1, box)
    nb["cells"] = cells
    from blvnb.io import atomic_write

    atomic_write(Path(output), lambda tmp: tmp.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8"))


def copy_static(root: Path) -> list[Path]:
    """Copy the interactive figures' JavaScript into ``_static/`` (served by the book, never a CDN)."""
    from blvnb.viz import interactive

    return [interactive.write_plotly_js(root / "_static")]


# --- the reproduction status page ----------------------------------------------------------------------

def _claims():
    from blvnb import claims

    return claims


def verdict_dirs(root: Path) -> list[Path]:
    """Where verdicts are read from: the chapters' fresh ones, then committed ones (``book/verdicts``)."""
    dirs = [_claims().verdict_dir(root), root / "book" / "verdicts"]
    return list(dict.fromkeys(dirs))


def collect_verdicts(root: Path) -> dict[tuple[str, str], dict]:
    """``{(claim id, profile): verdict dict}`` from every verdict directory (the first one found wins)."""
    known = {c.id for c in _claims().CLAIMS}
    out: dict[tuple[str, str], dict] = {}
    for d in verdict_dirs(root):
        for path in sorted(d.glob("*/*.json")) if d.is_dir() else []:
            try:
                rec = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BlvnbError(f"unreadable verdict file {path}: {exc}; delete it and re-run its chapter") from None
            key = (rec.get("claim"), rec.get("profile"))
            if key[0] in known and key not in out:
                out[key] = rec
    return out


def _executed_profile(root: Path) -> str | None:
    """The profile the executed chapters in book/generated ran in (their papermill stamps say)."""
    profiles = []
    for stamp in (root / "book" / "generated").glob("*.stamp.json"):
        try:
            profiles.append(json.loads(stamp.read_text())["parameters"]["profile"])
        except (OSError, ValueError, KeyError):
            continue
    return max(set(profiles), key=profiles.count) if profiles else None


def paper_values(claim) -> dict[str, float]:
    """The paper's value of each arm the claim names a cell for (``paper_cells``), from
    :func:`blvnb.paper.cells`; arms whose cell is not found (or not unique) are left out."""
    import re

    try:
        from blvnb import paper as paper_data

        cells = list(paper_data.cells(paper=claim.paper, table=int(claim.table[1:])))
    except Exception:  # the numbers as data may be absent: the page shows "—"
        return {}

    def norm(s) -> str:
        s = str(s).lower().replace("‡", "ddagger").replace("†", "dagger").replace("*", "star")
        return re.sub(r"[\W_]+", "", s)

    def pick(key: str, want: str) -> set[int]:
        exact = {i for i, c in enumerate(cells) if norm(c.get(key)) == want}
        return exact or {i for i, c in enumerate(cells) if want and want in norm(c.get(key))}

    out = {}
    for arm, where in (claim.paper_cells or {}).items():
        hit = pick("row", norm(where.get("row", ""))) & pick("column", norm(where.get("column", "")))
        if len(hit) == 1:
            value = cells[hit.pop()].get("value")
            if isinstance(value, (int, float)) and value == value:
                out[arm] = float(value)
    return out


def table_data_conflicts(root: Path, profiles) -> dict[str, dict[str, list[dict]]]:
    """``{profile: {table: conflicts}}``: the tables whose runs read one split in different versions (their
    records' data fingerprints, :func:`blvnb.experiments.execute.data_conflicts`), over the records the
    chapters render: committed ones, else the results store the notebooks write ($BLVNB_RESULTS, default
    ``root/results``). Profiles this blvnb does not know are left out."""
    from blvnb.experiments import execute as ex

    results = Path(os.environ.get("BLVNB_RESULTS") or root / "results")
    out: dict[str, dict[str, list[dict]]] = {}
    for p in profiles:
        try:
            get_profile(p)
        except ConfigError:
            continue
        for c in ex.data_conflicts(p, results):
            out.setdefault(p, {}).setdefault(c["table"], []).append(c)
    return out


def status_records(root: Path, profile: str | None = None) -> list[dict]:
    """One object per claim: its verdict in ``profile`` (else in the largest profile that has one, else
    "not run"), with every profile's verdict under ``profiles``, and under ``data_conflicts`` (profile →
    list) the splits that the runs of its table read in different versions, where there are any."""
    claims = _claims()
    found = collect_verdicts(root)
    profile = profile or _executed_profile(root) or "quick"
    order = claims.PROFILE_ORDER
    conflicts = table_data_conflicts(root, dict.fromkeys([profile, *(p for _, p in found)]))
    records = []
    for c in claims.CLAIMS:
        per = {p: found[(c.id, p)] for p in order if (c.id, p) in found}
        per.update({p: v for (cid, p), v in found.items() if cid == c.id and p not in per})
        if profile in per:
            main = per[profile]
        elif per:
            main = per[max(per, key=lambda p: order.index(p) if p in order else -1)]
        else:
            main = c.not_run(profile).to_dict()
        rec = {**main, "kind": c.kind,
               "profiles": {p: {"verdict": v["verdict"], "seeds": v["seeds"], "version": v.get("version")}
                            for p, v in per.items()},
               "paper_values": paper_values(c) if c.kind == "reproduction" else {}}
        mixed = {p: by_table[c.source] for p, by_table in conflicts.items() if c.source in by_table}
        if mixed:
            rec["data_conflicts"] = mixed
        records.append(rec)
    return records


def _link(rec: dict, root: Path) -> str:
    chapter = rec.get("chapter")
    if not chapter:
        return "—"
    anchor = "verdict-" + "".join(ch if ch.isalnum() else "-" for ch in rec["claim"].lower()).strip("-")
    while "--" in anchor:
        anchor = anchor.replace("--", "-")
    return f'<a href="generated/{chapter}.html#{anchor}">{chapter}</a>'


def render_status(records: list[dict], profile: str, root: Path) -> str:
    """The Markdown of ``book/reproduction.md``."""
    import datetime

    found = collect_verdicts(root)
    per_profile = {r["claim"]: {p: v for (cid, p), v in found.items() if cid == r["claim"]} for r in records}

    from blvnb import __version__

    claims = _claims()
    outcomes = claims.OUTCOMES
    profiles = sorted({p for r in records for p in r["profiles"]} | {profile},
                      key=lambda p: claims.PROFILE_ORDER.index(p) if p in claims.PROFILE_ORDER else 99)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Reproduction status", "",
             f"Generated by `blvnb reproduce` on {when} with blvnb {__version__} from the verdicts the chapters "
             f"computed (profile{'s' if len(profiles) > 1 else ''}: {', '.join(f'`{p}`' for p in profiles)}). "
             "Nothing on this page is typed by hand: each claim of the papers is stated in our words in "
             "`blvnb/claims.yaml` with the rule that decides it, and each verdict below is that rule applied "
             "to our per-seed results.", "",
             "- **reproduced** — the 95 % t-interval of the seed-paired difference lies wholly on the claimed side "
             "of the margin;",
             "- **not reproduced** — it lies wholly on the other side: *at this scale, our runs contradict the "
             "claim*;",
             "- **inconclusive** — the interval straddles the margin, or there were fewer seeds than the rule needs;",
             "- **not run** — no chapter has evaluated the claim in this profile yet; the column *runs in* names the "
             "smallest profile whose chapter runs it.", "",
             "Verdicts of the `smoke` and `quick` profiles speak about the *direction* of an effect on toy data; "
             "only the `paper` profile can confirm the papers' absolute numbers. Implementation checks (tests of our "
             "code on inputs built for them, which cannot speak for or against a paper) are listed apart at the end "
             "and counted in no summary row. The machine-readable form of this page is "
             "`book/generated/reproduction.json`.", "", "## Summary", "",
             "| paper | profile | " + " | ".join(outcomes) + " | claims |",
             "| --- | --- | " + " | ".join("---:" for _ in outcomes) + " | ---: |"]
    checks = [r for r in records if r.get("kind") == "check"]
    records = [r for r in records if r.get("kind", "reproduction") == "reproduction"]
    for paper in ("blv", "dars"):
        mine = [r for r in records if r["paper"] == paper]
        for p in profiles:
            counts = {o: 0 for o in outcomes}
            for r in mine:
                counts[r["profiles"].get(p, {}).get("verdict", "not run")] += 1
            lines.append(f"| {paper.upper()} | `{p}` | " + " | ".join(str(counts[o]) for o in outcomes) +
                         f" | {len(mine)} |")
    lines += _conflict_section(records + checks)
    for paper, title in (("blv", "BLV (CVPR 2023)"), ("dars", "DARS (ICCV 2021)")):
        lines += ["", f"## {title}"]
        mine = [r for r in records if r["paper"] == paper]
        tables = list(dict.fromkeys(r["table"] for r in mine))
        tables.sort(key=lambda t: (t.startswith("Fig"), int("".join(ch for ch in t if ch.isdigit()) or 0)))
        for t in tables:
            name = f"Table {t[1:]}" if t.startswith("T") else t.replace("Fig.", "Figure")
            lines += ["", f"### {paper.upper()} {name}", "",
                      "| claim | paper | " + " | ".join(f"ours ({p}) | verdict ({p})" for p in profiles) + " | chapter |",
                      "| --- | --- | " + " | ".join("--- | ---" for _ in profiles) + " | --- |"]
            for r in (r for r in mine if r["table"] == t):
                pv = ", ".join(f"{a} {v:g}" for a, v in r["paper_values"].items()) or "—"
                cols = []
                for p in profiles:
                    rec = per_profile[r["claim"]].get(p)
                    v = (rec or {}).get("verdict", "not run")
                    ours = _ours(rec) if rec else "—"
                    n = len((rec or {}).get("seeds") or [])
                    extra = (f" ({n} seed{'s' if n != 1 else ''})" if n else
                             f" (runs in `{r.get('would_run', 'quick')}`)")
                    cols.append(f"{ours} | {claims.MARKS[v]} {v}{extra}{_data_flag(r, p)}")
                stmt = r["statement"].replace("|", "/")
                row_id = f'<span id="{claims.status_anchor(r["claim"])}"></span>'  # the chapters' verdicts link here
                lines.append(f"| {row_id}{stmt}<br>`{r['claim']}` | {pv} | " + " | ".join(cols) + f" | {_link(r, root)} |")
    if checks:
        lines += ["", "## Implementation checks", "",
                  "Each checks that our code does what a paper's method prescribes, on inputs built for the purpose; "
                  "none reproduces a number of the papers, and none is counted in the summary above.", "",
                  "| check | " + " | ".join(f"ours ({p}) | outcome ({p})" for p in profiles) + " | chapter |",
                  "| --- | " + " | ".join("--- | ---" for _ in profiles) + " | --- |"]
        for r in checks:
            cols = []
            for p in profiles:
                rec = per_profile[r["claim"]].get(p)
                v = (rec or {}).get("verdict", "not run")
                cols.append(f"{_ours(rec) if rec else '—'} | {claims.MARKS[v]} {v}{_data_flag(r, p)}")
            stmt = r["statement"].replace("|", "/")
            row_id = f'<span id="{claims.status_anchor(r["claim"])}"></span>'
            lines.append(f"| {row_id}{stmt}<br>`{r['claim']}` | " + " | ".join(cols) + f" | {_link(r, root)} |")
    return "\n".join(lines) + "\n"


def _data_flag(rec: dict, profile: str) -> str:
    """The mark of a claim whose table's runs read different data in ``profile`` (a link to the section)."""
    return ' <a href="#data-fingerprints">⚠ data differ</a>' if profile in rec.get("data_conflicts", {}) else ""


def _conflict_section(records: list[dict]) -> list[str]:
    """The status page's section on tables whose runs read a split in different versions (none: nothing)."""
    from blvnb.experiments.execute import describe_conflict

    seen = {}
    for r in records:
        for p, conflicts in r.get("data_conflicts", {}).items():
            for c in conflicts:
                seen[(p, c["table"], c["split"])] = describe_conflict(c, p)
    if not seen:
        return []
    return ["", '<span id="data-fingerprints"></span>', "", "## Runs of one table on different data", "",
            "The runs of these tables read one split in different versions: their records' data fingerprints "
            "(the number of files, their total size, a hash of their names and sizes) differ — a partial copy "
            "of a data set on one machine, the full one on another. Their verdicts compare runs trained on "
            "different data; run them again on one copy.", "",
            *(f"- {line}" for line in seen.values())]


def _ours(rec: dict) -> str:
    vals = rec.get("values") or {}
    if not vals:
        return "—"
    import math

    def fmt(x: float) -> str:
        return f"{x:.3g}" if math.isfinite(x) else str(x)

    return ", ".join(f"{a} {fmt(sum(v) / len(v))}" for a, v in vals.items() if v)


def write_status(root: Path | None = None, profile: str | None = None) -> Path:
    """Write ``book/reproduction.md`` and ``book/generated/reproduction.json``; returns the page's path.

    Always written (also with no verdicts at all, when every claim is "not run"), so the book builds."""
    from blvnb.io import write_json_atomic

    root = root or repo_root()
    profile = profile or _executed_profile(root) or "quick"
    records = status_records(root, profile)
    gen = root / "book" / "generated"
    gen.mkdir(parents=True, exist_ok=True)
    write_json_atomic(gen / "reproduction.json", records)
    page = root / "book" / "reproduction.md"
    text = render_status(records, profile, root)
    from blvnb.io import atomic_write

    atomic_write(page, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return page
