"""Tables of our results beside the papers' numbers, for the chapters (BLV and DARS tables).

Inputs are run records (``config``, ``metrics``, ``seed``, ``profile``, ``history``, …: what
:func:`blvnb.experiments.runs.run` writes), in any of these forms:

* the :class:`~blvnb.experiments.table_runs.TableRuns` that ``table_runs.run(...)`` returns (``.records``: one
  dict per row / arm / seed with the record under ``"record"``), or that list itself;
* ``{arm: [record, …]}`` or ``{arm: {seed: record}}`` or ``{row: {arm: {seed: record}}}``
  (``TableRuns.grouped``);
* a plain list of records; a record's arm is then its ``"arm"`` key, else its config's ``loss``.

Metrics are stored as fractions in [0, 1]; every IoU-like number here is printed in % (× 100).
Comparisons between arms are paired **by seed**, never by position. Functions return objects that
render in a notebook (HTML) and as plain text; they never print or save.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blvnb.classes import BLV_TAIL, CLASSES, DARS_TAIL, HEAD_BLV, NUM_CLASSES, SHORT_NAMES, SYNTHIA_13, SYNTHIA_16
from blvnb.errors import BlvnbError

__all__ = ["ResultsError", "Item", "items", "group", "metric_value", "class_index", "side_by_side", "SideBySide",
           "seed_table", "per_class_table", "paired", "ours_label", "DEFAULT_METRICS", "runs_table", "RunsTable"]

DASH = "—"


class ResultsError(BlvnbError):
    """Records or a table request that cannot be shown: empty, mixed profiles, unknown metric, …"""


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class Item:
    """One run: the table row and arm it stands for, its seed and its record."""

    row: Any
    arm: Any
    seed: int
    record: Mapping = field(repr=False)

    @property
    def profile(self) -> str | None:
        cfg = self.record.get("config") or {}
        return self.record.get("profile", cfg.get("profile") if isinstance(cfg, Mapping) else None)


def _is_record(x) -> bool:
    return isinstance(x, Mapping) and "metrics" in x


def _is_entry(x) -> bool:
    return isinstance(x, Mapping) and "record" in x and _is_record(x["record"])


def _seed_of(rec: Mapping, where: str) -> int:
    cfg = rec.get("config") if isinstance(rec.get("config"), Mapping) else {}
    seed = rec.get("seed", cfg.get("seed"))
    if seed is None:
        raise ResultsError(f"{where}: the record has no seed (neither 'seed' nor config['seed']); "
                           f"its keys are {sorted(rec)}")
    return int(seed)


def _default_arm(rec: Mapping) -> Any:
    cfg = rec.get("config") if isinstance(rec.get("config"), Mapping) else {}
    return rec.get("arm", cfg.get("loss", "run"))


def _check_record(rec, where: str) -> Mapping:
    if not _is_record(rec):
        keys = sorted(rec) if isinstance(rec, Mapping) else type(rec).__name__
        raise ResultsError(f"{where} is not a run record (a dict with 'metrics'): got {keys}")
    if not isinstance(rec["metrics"], Mapping):
        raise ResultsError(f"{where}: 'metrics' must be a dict, got {type(rec['metrics']).__name__}")
    return rec


def _from_records(recs, row, arm, where) -> list[Item]:
    out = []
    if isinstance(recs, Mapping) and not _is_record(recs):  # {seed: record}
        for s, rec in recs.items():
            rec = _check_record(rec, f"{where}[{s!r}]")
            out.append(Item(row, arm if arm is not None else _default_arm(rec), int(s), rec))
        return out
    if _is_record(recs):
        recs = [recs]
    for i, rec in enumerate(recs):
        if _is_entry(rec):
            out.append(_from_entry(rec, f"{where}[{i}]", row=row, arm=arm))
            continue
        rec = _check_record(rec, f"{where}[{i}]")
        out.append(Item(row, arm if arm is not None else _default_arm(rec), _seed_of(rec, f"{where}[{i}]"), rec))
    return out


def _from_entry(e: Mapping, where: str, row=None, arm=None) -> Item:
    rec = _check_record(e["record"], where)
    seed = e["seed"] if e.get("seed") is not None else _seed_of(rec, where)
    return Item(e.get("row", row), e.get("arm", arm if arm is not None else _default_arm(rec)), int(seed), rec)


def items(ours, *, profile: str | None = None, seeds: Iterable[int] | None = None) -> list[Item]:
    """Normalise any accepted form of results (see the module docstring) to a list of :class:`Item`.

    Raises :class:`ResultsError` when there is no record, when a value is not a record, when records of
    different profiles are mixed (or differ from ``profile``), and when one row/arm has a seed twice.
    ``seeds`` keeps only those seeds.
    """
    if ours is None:
        raise ResultsError("no results: got None")
    if hasattr(ours, "records") and not isinstance(ours, Mapping):
        ours = list(ours.records)
    out: list[Item] = []
    if isinstance(ours, Mapping) and not _is_record(ours):
        for k, v in ours.items():
            # {row: {arm: {seed: rec}}}: a dict of dicts whose values are dicts of records
            if isinstance(v, Mapping) and not _is_record(v) and v and not any(_is_record(x) for x in v.values()):
                for arm, recs in v.items():
                    out += _from_records(recs, k, arm, f"results[{k!r}][{arm!r}]")
            else:
                out += _from_records(v, None, k, f"results[{k!r}]")
    elif isinstance(ours, (str, bytes)):
        raise ResultsError(f"results must be records, not the string {ours!r}")
    else:
        try:
            seq = list(ours)
        except TypeError:
            raise ResultsError(f"results of type {type(ours).__name__} are not records") from None
        for i, x in enumerate(seq):
            if _is_entry(x):
                out.append(_from_entry(x, f"results[{i}]"))
            else:
                out += _from_records([_check_record(x, f"results[{i}]")], None, None, f"results[{i}]")
    if not out:
        raise ResultsError("no results: the input holds no run record")
    profiles = sorted({str(it.profile) for it in out})
    if len(profiles) > 1:
        raise ResultsError(f"records of different profiles are mixed: {profiles}; show one profile per table")
    if profile is not None and profiles[0] != str(profile):
        raise ResultsError(f"the records are of profile {profiles[0]!r}, not the requested profile {profile!r}")
    seen = {}
    for it in out:
        key = (it.row, it.arm, it.seed)
        if key in seen:
            raise ResultsError(f"seed {it.seed} appears twice for row {it.row!r}, arm {it.arm!r}; "
                               "pairing by seed needs one record per seed")
        seen[key] = it
    if seeds is not None:
        keep = {int(s) for s in seeds}
        out = [it for it in out if it.seed in keep]
        if not out:
            raise ResultsError(f"no record has one of the seeds {sorted(keep)}; "
                               f"the records' seeds are {sorted({it.seed for it in seen.values()})}")
    return out


def _lookup(it: Item, name: str):
    if name in ("row", "arm", "seed", "profile"):
        return getattr(it, name)
    rec = it.record
    if name in rec:
        return rec[name]
    cfg = rec.get("config") if isinstance(rec.get("config"), Mapping) else {}
    if name in cfg:
        return cfg[name]
    for sub in ("loss_options", "strategy_options"):
        opts = cfg.get(sub)
        if isinstance(opts, Mapping) and name in opts:
            return opts[name]
    raise ResultsError(f"records have no field {name!r} (looked in the record, its config, loss_options and "
                       f"strategy_options; record keys: {sorted(rec)}, config keys: {sorted(cfg)})")


def _hashable(v):
    if isinstance(v, list):
        return tuple(_hashable(x) for x in v)
    if isinstance(v, Mapping):
        return tuple(sorted((k, _hashable(x)) for k, x in v.items()))
    return v


def group(records, by: Sequence[str] | str = ("arm",), *, profile: str | None = None,
          seeds: Iterable[int] | None = None) -> dict:
    """Records grouped by fields: ``{key: [record, …]}`` with the records of each group sorted by seed.

    ``by`` names fields of an item (``row``, ``arm``, ``seed``), of the record (``strategy``, ``model``,
    ``loss``, …, looked up in the record, then its ``config``, then ``loss_options`` / ``strategy_options``).
    The key is the value itself for one field, a tuple for several. Groups keep first-seen order.
    """
    by = (by,) if isinstance(by, str) else tuple(by)
    if not by:
        raise ResultsError("group(): 'by' names no field")
    out: dict = {}
    for it in items(records, profile=profile, seeds=seeds):
        vals = tuple(_hashable(_lookup(it, b)) for b in by)
        out.setdefault(vals[0] if len(by) == 1 else vals, []).append(it)
    return {k: [it.record for it in sorted(v, key=lambda it: it.seed)] for k, v in out.items()}


# -------------------------------------------------------------------------------------------- metrics
_CLASS_ALIASES = {
    "swalk": 1, "build": 2, "tlight": 6, "light": 6, "sign": 7, "veget": 8, "veg": 8, "mbike": 17, "motorbike": 17,
    "bike": 18,
}


def _norm_class(name: str) -> str:
    return re.sub(r"[^a-z]", "", str(name).lower())


def class_index(name) -> int | None:
    """The Cityscapes train id of a class as any of the papers' tables spell it (``"S.walk"``,
    ``"Wall*"``, ``"light"``, ``"mbike"``, ``"traffic light"``, …), or an int; None if it is not one."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool):
        return int(name) if 0 <= int(name) < NUM_CLASSES else None
    n = _norm_class(name)
    for i, (full, short) in enumerate(zip(CLASSES, SHORT_NAMES)):
        if n in (_norm_class(full), _norm_class(short)):
            return i
    return _CLASS_ALIASES.get(n)


