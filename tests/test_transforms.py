"""Joint transforms: every random choice comes from the generator given at the call."""

import torch

from blvnb.data.transforms import (AugmentedDataset, Normalize, PhotoMetricDistortion, RandomGaussianBlur,
                                   RandomRotate, eval_transform, train_transform)


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


# --- DARS Table 11: one augmentation alone (train_transform(augment=...)) ----------------------------------

def _windows(x: torch.Tensor, h: int, w: int) -> list[torch.Tensor]:
    return [x[..., i:i + h, j:j + w] for i in range(x.shape[-2] - h + 1) for j in range(x.shape[-1] - w + 1)]


def _is_window(out: torch.Tensor, src: torch.Tensor) -> bool:
    """``out`` is a crop of ``src`` or of its mirror image."""
    h, w = out.shape[-2:]
    return any(torch.equal(out, c) for s in (src, src.flip(-1)) for c in _windows(s, h, w))


def _gens(n: int = 6):
    return [torch.Generator().manual_seed(s) for s in range(n)]


def test_augment_none_only_crops_and_flips():
    image, label = _pair()  # its label has no ignore pixel: a rotated-in corner shows as 255
    tf = train_transform((16, 32), (0.5, 2.0), augment="none")
    ref, _ = Normalize()(image, None)
    outs = [tf(image, label, generator=g) for g in _gens()]
    for img, lab in outs:  # each epoch's view: a window of the same image, mirrored or not; nothing else
        assert img.shape == (3, 16, 32) and _is_window(img, ref) and _is_window(lab, label)
    assert len({tuple(o[0].flatten()[:50].tolist()) for o in outs}) > 1  # the crop does move


def test_augment_photometric_changes_colours_never_labels():
    image, label = _pair()
    tf = train_transform((32, 64), augment="photometric")
    changed = 0
    for g in _gens(8):
        img, lab = tf(image, label, generator=g)
        assert torch.equal(lab, label) or torch.equal(lab, label.flip(-1))  # crop = whole image: flip at most
        ref = Normalize()(image, None)[0]
        changed += not (torch.equal(img, ref) or torch.equal(img, ref.flip(-1)))
    assert changed >= 4  # five coins per image: most draws change something
    pmd = PhotoMetricDistortion()
    a, _ = pmd(image, None, generator=torch.Generator().manual_seed(1))
    b, _ = pmd(image, None, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.dtype == torch.uint8 and a.shape == image.shape


def test_hsv_round_trip_and_hue_shift():
    from blvnb.data.transforms import _hsv_to_rgb, _rgb_to_hsv

    rgb = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(_hsv_to_rgb(_rgb_to_hsv(rgb)), rgb, atol=1e-5)
    red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
    hsv = _rgb_to_hsv(red)
    hsv[0] = (hsv[0] + 120 / 360) % 1.0  # a third of the circle: red → green
    assert torch.allclose(_hsv_to_rgb(hsv).flatten(), torch.tensor([0.0, 1.0, 0.0]), atol=1e-6)


def test_augment_rotation_keeps_the_label_set_up_to_ignore_padding():
    image, label = _pair()  # its label has no ignore pixel: a rotated-in corner shows as 255
    tf = train_transform((32, 64), augment="rotation")
    rotated = 0
    for g in _gens(8):
        img, lab = tf(image, label, generator=g)
        assert set(lab.unique().tolist()) <= set(label.unique().tolist()) | {255}
        rotated += bool((lab == 255).any())  # p 0.5: the corners rotated in are ignored
    assert 0 < rotated < 8


def test_augment_scale_is_the_default_pipeline():
    image, label = _pair()  # its label has no ignore pixel: a rotated-in corner shows as 255
    a = train_transform((16, 32), (0.5, 1.5), augment="scale")
    b = train_transform((16, 32), (0.5, 1.5))
    for g in (1, 2, 3):
        x, y = a(image, label, generator=torch.Generator().manual_seed(g))
        u, v = b(image, label, generator=torch.Generator().manual_seed(g))
        assert torch.equal(x, u) and torch.equal(y, v)


def test_a_bad_augment_is_named():
    import pytest

    from blvnb.errors import ConfigError

    with pytest.raises(ConfigError, match="'cutout'"):
        train_transform((16, 32), augment="cutout")
    with pytest.raises(ConfigError, match="rotate, blur, photometric or cat_max_ratio"):
        train_transform((16, 32), augment="none", rotate=10.0)
    with pytest.raises(ConfigError, match="rotate, blur, photometric or cat_max_ratio"):
        train_transform((16, 32), augment="scale", photometric=True)
    for bad in (0, 1.5, -0.1, "0.75", True):
        with pytest.raises(ConfigError, match=f"cat_max_ratio must be a share in \\(0, 1\\] or None, got {bad!r}"):
            train_transform((16, 32), cat_max_ratio=bad)


# --- mmseg's Cityscapes pipeline (BLV Table 1): cat_max_ratio and the photometric distortion --------------

def _road_scene():
    """A 64x64 label that is road (0) except for a 16x16 car (13) in one corner: most 16x16 crops are road."""
    label = torch.zeros(64, 64, dtype=torch.long)
    label[:16, :16] = 13
    image = torch.randint(0, 256, (3, 64, 64), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    return image, label


def test_cat_max_ratio_redraws_crops_that_one_class_fills_as_mmseg_does():
    from blvnb.data.transforms import RandomCrop

    image, label = _road_scene()
    plain, capped = RandomCrop((16, 16)), RandomCrop((16, 16), cat_max_ratio=0.75)
    def share_of_mixed(crop):
        mixed = 0
        for s in range(200):
            _, lab = crop(image, label, generator=torch.Generator().manual_seed(s))
            counts = torch.bincount(lab.flatten(), minlength=19)
            mixed += int((counts > 0).sum() > 1 and counts.max() < 0.75 * counts.sum())
        return mixed / 200
    # a plain crop rarely straddles the car's edge; ten tries find such a crop far more often
    assert share_of_mixed(capped) > share_of_mixed(plain) + 0.2
    # the first draw is the plain crop's (the same generator calls): a ratio of 1 or none changes nothing
    for ratio in (None, 1.0):
        for s in range(5):
            a = RandomCrop((16, 16), cat_max_ratio=ratio)(image, label, generator=torch.Generator().manual_seed(s))
            b = plain(image, label, generator=torch.Generator().manual_seed(s))
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # ignore pixels do not count: a crop of one class and ignore is still one class
    label[16:, :] = 255
    _, lab = RandomCrop((16, 16), cat_max_ratio=0.75)(image, label, generator=torch.Generator().manual_seed(0))
    assert lab.shape == (16, 16)


def test_the_mmseg_pipeline_adds_the_photometric_distortion_after_the_flip():
    image, label = _pair()
    base = train_transform((16, 32), (0.5, 1.5))
    mm = train_transform((16, 32), (0.5, 1.5), photometric=True, cat_max_ratio=0.75)
    changed = 0
    for g in range(4):
        x, y = base(image, label, generator=torch.Generator().manual_seed(g))
        u, v = mm(image, label, generator=torch.Generator().manual_seed(g))
        assert u.shape == x.shape and set(v.unique().tolist()) <= set(range(19)) | {255}
        changed += not torch.equal(x, u)
    assert changed >= 3  # colours move (each distortion step has probability 0.5)
    names = [type(t).__name__ for t in mm.transforms]
    assert names.index("PhotoMetricDistortion") == names.index("RandomHFlip") + 1
