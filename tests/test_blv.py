"""BLV (Eq. (3), Algorithm 1, the released loss): exact where it can be, Monte Carlo where it is random."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blvnb.errors import BlvnbError, ConfigError
from blvnb.losses import build_loss, list_losses
from blvnb.losses import frequencies as fq
from blvnb.losses.blv import (
    BLVLoss,
    SigmaSchedule,
    balance_scale,
    blv_logits,
    blv_loss,
    cross_entropy,
    sample_variation,
    variation_moments,
)

# four classes, a long tail: class 3 is the rarest, class 0 the most frequent
COUNTS = [700_000.0, 200_000.0, 90_000.0, 10_000.0]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def c_over_max(counts):
    """Eq. (3)'s weight, recomputed here in float64 from its definition."""
    q = np.asarray(counts, dtype=np.float64)
    c = np.log(q.sum() / q)
    return c / c.max()


def phi_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def gaussian_mean(sigma, clamp):
    """E of the clipped |δ|, δ ~ N(0, σ): ∫_0^1 x φ_σ(x) dx + P(δ > 1), doubled when clamped to [-1, 1]."""
    body = sigma / math.sqrt(2 * math.pi) * (1 - math.exp(-1 / (2 * sigma**2)))
    tail = 1 - phi_cdf(1 / sigma)
    return (body + tail) * (1 if clamp == "paper" else 2)


# (mean, E[x^2]) of each distribution clipped to [0, 1]; None: not checked
EXACT = {
    ("gaussian", "paper", 6.0): (gaussian_mean(6.0, "paper"), None),
    ("gaussian", "released", 6.0): (gaussian_mean(6.0, "released"), None),
    ("gaussian", "paper", 0.5): (gaussian_mean(0.5, "paper"), None),
    ("gaussian", "released", 0.5): (gaussian_mean(0.5, "released"), None),
    ("uniform", "paper", 6.0): (0.5, 1 / 3),
    ("beta", "paper", 6.0): (0.5, 3 / 8),  # Beta(1/2, 1/2): var 1/8
    ("exponential", "paper", 6.0): (1 - math.exp(-1), 2 - 4 / math.e),  # E[min(X, 1)^2] = 2 - 4/e
    ("exponential", "released", 6.0): (1 - math.exp(-1), 2 - 4 / math.e),
}


# --- Eq. (3) without randomness ----------------------------------------------------------------------

def test_equals_cross_entropy_without_variation_and_equal_counts():
    g = gen()
    logits = torch.randn(2, 4, 8, 16, generator=g)
    target = torch.randint(0, 4, (2, 8, 16), generator=g)
    target[0, :3] = 255
    blv = blv_loss(logits, target, [5.0, 5.0, 5.0, 5.0], variation=False)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(blv, ce, rtol=1e-6, atol=1e-6)
    # "w/o variation" adds the constant c_k / max c: with equal counts that is 1 for every class
    assert torch.allclose(blv_logits(logits, [5.0] * 4, variation=False), logits + 1)
    # and without the balance term too, any counts give cross entropy
    both_off = blv_loss(logits, target, COUNTS, variation=False, balance="none")
    assert torch.allclose(both_off, ce, rtol=1e-6, atol=1e-6)


def test_balance_scale_is_eq3_released_is_eq3_and_first_upload_differs():
    assert np.allclose(balance_scale(COUNTS).numpy(), c_over_max(COUNTS), atol=1e-7)
    assert np.allclose(balance_scale(COUNTS, False).numpy(), 1.0)
    # the current release (e08cc6c) uses Eq. (3)'s weight
    assert np.allclose(balance_scale(COUNTS, "released").numpy(), c_over_max(COUNTS), atol=1e-7)
    first = balance_scale(COUNTS, "first-upload").numpy()
    q = np.log(np.asarray(COUNTS))
    assert np.allclose(first, (q.max() - q) / (q.max() - q.min()), atol=1e-7)
    assert first[0] == 0 and balance_scale(COUNTS).numpy()[0] > 0  # the first upload drops the largest class
    # counts and shares (Eq. (4)'s normalised q) give the same weights
    shares = np.asarray(COUNTS) / sum(COUNTS)
    assert np.allclose(balance_scale(shares).numpy(), balance_scale(COUNTS).numpy(), atol=1e-7)


# --- against the authors' released loss (tests/vendor/blv_release_loss.py) ---------------------------

