"""Print, as shell assignments, the settings the shell scripts need (environment over .env)."""

import os
import shlex

from dotenv import dotenv_values

from app.config import PROJECT_ROOT, load_config

env = {**dotenv_values(PROJECT_ROOT / ".env"), **os.environ}
print(f"PORT={shlex.quote(env.get('PORT') or '8000')}")
print(f"BROKER_URL={shlex.quote(load_config()['CELERY']['broker_url'])}")
