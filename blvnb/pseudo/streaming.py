r"""The labellers over a whole data set, in memory independent of its size, resumable: :class:`StreamingLabeler`.

A *source* is ``len(source)`` images, ``source[i]`` → C×H×W class probabilities, optionally
``source.relpath(i)`` → where its PNG goes: :class:`TensorSource` for tensors in memory, and
:class:`blvnb.engine.teacher.TeacherSource` (the engine's) for a model on a data set. Two passes:
the thresholds (:mod:`blvnb.pseudo.thresholds`, one exact search), then the labels
(:mod:`blvnb.pseudo.sampling`), written as 8-bit PNGs. Also here: float16 confidence histograms (DARS
Fig. 3) and the report of what a labelling wrote.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm  # text bars: the book shows no widgets

from blvnb.classes import IGNORE
from blvnb.devices import resolve_device
from blvnb.errors import BlvnbError, ConfigError
from blvnb.io import atomic_write
from blvnb.pseudo.distribution import check_counts, prior_from_counts
from blvnb.pseudo.sampling import BATCH_PIXELS, Quota, dars_quota, group_counts, thin
from blvnb.pseudo.thresholds import (_INT_VIEW, ThresholdSearch, Thresholds, bincount, check_alpha, check_method,
                                     check_num_classes, check_probs, check_range, check_threshold, confidence,
                                     confidence_keys, fixed_thresholds, from_search, key_of_one, keys_to_values,
                                     rule_targets)

log = logging.getLogger("blvnb.pseudo.labelers")

# --- confidence histograms (DARS Fig. 3) -----------------------------------------------------------

@dataclass
class ConfidenceHistogram:
    """Per class, how many predicted pixels have each float16 confidence: ``counts`` int64 C×15,361,
    ``values`` float64[15,361] (the confidence of each column; the last is exactly 1.0)."""

    counts: torch.Tensor
    values: torch.Tensor

    @property
    def exact_one_share(self) -> torch.Tensor:
        """Per class, the share of its predicted pixels whose confidence is exactly 1.0 (NaN: none predicted)."""
        total = self.counts.sum(1).to(torch.float64)
        ones = self.counts[:, -1].to(torch.float64)
        return torch.where(total > 0, ones / total.clamp(min=1), torch.full_like(total, math.nan))

    def update(self, conf: torch.Tensor, pred: torch.Tensor) -> ConfidenceHistogram:
        """Add a chunk (confidences of any float dtype are rounded to float16 first)."""
        c, width = self.counts.shape
        key = confidence_keys(conf.to(torch.float16)).reshape(-1).cpu()
        rows = pred.reshape(-1).cpu().to(torch.int64)
        self.counts += bincount(rows * width + key, c * width).view(c, width)
        return self

    @classmethod
    def empty(cls, num_classes: int) -> ConfidenceHistogram:
        width = key_of_one(torch.float16) + 1
        values = keys_to_values(torch.arange(width), torch.float16)
        return cls(torch.zeros(num_classes, width, dtype=torch.int64), values)


def confidence_histogram(probs: torch.Tensor, dim: int = 1) -> ConfidenceHistogram:
    """The float16 confidence histogram of class probabilities (any shape; classes along ``dim``)."""
    conf, pred = confidence(probs, dim)
    return ConfidenceHistogram.empty(probs.shape[dim]).update(conf, pred)


# --- streaming over a data set ------------------------------------------------------------------------

class TensorSource:
    """A source of per-image probabilities from an N×C×H×W tensor (tests, small demonstrations)."""

    def __init__(self, probs: torch.Tensor, names: Sequence[str] | None = None):
        check_probs(probs)
        self.probs = probs
        self.names = list(names) if names is not None else [f"{i:06d}" for i in range(probs.shape[0])]

    def __len__(self) -> int:
        return self.probs.shape[0]

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.probs[i]

    def relpath(self, i: int) -> str:
        return f"{self.names[i]}.png"


def _relpath(source, i: int) -> str:
    return source.relpath(i) if hasattr(source, "relpath") else f"{i:06d}.png"


def read_pseudo_label(path: str | Path) -> torch.Tensor:
    """A pseudo-label PNG written by :class:`StreamingLabeler` → int64 H×W train ids (255 ignored)."""
    from blvnb.data.base import read_index_png

    return torch.from_numpy(read_index_png(Path(path)).astype(np.int64))


def _save_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda p: Image.fromarray(labels, mode="L").save(p, format="PNG", compress_level=1))


@dataclass
class LabelingReport:
    """What the second pass wrote: per-class kept pixels, their distribution, and where the PNGs are."""

    thresholds: Thresholds
    kept: torch.Tensor
    passed_seen: torch.Tensor
    images: int
    out_dir: str | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def distribution(self) -> torch.Tensor:
        """Shares of the kept pseudo labels per class (float64[C]; zeros when nothing was kept)."""
        k = self.kept.to(torch.float64)
        return k / k.sum() if float(k.sum()) > 0 else k

    def kl_from(self, prior) -> float:
        """KL(prior ‖ pseudo-label distribution), the quantity of DARS Table 5."""
        from blvnb.pseudo.distribution import kl_divergence

        return kl_divergence(prior, self.distribution)

    def to_dict(self) -> dict[str, Any]:
        return {"thresholds": self.thresholds.to_dict(), "kept": [int(v) for v in self.kept.tolist()],
                "passed_seen": [int(v) for v in self.passed_seen.tolist()], "images": self.images,
                "out_dir": self.out_dir, "distribution": [float(v) for v in self.distribution.tolist()],
                "seconds": self.seconds}


def _threshold_values(keys: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Threshold keys → values in the confidences' own dtype, so that ``conf >= value`` ⇔
    ``confidence_keys(conf) >= key`` for confidences in [0, 1] (the "keep nothing" key, one above
    :func:`key_of_one`, is the next number above 1.0). Saves making keys of every pixel in pass 2."""
    return keys.clamp(0, key_of_one(dtype) + 1).to(_INT_VIEW[dtype]).view(dtype)


