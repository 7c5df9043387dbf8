"""Print, as shell assignments, the settings the shell scripts need (environment over .env)."""

import shlex

from app.config import load_config

config = load_config()
print(f"PORT={config['PORT']}")
print(f"BROKER_URL={shlex.quote(config['CELERY']['broker_url'])}")
# How long ./stop_services.sh waits for work in flight before it kills: a task may run up to
# its time limit, a request up to Gunicorn's graceful timeout (30 s, well below).
print(f"STOP_GRACE_SECONDS={int(config['CELERY']['task_time_limit']) + 5}")
