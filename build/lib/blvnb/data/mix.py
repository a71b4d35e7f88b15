r"""ClassMix (DACS) and the batch photometric augmentations of DAFormer's mixed images.

Pure functions on batched tensors: images N×3×H×W (ImageNet-normalised, as the streams give them),
labels N×H×W int64 train ids (255 = ignored), weights N×H×W float. Every random draw comes from the
``torch.Generator`` passed in; the UDA strategy passes a generator seeded from (run seed, iteration,
salt) (``loop.step_generator``), so a resumed run draws the same numbers.

**ClassMix** (Olsson et al., WACV 2021; DACS, Tranheden et al., WACV 2021, as DAFormer runs it):
the classes :math:`C` = every value present in the *whole* source label batch (``torch.unique``, so 255
counts as a class when it is present), and for each image :math:`\lceil |C| / 2 \rceil` of them chosen
uniformly without replacement; the image's mask :math:`M` is its own source label ∈ chosen. Then

.. math:: x_{mix} = M \odot x_S + (1 - M) \odot x_T, \quad y_{mix} = M \odot y_S + (1 - M) \odot \hat y_T,
          \quad w_{mix} = M \cdot 1 + (1 - M) \cdot w_T .

Because :math:`C` comes from the batch, an image may hold fewer than half of the chosen classes (DACS
chose per image; DAFormer's ``get_class_masks`` takes ``torch.unique(labels)`` of the batch, kept here
as DAFormer runs it).

**Colour jitter and blur** (DAFormer's ``strong_transform``, on the mixed image only): one uniform
draw *per batch* decides whether the batch is jittered (:math:`u > 0.2`, i.e. probability 0.8) and
another whether it is blurred (:math:`u' > 0.5`); the jitter factors and the blur σ are then drawn per
image (DAFormer calls its kornia transforms image by image). Jitter: brightness, contrast, saturation
factors :math:`\sim U(0.8, 1.2)`, hue shift :math:`\sim U(-0.2, 0.2)` of the colour circle, in a random
order per image, on the de-normalised image in [0, 1] (torchvision's definitions of the four
operations), clipped to [0, 1] and normalised again. Blur: Gaussian, :math:`\sigma \sim U(0.15, 1.15)`,
kernel side :math:`\lfloor \lceil 0.1 H \rceil - 0.5 + (\lceil 0.1 H \rceil \bmod 2) \rfloor` (the
odd number nearest below 10 % of the side; likewise for W), reflected borders.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from blvnb.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from blvnb.errors import ConfigError

# --- ClassMix ----------------------------------------------------------------------------------------


def _check_labels(labels: torch.Tensor) -> None:
    if not isinstance(labels, torch.Tensor) or labels.ndim != 3 or labels.dtype not in (torch.int64, torch.int32,
                                                                                          torch.uint8):
        raise ConfigError(f"labels must be an N×H×W integer tensor, got {getattr(labels, 'shape', type(labels))} "
                          f"{getattr(labels, 'dtype', '')}")


def class_mix_masks(labels: torch.Tensor, generator: torch.Generator | None = None, *,
                    classes: torch.Tensor | None = None, image_generators=None
                    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    r"""ClassMix masks for a source label batch: ``(masks bool N×H×W, chosen classes per image)``.

    :math:`C` = ``torch.unique(labels)`` over the whole batch (or ``classes``, the sorted class set of the
    *global* batch when the batch is split over processes); image :math:`i` chooses
    :math:`\lceil |C|/2 \rceil` of :math:`C` without replacement (one ``randperm`` per image, from
    ``image_generators[i]`` when given, else from ``generator`` in image order); its mask is
    ``labels[i] ∈ chosen_i``.
    """
    _check_labels(labels)
    # C: the classes present anywhere in the source batch (255 included when present)
    classes = torch.unique(labels) if classes is None else classes.to(labels.device)
    n = classes.numel()
    # ⌈|C| / 2⌉ per image
    k = (n + 1) // 2
    masks, chosen = [], []
    for i in range(labels.shape[0]):
        g = image_generators[i] if image_generators is not None else generator
        dev = g.device if g is not None else torch.device("cpu")
        pick = torch.randperm(n, generator=g, device=dev)[:k].to(classes.device)
        c = classes[pick].sort().values
        chosen.append(c)
        # M_i = [y_S,i ∈ chosen_i]
        masks.append(torch.isin(labels[i], c))
    return torch.stack(masks), chosen


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r""":math:`M \odot s + (1 - M) \odot t` with a boolean N×H×W ``mask`` broadcast over channels."""
    if mask.dtype != torch.bool:
        raise ConfigError(f"mask must be boolean, got {mask.dtype}")
    if source.shape != target.shape:
        raise ConfigError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ in shape")
    m = mask[:, None] if source.ndim == 4 else mask
    return torch.where(m, source, target)


# --- photometric: colour jitter ----------------------------------------------------------------------

def _denorm(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return x * s + m


def _renorm(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma of a 1×3×H×W image in [0, 1] → 1×1×H×W (torchvision's grayscale)."""
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dz = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dz, (maxc - g) / dz, (maxc - b) / dz
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack((h, s, v), 1)


