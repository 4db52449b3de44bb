"""Shared by the benchmarks: run one measurement in a fresh process, so that its peak memory
(``ru_maxrss``) and its thread settings are its own."""
from __future__ import annotations

import multiprocessing as mp
from typing import Any, Callable


def _worker(queue, measure: Callable[..., dict], args: tuple) -> None:
    try:
        queue.put(measure(*args))
    except Exception as err:  # reported in the benchmark's table
        queue.put({"error": f"{type(err).__name__}: {err}"})


def measure_in_fresh_process(measure: Callable[..., dict], *args: Any) -> dict:
    """``measure(*args)`` in a spawned process -> its dict, or ``{"error": ...}`` when it raised.
    ``measure`` must be a module-level function (the child imports it)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(queue, measure, args))
    proc.start()
    result = queue.get()
    proc.join()
    return result
