"""Peak GPU memory of a run at its batch, estimated on a CPU without a GPU and without computing.

A run's training step is replayed under PyTorch's ``FakeTensorMode`` (tensors with shapes and dtypes but no
data, so a paper model at 1024×2048 costs nothing to "run"), at the images one process takes per step (the
run's per-stream batch over its processes, :func:`blvnb.experiments.resolve.train_of`) and its crop, with
bf16 autocast where the run uses AMP. A dispatch mode counts the bytes of every tensor storage the forward
and backward passes create while it is alive; its peak, plus the weights, their gradients and the optimiser's
state (SGD momentum: one copy; AdamW: two), plus an EMA teacher's weights (mean teacher, UDA) and UDA's frozen
ImageNet copy for the feature distance, is the estimate.

What it leaves out, so that a real GPU shows more: the strategy's other passes (a mean teacher's or UDA
teacher's no-grad forward is smaller than the student's forward and backward and runs before it; UDA's mixed
forward runs after the source backward), cuDNN workspaces, the CUDA context (~0.5 GB) and the caching
allocator's fragmentation (often 10–30 %). :data:`GPU_GIB` is the memory of the card the book plans for; a
run whose estimate exceeds it is flagged: split its batch over GPUs (``--gpus-per-run``).
"""

from __future__ import annotations

import contextlib
import weakref
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map_only

from blvnb.errors import ConfigError

#: an 80 GB card (the H100 / A100 80 GB the gpu profile's timings come from), in GiB
GPU_GIB = 80e9 / 2**30


class LiveBytes(TorchDispatchMode):
    """A dispatch mode that counts the bytes of the storages the ops create, while they are alive
    (``peak``: the most at once)."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._seen: set[int] = set()

    def _track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        key = id(st)
        if key in self._seen:
            return
        n = int(st.nbytes())
        self._seen.add(key)
        self.live += n
        self.peak = max(self.peak, self.live)

        def freed(key=key, n=n):
            self.live -= n
            self._seen.discard(key)

        weakref.finalize(st, freed)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tree_map_only(torch.Tensor, self._track, out)
        return out


def step_peak_bytes(model, images: int, crop: tuple[int, int], *, amp: bool = False, num_classes: int = 19,
                    fake_mode: FakeTensorMode | None = None) -> int:
    """The peak bytes of activations and gradients of one forward + backward of ``model`` on ``images``
    crops of ``crop`` (cross entropy on the main output at the crop's size). ``fake_mode``: the mode whose
    fake weights ``model`` holds (no data, any size); None: real CPU tensors (the tests compare the two)."""
    if images < 1:
        raise ConfigError(f"a step needs at least one image, got {images}")
    h, w = (int(v) for v in crop)
    with fake_mode if fake_mode is not None else contextlib.nullcontext():
        x = torch.randn(images, 3, h, w)
        y = torch.randint(0, num_classes, (images, h, w))
        mode = LiveBytes()
        cast = torch.autocast("cpu", dtype=torch.bfloat16) if amp else contextlib.nullcontext()
        with mode:
            with cast:
                out = model(x)
                logits = out["out"] if isinstance(out, dict) else out
                logits = F.interpolate(logits.float(), size=(h, w), mode="bilinear", align_corners=False)
            F.cross_entropy(logits, y).backward()
        return mode.peak


@lru_cache(maxsize=8)
def _model_for(model: str, num_classes: int):
    """(the fake mode, the run's architecture with fake weights, in training mode). The model is built on
    the CPU (some constructors compute on tensors, which a fake mode cannot), then every parameter and
    buffer is swapped for a fake copy, so the step replays at any size without memory."""
    from blvnb.models.hrda import HRDA
    from blvnb.models.registry import build_model

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    m = build_model(model, num_classes=num_classes).train()
    for mod in m.modules():
        for k, p in list(mod._parameters.items()):
            if p is not None:
                mod._parameters[k] = torch.nn.Parameter(fake.from_tensor(p.detach()), requires_grad=p.requires_grad)
        for k, b in list(mod._buffers.items()):
            if b is not None:
                mod._buffers[k] = fake.from_tensor(b)
    for mod in m.modules():
        if isinstance(mod, HRDA):  # where the detail window lies does not change its memory; a random draw
            mod.crop_box = lambda h, w, generator=None, mod=mod: (0, 0, *mod.detail_size(h, w))  # needs data
    return fake, m


def estimate(cfg) -> dict:
    """The peak GPU memory of run ``cfg`` trained at its whole batch on one GPU (over N GPUs, each process
    holds about 1/N of the activations; weights and state stay whole): ``{"images": per step per process,
    "crop", "amp", "weights_gib", "state_gib" (gradients + optimiser + teacher copies), "activations_gib",
    "peak_gib", "over_gpu": peak > GPU_GIB, "gpu_gib"}``. See the module's text for what it leaves out."""
    from blvnb.experiments import resolve
    from blvnb.experiments.runs import num_classes_of

    train = resolve.train_of(cfg)
    batch = train["batch"]
    images = int(sum(batch.values()))
    crop = train["crop"]
    if isinstance(crop, dict):  # per stream (UDA): the largest
        crop = max(crop.values(), key=lambda c: c[0] * c[1])
    classes = num_classes_of(cfg.dataset)
    opt_copies = 2 if train["optimizer"] == "adamw" else 1
    teachers = {"mean-teacher": 1, "uda": 2}.get(cfg.strategy, 0)  # EMA teacher; UDA also its ImageNet copy
    return dict(_estimate(str(cfg.model), classes, images, tuple(int(c) for c in crop), bool(cfg.amp), opt_copies,
                          teachers))


@lru_cache(maxsize=256)
def _estimate(model_name: str, classes: int, images: int, crop: tuple[int, int], amp: bool, opt_copies: int,
              teachers: int) -> tuple:
    fake, model = _model_for(model_name, classes)
    weights = sum(p.numel() for p in model.parameters()) * 4
    state = weights * (1 + opt_copies + teachers)  # gradients, optimiser state, teacher copies
    acts = step_peak_bytes(model, images, crop, amp=amp, num_classes=classes, fake_mode=fake)
    peak, gib = weights + state + acts, 2**30
    return tuple({"images": images, "crop": list(crop), "amp": amp, "weights_gib": weights / gib,
                  "state_gib": state / gib, "activations_gib": acts / gib, "peak_gib": peak / gib,
                  "over_gpu": peak / gib > GPU_GIB, "gpu_gib": GPU_GIB}.items())
