"""The dynamic batcher on its own (no HTTP, no model): what goes into a batch, errors, cancelled requests, draining.
No timing is asserted; waits are long enough that the outcome does not depend on the machine's speed."""

import asyncio
import threading

import pytest

from convmixer.serve import BatcherClosed, DynamicBatcher


class Recorder:
    """A ``run`` that records its batches and answers item * 10; ``gate`` (a threading.Event) holds a batch."""

    def __init__(self, fail_on: int | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[list[int]] = []
        self.fail_on, self.gate = fail_on, gate

    def __call__(self, items: list[int]) -> list[int]:
        if self.gate is not None:
            self.gate.wait(10)
        self.batches.append(list(items))
        if self.fail_on in items:
            raise RuntimeError(f"item {self.fail_on} failed")
        return [i * 10 for i in items]


async def started(run, **kw) -> DynamicBatcher:
    batcher = DynamicBatcher(run, **kw)
    await batcher.start()
    return batcher


async def holding_a_batch():
    """A batcher (no waiting, batches of up to 8) whose first batch, [1], is in the model, held until ``gate`` is
    set: ``(batcher, run, gate, task of the first request)``."""
    gate = threading.Event()
    run = Recorder(gate=gate)
    batcher = await started(run, max_batch=8, max_wait_ms=0)
    first = asyncio.create_task(batcher.submit([1]))
    while batcher.running == 0:
        await asyncio.sleep(0.001)
    return batcher, run, gate, first


def test_concurrent_requests_share_batches_of_at_most_max_batch():
    async def main():
        run = Recorder()
        batcher = await started(run, max_batch=4, max_wait_ms=200)
        results = await asyncio.gather(*(batcher.submit([i, 100 + i]) for i in range(5)))
        await batcher.stop()
        return run, batcher, results

    run, batcher, results = asyncio.run(main())
    assert results == [[i * 10, (100 + i) * 10] for i in range(5)]  # each request gets its own results, in order
    assert sorted(x for b in run.batches for x in b) == sorted([*range(5), *range(100, 105)])
    assert all(len(b) <= 4 for b in run.batches) and max(len(b) for b in run.batches) == 4
    assert batcher.stats.items == 10 and batcher.stats.batches == len(run.batches)
    assert sum(size * n for size, n in batcher.stats.sizes.items()) == 10


def test_a_lone_request_runs_alone_after_the_wait():
    async def main():
        run = Recorder()
        batcher = await started(run, max_batch=32, max_wait_ms=1)
        out = await batcher.submit([7])
        await batcher.stop()
        return run, out

    run, out = asyncio.run(main())
    assert out == [70] and run.batches == [[7]]


def test_items_arriving_while_a_batch_runs_form_the_next_batch():
    async def main():
        batcher, run, gate, first = await holding_a_batch()
        rest = [asyncio.create_task(batcher.submit([i])) for i in range(2, 6)]
        await asyncio.sleep(0.05)
        assert batcher.pending == 5  # one in the model, four waiting
        gate.set()
        await asyncio.gather(first, *rest)
        assert batcher.pending == 0
        await batcher.stop()
        return run

    assert asyncio.run(main()).batches == [[1], [2, 3, 4, 5]]


def test_a_failing_batch_fails_its_requests_only():
    async def main():
        run = Recorder(fail_on=3)
        batcher = await started(run, max_batch=1, max_wait_ms=0)
        outcomes = await asyncio.gather(batcher.submit([2]), batcher.submit([3]), batcher.submit([4]),
                                        return_exceptions=True)
        after = await batcher.submit([5])
        await batcher.stop()
        return batcher, outcomes, after

    batcher, outcomes, after = asyncio.run(main())
    assert outcomes[0] == [20] and outcomes[2] == [40] and after == [50]
    assert isinstance(outcomes[1], RuntimeError) and "item 3" in str(outcomes[1])
    assert batcher.stats.failed_batches == 1


def test_a_cancelled_request_is_dropped_before_its_batch_runs():
    async def main():
        batcher, run, gate, first = await holding_a_batch()
        gone = asyncio.create_task(batcher.submit([2]))
        kept = asyncio.create_task(batcher.submit([3]))
        await asyncio.sleep(0.01)
        assert batcher.pending == 3
        gone.cancel()  # the client went away while its image was queued
        gate.set()
        await asyncio.gather(first, kept)
        await batcher.stop()
        return run, kept.result()

    run, kept = asyncio.run(main())
    assert run.batches == [[1], [3]] and kept == [30]


def test_stop_drains_queued_requests_then_refuses_new_ones():
    async def main():
        run = Recorder()
        batcher = await started(run, max_batch=2, max_wait_ms=50)
        pending = [asyncio.create_task(batcher.submit([i])) for i in range(5)]
        await asyncio.sleep(0)  # every request is queued
        await batcher.stop()
        assert all(t.done() for t in pending)
        with pytest.raises(BatcherClosed):
            await batcher.submit([9])
        return [t.result() for t in pending], batcher

    results, batcher = asyncio.run(main())
    assert results == [[i * 10] for i in range(5)] and not batcher.started and batcher.pending == 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), max_batch=0, max_wait_ms=1)
    with pytest.raises(ValueError):
        DynamicBatcher(Recorder(), max_batch=1, max_wait_ms=-1)
