"""Which runs each table and figure of the two papers needs, declared as data.

A table is a list of *arms*: (row, arm, run settings). The settings become one
:class:`~blvnb.experiments.runs.RunConfig` per seed through ``RunConfig.from_profile``; the store keys
each run by what it computes, never by the table, so a run that several tables show (the CE baseline of
a setting and seed, a DARS round-0 teacher, DAFormer's baseline) is one record, computed once::

    from blvnb.experiments import table_runs, tables
    tables.runs_for("blv-t1", "quick")          # the distinct RunConfigs the table shows
    res = table_runs.run("blv-t1", "quick")     # execute (or read) them; records by row / arm / seed
    res.grouped["ResNet50 PSPHead"]["blv"][0]["metrics"]["mIoU_tail_blv"]

**Profiles.** ``gpu`` and ``paper`` run every row of every table at the profile's seeds. ``smoke`` and
``quick`` run a stated subset (each table's :attr:`Table.note` says which and why): architecture rows use
the small variant of the model registry; the arms a table's headline claim compares run at every seed of
the profile (seed-paired verdicts), the extra points of a sweep run at the first seed only
(:data:`QUICK_SWEEP_SEEDS`), and rows that would need a second model where one serves (e.g. BLV Table 9
on DAFormer† rather than ‡) reuse the runs of the table that already has them.

**Settings the strategies read** (``strategy_options``; the strategy modules own their meaning):

* ``dars-rounds``: ``round`` k (0 = supervised on the labeled split, the teacher of round 1); for k ≥ 1
  ``labeler`` ("st", "cbst", "da", "dars", always written out) and optional ``calibration`` ("ts").
  The schedule is the released one of the split and crop (``schedule``, not written for the default
  1/8 crop-361 one) or, for a sweep, ``alphas`` + ``betas`` + ``scale_range``. The teacher of round k is
  the strategy's ``round_config(cfg, k - 1)`` (:func:`blvnb.experiments.execute.dependencies`). In the
  paper profile ``round_iters`` gives each round its own length (:mod:`blvnb.experiments.iterations`).
* ``mean-teacher``: ``counts`` ("eq4" ‡ = re-estimated from the teacher each epoch, "labeled" † = the
  labeled split's) for BLV; CE runs carry none.
* ``uda``: the strategy's defaults (DAFormer's recipe; HRDA is the ``mitb5-hrda`` model); ``pseudo``
  ("dars-sd", "dars-td", …) for DARS Tables 14-15.
* losses: BLV always with ``sigma`` written out (or ``sigma_schedule`` = σ₀ for σ(t), BLV Table 9).

Arms that the library cannot run yet (a data set without a loader, an option a strategy does not take)
are left out of plans and named by :func:`unavailable`; they appear once the strategy takes them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

from blvnb.errors import ConfigError
from blvnb.experiments import iterations
from blvnb.experiments.profiles import get_profile, parse_seeds, profile_seeds  # noqa: F401 (the chapters' names)
from blvnb.models.registry import with_variant

log = logging.getLogger(__name__)

#: how many of the profile's seeds the extra points of a sweep get in the subset profiles (``Profile.subset``:
#: smoke follows quick so that CI executes the same code paths)
QUICK_SWEEP_SEEDS = 1

# --- the settings a table's arm can name -----------------------------------------------------------

SIGMA = {"gta5": 6.0, "synthia": 4.0}  # BLV Appendix B: σ = 6 except SYNTHIA→Cityscapes (4)
UDA_MODELS = {"daformer-cnn": "r101-deeplabv2-red", "daformer": "mitb5-daformer", "hrda": "mitb5-hrda"}
UDA_ROWS = {"daformer-cnn": "DAFormer †", "daformer": "DAFormer ‡", "hrda": "HRDA ‡"}
#: BLV Table 1's rows: registry name → the paper's "Backbone Decoder"
T1_ROWS = {
    "hr18-ocr": "HRNet-18 OCRHead", "r50-uper": "ResNet50 UperHead", "r50-psp": "ResNet50 PSPHead",
    "r101-uper": "ResNet101 UperHead", "mitb0-segformer": "MiT-b0 SegformerHead",
    "swint-knet": "Swin-T K-Net", "vitb16-uper": "ViT-B16 UperHead",
}
#: the Table 1 row the subset profiles run: the profile's own model (ResNet-10-T + FPN), the one model of
#: every smoke/quick table, whose CE run is also DARS's fully supervised oracle there. Not a row of the paper:
#: each small architecture would need its own toy pretraining (about 8 CPU minutes each for the dilated
#: ones), which the quick book's 30-minute budget cannot hold (book/quick_profile.md)
T1_QUICK = ("r10t-fpn",)
T1_QUICK_LABEL = "ResNet-10-T FPNHead (smoke/quick stand-in)"


def t1_rows(profile: str) -> dict[str, str]:
    """Table 1's rows that ``profile`` runs, registry name → our row label (the seven paper rows in gpu and
    paper; the profile model's stand-in row in smoke and quick)."""
    return {T1_QUICK[0]: T1_QUICK_LABEL} if _sub(profile) else dict(T1_ROWS)


def model_of(name: str | None, profile: str) -> str:
    """The model a table's row trains in ``profile``: the architecture ``name`` (its small variant in smoke and
    quick), except that the subset profiles train their one model (the profile's ``model``) for every table:
    one toy pretraining then serves every run, and a table's comparison (BLV against CE, DARS against ST)
    stays on one model. ``None``: the profile's model."""
    prof = get_profile(profile)
    if name is None or prof.subset:
        return prof.model
    return with_variant(name, prof.model_variant)
#: DARS's progressive schedules: a name of blvnb.pseudo.rounds.RELEASED_SCHEDULES (the two 1/8 ones), or
#: (α per round, (β_min, β_max) per round) — the released 1/4 configs (recipes.md (c)). Round 1 starts from
#: the run's random-scale range (the profile's; the paper profile's DARS recipe sets the released one).
DARS_DEFAULT = "cityscapes-1/8-crop361"  # the dars-rounds strategy's default: never written out
DARS_SCHEDULES = {
    ("1/8", 361): DARS_DEFAULT,
    ("1/8", 713): "cityscapes-1/8-crop713",
    ("1/4", 361): ((0.4, 0.6), ((0.0, 0.0), (0.2, 0.5))),
    ("1/4", 713): ((0.4, 0.65), ((0.0, 0.0), (0.2, 0.25))),
}


def blv(sigma: float = 6.0, **kw) -> dict:
    """BLV's loss options; σ always given so that the same loss is one key whatever the default."""
    return {"sigma": float(sigma), **kw}


@dataclass(frozen=True)
class Spec:
    """The settings of a run, less its seed: arguments of ``RunConfig.from_profile``.

    ``recipe`` holds optional overrides (crop, scale range, weight decay …) that apply only where the
    RunConfig has such a field; everything else is passed as given.
    """

    strategy: str = "supervised"
    model: str | None = None
    loss: str = "ce"
    loss_options: tuple = ()
    strategy_options: tuple = ()
    overrides: tuple = ()
    recipe: tuple = ()

    @classmethod
    def make(cls, strategy="supervised", model=None, loss="ce", loss_options=None, strategy_options=None,
             recipe=None, **overrides) -> "Spec":
        return cls(strategy, model, loss, _freeze(loss_options), _freeze(strategy_options),
                   _freeze(overrides), _freeze(recipe))

    def kwargs(self) -> dict:
        kw = dict(strategy=self.strategy, loss=self.loss, loss_options=_thaw(self.loss_options) or None,
                  **_thaw(self.overrides))
        if self.model is not None:
            kw["model"] = self.model
        if self.strategy_options:
            kw["strategy_options"] = _thaw(self.strategy_options)
        return kw


