"""Weights files: one per backbone in a weights folder, read without pickles, in the layouts they come in.

A GPU cluster often has no internet, and one file per run cannot serve a plan of nine architectures: the
paper profile reads every backbone's ImageNet weights from one folder (``--weights DIR``,
``-p weights_dir DIR``), a file per backbone named by :data:`WEIGHTS_FILES` (``resnet50_v1c.pth``,
``mit_b5.pth``, ``swin_tiny.safetensors``, …). :func:`find_weights` says which file a backbone expects and
refuses a missing one; nothing is downloaded.

A file is a torch state dict (``.pth``/``.pt``, read with ``weights_only=True``: tensors only, never a
pickle of code) or a ``.safetensors`` file (:func:`read_state`). :func:`layouts` gives the names a file's
tensors may have in the backbone: as saved (timm's layout, or the backbone's own), under a wrapper
(``state_dict``, ``model``, ``module``), under a prefix (``backbone.``, ``model.backbone.`` of a segmentor's
checkpoint, ``module.`` of DDP), mmsegmentation's MiT names (``layers.0.0.projection``, ``attn.attn.in_proj_*``,
``ffn.layers.0``) onto the SegFormer release's (``patch_embed1.proj``, ``attn.q`` + ``attn.kv``, ``mlp.fc1``),
mmsegmentation's ResNet V1c/V1d deep stem (``stem.0/1/3/4/6/7``) onto timm's (``conv1.0/1/3/4/6``,
``bn1``), and Swin's release (patch merging at the end of a stage) and mmsegmentation's Swin (``stages``,
``attn.w_msa``, ``ffn.layers``, its unfold order of the merged channels) onto timm's.
:func:`blvnb.models.backbones.load_weights` takes the layout that covers the most of the backbone and still
loads whole or not at all.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from blvnb.errors import ConfigError
from blvnb.io import file_sha256 as sha256  # noqa: F401 (what a record states of each weights file)

#: the one table: backbone (timm's model name, or ``mit_<size>``) → the file stem it loads from in a
#: weights folder (mmsegmentation's names for the ResNets: V1c/V1d are the deep-stem variants the papers use)
WEIGHTS_FILES: dict[str, str] = {
    "resnet10t": "resnet10t",
    "resnet14t": "resnet14t",
    "resnet18d": "resnet18_v1d",
    "resnet50c": "resnet50_v1c",
    "resnet101c": "resnet101_v1c",
    "hrnet_w18": "hrnet_w18",
    "hrnet_w18_small": "hrnet_w18_small",
    "swin_tiny_patch4_window7_224": "swin_tiny",
    "vit_base_patch16_224": "vit_base",
    "mit_b0": "mit_b0",
    "mit_b5": "mit_b5",
}
#: the file types a weights folder may hold, in the order :func:`find_weights` looks for them
SUFFIXES = (".safetensors", ".pth", ".pt")
#: entries a checkpoint keeps its state dict under (mmcv/mmseg: ``state_dict``; Swin, DeiT: ``model``)
WRAPPERS = ("state_dict", "model", "module")
#: key prefixes of a whole segmentor's or a DDP model's checkpoint, before the backbone's own names
PREFIXES = ("backbone.", "model.backbone.", "module.backbone.", "module.", "encoder.")


def file_stem(backbone: str) -> str:
    """The file stem of ``backbone`` in a weights folder; a backbone without one (blvnb's small variants,
    which have no ImageNet weights) is a :class:`ConfigError`."""
    try:
        return WEIGHTS_FILES[backbone]
    except KeyError:
        raise ConfigError(f"backbone {backbone!r} has no ImageNet weights file name (it is not one of "
                          f"{', '.join(sorted(WEIGHTS_FILES))}: a small variant has no ImageNet weights; "
                          "train it from scratch or from the toy pretraining)") from None


def backbone_of_file(path: str | Path) -> str | None:
    """The backbone a file of a weights folder serves, by its name (None: not a name of :data:`WEIGHTS_FILES`)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        return None
    return next((b for b, stem in WEIGHTS_FILES.items() if stem == path.stem), None)


def check_folder(folder: str | Path) -> Path:
    """``folder`` as an existing directory (expanded), else a :class:`ConfigError` naming it."""
    p = Path(folder).expanduser()
    if not p.is_dir():
        what = "is a file, not a folder" if p.exists() else "does not exist"
        raise ConfigError(f"weights folder {p} {what}: give a folder holding one file per backbone "
                          f"({', '.join(sorted({s + '.pth' for s in WEIGHTS_FILES.values()}))}; or .safetensors)")
    return p