class _Clock:
    """Splits elapsed time into :attr:`StreamingLabeler.seconds` buckets without waiting for the device.

    ``lap(name)``: the time since the previous lap went to ``name`` (None: to nothing). On the CPU a
    ``perf_counter``; on a GPU a CUDA event recorded in the stream, so that a span is the device's timeline
    between two laps — the kernels queued in between, and any time the device waited for the host — read
    when the pass ends (:meth:`flush`, one synchronisation)."""

    def __init__(self, seconds: dict[str, float], device: torch.device):
        self.seconds, self.device = seconds, device
        self.cuda = device.type == "cuda"
        self._last: Any = None
        self._pending: list[tuple[str, Any, Any]] = []

    def lap(self, name: str | None) -> None:
        if self.cuda:
            now = torch.cuda.Event(enable_timing=True)
            now.record(torch.cuda.current_stream(self.device))
        else:
            now = time.perf_counter()
        if name is not None and self._last is not None:
            if self.cuda:
                self._pending.append((name, self._last, now))
            else:
                self.seconds[name] += now - self._last
        self._last = now
        if len(self._pending) >= 4096:
            self.flush()

    def flush(self) -> None:
        if self._pending:
            self._pending[-1][2].synchronize()
            for name, a, b in self._pending:
                self.seconds[name] += a.elapsed_time(b) / 1e3
            self._pending = []


