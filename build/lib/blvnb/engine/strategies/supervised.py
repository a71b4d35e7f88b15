"""Fully supervised training with any loss by name (BLV Table 1 and the long-tail baselines of Table 5).

``cfg.loss`` names a loss of :func:`blvnb.losses.build_loss` (``ce``, ``blv``, ``la``, ``lovasz``,
``focal``, ``gcl``, ``rw``) built with ``cfg.loss_options``; the class counts of the losses that need
them are the pixel counts of the training labels actually used (BLV Sec. 3.2; recipes.md 0: not the
released configs' hard-coded GTA5-like list). ``rs`` is rare-class re-sampling: cross entropy, with
the training stream's order drawn by :class:`blvnb.data.sampling.RareClassSampler` (``loss_options``:
``temperature`` 0.01, ``min_pixels`` — DAFormer's 3000 on full-size GTA5 labels, scaled here by the
crop's share of a 1914×1052 image when not given; the uda strategy draws its source images by the same
order, :func:`rare_class_order`).

Per architecture (:mod:`blvnb.engine.recipes`): the optimiser, schedule and parameter groups of the
released configs, and which outputs the loss goes on — the decode head (aux FCN heads keep cross
entropy at 0.4), K-Net's four stage outputs, OCRNet's soft-region head (weight 0.4 → 1.0, the OCR head
keeping cross entropy). With ``ce`` every output gets cross entropy at the model's ``aux_weights``.

Options (``cfg.strategy_options``, :data:`DEFAULTS`): ``augment`` — DARS Table 11 (PSPNet50 trained
fully supervised with one augmentation alone): ``"none"``, ``"photometric"`` (mmseg's
PhotoMetricDistortion defaults: brightness ±32, contrast and saturation ×0.5–1.5, hue ±18 of 180, each
p 0.5; recipes.md (a)), ``"rotation"`` (±10° with probability 0.5, the image padded with the mean and the
label with 255: DARS's released ``RandRotate``, recipes.md (c) — neither the paper nor its Table 11 gives
the range used there, so taking the released one is our choice) or ``"scale"`` (the run's random-scale
range, ``cfg.scale_range``). Every variant keeps the resize to ``base_size``, the random crop to the run's
crop and the horizontal flip p 0.5 (not one of the methods the table compares; our reading);
:func:`~blvnb.data.transforms.train_transform` has the details. Left out (None), the pipeline is the
default one (random scale → crop → flip), so no existing run changes; ``"scale"`` trains the same
pipeline under its own key.

BLV's noise comes from :func:`~blvnb.engine.loop.step_generator` (re-seeded every step from the run seed
and the global iteration, and the DDP rank), and its σ(t) follows the loop's iteration
(``loss_options={"sigma_schedule": σ0}``: Appendix C's rise-and-fall stretched to the run's length).
"""

from __future__ import annotations

import numbers

import torch
from torch import nn

from blvnb.engine import loop
from blvnb.engine.recipes import Recipe, param_groups, recipe_for
from blvnb.engine.strategies.base import Built, Strategy, unwrap
from blvnb.errors import ConfigError
from blvnb.losses import LOSSES, SigmaSchedule, build_loss
from blvnb.models.inference import resize_logits

#: the options of the strategy, with their defaults (module docstring)
DEFAULTS: dict = {"augment": None}

#: DAFormer's rare-class threshold is for GTA5 labels of 1914×1052 pixels
RCS_REFERENCE_AREA = 1914 * 1052
#: losses by name beyond :data:`blvnb.losses.LOSSES`: ``rs``, cross entropy on rare-class re-sampled images
EXTRA_LOSSES = ("rs",)


