"""Gunicorn's gevent worker: its own errors in the API's shape, and connections spread over workers.

Errors: a request line over 4094 bytes (414), headers over Gunicorn's limits (431 or 400), a
malformed request (400) or a failure outside the app (500) never reach Flask; Gunicorn
writes an HTML page for them. This worker lets Gunicorn decide the status and log
the error as it always does, and writes problem+json instead of the page. It never
echoes what the client sent (a header might hold a token).

Connections: a kept-alive connection stays with the worker that accepted it, and
accepts land unevenly (50 connections were spread 32, 14, 4, 0, 0 over five workers
in one benchmark). A worker holding three times its share answers three times as
slowly, which is what the p99 showed. So a worker that is already serving another
request closes the connection after its answer (`Connection: close`): the client's
next request is accepted anew, and an idle worker, waiting on the listening socket,
usually takes it. A request that arrives while its worker serves nothing else keeps
its connection. (HTTP/2, off by Gunicorn's default, would bypass this.)
"""

import json
import logging
import secrets
from http import HTTPStatus

from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

log = logging.getLogger("app.requests")

DETAILS = {
    400: "The request is malformed.",
    403: "The request is forbidden.",
    414: "The request line (method and URL) is too long.",
    417: "The expectation in the Expect header cannot be met.",
    431: "The request's header fields are too large or too many.",
    500: "Something went wrong on our side. The request may be retried.",
    501: "The Transfer-Encoding is not supported.",
}


class _Captured:
    """A stand-in for the client socket that keeps what Gunicorn's error writer sends."""

    def __init__(self, client):
        self._client = client
        self.sent = b""

    def gettimeout(self):
        return 0.0  # so that util.write_nonblock does not touch the real socket's mode

    def sendall(self, data):
        self.sent += data

    def __getattr__(self, name):
        return getattr(self._client, name)


class ProblemGeventWorker(GeventWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests_in_flight = 0  # in this process, across its green threads

    def handle_request(self, listener_name, req, sock, addr):
        self.requests_in_flight += 1
        counted, closing = True, False
        try:
            if self.requests_in_flight > 1 and not req.should_close():
                req.must_close = closing = True  # busy: let a free worker take the next one
            return super().handle_request(listener_name, req, sock, addr)
        except StopIteration:  # Gunicorn's way of saying: answered, now close
            self.requests_in_flight -= 1
            counted = False
            if closing:
                # The app may have answered without reading the whole body (a 413 for a
                # Content-Length over the limit, a 404): a plain close with unread bytes
                # sends a reset, and the client would never see the answer. Kept alive,
                # Gunicorn would have read them; here FIN first, then drain (up to 64 KiB
                # or 2 s), as Gunicorn's sync worker closes every connection.
                util.close_graceful(sock)
            raise
        finally:
            if counted:
                self.requests_in_flight -= 1

    def handle_error(self, req, client, addr, exc):
        captured = _Captured(client)
        super().handle_error(req, captured, addr, exc)  # Gunicorn's status and log line
        if not captured.sent:
            return
        status_line = captured.sent.split(b"\r\n", 1)[0].decode("latin-1")
        status = int(status_line.split(" ", 2)[1])
        # The status's own phrase: Gunicorn's can be another status's ("501 Bad Request").
        reason = HTTPStatus(status).phrase
        try:
            util.write_nonblock(client, problem_response(status, reason))
        except Exception:  # the client is gone; nothing to answer
            self.log.debug("Failed to send error message.")


def problem_response(status: int, reason: str) -> bytes:
    request_id = secrets.token_hex(16)
    body = json.dumps(
        {
            "title": reason,
            "status": status,
            "detail": DETAILS.get(status, DETAILS[400] if status < 500 else DETAILS[500]),
            "request_id": request_id,
        }
    ).encode()
    log.info("%s answered by the server request_id=%s", status, request_id)
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/problem+json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n\r\n"
    )
    return head.encode("latin-1") + body
