r"""DARS's random sampling (Algorithm 1 lines 5–6), and applying thresholds to arg-max labels.

Conventions, stated once
------------------------
* **Ties.** DA and CBST keep every pixel at or above its class's threshold, ties included; DARS keeps
  exactly :math:`n_j` of class :math:`j` in all.
* **Integer quotas.** Images are visited in order; image :math:`i` keeps
  :math:`k_{ij} = \lfloor n_j S_{ij} / \tilde n_j \rfloor - \lfloor n_j S_{i-1,j} / \tilde n_j \rfloor`
  of its :math:`c_{ij}` passing pixels of class :math:`j` (:math:`S_{ij} = c_{1j} + \dots + c_{ij}`),
  i.e. its share :math:`s_j c_{ij}` to within one pixel, and :math:`\sum_i k_{ij} = n_j` exactly
  (:class:`Quota`). The released code keeps :math:`c_{ij} - \lfloor c_{ij} (1 - s_j) \rfloor` per
  image, which overshoots :math:`n_j` by up to one pixel per image.
* **Which pixels.** A uniformly random subset drawn from a generator seeded by :func:`image_seed`
  ``(seed, i)``: NumPy's ``choice`` on the CPU; on a GPU the :math:`k_{ij}` pixels with the smallest of a
  40-bit random key per pixel (torch's generator; equal keys, which matter with probability about
  :math:`c_{ij} / 2^{40}`, go to the first pixel) — the same seed gives the same labels on the same kind
  of device, however many images are handled at once. (The released labelling script seeds torch once
  per run — ``manual_seed: 1`` in its configs — and then draws each image's ``randperm`` from that one
  stream, so its choice depends on the order and number of images before; ours depends on (seed, i) only.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from blvnb.classes import IGNORE
from blvnb.pseudo.distribution import label_counts
from blvnb.pseudo.thresholds import Thresholds, _steps, bincount, confidence_keys

#: pixels of one step when a labeller's ``batch`` is None: (CPU, GPU)
BATCH_PIXELS = (1 << 19, 1 << 23)

def apply_thresholds(conf: torch.Tensor, pred: torch.Tensor, thresholds: Thresholds) -> torch.Tensor:
    """Arg-max labels (int64, shape of ``conf``), ignored (255) where the confidence is below :math:`t_j`."""
    keys_t = thresholds.keys.to(pred.device)
    keep = confidence_keys(conf) >= keys_t[pred]
    return torch.where(keep, pred, torch.full_like(pred, IGNORE))


class Quota:
    r"""DARS's sampling budget, spread over images in order: exactly :math:`n_j` kept per class (module
    docstring), kept on the labels' device so that a batch of images needs no host synchronisation.

    With :math:`S` the passing pixels of class :math:`j` seen so far, the state is
    :math:`n_j S = q_j \tilde n_j + r_j` (:math:`0 \le r_j < \tilde n_j`), so that
    :math:`\lfloor n_j S / \tilde n_j \rfloor = q_j` is exact in int64 however large :math:`n_j S`
    grows; the cap :math:`\min(S, \tilde n_j)` of the formula (for a source that is not deterministic)
    becomes :math:`\min(q_j, n_j)`."""

    def __init__(self, targets: Sequence[int], passed: Sequence[int], seen: Sequence[int] | None = None,
                 device: torch.device | str = "cpu"):
        n = [int(v) for v in targets]
        tot = [int(v) for v in passed]
        seen = [0] * len(n) if seen is None else [int(v) for v in seen]
        # (q, r) from Python integers (exact), then on the device
        q = [nj * s // t if t > 0 else 0 for nj, s, t in zip(n, seen, tot)]
        r = [nj * s % t if t > 0 else 0 for nj, s, t in zip(n, seen, tot)]

        def dev(x):
            return torch.tensor(x, dtype=torch.int64, device=device)

        self.n, self.tot, self.q, self.r = dev(n), dev(tot).clamp(min=1), dev(q), dev(r)
        # s_j = 1 (nothing passed, or at most n_j did): every passing pixel is kept
        self.all = dev([t <= 0 or nj >= t for nj, t in zip(n, tot)]).bool()

    def take(self, counts: torch.Tensor) -> torch.Tensor:
        r"""Pixels to keep per class in the next images (int64 B×C), given their passing counts
        :math:`c_{ij}` (B×C, images in order): :math:`k_{ij} = \lfloor n_j S_{ij} / \tilde n_j \rfloor -
        \lfloor n_j S_{i-1,j} / \tilde n_j \rfloor`, at most :math:`c_{ij}`."""
        # n_j S_ij = (q_j + ⌊t / ñ_j⌋) ñ_j + t mod ñ_j, with t = r_j + n_j (c_1j + … + c_ij) (fits int64:
        # n_j times a batch's pixels)
        t = self.r + self.n * counts.cumsum(0)
        q = self.q + t // self.tot
        done = torch.minimum(q, self.n)  # ⌊n_j min(S_ij, ñ_j) / ñ_j⌋
        before = torch.cat([torch.minimum(self.q, self.n)[None], done[:-1]])
        keep = torch.where(self.all, counts, torch.minimum(done - before, counts))
        self.q, self.r = q[-1], t[-1] % self.tot
        return keep


def image_seed(seed: int, index: int) -> int:
    """The seed of image ``index``'s random sampling: a function of (stream seed, index) only."""
    ss = np.random.SeedSequence([int(seed) & (2**63 - 1), int(index)])
    return int(ss.generate_state(1, np.uint64)[0]) & (2**63 - 1)