def _freeze(d) -> tuple:
    if not d:
        return ()
    return tuple(sorted((k, _freeze(v) if isinstance(v, dict) else (tuple(map(_tup, v)) if isinstance(v, list | tuple) else v))
                        for k, v in d.items()))


def _tup(v):
    return tuple(v) if isinstance(v, list | tuple) else v


def _thaw(t: tuple) -> dict:
    out = {}
    for k, v in t:
        out[k] = _thaw(v) if (isinstance(v, tuple) and v and all(isinstance(x, tuple) and len(x) == 2
                                                                 and isinstance(x[0], str) for x in v)) else v
    return out


@dataclass(frozen=True)
class Arm:
    """One cell group of a table: the paper's ``row``, the ``arm`` within it (e.g. "baseline", "blv"),
    and the run settings. ``subset``: in the smoke/quick profiles run at every seed ("all"), at the
    first :data:`QUICK_SWEEP_SEEDS` seeds ("sweep"), or not at all ("skip")."""

    row: str
    arm: str
    spec: Spec
    subset: str = "all"


@dataclass(frozen=True)
class Table:
    id: str
    paper: str  # "blv" | "dars"
    title: str
    arms: Callable[[str], list[Arm]] = field(repr=False)
    note: str = ""
    cited: bool = False  # the paper's rows are other papers' results: nothing to run of its own

    def arms_for(self, profile: str) -> list[Arm]:
        """The arms that run in ``profile``: the subset in smoke/quick, less those the library cannot run
        yet (:func:`unsupported`; listed by :func:`unavailable`)."""
        arms = self.arms(profile)
        if _sub(profile):
            arms = [a for a in arms if a.subset != "skip"]
        return [a for a in arms if unsupported(a.spec) is None]


def unsupported(spec: Spec) -> str | None:
    """Why the library cannot run ``spec`` yet, or None: a data set that runs do not take yet (VOC,
    ScanNet: issue 13), or a strategy option / loss / pseudo-labelling method its strategy does not take. Such
    arms are left out of plans (and named by :func:`unavailable`) until the strategy takes them; a
    strategy module that does not exist yet is assumed to take everything."""
    import importlib

    from blvnb.experiments import runs

    datasets = getattr(runs, "DATASETS", None)  # what a RunConfig takes (a loader alone is not enough)
    if datasets is None:
        from blvnb.data import DATASETS as datasets
    over = dict(spec.overrides)
    for name in ("dataset", "target"):
        ds = over.get(name)
        if ds is not None and ds not in datasets:
            return f"runs cannot train on data set {ds!r} yet (they take {', '.join(datasets)})"
    try:
        module = importlib.import_module("blvnb.engine.strategies." + spec.strategy.replace("-", "_"))
    except ImportError:
        return None
    opts = _thaw(spec.strategy_options)
    allowed = getattr(module, "DEFAULTS", None) or getattr(module, "OPTIONS", None) or ()
    bad = sorted(set(opts) - set(allowed))
    if bad:
        return f"strategy {spec.strategy!r} does not take option(s) {bad} yet"
    methods = getattr(module, "PSEUDO_METHODS", None)
    if methods is not None and "pseudo" in opts and opts["pseudo"] not in methods:
        return f"strategy {spec.strategy!r} has no pseudo-labelling {opts['pseudo']!r} (it has {list(methods)})"
    from blvnb.losses import LOSSES

    # losses a strategy takes beyond blvnb.losses (``rs``: re-sampling of the training images, plain CE)
    if spec.loss not in LOSSES and spec.loss not in getattr(module, "EXTRA_LOSSES", ()):
        return f"no loss {spec.loss!r} for strategy {spec.strategy!r} yet"
    return None


def unavailable(table: str, profile: str) -> list[tuple[str, str, str]]:
    """(row, arm, reason) of the arms of ``table`` that the library cannot run yet."""
    t = get_table(table)
    arms = t.arms(profile)
    if _sub(profile):
        arms = [a for a in arms if a.subset != "skip"]
    return [(a.row, a.arm, why) for a in arms if (why := unsupported(a.spec)) is not None]


def _paper(profile: str) -> bool:
    """The profile trains with the papers' recipes at the real data's sizes (``Profile.paper_recipes``)."""
    return get_profile(profile).paper_recipes


def _sub(profile: str) -> bool:
    """The profile runs each table's toy subset (``Profile.subset``)."""
    return get_profile(profile).subset


# --- building blocks: one function per setting ---------------------------------------------------------

def sup(profile: str, row: str, loss: str = "ce", loss_options=None, recipe=None, strategy_options=None,
        **kw) -> Spec:
    """Fully supervised training of table row ``row`` (registry name) on the profile's data."""
    return Spec.make("supervised", model_of(row, profile), loss, loss_options, strategy_options,
                     recipe=recipe, **kw)


def mmseg_cityscapes(profile: str) -> dict | None:
    """BLV Table 1's released Cityscapes pipeline (mmseg's ``_base_/datasets/cityscapes.py``, recipes.md
    (a)) beyond scale, crop and flip: the crop redrawn while one class covers 75 % of it, and the
    photometric distortion after the flip; in the profiles that train the papers' architectures (gpu,
    paper). The toy profiles keep their calibrated pipeline (book/quick_profile.md)."""
    return None if _sub(profile) else dict(photometric=True, cat_max_ratio=0.75)


#: DARS's crop per data set (DARS §4.1: Cityscapes 361 in the ablations, 713 against the state of the art;
#: VOC12 321; ScanNet 481, supplement Sec. B)
DARS_CROPS = {"cityscapes": 361, "voc": 321, "scannet": 481}


def dars_recipe(profile: str, crop: int = 361, dataset: str = "cityscapes") -> dict | None:
    """DARS's released recipe where the profile trains the real data (paper), recipes.md (c): the crop,
    its scale range drawn on the image as stored (Cityscapes 1024×2048), weight decay 1e-4, and the test
    of the release: sliding windows of the crop (stride ⌈2/3⌉) on the image resized to the long side
    ``base_size`` — 1024 for crop 361 (``eval_size`` 512×1024: the image only; predictions are scored
    against the full-resolution labels), 2048 for crop 713. The teacher labels the same way
    (:func:`dars`). VOC and ScanNet keep their own resolution and aspect (crops 321 and 481); their scale
    range is not in recipes.md: we take semseg's [0.5, 2.0], the released code's parent. Toy profiles keep
    their own recipe, so there the fully supervised PSPNet50 oracle is BLV Table 1's PSPNet CE run (one
    record)."""
    if not _paper(profile):
        return None
    test = dict(eval_mode="slide", eval_crop=(crop, crop))
    if dataset != "cityscapes":
        return dict(crop=(crop, crop), scale_range=(0.5, 2.0), weight_decay=1e-4, **test)
    if crop == 361:
        return dict(crop=(361, 361), scale_range=(0.25, 1.0), weight_decay=1e-4, eval_size=(512, 1024), **test)
    return dict(crop=(713, 713), scale_range=(0.5, 2.0), weight_decay=1e-4, **test)


