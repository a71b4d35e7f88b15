"""A weights folder that loads offline, one file per backbone (issue 18 "Weights that load offline", issue 22
"Weights files"): the layouts the original checkpoints come in, `.safetensors` beside `.pth`, never a pickle,
`blvnb weights check`, `--weights DIR` / `-p weights_dir`, and the SHA-256 of every file a run loaded in its
record (not in its key).

Every state dict here is written by the test itself: our own backbone's tensors (random values), renamed to
the foreign layout the test names, must load back to identical tensors.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import timm
import torch

from blvnb.cli import main
from blvnb.errors import BlvnbError, ConfigError
from blvnb.experiments import runs, tables
from blvnb.models.backbones import load_weights
from blvnb.models.mit import MiT
from blvnb.models.registry import build_model, check_weights, known_backbones, weights_report
from blvnb.models.weights import WEIGHTS_FILES, find_weights, read_state

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _no_weights_env(monkeypatch):
    monkeypatch.setenv(runs.WEIGHTS_ENV, "unset")  # restored (removed) after the test, whatever it sets
    monkeypatch.delenv(runs.WEIGHTS_ENV)


def _random(state: dict, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: (torch.randn(v.shape, generator=g) if v.is_floating_point() else v.clone()) for k, v in state.items()}


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _r10t_state() -> dict:
    """ResNet-10-T (the deep "tiered" stem: conv1.0/1/3/4/6 + bn1, as timm's resnet50c) in timm's
    classification layout, with its ImageNet classifier."""
    return _random(timm.create_model("resnet10t", pretrained=False).state_dict())


# --- one table ------------------------------------------------------------------------------------------

def test_one_file_name_per_backbone_the_registry_builds():
    known = known_backbones()
    assert set(known) == set(WEIGHTS_FILES)  # every backbone with ImageNet weights has a name, and only those
    assert len(set(WEIGHTS_FILES.values())) == len(WEIGHTS_FILES)
    assert WEIGHTS_FILES["resnet50c"] == "resnet50_v1c" and WEIGHTS_FILES["mit_b5"] == "mit_b5"
    for model in ("r50-psp", "r101-uper", "hr18-ocr", "mitb0-segformer", "mitb5-hrda", "swint-knet", "vitb16-uper"):
        assert any(model + "@paper" in users for users in known.values()), model


# --- layouts: each written by the test, loaded back to identical tensors --------------------------------

def _to_mmseg_mit(state: dict) -> dict:
    """Our (the SegFormer release's) MiT names → mmsegmentation's: layers.{i}.0 patch embedding (projection),
    layers.{i}.1.{j} blocks (q and kv as one in_proj, the Mix-FFN's linears as 1×1 convs), layers.{i}.2 norm."""
    out = {}
    for k, v in state.items():
        if m := re.fullmatch(r"patch_embed(\d)\.(proj|norm)\.(.*)", k):
            out[f"layers.{int(m[1]) - 1}.0.{'projection' if m[2] == 'proj' else 'norm'}.{m[3]}"] = v
        elif m := re.fullmatch(r"norm(\d)\.(.*)", k):
            out[f"layers.{int(m[1]) - 1}.2.{m[2]}"] = v
        elif m := re.fullmatch(r"block(\d)\.(\d+)\.(.*)", k):
            pre, name = f"layers.{int(m[1]) - 1}.1.{m[2]}.", m[3]
            if name.startswith("attn.q."):
                leaf = name.rsplit(".", 1)[1]
                out[pre + f"attn.attn.in_proj_{leaf}"] = torch.cat([v, state[k.replace("attn.q.", "attn.kv.")]])
            elif name.startswith("attn.kv."):
                continue
            elif name.startswith("attn.proj."):
                out[pre + "attn.attn.out_proj." + name.rsplit(".", 1)[1]] = v
            elif name.startswith(("mlp.fc1.", "mlp.fc2.")):
                idx = "0" if name.startswith("mlp.fc1.") else "4"
                out[pre + f"ffn.layers.{idx}.{name.rsplit('.', 1)[1]}"] = v[..., None, None] if v.dim() == 2 else v
            elif name.startswith("mlp.dwconv.dwconv."):
                out[pre + "ffn.layers.1." + name.rsplit(".", 1)[1]] = v
            else:
                out[pre + name] = v
        else:
            raise AssertionError(k)
    return out


def _assert_same(module, state: dict):
    own = module.state_dict()
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def test_mit_from_mmsegmentations_layout_in_a_segmentor_checkpoint(tmp_path):
    state = _random(MiT("small").state_dict())
    mm = _to_mmseg_mit(state)
    assert "layers.0.1.0.attn.attn.in_proj_weight" in mm and "layers.3.1.0.ffn.layers.4.weight" in mm
    ckpt = {"meta": {"mmseg_version": "0.x"},
            "state_dict": {**{"backbone." + k: v for k, v in mm.items()}, "decode_head.conv_seg.weight": torch.zeros(19, 8)}}
    path = tmp_path / "mit_small_mmseg.pth"
    torch.save(ckpt, path)
    mit = MiT("small", weights=path)
    _assert_same(mit, state)
    rep = mit.weights_report
    assert rep["layout"] == "mmseg MiT, 'backbone.' prefix" and rep["unexpected"] == ["decode_head.conv_seg.weight"]
    assert rep["sha256"] == _sha(path)


@pytest.mark.parametrize("prefix", ["backbone.", "model.backbone.", "module."])
def test_mit_from_the_segformer_release_names_under_a_prefix(tmp_path, prefix):
    # SegFormer's / DAFormer's trained segmentors keep the encoder under backbone. / model.backbone.; DDP: module.
    state = _random(MiT("small").state_dict(), seed=2)
    path = tmp_path / "mit_small.pth"
    torch.save({"state_dict": {prefix + k: v for k, v in state.items()}}, path)
    mit = MiT("small", weights=path)
    _assert_same(mit, state)
    assert mit.weights_report["layout"] == f"'{prefix}' prefix"


def test_resnet_v1c_from_mmsegmentations_deep_stem_names(tmp_path):
    timm_state = _r10t_state()
    stem = {"conv1.0.": "stem.0.", "conv1.1.": "stem.1.", "conv1.3.": "stem.3.", "conv1.4.": "stem.4.",
            "conv1.6.": "stem.6.", "bn1.": "stem.7."}
    mm = {}
    for k, v in timm_state.items():
        pre = next((p for p in stem if k.startswith(p)), None)
        mm[stem[pre] + k[len(pre):] if pre else k] = v
    assert "stem.7.running_var" in mm and not any(k.startswith("conv1.") for k in mm)
    path = tmp_path / "resnet10t_mmseg.pth"
    torch.save({"state_dict": mm, "meta": {"epoch": 100}}, path)
    model = build_model("r10t-fpn", weights=str(path))
    body = model.backbone.body
    _assert_same(body, {k: v for k, v in timm_state.items() if not k.startswith("fc.")})
    assert body.weights_report["layout"] == "mmseg ResNet stem"
    assert sorted(body.weights_report["unexpected"]) == ["fc.bias", "fc.weight"]


SWIN_SMALL = dict(embed_dim=32, depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8))  # swint-knet@small's Swin


def _timm_swin() -> dict:
    net = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, strict_img_size=False, **SWIN_SMALL)
    return _random(net.state_dict(), seed=4)


def _to_release_downsample(key: str) -> str:  # timm: layers.{i+1}.downsample; the release: layers.{i}.downsample
    return re.sub(r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m[1]) - 1}.downsample", key)


