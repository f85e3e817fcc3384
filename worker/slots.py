"""Job slots: `python -m worker --slots N` runs N RQ workers in threads of one process, so that N jobs run at once
on one checkpoint cache, and concurrent generation jobs for the same model share its sampling engine's steps
(worker.cache, BATCH_MAX). Each slot is a full `ModelWorker` named `<name>.<k>`: its own registration, dequeue loop,
heartbeats, attempt and death counting and published models; a killed process abandons its N jobs, and each is
recovered and counted by its own started-registry entry, as with N processes.

What differs from one worker in the main thread (RQ installs signal handlers and arms SIGALRM there only):
- the job timeout is `TimerDeathPenalty`: JobTimeoutException is raised into the slot's thread, between bytecodes
  (a generation job waits on the engine in 0.5 s slices, so it is reached);
- the main thread owns SIGTERM/SIGINT. The first asks every slot to stop after its job (a busy slot finishes it; an
  idle one leaves its dequeue wait within `DEQUEUE_S`); the second raises SystemExit into the busy slots, so each
  job fails through RQ's path and is retried as after a cold shutdown of one worker.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
from collections.abc import Callable
from typing import Any

from rq.exceptions import StopRequested
from rq.timeouts import TimerDeathPenalty
from rq.worker import WorkerStatus

from model.runtime import apply_threads

log = logging.getLogger("worker")

DEQUEUE_S = 2  # how long an idle slot blocks on the queue before it looks at a stop request again


def slot_class(base: type) -> type:
    """`base` (a ModelWorker) as a slot: timer timeouts, no signal handlers, a short dequeue wait and a stop event."""

    class Slot(base):  # type: ignore[misc,valid-type]
        death_penalty_class = TimerDeathPenalty

        def __init__(self, *args: Any, stop: threading.Event, **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.stop = stop

        def _install_signal_handlers(self) -> None:  # the main thread's (run_slots)
            pass

        @property
        def dequeue_timeout(self) -> int:
            return min(DEQUEUE_S, super().dequeue_timeout)

        def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
            super().heartbeat(timeout, pipeline)
            # RQ calls heartbeat() before every blocking dequeue and after every job: an idle slot leaves here.
            if self.stop.is_set() and self.get_state() != WorkerStatus.BUSY:
                raise StopRequested()

    Slot.__name__ = Slot.__qualname__ = f"Slot{base.__name__}"
    return Slot


def _raise_in(thread: threading.Thread, exc: type[BaseException]) -> None:
    if thread.ident is not None and thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


def _work(worker: Any, **work: Any) -> None:
    apply_threads()  # the process's torch thread count in this thread too (model.runtime)
    worker.work(**work)


def run_slots(make: Callable[[int, threading.Event], Any], slots: int, **work: Any) -> None:
    """Build `slots` workers with make(k, stop) and run their work(**work) loops in threads until all have stopped;
    SIGTERM/SIGINT: the first a warm shutdown of every slot, the second a cold one (see the module docstring)."""
    stop = threading.Event()
    workers = [make(k, stop) for k in range(slots)]
    threads = [threading.Thread(target=_work, args=(w,), kwargs=work, name=w.name, daemon=True) for w in workers]

    def on_signal(signum: int, frame: Any) -> None:
        if not stop.is_set():
            log.info("warm shutdown of %d slot(s): running jobs finish first", slots, extra={"event": "stopping"})
            stop.set()
            for w in workers:
                w._stop_requested = True  # RQ's own flag: a busy slot's loop ends after its job
            return
        log.warning("cold shutdown: the running jobs fail and are retried", extra={"event": "cold_shutdown"})
        for w, t in zip(workers, threads, strict=True):
            if w.get_state() == WorkerStatus.BUSY:
                _raise_in(t, SystemExit)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)  # short waits: the main thread must stay free to run the signal handlers
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
