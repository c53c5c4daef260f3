"""A bounded inference pool off the event loop, with micro-batching.

Queries wait in a queue of fixed size; worker threads take one query and every other query
already waiting (up to `max_batch`) and run them as one batch. Nothing waits to fill a batch:
under light load a query runs alone at once, under heavy load batches form by themselves while
the previous batch runs. A full queue refuses new work at once (`Overloaded` -> HTTP 503 with
Retry-After) instead of letting requests pile up until clients time out."""

from __future__ import annotations

import asyncio
import math
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence


class Overloaded(Exception):
    """The queue is full; `retry_after` (seconds) is a fair guess of when to try again."""

    def __init__(self, retry_after: int):
        self.retry_after = retry_after
        super().__init__(f"the service is busy: try again in {retry_after} s")


@dataclass
class _Job:
    payload: Any
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


def _resolve(fut: asyncio.Future, result: Any, error: Optional[BaseException]) -> None:
    if fut.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


class InferencePool:
    """`run_batch(payloads) -> results` (one per payload; an Exception instance in the list fails
    only that query) runs in `workers` threads. `before_batch(n)` is a hook called in the worker
    before each batch (metrics, and tests that need a slow model)."""

    def __init__(self, run_batch: Callable[[list], Sequence[Any]], workers: int = 1, queue_size: int = 32,
                 max_batch: int = 8, before_batch: Optional[Callable[[int], None]] = None,
                 after_batch: Optional[Callable[[int, float], None]] = None):
        if workers < 1 or queue_size < 1 or max_batch < 1:
            raise ValueError("workers, queue_size and max_batch must be >= 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.before_batch = before_batch
        self.after_batch = after_batch
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._batch_seconds = 0.05  # running mean, for Retry-After
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"keyreid-infer-{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def submit(self, payload: Any) -> Any:
        """The result for `payload`, computed in a worker thread; Overloaded when the queue is full."""
        loop = asyncio.get_running_loop()
        job = _Job(payload, loop.create_future(), loop)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Overloaded(self.retry_after()) from None
        return await job.future

    def retry_after(self) -> int:
        waiting_batches = math.ceil((self._queue.qsize() + 1) / self.max_batch) / len(self._threads)
        return max(1, math.ceil(waiting_batches * self._batch_seconds))

    def _take_batch(self) -> list[_Job]:
        first = self._queue.get()
        if first is None:
            return []
        batch = [first]
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:  # keep the stop signal for this thread's next round
                self._queue.put(None)
                break
            batch.append(job)
        return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                return
            start = time.perf_counter()
            try:
                if self.before_batch is not None:
                    self.before_batch(len(batch))
                results = list(self.run_batch([j.payload for j in batch]))
                if len(results) != len(batch):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(batch)} queries")
            except Exception as e:  # noqa: BLE001 - every query of the batch gets the error
                results = [e] * len(batch)
            took = time.perf_counter() - start
            self._batch_seconds = 0.8 * self._batch_seconds + 0.2 * took
            if self.after_batch is not None:
                self.after_batch(len(batch), took)
            for job, res in zip(batch, results):
                err = res if isinstance(res, BaseException) else None
                try:
                    job.loop.call_soon_threadsafe(_resolve, job.future, None if err else res, err)
                except RuntimeError:  # the event loop has closed (shutdown): nobody is waiting
                    pass

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers after the queries already queued."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(timeout)


__all__ = ["InferencePool", "Overloaded"]
