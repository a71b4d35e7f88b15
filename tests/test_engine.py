"""The training loop: it learns, follows mmcv's schedules, resumes exactly, refuses bad settings."""

import math

import pytest
import torch
from torch import nn

from blvnb.engine import loop, recipes
from blvnb.engine.streams import Stream
from blvnb.engine.strategies import STRATEGIES, Strategy
from blvnb.engine.strategies.supervised import Supervised
from blvnb.errors import BlvnbError
from blvnb.losses import build_loss


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[..., ::2, ::2]  # half resolution, as a real head


class Blocks(torch.utils.data.Dataset):
    """n samples of 2×2-block images whose label is a function of the image; some pixels ignored."""

    def __init__(self, n=10):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=g).repeat_interleave(2, -1).repeat_interleave(2, -2)
        self.y = (self.x[:, 0] > 0).long() + 2 * (self.x[:, 1] > 0).long()
        self.y[:, :2] = 255

    def __len__(self):
        return len(self.x)

    def sample(self, i, generator):  # augmentation: a random flip from the stream's generator
        x, y = self.x[i], self.y[i]
        if torch.rand((), generator=generator) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return {"image": x, "label": y, "index": i}


def _run(iters=10, ckpt=None, strategy=None, n=10, **kw):
    torch.manual_seed(0)
    model = TinyNet()
    cfg = loop.TrainConfig(iters=iters, lr=0.05, **kw)
    streams = {"labeled": Stream(Blocks(n), 4, seed=1)}
    hist = loop.train(model, streams, cfg, strategy or Supervised(build_loss("ce")), device="cpu", progress=False,
                      checkpoint=ckpt)
    return model, hist


def test_train_reduces_loss():
    _, hist = _run(iters=150, weight_decay=0.0)
    assert len(hist["loss"]) == 150 and len(hist["history"]["lr"]) == 150
    assert sum(hist["loss"][-5:]) < 0.7 * sum(hist["loss"][:5])


def test_resume_mid_epoch_is_bitwise_exact(tmp_path):
    """Interrupt at iteration 5 (mid-epoch: 2 batches per epoch of 10 samples) after a checkpoint at 3."""
    whole, _ = _run(iters=9)

    class Stop(Exception):
        pass

    class Interrupted(Supervised):
        def step(self, model, batches, it):
            if it == 5:
                raise Stop
            return super().step(model, batches, it)

    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(Stop):
        _run(iters=9, ckpt=ckpt, strategy=Interrupted(build_loss("ce")), ckpt_every=3)
    state = torch.load(ckpt, weights_only=True)
    assert state["iter"] == 3 and state["streams"]["labeled"] == {"epoch": 1, "position": 4}
    resumed, hist = _run(iters=9, ckpt=ckpt)
    assert hist["resumed"] and hist["resumed_from"] == 3 and len(hist["loss"]) == 9
    for p, q in zip(resumed.parameters(), whole.parameters()):
        assert torch.equal(p, q)


def test_mmcv_schedules_by_hand():
    base = 0.01
    poly = loop.TrainConfig(iters=100, lr=base, power=0.9, min_lr=1e-4)
    # (base − min)(1 − t/T)^p + min
    assert loop.scheduled_lr(base, 0, poly) == pytest.approx(base)
    assert loop.scheduled_lr(base, 50, poly) == pytest.approx((base - 1e-4) * 0.5**0.9 + 1e-4)
    assert loop.scheduled_lr(base, 100, poly) == pytest.approx(1e-4)
    lin = loop.TrainConfig(iters=160, lr=6e-5, schedule="linear", min_lr=0.0, warmup_iters=15, warmup_ratio=1e-6)
    # warmup: lr · (1 − (1 − t/W)(1 − ratio)); at t = 5: linear lr 6e-5 (1 − 5/160)
    assert loop.scheduled_lr(6e-5, 5, lin) == pytest.approx(6e-5 * (1 - 5 / 160) * (1 - (1 - 5 / 15) * (1 - 1e-6)))
    assert loop.scheduled_lr(6e-5, 0, lin) == pytest.approx(6e-5 * 1e-6)
    assert loop.scheduled_lr(6e-5, 15, lin) == pytest.approx(6e-5 * (1 - 15 / 160))
    step = loop.TrainConfig(iters=80, lr=6e-5, schedule="step", milestones=(60, 72), gamma=0.1, warmup_iters=10,
                            warmup_ratio=1e-3)
    assert loop.scheduled_lr(6e-5, 59, step) == pytest.approx(6e-5)
    assert loop.scheduled_lr(6e-5, 60, step) == pytest.approx(6e-6)
    assert loop.scheduled_lr(6e-5, 75, step) == pytest.approx(6e-7)
    assert loop.scheduled_lr(6e-5, 2, step) == pytest.approx(6e-5 * (1 - 0.8 * (1 - 1e-3)))
    # a DARS round continues the schedule: global iteration 50 of a 150-iteration schedule
    rnd = loop.TrainConfig(iters=50, first_iter=50, schedule_iters=150, lr=0.01, power=0.9)
    assert loop.scheduled_lr(0.01, 50, rnd) == pytest.approx(0.01 * (1 - 50 / 150) ** 0.9)
    assert loop.poly_lr(0.01, 50, 100, power=1.0) == pytest.approx(0.005)


