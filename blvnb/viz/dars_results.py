"""What the DARS chapters share: run a results table and say what it could not run, per-seed numbers of
named arms, verdicts decided from them (or "not run", with the reason), and the trained models, pseudo
labels and images behind the figures.

The chapters (``notebooks/dars_*.ipynb``) only call these and show what they return. Runs come from
:func:`blvnb.experiments.table_runs.run` (shared by key: one round-0 teacher per split and seed serves every
table that starts from it); models are rebuilt from a run's checkpoint; pseudo labels are read from the
folder the round wrote them to (the run record's ``summary["labels_dir"]``), never recomputed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from blvnb.classes import CLASSES, DARS_TAIL, NUM_CLASSES
from blvnb.errors import BlvnbError
from blvnb.viz.tables import ResultsError, items, metric_value

__all__ = ["Ran", "run_table", "arm_records", "values", "decide", "decide_values", "side_by_side", "explorer",
           "config_of", "load_model", "run_data", "unlabeled_view", "val_view", "labeled_prior",
           "teacher_histogram", "table5_kl", "pseudo_maps", "summary_value", "head_share", "first_losses",
           "size_accuracy", "label_groups", "row_map", "image_names", "size_inputs", "plot_shares",
           "label_space_metrics"]


# --- running a table -------------------------------------------------------------------------------------

@dataclass(repr=False)
class Ran:
    """The outcome of :func:`run_table`: the records (``runs``, a :class:`~blvnb.experiments.table_runs.TableRuns`,
    None when nothing could run), the arms the library cannot run yet (``missing``: (row, arm, why)) and
    the reason the table could not run at all (``error``)."""

    table: str
    profile: str
    runs: Any = None
    missing: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.runs is not None and bool(self.runs.records)

    @property
    def grouped(self) -> dict:
        return self.runs.grouped if self.runs is not None else {}

    def distinct_runs(self) -> int:
        return len({r["key"] for r in self.runs.records}) if self.runs is not None else 0

    def minutes(self) -> float:
        """Training minutes of the table's distinct runs (as recorded, wherever they ran)."""
        if self.runs is None:
            return 0.0
        sec = {r["key"]: float(r["record"].get("train_seconds") or 0.0) for r in self.runs.records}
        return sum(sec.values()) / 60.0

    def __repr__(self) -> str:
        n = len(self.runs.records) if self.runs is not None else 0
        return (f"Ran({self.table!r}, {self.profile!r}: {n} records, {len(self.missing)} rows left out"
                + (f", error {self.error!r}" if self.error else "") + ")")

    def _repr_markdown_(self) -> str:
        lines = []
        if self.runs is not None and not self.runs.records:
            lines.append(f"**No run of `{self.table}` can run in the `{self.profile}` profile yet.** {self.runs.note}")
        elif self.runs is not None:
            seeds = sorted({r["seed"] for r in self.runs.records})
            lines.append(f"**Runs of `{self.table}`** in the `{self.profile}` profile: {self.distinct_runs()} distinct "
                         f"runs (seeds {seeds}), {self.minutes():.1f} minutes of training as recorded. "
                         f"{self.runs.note}")
        if self.error:
            lines.append(f"**`{self.table}` cannot run in the `{self.profile}` profile yet**: {self.error}")
        if self.missing:
            lines.append("Rows the library cannot run yet (left out, shown as — below):")
            lines += [f"* {row} / {arm}: {why}" for row, arm, why in self.missing]
        return "\n\n".join(lines) if lines else f"`{self.table}`: no runs."


def run_table(table: str, profile: str, seeds: Sequence[int] | None = None, *, data_root: str | None = None,
              device: str | None = None, allow_unsupported: bool = False) -> Ran:
    """:func:`blvnb.experiments.table_runs.run` for ``table``, with the arms it leaves out named.

    ``allow_unsupported``: a table whose runs the engine cannot configure or train yet (a data set the run
    wiring does not know: VOC, ScanNet; a setting a strategy rejects) comes back with ``error`` set instead
    of raising; the chapter shows the paper's numbers and says what is missing. Only the chapters whose
    tables wait for such a piece pass it: elsewhere a failing run fails the chapter."""
    from blvnb.experiments import table_runs, tables

    missing = tables.unavailable(table, profile)
    try:
        runs = table_runs.run(table, profile, seeds, data_root=data_root, device=device, progress=False)
    except BlvnbError as exc:  # ConfigError included
        if not allow_unsupported:
            raise
        return Ran(table, profile, None, missing, str(exc))
    return Ran(table, profile, runs, missing)


