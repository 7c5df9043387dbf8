"""The benchmark: how fast webhooks are acknowledged, looked up and drained.

    .venv/bin/python -m bench.run [--runs 3] [--duration 10]

Starts the service as production runs it (the Procfile's Gunicorn, Celery worker
and beat) on a throwaway PostgreSQL database and a Redis, and, under the same
Gunicorn settings, the hand-written reference receivers of bench/reference.py.
wrk drives the load. In each run, for 10 and for 50 connections, the same load
goes to the service and to each reference, one after the other; ratios are taken
within a run, and every figure printed is the median over the runs. Then:
GET by id; drains of a 5,000-webhook burst with a processor latency of 5 s, through
the simulated processor and through the HTTP processor against the processor
simulator; a backlog of 100,000 due rows on stale statistics, drained by one worker
process with a processor latency of 0 (transactions per second and CPU-milliseconds
per transaction: the pipeline's own cost); and memory. While acknowledgement is
measured, the worker processes what the load sends (latency 1 s), as in production.
Prints one table and writes it as JSON to bench/results/.

Not a test: it asserts nothing. Its figures go in the README's Performance section.
"""

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from scripts.processes import (
    BIN,
    POSTGRES_ADMIN_URL,
    ROOT,
    Process,
    ProcessorSimulator,
    RedisServer,
    Service,
    ThrowawayDatabase,
    free_port,
)

RESULTS = ROOT / "bench" / "results"
CONNECTIONS = (10, 50)
BURST = 5000
DRAIN_DELAY = 5.0
BACKLOG = 100_000
SEEDED = 1000
JSON_HEADERS = {"Content-Type": "application/json"}
REFERENCES = {
    "reference (Flask)": "bench.reference:create_app()",
    "reference (WSGI)": "bench.reference:wsgi",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement")
    parser.add_argument(
        "--postgres",
        default=POSTGRES_ADMIN_URL,
        help="PostgreSQL to create the throwaway database on",
    )
    parser.add_argument(
        "--memory-seconds", type=int, default=60, help="length of the web memory run"
    )
    parser.add_argument("--backlog", type=int, default=BACKLOG, help="due rows to drain")
    args = parser.parse_args()
    ensure_wrk()
    RESULTS.mkdir(exist_ok=True)

    with ThrowawayDatabase(args.postgres) as url, Workspace() as work:
        redis_server = RedisServer(work).start()
        try:
            results = {"machine": machine(), "settings": vars(args) | {"burst": BURST}}
            results |= acknowledgement_and_lookup(work, url, redis_server.url, args)
            results["drain"] = [drain(work, url, redis_server.url) for _ in range(args.runs)]
            results["drain_http"] = [
                drain(work, url, redis_server.url, over_http=True) for _ in range(args.runs)
            ]
            results["backlog"] = backlog(work, url, redis_server.url, args.backlog)
            results["in_flight"] = in_flight(work, url, redis_server.url)
        finally:
            redis_server.stop()

    results["summary"] = summarise(results)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for name in (f"{stamp}.json", "latest.json"):
        (RESULTS / name).write_text(json.dumps(results, indent=2, default=str))
    print_table(results)
    print(f"\nJSON: bench/results/{stamp}.json")
    return 0


class Workspace:
    """A scratch folder for logs, kept under bench/results/logs for a look afterwards."""

    def __enter__(self) -> Path:
        path = RESULTS / "logs"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def __exit__(self, *_exc) -> None:
        pass


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print("Installing wrk with apt-get")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "wrk"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        return
    sys.exit("wrk is needed: install it (apt-get install wrk, brew install wrk) and run again.")


def wrk(url: str, script: str, connections: int, duration: int, **env: str) -> dict:
    result = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", "-s", script, url],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(line for line in result.stdout.splitlines() if line.startswith("WRK_JSON "))
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[key] for key in raw if key.startswith("errors_") and key != "errors_status")
    return {
        "connections": connections,
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "errors": errors,
        "non_2xx": raw["errors_status"],  # wrk counts every status >= 400 here
    }


