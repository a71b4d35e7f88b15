"""DDP on the CPU (gloo): two processes, each taking half of the same global batch, end where one process
with the whole batch ends — up to float rounding (stated tolerance: 1e-5 absolute on every weight).

The model has no BatchNorm: on CPUs PyTorch's SyncBatchNorm does not run, so with BN two ranks normalise
with their own half-batch statistics (on GPUs the loop converts BN to SyncBatchNorm). The loss is the mean
over valid pixels; every sample here has the same number of valid pixels, so the mean of the two ranks'
means is the global mean, as DDP's gradient averaging assumes.

**Reusing the helper for another strategy**: write a module-level builder returning
``(model, streams, TrainConfig, strategy)`` — a model without BatchNorm, streams of global batch size —
and call ``assert_ddp_matches_single_process("<file>:<builder>", tmp_path)``::

    from test_ddp import assert_ddp_matches_single_process   # tests/ is on sys.path under pytest

    def tiny_mean_teacher():
        from test_engine import Blocks, TinyNet
        ...
        return model, {"labeled": Stream(Blocks(12), 4, seed=3), "unlabeled": ...}, cfg, MeanTeacher(...)
"""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from blvnb.engine import loop
from blvnb.engine.streams import Stream
from blvnb.engine.strategies.supervised import Supervised
from blvnb.losses import build_loss

TOLERANCE = 1e-5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_supervised(iters: int = 6):
    from test_engine import Blocks, TinyNet  # tests/ is on sys.path (pytest, and spawn copies sys.path)

    torch.manual_seed(0)
    model = TinyNet()
    cfg = loop.TrainConfig(iters=iters, lr=0.05, seed=3)
    return model, {"labeled": Stream(Blocks(12), 4, seed=3)}, cfg, Supervised(build_loss("ce"))


def _load(spec: str):
    import importlib
    import importlib.util

    path, fn = spec.rsplit(":", 1)
    if path.endswith(".py"):
        s = importlib.util.spec_from_file_location("_ddp_builder", path)
        module = importlib.util.module_from_spec(s)
        s.loader.exec_module(module)
    else:
        module = importlib.import_module(path)
    return getattr(module, fn)


def _train(job: tuple[str, str]):
    spec, out = job
    model, streams, cfg, strategy = _load(spec)()
    hist = loop.train(model, streams, cfg, strategy, device="cpu", progress=False)
    if loop.is_main_process():
        torch.save({"model": model.state_dict(), "loss": hist["loss"]}, out)


def _worker(rank: int, world: int, port: int, job, fn):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    try:
        fn(job)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def _spawn(fn, job, world=2):
    mp.start_processes(_worker, args=(world, _free_port(), job, fn), nprocs=world, start_method="spawn")


def assert_ddp_matches_single_process(spec: str, tmp_path, tolerance: float = TOLERANCE) -> None:
    """Train ``spec`` in this process, then in two gloo processes; every weight must agree to ``tolerance``,
    and rank 0 must have seen only its half of the batch (its logged loss differs)."""
    _train((spec, str(tmp_path / "one.pt")))
    _spawn(_train, (spec, str(tmp_path / "two.pt")))
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for k in one["model"]:
        assert torch.allclose(one["model"][k], two["model"][k], atol=tolerance, rtol=0), k
    # rank 0 logged the loss of its half of each batch (so it did not train on the whole batch alone) ...
    assert len(two["loss"]) == len(one["loss"]) and two["loss"][0] != one["loss"][0]
    # ... and its weights agree all the same, because DDP averaged the two halves' gradients


def test_two_gloo_processes_match_one_process(tmp_path):
    assert_ddp_matches_single_process(f"{__file__}:tiny_supervised", tmp_path)


def _run_smoke(out: str):
    import json

    from blvnb.experiments.runs import RunConfig, run

    rec = run(RunConfig.from_profile("smoke", iters=2, device="cpu", progress=False))
    with open(f"{out}.{loop.rank()}.json", "w") as fh:
        json.dump({"mIoU": rec["metrics"]["mIoU"], "world": rec["world_size"], "cached": rec["cached"]}, fh)


@pytest.mark.slow
def test_a_run_under_two_processes_writes_one_record(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    from blvnb.experiments.runs import dataset_root, RunConfig

    dataset_root("cityscapes", None, RunConfig.from_profile("smoke"), progress=False)  # data first
    _spawn(_run_smoke, str(tmp_path / "rec"))
    recs = [json.loads((tmp_path / f"rec.{r}.json").read_text()) for r in (0, 1)]
    assert recs[0]["mIoU"] == recs[1]["mIoU"] and recs[0]["world"] == 2  # ranks share one evaluation
    assert len(list((tmp_path / "results" / "smoke" / "runs").glob("*.json"))) == 1


def _dars_round1():
    from blvnb.experiments.runs import RunConfig

    return RunConfig.from_profile("smoke", strategy="dars-rounds", labeled_fraction="1/4", iters=2, device="cpu",
                                  strategy_options={"round": 1, "labeler": "dars"}, progress=False)


def _run_dars_round(out: str):
    import json

    from blvnb.experiments.runs import run

    rec = run(_dars_round1())
    with open(f"{out}.{loop.rank()}.json", "w") as fh:
        json.dump({"mIoU": rec["metrics"]["mIoU"], "world": rec["world_size"], "summary": rec["summary"],
                   "per_process": rec["batch_per_process"]}, fh, default=str)


@pytest.mark.slow
def test_a_dars_round_under_two_processes_labels_once_on_rank_0_and_trains_on_both(tmp_path, monkeypatch):
    """A DARS round under DDP: rank 0 pseudo-labels the unlabeled set, rank 1 waits for its manifest, then
    both train on the same labels; one record, both ranks report the same evaluation."""
    import json

    from blvnb.engine.strategies.dars_rounds import round_config
    from blvnb.experiments import store
    from blvnb.experiments.runs import run

    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    cfg = _dars_round1()
    run(round_config(cfg, 0))  # the teacher, in this process, before the round
    _spawn(_run_dars_round, str(tmp_path / "rec"))
    recs = [json.loads((tmp_path / f"rec.{r}.json").read_text()) for r in (0, 1)]
    assert recs[0]["world"] == recs[1]["world"] == 2 and recs[0]["mIoU"] == recs[1]["mIoU"]
    assert recs[0]["per_process"] == {"labeled": cfg.batch_size // 4, "pseudo": cfg.batch_size // 4}  # half of half
    # rank 0 labelled; rank 1 waited and read the same labels (the same report, marked reused)
    assert recs[0]["summary"]["labels_reused"] is False and recs[1]["summary"]["labels_reused"] is True
    strip = [{k: v for k, v in r["summary"].items() if k != "labels_reused"} for r in recs]
    assert strip[0] == strip[1]
    work = store.record_path("smoke", cfg.key()).parent.parent
    manifests = list(work.rglob("pseudo-round1/manifest.json"))
    assert len(manifests) == 1 and json.loads(manifests[0].read_text())["complete"]
    assert len(list((tmp_path / "results" / "smoke" / "runs").glob("*.json"))) == 2  # teacher + round
