"""Logging for the web and worker processes: one line per event, to stderr.

LOG_FORMAT=json makes every line a JSON object (python-json-logger), with the
event's fields (request_id, transaction_id, status, ...) as keys, for log pipelines.
"""

import logging
import re
import time

from pythonjsonlogger.json import JsonFormatter

HANDLER_NAME = "webhook-service"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(process)d %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    return OneLineFormatter(TEXT_FORMAT)


# Control characters, the two that Unicode counts as line breaks, and the backslash,
# so that \n in the log is always an escaped newline, never a backslash and an n sent.
CONTROL = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029]")


class OneLineFormatter(logging.Formatter):
    """The text format, one line per event: control characters in the message are
    written escaped (a newline as \\n, an ANSI escape as \\x1b, a backslash as \\\\),
    so that a client cannot write a line of its own into the log, say with %0A in a
    requested path. A traceback still follows on lines of its own. (The JSON format
    escapes them.)"""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        if CONTROL.search(record.message):
            record.message = CONTROL.sub(_escaped, record.message)
        return super().formatMessage(record)


def _escaped(match: re.Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


def _unreachable_types() -> tuple[type[BaseException], ...]:
    """What an unreachable broker raises, wrapped by Celery as it may be. Imported here,
    not at the top: gunicorn.conf.py imports this module into the master, and redis
    brings ssl, which gevent must patch first in each worker (a MonkeyPatchWarning)."""
    import socket

    from kombu.exceptions import OperationalError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    # Not every OSError: a schedule file it may not write is something else, and says so.
    return (
        ConnectionError,  # refused, reset, aborted, broken pipe
        TimeoutError,  # socket.timeout too
        socket.gaierror,  # a host name that does not resolve
        OperationalError,
        RedisConnectionError,
        RedisTimeoutError,
    )


def unreachable(exc: BaseException | None) -> bool:
    """Whether this exception, or one it was raised from, is a connection that failed."""
    if exc is None:
        return False
    types, seen = _unreachable_types(), 0
    while exc is not None and seen < 10:
        if isinstance(exc, types):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class OneLinePerMinute(logging.Filter):
    """While the broker is down, beat fails to send its tick every second and Celery logs
    each failure with two tracebacks, about 150 lines (60 MB an hour, the whole rotation
    budget). Such a failure becomes one line, at most once a minute, with how many were
    left out; anything else passes as it is."""

    INTERVAL_SECONDS = 60.0

    def __init__(self, clock=time.monotonic):
        super().__init__()
        self._clock = clock
        self._last_line: float | None = None
        self._left_out = 0

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not unreachable(exc):
            return True
        now = self._clock()
        if self._last_line is not None and now - self._last_line < self.INTERVAL_SECONDS:
            self._left_out += 1
            return False
        record.msg, record.args = "%s: %s", (type(exc).__name__, exc)
        if self._left_out:
            record.msg += " (and %d more like it since the last such line)"
            record.args += (self._left_out,)
        record.exc_info = record.exc_text = record.stack_info = None
        self._last_line, self._left_out = now, 0
        return True


def configure_logging(level: str, log_format: str) -> None:
    """Root logs to stderr in the chosen format. Safe to call more than once."""
    # What the logging HOWTO suggests for speed: our lines show neither the source
    # line nor the thread, so do not walk the stack or look them up for every record.
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    root = logging.getLogger()
    handler = next((h for h in root.handlers if h.name == HANDLER_NAME), None)
    if handler is None:
        handler = logging.StreamHandler()
        handler.name = HANDLER_NAME
        root.addHandler(handler)
    handler.setFormatter(formatter(log_format))
    root.setLevel(level)
    # Python warnings (Celery's "running as root", deprecations) become log lines too.
    logging.captureWarnings(True)
