import numpy as np
import pytest
import torch

from blvnb import classes as C


def test_label_table_matches_cityscapesscripts():
    labels = pytest.importorskip("cityscapesscripts.helpers.labels").labels
    ours = {lab.id: lab for lab in C.LABELS}
    for ref in labels:
        if ref.id < 0:  # license plate: not storable in a uint8 label image
            continue
        mine = ours[ref.id]
        assert (mine.name, mine.train_id, mine.color) == (ref.name, ref.trainId, ref.color)
    assert len(C.CLASSES) == 19 and C.CLASSES[0] == "road" and C.CLASSES[18] == "bicycle"


def test_label_id_to_train_id_numpy_torch_any_shape():
    ids = np.array([[7, 8, 0, 33], [26, 31, 200, 1]], dtype=np.uint8)
    expected = np.array([[0, 1, 255, 18], [13, 16, 255, 255]])
    assert (C.label_id_to_train_id(ids) == expected).all()
    t = C.label_id_to_train_id(torch.from_numpy(ids.astype(np.int64))[None])
    assert t.shape == (1, 2, 4) and (t[0].numpy() == expected).all()
    assert C.label_id_to_train_id(np.array([-1, 300, 7])).tolist() == [255, 255, 0]
    # round trip for every train id
    tid = np.arange(19)
    assert (C.label_id_to_train_id(C.train_id_to_label_id(tid)) == tid).all()


def test_subsets():
    names = lambda ids: {C.CLASSES[i] for i in ids}  # noqa: E731
    assert names(C.BLV_TAIL) == {"wall", "traffic light", "traffic sign", "rider", "truck", "bus", "train",
                                 "motorcycle", "bicycle"}
    assert len(C.DARS_TAIL) == 13 and "road" not in names(C.DARS_TAIL) and "pole" in names(C.DARS_TAIL)
    assert len(C.SYNTHIA_16) == 16 and not names(C.SYNTHIA_16) & {"terrain", "truck", "train"}
    assert len(C.SYNTHIA_13) == 13 and not names(C.SYNTHIA_13) & {"wall", "fence", "pole"}


def test_synthia_round_trip():
    tid = np.array(C.SYNTHIA_16 + (255,))
    back = C.synthia_id_to_train_id(C.train_id_to_synthia_id(tid))
    assert back.tolist() == list(C.SYNTHIA_16) + [255]
    assert C.synthia_id_to_train_id(np.array([0, 13, 22])).tolist() == [255, 255, 255]  # void, parking, lanemarking
