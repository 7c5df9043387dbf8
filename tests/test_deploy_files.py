"""The platform files agree with the Procfile and with each platform's published format.

app.json was also validated once against Heroku's app.json JSON Schema (draft-07, as
published in heroku/heroku-mcp-server); Railway's railway.schema.json could not be fetched
here, so its files are checked against the fields of Railway's config-as-code reference.
"""

import json
import re
import tomllib

import pytest

from scripts.processes import ROOT

PROCFILE = dict(
    line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip()
)
PROCFILE = {name.strip(): command.strip() for name, command in PROCFILE.items()}

# Heroku's app.json schema: the top-level properties, an env entry's, the dyno sizes.
APP_JSON_KEYS = {
    "name", "description", "keywords", "website", "repository", "logo", "success_url",
    "scripts", "env", "formation", "addons", "buildpacks", "environments", "stack", "image",
}  # fmt: skip
ENV_ENTRY_KEYS = {"description", "value", "required", "generator"}

# Railway's config-as-code reference (docs.railway.com/config-as-code/reference).
RAILWAY_BUILD_KEYS = {
    "builder", "watchPatterns", "buildCommand", "dockerfilePath", "railpackVersion",
    "nixpacksConfigPath", "nixpacksPlan", "nixpacksVersion",
}  # fmt: skip
RAILWAY_DEPLOY_KEYS = {
    "startCommand", "preDeployCommand", "numReplicas", "healthcheckPath",
    "healthcheckTimeout", "restartPolicyType", "restartPolicyMaxRetries", "cronSchedule",
    "region", "sleepApplication", "runtime", "overlapSeconds", "drainingSeconds",
    "multiRegionConfig", "limitOverride", "requiredMountPath",
}  # fmt: skip
RAILWAY_FILES = {
    "web": ROOT / "railway.json",
    "worker": ROOT / "deploy" / "railway-worker.json",
    "beat": ROOT / "deploy" / "railway-beat.json",
}


def test_python_version_is_one_the_project_supports():
    wanted = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", wanted), "major.minor, as Heroku recommends"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lowest = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, wanted.split("."))) >= tuple(map(int, lowest.split(".")))


def test_app_json_declares_the_addons_and_every_procfile_process():
    app = json.loads((ROOT / "app.json").read_text())
    assert set(app) <= APP_JSON_KEYS
    plans = {addon["plan"] if isinstance(addon, dict) else addon for addon in app["addons"]}
    assert {"heroku-postgresql", "heroku-redis"} <= plans
    # release: runs on every deploy (the migrations); the others are dynos.
    assert PROCFILE["release"] == "flask --app app db upgrade"
    assert set(app["formation"]) == set(PROCFILE) - {"release"}
    assert app["formation"]["beat"]["quantity"] == 1, "two beats would send every tick twice"
    for name, entry in app["env"].items():
        assert re.fullmatch(r"[A-Z][A-Z0-9_]*", name)
        assert set(entry) <= ENV_ENTRY_KEYS and entry.get("generator", "secret") == "secret"
    assert app["env"]["WEBHOOK_SECRET"]["required"] is True
    assert "value" not in app["env"]["WEBHOOK_SECRET"], "a secret never lives in the repository"


@pytest.mark.parametrize("process", RAILWAY_FILES)
def test_railway_files_start_what_the_procfile_starts(process):
    config = json.loads(RAILWAY_FILES[process].read_text())
    assert config["$schema"] == "https://railway.com/railway.schema.json"
    assert set(config) <= {"$schema", "build", "deploy", "environments"}
    assert set(config["build"]) <= RAILWAY_BUILD_KEYS
    assert set(config["deploy"]) <= RAILWAY_DEPLOY_KEYS
    assert config["deploy"]["startCommand"] == PROCFILE[process]
    assert config["deploy"].get("restartPolicyType", "ON_FAILURE") in {
        "ON_FAILURE",
        "ALWAYS",
        "NEVER",
    }
    # Migrations run once per deploy, before the web goes live: only the web service has them.
    if process == "web":
        assert config["deploy"]["preDeployCommand"] == [PROCFILE["release"]]
        assert config["deploy"]["healthcheckPath"] == "/health/ready"
    else:
        assert "preDeployCommand" not in config["deploy"]
