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
3. `OutcomeWriter` writes each outcome with an UPDATE conditional on the claim it
   belongs to (the attempt and its `claimed_until`), so a late answer from an earlier
   attempt, even one from before a re-drive, can never overwrite a later outcome.
   Outcomes that arrive together share one commit.

Each outcome is logged and counted before it is committed: a worker killed right
after the commit has already told. (A worker killed between the two leaves a line for
an outcome that the next attempt records again, with the same idempotency key.)
"""

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import gevent
from gevent.event import AsyncResult
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    text,
    update,
)
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

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

# Errors that say the database is away, not that it refused a value; a pool whose
# connections all stayed in use past pool_timeout counts as away.
DATABASE_AWAY = (OperationalError, InterfaceError, PoolTimeoutError)
REFERENCE_CHARS = 255  # the processor_reference column

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
        .values(
            attempts=TABLE.c.attempts + 1,
            claimed_until=until,
            next_attempt_at=until,
            last_error=case(
                # Still claimed, yet due: the attempt before this one never recorded an
                # outcome. Say so, or its row would show nothing of why it is called again.
                (TABLE.c.claimed_until.is_not(None), _lost_attempt(TABLE.c.attempts)),
                else_=TABLE.c.last_error,
            ),
        )
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
            claimed_until=until,
        )
        for row in rows
    ]


def _lost_attempt(attempt: ColumnElement[int]) -> ColumnElement[str]:
    """Why a transaction is called again with no outcome recorded, written in SQL."""
    return (
        literal("attempt ")
        + cast(attempt, String)
        + literal(
            " ended without an outcome: its claim expired (the worker stopped or was lost "
            "mid-call); called again with the same Idempotency-Key"
        )
    )


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

    Returns the status recorded, or None if nothing was (a later attempt holds the row,
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
    change, summary = decide(claim, outcome, policy)
    _tell(claim, outcome, change, summary, seconds)
    try:
        recorded = outcomes.record(claim, change)
    except DATABASE_AWAY as exc:
        log.warning(
            "transaction %s attempt %d: outcome not recorded, database unavailable (%s); "
            "it is retried when its claim expires",
            claim.transaction_id,
            claim.attempt,
            str(exc).splitlines()[0],
        )
        recorded = None
    except Exception:  # a value the database refused; the rest of its batch is written
        log.exception(
            "transaction %s attempt %d: outcome not recorded; it is retried when its claim expires",
            claim.transaction_id,
            claim.attempt,
        )
        recorded = None
    if recorded is False:
        log.warning(
            "transaction %s attempt %d: outcome discarded, a later attempt holds the transaction",
            claim.transaction_id,
            claim.attempt,
        )
    if not recorded:
        metrics.OUTCOMES_NOT_RECORDED.labels(change.status.value).inc()  # told above all the same
        return None
    return change.status


@dataclass(frozen=True)
class RowChange:
    """What an outcome writes to its row, besides releasing the claim. None leaves a
    column as it is, except `next_attempt_at`: None there means nothing more to attempt."""

    status: TransactionStatus
    next_attempt_at: datetime | None
    processed_at: datetime | None = None
    failed_at: datetime | None = None
    last_error: str | None = None
    processor_reference: str | None = None


def decide(
    claim: TransactionToProcess, outcome: Outcome, policy: RetryPolicy
) -> tuple[RowChange, str]:
    """The row's next state for this outcome, and a few words for the log."""
    now = utcnow()
    processed, failed = TransactionStatus.PROCESSED, TransactionStatus.FAILED
    if isinstance(outcome, Done):
        reference = _storable(outcome.reference, REFERENCE_CHARS)
        return RowChange(processed, None, processed_at=now, processor_reference=reference), "done"
    reason = _storable(outcome.reason)
    if isinstance(outcome, FailedForGood):
        change = RowChange(failed, None, failed_at=now, last_error=reason)
        return change, f"failed for good: {reason}"
    if claim.attempt >= policy.max_attempts:
        reason = f"{reason} (gave up after {claim.attempt} attempts)"
        return RowChange(failed, None, failed_at=now, last_error=reason), f"failed: {reason}"
    delay = policy.delay(claim.attempt, outcome.delay_seconds)
    retry_at = now + timedelta(seconds=delay)
    change = RowChange(TransactionStatus.PROCESSING, next_attempt_at=retry_at, last_error=reason)
    return change, f"retry in {delay:.1f} s: {reason}"


