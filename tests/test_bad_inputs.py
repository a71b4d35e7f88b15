"""Bad inputs a user can give (issue 14): each is answered by a BlvnbError subclass whose message names the
offending value or file, before any work is done. Areas: the `blvnb data toycity` command, toycity and the
loaders, the losses, the confusion matrix, the mean-teacher strategy. (The results store, checkpoints and
notebook parameters have their own tests.)"""

from __future__ import annotations

import os
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from blvnb.cli import build_parser, main
from blvnb.data import build_dataset
from blvnb.data import toycity as T
from blvnb.data.cityscapes import CityscapesDataset
from blvnb.engine.evaluate import confusion_matrix
from blvnb.errors import BlvnbError, ConfigError, DatasetError
from blvnb.losses import build_loss
from blvnb.losses.blv import BLVLoss, SigmaSchedule, blv_loss, cross_entropy, sample_variation

COUNTS = [1000.0, 100.0, 10.0, 1.0]
LOSSES_WITH_COUNTS = ("blv", "la", "gcl", "rw")
ALL_LOSSES = ("ce", "blv", "la", "lovasz", "focal", "gcl", "rw")


def loss(name, **kw):
    if name in LOSSES_WITH_COUNTS:
        kw.setdefault("class_counts", COUNTS)
    return build_loss(name, **kw)


def logits_and_labels(n=2, c=4, h=3, w=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, c, h, w, generator=g), torch.randint(0, c, (n, h, w), generator=g)


# --- `blvnb data toycity`: arguments are checked before any image is drawn --------------------------------

class DrewAnImage(AssertionError):
    pass


def no_drawing(*args, **kwargs):
    """Stands in for toycity.render_full, through which every toycity image (all styles and layouts) is
    drawn: a bad call must fail before the first one."""
    raise DrewAnImage(f"an image was drawn: render_full{args}")


def toycity_cli(tmp_path, *args):
    """Parse the command line and run its function with drawing forbidden: the error it raises."""
    a = build_parser().parse_args(["data", "toycity", "--quiet", *args])
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(T, "render_full", no_drawing)
        with pytest.raises(BlvnbError) as info:
            a.fn(a)  # a DrewAnImage is no BlvnbError: it fails the test
    return info


@pytest.mark.parametrize("style", ["cityscapes", "gta", "synthia", "voc", "scannet"])
def test_cli_toycity_draws_every_image_through_render_full(tmp_path, monkeypatch, style):
    # what makes toycity_cli's guard able to fail: a good call of each style reaches the stand-in
    monkeypatch.setattr(T, "render_full", no_drawing)
    a = build_parser().parse_args(["data", "toycity", "--quiet", "--style", style, "--out", str(tmp_path / "o"),
                                   "--n-train", "1", "--n-val", "1", "--size", "32x64"])
    with pytest.raises(DrewAnImage):
        a.fn(a)


@pytest.mark.parametrize("size, pattern", [
    ("100000x100000", r"'100000x100000' is too large"),
    ("64x9000", r"'64x9000' is too large"),
    ("0x0", r"'0x0' is too small"),
    ("128x", r"bad image size '128x'"),
    ("-64x128", r"'-64x128' is too small"),
])
def test_cli_toycity_size_out_of_bounds(tmp_path, size, pattern):
    info = toycity_cli(tmp_path, "--out", str(tmp_path / "out"), f"--size={size}")
    assert isinstance(info.value, ConfigError) and re.search(pattern, str(info.value))
    assert not os.listdir(tmp_path)


def test_cli_toycity_nothing_to_write(tmp_path):
    info = toycity_cli(tmp_path, "--out", str(tmp_path / "out"), "--n-train", "0", "--n-val", "0")
    assert isinstance(info.value, ConfigError) and "n_train=0 and n_val=0" in str(info.value)
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("flag, value", [("--n-train", "-5"), ("--n-val", "-1"), ("--seed", "-3")])
def test_cli_toycity_negative_counts_and_seed(tmp_path, flag, value):
    info = toycity_cli(tmp_path, "--out", str(tmp_path / "out"), f"{flag}={value}")
    assert isinstance(info.value, ConfigError) and value in str(info.value)
    assert not os.listdir(tmp_path)


