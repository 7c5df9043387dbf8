"""Logging for the web and worker processes: one line per event, to stderr."""

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def configure_logging(level: str) -> None:
    # Celery and pytest install their own root handlers; keep theirs.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=FORMAT)
    logging.getLogger("app").setLevel(level)
