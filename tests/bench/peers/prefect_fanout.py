#!/usr/bin/env python3
"""Prefect 3 peer of `siteflow-bench engine`: one flow submits N no-op tasks and waits.

Run by `siteflow-bench engine --peer prefect` from `.ci/prefect-venv`, in Prefect's
ephemeral mode (PREFECT_SERVER_ALLOW_EPHEMERAL_MODE=true, no PREFECT_API_URL, a throwaway
PREFECT_HOME): the Prefect client starts its own API server on 127.0.0.1, so nothing leaves
the loopback interface.

Prints one line `PEER_RESULT {json}` with its own timings, in seconds:
  import_s   importing prefect
  warmup_s   a first flow of --warmup tasks (starts the ephemeral server, creates the DB)
  flow_s     the measured flow call, end to end (flow run creation, tasks, teardown)
  tasks_s    inside the flow: from the first .submit() until every future is done
"""

import argparse
import json
import os
import sys
import time


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=5)
    a = p.parse_args()

    if os.environ.get("PREFECT_API_URL"):
        print("refusing to run: PREFECT_API_URL is set (the peer runs ephemeral only)", file=sys.stderr)
        return 2

    t = time.perf_counter()
    import prefect
    from prefect import flow, task
    from prefect.futures import wait

    import_s = time.perf_counter() - t

    @task
    def noop(i: int) -> None:
        return None

    @flow
    def fanout(n: int) -> dict:
        t0 = time.perf_counter()
        futures = [noop.submit(i) for i in range(n)]
        wait(futures)
        tasks_s = time.perf_counter() - t0
        completed = sum(1 for f in futures if f.state.is_completed())
        return {"tasks_s": tasks_s, "completed": completed}

    t = time.perf_counter()
    fanout(a.warmup)
    warmup_s = time.perf_counter() - t

    t = time.perf_counter()
    r = fanout(a.tasks)
    flow_s = time.perf_counter() - t

    out = {
        "prefect_version": prefect.__version__,
        "python": sys.version.split()[0],
        "tasks": a.tasks,
        "completed": r["completed"],
        "import_s": import_s,
        "warmup_s": warmup_s,
        "flow_s": flow_s,
        "tasks_s": r["tasks_s"],
        "per_task_ms": r["tasks_s"] * 1000.0 / max(a.tasks, 1),
        "per_task_flow_ms": flow_s * 1000.0 / max(a.tasks, 1),
    }
    print("PEER_RESULT " + json.dumps(out), flush=True)
    return 0 if r["completed"] == a.tasks else 1


if __name__ == "__main__":
    sys.exit(main())
