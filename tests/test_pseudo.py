"""Pseudo labelling: ST, CBST, DA, DARS in memory and streaming, against a sort-based reference.

Rounding stated by the library and checked here: n_j = ⌊α · N·H·W · r_j⌋ (floor); DARS keeps exactly
min(n_j, m_j) pixels of class j (m_j: pixels predicted j); DA/CBST keep every pixel tied at t_j.
"""

import json
import logging
import math

import numpy as np
import pytest
import torch

from blvnb.errors import BlvnbError, ConfigError
from blvnb.pseudo import distribution as D
from blvnb.pseudo import labelers as L
from blvnb.pseudo import rounds as R
from blvnb.pseudo import sampling as S
from blvnb.pseudo import streaming

PRIOR = torch.tensor([0.40, 0.25, 0.15, 0.08, 0.05, 0.04, 0.02, 0.01])


def heavy_ties(n=6, size=(24, 32), seed=0, dtype=torch.float16):
    """Float16 teacher outputs where head classes tie at exactly 1.0 (and elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    return D.synthetic_probabilities(n, size, PRIOR, generator=g, block=4, dtype=dtype)


def reference(probs, prior, alpha, rule="da"):
    """The released semantics, by sorting every confidence: per class (t_j, ñ_j, n_j)."""
    conf, pred = probs.max(1)
    conf, pred = conf.double().numpy().ravel(), pred.numpy().ravel()
    r = np.asarray(prior, dtype=np.float64)
    r = r / r.sum()
    total = pred.size
    out = []
    for j in range(probs.shape[1]):
        v = np.sort(conf[pred == j])[::-1]
        n = math.floor(alpha * total * r[j] * (1 + 1e-12)) if rule == "da" else math.floor(alpha * v.size * (1 + 1e-12))
        if v.size == 0 or n == 0:
            out.append((math.inf, 0, n))
            continue
        t = v[min(n, v.size) - 1]  # the n-th largest, or the smallest when fewer exist
        out.append((float(t), int((v >= t).sum()), n))
    return out


def test_float16_histogram_is_15361_values_wide():
    assert L.key_of_one(torch.float16) == 0x3C00
    h = L.ConfidenceHistogram.empty(19)
    assert tuple(h.counts.shape) == (19, 15361)
    assert h.values[-1] == 1.0 and h.values[0] == 0.0
    s = L.ThresholdSearch(19, torch.float16)
    assert tuple(s.hist.shape) == (19, 15361) and s.passes == 1
    assert L.ThresholdSearch(19, torch.float32).passes == 2


@pytest.mark.parametrize("method", ["da", "dars", "cbst"])
def test_thresholds_equal_sort_reference_with_heavy_ties(method):
    probs = heavy_ties()
    h = L.confidence_histogram(probs)
    assert float(h.exact_one_share[0]) > 0.3  # many exact 1.0s: the situation the test is about
    labels, th = L.pseudo_label_with_thresholds(probs, PRIOR, method=method, alpha=0.2,
                                                generator=torch.Generator().manual_seed(0))
    ref = reference(probs, PRIOR, 0.2, rule="cbst" if method == "cbst" else "da")
    assert th.values.tolist() == [t for t, _, _ in ref]
    assert th.passed.tolist() == [p for _, p, _ in ref]
    assert th.targets.tolist() == [n for _, _, n in ref]
    kept = L.kept_counts(labels, probs.shape[1])
    if method == "dars":
        # exactly n_j per class (all of them when the teacher predicts fewer)
        assert kept.tolist() == torch.minimum(th.targets, th.predicted).tolist()
    else:
        assert kept.tolist() == th.passed.tolist()  # every tied pixel kept
    assert any(p > n for _, p, n in ref)  # ties made DA keep more than n_j somewhere


def test_dars_follows_the_prior_and_st_does_not():
    probs = heavy_ties(n=8, size=(32, 48))
    kl = {}
    for m in L.METHODS:
        labels = L.pseudo_label(probs, PRIOR, method=m, alpha=0.2, generator=torch.Generator().manual_seed(1))
        kl[m] = D.kl_divergence(PRIOR, D.label_distribution(labels, PRIOR.numel()))
    assert kl["dars"] < 1e-3
    assert kl["st"] > 1e-2 and kl["st"] > kl["da"] > kl["dars"]


def test_target_counts_are_floored():
    assert L.target_counts([0.57, 0.43], 1.0, 100).tolist() == [57, 43]  # whole on paper: not rounded down
    assert L.target_counts([1, 2], 0.5, 10).tolist() == [1, 3]  # 5/3 → 1, 10/3 → 3
    assert L.target_counts([0.0, 1.0], 0.2, 7).tolist() == [0, 1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_without_ties_da_is_thresholding_at_t_j(dtype):
    g = torch.Generator().manual_seed(3)
    probs = (torch.randn(4, 5, 20, 30, generator=g, dtype=torch.float64) * 3).softmax(1).to(dtype)
    conf, pred = probs.max(1)
    assert conf.unique().numel() == conf.numel()  # no ties
    labels, th = L.distribution_alignment(probs, PRIOR[:5], alpha=0.3)
    ref = reference(probs, PRIOR[:5], 0.3)
    assert th.values.tolist() == [t for t, _, _ in ref]
    expect = torch.where(conf.double() >= th.values[pred], pred, torch.full_like(pred, 255))
    assert torch.equal(labels, expect)
    assert L.kept_counts(labels, 5).tolist() == torch.minimum(th.targets, th.predicted).tolist()
    # no ties: DARS drops nothing more than DA
    assert torch.equal(L.pseudo_label(probs, PRIOR[:5], method="dars", alpha=0.3), labels)


@pytest.mark.parametrize("method", L.METHODS)
def test_alpha_one_and_one_class_drops_nothing(method):
    probs = torch.ones(3, 1, 8, 9, dtype=torch.float16)
    labels = L.pseudo_label(probs, torch.tensor([1.0]), method=method, alpha=1.0, threshold=None)
    assert labels.dtype == torch.int64 and tuple(labels.shape) == (3, 8, 9)
    assert bool((labels == 0).all())


def test_class_never_predicted_is_handled_and_reported(caplog):
    probs = heavy_ties()
    probs[:, 2] = 0  # the teacher never predicts class 2
    with caplog.at_level(logging.WARNING, logger="blvnb.pseudo.labelers"):
        labels, th = L.pseudo_label_with_thresholds(probs, PRIOR, method="dars", alpha=0.2)
    assert th.never_predicted == [2] and 2 in th.short
    assert th.passed[2] == 0 and math.isinf(th.values[2]) and th.keep_ratio[2] == 1.0
    assert L.kept_counts(labels, 8)[2] == 0
    assert "class(es) [2]" in caplog.text
    d = th.to_dict()
    assert d["never_predicted"] == [2]
    assert L.Thresholds.from_dict(json.loads(json.dumps(d))).keys.tolist() == th.keys.tolist()


@pytest.mark.parametrize("strategy", [{}, {"replicas": 4, "compact": False}], ids=["cpu", "gpu-strategy"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_search_over_many_chunks_equals_one_pass(dtype, strategy):
    """Also with the GPU's strategies (replicated counts, no compaction in the refining passes), on the CPU."""
    probs = heavy_ties(n=5, seed=4, dtype=dtype) if dtype != torch.bfloat16 else heavy_ties(n=5, seed=4).to(dtype)
    conf, pred = probs.max(1)
    n = L.target_counts(PRIOR, 0.25, pred.numel())
    one = L.class_thresholds(conf, pred, n, 8)
    chunks = torch.randperm(conf.numel(), generator=torch.Generator().manual_seed(0)).tensor_split(37)
    s = L.ThresholdSearch(8, dtype, **strategy)
    while not s.done:
        for idx in chunks:
            s.update(conf.reshape(-1)[idx], pred.reshape(-1)[idx])
        s.finish_pass(n)
    for k in ("keys", "targets", "predicted", "passed"):
        assert torch.equal(s.result[k], getattr(one, k)), k