def _assert_swin_loaded(model, timm_state: dict):
    body = model.backbone.body.state_dict()
    n = 0
    for k, v in body.items():
        src = re.sub(r"^layers_(\d+)", r"layers.\1", k)
        assert torch.equal(v, timm_state[src]), k
        n += 1
    assert n > 20


def test_swin_from_its_release_layout(tmp_path):
    state = _timm_swin()
    release = {_to_release_downsample(k): v for k, v in state.items()}
    assert "layers.0.downsample.reduction.weight" in release and "layers.3.downsample.norm.weight" not in release
    path = tmp_path / "swin_release.pth"
    torch.save({"model": release}, path)
    model = build_model("swint-knet@small", weights=str(path))
    _assert_swin_loaded(model, state)
    assert model.backbone.body.weights_report["layout"] == "Swin release"


def test_swin_from_mmsegmentations_layout(tmp_path):
    def unfold_order(t):  # mmseg's patch merging: the four neighbours' channels interleaved, (0,0) (0,1) (1,0) (1,1)
        *lead, n = t.shape
        return t.reshape(*lead, 4, n // 4)[..., [0, 2, 1, 3], :].transpose(-1, -2).reshape(*lead, n)

    state = _timm_swin()
    mm = {}
    for k, v in state.items():
        if k.startswith("head."):
            continue
        k2 = _to_release_downsample(k).replace("patch_embed.proj.", "patch_embed.projection.")
        if k2.startswith("layers."):
            if ".downsample." in k2:
                v = unfold_order(v)
            k2 = ("stages." + k2[len("layers."):]).replace(".attn.", ".attn.w_msa.")
            k2 = k2.replace(".mlp.fc1.", ".ffn.layers.0.0.").replace(".mlp.fc2.", ".ffn.layers.1.")
        mm[k2] = v
    assert "stages.0.blocks.0.attn.w_msa.qkv.weight" in mm and "stages.2.downsample.reduction.weight" in mm
    path = tmp_path / "swin_mmseg.pth"
    torch.save({"state_dict": {"backbone." + k: v for k, v in mm.items()}}, path)
    model = build_model("swint-knet@small", weights=str(path))
    _assert_swin_loaded(model, state)
    assert model.backbone.body.weights_report["layout"] == "mmseg Swin, 'backbone.' prefix"


def test_a_model_wrapper_and_safetensors_load_the_same_tensors(tmp_path):
    from safetensors.torch import save_file

    state = _r10t_state()
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": state, "meta": {"arch": "resnet10t"}}, wrapped)
    st = tmp_path / "r10t.safetensors"
    save_file(state, str(st))
    a, b = build_model("r10t-fpn", weights=str(wrapped)), build_model("r10t-fpn", weights=str(st))
    for k, v in a.backbone.body.state_dict().items():
        assert torch.equal(v, b.backbone.body.state_dict()[k]), k
    assert weights_report(b)["sha256"] == {str(st): _sha(st)}


def test_a_vit_trained_at_224_is_resampled_to_the_backbones_grid(tmp_path):
    net = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=4)  # 14×14 + class token
    state = _random(net.state_dict())
    path = tmp_path / "vit_tiny_224.pth"
    torch.save(state, path)
    model = build_model("vitb16-uper@small", weights=str(path))  # img_size 128: 8×8 + class token
    body = model.backbone.body
    assert body.weights_report["resampled"] == ["model.pos_embed"]
    assert tuple(body.state_dict()["model.pos_embed"].shape) == (1, 65, 192)
    assert torch.equal(body.state_dict()["model.pos_embed"][:, 0], state["pos_embed"][:, 0])  # the class token
    assert torch.equal(body.state_dict()["model.blocks.3.mlp.fc2.weight"], state["blocks.3.mlp.fc2.weight"])


