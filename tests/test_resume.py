"""Resume is exact: a run killed with SIGKILL after a checkpoint, at an iteration that is not an epoch
boundary, and started again ends with weights bitwise identical to an uninterrupted run (issue 14 #1).

**Reusing the helper for another strategy.** Write a module-level function that returns a small
``RunConfig`` (smoke profile, CPU, a few iterations, ``ckpt_every`` below the kill point), and call
:func:`assert_resume_is_exact` with ``"<file>:<function>"``::

    from test_resume import assert_resume_is_exact   # tests/ is on sys.path under pytest

    def mean_teacher_config():
        return RunConfig.from_profile("smoke", strategy="mean-teacher", iters=7, ckpt_every=3,
                                      device="cpu", progress=False)

    def test_mean_teacher_resume(tmp_path):
        assert_resume_is_exact(f"{__file__}:mean_teacher_config", tmp_path, kill_at=6)

The run is executed by ``blvnb.experiments.runs.run`` in child processes: once uninterrupted, once
killed (the process sends itself SIGKILL on the ``kill_at``-th call of ``kill_hook``: by default the
loop's per-iteration reseeding, so ``kill_at=6`` kills before iteration 5; a DARS round can pass the
labeller's per-batch function to be killed while labelling), and once more to resume. The two final
checkpoints must hold bitwise identical model weights and strategy state, and the metrics must agree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import importlib, importlib.util, json, os, signal, sys
spec, hook, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
signum = int(sys.argv[4]) if len(sys.argv) > 4 else int(signal.SIGKILL)
path, fn = spec.rsplit(":", 1)
if path.endswith(".py"):
    s = importlib.util.spec_from_file_location("_resume_factory", path)
    module = importlib.util.module_from_spec(s)
    s.loader.exec_module(module)
else:
    module = importlib.import_module(path)
cfg = getattr(module, fn)()
if kill_at > 0:
    mod_name, attr = hook.split(":")
    mod = importlib.import_module(mod_name)
    original, calls = getattr(mod, attr), [0]
    def hooked(*args, **kw):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signum)
        return original(*args, **kw)
    setattr(mod, attr, hooked)
from blvnb.experiments.runs import run
rec = run(cfg)
print("RESULT " + json.dumps({k: rec.get(k) for k in ("key", "checkpoint", "resumed", "resumed_from", "train_seconds",
                                                       "metrics", "restarts", "summary")}))
"""


def _child(spec: str, results: Path, hook: str, kill_at: int, env: dict,
           signum: int = signal.SIGKILL) -> subprocess.CompletedProcess:
    env = {**env, "BLVNB_RESULTS": str(results)}
    return subprocess.run([sys.executable, "-c", _CHILD, spec, hook, str(kill_at), str(int(signum))], env=env,
                          capture_output=True, text=True, timeout=600)