# --- per-seed numbers ------------------------------------------------------------------------------------

def _runs(x):
    return x.runs if isinstance(x, Ran) else x


def arm_records(ran, row, arm=None) -> dict[int, dict]:
    """``{seed: record}`` of one row (and arm: needed when the row has several) of a table's records."""
    grouped = _runs(ran).grouped if _runs(ran) is not None else {}
    if row not in grouped:
        return {}
    arms = grouped[row]
    if arm is None:
        if len(arms) != 1:
            raise ResultsError(f"row {row!r} has arms {list(arms)}: name one")
        arm = next(iter(arms))
    return dict(arms.get(arm, {}))


def summary_value(key: str):
    """A metric for :func:`values`: ``record["summary"][key]`` (e.g. ``kl_labeled_to_pseudo``)."""
    def get(rec):
        v = (rec.get("summary") or {}).get(key)
        return math.nan if v is None else float(v)
    get.__name__ = key
    return get


def values(ran, arms: Mapping[str, Any], metric="mIoU", seeds: Sequence[int] | None = None
           ) -> tuple[list[int], dict[str, list[float]]] | None:
    """Per-seed values of ``metric`` for each named arm, over the seeds *every* arm has (paired by seed).

    ``arms``: ``{name: (row, arm)}`` or ``{name: row}`` (a row with one arm); ``metric``: as
    :func:`blvnb.viz.tables.metric_value` takes it (a name, ``"iou:<class>"``, a callable such as
    :func:`summary_value`). None when an arm has no record or the arms share no seed.
    """
    if _runs(ran) is None:
        return None
    per = {}
    for name, sel in arms.items():
        row, arm = sel if isinstance(sel, tuple) else (sel, None)
        recs = arm_records(ran, row, arm)
        if not recs:
            return None
        per[name] = {s: metric_value(r, metric) for s, r in recs.items()}
    common = sorted(set.intersection(*(set(v) for v in per.values()))) if per else []
    if seeds is not None:
        common = [s for s in common if s in set(seeds)]
    if not common:
        return None
    return common, {n: [v[s] for s in common] for n, v in per.items()}


def _save(v):
    from blvnb import claims

    claims.save(v)
    return v


def decide_values(claim_id: str, got, *, profile: str, x=None, note: str = "", why_not: str = ""):
    """The verdict of ``claim_id`` on ``got`` = ``(seeds, {arm: per-seed values})`` — or "not run" with
    ``why_not`` when ``got`` is None — saved for the status page."""
    from blvnb import claims

    c = claims.get(claim_id)
    if got is None:
        return _save(c.not_run(profile, note=why_not or f"the runs this claim compares did not run in the "
                                                      f"`{profile}` profile"))
    seeds, vals = got
    return _save(c.evaluate(vals, profile=profile, seeds=seeds, x=x, note=note))


def decide(claim_id: str, ran, arms: Mapping[str, Any], metric="mIoU", *, profile: str, note: str = "",
           why_not: str = ""):
    """:func:`decide_values` on :func:`values` of ``arms`` (claim arm name → (row, arm) of the table)."""
    got = values(ran, arms, metric)
    if got is None and not why_not:
        sels = {n: (sel if isinstance(sel, tuple) else (sel, None)) for n, sel in arms.items()}
        absent = [f"{n} (row {sels[n][0]!r})" for n in arms if not _runs(ran) or not arm_records(ran, *sels[n])]
        why_not = (f"no runs of {', '.join(absent)} in the `{profile}` profile" if absent else
                   "the arms share no seed")
        if isinstance(ran, Ran) and ran.missing:
            why_not += "; the library cannot run yet: " + "; ".join(f"{r}/{a} ({w})" for r, a, w in ran.missing)
    return decide_values(claim_id, got, profile=profile, note=note, why_not=why_not)


def side_by_side(ran, paper_df, **kw):
    """:func:`blvnb.viz.tables.side_by_side`, or the paper's table alone (with a caption saying why) when
    none of our runs could run."""
    from blvnb.viz.tables import side_by_side as sbs

    if isinstance(ran, Ran) and not ran.ok:
        return paper_df.style.set_caption(f"{str(paper_df.attrs.get('paper', '')).upper()} Table "
                                          f"{paper_df.attrs.get('table', '')}: the paper's numbers (no runs of ours "
                                          f"in the `{ran.profile}` profile)")
    return sbs(_runs(ran), paper_df, **kw)