#: Paper column / row labels → our metric names.
DEFAULT_METRICS: dict[str, str] = {
    "mIoU": "mIoU", "mIoU (%)": "mIoU", "mIoU (tail)": "mIoU_tail_blv", "Tail mIoU": "mIoU_tail_dars",
    "mIoU*": "mIoU13", "mIoU16": "mIoU16", "Gain": "gain:mIoU", "Gain (%)": "gain:mIoU",
}
_PERCENT = re.compile(r"^(mIoU.*|pixel_acc|mAcc|iou:.*)$")
#: class-subset means that can be recomputed from a record's 19 per-class IoUs when it does not store
#: them (a SYNTHIA → Cityscapes run evaluated with the 19-class summary has no mIoU16 / mIoU13)
_SUBSETS = {"mIoU": tuple(range(NUM_CLASSES)), "mIoU_tail_blv": BLV_TAIL, "mIoU_head_blv": HEAD_BLV,
            "mIoU_tail_dars": DARS_TAIL, "mIoU16": SYNTHIA_16, "mIoU13": SYNTHIA_13}

Metric = str | Callable[[Mapping], float]


def _metric_name(metric: Metric) -> str:
    return getattr(metric, "__name__", "metric") if callable(metric) else str(metric)


def metric_value(record: Mapping, metric: Metric) -> float:
    """One number of a record in display units: IoU-like metrics in % (× 100), others as stored.

    ``metric``: a key of ``record["metrics"]`` (``"mIoU"``, ``"mIoU_tail_blv"``, …), ``"iou:<class>"``
    or a class name (per-class IoU, any spelling :func:`class_index` knows), a numeric top-level field of
    the record (``"train_seconds"``), or a callable ``record -> float`` (used as is). NaN where the
    record holds None / NaN (a class absent from the validation set). The class-subset means
    (``mIoU``, ``mIoU_tail_blv``, ``mIoU_head_blv``, ``mIoU_tail_dars``, ``mIoU16``, ``mIoU13``) are
    recomputed from ``metrics["iou"]`` when the record does not store them. An unknown name raises
    :class:`ResultsError` listing the metrics the record has.
    """
    if callable(metric):
        v = metric(record)
        return float("nan") if v is None else float(v)
    if not isinstance(metric, str) or not metric:
        raise ResultsError(f"a metric must be a name or a callable, got {metric!r}")
    m = record.get("metrics", {})
    if metric.startswith("gain:"):
        raise ResultsError(f"metric {metric!r} is a paired difference: it has no value in one record")
    name = metric[4:] if metric.startswith("iou:") else None
    if name is None and metric not in m and metric not in record:
        name = metric if class_index(metric) is not None else None
    if name is not None:
        c = class_index(name)
        if c is None:
            raise ResultsError(f"unknown class {name!r} in metric {metric!r}; classes: {', '.join(CLASSES)}")
        iou = m.get("iou")
        v = iou[c] if isinstance(iou, Sequence) and len(iou) > c else (m.get("per_class_iou") or {}).get(CLASSES[c])
        return float("nan") if v is None else 100.0 * float(v)
    if metric in m:
        v = m[metric]
        scale = 100.0 if _PERCENT.match(metric) else 1.0
    elif metric in _SUBSETS and isinstance(m.get("iou"), Sequence) and len(m["iou"]) == NUM_CLASSES:
        sub = np.array([np.nan if m["iou"][c] is None else float(m["iou"][c]) for c in _SUBSETS[metric]])
        v = float(np.nanmean(sub)) if np.isfinite(sub).any() else None
        scale = 100.0
    elif metric in record and isinstance(record[metric], (int, float)) and not isinstance(record[metric], bool):
        v, scale = record[metric], 1.0
    else:
        known = sorted(k for k, v in m.items() if isinstance(v, (int, float)) or v is None)
        raise ResultsError(f"unknown metric {metric!r}: the records have {known}, per-class 'iou:<class>', "
                           "or pass a callable record -> float")
    if v is None:
        return float("nan")
    if isinstance(v, (list, tuple, Mapping)):
        raise ResultsError(f"metric {metric!r} holds a {type(v).__name__}, not a number; for per-class IoU "
                           "use 'iou:<class>'")
    return scale * float(v)


