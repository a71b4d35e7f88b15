r"""UDA, DAFormer-style (Hoyer et al., CVPR 2022; HRDA, ECCV 2022): BLV Tables 3–9 and 14, DARS Tables 14–15.

Two streams: ``source`` (``cfg.dataset``: GTA5 or SYNTHIA, labeled) and ``target`` (``cfg.target``:
Cityscapes train; its labels never enter a loss — they only feed the diagnostics of :meth:`summary`).
One iteration, in the order of DAFormer's ``DACS.forward_train`` (``mmseg/models/uda/dacs.py``):

1. **EMA teacher.** At :math:`t = 0` the teacher is a copy of the student; after every optimiser step
   :math:`\theta_T \leftarrow \alpha_t \theta_T + (1 - \alpha_t)\theta_S` with
   :math:`\alpha_t = \min(1 - 1/(t + 1), 0.999)`, :math:`t` the iteration the teacher is used at next —
   DAFormer updates at the start of iteration :math:`t` with the student after :math:`t` steps; we do the
   same update in :meth:`after_step` of iteration :math:`t - 1`. Parameters only: buffers (BN running
   statistics) are copied at :math:`t = 0` and then move only through the teacher's own forwards.
   The teacher runs in train mode with dropout and drop-path off (DAFormer switches off ``_DropoutNd``
   and timm's ``DropPath``). In blvnb's models that means: the heads' ``Dropout2d`` (0.1) and MiT's /
   Swin's / ViT's ``DropPath`` off, while every ``BatchNorm`` (the ResNets, the DAFormer, SegFormer and
   FPN heads) normalises with the target batch's own statistics, as in DAFormer.
2. **Source loss**: the student on the clean source crop, the run's loss (``cfg.loss``; BLV's noise
   with the **source domain's** class pixel counts, BLV Sec. 3.4), mean over all pixels (mmseg's
   default in DAFormer), plus the model's auxiliary heads with their weights.
3. **ImageNet feature distance** (source only): a frozen copy of the backbone as built (taken in
   :meth:`setup`, before any checkpoint is loaded: the ImageNet weights), in eval mode, no grad; last
   stage; per-pixel L2 distance over channels; mask = source label downscaled to the feature grid with a
   ≥ 0.75 majority ratio (``downscale_label_ratio``) and in the thing classes {6, 7, 11–18}; the masked
   mean × 0.005. An empty mask gives 0 (DAFormer's NaN, with no gradient either way). Only meaningful
   from ImageNet weights: off (the reason logged and in :meth:`summary`) unless ``cfg.pretrained`` names
   ImageNet (``"imagenet…"``) or the paper profile builds from timm's weights; ``strategy_options["fd"]``
   forces it on or off. HRDA: the context (×0.5) features, as HRDA's ``feature_scale=0.5``.
4. **Pseudo labels**: the teacher on the clean target crop (HRDA: the inference path, overlapping
   sliding detail windows), softmax, argmax — every pixel labelled. **Quality weight** = one scalar per
   batch: the share of all target pixels with max probability ≥ 0.968. **Margins**: DAFormer zeroes the
   weight of the crop's top 15 and bottom 120 rows of 512 (scaled here to the crop's height); HRDA
   zeroes margins (30, 240, 30, 30) of the 1024×2048 frame *before* cropping (scaled to the frame;
   :class:`~blvnb.data.sampling.SampledCrops` cuts them with the image, batch key ``"valid"``).
5. **ClassMix** (:mod:`blvnb.data.mix`): half of the classes of the whole source label batch per image;
   mixed image, label and weight (1 on source pixels, the quality weight on target pixels).
6. **Colour jitter and blur** on the mixed image only, decided once per batch.
7. **Mixed loss**: pixel-weighted cross entropy, mean over all pixels (BLV noise too, see below).
8. The loop steps on L_src + λ·FD + L_mix (one backward of the sum; DAFormer backpropagates each term
   at once to free memory, which gives the same gradient).

**HRDA** (model = :class:`~blvnb.models.hrda.HRDA`): both losses are 0.9·CE(fused) + 0.1·CE(detail,
label and weight cropped to the detail box); the boxes come from the step's generator.
**Source only** (``strategy_options["source_only"]``): step 2 alone, no target stream.
**Other losses by name** (``la``, ``focal``, …) replace the source loss; the mixed loss stays DAFormer's
pixel-weighted cross entropy (with BLV's offsets when the loss is ``blv``).
**RS** (``cfg.loss == "rs"``, BLV Table 5's "naive resample"): both losses are cross entropy and the
source images are re-sampled by the rare classes they hold — the supervised strategy's ``rs`` order
(:func:`~blvnb.engine.strategies.parts.rare_class_order`: a class by DAFormer's rare-class
probabilities, then an image holding more than ``min_pixels`` of it; ``loss_options`` ``temperature``,
``min_pixels``, default DAFormer's 3000 scaled to the label area), in place of DAFormer's rare-class
sampling: no class-aware re-cropping (``rcs=True`` with ``rs`` is an error). The image order is the
same rule as DAFormer's RCS, so the RS arm differs from the baseline by the crops only.
**BLV** (``cfg.loss == "blv"``): which of the two losses BLV perturbs is unpublished; BLV Sec. 3.4's
argument (the source distribution stands in for the *target's*) implies the pseudo-labelled target
pixels, so by default both the source and the mixed loss get the noise (``strategy_options["blv_on"]``:
``"both"`` | ``"source"`` | ``"mix"``).

**ST / CBST / DARS(SD) / DARS(TD)** (DARS App. C, Tables 14–15; ``strategy_options["pseudo"]`` =
``"st"`` | ``"cbst"`` | ``"dars-sd"`` | ``"dars-td"``, :data:`PSEUDO_LABELLERS`): the teacher's target
probabilities of each batch pass through one of the labellers of :mod:`blvnb.pseudo.labelers`
(:func:`select_pseudo_labels`), all at the same labeling ratio ``pseudo_alpha`` (default 0.4, DARS's first
round at crop 713), so that Table 15's rows differ in the selection only. **ST**: one global confidence
threshold keeping the share α of the batch's pixels, whatever their class (head classes take most of
it). **CBST**: per predicted class, its top α — class-balanced by the teacher's own predictions.
**DARS**: distribution-aligned thresholds + random sampling with the class prior of the source labels
(SD) or of the target's true labels, counted on the target's *validation* split as DARS did (TD).
Kept pixels get weight 1 (the selection replaces the quality weight), the others are ignored.
Where we differ from DARS: DARS labels the *whole* target set once per round with a fixed teacher
(the round-0 PSPNet-50 trained on CyCADA-translated GTA5) and trains the next round on those fixed
labels, thresholds global over the set; here the thresholds are per batch of target crops, from the
EMA teacher of the same iteration, inside DAFormer's loop (ClassMix, EMA) — a per-batch quota is a
noisier estimate of the same target counts (for ST and CBST as for DARS).

All randomness of a step (HRDA boxes, ClassMix, jitter, blur, BLV noise, DARS sampling) comes from
``loop.step_generator(seed, it, salt, device)``; the streams' crops from (seed, epoch, position) through
:mod:`blvnb.data.sampling`. A resumed run is bitwise identical. Under DDP each process holds a share
of the global batch: the batch-level draws (HRDA's box, whether to jitter / blur) use the same salt on
every rank; the per-image draws (ClassMix's classes, jitter factors, blur σ) are salted with the image's
index in the global batch, ClassMix's class set and the quality weight are reduced over the processes —
so a split batch makes the draws one process makes. BLV's per-pixel noise, the pseudo-label thresholds
(ST, CBST, DARS) and DARS's sampling are per process (salted by rank): a per-batch quota is then per
share of the batch.

The loss and σ(t), its per-step noise, the sum over outputs, the EMA teacher (train mode, dropout off) and
the parameter groups are the shared parts (:mod:`.parts`); the optimiser and the groups are DAFormer's
recipe (:func:`blvnb.engine.recipes.uda_recipe`: AdamW 6e-5, head ×10, no decay on position blocks and on
a transformer backbone's norms). BLV's noise on the mixed loss is the loss's own
:meth:`~blvnb.losses.blv.BLVLoss.perturb`.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.data import mix as mixlib
from blvnb.data.sampling import (RareClassSampler, SampledCrops, image_class_pixels, scaled_min_pixels,
                                 uniform_order)
from blvnb.engine import loop
from blvnb.engine.loop import step_generator
from blvnb.engine.recipes import DAFORMER, Recipe, uda_recipe
from blvnb.engine.strategies import parts
from blvnb.engine.strategies.base import Built, Strategy, unwrap
from blvnb.errors import ConfigError
from blvnb.losses.blv import BLVLoss, cross_entropy
from blvnb.models.hrda import HRDA
from blvnb.models.inference import resize_logits

log = logging.getLogger(__name__)

#: DAFormer's ``imnet_feature_dist_classes``: traffic light, traffic sign, person … bicycle.
THING_CLASSES: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
#: ``strategy_options["pseudo"]`` → the labeller of :func:`blvnb.pseudo.pseudo_label` it runs on each batch of
#: teacher probabilities (None: DAFormer's argmax). ST and CBST are DARS Table 15's baselines, with the same
#: labeling ratio ``pseudo_alpha`` as DARS (SD) / (TD), so that the four rows differ in the selection only.
PSEUDO_LABELLERS: dict[str, str | None] = {"argmax": None, "st": "st", "cbst": "cbst", "dars-sd": "dars",
                                           "dars-td": "dars"}
PSEUDO_METHODS = tuple(PSEUDO_LABELLERS)
#: the pseudo-labelling methods that need a class prior (the source's or the target's label counts)
PRIOR_METHODS = ("dars-sd", "dars-td")
#: losses by name beyond :data:`blvnb.losses.LOSSES`: ``rs``, cross entropy on rare-class re-sampled images
EXTRA_LOSSES = ("rs",)
BLV_PLACES = ("both", "source", "mix")
#: Label area (pixels) at which DAFormer's rare-class ``min_pixels`` = 3000 is counted: original labels.
REFERENCE_LABEL_AREA = {"gta5": 1914 * 1052, "synthia": 1280 * 760, "cityscapes": 1024 * 2048}
#: Image area at which DAFormer (0.5) / HRDA (2.0) apply ``min_crop_ratio``: their resized source images.
CROP_REFERENCE_AREA = {False: 720 * 1280, True: 1440 * 2560}
#: The paper pipelines' image sizes (H, W): source and target, DAFormer and HRDA.
PAPER_SIZES = {False: ((720, 1280), (512, 1024)), True: ((1440, 2560), (1024, 2048))}
#: DAFormer: zero the weight of the crop's top 15 and bottom 120 rows (of a 512 crop).
DAFORMER_MARGIN_ROWS = (15, 120, 512)
#: HRDA ``crop_pseudo_margins`` (top, bottom, left, right) on the 1024×2048 frame.
HRDA_MARGINS = (30 / 1024, 240 / 1024, 30 / 2048, 30 / 2048)

DEFAULTS: dict[str, Any] = dict(
    source_only=False, pseudo="argmax", pseudo_alpha=0.4, ema=0.999, quality_threshold=0.968,
    fd="auto", fd_lambda=0.005, fd_min_ratio=0.75, rcs=True, rcs_temperature=0.01, rcs_min_pixels=3000,
    rcs_min_crop_ratio=None, pl_crop=True, jitter_strength=0.2, jitter_p=0.8, blur_p=0.5, blv_on="both",
    hrda=None, detail_weight=0.1, crop=None, source_size=None, target_size=None, lr=DAFORMER.lr,
    weight_decay=DAFORMER.weight_decay, warmup_fraction=DAFORMER.warmup_fraction, cat_max_ratio=0.75,
)


# --- the pieces, each tested on its own --------------------------------------------------------------

def all_reduce_(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce over the process group (a no-op in one process)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def batch_classes(labels: torch.Tensor) -> torch.Tensor:
    """The sorted values present in the *global* source label batch (union over processes, 255 included)."""
    present = torch.zeros(256, dtype=torch.int32, device=labels.device)
    present[labels.reshape(-1).long().clamp(0, 255).unique()] = 1
    return torch.nonzero(all_reduce_(present, "max")).reshape(-1)


def quality_weight(confidence: torch.Tensor, threshold: float = 0.968) -> torch.Tensor:
    """One scalar per batch: the share of *all* target pixels whose max probability is ≥ ``threshold``."""
    # Σ [conf ≥ τ] / #pixels, over the global batch when it is split over processes
    counts = torch.stack([(confidence >= threshold).sum().float(), torch.tensor(float(confidence.numel()),
                                                                                 device=confidence.device)])
    counts = all_reduce_(counts)
    return counts[0] / counts[1]


def daformer_margin_mask(n: int, h: int, w: int, device=None) -> torch.Tensor:
    """DAFormer's pseudo-label crop: weight 0 on the top 15 and bottom 120 rows of a 512-row crop,
    scaled to ``h`` rows; float N×H×W."""
    top, bottom, ref = DAFORMER_MARGIN_ROWS
    t, b = int(round(top * h / ref)), int(round(bottom * h / ref))
    m = torch.ones(n, h, w, device=device)
    if t:
        m[:, :t] = 0
    if b:
        m[:, h - b:] = 0
    return m


def downscale_label_ratio(labels: torch.Tensor, factor: int, min_ratio: float = 0.75,
                          num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """N×H×W labels → N×(H/f)×(W/f): each cell's majority class, 255 where it holds < ``min_ratio`` of the
    cell (or is mostly ignored) — DAFormer's ``downscale_label_ratio``."""
    if factor < 1:
        raise ConfigError(f"downscale factor must be >= 1, got {factor}")
    y = labels.clone()
    y[(y == IGNORE) | (y >= num_classes)] = num_classes
    onehot = F.one_hot(y, num_classes + 1).permute(0, 3, 1, 2).float()
    share = F.avg_pool2d(onehot, kernel_size=factor) if factor > 1 else onehot
    ratio, out = share.max(1)
    out[out == num_classes] = IGNORE
    out[ratio < min_ratio] = IGNORE
    return out