def dars_sup_recipe(profile: str, crop: int | None = 361, dataset: str = "cityscapes") -> dict | None:
    """A DARS fully supervised run's recipe (its oracle; Table 11's augmentations): :func:`dars_recipe` of
    ``crop`` (None: the profile's own crop) and, in the paper profile, a round 0's epochs over every
    training image (:func:`blvnb.experiments.iterations.dars_supervised_iters`)."""
    rec = dict((dars_recipe(profile, crop, dataset) if crop is not None else None) or {})
    if _paper(profile):
        rec["iters"] = iterations.dars_supervised_iters(dataset, get_profile(profile).batch_size)
    return rec or None


def dars(profile: str, k: int, labeler: str = "dars", *, row: str = "r50-psp", fraction: str | None = "1/8",
         crop: int | None = None, schedule=None, alphas=None, betas=None, calibration: str | None = None, loss: str = "ce",
         dataset: str | None = None, extra_unlabeled: int | None = None, recipe=None) -> Spec:
    """DARS self-training round ``k`` (0 = the labeled-only teacher) in the form of the ``dars-rounds``
    strategy: the options of the whole schedule with ``round = k``; round 0 carries only what changes it.

    ``schedule``: a released schedule's name or (alphas, betas); default the released one of (split, crop)
    in :data:`DARS_SCHEDULES`. ``alphas``/``betas`` replace its α / β of each round (sweeps). Only what
    differs from the named schedule is written out, so that a sweep point equal to the main schedule is
    the same run (one key) as the main one.
    """
    from blvnb.pseudo.rounds import released_schedule

    if crop is None:  # the data set's own crop; the schedules are Cityscapes' (361 unless 713 is asked for)
        crop = DARS_CROPS[dataset or "cityscapes"]
    sched_crop = crop if crop in (361, 713) else 361
    if schedule is None:  # the released schedule of the split (the 1/8 one for splits without their own)
        schedule = DARS_SCHEDULES.get((fraction, sched_crop), DARS_SCHEDULES[("1/8", sched_crop)])
    named = schedule if isinstance(schedule, str) else None
    if named:
        rounds = released_schedule(named)
        base_a, base_b = [r.alpha for r in rounds], [[r.beta_min, r.beta_max] for r in rounds]
    else:
        base_a, base_b = list(schedule[0]), [list(b) for b in schedule[1]]
    # floats throughout: 0 and 0.0 must not make two keys of one run
    a = [float(x) for x in (alphas if alphas is not None else base_a)]
    b = [[float(x) for x in pair] for pair in (betas if betas is not None else base_b)]
    base_a, base_b = [float(x) for x in base_a], [[float(x) for x in p] for p in base_b]
    opts: dict = {"round": k}
    if named and named != DARS_DEFAULT:
        opts["schedule"] = named
    if not named or a != base_a:
        opts.update(alphas=a, betas=b)  # spelled-out ratios carry their β too
    elif b != base_b:
        opts["betas"] = b
    if k:
        opts["labeler"] = labeler
        if calibration:
            opts["calibration"] = calibration
        if _paper(profile):  # the release's teacher: sliding windows of the crop, flip-averaged (recipes.md (c))
            opts.update(teacher_mode="slide", teacher_crop=int(crop))
    if extra_unlabeled:
        opts["extra_unlabeled"] = int(extra_unlabeled)
    over = {"labeled_fraction": fraction}
    if dataset:
        over["dataset"] = dataset
    rec = {**(dars_recipe(profile, crop, dataset or "cityscapes") or {}), **(recipe or {})}
    if _paper(profile):  # each round its own length: its epochs over its own list (blvnb.experiments.iterations)
        batch = int(rec.get("batch_size", get_profile(profile).batch_size))
        its = iterations.dars_round_iters(dataset or "cityscapes", fraction, batch, k, int(extra_unlabeled or 0))
        opts["round_iters"] = its
        rec["iters"] = its[k]
    return Spec.make("dars-rounds", model_of(row, profile), loss, None, opts, recipe=rec or None, **over)


def semi_recipe(profile: str, fraction: str) -> dict | None:
    """BLV's semi-supervised recipe in the paper profile (recipes.md (b); BLV §4.2, U2PL's lineage †): 200
    epochs over the unlabeled list, 769×769 crops of the full-resolution image at random scale 0.5–2.0, a
    batch of 16 labeled + 16 unlabeled images, tested in sliding 769² windows (stride ⌈2/3⌉). The toy
    profiles keep their own."""
    if not _paper(profile):
        return None
    return dict(iters=iterations.semi_iters(fraction), crop=(769, 769), scale_range=(0.5, 2.0), batch_size=16,
                eval_mode="slide", eval_crop=(769, 769))


def mt(profile: str, fraction: str, loss: str = "ce", counts: str | None = None,
       row: str = "r101-deeplabv3p", loss_options=None) -> Spec:
    """BLV's semi-supervised self-training (mean teacher) on split ``fraction``; ``counts`` for BLV:
    "eq4" (‡, Eq. (4) from the teacher each epoch) or "labeled" (†)."""
    if loss == "blv" and loss_options is None:
        loss_options = blv(6.0)
    opts = {"counts": counts} if counts else None
    recipe = semi_recipe(profile, fraction)
    return Spec.make("mean-teacher", model_of(row, profile), loss, loss_options, opts, recipe=recipe,
                     labeled_fraction=fraction)


#: DAFormer's and HRDA's batch: 2 source + 2 target images per iteration on one GPU (DAFormer's
#: ``experiments.py`` ``batch_size = 2`` for its UDA and source-only configs, HRDA the same; recipes.md (d)).
#: The paper profile's UDA and source-only runs take it as their ``batch_size`` (the uda strategy draws that
#: many images from each stream), so the record states what they train with. The gpu profile, which trains
#: the papers' architectures at toy scale, takes it too: the batch also sets DAFormer's BatchNorm statistics
#: and ClassMix's class pool (the classes of the whole source batch), so 16 + 16 would train another method.
UDA_BATCH = 2

#: the released test settings that differ from the paper profile's default (sliding 512×1024 windows,
#: stride ⌈2/3⌉, on the 1024×2048 image): ``eval_size`` resizes the image only (the labels keep 1024×2048)
EVAL_RECIPES = {
    # DAFormer's test_pipeline: Cityscapes resized to 1024×512 (img_scale (1024, 512)), the size its UDA
    # trains on; test_cfg mode "whole" (configs/_base_/models/daformer_conv1_mitb5.py, deeplabv2)
    "daformer": dict(eval_mode="whole", eval_size=(512, 1024)),
    # HRDA gtaHR2csHR_hrda.py: test_cfg slide, crop_size 1024×1024, stride 512 at the full 2048×1024
    "hrda": dict(eval_mode="slide", eval_crop=(1024, 1024), eval_stride=(512, 512)),
    # BLV segformer_mit-b0_8x1_1024x1024_160k_cityscapes.py: test_cfg slide, crop 1024×1024, stride 768
    "segformer": dict(eval_mode="slide", eval_crop=(1024, 1024), eval_stride=(768, 768)),
    # BLV Table 1's other configs: test_cfg mode "whole" on the 2048×1024 image (K-Net's config; mmseg's
    # pspnet_r50-d8, upernet_r50, ocrnet_hr18 and upernet_vit-b16_ln_mln model bases; recipes.md (a))
    "whole": dict(eval_mode="whole"),
}