def _values(its: Sequence[Item], metric: Metric) -> dict[int, float]:
    return {it.seed: metric_value(it.record, metric) for it in its}


def _mean_sd(vals: Sequence[float]) -> tuple[float, float, int]:
    a = np.asarray([v for v in vals if not math.isnan(v)], dtype=float)
    if a.size == 0:
        return float("nan"), float("nan"), 0
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan"), int(a.size)


def ours_label(profile: str | None, seeds: Sequence[int]) -> str:
    """The heading of our columns, e.g. ``"ours (quick, 3 seeds)"``."""
    n = len(seeds)
    where = f"{profile}, " if profile not in (None, "None") else ""
    return f"ours ({where}{n} seed{'s' if n != 1 else ''})"


# ----------------------------------------------------------------------------------------- side by side
def _norm_label(s) -> str:
    import unicodedata

    s = "".join(ch for ch in unicodedata.normalize("NFKD", str(s)) if not unicodedata.combining(ch))  # Lovász
    s = s.lower().replace("σ", "sigma").replace("α", "alpha").replace("β", "beta")
    s = s.replace("w/o", "without").replace("w/", "")
    return re.sub(r"[^0-9a-z/†‡*]", "", s)  # † and ‡ tell DAFormer (CNN) from DAFormer (Transformer)


def _as_selector(sel, where: str) -> dict | None:
    if sel is None:
        return None
    if isinstance(sel, Mapping):
        bad = set(sel) - {"row", "arm", "metric"}
        if bad:
            raise ResultsError(f"{where}: unknown selector key(s) {sorted(bad)}; use 'row', 'arm', 'metric'")
        return dict(sel)
    if isinstance(sel, tuple) and len(sel) == 2:
        return {"row": sel[0], "arm": sel[1]}
    return {"arm": sel}


