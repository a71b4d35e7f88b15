"""Faults of the machine (issue 22): a checkpoint or record write that fails (disk full, I/O error) leaves
the previous checkpoint and record as they were and names the file and the error; running out of GPU
memory names the model, the batch, the crop and what to change. Simulated on the CPU by making the write,
or a training step, fail as the real fault would."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from blvnb.errors import BlvnbError, WriteError


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    return tmp_path / "results"


def smoke(**kw):
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", **{**dict(iters=5, ckpt_every=2, device="cpu", progress=False), **kw})


def _fail_on_call(n: int, exc: BaseException, real):
    calls = [0]

    def failing(*args, **kw):
        calls[0] += 1
        if calls[0] == n:
            raise exc
        return real(*args, **kw)

    return failing


@pytest.mark.parametrize("fault", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
                                   # what torch's zip writer raises on a full disk
                                   RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0"
                                                " PytorchStreamWriter failed writing file data/0: file write failed")])
def test_a_failed_checkpoint_write_keeps_the_previous_checkpoint_and_names_the_file(results, monkeypatch, fault):
    from blvnb.experiments import runs, store

    cfg = smoke()
    ckpt = store.checkpoint_path("smoke", cfg.key())
    # the 1st save (iteration 2) succeeds, the 2nd (iteration 4) fails
    monkeypatch.setattr(torch, "save", _fail_on_call(2, fault, torch.save))
    with pytest.raises(WriteError) as info:
        runs.run(cfg)
    msg = str(info.value)
    assert str(ckpt) in msg and "previous version is kept unchanged" in msg
    assert ("No space left on device" if isinstance(fault, OSError) else "file write failed") in msg
    assert isinstance(info.value, BlvnbError) and isinstance(info.value, OSError)
    assert torch.load(ckpt, weights_only=True)["iter"] == 2  # intact, loadable
    assert not [p for p in ckpt.parent.iterdir() if p.name.endswith(".tmp")]  # no temporary file left
    assert not store.record_path("smoke", cfg.key()).exists()
    monkeypatch.undo()
    monkeypatch.setenv("BLVNB_RESULTS", str(results))
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(results.parent / "cache")))
    rec = runs.run(cfg)  # the disk mended: it resumes from the kept checkpoint
    assert rec["resumed_from"] == 2 and rec["restarts"] == 1


def test_a_failed_record_write_keeps_the_previous_record_and_names_the_file(results, monkeypatch):
    from pathlib import Path

    from blvnb.experiments import store

    path = store.record_path("smoke", "k" * 16)
    first = store.get_or_run("smoke", "k" * 16, {"a": 1}, lambda: {"metrics": {"mIoU": 1.0}})
    before = path.read_bytes()
    monkeypatch.setattr(Path, "write_text", _fail_on_call(1, OSError(errno.EIO, os.strerror(errno.EIO)),
                                                          Path.write_text))
    with pytest.raises(WriteError, match=rf"could not write {path} .*Input/output error.*kept unchanged"):
        store.get_or_run("smoke", "k" * 16, {"a": 1}, lambda: {"metrics": {"mIoU": 2.0}}, force=True)
    assert path.read_bytes() == before and json.loads(before)["metrics"] == first["metrics"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, f"{'k' * 16}.lock"]


def test_a_write_into_a_folder_that_cannot_be_made_names_it(tmp_path):
    from blvnb.io import write_json_atomic

    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match=r"could not write .*file/sub/x.json .*nothing was written"):
        write_json_atomic(tmp_path / "file" / "sub" / "x.json", {})


def _oom(*args, **kw):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.11 GiB total)")


def test_out_of_gpu_memory_in_a_step_names_model_batch_crop_and_what_to_change(results, monkeypatch):
    from blvnb.engine.strategies import supervised
    from blvnb.experiments import runs, store

    cfg = smoke(iters=3, ckpt_every=None)
    monkeypatch.setattr(supervised.Supervised, "step", _oom)
    with pytest.raises(BlvnbError) as info:
        runs.run(cfg)
    msg = str(info.value)
    for part in ("out of GPU memory during training", "'r10t-fpn'", "batch 4 (4 per GPU over 1)", "crop 64×128",
                 "gradient accumulation", "--gpus-per-run", "amp=True", "Tried to allocate 2.00 GiB"):
        assert part in msg, (part, msg)
    assert isinstance(info.value.__cause__, torch.cuda.OutOfMemoryError)
    assert not store.record_path("smoke", cfg.key()).exists()


def test_out_of_gpu_memory_while_evaluating_names_the_evaluation(results, monkeypatch):
    from blvnb.experiments import runs

    monkeypatch.setattr(runs, "evaluate", _oom)
    with pytest.raises(BlvnbError, match=r"out of GPU memory during evaluation of model 'r10t-fpn'.*eval_mode "
                                         r"'whole'.*checkpoint is kept"):
        runs.run(smoke(iters=1, ckpt_every=None))
