"""Dynamic batching: requests that come together share a call, each gets its own result, a lone one waits not."""

from __future__ import annotations

import threading

import pytest

from medlens.serve.batching import DynamicBatcher


def holding_handler(result):
    """A handler whose first call holds the batcher thread until released, so that items queue up behind it."""
    entered, release, calls = threading.Event(), threading.Event(), []

    def handler(payloads):
        entered.set()
        release.wait(10)
        calls.append(list(payloads))
        return [result(p) for p in payloads]

    return handler, entered, release, calls


def test_items_queued_together_run_as_one_batch_in_order():
    handler, entered, release, calls = holding_handler(lambda p: p * 10)
    batcher = DynamicBatcher(handler, max_wait=0.001)
    try:
        first = batcher.submit(0)
        entered.wait(10)
        rest = [batcher.submit(i) for i in range(1, 6)]
        release.set()
        assert first.result(10) == 0 and [f.result(10) for f in rest] == [10, 20, 30, 40, 50]
        assert calls == [[0], [1, 2, 3, 4, 5]]
    finally:
        batcher.close()


def test_a_batch_stops_growing_at_max_items():
    handler, entered, release, calls = holding_handler(lambda p: p)
    batcher = DynamicBatcher(handler, max_items=4)
    try:
        futures = [batcher.submit(0)]
        entered.wait(10)
        futures += [batcher.submit(i, size=2) for i in range(1, 7)]
        release.set()
        assert [f.result(10) for f in futures] == list(range(7))
        assert [len(c) for c in calls] == [1, 2, 2, 2]  # the held item, then two items of 2 images each
    finally:
        batcher.close()


def test_the_batch_waits_only_for_requests_on_their_way():
    """While another request prepares its input (``expect``), the first waits for it and both share a call;
    with nobody coming, an item runs alone at once."""
    calls: list[list[str]] = []
    batcher = DynamicBatcher(lambda p: calls.append(list(p)) or p, max_wait=5.0)
    try:
        assert batcher.submit("alone").result(10) == "alone"  # does not wait the 5 s bound for nothing
        with batcher.expect():
            first = batcher.submit("first")
            second = batcher.submit("second")
        assert first.result(10) == "first" and second.result(10) == "second"
        assert calls == [["alone"], ["first", "second"]]
    finally:
        batcher.close()


def test_a_failing_call_fails_every_item_of_its_batch_and_the_thread_goes_on():
    def handler(payloads):
        if "bad" in payloads:
            raise ValueError("broken input")
        return payloads

    batcher = DynamicBatcher(handler)
    try:
        with pytest.raises(ValueError, match="broken input"):
            batcher.submit("bad").result(10)
        assert batcher.submit("good").result(10) == "good"
    finally:
        batcher.close()


def test_an_item_given_up_before_its_batch_is_left_out():
    handler, entered, release, calls = holding_handler(lambda p: p)
    batcher = DynamicBatcher(handler)
    try:
        first = batcher.submit("first")
        entered.wait(10)
        abandoned, kept = batcher.submit("abandoned"), batcher.submit("kept")
        assert abandoned.cancel()  # what asyncio does to the future of a request past its time limit
        release.set()
        assert first.result(10) == "first" and kept.result(10) == "kept"
        assert calls == [["first"], ["kept"]]
        assert batcher.submit("after").result(10) == "after"  # the thread lives on
    finally:
        batcher.close()