def t1_recipe(profile: str, name: str) -> dict | None:
    """BLV Table 1's released recipe for row ``name`` beyond the profile's: mmseg's Cityscapes training
    pipeline (:func:`mmseg_cityscapes`: gpu and paper) and, where the profile trains the real data (paper),
    the released test settings: SegFormer's sliding windows, whole images for the others; toy profiles keep
    their own. Every table that shows a Table 1 run (Table 5's fully supervised arms) builds it with this,
    so that it stays one run."""
    rec = dict(mmseg_cityscapes(profile) or {})
    if _paper(profile):
        rec.update(EVAL_RECIPES["segformer" if name == "mitb0-segformer" else "whole"])
        rec["iters"] = iterations.t1_iters(name)  # 160k SegFormer, 80k K-Net and ViT, 40k the CNNs
    return rec or None


def uda_recipe(profile: str, arch: str | None = None) -> dict | None:
    """DAFormer's batch where the profile trains the papers' architectures (gpu, paper), and its or HRDA's
    evaluation (:data:`EVAL_RECIPES`) where it trains the real data (paper), for the UDA architecture
    ``arch`` (every one but HRDA trains on DAFormer's 1024×512 Cityscapes, DARS's PSPNet50 of Tables 14-15
    included); the toy profiles keep their calibrated batch."""
    if _sub(profile):
        return None
    paper = dict(iters=iterations.UDA_ITERS, **EVAL_RECIPES["hrda" if arch == "hrda" else "daformer"])
    return dict(batch_size=UDA_BATCH, **(paper if _paper(profile) else {}))


def uda(profile: str, arch: str, source: str = "gta5", loss: str = "ce", loss_options=None, **options) -> Spec:
    """DAFormer-style UDA from ``source`` to Cityscapes; ``arch`` a key of :data:`UDA_MODELS` or a registry
    row (DARS's PSPNet50 for its Tables 14-15); ``options`` are the uda strategy's (e.g. ``pseudo``)."""
    return Spec.make("uda", model_of(UDA_MODELS.get(arch, arch), profile), loss, loss_options,
                     options or None, recipe=uda_recipe(profile, arch), dataset=source, target="cityscapes")


def source_only(profile: str, source: str = "gta5", arch: str = "daformer-cnn") -> Spec:
    """Supervised on the source domain only, evaluated on Cityscapes (BLV Tables 3, 4: "source only †"), at
    DAFormer's source-only batch, optimiser (AdamW, head ×10; where the profile trains the papers'
    architectures) and evaluation (:func:`uda_recipe`) and, in the paper profile, the source
    pipeline of its UDA runs (recipes.md (d)): the source image resized to 1280×720 (2560×1440 for HRDA:
    ``uda.PAPER_SIZES``), no random scale, a 512² crop (1024²) redrawn while one class covers 75 % of it,
    flip."""
    rec = dict(uda_recipe(profile, arch) or {})
    if _paper(profile):
        from blvnb.engine.strategies.uda import PAPER_SIZES

        hrda = arch == "hrda"
        side = 1024 if hrda else 512
        rec.update(base_size=PAPER_SIZES[hrda][0], scale_range=(1.0, 1.0), crop=(side, side), cat_max_ratio=0.75)
    opts = None if _sub(profile) else {"optimiser": "daformer"}  # DAFormer's optimiser, as its UDA runs
    return sup(profile, UDA_MODELS.get(arch, arch), recipe=rec or None, dataset=source, strategy_options=opts)


def _uda_pair(profile: str, arch: str, source: str, subset: str = "all") -> list[Arm]:
    row = UDA_ROWS[arch]
    return [Arm(row, "baseline", uda(profile, arch, source), subset),
            Arm(row, "blv", uda(profile, arch, source, "blv", blv(SIGMA[source])), subset)]


# --- BLV -----------------------------------------------------------------------------------------------

def _blv_t1(p: str) -> list[Arm]:
    arms = []
    for name, row in t1_rows(p).items():
        rec = t1_recipe(p, name)
        arms += [Arm(row, "baseline", sup(p, name, recipe=rec)), Arm(row, "blv", sup(p, name, "blv", blv(6.0), recipe=rec))]
    return arms


def _blv_t2(p: str, fractions=("1/16", "1/8", "1/4", "1/2")) -> list[Arm]:
    arms = []
    for f in fractions:
        subset = "all" if f == "1/8" else "skip"
        arms += [Arm(f, "baseline", mt(p, f), subset), Arm(f, "blv", mt(p, f, "blv", "eq4"), subset)]
    return arms


def _blv_t3(p: str, source: str = "gta5") -> list[Arm]:
    # subset profiles: the GTA5 pair at every seed (the setting Tables 5-9 and 14 share), SYNTHIA's and
    # the source-only context row at the first seed
    arms = [Arm("source only †", "source only", source_only(p, source), "sweep")]
    arms += _uda_pair(p, "daformer-cnn", source, "all" if source == "gta5" else "sweep")
    arms += _uda_pair(p, "daformer", source, "skip") + _uda_pair(p, "hrda", source, "skip")
    return arms


def _t5_dars_crop(p: str) -> int:
    """The crop of BLV Table 5's DARS comparand: its 72.8 (mIoU, "from the original paper") is DARS Table 1's
    1/8 crop-713 result (72.78), so the paper profile compares with DARS Table 1's crop-713 round-2 run. The
    other profiles train DARS at their own crop with the crop-361 schedule only (DARS Table 1's one row)."""
    return 713 if _paper(p) else 361


def _blv_t5(p: str) -> list[Arm]:
    full = "vitb16-uper" if not _sub(p) else T1_QUICK[0]
    semi = "r50-psp" if not _sub(p) else "r101-deeplabv3p"
    rec = t1_recipe(p, full)  # the baseline and BLV arms are Table 1's runs of that row
    arms = [Arm("fully", "baseline", sup(p, full, recipe=rec)), Arm("fully", "la", sup(p, full, "la", recipe=rec)),
            Arm("fully", "lovasz", sup(p, full, "lovasz", recipe=rec)),
            Arm("fully", "blv", sup(p, full, "blv", blv(6.0), recipe=rec))]
    arms += [Arm("semi", "baseline", mt(p, "1/8", row=semi)), Arm("semi", "la", mt(p, "1/8", "la", row=semi), "sweep"),
             Arm("semi", "blv", mt(p, "1/8", "blv", "eq4", row=semi)),
             Arm("semi", "dars", dars(p, 2, crop=_t5_dars_crop(p)))]  # DARS's own result (PSPNet50, 2 rounds)
    arms += [Arm("uda", "baseline", uda(p, "daformer-cnn")),
             Arm("uda", "rs", uda(p, "daformer-cnn", loss="rs"), "sweep"),
             Arm("uda", "rw", uda(p, "daformer-cnn", loss="rw"), "sweep"),
             Arm("uda", "la", uda(p, "daformer-cnn", loss="la"), "sweep"),
             Arm("uda", "blv", uda(p, "daformer-cnn", "gta5", "blv", blv(6.0)))]
    return arms


