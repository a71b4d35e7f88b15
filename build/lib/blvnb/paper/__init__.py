"""The papers' reported numbers as data: every cell of every table of BLV (CVPR 2023) and DARS (ICCV 2021).

One CSV per paper (``blv.csv``, ``dars.csv``) holds one line per printed cell, read from the text of the
paper (``shared/papers/<paper>.txt``) with the line it comes from; ``tables.yaml`` describes each table
(caption in our words, shape, units, which rows are the baselines and which the paper's method).
A number the paper prints in a cell is stored as printed (``text``) and as a float (``value``); a
``±`` spread is the cell's ``std``, a gain printed inside the cell (after ``↑`` or in parentheses) its
``delta``. Where a printed number is inconsistent with others, it is stored as printed and ``flag`` says
why (``inconsistent: …``, ``unsourced: …``, ``ambiguous: …``).

>>> from blvnb import paper
>>> paper.tables("dars")[:3]
[1, 2, 3]
>>> paper.value("dars", 5, "DARS", "D_KL")
0.0005
"""

from __future__ import annotations

import copy
import csv
import functools
import numbers
from importlib import resources
from typing import Any

import yaml

from blvnb.errors import BlvnbError

__all__ = ["PAPERS", "PaperDataError", "cells", "table", "tables", "figures", "info", "cell", "value",
           "flagged"]

PAPERS = ("blv", "dars")
FIELDS = ("value", "std", "delta", "text", "unit", "cited", "flag", "note", "line")


class PaperDataError(BlvnbError):
    """An unknown paper, table, figure, row, column or field was asked of the papers' data."""


# --------------------------------------------------------------------------------------------- loading
def _float(text: str) -> float | None:
    return float(text) if text != "" else None


def _parse(row: dict[str, str]) -> dict[str, Any]:
    lines = tuple(int(x) for x in row["line"].split(";"))
    return {
        "paper": row["paper"],
        "table": int(row["table"]) if row["table"] else None,
        "figure": row["figure"] or None,
        "row": row["row"],
        "column": row["column"],
        "value": _float(row["value"]),
        "text": row["text"],
        "std": _float(row["std"]),
        "delta": _float(row["delta"]),
        "unit": row["unit"],
        "cited": {"true": True, "false": False}[row["cited"]],
        "line": lines[0],
        "lines": lines,
        "flag": row["flag"] or None,
        "note": row["note"] or None,
    }


@functools.lru_cache(maxsize=None)
def _cells(paper: str) -> tuple[dict[str, Any], ...]:
    with resources.files(__name__).joinpath(f"{paper}.csv").open(encoding="utf-8", newline="") as fh:
        return tuple(_parse(r) for r in csv.DictReader(fh))


@functools.lru_cache(maxsize=None)
def _meta() -> dict[str, Any]:
    with resources.files(__name__).joinpath("tables.yaml").open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# ------------------------------------------------------------------------------------------ validation
def _check_paper(paper: Any) -> str:
    if not isinstance(paper, str) or paper not in PAPERS:
        raise PaperDataError(f"unknown paper {paper!r}: expected one of {', '.join(map(repr, PAPERS))}")
    return paper


def _check_table(paper: str, number: Any) -> int:
    known = tables(paper)
    if isinstance(number, bool) or not isinstance(number, numbers.Integral):
        raise PaperDataError(f"table number {number!r} ({type(number).__name__}) of {paper!r} must be an int; "
                             f"its tables are {known}")
    if int(number) not in known:
        raise PaperDataError(f"{paper!r} has no table {number!r}: its tables are {known}")
    return int(number)


def _split_key(paper: Any, number: Any) -> tuple[Any, Any]:
    """Accept ``("blv", 8)`` and the short key ``"blv-t8"`` (``number`` None)."""
    if number is None and isinstance(paper, str) and "-t" in paper:
        name, _, num = paper.partition("-t")
        if num.isdigit():
            return name, int(num)
    return paper, number


# ------------------------------------------------------------------------------------------------- API
def tables(paper: str) -> list[int]:
    """The numbers of the paper's tables, ascending."""
    return sorted(_meta()[_check_paper(paper)])


def figures(paper: str) -> list[str]:
    """The figures of the paper whose numbers the text gives (e.g. ``"Fig. 3"``)."""
    return sorted(_meta()["figures"][_check_paper(paper)])