def _storable(text: str | None, limit: int | None = None) -> str | None:
    """A processor's words as the database can store them: no NUL (PostgreSQL refuses
    it) and nothing UTF-8 cannot encode (a lone surrogate from a JSON body), cut to
    the column's length. Otherwise its outcome could never be recorded."""
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
    return text[:limit]


# An outcome waiting to be written: the attempt, its row's change, and where the
# writer answers whether it was recorded.
Waiting = tuple[TransactionToProcess, RowChange, AsyncResult]


class OutcomeWriter:
    """Writes outcomes, each conditional on its attempt; the outcomes that arrive
    together are written together (a group commit): one statement on PostgreSQL,
    one transaction on SQLite.

    The calls of a batch often end together: the simulated processor's to the
    millisecond, a real processor's within a few. Written one by one, each outcome
    cost a pool checkout, a round trip and a commit (a WAL flush) of its own, and
    the worker's CPU per transaction was three times what it is now (README,
    Performance). The first outcome to arrive is written at once; those that arrive
    while it is being written wait, and go together in the next write.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.waiting: list[Waiting] = []
        self.writing = False

    def record(self, claim: TransactionToProcess, change: RowChange) -> bool:
        """Write the outcome if this attempt still holds its claim; False if a later one does.

        Raises SQLAlchemyError if the database did not take it."""
        result = AsyncResult()
        self.waiting.append((claim, change, result))
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
                # In one order: two writers whose batches overlap (a late answer
                # and the attempt after it) then take the rows' locks in one order.
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
        try:
            with self.engine.connect() as connection:
                if connection.dialect.name == "postgresql":
                    recorded = _update_all_at_once(connection, batch)
                else:
                    recorded = _update_one_by_one(connection, batch)
        except Exception as exc:
            if len(batch) > 1 and not isinstance(exc, DATABASE_AWAY):
                # A value the database refused: written one by one, the outcome that
                # holds it fails alone instead of taking its batch with it.
                for waiting in batch:
                    self._write([waiting])
                return
            for _, _, result in batch:
                result.set_exception(exc)
            return
        for claim, _, result in batch:
            result.set((claim.transaction_id, claim.attempt) in recorded)


# Both write a row only if the attempt still holds its claim, release the claim, and keep the
# columns that the change leaves at None (a done's last_error, say).
#
# PostgreSQL: the whole batch in one statement, one round trip and one commit however
# many outcomes (arrays of the batch's values, unnested into rows).
_UPDATE_ALL_AT_ONCE = text(
    """
    UPDATE transactions AS t
    SET status = change.status,
        claimed_until = NULL,
        next_attempt_at = change.next_attempt_at,
        processed_at = coalesce(change.processed_at, t.processed_at),
        failed_at = coalesce(change.failed_at, t.failed_at),
        last_error = coalesce(change.last_error, t.last_error),
        processor_reference = coalesce(change.processor_reference, t.processor_reference)
    FROM unnest(
        CAST(:transaction_ids AS varchar[]),
        CAST(:attempts AS integer[]),
        CAST(:claims AS timestamptz[]),
        CAST(:statuses AS varchar[]),
        CAST(:next_attempts AS timestamptz[]),
        CAST(:processed AS timestamptz[]),
        CAST(:failed AS timestamptz[]),
        CAST(:errors AS text[]),
        CAST(:references AS varchar[])
    ) AS change(transaction_id, attempt, claimed_until, status, next_attempt_at, processed_at,
                failed_at, last_error, processor_reference)
    WHERE t.transaction_id = change.transaction_id
      AND t.attempts = change.attempt
      AND t.claimed_until = change.claimed_until
      AND t.status = 'PROCESSING'
    RETURNING t.transaction_id, change.attempt
    """
)

# SQLite (no arrays, and no round trips to save): the same, one row at a time.
_UPDATE_ONE = (
    update(TABLE)
    .where(
        TABLE.c.transaction_id == bindparam("claimed_id"),
        TABLE.c.attempts == bindparam("claimed_attempt"),
        TABLE.c.claimed_until == bindparam("held_until", type_=TABLE.c.claimed_until.type),
        STILL_PROCESSING,
    )
    .values(
        status=bindparam("new_status", type_=TABLE.c.status.type),
        claimed_until=None,
        next_attempt_at=bindparam("new_next_attempt_at", type_=TABLE.c.next_attempt_at.type),
        **{
            name: func.coalesce(bindparam(f"new_{name}", type_=TABLE.c[name].type), TABLE.c[name])
            for name in ("processed_at", "failed_at", "last_error", "processor_reference")
        },
    )
)


def _update_all_at_once(connection: Connection, batch: list[Waiting]) -> set[tuple[str, int]]:
    """PostgreSQL: the (transaction, attempt) pairs written."""
    claims = [claim for claim, _, _ in batch]
    changes = [change for _, change, _ in batch]
    parameters = {
        "transaction_ids": [claim.transaction_id for claim in claims],
        "attempts": [claim.attempt for claim in claims],
        "claims": [claim.claimed_until for claim in claims],
        "statuses": [change.status.value for change in changes],
        "next_attempts": [change.next_attempt_at for change in changes],
        "processed": [change.processed_at for change in changes],
        "failed": [change.failed_at for change in changes],
        "errors": [change.last_error for change in changes],
        "references": [change.processor_reference for change in changes],
    }
    return {(row[0], row[1]) for row in connection.execute(_UPDATE_ALL_AT_ONCE, parameters)}


def _update_one_by_one(connection: Connection, batch: list[Waiting]) -> set[tuple[str, int]]:
    """SQLite, in one transaction: the (transaction, attempt) pairs written."""
    recorded = set()
    # The engine autocommits each statement (app/extensions.py): ask for a transaction.
    connection = connection.execution_options(
        isolation_level=connection.dialect.default_isolation_level
    )
    with connection.begin():
        for claim, change, _ in batch:
            parameters = {f"new_{name}": value for name, value in vars(change).items()}
            parameters |= {
                "claimed_id": claim.transaction_id,
                "claimed_attempt": claim.attempt,
                "held_until": claim.claimed_until,
            }
            if connection.execute(_UPDATE_ONE, parameters).rowcount:
                recorded.add((claim.transaction_id, claim.attempt))
    return recorded


def _tell(
    claim: TransactionToProcess,
    outcome: Outcome,
    change: RowChange,
    summary: str,
    seconds: float,
) -> None:
    """One log line and the metrics for this attempt's outcome, before it is committed."""
    answer = {Done: "done", RetryLater: "retry_later", FailedForGood: "failed_for_good"}[
        type(outcome)
    ]
    waited = None
    if change.processed_at is not None:
        waited = (change.processed_at - claim.received_at).total_seconds()
    # A transaction that ends FAILED moves no money until someone re-drives it: a warning,
    # so that it shows where operators look (WARNING and up), unlike a retry or a success.
    level = logging.WARNING if change.status is TransactionStatus.FAILED else logging.INFO
    log.log(
        level,
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
            "status": change.status.value,
            "duration_seconds": round(seconds, 4),
        },
    )
    metrics.record_attempt(answer, seconds, change.status.value, claim.attempt, waited)