def _blv_t6(p: str) -> list[Arm]:
    arms = [Arm("None-Variation", "baseline", uda(p, "daformer-cnn")),
            Arm("Gaussian", "blv", uda(p, "daformer-cnn", "gta5", "blv", blv(6.0)))]
    for form in ("uniform", "beta", "exponential"):
        arms.append(Arm(form.capitalize(), "blv", uda(p, "daformer-cnn", "gta5", "blv", blv(6.0, distribution=form)),
                        "sweep"))
    return arms


def _blv_t7(p: str) -> list[Arm]:
    arms = []
    for source, name in (("gta5", "GTA5 → Cityscapes"), ("synthia", "SYNTHIA → Cityscapes")):
        main = "all" if source == "gta5" else "sweep"
        arms.append(Arm(name, "baseline", uda(p, "daformer-cnn", source), main))
        for s in (3, 4, 5, 6, 7):
            subset = main if s == SIGMA[source] else ("sweep" if s in (4, 6) else "skip")
            arms.append(Arm(name, f"sigma={s}", uda(p, "daformer-cnn", source, "blv", blv(s)), subset))
    return arms


def _blv_t8(p: str) -> list[Arm]:
    arms = []
    for source, name in (("gta5", "GTA5 → Cityscapes"), ("synthia", "SYNTHIA → Cityscapes")):
        s = SIGMA[source]
        extra = "all" if source == "gta5" else "skip"
        arms += [Arm(name, "baseline", uda(p, "daformer-cnn", source), "all" if source == "gta5" else "skip"),
                 Arm(name, "w/o variation", uda(p, "daformer-cnn", source, "blv", blv(s, variation=False)), extra),
                 Arm(name, "w/o balance", uda(p, "daformer-cnn", source, "blv", blv(s, balance="none")), extra),
                 Arm(name, "blv", uda(p, "daformer-cnn", source, "blv", blv(s)), "all" if source == "gta5" else "skip")]
    return arms


def _blv_t9(p: str) -> list[Arm]:
    arch = "daformer" if not _sub(p) else "daformer-cnn"
    return [Arm("Baseline", "baseline", uda(p, arch)), Arm("BLV", "blv", uda(p, arch, "gta5", "blv", blv(6.0))),
            Arm("BLV +tv", "blv+tv", uda(p, arch, "gta5", "blv", {"sigma_schedule": 6.0}))]


def _blv_t10(p: str, source: str = "gta5") -> list[Arm]:
    """Cited table (R101 + DeepLab v2 methods); our rows are Table 3's / 4's source-only and BLV."""
    return [Arm("source only", "source only", source_only(p, source), "sweep"),
            Arm("BLV (ours)", "blv", uda(p, "daformer-cnn", source, "blv", blv(SIGMA[source])),
                "all" if source == "gta5" else "sweep")]


def _blv_t12(p: str) -> list[Arm]:
    names = T1_QUICK if _sub(p) else ("hr18-ocr", "r50-uper")
    return [a for a in _blv_t1(p) if a.row in {t1_rows(p)[n] for n in names}]


def _blv_t13(p: str) -> list[Arm]:
    arms = []
    for f in ("1/16", "1/8"):
        subset = "all" if f == "1/8" else "skip"
        arms += [Arm(f, "ST", mt(p, f), subset),
                 Arm(f, "ST+BLV †", mt(p, f, "blv", "labeled"), "sweep" if subset == "all" else subset),
                 Arm(f, "ST+BLV ‡", mt(p, f, "blv", "eq4"), subset)]
    return arms


def _blv_t14(p: str) -> list[Arm]:
    return [Arm("Baseline", "baseline", uda(p, "daformer-cnn")), Arm("GCL", "gcl", uda(p, "daformer-cnn", loss="gcl")),
            Arm("BLV", "blv", uda(p, "daformer-cnn", "gta5", "blv", blv(6.0)))]


def _blv_fig4(p: str) -> list[Arm]:
    return _uda_pair(p, "daformer-cnn", "gta5")


def _blv_fig6(p: str) -> list[Arm]:
    name = T1_QUICK[0] if _sub(p) else "vitb16-uper"
    return [a for a in _blv_t1(p) if a.row == t1_rows(p)[name]]


# --- DARS ----------------------------------------------------------------------------------------------

def _dars_t1(p: str) -> list[Arm]:
    arms = []
    for crop in (361, 713) if _paper(p) else (361,):
        for f in ("1/8", "1/4"):
            row = f"DARS (crop {crop}) {f}" if _paper(p) else f"DARS {f}"
            subset = "all" if f == "1/8" else "skip"
            arms += [Arm(row, "baseline", dars(p, 0, fraction=f, crop=crop), subset),
                     Arm(row, "dars", dars(p, 2, fraction=f, crop=crop), subset),
                     Arm(row, "oracle", sup(p, "r50-psp", recipe=dars_sup_recipe(p, crop)), subset)]
    return arms


def _dars_t2(p: str) -> list[Arm]:
    sched = ((0.2, 0.45), ((0.0, 0.0), (0.2, 0.5)))  # released DeepLab v2 config: α 20 → 45 %
    recipe = dict(lr=0.002, batch_size=8) if _paper(p) else None
    return [Arm("Deeplabv2", "baseline", dars(p, 0, row="r101-deeplabv2", schedule=sched, recipe=recipe), "sweep"),
            Arm("DARS", "dars", dars(p, 2, row="r101-deeplabv2", schedule=sched, recipe=recipe), "sweep")]


def _dars_t3(p: str) -> list[Arm]:
    return [Arm("baseline", "baseline", dars(p, 0, fraction=None, dataset="voc"), "sweep"),
            Arm("DARS", "dars", dars(p, 2, fraction=None, dataset="voc"), "sweep")]


_LABELERS_R1 = (("ST", "st", None, "all"), ("ST + TS", "st", "ts", "sweep"), ("CBST", "cbst", None, "all"),
                ("CBST + TS", "cbst", "ts", "sweep"), ("DA + TS", "da", "ts", "sweep"), ("DARS", "dars", None, "all"))


def _dars_t4(p: str) -> list[Arm]:
    arms = [Arm("Baseline", "baseline", dars(p, 0))]
    for row, lab, cal, subset in _LABELERS_R1:  # one round at α = 20 %
        arms.append(Arm(row, lab + ("+" + cal if cal else ""), dars(p, 1, lab, calibration=cal), subset))
    for row, lab, subset in (("ST + IT", "st", "sweep"), ("CBST + IT", "cbst", "sweep"), ("DARS + IT", "dars", "all")):
        arms.append(Arm(row, lab + "+it", dars(p, 2, lab), subset))
    return arms


def _dars_t5(p: str) -> list[Arm]:
    """KL of pseudo labels: labelling from the round-0 teachers (CE, and focal loss for "ST + Focal
    Loss"); the ST / ST+TS / DARS labellings are also those of Table 4's round-1 runs."""
    return [Arm("teacher", "ce", dars(p, 0)), Arm("ST + Focal Loss", "focal teacher", dars(p, 0, loss="focal"), "sweep"),
            Arm("ST", "st", dars(p, 1, "st")), Arm("DARS", "dars", dars(p, 1, "dars"))]


