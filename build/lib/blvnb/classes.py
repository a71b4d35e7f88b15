"""The Cityscapes label set, in one place.

Everything in blvnb speaks *train ids*: the 19 evaluated Cityscapes classes numbered 0..18, with
``IGNORE = 255`` for every pixel that is not evaluated. Data sets store other encodings on disk
(Cityscapes and GTA5 store Cityscapes *label ids*, SYNTHIA its own class ids); the loaders convert
them with the look-up tables below, and nowhere else.

The label table follows ``cityscapesscripts.helpers.labels`` (a test checks it row by row).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

IGNORE = 255
NUM_CLASSES = 19


class Label(NamedTuple):
    name: str
    id: int  # the label id stored in *_gtFine_labelIds.png and in GTA5's labels
    train_id: int  # 0..18, or 255 for classes that are not evaluated
    color: tuple[int, int, int]


# fmt: off
LABELS: tuple[Label, ...] = (
    Label("unlabeled",             0, 255, (0, 0, 0)),
    Label("ego vehicle",           1, 255, (0, 0, 0)),
    Label("rectification border",  2, 255, (0, 0, 0)),
    Label("out of roi",            3, 255, (0, 0, 0)),
    Label("static",                4, 255, (0, 0, 0)),
    Label("dynamic",               5, 255, (111, 74, 0)),
    Label("ground",                6, 255, (81, 0, 81)),
    Label("road",                  7,   0, (128, 64, 128)),
    Label("sidewalk",              8,   1, (244, 35, 232)),
    Label("parking",               9, 255, (250, 170, 160)),
    Label("rail track",           10, 255, (230, 150, 140)),
    Label("building",             11,   2, (70, 70, 70)),
    Label("wall",                 12,   3, (102, 102, 156)),
    Label("fence",                13,   4, (190, 153, 153)),
    Label("guard rail",           14, 255, (180, 165, 180)),
    Label("bridge",               15, 255, (150, 100, 100)),
    Label("tunnel",               16, 255, (150, 120, 90)),
    Label("pole",                 17,   5, (153, 153, 153)),
    Label("polegroup",            18, 255, (153, 153, 153)),
    Label("traffic light",        19,   6, (250, 170, 30)),
    Label("traffic sign",         20,   7, (220, 220, 0)),
    Label("vegetation",           21,   8, (107, 142, 35)),
    Label("terrain",              22,   9, (152, 251, 152)),
    Label("sky",                  23,  10, (70, 130, 180)),
    Label("person",               24,  11, (220, 20, 60)),
    Label("rider",                25,  12, (255, 0, 0)),
    Label("car",                  26,  13, (0, 0, 142)),
    Label("truck",                27,  14, (0, 0, 70)),
    Label("bus",                  28,  15, (0, 60, 100)),
    Label("caravan",              29, 255, (0, 0, 90)),
    Label("trailer",              30, 255, (0, 0, 110)),
    Label("train",                31,  16, (0, 80, 100)),
    Label("motorcycle",           32,  17, (0, 0, 230)),
    Label("bicycle",              33,  18, (119, 11, 32)),
)
# fmt: on

#: The 19 evaluated classes, in train-id order.
CLASSES: tuple[str, ...] = tuple(
    lab.name for lab in sorted((lab for lab in LABELS if lab.train_id != IGNORE), key=lambda l: l.train_id)
)
#: Short column names as the papers' tables print them.
SHORT_NAMES: tuple[str, ...] = (
    "road", "s.walk", "build.", "wall", "fence", "pole", "t.light", "sign", "veget.", "terrain",
    "sky", "person", "rider", "car", "truck", "bus", "train", "m.bike", "bike",
)
COLORS: np.ndarray = np.array(
    [lab.color for lab in sorted((l for l in LABELS if l.train_id != IGNORE), key=lambda l: l.train_id)],
    dtype=np.uint8,
)
TRAIN_ID = {name: i for i, name in enumerate(CLASSES)}

#: Label ids that can legally appear in a Cityscapes/GTA5 label image (0..33).
VALID_LABEL_IDS: frozenset[int] = frozenset(lab.id for lab in LABELS)

# label id -> train id, for every uint8 value (ids outside the table map to IGNORE)
_ID_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
for _lab in LABELS:
    _ID_TO_TRAIN[_lab.id] = _lab.train_id
_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)  # IGNORE -> 0 ("unlabeled")
for _lab in LABELS:
    if _lab.train_id != IGNORE:
        _TRAIN_TO_ID[_lab.train_id] = _lab.id


def _lookup(table: np.ndarray, array, fill: int):
    """Apply a 256-entry look-up table to a numpy array or torch tensor of any shape."""
    if isinstance(array, np.ndarray):
        a = array.astype(np.int64, copy=False)
        out = np.full(a.shape, fill, dtype=np.uint8)
        ok = (a >= 0) & (a < len(table))
        out[ok] = table[a[ok]]
        return out
    import torch

    if isinstance(array, torch.Tensor):
        lut = torch.as_tensor(table, device=array.device).long()
        a = array.long()
        ok = (a >= 0) & (a < len(table))
        return torch.where(ok, lut[a.clamp(0, len(table) - 1)], torch.full_like(a, fill))
    return _lookup(table, np.asarray(array), fill)


def label_id_to_train_id(array):
    """Cityscapes label ids -> train ids (0..18); ids outside the table -> 255.

    Accepts a numpy array (returns uint8) or a torch tensor (returns int64 on the same device), any shape.
    """
    return _lookup(_ID_TO_TRAIN, array, IGNORE)


def train_id_to_label_id(array):
    """Train ids (0..18) -> Cityscapes label ids; 255 and anything else -> 0 ("unlabeled")."""
    return _lookup(_TRAIN_TO_ID, array, 0)


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """Train-id map (H×W) -> RGB image (H×W×3) in the Cityscapes palette; ignore is black."""
    palette = np.zeros((256, 3), dtype=np.uint8)
    palette[:NUM_CLASSES] = COLORS
    return palette[np.asarray(train_ids, dtype=np.uint8)]


# --- subsets used by the papers -------------------------------------------------------------------

def _ids(*names: str) -> tuple[int, ...]:
    return tuple(TRAIN_ID[n] for n in names)


#: BLV Sec. 4.1: "mIoU (tail)" over nine classes.
BLV_TAIL: tuple[int, ...] = _ids(
    "wall", "traffic light", "traffic sign", "rider", "truck", "bus", "train", "motorcycle", "bicycle"
)
#: DARS Table 4 highlights 13 tail classes. The text does not list them; the 13 classes with the
#: smallest Cityscapes pixel shares (everything but road, sidewalk, building, vegetation, sky, car) is
#: the reading we use. No subset of Table 4's per-class columns recomputes its "Tail mIoU" column
#: exactly (the book says so where the table is shown).
DARS_TAIL: tuple[int, ...] = tuple(
    i for i in range(NUM_CLASSES) if CLASSES[i] not in ("road", "sidewalk", "building", "vegetation", "sky", "car")
)
HEAD_BLV: tuple[int, ...] = tuple(i for i in range(NUM_CLASSES) if i not in BLV_TAIL)

#: SYNTHIA shares 16 classes with Cityscapes (no terrain, truck, train) ...
SYNTHIA_16: tuple[int, ...] = tuple(i for i in range(NUM_CLASSES) if CLASSES[i] not in ("terrain", "truck", "train"))
#: ... and the common "mIoU*" is over 13 of them (also without wall, fence, pole), BLV Table 4.
SYNTHIA_13: tuple[int, ...] = tuple(i for i in SYNTHIA_16 if CLASSES[i] not in ("wall", "fence", "pole"))

#: SYNTHIA (RAND-CITYSCAPES) class id -> Cityscapes train id. Ids not listed are void (-> 255).
SYNTHIA_ID_TO_TRAIN: dict[int, int] = {
    3: TRAIN_ID["road"], 4: TRAIN_ID["sidewalk"], 2: TRAIN_ID["building"], 21: TRAIN_ID["wall"],
    5: TRAIN_ID["fence"], 7: TRAIN_ID["pole"], 15: TRAIN_ID["traffic light"], 9: TRAIN_ID["traffic sign"],
    6: TRAIN_ID["vegetation"], 16: TRAIN_ID["terrain"], 1: TRAIN_ID["sky"], 10: TRAIN_ID["person"],
    17: TRAIN_ID["rider"], 8: TRAIN_ID["car"], 18: TRAIN_ID["truck"], 19: TRAIN_ID["bus"],
    20: TRAIN_ID["train"], 12: TRAIN_ID["motorcycle"], 11: TRAIN_ID["bicycle"],
}
#: Class ids that SYNTHIA's label images use (0 void .. 22 lanemarking).
SYNTHIA_VALID_IDS: frozenset[int] = frozenset(range(23))
_SYNTHIA_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
for _k, _v in SYNTHIA_ID_TO_TRAIN.items():
    _SYNTHIA_TO_TRAIN[_k] = _v


def synthia_id_to_train_id(array):
    """SYNTHIA class ids -> Cityscapes train ids; void and unknown ids -> 255 (numpy or torch)."""
    return _lookup(_SYNTHIA_TO_TRAIN, array, IGNORE)


def train_id_to_synthia_id(array: np.ndarray) -> np.ndarray:
    """Train ids -> SYNTHIA class ids (uint16); classes SYNTHIA lacks and 255 -> 0 (void)."""
    table = np.zeros(256, dtype=np.uint16)
    for k, v in SYNTHIA_ID_TO_TRAIN.items():
        table[v] = k
    return table[np.asarray(array, dtype=np.uint8)]


# --- PASCAL VOC 2012 (DARS Table 3) ----------------------------------------------------------------
#: The 21 classes of VOC 2012 segmentation in their official order: the stored index is the train id.
#: 255 marks the "void" band drawn around objects and hard pixels; it is ignored.
VOC_CLASSES: tuple[str, ...] = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
VOC_NUM_CLASSES = len(VOC_CLASSES)
#: Values a VOC label PNG may hold: the 21 class indices and 255 (void).
VOC_VALID_IDS: frozenset[int] = frozenset(range(VOC_NUM_CLASSES)) | {IGNORE}


def voc_colormap(n: int = 256) -> np.ndarray:
    """The VOC devkit's palette (``VOClabelcolormap.m``): index bits spread over R, G, B from the top bit.

    Bit 3j of the index sets bit 7−j of red, bit 3j+1 of green and bit 3j+2 of blue; index 255 (void)
    comes out as (224, 224, 192).
    """
    cmap = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        cmap[i] = (r, g, b)
    return cmap


VOC_COLORS: np.ndarray = voc_colormap()[:VOC_NUM_CLASSES]


# --- ScanNet 2-D (DARS Tables 12-13) ---------------------------------------------------------------
#: The 20 classes of the ScanNet benchmark, in its order, with their NYU40 ids (the values stored in
#: the exported ``label-filt`` PNGs). Every other NYU40 id, and 0 (unannotated), is ignored.
SCANNET_CLASSES: tuple[str, ...] = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "bookshelf", "picture",
    "counter", "desk", "curtain", "refrigerator", "shower curtain", "toilet", "sink", "bathtub", "otherfurniture",
)
SCANNET_NYU40_IDS: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 16, 24, 28, 33, 34, 36, 39)
SCANNET_NUM_CLASSES = len(SCANNET_CLASSES)
#: NYU40 palette of the ScanNet benchmark scripts, for the 20 benchmark classes (train-id order).
SCANNET_COLORS: np.ndarray = np.array([
    (174, 199, 232), (152, 223, 138), (31, 119, 180), (255, 187, 120), (188, 189, 34), (140, 86, 75),
    (255, 152, 150), (214, 39, 40), (197, 176, 213), (148, 103, 189), (196, 156, 148), (23, 190, 207),
    (247, 182, 210), (219, 219, 141), (255, 127, 14), (158, 218, 229), (44, 160, 44), (112, 128, 144),
    (227, 119, 194), (82, 84, 163),
], dtype=np.uint8)
#: Values a ScanNet NYU40 label PNG may hold (0 = unannotated, 1..40).
SCANNET_VALID_IDS: frozenset[int] = frozenset(range(41))
_NYU40_TO_TRAIN = np.full(256, IGNORE, dtype=np.uint8)
for _t, _nyu in enumerate(SCANNET_NYU40_IDS):
    _NYU40_TO_TRAIN[_nyu] = _t


def nyu40_to_train_id(array):
    """NYU40 ids -> ScanNet benchmark train ids (0..19); 0 and the other 20 NYU40 classes -> 255."""
    return _lookup(_NYU40_TO_TRAIN, array, IGNORE)


def train_id_to_nyu40(array) -> np.ndarray:
    """ScanNet train ids (0..19) -> NYU40 ids (uint8); 255 -> 0 (unannotated)."""
    table = np.zeros(256, dtype=np.uint8)
    table[: SCANNET_NUM_CLASSES] = SCANNET_NYU40_IDS
    return table[np.asarray(array, dtype=np.uint8)]
