"""Records computed elsewhere: a committed folder of run records that the book renders, never recomputes.

A GPU server (``gpu`` profile) or a cluster (``paper`` profile) writes its records to its own results
store, ``results/<profile>/runs/<key>.json``. ``blvnb runs import DIR`` validates them and copies them
into the repository's ``records/<profile>/runs/<key>.json`` (tracked in git). Asking for a run whose
record is committed there returns that record: it is not computed again unless forced.

The hook for the results store (:mod:`blvnb.experiments.runs` / ``store``) is one call::

    rec = records.committed(cfg.profile, cfg.key())    # dict, or None when nothing is committed
    if rec is not None and not force:
        return rec

``$BLVNB_RECORDS`` moves the committed folder (tests, or a checkout elsewhere); by default it is
``records/`` at the root of the checkout that holds this package.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

from blvnb.classes import NUM_CLASSES
from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments import store
from blvnb.io import write_json_atomic

#: what every record must carry to be committed: where and with what it was computed, and its metrics
REQUIRED_FIELDS = ("key", "profile", "config", "metrics", "version", "git", "device")
REQUIRED_METRICS = ("mIoU", "mIoU_head_blv", "mIoU_tail_blv", "iou")


class RecordError(BlvnbError):
    """A record file is not a valid run record (bad JSON, missing fields or metrics)."""


def records_root() -> Path:
    """``$BLVNB_RECORDS``, else ``records/`` beside the ``blvnb`` package (the checkout's root)."""
    env = os.environ.get("BLVNB_RECORDS")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "records"


def record_path(profile: str, key: str, root: Path | None = None) -> Path:
    """Where the committed record of run ``key`` of ``profile`` lives (both names checked as the results
    store checks them: nothing lands outside ``records/``)."""
    return (root or records_root()) / store.check_name(profile, "profile") / "runs" / \
        f"{store.check_name(key, 'run key')}.json"


def committed(profile: str, key: str, root: Path | None = None) -> dict | None:
    """The committed record of run ``key`` (``cached=True``, ``committed=True`` added), or None.

    A committed file that does not validate raises :class:`RecordError` naming it: a broken record in
    git should stop the book, not be silently recomputed.
    """
    path = record_path(profile, key, root)
    if not path.is_file():
        return None
    rec = load_record(path)
    if rec["key"] != key or rec["profile"] != profile:
        raise RecordError(f"{path}: holds run {rec['key']!r} of profile {rec['profile']!r}, "
                          f"but its place says run {key!r} of profile {profile!r}; re-import it with "
                          "`blvnb runs import`")
    return {**rec, "cached": True, "committed": True}


def load_record(path: str | Path) -> dict:
    """Read and validate one record file; :class:`RecordError` names the file and what is wrong."""
    path = Path(path)
    try:
        rec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{path}: cannot read it ({exc})") from None
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    validate(rec, path)
    return rec


def validate(rec, path: str | Path = "<record>") -> None:
    """Check a record has what the book needs: :data:`REQUIRED_FIELDS` and :data:`REQUIRED_METRICS`
    (``iou`` = 19 numbers in train-id order, each in [0, 100] or NaN for a class absent everywhere)."""
    if not isinstance(rec, dict):
        raise RecordError(f"{path}: a run record is a JSON object, found {type(rec).__name__}")
    if rec.get("dry_run"):
        raise RecordError(f"{path}: a placeholder written by `blvnb runs execute --dry-run`, not a computed run")
    missing = [f for f in REQUIRED_FIELDS if f not in rec]
    if missing:
        raise RecordError(f"{path}: missing field(s) {missing}; a run record needs {list(REQUIRED_FIELDS)} "
                          "(written by blvnb.experiments.runs.run)")
    for field in ("key", "profile"):  # both become folder and file names in records/
        try:
            store.check_name(rec[field], field)
        except ConfigError as exc:
            raise RecordError(f"{path}: field {field!r}: {exc}") from None
    scheme = rec.get("key_scheme", 1)  # records written before the scheme was stated used scheme 1
    if scheme != store.KEY_SCHEME:
        raise RecordError(f"{path}: field 'key_scheme' is {scheme!r}, but this blvnb makes keys with scheme "
                          f"{store.KEY_SCHEME}; import it with the blvnb version that wrote it ({rec.get('version')!r})")
    if not isinstance(rec["config"], dict):
        raise RecordError(f"{path}: field 'config' must be an object, found {type(rec['config']).__name__}")
    own = store.config_key(rec["config"], rec["version"])
    if rec["key"] != own:
        raise RecordError(f"{path}: field 'key' is {rec['key']!r} but its own 'config' (version "
                          f"{rec['version']!r}) has key {own!r}: the config was edited after the run, or the "
                          "record belongs to another run")
    _check_data_fields(rec, path)
    metrics = rec["metrics"]
    if not isinstance(metrics, dict):
        raise RecordError(f"{path}: 'metrics' must be an object, found {type(metrics).__name__}")
    if metrics.get("evaluated") is False:  # a toy pretraining run: trained, never evaluated
        return
    missing = [m for m in REQUIRED_METRICS if m not in metrics]
    if missing:
        raise RecordError(f"{path}: metrics lack {missing}; needed: {list(REQUIRED_METRICS)}")
    for m in REQUIRED_METRICS[:-1]:
        if not _is_number(metrics[m]):
            raise RecordError(f"{path}: metric {m!r} must be a number, found {metrics[m]!r}")
    iou = metrics["iou"]
    if not (isinstance(iou, list) and len(iou) == NUM_CLASSES and all(_is_number(v) for v in iou)):
        raise RecordError(f"{path}: metric 'iou' must be a list of {NUM_CLASSES} numbers (train-id order)")


def _check_data_fields(rec: dict, path) -> None:
    """``data_fingerprint`` (split → ``{"files", "bytes", "sha256"}``) and ``data_check`` (the batch's data
    check: "passed", "skipped" or null), where a record has them (records before them have neither)."""
    fps = rec.get("data_fingerprint")
    if fps is not None:
        ok = isinstance(fps, dict) and all(
            isinstance(split, str) and isinstance(fp, dict) and isinstance(fp.get("sha256"), str)
            and all(isinstance(fp.get(n), int) and not isinstance(fp.get(n), bool) and fp[n] >= 0
                    for n in ("files", "bytes")) for split, fp in fps.items())
        if not ok:
            raise RecordError(f"{path}: field 'data_fingerprint' must map each split to {{'files': int, "
                              f"'bytes': int, 'sha256': str}} (blvnb.data.fingerprint), found {fps!r:.200}")
    if rec.get("data_check") not in (None, "passed", "skipped"):
        raise RecordError(f"{path}: field 'data_check' must be 'passed', 'skipped' or null, "
                          f"found {rec['data_check']!r}")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and (math.isnan(v) or math.isfinite(v))


def find_record_files(src: str | Path) -> list[Path]:
    """Record files under ``src``: a results store (``<profile>/runs/*.json``), a ``runs/`` folder, or
    single files; hidden temp files of atomic writes are skipped."""
    src = Path(src).expanduser()
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise BlvnbError(f"{src}: no such file or folder; give the results folder of the machine that ran "
                         "the runs (e.g. results/, or results/gpu/runs/)")
    files = sorted(p for p in src.rglob("*.json") if not p.name.startswith(".")
                   and (p.parent.name == "runs" or p.parent == src))
    return files


def import_records(src: str | Path, root: Path | None = None, profile: str | None = None,
                   overwrite: bool = False) -> list[Path]:
    """Validate every record under ``src`` and copy it to ``records/<profile>/runs/<key>.json``.

    All files are validated before any is copied, so a bad file leaves the committed folder unchanged.
    ``profile`` keeps only that profile's records (others are skipped, not errors). A committed record
    that differs from the incoming one is replaced only with ``overwrite``. Returns the paths written.
    """
    files = find_record_files(src)
    if not files:
        raise BlvnbError(f"{src}: no run records (*.json under <profile>/runs/) found")
    recs = []
    for f in files:
        rec = load_record(f)
        if f.stem != rec["key"] and f.parent.name == "runs":
            raise RecordError(f"{f}: file name says run {f.stem!r} but the record is run {rec['key']!r}")
        if profile is None or rec["profile"] == profile:
            recs.append((f, rec))
    if not recs:
        raise BlvnbError(f"{src}: no record of profile {profile!r} among {len(files)} file(s)")
    written = []
    for f, rec in recs:
        dest = record_path(rec["profile"], rec["key"], root)
        clean = {k: v for k, v in rec.items() if k not in ("cached", "committed")}
        if dest.is_file() and not overwrite:
            old = json.loads(dest.read_text())
            if old == clean:
                continue
            raise BlvnbError(f"{dest}: a different record of run {rec['key']!r} is already committed; "
                             f"pass --overwrite to replace it with the one from {f}")
        write_json_atomic(dest, clean)
        written.append(dest)
    return written


def list_committed(profile: str, root: Path | None = None) -> Iterable[str]:
    """Keys of the runs committed for ``profile``."""
    d = (root or records_root()) / profile / "runs"
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []
