"""From a table's runs to what a chapter shows and decides: the per-seed values of named arms (paired by
seed) for :mod:`blvnb.claims`, verdicts that say *not run* when an arm did not run in the profile,
selectors for :func:`blvnb.viz.tables.side_by_side` that skip arms a profile leaves out, the class shares
a run counted, and trained models read back from their records for the figures that need a model (BLV
Figs. 4 and 6).

Arms are named by a selector: ``(row, arm)`` as the table declares them
(:mod:`blvnb.experiments.tables`), or an arm name alone when the table has one row. Results are
anything :func:`blvnb.viz.tables.items` accepts (a ``TableRuns`` first of all).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence

import numpy as np

from blvnb.classes import CLASSES, NUM_CLASSES
from blvnb.viz.tables import Item, ResultsError, items, metric_value

__all__ = ["chapter_runner", "both", "select", "has", "present", "records", "by_arm", "with_arm", "arm_values", "iou_values", "verdict",
           "verdicts_markdown", "ratios", "gain_share_values", "gain_share_verdict", "class_shares", "count_estimates", "load_model",
           "eval_dataset", "label_shares", "logit_separation", "tail_rich_indices"]

Selector = str | tuple


def chapter_runner(profile: str, seeds=None, data_root: str | None = None, device: str | None = None):
    """A chapter's ``runs_of(table)``: every run of a results table in the chapter's profile, seeds, data and
    device, trained or read back from the store (:func:`blvnb.experiments.table_runs.run`); shows one line
    saying what the runs are, and returns their :class:`~blvnb.experiments.table_runs.TableRuns`."""
    from IPython.display import Markdown, display

    from blvnb.experiments import table_runs

    def runs_of(table: str):
        res = table_runs.run(table, profile, seeds, data_root=data_root, device=device, progress=False)
        display(Markdown(f"*Runs of `{table}` in the `{profile}` profile: {res.note}*"))
        return res

    return runs_of


def both(arms, metrics=("mIoU", "mIoU_tail_blv"), baseline=None):
    """Per-seed values and seed-paired differences of several metrics, side by side
    (:func:`blvnb.viz.tables.seed_table` of each, one column group per metric)."""
    import pandas as pd

    from blvnb.viz import tables as vt

    return pd.concat([vt.seed_table(arms, m, baseline=baseline) for m in metrics], axis=1, keys=list(metrics))


def _match(it: Item, sel: Selector) -> bool:
    if isinstance(sel, tuple):
        if len(sel) != 2:
            raise ResultsError(f"a selector is (row, arm) or an arm name, got {sel!r}")
        return it.row == sel[0] and it.arm == sel[1]
    return it.arm == sel


def select(results, sel: Selector) -> list[Item]:
    """The runs of one arm (one per seed, sorted by seed); empty when the profile did not run it."""
    return sorted((it for it in items(results) if _match(it, sel)), key=lambda it: it.seed)


def has(results, sel: Selector) -> bool:
    """Whether ``results`` hold at least one run of the arm ``sel``."""
    return bool(select(results, sel))


def records(results, sel: Selector) -> list[dict]:
    """The run records of one arm, sorted by seed (the input of the figures that take one arm)."""
    return [it.record for it in select(results, sel)]


def by_arm(results, arms: Mapping[str, Selector]) -> dict[str, list[dict]]:
    """``{name: [records]}`` for the named arms that ran in this profile (those that did not are left
    out): the ``records_by_arm`` of :func:`blvnb.viz.tables.seed_table` and the figures."""
    out = {name: records(results, sel) for name, sel in arms.items()}
    return {k: v for k, v in out.items() if v}


def with_arm(results, row: str, arm: str, spec, *, profile: str, seeds: Sequence[int], data_root: str | None = None,
             device: str | None = None) -> list[dict]:
    """The entries of ``results`` plus one more arm: ``spec`` (a :class:`blvnb.experiments.tables.Spec`)
    run at ``seeds`` (or read back from the store). For a row the tables do not declare (the released
    code's settings beside the paper's)."""
    from blvnb.experiments import runs, tables

    out = [dict(e) for e in (results.records if hasattr(results, "records") else results)]
    for s in seeds:
        cfg = tables.make_config(spec, profile, int(s), data_root).with_(progress=False)
        if device is not None:
            cfg = cfg.with_(device=device)
        out.append({"row": row, "arm": arm, "seed": int(s), "key": cfg.key(), "record": runs.run(cfg)})
    return out


def present(results, selectors: Mapping[str, Selector | None]) -> dict[str, dict | None]:
    """``side_by_side``'s ``rows=`` / ``columns=`` from ``{paper label: (row, arm)}``: a label whose arm
    did not run in this profile gets None (shown as "—") instead of an error."""
    out = {}
    for label, sel in selectors.items():
        if sel is None or not has(results, sel):
            out[label] = None
        elif isinstance(sel, tuple):
            out[label] = {"row": sel[0], "arm": sel[1]}
        else:
            out[label] = {"arm": sel}
    return out


def _per_seed(results, arms: Mapping[str, Selector], value) -> tuple[dict[str, list], list[int]]:
    if not arms:
        raise ResultsError("no arms given")
    by_arm = {}
    for name, sel in arms.items():
        its = select(results, sel)
        if not its:
            have = sorted({(it.row, it.arm) for it in items(results)}, key=str)
            raise ResultsError(f"arm {name!r} = {sel!r} has no run in these results; they hold {have}")
        by_arm[name] = {it.seed: it for it in its}
    seeds = sorted(set.intersection(*(set(v) for v in by_arm.values())))
    if not seeds:
        raise ResultsError("the arms share no seed: " + ", ".join(f"{a}: {sorted(v)}" for a, v in by_arm.items())
                           + "; comparisons are paired by seed")
    return {a: [value(v[s].record) for s in seeds] for a, v in by_arm.items()}, seeds


def arm_values(results, arms: Mapping[str, Selector], metric="mIoU") -> tuple[dict[str, list[float]], list[int]]:
    """``({name: [value per seed]}, seeds)`` over the seeds *every* arm has (IoU-type metrics in %).

    ``arms``: ``{name: selector}``; ``metric`` as :func:`blvnb.viz.tables.metric_value` takes it."""
    return _per_seed(results, arms, lambda rec: metric_value(rec, metric))


def iou_values(results, arms: Mapping[str, Selector]) -> tuple[dict[str, list[list[float]]], list[int]]:
    """``({name: [per-class IoU vector (19, fractions) per seed]}, seeds)`` over the seeds every arm has:
    the input of :func:`blvnb.viz.interactive.iou_explorer`."""
    def vec(rec):
        return [metric_value(rec, f"iou:{c}") / 100.0 for c in CLASSES]

    return _per_seed(results, arms, vec)


def verdict(claim_id: str, results, arms: Mapping[str, Selector], *, profile: str, metric=None, note: str = "",
            save: bool = True):
    """The claim's verdict on the arms' per-seed values (paired by seed, over the seeds all arms have).

    ``arms`` maps the claim's arm names to selectors of ``results``; ``metric`` defaults to the claim's.
    When an arm did not run in this profile, the verdict is *not run* (and is not saved: the status page
    says so by itself); otherwise it is saved for the status page when ``save``."""
    from blvnb import claims

    claim = claims.get(claim_id)
    missing = [a for a, sel in arms.items() if not has(results, sel)]
    if missing:
        return claim.not_run(profile, note=f"the `{profile}` profile does not run the arm(s) {', '.join(missing)} "
                                           "of this claim; the gpu and paper profiles run every arm.")
    values, seeds = arm_values(results, arms, metric or claim.metric)
    v = claim.evaluate(values, profile=profile, seeds=seeds, note=note)
    if save:
        claims.save(v)
    return v


def verdicts_markdown(verdicts: Sequence) -> str:
    """The verdicts of a section as Markdown: each evaluated one in full (with its evidence), then the
    claims this profile did not run, in one line; each links to its claim's row of the status page."""
    from blvnb.claims import status_link

    run = [v for v in verdicts if v.outcome != "not run"]
    skipped = [v for v in verdicts if v.outcome == "not run"]
    parts = [v._repr_markdown_() for v in run]
    if skipped:
        profile = skipped[0].profile
        names = ", ".join(status_link(v.claim.id, f"<code>{v.claim.id}</code>") for v in skipped)
        parts.append(f"*Not run in the `{profile}` profile* (the gpu and paper profiles run them; each links to "
                     f"its row of the reproduction status): {names}.")
    return "\n\n---\n\n".join(parts) if parts else "*No claim is decided by this section.*"


