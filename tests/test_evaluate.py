"""Tests for blvnb.engine.evaluate: confusion matrix, IoU, agreement with cityscapesScripts, inference."""

from __future__ import annotations

import copy
import importlib
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from blvnb.classes import (BLV_TAIL, CLASSES, DARS_TAIL, HEAD_BLV, IGNORE, NUM_CLASSES, SYNTHIA_13, SYNTHIA_16,
                           label_id_to_train_id, train_id_to_label_id)
from blvnb.engine import evaluate as ev
from blvnb.engine.evaluate import (Confusion, confusion_matrix, evaluate, mean_iou, per_class_iou,
                                   summarize)
from blvnb.errors import BlvnbError, ConfigError
from blvnb.models import inference
from blvnb.models.inference import predict_logits

# --- confusion matrix ------------------------------------------------------------------------------

# (target, prediction) pixel pairs: (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (ignored) (0,0) (1,2)
T3 = [[0, 0, 1], [1, 2, 2], [255, 0, 1]]
P3 = [[0, 1, 1], [1, 2, 0], [2, 0, 2]]
M3 = [[2, 1, 0],
      [0, 2, 1],
      [1, 0, 1]]


def test_confusion_hand_made():
    m = confusion_matrix(torch.tensor(P3), torch.tensor(T3), num_classes=3)
    assert m.dtype == torch.int64 and m.shape == (3, 3)
    assert m.tolist() == M3
    # class 0: TP 2, FN 1, FP 1; class 1: TP 2, FN 1, FP 1; class 2: TP 1, FN 1, FP 1
    assert per_class_iou(m).tolist() == pytest.approx([2 / 4, 2 / 4, 1 / 3])
    assert per_class_iou(m).dtype == torch.float64
    assert mean_iou(per_class_iou(m)) == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    s = summarize(m, dataset="generic")
    assert s["pixel_acc"] == pytest.approx(5 / 8)
    assert s["mAcc"] == pytest.approx((2 / 3 + 2 / 3 + 1 / 2) / 3)


def test_confusion_ignore_dropped_and_numpy_equals_torch():
    t = np.array(T3, dtype=np.uint8)
    p = np.array(P3, dtype=np.int32)
    m_np = confusion_matrix(p, t, num_classes=3)
    m_t = confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), num_classes=3)
    assert m_np.tolist() == m_t.tolist() == M3
    assert int(m_np.sum()) == 8  # 9 pixels, one ignored
    # ground truth outside [0, C) that is not the ignore index is an error, not silently dropped (issue 14)
    t2 = t.copy()
    t2[0, 0] = 7
    with pytest.raises(BlvnbError, match="target holds 7"):
        confusion_matrix(p, t2, num_classes=3)
    # another ignore value (the 255 pixel becomes a 0 first)
    t0 = np.where(t == 255, 0, t).astype(np.uint8)
    assert int(confusion_matrix(p, t0, num_classes=3, ignore_index=0).sum()) == 8 - 3


def test_confusion_matches_naive_loop():
    g = torch.Generator().manual_seed(0)
    c = 7
    t = torch.randint(0, c, (3, 20, 30), generator=g)
    t[torch.rand(t.shape, generator=g) < 0.15] = IGNORE
    p = torch.randint(0, c, (3, 20, 30), generator=g)
    naive = [[0] * c for _ in range(c)]
    for ti, pi in zip(t.flatten().tolist(), p.flatten().tolist()):
        if ti != IGNORE:
            naive[ti][pi] += 1
    assert confusion_matrix(p, t, num_classes=c).tolist() == naive
    # the accumulator over batches gives the same
    acc = Confusion(c)
    for i in range(3):
        acc.update(p[i], t[i])
    assert acc.matrix.tolist() == naive
    assert acc.all_reduce().matrix.tolist() == naive  # no process group: no-op
    assert int(acc.reset().matrix.sum()) == 0


