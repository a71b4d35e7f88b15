r"""Mean-teacher self-training: BLV's semi-supervised setting (Sec. 3.3, Tables 2 and 13).

BLV released no semi-supervised code. The paper gives: DeepLabv3+ R101, SGD lr 0.01, wd 5e-4, a mean
teacher with momentum 0.999, crop 769, batch 16, "classical self-training, no tricks", and Eq. (4) to
re-estimate the class counts after every epoch. The skeleton below is that of U2PL (the first author's
semi-supervised code, same hyper-parameters; recipes.md (b)); where a step is U2PL's and not BLV's, it
says so (†).

Per iteration (``step``, then the loop's optimiser step, then ``after_step``):

1. A labeled batch (the run's augmented view) and an unlabeled batch (the *un-augmented* view of the
   unlabeled images, see "one crop, two networks" below), each of the run's batch size (U2PL: 16 + 16).
2. The unlabeled images get only geometric augmentation — random scale, crop to the labeled crop's
   size, flip — drawn here from a stateless per-iteration generator.
3. Pseudo labels: the teacher, in ``eval()`` mode and without gradient, predicts that very crop;
   $\hat y = \arg\max_k z^T_k$, every pixel labelled (no threshold); pixels of the crop that fall
   outside the image (padding) are 255.
4. BN statistics of the teacher (``ema_buffers``, below): by default the teacher makes one more no-grad
   forward, in ``train()`` mode, on the labeled and unlabeled crops, which moves its own running
   statistics (U2PL†, whose teacher makes that forward for its contrastive loss).
5. The student makes one forward on ``cat(x_l, x_u)`` (shared BN statistics, U2PL†) and
   $L = L_{sup} + \lambda_u L_u$, $\lambda_u = 1$:
   $L_{sup}$ = the run's loss (``cfg.loss``: ``ce``, ``blv``, …) on the labeled main output
   $+ \sum_j w_j \mathrm{CE}$ on the auxiliary heads (weights of the model, e.g. 0.4);
   $L_u$ = cross entropy of the student's main output on the unlabeled crop against $\hat y$. When the
   loss is ``blv``, $L_u$ is BLV too: the student's unlabeled logits get Eq. (3)'s noise with the same
   counts and options (the paper says BLV "can be integrated into any framework" but not which terms
   get the noise: **our choice**, both main-head terms; auxiliary heads keep plain cross entropy, as in
   the released supervised configs). U2PL's OHEM, entropy filtering and CutMix are tricks BLV's
   baseline says it does without; they are left out.
6. After the optimiser step (``after_step``), the EMA of the **parameters only**:

   $$\theta_T \leftarrow m_t\,\theta_T + (1 - m_t)\,\theta_S, \qquad m_t = \min\Big(1 - \frac1{t+1}, m_0\Big),$$

   $t$ the global iteration of the step just made (0, 1, 2, …). **Warm start**: the teacher is a copy
   of the student before the first step (``setup``), and $m_0 = 0$ makes it the student itself after
   step 0; $m_1 = 1/2$, $m_2 = 2/3$, … until $m_t$ reaches $m_0$ (BLV: 0.999; U2PL's YAML: 0.99).

At the end of every pass over the unlabeled set (``on_epoch_end``), with ``counts="eq4"`` (‡, the
paper's) the class counts of the loss are re-estimated with Eq. (4): the teacher predicts every
unlabeled image (un-augmented, whole image, ``eval()``), $q_k$ = pixels predicted $k$ / all pixels,
and the loss uses the new $q$ from the next iteration on. Which model ($f_n$ = the student or the EMA
teacher) and which $q$ before the first epoch end are not stated: we use the **teacher** (the model
that makes the pseudo labels), and the labeled images' counts before the first re-estimation.
``counts="labeled"`` (†, Table 13) keeps the labeled images' counts throughout (Appendix H finds it gains
little). Losses without counts (``ce``) skip the re-estimation.

**One crop, two networks.** The unlabeled stream is built with ``train=False`` — the whole image,
normalised, nothing random — and this strategy crops it itself: one ``grid_sample`` per batch samples,
for each image, the scaled, cropped, flipped window (bilinear at the positions ``F.interpolate`` would
use, then padding with the value of a black pixel where the scaled image is smaller than the crop, as
the labeled stream's crop pads). Teacher and student then see *the same tensor*: the pseudo label is
pixel-aligned with the student's input by construction, and no photometric augmentation (which the
labeled stream might apply) ever reaches the teacher. The draws come from
``step_generator(seed, it, "mt-geometry")``, so a resumed run makes the same crops.

**EMA horizon for short runs.** $m_0 = 0.999$ averages over about $1/(1 - m_0) = 1000$ iterations:
3 % of the paper's run (U2PL†: 200 epochs of $(2975 - n_l)/16$ iterations, 32.5k for the 1/8 split). A
toy run of 300 iterations would then average over three times its own length and the teacher would
lag far behind. ``strategy_options["ema_horizon"] = "scaled"`` sets $m_0 = 1 - 1/H$ with the horizon
$H$ the same fraction of this run as 1000 iterations are of the paper's (our suggestion, not a source's;
recipes.md (b)); a number there is taken as $m_0$ itself; the default is the paper's 0.999.

``strategy_options`` (all optional): ``ema_horizon`` (0.999 | a number in [0, 1) | ``"scaled"``; alias
``ema``), ``counts`` (``"eq4"`` | ``"labeled"``), ``ema_buffers`` (``"teacher-forward"`` | ``"student"``:
copy the student's buffers after each EMA update instead, one forward cheaper), ``unsup_weight`` (1.0),
``scale_range`` (the unlabeled crops' random scale; default the run's, else (0.5, 2.0)).

The loss and σ(t), the main + auxiliary sum (by the model's recipe, as its supervised runs), the EMA teacher
and the parameter groups are the shared parts (:mod:`.parts`, :mod:`blvnb.engine.recipes`); this file is
the algorithm: one crop for both networks, pseudo labels, the unsupervised term, Eq. (4).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from blvnb.classes import IGNORE, NUM_CLASSES
from blvnb.engine import loop
from blvnb.engine.recipes import Recipe, epoch_iterations, recipe_for
from blvnb.engine.strategies import parts
from blvnb.engine.strategies.base import Built, Strategy
from blvnb.engine.teacher import counts_from_teacher
from blvnb.errors import ConfigError
from blvnb.losses import build_loss
from blvnb.models.inference import resize_logits

log = logging.getLogger(__name__)

#: BLV Sec. 4.2: the mean teacher's momentum.
PAPER_M0 = 0.999
#: The paper's run length, for ``ema_horizon="scaled"`` (U2PL†: 200 epochs, batch 16, epoch = unlabeled images / 16).
PAPER_EPOCHS, PAPER_BATCH, CITYSCAPES_TRAIN = 200, 16, 2975
#: Labeled images of the Cityscapes splits (BLV Sec. 4.2).
PAPER_LABELED = {"1/16": 186, "1/8": 372, "1/4": 744, "1/2": 1488}
COUNTS_MODES = ("eq4", "labeled")
BUFFER_MODES = ("teacher-forward", "student")
#: the options of the strategy, with their defaults (module docstring; ``ema`` is ``ema_horizon``'s alias)
DEFAULTS: dict[str, Any] = {"ema_horizon": None, "ema": None, "counts": "eq4", "ema_buffers": "teacher-forward",
                            "unsup_weight": 1.0, "scale_range": None}
#: The U2PL/BLV random scale of the semi-supervised crops (recipes.md (b) 1).
DEFAULT_SCALE_RANGE = (0.5, 2.0)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


# --- the EMA's horizon -----------------------------------------------------------------------------------------

def paper_iterations(labeled_fraction: str | None) -> int:
    """Iterations of the paper's run for a Cityscapes split (U2PL†): 200 epochs of (2975 − n_l) / 16."""
    n_l = PAPER_LABELED.get(str(labeled_fraction), PAPER_LABELED["1/8"])
    return epoch_iterations(PAPER_EPOCHS, CITYSCAPES_TRAIN - n_l, PAPER_BATCH)