def test_a_pickle_beyond_tensors_is_refused(tmp_path):
    path = tmp_path / "resnet10t.pth"
    torch.save({"state_dict": _r10t_state(), "config": Path("/etc")}, path)  # an object torch would unpickle
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*not a readable torch state_dict"):
        read_state(path)


def test_a_corrupt_safetensors_file_is_named(tmp_path):
    path = tmp_path / "mit_b0.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json")
    with pytest.raises(ConfigError, match=re.escape(str(path)) + ".*not a readable safetensors"):
        read_state(path)


# --- the folder ------------------------------------------------------------------------------------------

def test_a_backbone_loads_its_file_from_the_folder_and_nothing_else(tmp_path):
    state = _r10t_state()
    torch.save(state, tmp_path / "resnet10t.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "resnet50_v1c.pth")  # another backbone's file: not read
    (tmp_path / "notes.txt").write_text("where the files came from")
    model = build_model("r10t-fpn", weights=str(tmp_path))
    rep = weights_report(model)
    assert rep["files"] == [str(tmp_path / "resnet10t.pth")] and rep["layout"] == {rep["files"][0]: "as saved"}
    assert torch.equal(model.backbone.body.state_dict()["layer4.0.conv1.weight"], state["layer4.0.conv1.weight"])


def test_a_missing_file_names_the_file_expected_and_the_backbone(tmp_path):
    with pytest.raises(ConfigError) as err:
        find_weights(tmp_path, "resnet50c")
    msg = str(err.value)
    assert str(tmp_path / "resnet50_v1c.pth") in msg and "'resnet50c'" in msg and "nothing is downloaded" in msg
    with pytest.raises(ConfigError, match=r"'mit_b0'.*mit_b0\.pth"):
        MiT("b0", weights=tmp_path)  # a backbone timm has no weights for: only the folder provides them


def test_two_files_for_one_backbone_and_a_small_variant_are_refused(tmp_path):
    torch.save(_r10t_state(), tmp_path / "resnet10t.pth")
    torch.save(_r10t_state(), tmp_path / "resnet10t.safetensors")  # not a safetensors file either: never read
    with pytest.raises(ConfigError, match="2 files for backbone 'resnet10t'.*keep one"):
        build_model("r10t-fpn", weights=str(tmp_path))
    with pytest.raises(ConfigError, match="small variant"):
        build_model("swint-knet@small", weights=str(tmp_path))
    with pytest.raises(ConfigError, match="small variant"):
        MiT("small", weights=tmp_path)


def test_a_file_of_another_backbone_under_this_name_is_refused(tmp_path):
    torch.save(_random(timm.create_model("resnet18d", pretrained=False).state_dict()), tmp_path / "resnet10t.pth")
    with pytest.raises(ConfigError, match=r"resnet10t\.pth do not fit this backbone \(FeatureListNet, resnet10t\)"):
        build_model("r10t-fpn", weights=str(tmp_path))


# --- runs: weights_dir is where, not what; the record states each file's SHA-256 --------------------------

def test_weights_dir_is_not_in_the_key_and_comes_from_the_environment(tmp_path, monkeypatch):
    a = runs.RunConfig.from_profile("smoke", pretrained="imagenet")
    b = a.with_(weights_dir=str(tmp_path))
    assert a.key() == b.key() and "weights_dir" not in b.key_dict()
    monkeypatch.setenv(runs.WEIGHTS_ENV, str(tmp_path))
    assert runs.RunConfig.from_profile("smoke").weights_dir == str(tmp_path)
    monkeypatch.setenv(runs.WEIGHTS_ENV, str(tmp_path / "gone"))
    with pytest.raises(ConfigError, match=re.escape(f"${runs.WEIGHTS_ENV}={tmp_path / 'gone'} is not a folder")):
        runs.RunConfig.from_profile("smoke")
    monkeypatch.delenv(runs.WEIGHTS_ENV)
    with pytest.raises(ConfigError, match=re.escape(f"weights folder {tmp_path / 'gone'} does not exist")):
        runs.RunConfig.from_profile("smoke", weights_dir=str(tmp_path / "gone"))
    (tmp_path / "f.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        runs.RunConfig.from_profile("smoke", weights_dir=str(tmp_path / "f.pth"))


def test_the_paper_profile_never_downloads(tmp_path):
    cfg = runs.RunConfig.from_profile("paper", model="r10t-fpn", data_root=str(tmp_path), progress=False)
    assert cfg.pretrained == "imagenet"
    with pytest.raises(ConfigError, match="pass --weights DIR"):
        runs.build_run_model(cfg)
    folder = tmp_path / "weights"
    folder.mkdir()
    with pytest.raises(ConfigError, match=r"model 'r10t-fpn': no weights for backbone 'resnet10t'.*resnet10t\.pth"):
        runs.build_run_model(cfg.with_(weights_dir=str(folder)))
    torch.save(_r10t_state(), folder / "resnet10t.pth")
    rep = weights_report(runs.build_run_model(cfg.with_(weights_dir=str(folder))))
    assert rep["sha256"] == {str(folder / "resnet10t.pth"): _sha(folder / "resnet10t.pth")}


def test_a_runs_record_states_the_sha256_of_the_file_it_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("BLVNB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(_r10t_state(), folder / "resnet10t.pth")
    cfg = runs.RunConfig.from_profile("smoke", pretrained="imagenet", weights_dir=str(folder), iters=1,
                                      progress=False)
    rec = runs.run(cfg)
    assert rec["weights"]["sha256"] == {str(folder / "resnet10t.pth"): _sha(folder / "resnet10t.pth")}
    assert "weights_dir" not in rec["config"] and str(folder) not in json.dumps(rec["config"])


# --- blvnb weights check -------------------------------------------------------------------------------------

def _mixed_folder(tmp_path) -> Path:
    folder = tmp_path / "w"
    folder.mkdir()
    torch.save(_r10t_state(), folder / "resnet10t.pth")  # ok
    torch.save(_random(timm.create_model("resnet18d").state_dict()), folder / "resnet14t.pth")  # another backbone
    (folder / "mit_b0.pth").write_bytes(b"PK\x03\x04 truncated")  # corrupt
    torch.save({}, folder / "resnet_50.pth")  # a name no backbone has
    return folder


def test_check_reports_each_file_and_which_problems_count(tmp_path):
    folder = _mixed_folder(tmp_path)
    rep = check_weights(folder)
    status = {f["file"]: f["status"] for f in rep.files}
    assert status == {"resnet10t.pth": "ok", "resnet14t.pth": "partial", "mit_b0.pth": "unreadable",
                      "resnet_50.pth": "unknown name"}
    ok = next(f for f in rep.files if f["file"] == "resnet10t.pth")
    assert ok["backbone"] == "resnet10t" and ok["matched"] == ok["tensors"] and not ok["missing"]
    assert sorted(ok["unexpected"]) == ["fc.bias", "fc.weight"] and ok["sha256"] == _sha(folder / "resnet10t.pth")
    part = next(f for f in rep.files if f["file"] == "resnet14t.pth")
    assert part["missing"] and "do not fit this backbone" in part["error"]
    assert not rep.ok and len(rep.problems) == 2  # the unknown name is reported, not a problem
    # a plan that needs only the good file: the others are reported, the folder serves it
    only = check_weights(folder, ["r10t-fpn", "r50-psp@small"])
    assert only.ok and only.needed == {"resnet10t": ["r10t-fpn", "r50-psp@small"]}
    # a plan that needs a backbone without a file
    need = check_weights(folder, ["r10t-fpn", "r18-fpn"])
    assert not need.ok and "resnet18_v1d.pth" in need.absent["resnet18d"]
    assert "missing" in need.summary() and "resnet18_v1d.pth" in need.summary()


def test_check_refuses_a_folder_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match=re.escape(f"weights folder {tmp_path / 'nope'} does not exist")):
        check_weights(tmp_path / "nope")


def test_cli_weights_check_exit_codes(tmp_path, capsys):
    folder = _mixed_folder(tmp_path)
    assert main(["weights", "check", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "resnet14t.pth" in out and "partial" in out and "unknown name" in out
    (folder / "resnet14t.pth").unlink()
    (folder / "mit_b0.pth").unlink()
    assert main(["weights", "check", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main(["weights", "check", str(folder), "--profile", "smoke"]) == 0  # smoke loads no ImageNet weights
    assert "no ImageNet weights" in capsys.readouterr().out
    # the paper plan of BLV Table 1: seven architectures' backbones, none of them here
    assert main(["weights", "check", str(folder), "--profile", "paper", "--only", "blv-t1"]) == 1
    out = capsys.readouterr().out
    for name in ("resnet50_v1c.pth", "resnet101_v1c.pth", "hrnet_w18.pth", "mit_b0.pth", "swin_tiny.pth", "vit_base.pth"):
        assert name in out, name
    assert main(["weights", "check", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["weights", "check", str(folder), "--only", "blv-t1"]) == 2
    assert "give --profile too" in capsys.readouterr().err


def test_runs_execute_with_weights_checks_the_folder_before_the_first_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BLVNB_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("BLVNB_RECORDS", str(tmp_path / "records"))
    folder = tmp_path / "w"
    folder.mkdir()
    argv = ["runs", "execute", "--profile", "paper", "--only", "blv-t1", "--dry-run", "--weights", str(folder)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot serve this plan (nothing was run)" in err and "resnet50_v1c.pth" in err
    assert not any((tmp_path / "results").rglob("*.json"))
    assert runs.WEIGHTS_ENV not in __import__("os").environ  # the folder is this command's only
    assert main(argv[:-1] + [str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- the chapters: -p weights_dir ------------------------------------------------------------------------------

def test_use_weights_dir_sets_the_folder_for_the_runs_built_after_it(tmp_path, monkeypatch):
    assert tables.use_weights_dir(None) is None
    with pytest.raises(ConfigError, match="does not exist"):
        tables.use_weights_dir(str(tmp_path / "nope"))
    assert runs.WEIGHTS_ENV not in __import__("os").environ  # nothing set half-way
    assert tables.use_weights_dir(str(tmp_path)) == str(tmp_path.resolve())
    assert runs.RunConfig.from_profile("smoke").weights_dir == str(tmp_path.resolve())


def test_every_chapter_that_runs_tables_takes_a_weights_dir_parameter():
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        code = "".join("".join(c["source"]) for c in cells)
        if not any(call in code for call in ("table_runs.run(", "runs_of(", "run_table(", "with_arm(")):
            continue
        assert "weights_dir = None" in "".join(cells[0]["source"]), nb.name
        assert "tables.use_weights_dir(weights_dir)" in code, nb.name


def test_load_weights_still_refuses_a_wrong_file_directly(tmp_path):
    path = tmp_path / "x.pth"
    torch.save({"unrelated.weight": torch.zeros(2)}, path)
    with pytest.raises(BlvnbError, match="no tensor in .* matches"):
        load_weights(timm.create_model("resnet10t", features_only=True, out_indices=(1, 2, 3, 4)), path)
