"""The worker's half: process_due_transactions, on SQLite and PostgreSQL."""

import threading

from helpers import as_json, webhook
from sqlalchemy import select
from test_webhooks import URL

from app.extensions import db
from app.store.models import Transaction, TransactionStatus
from app.store.transactions import process_due_transactions


def receive(app, count: int, delay: float) -> list[str]:
    app.config["PROCESSING_DELAY_SECONDS"] = delay
    client = app.test_client()
    ids = []
    for _ in range(count):
        body = webhook()
        response = client.post(URL, data=as_json(body), content_type="application/json")
        assert response.status_code == 202
        ids.append(body["transaction_id"])
    return ids


def rows(app, ids) -> dict[str, Transaction]:
    with app.app_context():
        found = db.session.scalars(select(Transaction).where(Transaction.transaction_id.in_(ids)))
        return {row.transaction_id: row for row in found}


def test_only_transactions_whose_delay_has_passed_are_processed(app):
    due = receive(app, 3, delay=0)
    waiting = receive(app, 2, delay=3600)

    with app.app_context():
        processed = process_due_transactions()

    assert sorted(p.transaction_id for p in processed) == sorted(due)
    for row in rows(app, due).values():
        assert row.status is TransactionStatus.PROCESSED
        assert row.processed_at >= row.next_attempt_at
    for row in rows(app, waiting).values():
        assert row.status is TransactionStatus.PROCESSING
        assert row.processed_at is None


def test_processing_again_changes_nothing(app):
    ids = receive(app, 2, delay=0)
    with app.app_context():
        assert len(process_due_transactions()) == 2
    first = {i: row.processed_at for i, row in rows(app, ids).items()}

    with app.app_context():
        assert process_due_transactions() == []
    assert {i: row.processed_at for i, row in rows(app, ids).items()} == first


def test_a_backlog_larger_than_a_batch_is_processed_in_one_run(app):
    ids = receive(app, 25, delay=0)
    with app.app_context():
        processed = process_due_transactions(batch_size=10)
    assert len(processed) == 25
    assert all(row.status is TransactionStatus.PROCESSED for row in rows(app, ids).values())


def test_concurrent_runs_share_the_backlog_and_process_each_transaction_once(app):
    ids = receive(app, 300, delay=0)
    results: list[list[str]] = []
    start = threading.Barrier(4)

    def run():
        with app.app_context():
            start.wait()
            results.append([p.transaction_id for p in process_due_transactions(batch_size=20)])

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    processed = [transaction_id for run_ids in results for transaction_id in run_ids]
    assert sorted(processed) == sorted(ids)  # every one, and none twice
