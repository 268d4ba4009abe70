"""Dependency-aware scheduling of a reproduce driver's sub-runs on a pool (threads driving subprocesses, or
spawned processes): each job starts as soon as the jobs it needs have finished, at most ``workers`` at a time, in
the given order otherwise, so a free core never waits on a phase boundary."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)

__all__ = ["run_when_ready"]


def run_when_ready(keys: Sequence[K], submit: Callable[[K, Mapping[K, Any]], Future],
                   needs: Mapping[K, Sequence[K]] | None = None, workers: int = 2,
                   on_done: Callable[[K, Any], None] | None = None) -> dict[K, Any]:
    """Run every key of ``keys``; ``submit(key, results)`` starts one on the caller's pool and gets the results of
    the jobs finished so far (a dependent reads what its needs produced). ``on_done(key, result)`` is called as each
    finishes. Returns key -> result; a job's exception is raised; a key that needs a key not in ``keys`` is an
    error, raised before anything runs."""
    needs = needs or {}
    unknown = {d for k in keys for d in needs.get(k, ()) if d not in keys}
    if unknown:
        raise ValueError(f"jobs wait on jobs that are not scheduled: {sorted(map(str, unknown))}")
    pending, running, results = list(keys), {}, {}
    while pending or running:
        ready = [k for k in pending if all(d in results for d in needs.get(k, ()))]
        for key in ready[:workers - len(running)]:
            pending.remove(key)
            running[submit(key, results)] = key
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for future in done:
            key = running.pop(future)
            results[key] = future.result()
            if on_done is not None:
                on_done(key, results[key])
    return results