def _hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    r = torch.stack((v, q, p, p, t, v), 1).gather(1, i[:, None])[:, 0]
    g = torch.stack((t, v, v, q, p, p), 1).gather(1, i[:, None])[:, 0]
    b = torch.stack((p, p, t, v, v, q), 1).gather(1, i[:, None])[:, 0]
    return torch.stack((r, g, b), 1)


def adjust_brightness(x, f):
    return (x * f).clamp(0, 1)


def adjust_contrast(x, f):
    mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x, f):
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


def adjust_hue(x, shift):
    hsv = _rgb_to_hsv(x)
    hsv = torch.stack((torch.remainder(hsv[:, 0] + shift, 1.0), hsv[:, 1], hsv[:, 2]), 1)
    return _hsv_to_rgb(hsv).clamp(0, 1)


_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def jitter_params(n: int, generator: torch.Generator | None = None, *, strength: float = 0.2,
                  p: float = 0.8, image_generators=None) -> dict:
    """The draws of :func:`color_jitter` for a batch of ``n``: ``apply`` (one per batch, :math:`u > 1 - p`),
    ``factors`` float64 n×4 (brightness, contrast, saturation ∈ [1 − s, 1 + s]; hue ∈ [−s, s]) and
    ``order`` int64 n×4 (a permutation per image). All are drawn whether or not ``apply``; with
    ``image_generators`` (one per image) the per-image draws come from them, the batch's ``u`` from
    ``generator``."""
    if not 0 <= strength < 1:
        raise ConfigError(f"jitter strength must be in [0, 1), got {strength}")
    if not 0 <= p <= 1:
        raise ConfigError(f"jitter probability must be in [0, 1], got {p}")
    dev = generator.device if generator is not None else torch.device("cpu")
    u = float(torch.rand((), generator=generator, device=dev, dtype=torch.float64))
    gens = image_generators if image_generators is not None else [generator] * n
    r, order = torch.zeros(n, 4, dtype=torch.float64), torch.zeros(n, 4, dtype=torch.int64)
    for i, g in enumerate(gens):
        d = g.device if g is not None else torch.device("cpu")
        r[i] = torch.rand(4, generator=g, device=d, dtype=torch.float64).cpu()
        order[i] = torch.randperm(4, generator=g, device=d).cpu()
    lo = torch.tensor([1 - strength] * 3 + [-strength], dtype=torch.float64)
    factors = lo + 2 * strength * r
    # DAFormer: ``color_jitter > p`` with its p = 0.2 → applied with probability 0.8
    return {"u": u, "apply": u > 1 - p, "factors": factors, "order": order}


