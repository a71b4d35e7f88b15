"""The run phase reads as progress: each run's end carries runs done / total, failed, elapsed and an estimate
of the time left that follows the pace measured so far (issue 19)."""

import os
import sys

import pytest

from blvnb.errors import BlvnbError
from blvnb.experiments import execute, runs


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def planned(key: str, est: float) -> execute.PlannedRun:
    return execute.PlannedRun(key=key, cfg=None, est_seconds=est)


def test_the_summary_counts_runs_and_scales_the_plans_estimate_by_the_measured_pace():
    clock, lines = Clock(), []
    todo = [planned("a" * 16, 100), planned("b" * 16, 100), planned("c" * 16, 200)]
    p = execute.Progress(todo, lines.append, clock=clock)
    assert p.summary() == "0/3 done, 0 failed, 0m00s elapsed, time left known after the first run"
    clock.t = 50.0  # the first run took half its estimate: the other 300 estimated seconds take 150
    p.ended("a" * 16, True, "[cpu0] aaaa done")
    assert lines[-1] == "[cpu0] aaaa done · 1/3 done, 0 failed, 0m50s elapsed, about 2m30s left"
    clock.t = 250.0  # the second took 200 s: 250 s for 200 estimated, so 200 left take 250
    p.ended("b" * 16, True, "[cpu0] bbbb done")
    assert lines[-1].endswith("2/3 done, 0 failed, 4m10s elapsed, about 4m10s left")
    p.ended("c" * 16, False, "[cpu0] cccc FAILED")
    assert lines[-1].endswith("2/3 done, 1 failed, 4m10s elapsed, none left")
    clock.t = 3725.0
    assert "1h02m elapsed" in p.summary()


def _fails_for_seed_1(cfg, force=False):
    if cfg.seed == 1:
        raise BlvnbError("seed 1 fails on purpose")
    return execute.dry_run(cfg, force)


@pytest.mark.parametrize("executor", ["local", "cpus"])
def test_every_executor_reports_progress_as_runs_end(executor, tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    plan = execute.build_plan([(runs.RunConfig.from_profile("smoke", seed=s), "test") for s in (0, 1, 2)], "smoke")
    lines = []
    with pytest.raises(BlvnbError, match="1 run"):
        execute.execute(plan, _fails_for_seed_1, executor, jobs=2, work_dir=tmp_path / "w", echo=lines.append)
    ends = [ln for ln in lines if " · " in ln]
    assert len(ends) == 3  # one summary line per run, the failed one included
    assert ends[-1].split(" · ")[1].startswith("2/3 done, 1 failed, ")
    assert ends[-1].endswith("none left")
    assert sum("FAILED" in ln for ln in ends) == 1
