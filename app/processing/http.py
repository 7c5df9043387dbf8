"""The HTTP processor: POST each transaction to PROCESSOR_URL, with its id as the idempotency key.

    POST PROCESSOR_URL
    Content-Type: application/json
    Idempotency-Key: <transaction_id>

    {"transaction_id": ..., "source_account": ..., "destination_account": ...,
     "amount": 100.50, "currency": "USD"}

| answer                                                       | outcome                    |
| 2xx                                                          | done (body's `reference`)  |
| 408, 409, 425, 429, 5xx, a timeout, a refused/dropped socket | retry later (Retry-After)  |
| any other status, a redirect (3xx) included                  | failed for good            |

409 is "a call with this key is still in flight" in the IETF idempotency-key draft.
"""

import requests
from requests.adapters import HTTPAdapter

from app.exact_json import dumps_exact, loads_exact, plain_number
from app.processing.processor import (
    Done,
    FailedForGood,
    Outcome,
    RetryLater,
    TransactionToProcess,
)
from app.store.models import TRANSACTION_ID

RETRY_STATUSES = frozenset({408, 409, 425, 429})
# Keep-alive connections kept open to the processor, per worker process: as many as
# calls can be in flight at once (app/processing/pipeline.py), so none is thrown away.
CONNECTIONS = 10_000
REASON_BODY_CHARS = 200


class HttpProcessor:
    def __init__(self, url: str, timeout_seconds: float):
        self.url = url
        self.timeout_seconds = timeout_seconds
        # One session per worker process: connections are reused (keep-alive).
        # Created before any connection is opened, so a fork never shares a socket.
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=CONNECTIONS, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        # requests reads the environment (proxy variables, CA bundle, .netrc) again on
        # every call: a tenth of the worker's CPU per call, measured with py-spy. The
        # environment does not change under a running process, so read it once, here.
        settings = self.session.merge_environment_settings(url, {}, None, None, None)
        self.session.proxies = settings["proxies"]
        self.session.verify = settings["verify"]
        self.session.auth = requests.utils.get_netrc_auth(url)
        self.session.trust_env = False

    def process(self, transaction: TransactionToProcess) -> Outcome:
        if not TRANSACTION_ID.fullmatch(transaction.transaction_id):
            # Received before ids were held to what a header carries: sent, it would
            # fail every attempt, or reach the processor as another transaction's key.
            return FailedForGood("the transaction id cannot be sent as an Idempotency-Key")
        body = dumps_exact(
            {
                "transaction_id": transaction.transaction_id,
                "source_account": transaction.source_account,
                "destination_account": transaction.destination_account,
                # An exact JSON number, never a float, in the form the API shows it
                # (1500 for 1500.0000 as PostgreSQL's NUMERIC(19, 4) returns it).
                "amount": plain_number(transaction.amount),
                "currency": transaction.currency,
            }
        )
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": transaction.transaction_id,
        }
        try:
            # A redirect is an answer like any other status (failed for good, per the
            # table above), not an address to send the transaction and its key to.
            response = self.session.post(
                self.url,
                data=body.encode(),
                headers=headers,
                timeout=self.timeout_seconds,
                allow_redirects=False,
            )
        except requests.Timeout:
            return RetryLater(f"no answer from the processor within {self.timeout_seconds:g} s")
        except requests.RequestException as exc:  # refused, reset, dropped mid-answer
            return RetryLater(f"could not reach the processor: {type(exc).__name__}")
        return outcome_of(response)


def outcome_of(response: requests.Response) -> Outcome:
    status = response.status_code
    if 200 <= status < 300:
        return Done(_reference(response))
    if status in RETRY_STATUSES or status >= 500:
        return RetryLater(f"the processor answered {status}", _retry_after(response))
    text = response.text[:REASON_BODY_CHARS]
    return FailedForGood(f"the processor answered {status}: {text}")


def _reference(response: requests.Response) -> str | None:
    try:
        body = loads_exact(response.content)
    except ValueError:
        return None
    reference = body.get("reference") if isinstance(body, dict) else None
    return reference[:255] if isinstance(reference, str) else None


def _retry_after(response: requests.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is rare from APIs and is ignored."""
    raw = response.headers.get("Retry-After", "").strip()
    return float(raw) if raw.isdigit() else None