def gunicorn(work: Path, name: str, app: str, env: dict) -> tuple[Process, str]:
    """A reference receiver under the service's own Gunicorn settings."""
    port = free_port()
    command = [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind", f"127.0.0.1:{port}", app]
    process = Process(name.replace(" ", "-").strip("()"), command, env, work)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            requests.get(url, timeout=1)
            return process, url
        except requests.RequestException:
            if time.monotonic() > deadline or not process.running():
                raise RuntimeError(f"{name} did not start:\n{process.log()}") from None
            time.sleep(0.1)


def production_settings(**settings: str) -> dict[str, str | None]:
    """Gunicorn's worker count as production gets it: WEB_CONCURRENCY if this shell sets
    it, else gunicorn.conf.py's default (None drops the test harness's own default)."""
    return settings | {"WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY")}


def children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def acknowledgement_and_lookup(work: Path, url: str, redis_url: str, args) -> dict:
    # The worker processes what the load sends (the simulated processor, 1 s), as in
    # production: to the service and to the references alike (bench/reference.py makes
    # its rows due after the same delay), so the machine is as busy for each of them.
    service = Service(
        work,
        **production_settings(
            DATABASE_URL=url, CELERY_BROKER_URL=redis_url, PROCESSING_DELAY_SECONDS="1"
        ),
    )
    service.start()
    references = {
        name: gunicorn(work, name, app, service.env | {"REDIS_URL": redis_url})
        for name, app in REFERENCES.items()
    }
    targets = {"service": service.url} | {
        name: ref_url for name, (_, ref_url) in references.items()
    }
    try:
        for target_url in targets.values():  # warm up: imports, pools, caches
            wrk(target_url, "bench/webhook.lua", 10, 2)
        seed_for_lookup(service.url)
        gunicorn_info = {"gunicorn_workers": len(children(service["web"].pid))}

        runs = []
        for _ in range(args.runs):
            run = {"webhook": [], "get": None}
            for connections in CONNECTIONS:
                for name, target_url in targets.items():
                    figures = wrk(target_url, "bench/webhook.lua", connections, args.duration)
                    run["webhook"].append({"target": name} | figures)
            run["get"] = wrk(
                service.url, "bench/get.lua", 50, args.duration, WRK_SEEDED=str(SEEDED)
            )
            runs.append(run)

        waiting = count(url, "SELECT count(*) FROM transactions WHERE status = 'PROCESSING'")
        memory = {
            "worker_mb_with_waiting": rss_mb(service["worker"].pid),
            "worker_pss_mb_with_waiting": pss_mb(service["worker"].pid),
            "waiting": waiting,
        }
        before = rss_mb(service["web"].pid)
        wrk(service.url, "bench/webhook.lua", 50, args.memory_seconds)
        memory |= {"web_mb_before_run": before, "web_mb_after_run": rss_mb(service["web"].pid)}
        memory["web_run_seconds"] = args.memory_seconds
        return {"runs": runs, "memory": memory, "gunicorn": gunicorn_info}
    finally:
        for process, _ in references.values():
            process.stop()
        service.stop()


def seed_for_lookup(service_url: str) -> None:
    session = requests.Session()
    for i in range(SEEDED):
        body = {
            "transaction_id": f"bench_get_{i}",
            "source_account": "acc_src",
            "destination_account": "acc_dst",
            "amount": 10.5,
            "currency": "EUR",
        }
        response = session.post(f"{service_url}/v1/webhooks/transactions", json=body, timeout=10)
        response.raise_for_status()