def test_loop_sets_the_scheduled_lr_per_group_with_its_multiplier():
    class TwoGroups(Supervised):
        def param_groups(self, model):
            return [{"params": [model.conv.weight], "lr_mult": 1.0, "decay_mult": 1.0},
                    {"params": [model.conv.bias], "lr_mult": 10.0, "decay_mult": 0.0}]

    seen = []

    class Spy(TwoGroups):
        def after_step(self, model, it):
            seen.append(it)

    torch.manual_seed(0)
    model = TinyNet()
    cfg = loop.TrainConfig(iters=4, lr=0.1, power=1.0, weight_decay=0.5)
    strategy = Spy(build_loss("ce"))
    opt = loop.build_optimizer(strategy.param_groups(model), cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 1.0])
    assert [g["weight_decay"] for g in opt.param_groups] == pytest.approx([0.5, 0.0])
    hist = loop.train(model, {"labeled": Stream(Blocks(), 4, seed=0)}, cfg, strategy, device="cpu", progress=False)
    assert seen == [0, 1, 2, 3]
    assert hist["history"]["lr"] == pytest.approx([0.1 * (1 - t / 4) for t in range(4)])


@pytest.mark.parametrize("name, head_mult, no_decay", [
    ("r10t-fpn", 1.0, []),
    ("mitb0-segformer@small", 10.0, ["norm"]),
    ("vitb16-uper@small", 1.0, ["pos_embed", "cls_token", "norm"]),
    ("swint-knet@small", 1.0, ["relative_position_bias_table", "norm"]),
])
def test_recipe_param_groups(name, head_mult, no_decay):
    from blvnb.models.registry import build_model

    model = build_model(name)
    groups = recipes.param_groups(model, recipes.recipe_for(name))
    by_name = {n: (g["lr_mult"], g["decay_mult"]) for g in groups for n in g["names"]}
    assert set(by_name) == {n for n, p in model.named_parameters() if p.requires_grad}
    for n, (lr_mult, decay_mult) in by_name.items():
        assert lr_mult == (1.0 if "backbone" in n.split(".") else head_mult), n
        if any(k in n for k in ("pos_embed", "cls_token", "relative_position_bias_table")):
            assert decay_mult == 0.0, n
    norms = [n for n, m in model.named_modules() if isinstance(m, (nn.LayerNorm, nn.BatchNorm2d))]
    w = norms[0] + ".weight"
    assert by_name[w][1] == (0.0 if "norm" in no_decay else 1.0)
    conv = next(n for n, p in model.named_parameters() if p.ndim == 4)
    assert by_name[conv][1] == 1.0


def test_recipes_follow_the_configs():
    seg = recipes.recipe_for("mitb0-segformer@small").train_settings(1600)
    assert seg["optimizer"] == "adamw" and seg["lr"] == 6e-5 and seg["weight_decay"] == 0.01
    assert seg["warmup_iters"] == 15 and seg["warmup_ratio"] == 1e-6 and seg["power"] == 1.0
    knet = recipes.recipe_for("swint-knet").train_settings(800)
    assert knet["schedule"] == "step" and knet["milestones"] == (600, 720) and knet["grad_clip"] == 1.0
    assert knet["warmup_iters"] == 10 and knet["weight_decay"] == 5e-4
    cnn = recipes.recipe_for("r50-psp@small").train_settings(300, lr=0.02)
    assert cnn["optimizer"] == "sgd" and cnn["min_lr"] == pytest.approx(2e-4) and cnn["power"] == 0.9


