"""Models: every registered row builds, trains (forward + backward) and keeps the forward contract.

Small variants at 64×64 on the CPU; paper sizes only on the meta device (tests/test_model_params.py).
torch.compile is checked with the ``eager`` backend and ``fullgraph=True`` (Dynamo must capture the
whole forward without a graph break); inductor code generation takes 20–30 s per model on a CPU, so it
runs only in the ``slow`` test and in ``bench/model_throughput.py --compile`` on a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from blvnb.errors import ConfigError
from blvnb.models import registry
from blvnb.models.registry import build_model, list_models, model_for_profile

warnings.filterwarnings("ignore", category=UserWarning)

# the rows of the papers' tables (issue 4), plus the walking skeleton's two baselines
TABLE_ROWS = ["hr18-ocr", "r50-uper", "r101-uper", "r50-psp", "mitb0-segformer", "swint-knet", "vitb16-uper",
              "r101-deeplabv3p", "r101-deeplabv2", "r101-deeplabv2-red", "mitb5-daformer", "mitb5-hrda"]
ALL = list_models()
SIZE = 64


def _small(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(name, num_classes=5, variant="small")


def _x(n: int = 2, size: int = SIZE, seed: int = 0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_registry_has_every_table_row():
    assert set(TABLE_ROWS) | {"r18-fpn", "r10t-fpn"} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_small(name):
    model = _small(name).train()
    out = model(_x(), return_aux=True, return_features=True)
    logits, aux, feats = out["out"], out["aux"], out["features"]
    h = logits.shape[-1]
    assert logits.shape[:2] == (2, 5) and logits.shape[-2] == h and SIZE // h in (4, 8)
    assert feats.ndim == 4 and feats.shape[0] == 2
    assert len(aux) == len(model.aux_weights) and all(w > 0 for w in model.aux_weights)
    assert all(a.shape[:2] == (2, 5) for a in aux)
    loss = logits.float().logsumexp(1).mean() + sum(w * a.logsumexp(1).mean() for w, a in zip(model.aux_weights, aux))
    loss.backward()
    assert torch.isfinite(loss)
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters outside the graph: {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", ALL)
def test_eval_contract_channels_last_autocast(name):
    """Eval: ``model(x)`` is the tensor of ``model(x, return_features=True)["out"]``; channels_last and
    bf16 autocast give the same shapes and finite values."""
    model = _small(name).eval()
    x = _x()
    with torch.no_grad():
        plain = model(x)
        d = model(x, return_features=True)
        assert torch.equal(plain, d["out"]) and set(d) == {"out", "features"}
        model_cl = model.to(memory_format=torch.channels_last)
        cl = model_cl(x.contiguous(memory_format=torch.channels_last))
        torch.testing.assert_close(cl, plain, atol=1e-4, rtol=1e-3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            amp = model_cl(x.contiguous(memory_format=torch.channels_last))
    assert amp.shape == plain.shape and torch.isfinite(amp).all()


@pytest.mark.parametrize("name", ALL)
def test_compiles_without_graph_breaks(name):
    """Dynamo captures the whole training forward (aux included) in one graph. HRDA samples its detail
    crop with a Python int, one graph break in training mode: it is captured whole in eval mode."""
    torch._dynamo.reset()
    model = _small(name)
    train = name != "mitb5-hrda"
    model.train(train)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    out = compiled(_x(), return_aux=train)
    assert torch.isfinite(out["out"] if train else out).all()


@pytest.mark.slow
def test_inductor_compile_matches_eager():
    """Inductor (the default backend) on the smallest model: 20–30 s of C++ compilation on a CPU."""
    torch._dynamo.reset()
    model = _small("mitb0-segformer").eval()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model)(_x()), model(_x()), atol=1e-4, rtol=1e-4)


def test_same_seed_same_output():
    a, b = _small("r50-psp", seed=3).eval(), _small("r50-psp", seed=3).eval()
    with torch.no_grad():
        assert torch.equal(a(_x()), b(_x()))


def test_names_variants_and_profiles():
    assert isinstance(build_model("r50-psp@small"), registry.SegModel)
    small = sum(p.numel() for p in build_model("r50-psp@small").parameters())
    assert small == sum(p.numel() for p in build_model("r50-psp", variant="small").parameters())
    assert small < 10e6
    assert model_for_profile("hr18-ocr", "quick") == "hr18-ocr@small"
    assert model_for_profile("hr18-ocr@small", "paper") == "hr18-ocr@paper"
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("r50-pspnet")
    with pytest.raises(ConfigError, match="variant"):
        build_model("r50-psp@tiny")
    with pytest.raises(ConfigError, match="profile"):
        model_for_profile("r50-psp", "huge")


def test_profiles_name_registered_models():
    from blvnb.experiments.profiles import PROFILES

    for p in PROFILES.values():
        name = p.model.split("@")[0]
        assert name in ALL, f"profile {p.name} names {p.model!r}, not in the registry"


def test_aux_weights_of_the_papers():
    """PSPNet/UperNet/DeepLabV3+: one FCN aux head, 0.4 (DARS, mmsegmentation); OCR: soft regions 0.4;
    K-Net: three intermediate mask sets (1.0 each) and the FCN aux (0.4); DeepLab v2, SegFormer, DAFormer: none."""
    w = {n: _small(n).aux_weights for n in ["r50-psp", "r101-deeplabv3p", "hr18-ocr", "swint-knet",
                                           "r101-deeplabv2", "mitb0-segformer", "mitb5-daformer"]}
    assert w["r50-psp"] == w["r101-deeplabv3p"] == w["hr18-ocr"] == (0.4,)
    assert w["swint-knet"] == (1.0, 1.0, 1.0, 0.4)
    assert w["r101-deeplabv2"] == w["mitb0-segformer"] == w["mitb5-daformer"] == ()


def test_hrda_fuses_context_and_detail():
    model = _small("mitb5-hrda")
    model.generator = torch.Generator().manual_seed(0)
    x = _x(size=128)
    out = model.train()(x, return_aux=True)
    assert out["out"].shape == (2, 5, 32, 32)  # the full frame at the head's 1/4
    (detail,) = out["aux"]
    assert detail.shape == out["out"].shape and model.aux_weights == pytest.approx((0.1 / 0.9 / 0.25,))
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 5, 32, 32)
    wrapped = build_model("r101-deeplabv2", num_classes=5, variant="small", hrda=True).train()
    assert wrapped(x, return_aux=True)["out"].shape == (2, 5, 16, 16)  # any model: DeepLab v2 at 1/8


def test_mit_keys_follow_the_segformer_release():
    keys = set(_small("mitb0-segformer").backbone.state_dict())
    for k in ["patch_embed1.proj.weight", "block1.0.attn.q.weight", "block1.0.attn.kv.weight", "block1.0.attn.sr.weight",
              "block1.0.mlp.dwconv.dwconv.weight", "block4.0.mlp.fc2.bias", "norm4.weight"]:
        assert k in keys


def test_weights_from_a_local_file(tmp_path):
    src = _small("r10t-fpn", seed=1)
    path = tmp_path / "resnet10t.pth"
    torch.save(src.backbone.body.state_dict(), path)
    dst = build_model("r10t-fpn", num_classes=5, weights=str(path))
    for (k, a), b in zip(src.backbone.body.state_dict().items(), dst.backbone.body.state_dict().values()):
        assert torch.equal(a, b), k
    mit = tmp_path / "mit.pth"
    torch.save({"state_dict": _small("mitb0-segformer").backbone.state_dict()}, mit)
    build_model("mitb0-segformer@small", weights=str(mit))
    with pytest.raises(ConfigError, match="does not exist"):
        build_model("r10t-fpn", weights=str(tmp_path / "missing.pth"))
    torch.save({"unrelated": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(ConfigError, match="matches"):
        build_model("r10t-fpn", weights=str(tmp_path / "bad.pth"))


@pytest.mark.parametrize("name", ["r10t-fpn", "mitb0-segformer"])
def test_pretrained_offline_says_how(name, monkeypatch, tmp_path):
    """No network, nothing cached: a ConfigError naming weights=PATH, not a traceback from the hub."""
    import huggingface_hub.constants as hf

    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="weights=PATH"):
        build_model(name, variant="small", pretrained=True)