@pytest.mark.parametrize("method", L.METHODS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_streaming_labeler_agrees_with_pseudo_label(tmp_path, method, dtype):
    probs = heavy_ties(n=5, dtype=dtype)
    g = torch.Generator().manual_seed(7)
    seed = S.seed_from(torch.Generator().manual_seed(7))  # the seed pseudo_label draws from g
    labels, th = L.pseudo_label_with_thresholds(probs, PRIOR, method=method, alpha=0.2, generator=g)
    lab = L.StreamingLabeler(PRIOR, method=method, alpha=0.2, seed=seed, device="cpu", progress=False)
    report = lab.run(L.TensorSource(probs), tmp_path / "out")
    assert lab.thresholds.keys.tolist() == th.keys.tolist()
    if method != "st":
        assert lab.thresholds.passed.tolist() == th.passed.tolist()
    for i in range(probs.shape[0]):
        assert torch.equal(L.read_pseudo_label(tmp_path / "out" / f"{i:06d}.png"), labels[i])
    assert report.kept.tolist() == L.kept_counts(labels, 8).tolist()


def test_streaming_st_with_a_threshold_needs_one_pass(tmp_path):
    probs = heavy_ties(n=3)
    lab = L.StreamingLabeler(method="st", threshold=0.95, device="cpu", progress=False)
    report = lab.run(L.TensorSource(probs), tmp_path)
    assert lab.calls == 3
    expect = L.pseudo_label(probs, None, method="st", threshold=0.95)
    assert report.kept.tolist() == L.kept_counts(expect, 8).tolist()
    assert torch.equal(L.read_pseudo_label(tmp_path / "000002.png"), expect[2])


def test_pseudo_labels_are_reproducible_from_the_seed():
    probs = heavy_ties()
    a = L.pseudo_label(probs, PRIOR, generator=torch.Generator().manual_seed(11))
    b = L.pseudo_label(probs, PRIOR, generator=torch.Generator().manual_seed(11))
    c = L.pseudo_label(probs, PRIOR, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert L.kept_counts(a, 8).tolist() == L.kept_counts(c, 8).tolist()  # same counts, other pixels


def quota_reference(n, tot, seen, counts):
    """The sampling budget in Python integers: k_ij = ⌊n S_ij / ñ⌋ − ⌊n S_i−1,j / ñ⌋ (S capped at ñ), ≤ c_ij."""
    keep, seen = [], list(seen)
    for row in counts:
        out = []
        for j, c in enumerate(row):
            s0, s1 = seen[j], seen[j] + c
            if tot[j] <= 0 or n[j] >= tot[j]:
                k = c
            else:
                k = n[j] * min(s1, tot[j]) // tot[j] - n[j] * min(s0, tot[j]) // tot[j]
            out.append(min(k, c))
            seen[j] = s1
        keep.append(out)
    return keep


def test_quota_on_the_device_is_exact_integer_arithmetic():
    g = np.random.default_rng(0)
    big = 8 * 10**9  # n_j · S_j ≈ 2 · 10¹⁹, beyond int64: the (q, r) state must stay exact
    n = [3, 0, 7, 50, big // 3, 10, 4]
    tot = [10, 5, 7, 40, big, 0, 9]  # s_j < 1, n_j = 0, s_j = 1, n_j > ñ_j, huge, nothing passed, …
    seen0 = [0, 0, 0, 0, big - 10**7, 0, 0]
    counts = g.integers(0, 4, size=(12, 7)).tolist()
    for row in counts:
        row[4] = int(g.integers(0, 2 * 10**6))
    counts[5][6] = 20  # more than passed in pass 1 (a source that is not deterministic)
    expect = quota_reference(n, tot, seen0, counts)
    for step in (1, 5, 12):  # batches of images: same budget
        q = S.Quota(n, tot, seen0)
        got = []
        for a in range(0, 12, step):
            got += q.take(torch.tensor(counts[a:a + step])).tolist()
        assert got == expect
    # resuming from the counts seen so far continues the same budget
    seen = [s + sum(r[j] for r in counts[:7]) for j, s in enumerate(seen0)]
    assert S.Quota(n, tot, seen).take(torch.tensor(counts[7:])).tolist() == expect[7:]


def test_gpu_sampling_on_cpu_tensors_is_exact_and_independent_of_the_batch():
    """The sort-based sampling used on a GPU (run here on CPU tensors)."""
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (5, 300), generator=g).to(torch.uint8)
    labels[labels == 3] = 255  # ignored pixels stay ignored
    groups, counts = S.group_counts(labels, 3)  # 3 classes and "not labelled"
    keep = (counts * torch.tensor([0.5, 1.0, 0.1, 1.0])).long()  # class 1: nothing to drop
    whole = labels.clone()
    S._thin_torch(whole, groups, counts, keep, seed=9, first=10)
    assert S.group_counts(whole, 3)[1][:, :3].tolist() == keep[:, :3].tolist()
    assert bool(((whole == labels) | (whole == 255)).all())  # only drops, and class 1 untouched
    assert torch.equal(whole == 1, labels == 1)
    parts = labels.clone()
    for a, b in ((0, 2), (2, 3), (3, 5)):  # the same images in other batches: the same pixels
        S._thin_torch(parts[a:b], None, counts[a:b], keep[a:b], seed=9, first=10 + a)
    assert torch.equal(parts, whole)
    other = labels.clone()
    S._thin_torch(other, groups, counts, keep, seed=8, first=10)
    assert not torch.equal(other, whole)
    # uniform: over many seeds, every candidate kept about k / c of the time
    one = torch.zeros(1, 40, dtype=torch.uint8)
    kept = torch.zeros(40)
    for seed in range(2000):
        x = one.clone()
        S._thin_torch(x, None, torch.tensor([[40, 0]]), torch.tensor([[10, 0]]), seed=seed, first=0)
        kept += (x[0] == 0).float()
    assert (kept.sum() == 2000 * 10) and float((kept / 2000 - 0.25).abs().max()) < 0.06


class ListSource:
    """Images of different sizes, one C×H×W tensor each."""

    def __init__(self, images):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@pytest.mark.parametrize("sampler", ["numpy", "torch"])  # torch: the GPU's sampling, on the CPU
def test_streaming_labels_do_not_depend_on_the_batch(monkeypatch, sampler):
    if sampler == "torch":
        monkeypatch.setattr(streaming, "thin", S._thin_torch)
    a, b = heavy_ties(n=5, size=(24, 32), seed=1), heavy_ties(n=4, size=(16, 40), seed=2)
    images = [a[0], a[1], b[0], a[2], a[3], a[4], b[1], b[2], b[3]]  # two sizes, interleaved
    out = {}
    for batch in (1, 2, 4, None):
        lab = L.StreamingLabeler(PRIOR, seed=4, device="cpu", progress=False, batch=batch)
        report = lab.run(ListSource(images), None)
        assert report.kept.tolist() == torch.minimum(lab.thresholds.targets, lab.thresholds.predicted).tolist()
        assert lab.calls == 2 * len(images)  # each image once per pass, whatever the batches
        out[batch] = [x for _, x, _, _ in lab.labels(ListSource(images))]
    for batch in (2, 4, None):
        assert all(torch.equal(x, y) for x, y in zip(out[1], out[batch]))


class Flaky(L.TensorSource):
    """A source that fails once when asked for image ``fail_at`` for the ``fail_on``-th time."""

    def __init__(self, probs, fail_at, fail_on):
        super().__init__(probs)
        self.asked, self.fail_at, self.fail_on = {}, fail_at, fail_on

    def __getitem__(self, i):
        self.asked[i] = self.asked.get(i, 0) + 1
        if i == self.fail_at and self.asked[i] == self.fail_on:
            raise KeyboardInterrupt("simulated interruption")
        return super().__getitem__(i)


@pytest.mark.parametrize("fail_on", [1, 2])  # interrupted in pass 1, or in pass 2
@pytest.mark.parametrize("batch", [1, 4])  # batches of 4: images 0-3 finished, the batch of 4-5 interrupted
def test_streaming_resumes_without_redoing_finished_images(tmp_path, fail_on, batch):
    probs = heavy_ties(n=6)
    clean = L.StreamingLabeler(PRIOR, seed=3, device="cpu", progress=False).run(L.TensorSource(probs), tmp_path / "a")
    src = Flaky(probs, fail_at=4, fail_on=fail_on)
    kw = dict(seed=3, device="cpu", progress=False, state_dir=tmp_path / "state", batch=batch)
    with pytest.raises(KeyboardInterrupt):
        L.StreamingLabeler(PRIOR, **kw).run(src, tmp_path / "b")
    again = L.StreamingLabeler(PRIOR, **kw)
    report = again.run(src, tmp_path / "b")
    # pass 1 visited every image once; pass 2 only what was not finished before the interruption
    assert again.calls == (6 + 2 if fail_on == 1 else 2)
    assert src.asked == {0: 2, 1: 2, 2: 2, 3: 2, 4: 3, 5: 2}
    assert report.kept.tolist() == clean.kept.tolist()
    for i in range(6):
        assert torch.equal(L.read_pseudo_label(tmp_path / "b" / f"{i:06d}.png"),
                           L.read_pseudo_label(tmp_path / "a" / f"{i:06d}.png"))


@pytest.mark.parametrize("batch", [1, 3])  # 3: a full batch and a partial one
def test_cache_serves_the_second_pass(tmp_path, batch):
    probs = heavy_ties(n=4, dtype=torch.float32)  # float32: two threshold passes + the labelling pass
    lab = L.StreamingLabeler(PRIOR, device="cpu", progress=False, cache_dir=tmp_path / "cache", batch=batch)
    report = lab.run(L.TensorSource(probs), None)
    assert lab.calls == 4
    plain = L.StreamingLabeler(PRIOR, device="cpu", progress=False).run(L.TensorSource(probs), None)
    assert report.kept.tolist() == plain.kept.tolist()
    assert report.thresholds.keys.tolist() == plain.thresholds.keys.tolist()


def test_st_threshold_and_ratio():
    probs = heavy_ties()
    conf, pred = probs.max(1)
    labels = L.pseudo_label(probs, None, method="st", threshold=0.9)
    assert torch.equal(labels, torch.where(conf >= 0.9, pred, torch.full_like(pred, 255)))
    labels, th = L.self_training(probs, alpha=0.2)
    assert th.targets.tolist() == [math.floor(0.2 * pred.numel())]
    assert (labels != 255).sum() >= th.targets[0]  # ties at t kept
    assert len(set(th.keys.tolist())) == 1


def test_bad_inputs_say_what_is_expected():
    probs = heavy_ties(n=2)
    with pytest.raises(BlvnbError, match="softmax"):
        L.pseudo_label(torch.randn(2, 8, 4, 4) * 5, PRIOR)
    with pytest.raises(ConfigError, match="method"):
        L.pseudo_label(probs, PRIOR, method="fixmatch")
    with pytest.raises(ConfigError, match="alpha"):
        L.pseudo_label(probs, PRIOR, alpha=0)
    with pytest.raises(ConfigError, match="8 classes"):
        L.pseudo_label(probs, PRIOR[:5])
    with pytest.raises(ConfigError, match="prior"):
        L.pseudo_label(probs, None, method="dars")


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@CUDA
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_cuda_thresholds_counts_and_streaming(tmp_path, dtype):
    probs = heavy_ties(n=5, dtype=dtype)
    _, cpu = L.pseudo_label_with_thresholds(probs, PRIOR, method="da", alpha=0.2)
    gpu = probs.cuda()
    labels, th = L.pseudo_label_with_thresholds(gpu, PRIOR, method="dars", alpha=0.2,
                                                generator=torch.Generator("cuda").manual_seed(5))
    assert labels.is_cuda and th.keys.tolist() == cpu.keys.tolist() and th.passed.tolist() == cpu.passed.tolist()
    assert L.kept_counts(labels, 8).tolist() == torch.minimum(th.targets, th.predicted).tolist()
    again = L.pseudo_label(gpu, PRIOR, generator=torch.Generator("cuda").manual_seed(5))
    assert torch.equal(labels, again)
    seed = S.seed_from(torch.Generator("cuda").manual_seed(5))
    for batch in (1, 2, None):  # the labels do not depend on how many images go at once
        lab = L.StreamingLabeler(PRIOR, seed=seed, device="cuda", progress=False, batch=batch)
        report = lab.run(L.TensorSource(gpu), tmp_path / str(batch))
        assert report.kept.tolist() == L.kept_counts(labels, 8).tolist()
        assert lab.seconds["pass1"] > 0 and lab.seconds["pass2"] > 0
        for i in range(5):
            assert torch.equal(L.read_pseudo_label(tmp_path / str(batch) / f"{i:06d}.png"), labels[i].cpu())


# --- priors and distributions --------------------------------------------------------------------------

def test_kl_divergence():
    assert D.kl_divergence([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert D.kl_divergence([1, 1], [1, 3]) == pytest.approx(0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75))
    assert D.kl_divergence([0.5, 0.5], [1.0, 0.0], eps=0) == math.inf
    assert math.isfinite(D.kl_divergence([0.5, 0.5], [1.0, 0.0]))


def test_priors_from_labels_and_eq4_reestimation():
    labels = [np.array([[0, 0, 1], [255, 2, 2]]), torch.tensor([[1, 1, 255]])]
    assert D.labeled_prior(labels, 3).tolist() == pytest.approx([2 / 7, 3 / 7, 2 / 7])
    assert D.source_domain_prior(labels, 3).tolist() == D.target_validation_prior(labels, 3).tolist()
    probs = torch.zeros(1, 3, 2, 2)
    probs[0, 2] = 1
    probs[0, 0, 0, 0] = 2  # one pixel predicted 0
    assert D.reestimated_prior([probs], 3, class_dim=1).tolist() == [0.25, 0.0, 0.75]
    with pytest.raises(ConfigError):
        D.reestimated_prior([probs], 3)


def test_progressive_schedule_of_the_released_configs():
    r1, r2 = R.released_schedule("cityscapes-1/8-crop361")
    assert (r1.alpha, r1.scale_range) == (0.2, (0.25, 1.0))
    assert (r2.alpha, r2.scale_range, r2.beta_min, r2.beta_max) == (0.5, (0.2, 1.5), 0.2, 0.5)
    assert R.widen_scale_range((0.5, 2.0), 0.0, 0.5) == (0.5, 3.0)
    with pytest.raises(ConfigError):
        R.released_schedule("voc")


@pytest.mark.parametrize("bad", [-0.1, 1.5, 2, float("nan"), float("inf"), "0.9", True])
def test_st_threshold_outside_0_1_is_refused_naming_the_value(bad):
    """Issue 14 #5: ST with a threshold outside [0, 1] used to label 0 % or 100 % of the pixels silently."""
    probs = heavy_ties(n=2)
    with pytest.raises(ConfigError, match=r"\[0, 1\]") as e:
        L.pseudo_label(probs, None, method="st", threshold=bad)
    assert repr(bad) in str(e.value)
    with pytest.raises(ConfigError, match=r"\[0, 1\]") as e:
        L.StreamingLabeler(method="st", threshold=bad, device="cpu", progress=False)
    assert repr(bad) in str(e.value)


@pytest.mark.parametrize("edge", [0, 0.0, 1, 1.0])
def test_st_threshold_at_the_ends_of_0_1_is_accepted(edge):
    probs = heavy_ties(n=2)
    labels = L.pseudo_label(probs, None, method="st", threshold=edge)
    assert labels.shape == probs[:, 0].shape