def ratios(results, method: Selector, baseline: Selector, metric="train_seconds") -> tuple[list[float], list[int]]:
    """Per-seed ratio ``method / baseline`` of ``metric`` (BLV Table 12: training time with and without BLV)."""
    vals, seeds = arm_values(results, {"m": method, "b": baseline}, metric)
    return [m / b if b else math.nan for m, b in zip(vals["m"], vals["b"])], seeds


def gain_share_values(results, method: Selector, baseline: Selector, shares: Sequence[float], *,
                      drop_never: bool = True) -> tuple[dict[str, list[float]], dict[str, float], list[int]]:
    """BLV Fig. 3 as numbers: ``({class: [IoU gain per seed]}, {class: log10 pixel share}, seeds)``, paired
    by seed, for the classes whose IoU is defined in every seed of both arms and whose share is > 0 (the
    input of the ``blv-fig3`` correlation claim). ``drop_never``: also leave out the classes at IoU 0 in both
    arms in every seed (a class neither model ever segments says nothing about where BLV helps; it enters
    the correlation as a tie at gain 0 otherwise)."""
    sh = np.asarray(shares, dtype=float)
    if sh.shape != (NUM_CLASSES,):
        raise ResultsError(f"shares must hold {NUM_CLASSES} values, got shape {sh.shape}")
    per, seeds = iou_values(results, {"m": method, "b": baseline})
    m, b = np.asarray(per["m"], dtype=float), np.asarray(per["b"], dtype=float)
    gains = 100.0 * (m - b)  # seeds × classes, % points
    values, x = {}, {}
    for c, name in enumerate(CLASSES):
        never = bool((m[:, c] == 0).all() and (b[:, c] == 0).all())
        if sh[c] > 0 and np.isfinite(gains[:, c]).all() and not (never and drop_never):
            values[name] = gains[:, c].tolist()
            x[name] = float(np.log10(sh[c]))
    return values, x, seeds