def _dars_t6(p: str) -> list[Arm]:
    no_beta = ((0.0, 0.0), (0.0, 0.0))
    return [Arm("1 / 20 / 0 / 0", "round 1", dars(p, 1)),
            Arm("1 / 20 / 0.2 / 0.5", "round 1 strong aug", dars(p, 1, alphas=(0.2,), betas=((0.2, 0.5),)), "sweep"),
            Arm("2 / 20 / 0 / 0", "round 2", dars(p, 2, alphas=(0.2, 0.2), betas=no_beta), "sweep"),
            Arm("2 / 50 / 0 / 0", "round 2", dars(p, 2, alphas=(0.2, 0.5), betas=no_beta), "sweep"),
            Arm("2 / 50 / 0.2 / 0.5", "round 2", dars(p, 2))]


def _dars_t9(p: str) -> list[Arm]:
    return [Arm(f"alpha={a}", "round 2", dars(p, 2, alphas=(0.2, a / 100), betas=((0, 0), (0, 0))),
                "sweep" if a in (20, 50) else "skip") for a in (20, 30, 40, 50, 60)]


def _dars_t10(p: str) -> list[Arm]:
    pairs = ((0.4, 0.0), (0.2, 0.0), (0.0, 0.0), (0.0, 0.25), (0.0, 0.5), (0.0, 0.75), (0.2, 0.5))
    return [Arm(f"beta=({bmin}, {bmax})", "round 2", dars(p, 2, alphas=(0.2, 0.5), betas=((0, 0), (bmin, bmax))),
                "sweep" if (bmin, bmax) in ((0.0, 0.0), (0.2, 0.5)) else "skip") for bmin, bmax in pairs]


def _dars_t7(p: str) -> list[Arm]:
    """Held-out test sets: no test server; the same runs as Tables 1 and 3, evaluated on val (and on a
    held-out toycity split where the notebook adds one)."""
    return [a for a in _dars_t1(p) if a.arm in ("baseline", "dars")] + _dars_t3(p)


def _dars_t8(p: str) -> list[Arm]:
    prof = get_profile(p)
    n = prof.n_train if prof.synthetic else 3000
    arms = [Arm("Np=0", "fully supervised", dars(p, 0, fraction=None, crop=713,
                                                schedule=DARS_SCHEDULES[("1/8", 713)]), "sweep")]
    for m in (1, 2, 3):
        arms.append(Arm(f"Np={m}x" if prof.synthetic else f"Np={m * 3}k", "dars",
                        dars(p, 1, fraction=None, crop=713, schedule=DARS_SCHEDULES[("1/8", 713)],
                             extra_unlabeled=m * n),
                        "sweep" if m == 1 else "skip"))
    return arms


def _dars_t11(p: str) -> list[Arm]:
    return [Arm(name, aug, sup(p, "r50-psp", recipe=dars_sup_recipe(p, 361), strategy_options={"augment": aug}),
                "sweep" if aug in ("none", "scale") else "skip")
            for name, aug in (("None", "none"), ("Photometric Distortion", "photometric"),
                              ("Random Rotation", "rotation"), ("Random Scaling", "scale"))]


def _dars_t12(p: str) -> list[Arm]:
    sched = ((0.5,), ((0.0, 0.0),))
    return [Arm("Baseline", "baseline", dars(p, 0, dataset="scannet"), "sweep")] + [
        Arm(row, lab, dars(p, 1, lab, dataset="scannet", schedule=sched), "sweep")
        for row, lab in (("ST", "st"), ("CBST", "cbst"), ("DARS (Ours)", "dars"))]


def _dars_t13(p: str) -> list[Arm]:
    sched = ((0.5, 0.5), ((0.0, 0.0), (0.2, 0.5)))
    arms = []
    for f in ("1/8", "1/4"):
        subset = "sweep" if f == "1/8" else "skip"
        arms += [Arm(f, "baseline", dars(p, 0, fraction=f, dataset="scannet"), subset),
                 Arm(f, "dars", dars(p, 2, fraction=f, dataset="scannet", schedule=sched), subset),
                 Arm(f, "oracle", sup(p, "r50-psp", dataset="scannet", recipe=dars_sup_recipe(p, DARS_CROPS["scannet"], "scannet")),
                     subset)]
    return arms


def _dars_uda(p: str, pseudo: str) -> Spec:
    """DARS App. C on the uda strategy (PSPNet50, GTA5 → Cityscapes): the EMA teacher's target pseudo labels
    by ``pseudo`` ("dars-sd" / "dars-td": DARS with the source's / the target's class prior; "st", "cbst")."""
    return uda(p, "r50-psp", "gta5", pseudo=pseudo)


def _dars_t14(p: str) -> list[Arm]:
    return [Arm("source only", "baseline", source_only(p, "gta5", "r50-psp"), "sweep"),
            Arm("DARS (TD)", "dars-td", _dars_uda(p, "dars-td"), "sweep")]


def _dars_t15(p: str) -> list[Arm]:
    return [Arm("Baseline", "baseline", source_only(p, "gta5", "r50-psp"), "sweep"),
            Arm("ST", "st", _dars_uda(p, "st"), "sweep"), Arm("CBST", "cbst", _dars_uda(p, "cbst"), "sweep"),
            Arm("DARS (SD)", "dars-sd", _dars_uda(p, "dars-sd"), "sweep"),
            Arm("DARS (TD)", "dars-td", _dars_uda(p, "dars-td"), "sweep")]


def _pick(fn: Callable[[str], list[Arm]], *rows: str) -> Callable[[str], list[Arm]]:
    return lambda p: [a for a in fn(p) if a.row in rows]


def _no_runs(p: str) -> list[Arm]:
    return []


