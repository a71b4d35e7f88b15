"""How long each table's runs train in the ``paper`` profile: iterations as data, each with its source.

The papers state their schedules in iterations (BLV Table 1, DAFormer, HRDA) or in epochs (BLV's
semi-supervised runs, DARS); epochs become iterations by one rule, :func:`blvnb.engine.recipes.epoch_iterations`,
from the epochs, the size of the list an epoch passes over and the batch:

=========================================  ===========  ==================================================
runs                                       iterations   source
=========================================  ===========  ==================================================
BLV Table 1 CNNs (OCR, UperNet, PSPNet)    40k          BLV §4.1; the released ``*_40k`` mmseg configs
BLV Table 1 SegFormer-B0                   160k         BLV §4.1; ``segformer_mit-b0_8x1_1024x1024_160k``
BLV Table 1 K-Net Swin-T, UperNet ViT-B    80k          BLV §4.1; ``knet_…_80k``, ``upernet_vit-b16_mln_…_80k``
BLV semi-supervised (Tables 2, 5, 13)      200 epochs   U2PL† (recipes.md (b)): an epoch is (2975 − n_l) / 16
                                                        iterations → ≈ 34.9k / 32.5k / 27.9k / 18.6k at
                                                        1/16 … 1/2 (``mean_teacher.paper_iterations``)
UDA (DAFormer †/‡, HRDA; BLV 3–9, 14)      40k          DAFormer / HRDA configs (recipes.md (d))
DARS round 0 (Cityscapes)                  200 epochs   DARS §4.1, ``train.py`` (drop_last): the labeled list
                                                        at 16 → 23 · 200 = 4.6k at 1/8
DARS rounds 1, 2 (Cityscapes)              200 epochs   an epoch is the unlabeled list at 8 + 8 → 325 · 200
                                                        = 65k at 1/8
DARS VOC 2012 (Table 3)                    50 epochs    DARS §4.1: 1,464 labeled, 9,118 unlabeled (train_aug)
DARS ScanNet (Tables 12, 13)               20 epochs    DARS App. B: 19,466 training frames
DARS fully supervised (oracles, Table 11)  the round 0  inferred: a round 0 on every label (the paper gives no
                                           rule         separate schedule for it)
=========================================  ===========  ==================================================

The gpu profile keeps its own scaled iterations (:mod:`blvnb.experiments.profiles`); smoke and quick theirs.
DARS Table 8's extra unlabeled images (its N_p) lengthen round 1's epoch as the rule says (200 epochs over
the unlabeled list, 3,000 images → 75k). DARS Table 2's DeepLab v2 trains at its released batch of 4 + 4,
so its epochs hold twice the iterations (130k a round at 1/8).
"""

from __future__ import annotations

from blvnb.data.splits import labeled_count
from blvnb.engine.recipes import epoch_iterations
from blvnb.errors import ConfigError

#: BLV Table 1's iterations per architecture (BLV §4.1, the released configs); the others 40k
T1_ITERS = {"mitb0-segformer": 160_000, "swint-knet": 80_000, "vitb16-uper": 80_000}
T1_DEFAULT_ITERS = 40_000
#: DAFormer's and HRDA's 40k iterations (recipes.md (d)), also DARS App. C's runs on the uda strategy
UDA_ITERS = 40_000
#: (training images, images an unlabeled pool holds when the split labels them all or None) of the real sets:
#: Cityscapes train; VOC 2012's augmented set (SBD's 10,582) of which the official train list (1,464) is
#: labeled; ScanNet's 19,466 training frames (DARS App. B)
TRAIN_IMAGES = {"cityscapes": 2975, "voc": 10_582, "scannet": 19_466}
VOC_TRAIN = 1464
#: DARS's epochs per round (§4.1 for Cityscapes and VOC 12, App. B for ScanNet)
DARS_EPOCHS = {"cityscapes": 200, "voc": 50, "scannet": 20}


def t1_iters(model: str) -> int:
    """BLV Table 1's iterations for a registry name (``"mitb0-segformer@paper"`` → 160k)."""
    return T1_ITERS.get(str(model).split("@")[0], T1_DEFAULT_ITERS)


def semi_iters(fraction: str) -> int:
    """BLV's semi-supervised iterations at split ``fraction``: 200 epochs of (2975 − n_l) / 16 (U2PL†)."""
    from blvnb.engine.strategies.mean_teacher import PAPER_LABELED, paper_iterations

    if str(fraction) not in PAPER_LABELED:
        raise ConfigError(f"no BLV semi-supervised schedule for split {fraction!r}; BLV has {', '.join(PAPER_LABELED)}")
    return paper_iterations(str(fraction))


def dars_lists(dataset: str, fraction: str | None, extra_unlabeled: int = 0) -> tuple[int, int]:
    """(labeled, unlabeled) images of a DARS setting on the real data: a split of the training images
    (``fraction``: ``round(n · f)`` labeled, the rest unlabeled), every label (``None``; VOC: its official
    train list labeled, the rest of the augmented set unlabeled), plus ``extra_unlabeled`` images."""
    if dataset not in TRAIN_IMAGES:
        raise ConfigError(f"no DARS schedule for data set {dataset!r}; known: {', '.join(TRAIN_IMAGES)}")
    n = TRAIN_IMAGES[dataset]
    if fraction is None:
        labeled = VOC_TRAIN if dataset == "voc" else n
    else:
        labeled = labeled_count(n, fraction)
    return labeled, n - labeled + int(extra_unlabeled or 0)


def dars_round_iters(dataset: str, fraction: str | None, batch: int, k: int, extra_unlabeled: int = 0) -> list[int]:
    """Iterations of DARS rounds 0 … ``k``: round 0 its epochs over the labeled list at ``batch``, rounds
    ≥ 1 over the unlabeled list at ``batch // 2`` + ``batch // 2`` (DARS's epoch: once over the unlabeled
    images), whole batches only (the released loader drops the last)."""
    labeled, unlabeled = dars_lists(dataset, fraction, extra_unlabeled)
    epochs = DARS_EPOCHS[dataset]
    out = [epoch_iterations(epochs, labeled, batch, drop_last=True)]
    for _ in range(int(k)):
        if not unlabeled:
            raise ConfigError(f"DARS round ≥ 1 on {dataset} at labeled fraction {fraction!r} has no unlabeled images")
        out.append(epoch_iterations(epochs, unlabeled, max(1, batch // 2), drop_last=True))
    return out


def dars_supervised_iters(dataset: str, batch: int) -> int:
    """A DARS fully supervised run (its oracle, Table 11's augmentations): its epochs over every training
    image at ``batch``, as a round 0 on every label."""
    if dataset not in TRAIN_IMAGES:
        raise ConfigError(f"no DARS schedule for data set {dataset!r}; known: {', '.join(TRAIN_IMAGES)}")
    return epoch_iterations(DARS_EPOCHS[dataset], TRAIN_IMAGES[dataset], batch, drop_last=True)


__all__ = ["DARS_EPOCHS", "T1_ITERS", "TRAIN_IMAGES", "UDA_ITERS", "dars_lists", "dars_round_iters",
           "dars_supervised_iters", "semi_iters", "t1_iters"]
