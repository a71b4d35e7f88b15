"""Stopping cleanly when the cluster asks: SIGTERM, SIGUSR1, SIGUSR2 (issue 22).

Slurm sends SIGTERM (and, with ``--signal``, SIGUSR1/SIGUSR2; submitit's default is SIGUSR2) some seconds
before it kills a job at its time limit or on preemption; ``torchrun`` forwards SIGTERM to its workers. A
run inside :func:`catching_stop_signals` does not die on them: the handler only notes the signal, the
training loop finishes the iteration it is in, writes its checkpoint and raises :class:`Interrupted`, whose
message says where it stopped. The exit is therefore non-zero (``torchrun --max-restarts`` and a requeued
job run it again, and it resumes from that checkpoint, bitwise).

* Handlers are installed only in the main thread (Python allows no other) and only by the outermost
  :func:`catching_stop_signals`: a run inside a run (a DARS round training its teacher first) shares them.
  When the outermost one ends, the previous handlers are put back.
* A second stop signal ends the process at once (the default action), as a second Ctrl-C would: a process
  stuck where it cannot reach the end of an iteration (a collective whose peer died) still dies.
* A signal that arrives outside the loop (while a DARS round labels, while a run evaluates) is kept: the
  loop stops before its first iteration, or, when the run finishes anyway, the outermost context raises
  :class:`Interrupted` after the record is written, so the process still exits.
* The previous handler is chained, after the checkpoint is written: under submitit's job environment it is
  submitit's own (it calls the job's ``checkpoint()`` and requeues the job; see
  :class:`blvnb.experiments.execute.SlurmJob`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator

from blvnb.errors import BlvnbError

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)

_state = {"depth": 0, "received": None, "raised": False, "previous": {}}


class Interrupted(BlvnbError):
    """A run stopped on a signal, its checkpoint written; running it again resumes it."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _note(signum, frame) -> None:  # the handler: nothing but a note (the loop acts at an iteration's end)
    if _state["received"] is None:
        _state["received"] = int(signum)
        log.warning("received %s: stopping after the current iteration, with a checkpoint (a second stop "
                    "signal ends the process at once)", signal_name(signum))
        return
    # a second one: the process may be stuck (a collective whose peer died); die as if never caught
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def received() -> int | None:
    """The stop signal received in this process since the outermost context began, or None."""
    return _state["received"]


def requested(distributed: bool = False, device=None) -> int | None:
    """The stop signal, agreed by every rank under DDP (an all-reduce: a rank that got none stops with the
    others at the same iteration instead of waiting in the next one's gradient all-reduce)."""
    sig = _state["received"] or 0
    if distributed:
        import torch
        import torch.distributed as dist

        t = torch.tensor([sig], dtype=torch.int64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        sig = int(t.item())
        if sig and _state["received"] is None:
            _state["received"] = sig
    return sig or None


def interrupted(message: str) -> Interrupted:
    """The :class:`Interrupted` for the signal received, marked as raised (the outermost context then
    raises nothing more)."""
    sig = _state["received"] or signal.SIGTERM
    _state["raised"] = True
    return Interrupted(sig, f"stopped by {signal_name(sig)}: {message}")


def _chain_previous(signum: int, previous: dict, stopped: BaseException | None) -> None:
    prev = previous.get(signum)
    if callable(prev):  # e.g. submitit's: checkpoint() the job and requeue it (it may sys.exit)
        if isinstance(stopped, Interrupted):  # said here: the exception may never be printed
            log.warning("%s", stopped)
        prev(signum, None)


@contextlib.contextmanager
def catching_stop_signals() -> Iterator[None]:
    """Note SIGTERM / SIGUSR1 / SIGUSR2 instead of dying on them (module docstring)."""
    outermost = _state["depth"] == 0
    install = outermost and threading.current_thread() is threading.main_thread()
    if outermost:
        _state.update(received=None, raised=False, previous={})
    if install:
        for s in STOP_SIGNALS:
            _state["previous"][s] = signal.signal(s, _note)
    _state["depth"] += 1
    failed: BaseException | None = None
    try:
        yield
    except BaseException as exc:
        failed = exc
        raise
    finally:
        _state["depth"] -= 1
        if outermost:
            sig, raised = _state["received"], _state["raised"]
            previous = dict(_state["previous"])
            if install:
                for s, prev in previous.items():
                    signal.signal(s, prev if prev is not None else signal.SIG_DFL)
            _state.update(received=None, raised=False)
            if sig is not None:
                _chain_previous(sig, previous, failed)
                if failed is None and not raised:  # the work finished, but the process was asked to stop
                    raise Interrupted(sig, f"stopped by {signal_name(sig)} after the run had finished (its "
                                      "record is written); run the same command again for the rest")


__all__ = ["STOP_SIGNALS", "Interrupted", "catching_stop_signals", "interrupted", "received", "requested",
           "signal_name"]
