"""Rare-class sampling for UDA streams: probabilities, encoded indices, the re-crop and the margins."""

import numpy as np
import pytest
import torch

from blvnb.data.sampling import (RareClassSampler, SampledCrops, decode_index, encode_index, rare_class_probabilities,
                                 scaled_min_pixels, uniform_order)
from blvnb.errors import ConfigError


class Base:
    """Three 16×32 images; image 2 holds 12 pixels of the rare class 5 in its right-hand quarter."""

    def __init__(self):
        self.labels = []
        for i in range(3):
            y = torch.zeros(16, 32, dtype=torch.int64)
            y[8:] = 1
            if i == 2:
                y[2:5, 28:32] = 5
            self.labels.append(y)

    def __len__(self):
        return 3

    def read_label(self, i):
        return self.labels[i].numpy().astype(np.uint8)

    def __getitem__(self, i):
        img = torch.arange(3 * 16 * 32, dtype=torch.float32).view(3, 16, 32) + 1000 * i
        return {"image": img, "label": self.labels[i].clone(), "name": str(i)}


def _pixels(base):
    return np.stack([np.bincount(base.read_label(i).ravel(), minlength=19)[:19] for i in range(len(base))])


def test_probabilities_are_softmax_of_one_minus_f_over_t():
    counts = np.array([900.0, 90.0, 10.0, 0.0])
    f = counts[:3] / counts.sum()
    for t in (0.01, 0.1, 1.0):
        e = np.exp((1 - f) / t - ((1 - f) / t).max())
        np.testing.assert_allclose(rare_class_probabilities(counts, t)[:3], e / e.sum(), rtol=1e-12)
        assert rare_class_probabilities(counts, t)[3] == 0
    p = rare_class_probabilities(counts, 0.01)
    assert p[2] > p[1] > p[0] and p[2] > 0.99  # T = 0.01 puts nearly all the mass on the rarest class


def test_encoded_indices_round_trip():
    for image, cls, key in [(0, -1, 0), (2, 18, 5), (24965, 7, (1 << 31) - 1)]:
        idx = encode_index(image, cls, key, 24966, 19)
        assert decode_index(idx, 24966, 19) == (image, cls, key)
    with pytest.raises(ConfigError, match="cannot encode"):
        encode_index(3, 0, 0, 3, 19)


def test_order_is_a_function_of_the_generator():
    s = RareClassSampler(_pixels(Base()), min_pixels=10)
    a = s.order(0, torch.Generator().manual_seed(1))
    b = s.order(0, torch.Generator().manual_seed(1))
    assert a == b and len(a) == 3
    decoded = [decode_index(i, 3, 19) for i in a]
    for image, cls, _ in decoded:
        assert cls in (0, 1, 5) and (cls != 5 or image == 2)
    # at T = 0.01 class 5 (the rarest) is sampled nearly always, and only image 2 holds it
    many = RareClassSampler(_pixels(Base()), min_pixels=10, num_samples=200).order(0, torch.Generator().manual_seed(2))
    assert sum(decode_index(i, 3, 19)[1] == 5 for i in many) > 190
    u = uniform_order(3)(0, torch.Generator().manual_seed(0))
    assert len(u) == 3 and all(decode_index(i, 3, 19)[1] == -1 for i in u)


def test_recrop_finds_the_sampled_class():
    base = Base()
    view = SampledCrops(base, (16, 8), seed=0, flip=0.0, min_class_pixels=6)
    hits_with, hits_without = 0, 0
    for key in range(60):
        out = view[encode_index(2, 5, key, 3, 19)]
        assert out["image"].shape == (3, 16, 8) and out["label"].shape == (16, 8) and out["rcs_class"] == 5
        hits_with += int((out["label"] == 5).sum()) > 6
        plain = SampledCrops(base, (16, 8), seed=0, flip=0.0)[encode_index(2, -1, key, 3, 19)]
        hits_without += int((plain["label"] == 5).sum()) > 6
    # one crop of width 8 out of 25 positions holds > 6 pixels of class 5 with probability ~ 3/25;
    # eleven tries make it ~ 75 %
    assert hits_with > 2 * hits_without and hits_with > 30


def test_crop_is_deterministic_pads_and_flips():
    base = Base()
    view = SampledCrops(base, (20, 8), seed=3, flip=1.0)
    a, b = view[encode_index(1, -1, 9, 3, 19)], view[encode_index(1, -1, 9, 3, 19)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["image"].shape == (3, 20, 8) and (a["label"][16:] == 255).all() and (a["image"][:, 16:] == 0).all()
    # flipped: the image's columns run right to left
    assert (a["image"][0, 0, 0] > a["image"][0, 0, 1]).item()
    other = SampledCrops(base, (20, 8), seed=4, flip=1.0)
    assert any(not torch.equal(other[encode_index(1, -1, k, 3, 19)]["image"], view[encode_index(1, -1, k, 3, 19)]["image"])
               for k in range(5))


def test_hrda_margins_are_cut_with_the_image():
    base = Base()
    view = SampledCrops(base, (16, 32), seed=0, flip=0.0, pseudo_margins=(30 / 1024, 240 / 1024, 30 / 2048, 30 / 2048))
    v = view[encode_index(0, -1, 0, 3, 19)]["valid"]
    # 16×32 frame: top round(0.47) = 0, bottom round(3.75) = 4, left/right round(0.47) = 0
    assert v.shape == (16, 32) and v[:12].all() and not v[12:].any()
    assert scaled_min_pixels(3000, 1914 * 1052, 1914 * 1052) == 3000
    assert scaled_min_pixels(3000, 64 * 128, 1914 * 1052) == 12
    with pytest.raises(ConfigError, match="pseudo_margins"):
        SampledCrops(base, (8, 8), seed=0, pseudo_margins=(0.5, 0.1))
