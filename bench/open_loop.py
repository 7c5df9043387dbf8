"""Webhooks sent at a rate, as senders send them, instead of wrk's closed loop.

wrk keeps N connections busy: each sends its next request when the last is answered, so
the service always runs at saturation and latency is mostly queueing behind the load
itself. Senders do not wait for each other. Here webhooks start at random moments
(a Poisson process) at a mean rate, each on a connection of its own, opened when it
is sent, whatever the answers to earlier ones; a request's latency is counted from
the moment it was due to start to the end of its answer, so that a generator running
late does not hide a slow service (coordinated omission).

    python -m bench.open_loop http://127.0.0.1:8000 --rate 600 --duration 10

Prints one JSON line with the same figures as bench.run.wrk(). Not a test.
"""

import argparse
import asyncio
import json
import random
import statistics
import time
from urllib.parse import urlsplit

BODY = (
    '{{"transaction_id":"open_{run}_{n}","source_account":"acc_bench_src",'
    '"destination_account":"acc_bench_dst","amount":1500.25,"currency":"USD"}}'
)


async def send(host: str, port: int, body: bytes, due: float, timeout: float) -> tuple[float, int]:
    """(seconds from due to answered, status); status 0 if the connection failed."""
    request = (
        f"POST /v1/webhooks/transactions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            answer = await reader.read()  # to the close: the whole answer
        status = int(answer.split(b" ", 2)[1])
    except (OSError, TimeoutError, ValueError, IndexError):
        status = 0
    finally:
        if writer is not None:  # also after a timeout: no socket left open for the run
            writer.close()
    return time.perf_counter() - due, status


async def load(url: str, rate: float, duration: float, timeout: float = 10) -> dict:
    parts = urlsplit(url)
    run = f"{time.time_ns():x}_{random.getrandbits(32):x}"
    rng = random.Random()
    tasks = []
    start = time.perf_counter()
    due = start
    n = 0
    while due < start + duration:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        n += 1
        body = BODY.format(run=run, n=n).encode()
        tasks.append(asyncio.create_task(send(parts.hostname, parts.port, body, due, timeout)))
        due += rng.expovariate(rate)
    results = await asyncio.gather(*tasks)
    latencies = sorted(seconds for seconds, status in results if status == 202)
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [0.0] * 99
    return {
        "connections": 0,  # a connection per webhook
        "requests": len(results),
        "rps": len(results) / duration,  # the rate sent, not stretched by the last answers
        "p50_ms": quantiles[49] * 1000,
        "p99_ms": quantiles[98] * 1000,
        "max_ms": latencies[-1] * 1000 if latencies else 0.0,
        "errors": sum(1 for _, status in results if status == 0),
        "non_2xx": sum(1 for _, status in results if status not in (0, 202)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url")
    parser.add_argument("--rate", type=float, required=True, help="webhooks/s, on average")
    parser.add_argument("--duration", type=float, default=10)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(load(args.url, args.rate, args.duration))))


if __name__ == "__main__":
    main()
