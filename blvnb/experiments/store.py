"""The results store: one JSON record per run, keyed by what the run computes.

``<results>/<profile>/runs/<key>.json``, ``<key>`` a hash of the run's config (strategy, model, loss and
options, data, schedule, seed, scale — never the table that shows it) and the library version; beside it
``<key>.ckpt.pt`` (the checkpoint: an interrupted run resumes from it, later runs load its weights),
``<key>.work/`` (the run's own files, e.g. a DARS round's pseudo labels) and ``<key>.lock``.

* Writes are atomic (temporary name unique per process, then rename), so a reader never sees half a file.
* A run holds an exclusive lock (``fcntl.flock`` on ``<key>.lock``) while it trains, so two processes
  asking for one config do not train it twice nor corrupt each other: the second waits, then reads the
  first one's record (issue 14 #7).
* Names that reach the file system (the profile, the key) are validated: nothing is written outside the
  results root (issue 14 #6).
* A record that cannot be read, or lacks its metrics, is a :class:`~blvnb.errors.BlvnbError` naming
  the file and what to do (delete it, or force the run).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import blvnb
from blvnb.errors import BlvnbError, ConfigError
from blvnb.io import write_json_atomic

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def results_root() -> Path:
    """$BLVNB_RESULTS, else ./results (``blvnb reproduce`` runs notebooks from the repository root)."""
    return Path(os.environ.get("BLVNB_RESULTS", "results")).resolve()


def check_name(name: str, what: str = "name") -> str:
    """A name that becomes a path component: letters, digits, ``_ . -``, not starting with a dot."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} cannot be used as a file name: use letters, digits, '_', '.', '-' "
                          "(no path separators, no leading dot, no '..', at most 100 characters)")
    return name


#: how a key is made from a run's config (:func:`config_key`); every record states it, so that a record
#: written under another scheme is refused by name instead of matching the wrong run
KEY_SCHEME = 1


def config_key(config: dict, version: str | None = None) -> str:
    """A short stable hash of the config (sorted JSON) and the library version (this one, or the
    ``version`` a record was computed with, to check an old record's key against its own config)."""
    blob = json.dumps({"config": config, "version": blvnb.__version__ if version is None else version},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_dir(profile: str, root: Path | None = None) -> Path:
    return (root or results_root()) / check_name(profile, "profile") / "runs"


def record_path(profile: str, key: str, root: Path | None = None) -> Path:
    return run_dir(profile, root) / f"{check_name(key, 'run key')}.json"


def checkpoint_path(profile: str, key: str, root: Path | None = None) -> Path:
    return run_dir(profile, root) / f"{check_name(key, 'run key')}.ckpt.pt"


def work_dir(profile: str, key: str, root: Path | None = None) -> Path:
    return run_dir(profile, root) / f"{check_name(key, 'run key')}.work"


@contextlib.contextmanager
def locked(profile: str, key: str, root: Path | None = None) -> Iterator[None]:
    """Hold the run's exclusive lock (blocks while another process holds it)."""
    path = run_dir(profile, root) / f"{check_name(key, 'run key')}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_record(path: Path, require_metrics: bool = True) -> dict:
    """A stored record; unreadable JSON, a non-record or missing metrics → BlvnbError naming the file."""
    hint = "delete it, or run again with force=True (blvnb ... --force), to recompute it"
    try:
        rec = json.loads(Path(path).read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BlvnbError(f"result record {path} is unreadable ({type(exc).__name__}: {str(exc)[:120]}); {hint}") from exc
    if not isinstance(rec, dict) or "config" not in rec:
        raise BlvnbError(f"result record {path} is not a blvnb run record; {hint}")
    metrics = rec.get("metrics")
    if require_metrics and (not isinstance(metrics, dict) or ("mIoU" not in metrics and metrics.get("evaluated", True))):
        raise BlvnbError(f"result record {path} has no metrics (mIoU); {hint}")
    return rec


def load(profile: str, key: str, root: Path | None = None) -> dict | None:
    path = record_path(profile, key, root)
    return read_record(path) if path.is_file() else None


def get_or_run(profile: str, key: str, config: dict, run: Callable[[], dict], root: Path | None = None,
               force: bool = False, lock: bool = True, write: bool = True) -> dict:
    """The stored record ``<profile>/runs/<key>.json``, or ``run()``, store the result and return it.

    Under the run's lock; ``lock=write=False`` on the DDP ranks other than 0 (rank 0 locks and writes). ``force``
    computes it again even when the record exists (``run`` is responsible for starting from scratch).
    """
    path = record_path(profile, key, root)
    with locked(profile, key, root) if lock else contextlib.nullcontext():
        if path.is_file() and not force:
            rec = read_record(path)
            rec["cached"] = True
            return rec
        result = run()
        rec = {"profile": profile, "key": key, "key_scheme": KEY_SCHEME, "config": config,
               "version": blvnb.__version__, "git": git_revision(), **result}
        if write:
            write_json_atomic(path, rec)
    rec["cached"] = False
    return rec
