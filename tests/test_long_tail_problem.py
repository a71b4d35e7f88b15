"""toycity must show the long-tail problem: a small model trained briefly is clearly worse on the tail.

A real (short) training run on CPU through the same code path as the notebooks: toycity in the real
Cityscapes layout → loader → the one loop → evaluation. About 30 s on two cores.
"""

import pytest

from blvnb.experiments.runs import RunConfig, run


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    return tmp_path


def test_brief_training_is_worse_on_tail_classes(isolated):
    cfg = RunConfig.from_profile("smoke", iters=150, batch_size=8, lr=0.02,
                                 n_train=48, n_val=12, size=(64, 128), crop=(64, 128), device="cpu", progress=False)
    rec = run(cfg)
    m = rec["metrics"]
    assert m["mIoU_head_blv"] > 0.3, m  # it learned the head classes ...
    assert m["mIoU_head_blv"] - m["mIoU_tail_blv"] > 0.2, m  # ... and is clearly worse on BLV's tail
    again = run(cfg)  # the store returns the same record without training again
    assert again["cached"] and again["metrics"]["mIoU"] == m["mIoU"]