def drain(work: Path, url: str, redis_url: str, over_http: bool = False) -> dict:
    """A burst of BURST webhooks, sent as fast as the service takes them; then the
    time until the last is PROCESSED, minus the processor's latency, from the
    database's own stamps. The processor: simulated, or HTTP to the simulator."""
    with create_engine(url).begin() as connection:
        connection.execute(text("TRUNCATE transactions"))
    settings = {"PROCESSING_DELAY_SECONDS": str(DRAIN_DELAY)}
    simulator = None
    if over_http:
        simulator = ProcessorSimulator(work, "--latency", str(DRAIN_DELAY)).start()
        settings["PROCESSOR_URL"] = f"{simulator.url}/process"
    service = Service(
        work, **production_settings(DATABASE_URL=url, CELERY_BROKER_URL=redis_url, **settings)
    )
    service.start()
    peak = {"web": 0.0, "worker": 0.0, "web_pss": 0.0, "worker_pss": 0.0}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for name in ("web", "worker"):
                peak[name] = max(peak[name], rss_mb(service[name].pid))
                peak[f"{name}_pss"] = max(peak[f"{name}_pss"], pss_mb(service[name].pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        burst = send_burst(service.port, BURST, senders=50)
        deadline = time.monotonic() + DRAIN_DELAY + 120
        while count(url, "SELECT count(*) FROM transactions WHERE status = 'PROCESSING'"):
            if time.monotonic() > deadline:
                raise RuntimeError("the burst did not drain within two minutes:\n" + service.logs())
            time.sleep(0.2)
    finally:
        sampling.set()
        sampler.join()
        service.stop()
        most_in_flight = simulator.stats()["max_in_flight"] if simulator else None
        if simulator:
            simulator.stop()
    with create_engine(url).connect() as connection:
        first, last_accepted, last_processed, accepted = connection.execute(
            text(
                "SELECT min(created_at), max(created_at), max(processed_at), count(*)"
                " FROM transactions"
            )
        ).one()
    return {
        "accepted": accepted,
        "burst_seconds": (last_accepted - first).total_seconds(),
        "burst_rps": accepted / (last_accepted - first).total_seconds(),
        "burst_errors": burst,
        "overhead_seconds": (last_processed - last_accepted).total_seconds() - DRAIN_DELAY,
        "peak_web_mb": peak["web"],
        "peak_worker_mb": peak["worker"],
        "peak_web_pss_mb": peak["web_pss"],
        "peak_worker_pss_mb": peak["worker_pss"],
        "most_calls_in_flight": most_in_flight,
    }


def load_due_rows(url: str, rows: int) -> None:
    """`rows` due transactions, loaded after an ANALYZE of the empty table: the planner
    is then told that nothing waits (stale statistics, as after a quiet night)."""
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("TRUNCATE transactions"))
    with engine.connect() as connection:
        connection.execute(text("ANALYZE transactions"))
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO transactions (transaction_id, source_account, destination_account,"
                " amount, currency, status, created_at, next_attempt_at)"
                " SELECT 'backlog_' || n, 'acc_src', 'acc_dst', 10.5, 'EUR', 'PROCESSING',"
                " now(), now() FROM generate_series(1, :rows) AS n"
            ),
            {"rows": rows},
        )
    engine.dispose()


def drain_loaded(work: Path, url: str, redis_url: str, **settings: str) -> dict:
    """Start one worker and beat on the loaded rows; time them to the last PROCESSED,
    with the worker's CPU and its peak memory."""
    service = Service(work, DATABASE_URL=url, CELERY_BROKER_URL=redis_url, **settings)
    service.start("worker")
    started_cpu, started = cpu_seconds(service["worker"].pid), time.monotonic()
    service.start("beat")
    peak = 0.0
    try:
        deadline = time.monotonic() + 600
        while count(url, "SELECT count(*) FROM transactions WHERE status = 'PROCESSING'"):
            if time.monotonic() > deadline:
                raise RuntimeError("the backlog did not drain in 10 minutes:\n" + service.logs())
            peak = max(peak, rss_mb(service["worker"].pid))
            time.sleep(0.5)
        seconds = time.monotonic() - started
        cpu = cpu_seconds(service["worker"].pid) - started_cpu
    finally:
        service.stop()
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_worker_mb": peak}


def backlog(work: Path, url: str, redis_url: str, rows: int) -> dict:
    """A backlog on stale statistics, drained by one worker process, processor latency 0:
    the pipeline's own speed and cost per transaction."""
    load_due_rows(url, rows)
    drained = drain_loaded(work, url, redis_url, PROCESSING_DELAY_SECONDS="0")
    return {
        "rows": rows,
        "seconds": drained["seconds"],
        "per_second": rows / drained["seconds"],
        "worker_cpu_ms_per_transaction": drained["cpu_seconds"] * 1000 / rows,
    }


