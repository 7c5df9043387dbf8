"""The suite leaves alone a Redis that already runs on this machine.

A developer's Redis at 127.0.0.1:6379 may hold someone's data. This test stands one up with
a key in each database, in a network namespace of its own (so that a real 127.0.0.1:6379, if
any, is not touched by this test either), and runs ./run_tests.sh there on the tests that use
Redis: the Celery broker of real processes, which the suite empties, and the readiness check.
PostgreSQL is reached over its Unix socket, which network namespaces do not hide.
"""

import os
import shutil
import subprocess

import pytest

from scripts.processes import ROOT, service_env

pytestmark = pytest.mark.processes

SOCKET_DIR = "/var/run/postgresql"
NESTED_TESTS = [
    "tests/test_running_service.py::test_webhook_goes_from_processing_to_processed_after_the_delay",
    "tests/test_observability.py::test_ready_when_database_and_broker_answer",
]

SCRIPT = """
set -u
ip link set lo up
redis-server --port 6379 --bind 127.0.0.1 --save '' --appendonly no >"$REDIS_LOG" 2>&1 &
developer_redis=$!
for _ in $(seq 100); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.05; done
for db in 0 1 15; do redis-cli -p 6379 -n "$db" set someones:data precious >/dev/null; done
./run_tests.sh -p no:cacheprovider -q "$@"
echo "nested exit: $?"
for db in 0 1 15; do echo "db $db: $(redis-cli -p 6379 -n "$db" get someones:data)"; done
kill "$developer_redis"
wait "$developer_redis"
"""


def test_the_suite_leaves_a_redis_already_running_here_alone(tmp_path):
    if not os.path.isdir(SOCKET_DIR) or not shutil.which("unshare"):
        pytest.fail(f"needs unshare(1) and PostgreSQL's socket in {SOCKET_DIR}")
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    env = service_env(
        REDIS_LOG=str(tmp_path / "developer-redis.log"),
        PGHOST=SOCKET_DIR,
        TEST_POSTGRES_URL=f"postgresql+psycopg2://postgres@/postgres?host={SOCKET_DIR}",
    )
    env.pop("TEST_REDIS_URL", None)  # the default, as a developer runs it
    result = subprocess.run(
        [*unshare, "bash", "-c", SCRIPT, "nested", *NESTED_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    output = result.stdout + result.stderr
    assert "nested exit: 0" in output, output
    for db in (0, 1, 15):
        assert f"db {db}: precious" in output, output
