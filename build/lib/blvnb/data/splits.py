"""Nested labelled/unlabelled splits for semi-supervised training (1/16 ⊂ 1/8 ⊂ 1/4 ⊂ 1/2).

One seeded permutation of the sorted names; the split for fraction f labels its first
``round_half_up(n·f)`` names, so smaller splits are subsets of larger ones by construction. On
Cityscapes' 2975 training images this gives 186, 372, 744 and 1488 labelled images, the papers' sizes.

The permutation orders names by a keyed hash (BLAKE2b of ``"<seed>:<name>"``), so it depends on the
seed and the names only, never on a numpy or torch version. Splits are written as text lists
(:func:`save_splits`) so that a run can be repeated from the files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path

from blvnb.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4, 1 / 2)


def parse_fraction(value: str | float | Fraction) -> Fraction:
    """``"1/8"``, ``"1_8"``, ``"0.125"`` or ``0.125`` -> ``Fraction(1, 8)``; must lie in (0, 1)."""
    try:
        if isinstance(value, str):
            frac = Fraction(value.strip().replace("_", "/"))
        else:
            frac = Fraction(value).limit_denominator(10_000)
    except (ValueError, ZeroDivisionError, TypeError) as e:
        raise ConfigError(f"cannot read {value!r} as a fraction; expected e.g. '1/8' or 0.125") from e
    if not 0 < frac < 1:
        raise ConfigError(f"a labelled fraction must lie strictly between 0 and 1, got {value!r}")
    return frac


def fraction_text(value: str | float | Fraction) -> str:
    """``0.125`` -> ``"1/8"`` (the key of :func:`nested_splits`)."""
    frac = parse_fraction(value)
    return f"{frac.numerator}/{frac.denominator}"


def labeled_count(n: int, fraction: str | float | Fraction) -> int:
    """``round(n · f)`` with halves rounded up (2975 · 1/2 = 1487.5 -> 1488)."""
    return math.floor(n * parse_fraction(fraction) + Fraction(1, 2))


def _order_key(seed: int, name: str) -> bytes:
    return hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=16).digest()


def nested_splits(
    names: Iterable[str], seed: int = 0, fractions: Sequence[str | float] = DEFAULT_FRACTIONS
) -> dict[str, dict[str, list[str]]]:
    """``{"1/16": {"labeled": [...], "unlabeled": [...]}, "1/8": ..., ...}``, nested, both lists sorted.

    Raises DatasetError for duplicate names or when a split would be empty (too few names).
    """
    pool = sorted(str(n) for n in names)
    if len(set(pool)) != len(pool):
        raise DatasetError("nested_splits: the list of names has duplicates")
    perm = sorted(pool, key=lambda nm: (_order_key(seed, nm), nm))
    out: dict[str, dict[str, list[str]]] = {}
    for f in sorted(fractions, key=parse_fraction):
        k = labeled_count(len(pool), f)
        key = fraction_text(f)
        if k == 0 or k == len(pool):
            raise DatasetError(
                f"split {key} of {len(pool)} names would have {k} labelled and {len(pool) - k} unlabelled images; "
                "both must be non-empty (use more images or a larger fraction)"
            )
        out[key] = {"labeled": sorted(perm[:k]), "unlabeled": sorted(perm[k:])}
        log.info("split %s (seed %d): %d labelled, %d unlabelled", key, seed, k, len(pool) - k)
    return out


def _folder(directory: Path, fraction: str | float) -> Path:
    return Path(directory) / fraction_text(fraction).replace("/", "_")


def save_splits(splits: dict[str, dict[str, list[str]]], directory: str | Path, seed: int | None = None) -> Path:
    """Write ``DIR/<a>_<b>/{labeled,unlabeled}.txt`` (one name a line, ``#`` header) and ``DIR/splits.json``."""
    directory = Path(directory)
    for key, parts in splits.items():
        folder = _folder(directory, key)
        folder.mkdir(parents=True, exist_ok=True)
        total = sum(len(v) for v in parts.values())
        for part, items in parts.items():
            header = f"# blvnb split {fraction_text(key)} {part}: {len(items)} of {total} names, seed {seed}\n"
            (folder / f"{part}.txt").write_text(header + "".join(f"{n}\n" for n in items))
    meta = {
        "seed": seed,
        "fractions": list(splits),
        "counts": {k: {p: len(v) for p, v in parts.items()} for k, parts in splits.items()},
    }
    (directory / "splits.json").write_text(json.dumps(meta, indent=2) + "\n")
    log.info("wrote %d splits to %s", len(splits), directory)
    return directory


def _read_list(path: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(
            f"split list {path} is missing; make it with blvnb.data.splits.save_splits(nested_splits(names), DIR)"
        )
    items = [ln.strip() for ln in path.read_text().splitlines()]
    items = [ln for ln in items if ln and not ln.startswith("#")]
    if not items:
        raise DatasetError(f"split list {path} is empty")
    return items


def load_split(directory: str | Path, fraction: str | float) -> dict[str, list[str]]:
    """``{"labeled": [...], "unlabeled": [...]}`` as written by :func:`save_splits`."""
    folder = _folder(Path(directory), fraction)
    return {part: _read_list(folder / f"{part}.txt") for part in ("labeled", "unlabeled")}


__all__ = [
    "DEFAULT_FRACTIONS",
    "fraction_text",
    "labeled_count",
    "load_split",
    "nested_splits",
    "parse_fraction",
    "save_splits",
]