class Supervised(Strategy):
    """One labeled stream; ``loss`` on the recipe's outputs, cross entropy on the others."""

    name = "supervised"
    streams = ("labeled",)
    epoch_stream = "labeled"

    def __init__(self, loss: nn.Module, *, recipe: Recipe | None = None, seed: int = 0, loss_name: str = "ce",
                 info: dict | None = None):
        self.loss, self.ce = loss, build_loss("ce")
        self.recipe = recipe or Recipe()
        self.seed, self.loss_name, self.info = int(seed), loss_name, dict(info or {})

    def param_groups(self, model: nn.Module) -> list[dict]:
        return param_groups(unwrap(model), self.recipe)

    def setup(self, model: nn.Module, device: torch.device) -> None:
        self.loss.to(device)
        self.loss.train()

    def _prepare_loss(self, it: int, device: torch.device) -> None:
        if hasattr(self.loss, "set_iteration"):  # BLV's σ(t)
            self.loss.set_iteration(it)
        if hasattr(self.loss, "generator"):  # BLV, GCL: a fresh generator per step (and per rank)
            self.loss.generator = loop.step_generator(self.seed, it, f"loss/rank{loop.rank()}", device)

    def placement(self, model: nn.Module) -> list[tuple[float, nn.Module]]:
        """(weight, loss) for the main output, then for each aux output, by the recipe's placement."""
        inner = unwrap(model)
        head = getattr(inner, "head", None)
        n_head_aux = len(getattr(head, "aux_weights", ())) if head is not None else 0
        # a long-tail loss goes where the *_blv.py configs put BLV; cross entropy (also "rs") keeps the
        # model's own weights everywhere
        place = self.recipe.loss_on if self.loss_name not in ("ce", "rs") else "main"
        out = [(1.0, self.loss if place in ("main", "main+head_aux") else self.ce)]
        for j, w in enumerate(getattr(inner, "aux_weights", ())):
            own = j < n_head_aux  # the head's own extra outputs come first (SegModel.aux_weights)
            if place == "main+head_aux" and own:  # K-Net: every stage's masks
                out.append((w, self.loss))
            elif place == "head_aux" and own:  # OCRNet's BLV config: soft regions at weight 1.0
                out.append((1.0, self.loss))
            else:  # auxiliary FCN heads keep cross entropy
                out.append((w, self.ce))
        return out

    def step(self, model: nn.Module, batches: dict, it: int):
        batch = batches["labeled"]
        x, y = batch["image"], batch["label"]
        self._prepare_loss(it, x.device)
        placed = self.placement(model)
        if len(placed) > 1:
            out = model(x, return_aux=True)
            outputs = [out["out"]] + list(out["aux"])
        else:
            outputs = [model(x)]
        # L = Σ_j w_j · L_j(resize(z_j)), logits resized to the label and taken in float32
        terms = [w * fn(resize_logits(o, y.shape[-2:]).float(), y) for (w, fn), o in zip(placed, outputs)]
        total = sum(terms[1:], terms[0])
        stats = {"loss": total.detach(), "main_loss": terms[0].detach()}
        if len(terms) > 1:
            stats["aux_loss"] = (total - terms[0]).detach()
        if hasattr(self.loss, "sigma"):
            stats["sigma"] = float(self.loss.sigma)
        return total, stats

    def summary(self) -> dict:
        return dict(self.info)


def make_loss(name: str, options: dict, class_counts, total_iters: int) -> nn.Module:
    """``build_loss(name, class_counts=..., **options)``; ``sigma_schedule=σ0`` gives BLV Appendix C's σ(t)."""
    options = dict(options)
    if "sigma_schedule" in options:
        if name != "blv":
            raise ConfigError(f"sigma_schedule is an option of the 'blv' loss, not of {name!r}")
        if "sigma" in options:
            raise ConfigError("give the BLV loss either sigma (fixed) or sigma_schedule (σ0 of σ(t)), not both")
        options["sigma"] = SigmaSchedule.for_run(total_iters, float(options.pop("sigma_schedule")))
    return build_loss(name, class_counts=class_counts, **options)