def cells(paper: str | None = None, table: int | None = None, *, figure: str | None = None
          ) -> list[dict[str, Any]]:
    """Every stored cell (a list of dicts, copies), optionally of one paper, one table or one figure.

    Keys: ``paper``, ``table`` (int; None for a figure), ``figure``, ``row``, ``column``, ``value``
    (float, None where the paper prints no number), ``text`` (as printed, markup removed), ``std``,
    ``delta``, ``unit``, ``cited`` (the row is another paper's result), ``line`` (1-based line of
    ``shared/papers/<paper>.txt``), ``lines``, ``flag`` and ``note``.
    """
    papers = PAPERS if paper is None else (_check_paper(paper),)
    if table is not None and figure is not None:
        raise PaperDataError(f"ask for a table ({table!r}) or a figure ({figure!r}), not both")
    if table is not None:
        if paper is None:
            if isinstance(table, bool) or not isinstance(table, numbers.Integral):
                raise PaperDataError(f"table number {table!r} ({type(table).__name__}) must be an int")
            papers = tuple(p for p in PAPERS if int(table) in tables(p))
            if not papers:
                raise PaperDataError(f"no paper has a table {table!r}: "
                                     + "; ".join(f"{p}: {tables(p)}" for p in PAPERS))
        else:
            table = _check_table(paper, table)
    if figure is not None:
        known = {p: figures(p) for p in papers}
        if not any(figure in f for f in known.values()):
            raise PaperDataError(f"unknown figure {figure!r}: the figures with numbers are {known}")
    return [dict(c) for p in papers for c in _cells(p)
            if (table is None or c["table"] == table) and (figure is None or c["figure"] == figure)]


def info(paper: str, number: int | None = None) -> dict[str, Any]:
    """The table-level description of ``tables.yaml`` (caption, shape, unit, baselines, methods, …)."""
    paper, number = _split_key(paper, number)
    number = _check_table(_check_paper(paper), number)
    return {"paper": paper, "table": number, **copy.deepcopy(_meta()[paper][number])}


def table(paper: str, number: int | None = None, field: str = "value"):
    """The table as a pandas DataFrame, rows × columns in the paper's order.

    ``field`` picks what the cells hold: ``"value"`` (default; the printed text for text cells such as a
    backbone name, NaN where nothing or a dash is printed), ``"std"``, ``"delta"``, ``"text"``, ``"unit"``,
    ``"cited"``, ``"flag"``, ``"note"`` or ``"line"``. ``df.attrs`` holds the table's description
    (``caption``, ``unit``, ``units`` per column, ``shape``, ``baselines``, ``methods``, ``flags``).
    ``table("blv-t8")`` is short for ``table("blv", 8)``.
    """
    import pandas as pd  # the "book" extra

    paper, number = _split_key(paper, number)
    meta = info(paper, number)
    if field not in FIELDS:
        raise PaperDataError(f"unknown field {field!r}: expected one of {', '.join(FIELDS)}")
    rows: dict[str, dict[str, Any]] = {}
    columns: dict[str, None] = {}
    units: dict[str, str] = {}
    flags = []
    for c in cells(paper, number):
        columns.setdefault(c["column"], None)
        units.setdefault(c["column"], c["unit"])
        if field == "value":
            v = c["value"] if c["value"] is not None or c["unit"] != "text" else c["text"]
        else:
            v = c[field]
        if v is None and field in ("value", "std", "delta"):
            v = float("nan")
        rows.setdefault(c["row"], {})[c["column"]] = v
        if c["flag"]:
            flags.append((c["row"], c["column"], c["flag"]))
    df = pd.DataFrame.from_dict(rows, orient="index").reindex(columns=list(columns))
    df.attrs.update({k: v for k, v in meta.items()})
    df.attrs["units"] = units
    df.attrs["flags"] = flags
    df.attrs["field"] = field
    return df


def cell(paper: str, number: int, row: str, column: str) -> dict[str, Any]:
    """One cell of a table; an unknown row or column raises, listing those that exist."""
    found = [c for c in cells(paper, number) if c["row"] == row]
    if not found:
        known = list(dict.fromkeys(c["row"] for c in cells(paper, number)))
        raise PaperDataError(f"{paper!r} table {number} has no row {row!r}: its rows are {known}")
    for c in found:
        if c["column"] == column:
            return c
    raise PaperDataError(f"{paper!r} table {number}, row {row!r} has no cell in column {column!r}: "
                         f"its columns are {[c['column'] for c in found]}")


def value(paper: str, number: int, row: str, column: str) -> float | None:
    """The number printed in one cell (None where the paper prints none)."""
    return cell(paper, number, row, column)["value"]


def flagged(paper: str | None = None) -> list[dict[str, Any]]:
    """The cells whose printed number is flagged (inconsistent, unsourced, ambiguous)."""
    return [c for c in cells(paper) if c["flag"]]