def test_cli_toycity_out_is_a_file(tmp_path):
    f = tmp_path / "notes.txt"
    f.write_text("keep me")
    info = toycity_cli(tmp_path, "--out", str(f), "--n-train", "1", "--n-val", "0", "--size", "32x64")
    assert isinstance(info.value, ConfigError) and str(f) in str(info.value) and "not a folder" in str(info.value)
    assert f.read_text() == "keep me" and os.listdir(tmp_path) == ["notes.txt"]


def test_cli_toycity_out_is_a_foreign_folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "holiday.jpg").write_bytes(b"x")
    info = toycity_cli(tmp_path, "--out", str(d), "--n-train", "1", "--n-val", "0", "--size", "32x64")
    assert isinstance(info.value, ConfigError) and str(d) in str(info.value) and "holiday.jpg" in str(info.value)
    assert os.listdir(d) == ["holiday.jpg"]


def test_cli_toycity_out_in_a_read_only_place(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied", str(k.get("dir", a[-1] if a else "")))

    monkeypatch.setattr(T.tempfile, "mkdtemp", refuse)  # a read-only place, also for root (who may write anywhere)
    out = tmp_path / "ro" / "out"
    info = toycity_cli(tmp_path, "--out", str(out), "--n-train", "1", "--n-val", "0", "--size", "32x64")
    assert isinstance(info.value, ConfigError) and str(out) in str(info.value) and "Permission denied" in str(info.value)


@pytest.mark.skipif(not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and os.geteuid() != 0,
                    reason="needs /sys (a read-only file system on Linux)")
def test_cli_toycity_out_on_a_read_only_file_system(tmp_path, capsys):
    out = "/sys/blvnb-toycity-test"
    assert main(["data", "toycity", "--out", out, "--n-train", "1", "--n-val", "0", "--size", "32x64", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "blvnb: error: cannot write toycity to /sys/blvnb-toycity-test" in err
    assert not Path(out).exists()


def test_cli_exit_code_and_message(tmp_path, capsys):
    assert main(["data", "toycity", "--out", str(tmp_path / "o"), "--size", "99999x99999", "--quiet"]) == 2
    assert "'99999x99999' is too large" in capsys.readouterr().err


# --- toycity and the loaders (library calls) ------------------------------------------------------------

def test_toycity_size_given_as_a_string(tmp_path):
    with pytest.raises(ConfigError, match=r"pair \(H, W\) of integers, got '128x256'"):
        T.write_tree(tmp_path / "x", "gta", 1, 0, size="128x256", progress=False)


def test_toycity_counts_not_integers(tmp_path):
    with pytest.raises(ConfigError, match=r"n_train must be an integer >= 0, got 2.5"):
        T.write_tree(tmp_path / "x", "gta", 2.5, 0, size=(32, 64), progress=False)
    with pytest.raises(ConfigError, match=r"n_val must be an integer >= 0, got True"):
        T.ensure("gta", 1, True, size=(32, 64), cache_dir=tmp_path, progress=False)


def test_toycity_cache_in_an_unwritable_place(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match=re.escape(str(blocker / "toycity")) + ".*BLVNB_CACHE"):
        T.ensure("gta", 1, 0, size=(32, 64), cache_dir=blocker, progress=False)


@pytest.fixture(scope="module")
def cs_root(tmp_path_factory):
    return T.write_tree(tmp_path_factory.mktemp("bad") / "cs", "cityscapes", 2, 1, size=(32, 64), progress=False)


def test_dataset_names_given_as_a_string(cs_root):
    name = CityscapesDataset(cs_root, "train").names[0]
    with pytest.raises(ConfigError, match=re.escape(repr(name))):
        CityscapesDataset(cs_root, "train", names=name)


def test_dataset_names_given_as_a_number(cs_root):
    with pytest.raises(ConfigError, match=r"names must be a list of sample names, got int 3"):
        CityscapesDataset(cs_root, "train", names=3)


def test_dataset_root_is_a_file(tmp_path):
    f = tmp_path / "cityscapes.zip"
    f.write_bytes(b"PK")
    with pytest.raises(DatasetError, match=re.escape(str(f))):
        build_dataset("cityscapes", f)


def test_dataset_unknown_kind(tmp_path):
    with pytest.raises(ConfigError, match="'mapillary'"):
        build_dataset("mapillary", tmp_path)


def test_dangling_image_link_is_reported_not_dropped(tmp_path):
    root = T.write_tree(tmp_path / "gta", "gta", 2, 0, size=(32, 64), progress=False)
    (root / "images" / "00003.png").symlink_to(tmp_path / "moved-away.png")
    with pytest.raises(DatasetError, match=r"00003.png -> .*moved-away.png"):
        build_dataset("gta5", root)


def test_image_link_loop_is_reported_not_dropped(tmp_path):
    root = T.write_tree(tmp_path / "syn", "synthia", 1, 0, size=(32, 64), progress=False)
    (root / "RGB" / "0000005.png").symlink_to("0000005.png")
    with pytest.raises(DatasetError, match=r"0000005.png -> 0000005.png"):
        build_dataset("synthia", root)


# --- the losses -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_labels_out_of_range(name):
    z, y = logits_and_labels()
    y[0, 0, 0], y[1, 2, 4] = 7, -3
    with pytest.raises(DatasetError, match=r"labels hold -3, 7: outside the class ids 0\.\.3"):
        loss(name)(z, y)


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_loss_labels_of_float_dtype(name):
    z, y = logits_and_labels()
    with pytest.raises(ConfigError, match="got dtype torch.float32"):
        loss(name)(z, y.float())


@pytest.mark.parametrize("name", ("ce", "blv", "lovasz", "focal"))
def test_loss_empty_spatial_dimensions(name):
    z, y = torch.randn(2, 4, 0, 5), torch.zeros(2, 0, 5, dtype=torch.long)
    with pytest.raises(ConfigError, match=r"empty input: logits of shape \(2, 4, 0, 5\)"):
        loss(name)(z, y)


def test_loss_batch_sizes_differ():
    z, _ = logits_and_labels(n=2)
    with pytest.raises(ConfigError, match=r"\(2, 4, 3, 5\) do not fit labels of shape \(3, 3, 5\)"):
        cross_entropy(z, torch.zeros(3, 3, 5, dtype=torch.long))


def test_loss_logits_not_a_float_tensor():
    _, y = logits_and_labels()
    with pytest.raises(ConfigError, match="got a tensor of dtype torch.int64"):
        blv_loss(y[:, None].expand(2, 4, 3, 5).long(), y, COUNTS)


@pytest.mark.parametrize("make", [
    lambda: BLVLoss(COUNTS, sigma=None),
    lambda: blv_loss(*logits_and_labels(), COUNTS, sigma=None),
    lambda: sample_variation((2, 2), sigma=None),
], ids=["BLVLoss", "blv_loss", "sample_variation"])
def test_blv_sigma_none(make):
    with pytest.raises(ConfigError, match=r"sigma must be a finite number, got None"):
        make()


def test_blv_sigma_as_a_string_and_negative():
    with pytest.raises(ConfigError, match=r"got '6' \(str\)"):
        build_loss("blv", class_counts=COUNTS, sigma="6")
    with pytest.raises(ConfigError, match=r"sigma must be >= 0, got -1"):
        build_loss("blv", class_counts=COUNTS, sigma=-1)


@pytest.mark.parametrize("name, kw, pattern", [
    ("la", {"tau": None}, r"tau must be a finite number, got None"),
    ("focal", {"gamma": -1.0}, r"gamma must be >= 0, got -1.0"),
    ("gcl", {"sigma": None}, r"sigma must be a finite number, got None"),
    ("rw", {"power": "1"}, r"power must be a finite number, got '1'"),
    ("lovasz", {"classes": "some"}, r"got 'some'"),
    ("blv", {"clamp": "both"}, r"unknown clamp 'both'"),
    ("blv", {"balance": "released-v2"}, r"unknown balance 'released-v2'"),
    ("blv", {"temperature": 2}, r"does not take \['temperature'\]"),
])
def test_loss_options(name, kw, pattern):
    with pytest.raises(ConfigError, match=pattern):
        loss(name, **kw)


def test_class_counts_or_prior_given_as_a_dict():
    with pytest.raises(ConfigError, match=r"one per class; got \{'road': 0.4, 'car': 0.1\}"):
        build_loss("blv", class_counts={"road": 0.4, "car": 0.1})
    with pytest.raises(ConfigError, match=r"one per class; got \{'road': 0.4\}"):
        build_loss("la", class_counts={"road": 0.4})


def test_pseudo_label_prior_given_as_a_dict():
    """(Passes once worker semi's one validation of counts, ``pseudo.distribution.check_counts``, is merged.)"""
    from blvnb.pseudo.distribution import prior_from_counts

    with pytest.raises(ConfigError, match=r"one per class; got \{'road': 0.5, 'car': 0.5\}"):
        prior_from_counts({"road": 0.5, "car": 0.5})


def test_class_counts_given_as_a_string_or_of_the_wrong_length():
    with pytest.raises(ConfigError, match=r"got 'road'"):
        build_loss("rw", class_counts="road")
    with pytest.raises(ConfigError, match=r"class_counts has 3 classes but the logits have 4"):
        build_loss("blv", class_counts=[3, 2, 1])(*logits_and_labels())


def test_sigma_schedule_in_the_wrong_order():
    with pytest.raises(ConfigError, match=r"t_mid=50, t_end=40"):
        SigmaSchedule(t_mid=50, t_end=40)


def test_unknown_loss_name():
    with pytest.raises(ConfigError, match=r"unknown loss 'blv2'"):
        build_loss("blv2")


# --- the confusion matrix -----------------------------------------------------------------------------------

def test_confusion_target_ids_out_of_range():
    p = torch.zeros(2, 3, dtype=torch.long)
    t = torch.tensor([[0, 1, 30], [2, -1, 255]])
    with pytest.raises(BlvnbError, match=r"target holds -1, 30: outside the class ids 0\.\.18"):
        confusion_matrix(p, t, 19)


def test_confusion_raw_label_ids_instead_of_train_ids():
    ids = np.array([[7, 8, 26], [33, 0, 11]], dtype=np.uint8)  # Cityscapes label ids, not train ids
    with pytest.raises(BlvnbError, match=r"target holds 26, 33.*label_id_to_train_id"):
        confusion_matrix(np.zeros_like(ids), ids, 19)


@pytest.mark.parametrize("bad", [19.5, "19", True, 0, None])
def test_confusion_num_classes_not_a_positive_integer(bad):
    p = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(ConfigError, match=re.escape(f"got {bad!r}")):
        confusion_matrix(p, p, bad)


def test_confusion_probabilities_instead_of_labels():
    p = torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(BlvnbError, match="got dtype torch.float32"):
        confusion_matrix(torch.rand(2, 3), p, 19)


# --- the mean-teacher strategy's settings ---------------------------------------------------------------------

def mt_cfg(**kw):
    base = dict(strategy="mean-teacher", loss="ce", loss_options={}, strategy_options={}, labeled_fraction="1/8",
                dataset="cityscapes", seed=0, iters=10, batch_size=2, scale_range=(0.5, 2.0), model="r10t-fpn",
                lr=None, weight_decay=None, num_workers=0)
    base.update(kw)
    return SimpleNamespace(**base)


class NoData:
    device = "cpu"

    def split_indices(self, fraction):
        return [0], [1, 2]

    def dataset(self, *a, **k):
        return [{"image": torch.zeros(3, 4, 4)}] * 2

    def class_counts(self, ds):
        return np.ones(19)

    def stream(self, ds, b, order=None):
        return None


@pytest.mark.parametrize("kw, pattern", [
    ({"labeled_fraction": None}, r"labeled_fraction"),
    ({"strategy_options": {"emma": 0.99}}, r"\['emma'\]"),
    ({"strategy_options": {"ema_horizon": 1.5}}, r"got 1.5"),
    ({"strategy_options": {"counts": "eq5"}}, r"got 'eq5'"),
    ({"strategy_options": {"scale_range": (2.0, 0.5)}}, r"\(2.0, 0.5\)"),
    ({"loss": "dice"}, r"unknown loss 'dice'"),
])
def test_mean_teacher_settings(kw, pattern):
    from blvnb.engine.strategies.mean_teacher import build

    with pytest.raises(ConfigError, match=pattern):
        build(mt_cfg(**kw), NoData())
