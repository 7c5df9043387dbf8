"""Real processes for the end-to-end tests, the chaos script and the benchmark:
Gunicorn, a Celery worker, Celery beat, and a private redis-server.

They are started the way the Procfile starts them, each with its own log file,
and stopped by the PID this module holds, never by name.
"""

import os
import random
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import redis
import requests
from sqlalchemy import create_engine, make_url, text

from app.config import database_url

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# A PostgreSQL server and a database on it from which throwaway databases are created.
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
)

# Variables the service reads; a test sets each one it needs, so nothing leaks
# in from the developer's shell or .env.
SERVICE_VARIABLES = (
    "DATABASE_URL",
    "REDIS_URL",
    "CELERY_BROKER_URL",
    "CELERY_RESULT_BACKEND",
    "PROCESSING_DELAY_SECONDS",
    "PORT",
    "WEB_CONCURRENCY",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "WEBHOOK_SECRET",
    "API_READ_TOKENS",
    "API_ADMIN_TOKENS",
    "PROMETHEUS_MULTIPROC_DIR",
    "PROCESSOR_URL",
    "PROCESSOR_TIMEOUT_SECONDS",
    "PROCESSING_RETRY_BASE_SECONDS",
    "PROCESSING_RETRY_MAX_SECONDS",
    "PROCESSING_MAX_ATTEMPTS",
)


def procfile_command(name: str) -> list[str]:
    """A process type's command line from the Procfile, run from this virtualenv."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process_type, _, command = line.partition(":")
        if process_type.strip() == name:
            program, *arguments = shlex.split(command)
            return [str(BIN / program), *arguments]
    raise KeyError(f"no {name!r} process in the Procfile")


# Listening ports come from below Linux's ephemeral range (32768 and up), where no
# outgoing connection takes them, and each pytest-xdist worker has a slice of its own:
# a port the kernel handed out, let go and bound again seconds later (Gunicorn booting,
# a Redis restarted on its port) could otherwise be handed to another worker meanwhile.
PORTS = range(20_000, 32_000)


def _port_slice() -> range:
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    # A worker xdist starts to replace a crashed one is gw3 and up under -n 3: it takes
    # the slice of the one it replaces, whose processes are gone with it.
    worker = int((os.environ.get("PYTEST_XDIST_WORKER") or "gw0").removeprefix("gw") or 0) % workers
    size = len(PORTS) // workers
    return range(PORTS.start + worker * size, PORTS.start + (worker + 1) * size)


_ports = _port_slice()
_next = random.randrange(len(_ports))


def free_port() -> int:
    """A port nothing listens on, never the one this process was given just before."""
    global _next
    for _ in range(len(_ports)):
        port = _ports[_next % len(_ports)]
        _next += 1
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # taken
                continue
            return port
    raise RuntimeError(f"no free port in {_ports}")


def service_env(**settings: str | None) -> dict[str, str]:
    """This environment without the service's variables, plus `settings` (None: left unset)."""
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARIABLES}
    env.update({key: value for key, value in settings.items() if value is not None})
    return env


class Process:
    """One child process, its log file, and a way to stop it."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> None:
        if not self.running():
            return
        self.popen.send_signal(sig)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as when a machine dies."""
        self.stop(signal.SIGKILL)


