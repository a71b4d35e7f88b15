"""Run the notebooks with papermill and build the book.

``blvnb reproduce --profile quick`` executes every ``notebooks/*.ipynb`` into ``book/generated/``
(skipping those whose notebook, library source and parameters are unchanged since their last successful
run), in parallel over GPUs when there are several, then builds ``_build/html`` with Jupyter Book,
warnings as errors. A notebook that fails stops the build: its partial output stays in
``book/generated/`` for inspection and the command exits non-zero.
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

log = logging.getLogger(__name__)

LIBRARY = Path(__file__).resolve().parent


def repo_root(start: Path | None = None) -> Path:
    """The checkout holding ``_config.yml`` and ``notebooks/`` (searching upwards from the cwd)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").is_file() and (d / "notebooks").is_dir():
            return d
    raise BlvnbError(f"no blvnb checkout found at or above {here}: run this from the repository (where _config.yml is)")


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


def execute(job: Job, root: Path, gpu: int | None, log_dir: Path, stream: bool = False) -> tuple[Job, bool, float]:
    """Execute one notebook in a papermill subprocess (so notebooks on different GPUs share no process).

    Its output (papermill's cell progress and the notebook's own progress bars) goes to a log file, and
    also to this console when ``stream`` is set (one notebook at a time).
    """
    env = dict(os.environ)
    env.setdefault("BLVNB_RESULTS", str(root / "results"))
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu)
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
        job.stamp.write_text(json.dumps({"digest": job.digest(), "parameters": job.parameters}, indent=1))
    elif job.stamp.exists():
        job.stamp.unlink()
    return job, ok, time.perf_counter() - t0


def run_notebooks(profile: str = "quick", data_root: str | None = None, only: list[str] | None = None,
                  jobs: int | str = 1, force: bool = False, root: Path | None = None,
                  out_dir: Path | None = None, echo=print) -> list[Path]:
    """Execute the notebooks; returns the executed outputs. Raises BlvnbError if any notebook failed."""
    root = root or repo_root()
    out_dir = out_dir or root / "book" / "generated"
    sources = sorted((root / "notebooks").glob("*.ipynb"))
    if only:
        wanted = {Path(n).stem for n in only}
        unknown = wanted - {s.stem for s in sources}
        if unknown:
            raise ConfigError(f"no notebook named {sorted(unknown)}; have: {[s.stem for s in sources]}")
        sources = [s for s in sources if s.stem in wanted]
    params = {"profile": profile, "data_root": data_root}
    todo = [Job(s, out_dir / s.name, params) for s in sources]
    n_gpu = gpu_count()
    workers = (max(1, n_gpu) if jobs == "auto" else int(jobs))
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
            futures.append(pool.submit(execute, job, root, gpu, log_dir, workers == 1))
        for f in futures:
            job, ok, secs = f.result()
            echo(f"[{'done' if ok else 'FAILED'}] {job.source.name} in {secs:.0f} s")
            if not ok:
                failed.append(job)
    if failed:
        names = ", ".join(j.source.name for j in failed)
        raise BlvnbError(f"notebook(s) failed: {names}. Partial outputs are in {out_dir}, logs in {log_dir}; "
                         "the book was not built.")
    return [j.output for j in todo]


def build_book(root: Path | None = None, echo=print) -> Path:
    """``jupyter-book build`` with warnings as errors; returns the path of index.html."""
    root = root or repo_root()
    args = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(root), "-W",
            "--keep-going"]
    echo("[book] jupyter-book build (warnings are errors)")
    proc = subprocess.run(args, cwd=root)
    index = root / "_build" / "html" / "index.html"
    if proc.returncode != 0 or not index.is_file():
        raise BlvnbError("the book build failed (see the warnings above); nothing in _build/html is current")
    return index
