"""Same commit, same numbers: a run computes the same weights whatever thread count its caller left, and
whichever executor, ``--jobs`` or order runs it (issue 24). On a CPU the intra-op thread count changes
the arithmetic (blocked sums), so it is part of the run (``RunConfig.threads``, from the profile) and the
run sets it itself (:func:`blvnb.devices.fixed_threads`)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from blvnb.devices import deterministic_algorithms, fixed_threads
from blvnb.errors import ConfigError
from blvnb.experiments import execute, runs


@pytest.fixture(autouse=True)
def stores(monkeypatch, tmp_path):
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))


def quick_sized(seed: int = 0, **kw) -> runs.RunConfig:
    """A quick-profile run (its data, crop, batch and model), from random weights and a few steps."""
    return runs.RunConfig.from_profile("quick", pretrained=None, iters=6, seed=seed, device="cpu", progress=False, **kw)


def _checkpoint(rec: dict) -> dict:
    return torch.load(rec["checkpoint"], weights_only=True)


def _assert_bitwise(a: dict, b: dict, where: str = "") -> None:
    assert set(a) == set(b), where
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, torch.Tensor):
            assert x.dtype == y.dtype and torch.equal(x, y), f"{where}{k} differs"
        elif isinstance(x, dict):
            _assert_bitwise(x, y, f"{where}{k}.")


def _same_run(a: dict, b: dict) -> None:
    ca, cb = _checkpoint(a), _checkpoint(b)
    _assert_bitwise(ca["model"], cb["model"], "model.")
    _assert_bitwise(ca["optimizer"]["state"], cb["optimizer"]["state"], "optimizer.")
    assert a["metrics"]["iou"] == b["metrics"]["iou"] and a["metrics"]["mIoU"] == b["metrics"]["mIoU"]


def _in_process(monkeypatch, tmp_path: Path, caller_threads: int) -> dict:
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / f"local{caller_threads}"))
    before = torch.get_num_threads()
    torch.set_num_threads(caller_threads)
    try:
        rec = runs.run(quick_sized())
        assert torch.get_num_threads() == caller_threads  # the caller gets its own setting back
    finally:
        torch.set_num_threads(before)
    return rec


def test_a_run_gives_bitwise_the_same_checkpoint_at_any_caller_threads_and_in_any_pool(monkeypatch, tmp_path):
    one = _in_process(monkeypatch, tmp_path, 1)
    two = _in_process(monkeypatch, tmp_path, 2)
    assert one["key"] == two["key"] and one["config"]["threads"] == 1
    _same_run(one, two)

    # through the cpus executor: alone at --jobs 1, and at --jobs 2 beside another run (seed 1) that goes
    # first in the plan, so that the run lands in a worker that has trained something else before
    for jobs in (1, 2):
        monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / f"pool{jobs}"))
        cfgs = [quick_sized()] if jobs == 1 else [quick_sized(seed=1), quick_sized(), quick_sized(seed=2)]
        plan = execute.build_plan([(c, "test") for c in cfgs], "quick")
        done = execute.execute(plan, executor="cpus", jobs=jobs, work_dir=tmp_path / f"w{jobs}")
        rec = done[quick_sized().key()]
        assert rec["key"] == one["key"]
        _same_run(one, rec)


def test_the_thread_count_is_part_of_the_run_and_its_key():
    cfg = quick_sized()
    assert cfg.threads == 1 and cfg.key_dict()["threads"] == 1
    assert cfg.with_(threads=2).key() != cfg.key()
    assert runs.pretraining_config(runs.RunConfig.from_profile("quick")).threads == 2  # alone on both cores
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ConfigError, match=f"threads must be an integer >= 1, got {bad!r}"):
            runs.RunConfig.from_profile("smoke", threads=bad)


def test_fixed_threads_sets_and_restores_and_refuses_nonsense():
    before = torch.get_num_threads()
    with fixed_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), fixed_threads(1):
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before  # restored after an error too
    for bad in (0, 2.0, "1", True):
        with pytest.raises(ConfigError, match=f"threads must be a whole number >= 1, got {bad!r}"):
            with fixed_threads(bad):
                pass


def test_deterministic_algorithms_are_a_run_setting_that_is_set_and_restored(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert not torch.are_deterministic_algorithms_enabled()
    with deterministic_algorithms(True):
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    with pytest.raises(RuntimeError), deterministic_algorithms(True):
        raise RuntimeError("inside")
    assert not torch.are_deterministic_algorithms_enabled()  # restored after an error too
    with deterministic_algorithms(False):
        assert not torch.are_deterministic_algorithms_enabled()
    cfg = quick_sized()
    assert cfg.deterministic is False and cfg.with_(deterministic=True).key() != cfg.key()
    for bad in (1, "yes", 0):
        with pytest.raises(ConfigError, match="deterministic must be True or False"):
            runs.RunConfig.from_profile("smoke", deterministic=bad)
        with pytest.raises(ConfigError, match=f"deterministic must be True or False, got {bad!r}"):
            with deterministic_algorithms(bad):
                pass


def test_the_cpus_pool_gives_each_run_its_own_threads_and_never_more_than_the_cores(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    cfgs = [runs.RunConfig.from_profile("smoke", seed=0, threads=2)] + \
           [runs.RunConfig.from_profile("smoke", seed=s) for s in (1, 2, 3)]
    plan = execute.build_plan([(c, "test") for c in cfgs], "smoke")
    lines = []
    done = execute.execute(plan, execute.dry_run, "cpus", jobs=2, work_dir=tmp_path / "w", echo=lines.append)
    assert {r["config"]["seed"]: r["threads"] for r in done.values()} == {0: 2, 1: 1, 2: 1, 3: 1}
    # replay the pool's starts and ends: the threads running at once never exceed the two cores, and the
    # one-thread runs did share them
    threads = {c.key()[:16]: c.threads for c in cfgs}
    running, most, pairs = set(), 0, 0
    for line in lines:
        words = line.split()
        if len(words) < 2 or words[1] not in threads:
            continue
        if words[2:3] == ["done"]:
            running.discard(words[1])
        else:
            running.add(words[1])
            most = max(most, sum(threads[k] for k in running))
            pairs += len(running) == 2
    assert most == 2 and pairs >= 1


def test_chapters_compute_with_the_profiles_threads_at_any_jobs(tmp_path, monkeypatch):
    """What a chapter computes itself (features, maps, the BLV toy) must not depend on --jobs either."""
    from blvnb import reproduce

    (tmp_path / "notebooks").mkdir()
    for name in ("a", "b"):
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text(json.dumps({"cells": [], "metadata": {}}))
    seen = []

    def fake_execute(job, root, gpu, log_dir, stream=False, threads=None):
        seen.append(threads)
        return job, True, 0.0

    monkeypatch.setattr(reproduce, "execute", fake_execute)
    monkeypatch.setattr(reproduce, "gpu_count", lambda: 0)
    for jobs in (1, 2):
        reproduce.run_notebooks("quick", jobs=jobs, force=True, root=tmp_path, out_dir=tmp_path / "out")
    assert seen == [1, 1, 1, 1]
