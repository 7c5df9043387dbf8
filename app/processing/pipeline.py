"""From a committed PROCESSING row to an outcome: claim, call the processor, record.

The committed row is the only record of pending work (the outbox): a webhook's 202
means its row is committed, and nothing has to reach a broker for it to be processed.
A transaction is due when it is PROCESSING and `next_attempt_at` has passed.

1. `claim_due` takes up to a batch of due rows in one statement, counts the attempt
   and holds each row for the processor's timeout plus a margin, by moving its
   `next_attempt_at` (and `claimed_until`) there. Nobody else calls the processor for
   it before then; if this worker dies, the row simply falls due again then.
2. `process_claims` calls the processor for every claimed row at once, each in its
   own greenlet: the wait holds a greenlet, not a worker process.
3. `OutcomeWriter` writes each outcome with an UPDATE conditional on the attempt it
   belongs to, so a late answer from an earlier attempt can never overwrite a later
   outcome. Outcomes that arrive together share one commit.

Each outcome is logged and counted before it is committed: a worker killed right
after the commit has already told. (A worker killed between the two leaves a line for
an outcome that the next attempt records again, with the same idempotency key.)
"""

import functools
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import gevent
from gevent.event import AsyncResult
from sqlalchemy import Engine, Update, any_, bindparam, func, literal_column, select, update
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.processing.processor import (
    Done,
    FailedForGood,
    Outcome,
    Processor,
    RetryLater,
    TransactionToProcess,
)
from app.store.models import Transaction, TransactionStatus, utcnow

log = logging.getLogger(__name__)

# Rows one task claims and calls at once. With WORKER_GREEN_THREADS (app/config.py)
# tasks at a time, one worker process keeps up to 100 x 100 calls in flight.
BATCH_SIZE = 100

TABLE = Transaction.__table__
STILL_PROCESSING = TABLE.c.status == TransactionStatus.PROCESSING


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float  # the first retry waits this long, each next one twice as long
    max_seconds: float
    max_attempts: int

    @classmethod
    def from_config(cls, config: Any) -> "RetryPolicy":
        return cls(
            config["PROCESSING_RETRY_BASE_SECONDS"],
            config["PROCESSING_RETRY_MAX_SECONDS"],
            config["PROCESSING_MAX_ATTEMPTS"],
        )

    def delay(
        self, attempt: int, requested: float | None, jitter: Callable[[], float] = random.random
    ) -> float:
        """Seconds before the attempt after `attempt`: what the processor asked for (up to
        the maximum), else exponential backoff with +/-20% jitter, so that transactions
        that failed together do not all come back together."""
        if requested is not None:
            return min(requested, self.max_seconds)
        backoff = self.base_seconds * 2 ** min(attempt - 1, 64)
        return min(backoff * (0.8 + 0.4 * jitter()), self.max_seconds)


