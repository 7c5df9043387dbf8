"""The pipeline in-process, on SQLite and PostgreSQL: claims, outcomes, retries, failures.

The processors here are scripted stand-ins for a deployment's real one (which we do
not ship); tests/test_http_processor.py and tests/test_processing_live.py use the
shipped HTTP processor against the simulator, in real processes.
"""

import logging
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import gevent
import pytest
from conftest import make_app
from helpers import as_json, webhook
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, event, select, text, update
from sqlalchemy.exc import SQLAlchemyError

from app.extensions import db
from app.processing.pipeline import (
    OutcomeWriter,
    RetryPolicy,
    RowChange,
    attempt,
    claim_due,
    process_claims,
)
from app.processing.processor import Done, FailedForGood, RetryLater
from app.processing.simulated import SimulatedProcessor
from app.store.models import Transaction, TransactionStatus
from app.store.transactions import redrive_failed

URL = "/v1/webhooks/transactions"
POLICY = RetryPolicy(base_seconds=5, max_seconds=3600, max_attempts=3)


class Scripted:
    """A processor that answers what it is told, and remembers what it was asked."""

    timeout_seconds = 5

    def __init__(self, *answers):
        self.answers = list(answers)
        self.calls = []

    def process(self, transaction):
        self.calls.append(transaction)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class PerTransaction(Scripted):
    """A processor that answers each transaction what it is told for that transaction."""

    def __init__(self, answers):
        super().__init__(None)
        self.by_transaction = answers

    def process(self, transaction):
        self.calls.append(transaction)
        return self.by_transaction[transaction.transaction_id]


def receive(app, count: int = 1, **fields) -> list[str]:
    client = app.test_client()
    ids = []
    for _ in range(count):
        body = webhook(**fields)
        response = client.post(URL, data=as_json(body), content_type="application/json")
        assert response.status_code == 202
        ids.append(body["transaction_id"])
    return ids


def row(app, transaction_id: str) -> Transaction:
    with app.app_context():
        found = db.session.get(Transaction, transaction_id)
        db.session.expunge_all()
        return found


def not_recorded(status: str) -> float:
    name = "processing_outcomes_not_recorded_total"
    return REGISTRY.get_sample_value(name, {"status": status}) or 0


def run_once(app, processor, policy=POLICY, limit=100, hold=60):
    """What one task run does: claim, call each at once, record each outcome."""
    with app.app_context():
        claims = claim_due(db.engine, limit, hold)
        process_claims(db.engine, processor, policy, claims)
    return claims


def test_a_received_transaction_is_claimed_at_once_and_held(app):
    [transaction_id] = receive(app, amount=Decimal("100.50"), currency="USD")
    before = datetime.now(UTC)
    with app.app_context():
        [claim] = claim_due(db.engine, 10, hold_seconds=90)
        assert claim_due(db.engine, 10, hold_seconds=90) == []  # held: nobody else takes it
    assert claim.transaction_id == transaction_id
    assert claim.attempt == 1
    assert claim.amount == Decimal("100.50") and claim.currency == "USD"
    held = row(app, transaction_id)
    assert held.attempts == 1
    assert held.claimed_until == held.next_attempt_at
    assert held.claimed_until >= before + timedelta(seconds=89)
    assert held.last_error is None


def test_an_expired_claim_is_claimed_again_as_the_next_attempt(app):
    [transaction_id] = receive(app)
    with app.app_context():
        claim_due(db.engine, 10, hold_seconds=0)  # a worker that died at once
        [again] = claim_due(db.engine, 10, hold_seconds=60)
    assert again.transaction_id == transaction_id and again.attempt == 2
    # Its row says why it is called again, and it stays said once the call is done.
    lost = (
        "attempt 1 ended without an outcome: its claim expired (the worker stopped or was "
        "lost mid-call); called again with the same Idempotency-Key"
    )
    assert row(app, transaction_id).last_error == lost
    with app.app_context():
        attempt(OutcomeWriter(db.engine), Scripted(Done("ref_1")), POLICY, again)
    assert row(app, transaction_id).status is TransactionStatus.PROCESSED
    assert row(app, transaction_id).last_error == lost


def test_a_first_claim_and_a_claim_after_a_retry_leave_the_last_error_as_it_was(app):
    [transaction_id] = receive(app)
    run_once(app, Scripted(RetryLater("the processor answered 503")))
    make_due(app, transaction_id)
    with app.app_context():
        [claim] = claim_due(db.engine, 10, hold_seconds=60)
    assert claim.attempt == 2
    assert row(app, transaction_id).last_error == "the processor answered 503"


