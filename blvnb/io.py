"""Atomic file writes: the one place where a file is written beside its target and renamed over it.

The temporary name is unique per process and thread, so two processes writing the same target never
share a temporary file; the last rename wins, and a reader never sees a half-written file. A write that
fails (disk full, I/O error) leaves the target as it was, removes its temporary file and raises a
:class:`~blvnb.errors.WriteError` naming the target and the error (issue 22).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path

from blvnb.errors import WriteError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path beside ``path``, then rename it to ``path``; an OSError
    on the way is a :class:`~blvnb.errors.WriteError` naming ``path``, and ``path`` is left unchanged."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as exc:
        kept = "its previous version is kept unchanged" if path.exists() else "nothing was written"
        raise WriteError(f"could not write {path} ({type(exc).__name__}: {exc}); {kept}. Free space on "
                         f"{path.parent} (or mend the disk) and run the same command again") from exc
    finally:
        with contextlib.suppress(OSError):  # a failing disk may fail this too; the write's error is the news
            if tmp.exists():
                tmp.unlink()
    return path


def write_json_atomic(path: str | Path, obj) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1, default=str)))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks: a weights file's or a checkpoint's identity."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
