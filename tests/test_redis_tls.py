"""Redis over TLS with a self-signed certificate, as Heroku's Redis add-on serves it.

A redis-server that speaks only TLS, with a certificate made here by openssl; the readiness
check and real web, worker and beat processes must work through it, at a rediss:// URL.
"""

import subprocess
from pathlib import Path

import pytest
import requests
from conftest import make_app, migrate
from helpers import post_webhook, wait_until, webhook

from app.config import celery_settings
from app.extensions import db
from scripts.processes import RedisServer, Service

pytestmark = pytest.mark.processes


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls-redis")
    certificate, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-subj", "/CN=redis.internal", "-keyout", str(key), "-out", str(certificate)],
        check=True,
        capture_output=True,
    )
    server = RedisServer(folder, tls=(certificate, key)).start()
    yield server
    server.stop()


def test_the_redis_speaks_only_tls_with_a_certificate_nobody_trusts(tls_redis):
    import redis

    assert tls_redis.url.startswith("rediss://")
    plain = tls_redis.url.replace("rediss://", "redis://")
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(plain, socket_connect_timeout=2, socket_timeout=2).ping()
    with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
        redis.Redis.from_url(tls_redis.url, socket_connect_timeout=2).ping()


# kombu's line when it is left to guess (it then skips verification by itself).
KOMBU_GUESSES = "Secure redis scheme specified (rediss) with no ssl options"


def test_readiness_reaches_a_rediss_broker_with_a_self_signed_certificate(
    sqlite_url, tls_redis, caplog
):
    backend = tls_redis.url.removesuffix("/0") + "/1"
    app = make_app(sqlite_url, CELERY=celery_settings(tls_redis.url, backend, claim_seconds=60))
    response = app.test_client().get("/health/ready")
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["components"]["broker"]["status"] == "up"
    assert KOMBU_GUESSES not in caplog.text
    with app.app_context():
        db.engine.dispose()


def test_web_worker_and_beat_process_a_webhook_through_rediss(tmp_path: Path, tls_redis):
    database = f"sqlite:///{tmp_path / 'webhooks.sqlite3'}"
    migrate(database)
    service = Service(
        tmp_path,
        DATABASE_URL=database,
        REDIS_URL=tls_redis.url,  # as Heroku sets it
        CELERY_RESULT_BACKEND=tls_redis.url.removesuffix("/0") + "/1",
        PROCESSING_DELAY_SECONDS="1",
    )
    try:
        service.start()
        body = webhook()
        assert post_webhook(service.url, body).status_code == 202

        def processed():
            url = f"{service.url}/v1/transactions/{body['transaction_id']}"
            return requests.get(url, timeout=5).json()["status"] == "PROCESSED"

        wait_until(processed, timeout=60)
        ready = requests.get(f"{service.url}/health/ready", timeout=10)
        assert ready.status_code == 200, ready.text
    finally:
        service.stop()
    assert "Traceback" not in service["worker"].log(), service.logs()
    assert KOMBU_GUESSES not in service.logs()