def color_jitter(images: torch.Tensor, generator: torch.Generator | None = None, *, strength: float = 0.2,
                 p: float = 0.8, mean=IMAGENET_MEAN, std=IMAGENET_STD, params: dict | None = None
                 ) -> tuple[torch.Tensor, dict]:
    """Colour jitter of normalised N×3×H×W images (module docstring); returns ``(images, params)``."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ConfigError(f"images must be N×3×H×W, got {tuple(images.shape)}")
    params = params or jitter_params(images.shape[0], generator, strength=strength, p=p)
    if not params["apply"]:
        return images, params
    dtype = images.dtype
    x = _denorm(images.float(), mean, std).clamp(0, 1)
    out = []
    for i in range(x.shape[0]):
        xi = x[i:i + 1]
        for j in params["order"][i].tolist():
            xi = _OPS[j](xi, float(params["factors"][i, j]))
        out.append(xi)
    return _renorm(torch.cat(out), mean, std).to(dtype), params


# --- photometric: Gaussian blur ----------------------------------------------------------------------

def blur_kernel_size(side: int) -> int:
    r"""DAFormer's kernel side: :math:`\lfloor \lceil 0.1 s \rceil - 0.5 + (\lceil 0.1 s \rceil \bmod 2) \rfloor`
    — odd, ≈ 10 % of ``side``."""
    c = math.ceil(0.1 * side)
    return int(math.floor(c - 0.5 + c % 2))


def gaussian_kernel1d(size: int, sigma: float, dtype=torch.float32, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur_params(n: int, generator: torch.Generator | None = None, *, p: float = 0.5,
                sigma_range: tuple[float, float] = (0.15, 1.15), image_generators=None) -> dict:
    """The draws of :func:`gaussian_blur`: ``apply`` (one per batch, :math:`u' > 1 - p`) and ``sigma``
    float64 [n] ∼ U(sigma_range), one per image (always drawn; from ``image_generators`` when given)."""
    if not 0 <= p <= 1:
        raise ConfigError(f"blur probability must be in [0, 1], got {p}")
    lo, hi = sigma_range
    if not 0 < lo <= hi:
        raise ConfigError(f"blur sigma range must satisfy 0 < lo <= hi, got {sigma_range}")
    dev = generator.device if generator is not None else torch.device("cpu")
    u = float(torch.rand((), generator=generator, device=dev, dtype=torch.float64))
    if image_generators is None:
        r = torch.rand(n, generator=generator, device=dev, dtype=torch.float64).cpu()
    else:
        r = torch.stack([torch.rand((), generator=g, device=g.device, dtype=torch.float64).cpu()
                         for g in image_generators]) if n else torch.zeros(0, dtype=torch.float64)
    sigma = lo + (hi - lo) * r
    return {"u": u, "apply": u > 1 - p, "sigma": sigma}


def gaussian_blur(images: torch.Tensor, generator: torch.Generator | None = None, *, p: float = 0.5,
                  sigma_range: tuple[float, float] = (0.15, 1.15), params: dict | None = None
                  ) -> tuple[torch.Tensor, dict]:
    """Gaussian blur of N×C×H×W images (module docstring); returns ``(images, params)``."""
    if images.ndim != 4:
        raise ConfigError(f"images must be N×C×H×W, got {tuple(images.shape)}")
    params = params or blur_params(images.shape[0], generator, p=p, sigma_range=sigma_range)
    if not params["apply"]:
        return images, params
    n, c, h, w = images.shape
    kh, kw = blur_kernel_size(h), blur_kernel_size(w)
    out = []
    for i in range(n):
        s = float(params["sigma"][i])
        gy = gaussian_kernel1d(kh, s, images.dtype, images.device).view(1, 1, kh, 1).expand(c, 1, kh, 1)
        gx = gaussian_kernel1d(kw, s, images.dtype, images.device).view(1, 1, 1, kw).expand(c, 1, 1, kw)
        xi = F.pad(images[i:i + 1], (0, 0, kh // 2, kh // 2), mode="reflect") if kh > 1 else images[i:i + 1]
        xi = F.conv2d(xi, gy, groups=c)
        xi = F.pad(xi, (kw // 2, kw // 2, 0, 0), mode="reflect") if kw > 1 else xi
        out.append(F.conv2d(xi, gx, groups=c))
    return torch.cat(out), params


def strong_transform(images: torch.Tensor, jitter_generator: torch.Generator | None = None,
                     blur_generator: torch.Generator | None = None, *, jitter_strength: float = 0.2,
                     jitter_p: float = 0.8, blur_p: float = 0.5, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                     jitter_image_generators=None, blur_image_generators=None) -> tuple[torch.Tensor, dict]:
    """Jitter then blur, DAFormer's order; returns the images and ``{"jitter": …, "blur": …}``.
    ``*_image_generators``: one generator per image for the per-image draws (see :func:`jitter_params`)."""
    n = images.shape[0]
    jp = jitter_params(n, jitter_generator, strength=jitter_strength, p=jitter_p,
                       image_generators=jitter_image_generators)
    images, jp = color_jitter(images, mean=mean, std=std, params=jp)
    bp = blur_params(n, blur_generator, p=blur_p, image_generators=blur_image_generators)
    images, bp = gaussian_blur(images, params=bp)
    return images, {"jitter": jp, "blur": bp}


__all__ = ["blur_kernel_size", "blur_params", "class_mix_masks", "color_jitter", "gaussian_blur", "jitter_params",
           "mix", "strong_transform"]
