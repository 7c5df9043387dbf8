"""The request body, read whole and checked against its framing before anything parses it.

Werkzeug's own reading cuts a chunked body at MAX_CONTENT_LENGTH without saying so,
and hands on a body shorter than its Content-Length when the client half-closes.
Here both are refused: a chunked body over the limit is a 413, a short one a 400 (as
is one whose chunks are malformed), and a body that trickles in for longer than
BODY_READ_SECONDS a 408, so that a slow sender cannot hold a connection (a green
thread) for ever. A compressed body (Content-Encoding, or a Transfer-Encoding such as
`gzip, chunked`, which Gunicorn passes on undecoded) is a 415 that names the coding,
instead of a parse error about bytes that were never meant as JSON.
"""

import flask
from gunicorn.http.errors import NoMoreData, ParseException
from werkzeug.exceptions import (
    BadRequest,
    RequestEntityTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
)
from werkzeug.wsgi import get_content_length

# A webhook is at most 64 KiB; a sender that cannot send it in this long is not a
# sender. Gunicorn's keepalive (2 s) already bounds the wait for the headers.
BODY_READ_SECONDS = 10
READ_STEP = 64 * 1024


class ShortBody(BadRequest):
    problem_detail = "The body ended before its Content-Length; nothing was read from it."


class MalformedChunks(BadRequest):
    problem_detail = "The body's chunked framing is malformed; nothing was read from it."


class SlowBody(RequestTimeout):
    problem_detail = f"The body did not arrive within {BODY_READ_SECONDS} s; nothing was read."


class EncodedBody(UnsupportedMediaType):
    """A body in a coding we do not decode. A webhook is small: nothing gains from
    compressing it, and a decompressor is one more thing a hostile body can aim at."""

    def __init__(self, header: str, codings: str):
        super().__init__()
        self.data = {
            "message": f"{header}: {codings} is not supported; send the JSON as it is "
            "(chunked framing is fine).",
            "headers": {"Accept-Encoding": "identity"},  # RFC 7694
        }


# Codings that leave the body as it is: no coding at all, and chunked framing, which
# the server removes before the body reaches us.
AS_IS = {"", "identity", "chunked"}


class Request(flask.Request):
    """Flask's request, with `get_data()` reading the body through `read_body`."""

    def get_data(self, cache=True, as_text=False, parse_form_data=False):
        if getattr(self, "_cached_data", None) is None:
            self._cached_data = read_body(self.environ, self.max_content_length)
        return super().get_data(cache, as_text, parse_form_data)

    def body_if_read(self) -> bytes | None:
        """The body, if something already read it whole; never reads (nor waits) itself."""
        return getattr(self, "_cached_data", None)


def read_body(environ: dict, limit: int | None) -> bytes:
    """All of the body, or an HTTPException (413, 415, 400, 408) if its framing is not kept."""
    for header in ("Content-Encoding", "Transfer-Encoding"):
        codings = environ.get("HTTP_" + header.upper().replace("-", "_"), "")
        if any(coding.strip(" \t").lower() not in AS_IS for coding in codings.split(",")):
            raise EncodedBody(header, codings)
    length = get_content_length(environ)
    if length is not None and limit is not None and length > limit:
        raise RequestEntityTooLarge()
    stream = environ["wsgi.input"]
    with _deadline():
        if length is not None:
            body = _read(stream, length)
            if len(body) < length:
                raise ShortBody()
            return body
        if environ.get("wsgi.input_terminated"):
            # Chunked: the server finds the end. Read one byte past the limit to
            # tell "exactly the limit" from "more".
            try:
                body = _read(stream, limit + 1 if limit is not None else None)
            except (ParseException, NoMoreData):
                # Gunicorn's chunk parser: a size that is no number, a chunk without
                # its CRLF, a bad trailer, the connection closed before the last chunk.
                # The sender's fault, not a 500 (Gunicorn closes the connection).
                raise MalformedChunks() from None
            if limit is not None and len(body) > limit:
                raise RequestEntityTooLarge()
            return body
    return b""


def _read(stream, size: int | None) -> bytes:
    parts, received = [], 0
    while size is None or received < size:
        part = stream.read(READ_STEP if size is None else min(READ_STEP, size - received))
        if not part:
            break
        parts.append(part)
        received += len(part)
    return b"".join(parts)


class _deadline:
    """BODY_READ_SECONDS for the whole body under gevent (Gunicorn's workers), else no limit.

    A per-recv socket timeout would not do: a sender of one byte a second never trips it.
    """

    def __enter__(self):
        from gevent import Timeout, monkey

        self._timeout = None
        if monkey.is_module_patched("socket"):
            self._timeout = Timeout(BODY_READ_SECONDS, SlowBody())
            self._timeout.start()

    def __exit__(self, *_exc):
        if self._timeout is not None:
            self._timeout.close()
        return False
