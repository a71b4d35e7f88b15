"""The strategies' shared parts (blvnb.engine.strategies.parts): each piece, and its wrong inputs."""

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from blvnb.engine import loop, recipes
from blvnb.engine.strategies import parts
from blvnb.errors import ConfigError
from blvnb.losses import build_loss
from blvnb.losses.blv import BLVLoss, SigmaSchedule, blv_logits
from blvnb.models.registry import build_model

ROOT = Path(__file__).resolve().parents[1]
COUNTS = [1000, 100, 10, 1]


def test_options_fill_defaults_and_name_an_unknown_key():
    assert parts.parse_options("s", {"b": 3}, {"a": 1, "b": 2}) == {"a": 1, "b": 3}
    assert parts.parse_options("s", None, {"a": 1}) == {"a": 1}
    with pytest.raises(ConfigError, match=r"s: unknown strategy option\(s\) \['zz'\]; known: \['a'\]"):
        parts.parse_options("s", {"zz": 0}, {"a": 1})


def test_make_loss_sigma_schedule_and_defaults():
    loss = parts.make_loss("blv", {"sigma_schedule": 6.0}, COUNTS, 100)
    assert isinstance(loss, BLVLoss) and loss.schedule == SigmaSchedule.for_run(100, 6.0)
    # a default keyword goes where the loss takes it and the options do not give it
    assert parts.make_loss("blv", {}, COUNTS, 10, defaults={"avg_non_ignore": False}).avg_non_ignore is False
    assert parts.make_loss("blv", {"avg_non_ignore": True}, COUNTS, 10, defaults={"avg_non_ignore": False}).avg_non_ignore
    parts.make_loss("lovasz", {}, None, 10, defaults={"avg_non_ignore": False})  # lovasz does not take it
    assert parts.make_loss("ce", {}, COUNTS, 10)  # counts given to a loss without them are not used


@pytest.mark.parametrize("name, options, counts, match", [
    ("ce", {"sigma_schedule": 6}, None, "option of the 'blv' loss"),
    ("blv", {"sigma_schedule": 6, "sigma": 4}, COUNTS, "either sigma"),
    ("blv", {"sigmaa": 4}, COUNTS, "does not take"),
    ("blv", {}, None, "needs class_counts"),
    ("dice", {}, None, "unknown loss 'dice'"),
])
def test_make_loss_wrong_inputs(name, options, counts, match):
    with pytest.raises(ConfigError, match=match):
        parts.make_loss(name, options, counts, 10)


def test_loss_at_step_sets_sigma_and_a_generator_per_iteration_term_and_rank():
    loss = parts.make_loss("blv", {"sigma_schedule": 6.0}, COUNTS, 100)
    z, y = torch.zeros(2, 4, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long)
    parts.loss_at_step(loss, seed=1, it=75, term="t", device="cpu")
    assert loss.sigma == 6.0 and parts.loss_sigma(loss) == {"sigma": 6.0}
    a = loss.perturb(z, y)
    parts.loss_at_step(loss, seed=1, it=75, term="t", device="cpu")
    assert torch.equal(a, loss.perturb(z, y))  # stateless: the same step draws the same noise
    parts.loss_at_step(loss, seed=1, it=75, term="other", device="cpu")
    assert not torch.equal(a, loss.perturb(z, y))
    ref = blv_logits(z, COUNTS, sigma=6.0, generator=loop.step_generator(1, 75, "t/rank0", "cpu"))
    assert torch.equal(a, ref)  # salted with the rank
    gcl = parts.make_loss("gcl", {}, COUNTS, 10)
    assert parts.loss_at_step(gcl, seed=0, it=1, term="t", device="cpu").generator is not None
    assert parts.loss_sigma(build_loss("ce")) == {}


def test_perturb_is_eq3_at_the_label_size_and_checks_its_inputs():
    loss = BLVLoss(COUNTS, sigma=4.0, clamp="released")
    z, y = torch.randn(1, 4, 2, 3), torch.randint(0, 4, (1, 4, 6))
    loss.generator = torch.Generator().manual_seed(3)
    got = loss.perturb(z, y)
    big = nn.functional.interpolate(z, size=(4, 6), mode="bilinear", align_corners=False)
    want = blv_logits(big, COUNTS, sigma=4.0, clamp="released", generator=torch.Generator().manual_seed(3))
    assert torch.equal(got, want) and got.shape == (1, 4, 4, 6)
    assert torch.equal(loss.eval().perturb(z, y), big)  # evaluation: the logits as they are
    with pytest.raises(ConfigError, match="labels must hold integer"):
        loss.perturb(z, y.float())
    with pytest.raises(ConfigError, match="do not fit"):
        loss.perturb(z, torch.zeros(2, 4, 6, dtype=torch.long))


def test_the_uda_mix_term_perturbs_through_the_loss_object():
    tree = ast.parse((ROOT / "blvnb/engine/strategies/uda.py").read_text())
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert "blv_logits" not in names


class Seg(nn.Module):
    """main + two auxiliary outputs, weights 0.4 and 0.2."""

    aux_weights = (0.4, 0.2)

    def forward(self, x, return_aux=False):
        out = x[:, :3]
        return {"out": out, "aux": [out * 2, out * 3]} if return_aux else out


