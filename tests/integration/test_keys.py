"""Key material: keys init/list/rotate through the CLI, readiness, and the development file."""

from __future__ import annotations

import json
import logging

from click.testing import CliRunner

from service.shell.app import create_app
from service.shell.cli import cli
from service.shell.components import build_components
from tests.support.records import make_record


def _invoke(components, *args):
    return CliRunner().invoke(cli, list(args), obj=components)


def test_keys_init_refuses_to_overwrite_an_existing_keyset(components):
    before = components.repos.bucket.blob(components.config.tink_keyset).download_as_bytes()
    result = _invoke(components, "keys", "init")
    assert result.exit_code == 1
    assert "a keyset already exists" in result.output
    after = components.repos.bucket.blob(components.config.tink_keyset).download_as_bytes()
    assert after == before


def test_keys_init_creates_a_kms_wrapped_keyset_on_a_fresh_bucket(components, fake_kms):
    components.repos.bucket.blob(components.config.tink_keyset).delete()
    components.keys.forget()
    result = _invoke(components, "keys", "init")
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[-1] == "primary"
    stored = components.repos.bucket.blob(components.config.tink_keyset).download_as_bytes()
    # Only the encrypted keyset and its key-id metadata: no key material in the clear.
    assert set(json.loads(stored)) == {"encryptedKeyset", "keysetInfo"}
    assert b"keyData" not in stored
    assert fake_kms.calls["encrypt"] >= 1


def test_keys_list_and_rotate_show_ids_status_and_the_primary(components):
    listed = _invoke(components, "keys", "list")
    assert listed.exit_code == 0
    assert len(listed.stdout.splitlines()) == 1
    rotated = _invoke(components, "keys", "rotate")
    assert rotated.exit_code == 0, rotated.output
    lines = _invoke(components, "keys", "list").stdout.splitlines()
    assert len(lines) == 2
    assert all("ENABLED" in line for line in lines)
    assert lines[1].endswith("primary") and not lines[0].endswith("primary")
    assert lines[0].split()[0] == listed.output.split()[0]


def test_the_wrapped_keyset_does_not_unwrap_without_kms(components, config, fake_kms, client):
    fresh = build_components(config)
    fake_kms.set_unavailable(True)
    assert fresh.keys.ready() is not None
    app = create_app(components=fresh)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    assert response.json["checks"]["keys"] != "ok"
    assert response.json["checks"]["firestore"] == "ok"
    fake_kms.set_unavailable(False)
    fresh.keys.forget()  # skip the 5 s pause between load attempts
    assert app.test_client().get("/readyz").status_code == 200


def test_production_start_with_kms_unreachable_logs_one_clear_line(config, fake_kms, caplog):
    fake_kms.set_unavailable(True)
    production = config.replace(app_env="production")
    with caplog.at_level(logging.ERROR):
        app = create_app(components=build_components(production))
    lines = [r for r in caplog.records if "key material unavailable at start" in r.getMessage()]
    assert len(lines) == 1
    assert app.test_client().get("/readyz").status_code == 503


def test_a_keyset_without_an_init_makes_readiness_say_how_to_fix_it(components, client):
    components.repos.bucket.blob(components.config.tink_keyset).delete()
    components.keys.forget()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "keys init" in response.json["checks"]["keys"]


def test_development_creates_a_cleartext_keyset_file_once_with_a_warning(config, tmp_path, caplog):
    path = tmp_path / "dev-keyset.json"
    development = config.replace(
        app_env="development", kms_key_uri=None, local_keyset_path=str(path)
    )
    first = build_components(development)
    with caplog.at_level(logging.WARNING):
        first.keys.keyring()
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert "cleartext development keyset" in caplog.text
    record = make_record()
    first.repos.archive.archive(record)
    second = build_components(development)
    assert second.repos.archive.read(record.record_id) == record


def test_production_never_uses_a_local_keyset_file(config, tmp_path):
    production = config.replace(
        app_env="production", kms_key_uri=None, local_keyset_path=str(tmp_path / "k.json")
    )
    keys = build_components(production).keys
    assert keys.ready() is not None
    assert not (tmp_path / "k.json").exists()