_Q = "The smoke and quick profiles train one model for every table (their ResNet-10-T + FPN) and run "
TABLES: dict[str, Table] = {t.id: t for t in [
    # BLV (CVPR 2023)
    Table("blv-t1", "blv", "Fully supervised, across architectures (± BLV)", _blv_t1,
          _Q + "one row at every seed, that model, which is not a row of the paper: "
          "each small architecture would need its own toy pretraining, and seven do not fit the quick book's "
          "budget; one row at several seeds says more than seven rows at one. Its CE run is also DARS's fully "
          "supervised oracle. gpu and paper run all seven rows."),
    Table("blv-t2", "blv", "Semi-supervised self-training (± BLV) per partition", _blv_t2,
          _Q + "the 1/8 partition only (the split DARS's tables use, shared with Tables 5 and 13); gpu and "
          "paper run 1/16, 1/8, 1/4, 1/2."),
    Table("blv-t3", "blv", "GTA5 → Cityscapes, per class", _blv_t3,
          _Q + "DAFormer † ± BLV at every seed (the CNN DAFormer that Tables 5–9 and 14 ablate, so these runs "
          "serve them all) and source only † at the first seed; DAFormer ‡ and HRDA ‡ run in gpu and paper."),
    Table("blv-t4", "blv", "SYNTHIA → Cityscapes, 16- and 13-class mIoU", lambda p: _blv_t3(p, "synthia"),
          _Q + "source only † and DAFormer † ± BLV (σ = 4) at the first seed (GTA5 is the setting quick repeats "
          "over seeds); DAFormer ‡ and HRDA ‡ run in gpu and paper."),
    Table("blv-t5", "blv", "Against other long-tail methods (fully, semi, UDA)", _blv_t5,
          _Q + "the fully supervised comparison on Table 1's quick row and the semi-supervised one on Table 2's "
          "runs at 1/8, so their baseline and BLV runs are those tables'; the paper used ViT-B16 and PSPNet50 "
          "(gpu and paper do). The fully supervised arms (baseline, LA, Lovász, BLV) and the semi and UDA baselines and BLV at every seed; semi LA and UDA RS, RW and LA at the first. "
          "The DARS column is our DARS run of DARS Table 1 at 1/8 (in paper its crop-713 run, the setting of "
          "the paper's 72.8; elsewhere the profile's one DARS row), CLAN and CBST are cited."),
    Table("blv-t6", "blv", "Forms of the variation (DAFormer †, GTA5)", _blv_t6,
          _Q + "baseline and Gaussian at every seed (Table 3's runs) and uniform, beta, exponential at the first "
          "seed."),
    Table("blv-t7", "blv", "σ sweep (DAFormer †, both UDA settings)", _blv_t7,
          _Q + "σ ∈ {4, 6} in both settings — the released configs' value and the paper's — GTA5's σ = 6 and "
          "its baseline at every seed, the rest at the first; σ = 3, 5, 7 run in gpu and paper."),
    Table("blv-t8", "blv", "Components of BLV (w/o variation, w/o balance)", _blv_t8,
          _Q + "GTA5 → Cityscapes only, every arm at every seed; "
          "SYNTHIA runs in gpu and paper."),
    Table("blv-t9", "blv", "Temporal σ(t)", _blv_t9,
          _Q + "it on DAFormer † instead of ‡, so that its baseline and BLV runs are Table 3's (every seed), "
          "and BLV +tv at every seed too; gpu and paper run DAFormer ‡ as the paper does."),
    Table("blv-t10", "blv", "GTA5 → Cityscapes, other UDA methods (cited)", _blv_t10,
          "Cited rows (R101 + DeepLab v2 methods); our source-only and BLV rows are Table 3's runs.", cited=True),
    Table("blv-t11", "blv", "SYNTHIA → Cityscapes, other UDA methods (cited)", lambda p: _blv_t10(p, "synthia"),
          "Cited rows; our source-only and BLV rows are Table 4's runs.", cited=True),
    Table("blv-t12", "blv", "Training time with and without BLV", _blv_t12,
          "Table 1's runs of HRNet-18 OCR and ResNet50 UperHead in gpu and paper, in smoke and quick Table 1's one "
          "row: no runs of its own. The claim's BLV / CE ratio is measured in the chapter, each row's model taking "
          "CE and BLV steps in turn in one process (blvnb.engine.overhead); the runs' train_seconds, timed apart, "
          "are shown for reference only."),
    Table("blv-t13", "blv", "Class counts from the labeled data (†) vs Eq. (4) (‡)", _blv_t13,
          _Q + "1/8 only (ST and ‡ are Table 2's runs, every seed; † at the first seed); gpu and paper run "
          "1/16 and 1/8."),
    Table("blv-t14", "blv", "GCL vs BLV (DAFormer †, GTA5)", _blv_t14,
          "Baseline and BLV are Table 3's runs; GCL is the one run of its own (every seed)."),
    Table("blv-fig3", "blv", "Fig. 3: pixel share vs per-class gain", _pick(_blv_t3, "DAFormer †"),
          "Table 3's DAFormer † runs (per-class IoU against the source's pixel shares): no runs of its own."),
    Table("blv-fig4", "blv", "Fig. 4: qualitative, baseline vs BLV", _blv_fig4,
          "Table 3's DAFormer † checkpoints on the same validation images: no runs of its own."),
    Table("blv-fig5", "blv", "Fig. 5: σ(t)", _no_runs, "A formula (SigmaSchedule); no runs."),
    Table("blv-fig6", "blv", "Fig. 6: t-SNE of logits, CE vs BLV", _blv_fig6,
          "Table 1's CE and BLV models of one row (ViT-B16 in gpu and paper as the paper; the quick row in "
          "smoke and quick): no runs of its own."),
    # DARS (ICCV 2021)
    Table("dars-t1", "dars", "Semi-supervised Cityscapes: baseline, DARS, oracle", _dars_t1,
          _Q + "1/8 at the profile's crop (baseline = round 0, DARS = round 2 with the released crop-361 "
          "schedule, oracle = fully supervised, BLV Table 1's CE run of the same model); gpu runs 1/8 and 1/4; paper "
          "runs both crops (361 and 713, their released schedules). Other methods' rows are cited."),
    Table("dars-t2", "dars", "DeepLab v2 at 1/8", _dars_t2,
          _Q + "baseline and DARS with DeepLab v2's released schedule (α 20 → 45 %) at the first seed, on the "
          "profile's one model, so the second architecture of the paper's table is not tested there; gpu and "
          "paper train DeepLab v2 at every seed. Other methods' rows are cited."),
    Table("dars-t3", "dars", "PASCAL VOC 2012", _dars_t3,
          _Q + "the baseline (round 0 on VOC's official train list) and DARS (two rounds over the rest of the "
          "augmented set) at the first seed, on toycity written in the VOC layout (21 classes); gpu and paper at "
          "every seed, paper on the real VOC 2012 + SBD. Other methods' rows are cited."),
    Table("dars-t4", "dars", "Pseudo-labelling methods, one round and iterative", _dars_t4,
          _Q + "the round-0 teacher, ST, CBST and DARS (round 1, α = 20 %) and DARS + IT at every seed; the "
          "+TS rows and ST/CBST + IT at the first seed."),
    Table("dars-t5", "dars", "KL of pseudo labels to the labeled distribution", _dars_t5,
          "Labelling (no training) from the round-0 teacher, plus a focal-loss teacher for \"ST + Focal "
          "Loss\" (first seed in smoke and quick); ST and DARS are Table 4's round-1 runs."),
    Table("dars-t6", "dars", "Progressive α and β", _dars_t6,
          _Q + "every row; the round-1 and final round-2 rows are Table 4's runs at every seed, the others at "
          "the first seed."),
    Table("dars-t7", "dars", "Held-out test sets", _dars_t7,
          "No test server: Table 1's (and Table 3's) runs, evaluated on val; no runs of their own."),
    Table("dars-t8", "dars", "More unlabeled data", _dars_t8,
          _Q + "N_p = 0 and one train-set's worth of extra toycity images (first seed); gpu runs 1×, 2×, 3× "
          "the train split, paper 3k, 6k, 9k of Cityscapes' coarse train_extra (issue 13)."),
    Table("dars-t9", "dars", "Labeling ratio α at round 2", _dars_t9,
          _Q + "α ∈ {20 %, 50 %} (Table 6's runs, first seed); gpu and paper run 20–60 %."),
    Table("dars-t10", "dars", "Random-scale magnitude β at round 2", _dars_t10,
          _Q + "β = (0, 0) and (0.2, 0.5) (Table 6's runs); gpu and paper run all seven."),
    Table("dars-t11", "dars", "Augmentation types (fully supervised)", _dars_t11,
          _Q + "none and random scaling at the first seed; gpu and paper run all four."),
    Table("dars-t12", "dars", "ScanNet, one round", _dars_t12,
          _Q + "the baseline and one round of ST, CBST and DARS (α = 50 %) at the first seed, on toycity written "
          "in the ScanNet layout (20 classes); the paper ran one seed too."),
    Table("dars-t13", "dars", "ScanNet, iterative training", _dars_t13,
          _Q + "1/8 only (baseline, DARS with two rounds, oracle) at the first seed, on toycity written in the "
          "ScanNet layout; gpu and paper run 1/8 and 1/4."),
    Table("dars-t14", "dars", "GTA5 → Cityscapes, DARS (TD)", _dars_t14,
          "PSPNet50 on the uda strategy (its EMA teacher's pseudo labels pass through DARS with the target's "
          "prior: DARS's iterative rounds become DAFormer's continuous teacher); source only and DARS (TD), "
          "the first seed in smoke and quick. Other methods' rows are cited."),
    Table("dars-t15", "dars", "GTA5 → Cityscapes: KL vs mIoU", _dars_t15,
          "As Table 14: source only, then the uda strategy's pseudo labels by ST, CBST, DARS (SD), DARS (TD) "
          "(those the strategy has); every row at the first seed in smoke and quick (the claim is an ordering "
          "across five runs)."),
    Table("dars-fig1", "dars", "Fig. 1: class distribution of pseudo labels", _pick(_dars_t4, "Baseline", "ST", "DARS"),
          "Table 4's round-0 teacher and round-1 ST and DARS labellings: no runs of its own."),
    Table("dars-fig3", "dars", "Fig. 3: confidence histograms of the teacher", _pick(_dars_t4, "Baseline"),
          "Table 4's round-0 teacher: no runs of its own."),
    Table("dars-fig4", "dars", "Fig. 4: pseudo-label loss in round 2",
          _pick(_dars_t6, "2 / 20 / 0 / 0", "2 / 50 / 0 / 0", "2 / 50 / 0.2 / 0.5"),
          "Table 6's three round-2 variants (α 20 % and 50 % with the round-1 scale range, α 50 % with the wider "
          "one: their loss histories; the first two at the first seed in smoke and quick): no runs of its own."),
    Table("dars-fig5", "dars", "Fig. 5: gains per occurrence / size group", _pick(_dars_t1, "DARS 1/8", "DARS (crop 361) 1/8"),
          "Table 1's 1/8 baseline, DARS and oracle: no runs of its own."),
    Table("dars-fig6", "dars", "Fig. 6: pseudo-label maps", _pick(_dars_t4, "ST", "CBST", "DARS", "DARS + IT"),
          "Table 4's round-1 ST, CBST, DARS and round-2 DARS: no runs of its own."),
    Table("dars-fig7", "dars", "Fig. 7: predictions", _pick(_dars_t4, "Baseline", "ST", "CBST", "DARS"),
          "Table 4's round-0 and round-1 runs: no runs of its own."),
]}


