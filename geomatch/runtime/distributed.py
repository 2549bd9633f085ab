"""Dask helpers: scheduler addresses, clients, task submission with progress.

geomatch spreads ``extract`` and ``eval`` over a Dask cluster
(``pip install "geomatch[dask]"``).  The work of one task is a plain function
of paths and options, so it runs on any worker that sees the same files; its
writes are atomic and it skips what is already done, so a task that Dask
reruns after its worker died, or a run restarted after an interruption,
writes the same bytes again.

* :func:`parse_address` / :func:`connect`: ``"local:N"`` (a
  :class:`distributed.LocalCluster` of N worker processes sharing the cores) or
  a running scheduler (``"tcp://host:8786"``), with a connect timeout;
* :func:`run_tasks`: submit ``fn(*args)`` for a list of argument tuples and
  gather the results in order, with a client-side progress bar; the first
  failing task cancels the rest and its error is raised;
* :func:`worker_cached`: a per-process cache (each worker loads the weights
  once);
* :func:`on_worker`: re-raise a task's file and value errors with the name of
  the worker that hit them.

Nothing here imports dask until a function needs it.
"""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import uuid
from typing import Any, Callable, Dict, Hashable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["parse_address", "connect", "dask_client", "run_tasks", "worker_cached",
           "worker_name", "on_worker", "n_workers", "DEFAULT_CONNECT_TIMEOUT"]

DEFAULT_CONNECT_TIMEOUT = 5.0
_INSTALL_HINT = 'Dask is not installed: pip install "geomatch[dask]" (dask[distributed])'


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ImportError(_INSTALL_HINT) from None
    return distributed


def parse_address(address: str) -> Tuple[str, Any]:
    """Split a ``--dask`` address into ``("local", n_workers)`` or ``("remote", address)``.

    Parameters
    ----------
    address : str
        ``"local:N"`` (N >= 1 worker processes on this machine) or a scheduler
        address such as ``"tcp://10.0.0.5:8786"`` (``host:port`` is read as tcp).

    Raises
    ------
    ValueError
        The address is empty, ``local:`` without a positive count, or has no port.
    """
    if not isinstance(address, str) or not address.strip():
        raise ValueError(f"dask address must be 'local:N' or a scheduler address such as "
                         f"tcp://host:8786, got {address!r}")
    a = address.strip()
    if a == "local" or a.startswith("local:"):
        n = a[len("local:"):] if a.startswith("local:") else ""
        if not n.isdigit() or int(n) < 1:
            raise ValueError(f"dask address {address!r}: 'local:N' needs a positive worker "
                             "count N, e.g. local:2")
        return "local", int(n)
    if "://" not in a:
        a = "tcp://" + a
    scheme, rest = a.split("://", 1)
    host, _, port = rest.rpartition(":")
    if scheme in ("tcp", "tls") and (not host or not port.isdigit()):
        raise ValueError(f"dask address {address!r} has no host:port (e.g. tcp://host:8786)")
    return "remote", a


def _check_scheduler(address: str, timeout: float) -> None:
    """Fail fast, within ``timeout`` seconds, unless a Dask scheduler answers
    at ``address`` (``distributed.Client`` alone can wait forever on a port
    that accepts connections but never answers)."""
    import asyncio

    from distributed.comm import connect as comm_connect

    async def probe():
        comm = await comm_connect(address, timeout=timeout)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            await comm.close()

    box: Dict[str, Any] = {}

    def run():
        try:
            box["reply"] = asyncio.run(asyncio.wait_for(probe(), timeout))
        except BaseException as exc:   # reported in the caller's thread
            box["error"] = exc

    # a thread of its own: works under a running event loop (Jupyter) too
    t = threading.Thread(target=run, name="geomatch-dask-probe", daemon=True)
    t.start()
    t.join(timeout + 1.0)
    reason = None
    if t.is_alive() or isinstance(box.get("error"), (asyncio.TimeoutError, TimeoutError)):
        reason = "no answer"
    elif "error" in box:
        reason = str(box["error"]) or type(box["error"]).__name__
    elif not isinstance(box.get("reply"), dict) or box["reply"].get("type") != "Scheduler":
        reason = "the server there is not a Dask scheduler"
    if reason is not None:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address} "
                              f"(within {timeout:g} s): {reason}")


