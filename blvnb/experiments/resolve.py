"""A run's whole resolved recipe, without training it: what ``blvnb runs plan --json`` states per run.

:func:`resolved` gives, beside the key fields of the plan,

* ``"train"``: ``iters``, ``optimizer`` (``"sgd"`` | ``"adamw"``), the base ``lr`` and ``weight_decay``, the
  ``schedule`` (with warmup, milestones, and a DARS round's continuation ``first_iter`` / ``schedule_iters``),
  ``param_groups`` — per group its effective ``lr`` (base × ``lr_mult``) and ``weight_decay``
  (base × ``decay_mult``), the multipliers and its number of parameters —, ``batch`` per stream (e.g.
  ``{"labeled": 16, "unlabeled": 16}``), ``crop``, ``resize`` (None, an (H, W), or per stream for UDA)
  and ``scale_range`` (None where the strategy draws no random scale: DAFormer's UDA);
* ``"eval"``: ``mode`` (``"whole"`` | ``"slide"``), ``size`` (the (H, W) the image is resized to before
  inference, None: its own size), ``window`` and ``stride`` (sliding windows; the default stride is
  ⌈2/3 · window⌉, :func:`blvnb.models.inference.predict_logits`), or None for a run that is not evaluated.

Everything comes from the functions the run itself calls: the optimiser settings and parameter groups of
the run's strategy — its :class:`~blvnb.engine.recipes.Recipe` (the supervised and mean-teacher runs: the
model's; a DARS round: :func:`~blvnb.engine.recipes.dars_recipe`; UDA: ``uda.recipe_of``), whose groups
:func:`~blvnb.engine.recipes.param_groups` makes for every strategy, and the strategy's optimiser settings —
applied as
:func:`blvnb.engine.loop.build_optimizer` applies them. The groups are those of the run's model, **built**
here on PyTorch's ``meta`` device (the same modules and parameter names, no weights and no memory: a paper
model takes well under a second), once per architecture and label space in a process; where a model
cannot be built on ``meta`` it is built on the CPU. Streams and sizes follow the strategies' builders.
"""

from __future__ import annotations

import math
from functools import lru_cache

from blvnb.experiments.profiles import get_profile
from blvnb.errors import ConfigError


def _hw(v):
    return [int(x) for x in v] if v is not None else None


@lru_cache(maxsize=32)
def _model_groups_input(model: str, num_classes: int):
    import torch

    from blvnb.models.registry import build_model

    try:
        with torch.device("meta"):
            return build_model(model, num_classes=num_classes)
    except Exception:  # noqa: BLE001 - a model whose construction computes on its tensors: build it for real
        return build_model(model, num_classes=num_classes)


def model_of(cfg):
    """The run's architecture (no weights): what its parameter groups are made of."""
    from blvnb.experiments.runs import num_classes_of

    return _model_groups_input(str(cfg.model), num_classes_of(cfg.dataset))


def optimiser(cfg, model=None) -> tuple[dict, list[dict]]:
    """(the loop's optimiser settings, the strategy's parameter groups) of ``cfg``, as its strategy's
    ``build`` and ``param_groups`` give them."""
    from blvnb.engine import recipes

    model = model_of(cfg) if model is None else model
    if cfg.strategy in ("supervised", "mean-teacher"):
        from blvnb.engine.strategies import supervised

        recipe = supervised.recipe_of(cfg) if cfg.strategy == "supervised" else recipes.recipe_for(cfg.model)
        settings = recipe.train_settings(int(cfg.iters), lr=cfg.lr, weight_decay=cfg.weight_decay)
    elif cfg.strategy == "dars-rounds":
        from blvnb.engine.strategies import dars_rounds

        o = dars_rounds.round_options(cfg.strategy_options)
        recipe = recipes.dars_recipe(cfg.model, o["head_lr_mult"])
        settings = {**dars_rounds.optimiser_settings(cfg, recipe),
                    **dars_rounds.lr_continuation(int(o["round"]), cfg.iters)}
    elif cfg.strategy == "uda":
        from blvnb.engine.strategies import uda

        recipe, settings = uda.recipe_of(cfg), uda.optimiser_settings(cfg)
    else:
        raise ConfigError(f"no resolved recipe for strategy {cfg.strategy!r} (known: supervised, mean-teacher, "
                          "dars-rounds, uda)")
    return settings, recipes.param_groups(model, recipe)


