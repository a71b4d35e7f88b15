"""Joint transforms: every random choice comes from the generator given at the call."""

import torch

from blvnb.data.transforms import (AugmentedDataset, RandomGaussianBlur, RandomRotate, eval_transform,
                                   train_transform)


def _pair():
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 32, 64), generator=g, dtype=torch.uint8)
    label = torch.randint(0, 19, (32, 64), generator=g)
    return image, label


def test_the_call_generator_decides_every_draw():
    image, label = _pair()
    tf = train_transform((16, 32), (0.5, 1.5), rotate=10.0, blur=True)
    a = tf(image, label, generator=torch.Generator().manual_seed(1))
    b = tf(image, label, generator=torch.Generator().manual_seed(1))
    c = tf(image, label, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (3, 16, 32) and a[1].shape == (16, 32) and a[0].dtype == torch.float32
    img, lab = tf(image, None, generator=torch.Generator().manual_seed(1))  # unlabeled images
    assert lab is None and torch.equal(img, a[0])


def test_rotation_pads_the_label_with_ignore_and_blur_keeps_it():
    image, label = _pair()
    rot = RandomRotate(10.0, p=1.0)
    img, lab = rot(image, label, generator=torch.Generator().manual_seed(3))
    assert lab[0, 0] == 255 or lab[-1, -1] == 255 or lab[0, -1] == 255 or lab[-1, 0] == 255
    assert set(lab.unique().tolist()) <= set(range(19)) | {255}
    img2, lab2 = RandomGaussianBlur(5, p=1.0)(image, label, generator=torch.Generator())
    assert torch.equal(lab2, label) and img2.shape == image.shape and img2.float().std() < image.float().std()


def test_augmented_dataset_indexes_and_samples():
    image, label = _pair()

    class One(torch.utils.data.Dataset):
        names = ["a"]

        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"image": image, "label": label, "name": "a"}

    ds = AugmentedDataset(One(), train_transform((16, 32)))
    s = ds.sample(0, torch.Generator().manual_seed(4))
    assert s["index"] == 0 and s["name"] == "a" and torch.equal(ds[0]["image"], ds[0]["image"])
    assert ds.names == ["a"]
    e = AugmentedDataset(One(), eval_transform())[0]
    assert e["label"].shape == label.shape
