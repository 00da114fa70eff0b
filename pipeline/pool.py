"""An ordered map over a pool of processes, for work where many items are made and one process
takes them: ingest reads images and simulate draws them for the dataset writer; training and
inference on a GPU have the model's inputs prepared for the model (infer.prepared_batches).

The results come back in the items' order, so what is written is the same, byte for byte, as one
process writes. The pool is handed only a few tasks ahead of the writer: with many makers and one
writer, the results of a million items would otherwise wait in memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor
from functools import partial
from itertools import islice


def cores() -> int:
    """The cores this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def workers_for(n_items: int, minimum: int) -> int:
    """How many processes make n_items: 0 (this one alone) below `minimum` items, on one core, or
    inside a pool's worker (which may not start processes)."""
    if multiprocessing.current_process().daemon:
        return 0
    n_cores = cores()
    return n_cores if n_items >= minimum and n_cores > 1 else 0


@contextlib.contextmanager
def ordered_map(workers: int, *, chunk: int, ahead: int):
    """An ordered `map`: the builtin for 0 workers, else a pool's, handing out tasks of `chunk`
    items with at most `ahead` tasks per worker beyond the one being taken. On leaving early (an
    error, Ctrl-C) the items not yet started are dropped, not made."""
    if not workers:
        yield map
        return
    # forkserver, not fork: the caller may hold threads (a progress bar, a web server's)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"))
    try:
        yield partial(ahead_map, pool, ahead * workers, chunk)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def ahead_map(pool: Executor, ahead: int, chunk: int, fn, *iterables):
    """fn over the iterables in a pool, in order, in tasks of `chunk` items, at most `ahead` tasks
    handed out beyond the one being taken. (The pool's own map hands out every task at once.)"""
    items = zip(*iterables, strict=False)  # some are repeat(): as long as the shortest
    tasks: deque = deque()

    def hand_out() -> None:
        part = list(islice(items, chunk))
        if part:
            tasks.append(pool.submit(_each, fn, part))

    for _ in range(ahead + 1):
        hand_out()
    while tasks:
        done = tasks.popleft().result()
        hand_out()
        yield from done


def _each(fn, part: list[tuple]) -> list:
    return [fn(*args) for args in part]