class StreamingLabeler:
    r"""ST / CBST / DA / DARS over a data set, in memory independent of its size; resumable.

    ``source``: ``len(source)`` images, ``source[i]`` → C×H×W probabilities (any float dtype; the
    exactness rule of :mod:`blvnb.pseudo.thresholds` applies to that dtype), optionally
    ``source.relpath(i)`` → the PNG's path relative to ``out_dir`` (e.g. :class:`TensorSource`, or the
    engine's :class:`blvnb.engine.teacher.TeacherSource`).

    * :meth:`fit` — pass 1: per-class confidence histograms → thresholds (float32 needs a second pass,
      float64 four: :class:`ThresholdSearch`). ST with a given threshold skips it.
    * :meth:`write` — pass 2: labels each image (threshold, then DARS's sampling seeded by
      ``(seed, i)``) and writes 8-bit PNGs of train ids (255 ignored) to ``out_dir / relpath(i)``.
      :meth:`labels` yields them instead.

    ``state_dir``: where progress is kept (histogram every ``checkpoint_every`` images, the thresholds,
    and after every written batch of PNGs the sampling counters); rerunning with the same settings resumes
    without redoing finished images, a change of settings starts over. ``cache_dir``: pass 1 stores each
    image's confidence (its dtype) and prediction (uint8) — 3 bytes a pixel in float16 instead of 2·C — and
    later passes read them instead of asking the source again. ``device``: where the histograms and
    thresholds live ("auto": the GPU when there is one). :attr:`seconds` splits time into the source's and
    ours.

    ``prior_total``: reproduce the released code's budgets (:func:`~blvnb.pseudo.thresholds.target_counts`):
    the prior as given (e.g. its percentages) divided by this number (its ``valid_ratio``) instead of
    its sum.

    ``batch``: images handled per step (consecutive images of one size): the arg max of each goes into one
    B×H×W tensor and every other step runs once per batch; None: as many as fill 2¹⁹ pixels on the CPU,
    2²³ on a GPU (one image of 1024×2048 on the CPU, four on a GPU). Results do not depend on it. Progress
    is saved at batch boundaries (an interrupted batch is redone). On a GPU nothing waits for the device
    within a batch, except DARS's sampling once (the number of pixels to sample from); times are read from
    CUDA events when a pass ends.
    """

    def __init__(self, prior=None, *, method: str = "dars", alpha: float = 0.2, threshold: float | None = None,
                 num_classes: int | None = None, seed: int = 0, device: str | torch.device = "auto",
                 state_dir: str | Path | None = None, cache_dir: str | Path | None = None,
                 checkpoint_every: int = 1, progress: bool = True, batch: int | None = None,
                 prior_total: float | None = None):
        self.method = check_method(method)
        if self.method != "st" or threshold is None:
            check_alpha(alpha)
        if self.method == "st" and threshold is not None:
            threshold = check_threshold(threshold)
        if self.method in ("da", "dars"):
            # the released budgets (prior_total): the prior as given, divided by prior_total
            prior = prior_from_counts(prior, num_classes) if prior_total is None else check_counts(prior, num_classes)
            num_classes = prior.numel()
        elif prior is not None:
            prior = prior_from_counts(prior, num_classes)
        if batch is not None and not (isinstance(batch, numbers.Integral) and batch >= 1):
            raise ConfigError(f"batch must be a positive number of images or None (automatic), got {batch!r}")
        self.prior, self.alpha, self.threshold = prior, float(alpha), threshold
        self.prior_total = None if prior_total is None else float(prior_total)
        self.num_classes = num_classes
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.state_dir = Path(state_dir) if state_dir is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.progress = progress
        self.batch = None if batch is None else int(batch)
        self.thresholds: Thresholds | None = None
        self.histogram: ConfidenceHistogram | None = None
        self.seconds = {"source": 0.0, "pass1": 0.0, "pass2": 0.0, "write": 0.0}
        self.calls = 0  # images asked of the source
        self._clock = _Clock(self.seconds, self.device)
        self._range: tuple[torch.Tensor, torch.Tensor] | None = None  # smallest, largest confidence, on the device
        self._values: torch.Tensor | None = None  # threshold values on the device (pass 2)
        self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None  # a batch's (conf, pred), reused

    # settings → digest: a state written under other settings is not resumed ----------------------
    def _digest(self, source) -> str:
        h = hashlib.sha256()
        settings = {"method": self.method, "alpha": self.alpha, "threshold": self.threshold,
                    "prior": None if self.prior is None else [round(float(v), 15) for v in self.prior],
                    "seed": self.seed, "n": len(source)}
        if self.prior_total is not None:  # (absent otherwise: states written before the option still resume)
            settings["prior_total"] = self.prior_total
        h.update(json.dumps(settings, sort_keys=True).encode())
        for i in range(len(source)):
            h.update(_relpath(source, i).encode() + b"\0")
        return h.hexdigest()[:16]

    # reading: images → batches of (confidence, prediction) on the device ------------------------------
    def batch_size(self, size: Sequence[int]) -> int:
        """Images per step for images of ``size`` (H, W): :attr:`batch`, else by the pixel budget."""
        if self.batch is not None:
            return self.batch
        return max(1, BATCH_PIXELS[self.device.type == "cuda"] // max(1, math.prod(size)))

    def _fetch(self, source, i: int, bucket: str) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Image ``i``: its (confidence, prediction) from the cache when there, else its C×H×W probabilities
        from the source (time in ``source[i]`` goes to the source, what came before to ``bucket``)."""
        cached = self.cache_dir / f"{i:07d}.pt" if self.cache_dir is not None else None
        if cached is not None and cached.is_file():
            d = torch.load(cached, weights_only=True)
            return d["conf"], d["pred"]
        self._clock.lap(bucket)
        probs = source[i]
        if probs.is_cuda and self.device.type != "cuda":
            torch.cuda.synchronize(probs.device)  # the source's kernels are its own time
        self._clock.lap("source")
        self.calls += 1
        if probs.ndim == 4 and probs.shape[0] == 1:
            probs = probs[0]
        if probs.ndim != 3 or 0 in probs.shape:
            raise BlvnbError(f"source[{i}] must be C×H×W probabilities with C, H, W >= 1, got shape "
                             f"{tuple(probs.shape)}")
        if not probs.is_floating_point():
            raise BlvnbError(f"probabilities must be a float tensor, got dtype {probs.dtype}")
        if self.num_classes is None:
            check_num_classes(probs.shape[0])
            self.num_classes = probs.shape[0]
        elif probs.shape[0] != self.num_classes:
            raise BlvnbError(f"source[{i}] has {probs.shape[0]} classes, expected {self.num_classes}")
        return probs

    def _batch_buffers(self, cap: int, size: tuple[int, ...], dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        buf = self._buffers
        if buf is None or buf[0].shape[0] < cap or buf[0].shape[1:] != size or buf[0].dtype != dtype:
            buf = (torch.empty(cap, *size, dtype=dtype, device=self.device),
                   torch.empty(cap, *size, dtype=torch.int64, device=self.device))
            self._buffers = buf
        return buf

    def _images(self, source, start: int, *, bucket: str,
                store: bool = False) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """Images ``start`` … in batches: ``(first index, conf B×H×W, pred B×H×W int64)`` on the device,
        B ≤ :meth:`batch_size` consecutive images of one size and dtype. The arg max of each image is
        written straight into the batch, whose tensors the next batch reuses. ``store``: write what came
        from the source to ``cache_dir``."""
        n = len(source)

        def size_of(item):
            return tuple(item[0].shape) if isinstance(item, tuple) else tuple(item.shape[1:])

        def dtype_of(item):
            return item[0].dtype if isinstance(item, tuple) else item.dtype

        def put(item, conf, pred):
            if isinstance(item, tuple):  # from the cache
                conf.copy_(item[0])
                pred.copy_(item[1])
            elif item.device == conf.device:
                torch.max(item, 0, out=(conf, pred))
            else:
                c, p = item.max(0)
                conf.copy_(c)
                pred.copy_(p)

        i, held = start, None
        while i < n:
            item = held if held is not None else self._fetch(source, i, bucket)
            held = None
            size, dtype = size_of(item), dtype_of(item)
            cap = min(self.batch_size(size[-2:]), n - i)
            conf, pred = self._batch_buffers(cap, size, dtype)
            fresh = []  # slots that came from the source
            b = 0
            while True:
                put(item, conf[b], pred[b])
                if not isinstance(item, tuple):
                    fresh.append(b)
                b += 1
                if b == cap:
                    break
                item = self._fetch(source, i + b, bucket)
                if size_of(item) != size or dtype_of(item) != dtype:
                    held = item  # starts the next batch
                    break
            conf, pred = conf[:b], pred[:b]
            # the [0, 1] check, kept on the device and read once a pass ends
            lo, hi = torch.aminmax(conf)
            self._range = (lo, hi) if self._range is None else (torch.minimum(self._range[0], lo),
                                                                torch.maximum(self._range[1], hi))
            if store and fresh and self.cache_dir is not None:
                cc, pp = conf.cpu(), pred.to(torch.uint8).cpu()
                for k in fresh:
                    payload = {"conf": cc[k].clone(), "pred": pp[k].clone()}
                    atomic_write(self.cache_dir / f"{i + k:07d}.pt", lambda p, x=payload: torch.save(x, p))
            yield i, conf, pred
            i += b

    def check_range(self) -> None:
        if self._range is not None:
            lo, hi = torch.stack(self._range).tolist()
            check_range(lo, hi)

    def _state(self, name: str) -> Path | None:
        return self.state_dir / name if self.state_dir is not None else None

    # pass 1 -------------------------------------------------------------------------------------------
    def fit(self, source) -> Thresholds | None:
        """Pass 1: the thresholds of every class (resumed from ``state_dir`` when possible). ST with a
        given threshold has no first pass: None, and pass 2 makes the thresholds."""
        n = len(source)
        if n == 0:
            raise BlvnbError("the unlabeled set is empty: nothing to pseudo-label")
        digest = self._digest(source)
        done = self._state("thresholds.json")
        if done is not None and done.is_file():
            saved = json.loads(done.read_text())
            if saved.get("digest") == digest:
                self.thresholds = Thresholds.from_dict(saved["thresholds"])
                self.num_classes = self.thresholds.num_classes
                log.info("pass 1 already done (%s): thresholds read back", done)
                return self.thresholds
        if self.method == "st" and self.threshold is not None:
            return None  # no first pass: the thresholds are made when pass 2 sees the confidences' dtype

        search, start, hist = None, 0, None
        ckpt = self._state("pass1.pt")
        if ckpt is not None and ckpt.is_file():
            st = torch.load(ckpt, weights_only=True)
            if st.get("digest") == digest:
                search = ThresholdSearch.from_state_dict(st["search"], self.device)
                start = int(st["next"])
                self.num_classes = st["num_classes"]
                if st.get("hist_counts") is not None:
                    hist = ConfidenceHistogram(st["hist_counts"], ConfidenceHistogram.empty(1).values)
                log.info("pass 1: resuming at image %d of %d (pass %d)", start, n, search.level + 1)
            else:
                log.warning("pass 1: %s was written with other settings; starting over", ckpt)
        merged = self.method == "st"
        targets = rule_targets(self.method, self.prior, self.alpha, prior_total=self.prior_total)

        def save(next_i: int) -> None:
            if ckpt is not None and search is not None:
                payload = {"digest": digest, "next": next_i, "search": search.state_dict(),
                           "num_classes": self.num_classes, "hist_counts": None if hist is None else hist.counts}
                atomic_write(ckpt, lambda p: torch.save(payload, p))

        every = self.checkpoint_every
        while search is None or not search.done:
            level = 0 if search is None else search.level
            bar = tqdm(desc=f"{self.method.upper()} pass 1.{level + 1}: confidence histogram",
                       disable=not self.progress, leave=False, total=n, initial=start)
            self._clock.lap(None)
            for first, conf, pred in self._images(source, start, bucket="pass1", store=level == 0):
                if search is None:
                    search = ThresholdSearch(1 if merged else self.num_classes, conf.dtype, self.device)
                    if merged and conf.dtype == torch.float16:  # ST's search merges the classes: count them apart
                        hist = ConfidenceHistogram.empty(self.num_classes)
                if hist is not None and search.level == 0:
                    hist.update(conf, pred)
                search.update(conf, torch.zeros_like(pred) if merged else pred)
                self._clock.lap("pass1")
                after = first + conf.shape[0]
                bar.update(conf.shape[0])
                if after < n and after // every > first // every:  # a multiple of checkpoint_every passed
                    save(after)
                    self._clock.lap(None)
            bar.close()
            self._clock.flush()
            self.check_range()
            search.finish_pass(targets)
            start = 0
            save(0)
        self.thresholds = from_search(self.method, search, self.num_classes, self.alpha)
        if search.dtype == torch.float16:
            counts = hist.counts if hist is not None else search.first_histogram.cpu()
            self.histogram = ConfidenceHistogram(counts, ConfidenceHistogram.empty(1).values)
        return self._save_thresholds(digest)

    def _save_thresholds(self, digest: str) -> Thresholds:
        path = self._state("thresholds.json")
        if path is not None:
            text = json.dumps({"digest": digest, "thresholds": self.thresholds.to_dict()}, indent=1)
            atomic_write(path, lambda p: p.write_text(text))
        return self.thresholds

    # pass 2 -------------------------------------------------------------------------------------------
    def label_batch(self, conf: torch.Tensor, pred: torch.Tensor, first: int,
                    quota: Quota | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images ``first`` … ``first``+B−1 (``conf``, ``pred``: B×H×W): their labels (uint8 B×H×W, 255
        ignored), passing and kept pixels per class (int64 B×C), all on the device. DARS's ``quota``
        (:func:`~blvnb.pseudo.sampling.dars_quota`, the counts of the images before) decides how many of
        each class to keep (Algorithm 1 line 6, as integer quotas); without one, all."""
        c = self.num_classes
        if self.thresholds is None:  # ST with a given threshold: now the dtype is known
            self.thresholds = fixed_thresholds(self.threshold, c, conf.dtype)
        if conf.dtype != self.thresholds.dtype:
            raise BlvnbError(f"confidences changed dtype from {self.thresholds.dtype} (pass 1) to {conf.dtype}")
        if self._values is None:
            self._values = _threshold_values(self.thresholds.keys, conf.dtype).to(self.device)
        # Algorithm 1 line 3: the arg max where the confidence is ≥ t_j of its class, else ignored
        below = conf < self._values.index_select(0, pred.reshape(-1)).view(pred.shape)
        # j | 255 = 255 (j < C ≤ 255); on the CPU much faster than where / masked_fill with a ragged mask
        labels = pred.to(torch.uint8).bitwise_or_(below.to(torch.uint8).mul_(IGNORE))
        groups, counts = group_counts(labels, c)  # counts[:, c]: pixels not labelled
        if quota is None:
            return labels, counts[:, :c], counts[:, :c]
        # line 6: per class keep k_ij of the c_ij passing pixels, at random
        keep = quota.take(counts)
        thin(labels.view(labels.shape[0], -1), groups, counts, keep, self.seed, first)
        return labels, counts[:, :c], keep[:, :c]

    def label_image(self, conf: torch.Tensor, pred: torch.Tensor, index: int,
                    quota: Quota | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One image (:meth:`label_batch` of one): labels int64 H×W, passing and kept counts int64[C]."""
        labels, counts, kept = self.label_batch(conf[None], pred[None], index, quota)
        return labels[0].to(torch.int64), counts[0], kept[0]

    def _label_batches(self, source, start: int = 0, seen: Sequence[int] | None = None
                       ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Pass 2 in batches: ``(first index, labels, passing counts, kept counts)`` as :meth:`label_batch`."""
        if self.thresholds is None:
            self.fit(source)
        th = self.thresholds
        quota = dars_quota(th, seen, self.device) if self.method == "dars" else None
        self._values = None
        self._clock.lap(None)
        for first, conf, pred in self._images(source, start, bucket="pass2"):
            out = self.label_batch(conf, pred, first, quota)
            self._clock.lap("pass2")
            yield (first, *out)
            self._clock.lap(None)  # the consumer's time is not ours
        self._clock.flush()

    def labels(self, source, start: int = 0,
               seen: Sequence[int] | None = None) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Pass 2 without writing: ``(i, labels, passing counts, kept counts)`` in order from ``start``
        (labels: int64 H×W on the labeler's device; counts: int64[C] there). ``seen``: per class the
        passing pixels of images 0 … ``start``−1 (to resume DARS's sampling)."""
        for first, labels, counts, kept in self._label_batches(source, start, seen):
            for b in range(labels.shape[0]):
                yield first + b, labels[b].to(torch.int64), counts[b], kept[b]

    def write(self, source, out_dir: str | Path | None) -> LabelingReport:
        """Pass 2: label every image and write its PNG under ``out_dir`` (None: count only)."""
        if self.thresholds is None:
            self.fit(source)
        n = len(source)
        digest = self._digest(source)
        out = Path(out_dir) if out_dir is not None else None
        start, seen, kept_sum, passed_sum = 0, None, None, None
        state_path = self._state("pass2.json")
        if state_path is not None and state_path.is_file():
            st = json.loads(state_path.read_text())
            if st.get("digest") == digest:
                start, seen = int(st["next"]), st["seen"]
                kept_sum, passed_sum = torch.tensor(st["kept"]), torch.tensor(st["passed"])
                log.info("pass 2: resuming at image %d of %d", start, n)
        bar = tqdm(desc=f"{self.method.upper()} pass 2: pseudo labels", disable=not self.progress, leave=False,
                   total=n, initial=start)
        # the sums stay on the device: read when a state is written (once a batch) and at the end
        for first, labels, counts, kept in self._label_batches(source, start, seen):
            passed_sum = counts.sum(0) if passed_sum is None else passed_sum.to(self.device) + counts.sum(0)
            kept_sum = kept.sum(0) if kept_sum is None else kept_sum.to(self.device) + kept.sum(0)
            if out is not None:
                arr = labels.cpu().numpy()
                for b in range(arr.shape[0]):
                    _save_png(out / _relpath(source, first + b), arr[b])
            if state_path is not None:
                text = json.dumps({"digest": digest, "next": first + labels.shape[0], "seen": passed_sum.tolist(),
                                   "kept": kept_sum.tolist(), "passed": passed_sum.tolist()})
                atomic_write(state_path, lambda p: p.write_text(text))
            self._clock.lap("write")
            bar.update(labels.shape[0])
        bar.close()
        self._clock.flush()
        self.check_range()
        th = self.thresholds
        c = self.num_classes
        kept_sum = torch.zeros(c, dtype=torch.int64) if kept_sum is None else kept_sum.cpu()
        passed_sum = torch.zeros(c, dtype=torch.int64) if passed_sum is None else passed_sum.cpu()
        if th.passed is not None and th.passed.numel() == c and not torch.equal(passed_sum, th.passed):
            log.warning("pass 2 saw other passing counts than pass 1 (%s vs %s): the source is not deterministic "
                        "(use cache_dir to label from stored confidences)", passed_sum.tolist(), th.passed.tolist())
        report = LabelingReport(thresholds=th, kept=kept_sum, passed_seen=passed_sum, images=n,
                                out_dir=None if out is None else str(out), seconds=dict(self.seconds))
        if self.state_dir is not None:
            text = json.dumps(report.to_dict(), indent=1)
            atomic_write(self.state_dir / "report.json", lambda p: p.write_text(text))
        return report

    def run(self, source, out_dir: str | Path | None) -> LabelingReport:
        """:meth:`fit` then :meth:`write`."""
        self.fit(source)
        return self.write(source, out_dir)


__all__ = ["ConfidenceHistogram", "LabelingReport", "StreamingLabeler", "TensorSource", "confidence_histogram",
           "read_pseudo_label"]
