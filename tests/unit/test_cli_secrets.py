"""`python -m service secrets generate`: fresh secrets as NAME=value lines, with no config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from service.shell.cli import ComponentsFromEnvironment, cli
from service.shell.config import Config

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["SECRET_KEY", "ZIP_PASSWORD", "WHATSAPP_VERIFY_TOKEN", "PSEUDONYM_KEY"]
# Production settings without the three generated secrets: a config that cannot be built.
PRODUCTION_WITHOUT_SECRETS = {
    "APP_ENV": "production",
    "GOOGLE_CLOUD_PROJECT": "clinic-prod",
    "ARCHIVE_BUCKET": "clinic-intake-archive",
    "META_ACCESS_TOKEN": "EAAG-a-real-looking-token",
    "WHATSAPP_PHONE_NUMBER_ID": "123456789012345",
    "WHATSAPP_APP_SECRET": "3f9a1c7e5b2d8046a9e17c3b5d2f8e60",
    "WHATSAPP_START_TEMPLATE": "intake_start",
    "KMS_KEY_URI": "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k",
}


def parsed(output: str) -> dict[str, str]:
    lines = output.splitlines()
    assert all(line.count("=") >= 1 for line in lines)
    return dict(line.split("=", 1) for line in lines)


def test_secrets_generate_prints_one_line_per_secret_that_production_accepts():
    runner = CliRunner()
    result = runner.invoke(
        cli, ["secrets", "generate"], obj=ComponentsFromEnvironment(PRODUCTION_WITHOUT_SECRETS)
    )
    assert result.exit_code == 0, result.output
    generated = parsed(result.stdout)
    assert list(generated) == NAMES
    assert Config.from_env({**PRODUCTION_WITHOUT_SECRETS, **generated}).is_production
    again = parsed(runner.invoke(cli, ["secrets", "generate"]).stdout)
    assert all(again[name] != generated[name] for name in NAMES)


def test_python_m_service_secrets_generate_runs_before_any_secret_is_set():
    environment = {"PATH": "/usr/bin:/bin", **PRODUCTION_WITHOUT_SECRETS}
    result = subprocess.run(
        [sys.executable, "-m", "service", "secrets", "generate"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert list(parsed(result.stdout)) == NAMES
    assert "issued by Meta" in result.stderr


def test_other_commands_still_refuse_an_invalid_configuration_in_one_line():
    environment = {"PATH": "/usr/bin:/bin", **PRODUCTION_WITHOUT_SECRETS}
    result = subprocess.run(
        [sys.executable, "-m", "service", "providers", "list"],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: invalid configuration: ")
    assert "SECRET_KEY is required in production" in line
