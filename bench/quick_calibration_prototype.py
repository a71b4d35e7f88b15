"""The quick-profile calibration on the pre-issue-9 code path (``loop.train`` with a step function), which
is how the numbers of ``book/quick_profile.md`` were first measured; ``bench/quick_calibration.py
--prototype`` calls :func:`measure`. Standalone:

    python bench/quick_calibration_prototype.py --seeds 0 1 2 3 4        # CE and BLV, paired by seed
    python bench/quick_calibration_prototype.py --seeds 0 --loss ce      # one arm only

What it does, with the values of :data:`PROFILE` and :data:`PRETRAIN` (the calibrated quick profile):

1. Toy pretraining, once (cached under ``$BLVNB_CACHE/calib/``): the profile's model trained with cross
   entropy on toycity data that the runs never see (another style and seed), SGD + poly.
2. Each run: ``torch.manual_seed(seed)``, build the model, load the pretrained weights (``keep="all"``, the
   calibrated choice: backbone *and* decoder; ``"backbone"`` re-initialises the decoder from ``seed``, as the
   papers' decoders start from scratch; ``"noclassifier"`` re-initialises only the last 1×1 classifier),
   train with SGD + poly on the profile's Cityscapes-style toycity train split (data order, augmentations
   and dropout from ``seed``), evaluate on its val split. BLV draws its noise from its own generator (seeded from ``seed``), so CE and BLV of one seed see
   the same initialisation, the same batches and the same augmentations.

Times: CPU seconds of this (single-threaded) process around each run's training and evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from blvnb.classes import NUM_CLASSES
from blvnb.data import build_dataset, toycity
from blvnb.data.transforms import eval_transform, train_transform
from blvnb.engine import loop
from blvnb.engine.evaluate import evaluate
from blvnb.losses import build_loss
from blvnb.losses.frequencies import counts_from_labels
from blvnb.models.registry import build_model

#: the calibrated quick profile (the values recommended for ``profiles.py``)
PROFILE = dict(model="r10t-fpn", size=(128, 256), n_train=200, n_val=60, data_seed=0, crop=(64, 128),
               scale_range=(0.75, 1.5), batch_size=8, iters=100, lr=0.02, weight_decay=5e-4, keep="all")
#: the quick profile's toy pretraining ("ImageNet"): another style and seed than every run's data.
#: "long" is the recommended one; "short" is the cheaper one that was calibrated first (3x fewer steps).
PRETRAINS = {
    "long": dict(style="gta", seed=1000, n=600, size=(128, 256), crop=(64, 128), scale_range=(0.75, 1.5),
                 batch_size=16, iters=900, lr=0.05, weight_decay=5e-4, init_seed=0),
    "short": dict(style="gta", seed=1000, n=400, size=(128, 256), crop=(64, 128), scale_range=(0.75, 1.5),
                  batch_size=16, iters=300, lr=0.05, weight_decay=5e-4, init_seed=0),
}
PRETRAIN = PRETRAINS["long"]
BLV_OPTIONS = {"sigma": 6.0, "clamp": "paper"}
KEYS = ("mIoU", "mIoU_head_blv", "mIoU_tail_blv")
_KIND = {"gta": "gta5", "cityscapes": "cityscapes", "synthia": "synthia"}


def _cache() -> Path:
    return Path(os.environ.get("BLVNB_CACHE") or Path.home() / ".cache" / "blvnb").expanduser() / "calib"


def pretrain(spec: dict = PRETRAIN, model_name: str = PROFILE["model"]) -> tuple[Path, dict]:
    """Train (once) and return the path of the pretrained state_dict and its timing record."""
    key = json.dumps({**spec, "model": model_name, "toycity": toycity.GENERATOR_VERSION}, sort_keys=True)
    path = _cache() / f"pretrain-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    meta = path.with_suffix(".json")
    if path.is_file() and meta.is_file() and json.loads(meta.read_text())["key"] == key:
        return path, json.loads(meta.read_text())
    c0 = time.process_time()
    root = toycity.ensure(spec["style"], n_train=spec["n"], n_val=0, size=tuple(spec["size"]), seed=spec["seed"],
                          progress=False)
    gen_cpu = time.process_time() - c0
    torch.manual_seed(spec["init_seed"])
    g = torch.Generator().manual_seed(spec["init_seed"])
    ds = build_dataset(_KIND[spec["style"]], root, split="all",
                       transform=train_transform(tuple(spec["crop"]), tuple(spec["scale_range"]), None, g))
    model = build_model(model_name, num_classes=NUM_CLASSES)
    dl = DataLoader(ds, batch_size=spec["batch_size"], shuffle=True, drop_last=True,
                    generator=torch.Generator().manual_seed(spec["init_seed"]))
    c1 = time.process_time()
    loop.train(model, dl, loop.TrainConfig(iters=spec["iters"], lr=spec["lr"], weight_decay=spec["weight_decay"]),
               device="cpu", progress=False)
    train_cpu = time.process_time() - c1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    rec = {"key": key, "gen_cpu": gen_cpu, "train_cpu": train_cpu}
    meta.write_text(json.dumps(rec))
    return path, rec


def run_one(seed: int, loss: str, init: Path | None, profile: dict = PROFILE) -> dict:
    """One supervised run of the profile; returns metrics (points) and CPU seconds."""
    size = tuple(profile["size"])
    root = toycity.ensure("cityscapes", n_train=profile["n_train"], n_val=profile["n_val"], size=size,
                          seed=profile["data_seed"], progress=False)
    c0 = time.process_time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    train = build_dataset("cityscapes", root, split="train",
                          transform=train_transform(tuple(profile["crop"]), tuple(profile["scale_range"]), None, g))
    model = build_model(profile["model"], num_classes=NUM_CLASSES)
    if init is not None:
        state = torch.load(init, map_location="cpu", weights_only=True)
        if profile["keep"] == "backbone":  # the decoder starts from scratch (seeded by ``seed``)
            state = {k: v for k, v in state.items() if k.startswith("backbone.")}
        elif profile["keep"] == "noclassifier":  # only the last 1x1 classifier starts from scratch
            state = {k: v for k, v in state.items() if not k.startswith("head.classifier")}
        model.load_state_dict(state, strict=False)
    loss_fn = None
    if loss != "ce":
        loss_fn = build_loss(loss, class_counts=counts_from_labels(train),
                             generator=torch.Generator().manual_seed(10_000 + seed), **BLV_OPTIONS)
    dl = DataLoader(train, batch_size=profile["batch_size"], shuffle=True, drop_last=True,
                    generator=torch.Generator().manual_seed(seed))
    tcfg = loop.TrainConfig(iters=profile["iters"], lr=profile["lr"], weight_decay=profile["weight_decay"])
    h = loop.train(model, dl, tcfg, step=loop.supervised_step(loss_fn), device="cpu", progress=False)
    c1 = time.process_time()
    val = build_dataset("cityscapes", root, split="val", transform=eval_transform())
    model.eval()
    m = evaluate(model, DataLoader(val, batch_size=1), device="cpu", progress=False)
    c2 = time.process_time()
    out = {k: 100.0 * m[k] for k in KEYS}
    out["iou"] = [round(100.0 * v, 2) for v in m["iou"]]
    out.update(train_seconds=h["seconds"], train_cpu=c1 - c0, eval_cpu=c2 - c1, cpu_seconds=c2 - c0)
    return out


def measure(seeds, losses=("ce", "blv"), pretraining: str = "long") -> tuple[list[dict], dict]:
    """CE and BLV per seed, as ``bench/quick_calibration.py`` expects them."""
    c0 = time.process_time()
    init, pre = pretrain(PRETRAINS[pretraining])
    first = time.process_time() - c0
    rows, cpu, train_s = [], [], []
    for seed in seeds:
        row = {"seed": seed}
        for loss in losses:
            row[loss] = run_one(seed, loss, init)
            cpu.append(row[loss]["cpu_seconds"])
            train_s.append(row[loss]["train_seconds"])
        rows.append(row)
        print(json.dumps({"seed": seed, **{k: {kk: round(v, 2) for kk, v in row[k].items() if kk != "iou"}
                                         for k in losses}}), flush=True)
    import statistics

    timings = {"first_cpu": first, "pretrain": pre, "cpu_per_run_median": statistics.median(cpu),
               "train_seconds_median": statistics.median(train_s)}
    return rows, timings


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--loss", choices=("ce", "blv", "both"), default="both")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pretraining", choices=sorted(PRETRAINS), default="long")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    losses = ("ce", "blv") if args.loss == "both" else (args.loss,)
    rows, timings = measure(args.seeds, losses, args.pretraining)
    print(json.dumps({"timings": timings}, default=str))


if __name__ == "__main__":
    main()