class Service:
    """The web, worker and beat processes of one service instance."""

    def __init__(self, log_dir: Path, **settings: str | None):
        self.log_dir = log_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Two Gunicorn workers unless told otherwise: tests run several instances at once.
        # Metrics files of its own, shared by its web and worker processes.
        metrics_dir = log_dir / f"prometheus-{uuid.uuid4().hex[:8]}"
        metrics_dir.mkdir()
        defaults = {
            "PORT": str(self.port),
            "WEB_CONCURRENCY": "2",
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        self.env = service_env(**defaults | settings)
        self.processes: dict[str, Process] = {}

    def start(self, *names: str) -> "Service":
        names = names or ("worker", "beat", "web")
        for name in names:
            self.processes[name] = Process(name, self.command(name), self.env, self.log_dir)
        if "web" in names:
            self.wait_for_web()
        return self

    def command(self, name: str) -> list[str]:
        """The Procfile's command, as production runs it, made unique to this instance."""
        if name == "web":
            return [*procfile_command("web"), "--bind", f"127.0.0.1:{self.port}"]
        if name == "worker":
            node = f"test-{uuid.uuid4().hex[:8]}@%h"
            return [*procfile_command("worker"), "--hostname", node]
        if name == "beat":
            schedule = self.log_dir / f"celerybeat-schedule-{uuid.uuid4().hex[:8]}"
            return [*procfile_command("beat"), "--schedule", str(schedule)]
        raise ValueError(name)

    def wait_for_web(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.processes["web"].running():
                raise RuntimeError("gunicorn exited:\n" + self.processes["web"].log())
            try:
                if requests.get(self.url + "/", timeout=1).status_code == 200:
                    return
            except requests.RequestException:  # not listening, or workers still booting
                pass
            time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer:\n" + self.processes["web"].log())

    def __getitem__(self, name: str) -> Process:
        return self.processes[name]

    def __enter__(self) -> "Service":
        return self

    def __exit__(self, *_exc) -> None:
        self.stop()

    def stop(self) -> None:
        for name in ("web", "beat", "worker"):
            if name in self.processes:
                self.processes[name].stop()

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{p.log()[-4000:]}" for name, p in self.processes.items())


class RedisServer:
    """A redis-server of our own on a free port, so a test can stop, restart or flush it.

    With `tls` (a certificate file and its key), it speaks only TLS, at a rediss:// URL.
    """

    def __init__(self, log_dir: Path, tls: tuple[Path, Path] | None = None):
        self.log_dir = log_dir
        self.port = free_port()
        self.tls = tls
        scheme = "rediss" if tls else "redis"
        self.url = f"{scheme}://127.0.0.1:{self.port}/0"
        self.process: Process | None = None

    def start(self) -> "RedisServer":
        if self.tls:
            certificate, key = self.tls
            command = ["redis-server", "--port", "0", "--tls-port", str(self.port)]
            command += ["--tls-cert-file", str(certificate), "--tls-key-file", str(key)]
            command += ["--tls-ca-cert-file", str(certificate), "--tls-auth-clients", "no"]
        else:
            command = ["redis-server", "--port", str(self.port)]
        command += ["--bind", "127.0.0.1"]
        command += ["--save", "", "--appendonly", "no"]  # a restart loses everything, on purpose
        self.process = Process("redis", command, service_env(), self.log_dir)
        deadline = time.monotonic() + 10
        while not self.answers():
            if time.monotonic() > deadline or not self.process.running():
                raise RuntimeError("redis-server did not start:\n" + self.process.log())
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        tls = {"ssl_cert_reqs": "none"} if self.tls else {}
        try:
            return redis.Redis.from_url(self.url, socket_connect_timeout=0.5, **tls).ping()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        if self.process:
            self.process.stop()

    def restart(self) -> None:
        self.stop()
        self.start()

    def flushall(self) -> None:
        tls = {"ssl_cert_reqs": "none"} if self.tls else {}
        redis.Redis.from_url(self.url, **tls).flushall()


class ThrowawayDatabase:
    """A fresh PostgreSQL database, migrated with the release command (unless told not
    to), dropped on exit.

    `admin_url` names a server and a database to connect to for CREATE DATABASE.
    """

    def __init__(self, admin_url: str, migrated: bool = True):
        self.migrated = migrated
        self.admin = create_engine(database_url(admin_url), isolation_level="AUTOCOMMIT")
        self.name = f"webhooks_test_{uuid.uuid4().hex[:12]}"
        url = make_url(database_url(admin_url)).set(database=self.name)
        self.url = url.render_as_string(hide_password=False)

    def __enter__(self) -> str:
        with self.admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        if not self.migrated:
            return self.url
        subprocess.run(
            procfile_command("release"),
            cwd=ROOT,
            env=service_env(DATABASE_URL=self.url),
            check=True,
            capture_output=True,
        )
        return self.url

    def __exit__(self, *_exc) -> None:
        with self.admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


class ProcessorSimulator:
    """scripts/processor_simulator.py in its own process, on a free port."""

    def __init__(self, log_dir: Path, *options: str):
        self.log_dir = log_dir
        self.options = options
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: Process | None = None

    def start(self) -> "ProcessorSimulator":
        command = [sys.executable, "-m", "scripts.processor_simulator", "--port", str(self.port)]
        self.process = Process("processor", [*command, *self.options], service_env(), self.log_dir)
        deadline = time.monotonic() + 15
        while True:
            try:
                requests.get(f"{self.url}/stats", timeout=1)
                return self
            except requests.RequestException:
                if time.monotonic() > deadline or not self.process.running():
                    raise RuntimeError("no simulator:\n" + self.process.log()) from None
                time.sleep(0.05)

    def stats(self) -> dict:
        return requests.get(f"{self.url}/stats", timeout=10).json()

    def keys(self) -> dict[str, dict]:
        return requests.get(f"{self.url}/keys", timeout=30).json()

    def stop(self) -> None:
        if self.process:
            self.process.stop()
