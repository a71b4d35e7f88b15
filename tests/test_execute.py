"""Where runs execute: in this process, one process per GPU, or one submitit job per run (tested with
submitit's local executor: real submission, waiting and collection); records imported from elsewhere."""

import json
import os
import re
import sys

import pytest

from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments import execute, records, tables



@pytest.fixture(autouse=True)
def runconfig(monkeypatch, tmp_path):
    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    return runs.RunConfig


def smoke_plan(profile="smoke", round1=True):
    """Two supervised runs (two seeds) and a DARS round 1, whose teacher (round 0) the plan adds. The
    labeled half of smoke's 16 images: 1/8 of them would be fewer than one batch."""
    from blvnb.experiments import runs

    sup = [runs.RunConfig.from_profile(profile, seed=s) for s in (0, 1)]
    if not round1:
        return execute.build_plan([(c, "test") for c in sup], profile), None
    r1 = tables.make_config(tables.dars(profile, 1, fraction="1/2", schedule="cityscapes-1/8-crop361"), profile, 0)
    return execute.build_plan([(c, "test") for c in sup + [r1]], profile), r1


def test_plan_adds_the_teacher_before_its_round():
    plan, r1 = smoke_plan()
    assert len(plan) == 4
    keys = list(plan.runs)
    teacher = execute.dependencies(r1)[0]
    assert teacher.strategy_options == {"round": 0}
    assert keys.index(teacher.key()) < keys.index(r1.key())
    assert plan.runs[teacher.key()].needed_by == ["test"]


def test_local_executor_runs_what_is_missing_in_order_and_then_reads_the_store():
    plan, r1 = smoke_plan()
    done = execute.execute(plan, execute.dry_run, "local")
    assert set(done) == set(plan.runs)
    for k in plan.runs:
        assert execute.store_path("smoke", k).is_file()
    again = execute.execute(plan, lambda cfg, force=False: pytest.fail("nothing should run"), "local")
    assert all(r["cached"] for r in again.values())
    forced = execute.execute(plan, execute.dry_run, "local", force=True)
    assert not any(r.get("cached") for r in forced.values())


def test_a_failed_teacher_stops_its_students_and_the_error_lists_them():
    plan, r1 = smoke_plan()
    teacher = execute.dependencies(r1)[0].key()

    def run_fn(cfg, force=False):
        if cfg.key() == teacher:
            raise BlvnbError("teacher exploded")
        return execute.dry_run(cfg)

    with pytest.raises(BlvnbError, match="2 run\\(s\\) failed.*teacher exploded.*dependency"):
        execute.execute(plan, run_fn, "local")
    # the independent runs still finished and are in the store
    sup = [k for k, r in plan.runs.items() if r.cfg.strategy == "supervised"]
    assert all(execute.store_path("smoke", k).is_file() for k in sup)


def test_submitit_local_executor_two_runs_and_a_round_after_its_teacher(tmp_path):
    pytest.importorskip("submitit")
    plan, r1 = smoke_plan()
    lines = []
    opts = execute.SlurmOptions(cluster="local", gpus_per_run=0, time_limit=5, folder=str(tmp_path / "jobs"),
                                poll_seconds=0.2)
    done = execute.execute(plan, execute.dry_run, "slurm", slurm=opts, echo=lines.append)
    assert set(done) == set(plan.runs)
    assert sum("[submit]" in line for line in lines) == 4
    pids = {r["pid"] for r in done.values()}
    assert os.getpid() not in pids and len(pids) == 4  # one process (job) per run
    # the round was submitted only after its teacher's job had finished
    teacher = execute.dependencies(r1)[0].key()
    order = [line.split()[1] for line in lines if line.startswith(("[submit]", "[done]"))]
    idx = {(w, k): i for i, (w, k) in enumerate((line.split()[0], line.split()[1]) for line in lines
                                                 if line.startswith(("[submit]", "[done]")))}
    assert idx[("[done]", teacher[:16])] < idx[("[submit]", r1.key()[:16])]
    assert order
    for k in plan.runs:  # collected into the store
        assert json.loads(execute.store_path("smoke", k).read_text())["key"] == k


