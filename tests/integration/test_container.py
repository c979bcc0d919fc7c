"""The container's command line and environment, as the Dockerfile writes them, against the
emulators.

The image sets APP_ENV=production, and production's Config.from_env refuses what a test stack
is made of (emulator hosts, plain-http KMS and Graph endpoints, development secrets): that is
its job, and `test_the_image_command_runs_as_production_and_refuses_an_emulator_stack` proves
the command does refuse them. The serving tests therefore run the Dockerfile's command line
unchanged except for its WSGI target, which becomes `PRODUCTION_APP`: the same `create_app`
with `app_env="production"` (keys loaded at start, no dev tools), its settings read without the
production checks. Those checks are tested on their own in tests/unit/test_config.py.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from devtools.devstack import ROOT
from tests.support.servers import PRODUCTION_APP, gunicorn
from tests.support.stack import PROJECT_ID

PHI = ["Maria Fernanda Lopez", "Calle Falsa 123, Madrid", "447700900123", "Metformin 500mg",
       "Type 2 diabetes", "1980-02-03"]  # fmt: skip


def dockerfile_cmd() -> tuple[str, dict[str, str]]:
    """Return the Dockerfile's CMD (shell form) and the ENV defaults it relies on."""
    text = (ROOT / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")
    cmd = re.search(r"^CMD (.+)$", joined, re.MULTILINE).group(1).strip()
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", joined, re.MULTILINE):
        for pair in shlex.split(line):
            key, _, value = pair.partition("=")
            env[key] = value
    return cmd, env


def test_the_dockerfile_runs_as_a_non_root_user_with_dependencies_in_their_own_layer():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.MULTILINE)
    assert re.search(r"^USER (?!root)\w+", text, re.MULTILINE)
    assert (
        text.index("COPY requirements.txt")
        < text.index("pip install")
        < text.index("COPY --chown=root:root service/")
    )
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


WSGI_TARGET = "service.wsgi:app"


def test_the_image_command_runs_as_production_and_refuses_an_emulator_stack(config, tmp_path: Path):
    """The Dockerfile's own command and ENV, with the test stack's settings on top of them
    (APP_ENV excepted): the service must stop at start-up, naming what production refuses."""
    cmd, image_env = dockerfile_cmd()
    assert image_env["APP_ENV"] == "production"
    assert cmd.endswith(f" {WSGI_TARGET}")
    env = {
        **os.environ,
        **config.to_env(),
        **image_env,  # last: the image's APP_ENV=production wins over the test config's
        "PORT": "0",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    with open(tmp_path / "gunicorn.log", "wb") as log:
        result = subprocess.run(
            ["/bin/sh", "-c", cmd], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            timeout=60,
        )  # fmt: skip
    output = (tmp_path / "gunicorn.log").read_text()
    assert result.returncode != 0, output
    assert "FIRESTORE_EMULATOR_HOST must not be set in production" in output
    assert "KMS_ENDPOINT must be an https:// URL in production" in output


@pytest.fixture
def gunicorn_from_dockerfile(stack, components, config, tmp_path: Path):
    """The Dockerfile's command line and ENV, serving the production app (see the docstring
    of this module for why its WSGI target is PRODUCTION_APP)."""
    cmd, image_env = dockerfile_cmd()
    assert image_env["APP_ENV"] == "production" and cmd.endswith(f" {WSGI_TARGET}")
    cmd = cmd[: -len(WSGI_TARGET)] + shlex.quote(PRODUCTION_APP)
    log_path = tmp_path / "gunicorn.log"
    production = config.replace(app_env=image_env["APP_ENV"])
    with gunicorn(
        production, log_path, workers=2, threads=4, command=cmd, image_env=image_env
    ) as base:
        yield base, log_path


def test_the_dockerfile_command_serves_health_readiness_and_no_dev_tools_as_production(
    gunicorn_from_dockerfile,
):
    base, log_path = gunicorn_from_dockerfile
    assert requests.get(f"{base}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert requests.get(f"{base}/dev/chat", timeout=5).status_code == 404  # production only
    assert "Booting worker" in log_path.read_text()


def test_logs_are_json_lines_with_trace_and_latency_and_no_patient_data(gunicorn_from_dockerfile):
    base, log_path = gunicorn_from_dockerfile
    trace = "105445aa7843bc8bf206b12000100000"
    headers = {"X-Cloud-Trace-Context": f"{trace}/1;o=1", "User-Agent": "probe"}
    requests.get(f"{base}/healthz", headers=headers, timeout=5)
    for value in PHI:
        # The User-Agent is the caller's free text too: a script may put a patient in it.
        agent = {"User-Agent": f"clinic-export/1.0 ({value}; +34 612 345 678)"}
        requests.get(f"{base}/exports/password", params={"q": value},
                     headers={"Authorization": f"Bearer {value}", **agent}, timeout=5)  # fmt: skip
        requests.post(f"{base}/nowhere/{value}", json={"name": value}, headers=agent, timeout=5)
        requests.get(f"{base}/healthz", headers={"User-Agent": value}, timeout=5)
    time.sleep(0.5)
    lines = [line for line in log_path.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    access = [e for e in entries if e.get("logger") == "service.access"]
    healthz = next(e for e in access if "logging.googleapis.com/trace" in e)
    assert healthz["severity"] == "INFO"
    assert healthz["logging.googleapis.com/trace"] == f"projects/{PROJECT_ID}/traces/{trace}"
    assert healthz["latency_ms"] >= 0
    assert healthz["httpRequest"]["requestUrl"] == "/healthz"
    assert len(access) >= 1 + 3 * len(PHI)
    text = log_path.read_text()
    for value in [*PHI, "612 345 678", "612345678"]:
        assert value not in text
        assert requests.utils.quote(value) not in text
