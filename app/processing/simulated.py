"""The default processor: nothing to configure, nothing to run. It waits, then answers done."""

import time

from app.processing.processor import Done, Outcome, TransactionToProcess


class SimulatedProcessor:
    """Waits PROCESSING_DELAY_SECONDS (the seed's 30 s) and answers done.

    Under the worker's gevent pool the wait is a green sleep: thousands of
    transactions wait at once in one process.
    """

    def __init__(self, delay_seconds: float, timeout_seconds: float):
        self.delay_seconds = delay_seconds
        self.timeout_seconds = timeout_seconds

    def process(self, transaction: TransactionToProcess) -> Outcome:
        time.sleep(self.delay_seconds)
        return Done()