@dataclass
class SideBySide:
    """The paper's table with our numbers beside it.

    ``frame``: strings, index = the paper's rows, columns = (paper column, ``"paper"`` | our label);
    ``numbers``: the same cells as numbers, columns (paper column, ``"paper"`` | ``"mean"`` | ``"sd"`` |
    ``"n"``); ``notes``: the footnotes; ``caption``. Renders as HTML in a notebook and as text by ``str``.
    """

    frame: Any
    numbers: Any
    notes: list[str]
    caption: str
    label: str

    def styler(self):
        """A pandas Styler of :attr:`frame` (our columns shaded, the caption set)."""
        import hashlib

        ours = [c for c in self.frame.columns if c[1] != "paper"]
        # a stable id (not pandas' random one): the executed notebook does not change when nothing did
        uid = hashlib.sha1(f"{self.caption}|{self.label}|{self.frame.to_json()}".encode()).hexdigest()[:10]
        st = self.frame.style.set_uuid(f"blvnb{uid}").set_caption(self.caption)
        if ours:
            st = st.set_properties(subset=ours, **{"background-color": "#eef3fb"})
        return st.set_table_styles([{"selector": "caption", "props": "caption-side: top; font-weight: bold;"},
                                    {"selector": "td, th", "props": "padding: 2px 6px; white-space: nowrap;"}])

    def _repr_html_(self) -> str:
        import html

        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        return (f'<div class="blvnb-side-by-side" style="overflow-x: auto">{self.styler().to_html()}'
                f'<ul style="font-size: smaller">{notes}</ul></div>')

    def __str__(self) -> str:
        import pandas as pd

        with pd.option_context("display.width", 250, "display.max_columns", 200, "display.max_colwidth", 40):
            body = self.frame.to_string()
        return "\n".join([self.caption, body, *[f"  {n}" for n in self.notes]])

    __repr__ = __str__


#: what a reader sees of a table's runs: (column of ``TableRuns.frame()``, its name on the page, ×100 as %)
RUN_COLUMNS = (("row", "row", False), ("arm", "arm", False), ("seed", "seed", False),
               ("mIoU", "mIoU %", True), ("mIoU_head_blv", "head mIoU % (BLV's 10)", True),
               ("mIoU_tail_blv", "tail mIoU % (BLV's 9)", True), ("mIoU_tail_dars", "tail mIoU % (DARS)", True),
               ("train_seconds", "training s", False))


@dataclass
class RunsTable:
    """A table's runs for a reader: named columns that fit the page (``frame``), and the raw frame with the
    store keys and the library's metric names (``raw``) behind a toggle."""

    frame: Any
    raw: Any
    caption: str

    def _repr_html_(self) -> str:
        import html

        return (f'<div class="blvnb-runs" style="overflow-x: auto">'
                f'{self.frame.to_html(index=False, na_rep=DASH, float_format=lambda v: f"{v:.1f}")}'
                f'<details><summary>{html.escape(self.caption)}: the raw records (store keys, metric names '
                f'as the library writes them)</summary>{self.raw.to_html(index=False, na_rep=DASH)}</details></div>')

    def __str__(self) -> str:
        return self.frame.to_string(index=False, na_rep=DASH, float_format=lambda v: f"{v:.1f}")

    __repr__ = __str__


def runs_table(runs, caption: str | None = None) -> RunsTable:
    """``runs`` (a :class:`blvnb.experiments.table_runs.TableRuns`, or its ``frame()``) as a :class:`RunsTable`:
    mean IoUs in %, training time in seconds, columns without a value dropped."""
    import pandas as pd

    from blvnb.experiments.table_runs import TableRuns

    if isinstance(runs, TableRuns):
        raw = runs.frame()
    elif isinstance(runs, pd.DataFrame):
        raw = runs
    else:
        raise ResultsError(f"runs_table needs a TableRuns or a DataFrame of runs, not {type(runs).__name__}")
    missing = [c for c in ("row", "arm", "seed") if c not in raw.columns]
    if missing:
        raise ResultsError(f"runs_table: the frame has no column {', '.join(missing)} (columns: {list(raw.columns)})")
    out = {}
    for col, name, pct in RUN_COLUMNS:
        if col in raw.columns and raw[col].notna().any():
            out[name] = pd.to_numeric(raw[col], errors="coerce") * 100 if pct else raw[col]
    if "training s" in out:
        out["training s"] = pd.to_numeric(out["training s"], errors="coerce").round(0)
    caption = caption or f"{len(raw)} runs" + (f" of {runs.table}" if isinstance(runs, TableRuns) else "")
    return RunsTable(pd.DataFrame(out), raw, caption)


def _first_number(text) -> str | None:
    # a leading "(+0.26)" is the paper's gain beside the value (DARS Table 6): the value follows it
    m = re.search(r"[-−]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.sub(r"^\s*\([^)]*\)\s*", "", str(text)))
    return m.group(0).replace("−", "-") if m else None


def _paper_side(paper_df):
    """Printed text and cited flags of the paper's table, when it came from :func:`blvnb.paper.table`."""
    p, n = paper_df.attrs.get("paper"), paper_df.attrs.get("table")
    if p is None or n is None:
        return None, None
    from blvnb import paper as paper_mod

    try:
        return paper_mod.table(p, n, "text"), paper_mod.table(p, n, "cited")
    except BlvnbError:
        return None, None


def _decimals(text: str | None, default: int = 2) -> int:
    if text is None or "." not in text:
        return default if text is None else 0
    return len(text.split(".")[1])