def find_weights(folder: str | Path, backbone: str) -> Path:
    """The file of ``backbone`` in the weights folder: ``<stem>.safetensors``, ``.pth`` or ``.pt``. None of
    them, or more than one, is a :class:`ConfigError` naming the file expected and the backbone."""
    root = check_folder(folder)
    stem = file_stem(backbone)
    found = [root / (stem + s) for s in SUFFIXES if (root / (stem + s)).is_file()]
    if not found:
        raise ConfigError(f"no weights for backbone {backbone!r} in {root}: expected {root / (stem + '.pth')} "
                          f"(or {stem}.safetensors, {stem}.pt); nothing is downloaded. Check the folder with "
                          f"`blvnb weights check {root}`")
    if len(found) > 1:
        raise ConfigError(f"weights folder {root} holds {len(found)} files for backbone {backbone!r} "
                          f"({', '.join(p.name for p in found)}): keep one")
    return found[0]


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, unwrapped (:data:`WRAPPERS`): ``.safetensors`` with safetensors,
    anything else with ``torch.load(weights_only=True)`` (tensors and plain containers only, no pickled
    objects). A missing, unreadable or tensor-less file is a :class:`ConfigError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist; pass weights=PATH to a torch state_dict or "
                          ".safetensors file, or a weights folder")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled objects beyond tensors
        kind = "safetensors" if path.suffix == ".safetensors" else "torch"
        raise ConfigError(f"weights file {path} is not a readable {kind} state_dict ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from exc
    while isinstance(state, dict) and not (state and all(isinstance(v, torch.Tensor) for v in state.values())):
        inner = next((state[w] for w in WRAPPERS if isinstance(state.get(w), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"weights file {path} holds no state_dict (a dict of tensor names to tensors, possibly "
                          f"under one of {', '.join(WRAPPERS)})")
    return state


# --- layouts: the names a file's tensors may have in the backbone ------------------------------------

#: a layout's view of a file: backbone-side name → (the file's key(s) it comes from, the tensor)
View = dict[str, tuple[tuple[str, ...], torch.Tensor]]


def _mmseg_mit(view: View) -> View | None:
    """mmsegmentation's MiT names → the SegFormer release's (mit.py's): ``layers.{i}.0`` the patch
    embedding of stage i+1, ``layers.{i}.1.{j}`` its blocks, ``layers.{i}.2`` its norm; q and kv are one
    ``in_proj`` (q first); the Mix-FFN's linear layers are 1×1 convs."""
    if not any(k.startswith("layers.0.0.projection.") for k in view):
        return None
    out: View = {}
    for key, (src, t) in view.items():
        m = re.fullmatch(r"layers\.(\d+)\.(\d)\.(.*)", key)
        if m is None:
            out[key] = (src, t)
            continue
        stage, part, rest = int(m[1]) + 1, m[2], m[3]
        if part == "0":
            out[f"patch_embed{stage}.{rest.replace('projection.', 'proj.', 1)}"] = (src, t)
        elif part == "2":
            out[f"norm{stage}.{rest}"] = (src, t)
        else:
            b = re.fullmatch(r"(\d+)\.(.*)", rest)
            if b is None:
                out[key] = (src, t)
                continue
            pre, name = f"block{stage}.{b[1]}.", b[2]
            if name.startswith("attn.attn.in_proj_"):
                kind = name.rsplit("_", 1)[1]  # weight | bias
                dim = t.shape[0] // 3
                out[pre + f"attn.q.{kind}"] = (src, t[:dim])
                out[pre + f"attn.kv.{kind}"] = (src, t[dim:])
            elif name.startswith("attn.attn.out_proj."):
                out[pre + "attn.proj." + name.rsplit(".", 1)[1]] = (src, t)
            elif name.startswith("ffn.layers."):
                idx, _, leaf = name[len("ffn.layers."):].partition(".")
                target = {"0": "mlp.fc1.", "1": "mlp.dwconv.dwconv.", "4": "mlp.fc2."}.get(idx)
                if target is None:
                    out[key] = (src, t)
                    continue
                if idx in ("0", "4") and t.dim() == 4:  # a 1×1 conv's weight is a linear layer's
                    t = t.flatten(1)
                out[pre + target + leaf] = (src, t)
            else:  # norm1, norm2, attn.sr, attn.norm keep their names
                out[pre + name] = (src, t)
    return out


#: mmsegmentation's ResNet deep stem (conv, bn, relu) × 3 → timm's ``conv1`` Sequential and ``bn1``
_STEM = {"stem.0.": "conv1.0.", "stem.1.": "conv1.1.", "stem.3.": "conv1.3.", "stem.4.": "conv1.4.",
         "stem.6.": "conv1.6.", "stem.7.": "bn1."}


def _mmseg_stem(view: View) -> View | None:
    """mmsegmentation's ResNetV1c/V1d names → timm's ``resnet50c``/``resnet18d`` names (the stages, the
    bottlenecks and the downsampling keep theirs)."""
    if "stem.0.weight" not in view:
        return None
    out: View = {}
    for key, v in view.items():
        pre = next((p for p in _STEM if key.startswith(p)), None)
        out[_STEM[pre] + key[len(pre):] if pre else key] = v
    return out


def _shift_downsample(key: str) -> str:
    """The Swin release keeps a stage's patch merging at its end (``layers.0.downsample``), timm at the start
    of the next stage (``layers.1.downsample``)."""
    return re.sub(r"^layers\.(\d+)\.downsample\.", lambda m: f"layers.{int(m[1]) + 1}.downsample.", key)


def _swin_release(view: View) -> View | None:
    """The Swin release's names (Microsoft's ``swin_tiny_patch4_window7_224.pth``) → timm's: only the patch
    merging moves (timm's concatenates the 2×2 neighbours in the release's order)."""
    if "layers.0.downsample.reduction.weight" not in view:
        return None
    return {_shift_downsample(k): v for k, v in view.items()}


def _unfold_to_concat(t: torch.Tensor) -> torch.Tensor:
    """mmsegmentation's patch merging (``nn.Unfold``: channel-major, neighbours (0, 0), (1, 0), (0, 1),
    (1, 1) interleaved per channel) → the release's (the four neighbours' channels one after the other,
    in the order (0, 0), (1, 0), (0, 1), (1, 1)); the last dimension of a weight or a norm's vector."""
    *lead, n = t.shape
    blocks = t.reshape(*lead, n // 4, 4).transpose(-1, -2)  # [..., neighbour in unfold order, channel]
    return blocks[..., [0, 2, 1, 3], :].reshape(*lead, n)


def _mmseg_swin(view: View) -> View | None:
    """mmsegmentation's Swin names (its converted ImageNet checkpoints, K-Net's) → timm's: ``stages`` are
    ``layers``, ``attn.w_msa`` is ``attn``, ``ffn.layers.0.0`` / ``ffn.layers.1`` are ``mlp.fc1`` / ``fc2``,
    ``patch_embed.projection`` is ``patch_embed.proj``, and the patch merging moves to the next stage with
    its input channels back in the release's order."""
    if not any(k.startswith("stages.0.blocks.") for k in view):
        return None
    out: View = {}
    for key, (src, t) in view.items():
        k = key.replace("patch_embed.projection.", "patch_embed.proj.", 1)
        if k.startswith("stages."):
            k = "layers." + k[len("stages."):]
            k = k.replace(".attn.w_msa.", ".attn.", 1).replace(".ffn.layers.0.0.", ".mlp.fc1.", 1)
            k = k.replace(".ffn.layers.1.", ".mlp.fc2.", 1)
            if ".downsample." in k and (k.endswith("reduction.weight") or ".downsample.norm." in k):
                t = _unfold_to_concat(t)
            k = _shift_downsample(k)
        out[k] = (src, t)
    return out


#: name translations tried on every prefix-stripped view of a file
TRANSLATIONS: dict[str, Callable[[View], View | None]] = {
    "mmseg MiT": _mmseg_mit, "mmseg ResNet stem": _mmseg_stem, "Swin release": _swin_release, "mmseg Swin": _mmseg_swin}


def layouts(state: dict[str, torch.Tensor]) -> Iterator[tuple[str, View]]:
    """Every layout a state dict may be in, as (its name, its view); the first is the file as saved."""
    base: View = {k: ((k,), v) for k, v in state.items()}
    views = [("as saved", base)]
    for p in PREFIXES:
        if any(k.startswith(p) for k in state):
            views.append((f"'{p}' prefix", {k[len(p):]: ((k,), v) for k, v in state.items() if k.startswith(p)}))
    for name, view in views:
        yield name, view
        for tname, translate in TRANSLATIONS.items():
            out = translate(view)
            if out is not None:
                yield (tname if name == "as saved" else f"{tname}, {name}"), out


__all__ = ["PREFIXES", "SUFFIXES", "WEIGHTS_FILES", "WRAPPERS", "backbone_of_file", "check_folder", "file_stem",
           "find_weights", "layouts", "read_state", "sha256"]
