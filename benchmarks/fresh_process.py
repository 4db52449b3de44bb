"""Shared by the benchmarks: run one measurement in a fresh process, so that its peak memory
(``ru_maxrss``) and its thread settings are its own."""
from __future__ import annotations

import multiprocessing as mp
import queue as queue_module
from typing import Any, Callable


def _worker(queue, measure: Callable[..., dict], args: tuple) -> None:
    try:
        queue.put(measure(*args))
    except Exception as err:  # reported in the benchmark's table
        queue.put({"error": f"{type(err).__name__}: {err}"})


def measure_in_fresh_process(measure: Callable[..., dict], *args: Any) -> dict:
    """``measure(*args)`` in a spawned process -> its dict, or ``{"error": ...}`` when it raised or
    the process died (e.g. killed by the kernel when memory ran out: ``"killed (signal 9: out of
    memory?)"``). ``measure`` must be a module-level function (the child imports it)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_worker, args=(queue, measure, args))
    proc.start()
    while True:
        try:
            result = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not proc.is_alive():
                code = proc.exitcode
                why = f"killed (signal {-code}{': out of memory?' if code == -9 else ''})" if code and code < 0 \
                    else f"exited with code {code} without a result"
                result = {"error": why}
                break
    proc.join()
    return result


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"240x427,480x854"`` -> ``[(240, 427), (480, 854)]`` (the benchmarks' ``--sizes``)."""
    return [tuple(int(v) for v in size.split("x")) for size in text.split(",")]


def devices_to_run(choice: str) -> list[str]:
    """The benchmarks' ``--device``: "all" = the CPU and, when present, CUDA."""
    import torch

    devices = ["cpu", "cuda"] if choice == "all" else [choice]
    return [d for d in devices if d == "cpu" or torch.cuda.is_available()]
