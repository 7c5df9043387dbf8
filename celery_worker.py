"""The Celery entry point: `celery -A celery_worker.celery_app worker` (or `beat`)."""

from app import create_app

celery_app = create_app().extensions["celery"]