def _result(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def _assert_same(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for k in a:
            _assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), where


def child_env(tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    env.setdefault("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    return env


def assert_resume_is_exact(spec: str, tmp_path: Path, *, kill_at: int = 6,
                           kill_hook: str = "blvnb.engine.loop:_seed_globals", signum: int = signal.SIGKILL,
                           stopped_at: int | None = None) -> dict:
    """Run ``spec`` ("file.py:function" or "module:function" returning a RunConfig) uninterrupted, then
    sent ``signum`` (SIGKILL) on the ``kill_at``-th call of ``kill_hook`` and resumed; assert identical
    results. Another signal than SIGKILL (SIGTERM, SIGUSR1, SIGUSR2: the cluster's warnings, issue 22) must
    be caught: the run ends that iteration, writes its checkpoint at ``stopped_at`` and exits non-zero with
    a message naming the signal and the iteration. Returns the resumed run's result summary."""
    env = child_env(tmp_path)
    whole = _result(_child(spec, tmp_path / "whole", kill_hook, 0, env))
    killed = _child(spec, tmp_path / "killed", kill_hook, kill_at, env, signum)
    ckpt = Path(whole["checkpoint"].replace(str(tmp_path / "whole"), str(tmp_path / "killed")))
    if signum == signal.SIGKILL:
        assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    else:  # caught: a clean, explained, non-zero exit (torchrun --max-restarts / a requeue runs it again)
        assert killed.returncode > 0, (killed.returncode, killed.stderr[-3000:])
        name = signal.Signals(signum).name
        assert f"Interrupted: stopped by {name}" in killed.stderr, killed.stderr[-3000:]
        assert f"{ckpt} holds iteration {stopped_at}" in killed.stderr, killed.stderr[-3000:]
    assert ckpt.is_file(), "the killed run left no checkpoint: kill later or checkpoint more often"
    assert not ckpt.with_name(ckpt.name.replace(".ckpt.pt", ".json")).exists()
    partial = torch.load(ckpt, weights_only=True)
    if stopped_at is not None:
        assert partial["iter"] == stopped_at
    resumed = _result(_child(spec, tmp_path / "killed", kill_hook, 0, env))
    assert resumed["resumed"] and resumed["resumed_from"] == partial["iter"] > 0
    assert resumed["key"] == whole["key"]
    assert whole["restarts"] == 0 and resumed["restarts"] == 1  # the record counts the restarts
    # the record's training time covers the whole run, the part before the kill included
    assert resumed["train_seconds"] >= partial["seconds"] > 0
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    _assert_same(a["model"], b["model"], "model")
    _assert_same(a.get("strategy", {}), b.get("strategy", {}), "strategy")
    assert a["streams"] == b["streams"] and a["iter"] == b["iter"]
    _assert_same(a["history"], b["history"], "history")
    _assert_same(whole["metrics"], resumed["metrics"], "metrics")
    return resumed


# --- the supervised strategy -------------------------------------------------------------------------

def supervised_ce():
    from blvnb.experiments.runs import RunConfig

    # smoke: 32 images, batch 4 → 8 iterations per epoch; checkpoint at 3 (mid-epoch), killed before 5
    return RunConfig.from_profile("smoke", iters=7, ckpt_every=3, device="cpu", progress=False)


def supervised_blv():
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", loss="blv", loss_options={"sigma_schedule": 6.0}, iters=7, ckpt_every=3,
                                  device="cpu", progress=False)


def test_supervised_ce_resume_after_sigkill_is_exact(tmp_path):
    res = assert_resume_is_exact(f"{__file__}:supervised_ce", tmp_path, kill_at=6)
    assert res["resumed_from"] == 3


def test_supervised_blv_resume_after_sigkill_is_exact(tmp_path):
    assert_resume_is_exact(f"{__file__}:supervised_blv", tmp_path, kill_at=6)


# --- the paper profile: real-data loaders, sliding-window evaluation, deterministic algorithms -------------

def paper_ce():
    """The paper profile's recipe shrunk to a CPU: its Cityscapes loader on a toycity tree in the real layout
    (``BLVNB_TEST_DATA_ROOT``), its sliding-window evaluation, and PyTorch's deterministic algorithms."""
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("paper", data_root=os.environ["BLVNB_TEST_DATA_ROOT"], model="r10t-fpn",
                                  pretrained=None, iters=7, ckpt_every=3, batch_size=2, crop=(32, 64),
                                  eval_crop=(32, 64), amp=False, num_workers=0, threads=1, deterministic=True,
                                  device="cpu", progress=False)


def test_paper_profile_resume_after_sigkill_is_exact_with_deterministic_algorithms(tmp_path, monkeypatch):
    from blvnb.data.toycity import write_tree

    write_tree(tmp_path / "data" / "cityscapes", "cityscapes", n_train=6, n_val=1, size=(64, 128), seed=0,
               progress=False)
    monkeypatch.setenv("BLVNB_TEST_DATA_ROOT", str(tmp_path / "data"))
    assert paper_ce().key_dict()["deterministic"] is True and paper_ce().data_root is not None
    assert_resume_is_exact(f"{__file__}:paper_ce", tmp_path, kill_at=6)