def gain_share_verdict(claim_id: str, results, method: Selector, baseline: Selector, shares: Sequence[float], *,
                       profile: str, note: str = "", save: bool = True):
    """The verdict of a "gain falls as the pixel share grows" claim (BLV Fig. 3): the per-seed Spearman
    correlation of :func:`gain_share_values`. With fewer than 3 usable classes (a model that segments almost
    nothing, as in the smoke profile) there is no rank correlation: the verdict is inconclusive and says so.

    The verdict leaves out the classes at IoU 0 in both arms in every seed; its note names them and gives
    the correlation with them kept (gain 0), so that a reader sees what leaving them out changes."""
    from dataclasses import replace

    from blvnb import claims

    claim = claims.get(claim_id)
    values, x, seeds = gain_share_values(results, method, baseline, shares)
    every, x_every, _ = gain_share_values(results, method, baseline, shares, drop_never=False)
    never = [c for c in every if c not in values]
    used = (f"{len(values)} classes (those with an IoU in every run and above 0 in some run); x = log10 of the "
            "pixel share the BLV run counted.")
    if never:
        used += f" Left out, at IoU 0 in both arms in every seed: {', '.join(never)}."
        if len(every) >= 3:
            t = claim.evaluate(every, x=x_every, profile=profile, seeds=seeds).tests[0]
            rho = ", ".join("—" if math.isnan(r) else f"{r:+.3f}" for r in t.differences).replace("-", "−")
            lo, hi = (f"{b:+.3f}".replace("-", "−") for b in t.interval)
            used += (f" With them kept ({len(every)} classes): Spearman ρ per seed {rho}, 95 % interval "
                     f"[{lo}, {hi}] ({t.outcome}).")
    else:
        used += " No class is at IoU 0 in both arms in every seed: nothing is left out."
    note = f"{note} {used}".strip()
    if len(values) < 3:
        v = replace(claim.not_run(profile), outcome="inconclusive", seeds=tuple(seeds),
                    chapter=os.environ.get("BLVNB_NOTEBOOK"), note=f"{note} A rank correlation needs at least 3 classes.")
    else:
        v = claim.evaluate(values, x=x, profile=profile, seeds=seeds, note=note)
    if save:
        claims.save(v)
    return v


