r"""The parts every strategy is built from, each in one place, so that a strategy file holds its algorithm only.

* :func:`parse_options` — a strategy's options with its defaults; an unknown key is a ConfigError naming it.
* :func:`make_loss` — the run's loss by name (:func:`blvnb.losses.build_loss`), with BLV Appendix C's σ(t)
  (``sigma_schedule=σ0``) stretched to the run; :func:`loss_at_step` sets what a step changes in it: σ(t)
  at the loop's iteration and a fresh generator from ``(seed, iteration, term, rank)`` for the losses that
  draw noise (BLV, GCL), so a resumed run draws the same numbers.
* :func:`placement` and :func:`segmentation_loss` — the loss on the main output and the auxiliary ones
  by the recipe's placement (:attr:`blvnb.engine.recipes.Recipe.loss_on`):
  $L = \sum_j w_j\,L_j(\mathrm{resize}(z_j))$, logits resized to the labels and taken in float32.
* :func:`rare_class_order` — loss ``rs``: the images drawn by the rare classes they hold (supervised, UDA).
* :class:`EMATeacher` — the mean teacher of BLV's semi-supervised runs and DAFormer's UDA:
  $\theta_T \leftarrow m_t\theta_T + (1 - m_t)\theta_S$ on the parameters, $m_t = \min(1 - 1/(t+1), m_0)$;
  its mode, its buffers, the same start on every DDP rank, its state for a resume.

Parameter groups come from the run's :class:`~blvnb.engine.recipes.Recipe` (``Strategy.recipe``) through
:func:`blvnb.engine.recipes.param_groups`, in :class:`~.base.Strategy` itself.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from blvnb.engine import loop
from blvnb.engine.strategies.base import unwrap
from blvnb.engine.teacher import ema_momentum, ema_update
from blvnb.errors import ConfigError
from blvnb.losses import LOSSES, BLVLoss, SigmaSchedule, build_loss, loss_keywords
from blvnb.losses.long_tail import GCLLoss
from blvnb.models.inference import resize_logits
from blvnb.models.registry import SegModel

# --- options -----------------------------------------------------------------------------------------

def parse_options(strategy: str, given: Mapping | None, defaults: Mapping[str, Any]) -> dict:
    """``given`` over ``defaults``; a key that is not one of ``defaults`` is a ConfigError naming it."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f"{strategy}: unknown strategy option(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **given}


# --- the loss ----------------------------------------------------------------------------------------

def needs_counts(name: str) -> bool:
    """Whether loss ``name`` takes class counts (an unknown name is a ConfigError listing the losses)."""
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; registered: {', '.join(LOSSES)}")
    return LOSSES[name][1]


def make_loss(name: str, options: Mapping[str, Any], class_counts, total_iters: int, *,
              defaults: Mapping[str, Any] | None = None) -> nn.Module:
    """``build_loss(name, class_counts=..., **options)``; ``sigma_schedule=σ0`` gives BLV Appendix C's σ(t)
    over ``total_iters``. ``defaults``: keywords used where the loss takes them and ``options`` does not
    give them (UDA: mmseg's mean over all pixels, ``avg_non_ignore=False``)."""
    options = dict(options)
    if "sigma_schedule" in options:
        if name != "blv":
            raise ConfigError(f"sigma_schedule is an option of the 'blv' loss, not of {name!r}")
        if "sigma" in options:
            raise ConfigError("give the BLV loss either sigma (fixed) or sigma_schedule (σ0 of σ(t)), not both")
        options["sigma"] = SigmaSchedule.for_run(max(1, int(total_iters)), float(options.pop("sigma_schedule")))
    if defaults and name in LOSSES:
        accepted = loss_keywords(name)
        options = {**{k: v for k, v in defaults.items() if k in accepted}, **options}
    return build_loss(name, class_counts=class_counts if needs_counts(name) else None, **options)


def loss_at_step(loss: nn.Module, *, seed: int, it: int, term: str, device) -> nn.Module:
    """``loss`` ready for term ``term`` of iteration ``it``: BLV's σ(t) at ``it``, and for the losses that
    draw noise (BLV, GCL) a generator of :func:`~blvnb.engine.loop.step_generator` salted with the term and
    this process's rank (each rank draws its own share of the batch's noise)."""
    if isinstance(loss, BLVLoss):
        loss.set_iteration(it)
    if isinstance(loss, (BLVLoss, GCLLoss)):
        loss.generator = loop.step_generator(seed, it, f"{term}/rank{loop.rank()}", device)
    return loss


def loss_sigma(loss: nn.Module) -> dict:
    """``{"sigma": σ}`` for a BLV loss (the history's σ(t)), else nothing."""
    return {"sigma": float(loss.sigma)} if isinstance(loss, BLVLoss) else {}


def rare_class_order(pixels, options: Mapping[str, Any], default_min_pixels: int):
    """An epoch order of image indices drawn by the rare-class sampler: loss ``rs`` (naive re-sampling; the
    supervised and the uda strategy). ``pixels``: [N, C] from :func:`~blvnb.data.sampling.image_class_pixels`;
    ``options`` (the run's ``loss_options``): ``temperature`` (0.01), ``min_pixels`` (``default_min_pixels``).
    Returns ``(order, info)``."""
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


# --- main and auxiliary outputs ----------------------------------------------------------------------

Term = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PLACES = ("main", "main+head_aux", "head_aux", "all")