def test_predictions_outside_range_are_misses(caplog):
    t = torch.tensor([0, 0, 1, 1, 255])
    p = torch.tensor([0, 255, 1, -1, 3])  # 255 and -1 are misses of classes 0 and 1
    with caplog.at_level(logging.WARNING, logger="blvnb.engine.evaluate"):
        m = confusion_matrix(p, t, num_classes=2)
    assert m.tolist() == [[1, 0], [0, 1]]
    assert "2 predicted pixels" in caplog.text  # not silently dropped
    full = confusion_matrix(p, t, num_classes=2, misses=True)
    assert full.tolist() == [[1, 0, 1], [0, 1, 1]]
    # false negatives of the ground-truth class, false positives of nobody
    assert per_class_iou(full).tolist() == [0.5, 0.5]
    assert summarize(full, dataset="generic")["pixel_acc"] == 0.5
    acc = Confusion(2).update(p, t)
    assert acc.misses.tolist() == [1, 1] and acc.iou().tolist() == [0.5, 0.5]


def test_confusion_errors():
    with pytest.raises(BlvnbError, match="same shape"):
        confusion_matrix(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(BlvnbError, match="argmax"):
        confusion_matrix(torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(BlvnbError, match="C×C"):
        per_class_iou(torch.zeros(3, 5))


# --- IoU and summaries -----------------------------------------------------------------------------

def test_iou_nan_for_absent_class_and_nanmean():
    m = torch.tensor([[3, 1, 0, 0],
                      [1, 1, 0, 0],
                      [0, 0, 0, 0],   # class 2: absent from ground truth and prediction
                      [0, 0, 0, 0]])
    m[3, 3] = 0
    m[0, 3] = 2                     # class 3: predicted twice, never in ground truth -> IoU 0
    iou = per_class_iou(m)
    assert iou[0].item() == pytest.approx(3 / 7)
    assert iou[1].item() == pytest.approx(1 / 3)
    assert math.isnan(iou[2].item())
    assert iou[3].item() == 0.0
    assert mean_iou(iou) == pytest.approx((3 / 7 + 1 / 3 + 0) / 3)
    assert mean_iou(iou, [1, 2]) == pytest.approx(1 / 3)
    assert math.isnan(mean_iou(iou, [2]))
    assert mean_iou(iou.numpy()) == pytest.approx(mean_iou(iou))
    with pytest.raises(BlvnbError):
        mean_iou(iou, [4])


def test_summarize_cityscapes_and_synthia():
    g = torch.Generator().manual_seed(1)
    m = torch.randint(0, 50, (NUM_CLASSES, NUM_CLASSES), generator=g) + torch.diag(torch.full((NUM_CLASSES,), 500))
    m[16] = 0
    m[:, 16] = 0  # "train" absent
    iou = per_class_iou(m)
    s = summarize(m)
    assert list(s["per_class_iou"]) == list(CLASSES)
    assert all(isinstance(v, float) for k, v in s.items() if k not in ("per_class_iou", "iou"))
    assert s["iou"][3] == s["per_class_iou"]["wall"] == pytest.approx(iou[3].item())
    assert s["mIoU"] == pytest.approx(np.nanmean(iou.numpy()))
    assert s["mIoU_tail_blv"] == pytest.approx(np.nanmean(iou.numpy()[list(BLV_TAIL)]))
    assert s["mIoU_head_blv"] == pytest.approx(np.nanmean(iou.numpy()[list(HEAD_BLV)]))
    assert s["mIoU_tail_dars"] == pytest.approx(np.nanmean(iou.numpy()[list(DARS_TAIL)]))
    assert 0 < s["pixel_acc"] < 1
    syn = summarize(m.numpy(), dataset="synthia")
    assert syn["mIoU16"] == syn["mIoU"] == pytest.approx(np.nanmean(iou.numpy()[list(SYNTHIA_16)]))
    assert syn["mIoU13"] == pytest.approx(np.nanmean(iou.numpy()[list(SYNTHIA_13)]))
    tail16 = [k for k in BLV_TAIL if k in SYNTHIA_16]
    assert len(tail16) == 7
    assert syn["mIoU_tail_blv"] == pytest.approx(np.nanmean(iou.numpy()[tail16]))
    with pytest.raises(ConfigError):
        summarize(m, dataset="kitti")
    with pytest.raises(BlvnbError):
        summarize(torch.eye(3, dtype=torch.long))  # 3 classes are not Cityscapes'


# --- agreement with cityscapesScripts' evaluator ---------------------------------------------------

IGNORED_LABEL_IDS = [0, 1, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30]


def _scene(rng: np.random.Generator, h: int, w: int, classes: list[int]) -> np.ndarray:
    """Train-id map made of random rectangles of the given classes."""
    out = np.full((h, w), classes[0], dtype=np.uint8)
    for _ in range(25):
        y, x = rng.integers(0, h), rng.integers(0, w)
        out[y:y + rng.integers(4, 24), x:x + rng.integers(4, 48)] = rng.choice(classes)
    return out


def _cityscapes_case(tmp_path, rng):
    """Three (prediction, ground truth) pairs written as label-id PNGs in a Cityscapes-like tree."""
    from PIL import Image

    gt_dir = tmp_path / "gtFine" / "val" / "aachen"
    pred_dir = tmp_path / "results"
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir()
    h, w = 64, 128
    no_train = [k for k in range(NUM_CLASSES) if k != 16]  # "train" absent everywhere -> NaN on both sides
    pred_files, gt_files, preds, gts = [], [], [], []
    for i in range(3):
        gt_classes = no_train if i else no_train[:6]
        if i == 2:
            gt_classes = [k for k in gt_classes if k != 17]  # motorcycle: only ever predicted -> IoU 0
        gt_train = _scene(rng, h, w, gt_classes)
        gt_ids = train_id_to_label_id(gt_train)
        # ignore regions with several ignored label ids (void, parking, caravan, ...)
        for _ in range(4):
            y, x = rng.integers(0, h - 8), rng.integers(0, w - 16)
            gt_ids[y:y + 8, x:x + 16] = rng.choice(IGNORED_LABEL_IDS)
        pred = label_id_to_train_id(gt_ids).astype(np.int64)
        pred[pred == IGNORE] = 0
        wrong = rng.random((h, w)) < 0.2
        pred[wrong] = rng.choice(no_train, size=int(wrong.sum()))
        pred[rng.random((h, w)) < 0.03] = IGNORE  # unlabeled predictions: misses
        name = f"aachen_000000_{i:06d}"
        Image.fromarray(gt_ids).save(gt_dir / f"{name}_gtFine_labelIds.png")
        Image.fromarray(train_id_to_label_id(pred)).save(pred_dir / f"{name}_pred.png")
        gt_files.append(str(gt_dir / f"{name}_gtFine_labelIds.png"))
        pred_files.append(str(pred_dir / f"{name}_pred.png"))
        preds.append(pred)
        gts.append(label_id_to_train_id(gt_ids))
    return pred_files, gt_files, preds, gts


def _run_cityscapes_evaluator(tmp_path, monkeypatch, pred_files, gt_files) -> dict:
    monkeypatch.setenv("CITYSCAPES_DATASET", str(tmp_path))
    monkeypatch.setenv("CITYSCAPES_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    cs = importlib.import_module("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")
    monkeypatch.setattr(cs, "CSUPPORT", False)  # the pure-Python path, whatever is installed
    args = copy.copy(cs.args)  # leave the module-level object untouched
    args.evalInstLevelScore = False  # needs *_instanceIds.png; nIoU is not what we compare
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.exportFile = str(tmp_path / "evaluationResults" / "result.json")
    args.quiet = True
    args.colorized, args.bold, args.nocol = False, "", ""
    return cs.evaluateImgLists(pred_files, gt_files, args)


def test_iou_agrees_with_cityscapesscripts(tmp_path, monkeypatch):
    pytest.importorskip("cityscapesscripts")
    pred_files, gt_files, preds, gts = _cityscapes_case(tmp_path, np.random.default_rng(0))
    theirs = _run_cityscapes_evaluator(tmp_path, monkeypatch, pred_files, gt_files)

    acc = Confusion()
    for p, t in zip(preds, gts):
        acc.update(p, t)
    assert int(acc.misses.sum()) > 0  # the comparison covers unlabeled predictions
    ours = acc.iou()
    for k, name in enumerate(CLASSES):
        a, b = ours[k].item(), theirs["classScores"][name]
        if name == "train":
            assert math.isnan(a) and math.isnan(b)
        else:
            assert abs(a - b) <= 1e-6, (name, a, b)
    assert theirs["classScores"]["motorcycle"] > 0  # present in two of the images
    assert abs(mean_iou(ours) - theirs["averageScoreClasses"]) <= 1e-6
    # the matrices agree too: their 19 evaluated label ids ↔ our train ids, predicted ignored ids ↔ misses
    cm = np.asarray(theirs["confMatrix"], dtype=np.int64)
    ids = [int(train_id_to_label_id(np.array([k]))[0]) for k in range(NUM_CLASSES)]
    assert cm[np.ix_(ids, ids)].tolist() == acc.matrix.tolist()
    others = [j for j in range(cm.shape[1]) if j not in ids]
    assert cm[np.ix_(ids, others)].sum(1).tolist() == acc.misses.tolist()


# --- inference -------------------------------------------------------------------------------------

C = 5


def _pointwise(seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(3, C, 1).eval()


def _spatial(seed=0):
    torch.manual_seed(seed)
    return nn.Conv2d(3, C, 3, padding=1).eval()


def _images(n=2, h=37, w=53, seed=0):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_window_starts():
    assert inference._starts(37, 16, 11) == [0, 11, 21]
    assert inference._starts(53, 24, 16) == [0, 16, 29]
    assert inference._starts(100, 30, 20) == [0, 20, 40, 60, 70]
    assert inference._starts(30, 30, 20) == [0]
    assert inference._starts(10, 30, 20) == [0]


@pytest.mark.parametrize("crop,stride", [((16, 24), None), ((16, 24), (11, 16)), ((64, 20), (5, 7)),
                                         ((64, 64), None), (20, 20)])
def test_slide_equals_whole_for_pointwise_model(crop, stride):
    model, x = _pointwise(), _images()
    whole = predict_logits(model, x, mode="whole", num_classes=C)
    slide = predict_logits(model, x, mode="slide", crop=crop, stride=stride, num_classes=C)
    assert slide.shape == (2, C, 37, 53)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=0)


def test_slide_matches_naive_windows_and_batching():
    model, x = _spatial(), _images()
    # crop (16, 24), stride (11, 16): windows at rows [0, 11, 21], columns [0, 16, 29]
    ref = torch.zeros(2, C, 37, 53)
    cnt = torch.zeros(1, 1, 37, 53)
    with torch.no_grad():
        for y in (0, 11, 21):
            for x0 in (0, 16, 29):
                ref[:, :, y:y + 16, x0:x0 + 24] += model(x[:, :, y:y + 16, x0:x0 + 24])
                cnt[:, :, y:y + 16, x0:x0 + 24] += 1
    ref /= cnt
    for wb in (1, 4, 9):
        out = predict_logits(model, x, mode="slide", crop=(16, 24), stride=(11, 16), num_classes=C, window_batch=wb)
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_padding_path_crops_back():
    model, x = _spatial(), _images(1, 12, 15)
    out = predict_logits(model, x, mode="slide", crop=(32, 32), num_classes=C)
    with torch.no_grad():
        padded = model(F.pad(x, (0, 17, 0, 20)))[:, :, :12, :15]
    assert out.shape == (1, C, 12, 15)
    torch.testing.assert_close(out, padded, atol=1e-5, rtol=0)


def test_flip():
    x = _images()
    eq = _pointwise()  # a 1×1 conv is flip-equivariant: flipping changes nothing
    torch.testing.assert_close(predict_logits(eq, x, flip=True, num_classes=C),
                               predict_logits(eq, x, flip=False, num_classes=C), atol=1e-5, rtol=0)
    model = _spatial()
    with torch.no_grad():
        ref = (model(x) + model(x.flip(-1)).flip(-1)) / 2
    torch.testing.assert_close(predict_logits(model, x, flip=True, num_classes=C), ref, atol=1e-5, rtol=0)
    slide = predict_logits(eq, x, mode="slide", crop=(16, 24), flip=True, num_classes=C)
    torch.testing.assert_close(slide, predict_logits(eq, x, num_classes=C), atol=1e-5, rtol=0)


class _HalfRes(nn.Module):
    def __init__(self, as_dict=False):
        super().__init__()
        self.conv = _pointwise()
        self.as_dict = as_dict

    def forward(self, x):
        out = F.avg_pool2d(self.conv(x), 2)
        return {"out": out, "aux": out * 0} if self.as_dict else out


def test_low_resolution_and_dict_outputs():
    x = _images(2, 36, 52)
    model = _HalfRes().eval()
    out = predict_logits(model, x, num_classes=C)
    assert out.shape == (2, C, 36, 52)
    with torch.no_grad():
        ref = F.interpolate(model(x), size=(36, 52), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(predict_logits(_HalfRes(as_dict=True).eval(), x, num_classes=C), out)
    slide = predict_logits(model, x, mode="slide", crop=(16, 24), num_classes=C)
    assert slide.shape == (2, C, 36, 52)
    assert model.training is False


def test_predict_logits_errors():
    model, x = _pointwise(), _images()
    with pytest.raises(BlvnbError, match="crop"):
        predict_logits(model, x, mode="slide", num_classes=C)
    with pytest.raises(ConfigError):
        predict_logits(model, x, mode="tiles", num_classes=C)
    with pytest.raises(BlvnbError, match="channels"):
        predict_logits(model, x, num_classes=19)


# --- evaluate --------------------------------------------------------------------------------------

class _Oracle(nn.Module):
    """Reads the class from channel 0 of the image: logit_k = −(x₀ − k)²."""

    def __init__(self, num_classes=NUM_CLASSES):
        super().__init__()
        self.register_buffer("k", torch.arange(num_classes, dtype=torch.float32).view(1, -1, 1, 1))
        self.unused = nn.Conv2d(3, 3, 3)  # a 4-D weight, to exercise channels_last detection

    def forward(self, x):
        return -((x[:, :1] - self.k) ** 2)


def _oracle_loader(present=(0, 1, 2, 5, 11, 13, 18)):
    g = torch.Generator().manual_seed(0)
    items = []
    for _ in range(4):
        label = torch.tensor(present)[torch.randint(0, len(present), (24, 40), generator=g)]
        label[torch.rand(24, 40, generator=g) < 0.1] = IGNORE
        image = torch.randn(3, 24, 40, generator=g)
        image[0] = torch.where(label == IGNORE, torch.zeros(()), label.float())
        items.append({"image": image, "label": label})
    return torch.utils.data.DataLoader(items, batch_size=2)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kw", [dict(), dict(mode="slide", crop=(16, 16), flip=True),
                                dict(amp_dtype=torch.bfloat16, channels_last=True)])
def test_evaluate_oracle(kw, device):
    kw = dict(kw)
    model = _Oracle().eval().to(device)
    if kw.pop("channels_last", False):
        model = model.to(memory_format=torch.channels_last)
        assert ev._uses_channels_last(model)
    present = (0, 1, 2, 5, 11, 13, 18)
    res = evaluate(model, _oracle_loader(present), device=device, progress=False, **kw)
    assert res["mIoU"] == 1.0 and res["pixel_acc"] == 1.0
    for k, name in enumerate(CLASSES):
        v = res["per_class_iou"][name]
        assert (v == 1.0) if k in present else math.isnan(v)
    cm = np.array(res["confusion"])
    assert cm.shape == (NUM_CLASSES, NUM_CLASSES) and cm.sum() == np.trace(cm) > 0
    assert model.training is False


@pytest.mark.parametrize("device", DEVICES)
def test_evaluate_equals_direct_computation(device):
    torch.manual_seed(0)
    model = nn.Conv2d(3, NUM_CLASSES, 1).train().to(device)  # evaluate must not switch modes
    loader = _oracle_loader()
    res = evaluate(model, loader, device=device, progress=False)
    assert model.training is True
    acc = Confusion()
    with torch.no_grad():
        for b in loader:
            acc.update(model(b["image"].to(device)).argmax(1).cpu(), b["label"])
    assert res["confusion"] == acc.matrix.tolist()
    assert res["mIoU"] == pytest.approx(summarize(acc.matrix)["mIoU"])
