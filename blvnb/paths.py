"""Where the checkout is: the one place that finds the repository's root (the book's sources)."""

from __future__ import annotations

from pathlib import Path

from blvnb.errors import BlvnbError


def repo_root(start: Path | None = None) -> Path:
    """The checkout holding ``_config.yml`` and ``notebooks/`` (searching upwards from the cwd)."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_config.yml").is_file() and (d / "notebooks").is_dir():
            return d
    raise BlvnbError(f"no blvnb checkout found at or above {here}: run this from the repository (where _config.yml is)")