def test_gpus_executor_one_process_per_device(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    plan, _ = smoke_plan(round1=False)
    done = execute.execute(plan, execute.dry_run, "gpus", gpus=["0", "1"], work_dir=tmp_path / "w")
    assert {r["cuda_visible_devices"] for r in done.values()} <= {"0", "1"}
    assert os.getpid() not in {r["pid"] for r in done.values()}
    with pytest.raises(ConfigError, match="found 1 GPU.*needs 2"):
        execute.execute(plan, execute.dry_run, "gpus", gpus=["0"], gpus_per_run=2, force=True)


def test_cpus_executor_processes_share_the_cores_and_each_run_computes_with_its_own_threads(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    plan, r1 = smoke_plan()  # two supervised runs and round 0 can start at once; round 1 waits for round 0
    done = execute.execute(plan, execute.dry_run, "cpus", jobs=2, work_dir=tmp_path / "w")
    assert len(done) == 4 and os.getpid() not in {r["pid"] for r in done.values()}
    assert {r["cuda_visible_devices"] for r in done.values()} == {""}  # no GPU in a CPU pool
    assert {r["omp_num_threads"] for r in done.values()} == {"2"}  # a worker's own share: 4 cores / 2 jobs
    # a run computes with its recipe's threads (smoke: 1), whether it ran alone (round 1) or beside another
    by_key = {k: r.cfg.threads for k, r in plan.runs.items()}
    assert {k: r["threads"] for k, r in done.items()} == by_key and set(by_key.values()) == {1}
    with pytest.raises(ConfigError, match="--jobs must be a whole number >= 1 for --executor cpus, got 0"):
        execute.execute(plan, execute.dry_run, "cpus", jobs=0, force=True, work_dir=tmp_path / "w")


def _fails_for_seed_1(cfg, force=False):
    if cfg.seed == 1:
        raise BlvnbError("seed 1 fails on purpose")
    return execute.dry_run(cfg, force)


def test_a_cpus_worker_reports_a_failed_run_and_goes_on_with_the_next(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    plan, _ = smoke_plan(round1=False)
    with pytest.raises(BlvnbError, match=r"1 run\(s\) failed.*exit error; log") as err:
        execute.execute(plan, _fails_for_seed_1, "cpus", jobs=1, work_dir=tmp_path / "w")
    bad = next(r for r in plan.order() if r.cfg.seed == 1)
    assert bad.key[:16] in str(err.value)
    assert "seed 1 fails on purpose" in (tmp_path / "w" / f"{bad.key}.log").read_text()
    good = next(r for r in plan.order() if r.cfg.seed == 0)  # the same worker ran the other run
    assert execute.existing("smoke", good.key) is not None


def test_an_interrupted_pool_leaves_no_child_running(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in sys.path if p))
    plan, _ = smoke_plan(round1=False)
    started = []
    real_popen = execute.subprocess.Popen

    def popen(cmd, **kw):  # a child that would train for a minute
        proc = real_popen([sys.executable, "-c", "import time; time.sleep(60)"], **kw)
        started.append(proc)
        return proc

    def interrupt(_):
        if started:
            raise KeyboardInterrupt

    monkeypatch.setattr(execute.subprocess, "Popen", popen)
    monkeypatch.setattr(execute.time, "sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        execute.execute(plan, execute.dry_run, "cpus", jobs=2, work_dir=tmp_path / "w")
    assert started and all(p.poll() is not None for p in started)


@pytest.mark.parametrize("kw, msg", [
    (dict(executor="mpi"), "unknown executor 'mpi'; choose one of local, gpus, cpus, slurm"),
    (dict(executor="cpus", gpus_per_run=1), "--gpus-per-run applies to --executor gpus or slurm"),
    (dict(executor="local", partition="gpu"), "--partition only apply to --executor slurm"),
    (dict(executor="local", gpus_per_run=2), "--gpus-per-run applies to --executor gpus or slurm"),
    (dict(executor="slurm", time_limit=0), "--time-limit must be a positive number"),
    (dict(executor="slurm", gpus_per_run=-1), "--gpus-per-run must be a whole number >= 0"),
    (dict(executor="gpus", gpus_per_run=0), "needs --gpus-per-run >= 1"),
    (dict(executor="slurm", cluster="pbs"), "--cluster must be slurm, local or debug"),
    (dict(executor="slurm", cluster="local", dependency="afterok"), "afterok needs a Slurm cluster"),
])
def test_bad_executor_options(kw, msg):
    executor = kw.pop("executor")
    with pytest.raises(ConfigError, match=re.escape(msg)):
        execute.check_executor_options(executor, **kw)


# --- records computed elsewhere ------------------------------------------------------------------------

def good_record(run="a", profile="gpu"):
    """A valid record of a run named ``run`` (its config differs per name), whose key is its config's."""
    from blvnb.experiments import store

    config = {"strategy": "supervised", "seed": run}
    return {"key": store.config_key(config, "0.1.1"), "key_scheme": 1, "profile": profile, "config": config,
            "version": "0.1.1", "git": "f3a3aed", "device": "NVIDIA H200", "train_seconds": 10.0,
            "metrics": {"mIoU": 50.0, "mIoU_head_blv": 60.0, "mIoU_tail_blv": 30.0, "iou": [50.0] * 19}}


def at(src, rec):
    """Where a server's results store keeps ``rec``."""
    return src / rec["profile"] / "runs" / f"{rec['key']}.json"


def write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


def test_import_validates_then_copies_into_records(tmp_path):
    src = tmp_path / "server" / "results"
    a, b = good_record("a"), good_record("b")
    write(at(src, a), a)
    write(at(src, b), b)
    write(src / "gpu" / "runs" / f".{b['key']}.json.1.tmp", "{half")  # an unfinished atomic write: skipped
    written = records.import_records(src)
    assert sorted(p.name for p in written) == sorted(f"{r['key']}.json" for r in (a, b))
    rec = records.committed("gpu", a["key"])
    assert rec["committed"] and rec["device"] == "NVIDIA H200" and rec["git"] == "f3a3aed"
    assert records.import_records(src) == []  # the same records again: nothing to do
    changed = good_record("a")
    changed["metrics"]["mIoU"] = 51.0
    write(at(src, a), changed)
    with pytest.raises(BlvnbError, match="already committed.*--overwrite"):
        records.import_records(src)
    assert records.import_records(src, overwrite=True)


@pytest.mark.parametrize("content, msg", [
    ("{not json", "not valid JSON"),
    ({**good_record(), "metrics": {"mIoU": 1.0}}, "metrics lack \\['mIoU_head_blv', 'mIoU_tail_blv', 'iou'\\]"),
    ({k: v for k, v in good_record().items() if k != "device"}, "missing field\\(s\\) \\['device'\\]"),
    ({**good_record(), "metrics": {**good_record()["metrics"], "iou": [1.0] * 18}}, "list of 19 numbers"),
    ({**good_record(), "dry_run": True}, "placeholder"),
    ([1, 2], "a run record is a JSON object"),
    # names that would become paths outside records/
    ({**good_record(), "profile": "../../escaped"}, "field 'profile': profile '../../escaped' cannot be used"),
    ({**good_record(), "profile": "/tmp/abs"}, "field 'profile': profile '/tmp/abs' cannot be used"),
    ({**good_record(), "key": "../../../keyescape"}, "field 'key': key '../../../keyescape' cannot be used"),
    # another run's config under this key (loss changed after the run), or a key scheme this blvnb does not make
    ({**good_record(), "config": {**good_record()["config"], "loss": "blv"}}, "is not|has key"),
    ({**good_record(), "key_scheme": 2}, "field 'key_scheme' is 2, but this blvnb makes keys with scheme 1"),
    ({**good_record(), "config": "supervised"}, "field 'config' must be an object"),
])
def test_import_rejects_bad_records_naming_the_file(tmp_path, content, msg):
    src = tmp_path / "in"
    ok = good_record("ok")
    write(at(src, ok), ok)
    bad = write(src / "gpu" / "runs" / "zzz.json", content)
    with pytest.raises(records.RecordError, match=re.escape(str(bad)) + ".*(" + msg + ")"):
        records.import_records(src)
    assert records.list_committed("gpu") == []  # nothing copied when one file is bad
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "keyescape.json").exists()


def test_a_single_record_file_cannot_escape_records(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "a" / "b" / "c" / "records"))
    rec = {**good_record(), "key": "../../../keyescape"}
    f = write(tmp_path / "one.json", rec)
    with pytest.raises(records.RecordError, match=re.escape(str(f)) + ".*field 'key'"):
        records.import_records(f)
    assert not list(tmp_path.rglob("keyescape*"))
    with pytest.raises(ConfigError, match="cannot be used as a file name"):
        records.record_path("../x", "k")


def test_a_real_runs_key_is_the_key_of_its_recorded_config():
    """The check on import recomputes keys the way runs.run makes them, after the JSON round trip."""
    import blvnb
    from blvnb.experiments import runs, store

    for cfg in (runs.RunConfig.from_profile("quick", loss="blv", loss_options={"sigma": 4.0}),
                runs.RunConfig.from_profile("paper", data_root="/data", strategy="dars-rounds")):
        config = json.loads(json.dumps(cfg.key_dict(), default=str))
        assert store.config_key(config, blvnb.__version__) == cfg.key()


def test_a_pretraining_record_needs_no_metrics(tmp_path):
    rec = {**good_record("pre1"), "metrics": {"evaluated": False}}
    write(at(tmp_path / "s", rec), rec)
    assert records.import_records(tmp_path / "s")


def test_import_errors_for_missing_folder_and_wrong_names(tmp_path):
    with pytest.raises(BlvnbError, match="no such file or folder"):
        records.import_records(tmp_path / "nowhere")
    write(tmp_path / "e" / "x.txt", "")
    with pytest.raises(BlvnbError, match="no run records"):
        records.import_records(tmp_path / "e")
    write(tmp_path / "m" / "gpu" / "runs" / "other.json", good_record("a"))
    with pytest.raises(records.RecordError, match="file name says run 'other'"):
        records.import_records(tmp_path / "m")


# --- end to end through the real runs.run ----------------------------------------------------------------

@pytest.mark.slow
def test_real_smoke_runs_locally_and_through_submitit(tmp_path, monkeypatch):
    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    plan, r1 = smoke_plan()
    done = execute.execute(plan, runs.run, "local", device="cpu")
    for k, rec in done.items():
        assert rec["key"] == k and len(rec["metrics"]["iou"]) == 19
        for field in ("profile", "version", "git", "device"):
            assert field in rec
    pytest.importorskip("submitit")
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results2"))
    opts = execute.SlurmOptions(cluster="local", gpus_per_run=0, time_limit=10, folder=str(tmp_path / "jobs"))
    done2 = execute.execute(plan, runs.run, "slurm", device="cpu", slurm=opts)
    assert set(done2) == set(plan.runs)
    assert all(execute.store_path("smoke", k).is_file() for k in plan.runs)


def test_afterok_submits_everything_and_cancels_students_of_a_failed_teacher(monkeypatch):
    """Slurm's afterok mode, with a stand-in for submitit: all jobs at once with their dependencies; a
    failed teacher's students are cancelled (Slurm would leave them pending forever)."""
    plan, r1 = smoke_plan()
    teacher = execute.dependencies(r1)[0].key()
    submitted, cancelled = [], []

    class Job:
        def __init__(self, key, after):
            self.key, self.job_id, self.after = key, str(100 + len(submitted)), after

        def done(self):
            return self.key != r1.key()  # the student would wait on its teacher for ever

        def results(self):  # submitit's: one result per task (a job of several tasks has several)
            if self.key == teacher:
                raise RuntimeError("Traceback ...\nCUDA out of memory")
            return [execute.dry_run(self.cfg)]

        def cancel(self, check=True):
            cancelled.append(self.key)

    class Executor:
        def __init__(self, folder, cluster=None):
            self.params = {}

        def update_parameters(self, **kw):
            self.params.update(kw)

        def submit(self, fn, run_fn, cfg, force):
            dep = self.params.get("slurm_additional_parameters", {}).get("dependency")
            job = Job(cfg.key(), dep)
            job.cfg = cfg
            submitted.append(job)
            return job

    monkeypatch.setattr(execute, "_submitit", lambda: type("M", (), {"AutoExecutor": Executor}))
    opts = execute.SlurmOptions(dependency="afterok", partition="gpu", poll_seconds=0.01)
    with pytest.raises(BlvnbError, match="CUDA out of memory.*cancelled: its dependency"):
        execute.execute(plan, execute.dry_run, "slurm", slurm=opts)
    assert len(submitted) == 4  # everything at once
    student = [j for j in submitted if j.key == r1.key()][0]
    t_job = [j for j in submitted if j.key == teacher][0]
    assert student.after == f"afterok:{t_job.job_id}"
    assert cancelled == [r1.key()]