def explorer(ran, arms: Mapping[str, Any], *, title: str, tail=DARS_TAIL, class_names: Sequence[str] | None = None):
    """The interactive per-class IoU explorer (with its static twin) over the arms run at the most seeds
    (paired by seed); None when no arm has records. ``class_names``: a label space other than Cityscapes'
    (VOC, ScanNet), read by position from records of that many classes."""
    from blvnb.viz import interactive

    sels = {n: (sel if isinstance(sel, tuple) else (sel, None)) for n, sel in arms.items()}
    have = {n: s for n, s in sels.items() if arm_records(ran, *s)}
    if not have:
        return None
    # arms run at fewer seeds (sweep points) would break the pairing: keep those with the most seeds
    counts = {n: len(arm_records(ran, *s)) for n, s in have.items()}
    most = max(counts.values())
    have = {n: s for n, s in have.items() if counts[n] == most}
    seeds, _ = values(ran, have, "mIoU")
    names = list(class_names) if class_names is not None else list(CLASSES)

    def per_class(rec):
        if class_names is None:
            return [metric_value(rec, f"iou:{c}") / 100.0 for c in CLASSES]
        iou = (rec.get("metrics") or {}).get("iou") or []
        if len(iou) != len(names):
            raise ResultsError(f"a record has {len(iou)} per-class IoUs, not the {len(names)} of this label space")
        return [math.nan if v is None else float(v) for v in iou]

    per = {n: [per_class(arm_records(ran, *s)[seed]) for seed in seeds] for n, s in have.items()}
    return interactive.iou_explorer(per, seeds=seeds, tail=tail if class_names is None else (), title=title,
                                    class_names=names)


# --- models and data behind the figures ---------------------------------------------------------------------

def config_of(table: str, profile: str, row, arm, seed: int, data_root: str | None = None):
    """The RunConfig of (row, arm, seed) of ``table`` (:func:`blvnb.experiments.tables.entries`)."""
    from blvnb.experiments import tables

    for e in tables.entries(table, profile, [seed], data_root):
        if e.row == row and e.arm == arm:
            return e.cfg
    raise ResultsError(f"{table} has no run {row!r}/{arm!r} at seed {seed} in profile {profile!r}")


def load_model(cfg, record: Mapping, device="auto"):
    """The trained model of a run (``record["checkpoint"]``), in eval mode, with its data set's classes
    (:func:`blvnb.viz.evidence.load_model` with ``cfg`` as the record's config); an error when the
    checkpoint is not on this machine."""
    from blvnb.viz.evidence import load_model as load_record_model

    model = load_record_model({**record, "config": {**(record.get("config") or {}), "model": cfg.model,
                                                    "dataset": cfg.dataset}}, device)
    if model is None:
        raise ResultsError(f"run {record.get('key', '?')} has no checkpoint on this machine "
                           f"({record.get('checkpoint') or 'none recorded'})")
    return model


def run_data(cfg, device="auto"):
    from blvnb.devices import resolve_device
    from blvnb.experiments.runs import RunData

    return RunData(cfg, cfg.key(), resolve_device(device))


def unlabeled_view(cfg, n: int | None = None, device="auto"):
    """The un-augmented unlabeled images of ``cfg``'s split (the first ``n``), as the teacher sees them."""
    data = run_data(cfg, device)
    _, unl = data.split_indices(cfg.labeled_fraction)
    unl = list(unl)[: n if n is not None else None]
    return data.dataset(cfg.dataset, "train", train=False, indices=unl)


def val_view(cfg, device="auto"):
    return run_data(cfg, device).dataset("cityscapes", "val", train=False)


def labeled_prior(cfg, device="auto"):
    """The class shares of the labeled split's pixels (DARS's prior r_j), float64 tensor [19]."""
    from blvnb.pseudo.distribution import prior_from_counts

    data = run_data(cfg, device)
    lab, _ = data.split_indices(cfg.labeled_fraction)
    return prior_from_counts(data.class_counts(data.dataset(cfg.dataset, "train", train=False, indices=list(lab))))


