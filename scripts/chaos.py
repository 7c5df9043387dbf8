"""Chaos run: thousands of webhooks while the worker is killed twice and Redis restarted.

    .venv/bin/python -m scripts.chaos [--webhooks 3000] [--delay 5] [--processor]

Starts its own Gunicorn, Celery worker, beat and redis-server against a throwaway
PostgreSQL database (created from --postgres, dropped afterwards), sends the
webhooks from several threads while the faults happen, waits for the backlog to
drain, then prints what happened. Exits 1 if anything was lost or took effect twice.

With --processor, transactions go to the HTTP processor and the processor simulator
behind it, which fails 20% of calls with a 503 and lets 5% time out after taking
effect; the report adds calls, effects, retries and FAILED, and "doubled" counts
idempotency keys that took effect more than once. Without it, the simulated processor
waits --delay seconds. Either way, "not logged" counts committed outcomes whose
attempt left no log line.
"""

import argparse
import re
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from scripts.processes import (
    POSTGRES_ADMIN_URL,
    ProcessorSimulator,
    RedisServer,
    Service,
    ThrowawayDatabase,
)

SENDERS = 8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--webhooks", type=int, default=3000)
    parser.add_argument("--delay", type=float, default=5.0, help="PROCESSING_DELAY_SECONDS")
    parser.add_argument(
        "--postgres",
        default=POSTGRES_ADMIN_URL,
        help="a PostgreSQL URL from which a throwaway database can be created",
    )
    parser.add_argument("--logs", type=Path, help="keep the processes' logs in this folder")
    parser.add_argument(
        "--processor", action="store_true", help="the HTTP processor and a flaky simulator"
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="chaos-") as scratch,
        ThrowawayDatabase(args.postgres) as url,
    ):
        work = args.logs or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        redis_server = RedisServer(work).start()
        settings = {"PROCESSING_DELAY_SECONDS": str(args.delay)}
        simulator = None
        if args.processor:
            simulator = ProcessorSimulator(work, "--latency", str(args.delay), *FLAKY).start()
            settings |= {
                "PROCESSOR_URL": f"{simulator.url}/process",
                "PROCESSOR_TIMEOUT_SECONDS": str(args.delay + 5),
                "PROCESSING_RETRY_BASE_SECONDS": "1",
                "PROCESSING_RETRY_MAX_SECONDS": "10",
            }
        service = Service(work, DATABASE_URL=url, CELERY_BROKER_URL=redis_server.url, **settings)
        try:
            service.start()
            report = run(service, redis_server, url, args.webhooks, args.delay, simulator)
        finally:
            service.stop()
            redis_server.stop()
            if simulator:
                simulator.stop()
    print_report(report)
    doubled = report["doubled"] if isinstance(report["doubled"], int) else 0
    return 1 if report["lost"] or doubled or report["not logged"] else 0


# The simulator's faults in --processor mode: 20% answered 503, 5% never answered.
FLAKY = ("--transient-rate", "0.2", "--timeout-rate", "0.05")


def run(
    service: Service,
    redis_server: RedisServer,
    url: str,
    total: int,
    delay: float,
    simulator: ProcessorSimulator | None,
) -> dict:
    accepted: list[str] = []
    refused: Counter[str] = Counter()
    sent = iter(range(total))
    lock = threading.Lock()

    def send() -> None:
        session = requests.Session()
        while True:
            with lock:
                if next(sent, None) is None:
                    return
            body = {
                "transaction_id": f"chaos_{uuid.uuid4().hex}",
                "source_account": "acc_chaos_src",
                "destination_account": "acc_chaos_dst",
                "amount": 12.34,
                "currency": "EUR",
            }
            try:
                response = session.post(
                    f"{service.url}/v1/webhooks/transactions", json=body, timeout=10
                )
            except requests.RequestException as exc:
                refused[type(exc).__name__] += 1  # a real sender retries; not accepted
                continue
            if response.status_code in (200, 202):
                with lock:
                    accepted.append(body["transaction_id"])
            else:
                refused[str(response.status_code)] += 1

    def progress() -> float:
        return len(accepted) / total

    senders = [threading.Thread(target=send) for _ in range(SENDERS)]
    started = time.monotonic()
    for sender in senders:
        sender.start()

    events = []
    for at, fault in ((0.2, "kill worker"), (0.5, "restart redis"), (0.7, "kill worker")):
        while progress() < at and any(s.is_alive() for s in senders):
            time.sleep(0.05)
        if fault == "kill worker":
            service["worker"].kill()
            time.sleep(3)  # the worker stays dead for a while
            service.start("worker")
        else:
            redis_server.restart()
        events.append(f"{fault} at {time.monotonic() - started:.1f} s")

    for sender in senders:
        sender.join()
    sending_seconds = time.monotonic() - started
    drained = wait_for_drain(url, accepted, timeout=delay + 180)

    engine = create_engine(url)
    with engine.connect() as connection:
        final = connection.execute(
            text(
                "SELECT transaction_id, status, attempts, processed_at - created_at AS took"
                " FROM transactions WHERE transaction_id = ANY(:ids)"
            ),
            {"ids": accepted},
        ).all()
    engine.dispose()
    worker_log = service["worker"].log()
    told = set(re.findall(r"transaction (chaos_\w+) attempt (\d+): done", worker_log))
    processed = [row for row in final if row.status == "PROCESSED"]
    failed = [row for row in final if row.status == "FAILED"]
    report = {
        "webhooks sent": total,
        "accepted (2xx)": len(accepted),
        "not accepted (sender would retry)": dict(refused) or 0,
        "processed": len(processed),
        "failed": len(failed),
        "lost": len(accepted) - len(processed) - len(failed),
        # A committed PROCESSED whose final attempt left no "done" line.
        "not logged": sum((row.transaction_id, str(row.attempts)) not in told for row in processed),
        "longest receipt -> processed (s)": round(
            max((row.took.total_seconds() for row in processed), default=0), 2
        ),
        "sending took (s)": round(sending_seconds, 1),
        "drained within timeout": drained,
        "faults": "; ".join(events),
    }
    if simulator is None:  # nothing outside counts effects; a row moves to PROCESSED once
        return report | {"doubled": "n/a (the simulated processor has no effects to count)"}
    keys = simulator.keys()
    ours = [keys[i] for i in accepted if i in keys]
    calls = sum(key["calls"] for key in ours)
    return report | {
        "processor calls": calls,
        "effects": sum(key["effects"] for key in ours),
        "retries (calls past the first)": calls - len(ours),
        "doubled": sum(key["effects"] > 1 for key in ours),
    }


def wait_for_drain(url: str, ids: list[str], timeout: float) -> bool:
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as connection:
                waiting = connection.execute(
                    text(
                        "SELECT count(*) FROM transactions"
                        " WHERE status = 'PROCESSING' AND transaction_id = ANY(:ids)"
                    ),
                    {"ids": ids},
                ).scalar_one()
            if waiting == 0:
                return True
            time.sleep(1)
        return False
    finally:
        engine.dispose()


def print_report(report: dict) -> None:
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    sys.exit(main())