def feature_distance(student: torch.Tensor, imnet: torch.Tensor, labels: torch.Tensor,
                     classes=THING_CLASSES, min_ratio: float = 0.75,
                     num_classes: int = NUM_CLASSES) -> tuple[torch.Tensor, int]:
    """DAFormer's masked ImageNet feature distance: the mean over masked cells of ‖f_S − f_I‖₂ (over
    channels), mask = thing classes of the ratio-downscaled labels. Returns ``(distance, masked cells)``,
    both tensors (no device sync); 0 (with a graph, no gradient) when nothing is masked."""
    factor = max(1, labels.shape[-1] // student.shape[-1])
    small = downscale_label_ratio(labels, factor, min_ratio, num_classes)
    if small.shape[-2:] != student.shape[-2:]:
        small = F.interpolate(small[:, None].float(), size=student.shape[-2:], mode="nearest")[:, 0].long()
    mask = torch.isin(small, torch.tensor(classes, device=small.device))
    # ‖f_S − f_I‖₂ per cell, over channels
    dist = torch.norm(student.float() - imnet.float(), dim=1, p=2)  # N×h×w
    n = mask.sum()
    # the masked mean; an empty mask gives 0 / 1 = 0 (DAFormer: NaN, no gradient either way)
    return (dist * mask).sum() / n.clamp_min(1), n


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Pixel-weighted cross entropy, mean over *all* pixels (ignored ones add 0), logits resized to the labels."""
    logits = resize_logits(logits, labels.shape[-2:]).float()
    ce = F.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="none")
    return (ce * weight).mean() if weight is not None else ce.mean()


def select_pseudo_labels(probs: torch.Tensor, method: str, prior=None, *, alpha: float = 0.4,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Pseudo labels (N×H×W, 255 = ignored) of one batch of teacher probabilities (N×C×H×W) by ``method``
    of :data:`PSEUDO_LABELLERS` other than ``"argmax"``: ``"st"`` keeps the share ``alpha`` of the batch's
    pixels above one global confidence threshold, ``"cbst"`` the top ``alpha`` of each predicted class,
    ``"dars-sd"`` / ``"dars-td"`` DARS with the class ``prior`` (:mod:`blvnb.pseudo.labelers`)."""
    from blvnb.pseudo import pseudo_label

    labeller = PSEUDO_LABELLERS.get(method)
    if labeller is None:
        raise ConfigError(f"no pseudo-label selection {method!r}; expected one of "
                          f"{[m for m, f in PSEUDO_LABELLERS.items() if f]}")
    if method in PRIOR_METHODS and prior is None:
        raise ConfigError(f"pseudo={method!r} needs a class prior (source or target label counts)")
    # per batch, classes the teacher does not predict are the rule, not news: no warning each step
    quiet = logging.getLogger("blvnb.pseudo")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        return pseudo_label(probs, prior, method=labeller, alpha=alpha, generator=generator)
    finally:
        quiet.setLevel(level)


def crop_to(t: torch.Tensor, box) -> torch.Tensor:
    y0, x0, h, w = box
    return t[..., y0:y0 + h, x0:x0 + w]


def _normalise_counts(counts) -> torch.Tensor:
    c = torch.as_tensor(counts, dtype=torch.float64).reshape(-1)
    if c.numel() != NUM_CLASSES or not float(c.sum()) > 0:
        raise ConfigError(f"class counts must be {NUM_CLASSES} non-negative numbers with a positive sum")
    return c / c.sum()


# --- the strategy ------------------------------------------------------------------------------------

class UDAStrategy(Strategy):
    """DAFormer / HRDA self-training (module docstring). Build it with :func:`build`."""

    name = "uda"
    epoch_stream = "source"

    def __init__(self, loss: nn.Module, source_counts, *, seed: int = 0, options: dict | None = None,
                 prior=None, fd_enabled: bool = False, fd_reason: str = "", num_classes: int = NUM_CLASSES,
                 info: dict | None = None, recipe: Recipe | None = None):
        o = parts.parse_options("uda", options, DEFAULTS)
        if o["pseudo"] not in PSEUDO_METHODS:
            raise ConfigError(f"unknown UDA pseudo-labelling {o['pseudo']!r}; expected one of {PSEUDO_METHODS}")
        if o["blv_on"] not in BLV_PLACES:
            raise ConfigError(f"blv_on must be one of {BLV_PLACES}, got {o['blv_on']!r}")
        if o["pseudo"] in PRIOR_METHODS and prior is None:
            raise ConfigError(f"pseudo={o['pseudo']!r} needs a class prior (source or target label counts)")
        parts.check_momentum("ema", o["ema"])
        self.recipe = recipe or uda_recipe("mitb5-daformer")
        self.o, self.loss_fn, self.seed, self.num_classes = o, loss, int(seed), num_classes
        self.source_counts = torch.as_tensor(source_counts, dtype=torch.float64)
        self.prior = None if prior is None else _normalise_counts(prior)
        self.source_only = bool(o["source_only"])
        self.streams = ("source",) if self.source_only else ("source", "target")
        self.fd_enabled = bool(fd_enabled) and not self.source_only
        self.fd_reason = fd_reason
        self.info = dict(info or {})
        self.ema: parts.EMATeacher | None = None
        self.imnet: nn.Module | None = None
        self.hrda = False
        self._acc: dict[str, torch.Tensor] = {}
        self._reset_acc()

    @property
    def teacher(self) -> nn.Module | None:
        return None if self.ema is None else self.ema.module

    # --- bookkeeping ----------------------------------------------------------------------------------

    def _reset_acc(self, device=None) -> None:
        """Run totals for :meth:`summary`, kept on the device (no sync per step) and in the checkpoint."""
        c = self.num_classes
        z = lambda *shape, dtype=torch.int64: torch.zeros(shape, dtype=dtype, device=device)  # noqa: E731
        self._acc = {"quality_sum": z(dtype=torch.float64), "steps": z(), "pl_counts": z(c), "truth_counts": z(c),
                     "agree": z(), "compared": z(), "fd_sum": z(dtype=torch.float64), "fd_empty": z()}

    def setup(self, model: nn.Module, device) -> None:
        core = unwrap(model)
        self.hrda = isinstance(core, HRDA)
        if self.o["hrda"] is not None and bool(self.o["hrda"]) != self.hrda:
            raise ConfigError(f"strategy_options hrda={self.o['hrda']} but the model is "
                              f"{'an' if self.hrda else 'not an'} HRDA wrapper; choose a '-hrda' model for HRDA")
        if not self.source_only:  # the teacher at t = 0: a copy of the student (DAFormer's first _update_ema)
            self.ema = parts.EMATeacher(core, self.o["ema"], mode="train")
        if self.fd_enabled:
            seg = core.model if self.hrda else core
            self.imnet = copy.deepcopy(seg.backbone).to(device).eval()
            for p in self.imnet.parameters():
                p.requires_grad_(False)
        self.loss_fn.to(device)
        self._acc = {k: v.to(device) for k, v in self._acc.items()}
        log.info("UDA: %s%s, pseudo labels %s, feature distance %s", "HRDA" if self.hrda else "DAFormer",
                 " (source only)" if self.source_only else "", self.o["pseudo"],
                 "on" if self.fd_enabled else f"off ({self.fd_reason})")

    def modules(self):
        return tuple(m for m in (self.teacher, self.imnet) if m is not None)

    # --- forwards and losses --------------------------------------------------------------------------

    def _forward(self, net: nn.Module, x: torch.Tensor, box) -> dict:
        """{"out", "aux", "features" (backbone levels for FD), "detail", "box"} for HRDA or a SegModel."""
        if self.hrda:
            parts = net(x, box=box, return_parts=True)
            return {"out": parts["out"], "aux": [], "backbone": parts["context_features"],
                    "detail": parts["detail"], "box": parts["box"]}
        core = unwrap(net)
        weights = tuple(core.aux_weights)
        if net is core:  # a SegModel: its decode also returns the backbone's features (for FD)
            d = core.decode(x, aux=bool(weights))
            return {"out": d["out"], "aux": d.get("aux", []) if weights else [], "backbone": d["backbone"]}
        res = net(x, return_aux=True) if weights else {"out": net(x)}
        return {"out": res["out"], "aux": res.get("aux", []), "backbone": None}

    def _blv_mix(self) -> bool:
        return isinstance(self.loss_fn, BLVLoss) and self.o["blv_on"] in ("both", "mix")

    def _blv_source(self) -> bool:
        return isinstance(self.loss_fn, BLVLoss) and self.o["blv_on"] in ("both", "source")

    def _source_term(self, logits, labels, weight=None):
        if isinstance(self.loss_fn, BLVLoss) and not self._blv_source():
            return cross_entropy(logits, labels, avg_non_ignore=self.loss_fn.avg_non_ignore)
        return self.loss_fn(logits, labels)

    def _mix_term(self, logits, labels, weight):
        if self._blv_mix():  # Eq. (3)'s logits under DAFormer's pixel-weighted cross entropy
            logits = self.loss_fn.perturb(resize_logits(logits, labels.shape[-2:]).float(), labels)
        return weighted_cross_entropy(logits, labels, weight)

    def _loss(self, model: nn.Module, pred: dict, labels, weight, source: bool) -> torch.Tensor:
        term = self._source_term if source else self._mix_term
        if self.hrda:
            lam = self.o["detail_weight"]
            box = pred["box"]
            # HRDA: (1 − λ_d) CE(fused) + λ_d CE(detail, label and weight cropped to the detail box)
            return (1 - lam) * term(pred["out"], labels, weight) + \
                lam * term(pred["detail"], crop_to(labels, box), None if weight is None else crop_to(weight, box))
        placed = parts.placement(model, lambda z, y: term(z, y, weight), self.recipe.loss_on)
        return parts.segmentation_loss([pred["out"], *pred["aux"]], labels, placed)[0]

    # --- one iteration --------------------------------------------------------------------------------

    def step(self, model: nn.Module, batches: dict[str, dict], it: int) -> tuple[torch.Tensor, dict]:
        core = unwrap(model)
        src = batches["source"]
        xs, ys = src["image"], src["label"]
        dev = xs.device
        gen = lambda salt, device="cpu": step_generator(self.seed, it, salt, device)  # noqa: E731
        # per-image draws are keyed by the image's index in the *global* batch (rank r holds images
        # r·n … r·n + n − 1), so that a batch split over processes draws what one process draws
        rank = loop.rank()
        n_local = xs.shape[0]
        per_image = lambda salt: [gen(f"{salt}/{rank * n_local + i}") for i in range(n_local)]  # noqa: E731

        # 1. EMA teacher: the student's copy at t = 0 (setup), updated in after_step

        # 2. source: the student on the clean source crop (through the unwrapped module: only the last
        # forward of a step goes through DDP, whose hooks see the summed gradient of both)
        box_s = core.crop_box(*xs.shape[-2:], gen("hrda-source")) if self.hrda else None
        fwd = model if self.source_only else core
        ps = self._forward(fwd, xs, box_s)
        # σ(t) follows the loop's iteration counter (Table 9); the noise of each loss its own draws
        parts.loss_at_step(self.loss_fn, seed=self.seed, it=it, term="blv-source", device=dev)
        loss_src = self._loss(core, ps, ys, None, source=True)
        stats = {"loss_source": loss_src.detach(), **parts.loss_sigma(self.loss_fn)}
        total = loss_src
        if self.source_only:
            stats["loss"] = total.detach()
            return total, stats

        # 3. ImageNet feature distance on thing classes (source only)
        if self.fd_enabled and ps["backbone"] is not None:
            x_fd = F.interpolate(xs, scale_factor=core.scale, mode="bilinear", align_corners=False) if self.hrda else xs
            with torch.no_grad():
                f_im = self.imnet(x_fd)[-1]
            fd, n_cells = feature_distance(ps["backbone"][-1], f_im, ys, THING_CLASSES, self.o["fd_min_ratio"],
                                           self.num_classes)
            total = total + self.o["fd_lambda"] * fd
            stats["loss_fd"] = (self.o["fd_lambda"] * fd).detach()
            self._acc["fd_sum"] += fd.detach().to(torch.float64)
            self._acc["fd_empty"] += (n_cells == 0).to(torch.int64)

        # 4. pseudo labels: the teacher on the clean target crop
        tgt = batches["target"]
        xt = tgt["image"]
        with torch.no_grad():
            t_logits = self.teacher.predict(xt) if self.hrda else self.ema(xt)
            probs = torch.softmax(resize_logits(t_logits.float(), xt.shape[-2:]), dim=1)
            conf, pl = probs.max(1)
            # quality weight: one scalar per batch, the share of target pixels with max prob ≥ τ
            q = quality_weight(conf, self.o["quality_threshold"])
            if self.o["pseudo"] == "argmax":
                w_t = q * torch.ones_like(conf)
            else:
                # ST / CBST / DARS: the kept pixels get weight 1 (the selection replaces the quality weight)
                pl = select_pseudo_labels(probs, self.o["pseudo"], self.prior, alpha=self.o["pseudo_alpha"],
                                          generator=gen(f"dars/rank{rank}", dev))
                w_t = torch.ones_like(conf)
            margin = torch.ones_like(conf)
            if self.o["pl_crop"]:
                margin = tgt["valid"].to(conf.dtype) if self.hrda and "valid" in tgt else \
                    daformer_margin_mask(*conf.shape, device=dev)
            w_t = w_t * margin
            labelled = (pl != IGNORE) & (margin > 0)
            self._record_pseudo(pl, labelled, tgt.get("label"), q)

            # 5. ClassMix with half of the classes of the source label batch
            m, _ = mixlib.class_mix_masks(ys, classes=batch_classes(ys), image_generators=per_image("classmix"))
            m = m.to(dev)
            x_mix = mixlib.mix(m, xs, xt)
            y_mix = mixlib.mix(m, ys, pl.to(ys.dtype))
            w_mix = torch.where(m, torch.ones_like(w_t), w_t)
            # 6. colour jitter and blur on the mixed image only, decided once per batch
            x_mix, _ = mixlib.strong_transform(x_mix, gen("jitter"), gen("blur"),
                                               jitter_strength=self.o["jitter_strength"],
                                               jitter_p=self.o["jitter_p"], blur_p=self.o["blur_p"],
                                               jitter_image_generators=per_image("jitter"),
                                               blur_image_generators=per_image("blur"))

        # 7. the mixed loss: pixel-weighted cross entropy, mean over all pixels
        box_m = core.crop_box(*x_mix.shape[-2:], gen("hrda-mix")) if self.hrda else None
        pm = self._forward(model, x_mix, box_m)
        parts.loss_at_step(self.loss_fn, seed=self.seed, it=it, term="blv-mix", device=dev)
        loss_mix = self._loss(core, pm, y_mix, w_mix, source=False)
        total = total + loss_mix
        stats.update(loss_mix=loss_mix.detach(), quality=q, mix_share=m.float().mean(),
                     pl_kept=labelled.float().mean())
        stats["loss"] = total.detach()
        return total, stats

    def _record_pseudo(self, pl, keep, truth, q) -> None:
        """Accumulate the pseudo-label class counts (pixels labelled and inside the margins) and, from the
        target crops' true labels, the diagnostics of :meth:`summary`."""
        c, a = self.num_classes, self._acc
        dev = a["steps"].device
        a["quality_sum"] += q.to(dev, torch.float64)
        a["steps"] += 1
        # per-class counts by a scatter-add into C + 1 bins (the last one for pixels not counted): no
        # boolean indexing, no device sync
        def count(labels, mask):
            idx = torch.where(mask, labels.long().clamp(0, c - 1), torch.full_like(labels, c, dtype=torch.long))
            bins = torch.zeros(c + 1, dtype=torch.int64, device=idx.device)
            return bins.scatter_add_(0, idx.reshape(-1), torch.ones_like(idx).reshape(-1))[:c].to(dev)

        a["pl_counts"] += count(pl, keep)
        if truth is not None:
            t = truth.to(pl.device)
            both = keep & (t != IGNORE) & (t < c)
            a["truth_counts"] += count(t, both)
            a["agree"] += (both & (pl == t)).sum().to(dev)
            a["compared"] += both.sum().to(dev)

    def after_step(self, model: nn.Module, it: int) -> None:
        # θ_T ← α θ_T + (1 − α) θ_S with α = α_{it+1}: the teacher that iteration it + 1 uses
        if self.ema is not None:
            self.ema.update(model, it + 1)

    # --- state and record -----------------------------------------------------------------------------

    def state_dict(self) -> dict:
        state: dict[str, Any] = {"acc": {k: v.clone() for k, v in self._acc.items()}}
        if self.ema is not None:
            state["teacher"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        if "teacher" in state and self.ema is not None:
            self.ema.load_state_dict(state["teacher"])
        for k, v in state.get("acc", {}).items():
            self._acc[k] = v.clone().to(self._acc[k].device) if k in self._acc else v.clone()

    def summary(self) -> dict:
        from blvnb.pseudo.distribution import kl_divergence

        a = {k: v.cpu() for k, v in self._acc.items()}
        steps = int(a["steps"])
        out: dict[str, Any] = dict(self.info)
        out.update(source_only=self.source_only, hrda=self.hrda, pseudo=self.o["pseudo"],
                   feature_distance={"enabled": self.fd_enabled, "reason": self.fd_reason,
                                     "mean": float(a["fd_sum"]) / steps if self.fd_enabled and steps else None,
                                     "empty_mask_steps": int(a["fd_empty"])},
                   blv_on=self.o["blv_on"] if isinstance(self.loss_fn, BLVLoss) else None)
        if self.source_only or steps == 0:
            return out
        counts = a["pl_counts"].to(torch.float64)
        src = self.source_counts
        out["quality_weight_mean"] = float(a["quality_sum"]) / steps
        out["pseudo_label_counts"] = [int(x) for x in a["pl_counts"]]
        out["pseudo_label_distribution"] = (counts / counts.sum()).tolist() if counts.sum() > 0 else None
        out["kl_pseudo_to_source_prior"] = kl_divergence(counts, src) if counts.sum() > 0 and src.sum() > 0 else None
        truth = a["truth_counts"].to(torch.float64)
        # diagnostics from the target crops' true labels (never used for training): DARS Table 15's D_KL
        out["kl_pseudo_to_target_labels"] = kl_divergence(counts, truth) if counts.sum() > 0 and truth.sum() > 0 \
            else None
        out["pseudo_label_accuracy"] = float(a["agree"]) / int(a["compared"]) if int(a["compared"]) else None
        if self.prior is not None:
            out["prior"] = self.prior.tolist()
        return out


# --- wiring ------------------------------------------------------------------------------------------

def imagenet_weights(cfg) -> tuple[bool, str]:
    """Whether the run starts from the paper's ImageNet weights, and the reason when not."""
    pre = cfg.pretrained
    if pre == "imagenet":
        return True, ""
    if isinstance(pre, str) and pre not in ("toy", "profile"):
        return True, ""  # a local weights file: the paper profile's ImageNet weights on clusters without internet
    if pre is None:
        return False, "no ImageNet weights: the backbone starts from random initialisation (DAFormer's " \
                      "feature distance pulls towards ImageNet features and means nothing without them)"
    return False, f"pretrained={pre!r} is the profile's toy pretraining, not ImageNet: the feature distance " \
                  "regularises towards ImageNet features, so it is off (strategy_options fd=True forces it)"


_PIXELS_CACHE: dict[tuple, Any] = {}


def _pixels_per_image(ds, progress: bool = False):
    """:func:`image_class_pixels` of a data set, remembered per (root, split, names) in this process: one
    pass over GTA5's 24,966 labels, not one per run of a notebook."""
    names = tuple(getattr(ds, "names", ()) or ())
    key = (str(getattr(ds, "root", "")), str(getattr(ds, "split", "")), len(ds), hash(names)) if names else None
    if key is not None and key in _PIXELS_CACHE:
        return _PIXELS_CACHE[key]
    pixels = image_class_pixels(ds, progress=progress)
    if key is not None:
        _PIXELS_CACHE[key] = pixels
    return pixels


def _split(kind: str) -> str:
    return "train" if kind == "cityscapes" else "all"


def _label_area(ds) -> int:
    lab = ds.read_label(0) if hasattr(ds, "read_label") else ds[0]["label"]
    return int(lab.shape[-2] * lab.shape[-1])


def _salted(order, salt: int):
    """An order drawing from its own generator, seeded from the stream's: source and target streams whose
    generators share a seed still draw independent orders."""

    def salted(epoch: int, generator: torch.Generator):
        s = int(torch.randint(0, 2**62, (), generator=generator))
        return order(epoch, torch.Generator().manual_seed((s ^ salt) & ((1 << 63) - 1)))

    return salted


def build(cfg, data):
    """The UDA run's strategy and streams: ``Built(strategy, {"source", "target"}, overrides, None)``."""
    o = parts.parse_options("uda", cfg.strategy_options, DEFAULTS)
    user = dict(cfg.strategy_options or {})  # what the run gave (rcs, lr, weight_decay), beside the defaults
    source_kind, target_kind = cfg.dataset, cfg.target
    if source_kind not in ("gta5", "synthia", "cityscapes"):
        raise ConfigError(f"UDA source {source_kind!r}: expected 'gta5' or 'synthia'")
    if not o["source_only"] and target_kind is None:
        raise ConfigError("UDA needs cfg.target (e.g. target='cityscapes'), or strategy_options source_only=True")
    hrda = bool(o["hrda"]) if o["hrda"] is not None else "hrda" in str(cfg.model).lower()
    seed = int(cfg.seed)
    paper = data.profile.paper_recipes  # DAFormer's and HRDA's crops and image sizes: the real data's

    # loss "rs" (BLV Table 5's naive re-sampling): cross entropy, the source images drawn by the rare classes
    # they hold (the supervised strategy's order), in place of DAFormer's rare-class crops
    rs = cfg.loss == "rs"
    if rs and user.get("rcs"):
        raise ConfigError("loss 'rs' re-samples the source images itself; strategy_options rcs=True would add "
                          "DAFormer's rare-class crops on top of it: drop rcs (or use loss 'ce' with rcs)")
    if rs:
        o["rcs"] = False
    src_base = data.dataset(source_kind, _split(source_kind), train=False)
    pixels = _pixels_per_image(src_base, data.progress) if o["rcs"] or rs else None
    # BLV's q: the source domain's label pixels per class (the rare-class pass already has them)
    src_counts = torch.as_tensor(pixels.sum(0) if pixels is not None else data.class_counts(src_base),
                                 dtype=torch.int64)

    # crops: a square of the profile's crop height (DAFormer 512 of 512×1024 Cityscapes, HRDA 1024)
    if o["crop"] is not None:
        crop = tuple(int(c) for c in o["crop"])
    elif paper:
        crop = (1024, 1024) if hrda else (512, 512)
    else:
        side = int((cfg.crop or (512, 1024))[0])
        crop = (side, side)
    src_size = tuple(o["source_size"]) if o["source_size"] else (PAPER_SIZES[hrda][0] if paper else None)
    tgt_size = tuple(o["target_size"]) if o["target_size"] else (PAPER_SIZES[hrda][1] if paper else None)

    # rare-class sampling: min_pixels scaled from the original label area, the crop rule from the paper's
    # pipeline area (both thresholds are the same share of the image as in DAFormer / HRDA)
    ratio = o["rcs_min_crop_ratio"] if o["rcs_min_crop_ratio"] is not None else (2.0 if hrda else 0.5)
    info: dict[str, Any] = {"crop": list(crop), "source_counts": src_counts.tolist()}
    order, crop_min = None, 0
    min_px = scaled_min_pixels(o["rcs_min_pixels"], _label_area(src_base), REFERENCE_LABEL_AREA[source_kind]) \
        if o["rcs"] or rs else None
    if rs:
        rs_order, info["rs"] = parts.rare_class_order(pixels, dict(cfg.loss_options or {}), min_px)
        order = _salted(rs_order, 0x5EED5)
    elif o["rcs"]:
        sampler = RareClassSampler(pixels, temperature=o["rcs_temperature"], min_pixels=min_px)
        h, w = src_size if src_size else tuple(src_base[0]["image"].shape[-2:])
        crop_min = scaled_min_pixels(o["rcs_min_pixels"] * ratio, h * w, CROP_REFERENCE_AREA[hrda])
        order = _salted(sampler.order, 0x5EED5)
        info["rcs"] = {"temperature": o["rcs_temperature"], "min_pixels": min_px, "min_crop_pixels": crop_min,
                       "min_crop_ratio": ratio, "class_probs": sampler.class_probs.tolist()}
    else:
        order = _salted(uniform_order(len(src_base)), 0x5EED5)
    source = SampledCrops(src_base, crop, seed=seed, cat_max_ratio=o["cat_max_ratio"], min_class_pixels=crop_min,
                          size=src_size)
    # cfg.batch_size images from *each* stream (DAFormer / HRDA: 2 source + 2 target; tables.UDA_BATCH)
    streams = {"source": data.stream(source, cfg.batch_size, order=order)}
    if paper and cfg.batch_size != 2:
        log.warning("UDA in the paper profile with batch_size=%d per stream; DAFormer and HRDA train with 2 source "
                    "+ 2 target images (blvnb.experiments.tables.UDA_BATCH)", cfg.batch_size)

    prior = None
    if not o["source_only"]:
        tgt_base = data.dataset(target_kind, _split(target_kind), train=False)
        margins = HRDA_MARGINS if (hrda and o["pl_crop"]) else None
        target = SampledCrops(tgt_base, crop, seed=seed + 1, size=tgt_size, pseudo_margins=margins)
        streams["target"] = data.stream(target, cfg.batch_size, order=_salted(uniform_order(len(tgt_base)), 0x7A6E7))
        if o["pseudo"] == "dars-sd":
            prior = src_counts
        elif o["pseudo"] == "dars-td":
            # DARS (TD): the target label distribution counted on the target's validation set
            prior = torch.as_tensor(data.class_counts(data.dataset(target_kind, "val", train=False)))

    info["batch"] = {name: int(cfg.batch_size) for name in streams}  # images per iteration of each stream

    iters = int(cfg.iters)
    loss_name, loss_opts = ("ce", {}) if rs else (cfg.loss, dict(cfg.loss_options or {}))  # rs: options to the sampler
    # sigma_schedule=σ0 gives Appendix C's σ(t) (Table 9 is UDA); DAFormer's mmseg loss: mean over all pixels
    loss = parts.make_loss(loss_name, loss_opts, src_counts, iters, defaults={"avg_non_ignore": False})

    fd_enabled, fd_reason = imagenet_weights(cfg)
    if o["fd"] is True or o["fd"] is False:
        fd_enabled, fd_reason = bool(o["fd"]), "" if o["fd"] else "switched off by strategy_options fd=False"
    elif o["fd"] != "auto":
        raise ConfigError(f"strategy_options fd must be 'auto', True or False, got {o['fd']!r}")
    if o["source_only"]:
        fd_enabled, fd_reason = False, "source-only baseline: the source loss only"
    if not fd_enabled:
        log.info("UDA: ImageNet feature distance off: %s", fd_reason)

    strategy = UDAStrategy(loss, src_counts, seed=seed, options=user, prior=prior, fd_enabled=fd_enabled,
                           fd_reason=fd_reason, info=info, recipe=recipe_of(cfg))
    return Built(strategy, streams, optimiser_settings(cfg), None)


def recipe_of(cfg) -> Recipe:
    """The UDA run's recipe: DAFormer's for its model (:func:`~blvnb.engine.recipes.uda_recipe`), with the
    options' warmup; its parameter groups are :func:`~blvnb.engine.recipes.param_groups` of it."""
    return uda_recipe(cfg.model, parts.parse_options("uda", cfg.strategy_options, DEFAULTS)["warmup_fraction"])


def optimiser_settings(cfg) -> dict:
    """``train_overrides`` of the optimiser: the recipe's (DAFormer's AdamW 6e-5 / 0.01, warmup and poly 1 → 0)
    unless the run (``cfg.lr``, ``cfg.weight_decay``) or the options say otherwise."""
    o = parts.parse_options("uda", cfg.strategy_options, DEFAULTS)
    user = dict(cfg.strategy_options or {})
    lr = user.get("lr", cfg.lr if cfg.lr is not None else o["lr"])
    wd = user.get("weight_decay", cfg.weight_decay if cfg.weight_decay is not None else o["weight_decay"])
    return recipe_of(cfg).train_settings(int(cfg.iters), lr=lr, weight_decay=wd)


__all__ = ["DEFAULTS", "EXTRA_LOSSES", "PRIOR_METHODS", "PSEUDO_LABELLERS", "PSEUDO_METHODS", "THING_CLASSES",
           "UDAStrategy", "build", "daformer_margin_mask", "downscale_label_ratio", "feature_distance",
           "optimiser_settings", "quality_weight", "recipe_of", "select_pseudo_labels", "weighted_cross_entropy"]
