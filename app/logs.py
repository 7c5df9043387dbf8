"""Logging for the web and worker processes: one line per event, to stderr.

LOG_FORMAT=json makes every line a JSON object (python-json-logger), with the
event's fields (request_id, transaction_id, status, ...) as keys, for log pipelines.
"""

import logging

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
    return logging.Formatter(TEXT_FORMAT)


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