def test_done_is_processed_with_the_reference(app):
    ids = receive(app, 3)
    processor = Scripted(Done("ref_123"))
    run_once(app, processor)
    assert sorted(c.transaction_id for c in processor.calls) == sorted(ids)
    for transaction_id in ids:
        done = row(app, transaction_id)
        assert done.status is TransactionStatus.PROCESSED
        assert done.processor_reference == "ref_123"
        assert done.attempts == 1
        assert done.processed_at >= done.created_at
        assert done.next_attempt_at is None and done.claimed_until is None
        assert done.last_error is None
    assert run_once(app, processor) == []  # nothing is called twice


def test_each_outcome_of_a_mixed_batch_lands_on_its_own_row(app):
    done, refused, retried = receive(app, 3)
    answers = {
        done: Done("ref_7"),
        refused: FailedForGood("the processor answered 422: account closed"),
        retried: RetryLater("the processor answered 503"),
    }

    run_once(app, PerTransaction(answers))
    assert row(app, done).status is TransactionStatus.PROCESSED
    assert row(app, done).processor_reference == "ref_7"
    assert row(app, done).last_error is None
    assert row(app, refused).status is TransactionStatus.FAILED
    assert row(app, refused).last_error == "the processor answered 422: account closed"
    assert row(app, refused).processor_reference is None
    assert row(app, retried).status is TransactionStatus.PROCESSING
    assert row(app, retried).last_error == "the processor answered 503"
    assert row(app, retried).next_attempt_at > datetime.now(UTC)


def test_done_after_a_retry_keeps_the_last_error_it_met(app):
    [transaction_id] = receive(app)
    run_once(app, Scripted(RetryLater("the processor answered 503")))
    make_due(app, transaction_id)
    run_once(app, Scripted(Done("ref_2")))
    done = row(app, transaction_id)
    assert done.status is TransactionStatus.PROCESSED
    assert done.processor_reference == "ref_2"
    assert done.last_error == "the processor answered 503"
    assert done.attempts == 2 and done.next_attempt_at is None and done.claimed_until is None


def test_a_processors_unstorable_characters_do_not_keep_its_outcome_from_being_recorded(app):
    """A NUL (PostgreSQL refuses it) or a lone surrogate (UTF-8 cannot encode it), as a
    processor's JSON body can carry, is replaced; the outcome is recorded."""
    done, refused = receive(app, 2)
    answers = {
        done: Done("ref\x00\ud800"),
        refused: FailedForGood("the processor answered 422: \x00\ud800"),
    }

    run_once(app, PerTransaction(answers))
    assert row(app, done).status is TransactionStatus.PROCESSED
    assert row(app, done).processor_reference == "ref\ufffd?"
    assert row(app, refused).status is TransactionStatus.FAILED
    assert row(app, refused).last_error == "the processor answered 422: \ufffd?"


def test_an_outcome_the_database_refuses_fails_alone_not_with_its_batch(app, database_url):
    """One outcome holds a value the database refuses (a reference longer than the
    column, which PostgreSQL rejects): the rest of its batch is still written."""
    ids = receive(app, 3)
    with app.app_context():
        claims = claim_due(db.engine, 10, hold_seconds=60)
        outcomes = OutcomeWriter(db.engine)
        too_long = {claims[1].transaction_id: "r" * 300}

        def record(claim):
            reference = too_long.get(claim.transaction_id, "ok")
            change = RowChange(TransactionStatus.PROCESSED, None, processor_reference=reference)
            return outcomes.record(claim, change)

        writes = [gevent.spawn(record, claim) for claim in claims]
        gevent.joinall(writes, timeout=10)
    by_id = dict(zip([c.transaction_id for c in claims], writes, strict=True))
    good = [i for i in ids if i not in too_long]
    assert all(by_id[i].value is True for i in good)
    assert {row(app, i).status for i in good} == {TransactionStatus.PROCESSED}
    if database_url.startswith("postgresql"):
        [bad] = too_long
        assert by_id[bad].exception is not None
        assert row(app, bad).status is TransactionStatus.PROCESSING


