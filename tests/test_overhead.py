"""BLV's training-time cost measured in one process (blvnb.engine.overhead), the measurement that decides
the claim blv-t12 (and that bench/blv_overhead.py prints)."""

import json
import math
from pathlib import Path

import pytest
import torch

from blvnb import claims
from blvnb.engine import overhead
from blvnb.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 1)

    def forward(self, x):
        return self.conv(x)


def test_losses_take_turns_on_one_model():
    calls = []

    def loss(name):
        def f(logits, y):
            calls.append(name)
            return torch.nn.functional.cross_entropy(logits, y, ignore_index=255)
        return f

    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    times = overhead.interleaved_step_times(Tiny(), x, y, {"ce": loss("ce"), "blv": loss("blv")}, iters=3, warmup=1)
    assert calls == ["ce", "blv", "blv", "ce", "ce", "blv", "blv", "ce"]  # A B | B A | A B | B A
    assert {k: len(v) for k, v in times.items()} == {"ce": 3, "blv": 3}  # the warm-up pair is not timed
    assert all(t > 0 for v in times.values() for t in v)
    with pytest.raises(ConfigError, match="two losses"):
        overhead.interleaved_step_times(Tiny(), x, y, {"ce": loss("ce")})
    with pytest.raises(ConfigError, match="iters"):
        overhead.interleaved_step_times(Tiny(), x, y, {"a": loss("a"), "b": loss("b")}, iters=0)


def test_blv_step_overhead_is_one_process_and_gives_the_caller_its_threads():
    before = torch.get_num_threads()
    r = overhead.blv_step_overhead("r10t-fpn", [5.0, 3.0, 1.0, 1.0], batch=2, size=(64, 64), iters=2, warmup=1,
                                   threads=1)
    assert torch.get_num_threads() == before
    assert math.isfinite(r["ratio"]) and r["ratio"] > 0 and r["threads"] == 1
    assert r["ratio"] == pytest.approx(r["median_step_s"]["blv"] / r["median_step_s"]["ce"])
    assert len(r["step_s"]["ce"]) == len(r["step_s"]["blv"]) == 2
    with pytest.raises(ConfigError, match="class_counts"):
        overhead.blv_step_overhead("r10t-fpn", [1.0, -1.0])


def test_blv_t12_is_decided_on_the_interleaved_ratio():
    c = claims.get("blv-t12")
    assert c.source == "blv-t12" and "interleaved" in c.metric and c.constant == pytest.approx(1.10)
    nb = json.loads((ROOT / "notebooks" / "blv_fully.ipynb").read_text())
    cell = next("".join(x["source"]) for x in nb["cells"] if 'claims.verdict("blv-t12"' in "".join(x["source"]))
    assert "blv_step_overhead(" in cell and "evidence.ratios(" not in cell  # not train_seconds of two runs
