"""Fully supervised training with any loss by name (BLV Table 1 and the long-tail baselines of Table 5).

``cfg.loss`` names a loss of :func:`blvnb.losses.build_loss` (``ce``, ``blv``, ``la``, ``lovasz``,
``focal``, ``gcl``, ``rw``) built with ``cfg.loss_options``; the class counts of the losses that need
them are the pixel counts of the training labels actually used (BLV Sec. 3.2; recipes.md 0: not the
released configs' hard-coded GTA5-like list). ``rs`` is rare-class re-sampling: cross entropy, with
the training stream's order drawn by :class:`blvnb.data.sampling.RareClassSampler` (``loss_options``:
``temperature`` 0.01, ``min_pixels`` — DAFormer's 3000 on full-size GTA5 labels, scaled here by the
crop's share of a 1914×1052 image when not given; the uda strategy draws its source images by the same
order, :func:`~.parts.rare_class_order`).

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

The loss, BLV's σ(t) (``loss_options={"sigma_schedule": σ0}``: Appendix C's rise-and-fall stretched to the
run's length) and its per-step noise, the main + auxiliary sum and the parameter groups are the shared
parts of :mod:`.parts` and the recipe's; this file is what supervised training adds: which images, which
order, which augmentation.
"""

from __future__ import annotations

from torch import nn

from blvnb.engine.recipes import Recipe, recipe_for, uda_recipe
from blvnb.engine.strategies import parts
from blvnb.engine.strategies.base import Built, Strategy
from blvnb.errors import ConfigError
from blvnb.losses import LOSSES, build_loss

#: the options of the strategy, with their defaults (module docstring)
DEFAULTS: dict = {"augment": None, "optimiser": None}

#: ``strategy_options["optimiser"]``: another paper's optimiser for this model (None: the model's own, recipes.md
#: (a)); "daformer": DAFormer's AdamW, head ×10, warmup + poly (recipes.md (d)), which its source-only
#: baselines train with, as its UDA runs do
OTHER_RECIPES = {"daformer": uda_recipe}


def recipe_of(cfg) -> Recipe:
    """The optimiser recipe a supervised run trains with (the run and ``runs plan --json`` both read it)."""
    name = parts.parse_options("supervised", cfg.strategy_options, DEFAULTS)["optimiser"]
    if name is None:
        return recipe_for(cfg.model)
    if name not in OTHER_RECIPES:
        raise ConfigError(f"supervised: optimiser must be one of {', '.join(OTHER_RECIPES)} (or left out: the "
                          f"model's own), got {name!r}")
    return OTHER_RECIPES[name](cfg.model)

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

    def setup(self, model: nn.Module, device) -> None:
        self.loss.to(device)
        self.loss.train()

    def placement(self, model: nn.Module):
        """(weight, loss) per output of ``model`` (:func:`~.parts.loss_on`: the recipe's place for a long-tail
        loss, the model's own weights for cross entropy)."""
        return parts.placement(model, self.loss, parts.loss_on(self.recipe, self.loss_name), self.ce)

    def step(self, model: nn.Module, batches: dict, it: int):
        x, y = batches["labeled"]["image"], batches["labeled"]["label"]
        parts.loss_at_step(self.loss, seed=self.seed, it=it, term="loss", device=x.device)
        placed = self.placement(model)
        total, main, aux = parts.segmentation_loss(parts.forward_outputs(model, x, len(placed)), y, placed)
        stats = {"loss": total.detach(), "main_loss": main.detach()}
        if len(placed) > 1:
            stats["aux_loss"] = aux.detach()
        return total, {**stats, **parts.loss_sigma(self.loss)}

    def summary(self) -> dict:
        return dict(self.info)


def build(cfg, data) -> Built:
    """The supervised run of ``cfg``: its labeled training set (a nested split when
    ``cfg.labeled_fraction`` is set), the loss, the stream, and the model's recipe."""
    from blvnb.data.transforms import AUGMENTATIONS

    o = parts.parse_options("supervised", cfg.strategy_options, DEFAULTS)
    if o["augment"] is not None and o["augment"] not in AUGMENTATIONS:
        raise ConfigError(f"supervised: augment must be one of {', '.join(AUGMENTATIONS)} (or left out), "
                          f"got {o['augment']!r}")
    recipe = recipe_of(cfg)
    split = "train" if cfg.dataset in ("cityscapes", "voc", "scannet") else "all"  # GTA5, SYNTHIA: one split
    indices = data.split_indices(cfg.labeled_fraction)[0] if cfg.labeled_fraction else None
    view = {"augment": o["augment"]} if o["augment"] is not None else {}
    train_set = data.dataset(cfg.dataset, split, train=True, indices=indices, **view)
    options = dict(cfg.loss_options or {})
    info: dict = {"loss": cfg.loss, "loss_options": dict(options), "recipe": recipe.source,
                  "n_train_images": len(train_set)}
    if o["augment"] is not None:
        info["augment"] = o["augment"]
    order = None
    if cfg.loss == "rs":
        from blvnb.data.sampling import image_class_pixels

        # DAFormer's 3000 pixels on full-size GTA5 labels, scaled by the crop's share of such an image
        area = int(cfg.crop[0]) * int(cfg.crop[1])
        order, extra = parts.rare_class_order(image_class_pixels(train_set), options,
                                              max(1, round(3000 * area / RCS_REFERENCE_AREA)))
        info.update(extra)
        loss = build_loss("ce")
    elif cfg.loss in LOSSES:
        counts = data.class_counts(train_set) if parts.needs_counts(cfg.loss) else None
        if counts is not None:
            info["class_counts"] = [int(c) for c in counts]
        loss = parts.make_loss(cfg.loss, options, counts, cfg.iters)
    else:
        raise ConfigError(f"unknown loss {cfg.loss!r}; known: {', '.join(list(LOSSES) + list(EXTRA_LOSSES))}")
    strategy = Supervised(loss, recipe=recipe, seed=cfg.seed, loss_name=cfg.loss, info=info)
    stream = data.stream(train_set, cfg.batch_size, order=order)
    overrides = recipe.train_settings(cfg.iters, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return Built(strategy, {"labeled": stream}, overrides, None)


__all__ = ["DEFAULTS", "EXTRA_LOSSES", "Supervised", "build"]
