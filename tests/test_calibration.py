"""Calibrators fit by NLL on held-out pixels, and the DARS Table 5 pipeline, on synthetic data."""

import pytest
import torch

from blvnb.errors import BlvnbError, ConfigError
from blvnb.pseudo import calibration as C
from blvnb.pseudo import distribution as D


def sampled(z: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Labels drawn from softmax(z) (so that z is calibrated by construction)."""
    return torch.multinomial(z.softmax(1), 1, generator=torch.Generator().manual_seed(seed)).squeeze(1)


def test_temperature_scaling_recovers_the_temperature():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(10000, 6, generator=g) * 4
    y = sampled(z / 1.6)
    ts = C.TemperatureScaling().fit(z, y)
    assert ts.temperature == pytest.approx(1.6, abs=0.1)
    assert torch.allclose(ts(z).sum(1), torch.ones(10000))


def test_matrix_scaling_fits_a_linear_map_of_the_logits():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(20000, 4, generator=g) * 2
    w = torch.tensor([[1.5, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 0.5, 0], [0, 0, 0, 2.0]])
    b = torch.tensor([0.5, 0, -0.5, 0])
    y = sampled(z @ w.T + b, seed=2)
    ms = C.MatrixScaling().fit(z, y)
    ts = C.TemperatureScaling().fit(z, y)
    nll = {name: torch.nn.functional.cross_entropy(torch.log(cal(z)), y).item()
           for name, cal in (("ms", ms), ("ts", ts))}
    truth = torch.nn.functional.cross_entropy(z @ w.T + b, y).item()
    assert nll["ms"] < nll["ts"] and nll["ms"] <= truth + 0.01
    # softmax ignores a vector added to every row of W: compare W with its column means removed
    assert torch.allclose(ms.weight - ms.weight.mean(0), w - w.mean(0), atol=0.2)


def test_histogram_binning_takes_bin_frequencies():
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0], [5.0, 0.0], [5.0, 0.0]])
    y = torch.tensor([0, 1, 0, 0])
    hb = C.HistogramBinning(bins=4).fit(z, y)
    # class 0: p = 0.5 (bin 2) → 1 of 2 are class 0; p ≈ 0.993 (bin 3) → 2 of 2
    assert hb.values[0, 2] == 0.5 and hb.values[0, 3] == 1.0
    assert hb.values[0, 0] == pytest.approx(0.125)  # empty bin: its centre
    q = hb(torch.randn(3, 2, 5, 5), dim=1)
    assert torch.allclose(q.sum(1), torch.ones(3, 5, 5))


def test_flatten_pixels_and_fit_calibrator():
    logits = torch.randn(2, 3, 4, 5)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0] = 255
    z, y = C.flatten_pixels(logits, labels)
    assert tuple(z.shape) == (20, 3) and bool((y < 3).all())
    z, y = C.flatten_pixels(logits, labels, max_pixels=7, generator=torch.Generator().manual_seed(0))
    assert y.numel() == 7
    assert isinstance(C.fit_calibrator("ts", logits, labels), C.TemperatureScaling)
    with pytest.raises(ConfigError):
        C.fit_calibrator("platt", logits, labels)
    with pytest.raises(BlvnbError):
        C.flatten_pixels(logits, torch.full((2, 4, 5), 255))


def test_table5_pipeline_on_a_synthetic_teacher():
    prior = torch.tensor([0.5, 0.25, 0.12, 0.08, 0.05])
    g = torch.Generator().manual_seed(0)
    probs = D.synthetic_probabilities(6, (32, 48), prior, generator=g, dtype=torch.float32)
    logits = probs.clamp(min=1e-30).log()
    truth = probs.argmax(1)
    variants = C.table5_variants(logits[:4], logits[4:], truth[4:], focal_logits=logits[:4] * 0.7,
                                 generator=torch.Generator().manual_seed(1))
    assert list(variants) == ["ST", "ST + TS", "ST + matrix scaling", "ST + histogram binning", "ST + focal loss",
                              "DARS"]
    rows = {r.name: r for r in C.distribution_table(prior, variants, alpha=0.2,
                                                    generator=torch.Generator().manual_seed(2))}
    assert rows["DARS"].kl < 1e-3 < rows["ST"].kl
    assert rows["DARS"].labeled_fraction == pytest.approx(0.2, abs=0.01)
    assert sum(rows["ST"].shares) == pytest.approx(1.0)
