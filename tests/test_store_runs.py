"""Results store and run configs: keyed by what a run computes, locked, validated, errors explained."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from blvnb.errors import BlvnbError
from blvnb.experiments import store
from blvnb.experiments.profiles import PROFILES, FrozenDict, get_profile
from blvnb.experiments.runs import RunConfig, RunData, build_run_model, run

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    return tmp_path


def _smoke(**kw):
    return RunConfig.from_profile("smoke", device="cpu", progress=False, **kw)


def test_get_or_run_caches_by_key(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"metrics": {"mIoU": 0.5}}

    r1 = store.get_or_run("quick", "k1", {"a": 1}, work, root=tmp_path)
    r2 = store.get_or_run("quick", "k1", {"a": 1}, work, root=tmp_path)
    assert calls == [1] and not r1["cached"] and r2["cached"] and r2["metrics"]["mIoU"] == 0.5
    store.get_or_run("quick", "k2", {"a": 2}, work, root=tmp_path)
    r3 = store.get_or_run("quick", "k1", {"a": 1}, work, root=tmp_path, force=True)
    assert len(calls) == 3 and not r3["cached"]
    files = sorted((tmp_path / "quick" / "runs").glob("*.json"))
    assert [f.name for f in files] == ["k1.json", "k2.json"] and not list(tmp_path.rglob("*.tmp"))
    rec = json.loads(files[0].read_text())
    assert {"config", "version", "key", "profile", "git"} <= set(rec)


def test_key_is_what_the_run_computes():
    a = RunConfig.from_profile("quick", device="cpu", num_workers=0)
    b = RunConfig.from_profile("quick", device="cuda", num_workers=8, progress=False, ckpt_every=7)
    assert a.key() == b.key() and hash(a) == hash(a.with_())
    assert a.key() != a.with_(iters=a.iters + 1).key()
    blv1 = RunConfig.from_profile("quick", loss="blv", loss_options={"sigma": 4.0, "clamp": "released"})
    blv2 = RunConfig.from_profile("quick", loss="blv", loss_options={"clamp": "released", "sigma": 4.0})
    assert blv1 == blv2 and blv1.key() == blv2.key() and blv1.key() != a.key()
    assert blv1.loss_options["sigma"] == 4.0 and isinstance(blv1.loss_options, FrozenDict)
    assert blv1.key() != blv1.with_(loss_options={"sigma": 6.0}).key()
    p1 = RunConfig.from_profile("paper", data_root="/mnt/a")
    p2 = RunConfig.from_profile("paper", data_root="/data")
    assert p1.key() == p2.key()


def test_the_profile_supplies_every_default():
    prof = get_profile("quick")
    cfg = RunConfig.from_profile("quick")
    for name in ("model", "iters", "batch_size", "crop", "scale_range", "size", "n_train", "n_val", "amp"):
        assert getattr(cfg, name) == getattr(prof, name)
    assert cfg.seed == prof.seeds[0] and cfg.strategy == "supervised" and cfg.loss == "ce"
    assert RunConfig(profile="quick") == cfg  # one default model, from the profile


def test_profiles_and_errors():
    assert set(PROFILES) == {"smoke", "quick", "gpu", "paper"}
    assert get_profile("quick", iters=5).iters == 5
    with pytest.raises(BlvnbError, match="unknown profile"):
        get_profile("fast")
    with pytest.raises(BlvnbError, match="unknown profile field"):
        get_profile("quick", itters=5)
    with pytest.raises(BlvnbError, match="data_root"):
        RunConfig.from_profile("paper")
    with pytest.raises(BlvnbError, match="unknown run setting"):
        RunConfig.from_profile("quick", lr_mult=2)
    with pytest.raises(BlvnbError, match="unknown strategy"):
        RunConfig.from_profile("quick", strategy="magic")
    with pytest.raises(BlvnbError, match="pretrained"):
        RunConfig.from_profile("quick", pretrained="/no/such/weights.pth")
    with pytest.raises(BlvnbError, match="loss_options"):
        RunConfig.from_profile("quick", loss_options=["sigma", 4])
    with pytest.raises(BlvnbError, match="iters"):
        RunConfig.from_profile("quick", iters="300")
    with pytest.raises(BlvnbError, match="dataset"):
        RunConfig.from_profile("quick", dataset="kitti")
    for bad in (dict(crop=(64,)), dict(crop=(0, 128)), dict(size="64x128"), dict(scale_range=(2.0, 1.0)),
                dict(seed="0"), dict(batch_size=0), dict(labeled_fraction="2/1")):
        with pytest.raises(BlvnbError):
            RunConfig.from_profile("quick", **bad)


@pytest.mark.parametrize("name", ["../../x", "/x", "a/b", "..", ".hidden", "", "x" * 101, "a\x00b"])
def test_names_that_reach_the_file_system_are_validated(tmp_path, name):
    with pytest.raises(BlvnbError, match="file name"):
        store.record_path(name, "abc", root=tmp_path)
    with pytest.raises(BlvnbError, match="file name"):
        store.get_or_run("quick", name, {}, lambda: {"metrics": {"mIoU": 0}}, root=tmp_path)
    assert not any(tmp_path.parent.glob("x")) and not list(tmp_path.rglob("*.json"))


@pytest.mark.parametrize("content", [b"", b"{\"config\": {}, \"metrics\": {\"mIo", b"\xff\xfe\x00garbage", b"[1, 2]",
                                     b"{\"config\": {}, \"key\": \"k\"}"])
def test_bad_records_name_the_file(tmp_path, content):
    path = store.record_path("quick", "k1", root=tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(BlvnbError, match=r"k1\.json.*(delete|force)"):
        store.get_or_run("quick", "k1", {}, lambda: {"metrics": {"mIoU": 0.1}}, root=tmp_path)
    rec = store.get_or_run("quick", "k1", {}, lambda: {"metrics": {"mIoU": 0.1}}, root=tmp_path, force=True)
    assert rec["metrics"]["mIoU"] == 0.1 and store.load("quick", "k1", root=tmp_path)["metrics"]["mIoU"] == 0.1


def test_run_record_and_force_retrains(isolated):
    cfg = _smoke(iters=3)
    rec = run(cfg)
    m = rec["metrics"]
    assert {"mIoU", "mIoU_head_blv", "mIoU_tail_blv", "mIoU_tail_dars", "per_class_iou"} <= set(m)
    assert len(m["iou"]) == 19 and rec["train_seconds"] > 0 and not rec["resumed"]
    assert {"config", "key", "history", "summary", "checkpoint", "profile", "version", "git", "device"} <= set(rec)
    path = Path(isolated / "results" / "smoke" / "runs" / f"{cfg.key()}.json")
    assert path.is_file() and Path(rec["checkpoint"]).is_file()
    again = run(cfg)
    assert again["cached"] and again["metrics"]["mIoU"] == m["mIoU"]
    forced = run(cfg, force=True)  # trains again from scratch (issue 14 #2): not a reuse of the final checkpoint
    assert not forced["cached"] and not forced["resumed"] and forced["resumed_from"] == 0
    assert len(forced["history"]["loss"]) == 3 and forced["metrics"]["mIoU"] == m["mIoU"]  # deterministic


def test_losses_by_name_run(isolated):
    for loss, opts in (("blv", {"sigma_schedule": 6.0}), ("rs", {"min_pixels": 20}), ("la", {})):
        rec = run(_smoke(iters=4, loss=loss, loss_options=opts))
        assert rec["summary"]["loss"] == loss and len(rec["metrics"]["iou"]) == 19
        if loss == "blv":  # σ(t) follows the loop's iteration: rises from 0 to σ0 at 3/4 of the run
            assert rec["history"]["sigma"] == pytest.approx([0.0, 2.0, 4.0, 6.0])
    assert rec["summary"]["class_counts"][0] > 0
    with pytest.raises(BlvnbError, match="unknown loss"):
        run(_smoke(iters=2, loss="hinge"))


def test_two_processes_on_one_config(isolated):
    """Both finish; the run is trained once (the other waits on the lock, then reads the record)."""
    code = ("import sys, json; from blvnb.experiments.runs import RunConfig, run; "
            "r = run(RunConfig.from_profile('smoke', iters=3, device='cpu', progress=False, ckpt_every=1)); "
            "print(json.dumps({'cached': r['cached'], 'mIoU': r['metrics']['mIoU']}))")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    run(_smoke(iters=1))  # make the toycity data first, so both start training at once
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    res = [json.loads(o.strip().splitlines()[-1]) for o, _ in outs]
    assert sorted(r["cached"] for r in res) == [False, True] and res[0]["mIoU"] == res[1]["mIoU"]
    runs = isolated / "results" / "smoke" / "runs"
    assert not list(runs.glob(".*.tmp"))
    key = _smoke(iters=3).key()
    assert store.read_record(runs / f"{key}.json")["metrics"]["mIoU"] == res[0]["mIoU"]


def test_pretrained_from_a_local_weights_file(isolated, tmp_path):
    from blvnb.models.registry import build_model

    torch.manual_seed(123)
    donor = build_model("r10t-fpn")
    path = tmp_path / "imagenet.pth"
    torch.save(donor.backbone.body.state_dict(), path)
    cfg = _smoke(pretrained=str(path))
    model = build_run_model(cfg)
    for k, v in donor.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    key = cfg.key()
    torch.save({k: v + 1 for k, v in donor.backbone.body.state_dict().items()}, path)
    assert cfg.key() != key  # the key follows the file's content


def test_toy_pretraining_is_a_run_whose_backbone_later_runs_start_from(isolated):
    from blvnb.experiments.runs import pretraining_config

    cfg = _smoke(pretrained="toy")
    pre = pretraining_config(cfg)
    assert pre.dataset == "gta5" and pre.data_seed != cfg.data_seed and pre.pretrained is None and not pre.evaluate
    model = build_run_model(cfg)
    rec = store.load("smoke", pre.key())
    assert rec is not None and rec["metrics"] == {"evaluated": False}
    state = torch.load(rec["checkpoint"], weights_only=True)["model"]
    for k, v in model.state_dict().items():
        if k.startswith("backbone."):
            assert torch.equal(v, state[k]), k
    assert cfg.key() != _smoke().key()


def test_run_data(isolated):
    cfg = _smoke(labeled_fraction="1/8")
    data = RunData(cfg, cfg.key(), torch.device("cpu"))
    lab, unl = data.split_indices("1/8")
    assert len(lab) == 4 and len(unl) == 28 and not set(lab) & set(unl)
    ds = data.dataset("cityscapes", "train", indices=lab)
    assert len(ds) == 4 and ds.sample(0, torch.Generator().manual_seed(0))["image"].shape[-2:] == cfg.crop
    counts = data.class_counts(ds)
    assert counts.shape == (19,) and counts.sum() > 0
    # pseudo labels: PNGs named after the images replace the labels
    from PIL import Image
    import numpy as np

    pseudo = data.work_dir / "pseudo"
    pseudo.mkdir()
    base = data.dataset("cityscapes", "train", train=False, indices=unl)
    for name in base.names:
        Image.fromarray(np.full((64, 128), 7, np.uint8)).save(pseudo / f"{name}.png")
    pl = data.dataset("cityscapes", "train", train=False, indices=unl, pseudo_dir=pseudo)
    assert set(pl[0]["label"].unique().tolist()) == {7}
    assert data.work_dir.parent == isolated / "results" / "smoke" / "runs"