def placement(model: nn.Module, loss: Term, on: str = "main", ce: Term | None = None) -> list[tuple[float, Term]]:
    """(weight, loss) for the main output, then for each auxiliary output of ``model`` (its
    ``aux_weights``: the head's own extra outputs first, then the auxiliary FCN heads).

    ``on`` (the recipe's ``loss_on``): ``"main"`` — ``loss`` on the main output, ``ce`` on the others at the
    model's weights; ``"main+head_aux"`` — also on the head's own outputs (K-Net's stages); ``"head_aux"`` —
    ``ce`` on the main output, ``loss`` at weight 1.0 on the head's own (OCRNet's soft regions; the
    ``*_blv.py`` configs); ``"all"`` — ``loss`` on every output at the model's weights (DARS, UDA)."""
    if on not in PLACES:
        raise ConfigError(f"loss placement {on!r}; expected one of {PLACES}")
    inner = unwrap(model)
    # a model's auxiliary outputs are named by its aux_weights (SegModel: the head's own first, then the aux
    # FCN heads); a module without them has none
    weights = tuple(getattr(inner, "aux_weights", ()))
    n_head_aux = len(getattr(inner.head, "aux_weights", ())) if isinstance(inner, SegModel) else 0
    ce = loss if ce is None else ce
    out = [(1.0, ce if on == "head_aux" else loss)]
    for j, w in enumerate(weights):
        own = j < n_head_aux
        if on == "all" or (on == "main+head_aux" and own):
            out.append((w, loss))
        elif on == "head_aux" and own:
            out.append((1.0, loss))
        else:
            out.append((w, ce))
    return out


def loss_on(recipe, loss_name: str) -> str:
    """Where the run's loss goes: a long-tail loss where the recipe puts it (the ``*_blv.py`` configs' place
    of BLV); cross entropy (also ``rs``) keeps the model's own weights on every output."""
    return "main" if loss_name in ("ce", "rs") else recipe.loss_on


def forward_outputs(model: nn.Module, x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """The main output, then the ``n - 1`` auxiliary ones (one forward)."""
    if n > 1:
        out = model(x, return_aux=True)
        return [out["out"], *out["aux"]]
    return [model(x)]


def segmentation_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor,
                      placed: Sequence[tuple[float, Term]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""$L = \sum_j w_j\,L_j(\mathrm{resize}(z_j), y)$ over the outputs and their :func:`placement`, each
    logit map resized to the labels and taken in float32. Returns ``(L, main term, L − main term)``."""
    terms = [w * fn(resize_logits(z, labels.shape[-2:]).float(), labels) for (w, fn), z in zip(placed, outputs)]
    total = sum(terms[1:], terms[0])
    return total, terms[0], total - terms[0]


# --- the EMA teacher ---------------------------------------------------------------------------------

def teacher_train_mode(module: nn.Module) -> nn.Module:
    """Train mode (BN on batch statistics) with every dropout and drop-path off (DAFormer's teacher)."""
    module.train()
    for m in module.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) or type(m).__name__ == "DropPath":
            m.training = False
    return module


def check_momentum(name: str, m0) -> float:
    """An EMA momentum: a number in [0, 1) (a ConfigError names ``name`` and the value otherwise)."""
    if isinstance(m0, bool) or not isinstance(m0, (int, float)) or not 0.0 <= float(m0) < 1.0:
        raise ConfigError(f"the EMA momentum {name} must be a number in [0, 1); got {m0!r}")
    return float(m0)


class EMATeacher:
    r"""A frozen copy of the student that follows it by an exponential moving average of its parameters.

    ``mode``: ``"eval"`` (the mean teacher's pseudo labels) or ``"train"`` (:func:`teacher_train_mode`,
    DAFormer's). Built from the student as it is (a copy of its weights and buffers: the warm start), the
    same on every DDP rank (rank 0's, broadcast). :meth:`update` averages the parameters only; buffers
    move by the teacher's own forwards, or by :meth:`copy_buffers`.
    """

    def __init__(self, student: nn.Module, m0: float, *, mode: str = "eval"):
        m0 = check_momentum("m0", m0)
        if mode not in ("eval", "train"):
            raise ConfigError(f"EMA teacher mode must be 'eval' or 'train', got {mode!r}")
        self.m0, self.mode = float(m0), mode
        self.module = copy.deepcopy(unwrap(student))
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.set_mode()
        self.broadcast()

    def set_mode(self) -> nn.Module:
        return self.module.eval() if self.mode == "eval" else teacher_train_mode(self.module)

    @torch.no_grad()
    def broadcast(self) -> None:
        """Rank 0's weights and buffers on every process (a no-op in one process)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            for t in [*self.module.parameters(), *self.module.buffers()]:
                dist.broadcast(t.data, 0)

    def momentum(self, t: int) -> float:
        """$m_t = \\min(1 - 1/(t+1), m_0)$."""
        return ema_momentum(t, self.m0)

    def update(self, student: nn.Module, t: int) -> None:
        r"""$\theta_T \leftarrow m_t\,\theta_T + (1 - m_t)\,\theta_S$ (parameters only)."""
        ema_update(self.module, student, self.momentum(t))

    @torch.no_grad()
    def copy_buffers(self, student: nn.Module) -> None:
        """The student's buffers (BN running statistics, counters) into the teacher."""
        own = dict(self.module.named_buffers())
        for name, b in unwrap(student).named_buffers():
            own[name].copy_(b)

    def __call__(self, *args, **kw):
        return self.module(*args, **kw)

    def state_dict(self) -> dict:
        return {k: v.detach().clone() for k, v in self.module.state_dict().items()}

    def load_state_dict(self, state: Mapping) -> None:
        self.module.load_state_dict(state)
        self.set_mode()


__all__ = ["EMATeacher", "PLACES", "check_momentum", "forward_outputs", "loss_at_step", "loss_on", "loss_sigma", "make_loss", "needs_counts",
           "parse_options", "placement", "rare_class_order", "segmentation_loss", "teacher_train_mode"]