def connect(address: str, *, timeout: float = DEFAULT_CONNECT_TIMEOUT,
            threads_per_worker: int = 1, kernel_threads: Optional[int] = None):
    """A :class:`distributed.Client` for ``address`` (see :func:`parse_address`).

    ``"local:N"`` starts a :class:`distributed.LocalCluster` of N worker
    processes with ``threads_per_worker`` Dask threads each (dashboard on a
    free port), whose kernels use ``kernel_threads`` threads (default: the
    cores divided among the workers, at least 1; results do not depend on
    it); the cluster is closed with the client.  A remote scheduler that does
    not answer within ``timeout`` seconds raises :class:`ConnectionError`.
    """
    kind, value = parse_address(address)
    distributed = _distributed()
    if kind == "local":
        k = kernel_threads or max(1, (os.cpu_count() or 1) // value)
        cluster = distributed.LocalCluster(n_workers=value, threads_per_worker=threads_per_worker,
                                           processes=True, dashboard_address=":0")
        client = distributed.Client(cluster)
        client._geomatch_owns_cluster = cluster
        client.register_plugin(_kernel_threads_plugin(int(k)), name="geomatch-kernel-threads")
        return client
    _check_scheduler(value, timeout)
    try:
        return distributed.Client(value, timeout=timeout)
    except (OSError, TimeoutError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {value} "
                              f"(within {timeout:g} s): {exc}") from None


def _kernel_threads_plugin(n: int):
    """A worker plugin that sets geomatch's kernel threads on every worker
    (also on one restarted after dying); Dask's workers start with
    OMP_NUM_THREADS=1."""
    from distributed.diagnostics.plugin import WorkerPlugin

    class KernelThreads(WorkerPlugin):
        def __init__(self, n):
            self.n = n

        def setup(self, worker):
            from geomatch.runtime.config import set_num_threads

            set_num_threads(self.n)

    return KernelThreads(n)


def close(client) -> None:
    """Close a client from :func:`connect` (and its local cluster)."""
    cluster = getattr(client, "_geomatch_owns_cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def dask_client(address: Optional[str], *, timeout: float = DEFAULT_CONNECT_TIMEOUT
                ) -> Iterator[Any]:
    """``with dask_client(address) as client:`` (``None`` yields ``None``)."""
    if address is None:
        yield None
        return
    client = connect(address, timeout=timeout)
    try:
        yield client
    finally:
        close(client)


def n_workers(client) -> int:
    """Workers connected to the scheduler now (at least 1)."""
    try:
        return max(1, len(client.scheduler_info(n_workers=-1)["workers"]))
    except TypeError:  # older distributed without n_workers=
        return max(1, len(client.scheduler_info()["workers"]))


def run_tasks(client, fn: Callable, args_list: Sequence[tuple], *, desc: str = "",
              unit: str = "task", weights: Optional[Sequence[int]] = None,
              progress: Optional[bool] = None, on_result: Optional[Callable] = None) -> List[Any]:
    """Run ``fn(*args)`` for every tuple of ``args_list`` on the cluster.

    Results come back in the order of ``args_list``.  The progress bar advances
    by ``weights[i]`` (default 1) as task i finishes.  Tasks whose worker dies
    are rerun by Dask on another worker.  When a task raises, every other
    task is cancelled and its exception is raised here.  ``on_result(i, r)``
    is called in completion order.
    """
    distributed = _distributed()
    from .progress import progress as _progress

    weights = list(weights) if weights is not None else [1] * len(args_list)
    token = uuid.uuid4().hex[:12]
    name = getattr(fn, "__name__", "task")
    futures = [client.submit(fn, *args, key=f"{name}-{token}-{i}", pure=False)
               for i, args in enumerate(args_list)]
    index = {f.key: i for i, f in enumerate(futures)}
    results: List[Any] = [None] * len(futures)
    bar = _progress(None, desc=desc, total=sum(weights), unit=unit,
                    disable=True if progress is False else None)
    try:
        for fut in distributed.as_completed(futures):
            i = index[fut.key]
            if fut.status == "error":
                fut.result()  # raises the task's exception, with its message
            results[i] = fut.result()
            if on_result is not None:
                on_result(i, results[i])
            bar.update(weights[i])
    except distributed.KilledWorker as exc:
        client.cancel(futures)
        raise ConnectionError(f"{desc or name}: a task was on every worker that died while "
                              f"running it ({exc}); see the workers' logs (out of memory?)"
                              ) from None
    except BaseException:
        client.cancel(futures)
        raise
    finally:
        bar.close()
    return results


# ----------------------------------------------------------------- worker side

_CACHE: Dict[Hashable, Any] = {}
_CACHE_LOCK = threading.Lock()
#: how many times this process called a factory, by key (for checks and logs)
FACTORY_CALLS: Dict[Hashable, int] = {}


_KEY_LOCKS: Dict[Hashable, threading.Lock] = {}


def worker_cached(key: Hashable, factory: Callable[[], Any], *, keep: int = 1) -> Any:
    """``factory()`` once per process for ``key``.

    Keys are grouped by kind (``key[0]`` of a tuple key); the ``keep`` most
    recent values of a kind are kept (one backbone by default: a worker that
    switches models drops the old one).  Threads of one worker asking for the
    same key wait for a single call of ``factory``.
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        with _CACHE_LOCK:
            if key in _CACHE:
                return _CACHE[key]
        value = factory()
        kind = key[0] if isinstance(key, tuple) and key else None
        with _CACHE_LOCK:
            FACTORY_CALLS[key] = FACTORY_CALLS.get(key, 0) + 1
            _CACHE[key] = value
            same = [k for k in _CACHE if (k[0] if isinstance(k, tuple) and k else None) == kind]
            for old in same[:max(0, len(same) - keep)]:
                del _CACHE[old]
                _KEY_LOCKS.pop(old, None)
    return value


def worker_name() -> Optional[str]:
    """The address of the Dask worker running this code (None outside one)."""
    try:
        from distributed import get_worker
        return get_worker().address
    except (ImportError, ValueError):
        return None


def on_worker(fn: Callable) -> Callable:
    """Decorate a task: file (any OSError: missing, unreadable, not an image),
    value and type errors raised inside a Dask worker are re-raised (same
    type) with ``on worker ADDRESS:`` in front."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OSError, ValueError, TypeError) as exc:
            where = worker_name()
            if where is None:
                raise
            try:
                named = type(exc)(f"on worker {where}: {exc}")
            except Exception:        # a type that does not take one message
                raise exc from None
            raise named from exc
    return wrapper
