"""Preemption and time limits (issue 22): a run sent SIGTERM / SIGUSR1 / SIGUSR2 — what Slurm, submitit and
torchrun send before they kill a job — finishes the iteration it is in, writes its checkpoint there and
exits non-zero saying where it stopped; started again it ends bitwise identical to an uninterrupted run.

The runs checkpoint only at their end (``ckpt_every`` left to its default, 50, above their 4–7 iterations):
the checkpoint a stopped run leaves is the one the signal made it write. The signal is sent by the run's own
process from a hook (tests/test_resume.py's pattern), on the ``kill_at``-th call of the loop's per-iteration
reseeding: during iteration ``kill_at − 1`` of the process's training, so the checkpoint holds ``kill_at``.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_resume import _assert_same, _child, _result, assert_resume_is_exact, child_env  # noqa: E402


def supervised():
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", iters=7, device="cpu", progress=False)


def mean_teacher():
    from blvnb.experiments.runs import RunConfig

    # 4 labeled + 12 unlabeled images, batch 4: an epoch of the unlabeled stream ends at iteration 3 (Eq. 4)
    return RunConfig.from_profile("smoke", strategy="mean-teacher", labeled_fraction="1/4", loss="blv",
                                  loss_options={"sigma": 6.0}, n_train=16, strategy_options={"ema_horizon": "scaled"},
                                  iters=7, device="cpu", progress=False)


def uda():
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", strategy="uda", dataset="gta5", target="cityscapes", loss="blv",
                                  loss_options={"sigma": 6.0}, iters=7, device="cpu", progress=False)


def dars_round1():
    """Round 1 (4 iterations, global 4..7) of DARS on smoke; its teacher, round 0 (global 0..3), runs first in
    the same process."""
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", strategy="dars-rounds", labeled_fraction="1/8",
                                  strategy_options={"round": 1, "labeler": "dars"}, device="cpu", progress=False)


def test_supervised_sigterm_stops_at_the_iteration_with_a_checkpoint_and_resumes_bitwise(tmp_path):
    res = assert_resume_is_exact(f"{__file__}:supervised", tmp_path, kill_at=6, signum=signal.SIGTERM, stopped_at=6)
    assert res["resumed_from"] == 6


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGUSR2])
def test_sigusr1_and_sigusr2_are_caught_too(tmp_path, signum):
    assert_resume_is_exact(f"{__file__}:supervised", tmp_path, kill_at=2, signum=signum, stopped_at=2)


def test_mean_teacher_sigterm_resumes_bitwise(tmp_path):
    assert_resume_is_exact(f"{__file__}:mean_teacher", tmp_path, kill_at=5, signum=signal.SIGTERM, stopped_at=5)


def test_uda_sigterm_resumes_bitwise(tmp_path):
    assert_resume_is_exact(f"{__file__}:uda", tmp_path, kill_at=5, signum=signal.SIGTERM, stopped_at=5)


def test_dars_round_sigterm_while_training_resumes_bitwise(tmp_path):
    # the 6th reseeding of the process: round 0's 4 iterations, then round 1's second (global iteration 5)
    res = assert_resume_is_exact(f"{__file__}:dars_round1", tmp_path, kill_at=6, signum=signal.SIGTERM, stopped_at=6)
    assert res["summary"]["labels_reused"] is True  # labelled once, before the signal


def test_dars_round_sigterm_while_labelling_keeps_the_labels_and_trains_once_resumed(tmp_path):
    """The signal comes while round 1 labels its images: the labelling (itself resumable) completes, the
    training does not start, the process exits non-zero; started again, the run reuses those labels — not
    one PNG rewritten — and ends bitwise identical to an uninterrupted run."""
    spec, env = f"{__file__}:dars_round1", child_env(tmp_path)
    hook = "blvnb.engine.strategies.dars_rounds:label_round"
    whole = _result(_child(spec, tmp_path / "whole", hook, 0, env))
    killed = _child(spec, tmp_path / "killed", hook, 1, env, signal.SIGTERM)
    assert killed.returncode > 0, killed.stderr[-3000:]
    assert "Interrupted: stopped by SIGTERM" in killed.stderr and "stopped at iteration 4 of 4..8" in killed.stderr
    ckpt = Path(whole["checkpoint"].replace(str(tmp_path / "whole"), str(tmp_path / "killed")))
    assert not ckpt.is_file() and not ckpt.with_name(ckpt.name.replace(".ckpt.pt", ".json")).exists()
    work = ckpt.with_name(ckpt.name.replace(".ckpt.pt", ".work")) / "pseudo-round1"
    manifest = json.loads((work / "manifest.json").read_text())
    assert manifest["complete"] is True
    pngs = {p: p.stat().st_mtime_ns for p in (work / "labels").rglob("*.png")}
    assert pngs
    resumed = _result(_child(spec, tmp_path / "killed", hook, 0, env))
    assert resumed["summary"]["labels_reused"] is True and whole["summary"]["labels_reused"] is False
    assert {p: p.stat().st_mtime_ns for p in (work / "labels").rglob("*.png")} == pngs
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(resumed["checkpoint"], weights_only=True)
    assert a["iter"] == b["iter"] == 8
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    _assert_same(whole["metrics"], resumed["metrics"], "metrics")


# --- Slurm: the job is warned, checkpoints, is requeued by submitit and resumes -------------------------------

def preempted_once(cfg, force=False):
    """``runs.run``, except that the job's first attempt is warned as Slurm warns a job before its time limit
    or a preemption: its process gets submitit's signal (SIGUSR2) during the 3rd iteration. What follows is
    submitit's own machinery (its handler, the job's ``checkpoint()``, the requeue, the new attempt)."""
    import os

    from blvnb.engine import loop
    from blvnb.experiments import runs

    marker = Path(os.environ["BLVNB_RESULTS"]) / "warned-once"
    if not marker.exists():
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        original, calls = loop._seed_globals, [0]

        def warned(*args, **kw):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGUSR2)
            return original(*args, **kw)

        loop._seed_globals = warned
    return runs.run(cfg, force=force)


def test_slurm_job_warned_is_requeued_by_submitit_and_resumes_bitwise(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    import os

    from blvnb.experiments import execute, runs

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parent)] + sys.path))
    monkeypatch.setenv("BLVNB_CACHE", child_env(tmp_path)["BLVNB_CACHE"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = supervised()
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "whole"))
    whole = runs.run(cfg)
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "slurm"))
    plan = execute.build_plan([(cfg, "t")], "smoke")
    opts = execute.SlurmOptions(cluster="local", gpus_per_run=0, time_limit=5, folder=str(tmp_path / "jobs"),
                                poll_seconds=0.2)
    lines: list[str] = []
    done = execute.execute(plan, preempted_once, "slurm", slurm=opts, echo=lines.append)
    rec = done[cfg.key()]
    assert (tmp_path / "slurm" / "warned-once").is_file()
    assert rec["requeues"] == 1 and rec["restarts"] == 1 and rec["resumed_from"] == 3
    stored = json.loads(execute.store_path("smoke", cfg.key()).read_text())
    assert stored["requeues"] == 1 and stored["restarts"] == 1
    assert any("requeued 1×" in line for line in lines), lines
    logs = "".join(p.read_text() for p in (tmp_path / "jobs").glob("*_log.err"))
    assert "stopped by SIGUSR2" in logs and "holds iteration 3" in logs
    a = torch.load(whole["checkpoint"], weights_only=True)
    b = torch.load(rec["checkpoint"], weights_only=True)
    assert a["iter"] == b["iter"] == 7
    for name, t in a["model"].items():
        assert torch.equal(t, b["model"][name]), name
    _assert_same(whole["metrics"], rec["metrics"], "metrics")


def test_slurm_job_checkpoint_resubmits_itself_one_requeue_further_never_forced():
    submitit = pytest.importorskip("submitit")
    from blvnb.experiments import execute

    job = execute.SlurmJob()
    again = job.checkpoint(execute.dry_run, "cfg", True)
    assert isinstance(again, submitit.helpers.DelayedSubmission)
    assert isinstance(again.function, execute.SlurmJob) and again.function.requeues == 1
    assert again.args == (execute.dry_run, "cfg", False)
    assert again.function.checkpoint(execute.dry_run, "cfg", False).function.requeues == 2


# --- the handlers themselves -----------------------------------------------------------------------------------

def test_handlers_are_installed_in_the_main_thread_shared_by_nested_runs_and_restored():
    import threading

    from blvnb.engine import signals

    def mine(signum, frame):
        pass

    old = {s: signal.signal(s, mine) for s in signals.STOP_SIGNALS}
    try:
        with signals.catching_stop_signals():
            assert all(signal.getsignal(s) is signals._note for s in signals.STOP_SIGNALS)
            with signals.catching_stop_signals():  # a run inside a run (a DARS round's teacher)
                pass
            assert signal.getsignal(signal.SIGTERM) is signals._note  # the inner one restored nothing
        assert all(signal.getsignal(s) is mine for s in signals.STOP_SIGNALS)
        seen = []

        def work():  # Python lets only the main thread set handlers: a thread's run installs none
            with signals.catching_stop_signals():
                seen.append(signal.getsignal(signal.SIGTERM))

        t = threading.Thread(target=work)
        t.start()
        t.join()
        assert seen == [mine]
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_a_signal_after_the_training_still_stops_the_process_and_reaches_the_previous_handler():
    import os

    from blvnb.engine import signals

    calls = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: calls.append(s))
    try:
        with pytest.raises(signals.Interrupted, match="SIGUSR1 after the run had finished"):
            with signals.catching_stop_signals():
                os.kill(os.getpid(), signal.SIGUSR1)  # noted, not acted upon: nothing died
                assert signals.received() == signal.SIGUSR1
        assert calls == [signal.SIGUSR1]  # chained once the work was done (submitit's requeue, for one)
        assert signals.received() is None
    finally:
        signal.signal(signal.SIGUSR1, old)


# --- torchrun: two gloo processes, one of them signalled ------------------------------------------------------

def _ddp_job(job):
    import os

    from blvnb.engine import loop, signals
    from test_ddp import tiny_supervised

    ckpt, out, signalled_rank = job
    model, streams, cfg, strategy = tiny_supervised(iters=6)
    if int(os.environ["RANK"]) == signalled_rank:  # torchrun forwards SIGTERM to each worker: here it reaches one only
        original, calls = loop._seed_globals, [0]

        def hooked(*args, **kw):
            calls[0] += 1
            if calls[0] == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return original(*args, **kw)

        loop._seed_globals = hooked
    try:
        loop.train(model, streams, cfg, strategy, device="cpu", checkpoint=ckpt, progress=False)
    except signals.Interrupted as exc:
        Path(f"{out}.stopped.{loop.rank()}").write_text(str(exc))
        return
    if loop.is_main_process():
        torch.save(model.state_dict(), out)


def test_two_gloo_processes_one_signalled_stop_together_and_resume_to_the_same_weights(tmp_path):
    """The signalled rank and the other agree (an all-reduce) to stop after the same iteration; rank 0's
    checkpoint is complete before either exits; both started again end with the weights of two
    uninterrupted processes."""
    from test_ddp import _spawn

    _spawn(_ddp_job, (str(tmp_path / "whole.pt"), str(tmp_path / "whole.weights"), -1))
    _spawn(_ddp_job, (str(tmp_path / "cut.pt"), str(tmp_path / "cut.weights"), 1))
    for r in (0, 1):
        msg = (tmp_path / f"cut.weights.stopped.{r}").read_text()
        assert "stopped by SIGTERM" in msg and "stopped at iteration 3 of 0..6" in msg, msg
    assert torch.load(tmp_path / "cut.pt", weights_only=True)["iter"] == 3
    _spawn(_ddp_job, (str(tmp_path / "cut.pt"), str(tmp_path / "cut.weights"), -1))
    a = torch.load(tmp_path / "whole.weights", weights_only=True)
    b = torch.load(tmp_path / "cut.weights", weights_only=True)
    for name, t in a.items():
        assert torch.equal(t, b[name]), name


def test_a_second_stop_signal_ends_the_process_at_once(tmp_path):
    """A process stuck where no iteration ends (here: sleeping) is not kept alive by the handler: the first
    SIGTERM is noted, the second kills it as if it had not been caught."""
    import subprocess

    code = ("import os, signal, time\n"
            "from blvnb.engine import signals\n"
            "with signals.catching_stop_signals():\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    assert signals.received() == signal.SIGTERM\n"
            "    print('noted', flush=True)\n"
            "    os.kill(os.getpid(), signal.SIGTERM)\n"
            "    time.sleep(60)\n"
            "print('survived')\n")
    p = subprocess.run([sys.executable, "-c", code], env=child_env(tmp_path), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == -signal.SIGTERM and p.stdout == "noted\n", (p.returncode, p.stdout, p.stderr[-2000:])


# --- a run over several Slurm tasks: one per GPU, one process group (issue 18, "Multi-GPU") ----------------

def test_slurm_run_of_two_tasks_trains_in_one_gloo_group_and_matches_torchrun(tmp_path, monkeypatch):
    """Through submitit's local executor, two tasks of one job (here CPU processes, as two GPUs would be)
    join one process group from the job's environment and train one run: its record states a world of 2,
    and its weights are those of the same run under torchrun with two processes."""
    pytest.importorskip("submitit")
    import os

    from blvnb.experiments import execute

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(Path(__file__).resolve().parent)] + sys.path))
    monkeypatch.setenv("BLVNB_CACHE", child_env(tmp_path)["BLVNB_CACHE"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = supervised()
    plan = execute.build_plan([(cfg, "t")], "smoke")
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "slurm"))
    opts = execute.SlurmOptions(cluster="local", gpus_per_run=0, tasks_per_run=2, time_limit=5,
                                folder=str(tmp_path / "jobs"), poll_seconds=0.2)
    assert opts.tasks == 2 and execute.SlurmOptions(gpus_per_run=4).tasks == 4  # one task per GPU
    rec = execute.execute(plan, None, "slurm", slurm=opts, echo=lambda line: None)[cfg.key()]
    assert rec["world_size"] == 2
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "torchrun"))
    ref = execute.execute(plan, None, "gpus", gpus=["cpu0", "cpu1"], gpus_per_run=2, echo=lambda line: None,
                          work_dir=tmp_path / "work")[cfg.key()]
    assert ref["world_size"] == 2
    a = torch.load(rec["checkpoint"], weights_only=True)["model"]
    b = torch.load(ref["checkpoint"], weights_only=True)["model"]
    for name, t in a.items():
        assert torch.equal(t, b[name]), name
