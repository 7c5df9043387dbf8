"""A processor to develop and test against: slow, sometimes failing, idempotent by key.

    .venv/bin/python -m scripts.processor_simulator --port 9100 [--latency 5]
        [--transient-rate 0.2] [--timeout-rate 0.05] [--refuse-account acc_blocked]

Then start the service with PROCESSOR_URL=http://127.0.0.1:9100/process.

Every POST is a call. It waits --latency seconds (default PROCESSING_DELAY_SECONDS,
else 30) and then:
- with probability --transient-rate answers 503 (with Retry-After if --retry-after);
- with probability --timeout-rate takes effect and then never answers, as when the
  answer is lost on the way back: the caller times out and must retry with the same
  key, which then answers 200 with no second effect;
- refuses for good (422) a transaction whose source or destination account is one of
  --refuse-account;
- otherwise takes effect and answers 200 {"reference": "sim_..."}.

It keeps each Idempotency-Key it has seen: a key that already took effect answers
200 with the same reference and no second effect; a key whose call is still in
flight answers 409. GET /stats gives totals, GET /keys every key's calls and effects,
GET /keys/<key> one. It runs on gevent, so it holds thousands of slow calls at once.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import resource  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from urllib.parse import unquote  # noqa: E402

from gevent.pywsgi import WSGIServer  # noqa: E402

from app.exact_json import InvalidJSON, loads_exact  # noqa: E402

HANG_SECONDS = 3600


@dataclass
class Key:
    calls: int = 0
    effects: int = 0
    reference: str | None = None
    in_flight: int = 0


class Simulator:
    def __init__(self, latency, transient_rate, timeout_rate, refuse_accounts, retry_after):
        self.latency = latency
        self.transient_rate = transient_rate
        self.timeout_rate = timeout_rate
        self.refuse_accounts = set(refuse_accounts)
        self.retry_after = retry_after
        self.keys: dict[str, Key] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.rng = random.Random()

    def __call__(self, environ, start_response):
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "/")
        if method == "GET" and path == "/stats":
            return self.answer(start_response, 200, self.stats())
        if method == "GET" and path == "/keys":
            return self.answer(start_response, 200, {k: asdict(v) for k, v in self.keys.items()})
        if method == "GET" and path.startswith("/keys/"):
            key = self.keys.get(unquote(path.removeprefix("/keys/")))
            return self.answer(start_response, 200 if key else 404, asdict(key) if key else {})
        if method != "POST":
            return self.answer(start_response, 405, {"error": "POST a transaction"})
        return self.call(environ, start_response)

    def call(self, environ, start_response):
        name = environ.get("HTTP_IDEMPOTENCY_KEY")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = loads_exact(environ["wsgi.input"].read(length))
        except (ValueError, InvalidJSON):
            return self.answer(start_response, 400, {"error": "the body is not JSON"})
        if not name or not isinstance(body, dict):
            return self.answer(start_response, 400, {"error": "Idempotency-Key and a body"})
        key = self.keys.setdefault(name, Key())
        key.calls += 1
        if key.effects:  # done before: the stored result, no second effect
            return self.answer(start_response, 200, {"reference": key.reference})
        if key.in_flight:
            return self.answer(start_response, 409, {"error": "a call with this key is running"})
        key.in_flight += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            time.sleep(self.latency)
            if {body.get("source_account"), body.get("destination_account")} & self.refuse_accounts:
                return self.answer(start_response, 422, {"error": "account refused"})
            roll = self.rng.random()
            if roll < self.transient_rate:
                headers = [("Retry-After", str(self.retry_after))] if self.retry_after else []
                return self.answer(start_response, 503, {"error": "try again"}, headers)
            self.take_effect(key)
            if roll < self.transient_rate + self.timeout_rate:
                time.sleep(HANG_SECONDS)  # the answer is lost; the caller times out
            return self.answer(start_response, 200, {"reference": key.reference})
        finally:
            key.in_flight -= 1
            self.in_flight -= 1

    def take_effect(self, key: Key) -> None:
        key.effects += 1
        key.reference = f"sim_{uuid.uuid4().hex[:16]}"

    def stats(self) -> dict:
        return {
            "keys": len(self.keys),
            "calls": sum(k.calls for k in self.keys.values()),
            "effects": sum(k.effects for k in self.keys.values()),
            "keys_with_more_than_one_effect": sum(k.effects > 1 for k in self.keys.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
        }

    @staticmethod
    def answer(start_response, status, body, headers=()):
        data = json.dumps(body).encode()
        reason = {
            200: "OK",
            400: "Bad Request",
            404: "Not Found",
            405: "Method Not Allowed",
            409: "Conflict",
            422: "Unprocessable Content",
            503: "Service Unavailable",
        }
        start_response(
            f"{status} {reason[status]}",
            [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers],
        )
        return [data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    default_latency = float(os.environ.get("PROCESSING_DELAY_SECONDS") or 30)
    parser.add_argument("--latency", type=float, default=default_latency)
    parser.add_argument("--transient-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--timeout-rate", type=float, default=0.0, help="share never answered")
    parser.add_argument("--refuse-account", action="append", default=[], help="422 for it")
    parser.add_argument("--retry-after", type=int, default=0, help="Retry-After on a 503")
    args = parser.parse_args()
    # Thousands of calls at once are thousands of sockets.
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    simulator = Simulator(
        args.latency, args.transient_rate, args.timeout_rate, args.refuse_account, args.retry_after
    )
    server = WSGIServer((args.host, args.port), simulator, log=None, backlog=4096)
    print(
        f"processor simulator on http://{args.host}:{args.port}, latency {args.latency:g} s",
        flush=True,
    )
    server.serve_forever()


if __name__ == "__main__":
    main()