def scaled_m0(iters: int, labeled_fraction: str | None = "1/8", m0: float = PAPER_M0) -> float:
    r"""$m_0$ whose horizon $1/(1 - m_0)$ is the same fraction of ``iters`` as ``m0``'s is of the paper's run.

    $H = T \cdot \frac{1/(1 - m_0)}{T_{paper}}$, $m_0' = 1 - 1/H$ (0 when $H \le 1$: the teacher is the student).
    """
    horizon = int(iters) * (1.0 / (1.0 - m0)) / paper_iterations(labeled_fraction)
    return max(0.0, 1.0 - 1.0 / horizon) if horizon > 0 else 0.0


def resolve_m0(options: Mapping[str, Any], iters: int, labeled_fraction: str | None) -> float:
    """The run's $m_0$ from ``ema_horizon`` (or its alias ``ema``); see the module doc."""
    value = options.get("ema_horizon")
    if value is None:
        value = options.get("ema")
    if value in ("paper", None):
        return PAPER_M0
    if value == "scaled":
        return scaled_m0(iters, labeled_fraction)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"strategy option ema_horizon must be a momentum m0 in [0, 1), 'paper' (0.999) or "
                          f"'scaled'; got {value!r}")
    return float(value)


# --- one crop for both networks ----------------------------------------------------------------------

