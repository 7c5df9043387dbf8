"""The processor contract: given a transaction, it answers done, retry later, or failed for good.

The seed's 30-second wait stands for a call to a slow external API: a ledger, a payment
processor, a fraud check. Every deployment plugs its own in here. Two ship with the
service: `SimulatedProcessor` (the default: waits PROCESSING_DELAY_SECONDS, answers done)
and `HttpProcessor` (used when PROCESSOR_URL is set).

A processor may be called more than once for one transaction (a worker killed mid-call,
an answer lost with the network), always with the same `transaction_id`: it must use it
as its idempotency key, so that a repeated call has no second effect.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol


@dataclass(frozen=True)
class TransactionToProcess:
    transaction_id: str
    source_account: str
    destination_account: str
    amount: Decimal
    currency: str
    received_at: datetime
    attempt: int  # 1 for the first call, and again for the first after a re-drive
    # Until when this attempt holds the transaction: after it, another attempt may be
    # made. The outcome is recorded only if the row still carries this claim, as the
    # attempt number alone repeats after a re-drive.
    claimed_until: datetime


@dataclass(frozen=True)
class Done:
    reference: str | None = None  # the processor's own id for what it did, if it gives one


@dataclass(frozen=True)
class RetryLater:
    reason: str
    delay_seconds: float | None = None  # what the processor asked for (Retry-After), if anything


@dataclass(frozen=True)
class FailedForGood:
    reason: str


Outcome = Done | RetryLater | FailedForGood


class Processor(Protocol):
    # The longest one call may take; the pipeline cuts a call off after this, and no
    # other attempt for the transaction starts before it (plus a margin) has passed.
    timeout_seconds: float

    def process(self, transaction: TransactionToProcess) -> Outcome: ...


def processor_from_config(config: Mapping[str, Any]) -> Processor:
    """HTTP when PROCESSOR_URL is set; otherwise the simulated one, as the seed behaves."""
    from app.config import processor_timeout
    from app.processing.http import HttpProcessor
    from app.processing.simulated import SimulatedProcessor

    if config["PROCESSOR_URL"]:
        return HttpProcessor(config["PROCESSOR_URL"], processor_timeout(config))
    return SimulatedProcessor(config["PROCESSING_DELAY_SECONDS"], processor_timeout(config))