def test_outcomes_that_wait_out_the_pool_are_the_database_away_not_a_refused_value(app, caplog):
    """Every connection in use past pool_timeout is the database being away: the batch
    is not written again one outcome at a time, each waiting out the pool once more."""
    receive(app, 3)
    with app.app_context():
        claims = claim_due(db.engine, 10, hold_seconds=60)
        engine = create_engine(db.engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    outcomes = OutcomeWriter(engine)
    lost = not_recorded("PROCESSED")
    with engine.connect(), caplog.at_level(logging.WARNING, logger="app.processing.pipeline"):
        calls = [gevent.spawn(attempt, outcomes, Scripted(Done()), POLICY, c) for c in claims]
        gevent.joinall(calls, timeout=10)
    engine.dispose()
    assert [call.value for call in calls] == [None, None, None]
    away = [r for r in caplog.records if "database unavailable" in r.getMessage()]
    assert len(away) == 3
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert not_recorded("PROCESSED") == lost + 3  # told as processed, so counted as not so


def test_the_simulated_processor_is_the_default_and_answers_done(app):
    [transaction_id] = receive(app)
    assert isinstance(app.extensions["processor"], SimulatedProcessor)
    run_once(app, SimulatedProcessor(0, timeout_seconds=10))
    assert row(app, transaction_id).status is TransactionStatus.PROCESSED


def test_retry_later_backs_off_in_the_row_then_fails_after_the_last_attempt(app):
    [transaction_id] = receive(app)
    processor = Scripted(RetryLater("the processor answered 503"))
    started = datetime.now(UTC)
    run_once(app, processor)
    waiting = row(app, transaction_id)
    assert waiting.status is TransactionStatus.PROCESSING
    assert waiting.last_error == "the processor answered 503"
    assert waiting.claimed_until is None
    # First retry after base +/- 20%.
    assert started + timedelta(seconds=4) <= waiting.next_attempt_at
    assert waiting.next_attempt_at <= datetime.now(UTC) + timedelta(seconds=6)
    assert run_once(app, processor) == []  # not due yet
    shown = app.test_client().get(f"/v1/transactions/{transaction_id}").get_json()
    assert datetime.fromisoformat(shown["next_attempt_at"]) == waiting.next_attempt_at
    assert shown["failed_at"] is None

    for attempt_number in (2, 3):
        make_due(app, transaction_id)
        [claim] = run_once(app, processor)
        assert claim.attempt == attempt_number
    failed = row(app, transaction_id)
    assert failed.status is TransactionStatus.FAILED
    assert failed.attempts == POLICY.max_attempts
    assert failed.last_error == "the processor answered 503 (gave up after 3 attempts)"
    assert failed.failed_at is not None and failed.next_attempt_at is None
    shown = app.test_client().get(f"/v1/transactions/{transaction_id}").get_json()
    assert datetime.fromisoformat(shown["failed_at"]) == failed.failed_at
    assert shown["next_attempt_at"] is None and shown["status"] == "FAILED"


def test_a_permanent_refusal_fails_after_one_attempt_with_its_reason(app):
    [transaction_id] = receive(app)
    run_once(app, Scripted(FailedForGood("the processor answered 422: account closed")))
    failed = row(app, transaction_id)
    assert failed.status is TransactionStatus.FAILED
    assert failed.attempts == 1
    assert failed.last_error == "the processor answered 422: account closed"


def test_retry_after_is_honoured_up_to_the_maximum(app):
    first, second = receive(app, 2)
    policy = RetryPolicy(base_seconds=1, max_seconds=120, max_attempts=10)
    answers = {first: RetryLater("429", 90), second: RetryLater("429", 5000)}

    started = datetime.now(UTC)
    run_once(app, PerTransaction(answers), policy)
    assert started + timedelta(seconds=90) <= row(app, first).next_attempt_at
    assert row(app, first).next_attempt_at <= datetime.now(UTC) + timedelta(seconds=90)
    assert row(app, second).next_attempt_at <= datetime.now(UTC) + timedelta(seconds=120)


def test_a_processor_that_raises_is_retried_not_lost(app):
    [transaction_id] = receive(app)
    run_once(app, Scripted(RuntimeError("bug in a processor")))
    waiting = row(app, transaction_id)
    assert waiting.status is TransactionStatus.PROCESSING
    assert waiting.last_error == "the processor raised RuntimeError"


def test_a_late_answer_of_an_earlier_attempt_cannot_overwrite_a_later_outcome(app):
    [transaction_id] = receive(app)
    with app.app_context():
        [first] = claim_due(db.engine, 10, hold_seconds=0)  # its claim expires...
        [second] = claim_due(db.engine, 10, hold_seconds=60)  # ...and a second attempt starts
        retry = Scripted(RetryLater("the processor answered 503"))
        outcomes = OutcomeWriter(db.engine)
        assert attempt(outcomes, retry, POLICY, second) is TransactionStatus.PROCESSING
        # The first attempt's answer arrives after all: it changes nothing, and says so.
        discarded = not_recorded("PROCESSED")
        assert attempt(outcomes, Scripted(Done("late")), POLICY, first) is None
        assert not_recorded("PROCESSED") == discarded + 1
        late = RowChange(TransactionStatus.PROCESSED, None, processor_reference="late")
        assert not outcomes.record(first, late)
    after = row(app, transaction_id)
    assert after.status is TransactionStatus.PROCESSING
    assert after.processor_reference is None
    assert after.last_error == "the processor answered 503"


def test_a_late_answer_from_before_a_redrive_cannot_overwrite_the_attempt_after_it(app):
    """A re-drive counts attempts afresh, so its first attempt has the number of the first
    attempt before it; that one's answer, arriving late, must not pass for the new one's."""
    [transaction_id] = receive(app)
    with app.app_context():
        [stale] = claim_due(db.engine, 10, hold_seconds=0)  # attempt 1: its claim expires
        [second] = claim_due(db.engine, 10, hold_seconds=60)
        outcomes = OutcomeWriter(db.engine)
        refusal = Scripted(FailedForGood("the processor answered 422"))
        assert attempt(outcomes, refusal, POLICY, second) is TransactionStatus.FAILED
        assert redrive_failed(transaction_ids=[transaction_id]) == [transaction_id]
        [fresh] = claim_due(db.engine, 10, hold_seconds=60)
        assert fresh.attempt == stale.attempt == 1
        # The attempt from before the re-drive answers: "again at once". Nothing changes,
        # so the row does not fall due while the fresh attempt still holds it...
        now = Scripted(RetryLater("the processor answered 503", delay_seconds=0))
        assert attempt(outcomes, now, POLICY, stale) is None
        assert claim_due(db.engine, 10, hold_seconds=60) == []
        # ...and the fresh attempt's answer is the one recorded.
        done = Scripted(Done("fresh"))
        assert attempt(outcomes, done, POLICY, fresh) is TransactionStatus.PROCESSED
    after = row(app, transaction_id)
    assert after.status is TransactionStatus.PROCESSED
    assert after.processor_reference == "fresh" and after.attempts == 1


def test_outcomes_that_arrive_together_are_written_in_one_transaction(app):
    ids = receive(app, 50)
    with app.app_context():
        claims = claim_due(db.engine, 100, hold_seconds=60)
        transactions = []

        def began(connection):
            transactions.append(connection)

        event.listen(db.engine, "begin", began)
        try:
            process_claims(db.engine, SimulatedProcessor(0, 5), POLICY, claims)
        finally:
            event.remove(db.engine, "begin", began)
    assert len(transactions) == 1  # not one commit per outcome
    assert {row(app, i).status for i in ids} == {TransactionStatus.PROCESSED}


def test_outcomes_waiting_for_a_writer_that_is_killed_are_answered(app):
    """The first outcome to arrive writes the others; if its green thread is killed
    mid-write, the others get an error (their claims expire and they are retried)
    instead of waiting for ever and holding their task."""
    receive(app, 2)

    def slow_statement(*_):
        gevent.sleep(0.2)

    def still_waiting(error):
        return RowChange(TransactionStatus.PROCESSING, datetime.now(UTC), last_error=error)

    with app.app_context():
        first, second = claim_due(db.engine, 10, hold_seconds=60)
        outcomes = OutcomeWriter(db.engine)
        event.listen(db.engine, "before_cursor_execute", slow_statement)
        try:
            writer = gevent.spawn(outcomes.record, first, still_waiting("first"))
            gevent.sleep(0.05)  # the writer is inside its statement
            waiter = gevent.spawn(outcomes.record, second, still_waiting("second"))
            gevent.sleep(0.05)  # the second outcome waits for the writer
            writer.kill()
            waiter.join(timeout=5)
        finally:
            event.remove(db.engine, "before_cursor_execute", slow_statement)
    assert waiter.ready(), "the waiting outcome was left hanging"
    assert isinstance(waiter.exception, SQLAlchemyError)
    assert row(app, first.transaction_id).last_error is None  # rolled back
    assert row(app, second.transaction_id).last_error is None


def test_every_outcome_is_logged_with_its_attempt_before_it_is_committed(app, caplog):
    [transaction_id] = receive(app)
    run_once(app, Scripted(RetryLater("the processor answered 503")))
    make_due(app, transaction_id)
    run_once(app, Scripted(Done("ref_9")))
    lines = [r for r in caplog.records if r.name == "app.processing.pipeline"]
    assert [(r.transaction_id, r.attempt, r.outcome) for r in lines] == [
        (transaction_id, 1, "retry_later"),
        (transaction_id, 2, "done"),
    ]
    assert all(r.duration_seconds >= 0 for r in lines)
    assert [r.levelname for r in lines] == ["INFO", "INFO"]


@pytest.mark.parametrize(
    "answers",
    [
        [FailedForGood("the processor answered 422: account closed")],
        [RetryLater("the processor answered 503")] * 3,  # the last attempt gives up
    ],
)
def test_an_attempt_that_ends_failed_is_logged_as_a_warning(app, caplog, answers):
    """A FAILED transaction moves no money until it is re-driven: it shows among the
    warnings, where a retry scheduled or a success does not."""
    [transaction_id] = receive(app)
    for answer in answers:
        make_due(app, transaction_id)
        run_once(app, Scripted(answer))
    assert row(app, transaction_id).status is TransactionStatus.FAILED
    lines = [r for r in caplog.records if r.name == "app.processing.pipeline"]
    assert [r.levelname for r in lines] == ["INFO"] * (len(answers) - 1) + ["WARNING"]
    assert lines[-1].status == "FAILED"


def test_concurrent_claims_share_the_backlog_and_claim_each_transaction_once(app):
    ids = receive(app, 300)
    claimed: list[list[str]] = []
    start = threading.Barrier(4)

    def claim_all():
        with app.app_context():
            start.wait()
            mine = []
            while batch := claim_due(db.engine, 20, hold_seconds=60):
                mine += [c.transaction_id for c in batch]
            claimed.append(mine)

    threads = [threading.Thread(target=claim_all) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [transaction_id for mine in claimed for transaction_id in mine]
    assert sorted(everything) == sorted(ids)  # every one, and none twice


@pytest.mark.parametrize("attempt_number,low,high", [(1, 4, 6), (2, 8, 12), (5, 64, 96)])
def test_backoff_doubles_with_jitter(attempt_number, low, high):
    delays = [POLICY.delay(attempt_number, None, jitter=lambda x=x: x) for x in (0, 0.5, 0.999)]
    assert low <= min(delays) and max(delays) <= high
    assert delays[1] == pytest.approx(5 * 2 ** (attempt_number - 1))


def test_backoff_stops_growing_at_the_maximum():
    policy = RetryPolicy(base_seconds=5, max_seconds=3600, max_attempts=100)
    assert policy.delay(40, None) <= 3600
    assert policy.delay(3, requested=7200) == 3600


def make_due(app, transaction_id: str) -> None:
    with app.app_context(), db.engine.connect() as connection:
        connection.execute(
            update(Transaction)
            .where(Transaction.transaction_id == transaction_id)
            .values(next_attempt_at=datetime.now(UTC) - timedelta(seconds=1))
        )


def test_stale_statistics_do_not_turn_the_claim_inside_out(postgres_url):
    """ANALYZE on an empty backlog, then 100,000 due rows: each claim takes its batch only.

    With `UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` the
    planner, told by the statistics that nothing is PROCESSING, re-ran the subquery
    per row: the limit was ignored and a claim took far more than its batch.
    """
    from conftest import make_app

    app = make_app(postgres_url)
    with app.app_context(), db.engine.connect() as connection:
        connection.execute(text("DELETE FROM transactions"))
        connection.execute(text("ANALYZE transactions"))
        connection.execute(
            text(
                "INSERT INTO transactions (transaction_id, source_account, destination_account,"
                " amount, currency, status, created_at, next_attempt_at)"
                " SELECT 'stale_' || n, 'a', 'b', 1, 'USD', 'PROCESSING', now(), now()"
                " FROM generate_series(1, 100000) AS n"
            )
        )
        batches = []
        while batch := claim_due(db.engine, 1000, hold_seconds=600):
            batches.append(len(batch))
        assert max(batches) == 1000
        assert sum(batches) == 100_000
        left = connection.scalar(
            select(Transaction.transaction_id).where(Transaction.attempts != 1).limit(1)
        )
        assert left is None  # every row claimed exactly once
        connection.execute(text("DELETE FROM transactions"))
        db.engine.dispose()


@pytest.mark.parametrize("since", ["yesterday", "0001-01-01T00:00:00+01:00"])
def test_retry_failed_with_a_since_it_cannot_read_says_so_and_changes_nothing(app, since):
    [transaction_id] = receive(app)
    with app.app_context():
        [claim] = claim_due(db.engine, 10, hold_seconds=60)
        refusal = Scripted(FailedForGood("the processor answered 422"))
        assert attempt(OutcomeWriter(db.engine), refusal, POLICY, claim) is TransactionStatus.FAILED
    result = app.test_cli_runner().invoke(args=["retry-failed", "--since", since])
    assert result.exit_code == 2
    assert "use ISO 8601" in result.output and "Traceback" not in result.output
    assert row(app, transaction_id).status is TransactionStatus.FAILED


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_retry_failed_with_the_database_away_says_so_in_one_line(dry_run):
    """Not a SQLAlchemy traceback: where it looked, why, and what to do."""
    away = make_app("postgresql+psycopg2://webhooks:s3cret-pw@127.0.0.1:1/webhooks")
    result = away.test_cli_runner().invoke(args=["retry-failed", *dry_run])
    assert result.exit_code == 1
    assert result.output.startswith(
        "Error: the database does not answer at postgresql+psycopg2://webhooks:***@127.0.0.1:1/"
    ), result.output
    assert "Run it again once it does: it re-drives only what is still FAILED." in result.output
    assert "Traceback" not in result.output and "s3cret-pw" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def failed_rows(app, count: int) -> list[str]:
    """`count` FAILED transactions, the longest failed first: the reverse of the order in
    which they were received, so that neither that nor the table's order can pass for it."""
    ids = receive(app, count)
    with app.app_context(), db.engine.begin() as connection:
        for minutes_ago, transaction_id in enumerate(ids, 1):
            connection.execute(
                update(Transaction)
                .where(Transaction.transaction_id == transaction_id)
                .values(
                    status=TransactionStatus.FAILED,
                    next_attempt_at=None,
                    attempts=3,
                    failed_at=datetime.now(UTC) - timedelta(minutes=minutes_ago),
                    last_error="the processor answered 503 (gave up after 3 attempts)",
                )
            )
    return ids[::-1]


def test_retry_failed_limit_re_drives_the_longest_failed_first_in_waves(app):
    ids = failed_rows(app, 5)
    cli = app.test_cli_runner()
    preview = cli.invoke(args=["retry-failed", "--limit", "2", "--dry-run"])
    assert preview.exit_code == 0, preview.output
    assert preview.output.splitlines() == ["would re-drive 2 FAILED transactions", *ids[:2]]
    assert {row(app, i).status for i in ids} == {TransactionStatus.FAILED}

    assert {row(app, i).redriven_at for i in ids} == {None}
    before = datetime.now(UTC)
    first = cli.invoke(args=["retry-failed", "--limit", "2"])
    assert first.output.splitlines() == ["re-drove 2 FAILED transactions", *ids[:2]]
    # The row keeps the trace: when it was re-driven, and why it had failed.
    assert all(row(app, i).redriven_at >= before for i in ids[:2])
    assert row(app, ids[0]).last_error.endswith("(gave up after 3 attempts)")
    second = cli.invoke(args=["retry-failed", "--limit", "2"])
    assert second.output.splitlines() == ["re-drove 2 FAILED transactions", *ids[2:4]]
    assert [row(app, i).status.value for i in ids] == ["PROCESSING"] * 4 + ["FAILED"]
    assert cli.invoke(args=["retry-failed", "--limit", "0"]).exit_code == 2


def test_retry_failed_transaction_id_re_drives_only_those(app):
    ids = failed_rows(app, 3)
    result = app.test_cli_runner().invoke(
        args=["retry-failed", "--transaction-id", ids[2], "--transaction-id", ids[0]]
    )
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "re-drove 2 FAILED transactions"
    assert sorted(result.output.splitlines()[1:]) == sorted([ids[0], ids[2]])
    assert [row(app, i).status.value for i in ids] == ["PROCESSING", "FAILED", "PROCESSING"]
