"""Settings: the environment, .env, and the URLs Heroku and friends hand out."""

import resource
import subprocess
import sys
from pathlib import Path

import pytest

from app import open_files
from app.config import broker_url, database_url, load_config


@pytest.mark.parametrize(
    "given, used",
    [
        ("postgres://u:p@db.example.com:5432/d", "postgresql+psycopg2://u:p@db.example.com:5432/d"),
        ("postgresql://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("postgresql+psycopg2://u@h/d", "postgresql+psycopg2://u@h/d"),
        ("sqlite:////tmp/x.sqlite3", "sqlite:////tmp/x.sqlite3"),
    ],
)
def test_database_urls_are_normalised_to_psycopg2(given, used):
    assert database_url(given) == used


def test_without_database_url_the_data_lives_in_sqlite_under_var():
    assert database_url(None).startswith("sqlite:///")
    assert database_url("").endswith("/var/webhooks.sqlite3")


def test_broker_is_celery_broker_url_then_redis_url_then_sqlite():
    assert (
        broker_url({"CELERY_BROKER_URL": "redis://a/0", "REDIS_URL": "redis://b/0"})
        == "redis://a/0"
    )
    assert broker_url({"REDIS_URL": "redis://b/0"}) == "redis://b/0"
    assert broker_url({}).startswith("sqla+sqlite:///")


def test_environment_wins_over_dotenv(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text(
        "PROCESSING_DELAY_SECONDS=7\nDATABASE_URL=postgres://from-file/db\nLOG_LEVEL=debug\n"
    )
    config = load_config({"DATABASE_URL": "postgres://from-env/db"}, dotenv)
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://from-env/db"
    assert config["PROCESSING_DELAY_SECONDS"] == 7
    assert config["LOG_LEVEL"] == "DEBUG"


def test_defaults_with_nothing_configured(tmp_path):
    config = load_config({}, tmp_path / "absent.env")
    assert config["PROCESSING_DELAY_SECONDS"] == 30
    assert config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///")
    assert config["CELERY"]["broker_url"].startswith("sqla+sqlite:///")
    assert config["MAX_CONTENT_LENGTH"] == 64 * 1024


@pytest.mark.parametrize("raw", ["-1", "soon", "inf", "nan"])
def test_a_bad_delay_fails_at_start_naming_the_variable(tmp_path, raw):
    with pytest.raises(ValueError, match="PROCESSING_DELAY_SECONDS"):
        load_config({"PROCESSING_DELAY_SECONDS": raw}, tmp_path / "absent.env")


def test_broker_options_suit_the_broker(tmp_path):
    redis = load_config({"REDIS_URL": "redis://h/0"}, tmp_path / "absent.env")["CELERY"]
    assert redis["broker_transport_options"]["visibility_timeout"] > redis["task_time_limit"]
    sqlite = load_config({}, tmp_path / "absent.env")["CELERY"]
    # kombu passes these straight to create_engine(): only engine arguments belong here
    assert sqlite["broker_transport_options"] == {"connect_args": {"timeout": 30}}


def test_port_comes_from_the_environment_then_dotenv_then_8000(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=8123\n")
    assert load_config({}, dotenv)["PORT"] == 8123
    assert load_config({"PORT": "9001"}, dotenv)["PORT"] == 9001
    assert load_config({}, tmp_path / "absent.env")["PORT"] == 8000


CURRENT_HARD_LIMIT = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
READ_LIMIT = "resource.getrlimit(resource.RLIMIT_NOFILE)[0]"


@pytest.mark.parametrize("hard", [1100, min(8000, CURRENT_HARD_LIMIT)])
@pytest.mark.parametrize(
    "process, holds, expected",
    [
        # Gunicorn's connections per worker
        (
            "import resource, runpy; settings = runpy.run_path('gunicorn.conf.py')",
            "settings['worker_connections']",
            lambda hard: min(4000, hard - 200),
        ),
        # the worker's green threads, each with up to 100 processor calls in flight
        (
            "import resource, celery_worker",
            "celery_worker.celery_app.conf.worker_concurrency",
            lambda hard: min(100, (hard - 200) // 100),
        ),
    ],
    ids=["web", "worker"],
)
def test_web_and_worker_raise_their_open_files_limit_and_hold_no_more_than_it_allows(
    tmp_path, hard, process, holds, expected
):
    """A held connection is a file descriptor; past the limit every accept or connect fails."""

    def lowered_limit():  # in the child: a soft limit of 1,024, as many systems start with
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))

    printed = subprocess.run(
        [sys.executable, "-c", f"{process}; print({holds}, {READ_LIMIT})"],
        cwd=Path(__file__).resolve().parent.parent,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"},
        preexec_fn=lowered_limit,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert printed == [str(expected(hard)), str(hard)]


def test_under_an_unlimited_hard_limit_the_ask_is_what_macos_allows(monkeypatch):
    """macOS reports its hard limit on open files as unlimited, and refuses it if asked."""
    limits = {"now": (256, resource.RLIM_INFINITY)}

    def setrlimit(_which, wanted):
        if wanted[0] == resource.RLIM_INFINITY:
            raise ValueError("not allowed to raise maximum limit")
        limits["now"] = wanted

    monkeypatch.setattr(resource, "getrlimit", lambda _which: limits["now"])
    monkeypatch.setattr(resource, "setrlimit", setrlimit)
    open_files.raise_limit()
    assert limits["now"] == (10_240, resource.RLIM_INFINITY)
    assert open_files.connections_allowed() == 10_040
