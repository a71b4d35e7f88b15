"""Backbone weights from a file load whole or not at all (issue 18, item 2).

A non-strict load used to accept any file of which one key matched: a timm-layout Swin-T state dict loaded
4 of its backbone's 169 tensors (the patch embedding) without a word. Every state dict here is written by
the test itself, in the layout it names.
"""

from __future__ import annotations

import re

import pytest
import timm
import torch

from blvnb.errors import BlvnbError
from blvnb.models.backbones import load_weights
from blvnb.models.mit import MiT
from blvnb.models.registry import build_model, weights_report

SWIN_SMALL = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))  # swint-knet@small's Swin


def _save(tmp_path, name, state) -> str:
    path = tmp_path / name
    torch.save(state, path)
    return str(path)


def _random(state: dict, seed: int = 1) -> dict:
    """The same keys and shapes with other values (to see that they were loaded)."""
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in state.items()}


def _timm_swin_state() -> dict:
    """A Swin-T (small config) ImageNet classifier's state dict in timm's own layout."""
    torch.manual_seed(3)
    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, strict_img_size=False, **SWIN_SMALL)
    return _random(net.state_dict())


def test_a_timm_layout_swin_loads_every_backbone_tensor(tmp_path):
    state = _timm_swin_state()
    path = _save(tmp_path, "swin_t_timm.pth", state)
    model = build_model("swint-knet@small", weights=path)
    body = model.backbone.body.state_dict()
    n = sum(1 for k in body if not k.endswith("num_batches_tracked"))
    rep = weights_report(model)
    assert rep["loaded"] == n and rep["files"] == [path]
    # timm's features_only wrapper names stage 0 "layers_0": its tensors come from "layers.0"
    key = next(k for k in body if k.startswith("layers_0.") and k.endswith("qkv.weight"))
    assert torch.equal(body[key], state[key.replace("layers_0.", "layers.0.", 1)])
    # the ImageNet classifier is left out, the decode head, the aux head and Swin's per-level norms are new
    assert rep["unused"] >= 2
    assert {"head", "aux_heads", "backbone.norms"} <= set(rep["new"])


def test_a_partial_backbone_is_refused_with_the_file_and_what_is_missing(tmp_path):
    state = {k: v for k, v in _timm_swin_state().items() if not k.startswith("layers.3.")}
    path = _save(tmp_path, "swin_t_partial.pth", state)
    with pytest.raises(BlvnbError) as err:
        build_model("swint-knet@small", weights=path)
    msg = str(err.value)
    assert path in msg and re.search(r"\d+ of the backbone's \d+ tensors are missing", msg)
    assert "layers_3." in msg  # an example of a missing key


def test_the_wrong_architecture_is_refused(tmp_path):
    # ResNet-10-T's weights for ResNet-14-T: the first block of every stage matches, the others are missing
    small = timm.create_model("resnet10t", pretrained=False)
    path = _save(tmp_path, "resnet10t.pth", small.state_dict())
    with pytest.raises(BlvnbError, match=re.escape(path) + ".*tensors are missing"):
        build_model("r101-uper@small", weights=path)  # its small variant is ResNet-14-T
    # same names, other shapes: a wider network of the same depth
    wide = timm.create_model("resnet10t", pretrained=False, stem_width=48)
    path = _save(tmp_path, "resnet10t_wide.pth", wide.state_dict())
    with pytest.raises(BlvnbError, match=r"have another shape \(conv1\.0\.weight"):
        build_model("r10t-fpn", weights=path)


def test_a_complete_backbone_loads_and_the_decode_head_is_new_by_design(tmp_path):
    ref = build_model("r10t-fpn")
    torch.manual_seed(5)
    fresh = build_model("r10t-fpn")
    # the backbone's own layout (a features-only state dict, as toy or mmseg-converted weights), no head keys
    state = _random(ref.backbone.body.state_dict())
    path = _save(tmp_path, "r10t_backbone.pth", {"state_dict": state})
    model = build_model("r10t-fpn", weights=path)
    for k, v in state.items():
        assert torch.equal(model.backbone.body.state_dict()[k], v)
    rep = weights_report(model)
    assert rep["unused"] == 0 and set(rep["new"]) == {"head"}
    assert rep["new"]["head"] == sum(1 for k in fresh.head.state_dict() if not k.endswith("num_batches_tracked"))


def test_an_imagenet_classifier_is_unused_but_not_an_error(tmp_path):
    net = timm.create_model("resnet10t", pretrained=False)
    path = _save(tmp_path, "resnet10t_in1k.pth", net.state_dict())  # with fc.weight / fc.bias
    report = load_weights(timm.create_model("resnet10t", features_only=True, out_indices=(1, 2, 3, 4)), path)
    assert report["unexpected"] == ["fc.weight", "fc.bias"] and not report["missing"]


def test_a_timm_layout_vit_loads_through_the_features_wrapper(tmp_path):
    # timm's FeatureGetterNet keeps the ViT under "model.": before, no key matched at all
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=128, depth=4)
    state = _random(net.state_dict())
    path = _save(tmp_path, "vit_t_timm.pth", state)
    model = build_model("vitb16-uper@small", weights=path)
    body = model.backbone.body.state_dict()
    assert torch.equal(body["model.blocks.1.attn.qkv.weight"], state["blocks.1.attn.qkv.weight"])
    assert {"backbone.lateral", "backbone.convs", "head", "aux_heads"} <= set(weights_report(model)["new"])


def test_mit_from_its_own_layout_and_refused_when_a_stage_is_missing(tmp_path):
    torch.manual_seed(0)
    state = _random(MiT("small").state_dict())
    full = _save(tmp_path, "mit_small.pth", {**state, "head.weight": torch.zeros(1000, 4)})  # the classifier
    mit = MiT("small", weights=full)
    assert torch.equal(mit.state_dict()["block4.0.attn.q.weight"], state["block4.0.attn.q.weight"])
    assert mit.weights_report["unexpected"] == ["head.weight"]
    part = _save(tmp_path, "mit_small_partial.pth", {k: v for k, v in state.items() if not k.startswith("block4.")})
    with pytest.raises(BlvnbError, match=re.escape(part) + r".*block4\."):
        MiT("small", weights=part)


def test_not_a_state_dict_is_named(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("not a checkpoint")
    with pytest.raises(BlvnbError, match=re.escape(str(path))):
        build_model("r10t-fpn", weights=str(path))


def test_a_run_states_what_it_loaded_and_what_is_new(tmp_path, monkeypatch):
    from blvnb.experiments import runs

    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    ref = build_model("r10t-fpn")
    path = _save(tmp_path, "r10t_backbone.pth", ref.backbone.body.state_dict())
    cfg = runs.RunConfig.from_profile("smoke", pretrained=path, progress=False)
    rep = weights_report(runs.build_run_model(cfg))
    assert rep["files"] == [path] and set(rep["new"]) == {"head"}
