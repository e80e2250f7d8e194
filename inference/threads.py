"""A blocking iterator consumed from asyncio: produced in its own thread, cancelled by closing the async side."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import TypeVar

T = TypeVar("T")
_END = object()


async def iterate_in_thread(make: Callable[[], Iterator[T]], executor: Executor) -> AsyncIterator[T]:
    """Items of `make()`, produced on one of `executor`'s threads. Closing this generator (a client disconnect) makes
    the thread stop after its current item and close the blocking iterator, which is how llama.cpp stops generating.

    The whole stream runs on one pooled thread rather than a `to_thread` hop per item (a pool round-trip per token).
    The pool's threads are long-lived on purpose: llama.cpp called from ever-new or alternating OS threads runs
    up to 2.5x slower here (each calling thread gets its own OpenMP team; see docs/benchmarks.md)."""
    loop = asyncio.get_running_loop()
    items: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item: object, error: BaseException | None = None) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, (item, error))
        except RuntimeError:  # the loop is gone (server shutting down): nobody is listening any more
            stop.set()

    def produce() -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    if stop.is_set():
                        break
                    put(item)
            finally:
                getattr(iterator, "close", lambda: None)()
        except BaseException as exc:  # noqa: BLE001 - handed to the async side, which raises it
            put(_END, exc)
        else:
            put(_END)

    executor.submit(produce)
    try:
        while True:
            item, error = await items.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item
    finally:
        stop.set()