def side_by_side(ours, paper_df, *, metric_map: Mapping[str, Metric] | None = None,
                 rows: Mapping[str, Any] | None = None, columns: Mapping[str, Any] | None = None,
                 profile: str | None = None, seeds: Iterable[int] | None = None, baseline_arm: str = "baseline",
                 decimals: int | None = None, note: str | None = None) -> SideBySide:
    """The paper's table (``paper_df`` from :func:`blvnb.paper.table`) with our mean ± sd beside each cell.

    Every cell (paper row r, paper column c) is matched to one group of our runs (a row and an arm of
    ``ours``) and one metric:

    * **group**: ``rows[r]`` and ``columns[c]`` (selectors, merged, the column's winning) each a dict with
      ``row`` / ``arm`` / ``metric``, a ``(row, arm)`` tuple, a string (an arm) or None (we did not run
      it). Labels without a selector are matched by name: the paper's label, lower-cased without spaces
      and punctuation but with † ‡ * kept (``w/`` dropped, σ → sigma), against our ``row``, our ``arm`` or ``row + arm``
      (so "ResNet50 + PSPHead + BLV" finds row "ResNet50 PSPHead", arm "blv"). A row that names
      several of our arms takes ``baseline_arm`` when the paper lists it among its baselines. A label
      that matches nothing of ours and is no metric (a setting we did not run, e.g. "SYNTHIA →
      Cityscapes" when only GTA5 ran) makes the cell "—"; ``rows={label: {}}`` says "any of ours"
      (a one-row table such as BLV Table 9).
    * **metric**: ``metric_map[c]``, ``metric_map[r]``, then :data:`DEFAULT_METRICS` for c or r, then a
      class name in c (per-class IoU), then the column's unit (``mIoU %`` → ``"mIoU"``, ``mIoU % points``
      → ``"gain:mIoU"``). ``"gain:<metric>"`` is the paired (by seed) difference to the ``baseline_arm``
      of the same row, else to the table's only ``baseline_arm`` group (DARS Table 4's Baseline row).
      Columns without a metric (settings, text, hours unless mapped) get no column of ours. In the
      SYNTHIA tables (a ``mIoU*`` column: BLV Tables 4, 11) ``mIoU`` means ``mIoU16`` and ``mIoU*``
      ``mIoU13``, recomputed from the per-class IoUs when a record does not store them.

    Our cells read ``mean ± sd`` over seeds (sample sd, in % for IoU metrics), ``(n=k)`` when fewer
    seeds than the table's; ``—`` where we have no run, with a footnote. ``seeds`` keeps only those
    seeds; ``profile`` checks the records' profile. Returns a :class:`SideBySide`.
    """
    import pandas as pd

    its = items(ours, profile=profile, seeds=seeds)
    profile = profile if profile is not None else its[0].profile
    all_seeds = sorted({it.seed for it in its})
    label = ours_label(profile, all_seeds)
    if not hasattr(paper_df, "index") or not hasattr(paper_df, "columns"):
        raise ResultsError(f"paper_df must be a DataFrame from blvnb.paper.table(...), got {type(paper_df).__name__}")
    if paper_df.shape[0] == 0 or paper_df.shape[1] == 0:
        raise ResultsError(f"the paper's table is empty (shape {paper_df.shape})")
    metric_map = dict(metric_map or {})
    rows = {k: _as_selector(v, f"rows[{k!r}]") for k, v in (rows or {}).items()}
    columns = {k: _as_selector(v, f"columns[{k!r}]") for k, v in (columns or {}).items()}
    for where, given, known in (("rows", rows, paper_df.index), ("columns", columns, paper_df.columns),
                                ("metric_map", metric_map, list(paper_df.index) + list(paper_df.columns))):
        unknown = [k for k in given if k not in set(known)]
        if unknown:
            raise ResultsError(f"{where} names {unknown}, which the paper's table does not have; "
                               f"its labels are {list(known)}")
    # validate named metrics up front (some record must have each), so a typo fails loudly, not as dashes
    named = list(metric_map.values()) + [sel.get("metric") for sel in (*rows.values(), *columns.values()) if sel]
    for m in named:
        if not isinstance(m, str):
            continue
        name = m[5:] if m.startswith("gain:") else m
        errors = []
        for it in its:
            try:
                metric_value(it.record, name)
                break
            except ResultsError as exc:
                errors.append(exc)
        else:
            raise errors[-1]

    groups: dict[tuple, list[Item]] = {}
    for it in its:
        groups.setdefault((it.row, it.arm), []).append(it)
    our_rows = list(dict.fromkeys(it.row for it in its))
    our_arms = list(dict.fromkeys(it.arm for it in its))
    baselines = set(paper_df.attrs.get("baselines") or [])
    units = paper_df.attrs.get("units") or {}
    n_class_cols = sum(class_index(c) is not None for c in paper_df.columns)

    def auto(lbl) -> dict:
        n = _norm_label(lbl)
        if not n:
            return {}
        for r in our_rows:
            for a in our_arms:
                if (r, a) in groups and r is not None and _norm_label(f"{r} {a}") == n:
                    return {"row": r, "arm": a}
        for r in our_rows:
            if r is not None and _norm_label(r) == n:
                return {"row": r}
        for a in our_arms:
            if _norm_label(a) == n:
                return {"arm": a}
        return {}

    synthia = "mIoU*" in paper_df.columns  # BLV Tables 4 and 11: "mIoU" is over SYNTHIA's 16 classes

    def metric_for(r, c):
        for key in (c, r):
            if key in metric_map:
                return metric_map[key]
        for key in (c, r):
            if key in DEFAULT_METRICS:
                return "mIoU16" if synthia and DEFAULT_METRICS[key] == "mIoU" else DEFAULT_METRICS[key]
        if n_class_cols >= 15 and class_index(c) is not None:
            return f"iou:{CLASSES[class_index(c)]}"
        unit = units.get(c, "")
        return {"mIoU %": "mIoU", "mIoU % points": "gain:mIoU"}.get(unit)

    def resolve(r, c) -> tuple[list[Item] | None, str | None]:
        """Our items for cell (r, c), or (None, reason)."""
        explicit = False
        unmatched = False  # a label that is neither ours nor a metric: a setting we did not run
        sel: dict = {}
        for part, lbl, given in (("row", r, rows), ("column", c, columns)):
            if lbl in given:
                if given[lbl] is None:
                    return None, "not run"
                explicit = True
                sel.update({k: v for k, v in given[lbl].items() if k != "metric"})
            else:
                found = auto(lbl)
                sel.update({k: v for k, v in found.items() if k not in sel})
                if not found and lbl not in metric_map and lbl not in DEFAULT_METRICS and class_index(lbl) is None \
                        and units.get(lbl) not in ("mIoU % points",):
                    unmatched = True
        if unmatched or (not sel and not explicit):
            return None, "not run"
        cand = [k for k in groups if ("row" not in sel or k[0] == sel["row"]) and ("arm" not in sel or k[1] == sel["arm"])]
        if len(cand) > 1 and "arm" not in sel and r in baselines and any(k[1] == baseline_arm for k in cand):
            cand = [k for k in cand if k[1] == baseline_arm]
        if not cand:
            if explicit:
                raise ResultsError(f"cell ({r!r}, {c!r}) selects {sel}, which matches none of our runs; "
                                   f"our (row, arm) groups are {list(groups)}")
            return None, "not run"
        if len(cand) > 1:
            if explicit:
                raise ResultsError(f"cell ({r!r}, {c!r}) selects {sel}, which matches several of our runs "
                                   f"{cand}; name the row and the arm")
            return None, f"ambiguous: {r!r} / {c!r} matches {cand}; pass rows= or columns="
        return groups[cand[0]], None

    text_df, cited_df = _paper_side(paper_df)
    flags = {(fr, fc): f for fr, fc, f in paper_df.attrs.get("flags", [])}
    str_cols, num_cols, str_data, num_data = [], [], {}, {}
    notes_reasons: dict[str, None] = {}
    short_seeds = False
    any_dash = False
    for c in paper_df.columns:
        metrics = {r: (columns.get(c) or {}).get("metric") or (rows.get(r) or {}).get("metric") or metric_for(r, c)
                   for r in paper_df.index}
        has_ours = any(m is not None for m in metrics.values())
        pcol, mcol, scol, ncol, ocol, vcol = [], [], [], [], [], []
        for r in paper_df.index:
            v = paper_df.at[r, c]
            t = _first_number(text_df.at[r, c]) if text_df is not None else None
            if isinstance(v, str):
                ptxt = v
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                ptxt = (str(text_df.at[r, c]) if text_df is not None and text_df.at[r, c] not in (None, "") else "")
            else:
                ptxt = t if t is not None else f"{float(v):.2f}"
            if (r, c) in flags:
                ptxt += " ⚑"
            pcol.append(ptxt)
            vcol.append(v if not isinstance(v, str) else np.nan)
            if not has_ours:
                continue
            m = metrics[r]
            dec = decimals if decimals is not None else _decimals(t)
            mean = sd = float("nan")
            n = 0
            if m is None:
                cell = ""
            else:
                grp, why = resolve(r, c)
                if grp is None:
                    cell = DASH
                    any_dash = True
                    if why != "not run":
                        notes_reasons[why] = None
                else:
                    if isinstance(m, str) and m.startswith("gain:"):
                        base = groups.get((grp[0].row, baseline_arm))
                        if base is None:  # the table's one baseline (DARS Table 4: the Baseline row)
                            only = [k for k in groups if k[1] == baseline_arm]
                            base = groups[only[0]] if len(only) == 1 else None
                        if base is None:
                            cell, any_dash = DASH, True
                            notes_reasons[f"{c}: no {baseline_arm!r} arm in row {grp[0].row!r} (nor one for the "
                                          "whole table) to take the gain against"] = None
                            mcol.append(mean), scol.append(sd), ncol.append(n), ocol.append(cell)
                            continue
                        a, b = _values(grp, m[5:]), _values(base, m[5:])
                        vals = [a[s] - b[s] for s in sorted(set(a) & set(b))]
                    else:
                        vals = list(_values(grp, m).values())
                    mean, sd, n = _mean_sd(vals)
                    if n == 0:
                        cell = "n/a"
                        notes_reasons["n/a: the metric is undefined in every seed (e.g. a class absent from the "
                                      "validation images)"] = None
                    else:
                        cell = f"{mean:.{dec}f}" + (f" ± {sd:.{dec}f}" if n > 1 else "")
                        if n < len(all_seeds):
                            cell += f" (n={n})"
                            short_seeds = True
            mcol.append(mean), scol.append(sd), ncol.append(n), ocol.append(cell)
        str_cols.append((c, "paper"))
        str_data[(c, "paper")] = pcol
        num_cols.append((c, "paper"))
        num_data[(c, "paper")] = vcol
        if has_ours:
            str_cols.append((c, label))
            str_data[(c, label)] = ocol
            for k, col in (("mean", mcol), ("sd", scol), ("n", ncol)):
                num_cols.append((c, k))
                num_data[(c, k)] = col
    idx = pd.Index(list(paper_df.index), name=paper_df.index.name)
    frame = pd.DataFrame({k: str_data[k] for k in str_cols}, index=idx)
    frame.columns = pd.MultiIndex.from_tuples(str_cols)
    numbers = pd.DataFrame({k: num_data[k] for k in num_cols}, index=idx)
    numbers.columns = pd.MultiIndex.from_tuples(num_cols)
    if not any(col[1] == label for col in str_cols):
        raise ResultsError(f"no column of the paper's table {list(paper_df.columns)} maps to a metric of ours; "
                           "pass metric_map={column: metric}")

    notes = [f"{label}: mean ± sample sd over seeds {', '.join(map(str, all_seeds))} of the `{profile}` profile "
             f"(IoU-type numbers in %); paper: as printed. Where a cell gives one number, one seed ran."]
    if note:
        notes.append(note)
    if any_dash:
        notes.append(f"{DASH}: no run of ours for this cell in the `{profile}` profile (rows the profile does "
                     "not run, cited results of other papers, or settings we do not have).")
    if short_seeds:
        notes.append("(n=k): only k seeds were run for this arm (sweep points run at fewer seeds in the "
                     "smoke/quick profiles).")
    if cited_df is not None:
        cited = [r for r in paper_df.index if bool(cited_df.loc[r].fillna(False).astype(bool).any())]
        if cited:
            shown = ", ".join(cited) if len(cited) <= 6 else f"{len(cited)} of {len(paper_df.index)} rows"
            notes.append(f"Cited by the paper from other work: {shown}.")
    by_flag: dict[str, list[str]] = {}
    for (fr, fc), f in flags.items():
        by_flag.setdefault(f, []).append(f"{fr} / {fc}")
    for f, where in by_flag.items():
        shown = "; ".join(where) if len(where) <= 3 else f"{len(where)} cells ({where[0]}, …)"
        notes.append(f"⚑ {shown}: {f}")
    notes += list(notes_reasons)
    attrs = paper_df.attrs
    cap = attrs.get("caption", "")
    head = f"{str(attrs.get('paper', '')).upper()} Table {attrs.get('table', '')}".strip()
    caption = f"{head}: {cap}" if cap else head
    return SideBySide(frame=frame, numbers=numbers, notes=notes, caption=caption, label=label)