def teacher_histogram(model, dataset, device="auto", flip: bool = True):
    """DARS Fig. 3's numbers: the float16 confidence histogram of ``model``'s flip-averaged predictions on
    ``dataset`` (streamed, one image at a time)."""
    import torch

    from blvnb.engine.teacher import TeacherSource
    from blvnb.pseudo.streaming import ConfidenceHistogram
    from blvnb.pseudo.thresholds import confidence

    src = TeacherSource(model, dataset, device=device, dtype=torch.float16, flip=flip)
    hist = ConfidenceHistogram.empty(src.num_classes)
    for i in range(len(src)):
        conf, pred = confidence(src[i], 0)
        hist.update(conf, pred)
    return hist


def _logits(model, dataset, device, flip=True):
    import torch

    from blvnb.engine.teacher import TeacherSource

    src = TeacherSource(model, dataset, device=device, flip=flip)
    return torch.stack([src.logits(i).float().cpu() for i in range(len(src))])


def table5_kl(teacher, unlabeled, held_out, prior, *, focal_teacher=None, alpha: float = 0.2, device="auto",
              seed: int = 0, max_held_out: int = 48):
    """DARS Table 5 on one trained teacher: KL(labeled prior ‖ pseudo labels) of ST on the plain float16
    softmax, on temperature / matrix scaling and histogram binning fitted on ``held_out`` (the validation
    images, as the paper; at most ``max_held_out`` of them), on a focal-loss teacher's softmax, and of
    DARS. A DataFrame (row, KL, share of pixels labelled)."""
    import pandas as pd
    import torch
    from torch.utils.data import Subset

    held_out = Subset(held_out, range(min(len(held_out), int(max_held_out))))
    from blvnb.pseudo import calibration

    z = _logits(teacher, unlabeled, device)
    zh = _logits(teacher, held_out, device)
    yh = torch.stack([torch.as_tensor(held_out[i]["label"]).to(torch.int64) for i in range(len(held_out))])
    fz = _logits(focal_teacher, unlabeled, device) if focal_teacher is not None else None
    g = torch.Generator().manual_seed(int(seed))
    variants = calibration.table5_variants(z, zh, yh, focal_logits=fz, generator=g)
    rows = calibration.distribution_table(prior, variants, alpha=alpha,
                                          generator=torch.Generator().manual_seed(int(seed)))
    return pd.DataFrame([{"method": r.name, "KL(labeled ‖ pseudo)": r.kl, "labelled %": 100 * r.labeled_fraction}
                         for r in rows]).set_index("method")


def pseudo_maps(records: Mapping[str, Mapping], names: Sequence[str]) -> dict[str, list[np.ndarray]]:
    """The stored pseudo labels (``summary["labels_dir"]/<name>.png``) of each round's run for the images
    ``names``: ``{label: [H×W uint8]}``."""
    from pathlib import Path

    from PIL import Image

    out = {}
    for label, rec in records.items():
        d = (rec.get("summary") or {}).get("labels_dir")
        if not d or not Path(d).is_dir():
            raise ResultsError(f"{label}: the run's pseudo-label folder {d!r} is missing; run it again with force=True")
        out[label] = [np.asarray(Image.open(Path(d) / f"{n}.png")) for n in names]
    return out


def head_share(shares: Sequence[float]) -> float:
    """The share (%) of the DARS head classes (those not in its 13 tail classes) in a class distribution."""
    s = np.asarray(shares, dtype=float)
    s = s / s.sum()
    return 100.0 * float(s[[c for c in range(NUM_CLASSES) if c not in DARS_TAIL]].sum())


def first_losses(record: Mapping, stat: str = "loss_pseudo", fraction: float = 0.1) -> float:
    """The mean of ``history[stat]`` over the first ``fraction`` of a round (DARS Fig. 4's starting loss)."""
    h = (record.get("history") or {}).get(stat)
    if not h:
        return math.nan
    y = np.asarray(h, dtype=float)
    return float(np.nanmean(y[: max(1, int(round(fraction * y.size)))]))


def size_accuracy(model, dataset, edges, device="auto"):
    """DARS Fig. 5 (b)'s numbers for one model: :func:`blvnb.viz.figures.accuracy_by_object_size` of its
    predictions on ``dataset`` with the bin ``edges`` (pixels)."""
    from blvnb.viz import figures

    idx = list(range(len(dataset)))
    maps = figures.predict_maps({"m": model}, dataset, idx)  # on the model's device
    return figures.accuracy_by_object_size(maps["predictions"]["m"], maps["truth"], bins=edges)