def _vendored():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parent / "vendor" / "blv_release_loss.py"
    spec = importlib.util.spec_from_file_location("blv_release_loss", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _Injected:
    """Stands in for the release's ``torch.distributions.Normal``: ``sample(shape)`` returns given noise."""

    def __init__(self, delta):
        self.delta = delta

    def sample(self, shape):
        assert tuple(shape) == tuple(self.delta.shape)
        return self.delta.clone()


def _released_inputs(seed=0, shape=(2, 19, 12, 20), sigma=4.0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=g, dtype=torch.float32)
    target = torch.randint(0, shape[1], (shape[0], *shape[2:]), generator=g)
    target[:, :3] = 255  # ignored pixels: the release averages over all pixels, these included
    # δ ~ N(0, σ), drawn exactly as blvnb draws it from a generator seeded with `seed + 1` (one call of
    # normal_ for a tensor this small), so both losses see the same noise
    from blvnb.losses.blv import CPU_CHUNK

    assert math.prod(shape) <= CPU_CHUNK
    delta = torch.empty(shape, dtype=torch.float32).normal_(0.0, sigma, generator=gen(seed + 1))
    return logits, target, delta


def test_current_release_crashes_on_the_plain_list_its_configs_pass_and_first_upload_builds():
    rel = _vendored()
    with pytest.raises(TypeError, match="Tensor"):
        rel.BlvLossE08cc6c(rel.RELEASED_CLS_NUM_LIST, sigma=4)
    rel.BlvLoss494d428(rel.RELEASED_CLS_NUM_LIST, sigma=4)  # the first upload builds from the list


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_released_mode_equals_the_current_release_given_the_same_noise(seed):
    from blvnb.losses.blv import RELEASED_OPTIONS

    rel = _vendored()
    counts = rel.RELEASED_CLS_NUM_LIST
    logits, target, delta = _released_inputs(seed)
    # the current release only builds from a float32 tensor of counts (see the test above)
    theirs_fn = rel.BlvLossE08cc6c(torch.tensor(counts, dtype=torch.float32), sigma=4)
    theirs_fn.sampler = _Injected(delta)
    x1 = logits.clone().requires_grad_(True)
    theirs = theirs_fn(x1, target, ignore_index=255)
    theirs.backward()

    x2 = logits.clone().requires_grad_(True)
    ours = blv_loss(x2, target, counts, generator=gen(seed + 1), **RELEASED_OPTIONS)
    ours.backward()
    assert RELEASED_OPTIONS == {"sigma": 4.0, "clamp": "released", "balance": "released", "avg_non_ignore": False}
    assert abs(float(ours.detach()) - float(theirs.detach())) <= 1e-6 * abs(float(theirs.detach()))
    assert torch.allclose(x2.grad, x1.grad, rtol=1e-5, atol=1e-9)
    # and the same perturbed logits, offset by offset
    scale = torch.log(torch.tensor(counts, dtype=torch.float64).sum()) - torch.log(torch.tensor(counts, dtype=torch.float64))
    expected = logits.double() + delta.double().clamp(-1, 1).abs() * (scale / scale.max()).view(1, -1, 1, 1)
    got = blv_logits(logits, counts, sigma=4.0, clamp="released", balance="released", generator=gen(seed + 1))
    assert torch.allclose(got.double(), expected, atol=1e-5)


@pytest.mark.parametrize("seed", [0, 1])
def test_first_upload_mode_equals_the_first_upload_and_differs_from_the_current_release(seed):
    rel = _vendored()
    counts = rel.RELEASED_CLS_NUM_LIST
    logits, target, delta = _released_inputs(seed)
    first = rel.BlvLoss494d428(counts, sigma=4)
    first.sampler = _Injected(delta)
    theirs = float(first(logits, target, ignore_index=255))
    ours = float(blv_loss(logits, target, counts, sigma=4.0, clamp="released", balance="first-upload",
                          avg_non_ignore=False, generator=gen(seed + 1)))
    assert abs(ours - theirs) <= 1e-6 * abs(theirs)
    current = rel.BlvLossE08cc6c(torch.tensor(counts, dtype=torch.float32), sigma=4)
    current.sampler = _Injected(delta)
    assert abs(float(current(logits, target, ignore_index=255)) - theirs) > 1e-4 * abs(theirs)
    # the two weights move the perturbed logits apart by up to ~0.1 (the released configs' counts)
    a = blv_logits(logits, counts, sigma=4.0, clamp="released", balance="released", generator=gen(seed + 1))
    b = blv_logits(logits, counts, sigma=4.0, clamp="released", balance="first-upload", generator=gen(seed + 1))
    assert 0.05 < float((a - b).abs().max()) < 0.2


def test_zero_count_class_is_finite_and_as_rare_as_the_rarest():
    counts = [1000.0, 0.0, 10.0, 300.0]
    scale = balance_scale(counts)
    assert torch.isfinite(scale).all()
    assert scale[1] == scale[2] == 1.0
    assert torch.equal(fq.fill_zero_counts(counts), torch.tensor([1000.0, 10.0, 10.0, 300.0], dtype=torch.float64))
    logits = torch.zeros(1, 4, 4, 4, requires_grad=True)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    loss = blv_loss(logits, target, counts, generator=gen())
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    for bad in ([0, 0, 0], [1, -1, 2], [1.0, float("nan")], [[1, 2], [3, 4]]):
        with pytest.raises(ConfigError):
            balance_scale(bad)


def test_all_ignore_batch_gives_zero_loss_and_zero_gradient():
    logits = torch.randn(2, 4, 6, 6, requires_grad=True)
    target = torch.full((2, 6, 6), 255)
    for loss in (blv_loss(logits, target, COUNTS, generator=gen()), BLVLoss(COUNTS)(logits, target),
                 blv_loss(logits, target, COUNTS, avg_non_ignore=False)):
        assert loss.item() == 0.0
        (g,) = torch.autograd.grad(loss, logits)
        assert torch.count_nonzero(g) == 0 and torch.isfinite(g).all()


# --- the noise ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution,clamp,sigma", list(EXACT))
def test_mean_offset_per_class_matches_its_expectation(distribution, clamp, sigma):
    """The offset added to class k's logit averages (c_k / max c) · E|δ|_clipped; a wrong clamp order halves
    or doubles the Gaussian's mean, a wrong scale moves the head classes' means."""
    logits = torch.zeros(4, 4, 256, 512)  # 524 288 draws per class, in two chunks drawn in parallel on a CPU
    offset = blv_logits(logits, COUNTS, sigma=sigma, clamp=clamp, distribution=distribution, generator=gen(1))
    mean, second = EXACT[(distribution, clamp, sigma)]
    per_class = offset.double().mean(dim=(0, 2, 3)).numpy()
    scale = c_over_max(COUNTS)
    assert np.allclose(per_class, scale * mean, atol=4e-3), (per_class, scale * mean)
    assert abs(variation_moments(distribution, clamp, sigma)["mean"] - mean) < 1e-12
    delta = offset[:, 3].double()  # the rarest class: scale 1, so the offset is the clipped |δ| itself
    assert delta.min() >= 0 and delta.max() <= 1
    if second is not None:
        assert abs((delta**2).mean().item() - second) < 4e-3
    if distribution == "gaussian":
        p0, p1 = (delta == 0).double().mean().item(), (delta == 1).double().mean().item()
        tail = 1 - phi_cdf(1 / sigma)
        assert abs(p0 - (0.5 if clamp == "paper" else 0.0)) < 4e-3  # Algorithm 1: negative draws become 0
        assert abs(p1 - tail * (1 if clamp == "paper" else 2)) < 4e-3


def test_offsets_nonnegative_largest_for_rarest_zero_in_eval():
    logits = torch.randn(2, 4, 32, 32, generator=gen())
    offset = blv_logits(logits, COUNTS, generator=gen(2)) - logits
    assert offset.min() >= 0
    per_class = offset.mean(dim=(0, 2, 3))
    assert int(per_class.argmax()) == 3 and torch.all(per_class[1:] > per_class[:-1])
    target = torch.randint(0, 4, (2, 32, 32), generator=gen(3))
    loss = BLVLoss(COUNTS, generator=gen(4))
    train_value = loss(logits, target)
    loss.eval()
    assert torch.equal(loss(logits, target), cross_entropy(logits, target))
    assert not torch.allclose(train_value, loss(logits, target))


def test_gradient_flows_to_the_logits_unchanged():
    """d loss / d z = d CE / d ẑ: the offset is a constant shift."""
    logits = torch.randn(2, 4, 8, 8, generator=gen(), requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), generator=gen(1))
    blv_loss(logits, target, COUNTS, generator=gen(5)).backward()
    z_hat = blv_logits(logits.detach(), COUNTS, generator=gen(5)).requires_grad_()
    F.cross_entropy(z_hat, target).backward()
    assert torch.count_nonzero(logits.grad) > 0
    assert torch.allclose(logits.grad, z_hat.grad, atol=1e-7)