# ------------------------------------------------------------------------------------------- per seed
def _by_arm(records_by_arm, profile, seeds, order: Sequence | None = None) -> dict[Any, list[Item]]:
    """``{arm: [items]}`` (``"row: arm"`` when several rows). Arm order: ``order`` if given; else the
    order of a mapping's keys or of ``TableRuns`` (as declared); else (a flat list, whose order means
    nothing) ``"baseline"`` first and the others sorted."""
    its = items(records_by_arm, profile=profile, seeds=seeds)
    multi_row = len({it.row for it in its}) > 1
    out: dict = {}
    for it in its:
        out.setdefault(f"{it.row}: {it.arm}" if multi_row else it.arm, []).append(it)
    if order is not None:
        missing = [a for a in order if a not in out]
        if missing:
            raise ResultsError(f"order names arms {missing} that the records do not have; they have {list(out)}")
        return {a: out[a] for a in order}
    if not isinstance(records_by_arm, Mapping) and not hasattr(records_by_arm, "records"):
        keys = sorted(out, key=lambda a: (a != "baseline", str(a)))
        return {a: out[a] for a in keys}
    return out


def seed_table(records_by_arm, metric: Metric = "mIoU", *, baseline: Any = None, profile: str | None = None,
               seeds: Iterable[int] | None = None, order: Sequence | None = None):
    """Per-seed values of ``metric`` per arm, and each arm's paired difference to ``baseline`` (the
    arm named ``"baseline"`` if there is one, else the first), matched by seed.

    A DataFrame: one line per seed, then ``mean`` and ``sd`` (sample); columns = the arms, then
    ``"<arm> − <baseline>"``. A seed missing from one of the two arms leaves that difference NaN (it is
    not paired with another seed). IoU-type metrics in %. Arm order: ``order``, else as given (a flat
    list: baseline first, the others sorted).
    """
    import pandas as pd

    arms = _by_arm(records_by_arm, profile, seeds, order)
    if baseline is None:
        baseline = "baseline" if "baseline" in arms else next(iter(arms))
    if baseline not in arms:
        raise ResultsError(f"baseline arm {baseline!r} is not among the arms {list(arms)}")
    vals = {a: _values(v, metric) for a, v in arms.items()}
    all_seeds = sorted({s for v in vals.values() for s in v})
    data = {str(a): [v.get(s, np.nan) for s in all_seeds] for a, v in vals.items()}
    for a, v in vals.items():
        if a == baseline:
            continue
        b = vals[baseline]
        data[f"{a} − {baseline}"] = [v[s] - b[s] if s in v and s in b else np.nan for s in all_seeds]
    df = pd.DataFrame(data, index=pd.Index([f"seed {s}" for s in all_seeds], name=_metric_name(metric)))
    stats = pd.DataFrame([df.mean(), df.std(ddof=1)], index=["mean", "sd"])
    out = pd.concat([df, stats])
    out.index.name = _metric_name(metric)
    out.attrs.update(metric=_metric_name(metric), baseline=baseline, seeds=all_seeds,
                     profile=next(iter(arms.values()))[0].profile)
    return out.round(3)