def group_summary(settings: dict, groups: list[dict]) -> list[dict]:
    """Each group's effective lr and weight decay, as :func:`blvnb.engine.loop.build_optimizer` sets them
    (the record's ``optimizer.param_groups`` of a run that trained)."""
    out = []
    for g in groups:
        n = sum(p.numel() for p in g["params"] if p.requires_grad)
        if not n:
            continue
        lr_mult, decay_mult = float(g.get("lr_mult", 1.0)), float(g.get("decay_mult", 1.0))
        out.append({"lr": float(settings["lr"]) * lr_mult, "weight_decay": float(settings["weight_decay"]) * decay_mult,
                    "lr_mult": lr_mult, "decay_mult": decay_mult, "params": int(n)})
    return out


def _data_view(cfg) -> dict:
    """batch per stream, crop, resize and scale range, as the strategy's ``build`` draws its streams."""
    b = int(cfg.batch_size)
    so = dict(cfg.strategy_options or {})
    view = {"crop": _hw(cfg.crop), "resize": _hw(cfg.base_size), "scale_range": [float(x) for x in cfg.scale_range]}
    if cfg.strategy == "supervised":
        view["batch"] = {"labeled": b}
        if so.get("augment") is not None:
            view["augment"] = so["augment"]
    elif cfg.strategy == "mean-teacher":
        view["batch"] = {"labeled": b, "unlabeled": b}
    elif cfg.strategy == "dars-rounds":
        from blvnb.engine.strategies import dars_rounds

        o = dars_rounds.round_options(so)
        k = int(o["round"])
        view["batch"] = {"labeled": b} if k == 0 else {"labeled": b // 2, "pseudo": b // 2}
        _, scale = dars_rounds.round_settings(o, tuple(cfg.scale_range))
        view["scale_range"] = [float(x) for x in scale]
    elif cfg.strategy == "uda":
        from blvnb.engine.strategies import uda

        o = {**uda.DEFAULTS, **so}
        hrda = bool(o["hrda"]) if o["hrda"] is not None else "hrda" in str(cfg.model).lower()
        paper = get_profile(cfg.profile).paper_recipes
        if o["crop"] is not None:
            crop = o["crop"]
        elif paper:
            crop = (1024, 1024) if hrda else (512, 512)
        else:
            crop = (int(cfg.crop[0]), int(cfg.crop[0]))
        src = o["source_size"] or (uda.PAPER_SIZES[hrda][0] if paper else None)
        tgt = o["target_size"] or (uda.PAPER_SIZES[hrda][1] if paper else None)
        streams = ("source",) if o["source_only"] else ("source", "target")
        view.update(batch={s: b for s in streams}, crop=_hw(crop), scale_range=None,
                    resize={"source": _hw(src), **({"target": _hw(tgt)} if "target" in streams else {})})
    else:
        raise ConfigError(f"no resolved recipe for strategy {cfg.strategy!r}")
    return view


def eval_of(cfg) -> dict | None:
    """The evaluation the run does: mode, the size the image is resized to (None: its own), window, stride."""
    if not cfg.evaluate:
        return None
    out = {"mode": cfg.eval_mode, "size": _hw(cfg.eval_size), "window": None, "stride": None}
    if cfg.eval_mode == "slide":
        window = cfg.eval_crop
        stride = cfg.eval_stride or (tuple(math.ceil(c * 2 / 3) for c in window) if window else None)
        out.update(window=_hw(window), stride=_hw(stride))
    return out


def train_of(cfg, model=None) -> dict:
    """The ``"train"`` part of :func:`resolved`."""
    settings, groups = optimiser(cfg, model)
    out = {"iters": int(cfg.iters), "optimizer": settings["optimizer"], "lr": float(settings["lr"]),
           "weight_decay": float(settings["weight_decay"]), "schedule": settings.get("schedule"),
           "warmup_iters": int(settings.get("warmup_iters", 0) or 0),
           "milestones": list(settings.get("milestones", ()) or ()), "grad_clip": settings.get("grad_clip"),
           "param_groups": group_summary(settings, groups)}
    for name in ("first_iter", "schedule_iters"):
        if name in settings:
            out[name] = int(settings[name])
    out.update(_data_view(cfg))
    return out


def resolved(cfg) -> dict:
    """``{"train": …, "eval": …}`` of ``cfg`` (module docstring)."""
    return {"train": train_of(cfg), "eval": eval_of(cfg)}


__all__ = ["eval_of", "group_summary", "model_of", "optimiser", "resolved", "train_of"]