def test_bad_settings_are_blvnb_errors(tmp_path):
    with pytest.raises(BlvnbError, match="gpu9"):
        loop.resolve_device("gpu9")
    for bad in (dict(optimizer="lion"), dict(schedule="cosine"), dict(iters=-1), dict(amp_dtype="int8"),
                dict(warmup_ratio=2.0), dict(iters=10, schedule_iters=5)):
        with pytest.raises(BlvnbError):
            loop.TrainConfig(**{"iters": 1, **bad})
    with pytest.raises(BlvnbError, match="needs the stream"):
        loop.train(TinyNet(), {}, loop.TrainConfig(iters=1), Supervised(build_loss("ce")), device="cpu")
    with pytest.raises(BlvnbError, match="divisible"):
        Stream(Blocks(), 3, seed=0, rank=0, world_size=2)


@pytest.mark.parametrize("content", [b"", b"\x00" * 10, bytes(range(256)) * 3, b"PK\x03\x04garbage"])
def test_bad_checkpoints_name_the_file(tmp_path, content):
    ckpt = tmp_path / "bad.ckpt.pt"
    ckpt.write_bytes(content)
    with pytest.raises(BlvnbError, match="bad.ckpt.pt.*(delete|force)"):
        _run(iters=2, ckpt=ckpt)


def test_truncated_and_foreign_checkpoints(tmp_path):
    ckpt = tmp_path / "run.ckpt.pt"
    _run(iters=2, ckpt=ckpt)
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])
    with pytest.raises(BlvnbError, match="run.ckpt.pt"):
        _run(iters=4, ckpt=ckpt)
    torch.save({"model": nn.Linear(2, 2).state_dict(), "iter": 1}, ckpt)  # another model's weights
    with pytest.raises(BlvnbError, match="another model"):
        _run(iters=4, ckpt=ckpt)


def test_aux_heads_enter_the_loss_with_their_weights():
    class WithAux(TinyNet):
        aux_weights = (0.4,)

        def forward(self, x, return_aux=False):
            out = super().forward(x)
            return {"out": out, "aux": [out[..., ::2, ::2] * 0.5]} if return_aux else out

    model = WithAux()
    ds = Blocks()
    batch = {"labeled": {"image": ds.x[:2], "label": ds.y[:2]}}
    loss, stats = Supervised(build_loss("ce")).step(model, batch, 0)
    assert stats["aux_loss"] > 0 and loss.item() == pytest.approx(float(stats["main_loss"] + stats["aux_loss"]))
    loss.backward()
    assert model.conv.weight.grad is not None


def test_long_tail_loss_goes_where_the_configs_put_it():
    from blvnb.models.registry import build_model

    counts = list(range(1, 20))
    blv = build_loss("blv", class_counts=counts)
    knet = build_model("swint-knet@small")
    placed = Supervised(blv, recipe=recipes.recipe_for("swint-knet"), loss_name="blv").placement(knet)
    # K-Net: the generator's masks and the three stage outputs get BLV (weight 1), the FCN aux CE 0.4
    assert [w for w, _ in placed] == [1.0, 1.0, 1.0, 1.0, 0.4]
    assert [fn is blv for _, fn in placed] == [True, True, True, True, False]
    ocr = build_model("hr18-ocr@small")
    placed = Supervised(blv, recipe=recipes.recipe_for("hr18-ocr"), loss_name="blv").placement(ocr)
    assert [w for w, _ in placed] == [1.0, 1.0] and [fn is blv for _, fn in placed] == [False, True]
    psp = build_model("r50-psp@small")
    placed = Supervised(blv, recipe=recipes.recipe_for("r50-psp"), loss_name="blv").placement(psp)
    assert [w for w, _ in placed] == [1.0, 0.4] and [fn is blv for _, fn in placed] == [True, False]


def test_blv_noise_is_a_function_of_the_iteration():
    """The same step at the same global iteration draws the same noise, whatever came before."""
    blv = build_loss("blv", class_counts=list(range(1, 5)), sigma=4.0)
    s = Supervised(blv, seed=3, loss_name="blv")
    ds = Blocks()
    batch = {"labeled": {"image": ds.x[:2], "label": ds.y[:2]}}
    torch.manual_seed(0)
    model = TinyNet()
    a = s.step(model, batch, 7)[0].item()
    s.step(model, batch, 8)
    b = s.step(model, batch, 7)[0].item()
    c = s.step(model, batch, 9)[0].item()
    assert a == b and a != c