def rare_class_order(pixels, options: dict, default_min_pixels: int):
    """An epoch order of image indices drawn by the rare-class sampler: loss ``rs`` (naive re-sampling, here
    and in the uda strategy's source stream). ``pixels``: [N, C] from
    :func:`~blvnb.data.sampling.image_class_pixels`; ``options`` (the run's ``loss_options``): ``temperature``
    (0.01), ``min_pixels`` (``default_min_pixels``). Returns ``(order, info)``."""
    from blvnb.data.sampling import RareClassSampler

    unknown = set(options) - {"temperature", "min_pixels"}
    if unknown:
        raise ConfigError(f"loss 'rs' takes the options temperature and min_pixels, not {sorted(unknown)}")
    min_pixels = options.get("min_pixels", default_min_pixels)
    if isinstance(min_pixels, bool) or not isinstance(min_pixels, numbers.Integral) or min_pixels < 0:
        raise ConfigError(f"loss 'rs': min_pixels must be a whole number of pixels >= 0, got {min_pixels!r}")
    temperature = options.get("temperature", 0.01)
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real):
        raise ConfigError(f"loss 'rs': temperature must be a number > 0, got {temperature!r}")
    sampler = RareClassSampler(pixels, temperature=float(temperature), min_pixels=int(min_pixels))

    def order(epoch: int, generator: torch.Generator):
        sampler.generator = generator
        return sampler.sample()[0].tolist()

    return order, {"rcs_min_pixels": int(min_pixels), "rcs_class_probs": sampler.class_probs.tolist()}


def strategy_options(given) -> dict:
    """The strategy's options with their defaults, checked (a ConfigError names a bad one)."""
    from blvnb.data.transforms import AUGMENTATIONS

    given = dict(given or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"supervised: unknown option(s) {unknown}; known: {sorted(DEFAULTS)}")
    o = {**DEFAULTS, **given}
    if o["augment"] is not None and o["augment"] not in AUGMENTATIONS:
        raise ConfigError(f"supervised: augment must be one of {', '.join(AUGMENTATIONS)} (or left out), "
                          f"got {o['augment']!r}")
    return o


def build(cfg, data) -> Built:
    """The supervised run of ``cfg``: its labeled training set (a nested split when
    ``cfg.labeled_fraction`` is set), the loss, the stream, and the model's recipe."""
    o = strategy_options(getattr(cfg, "strategy_options", None))
    recipe = recipe_for(cfg.model)
    split = "train" if cfg.dataset in ("cityscapes", "voc", "scannet") else "all"  # GTA5, SYNTHIA: one split
    indices = data.split_indices(cfg.labeled_fraction)[0] if cfg.labeled_fraction else None
    view = {"augment": o["augment"]} if o["augment"] is not None else {}
    train_set = data.dataset(cfg.dataset, split, train=True, indices=indices, **view)
    options = dict(cfg.loss_options or {})
    info: dict = {"loss": cfg.loss, "loss_options": {k: v for k, v in options.items()}, "recipe": recipe.source,
                  "n_train_images": len(train_set)}
    if o["augment"] is not None:
        info["augment"] = o["augment"]
    order = None
    if cfg.loss == "rs":
        from blvnb.data.sampling import image_class_pixels

        # DAFormer's 3000 pixels on full-size GTA5 labels, scaled by the crop's share of such an image
        area = int(cfg.crop[0]) * int(cfg.crop[1])
        order, extra = rare_class_order(image_class_pixels(train_set), options,
                                        max(1, round(3000 * area / RCS_REFERENCE_AREA)))
        info.update(extra)
        loss = build_loss("ce")
    elif cfg.loss in LOSSES:
        counts = data.class_counts(train_set) if LOSSES[cfg.loss][1] else None
        if counts is not None:
            info["class_counts"] = [int(c) for c in counts]
        loss = make_loss(cfg.loss, options, counts, cfg.iters)
    else:
        raise ConfigError(f"unknown loss {cfg.loss!r}; known: {', '.join(list(LOSSES) + list(EXTRA_LOSSES))}")
    strategy = Supervised(loss, recipe=recipe, seed=cfg.seed, loss_name=cfg.loss, info=info)
    stream = data.stream(train_set, cfg.batch_size, order=order)
    overrides = recipe.train_settings(cfg.iters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Built(strategy, {"labeled": stream}, overrides, None)


__all__ = ["DEFAULTS", "EXTRA_LOSSES", "Supervised", "build", "make_loss", "rare_class_order", "strategy_options"]