def paired(method, baseline, metric: Metric = "mIoU") -> tuple[list[int], list[float], list[float]]:
    """``(seeds, method values, baseline values)`` over the seeds both arms have, in seed order: the
    input of :func:`blvnb.claims.every_seed_greater` (``a``, ``b``, ``seeds=``). IoU-type metrics in %.
    Raises when the two share no seed or their profiles differ."""
    m_items, b_items = items(method), items(baseline)
    pm, pb = {it.profile for it in m_items}, {it.profile for it in b_items}
    if pm != pb:
        raise ResultsError(f"method records are of profile(s) {sorted(map(str, pm))} but baseline records of "
                           f"{sorted(map(str, pb))}: compare runs of one profile")
    for what, its in (("method", m_items), ("baseline", b_items)):
        groups = {(it.row, it.arm) for it in its}
        if len(groups) > 1:
            raise ResultsError(f"{what}: expected the records of one arm, got {sorted(map(str, groups))}")
    a, b = _values(m_items, metric), _values(b_items, metric)
    seeds = sorted(set(a) & set(b))
    if not seeds:
        raise ResultsError(f"method seeds {sorted(a)} and baseline seeds {sorted(b)} have none in common: "
                           "comparisons are paired by seed")
    return seeds, [a[s] for s in seeds], [b[s] for s in seeds]


