"""Per-architecture training recipes of BLV Table 1 (recipes.md (a)), as data.

A :class:`Recipe` says what the released mmseg configs set for a model: the optimiser and its
hyper-parameters, the schedule (warmup and milestones as *fractions* of the run, so that a toy run of
T iterations keeps the configs' shape), gradient clipping, which parameters get ×10 learning rate or no
weight decay, and on which outputs a long-tail loss goes (the ``*_blv.py`` twins of the configs):

============  ================================================  ==========================================
model         optimiser / schedule (configs)                    long-tail loss on
============  ================================================  ==========================================
CNNs          SGD m0.9, lr 0.01, wd 5e-4, poly 0.9,             decode head; aux FCN heads keep CE (0.4)
              min_lr 1e-4 (= 1 % of lr)
OCR HRNet     same                                              the soft-region head, weight 0.4 → 1.0;
                                                                the OCR head keeps CE
SegFormer     AdamW (0.9, 0.999) 6e-5, wd 0.01, head lr ×10,    decode head
              no decay on norms; warmup 1500/160k (ratio 1e-6),
              poly 1.0 → 0
ViT-B UperNet AdamW 6e-5, wd 0.01, no decay on pos_embed,       decode head; aux CE 0.4
              cls_token, norms; warmup 1500/80k (1e-6), poly 1
K-Net Swin-T  AdamW 6e-5, wd 5e-4, no decay on position tables  all four stage outputs (weight 1 each);
              and norms; grad clip 1; warmup 1000/80k (1e-3);   aux FCN CE 0.4
              step ×0.1 at 60k and 72k (75 %, 90 %)
============  ================================================  ==========================================

mmcv matches parameter *names* ("norm", "head"); here a norm is any normalisation layer by type, and
the head is every parameter outside the backbone (decode and auxiliary heads), which is what those
names select in mmseg's models. Only SegFormer's (and DAFormer's) configs raise the head's lr; ViT's and
K-Net's do not (recipes.md (a); the issue's one-line summary says ×10 for all three).

The other papers' training runs have their recipe here too, built from the model's: :func:`dars_recipe`
(DARS's rounds: the model's optimiser, poly 0.9 to 0 without warmup, the heads at ×10, the run's loss on
every output) and :func:`uda_recipe` (DAFormer's AdamW for any UDA model). Every strategy's parameter
groups come from its run's recipe through :func:`param_groups`, and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from torch import nn

from blvnb.errors import ConfigError

#: substrings of parameter names that mark position embeddings and tokens (no weight decay)
POSITION_KEYS = ("pos_embed", "pos_block", "absolute_pos_embed", "relative_position_bias_table", "cls_token")


@dataclass(frozen=True)
class Recipe:
    optimizer: str = "sgd"
    lr: float = 0.01
    weight_decay: float = 5e-4
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: str = "poly"
    power: float = 0.9
    min_lr_ratio: float = 0.01  # min_lr / lr (CNN configs: 1e-4 / 0.01)
    warmup_fraction: float = 0.0  # warmup iterations / T
    warmup_ratio: float = 0.1
    milestone_fractions: tuple[float, ...] = ()
    gamma: float = 0.1
    grad_clip: float | None = None
    head_lr_mult: float = 1.0
    no_decay_norms: bool = False
    no_decay_positions: bool = False
    position_keys: tuple[str, ...] = POSITION_KEYS  # with no_decay_positions: the names that mark them
    head_keeps_decay: bool = False  # mmcv's key "head" matches before "norm": a head's norm layers decay
    loss_on: str = "main"  # main | main+head_aux | head_aux | all (the run's loss on every output)
    source: str = ""

    def train_settings(self, iters: int, lr: float | None = None, weight_decay: float | None = None) -> dict:
        """:class:`~blvnb.engine.loop.TrainConfig` fields for a run of ``iters`` iterations (T)."""
        lr = self.lr if lr is None else lr
        return dict(
            optimizer=self.optimizer, lr=lr, weight_decay=self.weight_decay if weight_decay is None else weight_decay,
            momentum=self.momentum, betas=self.betas, schedule=self.schedule, power=self.power,
            min_lr=lr * self.min_lr_ratio, warmup_iters=int(round(self.warmup_fraction * iters)),
            warmup_ratio=self.warmup_ratio, milestones=tuple(int(round(f * iters)) for f in self.milestone_fractions),
            gamma=self.gamma, grad_clip=self.grad_clip)


SGD_CNN = Recipe(source="mmseg _base_/schedules/schedule_40k.py (PSPNet, UperNet, OCRNet configs)")
OCR = Recipe(loss_on="head_aux", source="ocrnet_hr18_512x1024_40k_cityscapes(_blv).py")
SEGFORMER = Recipe(optimizer="adamw", lr=6e-5, weight_decay=0.01, schedule="poly", power=1.0, min_lr_ratio=0.0,
                   warmup_fraction=1500 / 160_000, warmup_ratio=1e-6, head_lr_mult=10.0, no_decay_norms=True,
                   no_decay_positions=True, source="segformer_mit-b0_8x1_1024x1024_160k_cityscapes.py")
VIT = Recipe(optimizer="adamw", lr=6e-5, weight_decay=0.01, schedule="poly", power=1.0, min_lr_ratio=0.0,
             warmup_fraction=1500 / 80_000, warmup_ratio=1e-6, no_decay_norms=True, no_decay_positions=True,
             source="upernet_vit-b16_mln_512x1024_80k_cityscapes.py")
KNET = Recipe(optimizer="adamw", lr=6e-5, weight_decay=5e-4, schedule="step", min_lr_ratio=0.0,
              warmup_fraction=1000 / 80_000, warmup_ratio=1e-3, milestone_fractions=(60_000 / 80_000, 72_000 / 80_000),
              gamma=0.1, grad_clip=1.0, no_decay_norms=True, no_decay_positions=True, loss_on="main+head_aux",
              source="knet_s3_upernet_swin-t_8x2_512x1024_adamw_80k_cityscapes.py")
#: DAFormer (recipes.md (d)): SegFormer's optimiser, warmup 1500 of 40k; its ``custom_keys`` (head lr ×10,
#: ``pos_block`` and ``norm`` without decay) matched as mmcv does, the longest key first, then by name:
#: ``pos_block``, ``head``, ``norm`` — so a head's norm layers keep their decay; the run's loss (source and
#: mixed) on every output at the model's weights
DAFORMER = Recipe(**{**SEGFORMER.__dict__, "warmup_fraction": 1500 / 40_000, "position_keys": ("pos_block", "pos_embed"),
                     "head_keeps_decay": True, "loss_on": "all",
                     "source": "DAFormer gta2cs_uda_warm_fdthings_rcs_croppl_a999_daformer_mitb5_s0.py"})

#: registry name (without @variant) → recipe; unknown names get the CNN recipe
RECIPES: dict[str, Recipe] = {
    "r18-fpn": SGD_CNN, "r10t-fpn": SGD_CNN, "r50-psp": SGD_CNN, "r50-uper": SGD_CNN, "r101-uper": SGD_CNN,
    "r101-deeplabv3p": SGD_CNN, "r101-deeplabv2": SGD_CNN, "hr18-ocr": OCR, "mitb0-segformer": SEGFORMER,
    "vitb16-uper": VIT, "swint-knet": KNET, "mitb5-daformer": DAFORMER, "mitb5-hrda": DAFORMER,
}


def epoch_iterations(epochs: int, images: int, batch: int, *, drop_last: bool = False) -> int:
    """Iterations of ``epochs`` passes over ``images`` images at ``batch`` images per iteration: the one rule
    by which a paper's epochs become a run's ``iters``.

    ``drop_last=True``: a pass is ``images // batch`` whole batches, as a PyTorch loader with
    ``drop_last=True`` (DARS's released ``train.py``: 372 labeled images at 16 are 23 iterations an epoch,
    200 epochs 4,600); else ``images / batch``, rounded once over all epochs (U2PL's count, which BLV's
    semi-supervised runs follow: 200 · (2975 − 372) / 16 ≈ 32,538). A value that is not a positive whole
    number, or a batch larger than a ``drop_last`` pass, is a ConfigError naming it."""
    for name, v in (("epochs", epochs), ("images", images), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"epoch_iterations: {name} must be a whole number >= 1, got {v!r}")
    if drop_last and images < batch:
        raise ConfigError(f"epoch_iterations: {images} images make no whole batch of {batch} (drop_last)")
    per_epoch = images // batch if drop_last else images / batch
    return int(round(epochs * per_epoch))


def recipe_for(model_name: str) -> Recipe:
    """The recipe of a registry name (``"swint-knet@small"`` → K-Net's)."""
    if not isinstance(model_name, str):
        raise ConfigError(f"model name must be a string, got {model_name!r}")
    return RECIPES.get(model_name.split("@")[0], SGD_CNN)


def dars_recipe(model_name: str, head_lr_mult: float = 10.0) -> Recipe:
    """DARS's rounds (recipes.md (c)): the model's optimiser (PSPNet, DeepLab v2: SGD momentum 0.9) with
    poly 0.9 per iteration down to 0 and no warmup; the decode and auxiliary heads at lr ×``head_lr_mult``
    (the released optimiser's ``layer0–4`` and ``ppm/cls/aux`` groups); the run's loss on every output at the
    model's weights (the released criterion on the main and the auxiliary output alike)."""
    return replace(recipe_for(model_name), schedule="poly", power=0.9, min_lr_ratio=0.0, warmup_fraction=0.0,
                   milestone_fractions=(), head_lr_mult=float(head_lr_mult), loss_on="all",
                   source="DARS released train.py (SGD, poly 0.9, heads ×10)")


def uda_recipe(model_name: str, warmup_fraction: float = DAFORMER.warmup_fraction) -> Recipe:
    """DAFormer's optimiser for the UDA model ``model_name`` (HRDA's is DAFormer's). mmcv's key ``norm``
    matches the norm layers of a transformer backbone (named ``norm*``) but not a ResNet's (``bn*``): the
    model's own recipe says which it has, so DAFormer's DeepLab v2 (CNN) decays its batch norms."""
    own = recipe_for(model_name)
    return replace(DAFORMER, no_decay_norms=own.no_decay_norms, warmup_fraction=float(warmup_fraction))


def _in_backbone(name: str) -> bool:
    return "backbone" in name.split(".")


def param_groups(model: nn.Module, recipe: Recipe) -> list[dict]:
    """The model's trainable parameters in groups ``{"params", "names", "lr_mult", "decay_mult"}``, in the
    order of their first parameter: ``lr_mult`` = ``recipe.head_lr_mult`` outside the backbone;
    ``decay_mult`` = 0 for normalisation layers (outside the head too when ``head_keeps_decay``) and
    position embeddings where the recipe says so. A head lr multiplier needs a model with a backbone."""
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    if recipe.head_lr_mult != 1.0 and not any(_in_backbone(n) for n in names):
        raise ConfigError(f"recipe {recipe.source!r} sets the head's lr ×{recipe.head_lr_mult:g}, but "
                          f"{type(model).__name__} has no backbone (a SegModel, or HRDA around one)")
    norm_params = set()
    if recipe.no_decay_norms:
        for m in model.modules():
            if isinstance(m, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
                norm_params.update(id(p) for p in m.parameters(recurse=False))
    groups: dict[tuple[float, float], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not _in_backbone(name)
        lr_mult = recipe.head_lr_mult if head else 1.0
        norm = id(p) in norm_params and not (head and recipe.head_keeps_decay)
        position = recipe.no_decay_positions and any(k in name for k in recipe.position_keys)
        decay_mult = 0.0 if norm or position else 1.0
        g = groups.setdefault((lr_mult, decay_mult), {"params": [], "names": [], "lr_mult": lr_mult,
                                                      "decay_mult": decay_mult})
        g["params"].append(p)
        g["names"].append(name)
    return list(groups.values())


__all__ = ["RECIPES", "Recipe", "dars_recipe", "epoch_iterations", "param_groups", "recipe_for", "uda_recipe"]
