"""Training batch streams whose every random choice is a function of (seed, epoch, position).

A :class:`Stream` yields collated batches of a data set forever, epoch after epoch. The order of epoch
``e`` is ``order(e, generator)`` with a generator seeded from (seed, e) — by default a random
permutation; a rare-class sampler (UDA, the "RS" baseline) passes its own — and the augmentation of the
sample at ``position`` p of epoch e draws from a generator seeded from (seed, e, p). Nothing else is
random, so the stream's whole state is ``(epoch, position)``: a run restored from a checkpoint replays
exactly the batches an uninterrupted run would have seen (issue 14 #1), with no generator state to save.

Under DDP every rank walks the same global order and takes its share of each global batch: rank r of
w takes positions ``[r·b/w, (r+1)·b/w)`` of the batch of ``b`` samples, so one process and w processes
see the same global batch, sample for sample, with the same augmentation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from blvnb.errors import ConfigError

Order = Callable[[int, torch.Generator], Sequence[int]]


def derive_seed(*parts) -> int:
    """A 63-bit seed from any tuple of ints and strings (BLAKE2b of their repr: stable across versions)."""
    blob = repr(tuple(parts)).encode()
    return int.from_bytes(hashlib.blake2b(blob, digest_size=8).digest(), "little") >> 1


def seeded_generator(*parts, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with :func:`derive_seed` of ``parts``."""
    return torch.Generator(device=torch.device(device)).manual_seed(derive_seed(*parts))


def sample_generator(seed: int, epoch: int, position: int) -> torch.Generator:
    """The generator of the augmentation of the sample at ``position`` of ``epoch`` (CPU)."""
    return seeded_generator(int(seed), "sample", int(epoch), int(position))


def random_order(epoch: int, generator: torch.Generator, n: int, at_least: int = 1) -> list[int]:
    """A random permutation of ``range(n)``; several, concatenated, when one holds fewer than ``at_least``
    (a labeled split smaller than a batch is repeated, as DARS repeats its labeled list)."""
    out: list[int] = []
    while len(out) < max(at_least, 1):
        out += torch.randperm(n, generator=generator).tolist()
    return out


class _Slots(Dataset):
    """Adapter: a DataLoader index is ``(dataset index, epoch, position)``."""

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, slot):
        i, epoch, pos = slot
        if hasattr(self.dataset, "sample"):
            item = self.dataset.sample(i, sample_generator(self.seed, epoch, pos))
        else:  # a data set without augmentation randomness of its own
            item = dict(self.dataset[i])
            item.setdefault("index", i)
        return item


class Stream:
    """Batches of ``batch_size`` samples of ``dataset`` (global over DDP ranks), forever.

    ``order(epoch, generator) -> indices`` gives each epoch's order (default: a random permutation of
    the whole data set); with ``drop_last`` an epoch ends when fewer than ``batch_size`` of its samples
    remain, else the last batch is short. ``num_workers > 0`` loads in worker processes (the result is
    the same). ``rank``/``world_size`` default to the process group's when one is initialised.
    Call :meth:`next` for a batch; :attr:`epoch` counts completed passes.
    """

    def __init__(self, dataset, batch_size: int, *, seed: int, order: Order | None = None, drop_last: bool = True,
                 num_workers: int = 0, rank: int | None = None, world_size: int | None = None):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if len(dataset) == 0:
            raise ConfigError("a training stream needs a non-empty data set")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, int(seed)
        self.order_fn = order or (lambda epoch, g: random_order(epoch, g, len(dataset), batch_size))
        self.drop_last, self._rank, self._world_size = drop_last, rank, world_size
        if world_size is not None:
            self._check_world(world_size)
        self.epoch, self.position = 0, 0
        self._order: list[int] | None = None
        self._loader_iter = None
        self._slots = _Slots(dataset, self.seed)
        self.num_workers = num_workers

    # --- ranks ---------------------------------------------------------------------------------------

    def _check_world(self, world_size: int) -> None:
        if self.batch_size % world_size:
            raise ConfigError(f"the global batch of {self.batch_size} cannot be split evenly over {world_size} "
                              "processes; use a batch size divisible by the number of processes")

    @property
    def rank(self) -> int:
        """This process's rank: as given, else the process group's (read when used, so a stream may be
        built before torchrun's process group is joined)."""
        if self._rank is not None:
            return self._rank
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0

    @property
    def world_size(self) -> int:
        if self._world_size is not None:
            return self._world_size
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        self._check_world(world)
        return world

    # --- order ---------------------------------------------------------------------------------------

    def order(self, epoch: int) -> list[int]:
        """The sample indices of ``epoch``, in order (the same on every rank)."""
        idx = [int(i) for i in self.order_fn(epoch, seeded_generator(self.seed, "order", epoch))]
        if not idx:
            raise ConfigError(f"the order of epoch {epoch} is empty")
        return idx

    def _epoch_batches(self) -> list[list[tuple[int, int, int]]]:
        """This rank's slots of every batch left in the current epoch, from the current position."""
        order = self._order
        end = len(order) - (len(order) % self.batch_size if self.drop_last else 0)
        if end == 0:
            raise ConfigError(f"epoch {self.epoch} has {len(order)} samples, fewer than one batch of {self.batch_size}")
        out, rank, world = [], self.rank, self.world_size
        for start in range(self.position, end, self.batch_size):
            stop = min(start + self.batch_size, end)
            share = -(-(stop - start) // world)
            lo, hi = start + rank * share, min(stop, start + (rank + 1) * share)
            out.append([(order[p], self.epoch, p) for p in range(lo, hi)])
        return out

    def _start_epoch(self):
        self._order = self.order(self.epoch)
        batches = self._epoch_batches()
        self._n_left = len(batches)
        # the loader's own generator, so that starting an epoch never draws from the global one
        loader = DataLoader(self._slots, batch_sampler=batches, num_workers=self.num_workers,
                            collate_fn=default_collate, persistent_workers=False,
                            generator=seeded_generator(self.seed, "loader", self.epoch, self.position))
        self._loader_iter = iter(loader)

    # --- iteration -----------------------------------------------------------------------------------

    def next(self) -> dict:
        """The next batch (this rank's share); advances (epoch, position)."""
        if self._loader_iter is None:
            self._start_epoch()
        batch = next(self._loader_iter)
        self._n_left -= 1
        self.position += self.batch_size
        if self._n_left == 0:  # this batch completed the pass
            self.epoch, self.position, self._loader_iter = self.epoch + 1, 0, None
        return batch

    def __iter__(self):
        while True:
            yield self.next()

    def batches_per_epoch(self) -> int:
        n = len(self.order(self.epoch)) if self._order is None else len(self._order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    # --- state ---------------------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order, self._loader_iter = None, None


__all__ = ["Stream", "derive_seed", "random_order", "sample_generator", "seeded_generator"]
