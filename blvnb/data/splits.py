"""Nested labelled/unlabelled splits for semi-supervised training (1/16 ⊂ 1/8 ⊂ 1/4 ⊂ 1/2).

One seeded permutation of the sorted names; the split for fraction f labels its first
``round_half_up(n·f)`` names, so smaller splits are subsets of larger ones by construction. On
Cityscapes' 2975 training images this gives 186, 372, 744 and 1488 labelled images, the papers' sizes.

The permutation orders names by a keyed hash (BLAKE2b of ``"<seed>:<name>"``), so it depends on the
seed and the names only, never on a numpy or torch version. Splits are written as text lists
(:func:`save_splits`) so that a run can be repeated from the files.

The papers' own lists, where they released them (DARS: Cityscapes 1/8 and 1/4, VOC's 1464 official
training images; U2PL, BLV's semi-supervised lineage: Cityscapes 1/16 … 1/2), ship in
``blvnb/data/released_splits/`` (its README names each file's source and commit) and are read by
:func:`released_split`. ScanNet has none: its runs use :func:`nested_splits`.
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


_MAKE_HINT = "make it with blvnb.data.splits.save_splits(nested_splits(names), DIR)"


def _read_list(path: Path, hint: str = _MAKE_HINT) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"split list {path} is missing; {hint}")
    items = [ln.strip() for ln in path.read_text().splitlines()]
    items = [ln for ln in items if ln and not ln.startswith("#")]
    if not items:
        raise DatasetError(f"split list {path} is empty")
    return items


#: where the released lists live (package data)
RELEASED_DIR = Path(__file__).parent / "released_splits"
#: the released lists: (source, data set, labelled fraction) → folder under :data:`RELEASED_DIR` holding
#: ``labeled.txt`` and ``unlabeled.txt``. VOC's is keyed by ``None``: the official ``train`` list labelled,
#: the rest of the augmented set unlabelled (DARS Table 3)
RELEASED_SPLITS: dict[tuple[str, str, str | None], str] = {
    ("dars", "cityscapes", "1/8"): "dars/cityscapes_1_8",
    ("dars", "cityscapes", "1/4"): "dars/cityscapes_1_4",
    ("dars", "voc", None): "dars/voc_1464",
    ("u2pl", "cityscapes", "1/16"): "u2pl/cityscapes_1_16",
    ("u2pl", "cityscapes", "1/8"): "u2pl/cityscapes_1_8",
    ("u2pl", "cityscapes", "1/4"): "u2pl/cityscapes_1_4",
    ("u2pl", "cityscapes", "1/2"): "u2pl/cityscapes_1_2",
}
RELEASED_SOURCES = ("dars", "u2pl")


def released_folder(source: str, dataset: str, fraction: str | float | None) -> Path | None:
    """The folder of ``source``'s released list for ``dataset`` at ``fraction``, or None where it released none."""
    key = (source, dataset, None if fraction is None else fraction_text(fraction))
    return RELEASED_DIR / RELEASED_SPLITS[key] if key in RELEASED_SPLITS else None


def released_split(source: str, dataset: str, fraction: str | float | None) -> dict[str, list[str]]:
    """``{"labeled": [...], "unlabeled": [...]}``: the sample names of a paper's released split, sorted.

    Raises ConfigError where ``source`` released no list for ``dataset`` at ``fraction`` (naming those it
    did), DatasetError where a shipped list file is missing, empty, or shares names with its other half.
    """
    if source not in RELEASED_SOURCES:
        raise ConfigError(f"unknown source of released splits {source!r}; known: {', '.join(RELEASED_SOURCES)}")
    folder = released_folder(source, dataset, fraction)
    if folder is None:
        have = [f"{d} {f or 'official train'}" for s, d, f in RELEASED_SPLITS if s == source]
        raise ConfigError(f"{source} released no split list for {dataset} at labelled fraction {fraction!r}; "
                          f"it released: {', '.join(have)}")
    hint = "it ships with blvnb (package data): reinstall the package"
    parts = {part: _read_list(folder / f"{part}.txt", hint) for part in ("labeled", "unlabeled")}
    both = set(parts["labeled"]) & set(parts["unlabeled"])
    if both:
        raise DatasetError(f"released split {folder}: {len(both)} names are both labelled and unlabelled, "
                           f"e.g. {sorted(both)[0]}")
    return parts


def load_split(directory: str | Path, fraction: str | float) -> dict[str, list[str]]:
    """``{"labeled": [...], "unlabeled": [...]}`` as written by :func:`save_splits`."""
    folder = _folder(Path(directory), fraction)
    return {part: _read_list(folder / f"{part}.txt") for part in ("labeled", "unlabeled")}


__all__ = [
    "DEFAULT_FRACTIONS",
    "RELEASED_SPLITS",
    "fraction_text",
    "labeled_count",
    "load_split",
    "nested_splits",
    "parse_fraction",
    "released_folder",
    "released_split",
    "save_splits",
]
