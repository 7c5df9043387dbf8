"""Acknowledgement of this checkout against earlier commits, interleaved, with CPU by process.

    .venv/bin/python -m bench.compare a5fc8fd [671a019 ...] [--runs 5] [--duration 10]
    .venv/bin/python -m bench.compare a5fc8fd --rates 300 600 900

How README, Performance compares this release with the code from before processing was
real. Each commit is checked out into a temporary git worktree and started by its own
scripts/processes.py (its Procfile, its migrations, on a throwaway database and a
redis-server of its own), with this checkout's virtualenv; this checkout runs beside them.
Every service's worker processes what the load sends (the simulated processor at 1 s).
In each run, each load is put on each service in turn: wrk at 10 and at 50 connections
(a closed loop, so at saturation), or, with --rates, bench/open_loop.py at those
webhooks/s (senders that do not wait for each other, at a rate the service keeps up
with). Ratios to the first commit named are taken within each run, and the medians are
printed. CPU per webhook comes from /proc: Gunicorn's tree, the Celery worker's tree
and, when PostgreSQL runs on this machine, the postmaster's tree (every backend, the WAL
writer, autovacuum).

Not a test: it asserts nothing. A commit whose dependencies this virtualenv lacks will
not start; its service's log says why.
"""

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.run import cpu_seconds, ensure_wrk, wrk
from scripts.processes import BIN, POSTGRES_ADMIN_URL, ROOT

CONNECTIONS = (10, 50)

# Run inside a commit's worktree, by that commit's own modules: starts its service and
# prints where it answers, then keeps it up until its standard input closes.
LAUNCH = """
import json, sys
from pathlib import Path
from scripts.processes import POSTGRES_ADMIN_URL, RedisServer, Service, ThrowawayDatabase
logs = Path(sys.argv[1])
with ThrowawayDatabase(POSTGRES_ADMIN_URL) as url:
    redis_server = RedisServer(logs).start()
    service = Service(logs, DATABASE_URL=url, CELERY_BROKER_URL=redis_server.url,
                      PROCESSING_DELAY_SECONDS="1", WEB_CONCURRENCY=None)
    try:
        service.start()
        print(json.dumps({"url": service.url, "web": service["web"].pid,
                          "worker": service["worker"].pid}), flush=True)
        sys.stdin.read()
    finally:
        service.stop()
        redis_server.stop()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("commits", nargs="+", help="commits to compare with this checkout")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement")
    parser.add_argument(
        "--rates",
        type=float,
        nargs="+",
        help="webhooks/s to send open-loop (bench/open_loop.py) instead of wrk's loads",
    )
    args = parser.parse_args()
    ensure_wrk()
    if args.rates:
        loads = {f"{rate:g}/s": functools.partial(open_loop, rate=rate) for rate in args.rates}
    else:
        loads = {f"@{n}": functools.partial(closed_loop, connections=n) for n in CONNECTIONS}
    results: dict[tuple[str, str], list[dict]] = {}
    with (
        tempfile.TemporaryDirectory(prefix="bench-compare-") as scratch,
        contextlib.ExitStack() as stack,
    ):
        services = {}
        for commit in args.commits:
            tree = Path(scratch) / commit
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(tree), commit],
                cwd=ROOT,
                check=True,
            )
            stack.callback(
                subprocess.run, ["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT
            )
            services[commit] = stack.enter_context(launched(tree, Path(scratch) / f"{commit}-logs"))
        services["this checkout"] = stack.enter_context(launched(ROOT, Path(scratch) / "logs"))
        postmaster = postmaster_pid()
        for service in services.values():  # warm up: imports, pools, caches
            wrk(service["url"], "bench/webhook.lua", 10, 2)
        for run in range(args.runs):
            for label, load in loads.items():
                for name, service in services.items():
                    figures = measure(service, postmaster, load, args.duration)
                    results.setdefault((name, label), []).append(figures)
                    print(f"run {run + 1} {name} {label}: {line(figures)}", flush=True)
    print_medians(results, list(services), list(loads))
    return 0


@contextlib.contextmanager
def launched(tree: Path, logs: Path):
    logs.mkdir(parents=True)
    process = subprocess.Popen(
        [str(BIN / "python"), "-c", LAUNCH, str(logs)],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": str(tree)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        started = process.stdout.readline()
        if not started:
            raise RuntimeError(f"the service of {tree} did not start; its logs are in {logs}")
        yield json.loads(started)
    finally:
        process.stdin.close()
        process.wait(timeout=120)


def postmaster_pid() -> int | None:
    """PostgreSQL's postmaster, if it runs on this machine: a backend's parent."""
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as connection:
            backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            stat = Path(f"/proc/{backend}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except OSError:
        return None  # a remote server: no CPU figure for it
    finally:
        engine.dispose()


def closed_loop(url: str, duration: int, connections: int) -> dict:
    return wrk(url, "bench/webhook.lua", connections, duration)


def open_loop(url: str, duration: int, rate: float) -> dict:
    command = [
        BIN / "python",
        "-m",
        "bench.open_loop",
        url,
        f"--rate={rate}",
        f"--duration={duration}",
    ]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def measure(service: dict, postmaster: int | None, load: Callable, duration: int) -> dict:
    time.sleep(2)  # let the worker finish the previous load's rows
    trees = {"web": service["web"], "worker": service["worker"]}
    if postmaster:
        trees["postgres"] = postmaster
    before = {name: cpu_seconds(pid) for name, pid in trees.items()}
    figures = load(service["url"], duration)
    for name, pid in trees.items():
        figures[f"{name}_cpu_ms"] = (cpu_seconds(pid) - before[name]) * 1000 / figures["requests"]
    return figures


def line(figures: dict) -> str:
    cpu = ", ".join(
        f"{name} {figures[f'{name}_cpu_ms']:.3f}"
        for name in ("web", "postgres", "worker")
        if f"{name}_cpu_ms" in figures
    )
    return (
        f"{figures['rps']:,.0f} webhooks/s, p50 {figures['p50_ms']:.1f} ms, "
        f"p99 {figures['p99_ms']:.1f} ms, errors {figures['errors'] + figures['non_2xx']}; "
        f"CPU ms per webhook: {cpu}"
    )


def print_medians(results: dict, names: list[str], loads: list[str]) -> None:
    print("\nMedians; ratios to", names[0], "taken within each run")
    for label in loads:
        base = results[(names[0], label)]
        for name in names:
            runs = results[(name, label)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            print(f"{name} {label}: {line(median)}")
            if name == names[0]:
                continue
            for key, figure in (("rps", "webhooks/s"), ("p99_ms", "p99")):
                ratios = [run[key] / first[key] for run, first in zip(runs, base, strict=True)]
                each = ", ".join(f"{ratio:.2f}" for ratio in ratios)
                print(f"  {figure} ÷ {names[0]}: {statistics.median(ratios):.2f} ({each})")


if __name__ == "__main__":
    sys.exit(main())
