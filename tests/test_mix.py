"""ClassMix and the batch photometric augmentations (blvnb.data.mix) against DAFormer's recipe."""

import math

import pytest
import torch

from blvnb.data import mix as M
from blvnb.errors import ConfigError


def _g(seed=0):
    return torch.Generator().manual_seed(seed)


def _labels():
    y = torch.zeros(2, 8, 8, dtype=torch.int64)
    y[0, :4] = 1  # image 0: classes {0, 1}
    y[1] = 2
    y[1, :, :3] = 3
    y[1, 0, 0] = 255  # image 1: classes {2, 3, 255}
    return y


def test_class_mix_takes_half_of_the_batch_classes():
    y = _labels()
    batch_classes = {0, 1, 2, 3, 255}  # torch.unique over the whole batch, 255 included
    for seed in range(20):
        masks, chosen = M.class_mix_masks(y, _g(seed))
        assert masks.shape == y.shape and masks.dtype == torch.bool
        for i in range(2):
            c = set(chosen[i].tolist())
            assert len(c) == math.ceil(len(batch_classes) / 2) == 3
            assert c <= batch_classes
            # the mask is exactly the pixels of image i whose label is a chosen class
            expect = torch.zeros_like(masks[i])
            for k in c:
                expect |= y[i] == k
            assert torch.equal(masks[i], expect)


def test_class_mix_is_batch_level_and_seeded():
    y = _labels()
    a = M.class_mix_masks(y, _g(3))
    b = M.class_mix_masks(y, _g(3))
    assert torch.equal(a[0], b[0])
    # over seeds, image 0 sometimes gets classes only image 1 has (so its mask can be empty)
    empty = [not M.class_mix_masks(y, _g(s))[0][0].any() for s in range(40)]
    assert any(empty) and not all(empty)
    # one class in the batch: ⌈1/2⌉ = 1, every pixel mixed
    masks, chosen = M.class_mix_masks(torch.full((2, 4, 4), 5), _g())
    assert masks.all() and [c.tolist() for c in chosen] == [[5], [5]]
    with pytest.raises(ConfigError, match="N×H×W"):
        M.class_mix_masks(torch.zeros(4, 4, dtype=torch.int64), _g())


def test_mix_takes_source_inside_the_mask():
    mask = torch.tensor([[[True, False]]])
    src, tgt = torch.ones(1, 3, 1, 2), torch.zeros(1, 3, 1, 2)
    out = M.mix(mask, src, tgt)
    assert out[0, :, 0, 0].eq(1).all() and out[0, :, 0, 1].eq(0).all()
    assert M.mix(mask, torch.tensor([[[7, 7]]]), torch.tensor([[[9, 9]]])).tolist() == [[[7, 9]]]
    with pytest.raises(ConfigError, match="boolean"):
        M.mix(mask.float(), src, tgt)


def _images(n=3, h=32, w=48, seed=0):
    return torch.randn(n, 3, h, w, generator=_g(seed))


def test_jitter_is_drawn_once_per_batch_and_deterministic():
    x = _images()
    applied = []
    for seed in range(200):
        p = M.jitter_params(3, _g(seed))
        assert isinstance(p["apply"], bool) and p["factors"].shape == (3, 4) and p["order"].shape == (3, 4)
        assert (p["factors"][:, :3] >= 0.8).all() and (p["factors"][:, :3] <= 1.2).all()
        assert (p["factors"][:, 3].abs() <= 0.2).all()
        assert sorted(p["order"][0].tolist()) == [0, 1, 2, 3]
        applied.append(p["apply"])
    assert 0.7 < sum(applied) / len(applied) < 0.9  # p = 0.8
    seed = applied.index(True)
    a, pa = M.color_jitter(x, _g(seed))
    b, _ = M.color_jitter(x, _g(seed))
    assert torch.equal(a, b)
    changed = [(a[i] - x[i]).abs().max() > 1e-3 for i in range(3)]
    assert all(changed)  # the batch decision covers every image
    seed = applied.index(False)
    c, _ = M.color_jitter(x, _g(seed))
    assert torch.equal(c, x)


