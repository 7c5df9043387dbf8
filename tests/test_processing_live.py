"""Processing in real processes: Gunicorn, the Celery worker (gevent pool) and beat,
PostgreSQL, a redis-server of the test's own, and the processor simulator over HTTP."""

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from helpers import get_transaction, post_webhook, wait_until, webhook
from sqlalchemy import delete, insert, select
from tcp_proxy import TCPProxy

from app.store.models import Transaction, TransactionStatus
from scripts.processes import BIN, ROOT, ProcessorSimulator, Service

pytestmark = pytest.mark.processes


@pytest.fixture(autouse=True)
def empty_table(database) -> None:
    """Each test's worker finds only that test's rows. A row an earlier test left waiting
    (retry_after's, due 20 s later) was claimed by the next test's worker and called its
    simulator: one call too many, once in a full run."""
    with database.begin() as connection:
        connection.execute(delete(Transaction))


@pytest.fixture
def started(tmp_path):
    """Starts things and stops them after the test, whatever happens."""
    things = []

    def start(thing):
        things.append(thing)
        return thing.start()

    yield start
    for thing in reversed(things):
        thing.stop()


def service_with(tmp_path, postgres_url, redis_server, simulator, **settings) -> Service:
    return Service(
        tmp_path,
        DATABASE_URL=postgres_url,
        CELERY_BROKER_URL=redis_server.url,
        PROCESSOR_URL=f"{simulator.url}/process",
        **{
            "PROCESSOR_TIMEOUT_SECONDS": "2",
            "PROCESSING_RETRY_BASE_SECONDS": "0.2",
            "PROCESSING_RETRY_MAX_SECONDS": "2",
            **settings,
        },
    )


def accept(service: Service, count: int, **fields) -> list[str]:
    bodies = [webhook(**fields) for _ in range(count)]
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda body: post_webhook(service.url, body).status_code, bodies))
    assert statuses == [202] * count, service.logs()
    return [body["transaction_id"] for body in bodies]


def rows(database, ids) -> dict[str, Transaction]:
    with database.connect() as connection:
        found = connection.execute(select(Transaction).where(Transaction.transaction_id.in_(ids)))
        return {row.transaction_id: row for row in found}


def wait_for_status(database, ids, status: str, timeout: float = 90) -> dict[str, Transaction]:
    def all_there():
        found = rows(database, ids)
        done = len(found) == len(ids) and all(r.status == status for r in found.values())
        return found if done else None

    return wait_until(all_there, timeout=timeout, interval=0.3)


def test_flaky_processor_each_transaction_processed_with_one_effect(
    tmp_path, postgres_url, redis_server, database, started
):
    simulator = started(
        ProcessorSimulator(
            tmp_path, "--latency", "0.5", "--transient-rate", "0.3", "--timeout-rate", "0.1"
        )
    )
    # Attempts enough that none of the 200 gives up by chance: at 10, about one run in a
    # few hundred left one FAILED (each attempt fails 4 times in 10).
    service = started(
        service_with(tmp_path, postgres_url, redis_server, simulator, PROCESSING_MAX_ATTEMPTS="30")
    )
    ids = accept(service, 200)
    done = wait_for_status(database, ids, "PROCESSED")

    keys = simulator.keys()
    assert {transaction_id: keys[transaction_id]["effects"] for transaction_id in ids} == {
        transaction_id: 1 for transaction_id in ids
    }
    assert sum(keys[i]["calls"] for i in ids) > len(ids)  # the failures were retried
    for transaction_id in ids:
        assert done[transaction_id].processor_reference == keys[transaction_id]["reference"]
    shown = get_transaction(service.url, ids[0]).json()
    assert shown["processor_reference"] == keys[ids[0]]["reference"]
    assert shown["attempts"] == done[ids[0]].attempts >= 1
    # One line per attempt's outcome: as many "done" lines as transactions.
    worker_log = service["worker"].log()
    assert sum(f"transaction {i} attempt " in worker_log for i in ids) == len(ids)
    assert all(f"transaction {i} attempt {done[i].attempts}: done" in worker_log for i in ids), (
        "a committed outcome without its log line"
    )


