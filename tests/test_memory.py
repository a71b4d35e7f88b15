"""Peak GPU memory estimated on a CPU (issue 18): a run's step replayed on fake tensors at its batch and crop."""

from __future__ import annotations

import pytest
import torch

from blvnb.errors import ConfigError
from blvnb.experiments import memory, tables
from blvnb.models.registry import build_model


def test_the_fake_replay_counts_what_real_tensors_take():
    torch.manual_seed(0)
    real = build_model("r10t-fpn", num_classes=19, variant="small").train()
    measured = memory.step_peak_bytes(real, 2, (64, 128))
    fake_mode, fake = memory._model_for("r10t-fpn@small", 19)
    replayed = memory.step_peak_bytes(fake, 2, (64, 128), fake_mode=fake_mode)
    assert measured > 0 and replayed == pytest.approx(measured, rel=0.02)
    # the activations grow with the images, linearly (the weights' gradients are there once at any batch)
    p4, p8 = (memory.step_peak_bytes(fake, n, (64, 128), fake_mode=fake_mode) for n in (4, 8))
    assert replayed < p4 < p8 and (p8 - p4) == pytest.approx(2 * (p4 - replayed), rel=0.25)


def test_a_paper_runs_estimate_and_the_flag_above_one_card(monkeypatch):
    t2 = [e.cfg for e in tables.entries("blv-t2", "paper", seeds=(0,), data_root="/x")]
    m = memory.estimate(t2[0])
    assert m["images"] == 32 and m["crop"] == [769, 769] and m["amp"] is True  # 16 + 16 images of 769²
    assert m["peak_gib"] == pytest.approx(m["weights_gib"] + m["state_gib"] + m["activations_gib"])
    assert m["state_gib"] == pytest.approx(m["weights_gib"] * 3)  # gradients, SGD momentum, the EMA teacher
    assert m["over_gpu"] == (m["peak_gib"] > memory.GPU_GIB)
    dars = [e.cfg for e in tables.entries("dars-t1", "paper", seeds=(0,), data_root="/x")][0]
    small = memory.estimate(dars)
    assert not small["over_gpu"] and small["peak_gib"] < m["peak_gib"]


def test_bad_input():
    fake_mode, fake = memory._model_for("r10t-fpn@small", 19)
    with pytest.raises(ConfigError, match="at least one image"):
        memory.step_peak_bytes(fake, 0, (64, 128), fake_mode=fake_mode)


def test_runs_plan_memory_prints_each_distinct_run_kind(capsys):
    from blvnb.cli import main

    assert main(["runs", "plan", "--profile", "smoke", "--only", "blv-t1", "--memory"]) == 0
    out = capsys.readouterr().out
    assert "peak GPU memory at the run's batch on one GPU" in out and "GiB  r10t-fpn" in out
    assert "runs exceed one card at their batch" in out