def test_step_generator_is_stateless():
    g1 = loop.step_generator(0, 5, "mix")
    g2 = loop.step_generator(0, 5, "mix")
    assert torch.equal(torch.rand(4, generator=g1), torch.rand(4, generator=g2))
    assert not torch.equal(torch.rand(4, generator=loop.step_generator(0, 6, "mix")),
                           torch.rand(4, generator=loop.step_generator(0, 5, "mix")))


def test_streams_positions_and_ranks():
    ds = Blocks(10)
    s = Stream(ds, 4, seed=0)
    first = [s.next()["index"].tolist() for _ in range(3)]  # 2 batches per epoch, then a new order
    assert s.state_dict() == {"epoch": 1, "position": 4}
    assert sorted(first[0] + first[1]) != list(range(10)) and len(set(first[0] + first[1])) == 8
    t = Stream(ds, 4, seed=0)
    t.load_state_dict({"epoch": 1, "position": 0})
    assert t.next()["index"].tolist() == first[2]
    # under DDP each of two ranks takes half of the same global batch, with the same augmentation
    one = Stream(ds, 4, seed=0, rank=0, world_size=1).next()
    halves = [Stream(ds, 4, seed=0, rank=r, world_size=2).next() for r in (0, 1)]
    assert torch.equal(torch.cat([h["image"] for h in halves]), one["image"])


def test_epoch_end_is_called_when_the_epoch_stream_wraps():
    ends = []

    class Counting(Supervised):
        def on_epoch_end(self, model, epoch):
            ends.append(epoch)

    _run(iters=5, strategy=Counting(build_loss("ce")))
    assert ends == [0, 1]  # 2 batches per epoch: epochs end after iterations 1 and 3


def test_registry_and_base_strategy():
    assert "supervised" in STRATEGIES
    assert Strategy().summary() == {}


def test_paper_model_trains_with_its_aux_head():
    from blvnb.models.registry import build_model

    model = build_model("r50-psp@small")
    assert model.aux_weights == (0.4,)

    class Rand(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randn(3, 64, 64, generator=g), "label": torch.randint(0, 19, (64, 64), generator=g)}

    hist = loop.train(model, {"labeled": Stream(Rand(), 2, seed=0)}, loop.TrainConfig(iters=2, lr=0.01),
                      Supervised(build_loss("ce")), device="cpu", progress=False)
    assert len(hist["loss"]) == 2 and all(math.isfinite(v) for v in hist["loss"])
    assert "aux_loss" in hist["history"]


def test_a_round_continues_from_init_state_with_the_optimiser_and_schedule(tmp_path):
    """DARS round k: start from the teacher's checkpoint (weights + optimiser), lr continuing at first_iter."""
    teacher = tmp_path / "teacher.pt"
    _run(iters=4, ckpt=teacher)
    state = torch.load(teacher, weights_only=True)
    torch.manual_seed(1)
    model = TinyNet()
    cfg = loop.TrainConfig(iters=4, first_iter=4, schedule_iters=12, lr=0.05)
    hist = loop.train(model, {"labeled": Stream(Blocks(), 4, seed=2)}, cfg, Supervised(build_loss("ce")),
                      device="cpu", progress=False, init_state=teacher)
    assert hist["history"]["lr"] == pytest.approx([0.05 * (1 - t / 12) ** 0.9 for t in range(4, 8)])
    assert not hist["resumed"] and hist["resumed_from"] == 4
    moved = [not torch.equal(p, state["model"][k]) for k, p in model.state_dict().items()]
    assert all(moved)  # it trained on from the teacher's weights ...
    bad = {"model": nn.Linear(2, 2).state_dict()}
    with pytest.raises(BlvnbError, match="another model"):  # ... and refuses another model's
        loop.train(TinyNet(), {"labeled": Stream(Blocks(), 4, seed=2)}, cfg, Supervised(build_loss("ce")),
                   device="cpu", progress=False, init_state=bad)


def test_log_lines_with_images_per_second_when_not_on_a_terminal(caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="blvnb.engine.loop"):
        _run(iters=4, log_every=2)
    lines = [r.getMessage() for r in caplog.records if "images/s" in r.getMessage()]
    assert len(lines) == 2 and "iteration 4/4" in lines[-1] and "ETA" in lines[-1]


