"""Dynamic batching: requests that arrive close together share one model call.

Each served model has one :class:`DynamicBatcher`, with one thread that alone calls the model. A request
prepares its images in a worker thread, then :meth:`DynamicBatcher.submit` queues them and waits. The
batcher thread takes the first waiting item and gathers more until the batch holds ``max_items`` images
or ``max_wait`` seconds have passed since the first one, then makes one call for all of them
(the idea of TensorFlow Serving's and Triton's dynamic batchers).

It waits only while another request is on its way: :meth:`expect` marks a request that has begun
preparing its input for this model, and when none is, the batch runs at once. A lone client therefore
never pays the wait, and under load the wait fills the batch. A model call that fails fails the futures of
its items; the handler decides how to split a batch when one item is bad. An item whose request gave up
before its batch ran (its future cancelled) is left out of the batch.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

MAX_WAIT_S = 0.004
MAX_ITEMS = 64


@dataclass
class _Item:
    payload: Any
    size: int
    future: Future = field(default_factory=Future)


class DynamicBatcher:
    """Run ``handler(payloads) -> results`` (one result per payload, in order) on batches of queued payloads.

    Parameters
    ----------
    handler : callable
        Called from the batcher's own thread with a list of payloads; returns a list of results, or
        raises (every item of the batch then gets the exception).
    max_wait : float
        Longest time, in seconds, the first item of a batch waits for others (only while :meth:`expect`
        says more are coming).
    max_items : int
        Batch size, in images (each payload's ``size``), at which a batch runs without waiting.
    name : str
        Name of the thread.
    """

    def __init__(self, handler: Callable[[list[Any]], Sequence[Any]], max_wait: float = MAX_WAIT_S,
                 max_items: int = MAX_ITEMS, name: str = "batcher"):
        self.handler, self.max_wait, self.max_items = handler, max_wait, max_items
        self._queue: queue.Queue[_Item | None] = queue.Queue()
        self._coming = 0
        self._lock = threading.Lock()
        self.batches: list[int] = []
        """Number of payloads of each batch run (the last 1000), for tests and the load benchmark."""
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @contextmanager
    def expect(self) -> Iterator[None]:
        """Mark a request that will submit soon (while it prepares its input)."""
        with self._lock:
            self._coming += 1
        try:
            yield
        finally:
            with self._lock:
                self._coming -= 1

    def submit(self, payload: Any, size: int = 1) -> Future:
        """Queue ``payload`` (``size`` images); the future gets its result or the handler's exception."""
        item = _Item(payload, max(1, int(size)))
        self._queue.put(item)
        return item.future

    def close(self) -> None:
        """Stop the thread after the batches already queued."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _others_coming(self) -> bool:
        with self._lock:
            return self._coming > 0

    def _gather(self, first: _Item) -> tuple[list[_Item], bool]:
        batch, images, stop = [first], first.size, False
        deadline = time.monotonic() + self.max_wait
        while images < self.max_items:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                left = deadline - time.monotonic()
                if left <= 0 or not self._others_coming():
                    break
                try:
                    item = self._queue.get(timeout=min(left, 0.0005))
                except queue.Empty:
                    continue
            if item is None:
                stop = True
                break
            batch.append(item)
            images += item.size
        return batch, stop

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._gather(first)
            # a request that gave up (time limit) has cancelled its future: it is left out; the others can no
            # longer be cancelled, so their results always land
            batch = [item for item in batch if item.future.set_running_or_notify_cancel()]
            if batch:
                self.batches = (self.batches + [len(batch)])[-1000:]
                try:
                    results = self.handler([item.payload for item in batch])
                except BaseException as exc:  # noqa: BLE001 - every waiting request must hear of it
                    for item in batch:
                        item.future.set_exception(exc)
                else:
                    for item, result in zip(batch, results):
                        item.future.set_result(result)
            if stop:
                return
