"""The training loop: it learns, it resumes where it stopped, it refuses bad settings."""

import pytest
import torch
from torch import nn

from blvnb.engine import loop
from blvnb.errors import BlvnbError


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)[..., ::2, ::2]  # half resolution, as a real head


def _batches(n=4):
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        x = torch.randn(2, 3, 8, 8, generator=g).repeat_interleave(2, -1).repeat_interleave(2, -2)  # 2×2 blocks
        y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
        y[:, :2] = 255  # some ignore
        out.append({"image": x, "label": y})
    return out


def test_train_reduces_loss():
    torch.manual_seed(0)
    model = TinyNet()
    hist = loop.train(model, _batches(), loop.TrainConfig(iters=200, lr=0.5, weight_decay=0), device="cpu", progress=False)
    assert len(hist["loss"]) == 200
    assert sum(hist["loss"][-5:]) < 0.7 * sum(hist["loss"][:5])


def test_resume_matches_uninterrupted(tmp_path):
    """Interrupt at iteration 4 (an epoch boundary: 4 batches), resume: the same weights as one run."""
    cfg = loop.TrainConfig(iters=10, lr=0.05, ckpt_every=4)
    batches = _batches()
    torch.manual_seed(0)
    whole = TinyNet()
    loop.train(whole, batches, cfg, device="cpu", progress=False)

    class Stop(Exception):
        pass

    def interrupted(model, batch, it):
        if it == 4:
            raise Stop
        return loop.supervised_step()(model, batch, it)

    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    with pytest.raises(Stop):
        loop.train(TinyNet(), batches, cfg, step=interrupted, device="cpu", progress=False, checkpoint=ckpt)
    assert torch.load(ckpt, weights_only=True)["iter"] == 4
    resumed = TinyNet()  # fresh weights: everything must come from the checkpoint
    hist = loop.train(resumed, batches, cfg, device="cpu", progress=False, checkpoint=ckpt)
    assert hist["resumed_from"] == 4 and len(hist["loss"]) == 10
    for p, q in zip(resumed.parameters(), whole.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


def test_poly_lr():
    assert loop.poly_lr(0.01, 0, 100) == pytest.approx(0.01)
    assert loop.poly_lr(0.01, 100, 100) == 0.0
    assert loop.poly_lr(0.01, 50, 100, power=1.0) == pytest.approx(0.005)


def test_bad_settings_are_blvnb_errors():
    with pytest.raises(BlvnbError):
        loop.resolve_device("gpu9")
    with pytest.raises(BlvnbError):
        loop.train(TinyNet(), _batches(), loop.TrainConfig(iters=1, optimizer="lion"), device="cpu", progress=False)


def test_aux_heads_enter_the_loss_with_their_weights():
    class WithAux(TinyNet):
        aux_weights = (0.4,)

        def forward(self, x, return_aux=False):
            out = super().forward(x)
            return {"out": out, "aux": [out[..., ::2, ::2] * 0.5]} if return_aux else out

    model, batch = WithAux(), _batches(1)[0]
    loss, stats = loop.supervised_step()(model, batch, 0)
    assert stats["aux_loss"] > 0 and loss.item() == pytest.approx(stats["loss"] + stats["aux_loss"], rel=1e-5)
    loss.backward()
    assert model.conv.weight.grad is not None


def test_paper_model_trains_with_its_aux_head():
    from blvnb.models.registry import build_model

    model = build_model("r50-psp@small")
    assert model.aux_weights == (0.4,)
    batch = {"image": torch.randn(2, 3, 64, 64), "label": torch.randint(0, 19, (2, 64, 64))}
    hist = loop.train(model, [batch], loop.TrainConfig(iters=2, lr=0.01), device="cpu", progress=False)
    assert len(hist["loss"]) == 2 and all(map(lambda v: v == v, hist["loss"]))
