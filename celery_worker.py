"""The Celery entry point: `celery -A celery_worker.celery_app worker` (or `beat`)."""

from app.config import enable_multiprocess_metrics

# Before the app imports prometheus_client: the worker's figures join the web's /metrics.
enable_multiprocess_metrics()

from app import create_app  # noqa: E402

celery_app = create_app().extensions["celery"]
