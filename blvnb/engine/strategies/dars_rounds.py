r"""DARS self-training rounds (DARS Sec. 3.3–4.1; recipes.md (c)): a :class:`~.base.Strategy` per round.

A run of this strategy is *one* round :math:`k` (``cfg.strategy_options["round"]``):

* **round 0** — supervised on the labeled split only (``data.split_indices(cfg.labeled_fraction)``),
  with the schedule's first random-scale range; its lr schedule ends with the round
  (:math:`T_0` = the round's iterations), as the released ``epochs: 200``.
* **round k ≥ 1** —

  1. the run of round :math:`k-1` (the same options, ``round = k - 1``; :func:`round_config`) is the
     *teacher*: ``data.dependency`` runs it first when its record is missing;
  2. the teacher labels the whole unlabeled set once (:func:`label_round`): its flip-averaged logits on the
     un-augmented images (whole image or sliding windows), optionally calibrated
     (:mod:`blvnb.pseudo.calibration`), softmaxed in float16 as the released code, then ST, CBST, DA or
     DARS (:mod:`blvnb.pseudo`) through the streaming labeller at this round's labeling ratio
     :math:`\alpha_k` (:mod:`blvnb.pseudo.rounds`). The PNGs go to ``data.work_dir`` with a *manifest* of
     what produced them (the teacher checkpoint's SHA-256, the labeller and its settings, the prior, the
     unlabeled images): a later run with the same manifest reuses them, another manifest relabels. The
     labeller saves its progress as it goes, so a run killed while labelling continues where it stopped;
  3. the student starts from the teacher's checkpoint **with its optimiser state** (``Built.init_state``)
     and continues the poly schedule over all rounds, as the released ``resume:`` does
     (recipes.md (c) "Round k ≥ 1 training" 1): with :math:`I` iterations per round, round :math:`k`
     runs global iterations :math:`kI … (k+1)I - 1` of a schedule of length :math:`T_k = (k+1) I`, so
     it starts at :math:`\mathrm{lr}_0 (1 - k/(k+1))^{0.9}` — 0.0054 for round 1, 0.0037 for round 2 at
     :math:`\mathrm{lr}_0` = 0.01 — and decays to 0;
  4. every batch is half labeled, half pseudo-labeled (``cfg.batch_size // 2`` each; an epoch is one pass
     over the pseudo-labeled images), with this round's random-scale range for both; two separate
     forwards, and one backward of

     .. math:: L = \big(\mathrm{CE}_\text{main} + 0.4\,\mathrm{CE}_\text{aux}\big)_\text{labeled}
               + w \big(\mathrm{CE}_\text{main} + 0.4\,\mathrm{CE}_\text{aux}\big)_\text{pseudo},
               \quad w = 1,

     each cross entropy the mean over the *non-ignored* pixels of its half (``nn.CrossEntropyLoss`` in
     the released code: the pseudo term is not diluted by the ignored 255s); the auxiliary weights are
     the model's (PSPNet's FCN head: 0.4).

Parameter groups and the optimiser: the round's recipe, :func:`blvnb.engine.recipes.dars_recipe` — the
backbone at lr ×1, the decode and auxiliary heads at ×10 (``head_lr_mult``), as the released optimiser's
``layer0–4`` and ``ppm/cls/aux`` groups, at the run's ``lr`` and ``weight_decay``
(:func:`optimiser_settings`); the loss, the main + auxiliary sum and the parameter groups are the shared
parts (:mod:`.parts`). Iterative training = 2 rounds (DARS Sec. 4.1).

Options (``cfg.strategy_options``; defaults in :data:`DEFAULTS`): ``round``; ``schedule`` (a name of
:data:`blvnb.pseudo.rounds.RELEASED_SCHEDULES`: its α per round and its widenings β) or ``alphas``
(+ ``betas``) for :func:`~blvnb.pseudo.rounds.progressive_schedule`; ``scale_range``, the random-scale range
of rounds 0 and 1 (default: the run's ``cfg.scale_range``, the profile's; the released crop-361 configs
use [0.25, 1.0]), which later rounds widen by β; ``rotate`` (±10°) and ``blur`` (5×5), the released
augmentation, passed to ``data.dataset`` when it takes them; ``labeler`` ("st" | "cbst" | "da" | "dars"),
``threshold`` (ST), ``calibration`` (None | "ts" | "matrix" | "histogram", fitted on the teacher's logits
of the labeled images), ``teacher_mode`` ("whole" | "slide"), ``teacher_crop``, ``teacher_stride``,
``flip``, ``confidence_dtype`` ("float16" as released, or "float32"), ``prior`` (None: the labeled split's
class counts; or a list, e.g. the released percentages) and ``prior_total`` (with the released
percentages: their ``valid_ratio``, to reproduce the released budgets exactly), ``pseudo_weight``,
``head_lr_mult``, ``label_seed`` (the random sampling's seed; default the run's seed); ``extra_unlabeled``
(DARS Table 8's :math:`N_p`: that many images outside the training split join the unlabeled images that
rounds ≥ 1 pseudo-label and train on — Cityscapes' coarse ``train_extra`` images, the first by name, their
coarse labels unread, or on toycity Cityscapes-style images of another data seed:
``RunData.extra_images``; round 0, the teacher, never sees them; 0, the default, adds none and is not
written into a run's key unless given); ``round_iters`` (the iterations of rounds 0 … k, each round its own:
the paper profile's DARS recipe, 200 epochs over each round's own list — round 0 the labeled list, rounds ≥ 1
the unlabeled one —, so about 4.6k and 65k at 1/8; :func:`round_config` gives each round's config its entry as
``iters``; None, the default: every round ``cfg.iters``). With rounds of unequal length, round :math:`k`
continues the schedule as the released code counts it, over its own iterations :math:`I_k` (the resumed
epoch counter times the current loader's length): global iterations :math:`kI_k … (k+1)I_k - 1`.

The labels of round :math:`k` are fixed within the round; there is no EMA teacher (recipes.md (c)).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from blvnb.classes import NUM_CLASSES
from blvnb.engine.recipes import Recipe, dars_recipe
from blvnb.engine.strategies import parts
from blvnb.engine.strategies.base import Built, Strategy
from blvnb.engine.teacher import TeacherSource
from blvnb.errors import BlvnbError, ConfigError
from blvnb.losses import build_loss
from blvnb.io import file_sha256, write_json_atomic
from blvnb.pseudo import rounds as rounds_mod
from blvnb.pseudo.distribution import kl_divergence, prior_from_counts
from blvnb.pseudo.streaming import StreamingLabeler
from blvnb.pseudo.thresholds import METHODS, check_method, check_threshold

log = logging.getLogger(__name__)

#: the options of a round, with their defaults (module docstring)
DEFAULTS: dict[str, Any] = {
    "round": 0,
    "schedule": "cityscapes-1/8-crop361",
    "alphas": None,
    "scale_range": None,
    "betas": None,
    "labeler": "dars",
    "threshold": None,
    "calibration": None,
    "teacher_mode": "whole",
    "teacher_crop": None,
    "teacher_stride": None,
    "flip": True,
    "confidence_dtype": "float16",
    "prior": None,
    "prior_total": None,
    "pseudo_weight": 1.0,
    "head_lr_mult": 10.0,
    "label_seed": None,
    "rotate": 10.0,
    "blur": True,
    "extra_unlabeled": 0,
    "round_iters": None,
}

#: options that change round 0 (supervised on the labeled split): the others only matter from round 1 on,
#: so every labeller and ratio shares one round-0 run (:func:`round_config`)
#: (the schedule's α and β do not: round 0 trains with the range round 1 starts from, see round_settings)
ROUND0_KEYS = ("round", "scale_range", "head_lr_mult", "rotate", "blur")

#: options that change what the labeller writes (the manifest, with the teacher and the images)
LABEL_KEYS = ("labeler", "threshold", "calibration", "teacher_mode", "teacher_crop", "teacher_stride", "flip",
              "confidence_dtype", "prior", "prior_total")

#: bump when the labels written for the same manifest would change
LABEL_FORMAT = 1

_DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


# --- options ---------------------------------------------------------------------------------------------

def round_options(strategy_options: Mapping | None) -> dict[str, Any]:
    """The options of a round, with defaults filled in and checked (a ConfigError names a bad value)."""
    o = parts.parse_options("dars-rounds", strategy_options, DEFAULTS)
    k = o["round"]
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"dars-rounds: round must be an integer >= 0 (0 = supervised on the labeled split), "
                          f"got {k!r}")
    o["labeler"] = check_method(o["labeler"])
    if o["threshold"] is not None:
        if o["labeler"] != "st":
            raise ConfigError(f"dars-rounds: threshold={o['threshold']!r} is an option of labeler 'st', not "
                              f"{o['labeler']!r}")
        o["threshold"] = check_threshold(o["threshold"])
    if o["calibration"] not in (None, "ts", "matrix", "histogram"):
        raise ConfigError(f"dars-rounds: unknown calibration {o['calibration']!r}; use None, 'ts', 'matrix' or "
                          "'histogram'")
    if o["teacher_mode"] not in ("whole", "slide"):
        raise ConfigError(f"dars-rounds: teacher_mode must be 'whole' or 'slide', got {o['teacher_mode']!r}")
    if o["teacher_mode"] == "slide" and o["teacher_crop"] is None:
        raise ConfigError("dars-rounds: teacher_mode='slide' needs teacher_crop, e.g. 361 (the released crop)")
    if o["confidence_dtype"] not in _DTYPES:
        raise ConfigError(f"dars-rounds: confidence_dtype must be one of {sorted(_DTYPES)}, got "
                          f"{o['confidence_dtype']!r}")
    for name in ("pseudo_weight", "head_lr_mult"):
        v = o[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise ConfigError(f"dars-rounds: {name} must be a number >= 0, got {v!r}")
    if o["prior_total"] is not None:
        if o["prior"] is None:
            raise ConfigError(f"dars-rounds: prior_total={o['prior_total']!r} divides a given prior (e.g. the released "
                              "percentages, with prior_total=88.04); give prior too")
        pt = o["prior_total"]
        if isinstance(pt, bool) or not isinstance(pt, (int, float)) or not math.isfinite(pt) or pt <= 0:
            raise ConfigError(f"dars-rounds: prior_total must be a positive number, got {pt!r}")
    if o["prior"] is not None:
        from blvnb.pseudo.distribution import check_counts

        o["prior"] = [float(v) for v in check_counts(o["prior"], NUM_CLASSES, name="dars-rounds: prior")]
    n = o["extra_unlabeled"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"dars-rounds: extra_unlabeled must be an integer >= 0 (a number of extra unlabeled "
                          f"images), got {n!r}")
    if o["rotate"] is not None and (isinstance(o["rotate"], bool) or not isinstance(o["rotate"], (int, float))
                                    or not 0 <= o["rotate"] <= 180):
        raise ConfigError(f"dars-rounds: rotate must be a number of degrees in [0, 180] or None, got {o['rotate']!r}")
    its = o["round_iters"]
    if its is not None:
        if not isinstance(its, (list, tuple)) or len(its) < k + 1 or any(
                isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in its):
            raise ConfigError(f"dars-rounds: round_iters must list the iterations of rounds 0 … {k} (whole numbers "
                              f">= 1), got {its!r}")
        o["round_iters"] = [int(v) for v in its]
    schedule(o, (1.0, 1.0))  # checks the schedule options
    return o


def schedule(o: Mapping[str, Any], default_scale: Sequence[float] | None = None) -> tuple[rounds_mod.Round, ...]:
    """Rounds 1 … K of the options: the labeling ratios and widenings (β) of ``alphas`` / ``betas`` or of the
    named ``schedule``, starting from the random-scale range ``scale_range``, else ``default_scale`` (the
    run's), else the named schedule's own (the released [0.25, 1.0] at crop 361)."""
    if o.get("alphas") is not None:
        if o.get("scale_range") is None and default_scale is None:
            raise ConfigError("dars-rounds: alphas given without scale_range (round 1's random-scale range)")
        alphas = tuple(o["alphas"])
        betas = None if o.get("betas") is None else [tuple(b) for b in o["betas"]]
        base = o.get("scale_range") or default_scale
    else:
        released = rounds_mod.released_schedule(o.get("schedule") or DEFAULTS["schedule"])
        alphas = tuple(r.alpha for r in released)
        betas = [(r.beta_min, r.beta_max) for r in released] if o.get("betas") is None else \
            [tuple(b) for b in o["betas"]]
        r1 = released[0]  # its range before round 1's widening (none when released)
        own = (round(r1.scale_range[0] / (1 - r1.beta_min), 10), round(r1.scale_range[1] / (1 + r1.beta_max), 10))
        base = o.get("scale_range") or default_scale or own
    return rounds_mod.progressive_schedule(alphas, tuple(float(v) for v in base), betas)


def round_settings(o: Mapping[str, Any], default_scale: Sequence[float] | None = None
                   ) -> tuple[float | None, tuple[float, float]]:
    """(α, random-scale range) of round ``o["round"]``; round 0 has no α and the range round 1 starts from."""
    sched = schedule(o, default_scale)
    k = int(o["round"])
    if k > len(sched):
        raise ConfigError(f"dars-rounds: round {k} is beyond the schedule's {len(sched)} rounds "
                          f"(α of each round: {[r.alpha for r in sched]})")
    if k == 0:
        # round 0 trains with the range round 1 starts from (β of round 1 undone: it is (0, 0) when released)
        r1 = sched[0]
        lo, hi = r1.scale_range
        return None, (round(lo / (1 - r1.beta_min), 10), round(hi / (1 + r1.beta_max), 10))
    r = sched[k - 1]
    return r.alpha, tuple(r.scale_range)


def round_config(cfg, k: int):
    """The config of round ``k`` of ``cfg``'s self-training: the same options with ``round = k``; for
    round 0 only the options that change it (:data:`ROUND0_KEYS`), so that every labeller shares it.

    The schedule is written in its canonical form for rounds 0 … k, so that one teacher serves every
    variant that trains it the same way (DARS Tables 6, 9, 10 change only round 2): α and β of rounds
    after ``k`` are dropped, and a schedule whose rounds 0 … k train as the default (released crop-361)
    schedule's — same α and random-scale ranges from the same base range — is written as the default."""
    o = dict(cfg.strategy_options or {})
    o["round"] = int(k)
    if o.get("alphas") is not None or o.get("betas") is not None:
        default_scale = tuple(cfg.scale_range) if cfg.scale_range is not None else None
        if _trains_as_default(o, int(k), default_scale):
            for key in ("schedule", "alphas", "betas", "scale_range"):
                o.pop(key, None)
        else:  # rounds 0 … k only (round 0's range comes from round 1's, its β undone: keep round 1)
            keep = max(int(k), 1)
            sched = schedule(o, default_scale)
            if keep < len(sched):
                o["alphas"] = [float(r.alpha) for r in sched][:keep]
                o["betas"] = [[float(r.beta_min), float(r.beta_max)] for r in sched][:keep]
    iters = {}
    if o.get("round_iters") is not None:  # each round its own length (the paper profile: epochs over its lists)
        its = [int(v) for v in o["round_iters"]][:int(k) + 1]
        o["round_iters"] = its
        if len(its) == int(k) + 1:
            iters = {"iters": its[-1]}
    if k == 0:  # round 0 trains with the range round 1 starts from: the schedule's α and β do not change it
        o = {key: v for key, v in o.items() if key in ROUND0_KEYS}
    return cfg.with_(strategy="dars-rounds", strategy_options=o, **iters)


def _trains_as_default(o: Mapping[str, Any], k: int, default_scale) -> bool:
    """Whether rounds 0 … k of options ``o`` train exactly as those of the default schedule."""
    def rounds(opts) -> list:
        sched = schedule(opts, default_scale)
        if len(sched) < max(k, 1):
            return []
        r0 = round_settings({**opts, "round": 0}, default_scale)[1]
        return [tuple(round(float(v), 9) for v in r0)] + [
            (round(float(r.alpha), 9), tuple(round(float(v), 9) for v in r.scale_range)) for r in sched[:k]]

    try:
        mine = rounds(o)
    except ConfigError:
        return False
    default = rounds({key: v for key, v in o.items() if key not in ("schedule", "alphas", "betas", "scale_range")})
    return bool(mine) and mine == default


def optimiser_settings(cfg, recipe: Recipe | None = None) -> dict[str, Any]:
    """``train_overrides`` of the optimiser: the round's recipe (:func:`blvnb.engine.recipes.dars_recipe`:
    the model's optimiser — PSPNet and DeepLab v2: SGD momentum 0.9 — with DARS's schedule, poly 0.9 per
    iteration down to 0, no warmup; recipes.md (c)) at the run's ``lr`` and ``weight_decay`` (``None``: the
    recipe's, 0.01 / 5e-4 for the CNNs). The released configs' weight decay 1e-4 and DeepLab v2's lr 0.002
    come in as the run's own values (:func:`blvnb.experiments.tables.dars_recipe`)."""
    recipe = recipe or dars_recipe(cfg.model)
    return recipe.train_settings(int(cfg.iters), lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_continuation(k: int, iters: int) -> dict[str, int]:
    """``train_overrides`` of round ``k`` with ``iters`` iterations per round: it runs global iterations
    ``k·iters … (k+1)·iters − 1`` of a poly schedule of length ``(k+1)·iters`` (module docstring)."""
    return {"first_iter": int(k) * int(iters), "schedule_iters": (int(k) + 1) * int(iters)}


# --- labelling a round -------------------------------------------------------------------------------------

def _jsonable(v):
    if isinstance(v, torch.Tensor):
        return [float(x) for x in v.reshape(-1).tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


@dataclass
class RoundLabels:
    """What :func:`label_round` left in its folder: the PNGs under ``labels_dir``, the labelling report."""

    labels_dir: Path
    report: dict
    reused: bool
    seconds: float
    manifest: dict


def label_round(teacher: nn.Module, dataset, out_dir: str | Path, *, manifest: Mapping[str, Any], prior,
                alpha: float, options: Mapping[str, Any], seed: int, device="auto", progress: bool = False,
                calibration_data=None, batch: int | None = None, size=None) -> RoundLabels:
    """Pseudo-label ``dataset`` (the un-augmented unlabeled images) with ``teacher`` into ``out_dir/labels``.

    ``manifest``: what identifies the result besides the options (the teacher checkpoint's digest, the
    images); with ``options`` (:data:`LABEL_KEYS`), ``alpha``, ``prior``, ``seed`` it is written to
    ``out_dir/manifest.json``. Same manifest and ``"complete"``: the labels are reused. Same manifest,
    not complete: the labeller resumes from ``out_dir/state`` (a run killed while labelling). Another
    manifest: the folder is emptied and labelled again. ``calibration_data``: (dataset with labels) to fit
    ``options["calibration"]`` on, with the teacher's logits. ``size``: (H, W) the teacher infers at, its
    logits resized back to each image's stored size (:class:`~blvnb.engine.teacher.TeacherSource`); the
    caller puts it in ``manifest``.
    """
    out = Path(out_dir)
    want = {"format": LABEL_FORMAT, **{k: _jsonable(v) for k, v in manifest.items()},
            **{k: _jsonable(options.get(k)) for k in LABEL_KEYS}, "alpha": float(alpha), "seed": int(seed),
            "prior": _jsonable(prior)}
    path = out / "manifest.json"
    have = json.loads(path.read_text()) if path.is_file() else None
    if have is not None and {k: v for k, v in have.items() if k not in ("complete", "report", "seconds")} == want:
        if have.get("complete"):
            log.info("pseudo labels of %s reused (same teacher and settings)", out)
            return RoundLabels(out / "labels", have["report"], True, float(have.get("seconds", 0.0)), have)
        log.info("pseudo labels of %s: resuming an interrupted labelling", out)
    elif out.exists():
        if have is not None:
            log.info("pseudo labels of %s were made by another teacher or settings: labelling again", out)
        for sub in ("labels", "state", "cache"):
            shutil.rmtree(out / sub, ignore_errors=True)
    write_json_atomic(path, {**want, "complete": False})

    t0 = time.perf_counter()
    kw = dict(mode=options["teacher_mode"], crop=options["teacher_crop"], stride=options["teacher_stride"],
              flip=bool(options["flip"]), size=size)
    classes = int(torch.as_tensor(prior).numel())  # the label space's (VOC 21, ScanNet 20, Cityscapes 19)
    source = TeacherSource(teacher, _ByName(dataset), device=device, dtype=_DTYPES[options["confidence_dtype"]],
                           out_size=_raw_size(dataset), num_classes=classes, **kw)
    if options["calibration"] is not None:
        source.calibrator = _fit_calibrator(options["calibration"], TeacherSource(teacher, calibration_data,
                                                                                  device=device, num_classes=classes,
                                                                                  **kw), seed)
    labeler = StreamingLabeler(prior, method=options["labeler"], alpha=alpha, threshold=options["threshold"],
                               num_classes=source.num_classes, seed=seed, device=device, state_dir=out / "state",
                               progress=progress, batch=batch, prior_total=options["prior_total"])
    report = labeler.run(source, out / "labels").to_dict()
    seconds = time.perf_counter() - t0  # this process's share when it resumed an interrupted labelling
    write_json_atomic(path, {**want, "complete": True, "report": report, "seconds": seconds})
    return RoundLabels(out / "labels", report, False, seconds, want)


class _ByName:
    """A data set's images whose pseudo labels are named ``<name>.png`` after its ``names`` — where
    ``RunData.dataset(..., pseudo_dir=D)`` reads them — else as :func:`~blvnb.engine.teacher.label_relpath`."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.names = getattr(dataset, "names", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.dataset[i]

    def relpath(self, i: int) -> str:
        from blvnb.engine.teacher import label_relpath

        return f"{self.names[i]}.png" if self.names is not None else label_relpath(self.dataset, i)


def _raw_size(dataset):
    """``i → (H, W)`` of the image as stored, for a view that resizes it (``raw(i)``: the un-transformed
    sample), else None: the labels take the size of the view's image."""
    if not hasattr(dataset, "raw"):
        return None
    return lambda i: tuple(dataset.raw(i)["image"].shape[-2:])


def _fit_calibrator(name: str, source: TeacherSource, seed: int, max_pixels: int = 1_000_000):
    """Fit calibrator ``name`` on the teacher's logits of ``source``'s labeled images: at most
    ``max_pixels`` valid pixels in all, drawn evenly from the images (memory flat in the data set's size)."""
    from blvnb.pseudo.calibration import CALIBRATORS, flatten_pixels

    g = torch.Generator().manual_seed(int(seed))
    per_image = max(1, -(-max_pixels // max(1, len(source))))
    zs, ys = [], []
    for i in range(len(source)):
        label = torch.as_tensor(source.dataset[i]["label"]).to(torch.int64)
        if not bool((label != 255).any()):
            continue
        z, y = flatten_pixels(source.logits(i)[None].cpu(), label[None], max_pixels=per_image, generator=g)
        zs.append(z)
        ys.append(y)
    if not zs:
        raise BlvnbError("dars-rounds: no labeled pixel to fit the calibrator on")
    cal = CALIBRATORS[name]().fit(torch.cat(zs), torch.cat(ys))
    log.info("fitted %s on %d labeled pixels", cal.name, sum(y.numel() for y in ys))
    return cal


def wait_for_labels(out_dir: str | Path, timeout_s: float = 24 * 3600.0, poll_s: float = 2.0) -> dict:
    """Another rank's wait for rank 0's labelling (DDP under torchrun): the complete manifest."""
    path = Path(out_dir) / "manifest.json"
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if path.is_file():
            m = json.loads(path.read_text())
            if m.get("complete"):
                return m
        time.sleep(poll_s)
    raise BlvnbError(f"waited {timeout_s:.0f} s for rank 0 to write the pseudo labels of {out_dir}")


# --- the strategy ----------------------------------------------------------------------------------------

class DarsRounds(Strategy):
    """One round of DARS self-training (module docstring). ``loss``: the run's loss on every output (default:
    cross entropy averaged over the non-ignored pixels); ``recipe``: the round's
    (:func:`~blvnb.engine.recipes.dars_recipe`; default PSPNet's, heads ×10)."""

    name = "dars-rounds"

    def __init__(self, k: int, *, recipe: Recipe | None = None, pseudo_weight: float = 1.0, loss=None,
                 seed: int = 0, info: Mapping[str, Any] | None = None):
        self.k = int(k)
        self.streams = ("labeled",) if self.k == 0 else ("labeled", "pseudo")
        self.epoch_stream = "labeled" if self.k == 0 else "pseudo"
        self.recipe = recipe or dars_recipe("r50-psp")
        self.pseudo_weight = float(pseudo_weight)
        self.loss = loss if loss is not None else build_loss("ce")
        self.seed = int(seed)
        self.info = dict(info or {})

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.loss.to(device)

    def _half(self, model: nn.Module, batch: dict, it: int, term: str):
        """(CE_main + Σ w_aux CE_aux, CE_main, aux part) on one half of the batch — its own forward."""
        parts.loss_at_step(self.loss, seed=self.seed, it=it, term=term, device=batch["image"].device)
        placed = parts.placement(model, self.loss, self.recipe.loss_on)
        return parts.segmentation_loss(parts.forward_outputs(model, batch["image"], len(placed)), batch["label"],
                                       placed)

    def step(self, model: nn.Module, batches: dict[str, dict], it: int) -> tuple[torch.Tensor, dict]:
        # labeled half: (CE_main + 0.4 CE_aux), mean over its non-ignored pixels
        lab, lab_main, lab_aux = self._half(model, batches["labeled"], it, "loss-labeled")
        stats = {"loss_labeled": lab.detach(), "loss_labeled_main": lab_main.detach(),
                 "loss_labeled_aux": lab_aux.detach()}
        if self.k == 0:
            stats["loss"] = lab.detach()
            return lab, stats
        # pseudo-labeled half, a separate forward: the same loss over its kept (non-ignored) pixels
        pse, pse_main, pse_aux = self._half(model, batches["pseudo"], it, "loss-pseudo")
        loss = lab + self.pseudo_weight * pse
        kept = (batches["pseudo"]["label"] != 255).float().mean()
        stats.update(loss=loss.detach(), loss_pseudo=pse.detach(), loss_pseudo_main=pse_main.detach(),
                     loss_pseudo_aux=pse_aux.detach(), pseudo_kept=kept.detach())
        return loss, stats

    def state_dict(self) -> dict:
        return {"round": self.k}

    def load_state_dict(self, state: dict) -> None:
        if state and int(state.get("round", self.k)) != self.k:
            raise BlvnbError(f"this checkpoint belongs to DARS round {state['round']}, not round {self.k}")

    def summary(self) -> dict:
        return dict(self.info)


def _finite(values):
    return None if values is None else [float(v) if math.isfinite(v) else None for v in values]


def _labeling_summary(rl: RoundLabels, prior: torch.Tensor) -> dict:
    """Pseudo-label class distribution, KL(labeled prior ‖ it), kept share, labelling seconds."""
    rep = rl.report
    kept = torch.tensor(rep["kept"], dtype=torch.float64)
    th = rep["thresholds"]
    total = th.get("total_pixels") or (sum(th["predicted"]) if th.get("predicted") else None)
    dist = [float(v) for v in rep["distribution"]]
    return {
        "pseudo_distribution": dist,
        "pseudo_kept": [int(v) for v in rep["kept"]],
        "kl_labeled_to_pseudo": kl_divergence(prior, kept) if float(kept.sum()) > 0 else None,
        "kept_share": float(kept.sum()) / float(total) if total else None,
        "labeling_seconds": float(rl.seconds),
        "labels_reused": bool(rl.reused),
        "thresholds": _finite(th.get("values")),  # None: the class keeps nothing (t_j = +inf)
        "keep_ratio": _finite(th.get("keep_ratio")),
        "labels_dir": str(rl.labels_dir),
    }


def build(cfg, data) -> Built:
    """Round ``cfg.strategy_options["round"]`` of DARS self-training (module docstring) for ``cfg``, ``data``
    being the run's :class:`~blvnb.experiments.runs.RunData`."""
    o = round_options(cfg.strategy_options)
    k = int(o["round"])
    if o["round_iters"] is not None and int(cfg.iters) != o["round_iters"][k]:
        raise ConfigError(f"dars-rounds: round {k} has iters={cfg.iters} but round_iters={o['round_iters']} gives "
                          f"it {o['round_iters'][k]}; build the round with round_config(cfg, {k})")
    alpha, scale = round_settings(o, tuple(cfg.scale_range) if cfg.scale_range is not None else None)
    # DARS's extra augmentation: rotation ±10° and a 5×5 Gaussian blur, each with probability 0.5 (recipes.md (c))
    train_view = {"rotate": float(o["rotate"]) if o["rotate"] else None, "blur": bool(o["blur"])}
    kind = cfg.dataset
    # labeled_fraction None: every label (DARS Table 8's fully supervised round 0; VOC: its official train list)
    labeled_idx, unlabeled_idx = data.split_indices(cfg.labeled_fraction)
    labeled_idx, unlabeled_idx = list(labeled_idx), list(unlabeled_idx)
    n_extra = int(o["extra_unlabeled"]) if k >= 1 else 0  # round 0 (the teacher) never uses them
    if n_extra and kind != "cityscapes":
        raise ConfigError(f"dars-rounds: extra_unlabeled={n_extra} adds Cityscapes images (DARS Table 8); "
                          f"data set {kind!r} has none")
    if k >= 1 and not unlabeled_idx and not n_extra:
        raise ConfigError(f"dars-rounds: round {k} needs unlabeled images to pseudo-label, but labeled_fraction="
                          f"{cfg.labeled_fraction!r} leaves none; give a labeled fraction such as '1/8', or "
                          "extra_unlabeled images")
    seed = int(cfg.seed)
    counts = None
    if parts.needs_counts(cfg.loss):
        counts = data.class_counts(data.dataset(kind, "train", train=False, indices=labeled_idx))
    loss = parts.make_loss(cfg.loss, cfg.loss_options or {}, counts, cfg.iters)
    recipe = dars_recipe(cfg.model, o["head_lr_mult"])
    info: dict[str, Any] = {"round": k, "alpha": alpha, "scale_range": list(scale),
                            "labeled_images": len(labeled_idx), "unlabeled_images": len(unlabeled_idx) + n_extra}
    if k > 0:
        info["labeler"] = o["labeler"]
    if n_extra:
        info["extra_unlabeled_images"] = n_extra
    labeled = data.dataset(kind, "train", indices=labeled_idx, scale_range=scale, **train_view)
    overrides = {**optimiser_settings(cfg, recipe), **lr_continuation(k, cfg.iters)}
    if k == 0:
        strategy = DarsRounds(0, recipe=recipe, loss=loss, seed=seed, info=info)
        return Built(strategy, {"labeled": data.stream(labeled, cfg.batch_size)}, overrides, None)

    if cfg.batch_size < 2:
        raise ConfigError(f"dars-rounds: round {k} splits each batch half labeled, half pseudo-labeled; "
                          f"batch_size must be >= 2, got {cfg.batch_size}")
    teacher_rec = data.dependency(round_config(cfg, k - 1))
    ckpt = teacher_rec.get("checkpoint")
    if not ckpt or not Path(ckpt).is_file():
        raise BlvnbError(f"dars-rounds: the teacher of round {k} (round {k - 1}) has no checkpoint file ({ckpt!r}); "
                         "run it again with force=True")
    if o["prior"] is None:
        counts = data.class_counts(data.dataset(kind, "train", train=False, indices=labeled_idx))
        prior = prior_from_counts(counts)
    else:
        prior = torch.as_tensor(o["prior"], dtype=torch.float64)
    out_dir = Path(data.work_dir) / f"pseudo-round{k}"
    extra = {"extra_unlabeled": n_extra} if n_extra else {}  # the pool: the split's unlabeled images, then these
    unlabeled_eval = data.dataset(kind, "train", train=False, indices=unlabeled_idx, **extra)
    manifest = {"teacher_sha256": file_sha256(ckpt), "dataset": kind, "labeled_fraction": str(cfg.labeled_fraction),
                "unlabeled": hashlib.sha256(json.dumps(unlabeled_idx).encode()).hexdigest()[:16],
                "images": len(unlabeled_idx) + n_extra}
    if n_extra:
        manifest["extra_unlabeled"] = n_extra
    if cfg.eval_size:  # the teacher infers as the run is tested (the release's base_size for both)
        manifest["size"] = list(cfg.eval_size)
    label_seed = seed if o["label_seed"] is None else int(o["label_seed"])
    if int(os.environ.get("RANK", "0")) != 0:  # DDP: rank 0 labels, the others wait for its manifest
        m = wait_for_labels(out_dir)
        rl = RoundLabels(out_dir / "labels", m["report"], True, float(m.get("seconds", 0.0)), m)
    else:
        teacher = _teacher_model(cfg, data, ckpt)
        calib = (data.dataset(kind, "train", train=False, indices=labeled_idx) if o["calibration"] else None)
        rl = label_round(teacher, unlabeled_eval, out_dir, manifest=manifest, prior=prior, alpha=alpha, options=o,
                         seed=label_seed, device=data.device, progress=bool(data.progress), calibration_data=calib,
                         size=cfg.eval_size)
        del teacher
    info.update(_labeling_summary(rl, prior))
    pseudo = data.dataset(kind, "train", indices=unlabeled_idx, scale_range=scale, pseudo_dir=rl.labels_dir,
                          **train_view, **extra)
    half = cfg.batch_size // 2
    streams = {"labeled": data.stream(labeled, half), "pseudo": data.stream(pseudo, half)}
    strategy = DarsRounds(k, recipe=recipe, pseudo_weight=o["pseudo_weight"], loss=loss, seed=seed, info=info)
    return Built(strategy, streams, overrides, ckpt)


def _teacher_model(cfg, data, ckpt) -> nn.Module:
    """The previous round's model with its checkpoint's weights (the run's model by name)."""
    model = data.build_model()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state["model"] if "model" in state else state)
    except (RuntimeError, KeyError) as exc:
        raise BlvnbError(f"the teacher checkpoint {ckpt} does not fit model {cfg.model!r}: {str(exc)[:200]}; "
                         "delete it, or run the teacher again with force=True") from exc
    return model


__all__ = ["DEFAULTS", "DarsRounds", "METHODS", "RoundLabels", "build", "label_round",
           "lr_continuation", "optimiser_settings", "round_config", "round_options", "round_settings", "schedule"]
