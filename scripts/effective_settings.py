"""Print, as shell assignments, the settings the shell scripts need (environment over .env)."""

import shlex

from app.config import load_config

config = load_config()
print(f"PORT={config['PORT']}")
print(f"BROKER_URL={shlex.quote(config['CELERY']['broker_url'])}")
