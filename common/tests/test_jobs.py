import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from common.jobs import run_when_ready


def test_dependents_start_after_their_needs_and_never_more_than_workers_at_once():
    lock, state = threading.Lock(), {"now": 0, "peak": 0, "order": []}

    def job(name, delay, seen):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            state["order"].append(("start", name, tuple(sorted(seen))))
        time.sleep(delay)
        with lock:
            state["now"] -= 1
            state["order"].append(("end", name, ()))
        return name.upper()

    delays = {"pre": 0.05, "a": 0.02, "b": 0.01, "c": 0.01}
    finished = []
    with ThreadPoolExecutor(2) as pool:
        results = run_when_ready(list(delays), lambda k, res: pool.submit(job, k, delays[k], dict(res)),
                                 needs={"a": ["pre"]}, on_done=lambda k, r: finished.append(k))
    assert results == {"pre": "PRE", "a": "A", "b": "B", "c": "C"} and sorted(finished) == sorted(delays)
    assert state["peak"] == 2
    starts = {name: (i, seen) for i, (kind, name, seen) in enumerate(state["order"]) if kind == "start"}
    ends = {name: i for i, (kind, name, _) in enumerate(state["order"]) if kind == "end"}
    assert starts["a"][0] > ends["pre"] and "pre" in starts["a"][1]  # a saw pre's result
    assert starts["b"][0] < ends["pre"]  # b does not wait for pre


def test_unknown_needs_and_job_errors_are_raised():
    with ThreadPoolExecutor(1) as pool:
        with pytest.raises(ValueError, match="not scheduled"):
            run_when_ready(["a"], lambda k, res: pool.submit(str, k), needs={"a": ["missing"]})

        def boom():
            raise RuntimeError("sub-run failed")

        with pytest.raises(RuntimeError, match="sub-run failed"):
            run_when_ready(["a"], lambda k, res: pool.submit(boom))