def class_shares(record: Mapping) -> np.ndarray:
    """The per-class pixel shares the run's BLV loss counted (its strategy's summary: ``class_counts`` of
    a supervised run, ``source_counts`` of a UDA run, the first ``counts`` of a mean-teacher run)."""
    s = record.get("summary") or {}
    counts = s.get("class_counts") or s.get("source_counts")
    if counts is None and s.get("counts"):
        counts = s["counts"][0].get("counts")
    if counts is None:
        raise ResultsError(f"the record's summary holds no class counts (keys: {sorted(s)}); use a BLV run's record")
    c = np.asarray(counts, dtype=float)
    if c.shape != (NUM_CLASSES,) or c.sum() <= 0:
        raise ResultsError(f"class counts of shape {c.shape} and sum {c.sum()}: expected {NUM_CLASSES} counts")
    return c / c.sum()


def count_estimates(record: Mapping, truth: Sequence[float]):
    """BLV Table 13's two estimates of the class distribution, as a mean-teacher run's summary logs them:
    one line per estimate (the labeled split's counts, then Eq. (4) after each epoch) with its
    KL divergence to ``truth`` (the shares of the whole training split's real labels) and the share of
    BLV's nine tail classes."""
    import pandas as pd

    from blvnb.classes import BLV_TAIL

    s = record.get("summary") or {}
    hist = s.get("counts") or []
    if not hist:
        raise ResultsError(f"the record's summary logs no class counts (keys: {sorted(s)}); use a mean-teacher BLV run")
    t = np.asarray(truth, dtype=float)
    t = t / t.sum()
    rows = []
    for h in hist:
        q = np.asarray(h["counts"], dtype=float)
        if q.sum() <= 0:
            continue
        q = q / q.sum()
        kl = float(np.sum(np.where(t > 0, t * (np.log(np.maximum(t, 1e-12)) - np.log(np.maximum(q, 1e-6))), 0.0)))
        rows.append({"estimate": h.get("source"), "epoch": h.get("epoch"), "KL(truth ‖ estimate)": round(kl, 4),
                     "tail share % (estimate)": round(100 * float(q[list(BLV_TAIL)].sum()), 2),
                     "tail share % (truth)": round(100 * float(t[list(BLV_TAIL)].sum()), 2)})
    return pd.DataFrame(rows)