def test_refused_for_good_fails_after_one_attempt_with_the_reason(
    tmp_path, postgres_url, redis_server, database, started
):
    simulator = started(
        ProcessorSimulator(tmp_path, "--latency", "0", "--refuse-account", "acc_frozen")
    )
    service = started(service_with(tmp_path, postgres_url, redis_server, simulator))
    [refused] = accept(service, 1, source_account="acc_frozen")
    [fine] = accept(service, 1)
    wait_for_status(database, [fine], "PROCESSED")
    failed = wait_for_status(database, [refused], "FAILED")[refused]
    assert failed.attempts == 1
    assert failed.last_error == 'the processor answered 422: {"error": "account refused"}'
    shown = get_transaction(service.url, refused).json()
    assert shown["status"] == "FAILED" and shown["last_error"] == failed.last_error
    listed = requests.get(f"{service.url}/v1/transactions?status=FAILED", timeout=10).json()
    assert [t["transaction_id"] for t in listed["transactions"]] == [refused]


def test_a_processor_down_too_long_fails_and_a_redrive_once_it_is_back_processes(
    tmp_path, postgres_url, redis_server, database, started
):
    simulator = ProcessorSimulator(tmp_path, "--latency", "0")  # not started: refused
    service = started(
        service_with(tmp_path, postgres_url, redis_server, simulator, PROCESSING_MAX_ATTEMPTS="3")
    )
    ids = accept(service, 3)
    failed = wait_for_status(database, ids, "FAILED", timeout=60)
    for row in failed.values():
        assert row.attempts == 3
        assert row.last_error == (
            "could not reach the processor: ConnectionError (gave up after 3 attempts)"
        )

    started(simulator)  # the processor is back
    answer = requests.post(f"{service.url}/v1/transactions/{ids[0]}/retry", timeout=10)
    assert answer.status_code == 202
    again = requests.post(f"{service.url}/v1/transactions/{ids[0]}/retry", timeout=10)
    assert again.status_code == 409  # no longer FAILED
    assert wait_for_status(database, ids[:1], "PROCESSED")[ids[0]].attempts == 1

    # The rest in bulk, from the command line: a dry run first changes nothing.
    command = [str(BIN / "flask"), "--app", "app", "retry-failed", "--error-contains", "reach"]
    env = service.env
    dry = subprocess.run([*command, "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert sorted(dry.stdout.split()[-2:]) == sorted(ids[1:]), dry.stdout
    assert rows(database, ids[1:])[ids[1]].status == "FAILED"
    real = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert real.returncode == 0, real.stderr
    assert "re-drove 2" in real.stdout
    wait_for_status(database, ids, "PROCESSED")
    assert {k: simulator.keys()[k]["effects"] for k in ids} == dict.fromkeys(ids, 1)


def test_retry_after_is_honoured(tmp_path, postgres_url, redis_server, database, started):
    simulator = started(
        ProcessorSimulator(
            tmp_path, "--latency", "0", "--transient-rate", "1", "--retry-after", "20"
        )
    )
    service = started(
        service_with(
            tmp_path, postgres_url, redis_server, simulator, PROCESSING_RETRY_MAX_SECONDS="60"
        )
    )
    [transaction_id] = accept(service, 1)

    def first_outcome():
        row = rows(database, [transaction_id])[transaction_id]
        return row if row.last_error else None

    row = wait_until(first_outcome, timeout=30)
    assert row.attempts == 1
    # Backoff alone would be 0.2 s; the processor asked for 20.
    assert row.next_attempt_at >= datetime.now(UTC) + timedelta(seconds=15)


def test_a_worker_killed_mid_call_is_called_again_with_the_same_key_after_its_claim(
    tmp_path, postgres_url, redis_server, database, started
):
    # The kill must land while every call is still waiting: calls of 5 s, cut off at 6 s
    # (not at service_with's 2 s, which would answer retry-later before the kill).
    simulator = started(ProcessorSimulator(tmp_path, "--latency", "5"))
    service = started(
        service_with(tmp_path, postgres_url, redis_server, simulator, PROCESSOR_TIMEOUT_SECONDS="6")
    )
    ids = accept(service, 40)
    wait_until(lambda: simulator.stats()["in_flight"] == 40, timeout=30, interval=0.1)
    claimed = rows(database, ids)
    service["worker"].kill()
    service.start("worker")
    # Not called again while the first attempt is inside its claim...
    time.sleep(5)
    assert simulator.stats()["calls"] == 40
    # ...then called again, same key: processed, one effect each.
    done = wait_for_status(database, ids, "PROCESSED", timeout=90)
    for transaction_id in ids:
        assert done[transaction_id].processed_at >= claimed[transaction_id].claimed_until
        assert done[transaction_id].attempts == 2
        assert done[transaction_id].last_error.startswith("attempt 1 ended without an outcome")
    keys = simulator.keys()
    assert {i: (keys[i]["calls"], keys[i]["effects"]) for i in ids} == dict.fromkeys(ids, (2, 1))


def test_the_simulated_processor_with_no_delay_processes_each_at_the_first_attempt(
    tmp_path, postgres_url, redis_server, database, started
):
    service = started(
        Service(
            tmp_path,
            DATABASE_URL=postgres_url,
            CELERY_BROKER_URL=redis_server.url,
            PROCESSING_DELAY_SECONDS="0",
        )
    )
    ids = accept(service, 300)
    done = wait_for_status(database, ids, "PROCESSED")
    assert {row.attempts for row in done.values()} == {1}
    assert all(row.last_error is None for row in done.values())


def test_a_broker_that_stops_answering_does_not_hold_up_the_calls_of_a_full_batch(
    tmp_path, postgres_url, redis_server, database, started
):
    """A task that claims a full batch publishes one more task before it calls. A broker
    that takes the publish and never answers (packets dropped, as when a managed Redis
    fails over) must not keep the batch from its calls: its claims would run out uncalled,
    an attempt spent on each."""
    proxy = started(TCPProxy("127.0.0.1", redis_server.port))
    service = started(
        Service(
            tmp_path,
            DATABASE_URL=postgres_url,
            CELERY_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/0",
            PROCESSING_DELAY_SECONDS="0",
        )
    )
    wait_for_status(database, accept(service, 1), "PROCESSED", timeout=30)  # ticks arrive
    proxy.hold_new()  # the worker's first publish needs a connection of its own
    try:
        # All due at once, so that a tick claims a full batch and publishes: sent one by
        # one over HTTP, a loaded machine spread them over ticks in batches below 100.
        ids = [f"txn_full_batch_{n}" for n in range(150)]
        with database.begin() as connection:
            connection.execute(
                insert(Transaction),
                [
                    {
                        "transaction_id": transaction_id,
                        "source_account": "acc_a",
                        "destination_account": "acc_b",
                        "amount": Decimal("10.00"),
                        "currency": "USD",
                        "status": TransactionStatus.PROCESSING,
                        "next_attempt_at": datetime.now(UTC),
                    }
                    for transaction_id in ids
                ],
            )
        done = wait_for_status(database, ids, "PROCESSED", timeout=15)
        assert {row.attempts for row in done.values()} == {1}
        # The publish gives up in the end (socket timeouts, Celery's retries), and says so.
        unavailable = "broker unavailable, the next tick takes the backlog"
        wait_until(lambda: unavailable in service["worker"].log(), timeout=60)
    finally:
        proxy.release_held()  # so that the service stops as it should


def test_chaos_with_a_flaky_processor_loses_nothing_and_doubles_nothing(tmp_path):
    """scripts/chaos.py, smaller: the worker killed twice and Redis restarted under load,
    20% of calls failing and 5% timing out; exit status 0 means nothing lost or doubled,
    and every committed outcome logged."""
    command = [str(BIN / "python"), "-m", "scripts.chaos", "--processor"]
    command += ["--webhooks", "300", "--delay", "1", "--logs", str(tmp_path)]
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=280)
    # The report: one "name   value" line each, the columns two spaces or more apart.
    report = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in run.stdout.splitlines())
    assert run.returncode == 0, run.stdout + run.stderr
    assert report["processed"] == "300"
    assert report["doubled"] == "0"
    assert int(report["retries (calls past the first)"]) > 0  # the faults were real