# --- the public functions ------------------------------------------------------------------------------

def list_tables(paper: str | None = None) -> list[str]:
    return [t for t, spec in TABLES.items() if paper is None or spec.paper == paper]


def get_table(table: str) -> Table:
    try:
        return TABLES[table]
    except KeyError:
        raise ConfigError(f"unknown table {table!r}; known: {', '.join(TABLES)}") from None


def resolve_tables(only: Iterable[str] | None) -> list[str]:
    """Table ids from ``--only`` arguments: exact ids, or prefixes ("blv", "dars-t" every DARS table,
    "blv-fig" every BLV figure; "dars-t1" is only itself). An argument naming nothing raises a ConfigError."""
    if not only:
        return list(TABLES)
    out = []
    for name in only:
        stem = name.rstrip("-")
        hits = [name] if name in TABLES else [
            t for t in TABLES if t.startswith(stem + "-")
            or (t.startswith(stem) and t[len(stem):].isdigit() and not stem[-1:].isdigit())]
        if not hits:
            raise ConfigError(f"--only {name!r} names no table; known: {', '.join(TABLES)} "
                              "(or a prefix: blv, dars, blv-fig, dars-fig)")
        out += [h for h in hits if h not in out]
    return out


def use_weights_dir(weights_dir: str | None) -> str | None:
    """A chapter's ``weights_dir`` parameter (``papermill ... -p weights_dir DIR``): the folder of ImageNet
    weights, one file per backbone (:mod:`blvnb.models.weights`), that every run built after this call reads
    (``$BLVNB_WEIGHTS``, which ``blvnb reproduce --weights DIR`` sets for the chapters' kernels). None leaves
    it as it is. A folder that does not exist is a ConfigError. Returns the folder in use (None: none)."""
    import os

    from blvnb.experiments.runs import WEIGHTS_ENV
    from blvnb.models.weights import check_folder

    if weights_dir is None:
        return os.environ.get(WEIGHTS_ENV)
    root = str(check_folder(weights_dir).resolve())
    os.environ[WEIGHTS_ENV] = root
    return root


def arm_seeds(arm: Arm, profile: str, seeds: tuple[int, ...], explicit: bool) -> tuple[int, ...]:
    if explicit or not _sub(profile) or arm.subset == "all":
        return seeds
    return seeds[:QUICK_SWEEP_SEEDS]


def make_config(spec: Spec, profile: str, seed: int, data_root: str | None = None):
    """``RunConfig.from_profile`` for ``spec`` at ``seed`` (recipe overrides where the config has the field)."""
    from blvnb.experiments import runs

    cls = runs.RunConfig
    known = {f.name for f in fields(cls)}
    kw = spec.kwargs()
    kw.update({k: v for k, v in _thaw(spec.recipe).items() if k in known})
    if data_root is not None:
        kw["data_root"] = data_root
    cfg = cls.from_profile(profile, seed=seed, **kw)
    if cfg.strategy == "dars-rounds":  # the form its students name it by (a round-0 arm is their teacher's run)
        from blvnb.engine.strategies.dars_rounds import round_config

        cfg = round_config(cfg, int(cfg.strategy_options.get("round", 0)))
    return cfg


@dataclass
class Entry:
    """One (table, row, arm, seed) → run."""

    table: str
    row: str
    arm: str
    seed: int
    cfg: object

    @property
    def key(self) -> str:
        return self.cfg.key()


def entries(table: str, profile: str, seeds: Iterable[int] | None = None, data_root: str | None = None) -> list[Entry]:
    """Every (row, arm, seed) of ``table`` with its RunConfig, in the table's order."""
    spec = get_table(table)
    explicit = seeds is not None
    seeds = profile_seeds(profile, seeds)
    out = []
    for arm in spec.arms_for(profile):
        for s in arm_seeds(arm, profile, seeds, explicit):
            out.append(Entry(table, arm.row, arm.arm, s, make_config(arm.spec, profile, s, data_root)))
    return out


def runs_for(table: str, profile: str, seeds: Iterable[int] | None = None, data_root: str | None = None) -> list:
    """The distinct RunConfigs ``table`` shows in ``profile`` (deduplicated by ``cfg.key()``), in order.
    Their dependencies (a DARS round's teacher, a pretraining run) are added by
    :func:`blvnb.experiments.execute.build_plan`."""
    seen, out = set(), []
    for e in entries(table, profile, seeds, data_root):
        if e.key not in seen:
            seen.add(e.key)
            out.append(e.cfg)
    return out


__all__ = ["TABLES", "Arm", "Spec", "Table", "entries", "get_table", "list_tables", "resolve_tables", "runs_for"]