def test_jitter_with_neutral_factors_is_identity():
    x = (torch.rand(2, 3, 16, 16, generator=_g(1)) - torch.tensor(M.IMAGENET_MEAN).view(1, 3, 1, 1)) / \
        torch.tensor(M.IMAGENET_STD).view(1, 3, 1, 1)
    p = {"apply": True, "factors": torch.tensor([[1.0, 1.0, 1.0, 0.0]] * 2, dtype=torch.float64),
         "order": torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])}
    y, _ = M.color_jitter(x, params=p)
    torch.testing.assert_close(y, x, atol=1e-4, rtol=1e-4)
    # brightness 1.2 alone multiplies the [0, 1] image
    p["factors"] = torch.tensor([[1.2, 1.0, 1.0, 0.0]] * 2, dtype=torch.float64)
    y, _ = M.color_jitter(x, params=p)
    d = lambda t: M._denorm(t, M.IMAGENET_MEAN, M.IMAGENET_STD)  # noqa: E731
    torch.testing.assert_close(d(y), (d(x) * 1.2).clamp(0, 1), atol=1e-4, rtol=1e-4)


def test_hue_round_trip():
    x = torch.rand(1, 3, 8, 8, generator=_g(2))
    torch.testing.assert_close(M._hsv_to_rgb(M._rgb_to_hsv(x)), x, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(M.adjust_hue(x, 1.0), x, atol=1e-5, rtol=1e-5)  # a full turn


def test_blur_kernel_and_draws():
    assert [M.blur_kernel_size(s) for s in (512, 1024, 128, 64, 10)] == [51, 103, 13, 7, 1]
    sig, applied = [], []
    for seed in range(200):
        p = M.blur_params(2, _g(seed))
        applied.append(p["apply"])
        sig += p["sigma"].tolist()
    assert 0.4 < sum(applied) / 200 < 0.6
    assert 0.15 <= min(sig) and max(sig) <= 1.15
    x = _images(2, 40, 60)
    seed = applied.index(True)
    a, _ = M.gaussian_blur(x, _g(seed))
    b, _ = M.gaussian_blur(x, _g(seed))
    assert torch.equal(a, b) and a.shape == x.shape
    assert all((a[i] - x[i]).abs().max() > 1e-3 for i in range(2))
    assert a.std() < x.std()  # smoother
    flat = torch.full((1, 3, 40, 60), 0.3)
    torch.testing.assert_close(M.gaussian_blur(flat, params={"apply": True, "sigma": torch.tensor([1.0])})[0], flat)
    assert torch.equal(M.gaussian_blur(x, _g(applied.index(False)))[0], x)


def test_strong_transform_deterministic_for_a_seed():
    x = _images()
    a, pa = M.strong_transform(x, _g(5), _g(6))
    b, pb = M.strong_transform(x, _g(5), _g(6))
    assert torch.equal(a, b) and pa["jitter"]["u"] == pb["jitter"]["u"]


def test_per_image_generators_make_draws_independent_of_the_batch_split():
    """Under DDP each process holds part of the global batch: with one generator per global image index
    and the global class set, a split batch draws exactly what the whole batch draws."""
    y = torch.stack([_labels()[0], _labels()[1], _labels()[0].flip(-1), _labels()[1].flip(-2)])
    classes = torch.unique(y)
    gens = lambda lo, hi: [_g(100 + i) for i in range(lo, hi)]  # noqa: E731
    whole, chosen = M.class_mix_masks(y, classes=classes, image_generators=gens(0, 4))
    a, ca = M.class_mix_masks(y[:2], classes=classes, image_generators=gens(0, 2))
    b, cb = M.class_mix_masks(y[2:], classes=classes, image_generators=gens(2, 4))
    assert torch.equal(whole, torch.cat([a, b])) and [c.tolist() for c in chosen] == [c.tolist() for c in ca + cb]
    pj = M.jitter_params(4, _g(1), image_generators=gens(0, 4))
    pj2 = M.jitter_params(2, _g(1), image_generators=gens(2, 4))
    assert pj["apply"] == pj2["apply"] and torch.equal(pj["factors"][2:], pj2["factors"])
    assert torch.equal(pj["order"][2:], pj2["order"])
    pb = M.blur_params(4, _g(2), image_generators=gens(0, 4))
    assert torch.equal(pb["sigma"][2:], M.blur_params(2, _g(2), image_generators=gens(2, 4))["sigma"])