def claim_due(engine: Engine, limit: int, hold_seconds: float) -> list[TransactionToProcess]:
    """Claim up to `limit` due transactions, oldest due first, for `hold_seconds`.

    One statement, whatever PostgreSQL's statistics say, touches each due row once:
    a MATERIALIZED CTE walks the due index and locks the rows (SKIP LOCKED, so that
    concurrent claims share a backlog), and the UPDATE finds them again by their
    physical row id (a TID scan). Both earlier forms turned inside out on stale
    statistics (an ANALYZE taken when nothing was waiting): as `WHERE id IN (SELECT
    ... LIMIT n)` the planner re-ran the subquery per row and ignored the limit; as
    `UPDATE ... FROM due WHERE id = due.id` it scanned the whole table once per due
    row. tests/test_processing.py reproduces both with 100,000 due rows.
    """
    now = utcnow()
    until = now + timedelta(seconds=hold_seconds)
    postgres = engine.dialect.name == "postgresql"
    row_id = literal_column("ctid" if postgres else "rowid")
    due = (
        select(row_id.label("row_id"))
        .select_from(TABLE)
        .where(STILL_PROCESSING, TABLE.c.next_attempt_at <= now)
        .order_by(TABLE.c.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
        .prefix_with("MATERIALIZED")
    )
    picked = select(due.c.row_id).scalar_subquery()
    statement = (
        update(TABLE)
        .where(row_id == any_(func.array(picked)) if postgres else row_id.in_(picked))
        .values(attempts=TABLE.c.attempts + 1, claimed_until=until, next_attempt_at=until)
        .returning(
            TABLE.c.transaction_id,
            TABLE.c.source_account,
            TABLE.c.destination_account,
            TABLE.c.amount,
            TABLE.c.currency,
            TABLE.c.attempts,
            TABLE.c.created_at,
        )
    )
    with engine.connect() as connection:  # one statement, committed on its own
        rows = connection.execute(statement).all()
    return [
        TransactionToProcess(
            row.transaction_id,
            row.source_account,
            row.destination_account,
            row.amount,
            row.currency,
            received_at=row.created_at,
            attempt=row.attempts,
        )
        for row in rows
    ]


def process_claims(
    engine: Engine, processor: Processor, policy: RetryPolicy, claims: list[TransactionToProcess]
) -> None:
    """Call the processor for every claim at once and record each outcome as it comes."""
    outcomes = OutcomeWriter(engine)
    greenlets = [gevent.spawn(attempt, outcomes, processor, policy, claim) for claim in claims]
    gevent.joinall(greenlets)


def attempt(
    outcomes: "OutcomeWriter",
    processor: Processor,
    policy: RetryPolicy,
    claim: TransactionToProcess,
) -> TransactionStatus | None:
    """One processor call for one claimed transaction, its outcome logged, counted, recorded.

    Returns the status recorded, or None if nothing was (a later attempt owns the row,
    or the database is away: the claim then expires and the transaction is retried).
    """
    started = time.perf_counter()
    metrics.PROCESSOR_IN_FLIGHT.inc()
    try:
        with gevent.Timeout(processor.timeout_seconds):
            outcome = processor.process(claim)
    except gevent.Timeout:
        outcome = RetryLater(f"no answer from the processor within {processor.timeout_seconds:g} s")
    except Exception as exc:  # a processor's bug must not lose the transaction
        log.exception("processor raised on transaction %s", claim.transaction_id)
        outcome = RetryLater(f"the processor raised {type(exc).__name__}")
    finally:
        metrics.PROCESSOR_IN_FLIGHT.dec()
    seconds = time.perf_counter() - started
    status, values, summary = decide(claim, outcome, policy)
    _tell(claim, outcome, status, summary, seconds, values)
    try:
        recorded = outcomes.record(claim, values)
    except SQLAlchemyError as exc:
        log.warning(
            "transaction %s attempt %d: outcome not recorded, database unavailable (%s); "
            "it is retried when its claim expires",
            claim.transaction_id,
            claim.attempt,
            str(exc).splitlines()[0],
        )
        return None
    if not recorded:
        log.warning(
            "transaction %s attempt %d: outcome discarded, a later attempt owns the transaction",
            claim.transaction_id,
            claim.attempt,
        )
        return None
    return status


def decide(
    claim: TransactionToProcess, outcome: Outcome, policy: RetryPolicy
) -> tuple[TransactionStatus, dict[str, Any], str]:
    """The row's next state for this outcome: (status, column values, a few words for the log)."""
    now = utcnow()
    processed, failed = TransactionStatus.PROCESSED, TransactionStatus.FAILED
    final = {"claimed_until": None, "next_attempt_at": None}
    if isinstance(outcome, Done):
        values = {
            "status": processed,
            "processed_at": now,
            "processor_reference": outcome.reference,
        }
        return processed, final | values, "done"
    if isinstance(outcome, FailedForGood):
        values = {"status": failed, "failed_at": now, "last_error": outcome.reason}
        return failed, final | values, f"failed for good: {outcome.reason}"
    if claim.attempt >= policy.max_attempts:
        reason = f"{outcome.reason} (gave up after {claim.attempt} attempts)"
        values = {"status": failed, "failed_at": now, "last_error": reason}
        return failed, final | values, f"failed: {reason}"
    delay = policy.delay(claim.attempt, outcome.delay_seconds)
    values = {
        "claimed_until": None,
        "next_attempt_at": now + timedelta(seconds=delay),
        "last_error": outcome.reason,
    }
    return TransactionStatus.PROCESSING, values, f"retry in {delay:.1f} s: {outcome.reason}"


# An outcome waiting to be written: the attempt, the row's new values, and where the
# writer answers whether it was recorded.
Waiting = tuple[TransactionToProcess, dict[str, Any], AsyncResult]


class OutcomeWriter:
    """Writes outcomes, each with an UPDATE conditional on its attempt; the outcomes that
    arrive together share one transaction (a group commit).

    The calls of a batch often end together: the simulated processor's to the
    millisecond, a real processor's within a few. Committed one by one, each outcome
    cost a pool checkout, a freshly built statement and a WAL flush of its own.
    The first outcome to arrive is written at once; those that arrive while it is
    being written wait, and go together in the next transaction.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting: list[Waiting] = []
        self.writing = False

    def record(self, claim: TransactionToProcess, values: dict[str, Any]) -> bool:
        """Write the outcome if this attempt still owns the row; False if a later one does.

        Raises SQLAlchemyError if the database did not take it."""
        result = AsyncResult()
        self.waiting.append((claim, values, result))
        if not self.writing:
            self._write_while_waiting()
        return result.get()

    def _write_while_waiting(self) -> None:
        self.writing = True
        batch: list[Waiting] = []
        try:
            while self.waiting:
                # Let the outcomes that arrived with these join them, even where the
                # database driver does not yield while it writes (SQLite).
                gevent.sleep(0)
                # In one order, so that two writers never wait for each other's rows.
                batch = sorted(self.waiting, key=lambda waiting: waiting[0].transaction_id)
                self.waiting = []
                self._write(batch)
        finally:
            self.writing = False
            # Only left unanswered if this greenlet was killed while writing: its
            # transaction was rolled back, and nobody else would answer them.
            for _, _, result in batch + self.waiting:
                if not result.ready():
                    result.set_exception(SQLAlchemyError("the outcome writer was stopped"))

    def _write(self, batch: list[Waiting]) -> None:
        recorded: list[bool] = []
        try:
            with self.engine.connect() as autocommit_connection:
                # The engine autocommits each statement (app/extensions.py): ask for
                # one transaction around the batch.
                connection = autocommit_connection.execution_options(
                    isolation_level=autocommit_connection.dialect.default_isolation_level
                )
                with connection.begin():
                    for claim, values, _ in batch:
                        parameters = {f"new_{name}": value for name, value in values.items()}
                        parameters |= {
                            "claimed_id": claim.transaction_id,
                            "claimed_attempt": claim.attempt,
                        }
                        statement = _conditional_update(frozenset(values))
                        recorded.append(connection.execute(statement, parameters).rowcount == 1)
        except SQLAlchemyError as exc:
            for _, _, result in batch:
                result.set_exception(exc)
            return
        for (_, _, result), was_recorded in zip(batch, recorded, strict=True):
            result.set(was_recorded)


@functools.cache
def _conditional_update(columns: frozenset[str]) -> Update:
    """The UPDATE that writes these columns of a row if the attempt still owns it,
    built once per set of columns (there are three: done, failed, retry)."""
    return (
        update(TABLE)
        .where(
            TABLE.c.transaction_id == bindparam("claimed_id"),
            TABLE.c.attempts == bindparam("claimed_attempt"),
            STILL_PROCESSING,
        )
        .values({name: bindparam(f"new_{name}", type_=TABLE.c[name].type) for name in columns})
    )


def _tell(
    claim: TransactionToProcess,
    outcome: Outcome,
    status: TransactionStatus,
    summary: str,
    seconds: float,
    values: dict[str, Any],
) -> None:
    """One log line and the metrics for this attempt's outcome, before it is committed."""
    answer = {Done: "done", RetryLater: "retry_later", FailedForGood: "failed_for_good"}[
        type(outcome)
    ]
    waited = None
    if status is TransactionStatus.PROCESSED:
        waited = (values["processed_at"] - claim.received_at).total_seconds()
    log.info(
        "transaction %s attempt %d: %s (call %.3f s)%s",
        claim.transaction_id,
        claim.attempt,
        summary,
        seconds,
        f", {waited:.3f} s after it was received" if waited is not None else "",
        extra={
            "transaction_id": claim.transaction_id,
            "attempt": claim.attempt,
            "outcome": answer,
            "status": status.value,
            "duration_seconds": round(seconds, 4),
        },
    )
    metrics.record_attempt(answer, seconds, status.value, claim.attempt, waited)
