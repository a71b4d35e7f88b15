"""The results store: one JSON record per run, keyed by a hash of the run's config and the library version.

``results/<profile>/<table>/<key>.json``, written atomically (temp file + rename). Asking for a run
whose record exists reads it back, so rebuilding the book after editing a page costs nothing, and a
changed config (or a new library version) re-runs only what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import blvnb


def results_root() -> Path:
    """$BLVNB_RESULTS, else ./results (``blvnb reproduce`` runs notebooks from the repository root)."""
    return Path(os.environ.get("BLVNB_RESULTS", "results")).resolve()


def config_key(config: dict) -> str:
    """A short stable hash of the config (sorted JSON) and the library version."""
    blob = json.dumps({"config": config, "version": blvnb.__version__}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def record_path(profile: str, table: str, config: dict, root: Path | None = None) -> Path:
    return (root or results_root()) / profile / table / f"{config_key(config)}.json"


def write_json_atomic(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def load(profile: str, table: str, config: dict, root: Path | None = None) -> dict | None:
    path = record_path(profile, table, config, root)
    return json.loads(path.read_text()) if path.is_file() else None


def get_or_run(profile: str, table: str, config: dict, run: Callable[[], dict], root: Path | None = None,
               force: bool = False) -> dict:
    """The stored record for ``config``, or ``run()`` it, store the result and return it."""
    path = record_path(profile, table, config, root)
    if path.is_file() and not force:
        rec = json.loads(path.read_text())
        rec["cached"] = True
        return rec
    result = run()
    rec = {"profile": profile, "table": table, "key": path.stem, "config": config, "version": blvnb.__version__,
           "git": git_revision(), **result}
    write_json_atomic(path, rec)
    rec["cached"] = False
    return rec
