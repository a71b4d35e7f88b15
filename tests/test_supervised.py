"""The supervised strategy as a run builds it: losses by name, counts from the labels used, rare-class order."""

import os

import numpy as np
import pytest
import torch

from blvnb.engine.streams import Stream
from blvnb.engine.strategies.supervised import build
from blvnb.errors import BlvnbError
from blvnb.experiments.runs import RunConfig, RunData
from blvnb.losses.blv import BLVLoss
from blvnb.losses.frequencies import counts_from_labels


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", os.environ.get("BLVNB_TEST_CACHE", str(tmp_path / "cache")))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    return tmp_path


def _built(**kw):
    cfg = RunConfig.from_profile("smoke", device="cpu", progress=False, **kw)
    data = RunData(cfg, cfg.key(), torch.device("cpu"))
    return cfg, data, build(cfg, data)


def test_blv_counts_come_from_the_labeled_images_used(isolated):
    cfg, data, built = _built(loss="blv", loss_options={"sigma": 4.0, "clamp": "released"}, labeled_fraction="1/16")
    lab, _ = data.split_indices("1/16")
    expected = counts_from_labels(data.dataset("cityscapes", "train", train=False, indices=lab))
    s = built.strategy
    assert isinstance(s.loss, BLVLoss) and s.loss.sigma == 4.0 and s.loss.clamp == "released"
    assert s.summary()["class_counts"] == expected.tolist() and s.summary()["n_train_images"] == len(lab) == 2
    batch = built.streams["labeled"].next()  # 2 labeled images fill a batch of 4 (the list is repeated)
    assert batch["image"].shape[0] == 4 and sorted(set(batch["index"].tolist())) == sorted(range(2))
    assert built.train_overrides["optimizer"] == "sgd" and built.train_overrides["min_lr"] == pytest.approx(1e-4)


def test_rare_class_sampling_orders_the_stream(isolated):
    cfg, data, built = _built(loss="rs", loss_options={"min_pixels": 20})
    info = built.strategy.summary()
    probs = np.array(info["rcs_class_probs"])
    assert probs.sum() == pytest.approx(1.0) and info["rcs_min_pixels"] == 20
    stream = built.streams["labeled"]
    o1, o2 = stream.order(0), stream.order(0)
    assert o1 == o2 and o1 != stream.order(1) and len(o1) == len(data.dataset("cityscapes", "train")) == 32  # one draw per image per epoch, repeatable
    assert stream.next()["index"].tolist() == o1[:4]
    # the order is the rare-class sampler's draw with the epoch's generator (T = 0.01, DAFormer)
    from blvnb.data.sampling import RareClassSampler, image_class_pixels
    from blvnb.engine.streams import seeded_generator

    pixels = image_class_pixels(data.dataset("cityscapes", "train", train=False))
    ref = RareClassSampler(pixels, temperature=0.01, min_pixels=20, generator=seeded_generator(cfg.seed, "order", 3))
    assert stream.order(3) == ref.sample()[0].tolist()
    assert np.allclose(ref.class_probs, probs)


def test_bad_loss_settings_are_blvnb_errors(isolated):
    with pytest.raises(BlvnbError, match="does not take"):
        _built(loss="blv", loss_options={"sigmaa": 4})
    with pytest.raises(BlvnbError, match="rs"):
        _built(loss="rs", loss_options={"temperature": 0.01, "tau": 2})
    with pytest.raises(BlvnbError, match="either sigma"):
        _built(loss="blv", loss_options={"sigma": 4, "sigma_schedule": 6})


def test_transformer_recipe_reaches_the_loop(isolated):
    cfg, _, built = _built(model="mitb0-segformer@small", iters=160)
    o = built.train_overrides
    assert o["optimizer"] == "adamw" and o["lr"] == 6e-5 and o["warmup_iters"] == round(160 * 1500 / 160000)
    from blvnb.models.registry import build_model

    groups = built.strategy.param_groups(build_model(cfg.model))
    assert sorted((g["lr_mult"], g["decay_mult"]) for g in groups) == [(1.0, 0.0), (1.0, 1.0), (10.0, 0.0), (10.0, 1.0)]


def test_stream_with_small_dataset_and_ranks_agree():
    class Ten(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return {"image": torch.full((3, 2, 2), float(i)), "label": torch.zeros(2, 2, dtype=torch.long)}

    one = Stream(Ten(), 4, seed=0, rank=0, world_size=1)
    two = [Stream(Ten(), 4, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        a = one.next()["index"].tolist()
        b = two[0].next()["index"].tolist() + two[1].next()["index"].tolist()
        assert a == b


def test_augment_option_sets_the_training_view(isolated):
    # DARS Table 11: one augmentation alone; the smoke crop is the whole 64×128 image, so "none" leaves
    # every epoch's view the image itself or its mirror, and a rotation only brings in ignored corners
    from blvnb.engine.streams import sample_generator

    cfg, data, built = _built(strategy_options={"augment": "none"})
    assert built.strategy.summary()["augment"] == "none"
    train = built.streams["labeled"].dataset
    raw = data.dataset("cityscapes", "train", train=False)
    for i in (0, 5):
        ref = raw[i]
        for epoch in (0, 1):
            s = train.sample(i, sample_generator(cfg.seed, epoch, 3))
            assert any(torch.equal(s["image"], r) and torch.equal(s["label"], lab)
                       for r, lab in ((ref["image"], ref["label"]), (ref["image"].flip(-1), ref["label"].flip(-1))))
    _, _, rot = _built(strategy_options={"augment": "rotation"})
    for i in range(4):
        s = rot.streams["labeled"].dataset.sample(i, sample_generator(cfg.seed, 0, i))
        assert set(s["label"].unique().tolist()) <= set(raw[i]["label"].unique().tolist()) | {255}
    # left out: today's pipeline, and no option in the run's key
    _, _, default = _built()
    assert "augment" not in default.strategy.summary()
    assert RunConfig.from_profile("smoke").key_dict()["strategy_options"] == {}


def test_bad_augment_is_named(isolated):
    from blvnb.errors import ConfigError

    with pytest.raises(ConfigError, match="'cutmix'"):
        _built(strategy_options={"augment": "cutmix"})
    with pytest.raises(ConfigError, match="augmentation"):
        _built(strategy_options={"augmentation": "none"})
