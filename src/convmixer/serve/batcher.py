"""Dynamic batching: images from concurrent requests run through the model together.

Every request puts its images on one asyncio queue, each with a future, and awaits the futures. One worker task
loops:

1. wait for the first item on the queue;
2. keep taking items until the batch holds ``max_batch`` of them or ``max_wait_ms`` have passed since the first
   one arrived (items already waiting are taken at once, without waiting);
3. run the batch in the model's own thread (one thread: the model runs one batch at a time, and the event loop
   stays free to accept and decode the next requests meanwhile), then resolve each item's future with its result,
   or every future of the batch with the exception the model raised.

While a batch runs, new items queue up, so under load the next batch fills without waiting: the latency a lone
request pays for batching is at most ``max_wait_ms``. A request whose client went away (its future cancelled)
is dropped from the batch before it runs.

:meth:`DynamicBatcher.stop` drains: it refuses new items, lets the worker finish what is queued, then ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class BatcherClosed(RuntimeError):
    """Submitted after :meth:`DynamicBatcher.stop` began: the server is shutting down."""


@dataclass
class BatchStats:
    """What the batcher has done so far."""

    batches: int = 0
    items: int = 0
    failed_batches: int = 0
    sizes: Counter = field(default_factory=Counter)  # batch size -> number of batches of that size

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.sizes[size] += 1

    def as_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "images": self.items, "failed_batches": self.failed_batches,
                "largest_batch": max(self.sizes, default=0),
                "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self.sizes.items())}}


class DynamicBatcher:
    """Batches items submitted by concurrent coroutines and runs them through ``run``.

    ``run(items)`` is called in a dedicated thread with a list of at most ``max_batch`` items and returns one
    result per item, in order. Create the batcher anywhere; :meth:`start` and everything after it run on one event
    loop.
    """

    def __init__(self, run: Callable[[list[Any]], Sequence[Any]], *, max_batch: int, max_wait_ms: float) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.stats = BatchStats()
        self._queue: asyncio.Queue[tuple[Any, asyncio.Future]] | None = None
        self._worker: asyncio.Task | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._closed = False
        self._pending = 0  # items submitted and not yet answered: queued, being batched, or in the model
        self.running = 0  # items in the batch the model is running now

    @property
    def started(self) -> bool:
        return self._worker is not None and not self._closed

    @property
    def pending(self) -> int:
        """Items submitted and not answered yet (queued, gathered into the next batch, or running)."""
        return self._pending

    async def start(self) -> None:
        """Start the worker on the running loop (again after :meth:`stop`: the statistics carry on)."""
        self._closed = False
        self._queue = asyncio.Queue()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="convmixer-model")
        self._worker = asyncio.create_task(self._work(), name="convmixer-batcher")

    async def submit(self, items: Sequence[Any]) -> list[Any]:
        """The results of ``items`` (run in one batch or several, with other requests' items)."""
        if self._closed or self._queue is None:
            raise BatcherClosed("the server is shutting down")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for item, future in zip(items, futures):
            self._queue.put_nowait((item, future))
        self._pending += len(items)
        return list(await asyncio.gather(*futures))

    async def stop(self) -> None:
        """Refuse new items, run every queued one, then end the worker and the model's thread."""
        if self._worker is None:
            return
        self._closed = True
        await self._queue.join()
        self._worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._worker
        self._thread.shutdown(wait=True)

    async def _work(self) -> None:
        while True:
            batch = await self._collect()
            live = [(item, future) for item, future in batch if not future.done()]  # clients that left: done
            if live:
                await self._run(live)
            self._pending -= len(batch)
            for _ in batch:
                self._queue.task_done()

    async def _collect(self) -> list[tuple[Any, asyncio.Future]]:
        """One batch: the first item, then whatever arrives within max_wait of it, up to max_batch items."""
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:  # a timed-out get() leaves the queue as it was: no item is lost
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self, batch: list[tuple[Any, asyncio.Future]]) -> None:
        items = [item for item, _ in batch]
        self.running = len(items)
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._thread, self.run, items)
            if len(results) != len(items):
                raise RuntimeError(f"the model returned {len(results)} results for {len(items)} images")
        except Exception as e:  # the model failed: every request in the batch gets the error, the worker goes on
            self.stats.failed_batches += 1
            for _, future in batch:
                if not future.done():
                    future.set_exception(e)
            return
        finally:
            self.running = 0
        self.stats.record(len(items))
        for (_, future), result in zip(batch, results):
            if not future.done():
                future.set_result(result)
