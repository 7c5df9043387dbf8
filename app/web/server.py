"""Gunicorn's gevent worker, answering the errors Gunicorn answers itself in the API's shape.

A request line over 4094 bytes (414), headers over Gunicorn's limits (431 or 400), a
malformed request (400) or a failure outside the app (500) never reach Flask; Gunicorn
writes an HTML page for them. This worker lets Gunicorn decide the status and log
the error as it always does, and writes problem+json instead of the page. It never
echoes what the client sent (a header might hold a token).
"""

import json
import logging
import secrets

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
    def handle_error(self, req, client, addr, exc):
        captured = _Captured(client)
        super().handle_error(req, captured, addr, exc)  # Gunicorn's status and log line
        if not captured.sent:
            return
        status_line = captured.sent.split(b"\r\n", 1)[0].decode("latin-1")
        _version, status, reason = (status_line.split(" ", 2) + ["", ""])[:3]
        try:
            util.write_nonblock(client, problem_response(int(status), reason))
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