def test_segmentation_loss_sums_the_placed_terms_at_the_label_size():
    x = torch.randn(2, 4, 4, 4)
    y = torch.randint(0, 3, (2, 8, 8))
    y[0, 0] = 255
    ce, other = build_loss("ce"), build_loss("focal")
    outs = parts.forward_outputs(Seg(), x, 3)
    big = [nn.functional.interpolate(o, size=(8, 8), mode="bilinear", align_corners=False) for o in outs]
    placed = parts.placement(Seg(), other, "main", ce)
    assert [(w, fn) for w, fn in placed] == [(1.0, other), (0.4, ce), (0.2, ce)]
    total, main, aux = parts.segmentation_loss(outs, y, placed)
    want = other(big[0], y) + 0.4 * ce(big[1], y) + 0.2 * ce(big[2], y)
    torch.testing.assert_close(total, want)
    torch.testing.assert_close(main, other(big[0], y))
    torch.testing.assert_close(aux, want - main)
    assert [w for w, fn in parts.placement(Seg(), other, "all") if fn is other] == [1.0, 0.4, 0.2]
    assert parts.placement(nn.Conv2d(3, 3, 1), other) == [(1.0, other)]  # no aux_weights: no aux output
    with pytest.raises(ConfigError, match="placement 'aux'"):
        parts.placement(Seg(), other, "aux")


@pytest.mark.parametrize("name, on, want", [
    ("r50-psp@small", "main", ["blv", "ce"]),  # the aux FCN head keeps CE at 0.4
    ("hr18-ocr@small", "head_aux", ["ce", "blv"]),  # BLV on OCR's soft regions, at 1.0
    ("swint-knet@small", "main+head_aux", ["blv"] * 4 + ["ce"]),  # every K-Net stage; aux FCN CE
])
def test_placement_follows_the_recipes(name, on, want):
    model = build_model(name)
    blv, ce = BLVLoss(COUNTS), build_loss("ce")
    assert recipes.recipe_for(name).loss_on == on
    placed = parts.placement(model, blv, on, ce)
    assert ["blv" if fn is blv else "ce" for _, fn in placed] == want
    if on == "head_aux":
        assert placed[1][0] == 1.0
    # cross entropy (and rs) keeps the model's own weights on every output; a long-tail loss the recipe's place
    assert parts.loss_on(recipes.recipe_for(name), "blv") == on
    assert parts.loss_on(recipes.recipe_for(name), "ce") == parts.loss_on(recipes.recipe_for(name), "rs") == "main"


class Student(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([2.0]))
        self.drop = nn.Dropout(0.5)
        self.bn = nn.BatchNorm1d(1)


def test_ema_teacher_warm_start_update_buffers_modes_and_state():
    s = Student()
    t = parts.EMATeacher(s, 0.9)
    assert not t.module.training and not t.module.w.requires_grad and t.module.w is not s.w
    with torch.no_grad():
        s.w.fill_(4.0)
        s.bn.running_mean.fill_(5.0)
    t.update(s, 1)  # m_1 = 1/2
    assert float(t.module.w) == 3.0 and float(t.module.bn.running_mean) == 0.0  # parameters only
    t.copy_buffers(s)
    assert float(t.module.bn.running_mean) == 5.0
    assert t.momentum(0) == 0.0 and t.momentum(10**6) == 0.9
    state = t.state_dict()
    u = parts.EMATeacher(Student(), 0.9, mode="train")
    assert u.module.training and u.module.bn.training and not u.module.drop.training  # DAFormer's teacher
    u.load_state_dict(state)
    assert float(u.module.w) == 3.0 and not u.module.drop.training and u.module.training


@pytest.mark.parametrize("m0", [1.0, -0.1, "0.9", True, None])
def test_ema_teacher_wrong_momentum_is_named(m0):
    with pytest.raises(ConfigError, match=f"got {m0!r}".replace("(", r"\(")):
        parts.EMATeacher(Student(), m0)


def test_ema_teacher_wrong_mode_is_named():
    with pytest.raises(ConfigError, match="'student'"):
        parts.EMATeacher(Student(), 0.9, mode="student")


def test_strategy_param_groups_come_from_its_recipe():
    from blvnb.engine.strategies.base import Strategy

    model = build_model("mitb5-daformer@small")

    class S(Strategy):
        recipe = recipes.uda_recipe("mitb5-daformer")

    groups = S().param_groups(model)
    by = {n: (g["lr_mult"], g["decay_mult"]) for g in groups for n in g["names"]}
    head_norm = next(n for n, m in model.head.named_modules() if isinstance(m, nn.modules.batchnorm._NormBase))
    assert by[f"head.{head_norm}.weight"] == (10.0, 1.0)  # DAFormer: the head key before the norm key
    bb_norm = next(n for n, m in model.backbone.named_modules() if isinstance(m, nn.LayerNorm))
    assert by[f"backbone.{bb_norm}.weight"] == (1.0, 0.0)
    # the same model under SegFormer's supervised recipe (as before): a head's norm loses its decay
    seg = {n: (g["lr_mult"], g["decay_mult"]) for g in recipes.param_groups(model, recipes.SEGFORMER)
           for n in g["names"]}
    assert seg[f"head.{head_norm}.weight"] == (10.0, 0.0)
    # a CNN backbone under DAFormer's optimiser decays its batch norms (mmcv's "norm" key misses bn*)
    assert not recipes.uda_recipe("r101-deeplabv2").no_decay_norms and recipes.uda_recipe("mitb5-hrda").no_decay_norms
    dars = recipes.dars_recipe("r50-psp")
    assert (dars.head_lr_mult, dars.loss_on, dars.power, dars.warmup_fraction) == (10.0, "all", 0.9, 0.0)
    with pytest.raises(ConfigError, match="no backbone"):
        recipes.param_groups(nn.Conv2d(3, 3, 1), dars)