def in_flight(work: Path, url: str, redis_url: str, rows: int = 6000) -> dict:
    """`rows` due at once, the HTTP processor against the simulator at 10 s a call:
    how many calls one worker process keeps in flight at once."""
    load_due_rows(url, rows)
    simulator = ProcessorSimulator(work, "--latency", "10").start()
    try:
        drained = drain_loaded(work, url, redis_url, PROCESSOR_URL=f"{simulator.url}/process")
        most = simulator.stats()["max_in_flight"]
    finally:
        simulator.stop()
    return {"rows": rows, "most_in_flight": most} | drained


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process and its descendants so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            pending += children(current)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total


def send_burst(port: int, total: int, senders: int) -> int:
    """POST `total` new webhooks from `senders` threads at once; returns the failures.

    Not wrk: wrk runs for a duration, and stopping it after a count leaves
    half-opened connections that each hold a sync worker until its timeout."""
    failures = 0
    lock = threading.Lock()
    per_sender = total // senders

    def send(sender: int) -> None:
        nonlocal failures
        for i in range(per_sender):
            body = json.dumps(
                {
                    "transaction_id": f"burst_{sender}_{i}",
                    "source_account": "acc_src",
                    "destination_account": "acc_dst",
                    "amount": 10.5,
                    "currency": "EUR",
                }
            )
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            try:
                connection.request("POST", "/v1/webhooks/transactions", body, JSON_HEADERS)
                ok = connection.getresponse().status == 202
            except OSError:
                ok = False
            finally:
                connection.close()
            if not ok:
                with lock:
                    failures += 1

    threads = [threading.Thread(target=send, args=(n,)) for n in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failures


def count(url: str, query: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text(query)).scalar_one()
    finally:
        engine.dispose()


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MB. Pages the
    processes share (Gunicorn's and Celery's forked children) count once per process."""
    return _tree_total(pid, "VmRSS:", "status")


def pss_mb(pid: int) -> float:
    """The same tree's proportional share: shared pages split between their users."""
    return _tree_total(pid, "Pss:", "smaps_rollup")


def _tree_total(pid: int, field: str, source: str) -> float:
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            lines = Path(f"/proc/{current}/{source}").read_text().splitlines()
            pending += children(current)
        except OSError:
            continue
        total += next(int(line.split()[1]) for line in lines if line.startswith(field))
    return total / 1024


def machine() -> dict:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def summarise(results: dict) -> dict:
    median = statistics.median
    summary: dict = {"webhook": {}, "ratios": {}}
    for connections in CONNECTIONS:
        for target in ["service", *REFERENCES]:
            rows = [
                next(
                    r
                    for r in run["webhook"]
                    if r["target"] == target and r["connections"] == connections
                )
                for run in results["runs"]
            ]
            summary["webhook"][f"{target} @{connections}"] = {
                key: median(row[key] for row in rows)
                for key in ("rps", "p50_ms", "p99_ms", "errors", "non_2xx")
            }
        for reference in REFERENCES:
            summary["ratios"][f"service / {reference} @{connections}"] = median(
                service_row["rps"] / reference_row["rps"]
                for run in results["runs"]
                for service_row in run["webhook"]
                for reference_row in run["webhook"]
                if service_row["target"] == "service"
                and reference_row["target"] == reference
                and service_row["connections"] == reference_row["connections"] == connections
            )
    gets = [run["get"] for run in results["runs"]]
    summary["get @50"] = {
        key: median(g[key] for g in gets) for key in ("rps", "p50_ms", "p99_ms", "errors")
    }
    summary["ratios"]["get / webhook @50"] = median(
        run["get"]["rps"]
        / next(
            r["rps"] for r in run["webhook"] if r["target"] == "service" and r["connections"] == 50
        )
        for run in results["runs"]
    )
    for drain_kind in ("drain", "drain_http"):
        summary[drain_kind] = {
            key: median(d[key] or 0 for d in results[drain_kind]) for key in results[drain_kind][0]
        }
    return summary


def print_table(results: dict) -> None:
    summary = results["summary"]
    runs = len(results["runs"])
    machine_info = results["machine"]
    print(
        f"\n{machine_info['cpus']} CPUs ({machine_info['cpu']}), Python {machine_info['python']}, "
        f"Gunicorn workers: {results['gunicorn']['gunicorn_workers']}; medians of {runs} runs"
    )
    print(f"\nPOST /v1/webhooks/transactions, {results['settings']['duration']} s per measurement")
    print(
        f"{'target':<20}{'conns':>6}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}{'non-2xx':>9}"
    )
    for key, row in summary["webhook"].items():
        target, connections = key.rsplit(" @", 1)
        print(
            f"{target:<20}{connections:>6}{row['rps']:>9.0f}{row['p50_ms']:>9.1f}{row['p99_ms']:>9.1f}"
            f"{row['errors']:>8.0f}{row['non_2xx']:>9.0f}"
        )
    get = summary["get @50"]
    print(
        f"\nGET /v1/transactions/<id>, 50 connections: {get['rps']:.0f} req/s, "
        f"p50 {get['p50_ms']:.1f} ms, p99 {get['p99_ms']:.1f} ms, errors {get['errors']:.0f}"
    )
    print("\nRatios (taken within each run, then the median)")
    for key, ratio in summary["ratios"].items():
        print(f"  {key:<40}{ratio:>6.2f}")
    for drain_kind, processor in (("drain", "simulated"), ("drain_http", "HTTP, simulator")):
        drained = summary[drain_kind]
        print(
            f"\nDrain ({processor} processor): {drained['accepted']:.0f} webhooks in "
            f"{drained['burst_seconds']:.1f} s ({drained['burst_rps']:.0f}/s, errors "
            f"{drained['burst_errors']:.0f}), latency {DRAIN_DELAY:.0f} s: the last was "
            f"PROCESSED {drained['overhead_seconds']:.2f} s after its latency past the last "
            f"acceptance; peak worker RSS {drained['peak_worker_mb']:.0f} MB"
            + (
                f"; most calls in flight at once {drained['most_calls_in_flight']:.0f}"
                if drained["most_calls_in_flight"]
                else ""
            )
        )
    drained = summary["drain"]
    backlog_figures = results["backlog"]
    print(
        f"\nBacklog: {backlog_figures['rows']:,} due rows on stale statistics, latency 0, one "
        f"worker process: drained in {backlog_figures['seconds']:.1f} s, "
        f"{backlog_figures['per_second']:.0f} transactions/s, "
        f"{backlog_figures['worker_cpu_ms_per_transaction']:.2f} CPU-ms per transaction"
    )
    flying = results["in_flight"]
    print(
        f"In flight: {flying['rows']:,} due at once, HTTP processor at 10 s a call, one worker "
        f"process: at most {flying['most_in_flight']:,} calls in flight at once, all PROCESSED in "
        f"{flying['seconds']:.1f} s, peak worker RSS {flying['peak_worker_mb']:.0f} MB"
    )
    memory = results["memory"]
    print(
        "Memory (RSS summed over each process tree; PSS, which counts shared pages once, "
        "in brackets):"
    )
    print(
        f"  peak during the drain: web {drained['peak_web_mb']:.0f} MB "
        f"({drained['peak_web_pss_mb']:.0f}), worker {drained['peak_worker_mb']:.0f} MB "
        f"({drained['peak_worker_pss_mb']:.0f})"
    )
    print(
        f"  worker with {memory['waiting']:,} transactions waiting: "
        f"{memory['worker_mb_with_waiting']:.0f} MB ({memory['worker_pss_mb_with_waiting']:.0f})"
    )
    print(
        f"  web before and after a {memory['web_run_seconds']} s run at 50 connections: "
        f"{memory['web_mb_before_run']:.0f} -> {memory['web_mb_after_run']:.0f} MB"
    )


if __name__ == "__main__":
    sys.exit(main())