def draw_geometry(n: int, image_hw: Sequence[int], crop_hw: Sequence[int], scale_range: Sequence[float],
                  generator: torch.Generator | None) -> list[tuple[float, int, int, bool]]:
    """Per image ``(scale, y0, x0, flip)``: the draws of random scale → crop (padding if smaller) → flip.

    The same order of draws as the labeled stream's transforms (scale, then crop offsets, then flip).
    """
    (h, w), (ch, cw) = image_hw, crop_hw
    lo, hi = float(scale_range[0]), float(scale_range[1])
    out = []
    for _ in range(n):
        s = lo + (hi - lo) * float(torch.rand((), generator=generator))
        hs, ws = max(1, int(round(h * s))), max(1, int(round(w * s)))
        y0 = int(torch.randint(0, max(hs, ch) - ch + 1, (), generator=generator))
        x0 = int(torch.randint(0, max(ws, cw) - cw + 1, (), generator=generator))
        flip = bool(float(torch.rand((), generator=generator)) < 0.5)
        out.append((s, y0, x0, flip))
    return out


def geometric_view(images: torch.Tensor, crop_hw: Sequence[int],
                   geometry: Sequence[tuple[float, int, int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    """The scaled, cropped, flipped windows of N×3×H×W normalised ``images`` → (N×3×h×w crops, N×h×w valid).

    Equal (to float rounding) to resizing each image bilinearly (``align_corners=False``) to
    ``round(H·s)×round(W·s)``, padding bottom/right to the crop with a black pixel, cropping at
    ``(y0, x0)`` and flipping; computed in one ``grid_sample`` that samples only the crop. ``valid`` is
    False on the padding.
    """
    n, c, h, w = images.shape
    ch, cw = int(crop_hw[0]), int(crop_hw[1])
    dev = images.device
    grids, masks = [], []
    i = torch.arange(ch, device=dev, dtype=torch.float64)
    j = torch.arange(cw, device=dev, dtype=torch.float64)
    for s, y0, x0, flip in geometry:
        hs, ws = max(1, int(round(h * s))), max(1, int(round(w * s)))
        y = y0 + i  # row in the scaled image
        x = x0 + ((cw - 1) - j if flip else j)  # column in the scaled image (the flip comes after the crop)
        # the normalised source position F.interpolate samples for scaled pixel (y, x): (y + 0.5) / hs · 2 − 1
        gy = ((y + 0.5) / hs * 2 - 1).view(ch, 1).expand(ch, cw)
        gx = ((x + 0.5) / ws * 2 - 1).view(1, cw).expand(ch, cw)
        grids.append(torch.stack([gx, gy], -1))
        masks.append((y < hs).view(ch, 1) & (x < ws).view(1, cw))
    grid = torch.stack(grids).to(images.dtype)
    valid = torch.stack(masks)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    # padding: a black pixel, normalised as the images are
    pad = torch.tensor([-m / s for m, s in zip(_IMAGENET_MEAN, _IMAGENET_STD)], device=dev, dtype=images.dtype)
    out = torch.where(valid[:, None], out, pad.view(1, c, 1, 1) if c == 3 else torch.zeros((), device=dev))
    return out, valid


# --- the strategy ------------------------------------------------------------------------------------

class MeanTeacher(Strategy):
    """See the module doc. ``loss_name``/``loss_options`` name the run's loss (``blvnb.losses.build_loss``)."""

    name = "mean-teacher"
    streams = ("labeled", "unlabeled")
    epoch_stream = "unlabeled"

    def __init__(self, *, loss_name: str = "ce", loss_options: Mapping[str, Any] | None = None,
                 labeled_counts=None, count_loader=None, m0: float = PAPER_M0, counts: str = "eq4",
                 ema_buffers: str = "teacher-forward", unsup_weight: float = 1.0,
                 scale_range: Sequence[float] = DEFAULT_SCALE_RANGE, num_classes: int = NUM_CLASSES, seed: int = 0,
                 device=None, total_iters: int = 1, recipe: Recipe | None = None):
        if counts not in COUNTS_MODES:
            raise ConfigError(f"strategy option counts must be one of {COUNTS_MODES}; got {counts!r}")
        if ema_buffers not in BUFFER_MODES:
            raise ConfigError(f"strategy option ema_buffers must be one of {BUFFER_MODES}; got {ema_buffers!r}")
        parts.check_momentum("m0", m0)
        if isinstance(unsup_weight, bool) or not isinstance(unsup_weight, (int, float)) or not unsup_weight >= 0:
            raise ConfigError(f"strategy option unsup_weight must be a number >= 0; got {unsup_weight!r}")
        try:
            lo, hi = (float(v) for v in scale_range)
        except (TypeError, ValueError):
            raise ConfigError(f"strategy option scale_range must be two numbers (low, high); "
                              f"got {scale_range!r}") from None
        if not 0 < lo <= hi:
            raise ConfigError(f"strategy option scale_range must satisfy 0 < low <= high; got {scale_range!r}")
        self.loss_name, self.loss_options = loss_name, dict(loss_options or {})
        self.needs_counts = parts.needs_counts(loss_name)
        if self.needs_counts and labeled_counts is None:
            raise ConfigError(f"loss {loss_name!r} needs class counts: pass the labeled images' counts")
        self.m0, self.counts_mode, self.ema_buffers = float(m0), counts, ema_buffers
        self.unsup_weight, self.scale_range = float(unsup_weight), (lo, hi)
        self.num_classes, self.seed = int(num_classes), int(seed)
        self.count_loader, self.device = count_loader, device
        self.total_iters, self.recipe = max(1, int(total_iters)), recipe or Recipe()
        self.labeled_counts = None if labeled_counts is None else np.asarray(labeled_counts, dtype=np.int64)
        self.counts = self.labeled_counts  # q before the first re-estimation: the labeled images' (our choice)
        self.counts_history: list[dict] = []
        if self.counts is not None:
            self.counts_history.append({"epoch": None, "source": "labeled", "counts": self.counts.tolist()})
        self.epoch = 0
        self.ema: parts.EMATeacher | None = None
        self._build_losses()

    @property
    def teacher(self) -> nn.Module | None:
        return None if self.ema is None else self.ema.module

    # --- losses ----------------------------------------------------------------------------------------

    def _build_losses(self) -> None:
        """L_sup: the run's loss with the current counts; L_u: the same BLV (its noise on the student's
        unlabeled logits) when the loss is BLV, else cross entropy, as the auxiliary heads."""
        counts = self.counts if self.needs_counts else None
        self.sup_loss = parts.make_loss(self.loss_name, self.loss_options, counts, self.total_iters)
        self.ce = build_loss("ce", avg_non_ignore=self.loss_options.get("avg_non_ignore", True))
        self.unsup_loss = self.sup_loss if self.loss_name == "blv" else self.ce
        if self.device is not None:
            for loss in (self.sup_loss, self.ce):
                loss.to(self.device).train()

    def set_counts(self, counts) -> None:
        """Use new class counts in the losses from the next step on."""
        self.counts = np.asarray(counts, dtype=np.int64)
        if self.needs_counts:
            self._build_losses()

    # --- the interface ---------------------------------------------------------------------------------

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.device = device
        self._build_losses()
        self.ema = parts.EMATeacher(model, self.m0)  # warm start: a copy of the student before the first step

    def modules(self):
        return (self.teacher,) if self.teacher is not None else ()

    @torch.no_grad()
    def pseudo_labels(self, x_u: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        r"""$\hat y = \arg\max_k$ of the teacher (``eval()``, no gradient) on ``x_u``; 255 where not ``valid``."""
        y = resize_logits(self.ema(x_u), x_u.shape[-2:]).argmax(1)
        if valid is not None:
            y = torch.where(valid, y, torch.full_like(y, IGNORE))
        return y

    def step(self, model: nn.Module, batches: dict[str, dict], it: int) -> tuple[torch.Tensor, dict]:
        bl, bu = batches["labeled"], batches["unlabeled"]
        x_l, y_l = bl["image"], bl["label"]
        crop = tuple(x_l.shape[-2:])
        # 2. geometric augmentation of the unlabeled images, drawn from (seed, it) for the global batch (this
        #    rank takes its share, so 1 and w processes crop alike): the same crop for both networks
        rank, world = loop.rank(), loop.world_size()
        n_u = bu["image"].shape[0]
        g = loop.step_generator(self.seed, it, "mt-geometry", "cpu")
        geometry = draw_geometry(n_u * world, bu["image"].shape[-2:], crop, self.scale_range, g)
        x_u, valid = geometric_view(bu["image"], crop, geometry[rank * n_u:(rank + 1) * n_u])
        if not x_l.is_contiguous() and x_l.is_contiguous(memory_format=torch.channels_last):
            x_u = x_u.contiguous(memory_format=torch.channels_last)  # the loop's channels_last
        # 3. pseudo labels from the teacher in eval mode
        y_u = self.pseudo_labels(x_u, valid)
        x_all = torch.cat([x_l, x_u])
        # 4. the teacher's BN statistics move with its own train-mode forward (U2PL†)
        if self.ema_buffers == "teacher-forward":
            with torch.no_grad():
                self.teacher.train()
                self.teacher(x_all)
                self.ema.set_mode()
        # 5. one student forward on both, L = L_sup + aux + λ_u L_u
        placed = parts.placement(model, self.sup_loss, parts.loss_on(self.recipe, self.loss_name), self.ce)
        outs = parts.forward_outputs(model, x_all, len(placed))
        n, dev = x_l.shape[0], outs[0].device
        parts.loss_at_step(self.sup_loss, seed=self.seed, it=it, term="loss-sup", device=dev)
        sup, l_sup, l_aux = parts.segmentation_loss([o[:n] for o in outs], y_l, placed)
        main_u = resize_logits(outs[0][n:], y_u.shape[-2:]).float()
        parts.loss_at_step(self.unsup_loss, seed=self.seed, it=it, term="loss-unsup", device=dev)
        l_u = self.unsup_loss(main_u, y_u)
        loss = sup + self.unsup_weight * l_u
        with torch.no_grad():  # the student's agreement with the pseudo labels on the valid pixels
            agree = ((main_u.argmax(1) == y_u) & valid).sum() / valid.sum().clamp_min(1)
        # detached tensors: the loop turns them into floats in bulk (no device sync per step)
        stats = {"loss": loss.detach(), "sup_loss": l_sup.detach(), "unsup_loss": l_u.detach(), "pl_agree": agree,
                 "ema_m": self.ema.momentum(it)}
        if len(placed) > 1:
            stats["aux_loss"] = l_aux.detach()
        return loss, {**stats, **parts.loss_sigma(self.sup_loss)}

    def after_step(self, model: nn.Module, it: int) -> None:
        # 6. EMA of the parameters after the optimiser step, m_t = min(1 − 1/(t+1), m0)
        self.ema.update(model, it)
        if self.ema_buffers == "student":
            self.ema.copy_buffers(model)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        self.epoch = int(epoch) + 1
        if not (self.needs_counts and self.counts_mode == "eq4"):
            return
        counts = self.eq4_counts()
        self.set_counts(counts)
        self.counts_history.append({"epoch": int(epoch), "source": "eq4", "counts": [int(c) for c in counts]})
        log.info("epoch %d: Eq. (4) counts from the teacher %s", epoch, counts.tolist())

    def eq4_counts(self) -> np.ndarray:
        """Eq. (4) over the whole unlabeled set: the teacher's arg-max pixels per class (int64 [C])."""
        from blvnb.pseudo.distribution import PriorEstimator

        if self.count_loader is None:
            raise ConfigError("counts='eq4' needs the unlabeled images to predict (count_loader)")
        counts = counts_from_teacher(self.teacher, self.count_loader, num_classes=self.num_classes,
                                     device=self.device or "cpu")
        # Eq. (4)'s q_k = counts / total, through the one estimator (validates: no pixel at all is an error)
        est = PriorEstimator(self.num_classes)
        est.counts += torch.as_tensor(np.asarray(counts), dtype=torch.int64)
        est.prior  # noqa: B018 - raises when nothing was counted
        return est.counts.numpy().copy()

    def state_dict(self) -> dict:
        return {
            "teacher": self.ema.state_dict() if self.ema is not None else {},
            "counts": None if self.counts is None else torch.as_tensor(self.counts, dtype=torch.int64),
            "counts_history": [dict(h) for h in self.counts_history],
            "epoch": self.epoch,
        }

    def load_state_dict(self, state: dict) -> None:
        if self.ema is not None and state.get("teacher"):
            self.ema.load_state_dict(state["teacher"])
        if state.get("counts") is not None:
            self.set_counts(torch.as_tensor(state["counts"]).numpy())
        self.counts_history = [dict(h) for h in state.get("counts_history", [])]
        self.epoch = int(state.get("epoch", 0))

    def summary(self) -> dict:
        q = []
        for h in self.counts_history:
            total = sum(h["counts"])
            q.append([c / total for c in h["counts"]] if total else None)
        return {
            "ema_m0": self.m0,
            "ema_horizon_iters": (1.0 / (1.0 - self.m0)),
            "ema_buffers": self.ema_buffers,
            "counts_mode": self.counts_mode if self.needs_counts else None,
            "counts": [dict(h) for h in self.counts_history],
            "q": q,
            "unsup_weight": self.unsup_weight,
            "scale_range": list(self.scale_range),
            "epochs": self.epoch,
        }


# --- wiring ------------------------------------------------------------------------------------------

def build(cfg, data) -> Built:
    """The mean-teacher run of ``cfg`` (a ``RunConfig``) on ``data`` (a ``RunData``): see the module doc."""
    o = parts.parse_options("mean-teacher", cfg.strategy_options, DEFAULTS)
    fraction = cfg.labeled_fraction
    if fraction is None:
        raise ConfigError("the mean-teacher strategy needs unlabeled images: set labeled_fraction "
                          "(e.g. labeled_fraction='1/8'), the share of Cityscapes-train that keeps its labels")
    labeled_idx, unlabeled_idx = data.split_indices(fraction)
    if len(unlabeled_idx) == 0:
        raise ConfigError(f"labeled_fraction {fraction!r} leaves no unlabeled image")
    labeled = data.dataset(cfg.dataset, "train", train=True, indices=labeled_idx)
    # the un-augmented view: the strategy crops it itself, for teacher and student alike (module doc); its
    # labels are never read
    unlabeled = data.dataset(cfg.dataset, "train", train=False, indices=unlabeled_idx, labeled=False)
    labeled_counts = data.class_counts(labeled) if parts.needs_counts(cfg.loss) else None
    scale_range = o["scale_range"] or cfg.scale_range or DEFAULT_SCALE_RANGE
    count_loader = torch.utils.data.DataLoader(unlabeled, batch_size=max(1, int(cfg.batch_size)), shuffle=False,
                                               num_workers=int(cfg.num_workers or 0))
    recipe = recipe_for(cfg.model)  # the architecture's optimiser recipe, as the supervised runs of the table use
    strategy = MeanTeacher(
        loss_name=cfg.loss, loss_options=dict(cfg.loss_options or {}), labeled_counts=labeled_counts,
        count_loader=count_loader, m0=resolve_m0(o, int(cfg.iters), fraction), counts=o["counts"],
        ema_buffers=o["ema_buffers"], unsup_weight=o["unsup_weight"], scale_range=tuple(scale_range),
        seed=int(cfg.seed), device=data.device, total_iters=int(cfg.iters), recipe=recipe)
    streams = {"labeled": data.stream(labeled, cfg.batch_size), "unlabeled": data.stream(unlabeled, cfg.batch_size)}
    return Built(strategy, streams, recipe.train_settings(cfg.iters, lr=cfg.lr, weight_decay=cfg.weight_decay), None)


__all__ = ["DEFAULTS", "MeanTeacher", "build", "draw_geometry", "geometric_view", "paper_iterations", "resolve_m0",
           "scaled_m0"]