def label_groups(dataset, size_bins: int = 8):
    """DARS Sec. 4.4's four occurrence/size groups of ``dataset``'s labels and object-size bin edges
    (quantiles of the objects' pixel sizes), from one pass over the labels."""
    from blvnb.data.stats import label_statistics

    st = label_statistics(dataset, progress=False)
    sizes = np.concatenate([v for v in st.object_sizes.values() if v.size]) if st.object_sizes else np.zeros(0)
    if sizes.size == 0:
        raise BlvnbError("label_groups: the labels hold no object")
    edges = np.unique(np.quantile(sizes, np.linspace(0, 1, size_bins + 1)))
    return st.groups(), edges.astype(float), st


# --- small pieces the chapters would otherwise spell out --------------------------------------------------

def row_map(ran, labels: Mapping[str, Any]) -> dict:
    """Selectors for :func:`side_by_side`: ``{paper label: our row}`` → ``{label: {"row": row}}`` where we
    have records of that row, ``None`` ("not run": a dash) where we do not."""
    grouped = ran.grouped if isinstance(ran, Ran) else (_runs(ran).grouped if _runs(ran) is not None else {})
    return {lbl: ({"row": row} if row in grouped else None) for lbl, row in labels.items()}


def image_names(dataset) -> list[str]:
    """The image names of a (possibly wrapped) data set, in its order."""
    d = dataset
    for _ in range(4):
        names = getattr(d, "names", None)
        if names is not None:
            return list(names)
        d = getattr(d, "base", None) or getattr(d, "dataset", None)
        if d is None:
            break
    raise ResultsError(f"{type(dataset).__name__} does not say its image names")


def size_inputs(curves: Mapping[int, Any]):
    """DARS Fig. 5 (b)'s claim inputs from ``{seed: accuracy_by_object_size(...)}`` (same bins): the
    size bins every seed has objects in, as ``((seeds, {bin: per-seed accuracy}), {bin: bin centre})``."""
    seeds = sorted(curves)
    if not seeds:
        return None, {}
    first = curves[seeds[0]]
    keep = [i for i in range(len(first)) if all(int(curves[s]["objects"].iloc[i]) > 0 for s in seeds)]
    if len(keep) < 3:
        return None, {}
    name = lambda i: f"{first['size_from'].iloc[i]:.0f}–{first['size_to'].iloc[i]:.0f} px"  # noqa: E731
    vals = {name(i): [float(curves[s]["accuracy"].iloc[i]) for s in seeds] for i in keep}
    x = {name(i): float((first["size_from"].iloc[i] + first["size_to"].iloc[i]) / 2) for i in keep}
    return (seeds, vals), x


def plot_shares(shares: Sequence[float], names: Sequence[str], *, title: str):
    """Class shares (% of valid pixels, log scale, largest first) of a label space of any size (VOC's 21,
    ScanNet's 20); classes that never occur are listed in the title."""
    from blvnb.viz import _subplots

    s = np.asarray(shares, dtype=float)
    order = [i for i in np.argsort(-s) if s[i] > 0]
    absent = [names[i] for i in range(s.size) if s[i] <= 0]
    fig, ax = _subplots(figsize=(9, 3.2))
    ax.bar(range(len(order)), 100 * s[order], color="#8da0cb", edgecolor="k", linewidth=0.4)
    ax.set_xticks(range(len(order)), [names[i] for i in order], rotation=60, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("% of valid pixels")
    ax.set_title(title + (f"\nnever occur: {', '.join(absent)}" if absent else ""), fontsize=10)
    fig.tight_layout()
    return fig


def label_space_metrics(paper_df, names: Sequence[str]) -> dict:
    """``metric_map`` for :func:`side_by_side` of a per-class table in another label space (DARS Table 12:
    ScanNet's 20 classes, in the benchmark's order): the paper's first ``len(names)`` columns read a
    record's ``metrics["iou"][j]`` — only from records of that label space (``len(iou) == len(names)``),
    so that a Cityscapes "wall" is never shown under ScanNet's "wall"."""
    cols = list(paper_df.columns)[: len(names)]

    def reader(j: int):
        def iou(rec):
            v = (rec.get("metrics") or {}).get("iou")
            if not isinstance(v, Sequence) or len(v) != len(names) or v[j] is None:
                return math.nan
            return 100.0 * float(v[j])
        iou.__name__ = f"iou:{names[j]}"
        return iou

    return {c: reader(j) for j, c in enumerate(cols)}
