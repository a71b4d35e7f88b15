"""blvnb's DARS labeller against the lines of the authors' released code (tests/vendor/dars_release_labels.py,
CVMI-Lab/DARS @ 0cfe09a, Apache-2.0): issue 15 items 3 (n_j = 0), 4 (seeding) and 5 (the released budgets)."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from blvnb.pseudo import labelers as L
from blvnb.pseudo.sampling import apply_thresholds
from blvnb.pseudo.thresholds import class_thresholds, confidence, target_counts

_spec = importlib.util.spec_from_file_location("dars_release_labels",
                                               Path(__file__).parent / "vendor" / "dars_release_labels.py")
REL = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REL)

PRIOR = REL.class_ratio_prior_list  # the released Cityscapes 1/8 class percentages
CITYSCAPES_1_8 = REL.all_pixel_num * REL.GLOBAL_NUM  # N_u · H · W of the released round 1


def test_the_released_prior_sums_to_88_0549_not_its_valid_ratio():
    assert math.fsum(PRIOR) == pytest.approx(88.0549, abs=1e-9)
    assert REL.valid_ratio == 88.04


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.5, 0.65])
def test_prior_total_reproduces_the_released_budgets_exactly(alpha):
    released = [REL.class_j_num_of(j, labeling_ratio=alpha) for j in range(19)]
    ours = target_counts(PRIOR, alpha, CITYSCAPES_1_8, prior_total=REL.valid_ratio)
    assert ours.tolist() == released
    # a normalised prior gives budgets 0.017 % smaller (road at α = 0.2: 67,296 pixels fewer)
    normalised = target_counts(PRIOR, alpha, CITYSCAPES_1_8)
    assert float(ours.sum()) / float(normalised.sum()) - 1 == pytest.approx(88.0549 / 88.04 - 1, rel=1e-3)
    if alpha == 0.2:
        assert int(ours[0] - normalised[0]) == 67_296


def _teacher(n=3, size=(16, 32), c=19, seed=0):
    """Float16 probabilities (H·W a power of two, so that N_u·H·W is exactly the released N_u × (H·W))."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, *size, generator=g) * 4
    logits[:, 0] += 6  # a head class with many ties at 1.0
    return logits.to(torch.float16).softmax(1)


def test_the_labeller_with_prior_total_uses_the_released_budgets():
    probs = _teacher()
    n, _, h, w = probs.shape
    _, th = L.pseudo_label_with_thresholds(probs, PRIOR, method="dars", alpha=0.2, prior_total=REL.valid_ratio,
                                           generator=torch.Generator().manual_seed(0))
    expect = [REL.class_j_num_of(j, labeling_ratio=0.2, global_num=n, all_pixel_num=h * w) for j in range(19)]
    assert th.targets.tolist() == expect
    streamed = L.StreamingLabeler(PRIOR, alpha=0.2, prior_total=REL.valid_ratio, device="cpu", progress=False)
    assert streamed.fit(L.TensorSource(probs)).targets.tolist() == expect
    with pytest.raises(Exception, match="prior_total"):
        target_counts(PRIOR, 0.2, 100, prior_total=-1)


def test_thresholds_and_keep_ratios_equal_the_released_ones():
    probs = _teacher(seed=1)
    conf, pred = confidence(probs)
    n = target_counts(PRIOR, 0.2, pred.numel(), prior_total=REL.valid_ratio)
    th = class_thresholds(conf, pred, n, 19)
    for j in range(19):
        cj = conf[pred == j].to(torch.float16).numpy()
        if cj.size == 0 or int(n[j]) == 0:
            continue
        t, s = REL.threshold_and_sampling_ratio(cj, int(n[j]))
        assert float(th.values[j]) == t, j
        assert float(th.keep_ratio[j]) == pytest.approx(s, rel=1e-12), j


def test_a_class_with_no_budget_ends_with_no_label_in_both():
    """Issue 15 #3: with n_j = 0 the released threshold (index n_j − 1 = −1: the smallest confidence) lets
    every pixel predicted j pass, but its keep ratio s_j = 0 then drops them all: the final labels have no
    pixel of j, as ours (t_j = +inf)."""
    probs = _teacher(n=1, seed=2)
    conf, pred = confidence(probs)
    j = int(pred.flatten()[0])
    cj = conf[pred == j].numpy()
    t, s = REL.threshold_and_sampling_ratio(cj, 0)
    assert t == float(cj.min()) and s == 0.0  # its thresholding keeps all of class j …
    thresholds = [0.0] * 19
    thresholds[j] = t
    ratios = [1.0] * 19
    ratios[j] = s
    after_threshold = pred[0].clone()
    kept_by_threshold = int((after_threshold == j).sum())
    assert kept_by_threshold > 0
    released = REL.second_forward_labels(pred[0], conf[0], thresholds, ratios, 19)
    assert int((released == j).sum()) == 0  # … and its sampling drops them all
    prior = [1.0] * 19
    prior[j] = 0.0
    ours = L.pseudo_label(probs, prior, method="dars", alpha=0.5, generator=torch.Generator().manual_seed(0))
    assert int((ours == j).sum()) == 0
    th = L.pseudo_label_with_thresholds(probs, prior, method="da", alpha=0.5)[1]
    assert math.isinf(float(th.values[j]))
    assert int((apply_thresholds(conf, pred, th) == j).sum()) == 0


def test_the_released_sampling_is_seeded_once_per_run_not_per_image():
    """Issue 15 #4: the released script seeds torch once (manual_seed: 1), then each image's randperm draws
    from that one stream: two runs agree, but an image's labels depend on the images labelled before it."""
    probs = _teacher(n=2, seed=3)
    conf, pred = confidence(probs)
    thresholds, ratios = [0.0] * 19, [0.5] * 19
    assert REL.MANUAL_SEED == 1

    def run(images):
        REL.seed_once_per_run()
        return [REL.second_forward_labels(pred[i], conf[i], thresholds, ratios, 19) for i in images]

    first, again = run([0, 1]), run([0, 1])
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # seeded: repeatable run to run
    alone = run([1])[0]
    assert not torch.equal(first[1], alone)  # image 1 after image 0 ≠ image 1 first: one stream per run
    # ours: image i's random subset is drawn from a generator seeded by (seed, i): the same in batches of 1 or 2
    source = L.TensorSource(probs)
    lab = L.StreamingLabeler(PRIOR, alpha=0.5, seed=7, device="cpu", progress=False, batch=1)
    both = [x for _, x, _, _ in lab.labels(source)]
    lab2 = L.StreamingLabeler(PRIOR, alpha=0.5, seed=7, device="cpu", progress=False, batch=2)
    assert all(torch.equal(a, b) for a, b in zip(both, [x for _, x, _, _ in lab2.labels(source)]))
