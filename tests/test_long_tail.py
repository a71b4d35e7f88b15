"""The long-tail baselines against direct re-computations on tiny examples, and the RS sampler."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blvnb.data.sampling import RareClassSampler, image_class_pixels, rare_class_probabilities
from blvnb.errors import ConfigError, DatasetError
from blvnb.losses import build_loss
from blvnb.losses.long_tail import (
    GCLLoss,
    class_weights,
    focal_loss,
    gcl_logits,
    logit_adjusted_logits,
    logit_adjusted_loss,
    lovasz_softmax,
    reweighted_loss,
)

COUNTS = [700_000.0, 200_000.0, 90_000.0, 10_000.0]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def batch(seed=0, n=2, c=4, h=6, w=6, ignore_rows=1):
    logits = torch.randn(n, c, h, w, generator=gen(seed))
    target = torch.randint(0, c, (n, h, w), generator=gen(seed + 1))
    target[:, :ignore_rows] = 255
    return logits, target


# --- logit adjustment --------------------------------------------------------------------------------

def test_logit_adjustment_is_cross_entropy_of_z_plus_log_prior():
    logits, target = batch()
    prior = torch.tensor(COUNTS) / sum(COUNTS)
    direct = F.cross_entropy(logits + prior.log().view(1, -1, 1, 1), target, ignore_index=255)
    assert torch.allclose(logit_adjusted_loss(logits, target, COUNTS), direct, atol=1e-6)
    half = F.cross_entropy(logits + 0.5 * prior.log().view(1, -1, 1, 1), target, ignore_index=255)
    assert torch.allclose(logit_adjusted_loss(logits, target, COUNTS, tau=0.5), half, atol=1e-6)
    # the rarest class's logit is pushed down most, so the model must raise it
    shift = (logit_adjusted_logits(logits, COUNTS) - logits).mean(dim=(0, 2, 3))
    assert int(shift.argmin()) == 3
    loss = build_loss("la", class_counts=COUNTS).eval()  # the adjustment is the loss: same in eval mode
    assert torch.allclose(loss(logits, target), direct, atol=1e-6)


# --- Lovász-softmax ----------------------------------------------------------------------------------

def test_lovasz_two_classes_worked_by_hand():
    """Labels (0, 0, 1); p(class 0) = (0.8, 0.4, 0.3).

    Class 0: errors |1-.8|, |1-.4|, |0-.3| = (.2, .6, .3); sorted (.6, .3, .2) with foreground (1, 0, 1).
    Jaccard loss of the first 1, 2, 3 pixels: 1 - 1/2, 1 - 1/3, 1 - 0/3 → increments (1/2, 1/6, 1/3);
    loss .6/2 + .3/6 + .2/3 = 0.416667.
    Class 1: errors (.2, .6, .3) with foreground (0, 0, 1); sorted (.6, .3, .2), foreground (0, 1, 0).
    Jaccard: 1 - 1/2, 1 - 0/2, 1 - 0/3 → increments (1/2, 1/2, 0); loss .6/2 + .3/2 = 0.45.
    Mean over the two present classes: 0.433333.
    """
    p0 = torch.tensor([0.8, 0.4, 0.3])
    probs = torch.stack([p0, 1 - p0])  # C×P
    logits = probs.log().view(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, 1]]])
    assert lovasz_softmax(logits, target).item() == pytest.approx((0.416667 + 0.45) / 2, abs=1e-5)
    # an ignored pixel changes nothing when it is dropped
    logits4 = torch.cat([logits, torch.zeros(1, 2, 1, 1)], dim=3)
    target4 = torch.tensor([[[0, 0, 1, 255]]])
    assert lovasz_softmax(logits4, target4).item() == pytest.approx(0.433333, abs=1e-5)


def test_lovasz_of_hard_predictions_is_one_minus_iou():
    """With one-hot probabilities the Lovász extension equals the Jaccard loss itself: mean of 1 - IoU_c."""
    target = torch.tensor([[[0, 0, 1, 1, 2, 2, 2, 0]]])
    pred = torch.tensor([[[0, 1, 1, 1, 2, 0, 2, 0]]])
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 50.0
    ious = []
    for c in range(3):
        inter = ((pred == c) & (target == c)).sum().item()
        union = ((pred == c) | (target == c)).sum().item()
        ious.append(inter / union)
    assert lovasz_softmax(logits, target).item() == pytest.approx(1 - np.mean(ious), abs=1e-5)


def test_lovasz_per_image_and_present_classes():
    logits, target = batch(h=5, w=7)
    per_image = lovasz_softmax(logits, target, per_image=True)
    separately = torch.stack([lovasz_softmax(logits[i : i + 1], target[i : i + 1]) for i in range(2)]).mean()
    assert torch.allclose(per_image, separately)
    only0 = torch.zeros(1, 2, 2, dtype=torch.long)
    z = torch.randn(1, 3, 2, 2, generator=gen(4))
    present = lovasz_softmax(z, only0)
    # an absent class has no foreground: its Jaccard loss is 1 from the first pixel on, so its Lovász loss is
    # its largest error, the largest probability given to it
    absent = F.softmax(z, 1)[0, 1:].amax(dim=(1, 2))
    assert torch.allclose(lovasz_softmax(z, only0, classes="all"), (present + absent.sum()) / 3, atol=1e-6)
    with pytest.raises(ConfigError):
        lovasz_softmax(z, only0, classes="some")


# --- focal loss --------------------------------------------------------------------------------------

def test_focal_loss_by_hand_and_gamma_zero_is_cross_entropy():
    logits = torch.tensor([[2.0, 0.0, -1.0]]).view(1, 3, 1, 1)
    target = torch.tensor([[[0]]])
    p = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    assert focal_loss(logits, target).item() == pytest.approx(-((1 - p) ** 2) * math.log(p), rel=1e-5)
    logits, target = batch()
    assert torch.allclose(focal_loss(logits, target, gamma=0.0), F.cross_entropy(logits, target, ignore_index=255),
                          atol=1e-6)


# --- GCL ---------------------------------------------------------------------------------------------

def test_gcl_cloud_subtracts_noise_scaled_by_log_qmax_over_qk():
    logits = torch.zeros(4, 4, 128, 128)
    shift = gcl_logits(logits, COUNTS, generator=gen(3))
    assert shift.max() <= 0
    assert torch.count_nonzero(shift[:, 0]) == 0  # (log n_max - log n_0) = 0 for the largest class
    q = np.log(COUNTS)
    scale = (q.max() - q) / (q.max() - q.min())
    sigma = 1 / 3  # E min(|δ|, 1), δ ~ N(0, 1/3): 2 (∫_0^1 x φ + P(δ > 1))
    body = sigma / math.sqrt(2 * math.pi) * (1 - math.exp(-1 / (2 * sigma**2)))
    tail = 0.5 * math.erfc(1 / (sigma * math.sqrt(2)))
    expected = -scale * 2 * (body + tail)
    assert np.allclose(shift.double().mean(dim=(0, 2, 3)).numpy(), expected, atol=3e-3)
    loss = GCLLoss(COUNTS, generator=gen(1))
    lg, tg = batch()
    assert not torch.allclose(loss(lg, tg), F.cross_entropy(lg, tg, ignore_index=255))
    loss.eval()
    assert torch.allclose(loss(lg, tg), F.cross_entropy(lg, tg, ignore_index=255), atol=1e-6)


# --- class re-weighting ------------------------------------------------------------------------------

def test_reweighting_is_inverse_frequency_divided_by_pixels():
    w = class_weights(COUNTS)
    assert w.mean().item() == pytest.approx(1.0)
    assert np.allclose((w * torch.tensor(COUNTS)).numpy(), (w[0] * COUNTS[0]).item(), rtol=1e-5)  # w ∝ 1/q
    logits, target = batch()
    valid = target != 255
    per_pixel = F.cross_entropy(logits, target, ignore_index=255, reduction="none")
    weights = w[target.clamp(max=3)] * valid
    direct = (weights * per_pixel).sum() / valid.sum()
    assert torch.allclose(reweighted_loss(logits, target, COUNTS), direct, atol=1e-6)
    all_pixels = (weights * per_pixel).sum() / target.numel()  # mmsegmentation's default average
    assert torch.allclose(reweighted_loss(logits, target, COUNTS, avg_non_ignore=False), all_pixels, atol=1e-6)


@pytest.mark.parametrize("name", ["ce", "la", "focal", "rw"])
def test_average_over_all_pixels_switch(name):
    logits, target = batch(ignore_rows=3)
    valid = build_loss(name, class_counts=COUNTS)(logits, target)
    everything = build_loss(name, class_counts=COUNTS, avg_non_ignore=False)(logits, target)
    share = (target != 255).float().mean()
    assert torch.allclose(everything, valid * share, atol=1e-6)


# --- RS: rare-class sampling -------------------------------------------------------------------------

class FakeLabels:
    def __init__(self, labels):
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def read_label(self, i):
        return self.labels[i]


def test_rare_class_probabilities_are_the_softmax_of_one_minus_share():
    totals = np.array([900.0, 90.0, 10.0, 0.0])
    p = rare_class_probabilities(totals, temperature=0.5)
    f = totals[:3] / 1000
    e = np.exp((1 - f) / 0.5)
    assert np.allclose(p[:3], e / e.sum()) and p[3] == 0
    assert rare_class_probabilities(totals)[2] > 0.99  # T = 0.01: almost always the rarest
    with pytest.raises(ConfigError):
        rare_class_probabilities(totals, temperature=0)


def test_rare_class_sampler_draws_as_it_says_and_repeats_with_a_generator():
    labels = [np.zeros((4, 4), np.uint8) for _ in range(6)]
    labels[1][:2] = 1  # 8 pixels of class 1
    labels[2][:1] = 1  # 4 pixels: not more than min_pixels=4
    labels[3][0, :3] = 2  # 3 pixels of class 2: too few
    labels[4][:3] = 2  # 12 pixels of class 2
    labels[5][:] = 255
    pixels = image_class_pixels(FakeLabels(labels), num_classes=3)
    assert pixels[1].tolist() == [8, 8, 0] and pixels[5].tolist() == [0, 0, 0]
    sampler = RareClassSampler(pixels, temperature=0.2, min_pixels=4, num_samples=20_000, generator=gen(0))
    # images holding more than 4 pixels: class 0 → {0, 1, 2, 3} (image 4 has exactly 4), class 1 → {1},
    # class 2 → {4}; image 5 is all ignore
    pc = rare_class_probabilities(pixels, temperature=0.2)
    expected = np.array([pc[0] / 4, pc[0] / 4 + pc[1], pc[0] / 4, pc[0] / 4, pc[2], 0.0])
    probs = sampler.image_probabilities()
    assert np.allclose(probs, expected) and probs.sum() == pytest.approx(1.0)
    draws = np.fromiter(iter(sampler), dtype=np.int64)
    freq = np.bincount(draws, minlength=6) / len(draws)
    assert np.allclose(freq, probs, atol=0.015)
    again = RareClassSampler(pixels, temperature=0.2, min_pixels=4, num_samples=50, generator=gen(0))
    again2 = RareClassSampler(pixels, temperature=0.2, min_pixels=4, num_samples=50, generator=gen(0))
    assert list(again) == list(again2) and len(again) == 50
    with pytest.raises(DatasetError):
        RareClassSampler(pixels, min_pixels=100)
    with pytest.raises(DatasetError):
        image_class_pixels(FakeLabels([np.full((2, 2), 7, np.uint8)]), num_classes=3)
