"""The Celery entry point: `celery -A celery_worker.celery_app worker` (or `beat`)."""

import os
from pathlib import Path

# The worker's figures join the web's /metrics (Prometheus multiprocess mode). It must
# be on before prometheus_client is first imported, so before anything from `app`.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(Path(__file__).parent / "var" / "prometheus"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

from app import create_app, open_files  # noqa: E402

# A processor call in flight holds a connection; its green threads are sized to this.
open_files.raise_limit()
celery_app = create_app().extensions["celery"]
