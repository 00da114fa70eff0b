"""Where the heavy stages run: in this process, on a local Dask cluster, or on a Dask scheduler
elsewhere (`--scheduler none|local|auto|tcp://host:8786`, or the XRAE_DASK_SCHEDULER setting).

Work is cut into shards (row ranges) mapped over the workers; results come back in row order and
nothing is written until every shard is in, so a lost worker costs only the shard it held (Dask
runs it again elsewhere).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence

from tqdm.auto import tqdm

from pipeline.errors import PipelineError, Stopped

SETTING = "XRAE_DASK_SCHEDULER"
# Below this many images `auto` stays in-process: starting a local cluster and importing torch in
# each worker costs about 10 s here, more than a whole in-process inference of 10,000 small images
# gains from a second worker.
AUTO_MIN_IMAGES = 10_000
CONNECT_TIMEOUT_S = 20


def scheduler_setting(requested: str | None = None) -> str:
    """The scheduler asked for: the argument, else $XRAE_DASK_SCHEDULER, else auto."""
    return (requested or os.environ.get(SETTING) or "auto").strip()


def resolve(requested: str | None, n_items: int) -> str | None:
    """None (in-process), "local" or a scheduler address, for a job of `n_items` rows."""
    choice = scheduler_setting(requested)
    lowered = choice.lower()
    if lowered == "none":
        return None
    if lowered == "auto":
        return "local" if n_items >= AUTO_MIN_IMAGES else None
    if lowered == "local":
        return "local"
    if lowered.startswith(("tcp://", "tls://", "inproc://")) or _host_port(choice):
        return choice
    raise PipelineError(f"unknown scheduler {choice!r}; use none, auto, local or tcp://host:port")


def _host_port(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit() and "/" not in host


def local_workers() -> int:
    """One single-threaded worker per core (up to 16): torch's small convolutions scale better
    over processes than over threads of one process (benchmarks/RESULTS.md)."""
    return max(1, min(16, os.cpu_count() or 1))


@contextlib.contextmanager
def connect(address: str, n_workers: int | None = None) -> Iterator:
    """A Dask client: on a new LocalCluster for "local", else on the scheduler at `address`."""
    from distributed import Client, LocalCluster

    if address == "local":
        with (LocalCluster(n_workers=n_workers or local_workers(), threads_per_worker=1,
                           processes=True, dashboard_address=None) as cluster,
              Client(cluster) as client):
            yield client
        return
    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as err:
        raise PipelineError(f"cannot reach the Dask scheduler at {address} ({err})") from err
    with client:
        yield client


@contextlib.contextmanager
def maybe_client(address: str | None) -> Iterator:
    """A client for a resolved scheduler (see `resolve`), or None: work stays in this process."""
    if address is None:
        yield None
        return
    with connect(address) as client:
        yield client


def shards(n: int, size: int) -> list[range]:
    """Row ranges of at most `size` rows covering 0..n."""
    if size < 1:
        raise PipelineError(f"shard size must be at least 1, got {size}")
    return [range(start, min(start + size, n)) for start in range(0, n, size)]


def shard_size(n: int, n_workers: int, most: int = 2048, least: int = 64) -> int:
    """About four shards per worker, so a lost worker costs a small share of the job and the
    last shards finish together."""
    return max(least, min(most, -(-n // max(1, 4 * n_workers))))


def gather(client, fn: Callable, args: Sequence[tuple], *, desc: str, progress: bool = True,
           on_progress: Callable[[str, float], None] | None = None,
           should_stop: Callable[[], bool] | None = None, sizes: Sequence[int] | None = None,
           on_result: Callable[[int, object], None] | None = None, **shared) -> list:
    """fn(*arg, **shared) for every arg on the cluster; results in the order of `args`, or,
    with `on_result`, each handed to on_result(i, result) as it arrives and not kept (so that
    the shards' outputs are never all in memory at once).

    A tqdm bar (and on_progress(desc, fraction)) advances as shards complete; should_stop()
    cancels the remaining shards and raises Stopped.
    """
    from distributed import as_completed

    sizes = list(sizes or [1] * len(args))
    futures = [client.submit(fn, *a, **shared, pure=False) for a in args]
    order = {f.key: i for i, f in enumerate(futures)}
    results, done = [None] * len(futures), 0
    bar = tqdm(total=sum(sizes), desc=desc, unit="img", disable=not progress, leave=False)
    try:
        for future in as_completed(futures):
            if should_stop and should_stop():
                raise Stopped(f"{desc} stopped; no run was written")
            i = order[future.key]
            if on_result is None:
                results[i] = future.result()
            else:
                on_result(i, future.result())
                future.release()
            done += sizes[i]
            bar.update(sizes[i])
            if on_progress:
                on_progress(desc, done / max(1, sum(sizes)))
    finally:
        bar.close()
        client.cancel([f for f in futures if not f.done()])
    return results


def n_workers(client) -> int:
    """How many workers the cluster has now."""
    return max(1, len(client.nthreads()))