def load_model(record: Mapping, device: str = "cpu"):
    """The trained model of a run record (its config's ``model``, sized for its data set's classes, weights
    from its ``checkpoint``) in eval mode without gradients, or None when the checkpoint is not on this
    machine (records imported from a GPU server)."""
    from pathlib import Path

    from blvnb.devices import resolve_device
    from blvnb.engine import loop
    from blvnb.experiments.runs import num_classes_of
    from blvnb.models.registry import build_model

    ckpt = record.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        return None
    cfg = record.get("config") or {}
    if "model" not in cfg:
        raise ResultsError(f"the record's config names no model (keys: {sorted(cfg)})")
    model = build_model(cfg["model"], num_classes=num_classes_of(cfg.get("dataset", "cityscapes")))
    loop.load_model_state(model, loop.load_checkpoint(ckpt)["model"], ckpt)
    return model.to(resolve_device(device)).eval().requires_grad_(False)


def eval_dataset(profile: str, data_root: str | None = None, split: str = "val"):
    """Cityscapes ``split`` as the runs of ``profile`` evaluate it (un-augmented, normalised)."""
    from blvnb.devices import resolve_device
    from blvnb.experiments.runs import RunConfig, RunData

    cfg = RunConfig.from_profile(profile, data_root=data_root, progress=False)
    return RunData(cfg, "eval", resolve_device("cpu")).dataset("cityscapes", split, train=False)


def logit_separation(results, arms: Mapping[str, Selector], dataset, *, n_pixels: int = 2000,
                     n_per_class: int = 200, device: str = "cpu") -> dict | None:
    """BLV Fig. 6's number: how well each arm's model separates the classes in logit space on validation
    pixels (:func:`blvnb.viz.figures.separation`: k-NN accuracy and silhouette), per seed over the seeds
    every arm has; also the first seed's features for the t-SNE picture.

    Returns ``{"knn": {name: [% per seed]}, "silhouette": {name: [per seed]}, "seeds": [...],
    "features": {name: (N×C, N)}}``, or None when a checkpoint is not on this machine."""
    from blvnb.viz.figures import pixel_logits, separation

    per, seeds = _per_seed(results, arms, lambda rec: rec)
    out: dict = {"knn": {a: [] for a in per}, "silhouette": {a: [] for a in per}, "seeds": seeds, "features": {}}
    for i, s in enumerate(seeds):
        for name in per:
            model = load_model(per[name][i], device)
            if model is None:
                return None
            x, y = pixel_logits(model, dataset, n_pixels, seed=0)  # the same pixels for every model and seed
            sep = separation(x, y, n_per_class=n_per_class, seed=0)
            out["knn"][name].append(100.0 * sep["knn_accuracy"])
            out["silhouette"][name].append(sep["silhouette"])
            if i == 0:
                out["features"][name] = (x, y)
    return out


def label_shares(profile: str, data_root: str | None = None, kind: str = "cityscapes", split: str = "train") -> np.ndarray:
    """The per-class shares of the valid pixels of a data set's real labels, as the runs of ``profile`` read
    it (``kind`` "cityscapes", "gta5" or "synthia"; GTA5 and SYNTHIA have one split, "all")."""
    from blvnb.devices import resolve_device
    from blvnb.experiments.runs import RunConfig, RunData

    cfg = RunConfig.from_profile(profile, data_root=data_root, progress=False)
    data = RunData(cfg, "eval", resolve_device("cpu"))
    c = np.asarray(data.class_counts(data.dataset(kind, split, train=False)), dtype=float)
    return c / c.sum()


def tail_rich_indices(dataset, n: int = 3, tail: Sequence[int] | None = None) -> list[int]:
    """The ``n`` images of ``dataset`` with the most ground-truth pixels of the ``tail`` classes (BLV's nine
    by default): a choice made from the labels alone, never from any model's predictions."""
    from blvnb.classes import BLV_TAIL

    tail = list(BLV_TAIL if tail is None else tail)
    scores = []
    for i in range(len(dataset)):
        lab = dataset[i]["label"]
        lab = np.asarray(lab.cpu().numpy() if hasattr(lab, "cpu") else lab)
        scores.append(int(np.isin(lab, tail).sum()))
    order = np.argsort(-np.asarray(scores), kind="stable")
    return [int(i) for i in order[: max(1, int(n))]]