@pytest.mark.parametrize("kw", [dict(amp=True, amp_dtype="bfloat16"), dict(amp=True, amp_dtype="float16"),
                                dict(channels_last=True)])
def test_amp_and_channels_last_run(kw):
    model, hist = _run(iters=3, **kw)
    assert all(math.isfinite(v) for v in hist["loss"])
    if kw.get("channels_last"):
        assert model.conv.weight.is_contiguous(memory_format=torch.channels_last)


class GradRecorder(Supervised):
    """Supervised CE on one parameter group (the model's parameters in order), keeping the gradients the
    optimiser stepped with (after_step runs after the step, before the next zero_grad)."""

    def __init__(self):
        super().__init__(build_loss("ce"))
        self.grads = []

    def param_groups(self, model):
        return Strategy.param_groups(self, model)

    def after_step(self, model, it):
        self.grads.append([p.grad.detach().clone() for p in model.parameters()])


def _norm(grads):
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))


def test_grad_clip_bounds_the_global_gradient_norm():
    free, clipped = GradRecorder(), GradRecorder()
    _run(iters=3, strategy=free)
    _run(iters=3, strategy=clipped, grad_clip=0.01)
    assert min(_norm(g) for g in free.grads) > 0.1  # so that a clip at 0.01 has something to do
    assert [_norm(g) for g in clipped.grads] == pytest.approx([0.01] * 3, rel=1e-4)


def test_adamw_with_its_betas_steps_as_decoupled_adam(tmp_path):
    """One AdamW step from known weights and gradient: the moments hold (1 − β1)·g and (1 − β2)·g², and the
    weights move by lr·(wd·w + m̂ / (√v̂ + ε)) — decoupled weight decay, not Adam's L2 (wd·w added to g)."""
    torch.manual_seed(0)
    w0 = [p.detach().clone() for p in TinyNet().parameters()]  # what _run's model starts from
    rec, wd, (b1, b2) = GradRecorder(), 0.1, (0.8, 0.9)
    model, _ = _run(iters=1, strategy=rec, ckpt=tmp_path / "c.pt", optimizer="adamw", betas=(b1, b2),
                    weight_decay=wd, grad_clip=0.01)
    opt = torch.load(tmp_path / "c.pt", weights_only=True)["optimizer"]
    (group,) = opt["param_groups"]
    assert tuple(group["betas"]) == (b1, b2) and group["weight_decay"] == wd and group["lr"] == 0.05
    (g,) = rec.grads
    assert _norm(g) == pytest.approx(0.01, rel=1e-4)  # clipped before the step
    for i, (p0, gi, p1) in enumerate(zip(w0, g, model.parameters(), strict=True)):
        st = opt["state"][i]
        torch.testing.assert_close(st["exp_avg"], (1 - b1) * gi)
        torch.testing.assert_close(st["exp_avg_sq"], (1 - b2) * gi * gi)
        m_hat, v_hat = st["exp_avg"] / (1 - b1), st["exp_avg_sq"] / (1 - b2)
        torch.testing.assert_close(p1.detach(), p0 - 0.05 * (wd * p0 + m_hat / (v_hat.sqrt() + 1e-8)))


def test_a_diverging_loss_is_an_error_that_names_the_iteration(tmp_path):
    class Diverging(Supervised):
        def step(self, model, batches, it):
            loss, stats = super().step(model, batches, it)
            return (loss * float("nan") if it == 2 else loss), {}

    with pytest.raises(BlvnbError, match="iteration 2"):
        _run(iters=5, strategy=Diverging(build_loss("ce")), ckpt=tmp_path / "c.pt", ckpt_every=4)
    assert not (tmp_path / "c.pt").exists()  # no checkpoint of NaN weights


def test_worker_processes_load_the_same_batches():
    a = Stream(Blocks(10), 4, seed=5, num_workers=0)
    b = Stream(Blocks(10), 4, seed=5, num_workers=2)
    for _ in range(3):
        x, y = a.next(), b.next()
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["index"], y["index"])


def test_cross_entropy_and_resampling_keep_the_models_own_weights():
    from blvnb.models.registry import build_model

    ocr = build_model("hr18-ocr@small")
    for name in ("ce", "rs"):
        placed = Supervised(build_loss("ce"), recipe=recipes.recipe_for("hr18-ocr"), loss_name=name).placement(ocr)
        assert [w for w, _ in placed] == [1.0, 0.4]
