"""Housekeeping for the embedded broker: kombu's SQLAlchemy transport on a SQLite file.

kombu marks a delivered message invisible and never deletes it, so the file would keep every
message ever sent: about 1.65 KB a second at one beat tick a second, 140 MB a day. A delivered
message is never made visible again (on a warm shutdown kombu re-sends an unacknowledged one
as a new row), so deleting the invisible rows leaves exactly what is pending. Beat sends this
task every CLEANUP_EVERY_SECONDS when the broker is SQLite; SQLite reuses the freed pages, so
the file stops growing at the size of about one interval's messages.
"""

import logging

from celery import shared_task
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

SQLITE_BROKER_PREFIX = "sqla+sqlite:"
CLEANUP_EVERY_SECONDS = 10.0
TASK_NAME = "app.embedded_broker.delete_consumed_messages"

log = logging.getLogger(__name__)


def is_embedded(broker_url: str) -> bool:
    return broker_url.startswith(SQLITE_BROKER_PREFIX)


def beat_schedule() -> dict:
    """The beat entry that keeps the embedded broker small."""
    return {
        "delete-consumed-broker-messages": {
            "task": TASK_NAME,
            "schedule": CLEANUP_EVERY_SECONDS,
            # A cleanup that waited through an outage is as good as the next one.
            "options": {"expires": CLEANUP_EVERY_SECONDS},
        }
    }


def delete_consumed_messages_from(broker_url: str) -> int:
    """Delete the messages kombu has delivered from the SQLite broker; return how many."""
    engine = create_engine(broker_url.removeprefix("sqla+"), connect_args={"timeout": 30})
    try:
        with engine.begin() as connection:
            return connection.execute(text("DELETE FROM kombu_message WHERE visible = 0")).rowcount
    except OperationalError as exc:
        if "no such table" in str(exc):  # no worker has connected yet: nothing to delete
            return 0
        raise
    finally:
        engine.dispose()


@shared_task(name=TASK_NAME, ignore_result=True)
def delete_consumed_messages() -> int:
    deleted = delete_consumed_messages_from(delete_consumed_messages.app.conf.broker_url)
    log.debug("deleted %d consumed messages from the embedded broker", deleted)
    return deleted
