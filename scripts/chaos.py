"""Chaos run: thousands of webhooks while the worker is killed twice and Redis restarted.

    .venv/bin/python -m scripts.chaos [--webhooks 3000] [--delay 5]

Starts its own Gunicorn, Celery worker, beat and redis-server against a throwaway
PostgreSQL database (created from --postgres, dropped afterwards), sends the
webhooks from several threads while the faults happen, waits for the backlog to
drain, then prints accepted / processed / lost / processed-twice and the longest
time from a transaction's due time to its processing. Exits 1 if anything was
lost or processed twice.
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

from scripts.processes import POSTGRES_ADMIN_URL, RedisServer, Service, ThrowawayDatabase

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
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="chaos-") as scratch,
        ThrowawayDatabase(args.postgres) as url,
    ):
        work = args.logs or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        redis_server = RedisServer(work).start()
        service = Service(
            work,
            DATABASE_URL=url,
            CELERY_BROKER_URL=redis_server.url,
            PROCESSING_DELAY_SECONDS=str(args.delay),
        )
        try:
            service.start()
            report = run(service, redis_server, url, args.webhooks, args.delay)
        finally:
            service.stop()
            redis_server.stop()
    print_report(report)
    return 1 if report["lost"] or report["processed twice"] else 0


def run(service: Service, redis_server: RedisServer, url: str, total: int, delay: float) -> dict:
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
        processed, longest = connection.execute(
            text(
                "SELECT count(*), max(extract(epoch FROM processed_at - next_attempt_at))"
                " FROM transactions WHERE status = 'PROCESSED' AND transaction_id = ANY(:ids)"
            ),
            {"ids": accepted},
        ).one()
    engine.dispose()
    counts = Counter(re.findall(r"transaction (chaos_\w+) processed ", service["worker"].log()))
    return {
        "webhooks sent": total,
        "accepted (2xx)": len(accepted),
        "not accepted (sender would retry)": dict(refused) or 0,
        "processed": processed,
        "lost": len(accepted) - processed,
        "processed twice": sum(1 for n in counts.values() if n > 1),
        "longest due -> processed (s)": round(float(longest or 0), 2),
        "sending took (s)": round(sending_seconds, 1),
        "drained within timeout": drained,
        "faults": "; ".join(events),
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
