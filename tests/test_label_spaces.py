"""Runs on data sets with their own classes (DARS Tables 3, 12, 13): toycity in the VOC (21 classes) and
ScanNet (20 classes) layouts — the model's outputs, the labeled/unlabeled split and the evaluation follow
the data set's label space."""

import pytest
import torch

from blvnb.classes import SCANNET_CLASSES, VOC_CLASSES
from blvnb.errors import ConfigError
from blvnb.experiments import runs


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_classes_per_data_set():
    assert runs.num_classes_of("voc") == len(VOC_CLASSES) == 21
    assert runs.num_classes_of("scannet") == len(SCANNET_CLASSES) == 20
    assert runs.num_classes_of("cityscapes") == runs.num_classes_of("gta5") == 19
    with pytest.raises(ConfigError, match="unknown dataset 'coco'"):
        runs.RunConfig.from_profile("smoke", dataset="coco")


def test_voc_labeled_is_the_official_train_list_and_the_rest_of_aug_is_unlabeled():
    cfg = runs.RunConfig.from_profile("smoke", strategy="dars-rounds", dataset="voc", progress=False)
    data = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    lab, unl = data.split_indices(None)
    aug = data.dataset("voc", "train", train=False)  # VOC's training images: the augmented set
    official = set(data.base_dataset("voc", "train").names)
    names = [aug.names[i] for i in range(len(aug))]
    assert {names[i] for i in lab} == official and not {names[i] for i in unl} & official
    assert sorted(lab + unl) == list(range(len(aug))) and len(unl) > 0
    counts = data.class_counts(data.dataset("voc", "train", train=False, indices=lab))
    assert counts.shape == (21,) and counts.sum() > 0
    assert data.build_model()(torch.zeros(1, 3, 64, 64)).shape[1] == 21


def test_scannet_split_and_run_in_its_label_space():
    cfg = runs.RunConfig.from_profile("smoke", dataset="scannet", labeled_fraction="1/8", progress=False,
                                      iters=2)
    data = runs.RunData(cfg, cfg.key(), torch.device("cpu"))
    lab, unl = data.split_indices("1/8")
    assert lab and unl and not set(lab) & set(unl)
    rec = runs.run(cfg)
    assert len(rec["metrics"]["iou"]) == 20 and 0.0 <= rec["metrics"]["mIoU"] <= 1.0
    assert rec["n_val_images"] == len(data.dataset("scannet", "val", train=False))
