"""Results store and run configs: cached by config + version, written atomically, errors explained."""

import json

import pytest

from blvnb.errors import BlvnbError
from blvnb.experiments import store
from blvnb.experiments.profiles import PROFILES, get_profile
from blvnb.experiments.runs import RunConfig


def test_get_or_run_caches_by_config(tmp_path):
    calls = []

    def work():
        calls.append(1)
        return {"metrics": {"mIoU": 0.5}}

    cfg = {"a": 1, "b": [1, 2]}
    r1 = store.get_or_run("quick", "t1", cfg, work, root=tmp_path)
    r2 = store.get_or_run("quick", "t1", cfg, work, root=tmp_path)
    assert calls == [1] and not r1["cached"] and r2["cached"] and r2["metrics"]["mIoU"] == 0.5
    store.get_or_run("quick", "t1", {"a": 2, "b": [1, 2]}, work, root=tmp_path)
    assert len(calls) == 2
    files = list((tmp_path / "quick" / "t1").glob("*.json"))
    assert len(files) == 2 and not list(tmp_path.rglob("*.tmp"))
    rec = json.loads(files[0].read_text())
    assert {"config", "version", "key", "profile", "table"} <= set(rec)


def test_key_ignores_execution_settings_and_mount_point():
    a = RunConfig.from_profile("quick", table="x", device="cpu", num_workers=0)
    b = RunConfig.from_profile("quick", table="x", device="cuda", num_workers=8)
    assert store.config_key(a.key_dict()) == store.config_key(b.key_dict())
    c = RunConfig.from_profile("quick", table="x", iters=a.iters + 1)
    assert store.config_key(a.key_dict()) != store.config_key(c.key_dict())
    p1 = RunConfig.from_profile("paper", table="x", data_root="/mnt/a")
    p2 = RunConfig.from_profile("paper", table="x", data_root="/data")
    assert store.config_key(p1.key_dict()) == store.config_key(p2.key_dict())


def test_profiles_and_errors():
    assert set(PROFILES) == {"smoke", "quick", "gpu", "paper"}
    assert get_profile("quick", iters=5).iters == 5
    with pytest.raises(BlvnbError, match="unknown profile"):
        get_profile("fast")
    with pytest.raises(BlvnbError, match="unknown profile field"):
        get_profile("quick", itters=5)
    with pytest.raises(BlvnbError, match="data_root"):
        RunConfig.from_profile("paper", table="x")
    with pytest.raises(BlvnbError, match="unknown run setting"):
        RunConfig.from_profile("quick", table="x", lr_mult=2)