def test_bf16_and_fp32_agree_and_keep_their_dtype():
    logits = torch.randn(2, 4, 64, 64, generator=gen())
    target = torch.randint(0, 4, (2, 64, 64), generator=gen(1))
    z32 = blv_logits(logits, COUNTS, generator=gen(7))
    z16 = blv_logits(logits.bfloat16(), COUNTS, generator=gen(7))
    assert z32.dtype == torch.float32 and z16.dtype == torch.bfloat16 and z16.shape == logits.shape
    assert torch.allclose(z16.float(), z32, atol=5e-2)
    l32 = blv_loss(logits, target, COUNTS, generator=gen(7))
    l16 = blv_loss(logits.bfloat16(), target, COUNTS, generator=gen(7))
    assert abs(l16.float().item() - l32.item()) < 1e-2 * l32.item()
    assert blv_logits(logits.half(), COUNTS, generator=gen(7)).dtype == torch.float16


def test_parallel_cpu_draw_is_reproducible_independent_and_thread_count_free():
    """Above CPU_CHUNK elements the noise is drawn in chunks by threads: the result depends on the
    generator only (not on the number of threads), and the chunks are independent streams."""
    from blvnb.losses.blv import CPU_CHUNK

    shape = (3, CPU_CHUNK)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = sample_variation(shape, distribution="uniform", generator=gen(3))
        torch.set_num_threads(max(2, threads))
        many = sample_variation(shape, distribution="uniform", generator=gen(3))
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    assert not torch.equal(many, sample_variation(shape, distribution="uniform", generator=gen(4)))
    a, b, c = many.double()
    for x, y in ((a, b), (b, c), (a, c)):  # uncorrelated, not one stream repeated or shifted by one
        assert abs(np.corrcoef(x.numpy(), y.numpy())[0, 1]) < 0.01
        assert abs(np.corrcoef(x[1:].numpy(), y[:-1].numpy())[0, 1]) < 0.01
    assert abs(a.mean().item() - 0.5) < 2e-3 and abs(c.var().item() - 1 / 12) < 2e-3


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (4, 19, 64, 128), (2, 19, 128, 256)])
def test_generator_makes_it_reproducible(shape):
    logits = torch.zeros(shape)
    a = blv_logits(logits, [1.0 + i for i in range(shape[1])], generator=gen(11))
    b = blv_logits(logits, [1.0 + i for i in range(shape[1])], generator=gen(11))
    c = blv_logits(logits, [1.0 + i for i in range(shape[1])], generator=gen(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(0)
    d = sample_variation(shape)
    torch.manual_seed(0)
    assert torch.equal(d, sample_variation(shape))  # without a generator: the global RNG


def test_noise_is_drawn_at_label_size_after_resizing():
    logits = torch.randn(2, 4, 4, 8, generator=gen())  # a head's 1/4 resolution
    target = torch.randint(0, 4, (2, 16, 32), generator=gen(1))
    up = F.interpolate(logits, size=(16, 32), mode="bilinear", align_corners=False)
    expected = F.cross_entropy(blv_logits(up, COUNTS, generator=gen(3)), target)
    assert torch.allclose(blv_loss(logits, target, COUNTS, generator=gen(3)), expected, atol=1e-6)


def test_bad_options_are_config_errors():
    for kw in ({"clamp": "both"}, {"distribution": "cauchy"}, {"sigma": -1.0}, {"balance": "inverse"}):
        with pytest.raises(ConfigError):
            blv_logits(torch.zeros(1, 4, 2, 2), COUNTS, **kw)
    with pytest.raises(ConfigError):
        blv_logits(torch.zeros(1, 3, 2, 2), COUNTS)  # 4 counts, 3 classes
    assert issubclass(ConfigError, BlvnbError)


# --- σ(t) and the module -----------------------------------------------------------------------------

def test_sigma_schedule_rises_to_sigma0_at_t_mid_and_falls_back_by_t_end():
    s = SigmaSchedule()  # the paper's: t_mid 30k, t_end 40k, σ0 6
    assert s(0) == 0 and s(15_000) == pytest.approx(3.0) and s(30_000) == 6.0
    assert s(35_000) == pytest.approx(3.0) and s(40_000) == 0 and s(50_000) == 0
    values = [s(t) for t in range(0, 40_001, 500)]
    peak = values.index(max(values))
    assert all(np.diff(values[: peak + 1]) >= 0) and all(np.diff(values[peak:]) <= 0)
    short = SigmaSchedule.for_run(400)
    assert (short.t_mid, short.t_end) == (300, 400)
    loss = BLVLoss(COUNTS, sigma=short)
    assert loss.set_iteration(300) == 6.0 and loss.sigma == 6.0 and loss.set_iteration(150) == pytest.approx(3.0)
    with pytest.raises(ConfigError):
        SigmaSchedule(t_mid=10, t_end=5)


def test_set_class_counts_updates_the_weights():
    loss = BLVLoss(COUNTS, variation=False)
    logits = torch.zeros(1, 4, 2, 2)
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    before = loss(logits, target)
    loss.set_class_counts(list(reversed(COUNTS)))
    assert not torch.allclose(before, loss(logits, target))
    with pytest.raises(ConfigError):
        loss.set_class_counts([0, 0, 0, 0])


# --- frequency sources -------------------------------------------------------------------------------

def test_counts_from_pseudo_labels_is_eq4_and_skips_ignore():
    labels = [np.array([[0, 0, 1], [255, 2, 2]]), torch.tensor([[[2, 2], [255, 255]]])]
    counts = fq.counts_from_pseudo_labels(labels, num_classes=4)
    assert counts.tolist() == [2, 1, 4, 0]
    q = fq.class_prior(counts).numpy()  # Eq. (4)'s q_k (after the zero rule)
    assert q.sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError):
        fq.counts_from_pseudo_labels([np.array([5])], num_classes=4)


def test_counts_from_teacher_counts_argmax_at_image_size():
    class Teacher(torch.nn.Module):  # class 1 on the left half, class 2 on the right, at 1/2 resolution
        def forward(self, x):
            n, _, h, w = x.shape
            z = torch.zeros(n, 3, h // 2, w // 2)
            z[:, 1, :, : w // 4] = 5
            z[:, 2, :, w // 4 :] = 5
            return z

    teacher = Teacher().train()
    loader = [{"image": torch.zeros(2, 3, 8, 8)}, {"image": torch.zeros(1, 3, 8, 8)}]
    from blvnb.engine.teacher import counts_from_teacher  # the engine runs the teacher (issue 9: one-way imports)

    counts = counts_from_teacher(teacher, loader, num_classes=3)
    assert counts.tolist() == [0, 3 * 32, 3 * 32] and teacher.training


def test_counts_from_labels_and_labeled_subset():
    class Labels:
        def __init__(self, labels):
            self.labels = labels

        def __len__(self):
            return len(self.labels)

        def read_label(self, i):
            return self.labels[i]

    ds = Labels([np.zeros((2, 2), np.uint8), np.full((2, 2), 3, np.uint8), np.array([[1, 255], [255, 255]], np.uint8)])
    assert fq.counts_from_labels(ds, num_classes=4).tolist() == [4, 1, 0, 4]
    assert fq.counts_from_labeled_subset(ds, [0, 2], num_classes=4).tolist() == [4, 1, 0, 0]
    assert fq.counts_from_source(ds, num_classes=4).tolist() == [4, 1, 0, 4]


# --- the registry ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list_losses())
def test_every_registered_loss_runs_and_ignores_255(name):
    loss = build_loss(name, class_counts=COUNTS)
    logits = torch.randn(2, 4, 4, 4, generator=gen(), requires_grad=True)
    target = torch.randint(0, 4, (2, 8, 8), generator=gen(1))
    target[:, :2] = 255
    value = loss(logits, target)
    value.backward()
    assert value.ndim == 0 and torch.isfinite(value) and torch.count_nonzero(logits.grad) > 0
    empty = loss(logits, torch.full_like(target, 255))
    assert empty.item() == 0.0


def test_registry_errors():
    with pytest.raises(ConfigError, match="registered"):
        build_loss("ohem")
    with pytest.raises(ConfigError, match="class_counts"):
        build_loss("blv")
    with pytest.raises(ConfigError, match="accepts"):
        build_loss("focal", alpha=0.25)
    assert isinstance(build_loss("blv", class_counts=COUNTS, sigma=4.0, clamp="released"), BLVLoss)