def group_counts(labels: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """B×… labels (0 … C−1, 255 ignored) → (group of every pixel, int64 B×P: ``b (C+1) + class``, class C
    for "not labelled"; pixels per group, int64 B×(C+1)), on the labels' device, no host synchronisation."""
    b, c = labels.shape[0], num_classes
    groups = labels.reshape(b, -1).clamp(max=c).to(torch.int64) + _steps(b, c + 1, labels.device).view(b, 1)
    return groups, bincount(groups.view(-1), b * (c + 1)).view(b, c + 1)


def dars_quota(thresholds: Thresholds, seen: Sequence[int] | None, device: torch.device | str) -> Quota:
    """DARS's budget (:class:`Quota`) for counts of :func:`group_counts`: the C classes and a last column,
    the pixels not labelled (:math:`\\tilde n = 0`: all "kept", never sampled)."""
    return Quota([*thresholds.targets.tolist(), 0], [*thresholds.passed.tolist(), 0],
                  None if seen is None else [*seen, 0], device)


#: random bits per pixel of the GPU sampling (:func:`_thin_torch`); the rest of an int64 holds the group
_RAND_BITS = 40


def _thin_numpy(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
                seed: int, first: int) -> None:
    """:func:`thin` on the CPU: per image a NumPy generator seeded by :func:`image_seed` ``(seed, first + b)``
    picks, class by class, which ``counts − keep`` of the class's pixels to ignore."""
    arr = labels.numpy()
    for b, (cs, ks) in enumerate(zip(counts.tolist(), keep.tolist())):
        if all(k >= c for c, k in zip(cs, ks)):
            continue
        rng = np.random.default_rng(image_seed(seed, first + b))
        row = arr[b]
        for j, (c, k) in enumerate(zip(cs, ks)):
            if k < c:
                members = np.flatnonzero(row == j)
                row[members[rng.choice(members.size, size=c - k, replace=False)]] = IGNORE


def _thin_torch(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
                seed: int, first: int) -> None:
    """:func:`thin` with batched tensor operations (a GPU): every pixel of image ``b`` draws a
    :data:`_RAND_BITS`-bit random key from torch's generator seeded by :func:`image_seed` ``(seed, first + b)``;
    in each (image, class) to thin, the ``keep`` candidates with the smallest keys stay (equal keys:
    the first in the image). One sort of all candidates of the batch, keyed by (image, class, random key);
    one host synchronisation (the number of candidates)."""
    bsz, dev = counts.shape[0], labels.device
    if groups is None:
        groups = group_counts(labels, counts.shape[1] - 1)[0]
    # random keys, image by image from its own seed (so the same whatever the batch)
    rand = torch.empty(labels.shape, dtype=torch.int64, device=dev)
    g = torch.Generator(device=dev)
    for b in range(bsz):
        rand[b].random_(0, 1 << _RAND_BITS, generator=g.manual_seed(image_seed(seed, first + b)))
    need = keep < counts  # groups with pixels to drop
    idx = torch.nonzero(need.view(-1)[groups.view(-1)]).squeeze(1)  # the candidates (host synchronisation)
    if idx.numel() == 0:
        return
    # candidates sorted by group, then random key; the sort is stable: equal keys stay in pixel order
    key, order = torch.sort((groups.view(-1)[idx] << _RAND_BITS) | rand.view(-1)[idx], stable=True)
    group = key >> _RAND_BITS
    # a group's candidates sit at [start, start + size): the first `keep` of them stay
    size = (counts * need).view(-1)
    stop = size.cumsum(0) - size + keep.view(-1)
    drop = torch.arange(idx.numel(), device=dev) >= stop[group]
    flat, pos = labels.view(-1), idx[order]
    flat[pos] = torch.where(drop, IGNORE, flat[pos])


def thin(labels: torch.Tensor, groups: torch.Tensor | None, counts: torch.Tensor, keep: torch.Tensor,
          seed: int, first: int) -> None:
    """DARS's random drop, in place, on B×P labels (images ``first`` … ``first``+B−1, 255 = ignored): in
    image ``b`` ignore a uniformly random ``counts[b, j] − keep[b, j]`` of the pixels labelled ``j``
    (module docstring). ``groups``, ``counts``: from :func:`group_counts` (``groups`` None: made here);
    ``keep``: the same B×(C+1) shape. NumPy on the CPU, batched tensor operations on a GPU."""
    if labels.device.type == "cpu":
        _thin_numpy(labels, groups, counts, keep, seed, first)
    else:
        _thin_torch(labels, groups, counts, keep, seed, first)


def random_sampling(labels: torch.Tensor, thresholds: Thresholds, seed: int) -> torch.Tensor:
    r"""DARS Algorithm 1 line 6 on N×H×W labels (after :func:`apply_thresholds`): keep :math:`s_j` of each
    class's pseudo-labelled pixels at random — :math:`n_j` in all, image by image (module docstring)."""
    c = thresholds.num_classes
    quota = dars_quota(thresholds, None, labels.device)
    out = labels.to(torch.uint8, copy=True)  # 0 … C−1 and 255
    pixels = math.prod(labels.shape[1:])
    step = max(1, BATCH_PIXELS[labels.device.type == "cuda"] // max(1, pixels))  # images at once
    for first in range(0, labels.shape[0], step):
        part = out[first:first + step].view(-1, pixels)
        groups, counts = group_counts(part, c)
        thin(part, groups, counts, quota.take(counts), seed, first)
    return out.to(torch.int64)


def seed_from(generator: torch.Generator | None) -> int:
    """A 62-bit stream seed drawn from ``generator`` (or torch's global generator)."""
    if generator is None:
        return int(torch.randint(0, 2**62, ()).item())
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device).item())


def kept_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pseudo-labelled pixels per class (int64[C]); 255 and other values are not counted
    (:func:`blvnb.pseudo.distribution.label_counts`)."""
    return label_counts(labels, num_classes)


__all__ = ["BATCH_PIXELS", "Quota", "apply_thresholds", "dars_quota", "group_counts", "image_seed", "kept_counts",
           "random_sampling", "seed_from", "thin"]