def per_class_table(records_by_arm, *, paper_rows: Mapping[str, Any] | None = None, baseline: Any = None,
                    shares: Sequence[float] | None = None, profile: str | None = None,
                    seeds: Iterable[int] | None = None, order: Sequence | None = None):
    """Per-class IoU (%) across arms (mean over seeds), each arm's paired gain over ``baseline``, and
    the paper's per-class rows beside them (BLV Tables 3/4, DARS Tables 4/12/14 style).

    ``paper_rows``: ``{label: row}``, a row being a pandas Series of a paper table (``paper.table(
    "blv-t3").loc["DAFormer†"]``) whose index holds class names in any spelling; columns that are not
    Cityscapes classes are dropped; a class the paper does not print is NaN. ``shares``: per-class pixel
    shares (fractions) to show as a first column. Rows: the 19 classes, then mIoU and the BLV and DARS
    tail means of the same per-class numbers.
    """
    import pandas as pd

    arms = _by_arm(records_by_arm, profile, seeds, order)
    if baseline is None:
        baseline = "baseline" if "baseline" in arms else next(iter(arms))
    if baseline not in arms:
        raise ResultsError(f"baseline arm {baseline!r} is not among the arms {list(arms)}")
    per = {a: {it.seed: np.array([metric_value(it.record, f"iou:{c}") for c in CLASSES]) for it in v}
           for a, v in arms.items()}
    cols: dict[str, np.ndarray] = {}
    if shares is not None:
        sh = np.asarray(shares, dtype=float)
        if sh.shape != (NUM_CLASSES,):
            raise ResultsError(f"shares must hold {NUM_CLASSES} values, got shape {sh.shape}")
        cols["pixel share %"] = 100 * sh
    for a, by_seed in per.items():
        cols[str(a)] = np.nanmean(np.stack(list(by_seed.values())), axis=0)
    for a, by_seed in per.items():
        if a == baseline:
            continue
        common = sorted(set(by_seed) & set(per[baseline]))
        if common:
            with np.errstate(invalid="ignore"):
                d = np.stack([by_seed[s] - per[baseline][s] for s in common])
            cols[f"{a} − {baseline}"] = np.nanmean(d, axis=0) if d.size else np.full(NUM_CLASSES, np.nan)
    for lbl, row in (paper_rows or {}).items():
        vals = np.full(NUM_CLASSES, np.nan)
        found = 0
        for k, v in dict(row).items():
            c = class_index(k)
            if c is not None and v is not None and not isinstance(v, str):
                vals[c] = float(v)
                found += 1
        if found == 0:
            raise ResultsError(f"paper row {lbl!r} has no per-class column (its labels: {list(dict(row))})")
        cols[f"paper: {lbl}"] = vals
    import warnings

    df = pd.DataFrame(cols, index=pd.Index(list(CLASSES), name="class"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
        summary = pd.DataFrame({name: [np.nanmean(df[name].to_numpy()[list(sub)]) for name in df.columns]
                                for sub, name in ((range(NUM_CLASSES), "mIoU (19)"), (BLV_TAIL, "tail mIoU (BLV, 9)"),
                                                  (DARS_TAIL, "tail mIoU (DARS, 13)"))},
                               index=df.columns).T
    if "pixel share %" in summary.columns:
        summary["pixel share %"] = np.nan
    df["BLV tail"] = ["yes" if i in BLV_TAIL else "" for i in range(NUM_CLASSES)]
    df["DARS tail"] = ["yes" if i in DARS_TAIL else "" for i in range(NUM_CLASSES)]
    summary["BLV tail"] = ""
    summary["DARS tail"] = ""
    out = pd.concat([df, summary])
    out.index.name = "class"
    num = out.select_dtypes("number").columns
    out[num] = out[num].round(2)
    out.attrs.update(baseline=baseline, seeds=sorted({s for v in per.values() for s in v}))
    return out
